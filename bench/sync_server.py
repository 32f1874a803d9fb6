"""Sync server benchmark: many websocket clients of one tenant on loopback.

    .venv/bin/python -m bench.sync_server [--clients 500] [--pushers 4] [--seconds 10]
                                          [--quick] [--profile FILE]

Issue 3 § Tests and benchmark. Starts a throwaway embedded Postgres, a tenant
"bench" with 2,000 users, and `python -m server server` in a process of its
own, then measures, from one asyncio loop in this process:

- connection time: websocket connect + `hello` until the catch-up ends (the
  `changes` with more=false), p50/p99/max and the time to connect all N; a
  new client catches up by snapshot (`--catch-up changes` resumes at the
  current version instead);
- a handful of real `sign_in` round trips (argon2id at t=1, m=1 MiB: the
  listeners use access tokens minted here with the server's key, so that
  500 sign-ins measure the server and not argon2);
- push throughput: K pushers, each pushing batches of `set_user_attribute`
  edits on users of its own (no conflicts) as fast as the server answers
  (and the server's 50 messages/s per connection allows), with no listeners
  and with N listeners connected;
- broadcast latency, from a push being sent and from its push_result being
  received (close to the commit), to each listener receiving the `changes`
  frame with that version, over every (listener, change) pair: at a light
  paced load and while pushing flat out;
- the server's own `fleetgate_broadcast_latency_seconds` from `/metrics`,
  and CPU seconds used by the server, Postgres and this process.

Figures go to standard output and to bench/out/sync_server.json
(sync_server-quick.json with --quick); the server's log to
bench/out/sync_server-server.log. Nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import functools
import json
import os
import resource
import secrets
import statistics
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.harness import (
    CHANGES_HEAD,
    Database,
    ServerProcess,
    create_bench_tenant,
    new_database,
    print_rows,
    start_server,
    summary_ms,
    websocket_options,
)

OUT = Path(__file__).resolve().parent / "out"
TENANT = "bench"
ADMIN = "admin"
PASSWORD = "bench password"
USERS = 2000
SIGN_IN_SAMPLES = 10
PUSHES_PER_SECOND = 45.0
"""Per pusher: under the server's limit of 50 messages/s per connection (a fatal error)."""
PACED_INTERVAL = 0.05
"""The light-load latency probe: one push of one mutation every 50 ms."""
DRAIN_TIMEOUT = 60.0
GOAL_P99_MS = 100.0
GOAL_CLIENTS = 200
GOAL_MUTATIONS_PER_S = 2000.0


# --- statistics --------------------------------------------------------------------------


def _weighted_summary_ms(pairs: list[tuple[float, int]]) -> dict[str, float]:
    """p50/p99/max of latencies each counted `weight` times."""
    pairs = sorted(pairs)
    total = sum(weight for _, weight in pairs)
    result: dict[str, float] = {"n": total}
    for name, fraction in (("p50_ms", 0.50), ("p99_ms", 0.99)):
        wanted, seen = fraction * total, 0
        value = float("nan")
        for latency, weight in pairs:
            seen += weight
            if seen > wanted:
                value = latency
                break
        result[name] = value * 1000
    result["max_ms"] = (pairs[-1][0] if pairs else float("nan")) * 1000
    return result


# --- the database, the tenant and the server process -------------------------------------


def _policy_document(users: int, pushers: list[str]) -> dict[str, Any]:
    roles = ["driver", "clerk", "dispatcher", "auditor"]
    return {
        "format": "fleetgate.policy/1",
        "tenant": TENANT,
        "resource_types": {
            "role": ["read", "create", "update", "delete", "assign"],
            "user": ["read", "create", "update", "delete"],
            "vehicle": ["read", "dispatch"],
        },
        "roles": [
            {"id": "r-admin", "name": "tenant-admin",
             "grants": [{"resource": "role", "actions": ["*"]},
                        {"resource": "user", "actions": ["*"]}]},
            {"id": "r-driver", "name": "driver",
             "grants": [{"resource": "vehicle", "actions": ["read"]}]},
            {"id": "r-clerk", "name": "clerk",
             "grants": [{"resource": "user", "actions": ["read"]}]},
            {"id": "r-dispatcher", "name": "dispatcher",
             "grants": [{"resource": "vehicle", "actions": ["read", "dispatch"],
                         "when": {"resource.depot": {"eq": "$user.depot"}}}]},
            {"id": "r-auditor", "name": "auditor",
             "grants": [{"resource": "role", "actions": ["read"]},
                        {"resource": "user", "actions": ["read"]}]},
        ],
        "users": [
            {"id": ADMIN, "roles": [{"role": "tenant-admin"}]},
            *({"id": p, "roles": [{"role": "tenant-admin"}]} for p in pushers),
            *({"id": _user(i), "attributes": {"depot": f"d{i % 8}"},
               "roles": [{"role": roles[i % len(roles)]}]} for i in range(users)),
        ],
    }  # fmt: skip


def _user(number: int) -> str:
    return f"u{number:05d}"


def _pusher_user(number: int) -> str:
    return f"p{number}"


def _database(users: int, pushers: int) -> Database:
    """A new embedded Postgres in a temp dir, migrated, with the bench tenant."""
    document = _policy_document(users, [_pusher_user(i) for i in range(pushers)])
    accounts = [_user(i) for i in range(SIGN_IN_SAMPLES)]
    return new_database(
        "fleetgate-bench-", "fleetgate_bench",
        functools.partial(create_bench_tenant, tenant=TENANT, admin=ADMIN, password=PASSWORD,
                          document=document, accounts=accounts),
    )  # fmt: skip


def _start_server(url: str, key: str, profile: str | None) -> ServerProcess:
    return start_server(url, key, OUT / "sync_server-server.log", profile=profile, wait_s=60)


# --- clients -------------------------------------------------------------------------------


@dataclass
class Listener:
    """A connected client that records when each `changes` frame arrives."""

    websocket: ClientConnection
    number: int
    latest: int = 0
    frames: list[tuple[float, int, int]] = field(default_factory=list)
    """(receipt time, from_version, to_version) per `changes` frame."""
    other: Counter[str] = field(default_factory=Counter)
    task: asyncio.Task[None] | None = None

    async def listen(self) -> None:
        clock = time.perf_counter
        try:
            while True:
                data = await self.websocket.recv(decode=False)
                now = clock()
                head = CHANGES_HEAD.match(data)
                if head is not None:
                    start, end = int(head[1]), int(head[2])
                else:
                    message = orjson.loads(data)
                    self.other[message["type"]] += 1
                    if message["type"] != "changes":
                        continue
                    start, end = message["from_version"], message["to_version"]
                self.frames.append((now, start, end))
                self.latest = max(self.latest, end)
        except ConnectionClosed as closed:
            self.other[f"closed {closed.rcvd.code if closed.rcvd else None}"] += 1


async def _hello(
    port: int, token: str, device: str, client: str, cursor: int
) -> tuple[ClientConnection, dict[str, Any], int]:
    """Connect and say hello until caught up: (websocket, welcome, bytes of catch-up)."""
    websocket = await connect(f"ws://127.0.0.1:{port}/sync", **websocket_options())
    await websocket.send(
        json.dumps({"type": "hello", "protocol": 2, "access_token": token, "device": device,
                    "client": client, "cursor": cursor})
    )  # fmt: skip
    welcome = json.loads(await websocket.recv())
    if welcome["type"] != "welcome":
        await websocket.close()
        raise RuntimeError(f"hello refused: {welcome}")
    received = 0
    while True:
        frame = await websocket.recv(decode=False)
        received += len(frame)
        message = orjson.loads(frame)
        if message["type"] == "changes" and not message["more"]:
            return websocket, welcome, received
        if message["type"] not in ("changes", "snapshot"):
            await websocket.close()
            raise RuntimeError(f"unexpected message while catching up: {message['type']}")


@dataclass
class Context:
    port: int
    tenant_id: int
    signer: Any
    database: Database
    catch_up: str
    batch: int
    connect_concurrency: int
    clients: list[Listener] = field(default_factory=list)

    def token(self, user: str, device: str) -> str:
        token, _ = self.signer.issue(
            tenant_id=self.tenant_id, tenant=TENANT, user=user, device=device, now=time.time()
        )
        return str(token)


async def _connect_listeners(context: Context, count: int, label: str) -> dict[str, Any]:
    cursor = 0 if context.catch_up == "snapshot" else context.database.version()
    gate = asyncio.Semaphore(context.connect_concurrency)
    times: list[float] = []
    sizes: list[int] = []
    failures: Counter[str] = Counter()
    listeners: list[Listener] = []
    context.clients = listeners  # as they connect: an interrupted run closes them too

    async def one(number: int) -> None:
        user = _user(number % USERS)
        device = f"{label}-dev-{number}"
        token = context.token(user, device)
        async with gate:
            started = time.perf_counter()
            try:
                websocket, _, size = await _hello(
                    context.port, token, device, f"{label}-cli-{number}", cursor
                )
            except (OSError, RuntimeError, ConnectionClosed, TimeoutError) as error:
                failures[type(error).__name__] += 1
                return
            times.append(time.perf_counter() - started)
        sizes.append(size)
        listener = Listener(websocket, number)
        listener.task = asyncio.create_task(listener.listen())
        listeners.append(listener)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    total = time.perf_counter() - started
    return {
        "clients": count,
        "connected": len(listeners),
        "failures": dict(failures),
        "catch_up": context.catch_up,
        "concurrency": context.connect_concurrency,
        "all_connected_s": total,
        "catch_up_bytes_per_client": statistics.median(sizes) if sizes else 0,
        **summary_ms(times),
    }


async def _close_listeners(context: Context) -> None:
    async def one(listener: Listener) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(listener.websocket.close(), 10)
        if listener.task is not None:
            listener.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener.task

    await asyncio.gather(*(one(listener) for listener in context.clients))
    context.clients = []


@dataclass(frozen=True, slots=True)
class PushRecord:
    sent: float
    answered: float
    first: int
    """First and last version the push made (first > last: none applied)."""
    last: int


class Pusher:
    """A client pushing batches of edits to users of its own, one push in flight."""

    def __init__(self, websocket: ClientConnection, client: str, users: list[str]) -> None:
        self.websocket = websocket
        self.client = client
        self.users = users
        self.seq = 0
        self.seen = 0
        self.records: list[PushRecord] = []
        self.outcomes: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self._answer: asyncio.Future[dict[str, Any]] | None = None
        self._closing = False
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                data = await self.websocket.recv(decode=False)
                head = CHANGES_HEAD.match(data)
                if head is not None:
                    self.seen = max(self.seen, int(head[2]))
                    continue
                message = orjson.loads(data)
                kind = message["type"]
                if kind in ("push_result", "error"):
                    if kind == "error":
                        self.errors[message["code"]] += 1
                    if self._answer is not None and not self._answer.done():
                        self._answer.set_result(message)
                elif kind == "changes":
                    self.seen = max(self.seen, message["to_version"])
                else:
                    self.errors[kind] += 1
        except ConnectionClosed as closed:
            if not self._closing:
                self.errors[f"closed {closed.rcvd.code if closed.rcvd else None}"] += 1
            if self._answer is not None and not self._answer.done():
                self._answer.set_exception(closed)

    async def run(self, deadline: float, batch: int, interval: float) -> None:
        """Push until `deadline` (perf_counter), at most one push per `interval` seconds."""
        loop = asyncio.get_running_loop()
        clock = time.perf_counter
        next_send = clock()
        turn = 0
        while clock() < deadline:
            wait = next_send - clock()
            if wait > 0:
                await asyncio.sleep(wait)
            mutations = []
            for _ in range(batch):
                self.seq += 1
                user = self.users[turn % len(self.users)]
                turn += 1
                mutations.append({
                    "client": self.client, "seq": self.seq, "base_version": self.seen,
                    "edit": {"op": "set_user_attribute", "user_id": user, "key": "bench",
                             "value": self.seq},
                })  # fmt: skip
            self._answer = loop.create_future()
            frame = json.dumps({"type": "push", "ref": f"r{self.seq}", "mutations": mutations})
            sent = clock()
            next_send = sent + interval
            await self.websocket.send(frame)
            try:
                answer = await asyncio.wait_for(self._answer, 60)
            except (ConnectionClosed, TimeoutError) as error:
                self.errors[type(error).__name__] += 1
                return
            answered = clock()
            if answer["type"] != "push_result":
                return
            versions = []
            for result in answer["results"]:
                self.outcomes[result["outcome"]] += 1
                if result["outcome"] == "applied":
                    versions.append(result["version"])
            if versions:
                self.seen = max(self.seen, versions[-1])
                self.records.append(PushRecord(sent, answered, versions[0], versions[-1]))
            else:
                self.records.append(PushRecord(sent, answered, 1, 0))

    async def close(self) -> None:
        self._closing = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.websocket.close(), 10)
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader


async def _pushers(context: Context, count: int, label: str) -> list[Pusher]:
    cursor = context.database.version()
    # Each pusher edits a disjoint slice of the users: no two clients touch one entity.
    pushers = []
    for k in range(count):
        device = f"{label}-push-dev-{k}"
        client = f"{label}-push-cli-{k}"
        token = context.token(_pusher_user(k), device)
        websocket, welcome, _ = await _hello(context.port, token, device, client, cursor)
        pusher = Pusher(websocket, client, [_user(i) for i in range(k, USERS, count)])
        pusher.seen = int(welcome["version"])
        pushers.append(pusher)
    return pushers


def _cpu_sample(processes: dict[str, list[psutil.Process]]) -> dict[str, float]:
    sample = {}
    for name, group in processes.items():
        total = 0.0
        for process in group:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
        sample[name] = total
    return sample


def _processes(server_pid: int, postgres_pid: int | None) -> dict[str, list[psutil.Process]]:
    postgres: list[psutil.Process] = []
    if postgres_pid is not None:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(postgres_pid)
            postgres = [root, *root.children(recursive=True)]
    return {
        "server": [psutil.Process(server_pid)],
        "postgres": postgres,
        "clients": [psutil.Process()],
    }


async def _push_phase(
    context: Context,
    name: str,
    pushers_count: int,
    seconds: float,
    batch: int,
    interval: float,
    server_pid: int,
    postgres_pid: int | None,
) -> dict[str, Any]:
    """Push for `seconds` while the connected listeners record; throughput and latency."""
    pushers = await _pushers(context, pushers_count, name)
    processes = _processes(server_pid, postgres_pid)
    cpu_before = _cpu_sample(processes)
    started = time.perf_counter()
    deadline = started + seconds
    try:
        await asyncio.gather(*(p.run(deadline, batch, interval) for p in pushers))
        ended = time.perf_counter()
        cpu_after = _cpu_sample(processes)
        last_version = max((r.last for p in pushers for r in p.records), default=0)
        # Wait until every listener has the last version (or gave up).
        drained = True
        while context.clients and any(
            c.latest < last_version and not c.task.done()  # type: ignore[union-attr]
            for c in context.clients
        ):
            if time.perf_counter() - ended > DRAIN_TIMEOUT:
                drained = False
                break
            await asyncio.sleep(0.005)
        drain = time.perf_counter() - ended
    finally:
        for pusher in pushers:
            await pusher.close()
    records = sorted((r for p in pushers for r in p.records if r.last >= r.first),
                     key=lambda r: r.first)  # fmt: skip
    all_records = [r for p in pushers for r in p.records]
    outcomes: Counter[str] = sum((p.outcomes for p in pushers), Counter())
    errors: Counter[str] = sum((p.errors for p in pushers), Counter())
    elapsed = ended - started
    applied = outcomes.get("applied", 0)
    result: dict[str, Any] = {
        "phase": name,
        "listeners": len(context.clients),
        "pushers": pushers_count,
        "batch": batch,
        "max_pushes_per_s_per_pusher": 1 / interval,
        "seconds": elapsed,
        "pushes": len(all_records),
        "pushes_per_s": len(all_records) / elapsed,
        "mutations_applied": applied,
        "mutations_per_s": applied / elapsed,
        "outcomes": dict(outcomes),
        "errors": dict(errors),
        "push_round_trip": summary_ms([r.answered - r.sent for r in all_records]),
        "cpu_s": {k: cpu_after[k] - cpu_before[k] for k in cpu_before},
        "drain_s": drain,
        "drained": drained,
    }
    if context.clients:
        result.update(_latencies(context.clients, records))
    return result


def _latencies(listeners: list[Listener], records: list[PushRecord]) -> dict[str, Any]:
    """Latency over every (listener, change) pair, weighted by changes per frame."""
    firsts = [r.first for r in records]
    from_sent: list[tuple[float, int]] = []
    from_answer: list[tuple[float, int]] = []
    expected = sum(r.last - r.first + 1 for r in records)
    received = 0
    events: Counter[str] = Counter()
    lowest = firsts[0] if firsts else 0
    for listener in listeners:
        events.update(listener.other)
        for received_at, start, end in listener.frames:
            if end < lowest:
                continue
            # Pushes whose versions overlap start+1..end.
            index = max(0, bisect.bisect_right(firsts, start + 1) - 1)
            while index < len(records) and records[index].first <= end:
                record = records[index]
                overlap = min(end, record.last) - max(start + 1, record.first) + 1
                if overlap > 0:
                    received += overlap
                    from_sent.append((received_at - record.sent, overlap))
                    from_answer.append((received_at - record.answered, overlap))
                index += 1
        listener.frames.clear()
    return {
        "pairs_expected": expected * len(listeners),
        "pairs_received": received,
        "listener_events": dict(events),
        "latency_from_push_sent": _weighted_summary_ms(from_sent),
        "latency_from_push_result": _weighted_summary_ms(from_answer),
    }


async def _sign_ins(port: int) -> dict[str, Any]:
    """Real sign_in round trips on fresh connections (argon2id t=1, m=1 MiB)."""
    round_trips: list[float] = []
    for i in range(SIGN_IN_SAMPLES):
        websocket = await connect(f"ws://127.0.0.1:{port}/sync", **websocket_options())
        try:
            started = time.perf_counter()
            await websocket.send(
                json.dumps({"type": "sign_in", "ref": "s", "tenant": TENANT, "user": _user(i),
                            "password": PASSWORD, "device": f"sign-in-dev-{i}"})
            )  # fmt: skip
            answer = json.loads(await websocket.recv())
            round_trips.append(time.perf_counter() - started)
            if answer["type"] != "signed_in":
                raise RuntimeError(f"sign_in failed: {answer}")
        finally:
            await websocket.close()
    return summary_ms(round_trips)


async def _metrics(port: int) -> dict[str, Any]:
    async with httpx.AsyncClient(trust_env=False) as http:
        response = await http.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    text = response.text
    found: dict[str, Any] = {"buckets": {}}
    for line in text.splitlines():
        if line.startswith("fleetgate_broadcast_latency_seconds_bucket"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            found["buckets"][bound] = int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith("fleetgate_broadcast_latency_seconds_sum"):
            found["sum_s"] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("fleetgate_broadcast_latency_seconds_count"):
            found["count"] = int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith(("fleetgate_mutations_total", "fleetgate_resyncs_total",
                              "fleetgate_rejections_total", "fleetgate_pushes_total")):  # fmt: skip
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


async def _bench(
    args: argparse.Namespace, database: Database, server: ServerProcess, key: bytes
) -> dict[str, Any]:
    from server.tokens import TokenSigner

    context = Context(
        server.port, database.tenant_id, TokenSigner(key), database, args.catch_up,
        args.batch, args.connect_concurrency,
    )  # fmt: skip
    postgres_pid = database.postgres.get_pid()
    try:
        return await _measure(args, context, server, postgres_pid)
    finally:  # interrupted or failed: drop the sockets, so the server need not wait on them
        for listener in context.clients:
            listener.websocket.transport.abort()


async def _measure(
    args: argparse.Namespace, context: Context, server: ServerProcess, postgres_pid: int | None
) -> dict[str, Any]:
    pid = server.process.pid
    flat_out = 1 / PUSHES_PER_SECOND
    pusher_counts = sorted({1, args.pushers})
    results: dict[str, Any] = {"sign_in": await _sign_ins(server.port), "runs": []}
    runs: list[dict[str, Any]] = results["runs"]

    def note(run: dict[str, Any]) -> None:
        runs.append(run)
        _print_run(run)

    print("\nno listeners (only the pushers' own sessions)", flush=True)
    for count in pusher_counts:
        note(await _push_phase(context, f"l0-k{count}", count, args.seconds, args.batch,
                               flat_out, pid, postgres_pid))  # fmt: skip
    results["connections"] = []
    sizes = sorted({min(GOAL_CLIENTS, args.clients), args.clients} - {0})
    for size in sizes:
        connection = await _connect_listeners(context, size, f"n{size}")
        results["connections"].append(connection)
        print(f"\n{size} listeners", flush=True)
        _print_connection(connection)
        note(await _push_phase(context, f"l{size}-paced", 1, args.seconds, 1, PACED_INTERVAL,
                               pid, postgres_pid))  # fmt: skip
        for count in pusher_counts:
            note(await _push_phase(context, f"l{size}-k{count}", count, args.seconds,
                                   args.batch, flat_out, pid, postgres_pid))  # fmt: skip
        await _close_listeners(context)
    results["server_metrics"] = await _metrics(server.port)
    return results


# --- output --------------------------------------------------------------------------------


def _ms(summary: dict[str, float]) -> str:
    return (
        f"p50 {summary['p50_ms']:.1f} ms, p99 {summary['p99_ms']:.1f} ms, "
        f"max {summary['max_ms']:.1f} ms (n={summary['n']:,})"
    )


def _print_connection(connection: dict[str, Any]) -> None:
    print(
        f"  connect + hello + catch-up ({connection['catch_up']}, "
        f"{connection['catch_up_bytes_per_client'] / 1024:.0f} KiB each, "
        f"{connection['concurrency']} at a time): {_ms(connection)}; "
        f"all {connection['connected']}/{connection['clients']} in "
        f"{connection['all_connected_s']:.2f} s"
        + (f"; failures {connection['failures']}" if connection["failures"] else ""),
        flush=True,
    )


def _print_run(run: dict[str, Any]) -> None:
    cpu = ", ".join(f"{k} {v:.1f}" for k, v in run["cpu_s"].items())
    others = {k: v for k, v in run["outcomes"].items() if k != "applied"}
    print(
        f"  {run['phase']:<10} {run['pushers']} pusher(s) x {run['batch']}/push: "
        f"{run['mutations_per_s']:,.0f} mutations/s, {run['pushes_per_s']:.1f} pushes/s; "
        f"push round trip {_ms(run['push_round_trip'])}"
        + (f"; other outcomes {others}" if others else "")
        + (f"; errors {run['errors']}" if run["errors"] else ""),
        flush=True,
    )
    print(f"             CPU s over {run['seconds']:.1f} s: {cpu}", flush=True)
    if "latency_from_push_sent" in run:
        print(
            f"             broadcast, from push sent:   {_ms(run['latency_from_push_sent'])}\n"
            f"             broadcast, from push_result: {_ms(run['latency_from_push_result'])}\n"
            f"             pairs {run['pairs_received']:,}/{run['pairs_expected']:,}; "
            f"last listener caught up {run['drain_s'] * 1000:.0f} ms after the last push"
            + (f"; listener events {run['listener_events']}" if run["listener_events"] else ""),
            flush=True,
        )


def _print_summary(results: dict[str, Any]) -> None:
    print(f"\nFleetgate sync server benchmark (Python {results['python']}, "
          f"{results['cpus']} CPUs shared by the server, Postgres and all clients)")  # fmt: skip
    sign_in = results["sign_in"]
    rows = [
        (
            "sign_in round trip",
            f"p50 {sign_in['p50_ms']:.1f} ms, p99 {sign_in['p99_ms']:.1f} ms "
            f"(argon2id t=1 m=1MiB, n={sign_in['n']})",
        )
    ]
    for connection in results.get("connections", []):
        rows.append(
            (f"connect {connection['clients']} clients",
             f"p50 {connection['p50_ms']:.0f} ms, p99 {connection['p99_ms']:.0f} ms, "
             f"max {connection['max_ms']:.0f} ms; all in {connection['all_connected_s']:.2f} s")
        )  # fmt: skip
    for run in results.get("runs", []):
        listeners = run["listeners"]
        if run["batch"] == 1:
            label = f"paced {1 / PACED_INTERVAL:.0f} pushes/s x 1, {listeners} listeners"
            rows.append((label, f"{run['mutations_per_s']:,.0f} mutations/s"))
        else:
            label = f"flat out {run['pushers']} x {run['batch']}, {listeners} listeners"
            goal = f"  (goal >= {GOAL_MUTATIONS_PER_S:,.0f})" if run["pushers"] > 1 else ""
            rows.append((label, f"{run['mutations_per_s']:,.0f} mutations/s{goal}"))
        if "latency_from_push_result" in run:
            after = run["latency_from_push_result"]
            sent = run["latency_from_push_sent"]
            goal = f"  (goal p99 <= {GOAL_P99_MS:.0f} ms)" if listeners == GOAL_CLIENTS else ""
            rows.append(
                ("  broadcast latency",
                 f"p50 {after['p50_ms']:.1f} / p99 {after['p99_ms']:.1f} ms from push_result; "
                 f"p50 {sent['p50_ms']:.1f} / p99 {sent['p99_ms']:.1f} ms from push sent{goal}")
            )  # fmt: skip
    metrics = results.get("server_metrics", {})
    if metrics.get("count"):
        rows.append(
            ("server histogram (commit->written)",
             f"count {metrics['count']:,}, sum {metrics['sum_s']:.1f} s, "
             f"mean {metrics['sum_s'] / metrics['count'] * 1000:.1f} ms")
        )  # fmt: skip
    rows.append(("server exit code", str(results.get("server_exit_code"))))
    print_rows(rows)


# --- main ----------------------------------------------------------------------------------


def _raise_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sync_server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--clients", type=int, default=500, help="listeners (0: pushes only)")
    parser.add_argument("--pushers", type=int, default=4, help="pushers (a run with 1 too)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each push run")
    parser.add_argument("--batch", type=int, default=50, help="mutations per push")
    parser.add_argument("--catch-up", choices=["snapshot", "changes"], default="snapshot")
    parser.add_argument("--connect-concurrency", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="50 clients, 3 s runs")
    parser.add_argument("--profile", help="run the server under cProfile, writing this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.seconds = min(args.clients, 50), min(args.seconds, 3.0)
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    OUT.mkdir(parents=True, exist_ok=True)
    _raise_file_limit(4 * args.clients + 1024)  # the server process inherits it

    print(f"setting up Postgres and tenant {TENANT!r} ({USERS:,} users) ...", flush=True)
    database = _database(USERS, args.pushers)
    server: ServerProcess | None = None
    results: dict[str, Any] = {
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "arguments": vars(args),
        "note": "the server, Postgres and every client share this machine's CPUs",
    }
    try:
        key = secrets.token_bytes(32)
        server = _start_server(database.url, key.hex(), args.profile)
        print(f"server pid {server.process.pid} on port {server.port}; log {server.log}",
              flush=True)  # fmt: skip
        results.update(asyncio.run(_bench(args, database, server, key)))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        if server is not None:
            results["server_exit_code"] = server.stop()
            print(f"server stopped, exit code {results['server_exit_code']}", flush=True)
        database.close()
    name = "sync_server-quick.json" if args.quick else "sync_server.json"
    if args.profile:  # not a run to quote
        name = "sync_server-profiled.json"
    (OUT / name).write_text(json.dumps(results, indent=2) + "\n")
    _print_summary(results)
    print(f"\nresults in {OUT / name}")
    return 0 if results.get("server_exit_code") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
