"""The console's server side: pages and vendored assets served, no inline scripts, every
ES module import resolvable, the first-run API, and the event statistics the dashboard
draws. (The console itself is exercised in a real browser in test_console_browser.py.)"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import make_test_app

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "app" / "console" / "static"


def test_index_is_the_console_shell_without_inline_scripts(client):
    response = client.get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'type="module" src="/console/static/js/app.js"' in html
    assert 'src="/console/static/vendor/socket.io.min.js"' in html
    # A Content-Security-Policy without 'unsafe-inline' must be possible: no inline code.
    for tag in re.findall(r"<script[^>]*>(.*?)</script>", html, re.S):
        assert tag.strip() == ""
    assert " style=" not in html and "onclick" not in html.lower()
    for path in ("/console/static/js/app.js", "/console/static/css/console.css",
                 "/console/static/vendor/socket.io.min.js"):
        asset = client.get(path)
        assert asset.status_code == 200, path
        assert len(asset.data) > 100


def test_api_docs_use_local_swagger_ui_assets(client):
    html = client.get("/api/docs").get_data(as_text=True)
    scripts = re.findall(r'<script src="([^"]+)"', html)
    links = re.findall(r'<link [^>]*href="([^"]+)"', html)
    assert "/console/static/vendor/swagger-ui/swagger-ui-bundle.js" in scripts
    for url in scripts + links:
        assert url.startswith("/"), f"{url} is not served locally"
        assert client.get(url).status_code == 200, url
    assert client.get("/api/v1/openapi.json").status_code == 200
    for tag in re.findall(r"<script[^>]*>(.*?)</script>", html, re.S):
        assert tag.strip() == ""


def test_vendored_files_match_their_record():
    record = (STATIC / "vendor" / "VENDOR.md").read_text()
    rows = re.findall(r"^\| (\S+) \| .*? \| (\S+) \| (\S+) \| ([0-9a-f]{64}) \|$", record, re.M)
    assert {row[0] for row in rows} >= {"socket.io.min.js", "swagger-ui/swagger-ui-bundle.js"}
    for name, _version, _licence, digest in rows:
        assert hashlib.sha256((STATIC / "vendor" / name).read_bytes()).hexdigest() == digest, name
    assert (STATIC / "vendor" / "socket.io-client.LICENSE").exists()
    assert (STATIC / "vendor" / "swagger-ui" / "LICENSE").exists()


def test_every_module_import_resolves():
    """A typo in an import breaks the whole console in the browser: catch it here."""
    modules = list((STATIC / "js").rglob("*.js"))
    assert len(modules) > 5
    for module in modules:
        for target in re.findall(r"""^import .*? from ['"](\.[^'"]+)['"];""", module.read_text(), re.M):
            assert (module.parent / target).resolve().exists(), f"{module.name} imports missing {target}"


def test_first_run_setup_flag_off_outside_the_embedded_default(client):
    assert client.get("/api/v1/auth/setup").json == {"first_user_becomes_admin": False}
    body = client.post("/api/v1/auth/register", json={"email": "a@example.com", "password": "password123",
                                                      "name": "Ann"}).json
    assert body["user"]["role"] == "viewer"


def test_first_account_becomes_admin_when_enabled(app):
    first_run = make_test_app(FIRST_USER_BECOMES_ADMIN=True)
    client = first_run.test_client()
    assert client.get("/api/v1/auth/setup").json == {"first_user_becomes_admin": True}
    first = client.post("/api/v1/auth/register", json={"email": "first@example.com",
                                                       "password": "password123", "name": "First"})
    assert first.status_code == 201 and first.json["user"]["role"] == "admin"
    assert client.get("/api/v1/auth/setup").json == {"first_user_becomes_admin": False}
    second = client.post("/api/v1/auth/register", json={"email": "second@example.com",
                                                        "password": "password123", "name": "Second"})
    assert second.json["user"]["role"] == "viewer"
    login = client.post("/api/v1/auth/login", json={"email": "first@example.com", "password": "password123"})
    assert login.json["user"]["role"] == "admin"


def test_first_run_is_on_only_for_the_embedded_default():
    code = ("import config; print(config.DevelopmentConfig.FIRST_USER_BECOMES_ADMIN, "
            "config.ProductionConfig.FIRST_USER_BECOMES_ADMIN, config.TestConfig.FIRST_USER_BECOMES_ADMIN)")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "FIRST_USER_BECOMES_ADMIN")}
    embedded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert embedded.stdout.split() == ["True", "False", "False"], embedded.stderr
    env["DATABASE_URL"] = "postgresql://db/x"
    served = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert served.stdout.split() == ["False", "False", "False"], served.stderr


def test_openapi_documents_the_console_additions(client):
    paths = client.get("/api/v1/openapi.json").json["paths"]
    assert "/api/v1/auth/setup" in paths
    assert "/api/v1/events/stats" in paths


def test_event_stats_per_minute_with_delivery_lag(client, admin, editor):
    for n in (1, 2):
        assert client.post("/api/v1/episodes", headers=editor.headers,
                           json={"title": f"E{n}", "episode_number": n}).status_code == 201
    body = client.get("/api/v1/events/stats?minutes=5", headers=admin.headers).json
    assert body["minutes"] == 5 and len(body["per_minute"]) == 5
    minutes = [m["minute"] for m in body["per_minute"]]
    assert minutes == sorted(set(minutes))  # five distinct minutes, oldest first
    total = sum(m["events"] for m in body["per_minute"])
    assert total >= 2  # two episode_created events (eager delivery in tests)
    delivered = [m for m in body["per_minute"] if m["delivered"]]
    assert delivered and all(m["lag_avg_ms"] is not None and m["lag_avg_ms"] >= 0 for m in delivered)
    assert body["undelivered"] == 0
    assert client.get("/api/v1/events/stats", headers=editor.headers).status_code == 403
    bad = client.get("/api/v1/events/stats?minutes=0", headers=admin.headers)
    assert bad.status_code == 422 and "minutes" in str(bad.json["error"]["details"])


def test_demo_command_fills_the_instance_through_the_services(app, runner):
    result = runner.invoke(args=["demo", "--password", "password123"])
    assert result.exit_code == 0, result.output
    assert "ada@demo.example" in result.output
    client = app.test_client()

    def sign_in(email: str) -> dict:
        login = client.post("/api/v1/auth/login", json={"email": email, "password": "password123"})
        assert login.status_code == 200, login.json
        return {"Authorization": f"Bearer {login.json['access_token']}"}

    headers = sign_in("ada@demo.example")
    assert client.get("/api/v1/auth/me", headers=headers).json["role"] == "admin"
    episodes = client.get("/api/v1/episodes?limit=100", headers=headers).json["items"]
    assert len(episodes) == 6
    assert {e["status"] for e in episodes} >= {"published", "in_review", "draft"}
    jobs = client.get("/api/v1/jobs?limit=100", headers=headers).json["items"]
    assert len(jobs) == 3 and {j["status"] for j in jobs} == {"completed"}
    exports = [j for j in jobs if j["type"] == "export"]
    assert all(j["result"]["file_id"] for j in exports)
    pilot = next(e for e in episodes if e["title"] == "Pilot")
    listing = client.get(f"/api/v1/episodes/{pilot['id']}/files", headers=headers).json["items"]
    names = {f["filename"] for f in listing}
    assert {"script.txt", "notes.md"} <= names and any(n.endswith(".zip") for n in names)
    timeline = client.get(f"/api/v1/activity/episode/{pilot['id']}/timeline", headers=headers).json["items"]
    assert any(a["changes"] for a in timeline)
    inbox = client.get("/api/v1/notifications", headers=headers).json["items"]
    assert any(n["title"] == "Welcome to Episode Control" for n in inbox)
    vera_inbox = client.get("/api/v1/notifications", headers=sign_in("vera@demo.example")).json["items"]
    assert {"Welcome to Episode Control", "Eddie mentioned you"} <= {n["title"] for n in vera_inbox}
    again = runner.invoke(args=["demo"])
    assert again.exit_code != 0 and "already" in again.output
