"""Account changes reach the activity log through the outbox, and only admins and the actor
see them (issue 14: registration and role changes recorded as activity)."""
from __future__ import annotations

from sqlalchemy import select

from app.extensions import db
from app.models import DomainEvent
from tests.test_realtime import connect, wait_events


def _user_rows(client, user) -> list[dict]:
    items = client.get("/api/v1/activity?resource_type=user", headers=user.headers).json["items"]
    return [i for i in items if i["resource_type"] == "user"]


def test_registration_is_in_the_team_feed_and_the_new_users_own_feed_only(client, admin, viewer):
    response = client.post("/api/v1/auth/register",
                           json={"email": "newcomer@example.com", "password": "password123",
                                 "name": "Newcomer"})
    assert response.status_code == 201, response.json
    new_id = response.json["user"]["id"]

    rows = _user_rows(client, admin)
    assert [(r["action"], r["resource_id"], r["user_id"], r["metadata"]["event"]) for r in rows] \
        == [("created", new_id, new_id, "user_registered")]
    login = client.post("/api/v1/auth/login",
                        json={"email": "newcomer@example.com", "password": "password123"})
    own = client.get("/api/v1/activity/me",
                     headers={"Authorization": f"Bearer {login.json['access_token']}"}).json
    assert [i["resource_id"] for i in own["items"]] == [new_id]
    # Nobody else: not in another user's feed or search, no history of a user resource.
    assert client.get("/api/v1/activity/me", headers=viewer.headers).json["items"] == []
    assert client.get("/api/v1/activity/search?q=Newcomer", headers=viewer.headers).json["items"] == []
    assert client.get(f"/api/v1/activity/user/{new_id}", headers=viewer.headers).status_code == 404


def test_role_change_and_deactivation_are_recorded_and_heard_by_admins_only(app, client, admin,
                                                                            viewer, factory):
    other = factory.user("viewer", name="Other Viewer")
    admin_socket = connect(app, client, admin, "/admin")
    feed_socket = connect(app, client, other, "/feed")

    assert client.patch(f"/api/v1/users/{viewer.id}", headers=admin.headers,
                        json={"role": "editor"}).status_code == 200
    assert client.patch(f"/api/v1/users/{viewer.id}", headers=admin.headers,
                        json={"is_active": False}).status_code == 200
    assert client.patch(f"/api/v1/users/{viewer.id}", headers=admin.headers,
                        json={"is_active": True}).status_code == 200

    rows = _user_rows(client, admin)
    assert [(r["metadata"]["event"], r["user_id"], r["changes"]) for r in reversed(rows)] == [
        ("user_role_changed", admin.id, {"role": {"before": "viewer", "after": "editor"}}),
        ("user_deactivated", admin.id, {"is_active": {"before": True, "after": False}}),
        ("user_reactivated", admin.id, {"is_active": {"before": False, "after": True}}),
    ]
    heard = wait_events(admin_socket, "/admin", "user_role_changed")
    assert [e["data"]["user_id"] for e in heard] == [viewer.id]
    assert [e["name"] for e in feed_socket.get_received("/feed")
            if e["name"].startswith("user_")] == []
    # The target is not the actor: the change is not in their own feed.
    assert client.get("/api/v1/activity/me", headers=viewer.headers).json["items"] == []
    with app.app_context():
        names = list(db.session.scalars(select(DomainEvent.name).where(
            DomainEvent.resource_type == "user").order_by(DomainEvent.id)))
    assert names == ["user_role_changed", "user_deactivated", "user_reactivated"]


def test_a_change_that_changes_nothing_records_nothing(app, client, admin, viewer):
    assert client.patch(f"/api/v1/users/{viewer.id}", headers=admin.headers,
                        json={"role": "viewer", "is_active": True}).status_code == 200
    assert _user_rows(client, admin) == []
