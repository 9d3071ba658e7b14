"""Idle websockets without a green thread (eventlet mode).

python-engineio reads a websocket in a green thread blocked in ``recv`` for the connection's
whole life: a suspended greenlet (its saved C stack, CPython's per-greenlet data stack, the
GreenPool's GreenThread and link, eventlet's HTTP protocol objects it keeps alive) was more
than half of every idle connection's memory (docs/ARCHITECTURE.md, "Memory per idle
connection"). Here, once the handshake is done, the request's green thread hands the file
descriptor to a ``HubWebSocket`` and returns: the descriptor waits as a read listener on
eventlet's hub, and a green thread exists only while bytes are being read and the messages
they complete are handed to Engine.IO. Writes go through the on-demand writer of
app/server.py, which calls ``send`` and ``close`` below.

Only connections without an extension take this path: with permessage-deflate negotiated
(``SOCKETIO_WS_COMPRESSION=1``) the library's reader stays, zlib state being the larger cost
there anyway. Tested end to end by tests/test_e2e_eventlet_ws.py. Imported by app/server.py
in eventlet mode only, so eventlet's modules are imported at the top here.
"""
from __future__ import annotations

import io
import logging
import struct
from collections.abc import Callable, Iterator
from typing import Any

from engineio import exceptions, packet
from eventlet import spawn_n
from eventlet.hubs import get_hub, trampoline

log = logging.getLogger(__name__)

RECV_SIZE = 16384
# What of the handshake's environ a websocket never uses again: eventlet's request objects
# (its Input keeps the request's buffered files and socket alive, ``set_idle`` the protocol)
# and the headers a second time over (``headers_raw``: tuples of the email parser's strings).
# The rest stays: python-socketio keeps the environ for every event's request context.
_REQUEST_ONLY_KEYS = ("eventlet.input", "eventlet.posthooks", "eventlet.set_idle", "headers_raw",
                      "HTTP_SEC_WEBSOCKET_KEY")
_EMPTY_INPUT = io.BytesIO(b"")

# Sockets adopted so far and open now; ``limit`` is set by app.server.serve (MAX_CONNECTIONS).
# Adopted sockets leave eventlet's GreenPool, whose size used to cap open connections; past
# the limit a websocket keeps the library's reader (and its pool slot), so the pool's
# back-pressure on ``accept`` holds again and the descriptor limit (2 x cap + 256) is not hit.
counts = {"adopted": 0, "open": 0}
limit = 1 << 30
# The on-demand writer's drain (app/server.py sets it): sends what is queued, then ``close``.
# Set from there rather than imported, so this module does not import app.server back.
drain: Callable[[Any], None] | None = None


class _Close(Exception):
    """The connection is over: the peer left, closed, or broke the protocol."""

    def __init__(self, status: int | None = None, reason: str = "") -> None:
        super().__init__(status, reason)
        self.status, self.reason = status, reason


class RawFrame(bytes):
    """A frame already encoded (a pong to the client's ping), queued to the writer so that
    one green thread at a time writes to the socket."""

    def encode(self) -> RawFrame:
        return self


def _unmask(data: bytes, mask: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``mask``, as one big-integer operation."""
    n = len(data)
    if not n:
        return data
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def frame(payload: bytes, opcode: int) -> bytes:
    """A final, unmasked server frame (RFC 6455 5.2)."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return header + payload


class HubWebSocket:
    """One websocket whose reads are a hub listener; what Engine.IO's writer needs of a
    websocket (``send``, ``close``). Slots: thousands of these live at once."""

    __slots__ = ("sock", "eio", "buf", "parts", "opcode", "listener", "closed", "close_code",
                 "max_size", "timeout")

    def __init__(self, sock: Any, eio: Any, max_size: int, timeout: float) -> None:
        self.sock = sock
        self.eio = eio  # the engine.io Socket
        self.buf = b""
        self.parts: list[bytes] | None = None  # a fragmented message being assembled
        self.opcode = 0
        self.listener = None
        self.closed = False
        self.close_code: bytes = b""  # the status our close frame carries, when one is due
        self.max_size = max_size
        self.timeout = timeout

    # -- reading: a hub callback, then a green thread while there is something to read
    def listen(self) -> None:
        """Wait for bytes as a read listener on the hub (no green thread)."""
        hub = get_hub()
        readable = self._readable  # one bound method for both callbacks, not two
        self.listener = hub.add(hub.READ, self.sock.fileno(), readable, readable, None)
        # The listener keeps the green thread current at this call (for a throw it never
        # makes here: we leave the hub before closing); not the request's, kept for life.
        self.listener.greenlet = hub.greenlet

    def _unlisten(self) -> None:
        if self.listener is not None:
            get_hub().remove(self.listener)
            self.listener = None

    def _readable(self, _fileno: int) -> None:
        """Hub callback: must not block, so a green thread does the reading."""
        self._unlisten()
        if not self.closed:
            spawn_n(self._read)

    def _read(self) -> None:
        """Read what the socket has, hand every complete message to Engine.IO, then go back
        to the hub; the end of the connection runs the library handler's ending."""
        try:
            while not self.closed:
                try:
                    chunk = self.sock.recv(RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    self.listen()
                    return
                if not chunk:
                    raise _Close()
                self.buf += chunk
                for message in self._messages():
                    self._deliver(message)
        except _Close as end:
            if end.status is not None:
                self.close_code = struct.pack("!H", end.status) + end.reason.encode()
        except OSError:
            pass  # reset by the peer, or closed by the writer meanwhile
        except Exception:  # noqa: BLE001 - never leave a socket half-handled
            log.exception("websocket %s: unexpected error", getattr(self.eio, "sid", "?"))
        self._finish()

    def _messages(self) -> Iterator[str | bytes]:
        """Complete messages parsed off ``self.buf``, each handed out before the next frame
        is looked at (a message followed by a close in one read still arrives); control
        frames are answered here."""
        buf = self.buf
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            opcode, length, pos = b0 & 0x0F, b1 & 0x7F, 2
            if b0 & 0x70:
                raise _Close(1002, "no extension negotiated")
            if not b1 & 0x80:
                raise _Close(1002, "client frames must be masked")
            if length == 126:
                if len(buf) < 4:
                    break
                length, pos = struct.unpack_from("!H", buf, 2)[0], 4
            elif length == 127:
                if len(buf) < 10:
                    break
                length, pos = struct.unpack_from("!Q", buf, 2)[0], 10
            if length > self.max_size:
                raise _Close(1009, "frame too large")
            if len(buf) < pos + 4 + length:
                break
            payload = _unmask(buf[pos + 4:pos + 4 + length], buf[pos:pos + 4])
            buf = buf[pos + 4 + length:]
            final = bool(b0 & 0x80)
            if opcode & 8:
                self.buf = buf
                if not final or length > 125:
                    raise _Close(1002, "bad control frame")
                if opcode == 8:
                    raise _Close(1000)
                if opcode == 9:
                    self.eio.queue.put(RawFrame(frame(payload, 0xA)))
                elif opcode != 0xA:
                    raise _Close(1002, "unknown control frame")
                continue
            if opcode in (1, 2):
                if self.parts is not None:
                    raise _Close(1002, "a new message inside a fragmented one")
                self.opcode, self.parts = opcode, [payload]
            elif opcode == 0 and self.parts is not None:
                self.parts.append(payload)
            else:
                raise _Close(1002, "unknown opcode or stray continuation")
            if sum(map(len, self.parts)) > self.max_size:
                raise _Close(1009, "message too large")
            if final:
                data = b"".join(self.parts)
                self.parts = None
                self.buf = buf
                if self.opcode == 1:
                    try:
                        yield data.decode("utf-8")
                    except UnicodeDecodeError:
                        raise _Close(1007, "text must be UTF-8") from None
                else:
                    yield data
        self.buf = buf

    def _deliver(self, data: str | bytes) -> None:
        """The library handler's loop body: one message to Engine.IO."""
        eio = self.eio
        try:
            eio.receive(packet.Packet(encoded_packet=data))
        except exceptions.UnknownPacketError:
            pass
        except exceptions.SocketIsClosedError:
            eio.server.logger.info("Receive error -- socket is closed")
            raise _Close() from None
        except Exception:  # noqa: BLE001 - the library's handler, as it is
            eio.server.logger.exception("Unknown receive error")
            raise _Close() from None

    def _finish(self) -> None:
        """The library handler's ending: what is queued goes out, the websocket closes, then
        the Engine.IO socket (its disconnect handlers run here)."""
        eio = self.eio
        eio.queue.on_put = None
        eio.queue.put(None)
        while eio._ec_writer is not None:  # one is mid-send: it ends within the send timeout
            eio.server.sleep(0.01)
        if eio._ec_ws is not None and drain is not None:
            drain(eio)
        self.close(finishing=True)
        eio.close(wait=False, abort=True, reason=eio.server.reason.TRANSPORT_CLOSE)

    # -- writing: only the on-demand writer (one green thread at a time) calls these
    def send(self, message: str | bytes) -> None:
        """Send one message (or a ``RawFrame``), waiting on the hub while the kernel's
        buffer is full."""
        if isinstance(message, RawFrame):
            data = bytes(message)
        elif isinstance(message, str):
            data = frame(message.encode("utf-8"), 1)
        else:
            data = frame(message, 2)
        view = memoryview(data)
        while view:
            try:
                view = view[self.sock.send(view):]
            except (BlockingIOError, InterruptedError):
                trampoline(self.sock.fileno(), write=True, timeout=self.timeout,
                           timeout_exc=TimeoutError)

    def close(self, *, finishing: bool = False) -> None:
        """Close frame (best effort), then the descriptor, after leaving the hub: a
        listener left behind would wake for whatever socket reuses the number.

        The writer calls this after a failed send too; no reader is waiting to notice (the
        library's was, blocked in ``recv``), so the Engine.IO socket is closed from here
        unless it is closing already.
        """
        if self.closed:
            return
        self.closed = True
        self._unlisten()
        try:
            self.sock.send(frame(self.close_code, 8))
        except OSError:
            pass
        self.sock.close()
        counts["open"] -= 1
        if not finishing and not (self.eio.closed or self.eio.closing):
            spawn_n(self._finish)


def adopt(eio: Any, ws: Any) -> HubWebSocket | None:
    """Take ``ws``'s descriptor from eventlet's request (the request's green thread then
    ends without closing it) and make it a ``HubWebSocket`` for ``eio``; None when this
    websocket stays with the library's reader (an extension was negotiated)."""
    if (getattr(ws, "extensions", None) or getattr(ws, "version", 13) not in (8, 13)
            or counts["open"] >= limit):
        return None
    green = ws.socket
    raw = green.fd
    # type(raw): the unpatched socket class (eventlet.monkey_patch made socket.socket green).
    sock = type(raw)(raw.family, raw.type, raw.proto, fileno=raw.detach())
    sock.setblocking(False)
    server = eio.server
    hws = HubWebSocket(sock, eio, int(server.max_http_buffer_size),
                       server.ping_interval + server.ping_timeout)
    counts["adopted"] += 1
    counts["open"] += 1
    # eventlet's WebSocketWSGI sends a closing frame when the handler returns: not ours.
    ws.websocket_closed = True
    environ = ws.environ
    for key in _REQUEST_ONLY_KEYS:
        environ.pop(key, None)
    if "wsgi.input" in environ:
        environ["wsgi.input"] = _EMPTY_INPUT
    return hws
