"""server.store against a real Postgres: migrations."""

from __future__ import annotations

import psycopg
import pytest

from server.migrations import MIGRATIONS
from server.store import SchemaTooNew, migrate, schema_version


def _tables(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    ).fetchall()
    return {row[0] for row in rows}


def test_a_new_database_is_migrated_to_the_latest_version(conn: psycopg.Connection) -> None:
    assert migrate(conn) == len(MIGRATIONS)
    assert {"schema_migrations", "tenants"} <= _tables(conn)
    recorded = conn.execute("SELECT version, name FROM schema_migrations ORDER BY 1").fetchall()
    assert recorded == [(v, n) for v, n, _sql in MIGRATIONS]


def test_migrating_again_changes_nothing(conn: psycopg.Connection) -> None:
    migrate(conn)
    conn.execute("INSERT INTO tenants (name) VALUES (%s)", ("acme",))
    assert migrate(conn) == len(MIGRATIONS)
    assert conn.execute("SELECT name, version FROM tenants").fetchall() == [("acme", 0)]


def test_a_database_newer_than_the_code_refuses_to_start(conn: psycopg.Connection) -> None:
    migrate(conn)
    conn.execute("INSERT INTO schema_migrations (version, name) VALUES (99, 'from the future')")
    with pytest.raises(SchemaTooNew, match="version 99, newer than this server's"):
        migrate(conn)


def test_a_failing_migration_leaves_the_version_before_it(conn: psycopg.Connection) -> None:
    broken = (*MIGRATIONS, (len(MIGRATIONS) + 1, "broken", "CREATE TABLE x (; nonsense"))
    with pytest.raises(psycopg.errors.SyntaxError):
        migrate(conn, broken)
    assert schema_version(conn) == len(MIGRATIONS)
    assert "x" not in _tables(conn)


def test_tenant_versions_cannot_go_negative(conn: psycopg.Connection) -> None:
    migrate(conn)
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO tenants (name, version) VALUES ('t', -1)")
