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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from server.migrations import MIGRATIONS, Migration
from sync.replication.encoding import compact_json
from sync.replication.entities import Entity
from sync.replication.members import Member, Stamp, is_touch, member_from_text, member_text

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
    merge_floor: int = 0
    lease_seconds: int = 604800
    stale_decisions: str = "answer"


# One literal string per query: nothing is ever spliced into SQL.
_TENANT_BY_NAME = (
    "SELECT id, name, version, horizon, merge_floor, lease_seconds, stale_decisions"
    " FROM tenants WHERE name = %s"
)
_TENANT_BY_ID = (
    "SELECT id, name, version, horizon, merge_floor, lease_seconds, stale_decisions"
    " FROM tenants WHERE id = %s"
)
_LOCK_TENANT = (
    "SELECT id, name, version, horizon, merge_floor, lease_seconds, stale_decisions"
    " FROM tenants WHERE id = %s FOR UPDATE"
)


async def tenant_by_name(conn: psycopg.AsyncConnection, name: str) -> TenantRow | None:
    """The tenant of that name, or None."""
    cursor = await conn.execute(_TENANT_BY_NAME, (name,))
    row = await cursor.fetchone()
    return TenantRow(*row) if row else None


async def tenant_by_id(conn: psycopg.AsyncConnection, tenant_id: int) -> TenantRow | None:
    """The tenant with that id, or None."""
    cursor = await conn.execute(_TENANT_BY_ID, (tenant_id,))
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
    cursor = await conn.execute(_LOCK_TENANT, (tenant_id,))
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


async def commit_version(
    conn: psycopg.AsyncConnection, tenant_id: int, version: int, committed_at: float
) -> None:
    """Set the tenant's version and tell every server process on commit (`notify_change`),
    in one statement, in the caller's transaction (under `lock_tenant`)."""
    await conn.execute(
        "WITH bumped AS (UPDATE tenants SET version = %s WHERE id = %s RETURNING id)"
        " SELECT pg_notify(%s, %s) FROM bumped",
        (version, tenant_id, CHANGES_CHANNEL, f"{tenant_id}:{version}:{committed_at:.6f}"),
    )


async def set_lease(
    conn: psycopg.AsyncConnection, tenant_id: int, lease_seconds: int, stale_decisions: str
) -> None:
    """How long the tenant's replicas trust their decisions offline, and what they do after."""
    await conn.execute(
        "UPDATE tenants SET lease_seconds = %s, stale_decisions = %s WHERE id = %s",
        (lease_seconds, stale_decisions, tenant_id),
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
    return compact_json(value)


# Many rows go in one statement each, as one JSON parameter read back with
# json_to_recordset: a push of hundreds of mutations costs a few round trips,
# and the client encodes each batch once (orjson) instead of array by array.
_UPDATE_ENTITIES = """
    UPDATE entities e SET document = r.d, version = %s
    FROM json_to_recordset(%s::json) AS r (k text, i text, d jsonb)
    WHERE e.tenant_id = %s AND e.kind = r.k AND e.id = r.i
"""
_INSERT_ENTITIES = """
    INSERT INTO entities (tenant_id, kind, id, document, version, position)
    SELECT %s, r.k, r.i, r.d, %s,
        coalesce((SELECT max(position) FROM entities
                  WHERE tenant_id = %s AND kind = r.k), 0)
        + row_number() OVER (PARTITION BY r.k ORDER BY r.n)
    FROM json_to_recordset(%s::json) AS r (k text, i text, d jsonb, n bigint)
"""
_DELETE_ENTITIES = """
    DELETE FROM entities WHERE tenant_id = %s
    AND (kind, id) IN (SELECT r.k, r.i FROM json_to_recordset(%s::json) AS r (k text, i text))
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
    updates: list[dict[str, Any]] = []
    inserts: list[dict[str, Any]] = []
    deletes: list[dict[str, Any]] = []
    for entity, existed in entities:
        row = {"k": entity.kind, "i": entity.id}
        if entity.document is None:
            if existed:
                deletes.append(row)
        elif existed:
            updates.append(row | {"d": entity.document})
        else:
            inserts.append(row | {"d": entity.document, "n": len(inserts)})
    if deletes:
        await conn.execute(_DELETE_ENTITIES, (tenant_id, _json(deletes)))
    if updates:
        await conn.execute(_UPDATE_ENTITIES, (version, _json(updates), tenant_id))
    if inserts:
        await conn.execute(_INSERT_ENTITIES, (tenant_id, version, tenant_id, _json(inserts)))


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
    digest: str | None = None
    """The policy's digest after this change (None in rows older than protocol 2)."""


async def append_changes(
    conn: psycopg.AsyncConnection, tenant_id: int, changes: Sequence[ChangeRow]
) -> None:
    """In the caller's transaction (under `lock_tenant`)."""
    rows = [
        {"v": c.version, "e": c.edit, "b": c.before, "a": c.after, "au": c.author,
         "d": c.device, "c": c.client, "s": c.seq, "at": c.at, "g": c.digest}
        for c in changes
    ]  # fmt: skip
    await conn.execute(
        "INSERT INTO change_log"
        " (tenant_id, version, edit, before, after, author, device, client, seq, at, digest)"
        " SELECT %s, r.v, r.e, r.b, r.a, r.au, r.d, r.c, r.s, r.at, r.g"
        " FROM json_to_recordset(%s::json) AS r (v bigint, e jsonb, b jsonb, a jsonb,"
        "   au text, d text, c text, s bigint, at text, g text)",
        (tenant_id, _json(rows)),
    )


async def changes_after(
    conn: psycopg.AsyncConnection, tenant_id: int, after: int, limit: int, up_to: int | None = None
) -> list[ChangeRow]:
    """Up to `limit` changes with versions above `after` (and at most `up_to`), in order."""
    cursor = await conn.execute(
        "SELECT version, edit, before, after, author, device, client, seq, at, digest"
        " FROM change_log WHERE tenant_id = %s AND version > %s AND version <= %s"
        " ORDER BY version LIMIT %s",
        (tenant_id, after, up_to if up_to is not None else 2**62, limit),
    )
    return [ChangeRow(*row) for row in await cursor.fetchall()]


async def compact(conn: psycopg.AsyncConnection, tenant_id: int, keep: int) -> tuple[int, int]:
    """Drop all but the last `keep` changes of the tenant's log; the new horizon and
    merge floor.

    Clients behind the horizon catch up by snapshot. The audit log keeps every
    change regardless, and merge stamps are kept but for those older than the
    merge floor: the newest version committed at least a lease ago (no replica
    trusted offline has a base older than that). Runs in its own transaction,
    under the tenant's lock.
    """
    async with conn.transaction():
        row = await lock_tenant(conn, tenant_id)
        horizon = max(row.horizon, row.version - keep)
        cursor = await conn.execute(
            "SELECT max(version) FROM change_log WHERE tenant_id = %s"
            " AND committed_at <= now() - make_interval(secs => %s)",
            (tenant_id, row.lease_seconds),
        )
        found = await cursor.fetchone()
        floor = max(row.merge_floor, int(found[0]) if found and found[0] is not None else 0)
        if horizon > row.horizon:
            await conn.execute(
                "DELETE FROM change_log WHERE tenant_id = %s AND version <= %s",
                (tenant_id, horizon),
            )
        if floor > row.merge_floor:
            await conn.execute(
                "DELETE FROM stamps WHERE tenant_id = %s AND changed_version < %s",
                (tenant_id, floor),
            )
        await conn.execute(
            "UPDATE tenants SET horizon = %s, merge_floor = %s WHERE id = %s",
            (horizon, floor, tenant_id),
        )
    return horizon, floor


# --- merge stamps ------------------------------------------------------------------------


async def load_stamps(conn: psycopg.AsyncConnection, tenant_id: int) -> dict[Member, Stamp]:
    """Every stored merge stamp of the tenant (members only: see `write_stamps`)."""
    cursor = await conn.execute(
        "SELECT member, changed_version, changed_by, narrowed_version, narrowed_by,"
        " changed_other, narrowed_other"
        " FROM stamps WHERE tenant_id = %s",
        (tenant_id,),
    )
    return {
        member_from_text(row[0]): Stamp(int(row[1]), *row[2:]) for row in await cursor.fetchall()
    }


async def stamps_of(
    conn: psycopg.AsyncConnection, tenant_id: int, members: Sequence[Member]
) -> dict[Member, Stamp]:
    """The stored stamps of `members` (those that have one)."""
    if not members:
        return {}
    cursor = await conn.cursor(binary=True).execute(
        "SELECT member, changed_version, changed_by, narrowed_version, narrowed_by,"
        " changed_other, narrowed_other"
        " FROM stamps WHERE tenant_id = %s AND member = ANY(%b::text[])",
        (tenant_id, [member_text(m) for m in members]),
    )
    return {
        member_from_text(row[0]): Stamp(int(row[1]), *row[2:]) for row in await cursor.fetchall()
    }


async def write_stamps(
    conn: psycopg.AsyncConnection, tenant_id: int, stamps: Mapping[Member, Stamp]
) -> None:
    """Store (insert or replace) `stamps`, in the caller's transaction; entities'
    touch stamps are not stored (`sync.replication.members.touches` derives them)."""
    if not stamps:
        return
    rows = [
        {"m": member_text(m), "cv": s.changed, "cb": s.changed_by, "nv": s.narrowed,
         "nb": s.narrowed_by, "co": s.changed_other, "no": s.narrowed_other}
        for m, s in stamps.items()
        if not is_touch(m)  # derived from the members' stamps when loaded
    ]  # fmt: skip
    if not rows:
        return
    await conn.execute(
        "INSERT INTO stamps (tenant_id, member, changed_version, changed_by,"
        " narrowed_version, narrowed_by, changed_other, narrowed_other)"
        " SELECT %s, r.m, r.cv, r.cb, r.nv, r.nb, r.co, r.no"
        " FROM json_to_recordset(%s::json) AS r (m text, cv bigint, cb text, nv bigint,"
        "   nb text, co bigint, no bigint)"
        " ON CONFLICT (tenant_id, member) DO UPDATE SET"
        "   changed_version = excluded.changed_version, changed_by = excluded.changed_by,"
        "   narrowed_version = excluded.narrowed_version, narrowed_by = excluded.narrowed_by,"
        "   changed_other = excluded.changed_other, narrowed_other = excluded.narrowed_other",
        (tenant_id, _json(rows)),
    )


# --- clients and their mutations (exactly once) ----------------------------------------


class ClientTaken(Exception):
    """The client id is registered to another device or user of the tenant."""


_CLAIM_CLIENT = """
    WITH claimed AS (
        INSERT INTO clients (tenant_id, client, device, user_id) VALUES (%s, %s, %s, %s)
        ON CONFLICT (tenant_id, client) DO NOTHING
        RETURNING device, user_id, last_seq
    )
    SELECT c.device, c.user_id, c.last_seq,
        coalesce((SELECT d.revoked_at IS NOT NULL FROM devices d
                  WHERE d.tenant_id = %s AND d.device = %s), false)
    FROM (SELECT * FROM claimed
          UNION ALL
          SELECT device, user_id, last_seq FROM clients WHERE tenant_id = %s AND client = %s
         ) AS c
    LIMIT 1
"""


async def claim_client_and_device(
    conn: psycopg.AsyncConnection, tenant_id: int, client: str, device: str, user: str
) -> tuple[int, bool]:
    """The client's last mutation seq, and whether `device` has been revoked; registers
    the client to (device, user) when new. One round trip (a push makes it).

    Raises ClientTaken when the id belongs to another device or user: a
    replica's mutations cannot be replayed from elsewhere.
    """
    cursor = await conn.execute(
        _CLAIM_CLIENT, (tenant_id, client, device, user, tenant_id, device, tenant_id, client)
    )
    row = await cursor.fetchone()
    assert row is not None
    if (row[0], row[1]) != (device, user):
        raise ClientTaken(f"client {client!r} belongs to another device or user")
    return int(row[2]), bool(row[3])


async def claim_client(
    conn: psycopg.AsyncConnection, tenant_id: int, client: str, device: str, user: str
) -> int:
    """The client's last mutation seq; registers the client to (device, user) when new.

    Raises ClientTaken when the id belongs to another device or user.
    """
    last_seq, _ = await claim_client_and_device(conn, tenant_id, client, device, user)
    return last_seq


async def stored_outcomes(
    conn: psycopg.AsyncConnection, tenant_id: int, client: str, seqs: Sequence[int]
) -> dict[int, dict[str, Any]]:
    """The stored outcome documents of the client's `seqs` that have one."""
    if not seqs:
        return {}
    wanted = set(seqs)
    cursor = await conn.execute(
        "SELECT first_seq, outcomes FROM client_outcomes"
        " WHERE tenant_id = %s AND client = %s AND last_seq >= %s AND first_seq <= %s",
        (tenant_id, client, min(wanted), max(wanted)),
    )
    found: dict[int, dict[str, Any]] = {}
    for first, outcomes in await cursor.fetchall():
        for seq, outcome in enumerate(outcomes, int(first)):
            if seq in wanted:
                found[seq] = outcome
    return found


async def record_outcomes(
    conn: psycopg.AsyncConnection,
    tenant_id: int,
    client: str,
    outcomes: Sequence[tuple[int, dict[str, Any]]],
) -> None:
    """Store the outcomes of a push's new seqs (consecutive, in order: the push rules
    make them so) as one row, and advance the client's last seq, in the caller's
    transaction. Raises ValueError for seqs that are not consecutive (our bug)."""
    if not outcomes:
        return
    first, last = outcomes[0][0], outcomes[-1][0]
    if [seq for seq, _ in outcomes] != list(range(first, last + 1)):
        raise ValueError("the outcomes of one push must be of consecutive seqs")
    await conn.execute(
        "WITH recorded AS (INSERT INTO client_outcomes"
        "   (tenant_id, client, first_seq, last_seq, outcomes)"
        "   VALUES (%s, %s, %s, %s, %s::jsonb))"
        " UPDATE clients SET last_seq = greatest(last_seq, %s)"
        " WHERE tenant_id = %s AND client = %s",
        (tenant_id, client, first, last, _json([o for _, o in outcomes]), last, tenant_id,
         client),
    )  # fmt: skip


_CHAIN = (
    "SELECT decisions_seq, decisions_head, decisions_window_start, decisions_window_count"
    " FROM clients WHERE tenant_id = %s AND client = %s"
)
_LOCK_CHAIN = (
    "SELECT decisions_seq, decisions_head, decisions_window_start, decisions_window_count"
    " FROM clients WHERE tenant_id = %s AND client = %s FOR UPDATE"
)


@dataclass(frozen=True, slots=True)
class DecisionChain:
    """A client's offline decision chain as stored: its head and the hour's quota."""

    seq: int
    head: str
    window_start: datetime | None
    window_count: int


async def decision_chain(
    conn: psycopg.AsyncConnection, tenant_id: int, client: str, *, lock: bool = False
) -> DecisionChain | None:
    """The client's chain (locked until the transaction ends with `lock`), or None."""
    cursor = await conn.execute(_LOCK_CHAIN if lock else _CHAIN, (tenant_id, client))
    row = await cursor.fetchone()
    return DecisionChain(int(row[0]), str(row[1]), row[2], int(row[3])) if row else None


async def save_decision_chain(
    conn: psycopg.AsyncConnection, tenant_id: int, client: str, chain: DecisionChain
) -> None:
    """In the caller's transaction (after `decision_chain(lock=True)`)."""
    await conn.execute(
        "UPDATE clients SET decisions_seq = %s, decisions_head = %s,"
        " decisions_window_start = %s, decisions_window_count = %s"
        " WHERE tenant_id = %s AND client = %s",
        (chain.seq, chain.head, chain.window_start, chain.window_count, tenant_id, client),
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


async def reserve_attempt(
    conn: psycopg.AsyncConnection, limits: Sequence[tuple[str, int]], window: float
) -> tuple[list[int], float]:
    """Count a sign-in attempt as a failure of each key *before* its password is
    checked: the ids of the rows it took and 0.0, or, when a key is over its limit
    counting this attempt, no rows (they are given back) and the seconds to wait.

    Each row is committed before the count is read (on an autocommit
    connection), so of N simultaneous attempts at most the limit go through,
    in every process sharing the database.
    """
    cursor = await conn.execute(
        "DELETE FROM sign_in_failures WHERE at < now() - make_interval(secs => %s)", (window,)
    )
    cursor = await conn.execute(
        "INSERT INTO sign_in_failures (key) SELECT unnest(%s::text[]) RETURNING id",
        ([key for key, _ in limits],),
    )
    ids = [int(row[0]) for row in await cursor.fetchall()]
    wait = 0.0
    for key, limit in limits:
        cursor = await conn.execute(
            "SELECT extract(epoch FROM at + make_interval(secs => %s) - now())"
            " FROM sign_in_failures WHERE key = %s AND at > now() - make_interval(secs => %s)"
            " ORDER BY at DESC, id DESC OFFSET %s LIMIT 1",
            (window, key, window, limit),
        )
        row = await cursor.fetchone()
        if row is not None:
            wait = max(wait, float(row[0]), 1.0)
    if wait:
        await release_attempt(conn, ids)
        return [], wait
    return ids, 0.0


async def release_attempt(conn: psycopg.AsyncConnection, ids: Sequence[int]) -> None:
    """Give back rows `reserve_attempt` took (the attempt succeeded, or never ran)."""
    if ids:
        await conn.execute("DELETE FROM sign_in_failures WHERE id = ANY(%s)", (list(ids),))


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
    family: bytes | None = None,
    predecessor: bytes | None = None,
) -> None:
    """Keep a refresh token's SHA-256 (never the token) until `expires_at`.

    `family` is the first token's hash of its line of rotations (a sign-in
    starts one: None); `predecessor` the token it replaces, which records it
    as its successor. Replaying a spent token of the family revokes it all.
    """
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO refresh_tokens"
            " (token_hash, tenant_id, user_id, device, expires_at, family)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (token_hash, tenant_id, user, device, expires_at, family or token_hash),
        )
        if predecessor is not None:
            await conn.execute(
                "UPDATE refresh_tokens SET successor = %s WHERE token_hash = %s",
                (token_hash, predecessor),
            )


LOST_ANSWER_GRACE = 60.0
"""Seconds in which the device may present a token it just spent again (the answer
carrying its successor was lost): the successor, if unused, is replaced."""


class RefreshVerdict(Enum):
    GRANTED = "granted"
    INVALID = "invalid"
    """Unknown, expired or revoked: nothing was spent."""
    NOT_YOURS = "not_yours"
    """Another tenant's or user's token, shown to a signed-in session: not spent."""
    REPLAYED = "replayed"
    """Spent before: its whole family is now revoked."""
    DEVICE_REVOKED = "device_revoked"
    HELD = "held"
    """Good, but its holder may not refresh now (suspended): not spent, so it works
    again once they are resumed."""


@dataclass(frozen=True, slots=True)
class RefreshGrant:
    verdict: RefreshVerdict
    tenant_id: int = 0
    tenant: str = ""
    user: str = ""
    family: bytes = b""


async def refresh_token_holder(
    conn: psycopg.AsyncConnection, token_hash: bytes
) -> tuple[int, str] | None:
    """(tenant id, user) a refresh token was issued to, whatever its state (None: an
    unknown token). Spends and locks nothing."""
    cursor = await conn.execute(
        "SELECT tenant_id, user_id FROM refresh_tokens WHERE token_hash = %s", (token_hash,)
    )
    row = await cursor.fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


async def use_refresh_token(
    conn: psycopg.AsyncConnection,
    token_hash: bytes,
    device: str,
    owner: tuple[int, str] | None = None,
    *,
    hold: bool = False,
) -> RefreshGrant:
    """Spend a refresh token (each works once) and say what it grants.

    `owner` is (tenant id, user) of a session that is already signed in: a
    token of anyone else is refused before anything is spent, and so is a token
    shown from another device than its own. A token spent before revokes its
    whole family (OAuth 2.0 security best practice: after a theft, one of the
    two holders replays it, and the token becomes useless to both), except
    when its own device presents it again within `LOST_ANSWER_GRACE` seconds
    and its successor was never used: the answer was lost, and the successor
    is revoked instead. `hold` says the token's holder may not refresh now
    (suspended): every check is made and a replay still revokes the family,
    but a token that would be granted is answered HELD and nothing is spent or
    revoked, so it works again once they are resumed. Runs in its own
    transaction.
    """
    async with conn.transaction():
        cursor = await conn.execute(
            "SELECT r.tenant_id, t.name, r.user_id, r.device, r.family, r.used_at IS NOT NULL,"
            " r.revoked_at IS NOT NULL OR r.expires_at <= now(),"
            " coalesce(d.revoked_at IS NOT NULL, true),"
            " r.used_at > now() - make_interval(secs => %s) AND r.successor IS NOT NULL"
            "   AND s.used_at IS NULL"
            "   AND s.revoked_at IS NULL"
            " FROM refresh_tokens r JOIN tenants t ON t.id = r.tenant_id"
            " LEFT JOIN devices d ON d.tenant_id = r.tenant_id AND d.device = r.device"
            " LEFT JOIN refresh_tokens s ON s.token_hash = r.successor"
            " WHERE r.token_hash = %s FOR UPDATE OF r",
            (LOST_ANSWER_GRACE, token_hash),
        )
        row = await cursor.fetchone()
        if row is None:
            return RefreshGrant(RefreshVerdict.INVALID)
        tenant_id, tenant, user, token_device, family, used, dead, device_revoked, retry = row
        grant = (int(tenant_id), str(tenant), str(user), bytes(family))
        if owner is not None and owner != (grant[0], grant[2]):
            return RefreshGrant(RefreshVerdict.NOT_YOURS)
        if token_device != device:
            # Not spent, and nothing revoked: whoever knows a token but not its
            # device must not be able to sign its owner out.
            return RefreshGrant(RefreshVerdict.INVALID)
        if device_revoked:
            return RefreshGrant(RefreshVerdict.DEVICE_REVOKED, *grant)
        if hold and (retry or not (used or dead)):
            return RefreshGrant(RefreshVerdict.HELD, *grant)
        if used and retry:
            # The answer to the first use was lost: the successor nobody has seen
            # is replaced by the one the caller issues now.
            # Marked used too: if it turns up after all, two parties hold this
            # family, and showing it revokes the family as any replay does.
            await conn.execute(
                "UPDATE refresh_tokens s SET revoked_at = now(), used_at = now()"
                " FROM refresh_tokens r WHERE r.token_hash = %s AND s.token_hash = r.successor",
                (token_hash,),
            )
            return RefreshGrant(RefreshVerdict.GRANTED, *grant)
        if used:
            await conn.execute(
                "UPDATE refresh_tokens SET revoked_at = coalesce(revoked_at, now())"
                " WHERE family = %s",
                (family,),
            )
            return RefreshGrant(RefreshVerdict.REPLAYED, *grant)
        if dead:
            return RefreshGrant(RefreshVerdict.INVALID)
        await conn.execute(
            "UPDATE refresh_tokens SET used_at = now(), revoked_at = now() WHERE token_hash = %s",
            (token_hash,),
        )
    return RefreshGrant(RefreshVerdict.GRANTED, *grant)


async def revoke_user_tokens(conn: psycopg.AsyncConnection, tenant_id: int, user: str) -> None:
    """Every refresh token of the user stops working (a password was reset)."""
    await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = coalesce(revoked_at, now())"
        " WHERE tenant_id = %s AND user_id = %s",
        (tenant_id, user),
    )


async def device_revoked(conn: psycopg.AsyncConnection, tenant_id: int, device: str) -> bool:
    """Whether the tenant's device has been revoked (a device never seen is not)."""
    cursor = await conn.execute(
        "SELECT revoked_at IS NOT NULL FROM devices WHERE tenant_id = %s AND device = %s",
        (tenant_id, device),
    )
    row = await cursor.fetchone()
    return bool(row and row[0])


async def revoked_devices(
    conn: psycopg.AsyncConnection, devices: Sequence[tuple[int, str]]
) -> list[tuple[int, str]]:
    """Of the (tenant id, device) pairs given, those that have been revoked."""
    if not devices:
        return []
    cursor = await conn.execute(
        "SELECT d.tenant_id, d.device FROM devices d"
        " JOIN unnest(%s::bigint[], %s::text[]) AS u (tenant_id, device)"
        "   ON d.tenant_id = u.tenant_id AND d.device = u.device"
        " WHERE d.revoked_at IS NOT NULL",
        ([t for t, _ in devices], [d for _, d in devices]),
    )
    return [(int(tenant), str(device)) for tenant, device in await cursor.fetchall()]


# --- invitations ---------------------------------------------------------------------------


async def create_invitation(
    conn: psycopg.AsyncConnection,
    tenant_id: int,
    user: str,
    code_hash: bytes,
    created_by: str,
    expires_at: datetime,
) -> None:
    """Keep an enrollment code's SHA-256 (never the code) until `expires_at`; the
    user's earlier unused codes stop working."""
    async with conn.transaction():
        await conn.execute(
            "UPDATE invitations SET used_at = now()"
            " WHERE tenant_id = %s AND user_id = %s AND used_at IS NULL",
            (tenant_id, user),
        )
        await conn.execute(
            "INSERT INTO invitations (tenant_id, code_hash, user_id, created_by, expires_at)"
            " VALUES (%s, %s, %s, %s, %s)",
            (tenant_id, code_hash, user, created_by, expires_at),
        )


async def use_invitation(
    conn: psycopg.AsyncConnection, tenant_id: int, user: str, code_hash: bytes
) -> bool:
    """Spend the user's enrollment code (once, before it expires), in the caller's
    transaction; False when it is unknown, another user's, used or expired."""
    cursor = await conn.execute(
        "UPDATE invitations SET used_at = now()"
        " WHERE tenant_id = %s AND code_hash = %s AND user_id = %s"
        "   AND used_at IS NULL AND expires_at > now() RETURNING 1",
        (tenant_id, code_hash, user),
    )
    return await cursor.fetchone() is not None


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
