"""Limits: auth rate limits (429 + Retry-After), the dummy hash, the JSON body cap, the
per-user cap on queued jobs."""
from __future__ import annotations

import io

import pytest

from app.extensions import db
from app.jobs import service as job_service
from app.limits import limiter
from app.services import users as user_service
from tests.conftest import Factory, _clean, make_test_app
from tests.processes import free_port

LOGIN = "/api/v1/auth/login"
REGISTER = "/api/v1/auth/register"
REFRESH = "/api/v1/auth/refresh"
HIGH = "1000 per minute"


def limited_app(**overrides):
    """An app with the limits given (the others out of the way), over clean tables."""
    settings = {"RATELIMIT_LOGIN_PER_IP": HIGH, "RATELIMIT_LOGIN_PER_ACCOUNT": HIGH,
                "RATELIMIT_REGISTER_PER_IP": HIGH, "RATELIMIT_REFRESH_PER_USER": HIGH}
    app = make_test_app(**(settings | overrides))
    _clean(app)
    return app


def assert_rate_limited(response, *, window: int) -> int:
    assert response.status_code == 429, response.json
    assert response.json["error"]["code"] == "rate_limited"
    assert set(response.json["error"]) == {"code", "message", "details"}
    seconds = int(response.headers["Retry-After"])
    assert 1 <= seconds <= window
    assert response.json["error"]["details"]["retry_after"] == seconds
    return seconds


def login(client, email, password, ip="10.0.0.1"):
    return client.post(LOGIN, json={"email": email, "password": password},
                       environ_base={"REMOTE_ADDR": ip})


def test_limits_are_on_by_default_and_the_defaults_parse(app):
    from limits import parse_many

    from config import Config

    assert app.config["RATELIMIT_ENABLED"] is True and limiter.enabled
    for name in ("RATELIMIT_LOGIN_PER_IP", "RATELIMIT_LOGIN_PER_ACCOUNT",
                 "RATELIMIT_REGISTER_PER_IP", "RATELIMIT_REFRESH_PER_USER"):
        assert parse_many(getattr(Config, name)), name
    assert [str(item) for item in parse_many(Config.RATELIMIT_LOGIN_PER_ACCOUNT)] == [
        "5 per 1 minute", "20 per 1 hour"]


def test_failed_logins_per_account_then_429_even_with_the_right_password(_schema):
    app = limited_app(RATELIMIT_LOGIN_PER_ACCOUNT="3 per minute")
    factory = Factory(app)
    victim, other = factory.user("editor"), factory.user("editor")
    client = app.test_client()
    # Successful logins never use up the account's allowance.
    for _ in range(4):
        assert login(client, victim.email, victim.password).status_code == 200
    # Failures do, from any address; the right password is then refused too.
    for n in range(3):
        assert login(client, victim.email.upper(), "wrong-password", ip=f"10.0.1.{n}").status_code == 401
    assert_rate_limited(login(client, victim.email, victim.password, ip="10.0.2.1"), window=60)
    # Another account is not affected.
    assert login(client, other.email, other.password).status_code == 200


def test_logins_per_address(_schema):
    app = limited_app(RATELIMIT_LOGIN_PER_IP="4 per minute")
    user = Factory(app).user("viewer")
    client = app.test_client()
    for n in range(4):
        email = user.email if n % 2 else f"nobody{n}@example.com"
        assert login(client, email, "wrong-password").status_code == 401
    assert_rate_limited(login(client, user.email, user.password), window=60)
    assert login(client, user.email, user.password, ip="10.9.9.9").status_code == 200


def test_registrations_per_address(_schema):
    app = limited_app(RATELIMIT_REGISTER_PER_IP="2 per hour")
    client = app.test_client()

    def register(n, ip="10.0.0.5"):
        return client.post(REGISTER, environ_base={"REMOTE_ADDR": ip},
                           json={"email": f"new{n}@example.com", "password": "password123",
                                 "name": f"New {n}"})

    assert register(1).status_code == 201
    assert register(1).status_code == 409  # a taken email counts too (it tells one exists)
    seconds = assert_rate_limited(register(2), window=3600)
    assert seconds > 60  # the hour's window, not a minute's
    assert register(3, ip="10.0.0.6").status_code == 201


def test_token_refresh_per_user(_schema):
    app = limited_app(RATELIMIT_REFRESH_PER_USER="2 per minute")
    factory = Factory(app)
    a, b = factory.user("viewer"), factory.user("viewer")
    client = app.test_client()

    def refresh(user):
        # Refresh tokens rotate: each answer carries the next one to use.
        response = client.post(REFRESH, headers={"Authorization": f"Bearer {user.refresh}"})
        if response.status_code == 200:
            user.refresh = response.json["refresh_token"]
        return response

    assert refresh(a).status_code == 200 and refresh(a).status_code == 200
    assert_rate_limited(refresh(a), window=60)
    assert refresh(b).status_code == 200
    # A bad token is refused before it could count against anyone.
    r = client.post(REFRESH, headers={"Authorization": "Bearer not.a.jwt"})
    assert r.status_code == 401


def test_limits_fall_back_to_memory_when_the_storage_is_unreachable(_schema, caplog):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    app = limited_app(RATELIMIT_STORAGE_URI=dead, RATELIMIT_LOGIN_PER_IP="3 per minute")
    client = app.test_client()
    for n in range(3):
        assert login(client, f"x{n}@example.com", "wrong-password").status_code == 401
    assert_rate_limited(login(client, "x@example.com", "wrong-password"), window=60)
    assert "falling back to in-memory storage" in caplog.text


@pytest.mark.redis
def test_counters_live_in_redis_shared_by_every_process(_schema):
    from app.redis_client import get_redis

    app = limited_app(RATELIMIT_LOGIN_PER_IP="2 per minute")
    assert app.config["RATELIMIT_STORAGE_URI"] == app.config["REDIS_URL"]
    client = app.test_client()
    for n in range(2):
        assert login(client, f"y{n}@example.com", "wrong-password").status_code == 401
    assert_rate_limited(login(client, "y@example.com", "wrong-password"), window=60)
    with app.app_context():
        redis = get_redis()
        keys = list(redis.scan_iter("ec:limits:*"))
        assert keys, "no counter in Redis"
        # Another web process (a second app on the same Redis) sees the same counter...
        other = make_test_app(RATELIMIT_LOGIN_PER_IP="2 per minute")
        assert_rate_limited(login(other.test_client(), "z@example.com", "wrong"), window=60)
        # ...and the counter is the one in Redis: gone from there, the address may try again.
        for key in keys:
            redis.delete(key)
    assert login(other.test_client(), "z@example.com", "wrong").status_code == 401


# ---- the same cost for unknown emails -------------------------------------------------------


def test_login_with_an_unknown_email_verifies_a_dummy_hash_of_the_same_cost(app, client, viewer,
                                                                            monkeypatch):
    checked = []
    real = user_service.check_password_hash

    def spy(pwhash, password):
        checked.append(pwhash)
        return real(pwhash, password)

    monkeypatch.setattr(user_service, "check_password_hash", spy)
    r = client.post(LOGIN, json={"email": "nobody@example.com", "password": "password123"})
    assert r.status_code == 401 and r.json["error"]["code"] == "invalid_credentials"
    assert checked == [user_service.dummy_password_hash()]
    with app.app_context():
        stored = user_service.get_by_email(viewer.email).password_hash
    # Same method and cost parameters (scrypt:N:r:p) as a real password's hash.
    assert checked[0].split("$")[0] == stored.split("$")[0]
    assert checked[0].startswith("scrypt:")
    # The known email's wrong password answers exactly the same.
    known = client.post(LOGIN, json={"email": viewer.email, "password": "password124"})
    assert (known.status_code, known.json) == (r.status_code, r.json)


# ---- the JSON body cap --------------------------------------------------------------------


class Tripwire(io.RawIOBase):
    """A request body that counts what is read from it."""

    def __init__(self, size: int):
        self.size, self.read_bytes = size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.size - self.read_bytes)
        buffer[:n] = b"{" * n
        self.read_bytes += n
        return n


def test_a_2_mb_json_body_is_413_before_anything_reads_it(client):
    body = Tripwire(2 * 1024 * 1024)
    r = client.post(LOGIN, content_type="application/json",
                    environ_overrides={"wsgi.input": body, "CONTENT_LENGTH": str(body.size)})
    assert r.status_code == 413
    assert r.json["error"] == {"code": "payload_too_large",
                               "message": "The request body is too large",
                               "details": {"max_bytes": 1024 * 1024}}
    assert body.read_bytes == 0


def test_a_chunked_body_is_cut_at_the_cap(client):
    body = Tripwire(2 * 1024 * 1024)
    # No Content-Length; the server terminates the stream (werkzeug's, for chunked bodies).
    r = client.post(LOGIN, content_type="application/json",
                    headers={"Transfer-Encoding": "chunked"},
                    environ_overrides={"wsgi.input": body, "wsgi.input_terminated": True})
    assert r.status_code == 413 and r.json["error"]["code"] == "payload_too_large"
    assert body.read_bytes <= 1024 * 1024 + 64 * 1024


def test_json_under_the_cap_is_read_as_before(client, viewer):
    r = client.post(LOGIN, json={"email": viewer.email, "password": viewer.password,
                                 "padding": "x" * (1024 * 1024 - 200)})
    assert r.status_code == 200


def test_the_upload_route_keeps_its_own_larger_limit(_schema):
    app = limited_app(MAX_JSON_BYTES=64 * 1024, MAX_CONTENT_LENGTH=1024 * 1024)
    editor = Factory(app).user("editor")
    client = app.test_client()
    r = client.post("/api/v1/episodes", headers=editor.headers,
                    json={"title": "x" * (100 * 1024), "episode_number": 1})
    assert r.status_code == 413 and r.json["error"]["details"] == {"max_bytes": 64 * 1024}
    episode = client.post("/api/v1/episodes", headers=editor.headers,
                          json={"title": "Pilot", "episode_number": 1}).json
    upload = b"y" * (512 * 1024)
    r = client.post(f"/api/v1/episodes/{episode['id']}/files", headers=editor.headers,
                    data={"file": (io.BytesIO(upload), "take.wav")},
                    content_type="multipart/form-data")
    assert r.status_code == 201 and r.json["size"] == len(upload)
    r = client.post(f"/api/v1/episodes/{episode['id']}/files", headers=editor.headers,
                    data={"file": (io.BytesIO(b"z" * (2 * 1024 * 1024)), "big.wav")},
                    content_type="multipart/form-data")
    assert r.status_code == 413 and r.json["error"]["details"] == {"max_bytes": 1024 * 1024}


# ---- the per-user cap on queued jobs -------------------------------------------------------


def test_queued_and_running_jobs_per_user_are_capped(_schema):
    # Tasks go to an in-memory broker nobody consumes, so jobs stay queued.
    celery = {**make_test_app().config["CELERY"], "task_always_eager": False,
              "broker_url": "memory://"}
    app = limited_app(MAX_QUEUED_JOBS_PER_USER=2, CELERY=celery)
    factory = Factory(app)
    editor, other = factory.user("editor"), factory.user("editor")
    client = app.test_client()
    episode = client.post("/api/v1/episodes", headers=editor.headers,
                          json={"title": "Pilot", "episode_number": 1}).json

    def create(user):
        return client.post("/api/v1/jobs", headers=user.headers,
                           json={"type": "noop", "episode_id": episode["id"]})

    first, second = create(editor).json, create(editor).json
    with app.app_context():
        assert job_service.claim_job(first["id"]) is not None  # running counts too
    r = create(editor)
    assert r.status_code == 429 and r.headers["Retry-After"] == "10"
    assert r.json["error"]["code"] == "too_many_queued_jobs"
    assert r.json["error"]["details"]["max_queued_jobs"] == 2
    assert create(other).status_code == 201  # per user
    # A job that ends frees its place; putting it back in the queue takes one again.
    assert client.post(f"/api/v1/jobs/{second['id']}/cancel",
                       headers=editor.headers).status_code == 200
    third = create(editor)
    assert third.status_code == 201
    r = client.post(f"/api/v1/jobs/{second['id']}/retry", headers=editor.headers)
    assert r.status_code == 429 and r.json["error"]["code"] == "too_many_queued_jobs"
    with app.app_context():
        from app.models import Job

        assert db.session.get(Job, second["id"]).status == "cancelled"
        assert {j.status for j in db.session.scalars(db.select(Job).where(
            Job.created_by == editor.id))} == {"running", "queued", "cancelled"}


def test_concurrent_creates_cannot_both_take_the_last_place(_schema):
    """PostgreSQL: a create waits for the user's queue lock, then counts what the holder
    committed (without the lock it would count 0 and take a place that is gone)."""
    import threading

    from sqlalchemy import text

    celery = {**make_test_app().config["CELERY"], "task_always_eager": False,
              "broker_url": "memory://"}
    app = limited_app(MAX_QUEUED_JOBS_PER_USER=1, CELERY=celery)
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            pytest.skip("the queue lock is PostgreSQL's (SQLite has one writer)")
    editor = Factory(app).user("editor")
    client = app.test_client()
    episode = client.post("/api/v1/episodes", headers=editor.headers,
                          json={"title": "Pilot", "episode_number": 1}).json
    result = {}
    with app.app_context(), db.engine.connect() as holder:
        # Another request's transaction: holds the lock and takes the one place.
        holder.execute(text("SELECT pg_advisory_xact_lock(1300013, :uid)"), {"uid": editor.id})
        holder.execute(text(
            "INSERT INTO jobs (type, episode_id, params, status, progress, retry_count, "
            "max_retries, cancel_requested, created_by, created_at, updated_at) VALUES "
            "('noop', :ep, '{}', 'queued', 0, 0, 3, false, :uid, now(), now())"),
            {"ep": episode["id"], "uid": editor.id})

        def create():
            result["response"] = app.test_client().post(
                "/api/v1/jobs", headers=editor.headers,
                json={"type": "noop", "episode_id": episode["id"]})

        thread = threading.Thread(target=create)
        thread.start()
        waiting = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                       "AND NOT granted AND classid = 1300013 AND objid = :uid")
        with db.engine.connect() as observer:
            for _ in range(600):
                if observer.execute(waiting, {"uid": editor.id}).scalar_one():
                    break
                observer.rollback()
                threading.Event().wait(0.05)
            else:
                raise AssertionError("the create never waited for the queue lock")
        holder.commit()
        thread.join(30)
    r = result["response"]
    assert r.status_code == 429 and r.json["error"]["code"] == "too_many_queued_jobs"


@pytest.mark.redis
def test_over_the_wire_two_web_processes_share_the_counters_and_cap_bodies(app):
    import requests

    from tests.processes import web_server

    env = {"RATELIMIT_LOGIN_PER_IP": "3 per minute"}
    with web_server(async_mode="eventlet", **env) as a, web_server(async_mode="eventlet", **env) as b:
        for n in range(3):
            r = requests.post(f"{a.url}{LOGIN}", timeout=10,
                              json={"email": f"w{n}@example.com", "password": "wrong-password"})
            assert r.status_code == 401
        # The other process counts in the same Redis: this address is out of attempts there too.
        r = requests.post(f"{b.url}{LOGIN}", timeout=10,
                          json={"email": "w@example.com", "password": "wrong-password"})
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        r = requests.post(f"{b.url}{REGISTER}", timeout=30, data=b"{" * (2 * 1024 * 1024),
                          headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
