"""One JSON error shape for every error, including routing and malformed bodies."""
from __future__ import annotations


def _shape(r):
    assert r.is_json, r.data
    assert set(r.json) == {"error"}
    assert set(r.json["error"]) == {"code", "message", "details"}
    return r.json["error"]


def test_unknown_route_is_json_404(client):
    r = client.get("/api/v1/nope")
    assert r.status_code == 404
    assert _shape(r)["code"] == "not_found"


def test_wrong_method_is_json_405(client):
    r = client.put("/api/v1/health")
    assert r.status_code == 405
    _shape(r)


def test_malformed_json_is_400(client, editor):
    r = client.post("/api/v1/episodes", headers=editor.headers | {"Content-Type": "application/json"},
                    data="{not json")
    assert r.status_code == 400
    assert _shape(r)["code"] == "bad_request"


def test_openapi_spec_is_served(client):
    r = client.get("/api/v1/openapi.json")
    assert r.status_code == 200
    assert "/api/v1/episodes" in r.json["paths"]
    # The documented error body is the one the API returns.
    envelope = r.json["components"]["schemas"]["ErrorEnvelope"]
    assert envelope["required"] == ["error"]


def test_health_reports_database(client):
    r = client.get("/api/v1/health")
    assert r.status_code == 200
    assert r.json["database"] == "ok"
    assert set(r.json) == {"status", "database", "redis", "broker"}


def test_health_503_when_database_down(_schema):
    from tests.conftest import make_test_app

    app = make_test_app(SQLALCHEMY_DATABASE_URI="postgresql+psycopg://nobody@127.0.0.1:1/none")
    r = app.test_client().get("/api/v1/health")
    assert r.status_code == 503
    assert r.json["database"] == "unavailable"


def test_huge_ids_are_404_not_500(client, viewer):
    for path in ("/api/v1/episodes/99999999999", "/api/v1/jobs/99999999999",
                 "/api/v1/files/99999999999", "/api/v1/presence/users/99999999999"):
        r = client.get(path, headers=viewer.headers)
        assert r.status_code == 404, path


def test_hostile_input_is_4xx_never_500(client, admin, editor):
    huge = 10**30
    cursor = "eyJpZCI6IDEwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDB9"  # {"id": 10**30}
    checks = [
        client.get(f"/api/v1/episodes?cursor={cursor}", headers=editor.headers),
        client.get(f"/api/v1/episodes?season={huge}", headers=editor.headers),
        client.post("/api/v1/episodes", headers=editor.headers,
                    json={"title": "t", "episode_number": huge}),
        client.post("/api/v1/jobs", headers=editor.headers, json={"type": "noop", "episode_id": huge}),
        client.get("/api/v1/activity?since=0001-01-01T00:00:00%2B14:00", headers=admin.headers),
        client.post("/api/v1/episodes", headers=editor.headers | {"Content-Type": "application/json"},
                    data='{"title": "\\ud800", "episode_number": 1}'),
        client.post("/api/v1/auth/login", headers={"Content-Type": "application/json"},
                    data='{"email": "a@b.c", "password": "\\udc00"}'),
        client.post("/api/v1/auth/register", headers={"Content-Type": "application/json"},
                    data='{"a":' + "[" * 100_000 + "]" * 100_000 + "}"),
        client.post("/api/v1/notifications", headers=admin.headers,
                    json={"user_ids": [editor.id], "title": "t", "deliver_at": "9999-12-31T23:59:59Z"}),
    ]
    for r in checks:
        assert 400 <= r.status_code < 500, (r.status_code, r.json)
        assert set(r.json["error"]) == {"code", "message", "details"}
    # A valid surrogate pair (an emoji) is fine.
    ok = client.post("/api/v1/episodes", headers=editor.headers | {"Content-Type": "application/json"},
                     data='{"title": "\\ud83c\\udf99 mic", "episode_number": 1}')
    assert ok.status_code == 201 and ok.json["title"] == "\U0001f399 mic"


def test_last_admin_cannot_be_demoted(client, admin, factory):
    r = client.patch(f"/api/v1/users/{admin.id}", headers=admin.headers, json={"role": "viewer"})
    assert r.status_code == 409
    other = factory.user("admin")
    r = client.patch(f"/api/v1/users/{admin.id}", headers=other.headers, json={"role": "viewer"})
    assert r.status_code == 200
