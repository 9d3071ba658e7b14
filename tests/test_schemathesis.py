"""Schemathesis over /api/v1/openapi.json: no operation answers 5xx, whatever it is sent.

Every operation of the spec, with data that fits it (positive) and data that does not
(negative), against the WSGI app with an admin token (so the checks reach past auth),
on whichever database the run uses. Bounded: a fixed number of examples per operation,
derandomized so CI sees the same cases every run (``SCHEMATHESIS_EXAMPLES`` raises the
bound for a longer local hunt, with a random seed). Failures are collected over all
operations, then reported together with a curl command each.
"""
from __future__ import annotations

import io
import os

import pytest
import schemathesis
from flask_jwt_extended import create_access_token, create_refresh_token
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from sqlalchemy import select

from app.extensions import db
from app.models import Notification

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "12"))
# Operations that end the caller's own session: each call gets a token of its own.
SELF_REVOKING = {("POST", "/api/v1/auth/logout")}


@pytest.fixture
def seeded(app, client, admin, editor, viewer):
    """The admin, and the ids of a few real rows for path parameters."""
    episode = client.post("/api/v1/episodes", headers=editor.headers,
                          json={"title": "Seed", "episode_number": 1}).json
    file = client.post(f"/api/v1/episodes/{episode['id']}/files", headers=editor.headers,
                       data={"file": (io.BytesIO(b"seed"), "seed.txt")},
                       content_type="multipart/form-data").json
    job = client.post("/api/v1/jobs", headers=editor.headers,
                      json={"type": "noop", "episode_id": episode["id"]}).json
    client.post("/api/v1/notifications", headers=admin.headers,
                json={"user_ids": [admin.id], "title": "Seed", "message": "seed"})
    with app.app_context():
        notification_id = db.session.scalar(select(Notification.id).limit(1))
    ids = {"episode_id": episode["id"], "file_id": file["id"], "job_id": job["id"],
           "user_id": viewer.id, "notification_id": notification_id,
           "resource_type": "episode", "resource_id": episode["id"]}
    return admin, ids


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_operation_answers_a_server_error(app, seeded, mode):
    admin, ids = seeded
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    failures: list[str] = []
    calls = 0
    answered = set()  # operations that answered 2xx at least once: auth and seeds work

    def headers_for(case) -> dict:
        if (case.method.upper(), case.path) in SELF_REVOKING:
            with app.app_context():
                return {"Authorization": f"Bearer {create_access_token(identity=admin.id)}"}
        if case.path == "/api/v1/auth/refresh":
            with app.app_context():
                return {"Authorization": f"Bearer {create_refresh_token(identity=admin.id)}"}
        return {"Authorization": f"Bearer {admin.token}"}

    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30
    for operation in operations:
        # Half the cases on real rows (never deleting them), so the views run past the 404.
        names = {p.name for p in operation.path_parameters}
        strategy = operation.as_strategy(generation_mode=mode)
        if names and names <= ids.keys() and operation.method.upper() != "DELETE":
            strategy = strategy | operation.as_strategy(
                generation_mode=mode, path_parameters={name: ids[name] for name in names})

        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  derandomize="SCHEMATHESIS_EXAMPLES" not in os.environ,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def run(case) -> None:
            nonlocal calls
            if case.path_parameters and case.path_parameters.get("user_id") == admin.id \
                    and case.method.upper() == "PATCH":
                case.path_parameters["user_id"] = admin.id + 1  # never demote the caller
            response = case.call(headers=headers_for(case))
            calls += 1
            if response.status_code < 300:
                answered.add((case.method, case.path))
            try:
                case.validate_response(response, checks=[not_a_server_error])
            except Exception as exc:  # noqa: BLE001 - collect every operation's failures
                failures.append(f"{case.method} {case.path} -> {response.status_code}: "
                                f"{response.text[:200]}\n  {case.as_curl_command()}\n  {exc}")

        try:
            run()
        except Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE  # nothing of it can be made invalid
    assert len(answered) >= 20, sorted(answered)
    assert calls >= len(operations) * 2
    assert not failures, "\n".join(failures[:20])
