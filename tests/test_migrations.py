"""The migration history builds the schema the models describe, on both databases."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app.extensions import db

# Created by the migration for PostgreSQL full-text search; expression indexes are not
# declared on the models (SQLite has no such index).
MIGRATION_ONLY = {"ix_activity_logs_search"}


def _include(obj, name, type_, reflected, compare_to):
    return not (type_ == "index" and name in MIGRATION_ONLY)


def test_models_and_migrations_do_not_drift(app):
    with app.app_context():
        with db.engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_object": _include})
            diff = compare_metadata(context, db.metadata)
    assert diff == [], diff


def test_every_table_of_the_design_exists(app):
    expected = {"users", "episodes", "jobs", "files", "domain_events", "activity_logs",
                "notifications", "notification_preferences", "user_presence"}
    with app.app_context():
        names = set(db.inspect(db.engine).get_table_names())
    assert expected <= names


def test_json_columns_are_jsonb_on_postgresql(app):
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            return
        columns = {c["name"]: c["type"] for c in db.inspect(db.engine).get_columns("domain_events")}
        assert type(columns["payload"]).__name__ == "JSONB"
