"""Activity API: feeds, filters, pagination, history, timeline, search, stats, retention."""
from __future__ import annotations

import random
from datetime import timedelta

from sqlalchemy import func, select, update

from app.extensions import db
from app.models import ActivityLog, utcnow
from app.services import activity


def _make(client, user, title, n=1):
    return client.post("/api/v1/episodes", headers=user.headers,
                       json={"title": title, "episode_number": n}).json


def test_my_feed_and_team_feed(client, admin, editor, factory, viewer):
    other = factory.user("editor", name="Olga Other")
    _make(client, editor, "Mine")
    _make(client, other, "Theirs")
    mine = client.get("/api/v1/activity/me", headers=editor.headers).json["items"]
    assert [a["resource_name"] for a in mine] == ["Mine"]
    assert mine[0]["user"] == {"id": editor.id, "name": editor.name}
    assert client.get("/api/v1/activity", headers=viewer.headers).status_code == 403
    team = client.get("/api/v1/activity", headers=admin.headers).json["items"]
    assert [a["resource_name"] for a in team] == ["Theirs", "Mine"]
    only = client.get(f"/api/v1/activity?user_id={other.id}", headers=admin.headers).json["items"]
    assert [a["resource_name"] for a in only] == ["Theirs"]


def test_filters_and_pagination(client, admin, editor):
    ep = _make(client, editor, "Filtered")
    for n in range(4):
        client.patch(f"/api/v1/episodes/{ep['id']}", headers=editor.headers, json={"season": n + 1})
    updated = client.get("/api/v1/activity?action=updated&limit=3", headers=admin.headers).json
    assert len(updated["items"]) == 3 and updated["next_cursor"]
    rest = client.get(f"/api/v1/activity?action=updated&limit=3&cursor={updated['next_cursor']}",
                      headers=admin.headers).json
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None
    assert client.get("/api/v1/activity?resource_type=file", headers=admin.headers).json["items"] == []
    future = (utcnow() + timedelta(days=1)).isoformat()
    assert client.get("/api/v1/activity", headers=admin.headers,
                      query_string={"since": future}).json["items"] == []
    assert client.get("/api/v1/activity?action=danced", headers=admin.headers).status_code == 422
    assert client.get("/api/v1/activity?since=yesterday", headers=admin.headers).status_code == 422


def test_history_and_timeline(client, editor, viewer):
    ep = _make(client, editor, "Timeline")
    client.patch(f"/api/v1/episodes/{ep['id']}", headers=editor.headers, json={"title": "Timeline 2"})
    client.post(f"/api/v1/episodes/{ep['id']}/publish", headers=editor.headers)
    history = client.get(f"/api/v1/activity/episode/{ep['id']}", headers=viewer.headers).json["items"]
    assert [h["action"] for h in history] == ["published", "updated", "created"]
    timeline = client.get(f"/api/v1/activity/episode/{ep['id']}/timeline",
                          headers=viewer.headers).json["items"]
    assert [t["action"] for t in timeline] == ["created", "updated", "published"]
    assert timeline[1]["changes"] == {"title": {"before": "Timeline", "after": "Timeline 2"}}
    assert client.get("/api/v1/activity/episode/999", headers=viewer.headers).status_code == 404
    assert client.get("/api/v1/activity/spaceship/1", headers=viewer.headers).status_code == 404


def test_search_finds_activity_by_a_word_of_the_title(client, admin, editor, viewer):
    _make(client, editor, "Midnight Lighthouse Keepers")
    _make(client, editor, "Morning Show")
    found = client.get("/api/v1/activity/search?q=lighthouse", headers=admin.headers).json["items"]
    assert [f["resource_name"] for f in found] == ["Midnight Lighthouse Keepers"]
    assert client.get("/api/v1/activity/search?q=submarine", headers=admin.headers).json["items"] == []
    # Non-admins search their own actions only.
    assert client.get("/api/v1/activity/search?q=lighthouse", headers=viewer.headers).json["items"] == []
    mine = client.get("/api/v1/activity/search?q=lighthouse", headers=editor.headers).json["items"]
    assert len(mine) == 1
    assert client.get("/api/v1/activity/search", headers=admin.headers).status_code == 422
    # Odd characters are searched for, not interpreted.
    assert client.get("/api/v1/activity/search?q=%25_%27%22", headers=admin.headers).status_code == 200


def _search(client, user, q):
    return client.get("/api/v1/activity/search", query_string={"q": q}, headers=user.headers)


def test_search_input_postgresql_cannot_parse_is_never_a_500(client, admin, editor):
    """33 NOTs in a row overflowed websearch_to_tsquery's parser stack: 500 on PostgreSQL."""
    _make(client, editor, "Lighthouse")
    for q in ["-" * 33, "- " * 40 + "x", "-!" * 40 + "lighthouse", "-(" * 40, "-\t" * 40,
              "-\u3000" * 40 + "x", '"' + "-" * 50 + '"', "a\x00b"]:
        response = _search(client, admin, q)
        assert response.status_code in (200, 422), (q, response.status_code)
        if response.status_code == 422:
            assert response.json["error"]["details"]["q"]
    # A hostile alphabet at random, bounded: every answer is a 200 with a list.
    rnd = random.Random(13)
    alphabet = ["-", " ", "!", '"', "(", ")", "&", "|", "<", ">", ":", "*", "'", "\\", "or ",
                "\t", "\u3000", "light", "house", "-!", "--", "<->"]
    for _ in range(150):
        q = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 100))).strip() or "x"
        response = _search(client, admin, q[:200])
        assert response.status_code == 200 and "items" in response.json, (q, response.status_code)


def test_search_keeps_the_meaning_of_negations(app, client, admin, editor):
    _make(client, editor, "Lighthouse")
    _make(client, editor, "Submarine")
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            return  # SQLite matches words literally; websearch syntax is PostgreSQL's

    def names(q):
        return sorted(i["resource_name"] for i in _search(client, admin, q).json["items"])

    assert names("-" * 33 + "lighthouse") == ["Submarine"]  # odd: NOT
    assert names("- " * 34 + "lighthouse") == ["Lighthouse"]  # even: NOT NOT is the word
    assert names("-!-(-lighthouse") == ["Submarine"]
    assert names('lighthouse or "submarine"') == ["Lighthouse", "Submarine"]
    assert activity.websearch_text('a -"--b" ---c') == 'a -"--b" -c'


def test_stats_and_dashboard(client, admin, editor, factory):
    ep = _make(client, editor, "Stats")
    client.patch(f"/api/v1/episodes/{ep['id']}", headers=editor.headers, json={"title": "Stats 2"})
    other = factory.user("editor")
    _make(client, other, "Other")
    stats = client.get("/api/v1/activity/stats", headers=admin.headers).json
    assert stats["total"] == 3
    assert stats["by_action"] == {"created": 2, "updated": 1}
    assert stats["by_resource_type"] == {"episode": 3}
    assert stats["by_user"] == {str(editor.id): 2, str(other.id): 1}
    assert sum(d["count"] for d in stats["by_day"]) == 3
    mine = client.get("/api/v1/activity/stats", headers=editor.headers).json
    assert mine["total"] == 2
    dash = client.get("/api/v1/activity/dashboard?days=7", headers=admin.headers).json
    assert dash["days"] == 7 and dash["total"] == 3 and len(dash["recent"]) == 3
    assert dash["top_users"][0] == {"user_id": str(editor.id), "count": 2}
    assert client.get("/api/v1/activity/dashboard?days=0", headers=admin.headers).status_code == 422


def test_retention_purges_in_batches(app, client, editor):
    for n in range(5):
        _make(client, editor, f"Old {n}", n)
    with app.app_context():
        db.session.execute(update(ActivityLog).where(ActivityLog.id <= 3)
                           .values(created_at=utcnow() - timedelta(days=91)))
        db.session.commit()
        assert activity.purge_older_than(90, batch_size=2) == 3
        assert db.session.scalar(select(func.count()).select_from(ActivityLog)) == 2


def test_bulk_log_writes_many_rows_at_once(app, editor):
    with app.app_context():
        n = activity.bulk_log({"user_id": editor.id, "action": "exported", "resource_type": "episode",
                               "resource_id": i, "resource_name": f"Bulk {i}"} for i in range(500))
        assert n == 500
        assert db.session.scalar(select(func.count()).select_from(ActivityLog)
                                 .where(ActivityLog.action == "exported")) == 500
        found = db.session.scalars(select(ActivityLog).where(
            activity.search_condition("Bulk"))).all()
        assert len(found) == 500


def test_logging_events_twice_writes_each_row_once(app, editor, episode):
    from app.models import DomainEvent

    with app.app_context():
        events = list(db.session.scalars(select(DomainEvent).order_by(DomainEvent.id)))
        ids = [e.id for e in events if e.action]
        assert ids  # the episode's creation
        db.session.execute(ActivityLog.__table__.delete())
        activity.log_events(events)
        activity.log_events(events)  # ON CONFLICT DO NOTHING: no error, nothing new
        db.session.commit()
        assert db.session.scalar(select(func.count()).select_from(ActivityLog)) == len(ids)
