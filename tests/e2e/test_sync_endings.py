"""End to end: how `fleetgate sync` ends when it cannot sync, and what it keeps.

A wrong password or a suspension asks for a sign-in and keeps the outbox; an
unreachable server gives up in time and keeps it; a revoked device wipes the
replica, its key and its tokens (the client issue, § The sync client).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import keyring
import psycopg
import pytest

from app.replica_file import replica_files
from server import store
from tests.e2e.headless import Headless
from tests.server.conftest import ACME_POLICY, add_account, make_tenant

EXIT_UNREACHABLE, EXIT_SIGN_IN, EXIT_WIPED = 75, 77, 78


@pytest.fixture
async def acme(migrated: str) -> int:
    tenant_id = await make_tenant(migrated, "acme", document=ACME_POLICY)
    await add_account(migrated, tenant_id, "ann")
    return tenant_id


@pytest.fixture(autouse=True)
def restore_keyring() -> Any:
    previous = keyring.get_keyring()
    yield
    keyring.set_keyring(previous)


ASSIGN = [{"op": "assign_role", "user_id": "dora", "role_id": "r-driver"}]


async def test_a_wrong_password_asks_for_a_sign_in_and_keeps_nothing_half_done(
    server: Any, acme: int, tmp_path: Path
) -> None:
    ann = Headless(server.port, tmp_path / "ann", "ann")
    code, _, err = await ann.sync(password="not the password at all")
    assert code == EXIT_SIGN_IN, err
    assert "sign-in needed" in err and "the outbox is kept" in err
    code, _, err = await ann.sync()
    assert code == 0, err


async def test_an_unreachable_server_gives_up_in_time_and_keeps_the_outbox(
    server: Any, acme: int, tmp_path: Path
) -> None:
    ann = Headless(server.port, tmp_path / "ann", "ann")
    assert (await ann.sync())[0] == 0
    assert (await ann.edit(ASSIGN, tmp_path))[0] == 0
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    ann.url = f"ws://127.0.0.1:{closed}/sync"
    code, _, err = await ann.sync("--timeout", "3")
    assert code == EXIT_UNREACHABLE, err
    assert "cannot reach" in err and "the outbox is kept" in err
    assert len((await ann.outbox())["pending"]) == 1
    ann.url = f"ws://127.0.0.1:{server.port}/sync"
    code, out, err = await ann.sync()
    assert code == 0, err
    assert "edit 1 (assign_role): applied" in out


async def test_a_suspended_user_is_stopped_and_keeps_the_outbox(
    server: Any, acme: int, tmp_path: Path
) -> None:
    admin = Headless(server.port, tmp_path / "admin", "admin")
    ann = Headless(server.port, tmp_path / "ann", "ann")
    for person in (admin, ann):
        assert (await person.sync())[0] == 0
    assert (await ann.edit(ASSIGN, tmp_path))[0] == 0
    assert (await admin.edit([{"op": "suspend_user", "user_id": "ann"}], tmp_path))[0] == 0
    assert (await admin.sync())[0] == 0
    code, _, err = await ann.sync()
    assert code == EXIT_SIGN_IN, err
    assert "suspended" in err
    assert len((await ann.outbox())["pending"]) == 1


async def test_a_revoked_device_wipes_the_replica_its_key_and_its_tokens(
    server: Any, acme: int, migrated: str, tmp_path: Path
) -> None:
    ann = Headless(server.port, tmp_path / "ann", "ann")
    assert (await ann.sync())[0] == 0
    assert (await ann.edit(ASSIGN, tmp_path))[0] == 0
    replica = ann.open()
    device = replica.meta().device
    replica.close()
    async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn:
        assert await store.revoke_device(conn, acme, device)
    code, _, err = await ann.sync()
    assert code == EXIT_WIPED, err
    assert "wipe" in err and "it is gone" in err
    assert replica_files(ann.directory, "acme", "ann") == []
    tenant = await server.tenants.current(acme)
    assert tenant.engine.policy.users["dora"].roles == ()  # nothing it queued was applied


async def test_a_sign_in_with_text_the_server_cannot_store_is_refused_before_anything_is_sent(
    server: Any, acme: int, tmp_path: Path
) -> None:
    # A user name of bytes that are not UTF-8 (it arrives holding lone surrogates) was
    # an internal error; a password holding NUL was sent, refused unread, and the
    # command waited 60 s to say the server did not answer. Each now says what is wrong.
    user = b"ann\xed\xa0\x80".decode("utf-8", "surrogateescape")
    bad_user = Headless(server.port, tmp_path / "bad-user", user)
    code, _, err = await bad_user.sync()
    assert code == 2, err
    assert "user 'ann\\udced\\udca0\\udc80': a string contains a NUL character or an " in err
    assert not (tmp_path / "bad-user").exists() or not any((tmp_path / "bad-user").iterdir())
    ann = Headless(server.port, tmp_path / "ann", "ann")
    code, _, err = await ann.sync("--timeout", "5", password="hunter\x00zebra")
    assert code == 2, err
    assert "the password holds a NUL character or an unpaired surrogate: no server" in err
    assert "nothing was sent" in err and "zebra" not in err  # no secret in the message
    code, _, err = await ann.sync()
    assert code == 0, err
