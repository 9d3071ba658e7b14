"""Waiting and Socket.IO clients for tests: one polling helper and one client of each kind.

Tests wait for a state (a row, an event, a log line), never for a duration: ``wait_for``
polls a predicate until it holds and fails with what it waited for. Timing figures belong
in ``bench/``.
"""
from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import Any

import socketio as sio_client


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, every: float = 0.05,
             what: str | None = None, *, describe: Callable[[], str] | None = None,
             ignore: tuple[type[BaseException], ...] = ()) -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that value.

    A timeout raises AssertionError naming ``what`` (or the predicate) plus ``describe()``
    (a log tail, a page report), so a hang reads as a failed expectation. Exceptions in
    ``ignore`` count as "not yet" (a page still redrawing); the last one is reported.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except ignore as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            break
        time.sleep(every)
    name = what or getattr(predicate, "__name__", "condition")
    detail = f" (last error: {last_error})" if last_error else ""
    if describe is not None:
        detail += "\n" + describe()
    raise AssertionError(f"timed out after {timeout} s waiting for {name}{detail}")


# ---- in-process clients (Flask-SocketIO's test client) -----------------------------------


def connect(app: Any, client: Any, user: Any, namespace: str, **auth: Any) -> Any:
    """A ``socketio.test_client`` on one namespace, authenticated as ``user``."""
    from app.extensions import socketio

    return socketio.test_client(app, namespace=namespace, flask_test_client=client,
                                auth={"token": user.token, **auth})


def wait_events(sio: Any, namespace: str, name: str, *, count: int = 1,
                timeout: float = 5.0) -> list[Any]:
    """Received events of one name on a test client (emits through Redis arrive
    asynchronously); events of other names stay buffered for a later call.

    The buffer hangs off the client itself: keyed by ``id(sio)`` in a module dict, a new
    client at a dead one's address inherited its unread events.
    """
    buffer = sio.__dict__.setdefault("_unread", {}).setdefault(namespace, [])
    deadline = time.monotonic() + timeout
    while True:
        buffer += sio.get_received(namespace)
        got = [e for e in buffer if e["name"] == name]
        if len(got) >= count or time.monotonic() > deadline:
            buffer[:] = [e for e in buffer if e["name"] != name]
            return [e["args"][0] for e in got]
        time.sleep(0.05)


# ---- over the wire (python-socketio clients against a real server) -----------------------


class SocketClient:
    """A python-socketio client that records every event it receives, per namespace."""

    def __init__(self, url: str, token: str, namespaces: list[str], **auth: Any) -> None:
        self.events: queue.Queue = queue.Queue()
        self.seen: list[dict] = []
        self.sio = sio_client.Client(reconnection=False)
        for ns in namespaces:
            self.sio.on("*", self._catch_all(ns), namespace=ns)
        self.sio.connect(url, namespaces=namespaces, auth={"token": token, **auth},
                         transports=["websocket"], wait_timeout=10)

    def _catch_all(self, ns: str) -> Callable[[str, Any], None]:
        def handler(event: str, data: Any) -> None:
            self.events.put((ns, event, data))
        return handler

    def wait(self, name: str, *, count: int = 1, timeout: float = 15.0,
             where: Callable[[dict], bool] | None = None) -> list[dict]:
        """The first ``count`` received events named ``name`` (and matching ``where``)."""
        deadline = time.monotonic() + timeout
        got = [e for e in self.seen if e["event"] == name and (where is None or where(e))]
        while len(got) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"waited for {count} {name}, got {len(got)}: "
                                     f"{[e['event'] for e in self.seen]}")
            try:
                _ns, event, data = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            self.seen.append(data)
            if event == name and (where is None or where(data)):
                got.append(data)
        return got

    def drain(self, name: str) -> list[dict]:
        """Everything received so far named ``name``, without waiting (to check no extra came)."""
        while not self.events.empty():
            self.seen.append(self.events.get()[2])
        return [e for e in self.seen if e["event"] == name]

    def call(self, event: str, data: dict, namespace: str) -> Any:
        return self.sio.call(event, data, namespace=namespace, timeout=10)

    def close(self) -> None:
        self.sio.disconnect()


def refused(url: str, namespace: str, auth: Any) -> bool:
    """Whether the server refuses a connection to ``namespace`` with these credentials."""
    client = sio_client.Client(reconnection=False)
    try:
        client.connect(url, namespaces=[namespace], auth=auth, transports=["websocket"],
                       wait_timeout=5)
    except sio_client.exceptions.ConnectionError:
        return True
    client.disconnect()
    return False
