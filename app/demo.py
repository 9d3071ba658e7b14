"""``flask --app wsgi demo``: fill an instance with example users, episodes, files, jobs and
notifications, so the console has something to show on a first run.

Everything goes through the same service functions the API calls, so the demo data has its
activity log, notifications and events like real use. Background work (event delivery,
the jobs themselves) runs eagerly in this process: on the embedded default the broker is
in memory, and a message left there would be lost when the command exits.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

from flask import current_app

from app.errors import Conflict
from app.jobs import service as jobs
from app.models import User
from app.services import episodes, files, notifications, users

ADMIN_EMAIL = "ada@demo.example"

PEOPLE = [
    ("Ada Admin", ADMIN_EMAIL, "admin"),
    ("Eddie Editor", "eddie@demo.example", "editor"),
    ("Erin Cutter", "erin@demo.example", "editor"),
    ("Vera Viewer", "vera@demo.example", "viewer"),
    ("Victor Producer", "victor@demo.example", "viewer"),
]

EPISODES = [
    (1, 1, "Pilot", "Where it all begins.", ["drama", "pilot"]),
    (1, 2, "The Long Night", "A storm cuts the town off.", ["drama"]),
    (1, 3, "Signals", "Someone is listening.", ["thriller"]),
    (2, 1, "Return", "A year later.", ["drama", "premiere"]),
    (2, 2, "Crossing", "Two stories meet.", ["drama"]),
    (2, 3, "Static", "Working title.", []),
]


@dataclass
class DemoSummary:
    users: list[tuple[str, str, str]]
    password: str
    episodes: int
    files: int
    jobs: int
    notifications: int


def fill(password: str = "demo-password") -> DemoSummary:
    """Create the demo data; refuses (409) when it is already there."""
    if users.get_by_email(ADMIN_EMAIL) is not None:
        raise Conflict("The demo data is already in this instance",
                       details={"email": [f"{ADMIN_EMAIL} exists."]})
    celery = current_app.extensions["celery"]
    eager = celery.conf.task_always_eager
    celery.conf.task_always_eager = True
    try:
        return _fill(password)
    finally:
        celery.conf.task_always_eager = eager


def _fill(password: str) -> DemoSummary:
    people: dict[str, User] = {}
    for name, email, role in PEOPLE:
        user = users.register(email=email, password=password, name=name)
        people[email] = users.set_role(user.id, role) if role != "viewer" else user
    admin, editor = people[ADMIN_EMAIL], people["eddie@demo.example"]
    erin, vera = people["erin@demo.example"], people["vera@demo.example"]

    made = []
    for season, number, title, description, categories in EPISODES:
        made.append(episodes.create_episode(editor, {
            "title": title, "episode_number": number, "season": season,
            "description": description, "categories": categories}))
    pilot, night, signals, ret = made[0], made[1], made[2], made[3]
    episodes.update_episode(erin, pilot.id, {"description": "Where it all begins: the lighthouse."})
    episodes.update_episode(editor, night.id, {"title": "The Longest Night", "status": "in_review"})
    episodes.publish_episode(editor, pilot.id)

    stored = 0
    for episode, name, text in (
        (pilot, "script.txt", "INT. LIGHTHOUSE - NIGHT\nThe lamp turns.\n" * 40),
        (pilot, "notes.md", "# Edit notes\n- trim the cold open\n- music cue at 12:40\n"),
        (night, "storyboard.txt", "Panel 1: rain. Panel 2: more rain.\n" * 25),
        (ret, "schedule.csv", "day,scene\n1,3\n2,7\n3,12\n"),
    ):
        files.store_file(editor, episode.id, io.BytesIO(text.encode()), name, "text/plain")
        stored += 1

    made_jobs = 0
    for episode, job_type, params in ((pilot, "export", {"include_files": True}),
                                      (night, "export", {"include_files": True}),
                                      (signals, "checksum", {})):
        jobs.create_job(editor, {"type": job_type, "episode_id": episode.id, "params": params})
        made_jobs += 1

    sent = 0
    for kwargs in (
        {"all_users": True, "type": "admin:alert", "title": "Welcome to Episode Control",
         "message": "This instance holds demo data: explore episodes, jobs and notifications."},
        {"role": "editor", "type": "approval:needed", "priority": "high",
         "title": "Review needed: The Longest Night", "message": "Season 1, episode 2 is in review."},
        {"user_ids": [vera.id], "type": "user:mention", "title": "Eddie mentioned you",
         "message": "Can you check the pilot's subtitles?"},
    ):
        sent += notifications.send(admin, **kwargs)["recipients"]
    return DemoSummary(users=[(name, email, role) for name, email, role in PEOPLE], password=password,
                       episodes=len(made), files=stored, jobs=made_jobs, notifications=sent)
