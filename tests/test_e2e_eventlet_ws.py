"""Idle websockets as hub listeners (app/eventlet_ws.py) end to end against ``python wsgi.py``
under eventlet: python-socketio clients held open get their acks and events and stay alive
on pings alone; a client that vanishes is noticed; the server closes them all; and, by hand,
the frame reader's edges (fragments, frames split across writes, control frames, close,
protocol errors)."""
from __future__ import annotations

import json
import os
import queue
import re
import signal
import struct
import time

import requests
import socketio as sio_client

from tests.processes import web_server
from tests.test_ws_compression import handshake

PINGS = {"SOCKETIO_PING_INTERVAL": "1", "SOCKETIO_PING_TIMEOUT": "1"}


def _wait(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def adopted(server) -> int:
    """How many websockets the stopped server read with hub listeners (its shutdown log)."""
    found = re.findall(r"websockets read by hub listeners: (\d+) adopted", server.output())
    assert found, server.output()[-2000:]
    return int(found[-1])


def client_frame(payload: bytes, opcode: int = 1, *, final: bool = True, masked: bool = True) -> bytes:
    """A client frame (RFC 6455 5.2), masked unless told otherwise."""
    n = len(payload)
    first = (0x80 if final else 0) | opcode
    flag = 0x80 if masked else 0
    if n < 126:
        head = struct.pack("!BB", first, flag | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, flag | 126, n)
    else:
        head = struct.pack("!BBQ", first, flag | 127, n)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawSocket:
    """An Engine.IO websocket driven frame by frame."""

    def __init__(self, url: str) -> None:
        status, _headers, self.sock, self.buf = handshake(url, None)
        assert status.startswith("HTTP/1.1 101"), status
        opcode, payload = self.frame()
        assert opcode == 1 and payload.startswith(b"0{"), payload  # Engine.IO open

    def frame(self) -> tuple[int, bytes]:
        """The next server frame: (opcode, payload); (-1, b"") when the server hung up."""
        def need(n: int) -> bool:
            while len(self.buf) < n:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return False
                self.buf += chunk
            return True

        if not need(2):
            return -1, b""
        b0, b1 = self.buf[0], self.buf[1]
        assert not b1 & 0x80, "server frames are not masked"
        length, pos = b1 & 0x7F, 2
        if length == 126:
            need(4)
            length, pos = struct.unpack_from("!H", self.buf, 2)[0], 4
        elif length == 127:
            need(10)
            length, pos = struct.unpack_from("!Q", self.buf, 2)[0], 10
        assert need(pos + length)
        payload, self.buf = self.buf[pos:pos + length], self.buf[pos + length:]
        return b0 & 0x0F, payload

    def until(self, predicate) -> tuple[int, bytes]:
        """Frames are read (Engine.IO pings answered) until one satisfies ``predicate``."""
        while True:
            opcode, payload = self.frame()
            if predicate(opcode, payload):
                return opcode, payload
            assert opcode != -1, "the server hung up"
            if (opcode, payload) == (1, b"2"):
                self.sock.sendall(client_frame(b"3"))

    def idle(self, seconds: float) -> int:
        """Stay connected ``seconds``, answering Engine.IO pings; how many came."""
        pings, deadline = 0, time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                opcode, payload = self.frame()
            except TimeoutError:
                break
            finally:
                self.sock.settimeout(10)
            assert opcode != -1, "the server hung up"
            if (opcode, payload) == (1, b"2"):
                pings += 1
                self.sock.sendall(client_frame(b"3"))
        return pings

    def connect(self, namespace: str, token: str, *, split: bool = True) -> None:
        body = f"40{namespace},{json.dumps({'token': token})}".encode()
        if split:  # three fragments, the middle one written in two halves a moment apart
            self.sock.sendall(client_frame(body[:5], 1, final=False))
            middle = client_frame(body[5:-5], 0, final=False)
            self.sock.sendall(middle[:3])
            time.sleep(0.2)
            self.sock.sendall(middle[3:] + client_frame(body[-5:], 0))
        else:
            self.sock.sendall(client_frame(body))
        _, payload = self.until(lambda op, p: p.startswith(f"40{namespace},".encode())
                                or p.startswith(f"44{namespace},".encode()))
        assert payload.startswith(f"40{namespace},".encode()), payload

    def emit(self, namespace: str, ack: int, event: str, data) -> dict:
        self.sock.sendall(client_frame(f"42{namespace},{ack}{json.dumps([event, data])}".encode()))
        prefix = f"43{namespace},{ack}".encode()
        _, payload = self.until(lambda op, p: p.startswith(prefix))
        return json.loads(payload[len(prefix):])[0]


def test_idle_websockets_get_events_stay_alive_and_are_closed_by_either_side(_schema, editor,
                                                                              viewer, admin):
    n = 24
    with web_server(async_mode="eventlet", **PINGS) as server:
        ep = requests.post(f"{server.url}/api/v1/episodes", headers=editor.headers, timeout=10,
                           json={"title": "Hub", "episode_number": 1}).json()
        clients, lost, events = [], [], queue.Queue()
        try:
            for i in range(n):
                c = sio_client.Client(reconnection=False)
                c.on("disconnect", lambda *a, i=i: lost.append(i), namespace="/episodes")
                if i == 0:
                    c.on("*", lambda event, data: events.put((event, data)), namespace="/episodes")
                c.connect(server.url, namespaces=["/episodes"], wait_timeout=10,
                          auth={"token": (editor if i % 2 else viewer).token},
                          transports=["websocket"])
                clients.append(c)
                ack = c.call("join", {"episode_id": ep["id"]}, namespace="/episodes", timeout=10)
                assert ack["ok"] is True
            # Idle for several ping intervals: each socket's pongs are read by its hub
            # listener (a socket whose pongs went unread is closed after interval + timeout).
            time.sleep(4)
            assert not lost and all(c.connected for c in clients)
            # Messages in and out after the idle time, on every socket.
            for c in clients:
                assert c.call("join", {"episode_id": ep["id"]}, namespace="/episodes",
                              timeout=10)["ok"] is True

            # A client that vanishes (TCP closed, no close frame): the server reads the end
            # and the room hears that it left.
            raw = RawSocket(server.url)
            raw.connect("/episodes", admin.token)
            assert raw.emit("/episodes", 1, "join", {"episode_id": ep["id"]})["ok"] is True

            def heard(name: str) -> bool:
                while not events.empty():
                    event, data = events.get()
                    if event == name and data["data"]["user"]["id"] == admin.id:
                        return True
                return False

            assert _wait(lambda: heard("viewer_joined"))
            raw.sock.close()
            assert _wait(lambda: heard("viewer_left"))

            # The server closes them all (graceful shutdown): the queued CLOSE packets and
            # the writer's close reach every idle socket.
            server.proc.send_signal(signal.SIGTERM)
            assert _wait(lambda: len(lost) == n or not any(c.connected for c in clients))
            server.proc.wait(15)
            # Every one of them was read by a hub listener, not by the library's reader.
            assert adopted(server) == n + 1
        finally:
            for c in clients:
                c.disconnect()


def test_frame_reader_edges(_schema, viewer):
    with web_server(async_mode="eventlet", **PINGS) as server:
        raw = RawSocket(server.url)
        try:
            raw.connect("/feed", viewer.token)
            # A control frame between a message's fragments is answered at once.
            raw.sock.sendall(client_frame(b'42/feed,["no', 1, final=False)
                             + client_frame(b"ping!", 9))
            assert raw.until(lambda op, p: op == 0xA) == (0xA, b"ping!")
            # The rest of the message, then a message of 70 KB (64-bit length): both read,
            # and the socket still answers after them.
            raw.sock.sendall(client_frame(b'such_event"]', 0))
            big = json.dumps(["no_such_event", "x" * 70_000]).encode()
            raw.sock.sendall(client_frame(b"42/feed," + big))
            raw.sock.sendall(client_frame(b"again", 9))
            assert raw.until(lambda op, p: op == 0xA) == (0xA, b"again")
            assert raw.idle(3.5) >= 2  # pongs read: alive past interval + timeout
            raw.sock.sendall(client_frame(b"alive?", 9))
            assert raw.until(lambda op, p: op == 0xA) == (0xA, b"alive?")
            # A close from the client: the server answers with a close frame and hangs up.
            raw.sock.sendall(client_frame(struct.pack("!H", 1000), 8))
            assert raw.until(lambda op, p: op == 8)[0] == 8
            assert raw.until(lambda op, p: op == -1)[0] == -1
        finally:
            raw.sock.close()

        # An unmasked client frame breaks the protocol: close 1002, then the end.
        raw = RawSocket(server.url)
        try:
            raw.sock.sendall(client_frame(b"40/feed,{}", masked=False))
            opcode, payload = raw.until(lambda op, p: op in (8, -1))
            assert opcode == 8 and struct.unpack("!H", payload[:2])[0] == 1002
            assert raw.until(lambda op, p: op == -1)[0] == -1
        finally:
            raw.sock.close()
        # The process is fine after all that: a fresh socket works.
        raw = RawSocket(server.url)
        try:
            raw.connect("/feed", viewer.token)
        finally:
            raw.sock.close()
        assert "Traceback" not in server.output()


def test_many_sockets_come_and_go_without_leaving_listeners_behind(_schema, viewer):
    """File descriptor numbers are reused as sockets come and go: a listener left on the hub
    for a closed socket would fire for its successor (or refuse it as a second reader)."""
    with web_server(async_mode="eventlet", **PINGS) as server:
        for _ in range(3):
            socks = []
            for _ in range(20):
                socks.append(RawSocket(server.url))
                socks[-1].connect("/feed", viewer.token, split=False)
            for i, raw in enumerate(socks):
                if i % 2:  # a close frame (unless the server closed it for unanswered pings)
                    try:
                        raw.sock.sendall(client_frame(b"", 8))
                        raw.until(lambda op, p: op == -1)
                    except OSError:
                        pass
                raw.sock.close()
        raw = RawSocket(server.url)
        try:
            raw.connect("/feed", viewer.token)
            raw.sock.sendall(client_frame(b"last", 9))
            assert raw.until(lambda op, p: op == 0xA) == (0xA, b"last")
        finally:
            raw.sock.close()
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(15)
        assert adopted(server) == 61
        output = server.output()
        assert "Traceback" not in output and "Second simultaneous" not in output


def test_past_the_cap_websockets_keep_the_library_reader(_schema):
    """At most MAX_CONNECTIONS websockets leave eventlet's GreenPool (whose size capped open
    connections); the ones after keep the library's reader and work the same."""
    with web_server(async_mode="eventlet", MAX_CONNECTIONS="2", **PINGS) as server:
        socks = [RawSocket(server.url) for _ in range(4)]
        try:
            for i, raw in enumerate(socks):
                raw.sock.sendall(client_frame(f"ping {i}".encode(), 9))
                assert raw.until(lambda op, p: op == 0xA) == (0xA, f"ping {i}".encode())
        finally:
            for raw in socks:
                raw.sock.close()
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(15)
        assert adopted(server) == 2
