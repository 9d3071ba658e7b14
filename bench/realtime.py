"""Real-time benchmark (issue 4): connect, REST→event latency, fan-out, memory, capacity.

    .venv/bin/python bench/realtime.py [--modes eventlet,gevent,threading]
        [--latency-clients 1000] [--fanout 1000,5000] [--max-connections 10000]
        [--updates 50] [--fanout-updates 10] [--load-procs 2] [--no-bare]
        [--storm 5000] [--storm-clients 2000] [--storm-only] [--db-name ec_bench_realtime]
        [--memory-only | --no-memory] [--memory-steps 1000,4000] [--memory-trace]
        [--memory-servers product,bare,node,product+env] [--memory-env NAME=VALUE ...]

Scenario (a), the join storm (``--storm N``): N clients over N/10 users connect, all in
flight at once, then all join one episode at once; then updates to that room; ours and the
bare python-socketio server side by side, same clients.

Scenario (b), the reconnect storm (``--storm-clients``; ``--storm-only`` skips the rest):
that many clients connect to /episodes and join one of ``--storm-rooms`` episodes, each
remembering the last event id it saw; the web process is SIGTERMed (graceful: every client
told) and, while it is down, ``--storm-events`` updates are made (delivered by the worker,
so they are in the replay buffer); the process is started again on the same port. Every
client reconnects as an app would after "io server disconnect": exponential backoff with
full jitter, ``auth.last_event_id``, then ``join`` with ``last_event_id``. Reported: time
until all are back (rejoined) and until all have replayed every update, updates missing,
resyncs, REST p50/p99 during the storm (GETs, and a PATCH in five whose deliveries to the
clients of its room are counted too), PostgreSQL transactions meanwhile; then the same
storm against the bare python-socketio server (no auth, no replay) for the reconnect time.

``BENCH_DB`` / ``BENCH_REDIS`` (``redis://host:port``) point it at a database name and a
Redis server of one's own. The Node peer needs ``npm ci`` in ``bench/node`` once.

0. Memory per idle connection first (issue 17), one fresh server per cell: this product,
   a bare python-socketio server and a bare Node socket.io 4 server, each with clients
   that offer permessage-deflate as browsers do (aiohttp ``compress=15``: Chrome's
   ``permessage-deflate; client_max_window_bits``) and with clients that offer nothing; the
   RSS step between ``--memory-steps`` clients, and how many clients negotiated deflate.
   ``--memory-trace`` adds a breakdown of the product's bytes per connection under
   tracemalloc (``bench/traced_server.py``): by package, by allocation line, live objects.

Against the production server (``python wsgi.py``, one process per SOCKETIO_ASYNC_MODE,
EMBEDDED_WORKER=0) on a fresh PostgreSQL database ``ec_bench_realtime``, Redis db 10 and a
real ``celery -A celery_app worker``. The clients are python-socketio ``AsyncClient``s on
one asyncio loop per load process (``--load-procs``, default 2), all sharing one aiohttp
session, so thousands of sockets cost no threads.

For every server mode, in order:
1. connection setup (websocket + Socket.IO connect to /episodes with ``auth={"token"}``,
   JWT and presence done by the server) one at a time, then under load while ramping up;
2. the latency figure: ``--latency-clients`` clients connected, spread over ``--rooms``
   episodes (client i joins room i mod rooms: ten viewers per episode by default, as in
   use); ``--updates`` PATCHes of one of those episodes, each timed from just before the
   REST call to the ``episode_updated`` at every client of its room;
2b. then all of them join one episode room (``join`` with an ack, the product
   path: authorization, presence row, ``join_room``). The worker is stopped while they
   join, and the ``viewer_joined`` events these joins produce are then marked delivered in
   the database without being emitted: emitting them would be O(n²) messages (5,000 joins
   to a room that grows to 5,000 = 12.5 M messages) and is not what is measured here.
   Then the worker starts, and ``--updates`` PATCH /api/v1/episodes/<id> calls are made one
   after the other; each is timed from just before the REST call to the ``episode_updated``
   at a few measuring clients spread over the room (join order), and to the last client;
3. the same with the room grown to each ``--fanout`` size (more idle clients connected
   first: their RSS growth is the memory per idle connection);
4. more clients are connected until a refusal or error, ``--max-connections``, the time
   budget or the server-thread guard (threading mode) stops the ramp.
Storm, scenario (a) of issue 12 (``--storm N [--storm-only]``): N clients over N/10 users
connect to /episodes with every connect in flight at once (``--load-procs`` loops), then
every client sends ``join`` at once; then ``--storm-updates`` PATCHes, each of which must
reach every joined client. Against our server (eventlet, a real worker) and then the bare
server, same clients, same run; the table gives clients connected and joined, connect and
join-ack p50/p99, the time until all joined, events reached, and the connect p50 ratio.
On a shared machine: ``BENCH_REDIS=redis://127.0.0.1:<your port>`` and ``--db-name``.

Then the same fan-out against a bare python-socketio server (eventlet, no auth, no
database, an HTTP POST emits to the room) with the same clients and the same envelope,
and our fan-out time as a ratio to it.

Clocks: every timestamp is ``time.monotonic()`` (CLOCK_MONOTONIC, shared by all the
processes of this machine), so the REST call in this process and the receipt in a load
process compare directly. Client-side processing is included in every figure (thousands of
sockets on two asyncio loops); the bare-server ratio puts that in proportion.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from contextlib import suppress
from functools import partial
from pathlib import Path

from _common import ROOT, migrate, pct, setup_env, start_worker, stop, wait_for_log

NS = "/episodes"
DB_NAME = os.environ.get("BENCH_DB", "ec_bench_realtime")
REDIS_DB = 10
NODE_DIR = Path(__file__).resolve().parent / "node"  # `npm ci` there for the Node peer
LOG_DIR = Path("/tmp/bench-realtime") / time.strftime("%Y%m%d-%H%M%S")

BARE_SERVER = r'''
import eventlet
eventlet.monkey_patch()
import json, resource, sys
import eventlet.wsgi
import socketio

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
sio = socketio.Server(async_mode="eventlet", cors_allowed_origins="*")

@sio.on("connect", namespace="/episodes")
def connect(sid, environ, auth=None):
    return True

@sio.on("join", namespace="/episodes")
def join(sid, data):
    sio.enter_room(sid, "episode:%s" % data["episode_id"], namespace="/episodes")
    return {"ok": True, "viewers": []}

def http(environ, start_response):
    if environ["PATH_INFO"] == "/emit" and environ["REQUEST_METHOD"] == "POST":
        body = json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
        sio.emit(body["event"], body["data"], to=body["room"], namespace="/episodes")
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]

eventlet.wsgi.server(eventlet.listen(("127.0.0.1", int(sys.argv[1])), backlog=1024),
                     socketio.WSGIApp(sio, http), log_output=False, max_size=20000)
'''


# --------------------------------------------------------------------------- helpers

def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int) -> dict:
    """VmRSS (KB) and Threads of a process, from /proc/<pid>/status, and its open fds."""
    out = {"rss_kb": None, "threads": None, "fds": None}
    with suppress(OSError):
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    with suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                out["rss_kb"] = int(line.split()[1])
            elif line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def listen_drops() -> dict:
    """Kernel counters of connections refused by a full listen backlog (machine-wide)."""
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for head, vals in zip(lines[::2], lines[1::2], strict=False):
        if head.startswith("TcpExt:"):
            d = dict(zip(head.split()[1:], map(int, vals.split()[1:]), strict=False))
            return {"ListenOverflows": d.get("ListenOverflows", 0), "ListenDrops": d.get("ListenDrops", 0)}
    return {}


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def short_error(exc: BaseException, detail=None) -> str:
    text = str(exc) or type(exc).__name__
    if detail:
        text = f"{text} [{detail}]"
    return f"{type(exc).__name__}: {text}"[:160]


def spaced(n: int, k: int) -> list[int]:
    """k indexes spread evenly over range(n), first and last included."""
    if n <= 0 or k <= 0:
        return []
    if k == 1 or n == 1:
        return [n - 1]
    return sorted({round(j * (n - 1) / (k - 1)) for j in range(k)})


# --------------------------------------------------------------------------- load process

class Probe:
    __slots__ = ("sio", "joined", "got", "measure", "refusal", "room")

    def __init__(self, sio):
        self.sio, self.joined, self.got, self.measure, self.refusal = sio, False, None, False, None
        self.room = None  # the episode whose room this client joined last


class StormProbe:
    """A client of the reconnect storm: what it saw, and its own reconnect loop."""

    __slots__ = ("sio", "token", "room", "last_id", "markers", "resyncs", "ready", "attempts",
                 "back_at", "done_at", "task", "errors")

    def __init__(self, sio, token, room):
        self.sio, self.token, self.room = sio, token, room
        self.last_id, self.markers, self.resyncs, self.ready = 0, set(), 0, False
        self.attempts, self.back_at, self.done_at, self.task, self.errors = 0, None, None, None, 0


class StormLoad:
    """Mixin of Load: scenario (b), M clients that reconnect with backoff and last_event_id."""

    storm: list
    storming: bool = False
    expected: frozenset = frozenset()

    def _storm_event(self, probe: StormProbe, data=None) -> None:
        if not isinstance(data, dict):
            return
        if isinstance(data.get("id"), int):
            probe.last_id = max(probe.last_id, data["id"])
        title = (data.get("data") or {}).get("title")
        if isinstance(title, str) and title.startswith("storm-"):
            probe.markers.add(title)
            self._check_done(probe)

    def _check_done(self, probe: StormProbe) -> None:
        """Replayed: every event made while the server was down has arrived (the replay
        comes with the connect, before the client's own join)."""
        if probe.done_at is None and self.storming and self.expected <= probe.markers:
            probe.done_at = time.monotonic()

    def _storm_resync(self, probe: StormProbe, data=None) -> None:
        probe.resyncs += 1
        if isinstance(data, dict) and isinstance((data.get("data") or {}).get("last_event_id"), int):
            probe.last_id = max(probe.last_id, data["data"]["last_event_id"])

    def _storm_lost(self, probe: StormProbe, *_args) -> None:
        probe.ready = False
        if self.storming and (probe.task is None or probe.task.done()):
            probe.task = asyncio.ensure_future(self._reconnect(probe))

    async def _open(self, probe: StormProbe, url: str, auth: bool) -> None:
        body = {"token": probe.token} if auth else None
        if auth and probe.last_id:
            body["last_event_id"] = probe.last_id
        await asyncio.wait_for(probe.sio.connect(url, namespaces=[NS], auth=body,
                                                 transports=["websocket"], wait_timeout=15), 25)
        join = {"episode_id": probe.room}
        if auth and probe.last_id:
            join["last_event_id"] = probe.last_id  # the room's events since the connect replay
        ack = await probe.sio.call("join", join, namespace=NS, timeout=30)
        if not (isinstance(ack, dict) and ack.get("ok")):
            raise RuntimeError(f"join ack {str(ack)[:80]}")
        probe.ready = True

    async def _reconnect(self, probe: StormProbe) -> None:
        """What a client app does on "io server disconnect": retry with exponential backoff
        and full jitter (0.5 s doubling up to 8 s), then rejoin its room."""
        import random

        delay = 0.5
        while self.storming:
            await asyncio.sleep(random.uniform(0, delay))
            probe.attempts += 1
            try:
                with suppress(Exception):
                    await asyncio.wait_for(probe.sio.disconnect(), 5)
                await self._open(probe, self.storm_url, self.storm_auth)
                probe.back_at = time.monotonic()
                self._check_done(probe)
                return
            except Exception as exc:  # noqa: BLE001 - down or overloaded: back off and retry
                probe.errors += 1
                self.storm_errors[short_error(exc)] += 1
                delay = min(8.0, delay * 2)

    async def cmd_storm_connect(self, url: str, count: int, offset: int, concurrency: int,
                                tokens: list[str] | None, rooms: list[int]):
        import socketio

        self.storm = getattr(self, "storm", [])
        self.storm_url, self.storm_auth = url, tokens is not None
        sem = asyncio.Semaphore(concurrency)
        errors: Counter = Counter()

        async def one(i: int) -> None:
            async with sem:
                sio = socketio.AsyncClient(reconnection=False, http_session=self.http,
                                           handle_sigint=False)
                probe = StormProbe(sio, tokens[(offset + i) % len(tokens)] if tokens else None,
                                   rooms[(offset + i) % len(rooms)])
                sio.on("episode_updated", partial(self._storm_event, probe), namespace=NS)
                sio.on("resync_required", partial(self._storm_resync, probe), namespace=NS)
                sio.on("disconnect", partial(self._storm_lost, probe), namespace=NS)
                try:
                    await self._open(probe, url, tokens is not None)
                except Exception as exc:  # noqa: BLE001 - counted by kind
                    errors[short_error(exc)] += 1
                    return
                self.storm.append(probe)

        await asyncio.gather(*(one(i) for i in range(count)))
        return {"errors": dict(errors), "ready": sum(p.ready for p in self.storm)}

    async def cmd_storm_arm(self, expected: list[str]):
        self.storming, self.expected = True, frozenset(expected)
        self.storm_errors = Counter()
        for p in self.storm:
            p.markers, p.resyncs, p.attempts, p.errors = set(), 0, 0, 0
            p.back_at = p.done_at = None
        return {"armed": len(self.storm)}

    async def cmd_storm_status(self, since: float, stop: bool = False):
        if stop:
            self.storming = False
        back = [p.back_at - since for p in self.storm if p.back_at is not None]
        done = [p.done_at - since for p in self.storm if p.done_at is not None]
        return {"clients": len(self.storm), "ready": sum(p.ready for p in self.storm),
                "back": back, "done": done, "resyncs": sum(p.resyncs for p in self.storm),
                "attempts": sum(p.attempts for p in self.storm),
                "failed_attempts": sum(p.errors for p in self.storm),
                "why_failed": dict(getattr(self, "storm_errors", {})),
                "missing": sum(len(self.expected - p.markers) for p in self.storm)}

    async def cmd_storm_missing(self, markers: list[list]):
        """Updates made during the storm, ``[marker, room]``, that a client of that room
        never received (live after its rejoin, or replayed at its reconnect)."""
        missing = [len({m for m, room in markers if room == p.room} - p.markers) for p in self.storm]
        return {"missing": sum(missing), "expected": sum(
            sum(1 for _m, room in markers if room == p.room) for p in self.storm),
            "clients_missing": sum(1 for m in missing if m)}


class Load(StormLoad):
    """One asyncio loop holding many AsyncClients; commands come over a pipe."""


    def __init__(self, conn, index: int):
        self.conn, self.index = conn, index
        self.clients: list[Probe] = []
        self.marker = None
        self.expect = self.count = 0
        self.first = self.last = None
        self.samples: list[float] = []
        self.payload = None
        self.done: asyncio.Event | None = None

    async def serve(self) -> None:
        import aiohttp

        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        loop = asyncio.get_running_loop()
        while True:
            cmd, kwargs = await loop.run_in_executor(None, self.conn.recv)
            if cmd == "exit":
                self.conn.send({"ok": True})
                os._exit(0)
            try:
                result = await getattr(self, f"cmd_{cmd}")(**kwargs)
            except Exception as exc:  # noqa: BLE001 - reported to the orchestrator
                result = {"error": short_error(exc)}
            self.conn.send(result)

    def alive(self) -> int:
        return sum(1 for p in self.clients if p.sio.connected)

    async def cmd_connect(self, url: str, count: int, concurrency: int, tokens: list[str] | None,
                          offset: int = 0, stop_after_errors: int = 20, budget: float = 600.0,
                          compress: bool = False, connect_timeout: float = 25.0):
        """``compress``: offer permessage-deflate as browsers do (aiohttp then sends
        ``permessage-deflate; client_max_window_bits``, Chrome's offer)."""
        import socketio

        sem = asyncio.Semaphore(concurrency)
        latencies: list[float] = []
        errors: Counter = Counter()
        skipped = 0
        deadline = time.monotonic() + budget

        async def one(i: int) -> None:
            nonlocal skipped
            async with sem:
                if sum(errors.values()) >= stop_after_errors or time.monotonic() > deadline:
                    skipped += 1
                    return
                sio = socketio.AsyncClient(reconnection=False, http_session=self.http,
                                           handle_sigint=False,
                                           websocket_extra_options={"compress": 15} if compress else {})
                probe = Probe(sio)
                sio.on("episode_updated", partial(self.on_update, probe), namespace=NS)
                sio.on("connect_error", partial(self.on_refused, probe), namespace=NS)
                auth = {"token": tokens[(offset + i) % len(tokens)]} if tokens else None
                t = time.monotonic()
                try:
                    await asyncio.wait_for(
                        sio.connect(url, namespaces=[NS], auth=auth, transports=["websocket"],
                                    wait_timeout=connect_timeout), connect_timeout + 10)
                except Exception as exc:  # noqa: BLE001 - counted by kind
                    errors[short_error(exc, probe.refusal)] += 1
                    with suppress(Exception):
                        await asyncio.wait_for(sio.disconnect(), 5)
                    return
                latencies.append((time.monotonic() - t) * 1000)
                self.clients.append(probe)

        await asyncio.gather(*(one(i) for i in range(count)))
        return {"latencies": latencies, "errors": dict(errors), "skipped": skipped,
                "alive": self.alive(), "clients": len(self.clients), "deflate": self.deflated()}

    def deflated(self) -> int:
        """Connected clients whose websocket negotiated permessage-deflate."""
        return sum(1 for p in self.clients
                   if p.sio.connected and getattr(getattr(p.sio.eio, "ws", None), "_compress", 0))

    def on_refused(self, probe: Probe, data=None) -> None:
        if isinstance(data, dict):  # {"message", "data": {"code", "message"}}
            inner = data.get("data")
            probe.refusal = inner.get("code") if isinstance(inner, dict) else data.get("message")
        else:
            probe.refusal = data

    async def cmd_join(self, concurrency: int, episode_id: int | None = None,
                       spread_over: list[int] | None = None, timeout: float = 30):
        """Every connected client joins ``episode_id``'s room, or, with ``spread_over``,
        client i joins the room of ``spread_over[i % len]`` (many small rooms)."""
        sem = asyncio.Semaphore(concurrency)
        latencies: list[float] = []
        errors: Counter = Counter()

        async def one(p: Probe, room: int) -> None:
            async with sem:
                t = time.monotonic()
                try:
                    ack = await p.sio.call("join", {"episode_id": room}, namespace=NS,
                                           timeout=timeout)
                except Exception as exc:  # noqa: BLE001 - counted by kind
                    errors[short_error(exc)] += 1
                    return
                if isinstance(ack, dict) and ack.get("ok"):
                    latencies.append((time.monotonic() - t) * 1000)
                    p.joined, p.room = True, room
                else:
                    errors[f"ack: {str(ack)[:100]}"] += 1

        live = [p for p in self.clients if p.sio.connected]
        if spread_over:
            todo = [(p, spread_over[i % len(spread_over)]) for i, p in enumerate(live)]
        else:
            todo = [(p, episode_id) for p in live if p.room != episode_id]
        await asyncio.gather(*(one(p, room) for p, room in todo))
        return {"latencies": latencies, "errors": dict(errors),
                "joined": sum(1 for p in live if p.joined and p.sio.connected)}

    async def cmd_arm(self, marker: str, measure: int, room: int):
        self.marker, self.count, self.first, self.last, self.samples = marker, 0, None, None, []
        joined = [p for p in self.clients if p.joined and p.sio.connected and p.room == room]
        for p in self.clients:
            p.measure = False
        for i in spaced(len(joined), measure):
            joined[i].measure = True
        self.expect = len(joined)
        self.done = asyncio.Event()
        if not self.expect:
            self.done.set()
        return {"expect": self.expect}

    def on_update(self, probe: Probe, data=None) -> None:
        t = time.monotonic()
        inner = data.get("data") if isinstance(data, dict) else None
        if not isinstance(inner, dict) or inner.get("title") != self.marker or probe.got == self.marker:
            return
        probe.got = self.marker
        self.count += 1
        if self.first is None:
            self.first = t
        self.last = t
        if probe.measure:
            self.samples.append(t)
        if self.payload is None:
            self.payload = data
        if self.count >= self.expect:
            self.done.set()

    async def cmd_wait(self, timeout: float):
        with suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.done.wait(), timeout)
        payload, self.payload = self.payload, None
        return {"count": self.count, "expect": self.expect, "first": self.first, "last": self.last,
                "samples": self.samples, "payload": payload}

    async def cmd_exit_clients(self):
        """Disconnect and forget every client (after a warm-up)."""
        await asyncio.gather(*(p.sio.disconnect() for p in self.clients), return_exceptions=True)
        self.clients = []
        return {"ok": True}

    async def cmd_stats(self):
        return {"clients": len(self.clients), "alive": self.alive(), "deflate": self.deflated(),
                "joined": sum(1 for p in self.clients if p.joined and p.sio.connected)}


def load_main(conn, index: int) -> None:
    raise_nofile()
    asyncio.run(Load(conn, index).serve())


class LoadPool:
    def __init__(self, n: int):
        ctx = mp.get_context("spawn")
        self.conns, self.procs = [], []
        for i in range(n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=load_main, args=(child, i), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    def call(self, cmd: str, per: list[dict] | None = None, answer_within: float = 900,
             **kwargs) -> list[dict]:
        for i, conn in enumerate(self.conns):
            conn.send((cmd, {**kwargs, **(per[i] if per else {})}))
        results = []
        for conn in self.conns:
            if not conn.poll(answer_within):
                raise TimeoutError(f"load process did not answer {cmd} in {answer_within} s")
            results.append(conn.recv())
        for r in results:
            if isinstance(r, dict) and "error" in r and len(r) == 1:
                raise RuntimeError(f"load {cmd}: {r['error']}")
        return results

    def stats(self) -> dict:
        rs = self.call("stats")
        return {k: sum(r[k] for r in rs) for k in ("clients", "alive", "joined", "deflate")}

    def close(self) -> None:
        for conn, proc in zip(self.conns, self.procs, strict=True):
            with suppress(Exception):
                conn.send(("exit", {}))
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


# --------------------------------------------------------------------------- orchestration

class Bench:
    def __init__(self, args, env: dict, app, editor_token: str, tokens: list[str]):
        self.args, self.env, self.app = args, env, app
        self.editor_token, self.tokens = editor_token, tokens
        self.loads: LoadPool | None = None
        self.url = ""
        self.server = None
        self.server_threads_base = 0
        self.offset = 0
        self.bare_pid = None
        self.payload = None  # one real episode_updated envelope, for the bare server
        self.compress = False  # clients offer permessage-deflate (the memory phase)

    # ---- clients
    def connect(self, n: int, concurrency: int, *, only_first: bool = False, auth: bool = True,
                stop_after_errors: int = 20, budget: float = 600.0,
                connect_timeout: float = 25.0) -> dict:
        """Connect ``n`` more clients, split over the load processes; merged results."""
        k = len(self.loads.conns)
        counts = [n] + [0] * (k - 1) if only_first else [n // k + (1 if i < n % k else 0) for i in range(k)]
        per = []
        for c in counts:
            per.append({"count": c, "offset": self.offset})
            self.offset += c
        rs = self.loads.call("connect", per=per, url=self.url, concurrency=concurrency,
                             tokens=self.tokens if auth else None,
                             stop_after_errors=stop_after_errors, budget=budget,
                             compress=self.compress, connect_timeout=connect_timeout)
        errors: Counter = Counter()
        for r in rs:
            errors.update(r["errors"])
        return {"latencies": [x for r in rs for x in r["latencies"]], "errors": dict(errors),
                "skipped": sum(r["skipped"] for r in rs), "alive": sum(r["alive"] for r in rs),
                "deflate": sum(r["deflate"] for r in rs)}

    def grow_to(self, target: int, *, auth: bool = True, budget: float = 600.0) -> dict:
        """Connect clients until ``target`` are alive (or an error, the budget, the thread guard)."""
        lat, errors, reason, peak = [], Counter(), None, 0
        start = time.monotonic()
        step = self.args.step
        while True:
            alive = self.loads.stats()["alive"]
            peak = max(peak, alive)
            if alive >= target:
                break
            n = min(step, target - alive)
            if self.server is not None:
                st = proc_status(self.server.pid)
                if st["threads"] and alive:
                    per_conn = max(0.0, (st["threads"] - self.server_threads_base) / alive)
                    if per_conn >= 0.5 and st["threads"] + n * per_conn > self.args.max_server_threads:
                        reason = (f"stopped by the bench: server has {st['threads']} threads "
                                  f"(~{per_conn:.1f} per connection); limit --max-server-threads "
                                  f"{self.args.max_server_threads}")
                        break
            left = budget - (time.monotonic() - start)
            if left <= 0:
                reason = f"time budget {budget:.0f} s used up"
                break
            r = self.connect(n, self.args.concurrency, auth=auth, budget=left)
            lat += r["latencies"]
            errors.update(r["errors"])
            if r["errors"]:
                top = Counter(r["errors"]).most_common(3)
                reason = "client errors: " + "; ".join(f"{v}× {k}" for k, v in top)
                break
            if self.server is not None and self.server.poll() is not None:
                reason = f"server exited with {self.server.returncode}"
                break
        alive = self.loads.stats()["alive"]
        return {"latencies": lat, "errors": dict(errors), "reason": reason, "alive": alive,
                "peak": max(peak, alive), "seconds": time.monotonic() - start}

    def join_all(self, episode_id: int | None = None, spread_over: list[int] | None = None,
                 concurrency: int | None = None, timeout: float = 30) -> dict:
        rs = self.loads.call("join", episode_id=episode_id, spread_over=spread_over,
                             concurrency=concurrency or self.args.concurrency, timeout=timeout)
        errors: Counter = Counter()
        for r in rs:
            errors.update(r["errors"])
        return {"latencies": [x for r in rs for x in r["latencies"]], "errors": dict(errors),
                "joined": sum(r["joined"] for r in rs)}

    def run_updates(self, trigger, n: int, tag: str, room: int, timeout: float = 15.0,
                    measure: int | None = None) -> dict:
        """n events to ``room``, one after the other: REST→measuring clients, →first, →last."""
        samples, lasts, spreads, firsts, rest, missing = [], [], [], [], [], 0
        payload = None
        pids = {"server": [self.server.pid] if self.server is not None else [self.bare_pid],
                "loads": [p.pid for p in self.loads.procs]}
        cpu0 = {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}
        measure = self.args.measure if measure is None else measure
        per_load = max(1, -(-measure // len(self.loads.conns)))
        for k in range(n):
            marker = f"{tag}-{k}-{time.monotonic_ns()}"
            expect = sum(r["expect"] for r in self.loads.call("arm", marker=marker, measure=per_load,
                                                              room=room))
            t0 = time.monotonic()
            trigger(marker)
            rest.append((time.monotonic() - t0) * 1000)
            rs = self.loads.call("wait", timeout=timeout)
            got = sum(r["count"] for r in rs)
            missing += expect - got
            for r in rs:
                samples += [(t - t0) * 1000 for t in r["samples"]]
                payload = payload or r["payload"]
            fs = [r["first"] for r in rs if r["first"] is not None]
            ls = [r["last"] for r in rs if r["last"] is not None]
            if fs and got == expect:
                firsts.append((min(fs) - t0) * 1000)
                lasts.append((max(ls) - t0) * 1000)
                spreads.append((max(ls) - min(fs)) * 1000)
            time.sleep(self.args.gap)
        cpu = {k: (sum(cpu_seconds(p) for p in v) - cpu0[k]) * 1000 / n for k, v in pids.items()}
        return {"n": n, "room": expect, "samples": samples, "first": firsts, "last": lasts, "cpu_ms": cpu,
                "spread": spreads, "rest": rest, "missing": missing, "payload": payload}

    # ---- our server
    def start_server(self, mode: str, port: int, log: Path, *, traced: bool = False, **extra: str):
        env = dict(self.env, SOCKETIO_ASYNC_MODE=mode, MAX_CONNECTIONS=str(self.args.cap),
                   HOST="127.0.0.1", PORT=str(port), PYTHONUNBUFFERED="1", EMBEDDED_WORKER="0",
                   **extra)
        out = open(log, "wb")
        cmd = ["bench/traced_server.py"] if traced else ["wsgi.py"]
        proc = subprocess.Popen([sys.executable, *cmd], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        import requests

        deadline = time.monotonic() + (240 if traced else 60)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-1500:]}")
            with suppress(requests.RequestException):
                if requests.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2).status_code == 200:
                    return proc
            time.sleep(0.2)
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # never leave it behind
        proc.wait(10)
        raise RuntimeError(f"server did not come up: {log.read_text()[-2000:]}")

    def start_worker(self, mode: str, n: int):
        log = str(LOG_DIR / f"worker-{mode}-{n}.log")
        proc = start_worker(self.env, self.args.worker_concurrency, log=log, loglevel="INFO")
        if not wait_for_log(log, "ready.", 60, proc):
            raise RuntimeError(f"worker did not start: {Path(log).read_text()[-2000:]}")
        return proc

    def settle_outbox(self) -> int:
        """Mark undelivered events (the bulk joins' viewer_joined) delivered, not emitted."""
        from sqlalchemy import update

        from app.extensions import db
        from app.models import DomainEvent, utcnow

        with self.app.app_context():
            n = db.session.execute(update(DomainEvent).where(DomainEvent.delivered_at.is_(None))
                                   .values(delivered_at=utcnow())).rowcount
            db.session.commit()
        return n

    def wait_outbox_idle(self, timeout: float = 30) -> bool:
        import redis
        from sqlalchemy import func, select

        from app.extensions import db
        from app.models import DomainEvent
        from app.services.drain import DRAIN_FLAG

        client = redis.Redis.from_url(self.env["REDIS_URL"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.app.app_context():
                pending = db.session.scalar(select(func.count()).select_from(DomainEvent)
                                            .where(DomainEvent.delivered_at.is_(None)))
            if not pending and not client.exists(DRAIN_FLAG):
                return True
            time.sleep(0.2)
        client.delete(DRAIN_FLAG)
        return False

    def cleanup_db(self) -> None:
        import redis

        from app.services.drain import DRAIN_FLAG

        self.settle_outbox()
        client = redis.Redis.from_url(self.env["REDIS_URL"])
        for key in client.scan_iter("ec:presence:*"):
            client.delete(key)
        client.delete(DRAIN_FLAG)

    def run_mode(self, mode: str) -> dict:
        import requests

        args = self.args
        r: dict = {"mode": mode, "load_start": loadavg(), "notes": []}
        port = free_port()
        log = LOG_DIR / f"web-{mode}.log"
        self.url = f"http://127.0.0.1:{port}"
        drops0 = listen_drops()
        t_mode = time.monotonic()
        worker = None
        print(f"\n=== {mode}: starting server on :{port} (load {loadavg()})", flush=True)
        try:
            self.server = self.start_server(mode, port, log)
        except Exception as exc:  # noqa: BLE001 - reported in the table
            r["fatal"] = short_error(exc)
            print(f"  server failed: {exc}", flush=True)
            return r
        self.loads = LoadPool(args.load_procs)
        self.offset = 0
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {self.editor_token}"
        try:
            ep = http.post(f"{self.url}/api/v1/episodes", timeout=30,
                           json={"title": f"bench {mode}", "episode_number": 1}).json()
            episode_id = ep["id"]
            # The small rooms of the latency figure: the clients spread over these episodes.
            small_rooms = [http.post(f"{self.url}/api/v1/episodes", timeout=30, json={
                "title": f"room {i}", "episode_number": i + 2}).json()["id"]
                for i in range(args.rooms)]

            def patch(marker: str, target: int = episode_id) -> None:
                resp = http.patch(f"{self.url}/api/v1/episodes/{target}", json={"title": marker},
                                  timeout=30)
                if resp.status_code != 200:
                    raise RuntimeError(f"PATCH {resp.status_code}: {resp.text[:200]}")

            # Warm-up (imports, compiled queries, pools), not counted.
            self.connect(10, 1, only_first=True)
            self.server_threads_base = proc_status(self.server.pid)["threads"] or 0
            st0 = proc_status(self.server.pid)
            r["rss_base_kb"], r["threads_base"] = st0["rss_kb"], st0["threads"]

            # 1. connection setup, one at a time.
            seq = self.connect(args.seq_connects, 1, only_first=True)
            r["connect_seq"] = seq["latencies"]
            r["connect_seq_errors"] = seq["errors"]
            print(f"  sequential connects: {fmt_pp(seq['latencies'])} ms {seq['errors'] or ''}", flush=True)

            sizes = sorted({args.latency_clients, *args.fanout})
            r["fanout"] = {}
            for size in sizes:
                self.check_server()
                before = proc_status(self.server.pid)
                alive_before = self.loads.stats()["alive"]
                cpu0 = cpu_seconds(self.server.pid)
                grow = self.grow_to(size, budget=args.ramp_budget)
                cpu1 = cpu_seconds(self.server.pid)
                after = proc_status(self.server.pid)
                r.setdefault("connect_ramp", []).extend(grow["latencies"])
                added = grow["alive"] - alive_before
                if added > 0 and before["rss_kb"] and after["rss_kb"]:
                    r.setdefault("rss_steps", []).append(
                        {"from": alive_before, "to": grow["alive"],
                         "kb_per_conn": (after["rss_kb"] - before["rss_kb"]) / added,
                         "rate": added / grow["seconds"], "cpu_ms": (cpu1 - cpu0) * 1000 / added,
                         "threads_per_conn": ((after["threads"] or 0) - (before["threads"] or 0)) / added,
                         "fds_per_conn": ((after["fds"] or 0) - (before["fds"] or 0)) / added})
                self.check_server()
                print(f"  {grow['alive']} connected in {grow['seconds']:.1f} s; ramp connects "
                      f"{fmt_pp(grow['latencies'])} ms; RSS {after['rss_kb'] / 1024:.0f} MB, "
                      f"threads {after['threads']}, fds {after['fds']} {grow['reason'] or ''}", flush=True)
                if grow["alive"] < size:
                    r["fanout"][size] = {"error": f"only {grow['alive']} connected: {grow['reason']}"}
                    r["notes"].append(f"room of {size}: only {grow['alive']} connected ({grow['reason']})")
                    break
                if size == args.latency_clients and args.rooms:
                    r["spread"] = self.spread_latency(mode, size, small_rooms, patch, worker)
                    worker = None
                # Join them (the worker is stopped: no viewer_joined fan-out), then settle.
                if worker is not None:
                    stop(worker)
                    worker = None
                cpu0, t = cpu_seconds(self.server.pid), time.monotonic()
                joined = self.join_all(episode_id=episode_id)
                n_joined = len(joined["latencies"])
                if n_joined:
                    r.setdefault("join_steps", []).append(
                        {"n": n_joined, "rate": n_joined / (time.monotonic() - t),
                         "cpu_ms": (cpu_seconds(self.server.pid) - cpu0) * 1000 / n_joined})
                r.setdefault("join", []).extend(joined["latencies"])
                settled = self.settle_outbox()
                print(f"  joined {joined['joined']} (acks {fmt_pp(joined['latencies'])} ms, "
                      f"errors {joined['errors'] or 0}); {settled} events marked delivered unemitted",
                      flush=True)
                worker = self.start_worker(mode, size)
                if not self.wait_outbox_idle():
                    r["notes"].append("outbox did not go idle before measuring; drain flag cleared")
                n = args.updates if size == args.latency_clients else args.fanout_updates
                res = self.run_updates(patch, n, f"{mode}-{size}", room=episode_id)
                payload = res.pop("payload", None)
                if self.payload is None:
                    self.payload = payload  # the bare server emits this very envelope
                r["fanout"][size] = res
                if size == args.latency_clients:
                    r["latency"] = res
                print(f"  room {res['room']}: REST→event {fmt_pp(res['samples'])} ms at the measuring "
                      f"clients; REST→last {fmt_pp(res['last'])}; spread {fmt_pp(res['spread'])}; "
                      f"PATCH {fmt_pp(res['rest'])}; missing {res['missing']}", flush=True)

            if worker is not None:
                stop(worker)
                worker = None
            # 5. capacity: ramp until refusals/errors or the cap.
            grow = self.grow_to(args.max_connections, budget=args.ramp_budget)
            self.check_server()
            st = proc_status(self.server.pid)
            time.sleep(2)
            alive = self.loads.stats()["alive"]
            t = time.monotonic()
            try:
                health = requests.get(f"{self.url}/api/v1/health", timeout=30).status_code
            except requests.RequestException as exc:
                health = short_error(exc)
            reason = grow["reason"] or f"reached --max-connections {args.max_connections}"
            r["max"] = {"alive": alive, "peak": grow["peak"], "reason": reason,
                        "rss_kb": st["rss_kb"], "threads": st["threads"], "fds": st["fds"],
                        "errors": grow["errors"],
                        "health": health, "health_ms": (time.monotonic() - t) * 1000,
                        "seconds": grow["seconds"]}
            r.setdefault("connect_ramp", []).extend(grow["latencies"])
            print(f"  capacity: {alive} held ({reason}); RSS {(st['rss_kb'] or 0) / 1024:.0f} MB, "
                  f"threads {st['threads']}; /health {health} in {r['max']['health_ms']:.0f} ms", flush=True)
        except Exception as exc:  # noqa: BLE001 - a mode that cannot go on is reported, not fatal
            r["fatal"] = short_error(exc)
            print(f"  {mode} stopped: {exc}", flush=True)
        finally:
            if worker is not None:
                stop(worker)
            alive = 0
            with suppress(Exception):
                stats = self.loads.stats()
                alive, r["dropped"] = stats["alive"], stats["clients"] - stats["alive"]
            r["shutdown"] = self.stop_server(alive)
            print(f"  shutdown with {alive} connected: {r['shutdown']}", flush=True)
            self.loads.close()
            self.cleanup_db()
            drops1 = listen_drops()
            r["listen_drops"] = {k: drops1.get(k, 0) - drops0.get(k, 0) for k in drops1}
            r["errors_in_log"] = log_errors(log)
            r["seconds"] = time.monotonic() - t_mode
            r["load_end"] = loadavg()
        return r

    def spread_latency(self, mode: str, size: int, rooms: list[int], patch, worker) -> dict:
        """The latency figure: ``size`` clients connected, spread over ``rooms`` (a few viewers
        per episode, as in use); updates to one episode, timed at every client of its room."""
        if worker is not None:
            stop(worker)
        joined = self.join_all(spread_over=rooms)
        self.settle_outbox()
        worker = self.start_worker(mode, size)
        try:
            self.wait_outbox_idle()
            target = rooms[0]
            res = self.run_updates(lambda marker: patch(marker, target), self.args.updates,
                                   f"{mode}-spread-{size}", room=target, measure=size)
        finally:
            stop(worker)
        res.pop("payload", None)
        res["joined"] = joined["joined"]
        print(f"  {joined['joined']} connected over {len(rooms)} rooms: REST→event "
              f"{fmt_pp(res['samples'])} ms at all {res['room']} clients of the updated room; "
              f"PATCH {fmt_pp(res['rest'])}; missing {res['missing']}", flush=True)
        return res

    def check_server(self) -> None:
        if self.server is not None and self.server.poll() is not None:
            raise RuntimeError(f"server exited with {self.server.returncode}")

    def stop_server(self, alive: int) -> str:
        """SIGTERM (graceful: every client told, presence cleared); SIGKILL after the grace."""
        proc = self.server
        if proc.poll() is not None:
            return f"had exited ({proc.returncode})"
        t = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(self.args.shutdown_grace)
            text = f"exit {proc.returncode} in {time.monotonic() - t:.1f} s"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            text = f"not done after {self.args.shutdown_grace:.0f} s: killed"
        return f"{text}; {self.presence_rows()} of {alive} presence sockets left"

    def presence_rows(self) -> int:
        """Sockets still in the presence store (Redis)."""
        import redis

        return redis.Redis.from_url(self.env["REDIS_URL"]).hlen("ec:presence:socks")

    # ---- storm (issue 12, scenario a)
    def storm_phase(self, n: int, *, auth: bool, trigger, episode_id: int, tag: str) -> dict:
        """n clients connect with every connect in flight at once, then every join at once,
        then ``--storm-updates`` events to the room: each must reach every client."""
        per_proc = max(1, -(-n // len(self.loads.conns)))
        t = time.monotonic()
        c = self.connect(n, per_proc, auth=auth, stop_after_errors=n, budget=self.args.ramp_budget,
                         connect_timeout=self.args.storm_timeout)
        connect_s = time.monotonic() - t
        t = time.monotonic()
        j = self.join_all(episode_id=episode_id, concurrency=n, timeout=self.args.storm_timeout)
        join_s = time.monotonic() - t
        print(f"  {tag}: {c['alive']}/{n} connected in {connect_s:.1f} s (connect "
              f"{fmt_pp(c['latencies'])} ms, errors {c['errors'] or 0}); {j['joined']} joined in "
              f"{join_s:.1f} s (acks {fmt_pp(j['latencies'])} ms, errors {j['errors'] or 0})",
              flush=True)
        res = self.run_updates(trigger, self.args.storm_updates, tag, room=episode_id,
                               timeout=self.args.storm_timeout)
        res.pop("payload", None)
        print(f"  {tag}: REST→last {fmt_pp(res['last'])} ms over {res['room']} joined clients; "
              f"missing {res['missing']}", flush=True)
        return {"n": n, "connected": c["alive"], "connect": c["latencies"],
                "connect_errors": c["errors"], "connect_s": connect_s, "joined": j["joined"],
                "join": j["latencies"], "join_errors": j["errors"], "join_s": join_s,
                "updates": res}

    def run_storm_a(self, n: int) -> dict:
        """Scenario (a): ours (eventlet, a real worker) and then the bare server, same run."""
        import requests

        out: dict = {"n": n, "users": len(self.tokens)}
        port = free_port()
        log = LOG_DIR / "web-storm.log"
        self.url = f"http://127.0.0.1:{port}"
        print(f"\n=== storm: {n} clients over {len(self.tokens)} users (load {loadavg()})", flush=True)
        self.server = self.start_server("eventlet", port, log)
        worker = self.start_worker("storm", n)
        self.loads = LoadPool(self.args.load_procs)
        self.offset = 0
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {self.editor_token}"
        try:
            self.connect(10, 1, only_first=True)  # warm-up, not counted
            self.loads.call("exit_clients")
            episode_id = http.post(f"{self.url}/api/v1/episodes", timeout=30, json={
                "title": "storm", "episode_number": 1}).json()["id"]

            def patch(marker: str) -> None:
                resp = http.patch(f"{self.url}/api/v1/episodes/{episode_id}",
                                  json={"title": marker}, timeout=60)
                if resp.status_code != 200:
                    raise RuntimeError(f"PATCH {resp.status_code}: {resp.text[:200]}")

            cpu0 = cpu_seconds(self.server.pid)
            out["ours"] = self.storm_phase(n, auth=True, trigger=patch, episode_id=episode_id,
                                           tag="storm-ours")
            out["ours"]["server_cpu_s"] = cpu_seconds(self.server.pid) - cpu0
            out["ours"]["rss_kb"] = proc_status(self.server.pid)["rss_kb"]
        except Exception as exc:  # noqa: BLE001 - reported
            out["ours_fatal"] = short_error(exc)
            print(f"  storm (ours) stopped: {exc}", flush=True)
        finally:
            stop(worker)
            alive = 0
            with suppress(Exception):
                alive = self.loads.stats()["alive"]
            out["shutdown"] = self.stop_server(alive)
            self.loads.close()
            self.cleanup_db()
            out["errors_in_log"] = log_errors(log)
        bare_port = free_port()
        bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(bare_port)],
                                stdout=open(LOG_DIR / "bare-storm.log", "wb"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.bare_pid, self.server, self.url = bare.pid, None, f"http://127.0.0.1:{bare_port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with suppress(requests.RequestException):
                if requests.get(self.url + "/", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        self.loads = LoadPool(self.args.load_procs)
        self.offset = 0
        envelope = self.payload or {"id": 1, "event": "episode_updated", "actor": None,
                                    "timestamp": "2026-01-01T00:00:00Z", "data": {}}

        def emit(marker: str) -> None:
            body = json.loads(json.dumps(envelope))
            body["data"]["title"] = marker
            requests.post(self.url + "/emit", timeout=60,
                          json={"event": "episode_updated", "room": "episode:1", "data": body})

        try:
            self.connect(10, 1, only_first=True, auth=False)
            self.loads.call("exit_clients")
            out["bare"] = self.storm_phase(n, auth=False, trigger=emit, episode_id=1,
                                           tag="storm-bare")
        except Exception as exc:  # noqa: BLE001
            out["bare_fatal"] = short_error(exc)
            print(f"  storm (bare) stopped: {exc}", flush=True)
        finally:
            self.loads.close()
            with suppress(ProcessLookupError):
                os.killpg(bare.pid, signal.SIGKILL)
            bare.wait(10)
        print("\n" + storm_a_table(out), flush=True)
        return out

    # ---- scenario (b): reconnect storm after a restart
    def storm_clients(self, url: str, rooms: list[int], auth: bool) -> dict:
        n, k = self.args.storm_clients, len(self.loads.conns)
        per, offset = [], 0
        for i in range(k):
            c = n // k + (1 if i < n % k else 0)
            per.append({"count": c, "offset": offset})
            offset += c
        rs = self.loads.call("storm_connect", per=per, url=url, concurrency=self.args.concurrency,
                             tokens=self.tokens if auth else None, rooms=rooms)
        errors: Counter = Counter()
        for r in rs:
            errors.update(r["errors"])
        return {"ready": sum(r["ready"] for r in rs), "errors": dict(errors)}

    def storm_wait(self, since: float, timeout: float) -> dict:
        """Poll the clients until every one is back and has replayed (or the timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            rs = self.loads.call("storm_status", since=since)
            done = sum(len(r["done"]) for r in rs)
            back = sum(len(r["back"]) for r in rs)
            if min(done, back) >= self.args.storm_clients or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        back = [x for r in rs for x in r["back"]]
        why: Counter = Counter()
        for r in rs:
            why.update(r["why_failed"])
        finished = [x for r in rs for x in r["done"]]
        return {"clients": sum(r["clients"] for r in rs), "back": len(back), "done": len(finished),
                "all_back_s": max(back) if len(back) == self.args.storm_clients else None,
                "all_done_s": max(finished) if len(finished) == self.args.storm_clients else None,
                "back_p50_s": pct(back, 50) if back else None,
                "resyncs": sum(r["resyncs"] for r in rs), "attempts": sum(r["attempts"] for r in rs),
                "failed_attempts": sum(r["failed_attempts"] for r in rs),
                "why_failed": dict(why.most_common(4)),
                "missing": sum(r["missing"] for r in rs)}

    def run_storm_b(self) -> dict:
        """Scenario (b): M clients connected with last_event_id tracking, the web process
        restarted (SIGTERM, start again) while K events happen, every client reconnecting
        with backoff and last_event_id; REST calls (GET, and a PATCH in five) meanwhile."""
        import threading

        import requests
        from sqlalchemy import text

        from app.extensions import db
        from app.models import User
        from app.services import episodes as episode_service

        args = self.args
        r: dict = {"mode": "eventlet", "clients": args.storm_clients, "events": args.storm_events,
                   "load_start": loadavg()}
        port = free_port()
        log = LOG_DIR / "web-storm.log"
        self.url = url = f"http://127.0.0.1:{port}"
        print(f"\n=== storm (b): {args.storm_clients} clients, eventlet on :{port} "
              f"(load {loadavg()})", flush=True)
        self.server = self.start_server("eventlet", port, log)
        self.loads = LoadPool(args.load_procs)
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {self.editor_token}"
        worker = None
        try:
            rooms = [http.post(f"{url}/api/v1/episodes", timeout=30, json={
                "title": f"storm room {i}", "episode_number": i + 1}).json()["id"]
                for i in range(args.storm_rooms)]
            t = time.monotonic()
            up = self.storm_clients(url, rooms, auth=True)
            r["connect_s"] = time.monotonic() - t
            print(f"  {up['ready']} connected and joined in {r['connect_s']:.1f} s "
                  f"{up['errors'] or ''}", flush=True)
            self.settle_outbox()  # the joins' viewer_joined: not part of the storm
            worker = self.start_worker("storm", args.storm_clients)
            self.wait_outbox_idle()
            # One update per room, so every client holds a recent last_event_id.
            for room in rooms:
                http.patch(f"{url}/api/v1/episodes/{room}", json={"title": f"before {room}"}, timeout=30)
            self.wait_outbox_idle()
            time.sleep(1)
            markers = [f"storm-{k}" for k in range(args.storm_events)]
            self.loads.call("storm_arm", expected=markers)
            t = time.monotonic()
            os.killpg(self.server.pid, signal.SIGTERM)
            self.server.wait(args.shutdown_grace)
            r["shutdown_s"] = time.monotonic() - t
            # Changes made while the web process is down (another process would make them).
            with self.app.app_context():
                editor = db.session.scalar(db.select(User).filter_by(email="editor@bench.example"))
                for k, marker in enumerate(markers):
                    episode_service.update_episode(editor, rooms[k % len(rooms)], {"title": marker})
            r["outbox_idle"] = self.wait_outbox_idle(60)

            def pg_counts() -> tuple[int, int]:
                with self.app.app_context():
                    row = db.session.execute(text(
                        "SELECT (SELECT xact_commit + xact_rollback FROM pg_stat_database "
                        "WHERE datname = current_database()), (SELECT coalesce(seq_scan, 0) + "
                        "coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = "
                        "'domain_events')")).one()
                    db.session.rollback()
                return int(row[0]), int(row[1])

            pg0 = pg_counts()
            rest: list[float] = []
            rest_errors: Counter = Counter()
            during: list[str] = []
            stop_rest = threading.Event()

            def rest_probe() -> None:
                session = requests.Session()
                session.headers["Authorization"] = f"Bearer {self.editor_token}"
                i = 0
                while not stop_rest.is_set():
                    i += 1
                    room = rooms[i % len(rooms)]
                    t1 = time.monotonic()
                    try:
                        if i % 5 == 0:
                            marker = f"storm-during-{i}"
                            resp = session.patch(f"{url}/api/v1/episodes/{room}", timeout=30,
                                                 json={"title": marker})
                            if resp.status_code == 200:
                                during.append((marker, room))
                        else:
                            resp = session.get(f"{url}/api/v1/episodes/{room}", timeout=30)
                        if resp.status_code >= 400:
                            rest_errors[str(resp.status_code)] += 1
                        else:
                            rest.append((time.monotonic() - t1) * 1000)
                    except requests.RequestException as exc:
                        rest_errors[type(exc).__name__] += 1
                    time.sleep(0.05)

            t0 = time.monotonic()
            self.server = self.start_server("eventlet", port, LOG_DIR / "web-storm-2.log")
            r["restart_s"] = time.monotonic() - t0
            probe = threading.Thread(target=rest_probe, daemon=True)
            probe.start()
            res = self.storm_wait(t0, args.storm_timeout)
            stop_rest.set()
            probe.join(35)
            pg1 = pg_counts()
            self.wait_outbox_idle(30)
            time.sleep(2)
            late = self.loads.call("storm_missing", markers=during)
            rs = self.loads.call("storm_status", since=t0, stop=True)
            r.update(res)
            r["rest"] = rest
            r["rest_errors"] = dict(rest_errors)
            r["during_events"] = len(during)
            r["during_missing"] = sum(x["missing"] for x in late)
            r["during_expected"] = sum(x["expected"] for x in late)
            r["pg_xacts"], r["pg_event_scans"] = pg1[0] - pg0[0], pg1[1] - pg0[1]
            r["resyncs"] = sum(x["resyncs"] for x in rs)
            print(f"  restart: server up {r['restart_s']:.1f} s after the start command; "
                  f"{res['back']}/{args.storm_clients} back (all by "
                  f"{res['all_back_s'] and round(res['all_back_s'], 1)} s), "
                  f"{res['done']} replayed all {args.storm_events} events (all by "
                  f"{res['all_done_s'] and round(res['all_done_s'], 1)} s); missing "
                  f"{res['missing']}; resync {r['resyncs']}; attempts {res['attempts']} "
                  f"({res['failed_attempts']} failed); REST {fmt_pp(rest)} ms "
                  f"(n={len(rest)}, errors {dict(rest_errors) or 0}); PG transactions "
                  f"{r['pg_xacts']}, domain_events scans {r['pg_event_scans']}; events during "
                  f"the storm {len(during)}, deliveries to their rooms' clients missing "
                  f"{r['during_missing']} of {r['during_expected']}", flush=True)
        except Exception as exc:  # noqa: BLE001 - reported
            r["fatal"] = short_error(exc)
            print(f"  storm stopped: {exc}", flush=True)
        finally:
            if worker is not None:
                stop(worker)
            with suppress(Exception):
                self.loads.call("storm_status", since=0, stop=True)
            r["shutdown"] = self.stop_server(0)
            self.loads.close()
            self.cleanup_db()
            r["errors_in_log"] = log_errors(LOG_DIR / "web-storm-2.log")
            r["load_end"] = loadavg()
        return r

    def run_storm_bare(self) -> dict:
        """The same storm against the bare server: no auth, no replay; time until all are
        back (reconnected and rejoined) after a restart."""
        import requests

        args = self.args
        r: dict = {"mode": "bare", "clients": args.storm_clients, "load_start": loadavg()}
        port = free_port()
        url = f"http://127.0.0.1:{port}"

        def start():
            proc = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(port)],
                                    stdout=open(LOG_DIR / "bare-storm.log", "ab"),
                                    stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with suppress(requests.RequestException):
                    if requests.get(url + "/", timeout=2).status_code == 200:
                        return proc
                time.sleep(0.05)
            raise RuntimeError("bare server did not come up")

        print(f"\n=== storm (b), bare python-socketio on :{port}", flush=True)
        proc = start()
        self.loads = LoadPool(args.load_procs)
        rest: list[float] = []
        try:
            up = self.storm_clients(url, [1], auth=False)
            print(f"  {up['ready']} connected and joined {up['errors'] or ''}", flush=True)
            self.loads.call("storm_arm", expected=[])
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
            t0 = time.monotonic()
            proc = start()
            r["restart_s"] = time.monotonic() - t0
            res = self.storm_wait(t0, args.storm_timeout)
            for _ in range(50):
                t1 = time.monotonic()
                requests.get(url + "/", timeout=30)
                rest.append((time.monotonic() - t1) * 1000)
            r.update(res)
            r["rest_after"] = rest
            print(f"  restart: up {r['restart_s']:.1f} s; {res['back']}/{args.storm_clients} back "
                  f"(all by {res['all_back_s'] and round(res['all_back_s'], 1)} s); attempts "
                  f"{res['attempts']} ({res['failed_attempts']} failed)", flush=True)
        except Exception as exc:  # noqa: BLE001
            r["fatal"] = short_error(exc)
            print(f"  bare storm stopped: {exc}", flush=True)
        finally:
            with suppress(Exception):
                self.loads.call("storm_status", since=0, stop=True)
            self.loads.close()
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        return r

    # ---- the bare python-socketio server
    def run_bare(self, sizes: list[int]) -> dict:
        import requests

        r: dict = {"mode": "bare", "fanout": {}, "load_start": loadavg()}
        port = free_port()
        log = LOG_DIR / "bare.log"
        out = open(log, "wb")
        proc = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(port)], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.bare_pid = proc.pid
        self.url = f"http://127.0.0.1:{port}"
        self.server, self.server_threads_base, self.offset = None, 0, 0
        print(f"\n=== bare python-socketio server on :{port} (load {loadavg()})", flush=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with suppress(requests.RequestException):
                if requests.get(self.url + "/", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        self.loads = LoadPool(self.args.load_procs)
        http = requests.Session()
        envelope = self.payload or {"id": 1, "event": "episode_updated", "actor": None,
                                    "timestamp": "2026-01-01T00:00:00Z", "data": {}}

        def emit(marker: str) -> None:
            body = json.loads(json.dumps(envelope))
            body["data"]["title"] = marker
            http.post(self.url + "/emit", timeout=30,
                      json={"event": "episode_updated", "room": "episode:1", "data": body})

        try:
            seq = self.connect(self.args.seq_connects, 1, only_first=True, auth=False)
            r["connect_seq"] = seq["latencies"]
            for size in sizes:
                grow = self.grow_to(size, auth=False, budget=self.args.ramp_budget)
                self.join_all(episode_id=1)
                n = self.args.updates if size == self.args.latency_clients else self.args.fanout_updates
                res = self.run_updates(emit, n, f"bare-{size}", room=1)
                res.pop("payload", None)
                r["fanout"][size] = res
                print(f"  room {res['room']} ({grow['alive']} connected): POST→event "
                      f"{fmt_pp(res['samples'])} ms; POST→last {fmt_pp(res['last'])}; "
                      f"spread {fmt_pp(res['spread'])}; missing {res['missing']}", flush=True)
        except Exception as exc:  # noqa: BLE001
            r["fatal"] = short_error(exc)
            print(f"  bare stopped: {exc}", flush=True)
        finally:
            self.loads.close()
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        return r


    # ---- memory per idle connection, as browsers and as plain clients connect
    def run_memory(self) -> dict:
        """RSS step per idle connection on /episodes, for each server and each client kind.

        Each (server, clients) pair gets a fresh server: ``--memory-steps`` A,B connects A
        clients (batches of ``--concurrency`` per load process), waits ``--memory-settle``
        seconds, reads the server's RSS, connects up to B, waits, reads again:
        (RSS_B - RSS_A) / (B - A). The issue's method (1,000 → 4,000, 5 s).
        """
        args = self.args
        a, b = args.memory_steps
        out: dict = {"steps": [a, b], "servers": {}}
        have_node = (NODE_DIR / "node_modules").exists()
        servers = [s for s in args.memory_servers if s != "node" or have_node]
        if "node" in args.memory_servers and "node" not in servers:
            out["note"] = f"no Node peer: run `npm ci` in {NODE_DIR}"
        if args.memory_trace:
            print(f"\n=== memory breakdown: the product under tracemalloc (load {loadavg()})",
                  flush=True)
            res = self.memory_once("product", False, a, b, traced=True)
            out["trace"] = res.get("trace") or res.get("error")
            print(out["trace"], flush=True)
        for server in servers:
            for offers in (True, False):
                key = "offers" if offers else "plain"
                print(f"\n=== memory: {server}, clients {'offering' if offers else 'not offering'} "
                      f"permessage-deflate (load {loadavg()})", flush=True)
                res = self.memory_once(server, offers, a, b)
                out["servers"].setdefault(server, {})[key] = res
                print(f"  {fmt_mem(res)}", flush=True)
        return out

    def memory_once(self, server: str, offers: bool, a: int, b: int, traced: bool = False) -> dict:
        port = free_port()
        log = LOG_DIR / f"memory-{server}-{'offers' if offers else 'plain'}{'-traced' if traced else ''}.log"
        auth = server.startswith("product")
        self.url, self.offset, self.compress = f"http://127.0.0.1:{port}", 0, offers
        trace_out = str(LOG_DIR / f"trace-{server}-{'offers' if offers else 'plain'}")
        try:
            if auth:
                env = dict(kv.split("=", 1) for kv in self.args.memory_env) if server == "product+env" else {}
                if traced:
                    env["MEMTRACE_OUT"] = trace_out
                proc = self.server = self.start_server("eventlet", port, log, traced=traced, **env)
            else:
                proc, self.server = start_peer(server, port, log), None
        except Exception as exc:  # noqa: BLE001 - reported in the table
            return {"error": short_error(exc)}
        self.bare_pid = proc.pid
        self.loads = LoadPool(self.args.load_procs)
        res: dict = {}
        try:
            self.connect(10, 1, only_first=True, auth=auth)  # warm-up
            points = []
            for target in (a, b):
                grow = self.grow_to(target, auth=auth, budget=self.args.ramp_budget)
                if grow["alive"] < target:
                    raise RuntimeError(f"only {grow['alive']} of {target} connected: {grow['reason']}")
                time.sleep(self.args.memory_settle)
                points.append({**proc_status(proc.pid), **self.loads.stats()})
                if traced:
                    k = len(points)
                    os.kill(proc.pid, signal.SIGUSR2)
                    deadline = time.monotonic() + 300
                    while not Path(f"{trace_out}.{k}.done").exists():
                        if time.monotonic() > deadline or proc.poll() is not None:
                            raise RuntimeError("the traced server wrote no snapshot")
                        time.sleep(0.2)
            p0, p1 = points
            res = {"kb_per_conn": (p1["rss_kb"] - p0["rss_kb"]) / (p1["alive"] - p0["alive"]),
                   "points": points, "deflate": p1["deflate"], "alive": p1["alive"]}
            if traced:
                res["trace"] = trace_report(trace_out, p1["alive"] - p0["alive"],
                                            p1["rss_kb"] - p0["rss_kb"])
        except Exception as exc:  # noqa: BLE001 - reported in the table
            res["error"] = short_error(exc)
        finally:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # nothing of its shutdown is measured here
            proc.wait(10)
            self.loads.close()
            if auth:
                self.cleanup_db()
        return res


def start_peer(kind: str, port: int, log: Path) -> subprocess.Popen:
    """A bare peer server: python-socketio on eventlet, or Node socket.io 4."""
    import requests

    cmd = ([sys.executable, "-c", BARE_SERVER, str(port)] if kind == "bare"
           else ["node", str(NODE_DIR / "bare_server.js"), str(port)])
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited: {log.read_text()[-1000:]}")
        with suppress(requests.RequestException):
            if requests.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                return proc
        time.sleep(0.2)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # never leave it behind
    proc.wait(10)
    raise RuntimeError(f"{kind} server did not come up")


AREAS = ("eventlet", "engineio", "flask_socketio", "socketio", "greenlet", "simple_websocket",
         "werkzeug", "flask", "sqlalchemy", "psycopg", "redis", "kombu", "celery", "app")


def area_of(frames) -> str:
    """The package an allocation belongs to: the innermost frame outside the standard
    library (``socket.makefile`` called by eventlet.wsgi is eventlet's)."""
    stdlib = sys.base_prefix
    for frame in reversed(frames):  # tracemalloc keeps them oldest first
        name = frame.filename
        if "site-packages" not in name and not name.startswith(str(ROOT)) and name.startswith(stdlib):
            continue
        for area in AREAS:
            if f"/{area}/" in name or (area == "app" and name.startswith(str(ROOT / "app"))):
                return area
        return Path(name).name
    return f"stdlib {Path(frames[0].filename).name}" if len(frames) else "?"


def trace_report(out: str, n: int, rss_kb: int) -> str:
    """Bytes per added connection: tracemalloc by package and by line, live objects by type."""
    import tracemalloc

    a = tracemalloc.Snapshot.load(f"{out}.1.snap")
    b = tracemalloc.Snapshot.load(f"{out}.2.snap")
    with open(f"{out}.1.json") as f:
        ja = json.load(f)
    with open(f"{out}.2.json") as f:
        jb = json.load(f)
    traced = (jb["traced"] - ja["traced"]) / n
    lines = [f"per added connection ({n}): RSS {rss_kb * 1024 / n:,.0f} B; traced by tracemalloc "
             f"{traced:,.0f} B (the rest: allocator overhead, fragmentation, untraced C memory)"]
    areas: Counter = Counter()
    for st in b.compare_to(a, "traceback"):
        areas[area_of(st.traceback)] += st.size_diff
    lines.append("  by package: " + ", ".join(f"{k} {v / n:,.0f}" for k, v in areas.most_common(12)))
    lines.append("  by line (allocation site, innermost frame):")
    for st in b.compare_to(a, "lineno")[:18]:
        fr = st.traceback[0]
        name = fr.filename.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
        lines.append(f"    {st.size_diff / n:8,.0f} B {st.count_diff / n:6.2f} blocks  {name}:{fr.lineno}")
    counts = Counter({k: jb["counts"].get(k, 0) - ja["counts"].get(k, 0) for k in jb["counts"]})
    sizes = {k: jb["sizes"].get(k, 0) - ja["sizes"].get(k, 0) for k in jb["sizes"]}
    lines.append("  live objects (collector) per connection: " + ", ".join(
        f"{k} {v / n:.1f} ({sizes.get(k, 0) / n:,.0f} B)" for k, v in counts.most_common(16)))
    return "\n".join(lines)


def fmt_mem(res: dict) -> str:
    if res.get("error"):
        return f"failed: {res['error']}"
    p0, p1 = res["points"]
    return (f"{res['kb_per_conn']:.1f} KB ({p0['alive']}→{p1['alive']}: "
            f"{p0['rss_kb'] / 1024:.0f}→{p1['rss_kb'] / 1024:.0f} MB; deflate on {res['deflate']})")


MEMORY_NAMES = {"product": "this product (eventlet)", "bare": "bare python-socketio 5 (eventlet)",
                "node": "bare Node socket.io 4", "product+env": "this product with --memory-env"}


def memory_table(mem: dict) -> str:
    """Servers by rows; clients that offer permessage-deflate and clients that do not."""
    a, b = mem["steps"]
    node = mem["servers"].get("node", {})
    head = ["server", "clients offer permessage-deflate (browsers)", "clients do not"]
    if node.get("plain", {}).get("kb_per_conn"):
        head.append("ratio to Node (offer / not)")
    rows = []
    for server, res in mem["servers"].items():
        row = [MEMORY_NAMES.get(server, server), fmt_mem(res.get("offers", {"error": "not run"})),
               fmt_mem(res.get("plain", {"error": "not run"}))]
        if len(head) == 4:
            ratios = []
            for key in ("offers", "plain"):
                mine, ref = res.get(key, {}).get("kb_per_conn"), node.get(key, {}).get("kb_per_conn")
                ratios.append(f"{mine / ref:.1f}×" if mine and ref else "-")
            row.append(" / ".join(ratios))
        rows.append(row)
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = [f"RSS per idle connection on {NS} (RSS step {a}→{b} clients, read "
             "after the settle time), one fresh server per cell:",
             " | ".join(c.ljust(w) for c, w in zip(head, widths, strict=True)),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    if mem.get("note"):
        lines.append(mem["note"])
    if mem.get("trace"):
        lines += ["", "breakdown of the product (clients not offering, under tracemalloc):", mem["trace"]]
    return "\n".join(lines)


def log_errors(log: Path) -> list[str]:
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    bad = [ln for ln in lines if " ERROR " in ln or "Traceback" in ln or "CRITICAL" in ln]
    return bad[:5] + ([f"... {len(bad)} lines in all"] if len(bad) > 5 else [])


# --------------------------------------------------------------------------- report

def fmt_pp(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{pct(values, 50):.1f}/{pct(values, 99):.1f}"


def med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def table(results: list[dict], bare: dict | None, args) -> str:
    modes = [r["mode"] for r in results]
    rows: list[tuple[str, list[str], str]] = []

    def biggest(r: dict) -> dict:
        return max(r["rss_steps"], key=lambda s: s["to"] - s["from"])

    def fan(r: dict, size: int) -> dict:
        res = r["fanout"][size]
        if res.get("error"):
            raise ValueError("n/a (not enough connections)")
        if res["room"] < 0.9 * size:
            raise ValueError(f"invalid: room fell to {res['room']}")
        return res

    def add(label: str, fn, target: str = "") -> None:
        cells = []
        for r in results:
            try:
                cells.append(fn(r))
            except ValueError as exc:
                cells.append(str(exc))
            except Exception:  # noqa: BLE001 - a step the mode could not do
                cells.append("n/a" if "fatal" not in r else "failed")
        rows.append((label, cells, target))

    add("connect, one at a time p50/p99 ms", lambda r: fmt_pp(r["connect_seq"]), "p99 < 50")
    add(f"connect while ramping ({args.concurrency}×{args.load_procs} in flight) p50/p99 ms",
        lambda r: fmt_pp(r["connect_ramp"]), "")
    add("connects/s while ramping; server CPU ms per connect",
        lambda r: f"{biggest(r)['rate']:.0f}; {biggest(r)['cpu_ms']:.1f}")
    add("join ack p50/p99 ms", lambda r: fmt_pp(r["join"]))
    add("joins/s; server CPU ms per join",
        lambda r: f"{r['join_steps'][-1]['rate']:.0f}; {r['join_steps'][-1]['cpu_ms']:.1f}")
    lc = args.latency_clients
    add(f"REST→episode_updated p50/p99 ms ({lc} connected, {args.rooms} rooms, all of one room measured)",
        lambda r: fmt_pp(r["spread"]["samples"]) + f" (n={len(r['spread']['samples'])})", "p99 < 100")
    add(f"REST→episode_updated p50/p99 ms ({lc} in ONE room, {args.measure} measuring clients)",
        lambda r: fmt_pp(fan(r, lc)["samples"]) + f" (n={len(r['latency']['samples'])})")
    add("REST→first client of the room p50/p99 ms", lambda r: fmt_pp(fan(r, lc)["first"]))
    add("PATCH response p50/p99 ms", lambda r: fmt_pp(r["latency"]["rest"]))
    for size in sorted(set(args.fanout)):
        add(f"fan-out {size}: REST→last client p50/max ms",
            lambda r, s=size: f"{med(fan(r, s)['last']):.0f}/{max(fan(r, s)['last']):.0f}")
        add(f"fan-out {size}: first→last client p50 ms",
            lambda r, s=size: f"{med(fan(r, s)['spread']):.0f}")
        if bare and bare["fanout"].get(size, {}).get("last"):
            b = bare["fanout"][size]
            add(f"fan-out {size}: ratio to bare (REST→last / POST→last)",
                lambda r, s=size, b=b: f"{med(fan(r, s)['last']) / med(b['last']):.1f}×")
        add(f"fan-out {size}: CPU ms per event, server / load procs",
            lambda r, s=size: "{server:.0f} / {loads:.0f}".format(**fan(r, s)["cpu_ms"]))
        add(f"fan-out {size}: events missing", lambda r, s=size: str(fan(r, s)["missing"]))
    add("RSS per idle connection KB (largest step)",
        lambda r: f"{biggest(r)['kb_per_conn']:.1f} ({biggest(r)['from']}→{biggest(r)['to']})", "< 50")
    add("server threads / fds per connection",
        lambda r: f"{biggest(r)['threads_per_conn']:.2f} / {biggest(r)['fds_per_conn']:.2f}")
    add(f"max concurrent connections (cap {args.max_connections}): peak / alive at end",
        lambda r: f"{r['max'].get('peak', '?')} / {r['max']['alive']}", "10,000+")
    add("RSS MB / threads / fds at max",
        lambda r: f"{r['max']['rss_kb'] / 1024:.0f} / {r['max']['threads']} / {r['max']['fds']}")
    add("GET /health at max: status, ms", lambda r: f"{r['max']['health']}, {r['max']['health_ms']:.0f}")
    add("connections dropped by the server during the run", lambda r: str(r["dropped"]))
    add("shutdown (SIGTERM)", lambda r: r["shutdown"])
    add("listen-queue overflows (kernel, machine-wide)", lambda r: str(r["listen_drops"]["ListenOverflows"]))
    add("mode wall time s", lambda r: f"{r['seconds']:.0f}")
    add("load average start → end", lambda r: f"{r['load_start'].split()[0]}→{r['load_end'].split()[0]}")

    head = ["figure", *modes, "target"]
    body = [[label, *cells, target] for label, cells, target in rows]
    widths = [max(len(str(row[i])) for row in [head, *body]) for i in range(len(head))]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(head, widths, strict=True)),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in body]
    if bare:
        lines.append("")
        lines.append(f"bare python-socketio (eventlet, no auth/db; load {bare['load_start']}): "
                     f"connect one at a time {fmt_pp(bare.get('connect_seq', []))} ms")
        for size, b in sorted(bare["fanout"].items()):
            if b.get("last"):
                lines.append(f"  room {size}: POST→event {fmt_pp(b['samples'])} ms at measuring clients; "
                             f"POST→last p50 {med(b['last']):.0f} max {max(b['last']):.0f} ms; "
                             f"first→last p50 {med(b['spread']):.0f} ms; missing {b['missing']}; "
                             "CPU ms per event server {server:.0f} / load procs {loads:.0f}"
                             .format(**b["cpu_ms"]))
        if bare.get("fatal"):
            lines.append(f"  bare stopped: {bare['fatal']}")
    for r in results:
        extra = []
        if r.get("fatal"):
            extra.append(f"stopped: {r['fatal']}")
        if r.get("max"):
            extra.append(f"ramp stopped by: {r['max']['reason']}")
        extra += r.get("notes", [])
        extra += [f"server log: {line}" for line in r.get("errors_in_log", [])]
        if extra:
            lines.append(f"{r['mode']}: " + "\n    ".join(extra))
    return "\n".join(lines)


def storm_b_table(ours: dict, bare: dict | None) -> str:
    """Scenario (b) side by side with the bare server."""
    def s(value) -> str:
        return "-" if value is None else f"{value:.1f}"

    lines = [f"storm (b): {ours['clients']} clients, web process restarted (SIGTERM, start again), "
             f"{ours.get('events')} events while it was down"]
    if ours.get("fatal"):
        lines.append(f"  ours stopped: {ours['fatal']}")
    else:
        lines += [
            f"  ours: server up {s(ours.get('restart_s'))} s after the start command; all "
            f"{ours['clients']} back (reconnected and rejoined) by {s(ours.get('all_back_s'))} s "
            f"(p50 {s(ours.get('back_p50_s'))}; {ours.get('back')} back), all replayed by "
            f"{s(ours.get('all_done_s'))} s ({ours.get('done')} replayed); events missing "
            f"{ours.get('missing')}; "
            f"resync_required {ours.get('resyncs')}",
            f"        reconnect attempts {ours.get('attempts')} ({ours.get('failed_attempts')} failed: "
            f"{ours.get('why_failed')}); "
            f"REST p50/p99 during the storm {fmt_pp(ours.get('rest', []))} ms "
            f"(n={len(ours.get('rest', []))}, errors {ours.get('rest_errors') or 0})",
            f"        PostgreSQL transactions during the storm {ours.get('pg_xacts')}, domain_events "
            f"scans {ours.get('pg_event_scans')}; events made during the storm "
            f"{ours.get('during_events')}, deliveries to their rooms' clients missing "
            f"{ours.get('during_missing')} of {ours.get('during_expected')}",
        ]
        lines += [f"        server log: {line}" for line in ours.get("errors_in_log", [])]
    if bare:
        if bare.get("fatal"):
            lines.append(f"  bare stopped: {bare['fatal']}")
        else:
            lines.append(f"  bare python-socketio (no auth, no replay): up {s(bare.get('restart_s'))} s; "
                         f"all {bare['clients']} back by {s(bare.get('all_back_s'))} s "
                         f"(p50 {s(bare.get('back_p50_s'))}); attempts {bare.get('attempts')} "
                         f"({bare.get('failed_attempts')} failed)")
            if ours.get("all_back_s") and bare.get("all_back_s"):
                lines.append(f"  ratio all back, ours / bare: {ours['all_back_s'] / bare['all_back_s']:.1f}×")
    return "\n".join(lines)


def storm_a_table(out: dict) -> str:
    """Scenario (a) side by side: ours and the bare server, same clients, same run."""
    rows = ["| storm (a) | clients connected | connect p50 / p99 ms | joined (ack ok) | "
            "join ack p50 / p99 ms | all joined in | next episode_updated reached | REST→last p50 ms |",
            "|---|---|---|---|---|---|---|---|"]
    for key in ("ours", "bare"):
        r = out.get(key)
        if not r:
            rows.append(f"| {key} | {out.get(key + '_fatal', 'not run')} |||||||")
            continue
        u = r["updates"]
        reached = f"{u['room'] * u['n'] - u['missing']} of {u['room'] * u['n']}"
        rows.append(
            f"| {key} | {r['connected']} of {r['n']} | {fmt_pp(r['connect'])} | {r['joined']} | "
            f"{fmt_pp(r['join'])} | {r['join_s']:.1f} s | {reached} | "
            f"{med(u['last']) or float('nan'):.0f} |")
    ours, bare = out.get("ours"), out.get("bare")
    if ours and bare and ours["connect"] and bare["connect"]:
        ratio = statistics.median(ours["connect"]) / max(statistics.median(bare["connect"]), 1e-9)
        rows.append(f"\nconnect p50 ratio ours / bare: {ratio:.2f}× ({out['n']} clients over "
                    f"{out['users']} users)")
    if out.get("errors_in_log"):
        rows.append("server log: " + " | ".join(out["errors_in_log"]))
    return "\n".join(rows)


# --------------------------------------------------------------------------- main

def make_users(app, n: int) -> tuple[str, list[str]]:
    from datetime import timedelta

    from flask_jwt_extended import create_access_token
    from werkzeug.security import generate_password_hash

    from app.extensions import db
    from app.models import User

    with app.app_context():
        pw = generate_password_hash("benchbench")  # one hash for all: scrypt is slow on purpose
        editor = User(email="editor@bench.example", name="Bench Editor", role="editor", password_hash=pw)
        viewers = [User(email=f"viewer{i}@bench.example", name=f"Viewer {i}", role="viewer",
                        password_hash=pw) for i in range(n)]
        db.session.add_all([editor, *viewers])
        db.session.commit()
        life = timedelta(hours=3)
        return (create_access_token(identity=editor.id, expires_delta=life),
                [create_access_token(identity=u.id, expires_delta=life) for u in viewers])


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", default="eventlet,gevent,threading")
    p.add_argument("--latency-clients", type=int, default=1000)
    p.add_argument("--fanout", default="1000,5000", help="room sizes for the fan-out")
    p.add_argument("--clients", dest="fanout", help="alias of --fanout")
    p.add_argument("--max-connections", type=int, default=10_000, help="capacity ramp stops here")
    p.add_argument("--cap", type=int, default=12_000, help="MAX_CONNECTIONS of the server")
    p.add_argument("--updates", type=int, default=50, help="updates measured at --latency-clients")
    p.add_argument("--fanout-updates", type=int, default=10, help="updates at the other room sizes")
    p.add_argument("--measure", type=int, default=6, help="measuring clients (spread over the room)")
    p.add_argument("--rooms", type=int, default=100,
                   help="episodes the --latency-clients spread over for the latency figure (0: skip)")
    p.add_argument("--seq-connects", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=25, help="connects/joins in flight per load process")
    p.add_argument("--load-procs", type=int, default=2)
    p.add_argument("--step", type=int, default=1000, help="clients per ramp step")
    p.add_argument("--ramp-budget", type=float, default=120.0, help="seconds per ramp")
    p.add_argument("--max-server-threads", type=int, default=12_000,
                   help="stop ramping a threaded server before it has this many threads (pid_max guard)")
    p.add_argument("--users", type=int, default=100, help="viewer accounts the clients are spread over")
    p.add_argument("--worker-concurrency", type=int, default=2)
    p.add_argument("--gap", type=float, default=0.05, help="seconds between updates")
    p.add_argument("--shutdown-grace", type=float, default=15.0)
    p.add_argument("--no-bare", action="store_true")
    p.add_argument("--storm", type=int, default=0,
                   help="scenario (a) of issue 12 with this many clients over N/10 users "
                        "(connects, then joins, all in flight at once), ours and the bare server")
    p.add_argument("--storm-only", action="store_true", help="run only the storm scenarios (a) and/or (b)")
    p.add_argument("--storm-updates", type=int, default=3, help="events to the room after the storm")
    p.add_argument("--storm-timeout", type=float, default=180.0,
                   help="seconds a storm connect, join ack or event (a), or the whole "
                        "reconnect (b), may take")
    p.add_argument("--db-name", "--db", dest="db_name", default=DB_NAME,
                   help="the benchmark's PostgreSQL database (dropped)")
    p.add_argument("--storm-clients", type=int, default=0,
                   help="scenario (b): clients of the reconnect storm (0: skip; target 2000)")
    p.add_argument("--storm-events", type=int, default=20,
                   help="events made while the web process is down (each client must replay them)")
    p.add_argument("--storm-rooms", type=int, default=20, help="episodes the storm clients spread over")
    p.add_argument("--memory-steps", default="1000,4000",
                   help="memory phase: RSS is read at these two client counts")
    p.add_argument("--memory-settle", type=float, default=5.0, help="seconds before each RSS read")
    p.add_argument("--memory-servers", default="product,bare,node",
                   help="memory phase: product, bare (python-socketio), node (socket.io), "
                        "product+env (the product with --memory-env)")
    p.add_argument("--memory-env", action="append", default=[], metavar="NAME=VALUE",
                   help="environment of the product+env server, e.g. SOCKETIO_WS_COMPRESSION=1")
    p.add_argument("--memory-only", action="store_true", help="only the memory phase")
    p.add_argument("--memory-trace", action="store_true",
                   help="memory phase: first a breakdown of the product's bytes per connection "
                        "(tracemalloc, live objects by type; bench/traced_server.py)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory phase")
    p.add_argument("--json", default=str(LOG_DIR / "results.json"))
    p.add_argument("--report", metavar="JSON", help="only print the table of an earlier run's results.json")
    args = p.parse_args()
    args.fanout = [int(x) for x in str(args.fanout).split(",") if x]
    args.modes = [m for m in args.modes.split(",") if m]
    args.memory_steps = [int(x) for x in args.memory_steps.split(",")]
    args.memory_servers = [m for m in args.memory_servers.split(",") if m]
    if set(args.memory_servers) - set(MEMORY_NAMES):
        p.error(f"--memory-servers: one of {', '.join(MEMORY_NAMES)} (comma-separated; ',' for none)")
    return args


def reprint(path: str) -> None:
    with open(path) as f:
        saved = json.load(f)
    args = argparse.Namespace(**saved["args"])
    for r in [*saved["results"], *([saved["bare"]] if saved["bare"] else [])]:
        r["fanout"] = {int(k): v for k, v in r.get("fanout", {}).items()}
    if saved.get("memory"):
        print(memory_table(saved["memory"]) + "\n")
    print(table(saved["results"], saved["bare"], args))


def main() -> None:
    args = parse_args()
    if args.report:
        reprint(args.report)
        return
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    nofile = raise_nofile()
    print(f"load average at start: {loadavg()}; RLIMIT_NOFILE {nofile}; cpus {os.cpu_count()}", flush=True)
    env = setup_env(args.db_name, REDIS_DB)
    from app import create_app

    app = create_app(SOCKETIO_WRITE_ONLY=True)
    migrate(app)
    if args.storm:
        args.users = max(1, args.storm // 10)
    editor_token, tokens = make_users(app, args.users)
    bench = Bench(args, env, app, editor_token, tokens)
    started = time.monotonic()
    if args.storm:
        storm = bench.run_storm_a(args.storm)
        with open(args.json.replace(".json", "-storm-a.json"), "w") as f:
            json.dump({"args": vars(args), "storm": storm}, f, default=str)
        if args.storm_only and not args.storm_clients:
            print(f"\ntotal {time.monotonic() - started:.0f} s; load average at end: {loadavg()}")
            return
    sizes = sorted({args.latency_clients, *args.fanout})
    results, bare, memory = [], None, None
    if args.storm_clients:
        storm = bench.run_storm_b()
        storm_bare = None if args.no_bare else bench.run_storm_bare()
        print("\n" + storm_b_table(storm, storm_bare))
        with open(str(args.json).replace(".json", "-storm-b.json"), "w") as f:
            json.dump({"args": vars(args), "storm": storm, "bare": storm_bare}, f, default=str)
        if args.storm_only:
            return
    if not args.no_memory:
        memory = bench.run_memory()
        if not args.memory_only:
            print("\n" + memory_table(memory), flush=True)
    if args.memory_only:
        args.modes, args.no_bare = [], True
    for i, mode in enumerate(args.modes):
        results.append(bench.run_mode(mode))
        if i == 0 and not args.no_bare:  # next to the first (default) mode, with its envelope
            bare = bench.run_bare(sizes)
    if bare is None and not args.no_bare:
        bare = bench.run_bare(sizes)
    total = time.monotonic() - started
    text = (memory_table(memory) + "\n\n" if memory else "") + (table(results, bare, args) if results else "")
    print("\n" + text)
    print(f"\ntotal {total:.0f} s; load average at end: {loadavg()}")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    with open(args.json, "w") as f:
        json.dump({"args": vars(args), "results": results, "bare": bare, "memory": memory}, f,
                  default=str)
    print(f"raw figures: {args.json}; logs: {LOG_DIR}")


if __name__ == "__main__":
    main()
