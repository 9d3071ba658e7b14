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
