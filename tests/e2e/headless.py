"""Headless clients for end-to-end tests: `fleetgate` run as a process, one replica each."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from tests.server.conftest import PASSWORD

FLEETGATE = [
    sys.executable,
    "-c",
    "import sys; from app.cli import run; sys.argv[0] = 'fleetgate'; run()",
]


def client_env() -> dict[str, str]:
    """Passphrase mode (no keyring on a headless machine), as a field laptop would run."""
    env = dict(os.environ)
    env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.null.Keyring"
    env["FLEETGATE_PASSPHRASE"] = "field laptop passphrase"
    return env


async def fleetgate(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *FLEETGATE, *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=client_env(),
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(stdin.encode() if stdin else None), 90)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class Headless:
    """One person's replica, driven through the command line."""

    def __init__(self, port: int, directory: Path, user: str) -> None:
        self.url = f"ws://127.0.0.1:{port}/sync"
        self.directory = directory
        self.user = user

    @property
    def replica(self) -> list[str]:
        return ["--replica-dir", str(self.directory), "--tenant", "acme", "--as", self.user]

    async def sync(self, *extra: str, password: str = PASSWORD) -> tuple[int, str, str]:
        return await fleetgate(
            "sync", "--server", self.url, "--tenant", "acme", "--user", self.user,
            "--replica-dir", str(self.directory), "--password-stdin", *extra,
            stdin=password + "\n",
        )  # fmt: skip

    def open(self) -> Any:
        """The replica, opened in this process (passphrase mode, as the commands run it)."""
        import keyring
        from keyring.backends.null import Keyring as NullKeyring

        from app.replica import Replica

        keyring.set_keyring(NullKeyring())
        passphrase = client_env()["FLEETGATE_PASSPHRASE"]
        return Replica.open(self.directory, "acme", self.user, passphrase=lambda: passphrase)

    async def edit(self, edits: list[dict[str, Any]], tmp: Path) -> tuple[int, str, str]:
        path = tmp / f"{self.user}-edits.json"
        path.write_text(json.dumps(edits))
        return await fleetgate("edit", *self.replica, "--edits", str(path))

    async def outbox(self) -> dict[str, Any]:
        code, out, err = await fleetgate("outbox", *self.replica, "--json")
        assert code == 0, err
        return json.loads(out)

    async def outbox_text(self) -> tuple[int, str, str]:
        """`fleetgate outbox` as a person reads it."""
        return await fleetgate("outbox", *self.replica)

    async def check(self, *request: str) -> dict[str, Any]:
        code, out, err = await fleetgate("check", *self.replica, *request)
        assert code == 0, err
        return json.loads(out)
