"""A keyring backend that keeps entries in a JSON file, for timing keyring mode across processes.

The bench's whole-process figures (`fleetgate check --replica-dir` from process start) need a
keyring the bench process and the timed processes share; headless Linux has none. This one
stands in for the OS keyring: `PYTHON_KEYRING_BACKEND=bench.file_keyring.Keyring` and
`FLEETGATE_BENCH_KEYRING=FILE`. It reads one small file per lookup, about what a Secret
Service call over D-Bus costs; it is for benchmarks only (the file holds keys in clear).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError


def _path() -> Path:
    return Path(os.environ["FLEETGATE_BENCH_KEYRING"])


class Keyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def _entries(self) -> dict[str, str]:
        path = _path()
        return json.loads(path.read_text()) if path.exists() else {}

    def _write(self, entries: dict[str, str]) -> None:
        path = _path()
        path.touch(mode=0o600)
        path.write_text(json.dumps(entries))

    def get_password(self, service: str, username: str) -> str | None:
        return self._entries().get(f"{service}\0{username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        entries = self._entries()
        entries[f"{service}\0{username}"] = password
        self._write(entries)

    def delete_password(self, service: str, username: str) -> None:
        entries = self._entries()
        if entries.pop(f"{service}\0{username}", None) is None:
            raise PasswordDeleteError(username)
        self._write(entries)
