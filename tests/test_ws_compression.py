"""permessage-deflate on the websocket transport (app/ws_compression.py): off by default in
every async mode, bounded when turned on. End to end against real ``python wsgi.py``
processes, with a raw websocket handshake that offers the extension the way browsers do."""
from __future__ import annotations

import base64
import os
import socket
import zlib
from urllib.parse import urlsplit

import pytest

from app.ws_compression import bounded_offer
from tests.processes import web_server

BROWSER_OFFER = "permessage-deflate; client_max_window_bits"


def handshake(url: str, offer: str | None) -> tuple[str, dict[str, str], socket.socket, bytes]:
    """Open an Engine.IO websocket by hand; the status line, the answer's headers, the socket
    and whatever bytes came after the headers."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    lines = [
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1",
        f"Host: {parts.netloc}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        "Sec-WebSocket-Version: 13",
    ]
    if offer:
        lines.append(f"Sec-WebSocket-Extensions: {offer}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError(f"connection closed during the handshake: {data!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    status, *header_lines = head.decode().split("\r\n")
    headers = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers, sock, rest


def first_frame(sock: socket.socket, buffered: bytes) -> tuple[bool, bytes]:
    """The first frame the server sends (Engine.IO's open packet): (RSV1 bit, payload)."""
    data = buffered
    while len(data) < 2:
        data += sock.recv(4096)
    rsv1 = bool(data[0] & 0x40)
    length, offset = data[1] & 0x7F, 2
    if length == 126:
        while len(data) < 4:
            data += sock.recv(4096)
        length, offset = int.from_bytes(data[2:4], "big"), 4
    while len(data) < offset + length:
        data += sock.recv(4096)
    return rsv1, data[offset:offset + length]


def open_packet(url: str, offer: str | None) -> tuple[str, dict[str, str], bool, bytes]:
    status, headers, sock, rest = handshake(url, offer)
    try:
        rsv1, payload = first_frame(sock, rest)
    finally:
        sock.close()
    return status, headers, rsv1, payload


MODES = ["eventlet", "gevent", "threading"]


@pytest.mark.parametrize("mode", MODES)
def test_offered_compression_is_refused_by_default(_schema, mode):
    with web_server(async_mode=mode) as server:
        status, headers, rsv1, payload = open_packet(server.url, BROWSER_OFFER)
    assert status.split()[1] == "101", status
    assert "sec-websocket-extensions" not in headers, headers
    assert not rsv1
    assert payload.startswith(b'0{"sid"'), payload  # plain Engine.IO open packet


@pytest.mark.parametrize("mode", MODES)  # eventlet.websocket; simple-websocket on gevent, werkzeug
def test_setting_turns_compression_on_with_bounded_windows(_schema, mode):
    with web_server(async_mode=mode, SOCKETIO_WS_COMPRESSION="1",
                    SOCKETIO_WS_COMPRESSION_WINDOW_BITS="10") as server:
        status, headers, rsv1, payload = open_packet(server.url, BROWSER_OFFER)
        # A client that offers nothing still gets a plain websocket.
        _status, plain_headers, plain_rsv1, plain = open_packet(server.url, None)
    assert status.split()[1] == "101", status
    answer = [p.strip() for p in headers["sec-websocket-extensions"].split(";")]
    assert answer[0] == "permessage-deflate"
    assert sorted(answer[1:]) == ["client_max_window_bits=10", "server_max_window_bits=10"]
    assert rsv1  # the open packet really went out compressed, with a window the client can hold
    inflated = zlib.decompressobj(-10).decompress(payload + b"\x00\x00\xff\xff")
    assert inflated.startswith(b'0{"sid"'), inflated
    assert "sec-websocket-extensions" not in plain_headers and not plain_rsv1
    assert plain.startswith(b'0{"sid"')


def test_no_context_takeover_setting_keeps_no_compressor_between_messages(_schema):
    with web_server(async_mode="eventlet", SOCKETIO_WS_COMPRESSION="1",
                    SOCKETIO_WS_COMPRESSION_NO_CONTEXT_TAKEOVER="1") as server:
        status, headers, rsv1, payload = open_packet(server.url, BROWSER_OFFER)
    answer = sorted(p.strip() for p in headers["sec-websocket-extensions"].split(";"))
    assert status.split()[1] == "101" and rsv1
    assert answer == ["client_max_window_bits=11", "permessage-deflate", "server_max_window_bits=11",
                      "server_no_context_takeover"]
    assert zlib.decompressobj(-11).decompress(payload + b"\x00\x00\xff\xff").startswith(b'0{"sid"')


def test_bounded_offer_without_context_takeover():
    assert bounded_offer("permessage-deflate", 10, no_context_takeover=True) == (
        "permessage-deflate; server_max_window_bits=10; server_no_context_takeover")


@pytest.mark.parametrize(("offer", "expected"), [
    (BROWSER_OFFER, "permessage-deflate; server_max_window_bits=11; client_max_window_bits=11"),
    ("permessage-deflate", "permessage-deflate; server_max_window_bits=11"),
    ("permessage-deflate; server_max_window_bits=9; client_max_window_bits=15",
     "permessage-deflate; server_max_window_bits=9; client_max_window_bits=11"),
    ("permessage-deflate; server_no_context_takeover; unknown_param=1",
     "permessage-deflate; server_max_window_bits=11; server_no_context_takeover"),
    # a window zlib cannot do is skipped; the client's next offer is taken
    ("permessage-deflate; server_max_window_bits=8, permessage-deflate; client_max_window_bits",
     "permessage-deflate; server_max_window_bits=11; client_max_window_bits=11"),
    ("x-webkit-deflate-frame", None),
    ("permessage-deflate; client_max_window_bits=abc", None),
])
def test_bounded_offer(offer, expected):
    assert bounded_offer(offer, 11) == expected
