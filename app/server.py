"""Running the web process: Socket.IO server, embedded worker, file descriptor limit, and the
tuning a process holding thousands of sockets needs (collector, buffers, pings).

eventlet and engineio internals are imported inside the functions that patch them: this
module is imported under the threading and gevent modes too, where eventlet must not load.
"""
from __future__ import annotations

import functools
import gc
import logging
import os
import resource
import signal
import time

from flask import Flask

from app.extensions import socketio
from app.metrics import mark_dead
from app.realtime import control
from app.realtime.connections import refresh_loop, shutdown_all
from app.tasks import start_embedded_worker

log = logging.getLogger(__name__)


def raise_fd_limit(wanted: int) -> int:
    """Lift the soft RLIMIT_NOFILE toward the hard one so the connection cap is reachable."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(wanted, soft)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


GC_THRESHOLDS = (10_000, 10, 100)


def gc_thresholds() -> tuple[int, ...]:
    """The collector thresholds of a serving process: ``GC_THRESHOLDS`` ("10000,10,100")
    from the environment, else the default above."""
    raw = os.environ.get("GC_THRESHOLDS", "")
    try:
        values = tuple(int(v) for v in raw.split(",")) if raw else GC_THRESHOLDS
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        if raw:
            log.warning("GC_THRESHOLDS=%r is not three positive integers; using %s", raw, GC_THRESHOLDS)
        return GC_THRESHOLDS
    return values


_gc_started: dict[int, float] = {}


def _watch_gc(phase: str, info: dict) -> None:
    """Log collector pauses long enough to show up as event latency."""
    gen = info.get("generation", 0)
    if phase == "start":
        _gc_started[gen] = time.perf_counter()
    elif gen in _gc_started:
        took = (time.perf_counter() - _gc_started.pop(gen)) * 1000
        if took >= 20:
            log.warning("gc pause: generation %s took %.0f ms (%s collected)", gen, took,
                        info.get("collected"))


def tune_gc() -> None:
    """Collector settings for a long-lived serving process (measured with bench/realtime.py).

    Everything alive at start (modules, app, mappers, caches) lives as long as the process:
    ``gc.freeze()`` takes it out of the collector's sight, so a full collection scans only
    what connections and requests made. And young collections every 10,000 allocations
    instead of 700, full ones 10× rarer: an event fanned out to thousands of sockets makes
    tens of thousands of short-lived objects (many in reference cycles, inside eventlet and
    engineio); collecting in the middle of that promoted them, and full collections, a
    pause of every socket for ~0.6 s at 5,000 connections, came every second or two.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*gc_thresholds())
    if _watch_gc not in gc.callbacks:
        gc.callbacks.append(_watch_gc)


def _small_buffer_protocol() -> type:
    """eventlet's HTTP protocol with 1 KB read/write buffers instead of 8 KB and 16 KB.

    A websocket keeps its upgrade request's buffered file objects for the whole life of
    the connection, unused: at the defaults that is 24 KB of every idle connection's memory
    (bench/realtime.py, tracemalloc). 1 KB is nginx's default header buffer too; requests
    and responses larger than a buffer still work, in more than one system call.
    """
    from eventlet import wsgi

    class SmallBufferHttpProtocol(wsgi.HttpProtocol):
        rbufsize = 1024
        wbufsize = 1024

    return SmallBufferHttpProtocol


def schedule_pings_on_the_hub() -> None:
    """Under eventlet, wait for an Engine.IO ping with a hub timer, not a sleeping green thread.

    python-engineio (pinned) spawns a green thread per socket that sleeps ``ping_interval``
    and then sends the ping: a suspended greenlet (its saved stack, a GreenThread, an Event)
    for every idle connection, ~7 KB each (bench/realtime.py). A timer on eventlet's hub
    does the same wait for the price of one Timer object; the send it then makes is a
    non-blocking queue put, safe from the hub. Same conditions as the library's own
    ``_send_ping``; tested in tests/test_e2e_realtime.py with a short interval.
    """
    from engineio import packet
    from engineio import socket as eio_socket
    from eventlet import hubs

    if getattr(eio_socket.Socket.schedule_ping, "on_hub", False):
        return

    def schedule_ping(self) -> None:
        if not self.last_ping:  # only after the previous ping was answered
            return
        self.last_ping = None

        def send_ping() -> None:
            if self.closing or self.closed:
                return
            self.last_ping = time.time()
            try:
                self.send(packet.Packet(packet.PING))
            except Exception:  # noqa: BLE001 - a socket closing meanwhile; never the hub
                log.debug("ping to %s not sent", self.sid, exc_info=True)

        hubs.get_hub().schedule_call_global(self.server.ping_interval, send_ping)

    schedule_ping.on_hub = True  # type: ignore[attr-defined]
    eio_socket.Socket.schedule_ping = schedule_ping


def _kick_writer(sock) -> None:
    """A packet was queued for a websocket: start its writer unless one is running."""
    if sock._ec_writer is None and sock._ec_ws is not None:
        from eventlet import spawn_n

        sock._ec_writer = spawn_n(_drain_to_websocket, sock)


def _drain_to_websocket(sock) -> None:
    """Send what the socket's queue holds, then end (the library's writer loop, minus the
    wait): ``None`` in the queue, or a failed send, closes the websocket, as the library's
    writer does on its way out."""
    from eventlet.queue import Empty

    ws, queue = sock._ec_ws, sock.queue
    try:
        while True:
            try:
                pkt = queue.get(block=False)
            except Empty:
                return
            queue.task_done()
            if pkt is None:
                break
            try:
                ws.send(pkt.encode())
            except Exception:  # noqa: BLE001 - a broken socket: the reader sees it and ends
                break
        sock._ec_ws = queue.on_put = None
        ws.close()
    finally:
        sock._ec_writer = None


def write_websockets_on_demand() -> None:
    """Under eventlet, a websocket's writer green thread exists only while it has packets.

    python-engineio (pinned) gives every websocket a writer green thread that waits on the
    socket's queue for life: a second suspended greenlet per idle connection (its saved C
    stack, its frame stack, a GreenThread, an Event, a timeout Timer). Here the queue starts
    one when a packet is put and it ends when the queue is empty; what it sends, in what
    order, and how a ``None`` closes the websocket are the library's writer's. The handler
    below is the library's ``Socket._websocket_handler`` with that writer and, for a
    websocket without an extension, with its reader handed to a hub listener
    (app/eventlet_ws.py): an idle connection keeps no greenlet. bench/realtime.py --memory;
    tested end to end by tests/test_e2e_realtime.py and tests/test_e2e_eventlet_ws.py.
    """
    import eventlet.queue
    from engineio import base_server, packet
    from engineio import socket as eio_socket

    # eventlet mode only, like the imports above (app.eventlet_ws imports eventlet).
    from app import eventlet_ws
    from app.eventlet_ws import adopt

    if getattr(eio_socket.Socket._websocket_handler, "on_demand", False):
        return
    eventlet_ws.drain = _drain_to_websocket

    class KickingQueue(eventlet.queue.Queue):
        on_put = None

        # A list, not eventlet's deque: an empty deque is 760 B (its first 64-slot block),
        # kept by every socket for life; the queue holds a packet or two at a time.
        def _init(self, maxsize) -> None:
            self.queue = []

        def _get(self):
            return self.queue.pop(0)

        def put(self, item, block=True, timeout=None) -> None:
            super().put(item, block, timeout)
            if self.on_put is not None:
                self.on_put()

    def create_queue(self, *args, **kwargs):
        return KickingQueue(*args, **kwargs)

    def _websocket_handler(self, ws):
        def websocket_wait():
            data = ws.wait()
            if data and len(data) > self.server.max_http_buffer_size:
                raise ValueError("packet is too large")
            return data

        for attr in ["_sock", "socket"]:
            if hasattr(ws, attr) and hasattr(getattr(ws, attr), "settimeout"):
                getattr(ws, attr).settimeout(self.server.ping_interval + self.server.ping_timeout)

        if self.connected:  # an upgrade from long-polling
            self.upgrading = True
            pkt = websocket_wait()
            decoded_pkt = packet.Packet(encoded_packet=pkt)
            if decoded_pkt.packet_type != packet.PING or decoded_pkt.data != "probe":
                self.server.logger.info("%s: Failed websocket upgrade, no PING packet", self.sid)
                self.upgrading = False
                return []
            ws.send(packet.Packet(packet.PONG, data="probe").encode())
            self.queue.put(packet.Packet(packet.NOOP))  # end poll
            pkt = websocket_wait()
            decoded_pkt = packet.Packet(encoded_packet=pkt)
            if decoded_pkt.packet_type != packet.UPGRADE:
                self.upgraded = False
                self.server.logger.info("%s: Failed websocket upgrade, expected UPGRADE packet, "
                                        "received %s instead.", self.sid, pkt)
                self.upgrading = False
                return []
            self.upgraded = True
            self.upgrading = False
        else:
            self.connected = True
            self.upgraded = True

        # Instead of starting the writer thread: the queue starts one when it has packets.
        # And, without an extension, instead of this green thread reading for the
        # connection's life: a hub listener (app/eventlet_ws.py); this thread ends here.
        hub_ws = adopt(self, ws)
        self._ec_ws, self._ec_writer = hub_ws or ws, None
        self.queue.on_put = functools.partial(_kick_writer, self)
        _kick_writer(self)  # whatever was queued before the upgrade
        self.server.logger.info("%s: Upgrade to websocket successful", self.sid)
        if hub_ws is not None:
            hub_ws.listen()
            return []

        while True:
            p = None
            try:
                p = websocket_wait()
            except Exception as e:  # noqa: BLE001 - the library's handler, as it is
                if not self.closed:
                    self.server.logger.info('%s: Unexpected error "%s", closing connection',
                                            self.sid, str(e))
                break
            if p is None:
                break
            pkt = packet.Packet(encoded_packet=p)
            try:
                self.receive(pkt)
            except eio_socket.exceptions.UnknownPacketError:
                pass
            except eio_socket.exceptions.SocketIsClosedError:
                self.server.logger.info("Receive error -- socket is closed")
                break
            except Exception:  # noqa: BLE001 - the library's handler, as it is
                self.server.logger.exception("Unknown receive error")
                break

        # As the library's handler: what is queued goes out and ws is closed (the writer's
        # ``None``) before the socket closes and this handler returns.
        self.queue.on_put = None
        self.queue.put(None)
        while self._ec_writer is not None:  # one is mid-send: it ends within the send timeout
            self.server.sleep(0.01)
        if self._ec_ws is not None:
            _drain_to_websocket(self)
        self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)
        return []

    _websocket_handler.on_demand = True  # type: ignore[attr-defined]
    base_server.BaseServer.create_queue = create_queue
    eio_socket.Socket._websocket_handler = _websocket_handler


def serve(app: Flask, *, host: str, port: int) -> None:
    """Serve HTTP and Socket.IO; start the embedded worker and beat when configured."""
    cap = app.config["MAX_CONNECTIONS"]
    limit = raise_fd_limit(cap * 2 + 256)
    if limit < cap + 64:
        log.warning("file descriptor limit %s is below MAX_CONNECTIONS=%s", limit, cap)
    celery_url = app.extensions["celery"].conf.broker_url or ""
    if app.config.get("EMBEDDED_WORKER") and celery_url.startswith("memory://"):
        start_embedded_worker(app)
    # Three refreshes per TTL: a socket of a live process never expires; one of a process
    # that died (SIGKILL) expires within the TTL and is popped within a round after.
    socketio.start_background_task(refresh_loop, app,
                                   max(0.5, min(10.0, app.config["PRESENCE_STALE_SECONDS"] / 3)))
    control.start(app)  # sessions that end: control messages and token expiry

    def _cleanup_and_exit() -> None:
        try:
            if mode == "eventlet":
                from app.eventlet_ws import counts  # eventlet mode only (imports eventlet)

                log.info("websockets read by hub listeners: %(adopted)s adopted, %(open)s open",
                         counts)
            with app.app_context():
                shutdown_all()
        except Exception:  # noqa: BLE001 - exit anyway; the stale sweep finishes the job
            log.exception("graceful shutdown failed")
        finally:
            # The embedded worker's pool threads would keep the process alive; what they
            # had not finished is still in the outbox and is re-delivered on the next start.
            logging.shutdown()
            mark_dead()  # os._exit skips atexit: this process's socket gauges leave the sums
            os._exit(0)

    def _graceful(signum, _frame):
        # Not inside the handler: under eventlet the handler interrupts a green thread and
        # must not block on sockets; a background task of the server's own kind does it.
        log.info("signal %s: disconnecting clients", signum)
        socketio.start_background_task(_cleanup_and_exit)

    signal.signal(signal.SIGTERM, _graceful)
    signal.signal(signal.SIGINT, _graceful)
    mode = app.config["SOCKETIO_ASYNC_MODE"]
    kwargs: dict = {"host": host, "port": port}
    if mode == "eventlet":
        # eventlet.wsgi defaults to 1,024 simultaneous connections; make the cap reachable.
        kwargs["max_size"] = cap + 64
        kwargs["protocol"] = _small_buffer_protocol()
        schedule_pings_on_the_hub()
        write_websockets_on_demand()
        from app import eventlet_ws  # eventlet mode only (imports eventlet)

        eventlet_ws.limit = cap  # adopted websockets leave the GreenPool: cap them here
    elif mode == "threading":
        kwargs["allow_unsafe_werkzeug"] = True
    tune_gc()
    log.info("serving on %s:%s (%s); %s objects frozen", host, port, mode, gc.get_freeze_count())
    socketio.run(app, **kwargs)
