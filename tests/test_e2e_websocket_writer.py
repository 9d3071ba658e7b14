"""The eventlet server's on-demand websocket writer (app/server.py ``write_websockets_on_demand``)
end to end: a client that starts on long-polling and upgrades (the browser client's default),
then acks, pings and a server-side disconnect, all through the writer started per packet."""
from __future__ import annotations

import signal
import time

import requests
import socketio as sio_client

from tests.helpers import wait_for
from tests.processes import web_server


def test_upgraded_client_gets_acks_and_pings_and_is_disconnected_by_the_server(_schema, editor):
    with web_server(async_mode="eventlet", SOCKETIO_PING_INTERVAL="1",
                    SOCKETIO_PING_TIMEOUT="1") as server:
        episode = requests.post(f"{server.url}/api/v1/episodes", timeout=10,
                                headers={"Authorization": f"Bearer {editor.token}"},
                                json={"title": "Writer", "episode_number": 1}).json()
        client = sio_client.Client(reconnection=False)
        lost: list[str] = []
        client.on("disconnect", lambda *a: lost.append("x"), namespace="/episodes")
        client.connect(server.url, namespaces=["/episodes"], auth={"token": editor.token},
                       transports=["polling", "websocket"], wait_timeout=10)
        try:
            wait_for(lambda: client.transport() == "websocket", 10,
                     describe=lambda: f"transport: {client.transport()}")
            for _ in range(3):  # acks go out through the writer, in order, every time
                ack = client.call("join", {"episode_id": episode["id"]}, namespace="/episodes",
                                  timeout=10)
                assert ack["ok"] is True
            time.sleep(4)  # pings every second; without them the client gives up after 2 s
            assert client.connected and not lost
            # A disconnect from the server (graceful shutdown disconnects every client): the
            # queued CLOSE and the writer's None close the websocket.
            server.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: bool(lost) or not client.connected, 15, what="the server's disconnect")
        finally:
            client.disconnect()
