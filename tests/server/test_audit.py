"""server.audit against a real Postgres: the hash chain, its trigger, tampering."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import psycopg
import pytest

from server import audit
from server.audit import (
    AuditEntry,
    AuditVerdict,
    append,
    append_many,
    row_hash,
    rows,
    verify,
)

AT = "2025-03-01T12:00:00Z"


async def _tenant(conn: psycopg.AsyncConnection[Any], name: str = "acme") -> int:
    cursor = await conn.execute("INSERT INTO tenants (name) VALUES (%s) RETURNING id", (name,))
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


def _entries(count: int) -> list[AuditEntry]:
    return [
        AuditEntry(
            kind="change.committed" if n % 2 else "device.revoked",
            actor=f"user-{n}",
            device="laptop",
            payload={"n": n, "note": "é ✓", "nested": {"b": [1, 2], "a": None}},
            at=f"2025-03-01T12:00:{n:02d}Z",
        )
        for n in range(count)
    ]


async def _append_entries(
    conn: psycopg.AsyncConnection[Any], tenant: int, entries: list[AuditEntry]
) -> list[int]:
    return [
        await append(
            conn,
            tenant,
            kind=entry.kind,
            actor=entry.actor,
            device=entry.device,
            payload=entry.payload,
            at=entry.at,
        )
        for entry in entries
    ]


async def _hashes(conn: psycopg.AsyncConnection[Any], tenant: int) -> list[tuple[int, bytes]]:
    cursor = await conn.execute(
        "SELECT seq, hash FROM audit WHERE tenant_id = %s ORDER BY seq", (tenant,)
    )
    return [(seq, digest) for seq, digest in await cursor.fetchall()]


async def _without_triggers(conn: psycopg.AsyncConnection[Any]) -> None:
    """Play the attacker with database access: ordinary triggers stop firing."""
    await conn.execute("SET session_replication_role = replica")


async def test_appends_are_numbered_from_one_and_the_chain_verifies(
    aconn: psycopg.AsyncConnection[Any],
) -> None:
    tenant = await _tenant(aconn)
    assert await _append_entries(aconn, tenant, _entries(5)) == [1, 2, 3, 4, 5]
    verdict = await verify(aconn, tenant)
    assert verdict == AuditVerdict(rows=5)
    assert verdict.ok


async def test_an_empty_log_verifies_with_no_rows(aconn: psycopg.AsyncConnection[Any]) -> None:
    tenant = await _tenant(aconn)
    assert await verify(aconn, tenant) == AuditVerdict(rows=0, broken_at=None, problem=None)


async def test_each_row_follows_the_previous_hash_from_the_zero_hash(
    aconn: psycopg.AsyncConnection[Any],
) -> None:
    tenant = await _tenant(aconn)
    await append_many(aconn, tenant, _entries(3))
    exported = await rows(aconn, tenant)
    assert [row["prev_hash"] for row in exported] == [
        "00" * 32,
        exported[0]["hash"],
        exported[1]["hash"],
    ]


async def test_the_hash_is_sha256_of_the_documented_encoding(
    aconn: psycopg.AsyncConnection[Any],
) -> None:
    tenant = await _tenant(aconn)
    await append(
        aconn, tenant, kind="k", actor="ann", device="d1", payload={"b": 1, "a": "é"}, at=AT
    )
    (row,) = await rows(aconn, tenant)
    stored = '{"a":"é","b":1}'
    encoded = json.dumps(
        [tenant, 1, AT, "k", "ann", "d1", stored, "00" * 32],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    assert row["hash"] == hashlib.sha256(encoded.encode("utf-8")).hexdigest()


async def test_the_payload_is_stored_as_canonical_json(
    aconn: psycopg.AsyncConnection[Any],
) -> None:
    tenant = await _tenant(aconn)
    payload = {"z": [1, {"y": 2, "x": 1}], "a": "ü"}
    await append(aconn, tenant, kind="k", actor="a", device="d", payload=payload, at=AT)
    cursor = await aconn.execute("SELECT payload FROM audit WHERE tenant_id = %s", (tenant,))
    assert await cursor.fetchone() == ('{"a":"ü","z":[1,{"x":1,"y":2}]}',)
    assert (await rows(aconn, tenant))[0]["payload"] == payload


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), {1, 2}])
async def test_a_payload_that_is_not_plain_json_is_refused_and_nothing_is_written(
    aconn: psycopg.AsyncConnection[Any], bad: object
) -> None:
    tenant = await _tenant(aconn)
    with pytest.raises(ValueError, match="not plain JSON"):
        await append_many(aconn, tenant, [*_entries(2), AuditEntry("k", "a", "d", {"x": bad}, AT)])
    assert await verify(aconn, tenant) == AuditVerdict(rows=0)


async def test_appending_for_an_unknown_tenant_raises_lookup_error(
    aconn: psycopg.AsyncConnection[Any],
) -> None:
    with pytest.raises(LookupError, match="no tenant 999"):
        await append(aconn, 999, kind="k", actor="a", device="d", payload={}, at=AT)


async def test_append_many_writes_the_same_rows_as_appending_one_by_one(
    aconn: psycopg.AsyncConnection[Any],
) -> None:
    tenant = await _tenant(aconn)
    entries = _entries(7)
    await append(aconn, tenant, kind="k", actor="a", device="d", payload={"first": True}, at=AT)
    async with aconn.transaction(force_rollback=True):
        assert await _append_entries(aconn, tenant, entries) == list(range(2, 9))
        one_by_one = await _hashes(aconn, tenant)
    assert await append_many(aconn, tenant, entries) == list(range(2, 9))
    assert await _hashes(aconn, tenant) == one_by_one
    assert await append_many(aconn, tenant, []) == []
    assert await verify(aconn, tenant) == AuditVerdict(rows=8)


async def test_each_tenant_has_its_own_chain(aconn: psycopg.AsyncConnection[Any]) -> None:
    acme, globex = await _tenant(aconn, "acme"), await _tenant(aconn, "globex")
    await append_many(aconn, acme, _entries(3))
    assert await append_many(aconn, globex, _entries(2)) == [1, 2]
    assert await append_many(aconn, acme, _entries(1)) == [4]
    assert await verify(aconn, acme) == AuditVerdict(rows=4)
    assert await verify(aconn, globex) == AuditVerdict(rows=2)
    assert (await rows(aconn, globex))[0]["prev_hash"] == "00" * 32


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit SET actor = 'mallory' WHERE tenant_id = %s AND seq = 2",
        "DELETE FROM audit WHERE tenant_id = %s AND seq = 2",
    ],
)
async def test_update_and_delete_are_refused_by_the_trigger(
    aconn: psycopg.AsyncConnection[Any], statement: str
) -> None:
    tenant = await _tenant(aconn)
    await append_many(aconn, tenant, _entries(3))
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        await aconn.execute(statement, (tenant,))
    assert await verify(aconn, tenant) == AuditVerdict(rows=3)


async def test_an_edited_payload_is_reported_at_its_row(
    aconn: psycopg.AsyncConnection[Any],
) -> None:
    tenant = await _tenant(aconn)
    await append_many(aconn, tenant, _entries(10))
    await _without_triggers(aconn)
    await aconn.execute(
        "UPDATE audit SET payload = %s WHERE tenant_id = %s AND seq = 7", ('{"n":70}', tenant)
    )
    assert await verify(aconn, tenant) == AuditVerdict(
        rows=6, broken_at=7, problem="row 7: its content does not match its hash"
    )


async def test_an_edited_row_with_a_recomputed_hash_breaks_the_chain_at_the_next_row(
    aconn: psycopg.AsyncConnection[Any],
) -> None:
    tenant = await _tenant(aconn)
    await append_many(aconn, tenant, _entries(10))
    (row,) = await rows(aconn, tenant, after_seq=6, limit=1)
    forged = audit.row_hash(
        tenant,
        7,
        row["at"],
        row["kind"],
        row["actor"],
        row["device"],
        '{"n":70}',
        bytes.fromhex(row["prev_hash"]),
    )
    await _without_triggers(aconn)
    await aconn.execute(
        "UPDATE audit SET payload = %s, hash = %s WHERE tenant_id = %s AND seq = 7",
        ('{"n":70}', forged, tenant),
    )
    assert await verify(aconn, tenant) == AuditVerdict(
        rows=7, broken_at=8, problem="row 8: does not follow row 7's hash"
    )


async def test_a_deleted_middle_row_is_reported_missing(
    aconn: psycopg.AsyncConnection[Any],
) -> None:
    tenant = await _tenant(aconn)
    await append_many(aconn, tenant, _entries(10))
    await _without_triggers(aconn)
    await aconn.execute("DELETE FROM audit WHERE tenant_id = %s AND seq = 5", (tenant,))
    assert await verify(aconn, tenant) == AuditVerdict(
        rows=4, broken_at=5, problem="row 5 is missing"
    )
    await aconn.execute("DELETE FROM audit WHERE tenant_id = %s AND seq = 6", (tenant,))
    assert (await verify(aconn, tenant)).problem == "rows 5 to 6 are missing"


async def test_a_deleted_first_row_is_reported_missing(
    aconn: psycopg.AsyncConnection[Any],
) -> None:
    tenant = await _tenant(aconn)
    await append_many(aconn, tenant, _entries(3))
    await _without_triggers(aconn)
    await aconn.execute("DELETE FROM audit WHERE tenant_id = %s AND seq = 1", (tenant,))
    assert await verify(aconn, tenant) == AuditVerdict(0, 1, "row 1 is missing")


async def test_rows_cut_off_the_end_are_reported_against_the_kept_head(
    aconn: psycopg.AsyncConnection[Any],
) -> None:
    tenant = await _tenant(aconn)
    await append_many(aconn, tenant, _entries(6))
    await _without_triggers(aconn)
    await aconn.execute("DELETE FROM audit WHERE tenant_id = %s AND seq > 4", (tenant,))
    assert await verify(aconn, tenant) == AuditVerdict(
        4, 5, "the log ends at row 4, but the chain head says 6"
    )


async def test_a_last_row_rewritten_with_its_own_hash_differs_from_the_kept_head(
    aconn: psycopg.AsyncConnection[Any],
) -> None:
    tenant = await _tenant(aconn)
    await append_many(aconn, tenant, _entries(3))
    await _without_triggers(aconn)
    (at, kind, actor, device, prev) = await (await aconn.execute(
        "SELECT at, kind, actor, device, prev_hash FROM audit WHERE tenant_id = %s AND seq = 3",
        (tenant,))).fetchone()  # fmt: skip
    forged = row_hash(tenant, 3, at, kind, actor, device, '{"forged":true}', prev)
    await aconn.execute(
        "UPDATE audit SET payload = '{\"forged\":true}', hash = %s"
        " WHERE tenant_id = %s AND seq = 3", (forged, tenant))  # fmt: skip
    assert await verify(aconn, tenant) == AuditVerdict(
        2, 3, "row 3: does not match the chain head kept with the tenant"
    )


async def test_verify_follows_the_chain_across_pages(
    aconn: psycopg.AsyncConnection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit, "_PAGE_ROWS", 3)
    tenant = await _tenant(aconn)
    await append_many(aconn, tenant, _entries(9))
    assert await verify(aconn, tenant) == AuditVerdict(rows=9)
    await _without_triggers(aconn)
    await aconn.execute(
        "UPDATE audit SET actor = 'mallory' WHERE tenant_id = %s AND seq = 8", (tenant,)
    )
    assert await verify(aconn, tenant) == AuditVerdict(
        7, 8, "row 8: its content does not match its hash"
    )


async def test_concurrent_transactions_on_one_tenant_make_one_gap_free_chain(
    aconn: psycopg.AsyncConnection[Any], migrated: str
) -> None:
    tenant = await _tenant(aconn)
    async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as other:

        async def writer(conn: psycopg.AsyncConnection[Any], name: str) -> list[int]:
            seqs: list[int] = []
            for n in range(8):
                async with conn.transaction():
                    seqs += await append_many(
                        conn, tenant, [AuditEntry("k", name, "d", {"n": n}, AT)] * 2
                    )
                    await asyncio.sleep(0)  # let the other writer queue on the lock
            return seqs

        first, second = await asyncio.gather(writer(aconn, "ann"), writer(other, "bob"))
    assert sorted(first + second) == list(range(1, 33))
    assert await verify(aconn, tenant) == AuditVerdict(rows=32)


async def test_concurrent_appends_outside_transactions_also_chain(
    aconn: psycopg.AsyncConnection[Any], migrated: str
) -> None:
    tenant = await _tenant(aconn)
    async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as other:
        await asyncio.gather(
            _append_entries(aconn, tenant, _entries(10)),
            _append_entries(other, tenant, _entries(10)),
        )
    assert await verify(aconn, tenant) == AuditVerdict(rows=20)


async def test_rows_pages_after_a_seq_and_filters_by_kind(
    aconn: psycopg.AsyncConnection[Any],
) -> None:
    tenant = await _tenant(aconn)
    await append_many(aconn, tenant, _entries(6))
    assert [row["seq"] for row in await rows(aconn, tenant, after_seq=2, limit=3)] == [3, 4, 5]
    revoked = await rows(aconn, tenant, kind="device.revoked")
    assert [row["seq"] for row in revoked] == [1, 3, 5]
    assert revoked[0] == {
        "seq": 1,
        "at": "2025-03-01T12:00:00Z",
        "kind": "device.revoked",
        "actor": "user-0",
        "device": "laptop",
        "payload": {"n": 0, "note": "é ✓", "nested": {"b": [1, 2], "a": None}},
        "prev_hash": "00" * 32,
        "hash": revoked[0]["hash"],
    }
    assert len(bytes.fromhex(revoked[0]["hash"])) == 32
    with pytest.raises(ValueError, match="at least 1"):
        await rows(aconn, tenant, limit=0)
