"""End to end: `fleetgate sync --watch` stays connected, prints each change and outcome,
and pushes edits another process queued on the same replica meanwhile."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.headless import FLEETGATE, Headless, client_env
from tests.server.conftest import ACME_POLICY, PASSWORD, add_account, make_tenant


@pytest.fixture
async def acme(migrated: str) -> int:
    tenant_id = await make_tenant(migrated, "acme", document=ACME_POLICY)
    await add_account(migrated, tenant_id, "ann")
    return tenant_id


async def _line_with(
    stream: asyncio.StreamReader, text: str, seen: list[str], within: float = 30.0
) -> str:
    while True:
        line = (await asyncio.wait_for(stream.readline(), within)).decode()
        assert line, f"the watch ended before printing {text!r}: {seen}"
        seen.append(line)
        if text in line:
            return line


async def test_watch_pushes_what_another_process_queued_and_prints_others_changes(
    server: Any, acme: int, tmp_path: Path
) -> None:
    ann = Headless(server.port, tmp_path / "ann", "ann")
    admin = Headless(server.port, tmp_path / "admin", "admin")
    for person in (ann, admin):
        assert (await person.sync())[0] == 0
    watch = await asyncio.create_subprocess_exec(
        *FLEETGATE, "sync", "--server", ann.url, "--tenant", "acme", "--user", "ann",
        "--replica-dir", str(ann.directory), "--password-stdin", "--watch",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=client_env(),
    )  # fmt: skip
    assert watch.stdin is not None and watch.stdout is not None
    watch.stdin.write(f"{PASSWORD}\n".encode())
    await watch.stdin.drain()
    seen: list[str] = []
    try:
        await asyncio.sleep(3.0)  # connected and live: the edit comes after ReadyToPush
        # Another process queues an edit on the replica the watch holds open.
        code, _, err = await ann.edit(
            [{"op": "set_user_attribute", "user_id": "dora", "key": "depot", "value": "south"}],
            tmp_path,
        )
        assert code == 0, err
        # Within a few seconds: the outbox is looked at every second, not only at a ping.
        line = await _line_with(watch.stdout, "(set_user_attribute): applied", seen, within=8)
        assert "applied as version" in line
        # A change made elsewhere is printed as it arrives.
        assert (await admin.edit([{"op": "describe_role", "role_id": "r-driver",
                                   "description": "drives"}], tmp_path))[0] == 0  # fmt: skip
        assert (await admin.sync())[0] == 0
        await _line_with(watch.stdout, "admin describe_role", seen)
    finally:
        watch.send_signal(signal.SIGINT)
        await asyncio.wait_for(watch.wait(), 20)
    outbox = await ann.outbox()
    assert outbox["pending"] == []
