"""Notifications end to end in-process: the real pipeline (eager Celery), the real database,
Socket.IO test clients on /feed, and a real SMTP server (aiosmtpd) receiving the emails."""
from __future__ import annotations

import email
import io
import os
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select, update

from app.extensions import db, socketio
from app.models import DomainEvent, Notification, NotificationPreference, User, utcnow
from app.services import delivery, events
from app.services import notifications as service
from tests.conftest import _Config
from tests.processes import free_port

API = "/api/v1"
# With a Socket.IO message queue, emits arrive asynchronously: wait for them, and wait a
# while before concluding something did NOT arrive. Without one they are synchronous.
SETTLE = 1.5 if _Config.SOCKETIO_MESSAGE_QUEUE else 0.0


# ---- helpers -------------------------------------------------------------------------------


class Inbox:
    """A /feed Socket.IO client that keeps every event it receives."""

    def __init__(self, app, client, user):
        self.sio = socketio.test_client(app, namespace="/feed", flask_test_client=client,
                                        auth={"token": user.token})
        assert self.sio.is_connected("/feed")
        self.seen: list[dict] = []

    def events(self, name: str, *, count: int = 0, timeout: float = 5.0) -> list[dict]:
        """Payloads of ``name`` received so far; waits until ``count`` arrived (or SETTLE)."""
        deadline = time.monotonic() + (timeout if count else SETTLE)
        while True:
            self.seen += [e for e in self.sio.get_received("/feed")]
            got = [e["args"][0] for e in self.seen if e["name"] == name]
            if (count and len(got) >= count) or time.monotonic() >= deadline:
                return got
            time.sleep(0.05)


class SmtpSink:
    """aiosmtpd handler: keeps every message the server accepts."""

    def __init__(self):
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"

    def wait(self, count: int, timeout: float = 5.0) -> list[email.message.Message]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.messages


@pytest.fixture
def smtp(app):
    """A real SMTP server on a free local port; the app sends its mail there."""
    sink = SmtpSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    app.config.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=port, MAIL_FROM="ec@example.com")
    yield sink
    controller.stop()


def rows(app, *conditions) -> list[Notification]:
    with app.app_context():
        found = list(db.session.scalars(select(Notification).where(*conditions)
                                        .order_by(Notification.id)))
        db.session.expunge_all()
        return found


def send(client, admin, **body):
    body.setdefault("title", "Hello")
    r = client.post(f"{API}/notifications", headers=admin.headers, json=body)
    assert r.status_code == 202, r.json
    return r.json


def badge(client, headers) -> dict:
    return client.get(f"{API}/notifications/unread-count", headers=headers).json


def set_prefs(client, user, **prefs):
    r = client.put(f"{API}/notifications/preferences", headers=user.headers, json=prefs)
    assert r.status_code == 200, r.json
    return r.json


def quiet_now(tz: str = "Europe/Paris") -> dict:
    """Quiet hours covering the present moment in ``tz`` (start an hour ago, end in an hour)."""
    local = datetime.now(ZoneInfo(tz))
    start, end = local - timedelta(hours=1), local + timedelta(hours=1)
    return {"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")}


# ---- rules through the pipeline ---------------------------------------------------------------


def test_published_episode_notifies_admins_and_owner_not_the_actor(app, client, factory, editor,
                                                                    viewer, episode):
    first_admin = factory.user("admin", name="Ada Admin")
    second_admin = factory.user("admin", name="Alan Admin")
    feed = Inbox(app, client, editor)
    r = client.post(f"{API}/episodes/{episode['id']}/publish", headers=first_admin.headers)
    assert r.status_code == 200
    published = rows(app, Notification.type == "episode:published")
    assert {n.user_id for n in published} == {second_admin.id, editor.id}
    assert first_admin.id not in {n.user_id for n in published}  # the actor
    assert viewer.id not in {n.user_id for n in published}
    mine = next(n for n in published if n.user_id == editor.id)
    assert mine.title == "Episode published: Pilot"
    assert mine.message == 'Ada Admin published "Pilot".'
    assert mine.data["episode_id"] == episode["id"] and mine.priority == "normal"
    assert mine.expires_at is not None and mine.delivered_at is not None
    pushed = feed.events("notification", count=1)
    assert len(pushed) == 1
    envelope = pushed[0]
    assert envelope["event"] == "notification" and envelope["actor"]["id"] == first_admin.id
    # The push is an outbox event of its own (replayable): its id follows the source event's,
    # which the notification names.
    assert envelope["data"]["event_id"] == mine.event_id and envelope["id"] > mine.event_id
    # The push carries the notification exactly as GET /notifications/<id> returns it.
    got = client.get(f"{API}/notifications/{mine.id}", headers=editor.headers).json
    assert envelope["data"] == got


def test_created_episode_notifies_admins_but_not_its_creator(app, client, admin, editor, episode):
    created = rows(app, Notification.type == "episode:created")
    assert [n.user_id for n in created] == [admin.id]


def test_approval_needed_when_an_editor_asks_for_review(app, client, factory, admin, editor, episode):
    r = client.patch(f"{API}/episodes/{episode['id']}", headers=editor.headers,
                     json={"status": "in_review"})
    assert r.status_code == 200
    approvals = rows(app, Notification.type == "approval:needed")
    assert [(n.user_id, n.priority) for n in approvals] == [(admin.id, "high")]
    assert approvals[0].message == 'Eddie Editor asks to publish "Pilot".'


def test_mentions_in_a_description_notify_the_mentioned_user(app, client, admin, editor, viewer):
    r = client.post(f"{API}/episodes", headers=editor.headers,
                    json={"title": "Talk", "episode_number": 2,
                          "description": "Thanks @VeraViewer and @nobody, also @EddieEditor."})
    eid = r.json["id"]
    mention = rows(app, Notification.type == "user:mention")
    assert [n.user_id for n in mention] == [viewer.id]  # not the author mentioning themself
    assert mention[0].title == "Eddie Editor mentioned you"
    # Editing the description: only the mentions the change added notify.
    local_part = admin.email.split("@")[0]
    client.patch(f"{API}/episodes/{eid}", headers=editor.headers,
                 json={"description": f"Thanks @veraviewer, and @{local_part}."})
    mention = rows(app, Notification.type == "user:mention")
    assert sorted(n.user_id for n in mention) == sorted([viewer.id, admin.id])


def test_file_ready_notifies_the_episode_owner(app, client, factory, editor, episode):
    other = factory.user("editor", name="Olga Other")
    client.post(f"{API}/episodes/{episode['id']}/files", headers=editor.headers,
                data={"file": (io.BytesIO(b"own"), "own.txt")}, content_type="multipart/form-data")
    assert rows(app, Notification.type == "file:ready") == []  # the owner's own upload
    client.post(f"{API}/episodes/{episode['id']}/files", headers=other.headers,
                data={"file": (io.BytesIO(b"x"), "cut.mp4")}, content_type="multipart/form-data")
    ready = rows(app, Notification.type == "file:ready")
    assert [(n.user_id, n.title) for n in ready] == [(editor.id, "File ready: cut.mp4")]


def test_export_result_notifies_the_owner_even_when_they_asked(app, editor, episode):
    from app.services import files

    with app.app_context():
        owner = db.session.get(User, editor.id)
        files.store_file(owner, episode["id"], io.BytesIO(b"zip"), "pilot-export.zip",
                         "application/zip", extra_payload={"source": "export", "job_id": 7})
    ready = rows(app, Notification.type == "file:ready")
    assert [(n.user_id, n.data.get("source"), n.data.get("job_id")) for n in ready] == [
        (editor.id, "export", 7)]


def _record_job_event(app, name: str, creator_id: int, episode_id: int, **extra) -> None:
    """A job event as the jobs worker records it (payload keys agreed with workers/jobs.py)."""
    with app.app_context():
        events.record(name, action=name.removeprefix("job_"), actor=None, resource_type="job",
                      resource_id=41, resource_name="export #41",
                      payload={"job_id": 41, "episode_id": episode_id, "type": "export",
                               "created_by": creator_id, **extra})
        db.session.commit()


def test_job_failure_is_high_priority_and_emailed_to_its_creator(app, client, smtp, editor, episode):
    _record_job_event(app, "job_failed", editor.id, episode["id"], error="disk full",
                      retries_exhausted=True)
    failed = rows(app, Notification.type == "job:failed")
    assert [(n.user_id, n.priority) for n in failed] == [(editor.id, "high")]
    assert failed[0].message == 'Your export job for "Pilot" failed: disk full'
    messages = smtp.wait(1)
    assert len(messages) == 1  # job:failed goes to in_app and email by default
    assert messages[0]["To"] == editor.email
    assert messages[0]["Subject"] == "[Episode Control] Job failed: export #41"
    assert "disk full" in messages[0].get_payload()


def test_email_channel_can_be_turned_off(app, client, smtp, editor, episode):
    set_prefs(client, editor, channels={"job:failed": ["in_app"]})
    _record_job_event(app, "job_failed", editor.id, episode["id"], error="x")
    assert len(rows(app, Notification.type == "job:failed")) == 1
    time.sleep(0.3)
    assert smtp.messages == []


# ---- preferences --------------------------------------------------------------------------------


def test_a_muted_type_is_not_delivered(app, client, factory, editor, episode):
    admin = factory.user("admin", name="Ada Admin")
    assert set_prefs(client, editor, muted_types=["episode:published"])["muted_types"] == [
        "episode:published"]
    feed = Inbox(app, client, editor)
    client.post(f"{API}/episodes/{episode['id']}/publish", headers=admin.headers)
    assert rows(app, Notification.user_id == editor.id) == []
    assert feed.events("notification") == []
    assert badge(client, editor.headers) == {"count": 0, "capped": False}


def test_quiet_hours_store_without_pushing_and_the_digest_lists_it(app, client, smtp, admin, editor):
    set_prefs(client, editor, quiet_hours=quiet_now("Europe/Paris"), timezone="Europe/Paris",
              digest_frequency="hourly")
    feed = Inbox(app, client, editor)
    send(client, admin, user_ids=[editor.id], type="user:mention", title="Quiet please")
    [stored] = rows(app, Notification.user_id == editor.id)
    assert stored.digest_pending and stored.delivered_at is not None
    assert feed.events("notification") == []  # not pushed ...
    assert smtp.messages == []  # ... and not emailed, although user:mention emails by default
    listed = client.get(f"{API}/notifications", headers=editor.headers).json["items"]
    assert [n["title"] for n in listed] == ["Quiet please"]  # but stored in the inbox
    # Critical still goes through quiet hours.
    send(client, admin, user_ids=[editor.id], title="Fire", priority="critical")
    assert [e["data"]["title"] for e in feed.events("notification", count=1)] == ["Fire"]
    # The next digest lists what was held back, then clears it.
    with app.app_context():
        assert service.send_digests() == 1
    [digest] = smtp.wait(2)[-1:]
    assert digest["To"] == editor.email and "digest" in digest["Subject"]
    assert "Quiet please" in digest.get_payload() and "Fire" not in digest.get_payload()
    assert not rows(app, Notification.id == stored.id)[0].digest_pending
    with app.app_context():
        pref = db.session.scalar(select(NotificationPreference))
        assert pref.last_digest_at is not None
        assert service.send_digests() == 0  # nothing pending, and the hour has not passed


def test_digest_waits_for_the_users_period(app, client, smtp, admin, editor):
    set_prefs(client, editor, quiet_hours=quiet_now("UTC"), digest_frequency="daily")
    send(client, admin, user_ids=[editor.id], title="One")
    with app.app_context():
        assert service.send_digests() == 1
    send(client, admin, user_ids=[editor.id], title="Two")
    with app.app_context():
        assert service.send_digests() == 0  # a day has not passed
        later = utcnow() + timedelta(days=1, minutes=1)
        assert service.send_digests(now=later) == 1
    assert "Two" in smtp.wait(2)[-1].get_payload()


def test_preferences_defaults_and_round_trip(client, editor):
    got = client.get(f"{API}/notifications/preferences", headers=editor.headers).json
    assert got["muted_types"] == [] and got["quiet_hours"] is None
    assert got["digest_frequency"] == "none" and got["timezone"] == "UTC"
    assert got["channels"]["job:failed"] == ["in_app", "email"]
    assert got["channels"]["episode:created"] == ["in_app"]
    put = set_prefs(client, editor, quiet_hours={"start": "22:00", "end": "07:00"},
                    timezone="America/New_York", digest_frequency="weekly",
                    channels={"episode:created": ["email", "in_app"]})
    assert put["quiet_hours"] == {"start": "22:00", "end": "07:00"}
    assert put["channels"]["episode:created"] == ["in_app", "email"]
    assert put["channels"]["job:failed"] == ["in_app", "email"]  # untouched
    again = client.get(f"{API}/notifications/preferences", headers=editor.headers).json
    assert again == put
    cleared = set_prefs(client, editor, quiet_hours=None)
    assert cleared["quiet_hours"] is None and cleared["digest_frequency"] == "weekly"


@pytest.mark.parametrize("body,field", [
    ({"timezone": "Mars/Olympus"}, "timezone"),
    ({"timezone": "../../etc/passwd"}, "timezone"),
    ({"quiet_hours": {"start": "25:00", "end": "07:00"}}, "quiet_hours"),
    ({"quiet_hours": {"start": "22:00"}}, "quiet_hours"),
    ({"quiet_hours": {"start": "07:00", "end": "07:00"}}, "quiet_hours"),
    ({"muted_types": ["job:exploded"]}, "muted_types"),
    ({"channels": {"job:failed": ["pigeon"]}}, "channels"),
    ({"channels": {"nope": ["email"]}}, "channels"),
    ({"digest_frequency": "monthly"}, "digest_frequency"),
    ({"muted_types": "job:failed"}, "muted_types"),
])
def test_bad_preferences_are_422_naming_the_field(client, editor, body, field):
    r = client.put(f"{API}/notifications/preferences", headers=editor.headers, json=body)
    assert r.status_code == 422, r.json
    assert field in r.json["error"]["details"]


# ---- rate limit --------------------------------------------------------------------------------------


def test_the_51st_in_an_hour_goes_to_the_digest_but_critical_still_arrives(app, client, admin, editor):
    assert app.config["NOTIFICATION_RATE_LIMIT_PER_HOUR"] == 50
    set_prefs(client, editor, digest_frequency="hourly")
    feed = Inbox(app, client, editor)
    for n in range(51):
        send(client, admin, user_ids=[editor.id], title=f"n{n}", type="episode:updated")
    pushed = feed.events("notification", count=50)
    assert [e["data"]["title"] for e in pushed] == [f"n{n}" for n in range(50)]
    held = rows(app, Notification.digest_pending.is_(True))
    assert [n.title for n in held] == ["n50"]
    send(client, admin, user_ids=[editor.id], title="critical", priority="critical")
    assert feed.events("notification", count=51)[-1]["data"]["title"] == "critical"
    assert feed.events("notification")[-1]["data"]["title"] == "critical"  # n50 never pushed
    # Another user has a budget of their own.
    other_feed = Inbox(app, client, admin)
    send(client, admin, user_ids=[admin.id], title="mine")
    assert [e["data"]["title"] for e in other_feed.events("notification", count=1)] == ["mine"]


# ---- the inbox ---------------------------------------------------------------------------------------


def test_list_filters_pagination_count_and_stats(app, client, admin, editor):
    for n in range(3):
        send(client, admin, user_ids=[editor.id], title=f"normal {n}", type="episode:updated")
    send(client, admin, user_ids=[editor.id], title="urgent", priority="high", type="job:failed")
    h = editor.headers
    page1 = client.get(f"{API}/notifications?limit=2", headers=h).json
    assert [n["title"] for n in page1["items"]] == ["urgent", "normal 2"]
    page2 = client.get(f"{API}/notifications?limit=2&cursor={page1['next_cursor']}", headers=h).json
    assert [n["title"] for n in page2["items"]] == ["normal 1", "normal 0"]
    assert page2["next_cursor"] is None
    assert [n["title"] for n in client.get(f"{API}/notifications?priority=high", headers=h)
            .json["items"]] == ["urgent"]
    assert len(client.get(f"{API}/notifications?type=episode:updated", headers=h).json["items"]) == 3
    first = page1["items"][0]
    assert set(first) >= {"id", "type", "title", "message", "data", "priority", "read", "read_at",
                          "created_at", "expires_at"}
    r = client.post(f"{API}/notifications/{first['id']}/read", headers=h)
    assert r.status_code == 200 and r.json["read"] is True and r.json["read_at"]
    unread = client.get(f"{API}/notifications?unread=true", headers=h).json["items"]
    assert [n["title"] for n in unread] == ["normal 2", "normal 1", "normal 0"]
    assert badge(client, h) == {"count": 3, "capped": False}
    stats = client.get(f"{API}/notifications/stats", headers=h).json
    assert stats["total"] == 4 and stats["unread"] == 3
    assert stats["by_type"] == {"episode:updated": {"total": 3, "unread": 3},
                                "job:failed": {"total": 1, "unread": 0}}
    assert stats["by_priority"] == {"high": {"total": 1, "unread": 0},
                                    "normal": {"total": 3, "unread": 3}}
    assert stats["by_read_state"] == {"read": 1, "unread": 3}
    assert client.delete(f"{API}/notifications/{first['id']}", headers=h).status_code == 204
    assert client.get(f"{API}/notifications/{first['id']}", headers=h).status_code == 404


@pytest.mark.parametrize("query,field", [
    ("priority=urgent", "priority"), ("type=nope", "type"), ("limit=0", "limit"),
    ("unread=maybe", "unread"), ("cursor=!!!", "cursor"),
])
def test_bad_list_filters_are_422(client, editor, query, field):
    r = client.get(f"{API}/notifications?{query}", headers=editor.headers)
    assert r.status_code == 422 and field in r.json["error"]["details"], r.json


def test_mark_all_read_updates_the_count_and_tells_every_tab(app, client, admin, editor):
    for n in range(3):
        send(client, admin, user_ids=[editor.id], title=f"n{n}")
    send(client, admin, user_ids=[admin.id], title="not editor's")
    h = editor.headers
    assert badge(client, h) == {"count": 3, "capped": False}
    tab_one, tab_two = Inbox(app, client, editor), Inbox(app, client, editor)
    first = client.get(f"{API}/notifications", headers=h).json["items"][-1]["id"]
    client.post(f"{API}/notifications/{first}/read", headers=h)
    [one] = tab_one.events("notification_read", count=1)
    assert one["event"] == "notification_read"
    assert one["data"] == {"ids": [first], "unread_count": 2, "unread_capped": False}
    r = client.post(f"{API}/notifications/read-all", headers=h)
    assert r.status_code == 200
    assert r.json == {"updated": 2, "unread_count": 0, "unread_capped": False}
    assert badge(client, h) == {"count": 0, "capped": False}
    for tab in (tab_one, tab_two):
        reads = tab.events("notification_read", count=2)
        assert reads[-1]["data"] == {"all": True, "unread_count": 0, "unread_capped": False}
    # The admin's own notification is untouched.
    assert badge(client, admin.headers) == {"count": 1, "capped": False}
    # Nothing left unread: no statement changes anything, nothing is emitted.
    assert client.post(f"{API}/notifications/read-all", headers=h).json["updated"] == 0
    assert len(tab_one.events("notification_read")) == 2


def test_users_only_ever_reach_their_own_notifications(app, client, admin, editor, viewer):
    send(client, admin, user_ids=[editor.id], title="for the editor")
    [theirs] = rows(app, Notification.user_id == editor.id)
    for method, path in (("get", f"/notifications/{theirs.id}"),
                         ("post", f"/notifications/{theirs.id}/read"),
                         ("delete", f"/notifications/{theirs.id}")):
        r = getattr(client, method)(API + path, headers=viewer.headers)
        assert r.status_code == 404 and r.json["error"]["code"] == "not_found"
    assert client.get(f"{API}/notifications", headers=viewer.headers).json["items"] == []
    assert badge(client, viewer.headers) == {"count": 0, "capped": False}
    assert client.post(f"{API}/notifications/read-all", headers=viewer.headers).json["updated"] == 0
    assert rows(app, Notification.id == theirs.id)[0].read_at is None  # still unread
    assert client.get(f"{API}/notifications/99999", headers=viewer.headers).status_code == 404
    assert client.get(f"{API}/notifications/{2**70}", headers=viewer.headers).status_code == 404
    assert client.get(f"{API}/notifications").status_code == 401


# ---- admin sends, scheduling, expiry -----------------------------------------------------------------


def test_admin_sends_to_ids_a_role_or_everyone(app, client, factory, admin, editor, viewer):
    other_viewer = factory.user("viewer")
    r = send(client, admin, role="viewer", title="Viewers", priority="high",
             data={"link": "/help"})
    assert r["recipients"] == 2 and r["status"] == "queued"
    viewers = rows(app, Notification.title == "Viewers")
    assert sorted(n.user_id for n in viewers) == sorted([viewer.id, other_viewer.id])
    assert viewers[0].data["link"] == "/help" and viewers[0].priority == "high"
    assert viewers[0].data["sent_by"] == admin.id
    send(client, admin, **{"all": True, "title": "Everyone"})
    assert len(rows(app, Notification.title == "Everyone")) == 4
    send(client, admin, user_ids=[editor.id, viewer.id], title="Two")
    assert len(rows(app, Notification.title == "Two")) == 2
    # The send is in the activity log like every admin action.
    assert client.get(f"{API}/activity/me", headers=admin.headers).json["items"][0][
        "resource_type"] == "notification"


@pytest.mark.parametrize("body,fields", [
    ({"title": "x"}, {"user_ids", "role", "all"}),
    ({"title": "x", "role": "viewer", "all": True}, {"user_ids", "role", "all"}),
    ({"title": "x", "user_ids": []}, {"user_ids"}),
    ({"title": "x", "user_ids": [424242]}, {"user_ids"}),
    ({"title": "x", "user_ids": [2**40]}, {"user_ids"}),
    ({"title": "x", "user_ids": [True]}, {"user_ids"}),
    ({"title": "x", "role": "king"}, {"role"}),
    ({"all": True}, {"title"}),
    ({"all": True, "title": "x", "priority": "urgent"}, {"priority"}),
    ({"all": True, "title": "x", "type": "nope"}, {"type"}),
    ({"all": True, "title": "x", "deliver_at": "tomorrow"}, {"deliver_at"}),
    ({"all": True, "title": "x", "expires_at": "2000-01-01T00:00:00Z"}, {"expires_at"}),
    ({"all": True, "title": "x", "data": "str"}, {"data"}),
    ({"all": True, "title": "x", "data": {"big": "y" * 20_000}}, {"data"}),
])
def test_bad_sends_are_422_naming_the_fields(client, admin, body, fields):
    r = client.post(f"{API}/notifications", headers=admin.headers, json=body)
    assert r.status_code == 422, r.json
    assert fields <= set(r.json["error"]["details"]), r.json


def test_only_admins_send(client, editor):
    r = client.post(f"{API}/notifications", headers=editor.headers, json={"all": True, "title": "x"})
    assert r.status_code == 403


def test_a_scheduled_notification_arrives_at_deliver_at_not_before(app, client, admin, editor):
    feed = Inbox(app, client, editor)
    deliver_at = utcnow() + timedelta(seconds=2)
    r = send(client, admin, user_ids=[editor.id], title="Later",
             deliver_at=deliver_at.isoformat())
    assert r["status"] == "scheduled"
    [row] = rows(app, Notification.user_id == editor.id)
    h = editor.headers
    # Before deliver_at: stored, but not visible, not counted, not pushed.
    with app.app_context():
        assert service.deliver_due() == 0
    assert client.get(f"{API}/notifications", headers=h).json["items"] == []
    assert badge(client, h) == {"count": 0, "capped": False}
    assert client.get(f"{API}/notifications/{row.id}", headers=h).status_code == 404
    assert feed.events("notification") == []
    # At deliver_at the beat task pushes it.
    time.sleep(max(0.0, (deliver_at - utcnow()).total_seconds()) + 0.05)
    from workers.notifications import deliver_scheduled

    deliver_scheduled.apply()
    pushed = feed.events("notification", count=1)
    assert [e["data"]["title"] for e in pushed] == ["Later"]
    assert badge(client, h) == {"count": 1, "capped": False}
    with app.app_context():
        assert service.deliver_due() == 0  # delivered once
    assert len(feed.events("notification")) == 1


def test_expired_notifications_are_hidden_then_swept_in_batches(app, client, admin, editor):
    for n in range(5):
        send(client, admin, user_ids=[editor.id], title=f"n{n}",
             expires_at=(utcnow() + timedelta(hours=1)).isoformat())
    keep = send(client, admin, user_ids=[editor.id], title="keep")
    assert keep["recipients"] == 1
    with app.app_context():
        db.session.execute(update(Notification).where(Notification.title != "keep")
                           .values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    listed = client.get(f"{API}/notifications", headers=editor.headers).json["items"]
    assert [n["title"] for n in listed] == ["keep"]  # expired ones are not listed
    assert badge(client, editor.headers) == {"count": 1, "capped": False}
    with app.app_context():
        assert service.delete_expired(batch=2) == 5
    assert [n.title for n in rows(app)] == ["keep"]
    from workers.notifications import delete_expired

    assert delete_expired.apply().get() == 0


def test_read_notifications_past_retention_are_deleted(app, client, admin, editor):
    for n in range(3):
        send(client, admin, user_ids=[editor.id], title=f"n{n}")
    with app.app_context():
        db.session.execute(update(Notification).where(Notification.title == "n0")
                           .values(read_at=utcnow() - timedelta(days=31)))
        db.session.execute(update(Notification).where(Notification.title == "n1")
                           .values(read_at=utcnow() - timedelta(days=29)))
        db.session.commit()
        assert service.delete_old_read() == 1  # NOTIFICATION_RETENTION_DAYS = 30
    assert sorted(n.title for n in rows(app)) == ["n1", "n2"]


# ---- delivery guarantees ---------------------------------------------------------------------------


def test_redelivering_an_event_creates_no_duplicate(app, client, admin, editor, episode):
    feed = Inbox(app, client, editor)
    client.post(f"{API}/episodes/{episode['id']}/publish", headers=admin.headers)
    assert len(feed.events("notification", count=1)) == 1
    before = [(n.id, n.user_id) for n in rows(app)]
    with app.app_context():
        event_id = db.session.scalar(select(DomainEvent.id).where(DomainEvent.name == "episode_published"))
        assert delivery.deliver_event(event_id) is False  # already delivered: nothing happens
        db.session.execute(update(DomainEvent).where(DomainEvent.id == event_id)
                           .values(delivered_at=None))
        db.session.commit()
        assert delivery.deliver_event(event_id) is True  # delivered again: no crash ...
        assert delivery.deliver_event(event_id) is False
    assert [(n.id, n.user_id) for n in rows(app)] == before  # ... and no duplicate row
    assert len(feed.events("notification")) == 1  # nor a second push


def test_rows_are_created_in_the_delivery_transaction(app, client, admin, editor, episode):
    """A failing later step rolls the notification rows back with everything else."""
    broken = ("broken", lambda event: 1 / 0)
    delivery.IN_TRANSACTION_STEPS.append(broken)
    try:
        client.post(f"{API}/episodes/{episode['id']}/publish", headers=admin.headers)
    finally:
        delivery.IN_TRANSACTION_STEPS.remove(broken)
    assert rows(app, Notification.type == "episode:published") == []
    with app.app_context():
        event_id = db.session.scalar(select(DomainEvent.id).where(DomainEvent.name == "episode_published"))
        db.session.execute(update(DomainEvent).values(next_attempt_at=None))
        db.session.commit()
        assert delivery.deliver_event(event_id) is True
    assert [n.user_id for n in rows(app, Notification.type == "episode:published")] == [editor.id]


def test_a_stuck_event_alerts_every_admin_with_a_critical_notification(app, client, factory, admin,
                                                                       editor):
    second = factory.user("admin", name="Second Admin")
    feed = Inbox(app, client, admin)
    # Quiet hours do not hold back critical notifications.
    set_prefs(client, admin, quiet_hours=quiet_now("UTC"), muted_types=["admin:alert"])
    with app.app_context():
        delivery.raise_alert(99, "episode_created", 5, "boom")
    alerts = rows(app, Notification.type == "admin:alert")
    assert sorted(n.user_id for n in alerts) == sorted([admin.id, second.id])
    assert all(n.priority == "critical" for n in alerts)
    assert alerts[0].data["event_id"] == 99
    [pushed] = feed.events("notification", count=1)
    assert pushed["data"]["type"] == "admin:alert"
    assert "still undelivered after 5 attempts" in pushed["data"]["message"]


def test_email_is_off_without_mail_server(app, client, admin, editor):
    assert app.config["MAIL_SERVER"] is None
    send(client, admin, user_ids=[editor.id], type="approval:needed", title="x")
    with app.app_context():
        assert service.send_digests() == 0
    assert len(rows(app)) == 1


def test_rate_count_falls_back_to_the_database(app, client, admin, editor):
    """The rate-limit count falls back to the database when Redis is not configured."""
    send(client, admin, user_ids=[editor.id], title="a")
    send(client, admin, user_ids=[editor.id], title="b")
    with app.app_context():
        ids = [(n.id, n.user_id) for n in db.session.scalars(select(Notification).order_by(Notification.id))]
        if app.config.get("REDIS_URL"):
            app.config["REDIS_URL"] = None  # the fallback path, on this database
            try:
                positions = service.rate_positions(ids, utcnow())
            finally:
                app.config["REDIS_URL"] = os.environ["REDIS_URL"]
        else:
            positions = service.rate_positions(ids, utcnow())
        assert [positions[i] for i, _ in ids] == [1, 2]
        total = db.session.scalar(select(func.count()).select_from(Notification))
        assert total == 2


@pytest.mark.redis
def test_redis_positions_are_shared_between_apps_and_stable_on_redispatch(app, editor):
    """Positions come from one Redis sorted set; a re-dispatched row keeps its place.

    (The cross-process case with real worker processes is in test_notifications_e2e.py.)
    """
    from tests.conftest import make_test_app

    now = datetime.now(UTC)
    with app.app_context():
        first = service.rate_positions([(1, editor.id), (2, editor.id)], now)
    with make_test_app().app_context():
        second = service.rate_positions([(3, editor.id), (2, editor.id)], now + timedelta(seconds=1))
    assert first == {1: 1, 2: 2} and second == {3: 3, 2: 2}


def test_a_large_fan_out_is_pushed_in_ranges(app, client, factory, admin):
    app.config["NOTIFICATION_DISPATCH_BATCH"] = 2
    users = [factory.user("viewer") for _ in range(5)]
    feeds = [Inbox(app, client, user) for user in users]
    send(client, admin, role="viewer", title="To all viewers")
    for feed in feeds:
        assert [e["data"]["title"] for e in feed.events("notification", count=1)] == ["To all viewers"]
    assert all(n.delivered_at is not None for n in rows(app))
    assert len(rows(app)) == 5


def test_the_sweep_pushes_what_no_delivery_pushed(app, client, admin, editor):
    """An after-commit push that failed (say Redis was away) is caught up by the beat task."""
    feed = Inbox(app, client, editor)
    original = delivery.AFTER_COMMIT_STEPS[:]
    delivery.AFTER_COMMIT_STEPS[:] = [("broken", lambda events: 1 / 0)]
    try:
        send(client, admin, user_ids=[editor.id], title="Missed")
    finally:
        delivery.AFTER_COMMIT_STEPS[:] = original
    [row] = rows(app)
    assert row.delivered_at is None and feed.events("notification") == []
    with app.app_context():
        assert service.deliver_due() == 0  # within the grace period: its push may be on the way
        later = utcnow() + timedelta(seconds=app.config["NOTIFICATION_PUSH_GRACE_SECONDS"] + 1)
        assert service.deliver_due(now=later) == 1
    assert [e["data"]["title"] for e in feed.events("notification", count=1)] == ["Missed"]


def test_the_badge_is_exact_up_to_its_cap(app, client, admin, editor):
    for n in range(3):
        send(client, admin, user_ids=[editor.id], title=f"n{n}")
    app.config["NOTIFICATION_UNREAD_COUNT_CAP"] = 3
    assert badge(client, editor.headers) == {"count": 3, "capped": False}
    app.config["NOTIFICATION_UNREAD_COUNT_CAP"] = 2
    assert badge(client, editor.headers) == {"count": 2, "capped": True}
    assert client.get(f"{API}/notifications/stats", headers=editor.headers).json["unread"] == 3


def test_deleting_an_unread_notification_updates_every_tab(app, client, admin, editor):
    send(client, admin, user_ids=[editor.id], title="gone")
    [row] = rows(app)
    tab = Inbox(app, client, editor)
    assert client.delete(f"{API}/notifications/{row.id}", headers=editor.headers).status_code == 204
    [event] = tab.events("notification_read", count=1)
    assert event["data"] == {"ids": [row.id], "deleted": True, "unread_count": 0,
                             "unread_capped": False}


def test_tasks_are_registered_and_scheduled(app):
    from app.tasks import BEAT_SCHEDULE

    celery = app.extensions["celery"]
    assert "workers.notifications" in celery.conf.include
    scheduled = {entry["task"] for entry in BEAT_SCHEDULE.values()}
    for name in ("deliver_scheduled", "send_digests", "delete_expired", "delete_old_read"):
        assert f"workers.notifications.{name}" in scheduled
        assert f"workers.notifications.{name}" in celery.tasks


def test_the_digest_task_mails_through_the_smtp_server(app, client, smtp, admin, editor):
    from workers.notifications import send_digests

    set_prefs(client, editor, quiet_hours=quiet_now("Asia/Tokyo"), timezone="Asia/Tokyo",
              digest_frequency="weekly")
    send(client, admin, user_ids=[editor.id], title="While you slept", type="episode:updated")
    send_digests.apply()
    [message] = smtp.wait(1)
    assert message["To"] == editor.email and "While you slept" in message.get_payload()


def test_a_read_notification_is_left_out_of_the_digest(app, client, smtp, admin, editor):
    set_prefs(client, editor, quiet_hours=quiet_now("UTC"), digest_frequency="hourly")
    send(client, admin, user_ids=[editor.id], title="Seen already")
    [row] = rows(app)
    client.post(f"{API}/notifications/{row.id}/read", headers=editor.headers)
    with app.app_context():
        assert service.send_digests() == 0
    assert not rows(app)[0].digest_pending  # cleared all the same
    assert smtp.messages == []
    with app.app_context():  # no digest went out, so the period has not started
        assert db.session.scalar(select(NotificationPreference.last_digest_at)) is None


def test_smtp_down_keeps_the_digest_for_next_time(app, client, admin, editor):
    app.config.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=free_port())  # nothing listens there
    set_prefs(client, editor, quiet_hours=quiet_now("UTC"), digest_frequency="hourly")
    send(client, admin, user_ids=[editor.id], title="Keep me", type="episode:updated")
    with app.app_context():
        with pytest.raises(OSError):
            service.send_digests()
        assert db.session.scalar(select(NotificationPreference.last_digest_at)) is None
    assert rows(app)[0].digest_pending  # still waiting for the next digest


def test_a_batch_with_a_broadcast_in_it_keeps_notification_ids_in_event_order(app, editor,
                                                                              episode):
    """Rule rows are inserted per batch, broadcasts on their own: the rows of one delivery
    batch still get ids in the order of their events (pushes go out in id order)."""
    job = {"job_id": 41, "episode_id": episode["id"], "type": "export", "created_by": editor.id}
    with app.app_context():
        events.record("job_created", action="created", actor=None, resource_type="job",
                      resource_id=41, payload=job)
        events.record(service.BROADCAST_EVENT, action="created", actor=None,
                      resource_type="notification", resource_id=None,
                      payload={"user_ids": [editor.id], "type": "admin:alert", "title": "Heads up",
                               "message": "", "data": {}, "priority": "normal",
                               "deliver_at": None, "expires_at": None, "recipients": 1})
        events.record("job_completed", action="completed", actor=None, resource_type="job",
                      resource_id=41, payload={**job, "results": {}})
        db.session.commit()  # one commit: the three are delivered as one batch
    mine = rows(app, Notification.user_id == editor.id)
    assert [n.type for n in sorted(mine, key=lambda n: n.id)] == [
        "job:created", "admin:alert", "job:completed"]
    assert [n.event_id for n in sorted(mine, key=lambda n: n.id)] == sorted(n.event_id for n in mine)
