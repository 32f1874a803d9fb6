"""The named sync scenarios of the merge-rules issue, end to end: real websockets on
loopback, the real server, a real Postgres. Each test is one scenario."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from server import store
from server.app import Settings, SyncServer
from server.tenants import SERVER_OPS
from server.tokens import TokenSigner
from sync.policy.instant import parse_instant
from tests.server.conftest import PASSWORD, TEST_KEY, add_account, cheap_passwords, make_tenant
from tests.server.test_app import document_for, signed_in
from tests.server.wsclient import Client, mutation

READ = {"resource": "vehicle", "actions": ["read"]}
DISPATCH = {"resource": "vehicle", "actions": ["dispatch"]}


@pytest.fixture
async def acme(migrated: str) -> int:
    tenant_id = await make_tenant(migrated, "acme", document=document_for("acme"))
    for user in ("ann", "carl", "dora"):
        await add_account(migrated, tenant_id, user)
    return tenant_id


async def _stored(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute(sql, params)
        return await cursor.fetchall()


# --- merge rules -------------------------------------------------------------------------


async def test_two_admins_add_different_grants_to_one_role_both_apply_one_merged(
    server: SyncServer, acme: int
) -> None:
    admin, welcome, _ = await signed_in(server)
    ann, _, _ = await signed_in(server, user="ann", device="d-ann", client="c-ann")
    base = welcome["version"]
    first = await admin.push(mutation("cli-1", 1, base, op="add_rule", owner="role:r-driver",
                                      effect="grant", rule=DISPATCH))  # fmt: skip
    second = await ann.push(mutation("c-ann", 1, base, op="add_rule", owner="role:r-driver",
                                     effect="deny", rule=READ))  # fmt: skip
    assert [r["outcome"] for r in first["results"] + second["results"]] == ["applied", "merged"]
    role = (await server.tenants.current(acme)).engine.policy.roles["r-driver"]
    assert (len(role.grants), len(role.denies)) == (2, 1)
    # Two commits in quick succession may reach a session in one message or in two.
    seen: list[dict[str, Any]] = []
    while len(seen) < 2:
        seen += (await admin.recv_type("changes"))["changes"]
    assert [c["edit"]["effect"] for c in seen] == ["grant", "deny"]  # ann's reached the admin
    await admin.close()
    await ann.close()


async def test_a_stale_grant_after_a_revoke_is_superseded(server: SyncServer, acme: int) -> None:
    admin, welcome, _ = await signed_in(server)
    ann, _, _ = await signed_in(server, user="ann", device="d-ann", client="c-ann")
    base = welcome["version"]
    revoke = await admin.push(mutation("cli-1", 1, base, op="remove_rule", owner="role:r-driver",
                                       effect="grant", rule=READ))  # fmt: skip
    stale = await ann.push(mutation("c-ann", 1, base, op="add_rule", owner="role:r-driver",
                                    effect="grant", rule=READ))  # fmt: skip
    assert revoke["results"][0]["outcome"] == "applied"
    (result,) = stale["results"]
    assert (result["outcome"], result["code"], result["version"]) == (
        "rejected", "superseded", base + 1)  # fmt: skip
    assert (await server.tenants.current(acme)).engine.policy.roles["r-driver"].grants == ()
    await admin.close()
    await ann.close()


async def test_role_reborn_an_assignment_against_an_older_base_is_superseded(
    server: SyncServer, acme: int
) -> None:
    admin, welcome, _ = await signed_in(server)
    ann, _, _ = await signed_in(server, user="ann", device="d-ann", client="c-ann")
    base = welcome["version"]
    await admin.push(
        mutation("cli-1", 1, base, op="delete_role", role_id="r-driver"),
        mutation("cli-1", 2, base + 1, op="create_role", role_id="r-driver", name="driver"),
    )
    late = await ann.push(mutation("c-ann", 1, base, op="assign_role", user_id="dora",
                                   role_id="r-driver"))  # fmt: skip
    assert (late["results"][0]["outcome"], late["results"][0]["code"]) == ("rejected", "superseded")
    assert (await server.tenants.current(acme)).engine.policy.users["dora"].roles == ()
    await admin.close()
    await ann.close()


async def test_compacted_while_offline_edits_still_merge(
    server: SyncServer, acme: int, migrated: str
) -> None:
    admin, welcome, _ = await signed_in(server)
    base = welcome["version"]
    for seq in range(1, 4):
        await admin.push(mutation("cli-1", seq, base + seq - 1, op="set_user_attribute",
                                  user_id="carl", key="n", value=seq))  # fmt: skip
    async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn:
        horizon, _ = await store.compact(conn, acme, keep=0)
    assert horizon == base + 3
    offline, welcome2, _ = await signed_in(server, user="ann", device="d-ann", client="c-ann",
                                           cursor=base)  # fmt: skip
    assert welcome2["catch_up"] == "snapshot"
    result = await offline.push(
        mutation("c-ann", 1, base, op="set_user_attribute", user_id="dora", key="depot", value="e"),
        mutation("c-ann", 2, base, op="add_rule", owner="role:r-clerk", effect="deny", rule=READ),
        mutation("c-ann", 3, base, op="set_user_attribute", user_id="carl", key="n", value=9),
    )
    assert [(r["outcome"], r.get("code")) for r in result["results"]] == [
        ("applied", None), ("applied", None), ("conflict", "concurrent_change")]  # fmt: skip
    assert result["results"][2]["conflict"] == {"member": "user carl attribute n", "server": 3,
                                                "client": 9}  # fmt: skip
    await admin.close()
    await offline.close()


async def test_a_backend_terminated_mid_pipeline_loses_and_doubles_nothing(
    server: SyncServer, acme: int, migrated: str
) -> None:
    """Pushes are sent back to back; Postgres drops every server connection after the
    first answer. Each push is then answered (applied, or an error: internal, or
    seq_gap behind a failed one), and the client pushes again from the expected
    seq: in the end every mutation is applied exactly once, none `stale`."""
    client, welcome, _ = await signed_in(server)
    base = welcome["version"]
    pushes = [
        [mutation("cli-1", n, base, op="create_user", user_id=f"p{n}")
         for n in range(1 + 20 * i, 21 + 20 * i)]
        for i in range(8)
    ]  # fmt: skip
    refs = []
    for batch in pushes:
        ref = client.ref()
        refs.append(ref)
        await client.send({"type": "push", "ref": ref, "mutations": batch})
    answers: dict[str, dict[str, Any]] = {}
    killed = False
    while len(answers) < len(refs):
        message = await client.recv()
        if message.get("ref") in refs:
            answers[message["ref"]] = message
            if not killed:
                await _stored(migrated, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                              " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                              " AND backend_type = 'client backend'")  # fmt: skip
                killed = True
    outcomes: dict[int, dict[str, Any]] = {}
    for answer in answers.values():
        if answer["type"] == "push_result":
            outcomes |= {r["seq"]: r for r in answer["results"]}
        else:
            assert answer["code"] in ("internal", "seq_gap"), answer
    everything = [m for batch in pushes for m in batch]
    for _round in range(10):
        missing = [m for m in everything if m["seq"] not in outcomes]
        if not missing:
            break
        answer = await client.push(*missing[:500])
        if answer["type"] == "push_result":
            outcomes |= {r["seq"]: r for r in answer["results"]}
    assert sorted(outcomes) == list(range(1, 161))
    assert {r["outcome"] for r in outcomes.values()} == {"applied"}
    assert sorted(r["version"] for r in outcomes.values()) == list(range(base + 1, base + 161))
    stored = await _stored(migrated, "SELECT version FROM change_log WHERE tenant_id = %s"
                           " AND version > %s ORDER BY version", acme, base)  # fmt: skip
    assert [v for (v,) in stored] == list(range(base + 1, base + 161))
    users = (await server.tenants.current(acme)).engine.policy.users
    assert all(f"p{n}" in users for n in range(1, 161))
    await client.close()


# --- sessions that end -------------------------------------------------------------------


async def test_a_user_deleted_while_live_is_wiped_within_a_second(
    server: SyncServer, acme: int
) -> None:
    admin, welcome, _ = await signed_in(server)
    ann, _, _ = await signed_in(server, user="ann", device="d-ann", client="c-ann")
    await admin.push(mutation("cli-1", 1, welcome["version"], op="delete_user", user_id="ann"))
    wipe = await ann.recv_type("wipe", timeout=1.0)
    assert (wipe["code"], wipe["reason"]) == ("user_removed", "user 'ann' was removed")
    assert await ann.closed() == 4409
    again = await Client.connect(server.port)
    refused = await again.sign_in("acme", "ann", PASSWORD, "d-ann")
    assert (refused["code"], refused["message"]) == (
        "unauthenticated",
        "wrong tenant, user or password",
    )
    await admin.close()
    await again.close()


async def test_a_suspended_users_live_session_ends_at_once_and_they_cannot_come_back(
    server: SyncServer, acme: int
) -> None:
    admin, welcome, _ = await signed_in(server)
    ann = await Client.connect(server.port)
    signed = await ann.sign_in("acme", "ann", PASSWORD, "d-ann")
    await ann.hello(signed["access_token"], "d-ann", "c-ann")
    await admin.push(mutation("cli-1", 1, welcome["version"], op="suspend_user", user_id="ann"))
    error = await ann.recv_type("error", timeout=1.0)
    assert (error["code"], error["fatal"]) == ("suspended", True)
    assert await ann.closed() == 4423
    back = await Client.connect(server.port)
    assert (await back.sign_in("acme", "ann", PASSWORD, "d-ann"))["code"] == "suspended"
    refreshed = await back.call(
        {"type": "refresh", "refresh_token": signed["refresh_token"], "device": "d-ann"}
    )
    assert refreshed["code"] == "suspended"
    hello, _ = await back.hello(signed["access_token"], "d-ann", "c-ann")
    assert (hello["code"], await back.closed()) == ("suspended", 4423)
    await admin.close()


async def test_a_refresh_refused_while_suspended_spends_nothing_and_works_once_resumed(
    server: SyncServer, acme: int
) -> None:
    """Defect: the token was spent before the suspension was looked at, so a client that
    refreshed while suspended had to sign in with a password once resumed."""
    admin, welcome, _ = await signed_in(server)
    base = welcome["version"]
    laptop = await Client.connect(server.port)
    signed = await laptop.sign_in("acme", "ann", PASSWORD, "d-ann")
    await laptop.close()
    await admin.push(mutation("cli-1", 1, base, op="suspend_user", user_id="ann"))
    back = await Client.connect(server.port)
    refresh = {"type": "refresh", "refresh_token": signed["refresh_token"], "device": "d-ann"}
    for _ in range(2):
        refused = await back.call(refresh)
        assert (refused["code"], refused["message"], refused["fatal"]) == (
            "suspended", "user 'ann' is suspended", False)  # fmt: skip
    await admin.push(mutation("cli-1", 2, base + 1, op="resume_user", user_id="ann"))
    renewed = await back.call(refresh)
    assert (renewed["type"], renewed["user"]) == ("signed_in", "ann"), renewed
    hello, _ = await back.hello(renewed["access_token"], "d-ann", "c-ann", base + 2)
    assert hello["type"] == "welcome", hello
    rotated = await back.call({"type": "refresh", "refresh_token": renewed["refresh_token"],
                               "device": "d-ann"})  # fmt: skip
    assert rotated["type"] == "signed_in"
    # Spent by the refresh after the resumption: it works once, as any refresh token.
    assert (await back.call(refresh))["code"] == "unauthenticated"
    await back.close()
    await admin.close()


async def test_a_refresh_token_replayed_while_suspended_still_revokes_the_family(
    server: SyncServer, acme: int
) -> None:
    admin, welcome, _ = await signed_in(server)
    base = welcome["version"]
    ann = await Client.connect(server.port)
    first = await ann.sign_in("acme", "ann", PASSWORD, "d-ann")
    second = await ann.call(
        {"type": "refresh", "refresh_token": first["refresh_token"], "device": "d-ann"}
    )
    assert second["type"] == "signed_in"
    third = await ann.call(  # the successor is used: `first` is a replay from now on
        {"type": "refresh", "refresh_token": second["refresh_token"], "device": "d-ann"}
    )
    await admin.push(mutation("cli-1", 1, base, op="suspend_user", user_id="ann"))
    replayed = await ann.call(
        {"type": "refresh", "refresh_token": first["refresh_token"], "device": "d-ann"}
    )
    assert replayed["code"] == "unauthenticated"
    await admin.push(mutation("cli-1", 2, base + 1, op="resume_user", user_id="ann"))
    family = await ann.call(
        {"type": "refresh", "refresh_token": third["refresh_token"], "device": "d-ann"}
    )
    assert family["code"] == "unauthenticated"
    await ann.close()
    await admin.close()


async def test_revoked_while_the_token_expired_the_refresh_ends_in_a_wipe(
    server: SyncServer, acme: int, migrated: str
) -> None:
    laptop = await Client.connect(server.port)
    signed = await laptop.sign_in("acme", "ann", PASSWORD, "laptop")
    await laptop.close()  # offline; meanwhile the access token expires and the device is revoked
    async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn:
        assert await store.revoke_device(conn, acme, "laptop")
    back = await Client.connect(server.port)
    answer = await back.call(
        {"type": "refresh", "refresh_token": signed["refresh_token"], "device": "laptop"}
    )
    assert answer["code"] == "revoked"
    wipe = await back.recv()
    assert (wipe["type"], wipe["code"]) == ("wipe", "device_revoked")
    assert await back.closed() == 4409


async def test_a_lost_refresh_answer_can_be_asked_again_but_a_replay_revokes_the_family(
    server: SyncServer, acme: int
) -> None:
    client = await Client.connect(server.port)
    signed = await client.sign_in("acme", "ann", PASSWORD, "d-ann")
    refresh = {"type": "refresh", "refresh_token": signed["refresh_token"], "device": "d-ann"}
    # The answer to this refresh is "lost": the client never sees lost["refresh_token"].
    lost = await client.call(refresh)
    retried = await client.call(refresh)
    assert retried["type"] == "signed_in"
    newest = await client.call({"type": "refresh", "refresh_token": retried["refresh_token"],
                                "device": "d-ann"})  # fmt: skip
    assert newest["type"] == "signed_in"
    # The lost token turns up after all: two parties hold this family, which is revoked.
    unseen = await client.call({"type": "refresh", "refresh_token": lost["refresh_token"],
                                "device": "d-ann"})  # fmt: skip
    assert unseen["code"] == "unauthenticated"
    family = await client.call({"type": "refresh", "refresh_token": newest["refresh_token"],
                                "device": "d-ann"})  # fmt: skip
    assert family["code"] == "unauthenticated"
    # And the first token again, after its successor was used: a replay too.
    assert (await client.call(refresh))["code"] == "unauthenticated"
    await client.close()


async def test_another_tenants_refresh_token_is_refused_without_being_spent(
    server: SyncServer, acme: int, migrated: str
) -> None:
    """Defect 10: the token used to be spent first, signing its owner out."""
    await make_tenant(migrated, "other", document=document_for("other"))
    a, _, _ = await signed_in(server)
    b = await Client.connect(server.port)
    theirs = await b.sign_in("other", "admin", PASSWORD, "dev-b")
    refused = await a.call({"type": "refresh", "refresh_token": theirs["refresh_token"],
                            "device": "dev-1"})  # fmt: skip
    assert refused["code"] == "forbidden"
    still = await b.call({"type": "refresh", "refresh_token": theirs["refresh_token"],
                          "device": "dev-b"})  # fmt: skip
    assert (still["type"], still["tenant"]) == ("signed_in", "other")
    await a.close()
    await b.close()


async def test_revocation_missed_by_the_fan_out_still_stops_the_next_push(
    server: SyncServer, acme: int, migrated: str
) -> None:
    """Defect 11: revoked while LISTEN was reconnecting (no notification at all)."""
    session, welcome, _ = await signed_in(server, device="lost")
    server.hub.poll_interval = 3600  # the poll must not be what catches it here
    async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn:
        await conn.execute("UPDATE devices SET revoked_at = now() WHERE device = 'lost'")
    await session.send({"type": "push", "ref": "p", "mutations": [
        mutation("cli-1", 1, welcome["version"], op="create_user", user_id="sneaky")]})  # fmt: skip
    wipe = await session.recv_type("wipe")
    assert wipe["code"] == "device_revoked"
    assert "sneaky" not in (await server.tenants.current(acme)).engine.policy.users


async def test_the_catch_up_poll_also_catches_a_missed_revocation(
    server: SyncServer, acme: int, migrated: str
) -> None:
    session, _, _ = await signed_in(server, device="idle")
    async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn:
        await conn.execute("UPDATE devices SET revoked_at = now() WHERE device = 'idle'")
    wipe = await session.recv_type("wipe", timeout=5.0)  # the test server polls every 0.2 s
    assert wipe["code"] == "device_revoked"


# --- rolling upgrade, activation, enrollment -----------------------------------------------


async def test_a_rolling_upgrade_an_op_the_old_process_lacks_is_held_not_rejected(
    server: SyncServer, acme: int, migrated: str, pool: AsyncConnectionPool
) -> None:
    old = SyncServer(pool, migrated, server.signer, passwords=cheap_passwords(),
                     settings=Settings(port=0, poll_interval=0.2,
                                       ops=SERVER_OPS - {"suspend_user"}))  # fmt: skip
    await old.start()
    try:
        client, welcome, _ = await signed_in(old)
        assert "suspend_user" not in welcome["ops"] and "create_user" in welcome["ops"]
        edit = mutation("cli-1", 1, welcome["version"], op="suspend_user", user_id="dora")
        held = await client.push(edit)
        assert (held["type"], held["code"]) == ("error", "unsupported_op")
        assert await _stored(migrated, "SELECT first_seq FROM client_outcomes") == []
        await client.close()
        upgraded, welcome2, _ = await signed_in(server)
        assert "suspend_user" in welcome2["ops"] and welcome2["last_seq"] == 0
        assert (await upgraded.push(edit))["results"][0]["outcome"] == "applied"
        await upgraded.close()
    finally:
        await old.shutdown()


async def test_an_activation_is_timed_by_the_servers_clock_not_the_clients(
    server: SyncServer, acme: int
) -> None:
    admin, welcome, _ = await signed_in(server)
    base = welcome["version"]
    await admin.push(mutation("cli-1", 1, base, op="make_eligible", user_id="ann",
                              role_id="r-driver", max_hours=8))  # fmt: skip
    ann, welcome2, _ = await signed_in(server, user="ann", device="d-ann", client="c-ann")
    # A client whose clock runs 6 hours ahead cannot send its own expiry: the op has none.
    ahead = (datetime.now(UTC) + timedelta(hours=6 + 8)).strftime("%Y-%m-%dT%H:%M:%SZ")
    forged = await ann.push(mutation("c-ann", 1, welcome2["version"], op="activate_role",
                                     user_id="ann", role_id="r-driver", hours=8,
                                     justification="night cover", expires=ahead))  # fmt: skip
    assert forged["results"][0]["code"] == "invalid"
    before = datetime.now(UTC)
    done = await ann.push(mutation("c-ann", 2, welcome2["version"], op="activate_role",
                                   user_id="ann", role_id="r-driver", hours=8,
                                   justification="night cover"))  # fmt: skip
    after = datetime.now(UTC)
    assert done["results"][0]["outcome"] == "applied"
    user = (await server.tenants.current(acme)).engine.policy.users["ann"]
    (activation,) = [a for a in user.roles if a.role_id == "r-driver" and a.eligible is None]
    assert activation.expires_at is not None
    start = parse_instant(f"{before:%Y-%m-%dT%H:%M:%S}Z")[0] + 8 * 3600
    assert start - 1 <= activation.expires_at[0] <= after.timestamp() + 8 * 3600
    too_long = await ann.push(mutation("c-ann", 3, welcome2["version"], op="activate_role",
                                       user_id="ann", role_id="r-driver", hours=9,
                                       justification="x"))  # fmt: skip
    assert too_long["results"][0]["code"] == "not_eligible"
    await admin.close()
    await ann.close()


async def test_an_invited_user_enrolls_with_the_code_which_then_fails_a_second_time(
    server: SyncServer, acme: int, migrated: str
) -> None:
    admin, _, _ = await signed_in(server)
    invited = await admin.call({"type": "invite", "user": "dora", "hours": 2})
    assert (invited["type"], invited["user"]) == ("invited", "dora")
    code = invited["code"]
    newcomer = await Client.connect(server.port)
    enroll = {"type": "enroll", "tenant": "acme", "user": "dora", "code": code, "device": "d-dora"}
    weak = await newcomer.call(enroll | {"password": "short"})
    assert weak["code"] == "weak_password"
    joined = await newcomer.call(enroll | {"password": "a brand new passphrase",
                                           "code": code.lower().replace("-", " ")})  # fmt: skip
    assert (joined["type"], joined["user"]) == ("signed_in", "dora")
    hello, _ = await newcomer.hello(joined["access_token"], "d-dora", "c-dora")
    assert hello["type"] == "welcome"
    again = await Client.connect(server.port)
    second = await again.call(enroll | {"password": "another new passphrase"})
    assert (second["code"], second["message"]) == (
        "unauthenticated", "wrong tenant, user or password")  # fmt: skip
    assert (await again.sign_in("acme", "dora", "a brand new passphrase", "d2"))["type"] == (
        "signed_in")  # fmt: skip
    kinds = {k for (k,) in await _stored(migrated, "SELECT kind FROM audit")}
    assert {"account.invited", "account.enrolled"} <= kinds
    await admin.close()
    await newcomer.close()
    await again.close()


async def test_only_someone_holding_everything_an_account_holds_may_reset_it(
    server: SyncServer, acme: int
) -> None:
    carl, _, _ = await signed_in(server, user="carl", device="d-carl", client="c-carl")
    refused = await carl.call({"type": "set_password", "user": "admin",
                               "password": "a takeover passphrase"})  # fmt: skip
    assert refused["code"] == "forbidden"
    assert "carl may not manage the account of 'admin'" in refused["message"]
    admin, _, _ = await signed_in(server)
    done = await admin.call({"type": "set_password", "user": "carl",
                             "password": "carl's fresh passphrase"})  # fmt: skip
    assert done == {"type": "password_set", "ref": done["ref"], "user": "carl"}
    old = await Client.connect(server.port)
    assert (await old.sign_in("acme", "carl", PASSWORD, "d"))["code"] == "unauthenticated"
    await carl.close()
    await admin.close()
    await old.close()


# --- resources ---------------------------------------------------------------------------


def _server(pool: AsyncConnectionPool, url: str, **settings: Any) -> SyncServer:
    """A server on a free port with some settings of its own."""
    return SyncServer(pool, url, TokenSigner(TEST_KEY), passwords=cheap_passwords(),
                      settings=Settings(port=0, poll_interval=0.2, **settings))  # fmt: skip


async def test_unauthenticated_websockets_are_closed_after_the_deadline(
    migrated: str, pool: AsyncConnectionPool, acme: int
) -> None:
    """Defect 14: 2,000 idle unauthenticated sockets held 2,012 descriptors."""
    quick = _server(pool, migrated, auth_timeout=0.5)
    await quick.start()
    try:
        idle = await Client.connect(quick.port)
        error = await idle.recv(timeout=5.0)
        assert (error["code"], error["fatal"]) == ("unauthenticated", True)
        assert await idle.closed() == 4408
        await asyncio.sleep(0.1)
        assert quick.sessions == set()
    finally:
        await quick.shutdown()


async def test_sessions_that_never_read_are_dropped_and_free_their_memory(
    migrated: str, pool: AsyncConnectionPool, acme: int
) -> None:
    """Defect 13: sessions that stopped reading pinned memory for ever."""
    import socket

    quick = _server(pool, migrated, send_timeout=0.5)
    await quick.start()
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", quick.port))
        sock.setblocking(False)
        stuck = await Client.connect(quick.port, sock=sock)
        signed = await stuck.sign_in("acme", "ann", PASSWORD, "d-stuck")
        await stuck.hello(signed["access_token"], "d-stuck", "c-stuck")
        # from here on the stuck client reads nothing
        writer, welcome, _ = await signed_in(quick)
        version = welcome["version"]
        for seq in range(1, 80):
            value = f"{seq:05d}" + "x" * 60_000  # each change ~60 KB to every session
            edit = {"op": "set_user_attribute", "user_id": "dora", "key": "k", "value": value}
            answer = await writer.push(mutation("cli-1", seq, version, **edit))
            version = answer["results"][0]["version"]
            if not any(s.user == "ann" for s in quick.sessions):
                break
        for _ in range(50):
            if not any(s.user == "ann" for s in quick.sessions):
                break
            await asyncio.sleep(0.1)
        assert not any(s.user == "ann" for s in quick.sessions)
        assert "fleetgate_dropped_sessions_total 1" in quick.metrics.render()
        assert any(s.user == "admin" for s in quick.sessions)  # the reader is unaffected
        await writer.close()
        with contextlib.suppress(Exception):
            sock.close()
    finally:
        await quick.shutdown()


async def test_sign_in_limit_bypassed_by_concurrency_attempts_past_it_are_never_checked(
    server: SyncServer, acme: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 12: 40 simultaneous wrong-password sign-ins were all checked (642 MiB)."""
    checks = 0
    running = peak = 0
    real = server.passwords.verify

    def counted(stored: str | None, password: str) -> bool:
        nonlocal checks, running, peak
        checks += 1
        running += 1
        peak = max(peak, running)
        try:
            return real(stored, password)
        finally:
            running -= 1

    monkeypatch.setattr(server.passwords, "verify", counted)
    clients = [await Client.connect(server.port) for _ in range(40)]
    answers = await asyncio.gather(*(c.sign_in("acme", "ann", "wrong wrong wrong", f"d{i}")
                                     for i, c in enumerate(clients)))  # fmt: skip
    codes = [a["code"] for a in answers]
    assert codes.count("unauthenticated") <= 5
    assert codes.count("rate_limited") >= 35
    assert checks <= 5 and peak <= 2
    for client in clients:
        await client.close()


async def test_a_malformed_mutation_never_recompiles_the_tenant(
    server: SyncServer, acme: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 16: each malformed mutation recompiled the whole tenant under its lock."""
    from sync.policy.engine import Engine

    rebuilds = 0
    real = Engine.refresh

    def counted(self: Engine, **kwargs: Any) -> None:
        nonlocal rebuilds
        rebuilds += bool(kwargs.get("resource_types"))
        real(self, **kwargs)

    client, welcome, _ = await signed_in(server)
    monkeypatch.setattr(Engine, "refresh", counted)
    poison = [mutation("cli-1", n, welcome["version"], op="assign_role", user_id="dora",
                       role_id=["x", n]) for n in range(1, 51)]  # fmt: skip
    result = await client.push(*poison)
    assert {r["code"] for r in result["results"]} == {"invalid"}
    assert rebuilds == 0
    await client.close()


async def test_a_stuck_queue_from_a_big_answer_the_answer_is_split_and_repeats_whole(
    server: SyncServer, acme: int
) -> None:
    """Defect 5: a push_result over 1 MiB killed the session after the push committed."""
    client, welcome, _ = await signed_in(server)
    hostile = "角色" * 128  # 256 characters of three bytes each
    mutations = [mutation("cli-1", n, welcome["version"], op="assign_role", user_id="dora",
                          role_id=f"{hostile[:250]}{n:04d}") for n in range(1, 501)]  # fmt: skip
    result = await client.push(*mutations)
    assert len(result["results"]) == 500
    assert {r["code"] for r in result["results"]} == {"not_found"}
    again = await client.push(*mutations)  # the repeat gets the same answers, whole
    assert again["results"] == result["results"]
    await client.close()


async def test_a_poisoned_store_never_locks_the_tenant_out(
    server: SyncServer, acme: int, migrated: str, pool: AsyncConnectionPool
) -> None:
    """Defect 1: a damaged stored policy made sign-in fail (`internal`) and export crash."""
    async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn:
        await conn.execute(
            "UPDATE entities SET document = jsonb_set(document, '{name}', '5')"
            " WHERE tenant_id = %s AND kind = 'role' AND id = 'r-driver'",
            (acme,),
        )
        await conn.execute(
            "UPDATE entities SET document = jsonb_set(document, '{attributes}', '\"x\"')"
            " WHERE tenant_id = %s AND kind = 'user' AND id = 'dora'",
            (acme,),
        )
    restarted = SyncServer(pool, migrated, server.signer, passwords=cheap_passwords(),
                           settings=Settings(port=0, poll_interval=0.2))  # fmt: skip
    await restarted.start()
    try:
        admin, welcome, _ = await signed_in(restarted)
        policy = (await restarted.tenants.current(acme)).engine.policy
        assert policy.roles["r-driver"].name == "r-driver"
        assert policy.users["dora"].suspended  # its attributes could not be read: fail closed
        rows = await _stored(migrated, "SELECT kind, payload FROM audit WHERE tenant_id = %s"
                             " AND kind = 'policy.repaired'", acme)  # fmt: skip
        assert len(rows) == 1 and "r-driver" in rows[0][1]
        assert welcome["catch_up"] == "snapshot"  # the repair is a new version, by snapshot
        await admin.close()
    finally:
        await restarted.shutdown()
