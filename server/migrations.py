"""The server's database schema, as forward-only migrations.

Each entry is `(version, name, sql)`; versions count up from 1 without gaps.
A migration that has landed is never edited: change the schema by adding the
next one. `server.store.migrate` applies them, each in its own transaction.
"""

from __future__ import annotations

Migration = tuple[int, str, str]

MIGRATIONS: tuple[Migration, ...] = (
    (
        1,
        "tenants",
        """
        CREATE TABLE tenants (
            id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            name       text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 256),
            -- The tenant's policy version: bumped in the transaction of every
            -- change, under a row lock, so versions are gap-free (not a bare
            -- sequence: transactions commit out of order).
            version    bigint NOT NULL DEFAULT 0 CHECK (version >= 0),
            created_at timestamptz NOT NULL DEFAULT now()
        );
        """,
    ),
)
