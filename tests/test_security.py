"""Safe defaults at the edge: CORS, trusted proxies, who sees client addresses, headers, spec."""
from __future__ import annotations

import io
import json
import re

import pytest

from app.extensions import socketio
from tests.conftest import make_test_app

APP_ORIGIN = "https://app.example.com"
EVIL_ORIGIN = "https://evil.example.net"


def _preflight(client, origin: str, path: str = "/api/v1/episodes"):
    return client.options(path, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})


def _engineio_handshake(client, origin: str):
    """An Engine.IO long-polling handshake, the request a browser's socket starts with."""
    return client.get("/socket.io/?EIO=4&transport=polling", headers={"Origin": origin})


# ---- CORS -------------------------------------------------------------------------------


def test_rest_answers_cors_for_the_configured_origin_only(_schema, editor):
    app = make_test_app(CORS_ORIGINS=f"{APP_ORIGIN}, https://other.example.com")
    client = app.test_client()
    ok = _preflight(client, APP_ORIGIN)
    assert ok.status_code == 200
    assert ok.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "authorization" in ok.headers["Access-Control-Allow-Headers"].lower()
    assert "POST" in ok.headers["Access-Control-Allow-Methods"]
    assert "Access-Control-Allow-Origin" not in _preflight(client, EVIL_ORIGIN).headers

    # Real requests too, errors included, so a frontend can read why a call failed.
    got = client.get("/api/v1/episodes", headers={"Origin": APP_ORIGIN, **editor.headers})
    assert got.status_code == 200 and got.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    refused = client.get("/api/v1/episodes", headers={"Origin": APP_ORIGIN})
    assert refused.status_code == 401
    assert refused.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "Retry-After" in refused.headers["Access-Control-Expose-Headers"]
    assert "Access-Control-Allow-Origin" not in client.get(
        "/api/v1/episodes", headers={"Origin": EVIL_ORIGIN, **editor.headers}).headers

    # Socket.IO obeys the same list.
    assert _engineio_handshake(client, APP_ORIGIN).status_code == 200
    assert _engineio_handshake(client, EVIL_ORIGIN).status_code == 400


def test_empty_cors_origins_means_same_origin_only_for_rest_and_sockets(_schema):
    # The production default: python-engineio must get its same-origin check (None), never
    # [] which turns the check off and lets any site open a socket.
    app = make_test_app(CORS_ORIGINS="")
    client = app.test_client()
    assert socketio.server.eio.cors_allowed_origins is None
    assert _engineio_handshake(client, EVIL_ORIGIN).status_code == 400
    assert _engineio_handshake(client, "http://localhost").status_code == 200  # its own origin
    preflight = _preflight(client, EVIL_ORIGIN)
    assert "Access-Control-Allow-Origin" not in preflight.headers


def test_wildcard_cors_in_development_allows_any_origin(_schema):
    client = make_test_app(CORS_ORIGINS="*").test_client()
    assert _preflight(client, EVIL_ORIGIN).headers["Access-Control-Allow-Origin"] in ("*", EVIL_ORIGIN)
    assert _engineio_handshake(client, EVIL_ORIGIN).status_code == 200


# ---- trusted proxies --------------------------------------------------------------------


def _recorded_ip(client, admin, editor, **request_kwargs) -> str:
    ep = client.post("/api/v1/episodes", headers={**editor.headers, **request_kwargs.pop("headers", {})},
                     json={"title": "Proxy", "episode_number": 1}, **request_kwargs).json
    items = client.get(f"/api/v1/activity/episode/{ep['id']}", headers=admin.headers).json["items"]
    return items[0]["ip_address"]


def test_forwarded_for_is_ignored_without_trusted_proxies(client, admin, editor):
    ip = _recorded_ip(client, admin, editor, headers={"X-Forwarded-For": "6.6.6.6"},
                      environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert ip == "10.0.0.9"


def test_forwarded_for_is_honoured_behind_the_configured_proxies(_schema, admin, editor):
    client = make_test_app(TRUSTED_PROXIES=1).test_client()
    # The client's own X-Forwarded-For entry (6.6.6.6) is a lie; the one our proxy appended
    # (the address it saw) is the truth.
    ip = _recorded_ip(client, admin, editor, headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.7"},
                      environ_base={"REMOTE_ADDR": "10.0.0.1"})
    assert ip == "203.0.113.7"


# ---- client addresses are for admins ----------------------------------------------------


def test_ip_and_user_agent_are_shown_to_admins_only(app, client, admin, editor, viewer):
    secret_ip, secret_ua = "198.51.100.77", "SecretBrowser/9.9"
    feed = socketio.test_client(app, namespace="/feed", flask_test_client=client,
                                auth={"token": viewer.token})
    episodes = socketio.test_client(app, namespace="/episodes", flask_test_client=client,
                                    auth={"token": viewer.token})
    headers = {**editor.headers, "User-Agent": secret_ua}
    environ = {"REMOTE_ADDR": secret_ip}
    ep = client.post("/api/v1/episodes", headers=headers, environ_base=environ,
                     json={"title": "Private", "episode_number": 1}).json
    episodes.emit("join", {"episode_id": ep["id"]}, namespace="/episodes")
    client.patch(f"/api/v1/episodes/{ep['id']}", headers=headers, environ_base=environ,
                 json={"title": "Private 2"})
    client.post(f"/api/v1/episodes/{ep['id']}/files", headers=headers, environ_base=environ,
                data={"file": (io.BytesIO(b"x"), "x.txt")}, content_type="multipart/form-data")

    paths = ["/activity/me", f"/activity/episode/{ep['id']}",
             f"/activity/episode/{ep['id']}/timeline", "/activity/search?q=Private",
             "/activity/dashboard"]
    for user in (editor, viewer):
        for path in paths:
            response = client.get("/api/v1" + path, headers=user.headers)
            assert response.status_code == 200, (path, response.json)
            assert secret_ip not in response.text and secret_ua not in response.text, (user.role, path)
    editor_items = client.get("/api/v1/activity/me", headers=editor.headers).json["items"]
    assert editor_items and all(i["ip_address"] is None and i["user_agent"] is None
                                for i in editor_items)
    notifications = client.get("/api/v1/notifications", headers=viewer.headers)
    assert secret_ip not in notifications.text and secret_ua not in notifications.text
    received = json.dumps(feed.get_received("/feed") + episodes.get_received("/episodes"))
    assert "episode_updated" in received
    assert secret_ip not in received and secret_ua not in received

    for path in paths[1:] + ["/activity"]:
        response = client.get("/api/v1" + path, headers=admin.headers)
        assert secret_ip in response.text and secret_ua in response.text, path
    feed.disconnect(namespace="/feed")
    episodes.disconnect(namespace="/episodes")


# ---- headers ----------------------------------------------------------------------------


def test_every_response_says_nosniff(client, editor, episode):
    uploaded = client.post(f"/api/v1/episodes/{episode['id']}/files", headers=editor.headers,
                           data={"file": (io.BytesIO(b"<script>alert(1)</script>"), "page.html")},
                           content_type="multipart/form-data").json
    url = client.get(f"/api/v1/files/{uploaded['id']}/download-url", headers=editor.headers).json["url"]
    responses = [
        client.get("/api/v1/health"),
        client.get("/api/v1/episodes", headers=editor.headers),
        client.get("/api/v1/episodes"),  # 401
        client.get("/api/v1/no-such-thing"),  # 404 from routing
        client.get("/api/v1/openapi.json"),
        client.get(url.split("localhost", 1)[1]),
        _engineio_handshake(client, "http://localhost"),  # answered by Engine.IO, not Flask
    ]
    for response in responses:
        assert response.headers.get("X-Content-Type-Options") == "nosniff", response.request.path


def test_downloads_are_attachments(client, editor, episode):
    uploaded = client.post(f"/api/v1/episodes/{episode['id']}/files", headers=editor.headers,
                           data={"file": (io.BytesIO(b"<html></html>"), "page.html")},
                           content_type="multipart/form-data").json
    url = client.get(f"/api/v1/files/{uploaded['id']}/download-url", headers=editor.headers)
    assert url.headers["Cache-Control"] == "no-store"
    got = client.get(url.json["url"].split("localhost", 1)[1])
    assert got.status_code == 200 and got.data == b"<html></html>"
    assert got.headers["Content-Disposition"].startswith("attachment")
    assert got.headers["X-Content-Type-Options"] == "nosniff"


def test_token_responses_are_never_cached(client, editor):
    login = client.post("/api/v1/auth/login", json={"email": editor.email, "password": editor.password})
    assert login.status_code == 200
    assert login.headers["Cache-Control"] == "no-store"
    refreshed = client.post("/api/v1/auth/refresh",
                            headers={"Authorization": f"Bearer {login.json['refresh_token']}"})
    assert refreshed.status_code == 200
    assert refreshed.headers["Cache-Control"] == "no-store"
    failed = client.post("/api/v1/auth/login", json={"email": editor.email, "password": "wrong-pass"})
    assert failed.status_code == 401 and failed.headers["Cache-Control"] == "no-store"


# ---- OpenAPI ----------------------------------------------------------------------------


def test_openapi_declares_bearer_auth_and_it_matches_the_routes(client, app):
    """Each operation the spec marks secured answers 401 without a token; public ones don't."""
    spec = client.get("/api/v1/openapi.json").json
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": spec["components"]["securitySchemes"]["bearerAuth"]["description"]}
    assert spec["security"] == [{"bearerAuth": []}]
    public, secured = [], []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            url = re.sub(r"\{[^}]+\}", "1", path)
            response = client.open(url, method=method.upper(), json={})
            required = operation.get("security", spec["security"])
            if required:
                secured.append(path)
                assert response.status_code == 401, (method, path, response.status_code)
            else:
                public.append(path)
                assert response.status_code != 401, (method, path)
    assert sorted(set(public)) == ["/api/v1/auth/login", "/api/v1/auth/register", "/api/v1/auth/setup",
                                   "/api/v1/files/{file_id}/download", "/api/v1/health",
                                   "/api/v1/health/live", "/api/v1/health/ready"]
    assert len(secured) > 30



# ---- the real thing: a production web process -------------------------------------------


def test_production_process_refuses_websockets_from_other_origins(_schema):
    """``APP_ENV=production`` with CORS_ORIGINS unset, eventlet, a raw websocket handshake:
    another site's Origin is refused, the page's own origin is accepted."""
    import requests
    import websocket

    from tests.processes import web_server

    with web_server(async_mode="eventlet", APP_ENV="production", CORS_ORIGINS="",
                    SECRET_KEY="s" * 40, JWT_SECRET_KEY="j" * 40) as server:
        ws_url = server.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(ws_url, origin=EVIL_ORIGIN, timeout=5)
        assert refused.value.status_code == 400
        ok = websocket.create_connection(ws_url, origin=server.url, timeout=5)
        try:
            assert ok.recv().startswith("0{")  # the Engine.IO open packet
        finally:
            ok.close()
        rest = requests.options(f"{server.url}/api/v1/episodes", timeout=5, headers={
            "Origin": EVIL_ORIGIN, "Access-Control-Request-Method": "POST"})
        assert "Access-Control-Allow-Origin" not in rest.headers
        assert rest.headers["X-Content-Type-Options"] == "nosniff"
