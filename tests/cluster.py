"""The deploy/ cluster on this machine: nginx with deploy/nginx/episode-control.conf in front
of two ``python wsgi.py`` (eventlet), the Celery workers of deploy/Procfile on their queues,
one beat, on the test run's PostgreSQL and Redis.

nginx runs as a throwaway instance (its own ``-p`` prefix, config and free port), never the
machine's nginx service. The site file is the operator's, with only its listen port and its
two upstream ports replaced, so the test proves the file that ships.
"""
from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.processes import (
    LOG_DIR,
    ROOT,
    Server,
    Worker,
    _wait_for,
    celery_beat,
    celery_worker,
    free_port,
    service_env,
    stop,
    web_server,
)

DEPLOY = ROOT / "deploy"
SITE = DEPLOY / "nginx" / "episode-control.conf"
PROCFILE = DEPLOY / "Procfile"
SITE_LISTEN = "listen 80;"
SITE_WEB_PORTS = (8001, 8002)


def nginx_binary() -> str | None:
    """Debian's nginx (``/usr/sbin`` is not on every PATH)."""
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def procfile() -> dict[str, str]:
    """deploy/Procfile as ``{name: command}``."""
    entries = {}
    for line in PROCFILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.strip()
    return entries


def procfile_worker_queues() -> list[str]:
    """The ``-Q`` of every Celery worker in deploy/Procfile, in order."""
    queues = []
    for command in procfile().values():
        args = shlex.split(command)
        if "worker" in args and "-Q" in args:
            queues.append(args[args.index("-Q") + 1])
    return queues


def site_config(listen_port: int, web_ports: tuple[int, int]) -> str:
    """The shipped site with its listen port and upstream ports replaced (each exactly once)."""
    text = SITE.read_text()
    replacements = [(SITE_LISTEN, f"listen 127.0.0.1:{listen_port};")]
    replacements += [(f"server 127.0.0.1:{old} ", f"server 127.0.0.1:{new} ")
                     for old, new in zip(SITE_WEB_PORTS, web_ports, strict=True)]
    for old, new in replacements:
        if text.count(old) != 1:
            raise AssertionError(f"{SITE} no longer has exactly one {old!r}")
        text = text.replace(old, new)
    return text


class Nginx:
    """A foreground nginx master with the site included in a minimal ``http {}``."""

    def __init__(self, proc: subprocess.Popen, port: int, prefix: Path):
        self.proc, self.port, self.prefix = proc, port, prefix
        self.url = f"http://127.0.0.1:{port}"
        self.access_log = prefix / "access.log"

    def upstreams_of(self, marker: str) -> list[str]:
        """``$upstream_addr`` of the logged requests whose line contains ``marker``."""
        return [line.split(" ")[1] for line in self.access_log.read_text().splitlines()
                if marker in line]

    def output(self) -> str:
        return (self.prefix / "error.log").read_text()


@contextmanager
def nginx_server(web_ports: tuple[int, int], port: int | None = None) -> Iterator[Nginx]:
    binary = nginx_binary()
    if binary is None:
        raise FileNotFoundError("nginx is not installed (apt-get install -y nginx)")
    port = port or free_port()
    prefix = LOG_DIR / f"nginx-{uuid.uuid4().hex[:8]}"
    prefix.mkdir(parents=True)
    (prefix / "site.conf").write_text(site_config(port, web_ports))
    temp = "\n".join(f"    {kind}_temp_path {prefix / kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    # As root, nginx's workers would run as nobody, who cannot enter the run's private
    # temporary directory (its temp paths for large bodies are there): keep them as root.
    user = "user root;\n" if os.geteuid() == 0 else ""
    (prefix / "nginx.conf").write_text(f"""daemon off;
{user}worker_processes 1;
pid {prefix / 'nginx.pid'};
error_log {prefix / 'error.log'} info;
events {{ worker_connections 1024; }}
http {{
    log_format cluster '$remote_addr $upstream_addr $status "$request"';
    access_log {prefix / 'access.log'} cluster;
{temp}
    include {prefix / 'site.conf'};
}}
""")
    command = [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
               "-e", str(prefix / "error.log")]
    check = subprocess.run([*command, "-t"], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"nginx -t refused the site:\n{check.stderr}")
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)
    server = Nginx(proc, port, prefix)

    def up() -> bool:
        if proc.poll() is not None:
            return True
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    try:
        _wait_for(up, 30, "nginx", prefix / "error.log")
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited:\n{server.output()[-4000:]}")
        yield server
    finally:
        stop(proc)


class SourceRelay:
    """A TCP hop to nginx that connects from a chosen loopback address (all of 127.0.0.0/8
    is local on Linux): one test process looks like several clients to the sticky hash.

    ``blocked`` closes new connections at once (the client's network is down): a
    reconnecting client keeps retrying until it is cleared.
    """

    def __init__(self, source_ip: str, port: int):
        self.source_ip, self.target = source_ip, ("127.0.0.1", port)
        self.blocked = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            if self.blocked.is_set():
                conn.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5,
                                                    source_address=(self.source_ip, 0))
                upstream.settimeout(None)
            except OSError:
                conn.close()
                continue
            with self._lock:
                self._open.update((conn, upstream))
            ends = [2]
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(src, dst, conn, upstream, ends),
                                 daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, conn: socket.socket,
              upstream: socket.socket, ends: list[int]) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (conn, upstream):  # either side gone: the whole connection is gone
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self._lock:
            ends[0] -= 1
            if ends[0] == 0:
                for s in (conn, upstream):
                    s.close()
                    self._open.discard(s)

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for s in self._open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@dataclass
class Cluster:
    nginx: Nginx
    webs: list[Server]
    workers: list[Worker]
    beat: Worker
    relays: dict[str, SourceRelay] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.nginx.url

    def relay(self, source_ip: str) -> SourceRelay:
        """The way in to nginx from ``source_ip`` (one per address, kept for the cluster)."""
        if source_ip not in self.relays:
            self.relays[source_ip] = SourceRelay(source_ip, self.nginx.port)
        return self.relays[source_ip]

    def web_of(self, source_ip: str) -> Server:
        """The web process nginx sends ``source_ip`` to (read from nginx's access log)."""
        marker = uuid.uuid4().hex
        r = requests.get(f"{self.relay(source_ip).url}/api/v1/health?probe={marker}", timeout=10)
        assert r.status_code == 200, r.text
        # nginx logs a request once it is finished, which may be just after its answer.
        _wait_for(lambda: self.nginx.upstreams_of(marker), 10, "access log line",
                  self.nginx.access_log)
        [upstream] = self.nginx.upstreams_of(marker)
        [web] = [w for w in self.webs if w.url.endswith(upstream)]
        return web

    def sources_per_web(self, each: int = 2) -> dict[str, list[str]]:
        """Loopback addresses sorted by the web process they stick to: ``{url: [ip, ...]}``
        with at least ``each`` addresses for each of the two processes."""
        found: dict[str, list[str]] = {w.url: [] for w in self.webs}
        for n in range(2, 255):
            ip = f"127.0.0.{n}"
            found[self.web_of(ip).url].append(ip)
            if all(len(ips) >= each for ips in found.values()):
                return found
        raise AssertionError(f"the hash never spread clients over both processes: {found}")


def _enter_together(stack: ExitStack, managers: list) -> list:
    """Enter context managers in threads at once; ``stack`` exits every one entered, also
    at once (one after another, stopping five processes took seconds)."""
    values: list = [None] * len(managers)
    entered: list = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def enter(i: int) -> None:
        try:
            value = managers[i].__enter__()
        except BaseException as exc:  # noqa: BLE001 - raised below, after the others
            errors.append(exc)
            return
        with lock:
            values[i] = value
            entered.append(managers[i])

    def exit_all() -> None:
        threads = [threading.Thread(target=m.__exit__, args=(None, None, None))
                   for m in entered]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    threads = [threading.Thread(target=enter, args=(i,)) for i in range(len(managers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stack.callback(exit_all)
    if errors:
        raise errors[0]
    return values


def prestart(**env: str) -> str:
    """deploy/prestart.sh (the migrations) on the run's database: its output."""
    done = subprocess.run([str(DEPLOY / "prestart.sh")], cwd=ROOT, capture_output=True,
                          text=True, env=service_env(PYTHON=sys.executable, **env), timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"deploy/prestart.sh failed:\n{done.stdout}{done.stderr}")
    return done.stdout + done.stderr


@contextmanager
def cluster(**env: str) -> Iterator[Cluster]:
    """Start deploy/'s cluster: prestart, two web processes (``TRUSTED_PROXIES=1`` as the
    env example says), a worker per Procfile ``-Q``, beat, then nginx in front."""
    if nginx_binary() is None:
        raise FileNotFoundError("nginx is not installed (apt-get install -y nginx)")
    prestart(**env)
    web_ports = (free_port(), free_port())
    with ExitStack() as stack:
        # Started side by side: one after another took most of a minute on a busy machine.
        started = _enter_together(stack, [
            *(web_server(async_mode="eventlet", port=port, TRUSTED_PROXIES="1", **env)
              for port in web_ports),
            *(celery_worker(queues=queues, **env) for queues in procfile_worker_queues()),
            celery_beat(**env),
            nginx_server(web_ports),
        ])
        webs, workers, beat, nginx = started[:2], started[2:-2], started[-2], started[-1]
        running = Cluster(nginx, webs, workers, beat)
        try:
            yield running
        finally:
            for relay in running.relays.values():
                relay.close()

