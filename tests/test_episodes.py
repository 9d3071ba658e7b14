"""Episodes: CRUD, publish, roles, pagination, cascade."""
from __future__ import annotations

import io

from sqlalchemy import func, select

from app.extensions import db
from app.models import DomainEvent, File, Job


def test_viewer_cannot_create_episode(client, viewer):
    r = client.post("/api/v1/episodes", headers=viewer.headers,
                    json={"title": "No", "episode_number": 1})
    assert r.status_code == 403
    assert r.json["error"]["code"] == "forbidden"


def test_editor_creates_and_everyone_reads(client, editor, viewer):
    r = client.post("/api/v1/episodes", headers=editor.headers,
                    json={"title": "Pilot", "episode_number": 1, "season": 2,
                          "description": "First", "categories": ["a", "b"]})
    assert r.status_code == 201
    body = r.json
    assert body["status"] == "draft" and body["created_by"] == editor.id
    assert body["categories"] == ["a", "b"]
    got = client.get(f"/api/v1/episodes/{body['id']}", headers=viewer.headers)
    assert got.status_code == 200
    assert got.json["title"] == "Pilot" and got.json["viewers"] == []


def test_update_publish_delete(client, editor, episode):
    eid = episode["id"]
    r = client.patch(f"/api/v1/episodes/{eid}", headers=editor.headers,
                     json={"title": "Pilot (final)", "status": "in_review"})
    assert r.status_code == 200
    assert r.json["title"] == "Pilot (final)" and r.json["status"] == "in_review"
    before = r.json["updated_at"]
    r = client.post(f"/api/v1/episodes/{eid}/publish", headers=editor.headers)
    assert r.status_code == 200 and r.json["status"] == "published"
    assert r.json["published_at"] and r.json["updated_at"] >= before
    assert client.post(f"/api/v1/episodes/{eid}/publish", headers=editor.headers).status_code == 409
    assert client.delete(f"/api/v1/episodes/{eid}", headers=editor.headers).status_code == 204
    r = client.get(f"/api/v1/episodes/{eid}", headers=editor.headers)
    assert r.status_code == 404 and r.json["error"]["code"] == "not_found"


def test_unknown_episode_is_404_in_error_shape(client, viewer):
    r = client.get("/api/v1/episodes/999999", headers=viewer.headers)
    assert r.status_code == 404
    assert set(r.json["error"]) == {"code", "message", "details"}


def test_bad_payload_is_422_naming_fields(client, editor):
    r = client.post("/api/v1/episodes", headers=editor.headers,
                    json={"title": "", "episode_number": "one", "categories": "x"})
    assert r.status_code == 422
    details = r.json["error"]["details"]
    assert {"title", "episode_number", "categories"} <= set(details)
    r = client.patch("/api/v1/episodes/1", headers=editor.headers, json={"status": "published"})
    assert r.status_code == 422 and "status" in r.json["error"]["details"]


def test_bad_payload_writes_nothing(app, client, editor):
    client.post("/api/v1/episodes", headers=editor.headers, json={"episode_number": 3})
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(DomainEvent)) == 0


def test_list_filters_and_cursor_pagination(client, editor, viewer):
    for n in range(5):
        client.post("/api/v1/episodes", headers=editor.headers,
                    json={"title": f"E{n}", "episode_number": n, "season": n % 2})
    page1 = client.get("/api/v1/episodes?limit=2", headers=viewer.headers).json
    assert [e["title"] for e in page1["items"]] == ["E4", "E3"]
    page2 = client.get(f"/api/v1/episodes?limit=2&cursor={page1['next_cursor']}",
                       headers=viewer.headers).json
    assert [e["title"] for e in page2["items"]] == ["E2", "E1"]
    page3 = client.get(f"/api/v1/episodes?limit=2&cursor={page2['next_cursor']}",
                       headers=viewer.headers).json
    assert [e["title"] for e in page3["items"]] == ["E0"] and page3["next_cursor"] is None
    odd = client.get("/api/v1/episodes?season=1", headers=viewer.headers).json
    assert {e["title"] for e in odd["items"]} == {"E1", "E3"}
    assert client.get("/api/v1/episodes?limit=500", headers=viewer.headers).status_code == 422
    assert client.get("/api/v1/episodes?cursor=@@@", headers=viewer.headers).status_code == 422


def test_deleting_episode_cascades_to_jobs_and_files(app, client, editor, episode):
    eid = episode["id"]
    up = client.post(f"/api/v1/episodes/{eid}/files", headers=editor.headers,
                     data={"file": (io.BytesIO(b"hello"), "a.txt")},
                     content_type="multipart/form-data")
    assert up.status_code == 201
    job = client.post("/api/v1/jobs", headers=editor.headers,
                      json={"type": "checksum", "episode_id": eid})
    assert job.status_code == 201
    with app.app_context():
        stored = db.session.get(File, up.json["id"]).stored_name
    from app.services.files import storage_dir

    with app.app_context():
        path = storage_dir() / stored
    assert path.exists()
    assert client.delete(f"/api/v1/episodes/{eid}", headers=editor.headers).status_code == 204
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Job)) == 0
        assert db.session.scalar(select(func.count()).select_from(File)) == 0
    assert not path.exists()


def test_database_cascade_without_orm(app, client, editor, episode):
    """The foreign keys themselves cascade (a raw DELETE, no ORM relationship help)."""
    eid = episode["id"]
    client.post("/api/v1/jobs", headers=editor.headers, json={"type": "noop", "episode_id": eid})
    with app.app_context():
        db.session.execute(db.text("DELETE FROM episodes WHERE id = :id"), {"id": eid})
        db.session.commit()
        assert db.session.scalar(select(func.count()).select_from(Job)) == 0
