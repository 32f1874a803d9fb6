"""The server's database access: one module, an injected psycopg connection,
explicit transactions, parameterized SQL only.

This first part runs the schema migrations (`server.migrations`) at start.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from server.migrations import MIGRATIONS, Migration

_MIGRATION_LOCK = 0x666C6774  # advisory lock id ("flgt"): one migrator at a time


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer server than this one."""


def schema_version(conn: psycopg.Connection) -> int:
    """The highest migration applied to the database (0 for a new one)."""
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: psycopg.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the schema up to the latest migration; return the schema version.

    Each migration runs in its own transaction and is recorded in
    `schema_migrations`; a failing one leaves the database at the version
    before it. Several server processes may start at once: an advisory lock
    lets one migrate while the others wait. Raises SchemaTooNew when the
    database is ahead of this code.
    """
    latest = len(migrations)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY,"
            " name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = schema_version(conn)
    if current > latest:
        raise SchemaTooNew(
            f"the database schema is at version {current}, newer than this server's "
            f"{latest}: run a server at least as new as the one that migrated it"
        )
    for version, name, sql in migrations[current:]:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            if schema_version(conn) >= version:  # another process got there first
                continue
            conn.execute(sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name)
            )
    return schema_version(conn)
