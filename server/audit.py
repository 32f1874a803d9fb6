"""The audit log: append-only and hash-chained, one chain per tenant.

Rules of this module:

- Rows are only ever appended; the `audit_append_only` trigger (migration 2)
  refuses UPDATE and DELETE, and nothing here tries either.
- A tenant's rows are numbered `seq` 1, 2, 3… without gaps. Appends take the
  tenant's row lock (`SELECT 1 FROM tenants WHERE id = %s FOR UPDATE`) in the
  caller's transaction, the same lock a push holds while it bumps the tenant's
  version, so two appends never race for a seq and the chain never forks. The
  last row is read after the lock is held, in a statement of its own, so under
  READ COMMITTED it sees the rows of the transaction that held the lock before.
- `payload` is stored as canonical JSON text: sorted keys, no whitespace,
  UTF-8 text as is (orjson's output; the same as `json.dumps(payload,
  sort_keys=True, separators=(",", ":"), ensure_ascii=False)` but for the
  spelling of some floats), NaN and infinities refused. The hash covers
  exactly that stored text, so verifying never depends on how a JSON value
  would be re-serialised.
- The first row's `prev_hash` is 32 zero bytes; every later row's `prev_hash`
  is the `hash` of the row before it.
- `hash` = SHA-256 over the UTF-8 bytes of the JSON array

      [tenant_id, seq, at, kind, actor, device, payload, prev_hash_hex]

  written with no whitespace (`separators=(",", ":")`, `ensure_ascii=False`):
  two integers, then six strings, the payload being the stored JSON text as a
  string and `prev_hash_hex` the lowercase hex of the previous hash. Each field
  is a delimited JSON value, so no two different rows share an encoding; for
  an array of strings and small integers this is also the RFC 8785 (JCS)
  serialisation, so other languages can recompute it.
- `verify` walks a chain in seq order, a page at a time, and reports the first
  row that is missing, does not follow its predecessor's hash, or does not
  match its own hash. Rows cut off the end of a chain leave no trace inside
  it: anchor the latest hash elsewhere to detect that.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import pq
from psycopg.rows import tuple_row

from sync.replication.encoding import compact_json

ZERO_HASH = bytes(32)
"""The `prev_hash` of a tenant's first row."""

_PAGE_ROWS = 5000  # rows per page while verifying: memory stays flat on long logs

# One literal string per query: nothing is ever spliced into SQL.
_INSERT = """
    WITH appended AS (
        INSERT INTO audit (tenant_id, seq, at, kind, actor, device, payload, prev_hash, hash)
        SELECT %s, r.s, r.at, r.k, r.a, r.d, r.p, decode(r.ph, 'hex'), decode(r.h, 'hex')
        FROM json_to_recordset(%s::json)
            AS r (s bigint, at text, k text, a text, d text, p text, ph text, h text)
    )
    UPDATE tenants SET audit_seq = %s, audit_head = %s WHERE id = %s
"""
_ROWS_AFTER = """
    SELECT seq, at, kind, actor, device, payload, prev_hash, hash FROM audit
    WHERE tenant_id = %s AND seq > %s ORDER BY seq LIMIT %s
"""
_ROWS_OF_KIND_AFTER = """
    SELECT seq, at, kind, actor, device, payload, prev_hash, hash FROM audit
    WHERE tenant_id = %s AND seq > %s AND kind = %s ORDER BY seq LIMIT %s
"""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One event to append; `at` is the RFC 3339 time it happened."""

    kind: str
    actor: str
    device: str
    payload: Mapping[str, Any]
    at: str


@dataclass(frozen=True, slots=True)
class AuditVerdict:
    """What `verify` found.

    `rows` is how many rows were found intact (all of them when the chain is
    whole); `broken_at` is the first seq that is wrong, with `problem` saying how.
    """

    rows: int
    broken_at: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def canonical_payload(payload: Mapping[str, Any]) -> str:
    """The canonical JSON text a payload is stored and hashed as (sorted keys, no
    whitespace, UTF-8 text as is).

    Raises ValueError when the payload is not plain JSON (NaN or infinity, a
    value JSON has no type for, a string that is not valid Unicode).
    """
    try:
        data = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    except TypeError as error:
        if "Integer exceeds 64-bit range" not in str(error):
            raise ValueError(f"the audit payload is not plain JSON: {error}") from error
        return _canonical_slowly(payload)
    if b"null" in data and _not_finite(payload):  # orjson writes NaN as null
        raise ValueError("the audit payload is not plain JSON: NaN or infinity")
    return data.decode()


def _canonical_slowly(payload: Mapping[str, Any]) -> str:
    try:
        text = json.dumps(
            payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        text.encode("utf-8")  # a lone surrogate would only fail later, in the driver
    except (TypeError, ValueError) as error:
        raise ValueError(f"the audit payload is not plain JSON: {error}") from error
    return text


def _not_finite(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def row_hash(
    tenant_id: int,
    seq: int,
    at: str,
    kind: str,
    actor: str,
    device: str,
    payload: str,
    prev_hash: bytes,
) -> bytes:
    """The hash of one row, by the encoding in the module docstring; `payload`
    is the stored canonical JSON text."""
    fields = [tenant_id, seq, at, kind, actor, device, payload, prev_hash.hex()]
    encoded = json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode("utf-8")).digest()


async def append(
    conn: psycopg.AsyncConnection[Any],
    tenant_id: int,
    *,
    kind: str,
    actor: str,
    device: str,
    payload: Mapping[str, Any],
    at: str,
) -> int:
    """Append one row to the tenant's audit log and return its seq.

    Runs in the caller's transaction (or in one of its own on an autocommit
    connection outside a transaction). Raises ValueError when the payload is
    not plain JSON and LookupError when there is no such tenant.
    """
    entry = AuditEntry(kind=kind, actor=actor, device=device, payload=payload, at=at)
    (seq,) = await append_many(conn, tenant_id, [entry])
    return seq


async def append_many(
    conn: psycopg.AsyncConnection[Any], tenant_id: int, entries: Sequence[AuditEntry]
) -> list[int]:
    """Append the entries in order, under one lock and in one INSERT; return their seqs.

    Same transaction rules and errors as `append`; nothing is written when one
    entry's payload is refused.
    """
    if not entries:
        return []
    payloads = [canonical_payload(entry.payload) for entry in entries]
    async with _transaction(conn):
        cursor = conn.cursor(row_factory=tuple_row)
        # The chain's head is kept with the tenant (and locked with it): the
        # next row follows it, and verify can tell a log cut short.
        await cursor.execute(
            "SELECT audit_seq, audit_head FROM tenants WHERE id = %s FOR UPDATE", (tenant_id,)
        )
        head = await cursor.fetchone()
        if head is None:
            raise LookupError(f"there is no tenant {tenant_id}")
        seq, prev_hash = int(head[0]), bytes(head[1]) if head[1] is not None else ZERO_HASH

        seqs: list[int] = []
        prev_hashes: list[bytes] = []
        hashes: list[bytes] = []
        for entry, payload in zip(entries, payloads, strict=True):
            seq += 1
            digest = row_hash(
                tenant_id, seq, entry.at, entry.kind, entry.actor, entry.device, payload, prev_hash
            )
            seqs.append(seq)
            prev_hashes.append(prev_hash)
            hashes.append(digest)
            prev_hash = digest

        # One JSON parameter (json_to_recordset): encoded once, in C.
        rows = [
            {"s": s, "at": e.at, "k": e.kind, "a": e.actor, "d": e.device, "p": text,
             "ph": prev.hex(), "h": digest.hex()}
            for s, e, text, prev, digest in zip(seqs, entries, payloads, prev_hashes, hashes,
                                                 strict=True)
        ]  # fmt: skip
        # The rows and the chain's new head, in one statement.
        await conn.execute(_INSERT, (tenant_id, compact_json(rows), seq, prev_hash, tenant_id))
    return seqs


async def verify(conn: psycopg.AsyncConnection[Any], tenant_id: int) -> AuditVerdict:
    """Recompute the tenant's chain from its first row and report the first fault.

    Reads keyset pages of a few thousand rows, never the whole log at once.
    """
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute("SELECT audit_seq, audit_head FROM tenants WHERE id = %s", (tenant_id,))
    kept = await cursor.fetchone()
    head_seq, head_hash = (int(kept[0]), kept[1]) if kept else (0, None)
    intact = 0
    prev_hash = ZERO_HASH
    while True:
        await cursor.execute(_ROWS_AFTER, (tenant_id, intact, _PAGE_ROWS))
        page = await cursor.fetchall()
        for seq, at, kind, actor, device, payload, stored_prev, stored_hash in page:
            expected = intact + 1
            if seq != expected:
                missing = (
                    f"row {expected} is missing"
                    if seq == expected + 1
                    else f"rows {expected} to {seq - 1} are missing"
                )
                return AuditVerdict(intact, expected, missing)
            if stored_prev != prev_hash:
                follows = f"row {seq - 1}'s hash" if seq > 1 else "the zero hash"
                return AuditVerdict(intact, seq, f"row {seq}: does not follow {follows}")
            digest = row_hash(tenant_id, seq, at, kind, actor, device, payload, prev_hash)
            if stored_hash != digest:
                return AuditVerdict(intact, seq, f"row {seq}: its content does not match its hash")
            if seq == head_seq and head_hash is not None and bytes(head_hash) != digest:
                return AuditVerdict(
                    intact, seq, f"row {seq}: does not match the chain head kept with the tenant"
                )
            intact = seq
            prev_hash = digest
        if len(page) < _PAGE_ROWS:
            if intact < head_seq:  # rows appended later than the head was read are fine
                return AuditVerdict(
                    intact, intact + 1,
                    f"the log ends at row {intact}, but the chain head says {head_seq}",
                )  # fmt: skip
            return AuditVerdict(intact)


async def rows(
    conn: psycopg.AsyncConnection[Any],
    tenant_id: int,
    *,
    after_seq: int = 0,
    limit: int = 1000,
    kind: str | None = None,
) -> list[dict[str, Any]]:
    """A page of the tenant's log in seq order, for export and search.

    Each row is a dict with seq, at, kind, actor, device, payload (parsed back
    to an object), prev_hash and hash (lowercase hex). Page on with the last
    seq as `after_seq`. Raises ValueError when `limit` is below 1.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    cursor = conn.cursor(row_factory=tuple_row)
    if kind is None:
        await cursor.execute(_ROWS_AFTER, (tenant_id, after_seq, limit))
    else:
        await cursor.execute(_ROWS_OF_KIND_AFTER, (tenant_id, after_seq, kind, limit))
    return [
        {
            "seq": seq,
            "at": at,
            "kind": row_kind,
            "actor": actor,
            "device": device,
            "payload": json.loads(payload),
            "prev_hash": prev_hash.hex(),
            "hash": digest.hex(),
        }
        for seq, at, row_kind, actor, device, payload, prev_hash, digest in await cursor.fetchall()
    ]


@asynccontextmanager
async def _transaction(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[None]:
    """The caller's transaction when there is one, else a new one: on an
    autocommit connection each statement would commit alone, releasing the
    tenant lock before the INSERT."""
    if conn.autocommit and conn.info.transaction_status == pq.TransactionStatus.IDLE:
        async with conn.transaction():
            yield
    else:
        yield
