"""The sync server end to end: real websockets on loopback, a real Postgres."""

from __future__ import annotations

import ast
import asyncio
import json
import time
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from server import audit, store
from server.app import Settings, SyncServer
from server.tokens import TokenExpired, TokenSigner
from tests.server.conftest import (
    ACME_POLICY,
    PASSWORD,
    TEST_KEY,
    add_account,
    cheap_passwords,
    make_tenant,
)
from tests.server.wsclient import Client, decisions, mutation


def document_for(tenant: str) -> dict[str, Any]:
    return ACME_POLICY | {"tenant": tenant}


async def signed_in(
    server: SyncServer,
    tenant: str = "acme",
    user: str = "admin",
    device: str = "dev-1",
    client: str = "cli-1",
    cursor: int = 0,
) -> tuple[Client, dict[str, Any], list[dict[str, Any]]]:
    """A client that signed in and said hello: (client, welcome, catch-up messages)."""
    connection = await Client.connect(server.port)
    answer = await connection.sign_in(tenant, user, PASSWORD, device)
    assert answer["type"] == "signed_in", answer
    welcome, after = await connection.hello(answer["access_token"], device, client, cursor)
    assert welcome["type"] == "welcome", welcome
    return connection, welcome, after


@pytest.fixture
async def acme(migrated: str) -> int:
    tenant_id = await make_tenant(migrated, "acme", document=document_for("acme"))
    for user in ("ann", "carl"):
        await add_account(migrated, tenant_id, user)
    return tenant_id


# --- sign-in -------------------------------------------------------------------------------


async def test_sign_in_issues_tokens_for_the_tenant_and_device(
    server: SyncServer, acme: int
) -> None:
    connection = await Client.connect(server.port)
    answer = await connection.sign_in("acme", "admin", PASSWORD, "dev-1")
    assert answer["type"] == "signed_in"
    assert (answer["tenant"], answer["user"]) == ("acme", "admin")
    claims = server.signer.verify(answer["access_token"], 0)
    assert (claims.tenant_id, claims.device) == (acme, "dev-1")
    await connection.close()


@pytest.mark.parametrize(
    ("tenant", "user", "password"),
    [("acme", "admin", "wrong"), ("acme", "nobody", PASSWORD), ("nope", "admin", PASSWORD),
     ("acme", "dora", PASSWORD)],
)  # fmt: skip
async def test_failed_sign_ins_get_one_message_that_reveals_nothing(
    server: SyncServer, acme: int, tenant: str, user: str, password: str
) -> None:
    connection = await Client.connect(server.port)
    answer = await connection.sign_in(tenant, user, password, "dev-1")
    assert answer["type"] == "error"
    assert (answer["code"], answer["message"]) == (
        "unauthenticated",
        "wrong tenant, user or password",
    )
    assert answer["fatal"] is False
    await connection.close()


async def test_repeated_failed_sign_ins_are_rate_limited_per_user(
    server: SyncServer, acme: int
) -> None:
    connection = await Client.connect(server.port)
    for _ in range(5):
        assert (await connection.sign_in("acme", "ann", "bad", "d"))["code"] == "unauthenticated"
    answer = await connection.sign_in("acme", "ann", PASSWORD, "d")
    assert answer["code"] == "rate_limited"
    assert "try again in" in answer["message"]
    # Another user from elsewhere is not affected by ann's lockout.
    other = await Client.connect(server.port)
    assert (await other.sign_in("acme", "carl", PASSWORD, "d2"))["type"] == "signed_in"
    await connection.close()
    await other.close()


async def test_refresh_token_works_once_and_rotates(server: SyncServer, acme: int) -> None:
    connection = await Client.connect(server.port)
    first = await connection.sign_in("acme", "admin", PASSWORD, "dev-1")
    renewed = await connection.call(
        {"type": "refresh", "refresh_token": first["refresh_token"], "device": "dev-1"}
    )
    assert renewed["type"] == "signed_in"
    assert renewed["refresh_token"] != first["refresh_token"]
    other_device = await connection.call(
        {"type": "refresh", "refresh_token": renewed["refresh_token"], "device": "dev-2"}
    )
    assert other_device["code"] == "unauthenticated"
    used = await connection.call(
        {"type": "refresh", "refresh_token": renewed["refresh_token"], "device": "dev-1"}
    )
    assert used["type"] == "signed_in"
    again = await connection.call(
        {"type": "refresh", "refresh_token": first["refresh_token"], "device": "dev-1"}
    )
    assert again["code"] == "unauthenticated"
    await connection.close()


async def test_a_removed_users_replayed_refresh_token_still_wipes_its_replica(
    server: SyncServer, acme: int
) -> None:
    # Found by the convergence simulation: the answer that told the replica its user was
    # removed is lost; later its token is a replay, and it was refused without a wipe
    # (a password sign-in is then refused as a wrong password: the replica lived on).
    ann = await Client.connect(server.port)
    first = await ann.sign_in("acme", "ann", PASSWORD, "ann-laptop")
    second = await ann.call(
        {"type": "refresh", "refresh_token": first["refresh_token"], "device": "ann-laptop"}
    )
    await ann.call(
        {"type": "refresh", "refresh_token": second["refresh_token"], "device": "ann-laptop"}
    )
    await ann.close()
    admin, welcome, _ = await signed_in(server)
    removed = await admin.push(mutation("cli-1", 1, welcome["version"], op="delete_user",
                                        user_id="ann"))  # fmt: skip
    assert removed["results"][0]["outcome"] == "applied", removed
    late = await Client.connect(server.port)
    refused = await late.call(
        {"type": "refresh", "refresh_token": first["refresh_token"], "device": "ann-laptop"}
    )
    assert (refused["code"], refused["message"]) == ("unauthenticated", "user 'ann' was removed")
    wipe = await late.recv_type("wipe")
    assert wipe["code"] == "user_removed"


async def test_access_tokens_live_as_long_as_the_signers_lifetime(
    migrated: str, pool: Any, acme: int
) -> None:
    # Defect: `Settings.token_lifetime` looked like the knob but nothing read it; the
    # signer's lifetime is the one the server issues (and verifies) tokens with.
    signer = TokenSigner(TEST_KEY, lifetime=120)
    short = SyncServer(pool, migrated, signer, passwords=cheap_passwords(),
                       settings=Settings(port=0, poll_interval=0.2))  # fmt: skip
    await short.start()
    try:
        connection = await Client.connect(short.port)
        before = int(time.time())
        signed = await connection.sign_in("acme", "admin", PASSWORD, "dev-1")
        renewed = await connection.call(
            {"type": "refresh", "refresh_token": signed["refresh_token"], "device": "dev-1"}
        )
        after = int(time.time())
        for answer in (signed, renewed):
            claims = signer.verify(answer["access_token"], before)
            assert claims.expires_at - claims.issued_at == 120
            assert before <= claims.issued_at <= after
            expires = datetime.strptime(answer["access_expires"], "%Y-%m-%dT%H:%M:%SZ")
            assert expires.replace(tzinfo=UTC).timestamp() == claims.expires_at
            with pytest.raises(TokenExpired):
                signer.verify(answer["access_token"], claims.expires_at)
        await connection.close()
    finally:
        await short.shutdown()


def test_every_server_setting_is_read_by_the_server() -> None:
    """A setting nothing reads is a knob that turns nothing (`token_lifetime` was one)."""
    read: set[str] = set()
    for source in Path(__file__).parents[2].joinpath("server").glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value
            owner_name = (
                owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", None)
            )
            if owner_name == "settings":
                read.add(node.attr)
    assert {setting.name for setting in fields(Settings)} - read == set()


# --- hello and catching up ---------------------------------------------------------------


async def test_new_client_catches_up_by_snapshot_then_goes_live(
    server: SyncServer, acme: int
) -> None:
    connection, welcome, after = await signed_in(server)
    assert welcome["catch_up"] == "snapshot"
    snapshot = [m for m in after if m["type"] == "snapshot"]
    assert [m["chunk"] for m in snapshot] == list(range(snapshot[0]["chunks"]))
    users = [u["id"] for m in snapshot for u in m["part"].get("users", [])]
    assert users == ["admin", "ann", "carl", "dora"]
    assert after[-1] == {
        "type": "changes", "from_version": welcome["version"], "to_version": welcome["version"],
        "changes": [], "more": False,
    }  # fmt: skip
    await connection.close()


async def test_client_with_a_cursor_gets_exactly_the_changes_it_missed(
    server: SyncServer, acme: int
) -> None:
    writer, welcome, _ = await signed_in(server)
    base = welcome["version"]
    result = await writer.push(
        mutation("cli-1", 1, base, op="create_user", user_id="eve"),
        mutation("cli-1", 2, base, op="set_user_attribute", user_id="eve", key="depot", value="x"),
    )
    assert [r["outcome"] for r in result["results"]] == ["applied", "applied"]
    reader, welcome2, after = await signed_in(server, user="ann", device="d2", client="c2",
                                              cursor=base)  # fmt: skip
    assert welcome2["catch_up"] == "changes"
    changes = [c for m in after for c in m["changes"]]
    assert [c["version"] for c in changes] == [base + 1, base + 2]
    assert changes[0]["edit"]["op"] == "create_user"
    assert (changes[0]["author"], changes[0]["client"], changes[0]["seq"]) == ("admin", "cli-1", 1)
    await writer.close()
    await reader.close()


# --- pushes --------------------------------------------------------------------------------


async def test_push_is_applied_once_and_a_repeat_gets_the_same_outcome(
    server: SyncServer, acme: int, migrated: str
) -> None:
    connection, welcome, _ = await signed_in(server)
    base = welcome["version"]
    first = await connection.push(mutation("cli-1", 1, base, op="create_user", user_id="eve"))
    again = await connection.push(mutation("cli-1", 1, base, op="create_user", user_id="eve"))
    assert first["results"] == again["results"]
    assert first["results"][0] == {"client": "cli-1", "seq": 1, "outcome": "applied",
                                   "version": base + 1}  # fmt: skip
    async with await psycopg.AsyncConnection.connect(migrated) as conn:
        row = await store.tenant_by_id(conn, acme)
        assert row is not None and row.version == base + 1
    await connection.close()


async def test_each_mutation_gets_exactly_one_outcome_in_order(
    server: SyncServer, acme: int
) -> None:
    connection, welcome, _ = await signed_in(server)
    base = welcome["version"]
    result = await connection.push(
        mutation("cli-1", 1, base, op="create_user", user_id="eve"),
        mutation("cli-1", 2, base, op="assign_role", user_id="eve", role_id="no-such-role"),
        mutation("cli-1", 3, base, op="create_user", user_id=5),
        mutation("cli-1", 4, base + 99, op="create_user", user_id="fay"),
        mutation("cli-1", 5, base, op="assign_role", user_id="eve", role_id="driver"),
    )
    outcomes = [(r["seq"], r["outcome"], r.get("code")) for r in result["results"]]
    assert outcomes == [
        (1, "applied", None), (2, "rejected", "not_found"), (3, "rejected", "invalid"),
        (4, "rejected", "invalid"), (5, "applied", None),
    ]  # fmt: skip
    assert "no role with id 'no-such-role'" in result["results"][1]["reason"]
    assert result["results"][2]["reason"] == "create_user.user_id: must be a string, not a number"
    await connection.close()


async def test_the_server_enforces_the_tenants_policy_on_the_author(
    server: SyncServer, acme: int
) -> None:
    carl, welcome, _ = await signed_in(server, user="carl", device="d-carl", client="c-carl")
    base = welcome["version"]
    result = await carl.push(
        mutation("c-carl", 1, base, op="assign_role", user_id="dora", role_id="driver"),
        mutation("c-carl", 2, base, op="assign_role", user_id="dora", role_id="tenant-admin"),
        mutation("c-carl", 3, base, op="delete_role", role_id="driver"),
    )
    outcomes = [(r["outcome"], r.get("code")) for r in result["results"]]
    assert outcomes == [("applied", None), ("rejected", "forbidden"), ("rejected", "forbidden")]
    assert result["results"][1]["reason"] == (
        "carl may not assign_role (needs role:assign on 'r-admin'): no grant matches role assign"
    )
    await carl.close()


async def test_a_stale_edit_of_a_field_someone_else_changed_is_a_conflict_with_both_values(
    server: SyncServer, acme: int
) -> None:
    admin, welcome, _ = await signed_in(server)
    ann, _, _ = await signed_in(server, user="ann", device="d-ann", client="c-ann")
    base = welcome["version"]
    first = await admin.push(
        mutation("cli-1", 1, base, op="set_user_attribute", user_id="dora", key="depot", value="s")
    )
    assert first["results"][0]["outcome"] == "applied"
    second = await ann.push(
        mutation("c-ann", 1, base, op="set_user_attribute", user_id="dora", key="depot", value="e"),
        mutation("c-ann", 2, base, op="set_user_attribute", user_id="carl", key="depot", value="e"),
    )
    conflict, other = second["results"]
    assert (conflict["outcome"], conflict["code"], conflict["version"]) == (
        "conflict", "concurrent_change", base + 1)  # fmt: skip
    assert conflict["conflict"] == {"member": "user dora attribute depot", "server": "s",
                                    "client": "e"}  # fmt: skip
    assert other["outcome"] == "applied"
    await admin.close()
    await ann.close()


async def test_committed_changes_reach_every_session_of_the_tenant_only(
    server: SyncServer, acme: int, migrated: str
) -> None:
    other_id = await make_tenant(migrated, "other", document=document_for("other"))
    assert other_id != acme
    listeners = [(await signed_in(server, device=f"d{i}", client=f"c{i}"))[0] for i in range(5)]
    outsider, _, _ = await signed_in(server, tenant="other", device="dx", client="cx")
    writer, welcome, _ = await signed_in(server, user="ann", device="dw", client="cw")
    await writer.push(mutation("cw", 1, welcome["version"], op="create_user", user_id="zed"))
    for listener in listeners:
        message = await listener.recv_type("changes")
        assert [c["edit"]["user_id"] for c in message["changes"]] == ["zed"]
    with pytest.raises(TimeoutError):
        await outsider.recv(timeout=0.5)
    for connection in (*listeners, outsider, writer):
        await connection.close()


async def test_a_client_id_of_another_device_is_refused(server: SyncServer, acme: int) -> None:
    first, _, _ = await signed_in(server, device="d1", client="shared")
    connection = await Client.connect(server.port)
    answer = await connection.sign_in("acme", "ann", PASSWORD, "d2")
    welcome, _ = await connection.hello(answer["access_token"], "d2", "shared")
    assert (welcome["type"], welcome["code"], welcome["fatal"]) == ("error", "forbidden", True)
    assert await connection.closed() == 4403
    await first.close()


# --- devices -------------------------------------------------------------------------------


async def test_revoked_device_is_told_to_wipe_and_cannot_come_back(
    server: SyncServer, acme: int, migrated: str
) -> None:
    connection, _, _ = await signed_in(server, device="lost-laptop")
    answer = await (await Client.connect(server.port)).sign_in(
        "acme", "admin", PASSWORD, "lost-laptop"
    )
    async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn:
        assert await store.revoke_device(conn, acme, "lost-laptop")
    wipe = await connection.recv_type("wipe")
    assert (wipe["code"], wipe["reason"]) == (
        "device_revoked", "this device was revoked by an administrator")  # fmt: skip
    assert await connection.closed() == 4409
    again = await Client.connect(server.port)
    refused = await again.sign_in("acme", "admin", PASSWORD, "lost-laptop")
    assert refused["code"] == "revoked"
    assert (await again.recv())["type"] == "wipe"
    refresh = await Client.connect(server.port)
    old = await refresh.call(
        {"type": "refresh", "refresh_token": answer["refresh_token"], "device": "lost-laptop"}
    )
    assert old["code"] == "revoked"
    assert (await refresh.recv())["code"] == "device_revoked"


# --- imports, audit, health ----------------------------------------------------------------


async def test_an_import_tells_live_sessions_to_resync(
    server: SyncServer, acme: int, migrated: str
) -> None:
    connection, _, _ = await signed_in(server)
    from server.tenants import now_instant, replace_policy
    from sync.policy.document import parse_policy

    async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn:
        policy = parse_policy(document_for("acme"), now=now_instant()[0])
        await replace_policy(conn, acme, policy, "admin")
    resync = await connection.recv_type("resync")
    assert "import" in resync["reason"]


async def test_every_change_lands_in_a_verifiable_audit_chain(
    server: SyncServer, acme: int, migrated: str
) -> None:
    connection, welcome, _ = await signed_in(server)
    base = welcome["version"]
    await connection.push(*(mutation("cli-1", i, base, op="create_user", user_id=f"u{i}")
                            for i in range(1, 6)))  # fmt: skip
    async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn:
        verdict = await audit.verify(conn, acme)
        rows = await audit.rows(conn, acme, kind="change")
    assert verdict.ok
    assert [r["payload"]["edit"]["user_id"] for r in rows] == [f"u{i}" for i in range(1, 6)]
    assert {r["actor"] for r in rows} == {"admin"}


async def test_health_readiness_and_metrics_answer_over_plain_http(
    server: SyncServer, acme: int
) -> None:
    connection, welcome, _ = await signed_in(server)
    await connection.push(mutation("cli-1", 1, welcome["version"], op="create_user", user_id="q"))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        assert (await http.get("/healthz")).text == "ok\n"
        assert (await http.get("/readyz")).status_code == 200
        assert (await http.get("/nowhere")).status_code == 404
        metrics = (await http.get("/metrics")).text
    assert 'fleetgate_mutations_total{outcome="applied"} 1' in metrics
    assert "fleetgate_connections 1" in metrics
    assert "fleetgate_broadcast_latency_seconds_count 1" in metrics
    await connection.close()


async def test_shutdown_closes_sessions_with_going_away(server: SyncServer, acme: int) -> None:
    connection, _, _ = await signed_in(server)
    await server.shutdown()
    assert await connection.closed() == 1001


async def test_a_new_server_on_the_same_database_has_everything(
    server: SyncServer, acme: int, migrated: str, pool: Any
) -> None:
    connection, welcome, _ = await signed_in(server)
    base = welcome["version"]
    await connection.push(mutation("cli-1", 1, base, op="create_user", user_id="kept"))
    await server.shutdown()
    restarted = SyncServer(pool, migrated, server.signer, passwords=server.passwords,
                           settings=server.settings)  # fmt: skip
    await restarted.start()
    try:
        again, welcome2, after = await signed_in(restarted, cursor=base)
        assert welcome2["version"] == base + 1
        assert [c["edit"]["user_id"] for m in after for c in m["changes"]] == ["kept"]
        repeat = await again.push(mutation("cli-1", 1, base, op="create_user", user_id="kept"))
        assert repeat["results"][0]["version"] == base + 1
        await again.close()
    finally:
        await restarted.shutdown()


async def test_frames_on_the_wire_are_json_text(server: SyncServer, acme: int) -> None:
    connection = await Client.connect(server.port)
    await connection.send({"type": "ping", "ref": "p"})
    frame = await connection.websocket.recv()
    assert isinstance(frame, str)
    pong = json.loads(frame)
    assert (pong["type"], pong["ref"]) == ("pong", "p")
    assert pong["server_time"].endswith("Z")
    await connection.close()


async def test_pings_are_answered_while_another_session_pushes(
    server: SyncServer, acme: int
) -> None:
    writer, welcome, _ = await signed_in(server)
    pinger = await Client.connect(server.port)
    base = welcome["version"]
    push = asyncio.create_task(
        writer.push(
            *(mutation("cli-1", i, base, op="create_user", user_id=f"p{i}") for i in range(1, 200))
        )
    )
    assert (await pinger.call({"type": "ping"}))["type"] == "pong"
    assert all(r["outcome"] == "applied" for r in (await push)["results"])
    await writer.close()
    await pinger.close()


async def test_offline_decisions_uploaded_land_in_the_audit_chain(
    server: SyncServer, acme: int, migrated: str
) -> None:
    connection, welcome, _ = await signed_in(server, device="laptop")
    assert welcome["decisions_through"] == 0
    chain = decisions("cli-1", 3, policy_version=welcome["version"])
    answer = await connection.call({"type": "record_decisions", "decisions": chain})
    assert (answer["type"], answer["count"], answer["through"], answer["head"]) == (
        "decisions_recorded", 3, 3, chain[-1]["hash"])  # fmt: skip
    bad = await connection.call({"type": "record_decisions", "decisions": [chain[0] | {"at": "x"}]})
    assert (bad["code"], bad["message"]) == (
        "malformed",
        "decisions[0].at: must be an RFC 3339 date-time",
    )
    async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn:
        rows = await audit.rows(conn, acme, kind="decision.offline")
        assert (await audit.verify(conn, acme)).ok
    assert len(rows) == 3
    assert (rows[0]["actor"], rows[0]["device"]) == ("admin", "laptop")
    assert rows[0]["payload"]["decided_at"] == "2026-11-20T06:00:00Z"
    assert [r["payload"]["hash"] for r in rows] == [d["hash"] for d in chain]
    await connection.close()


async def test_doubled_offline_decisions_a_retried_upload_adds_each_decision_once(
    server: SyncServer, acme: int, migrated: str
) -> None:
    """Defect 7: a lost `decisions_recorded` and a retry put duplicates in the audit chain."""
    connection, _, _ = await signed_in(server, device="laptop")
    chain = decisions("cli-1", 4)
    first = await connection.call({"type": "record_decisions", "decisions": chain[:3]})
    retried = await connection.call({"type": "record_decisions", "decisions": chain})
    assert (first["count"], retried["count"], retried["through"]) == (3, 1, 4)
    again, welcome, _ = await signed_in(server, device="laptop")
    assert welcome["decisions_through"] == 4
    async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn:
        rows = await audit.rows(conn, acme, kind="decision.offline")
    assert [r["payload"]["seq"] for r in rows] == [1, 2, 3, 4]
    await connection.close()
    await again.close()


async def test_a_broken_decision_chain_is_refused_and_audited(
    server: SyncServer, acme: int, migrated: str
) -> None:
    connection, _, _ = await signed_in(server, device="laptop")
    chain = decisions("cli-1", 3)
    forged = [chain[0], chain[1] | {"allowed": True}, chain[2]]
    refused = await connection.call({"type": "record_decisions", "decisions": forged})
    assert (refused["code"], refused["message"]) == (
        "chain_broken", "decision 2: its hash is not the hash of its content")  # fmt: skip
    gap = await connection.call({"type": "record_decisions", "decisions": chain[1:]})
    assert gap["message"] == "decision 2: expected decision 1 next"
    not_a_request = decisions("cli-1", 1, request={"action": "read"})
    bad = await connection.call({"type": "record_decisions", "decisions": not_a_request})
    assert "its request is malformed" in bad["message"]
    async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn:
        assert await audit.rows(conn, acme, kind="decision.offline") == []
        broken = await audit.rows(conn, acme, kind="decision.chain_broken")
        assert (await audit.verify(conn, acme)).ok
    assert [b["payload"]["seq"] for b in broken] == [2, 2, 1]
    await connection.close()


async def test_offline_decisions_beyond_the_hourly_quota_are_refused(
    server: SyncServer, acme: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("server.tenants.DECISIONS_PER_HOUR", 5)
    connection, _, _ = await signed_in(server, device="laptop")
    chain = decisions("cli-1", 8)
    assert (await connection.call({"type": "record_decisions", "decisions": chain[:4]}))[
        "count"] == 4  # fmt: skip
    over = await connection.call({"type": "record_decisions", "decisions": chain[4:]})
    assert over["code"] == "rate_limited"
    assert "may upload 5 offline decisions an hour" in over["message"]
    await connection.close()


async def test_a_bug_in_one_session_ends_that_session_only(
    server: SyncServer, acme: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    bystander, _, _ = await signed_in(server, device="d2", client="c2")
    victim, _, _ = await signed_in(server)

    async def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("server.app.Session._push", broken)
    await victim.send({"type": "push", "ref": "x", "mutations": []})
    error = await victim.recv()
    assert (error["code"], error["fatal"]) == ("internal", True)
    assert await victim.closed() == 1011
    assert (await bystander.call({"type": "ping"}))["type"] == "pong"
    await bystander.close()


async def test_after_compaction_old_cursors_get_a_snapshot_and_old_edits_still_merge(
    server: SyncServer, acme: int, migrated: str
) -> None:
    writer, welcome, _ = await signed_in(server)
    base = welcome["version"]
    for seq in range(1, 6):
        await writer.push(
            mutation("cli-1", seq, base + seq - 1, op="create_user", user_id=f"c{seq}")
        )
    async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn:
        assert await store.compact(conn, acme, keep=2) == (base + 3, 0)
        assert [r.version for r in await store.changes_after(conn, acme, 0, 100)] == [
            base + 4, base + 5]  # fmt: skip
    late, welcome2, _ = await signed_in(server, device="d2", client="c2", cursor=base + 1)
    assert welcome2["catch_up"] == "snapshot"
    recent, welcome3, _ = await signed_in(server, device="d3", client="c3", cursor=base + 3)
    assert welcome3["catch_up"] == "changes"
    offline = await late.push(
        mutation("c2", 1, base + 1, op="create_user", user_id="old"),
        mutation("c2", 2, base + 1, op="set_user_attribute", user_id="c5", key="k", value=1),
    )
    assert [r["outcome"] for r in offline["results"]] == ["applied", "rejected"]
    assert offline["results"][1]["code"] == "superseded"  # c5 was created after its base
    for connection in (writer, late, recent):
        await connection.close()


async def test_a_committed_change_is_delivered_to_a_webhook_signed(
    server: SyncServer, acme: int, migrated: str, pool: Any
) -> None:
    from server import webhooks
    from tests.server.test_webhooks import BOX, Receiver

    endpoint = Receiver()
    await endpoint.start()
    try:
        async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn:
            hook = await webhooks.register(
                conn, acme, endpoint.url("/fg"), ["change.committed"], box=BOX
            )
        connection, welcome, _ = await signed_in(server)
        await connection.push(
            mutation("cli-1", 1, welcome["version"], op="create_user", user_id="hooked"),
            mutation("cli-1", 2, welcome["version"], op="delete_role", role_id="nope"),
        )
        async with httpx.AsyncClient() as http:
            assert await webhooks.Deliverer(pool, http, box=BOX).deliver_due() == 1
        (request,) = endpoint.requests
        body = json.loads(request.body)
        assert body["event"] == "change.committed"
        assert body["payload"]["edit"]["user_id"] == "hooked"
        assert webhooks.verify_signature(
            hook.secret, request.headers["fleetgate-signature"], request.body, time.time()
        )
        await connection.close()
    finally:
        await endpoint.stop()


async def test_new_clients_of_one_version_share_one_snapshot_which_can_be_resumed(
    server: SyncServer, acme: int
) -> None:
    first, _, after = await signed_in(server)
    second, _, after2 = await signed_in(server, device="d2", client="c2")
    chunk = next(m for m in after if m["type"] == "snapshot")
    assert chunk == next(m for m in after2 if m["type"] == "snapshot")
    await first.send({"type": "snapshot_resume", "snapshot": chunk["snapshot"], "next_chunk": 0})
    assert await first.recv_type("snapshot") == chunk
    await first.send(
        {"type": "snapshot_resume", "snapshot": chunk["snapshot"], "next_chunk": chunk["chunks"]}
    )
    beyond = await first.recv_type("error")
    assert (beyond["code"], beyond["fatal"]) == ("not_found", False)
    writer_push = await second.push(
        mutation("c2", 1, chunk["version"], op="create_user", user_id="next")
    )
    assert writer_push["results"][0]["outcome"] == "applied"
    third, welcome3, after3 = await signed_in(server, device="d3", client="c3")
    fresh = next(m for m in after3 if m["type"] == "snapshot")
    assert (fresh["version"], fresh["snapshot"] != chunk["snapshot"]) == (welcome3["version"], True)
    for connection in (first, second, third):
        await connection.close()


async def test_stored_entities_load_back_as_the_same_policy_in_the_same_order(
    server: SyncServer, acme: int, migrated: str
) -> None:
    from server.cli import export_document
    from sync.policy.document import export_policy

    connection, welcome, _ = await signed_in(server)
    base = welcome["version"]
    await connection.push(
        mutation("cli-1", 1, base, op="create_user", user_id="x1"),
        mutation("cli-1", 2, base, op="create_role", role_id="r-new", name="new"),
        mutation("cli-1", 3, base, op="create_user", user_id="x2"),
        mutation("cli-1", 4, base, op="delete_user", user_id="carl"),
        mutation("cli-1", 5, base, op="assign_role", user_id="x1", role_id="new"),
        mutation("cli-1", 6, base, op="rename_role", role_id="r-driver", name="chauffeur"),
    )
    stored = json.loads(await export_document(migrated, "acme"))
    tenant = await server.tenants.current(acme)
    assert stored == export_policy(tenant.engine.policy)
    assert [u["id"] for u in stored["users"]] == ["admin", "ann", "dora", "x1", "x2"]
    assert [r["name"] for r in stored["roles"]] == ["tenant-admin", "chauffeur", "clerk", "new"]
    await connection.close()


async def test_shutdown_lets_a_push_in_flight_commit_and_answer_first(
    server: SyncServer, acme: int, migrated: str
) -> None:
    connection, welcome, _ = await signed_in(server)
    base = welcome["version"]
    await connection.send({"type": "push", "ref": "last", "mutations": [
        mutation("cli-1", i, base, op="create_user", user_id=f"s{i}") for i in range(1, 301)
    ]})  # fmt: skip
    while not server.pushes_in_flight:
        await asyncio.sleep(0.001)
    await server.shutdown()
    result = await connection.recv_type("push_result")
    assert [r["version"] for r in result["results"]] == list(range(base + 1, base + 301))
    assert await connection.closed() == 1001
    async with await psycopg.AsyncConnection.connect(migrated) as conn:
        row = await store.tenant_by_id(conn, acme)
    assert row is not None and row.version == base + 300


async def test_every_message_of_a_session_reads_and_writes_its_own_tenant_only(
    server: SyncServer, acme: int, migrated: str
) -> None:
    other = await make_tenant(migrated, "other", document=document_for("other"))
    b, b_welcome, _ = await signed_in(server, tenant="other", device="db", client="cb")
    await b.push(mutation("cb", 1, b_welcome["version"], op="create_user", user_id="only-b"))
    # hello (snapshot and changes) of tenant A sees none of B's changes.
    a, a_welcome, after = await signed_in(server, device="da", client="ca")
    users = [u["id"] for m in after if m["type"] == "snapshot" for u in m["part"].get("users", [])]
    assert "only-b" not in users
    assert a_welcome["tenant"] == "acme"
    assert all(not m.get("changes") for m in after if m["type"] == "changes")
    # push: A's edits land in A; B's version is unchanged.
    await a.push(mutation("ca", 1, a_welcome["version"], op="create_user", user_id="only-a"))
    # record_decisions: into A's audit chain only.
    chain = decisions("ca", 1)
    assert (await a.call({"type": "record_decisions", "decisions": chain}))["count"] == 1
    async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn:
        assert len(await audit.rows(conn, acme, kind="decision.offline")) == 1
        assert await audit.rows(conn, other, kind="decision.offline") == []
        b_row = await store.tenant_by_id(conn, other)
        b_users = [row.after for row in await store.changes_after(conn, other, 0, 100)]
    assert b_row is not None and b_row.version == b_welcome["version"] + 1
    assert not any("user:only-a" in after for after in b_users)
    # refresh: the new tokens are for A.
    signed = await (await Client.connect(server.port)).sign_in("acme", "admin", PASSWORD, "da")
    renewed = await a.call(
        {"type": "refresh", "refresh_token": signed["refresh_token"], "device": "da"}
    )
    assert (renewed["type"], renewed["tenant"]) == ("signed_in", "acme")
    # B's live session got B's change only, never A's.
    seen = await b.recv_type("changes")
    assert [c["edit"]["user_id"] for c in seen["changes"]] == ["only-b"]
    with pytest.raises(TimeoutError):
        await b.recv_type("changes", timeout=0.5)
    await a.close()
    await b.close()


async def test_a_process_keeps_a_bounded_number_of_tenant_engines(
    server: SyncServer, acme: int, migrated: str
) -> None:
    await make_tenant(migrated, "other", document=document_for("other"))
    server.tenants.max_loaded = 1
    a, a_welcome, _ = await signed_in(server, device="da", client="ca")
    b, b_welcome, _ = await signed_in(server, tenant="other", device="db", client="cb")
    for seq in range(1, 4):  # each push loads its tenant again from the database
        for client, name, welcome in ((a, "ca", a_welcome), (b, "cb", b_welcome)):
            base = welcome["version"] + seq - 1
            result = await client.push(
                mutation(name, seq, base, op="create_user", user_id=f"u{seq}")
            )
            assert result["results"][0] == {"client": name, "seq": seq, "outcome": "applied",
                                            "version": base + 1}  # fmt: skip
            assert server.tenants.loaded() == 1
    await a.close()
    await b.close()


async def test_failed_sign_ins_are_limited_across_server_processes(
    server: SyncServer, acme: int, migrated: str, pool: Any
) -> None:
    other = SyncServer(pool, migrated, server.signer, passwords=server.passwords,
                       settings=server.settings)  # fmt: skip
    await other.start()
    try:
        for target in (server, other, server, other, server):  # 5 failures, split
            connection = await Client.connect(target.port)
            answer = await connection.sign_in("acme", "ann", "wrong", "d")
            assert answer["code"] == "unauthenticated"
            await connection.close()
        # Neither process saw 5 failures itself; together they did.
        connection = await Client.connect(other.port)
        limited = await connection.sign_in("acme", "ann", PASSWORD, "d")
        assert limited["code"] == "rate_limited"
        local = other.limiter.blocked(
            tenant="acme", user="ann", address="127.0.0.1", now=time.time()
        )
        assert local == 0
        await connection.close()
    finally:
        await other.shutdown()


async def test_a_snapshot_can_be_resumed_on_another_server_process(
    server: SyncServer, acme: int, migrated: str, pool: Any
) -> None:
    other = SyncServer(pool, migrated, server.signer, passwords=server.passwords,
                       settings=server.settings)  # fmt: skip
    await other.start()
    try:
        first, welcome, after = await signed_in(server)
        chunk = next(m for m in after if m["type"] == "snapshot")
        await first.close()  # the connection drops mid-snapshot
        # Reconnected to another process: it never cut this snapshot, and resumes it.
        again, _, _ = await signed_in(other, cursor=welcome["version"])
        await again.send(
            {"type": "snapshot_resume", "snapshot": chunk["snapshot"], "next_chunk": 0}
        )
        assert await again.recv_type("snapshot") == chunk
        # A snapshot of a version the tenant has left, never cut here, is gone.
        await again.push(mutation("cli-1", 1, welcome["version"], op="create_user", user_id="n"))
        other.snapshots.kept.clear()
        other.snapshots.latest.clear()
        await again.send(
            {"type": "snapshot_resume", "snapshot": chunk["snapshot"], "next_chunk": 0}
        )
        assert (await again.recv_type("error"))["code"] == "not_found"
        await again.close()
    finally:
        await other.shutdown()
