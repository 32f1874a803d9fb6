"""The server's database access: one module, an injected psycopg connection,
explicit transactions, parameterized SQL only.

Rules of this module:

- `migrate` (synchronous, run once at start) brings the schema up to date.
  Everything else is async and takes a `psycopg.AsyncConnection`.
- Every function that reads or writes tenant data takes the tenant's id and
  scopes every statement by it: nothing here can reach another tenant's rows.
- Functions whose name says "in the caller's transaction" do not open one;
  the push path (`server/tenants.py`) groups them under one tenant row lock
  (`lock_tenant`), which is what makes versions gap-free and the audit chain
  linear. The others are whole operations in a transaction of their own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from server.migrations import MIGRATIONS, Migration
from sync.replication.entities import Entity

_MIGRATION_LOCK = 0x666C6774  # advisory lock id ("flgt"): one migrator at a time


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer server than this one."""


def database_uri(server_uri: str, name: str) -> str:
    """`server_uri` with its database replaced by `name`."""
    info = psycopg.conninfo.conninfo_to_dict(server_uri)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


def create_database(server_uri: str, name: str) -> str:
    """Create the database `name` on the server at `server_uri` unless it exists; its URI."""
    with psycopg.connect(server_uri, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return database_uri(server_uri, name)


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
    for version, name, statements in migrations[current:]:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            if schema_version(conn) >= version:  # another process got there first
                continue
            conn.execute(statements.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name)
            )
    return schema_version(conn)


# --- tenants and their policy ----------------------------------------------------------


class TenantExists(ValueError):
    """A tenant of that name already exists."""


@dataclass(frozen=True, slots=True)
class TenantRow:
    id: int
    name: str
    version: int
    horizon: int


async def tenant_by_name(conn: psycopg.AsyncConnection, name: str) -> TenantRow | None:
    """The tenant of that name, or None."""
    cursor = await conn.execute(
        "SELECT id, name, version, horizon FROM tenants WHERE name = %s", (name,)
    )
    row = await cursor.fetchone()
    return TenantRow(*row) if row else None


async def tenant_by_id(conn: psycopg.AsyncConnection, tenant_id: int) -> TenantRow | None:
    """The tenant with that id, or None."""
    cursor = await conn.execute(
        "SELECT id, name, version, horizon FROM tenants WHERE id = %s", (tenant_id,)
    )
    row = await cursor.fetchone()
    return TenantRow(*row) if row else None


async def insert_tenant(conn: psycopg.AsyncConnection, name: str) -> int:
    """A new tenant at version 0, in the caller's transaction. Raises TenantExists."""
    try:
        async with conn.transaction():  # a savepoint: the caller's transaction survives
            cursor = await conn.execute(
                "INSERT INTO tenants (name) VALUES (%s) RETURNING id", (name,)
            )
            row = await cursor.fetchone()
    except psycopg.errors.UniqueViolation:
        raise TenantExists(f"a tenant named {name!r} exists") from None
    assert row is not None
    return int(row[0])


async def lock_tenant(conn: psycopg.AsyncConnection, tenant_id: int) -> TenantRow:
    """Lock the tenant's row until the caller's transaction ends; its current state.

    Every writer of a tenant takes this lock first: it serialises them, so the
    version each commit bumps is gap-free in commit order.
    """
    cursor = await conn.execute(
        "SELECT id, name, version, horizon FROM tenants WHERE id = %s FOR UPDATE", (tenant_id,)
    )
    row = await cursor.fetchone()
    if row is None:
        raise LookupError(f"no tenant with id {tenant_id}")
    return TenantRow(*row)


async def set_version(
    conn: psycopg.AsyncConnection, tenant_id: int, version: int, *, horizon: int | None = None
) -> None:
    """In the caller's transaction (under `lock_tenant`)."""
    if horizon is None:
        await conn.execute("UPDATE tenants SET version = %s WHERE id = %s", (version, tenant_id))
    else:
        await conn.execute(
            "UPDATE tenants SET version = %s, horizon = %s WHERE id = %s",
            (version, horizon, tenant_id),
        )


async def load_entities(conn: psycopg.AsyncConnection, tenant_id: int) -> tuple[int, list[Entity]]:
    """The tenant's version and every entity at that version, read consistently
    (in a repeatable-read transaction of its own, or under the caller's `lock_tenant`)."""
    idle = conn.info.transaction_status is psycopg.pq.TransactionStatus.IDLE
    async with conn.transaction():
        if idle:
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        cursor = await conn.execute("SELECT version FROM tenants WHERE id = %s", (tenant_id,))
        row = await cursor.fetchone()
        if row is None:
            raise LookupError(f"no tenant with id {tenant_id}")
        cursor = await conn.execute(
            "SELECT kind, id, document FROM entities WHERE tenant_id = %s"
            " ORDER BY kind = 'settings' DESC, kind = 'role' DESC, position",
            (tenant_id,),
        )
        entities = [Entity(kind, id_, document) for kind, id_, document in await cursor.fetchall()]
    return int(row[0]), entities


async def replace_entities(
    conn: psycopg.AsyncConnection, tenant_id: int, entities: Iterable[Entity], version: int
) -> None:
    """Make `entities` the tenant's whole policy, in the caller's transaction."""
    await conn.execute("DELETE FROM entities WHERE tenant_id = %s", (tenant_id,))
    rows = [
        (tenant_id, e.kind, e.id, position, Jsonb(e.document), version)
        for position, e in enumerate(entities, 1)
    ]
    async with conn.cursor() as cursor:
        await cursor.executemany(
            "INSERT INTO entities (tenant_id, kind, id, position, document, version)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            rows,
        )


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# Many rows go in one statement each, as arrays sent in binary: a push of
# hundreds of mutations costs a few round trips, not one per row.
_UPDATE_ENTITIES = """
    UPDATE entities e SET document = u.document::jsonb, version = %s
    FROM unnest(%b::text[], %b::text[], %b::text[]) AS u (kind, id, document)
    WHERE e.tenant_id = %s AND e.kind = u.kind AND e.id = u.id
"""
_INSERT_ENTITIES = """
    INSERT INTO entities (tenant_id, kind, id, document, version, position)
    SELECT %s, u.kind, u.id, u.document::jsonb, %s,
        coalesce((SELECT max(position) FROM entities
                  WHERE tenant_id = %s AND kind = u.kind), 0)
        + row_number() OVER (PARTITION BY u.kind ORDER BY u.n)
    FROM unnest(%b::text[], %b::text[], %b::text[]) WITH ORDINALITY AS u (kind, id, document, n)
"""
_DELETE_ENTITIES = """
    DELETE FROM entities WHERE tenant_id = %s
    AND (kind, id) IN (SELECT * FROM unnest(%b::text[], %b::text[]))
"""


async def write_entities(
    conn: psycopg.AsyncConnection,
    tenant_id: int,
    entities: Iterable[tuple[Entity, bool]],
    version: int,
) -> None:
    """Store each entity's new document (None deletes it), in the caller's transaction.

    Each entity comes with whether it existed before: an existing one is
    updated in place (keeping its position); new ones go after the others of
    their kind, in the order given, as new keys go last in the policy's
    dictionaries, so loading keeps the policy's order.
    """
    updates: tuple[list[str], list[str], list[str]] = ([], [], [])
    inserts: tuple[list[str], list[str], list[str]] = ([], [], [])
    deletes: tuple[list[str], list[str]] = ([], [])
    for entity, existed in entities:
        if entity.document is None:
            if existed:
                deletes[0].append(entity.kind)
                deletes[1].append(entity.id)
            continue
        target = updates if existed else inserts
        target[0].append(entity.kind)
        target[1].append(entity.id)
        target[2].append(_json(entity.document))
    cursor = conn.cursor(binary=True)
    if deletes[0]:
        await cursor.execute(_DELETE_ENTITIES, (tenant_id, *deletes))
    if updates[0]:
        await cursor.execute(_UPDATE_ENTITIES, (version, *updates, tenant_id))
    if inserts[0]:
        await cursor.execute(_INSERT_ENTITIES, (tenant_id, version, tenant_id, *inserts))


# --- the change log --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChangeRow:
    version: int
    edit: dict[str, Any]
    before: dict[str, Any]
    after: dict[str, Any]
    author: str
    device: str
    client: str
    seq: int
    at: str


async def append_changes(
    conn: psycopg.AsyncConnection, tenant_id: int, changes: Sequence[ChangeRow]
) -> None:
    """In the caller's transaction (under `lock_tenant`)."""
    await conn.cursor(binary=True).execute(
        "INSERT INTO change_log"
        " (tenant_id, version, edit, before, after, author, device, client, seq, at)"
        " SELECT %s, u.version, u.edit::jsonb, u.before::jsonb, u.after::jsonb,"
        "   u.author, u.device, u.client, u.seq, u.at"
        " FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[], %b::text[],"
        "   %b::text[], %b::text[], %b::bigint[], %b::text[])"
        "   AS u (version, edit, before, after, author, device, client, seq, at)",
        (
            tenant_id,
            [c.version for c in changes],
            [_json(c.edit) for c in changes],
            [_json(c.before) for c in changes],
            [_json(c.after) for c in changes],
            [c.author for c in changes],
            [c.device for c in changes],
            [c.client for c in changes],
            [c.seq for c in changes],
            [c.at for c in changes],
        ),
    )


async def changes_after(
    conn: psycopg.AsyncConnection, tenant_id: int, after: int, limit: int, up_to: int | None = None
) -> list[ChangeRow]:
    """Up to `limit` changes with versions above `after` (and at most `up_to`), in order."""
    cursor = await conn.execute(
        "SELECT version, edit, before, after, author, device, client, seq, at"
        " FROM change_log WHERE tenant_id = %s AND version > %s AND version <= %s"
        " ORDER BY version LIMIT %s",
        (tenant_id, after, up_to if up_to is not None else 2**62, limit),
    )
    return [ChangeRow(*row) for row in await cursor.fetchall()]


async def compact(conn: psycopg.AsyncConnection, tenant_id: int, keep: int) -> int:
    """Drop all but the last `keep` changes of the tenant's log; the new horizon.

    Clients behind the horizon catch up by snapshot. The audit log keeps every
    change regardless. Runs in its own transaction, under the tenant's lock.
    """
    async with conn.transaction():
        row = await lock_tenant(conn, tenant_id)
        horizon = max(row.horizon, row.version - keep)
        if horizon > row.horizon:
            await conn.execute(
                "DELETE FROM change_log WHERE tenant_id = %s AND version <= %s",
                (tenant_id, horizon),
            )
            await set_version(conn, tenant_id, row.version, horizon=horizon)
    return horizon


# --- clients and their mutations (exactly once) ----------------------------------------


class ClientTaken(Exception):
    """The client id is registered to another device or user of the tenant."""


async def claim_client(
    conn: psycopg.AsyncConnection, tenant_id: int, client: str, device: str, user: str
) -> int:
    """The client's last mutation seq; registers the client to (device, user) when new.

    Raises ClientTaken when the id belongs to another device or user: a
    replica's mutations cannot be replayed from elsewhere.
    """
    await conn.execute(
        "INSERT INTO clients (tenant_id, client, device, user_id) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (tenant_id, client) DO NOTHING",
        (tenant_id, client, device, user),
    )
    cursor = await conn.execute(
        "SELECT device, user_id, last_seq FROM clients WHERE tenant_id = %s AND client = %s",
        (tenant_id, client),
    )
    row = await cursor.fetchone()
    assert row is not None
    if (row[0], row[1]) != (device, user):
        raise ClientTaken(f"client {client!r} belongs to another device or user")
    return int(row[2])


async def stored_outcomes(
    conn: psycopg.AsyncConnection, tenant_id: int, client: str, seqs: Sequence[int]
) -> dict[int, dict[str, Any]]:
    """The stored outcome documents of the client's `seqs` that have one."""
    if not seqs:
        return {}
    cursor = await conn.execute(
        "SELECT seq, outcome FROM client_mutations"
        " WHERE tenant_id = %s AND client = %s AND seq = ANY(%s)",
        (tenant_id, client, list(seqs)),
    )
    return {int(seq): outcome for seq, outcome in await cursor.fetchall()}


async def record_outcomes(
    conn: psycopg.AsyncConnection,
    tenant_id: int,
    client: str,
    outcomes: Sequence[tuple[int, dict[str, Any]]],
) -> None:
    """Store each (seq, outcome) and advance the client's last seq, in the caller's transaction."""
    if not outcomes:
        return
    await conn.cursor(binary=True).execute(
        "INSERT INTO client_mutations (tenant_id, client, seq, outcome)"
        " SELECT %s, %s, u.seq, u.outcome::jsonb"
        " FROM unnest(%b::bigint[], %b::text[]) AS u (seq, outcome)",
        (tenant_id, client, [seq for seq, _ in outcomes], [_json(o) for _, o in outcomes]),
    )
    await conn.execute(
        "UPDATE clients SET last_seq = greatest(last_seq, %s) WHERE tenant_id = %s AND client = %s",
        (max(seq for seq, _ in outcomes), tenant_id, client),
    )


async def notify_change(
    conn: psycopg.AsyncConnection, tenant_id: int, version: int, committed_at: float
) -> None:
    """Tell every server process (on commit only) that the tenant reached `version`."""
    await conn.execute(
        "SELECT pg_notify(%s, %s)", (CHANGES_CHANNEL, f"{tenant_id}:{version}:{committed_at:.6f}")
    )


CHANGES_CHANNEL = "fleetgate_changes"
DEVICES_CHANNEL = "fleetgate_devices"


# --- accounts, devices, tokens ---------------------------------------------------------


async def failure_wait(
    conn: psycopg.AsyncConnection, limits: Sequence[tuple[str, int]], window: float
) -> float:
    """Seconds until every (key, limit) is under its limit of failures within
    `window` seconds again; 0.0 when all are now."""
    wait = 0.0
    for key, limit in limits:
        cursor = await conn.execute(
            "SELECT extract(epoch FROM at + make_interval(secs => %s) - now())"
            " FROM sign_in_failures WHERE key = %s AND at > now() - make_interval(secs => %s)"
            " ORDER BY at DESC OFFSET %s LIMIT 1",
            (window, key, window, limit - 1),
        )
        row = await cursor.fetchone()
        if row is not None:
            wait = max(wait, float(row[0]))
    return wait


async def record_failure(conn: psycopg.AsyncConnection, keys: Sequence[str], window: float) -> None:
    """One failed attempt against each key; failures older than `window` are dropped."""
    async with conn.transaction():
        await conn.execute(
            "DELETE FROM sign_in_failures WHERE at < now() - make_interval(secs => %s)", (window,)
        )
        await conn.execute(
            "INSERT INTO sign_in_failures (key) SELECT unnest(%s::text[])", (list(keys),)
        )


async def forget_failures(conn: psycopg.AsyncConnection, key: str) -> None:
    await conn.execute("DELETE FROM sign_in_failures WHERE key = %s", (key,))


async def set_password(
    conn: psycopg.AsyncConnection, tenant_id: int, user: str, password_hash: str
) -> None:
    """Create the account or replace its password hash (argon2id, made by the caller)."""
    await conn.execute(
        "INSERT INTO accounts (tenant_id, user_id, password_hash) VALUES (%s, %s, %s)"
        " ON CONFLICT (tenant_id, user_id) DO UPDATE SET password_hash = excluded.password_hash",
        (tenant_id, user, password_hash),
    )


async def password_hash(conn: psycopg.AsyncConnection, tenant_id: int, user: str) -> str | None:
    """The account's password hash, or None when the tenant has no such account."""
    cursor = await conn.execute(
        "SELECT password_hash FROM accounts WHERE tenant_id = %s AND user_id = %s",
        (tenant_id, user),
    )
    row = await cursor.fetchone()
    return str(row[0]) if row else None


@dataclass(frozen=True, slots=True)
class AccountRow:
    user: str
    created_at: datetime
    devices: int
    revoked_devices: int


async def accounts(conn: psycopg.AsyncConnection, tenant_id: int) -> list[AccountRow]:
    """The tenant's accounts with how many of their devices are active and revoked."""
    cursor = await conn.execute(
        "SELECT a.user_id, a.created_at,"
        " count(d.device) FILTER (WHERE d.revoked_at IS NULL),"
        " count(d.device) FILTER (WHERE d.revoked_at IS NOT NULL)"
        " FROM accounts a LEFT JOIN devices d"
        "   ON d.tenant_id = a.tenant_id AND d.user_id = a.user_id"
        " WHERE a.tenant_id = %s GROUP BY a.user_id, a.created_at ORDER BY a.user_id",
        (tenant_id,),
    )
    return [AccountRow(*row) for row in await cursor.fetchall()]


async def touch_device(
    conn: psycopg.AsyncConnection, tenant_id: int, device: str, user: str
) -> bool:
    """Register the device or note its latest user; True when it has been revoked.

    A device may be shared (an office workstation): it records who used it
    last. Replicas are bound to one device and user (`claim_client`).
    """
    cursor = await conn.execute(
        "INSERT INTO devices (tenant_id, device, user_id) VALUES (%s, %s, %s)"
        " ON CONFLICT (tenant_id, device)"
        " DO UPDATE SET last_seen = now(), user_id = excluded.user_id"
        " RETURNING revoked_at IS NOT NULL",
        (tenant_id, device, user),
    )
    row = await cursor.fetchone()
    assert row is not None
    return bool(row[0])


async def revoke_device(conn: psycopg.AsyncConnection, tenant_id: int, device: str) -> bool:
    """Revoke the device and its refresh tokens, and tell every server process.

    False when the tenant has no such device. Runs in its own transaction.
    """
    async with conn.transaction():
        cursor = await conn.execute(
            "UPDATE devices SET revoked_at = coalesce(revoked_at, now())"
            " WHERE tenant_id = %s AND device = %s RETURNING device",
            (tenant_id, device),
        )
        if await cursor.fetchone() is None:
            return False
        await conn.execute(
            "UPDATE refresh_tokens SET revoked_at = coalesce(revoked_at, now())"
            " WHERE tenant_id = %s AND device = %s",
            (tenant_id, device),
        )
        await conn.execute(
            "SELECT pg_notify(%s, %s)", (DEVICES_CHANNEL, json.dumps([tenant_id, device]))
        )
    return True


async def store_refresh_token(
    conn: psycopg.AsyncConnection,
    token_hash: bytes,
    tenant_id: int,
    user: str,
    device: str,
    expires_at: datetime,
) -> None:
    """Keep a refresh token's SHA-256 (never the token) until `expires_at`."""
    await conn.execute(
        "INSERT INTO refresh_tokens (token_hash, tenant_id, user_id, device, expires_at)"
        " VALUES (%s, %s, %s, %s, %s)",
        (token_hash, tenant_id, user, device, expires_at),
    )


@dataclass(frozen=True, slots=True)
class RefreshGrant:
    tenant_id: int
    tenant: str
    user: str


async def use_refresh_token(
    conn: psycopg.AsyncConnection, token_hash: bytes, device: str
) -> RefreshGrant | None:
    """Spend a refresh token (each works once); None when it is unknown, used,
    expired, revoked, for another device, or the device is revoked."""
    async with conn.transaction():
        cursor = await conn.execute(
            "UPDATE refresh_tokens r SET revoked_at = now()"
            " FROM tenants t, devices d"
            " WHERE r.token_hash = %s AND r.device = %s AND r.revoked_at IS NULL"
            "   AND r.expires_at > now() AND t.id = r.tenant_id"
            "   AND d.tenant_id = r.tenant_id AND d.device = r.device AND d.revoked_at IS NULL"
            " RETURNING r.tenant_id, t.name, r.user_id",
            (token_hash, device),
        )
        row = await cursor.fetchone()
    return RefreshGrant(int(row[0]), row[1], row[2]) if row else None


async def signing_key(conn: psycopg.AsyncConnection, new_key: bytes) -> bytes:
    """The database's token signing key, stored first as `new_key` if there is none."""
    await conn.execute(
        "INSERT INTO signing_keys (id, key) VALUES (1, %s) ON CONFLICT (id) DO NOTHING",
        (new_key,),
    )
    cursor = await conn.execute("SELECT key FROM signing_keys WHERE id = 1")
    row = await cursor.fetchone()
    assert row is not None
    return bytes(row[0])


@dataclass(frozen=True, slots=True)
class DeviceRow:
    device: str
    user: str
    first_seen: datetime
    last_seen: datetime
    revoked_at: datetime | None


async def devices(conn: psycopg.AsyncConnection, tenant_id: int) -> list[DeviceRow]:
    """The tenant's devices, each with its latest user."""
    cursor = await conn.execute(
        "SELECT device, user_id, first_seen, last_seen, revoked_at FROM devices"
        " WHERE tenant_id = %s ORDER BY user_id, device",
        (tenant_id,),
    )
    return [DeviceRow(*row) for row in await cursor.fetchall()]


async def last_touches(
    conn: psycopg.AsyncConnection, tenant_id: int, after: int
) -> dict[str, tuple[int, str]]:
    """Entity key -> (version, client) of the last change above `after` to each entity."""
    cursor = await conn.execute(
        "SELECT DISTINCT ON (key) key, version, client"
        " FROM change_log, jsonb_object_keys(after) AS key"
        " WHERE tenant_id = %s AND version > %s ORDER BY key, version DESC",
        (tenant_id, after),
    )
    return {key: (int(version), client) for key, version, client in await cursor.fetchall()}
