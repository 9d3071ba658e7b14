"""Per-message compression (permessage-deflate, RFC 7692) on the websocket transport.

Off unless ``SOCKETIO_WS_COMPRESSION`` is on; when on, the LZ77 windows are bounded by
``SOCKETIO_WS_COMPRESSION_WINDOW_BITS``.

Why off: browsers offer permessage-deflate on every websocket, and every websocket library
under python-engineio accepts it whenever it is offered, with no switch (eventlet.websocket
in eventlet mode, simple-websocket + wsproto in gevent and threading modes). Each such
connection then keeps a zlib compressor for life (a 64 KB hash table, 64 KB window and
buffers at zlib's defaults), about 100 KB of every idle browser connection
(``bench/realtime.py --memory``), for messages that are small JSON envelopes. Node's
socket.io made the same choice (off by default since v3).

Where: all three libraries read the client's offer from the WSGI environ
(``HTTP_SEC_WEBSOCKET_EXTENSIONS``) and answer what they find there. So the decision is
taken once, in front of them, for every async mode: without the offer they answer without
the extension, as a reverse proxy stripping the header would make them do; with it turned
on, the offer is rewritten to the bounded parameters both libraries then echo.
"""
from __future__ import annotations

import types
from collections.abc import Callable, Iterable

from flask import Flask

HEADER = "HTTP_SEC_WEBSOCKET_EXTENSIONS"
NAME = "permessage-deflate"
# zlib refuses 8 for a raw deflate stream, and wsproto accepts 9..15 only.
MIN_WINDOW_BITS, MAX_WINDOW_BITS = 9, 15


def _bits(value: str | bool, bound: int) -> int | None:
    """A window-bits parameter of the offer, capped at ``bound``; None when malformed."""
    if value is True:  # "client_max_window_bits" without a value: we may choose
        return bound
    try:
        bits = int(value)
    except ValueError:
        return None
    return min(bits, bound) if MIN_WINDOW_BITS <= bits <= MAX_WINDOW_BITS else None


def bounded_offer(header: str, window_bits: int, *, no_context_takeover: bool = False) -> str | None:
    """The client's permessage-deflate offers rewritten so the server accepts at most
    ``window_bits`` for its own window and for the client's (when the client lets the server
    choose it); None when no offer is usable.

    RFC 7692 lets the server limit its own window in the answer even when the client did
    not name it (7.1.2.1), and the client's only when offered (7.1.2.2). Parameters we do
    not know are dropped rather than echoed. ``no_context_takeover`` adds
    ``server_no_context_takeover``, which a server may always answer (7.1.1.1): the server
    then makes a compressor per message and keeps none between messages.
    """
    offers = []
    for raw in header.split(","):
        name, *params = (part.strip() for part in raw.split(";"))
        if name.lower() != NAME:
            continue
        values: dict[str, str | bool] = {}
        for param in params:
            key, sep, value = param.partition("=")
            values[key.strip().lower()] = value.strip().strip('"') if sep else True
        server_bits = _bits(values.get("server_max_window_bits", True), window_bits)
        client_bits = (_bits(values["client_max_window_bits"], window_bits)
                       if "client_max_window_bits" in values else 0)
        if server_bits is None or client_bits is None:
            continue  # a malformed window in this offer: try the next one
        parts = [NAME, f"server_max_window_bits={server_bits}"]
        if client_bits:
            parts.append(f"client_max_window_bits={client_bits}")
        if no_context_takeover:
            values["server_no_context_takeover"] = True
        parts += [flag for flag in ("server_no_context_takeover", "client_no_context_takeover")
                  if values.get(flag) is True]
        offers.append("; ".join(parts))
    return ", ".join(offers) or None


def install_ws_compression(app: Flask) -> None:
    """Put the decision in front of Flask-SocketIO's middleware, so before any websocket
    library.

    A function, not a class with ``__call__``: an idle websocket's green thread keeps this
    frame for the connection's whole life, and calling an instance goes through C (a C stack
    frame saved with every suspended green thread), calling a function does not.
    """
    enabled = bool(app.config["SOCKETIO_WS_COMPRESSION"])
    window_bits = int(app.config["SOCKETIO_WS_COMPRESSION_WINDOW_BITS"])
    no_context_takeover = bool(app.config["SOCKETIO_WS_COMPRESSION_NO_CONTEXT_TAKEOVER"])
    if not MIN_WINDOW_BITS <= window_bits <= MAX_WINDOW_BITS:
        raise ValueError(f"SOCKETIO_WS_COMPRESSION_WINDOW_BITS={window_bits} is not within "
                         f"{MIN_WINDOW_BITS}..{MAX_WINDOW_BITS}")
    wsgi_app = app.wsgi_app
    if not isinstance(wsgi_app, (types.FunctionType, types.MethodType)):
        wsgi_app = wsgi_app.__call__  # Flask-SocketIO's middleware: its method, called inline

    def ws_compression(environ: dict, start_response: Callable) -> Iterable[bytes]:
        offer = environ.get(HEADER)
        if offer is not None:
            rewritten = (bounded_offer(offer, window_bits, no_context_takeover=no_context_takeover)
                         if enabled else None)
            if rewritten:
                environ[HEADER] = rewritten
            else:
                del environ[HEADER]
        return wsgi_app(environ, start_response)

    app.wsgi_app = ws_compression  # type: ignore[method-assign]
