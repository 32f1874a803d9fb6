"""Fault injection, end to end: each scenario of tests/e2e/faults.py with fixed seeds
(the soak, `python3 dev.py soak`, runs them with many), against real `fleetgate
server` processes on the session's Postgres; then the regressions the soak found."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.faults import (
    SCENARIOS,
    Env,
    Postgres,
    Run,
    _admin,
    cheap_replica_keys,
    tenant_policy,
)
from tests.e2e.tcp_proxy import Plan, Side

CASES = [
    ("ack_lost", 100),  # the link cut on each dropped answer
    ("ack_lost", 103),  # answers dropped silently: the client gives the socket up
    ("client_killed_after_commit", 101),  # after the commit, then at random moments
    ("client_killed_after_commit", 100),  # while the push is with the server
    ("server_killed_mid_push", 2),  # blocked on the tenant's row lock, twice
    ("server_killed_mid_push", 1),  # at a random moment
    ("server_killed_mid_snapshot", 1),  # a new replica's first snapshot: resumed
    ("server_killed_mid_snapshot", 102),  # after an import, with edits queued: resumed
    ("proxy_chaos", 100),
    ("proxy_chaos", 104),
    ("postgres_restart", 1),
    ("lost_notification", 1),  # and the reader's device revoked meanwhile
    ("compacted_cursor", 101),
    ("token_expiry", 100),  # one refresh answer lost
    ("poison_mutation", 101),  # an edit of a role deleted meanwhile: superseded
    ("poison_mutation", 104),  # the clerk's assignment no longer allowed: forbidden
    ("poison_mutation", 100),  # a malformed edit in the outbox: invalid
    ("revoked_offline", 1),  # offline: the next fleetgate sync wipes it
    ("revoked_offline", 6),  # connected: wiped at once
    ("clock_skew", 1),  # 6 hours ahead: the lease is stale
    ("clock_skew", 4),  # 6 hours behind: decisions are frozen
]


@pytest.fixture(scope="module")
def env(postgres_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    postgres = Postgres.attach(postgres_uri)
    name = f"faults_{os.getpid()}"
    with cheap_replica_keys():
        shared = Env(postgres, postgres.database(name), tmp_path_factory.mktemp("faults"))
        try:
            yield shared
        finally:
            shared.close()
            postgres.drop(name)


@pytest.mark.parametrize(("scenario", "seed"), CASES)
async def test_scenario_loses_doubles_and_resurrects_nothing(
    env: Env, scenario: str, seed: int
) -> None:
    result = await SCENARIOS[scenario].run(seed, env)
    assert result.mutations > 0
    assert (result.lost, result.doubled, result.resurrected) == (0, 0, 0), result.problems
    assert result.problems == [], result.notes


def test_every_scenario_has_a_case() -> None:
    assert {name for name, _ in CASES} == set(SCENARIOS)


# --- regressions ---------------------------------------------------------------------------


async def test_a_replica_with_a_policy_resumes_a_snapshot_on_a_link_that_keeps_dropping(
    env: Env,
) -> None:
    """Found by server_killed_mid_snapshot: a replica that has a policy and catches up by
    snapshot (after an import) said hello without `resume`, so each new socket started
    the snapshot from chunk 0 again; on a link that drops sooner than the snapshot
    takes, it never completed (78 sockets in 20 s). It now resumes where it stopped."""
    async with Run(env, "resume_regression", 1) as run:
        await run.setup(filler=2400)
        server = env.standing()
        ann = run.client("ann")
        assert (await ann.sync(server.url, timeout=30)).done
        document = tenant_policy(run.tenant, 2400)
        document["users"][5]["attributes"]["depot"] = "imported"
        path = Path(run.dir / "import.json")
        path.write_text(json.dumps(document))
        assert await _admin(run, "import", run.tenant, str(path)) == 0
        # Every socket is cut once 400 kB went to the client: less than the snapshot.
        proxy = await run.proxy(server.address, plan=lambda _: Plan(cut=(Side.DOWN, 400_000)))
        synced = await ann.sync(proxy.url, timeout=20)
        assert synced.done, f"{len(proxy.links)} sockets, the snapshot never completed"
        assert len(proxy.links) <= 4
        version, digest = await run.server_state()
        replica = ann.open()
        try:
            assert (replica.meta().cursor, replica.meta().digest) == (version, digest)
        finally:
            replica.close()


async def _snapshot_id(port: int, tenant: str) -> str:
    from tests.server.conftest import PASSWORD
    from tests.server.wsclient import Client as Socket

    socket = await Socket.connect(port)
    try:
        signed_in = await socket.sign_in(tenant, "admin", PASSWORD, "d-probe")
        welcome, after = await socket.hello(signed_in["access_token"], "d-probe", "c-probe")
        assert welcome["catch_up"] == "snapshot", welcome
        return str(next(m for m in after if m["type"] == "snapshot")["snapshot"])
    finally:
        await socket.close()


async def test_entities_deleted_and_created_again_in_one_push_keep_one_snapshot_id(
    env: Env,
) -> None:
    """Found by server_killed_mid_snapshot: a role or user deleted and created again in
    one push went last in the pushing process's policy (a new key) but kept its old
    position in the database, so a process that loaded the tenant (restarted, or
    another one) cut a different snapshot of the same version, and a client could
    not resume its snapshot there. Both now put it last."""
    async with Run(env, "reborn_regression", 1) as run:
        await run.setup()
        pushing = env.standing()
        cy = run.client("cy")
        assert (await cy.sync(pushing.url)).done
        cy.queue(
            [
                {"op": "delete_role", "role_id": "r-temp"},
                {"op": "create_user", "user_id": "u-new"},
                {"op": "create_role", "role_id": "r-temp", "name": "temp again"},
                {"op": "delete_user", "user_id": "dora"},
                {"op": "create_user", "user_id": "dora", "name": "Dora again"},
            ]
        )
        assert (await cy.sync(pushing.url)).done
        loading = run.server("loading")
        await loading.astart(0)
        assert await _snapshot_id(pushing.port, run.tenant) == await _snapshot_id(
            loading.port, run.tenant
        )


async def test_a_server_listens_again_at_once_after_each_lost_listen_connection(
    env: Env,
) -> None:
    """Found by lost_notification: the hub's reconnect delay doubled at every lost
    LISTEN connection and was never reset after a good one, so after a handful of
    losses over a process's life every later loss left it deaf to notifications for
    5 s (only the poll delivered changes). Each loss now starts again from 0.1 s."""
    import asyncio
    import time

    import psycopg
    from psycopg_pool import AsyncConnectionPool

    from server.hub import Hub

    name = f"hub-regression-{os.getpid()}"
    pool = AsyncConnectionPool(
        env.url, min_size=1, max_size=2, open=False, kwargs={"autocommit": True}
    )
    await pool.open(wait=True)
    hub = Hub(pool, psycopg.conninfo.make_conninfo(env.url, application_name=name), 60.0)
    stop = asyncio.Event()
    running = asyncio.create_task(hub.run(stop))
    waits = []
    try:
        await asyncio.wait_for(hub.listening.wait(), 10)
        for _ in range(7):
            async with await psycopg.AsyncConnection.connect(env.url, autocommit=True) as conn:
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = %s AND query LIKE 'LISTEN%%'",
                    (name,),
                )
            deadline = time.monotonic() + 5
            while hub.listening.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            lost = time.monotonic()
            await asyncio.wait_for(hub.listening.wait(), 10)
            waits.append(round(time.monotonic() - lost, 2))
    finally:
        stop.set()
        await running
        await pool.close()
    assert max(waits) < 1.0, waits
