"""The migration history builds the schema the models describe, on both databases."""
from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, text

from app.extensions import db
from tests.conftest import database_url, make_test_app

on_postgresql = pytest.mark.skipif(not database_url().startswith("postgresql"),
                                   reason="PostgreSQL only")
on_sqlite = pytest.mark.skipif(not database_url().startswith("sqlite"), reason="SQLite only")

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


@on_postgresql
def test_json_columns_are_jsonb_on_postgresql(app):
    with app.app_context():
        columns = {c["name"]: c["type"] for c in db.inspect(db.engine).get_columns("domain_events")}
        assert type(columns["payload"]).__name__ == "JSONB"


# ---- ids are never reused (SQLite AUTOINCREMENT) ------------------------------------------


def _id_tables():
    return [t for t in db.metadata.sorted_tables
            if [c.name for c in t.primary_key.columns] == ["id"]]


def test_every_table_with_an_integer_id_declares_no_reuse(app):
    """A new table with an id must say ``sqlite_autoincrement`` (models.base.NO_ID_REUSE)."""
    with app.app_context():
        missing = [t.name for t in _id_tables() if not t.dialect_options["sqlite"]["autoincrement"]]
    assert missing == []


def _normalized_tables(conn) -> dict[str, set[str]]:
    """Each table's DDL as a set of column and constraint clauses (order and quoting aside)."""
    tables = {}
    for name, sql in conn.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND sql IS NOT NULL "
            "AND name NOT IN ('alembic_version', 'sqlite_sequence')"):
        head, body = sql.split("(", 1)
        clauses, depth, current = set(), 0, ""
        for ch in body.rsplit(")", 1)[0]:
            depth += ch == "("
            depth -= ch == ")"
            if ch == "," and depth == 0:
                clauses.add(" ".join(current.split()))
                current = ""
            else:
                current += ch
        clauses.add(" ".join(current.split()))
        tables[name] = {("AUTOINCREMENT" in sql.upper(), "HEAD")} | clauses
    return tables


@on_sqlite
def test_migrated_sqlite_schema_equals_the_models(app, tmp_path):
    """Constraint by constraint: the batch rebuild kept every check, key and AUTOINCREMENT."""
    with app.app_context():
        fresh = create_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
        db.metadata.create_all(fresh)
        with db.engine.connect() as migrated, fresh.connect() as created:
            assert _normalized_tables(migrated) == _normalized_tables(created)
        fresh.dispose()


def test_upgrade_keeps_rows_and_ids_and_stops_reuse(tmp_path):
    """An existing SQLite database at 0002 keeps every row, id and reference through 0003
    (no cascade from rebuilding a parent table), and from then on never reuses an id."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    app = make_test_app(SQLALCHEMY_DATABASE_URI=url)
    with app.app_context():
        upgrade(revision="0002")
        conn = db.session.connection()
        conn.exec_driver_sql(
            "INSERT INTO users (id, email, name, password_hash, role, is_active, created_at, "
            "updated_at) VALUES (1, 'a@x', 'A', 'h', 'editor', 1, '2026-01-01', '2026-01-01')")
        for episode_id in (1, 2, 3):
            conn.exec_driver_sql(
                "INSERT INTO episodes (id, title, episode_number, categories, status, created_by,"
                f" created_at, updated_at) VALUES ({episode_id}, 'E{episode_id}', 1, '[]', "
                "'draft', 1, '2026-01-01', '2026-01-01')")
        conn.exec_driver_sql(
            "INSERT INTO jobs (id, type, episode_id, params, status, progress, retry_count, "
            "max_retries, cancel_requested, created_by, created_at, updated_at) VALUES "
            "(7, 'noop', 2, '{}', 'queued', 0, 0, 3, 0, 1, '2026-01-01', '2026-01-01')")
        conn.exec_driver_sql("DELETE FROM episodes WHERE id = 3")
        db.session.commit()
        before = {t: conn_rows(t) for t in ("users", "episodes", "jobs")}

        upgrade()

        assert {t: conn_rows(t) for t in ("users", "episodes", "jobs")} == before
        assert db.session.execute(text("PRAGMA foreign_keys")).scalar() == 1  # back on
        ddl = db.session.execute(text(
            "SELECT sql FROM sqlite_master WHERE name = 'episodes'")).scalar()
        assert "AUTOINCREMENT" in ddl
        db.session.execute(text("DELETE FROM episodes WHERE id = 2"))  # cascades still work
        assert conn_rows("jobs") == []
        db.session.execute(text(
            "INSERT INTO episodes (title, episode_number, categories, status, created_at, "
            "updated_at) VALUES ('new', 1, '[]', 'draft', '2026-01-02', '2026-01-02')"))
        new_ids = [row[0] for row in conn_rows("episodes")]
        assert new_ids == [1, 3]  # 2 was the largest id left after the deletes: never again
        db.session.commit()

        downgrade(revision="0002")
        assert [row[0] for row in conn_rows("episodes")] == [1, 3]
        assert "AUTOINCREMENT" not in db.session.execute(text(
            "SELECT sql FROM sqlite_master WHERE name = 'episodes'")).scalar()
        db.session.remove()


def conn_rows(table: str) -> list:
    return [tuple(row) for row in db.session.execute(text(f"SELECT * FROM {table} ORDER BY id"))]


def test_a_new_episode_never_gets_a_deleted_ones_id_or_history(client, admin, editor):
    first = client.post("/api/v1/episodes", headers=editor.headers,
                        json={"title": "Doomed", "episode_number": 1}).json
    client.patch(f"/api/v1/episodes/{first['id']}", headers=editor.headers, json={"title": "Doomed 2"})
    assert client.delete(f"/api/v1/episodes/{first['id']}", headers=editor.headers).status_code == 204
    second = client.post("/api/v1/episodes", headers=editor.headers,
                         json={"title": "Fresh", "episode_number": 2}).json
    assert second["id"] != first["id"]
    history = client.get(f"/api/v1/activity/episode/{second['id']}", headers=admin.headers).json
    assert [(i["action"], i["resource_name"]) for i in history["items"]] == [("created", "Fresh")]
    timeline = client.get(f"/api/v1/activity/episode/{second['id']}/timeline",
                          headers=editor.headers).json
    assert [i["action"] for i in timeline["items"]] == ["created"]
