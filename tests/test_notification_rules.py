"""The rules table, the templates and should_notify: the decisions, one by one."""
from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, time

import pytest

from app.extensions import db
from app.models import DomainEvent, Episode, User
from app.models.notifications import PRIORITIES
from app.services import notifications as service
from app.services.notifications import Prefs, in_quiet_hours, rules, should_notify

NOON_UTC = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
def world(app, factory, admin, editor, viewer):
    """An episode owned by the editor whose description mentions the viewer; an actor."""
    actor = factory.user("editor", name="Otto Actor")
    with app.app_context():
        episode = Episode(title="Pilot", episode_number=1, description="Hi @VeraViewer",
                          created_by=editor.id, status="in_review")
        db.session.add(episode)
        db.session.commit()
        return {"episode_id": episode.id, "admin": admin, "editor": editor, "viewer": viewer,
                "actor": actor}


def sample_event(rule: rules.Rule, world: dict) -> DomainEvent:
    """An event for ``rule`` shaped like the services record it, with its condition true."""
    eid, editor, actor = world["episode_id"], world["editor"], world["actor"]
    episode_payload = {"episode_id": eid, "title": "Pilot", "created_by": editor.id}
    job_payload = {"job_id": 5, "episode_id": eid, "type": "export", "created_by": editor.id}
    file_payload = {"file_id": 3, "episode_id": eid, "file_name": "cut.mp4", "size": 10,
                    "uploaded_by": actor.id}
    by_event = {
        "episode_created": (episode_payload | {"status": "in_review", "categories": []}, None),
        "episode_updated": (episode_payload | {"changed_fields": ["description", "status"],
                                               "status": "in_review", "updated_by": actor.id},
                            {"status": {"before": "draft", "after": "in_review"},
                             "description": {"before": "", "after": "Hi @VeraViewer"}}),
        "episode_deleted": (episode_payload | {"deleted_by": actor.id}, None),
        "episode_published": (episode_payload | {"published_by": actor.id},
                              {"status": {"before": "draft", "after": "published"}}),
        "job_created": (job_payload, None),
        "job_completed": (job_payload | {"results": {"size": 1}}, None),
        "job_failed": (job_payload | {"error": "disk full", "retries_exhausted": True}, None),
        "file_uploaded": (file_payload | ({"source": "export", "job_id": 5}
                                          if rule.when is rules.is_export else {}), None),
    }
    payload, changes = by_event[rule.event]
    return DomainEvent(name=rule.event, action="x", actor_id=actor.id, resource_type="x",
                       payload=payload, changes=changes)


def test_every_type_has_a_template_expiry_and_channels():
    assert set(service.TEMPLATES) == set(service.TYPES)
    assert set(service.DEFAULT_EXPIRY) == set(service.TYPES)
    assert set(service.DEFAULT_CHANNELS) == set(service.TYPES)
    for rule in rules.RULES:
        assert rule.type in service.TYPES and rule.priority in PRIORITIES, rule


def test_every_rule_renders_its_template_with_the_variables_it_supplies(app, world):
    """A template naming a variable its rule does not supply fails here, not at delivery."""
    with app.app_context():
        for rule in rules.RULES:
            event = sample_event(rule, world)
            facts = rules.Facts(event)
            assert rule.when(facts), rule
            variables = rule.variables(facts)
            assert service.template_fields(rule.type) <= set(variables), rule
            title, message = service.render(rule.type, variables, strict=True)
            assert title and message and "{" not in title + message, rule
            # The rule really reaches someone through plan().
            planned = [p for p in rules.plan(event, [rule])]
            assert planned and all(p.type == rule.type for p in planned), rule


def test_templates_of_types_no_rule_sends_render_with_their_senders_variables():
    # admin:alert comes from the delivery alert hook; job:progress is not sent by any rule
    # (too chatty) but its template must still render for whoever sends it.
    assert service.render("admin:alert", {"message": "Disk full"}, strict=True) == (
        "System alert", "Disk full")
    assert service.render("job:progress", {"job_type": "export", "job_id": 1, "progress": 50,
                                           "episode_title": "Pilot"}, strict=True)[0] == "export #1: 50%"


def test_a_missing_variable_fails_strictly_and_degrades_at_delivery(caplog):
    with pytest.raises(service.TemplateError):
        service.render("episode:created", {"episode_title": "Pilot"}, strict=True)
    with caplog.at_level(logging.ERROR):
        title, message = service.render("episode:created", {"episode_title": "Pilot"})
    assert title == "New episode: Pilot" and message.startswith("…")
    assert "actor_name" in caplog.text


def test_rendering_is_safe():
    # A value is never re-read as a template, and templates cannot reach attributes.
    title, _ = service.render("episode:created", {"episode_title": "{actor_name.__class__}",
                                                  "actor_name": "Ada"}, strict=True)
    assert title == "New episode: {actor_name.__class__}"
    original = service.CATALOG["admin:alert"]
    service.CATALOG["admin:alert"] = dataclasses.replace(original, title="{message.__class__}",
                                                         body="x")
    try:
        with pytest.raises(service.TemplateError):
            service.render("admin:alert", {"message": "m"})
    finally:
        service.CATALOG["admin:alert"] = original
    assert len(service.render("admin:alert", {"message": "x" * 1000})[0]) <= 255


def test_first_matching_rule_wins_per_user(app, world):
    """An episode created straight into review: admins get approval:needed, not both."""
    with app.app_context():
        rule = rules.RULES[0]
        event = sample_event(rule, world)
        event.actor_id = world["editor"].id
        planned = {p.user_id: p.type for p in rules.plan(event)}
    assert planned == {world["admin"].id: "approval:needed",
                       world["viewer"].id: "user:mention"}


def test_job_rules_tell_the_creator_even_when_they_are_the_actor(app, world):
    with app.app_context():
        rule = next(r for r in rules.RULES if r.event == "job_created")
        event = sample_event(rule, world)
        event.actor_id = world["editor"].id
        assert [(p.user_id, p.type, p.priority) for p in rules.plan(event)] == [
            (world["editor"].id, "job:created", "low")]


def test_deleted_episode_still_reaches_its_owner(app, world):
    with app.app_context():
        db.session.delete(db.session.get(Episode, world["episode_id"]))
        db.session.commit()
        rule = next(r for r in rules.RULES if r.event == "episode_deleted")
        planned = rules.plan(sample_event(rule, world))
    assert {p.user_id for p in planned} == {world["editor"].id, world["admin"].id}
    assert planned[0].variables["episode_title"] == "Pilot"


@pytest.mark.parametrize("text,handles", [
    ("Hi @Ada and @bob.smith.", {"ada", "bob.smith"}),
    ("mail me at ada@example.com", set()),
    ("@@double @-dash (@Paren) @a_b-c", {"paren", "a_b-c"}),
    (None, set()),
])
def test_mention_handles(text, handles):
    assert rules.mention_handles(text) == handles


def test_mentions_match_compact_names_and_email_local_parts(app, factory):
    lovelace = factory.user("viewer", name="Ada Lovelace")
    with app.app_context():
        db.session.get(User, lovelace.id).email = "ada.l_x@example.com"
        inactive = User(email="gone@example.com", name="Gone", role="viewer", is_active=False,
                        password_hash="x")
        db.session.add(inactive)
        db.session.commit()
        assert rules.users_mentioned({"adalovelace"}) == {lovelace.id}
        assert rules.users_mentioned({"ada.l_x"}) == {lovelace.id}
        assert rules.users_mentioned({"ada.l%x"}) == set()  # LIKE wildcards are escaped
        assert rules.users_mentioned({"gone"}) == set()


# ---- should_notify -----------------------------------------------------------------------


def decide(prefs=None, **kwargs):
    kwargs.setdefault("type", "episode:created")
    kwargs.setdefault("priority", "normal")
    kwargs.setdefault("now", NOON_UTC)
    return should_notify(prefs or Prefs(), **kwargs)


def test_should_notify_defaults_push_in_app_and_email_only_where_defaulted():
    assert decide() == service.Decision(True, True, False, False, "send")
    assert decide(type="job:failed") == service.Decision(True, True, True, False, "send")


def test_should_notify_muted_and_channels():
    muted = Prefs(muted_types=frozenset({"episode:created"}))
    assert decide(muted).store is False and decide(muted).reason == "muted"
    assert decide(muted, priority="critical").push is True  # critical cannot be muted
    email_only = Prefs(channels={"episode:created": ("email",)})
    assert decide(email_only) == service.Decision(True, False, True, False, "send")
    nothing = Prefs(channels={"episode:created": ()})
    assert decide(nothing).store is False


def test_should_notify_quiet_hours_hold_below_critical():
    quiet = Prefs(quiet_start=time(11), quiet_end=time(13), digest_frequency="daily")
    held = decide(quiet, type="job:failed", priority="high")
    assert held == service.Decision(True, False, False, True, "quiet_hours")
    assert decide(quiet, priority="critical") == service.Decision(True, True, False, False, "send")
    no_digest = Prefs(quiet_start=time(11), quiet_end=time(13))
    assert decide(no_digest) == service.Decision(True, False, False, False, "quiet_hours")


def test_should_notify_rate_limit_folds_into_the_digest_but_not_critical():
    prefs = Prefs(digest_frequency="hourly")
    assert decide(prefs, over_rate_limit=True) == service.Decision(True, False, False, True,
                                                                   "rate_limited")
    assert decide(prefs, over_rate_limit=True, priority="critical").push is True


@pytest.mark.parametrize("start,end,tz,now_utc,expected", [
    ("22:00", "07:00", "UTC", "23:30", True),
    ("22:00", "07:00", "UTC", "06:59", True),
    ("22:00", "07:00", "UTC", "07:00", False),
    ("22:00", "07:00", "UTC", "12:00", False),
    ("09:00", "17:00", "UTC", "09:00", True),
    ("09:00", "17:00", "UTC", "17:00", False),
    # 12:00 UTC in June is 14:00 in Paris (CEST) and 08:00 in New York (EDT).
    ("13:30", "14:30", "Europe/Paris", "12:00", True),
    ("13:30", "14:30", "UTC", "12:00", False),
    ("07:00", "09:00", "America/New_York", "12:00", True),
    ("08:00", "08:00", "UTC", "08:00", False),  # equal ends: no quiet hours
    ("22:00", "07:00", "Not/AZone", "23:00", True),  # unknown zone falls back to UTC
])
def test_quiet_hours_in_the_users_time_zone(start, end, tz, now_utc, expected):
    hours, minutes = map(int, now_utc.split(":"))
    now = NOON_UTC.replace(hour=hours, minute=minutes)
    prefs = Prefs(quiet_start=service.parse_hhmm(start), quiet_end=service.parse_hhmm(end), timezone=tz)
    assert in_quiet_hours(prefs, now) is expected


def test_prefs_from_a_row_and_defaults():
    assert Prefs.from_row(None) == Prefs()
    assert Prefs().channels_for("admin:alert") == ("in_app", "email")
    assert service.parse_hhmm("bad") is None and service.parse_hhmm("07:30") == time(7, 30)


def test_only_real_zone_names_are_time_zones():
    from app.services.notifications import valid_timezone

    assert valid_timezone("Europe/Paris") and valid_timezone("UTC")
    for name in ("localtime", "right/UTC", "posix/Europe/Paris", "../etc/passwd", "Mars/Olympus"):
        assert not valid_timezone(name), name
