"""Every notification decision passes through ``decisions.note_many``, with its reason:
what the delivery timeline (and a metrics counter) is built on."""
from __future__ import annotations

import pytest

from app.models import DomainEvent
from app.services.notifications import decisions
from tests.test_notifications import API, quiet_now, send, set_prefs


@pytest.fixture
def noted(monkeypatch) -> list[decisions.Note]:
    """The decisions noted, in order (the real choke point still runs)."""
    seen: list[decisions.Note] = []
    real = decisions.note_many

    def keep(notes):
        notes = list(notes)
        seen.extend(notes)
        real(notes)

    monkeypatch.setattr(decisions, "note_many", keep)
    return seen


def _of(noted, user_id) -> list[tuple[str, str]]:
    return [(n.outcome, n.reason) for n in noted if n.user_id == user_id]


def test_a_published_episode_notes_rules_preferences_and_the_push(app, client, factory, editor,
                                                                  viewer, episode, noted):
    admin = factory.user("admin", name="Ada Admin")
    other = factory.user("admin", name="Alan Admin")
    set_prefs(client, other, muted_types=["episode:published"])
    client.post(f"{API}/episodes/{episode['id']}/publish", headers=admin.headers)
    with app.app_context():
        from app.extensions import db

        event_id = db.session.scalar(db.select(DomainEvent.id)
                                     .where(DomainEvent.name == "episode_published"))
    assert all(n.event_id == event_id for n in noted if n.user_id in (editor.id, other.id))
    mine = _of(noted, editor.id)
    assert mine[:2] == [("rule_matched", "audience admins_and_owner"), ("created", "stored")]
    assert ("channels", "preference") in mine and ("pushed", "send") in mine
    assert _of(noted, other.id) == [("rule_matched", "audience admins_and_owner"),
                                    ("muted", "preference")]
    assert ("rule_skipped", "the actor") in _of(noted, admin.id)  # never told of their own act
    assert _of(noted, viewer.id) == []  # no rule reaches a viewer


def test_quiet_hours_and_digests_are_noted(app, client, admin, editor, noted):
    set_prefs(client, editor, quiet_hours=quiet_now("Europe/Paris"), timezone="Europe/Paris",
              digest_frequency="hourly")
    send(client, admin, user_ids=[editor.id], title="Quiet please")
    outcomes = [outcome for outcome, _ in _of(noted, editor.id)]
    assert "quiet_hours" in outcomes and "digest" in outcomes and "pushed" not in outcomes
