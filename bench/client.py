"""Client benchmark: a replica of the bench tenant, synced, edited, searched and decided from.

    python3 dev.py bench-client [--quick] [--profile]
    (.venv/bin/python -m bench.client ...)

The client issue § Benchmarks: figures, not assertions. Starts one throwaway
embedded Postgres, creates the bench tenant of bench/tenant.py (1,000 roles,
50,000 users; `--quick`: 100 roles, 2,000 users) with an admin role added
(`bench-admin`: role:* and user:*, with `escalate` listed for roles, so its
edits are accepted), imports it, runs `python -m server server` (what
`fleetgate server` runs) in a process of its own, and measures:

- initial sync: a fresh encrypted replica (keyring mode, an in-memory keyring
  backend in this process) from connecting to holding the policy at the
  server's version, FTS included; median of several runs, broken down into
  connecting, snapshot transfer (and how much of it is decoding frames),
  validating (join, parse_policy, entity documents, digest) and writing
  (entity rows, FTS rows, commit); rows/s beside PowerSync's published
  27,600 rows/s for a desktop. The server cuts a version's snapshot once for
  every client: that first cut is measured apart, before the runs;
- search: `Replica.search` over realistic queries (user ids, id prefixes, role
  names and prefixes, attribute values, people's names, description words,
  role ids), p50/p99 overall and p99 per kind;
- a backlog: one client queues N offline edits (`offline.queue_edits`, as
  `fleetgate edit` does: assignments, attribute sets, rules), then syncs: time
  to every outcome and to the replica confirming them;
- propagation: 200 connected clients: a pushing `SyncSession` (replica), a
  receiving `SyncSession` (replica, its `apply_changes` timed) and 198 raw
  websocket listeners in a process of their own (they read `changes` frames
  and apply nothing); one edit per push, paced; latency from the push being
  handed to the socket, and from its `push_result`, to each other client
  (CLOCK_MONOTONIC, comparable across processes);
- after the server is stopped: `fleetgate check --replica-dir` as whole
  processes on a passphrase-mode replica (`PYTHON_KEYRING_BACKEND` null,
  `FLEETGATE_PASSPHRASE`): one cold decision (median, min, max, CPU), how much
  of it is Argon2 (the key derivation alone, in process) and the phases of the
  rest (a fresh process doing what `check` does, step by step), the
  `-X importtime` top offenders; and the bench's requests as a batch with
  `--no-log` and with logging, beside the same batch from the policy file,
  and where the `--no-log` batch's time goes (`_batch_phases`).

Figures go to standard output and to bench/out/client.json
(client-quick.json with --quick); the server's log to
bench/out/client-server.log; `--profile` also writes a cProfile of one
initial sync to bench/out/client-initial-sync.prof.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import inspect
import json
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from app.batch import usable_cores
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
ROOT = OUT.parent.parent
TENANT = "bench-fleet"
ADMIN = "bench-admin"
ADMIN_ROLE = "bench-admin"
ESCALATE = "escalate"
PASSWORD = "bench password"
PASSPHRASE = "bench replica passphrase"
POWERSYNC_ROWS_PER_S = 27_600
"""PowerSync's published initial-sync rate for a desktop client."""
TODAY_POLICY_FILE_PER_S = 64_000
"""`fleetgate check --policy --requests` end to end on this tenant before this benchmark."""

GOAL_INITIAL_SYNC_S = 1.5
GOAL_BACKLOG_S = 10.0
GOAL_PROPAGATION_P99_MS = 50.0
GOAL_COLD_DECISION_S = 0.3
GOAL_SEARCH_P99_MS = 20.0
GOAL_BATCH_NO_LOG = 150_000
GOAL_BATCH_LOGGED = 100_000

BIN = Path(sys.executable).parent
clock = time.monotonic
"""CLOCK_MONOTONIC on Linux: one clock for this process, its threads and the listeners'."""


# --- figures -----------------------------------------------------------------------------


def _spread(values: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": [round(v, 4) for v in values],
    }


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- an OS keyring for this process ------------------------------------------------------


def _memory_keyring() -> Any:
    """A keyring backend that keeps entries in a dict (priority 1: `keyring_available()`)."""
    from keyring.backend import KeyringBackend
    from keyring.errors import PasswordDeleteError

    class MemoryKeyring(KeyringBackend):
        priority = 1  # type: ignore[assignment]

        def __init__(self) -> None:
            super().__init__()
            self.entries: dict[tuple[str, str], str] = {}
            self.lock = threading.Lock()

        def get_password(self, service: str, username: str) -> str | None:
            with self.lock:
                return self.entries.get((service, username))

        def set_password(self, service: str, username: str, password: str) -> None:
            with self.lock:
                self.entries[(service, username)] = password

        def delete_password(self, service: str, username: str) -> None:
            with self.lock:
                if self.entries.pop((service, username), None) is None:
                    raise PasswordDeleteError("no such entry")

    return MemoryKeyring()


@contextlib.contextmanager
def _keyring_of_its_own() -> Iterator[None]:
    """A fresh in-memory keyring for a replica of a (tenant, user) that already has one.

    The keyring entry of a replica is named by its slot, a hash of tenant and user
    only: a second replica of the same user in another directory would replace the
    first one's key and read its tokens.
    """
    import keyring

    kept = keyring.get_keyring()
    keyring.set_keyring(_memory_keyring())
    try:
        yield
    finally:
        keyring.set_keyring(kept)


# --- the tenant, the database and the server ---------------------------------------------


def _tenant_folder(args: argparse.Namespace) -> Path:
    from bench.tenant import benchmark_folder

    return benchmark_folder(OUT, args.roles, args.users, args.requests, args.seed)


def _bench_document(folder: Path) -> dict[str, Any]:
    """The bench tenant with an admin who may make (and confer) any edit."""
    document: dict[str, Any] = orjson.loads((folder / "policy.json").read_bytes())
    role_actions = document["resource_types"]["role"]
    if ESCALATE not in role_actions:
        role_actions.append(ESCALATE)
    document["roles"].append(
        {
            "name": ADMIN_ROLE,
            "description": "The benchmark's administrator: every role and user edit",
            "grants": [
                {"resource": "role", "actions": ["*"]},
                {"resource": "user", "actions": ["*"]},
            ],
        }
    )
    document["users"].append({"id": ADMIN, "name": "Bench Admin", "roles": [{"role": ADMIN_ROLE}]})
    return document


# --- raw websocket clients ---------------------------------------------------------------


async def _hello(url: str, token: str, device: str, client: str, cursor: int) -> tuple[Any, int]:
    """A raw client connected and caught up: (websocket, the version it is at)."""
    from websockets.asyncio.client import connect

    websocket = await connect(url, **websocket_options())
    await websocket.send(
        json.dumps({"type": "hello", "protocol": 2, "access_token": token, "device": device,
                    "client": client, "cursor": cursor})
    )  # fmt: skip
    welcome = orjson.loads(await websocket.recv(decode=False))
    if welcome["type"] != "welcome":
        await websocket.close()
        raise RuntimeError(f"hello refused: {welcome}")
    while True:
        message = orjson.loads(await websocket.recv(decode=False))
        if message["type"] == "changes" and not message["more"]:
            return websocket, int(message["to_version"])


async def _first_cut(url: str, token: str) -> float:
    """Seconds for a raw client to get a snapshot: the server cuts the version's once."""
    started = clock()
    websocket, _ = await _hello(url, token, "bench-warm-device", "bench-warm-client", 0)
    elapsed = clock() - started
    await websocket.close()
    return elapsed


def _listeners_process(url: str, tokens: list[str], pipe: Any) -> None:
    """The listeners' process: connect, say ready, record `changes` frames until told to stop."""
    asyncio.run(_listeners_main(url, tokens, pipe))


async def _listeners_main(url: str, tokens: list[str], pipe: Any) -> None:
    from websockets.exceptions import ConnectionClosed

    gate = asyncio.Semaphore(50)
    frames: list[list[tuple[float, int, int]]] = [[] for _ in tokens]
    sockets: list[Any] = [None] * len(tokens)
    failures: Counter[str] = Counter()
    latest = [0] * len(tokens)

    cursor = pipe.recv()  # the tenant's version: listeners catch up by changes

    async def connect_one(number: int) -> None:
        async with gate:
            try:
                websocket, version = await _hello(
                    url, tokens[number], f"bench-listen-dev-{number}",
                    f"bench-listen-cli-{number}", cursor,
                )  # fmt: skip
            except (OSError, RuntimeError, ConnectionClosed, TimeoutError) as error:
                failures[type(error).__name__] += 1
                return
        sockets[number] = websocket
        latest[number] = version

    async def listen(number: int) -> None:
        websocket = sockets[number]
        try:
            while True:
                data = await websocket.recv(decode=False)
                now = clock()
                head = CHANGES_HEAD.match(data)
                if head is not None:
                    frames[number].append((now, int(head[1]), int(head[2])))
                    latest[number] = max(latest[number], int(head[2]))
        except ConnectionClosed:
            return

    await asyncio.gather(*(connect_one(i) for i in range(len(tokens))))
    tasks = [asyncio.create_task(listen(i)) for i in range(len(tokens)) if sockets[i] is not None]
    pipe.send(("ready", sum(s is not None for s in sockets), dict(failures)))
    while not pipe.poll():
        await asyncio.sleep(0.02)
    last_version = pipe.recv()
    deadline = clock() + 15
    while clock() < deadline and any(
        latest[i] < last_version for i in range(len(tokens)) if sockets[i] is not None
    ):
        await asyncio.sleep(0.01)
    for websocket in sockets:
        if websocket is not None:
            websocket.transport.abort()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    pipe.send(("frames", frames))


# --- replicas and sessions ---------------------------------------------------------------


@dataclass
class Client:
    """A replica with a sync session and a transport over it (as `fleetgate sync` builds)."""

    replica: Any
    session: Any
    transport: Any
    reports: list[str] = field(default_factory=list)

    @property
    def connection(self) -> Any:
        return self.session.connection


def _open_replica(directory: Path, user: str, *, create: bool = False, passphrase: bool = False):
    from app.replica import Replica
    from app.replica_file import KeyMode

    return Replica.open(
        directory, TENANT, user, create=create,
        mode=KeyMode.PASSPHRASE if passphrase else KeyMode.KEYRING,
        passphrase=(lambda: PASSPHRASE) if passphrase else None,
    )  # fmt: skip


def _client(replica: Any, url: str, *, watch: bool = False) -> Client:
    from app.sync_client import SyncSession, Transport, jitter
    from sync.protocol.client import ClientConnection, Password, Tokens

    meta = replica.meta()
    access, refresh = replica.tokens()
    tokens = Tokens(access, refresh) if refresh is not None else None
    connection = ClientConnection(
        device=meta.device, client=replica.client, rng=jitter(1), tokens=tokens,
        credentials=None if tokens else Password(TENANT, meta.user, PASSWORD),
    )  # fmt: skip
    reports: list[str] = []
    session = SyncSession(replica, connection, report=reports.append, watch=watch)
    if meta.server != url:
        replica.set_meta(server=url)
    return Client(replica, session, Transport(url, session), reports)


async def _run(client: Client, until: Callable[[], bool], timeout: float) -> None:
    done = await client.transport.run(until, clock() + timeout)
    if not done:
        raise RuntimeError(
            f"sync did not finish in {timeout:g} s ({client.transport.last_failure}); "
            f"last reports: {client.reports[-5:]}"
        )
    if client.session.ending is not None:
        raise RuntimeError(f"sync ended: {client.session.ending.message}")


# --- initial sync ------------------------------------------------------------------------


class _TimedConnection:
    """Stands in for a replica's connection while a snapshot is written, timing its SQL."""

    def __init__(self, conn: Any, times: Counter[str], active: list[bool]) -> None:
        self._conn = conn
        self._times = times
        self._active = active

    def _timed(self, method: str, sql: str, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return getattr(self._conn, method)(sql, *args)
        finally:
            if self._active[0]:
                self._times[_sql_label(sql)] += time.perf_counter() - started

    def execute(self, sql: str, *args: Any) -> Any:
        return self._timed("execute", sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        return self._timed("executemany", sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def _sql_label(sql: str) -> str:
    text = " ".join(sql.split()).upper()
    if text.startswith("INSERT INTO ENTITIES"):
        return "entity rows (JSON text + insert)"
    if text.startswith("INSERT INTO ENTITY_TEXT"):
        return "FTS rows (search text + insert)"
    if text.startswith("DELETE FROM ENTIT"):
        return "clearing the old policy"
    if text == "COMMIT":
        return "commit"
    return "meta, outbox and the rest"


@contextlib.contextmanager
def _timed_names(module: Any, names: tuple[str, ...], times: Counter[str]) -> Iterator[None]:
    """Time calls of the module-level functions `names` of `module` (those it has)."""
    saved = {name: getattr(module, name) for name in names if hasattr(module, name)}

    def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            result = function(*args, **kwargs)
            if inspect.isgenerator(result):
                result = list(result)
            times[name] += time.perf_counter() - started
            return result

        return call

    for name, function in saved.items():
        setattr(module, name, timed(name, function))
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(module, name, function)


async def _initial_sync(url: str, directory: Path, user: str, *, passphrase: bool = False,
                        profile: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Sync a fresh replica; when it holds the policy, and how the time was spent."""
    import sync.replication.follow as follow_module
    from sync.replication.follow import Follower

    gc.collect()
    opened = time.perf_counter()
    replica = _open_replica(directory, user, create=True, passphrase=passphrase)
    open_s = time.perf_counter() - opened
    client = _client(replica, url)
    session, connection = client.session, client.connection
    frames: list[tuple[float, float, int]] = []
    marks: dict[str, float] = {}
    follow_times: Counter[str] = Counter()
    sql_times: Counter[str] = Counter()
    writing = [False]

    receive = connection.receive

    def timed_receive(frame: Any, now: float) -> None:
        started = clock()
        receive(frame, now)
        ended = clock()
        head = frame[:40] if isinstance(frame, str) else ""
        if '"type":"snapshot"' in head:
            frames.append((started, ended, len(frame)))
        elif '"type":"welcome"' in head:
            marks.setdefault("welcome", ended)

    connection.receive = timed_receive
    follower = session.follower = Follower(None, 0, None)  # what _ensure_follower makes here
    snapshot = follower.snapshot

    def timed_snapshot(message: Any, now: Any) -> Any:
        started = clock()
        followed = snapshot(message, now)
        if followed is not None:
            marks["follow_start"], marks["follow_end"] = started, clock()
        return followed

    follower.snapshot = timed_snapshot
    replace_all = replica.replace_all

    def timed_replace_all(*args: Any) -> None:
        marks["write_start"] = clock()
        writing[0] = True
        try:
            replace_all(*args)
        finally:
            writing[0] = False
            marks["write_end"] = clock()

    replica.replace_all = timed_replace_all
    conn = replica.file.conn
    replica.file.conn = _TimedConnection(conn, sql_times, writing)
    names = ("join_snapshot_parts", "parse_policy", "policy_entities", "snapshot_entities",
             "digest_of")  # fmt: skip
    profiler = None
    if profile is not None:
        import cProfile

        profiler = cProfile.Profile()
    started = clock()
    try:
        with _timed_names(follow_module, names, follow_times):
            if profiler is not None:
                profiler.enable()
            await _run(client, lambda: session.caught_up, 600)
            if profiler is not None:
                profiler.disable()
    finally:
        replica.file.conn = conn
    caught_up = clock()
    # What the collector was spared while the policy was built: the objects are young,
    # and the first collections after walk them all (here, with the session still alive).
    collected = time.perf_counter()
    gc.collect()
    deferred_gc = time.perf_counter() - collected
    if profiler is not None and profile is not None:
        profiler.dump_stats(str(profile))
    meta = replica.meta()
    count = len(replica.entities())
    replica.close()
    first = frames[0][0] if frames else marks["write_start"]
    last = frames[-1][1] if frames else marks["write_start"]
    total = marks["write_end"] - started
    return {
        "seconds": total,
        "entities": count,
        "rows_per_s": count / total,
        "version": meta.cursor,
        "open_replica_s": open_s,
        "connect_sign_in_welcome_s": marks.get("welcome", first) - started,
        "welcome_to_first_chunk_s": first - marks.get("welcome", first),
        "snapshot_frames": len(frames),
        "snapshot_bytes": sum(size for _, _, size in frames),
        "first_to_last_chunk_s": last - first,
        "decoding_frames_s": sum(end - begin for begin, end, _ in frames),
        "last_chunk_to_follow_s": marks["follow_start"] - last,
        "follow_s": marks["follow_end"] - marks["follow_start"],
        "follow_steps_s": dict(follow_times),
        "follow_to_write_s": marks["write_start"] - marks["follow_end"],
        "write_s": marks["write_end"] - marks["write_start"],
        "write_steps_s": dict(sql_times),
        "to_caught_up_s": caught_up - started,
        "collection_after_s": deferred_gc,
        "peak_rss_mib": _rss_mib(),
    }


def _search_text_cost(directory: Path) -> float:
    """Seconds `_search_text` takes over every role and user of the replica (pure Python)."""
    from app.replica import _search_text

    replica = _open_replica(directory, ADMIN)
    try:
        entities = [e for e in replica.entities() if e.kind != "settings"]
    finally:
        replica.close()
    started = time.perf_counter()
    for entity in entities:
        _search_text(entity.kind, entity.id, entity.document)
    return time.perf_counter() - started


# --- search ------------------------------------------------------------------------------


def _search_queries(document: dict[str, Any], seed: int) -> list[tuple[str, str]]:
    """(kind, query) pairs a person would type, drawn from the tenant."""
    import random

    rng = random.Random(seed)
    users = document["users"]
    roles = document["roles"]
    queries: list[tuple[str, str]] = []
    for user in rng.sample(users, 40):
        queries.append(("user id", user["id"]))
    for user in rng.sample(users, 20):
        queries.append(("user id prefix", user["id"][: rng.choice([3, 4, 5])]))
    for role in rng.sample(roles, 40):
        queries.append(("role name", role["name"]))
    for role in rng.sample(roles, 20):
        name = role["name"]
        queries.append(("role name prefix", name[: max(3, len(name) // 2)]))
    for user in rng.sample(users, 30):
        attributes = user.get("attributes") or {}
        value = rng.choice([attributes.get("depot"), attributes.get("region"),
                            rng.choice(attributes.get("shifts") or ["day"])])  # fmt: skip
        queries.append(("attribute value", str(value)))
    for user in rng.sample(users, 20):
        name = user.get("name") or user["id"]
        queries.append(("person's name", name if rng.random() < 0.5 else name.split()[0]))
    for word in ("maintenance", "dispatch", "depot", "confidential", "report", "fuel",
                 "night", "region", "hazmat", "supervisor"):  # fmt: skip
        queries.append(("description word", word))
    from sync.policy.document import role_id_for

    for role in rng.sample(roles, 10):
        queries.append(("role id prefix", role_id_for(TENANT, role["name"])[:7]))
    return queries


def _search(directory: Path, queries: list[tuple[str, str]], rounds: int) -> dict[str, Any]:
    replica = _open_replica(directory, ADMIN)
    try:
        first: list[float] = []
        hits: list[int] = []
        for _kind, text in queries:
            started = time.perf_counter()
            hits.append(len(replica.search(text)))
            first.append(time.perf_counter() - started)
        samples: dict[str, list[float]] = {}
        every: list[float] = []
        for _ in range(rounds):
            for kind, text in queries:
                started = time.perf_counter()
                replica.search(text)
                elapsed = time.perf_counter() - started
                samples.setdefault(kind, []).append(elapsed)
                every.append(elapsed)
    finally:
        replica.close()
    return {
        "queries": len(queries),
        "rounds": rounds,
        "first_pass": summary_ms(first),
        **summary_ms(every),
        "by_kind": {kind: summary_ms(values) for kind, values in samples.items()},
        "median_hits": statistics.median(hits),
        "examples": [text for _, text in queries[::20]],
    }


# --- backlog -----------------------------------------------------------------------------


def _backlog_edits(document: dict[str, Any], count: int, seed: int,
                   avoid: set[str]) -> list[dict[str, Any]]:  # fmt: skip
    """Cheap offline edits: attribute sets, assignments (of roles no constraint names,
    nor any role they inherit) and grants added to roles."""
    import random

    from app.policy_files import gc_paused
    from sync.policy.document import parse_policy
    from sync.policy.instant import parse_instant

    with gc_paused():
        policy = parse_policy(document, now=parse_instant("2026-11-22T00:00:00Z"))
    constrained = {r for c in policy.constraints for r in c.exclusive}
    safe = [
        role_id for role_id in policy.roles
        if policy.role_name(role_id) != ADMIN_ROLE
        and not any(held in constrained for held, _ in policy.ancestors(role_id))
    ]  # fmt: skip
    users = [u for u in policy.users if u not in avoid and u != ADMIN]
    roles = list(policy.roles)
    del policy
    rng = random.Random(seed)
    edits: list[dict[str, Any]] = []
    for i in range(count):
        kind = i % 5
        if kind in (0, 1):
            edits.append({"op": "set_user_attribute", "user_id": rng.choice(users),
                          "key": "badge", "value": f"b-{i}"})  # fmt: skip
        elif kind in (2, 3):
            edits.append({"op": "assign_role", "user_id": rng.choice(users),
                          "role_id": rng.choice(safe),
                          "expires": "2027-06-30T00:00:00Z"})  # fmt: skip
        else:
            edits.append({"op": "add_rule", "owner": f"role:{rng.choice(roles)}", "effect": "grant",
                          "rule": {"resource": "vehicle", "actions": ["read"],
                                   "when": {"resource.id": f"veh-{i}"}}})  # fmt: skip
    return edits


def _processes(server: ServerProcess, database: Database) -> dict[str, list[Any]]:
    """The server, Postgres (with its workers) and this process, for CPU accounting."""
    import psutil

    postgres: list[Any] = []
    pid = database.postgres.get_pid()
    if pid is not None:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            postgres = [root, *root.children(recursive=True)]
    return {"server": [psutil.Process(server.process.pid)], "postgres": postgres,
            "this client": [psutil.Process()]}  # fmt: skip


def _cpu(processes: dict[str, list[Any]]) -> dict[str, float]:
    import psutil

    sample: dict[str, float] = {}
    for name, group in processes.items():
        total = 0.0
        for process in group:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
        sample[name] = total
    return sample


async def _backlog(
    url: str, directory: Path, edits: list[dict[str, Any]], processes: dict[str, list[Any]]
) -> dict[str, Any]:
    from app import offline

    replica = _open_replica(directory, ADMIN)
    try:
        started = time.perf_counter()
        seqs = offline.queue_edits(replica, edits, author=ADMIN)
        queued = time.perf_counter() - started
        client = _client(replica, url)
        session = client.session
        marks: dict[str, float] = {}
        sent: list[float] = []
        answered: list[float] = []
        push = client.connection.push

        def timed_push(mutations: Any, now: float) -> str:
            sent.append(clock())
            return str(push(mutations, now))

        client.connection.push = timed_push
        record = replica.record_outcomes

        def counted(results: Any, answered_at: Any) -> None:
            answered.append(clock())
            record(results, answered_at)

        replica.record_outcomes = counted

        def until() -> bool:
            if "outcomes" not in marks and len(session.outcomes) >= len(seqs):
                marks["outcomes"] = clock()
            return bool(session.finished)

        cpu_before = _cpu(processes)
        begun = clock()
        await _run(client, until, 600)
        finished = clock()
        cpu_after = _cpu(processes)
        outcomes = Counter(result.outcome.value for result in session.outcomes)
        codes = Counter(result.code for result in session.outcomes if result.code)
        meta = replica.meta()
        left = len(replica.outbox())
    finally:
        replica.close()
    return {
        "edits": len(edits),
        "queue_s": queued,
        "to_all_outcomes_s": marks.get("outcomes", finished) - begun,
        "to_confirmed_s": finished - begun,
        "outcomes": dict(outcomes),
        "codes": dict(codes),
        "pushes": len(answered),
        "cpu_s": {name: cpu_after[name] - cpu_before[name] for name in cpu_before},
        "waiting_for_answers_s": sum(b - a for a, b in zip(sent, answered, strict=False)),
        "outbox_left": left,
        "version": meta.cursor,
    }


# --- propagation -------------------------------------------------------------------------


class _Runner:
    """A client running on a SyncThread's loop until `stop()`."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.stopping = False
        self.client: Client | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.cursor = 0
        """The replica's cursor, as last written (for other threads to read)."""

    def stop(self) -> None:
        def wake() -> None:
            self.stopping = True
            if self.client is not None:
                self.client.transport.wake()

        assert self.loop is not None
        self.loop.call_soon_threadsafe(wake)

    async def run_client(self, client: Client) -> None:
        self.client, self.loop = client, asyncio.get_running_loop()
        task = asyncio.ensure_future(client.transport.run(lambda: self.stopping))
        while not client.session.caught_up:
            if task.done():
                task.result()
                raise RuntimeError(f"the client stopped before it caught up: {client.reports}")
            await asyncio.sleep(0.005)
        self.ready.set()
        await task


async def _receiver(runner: _Runner, url: str, directory: Path, user: str) -> list[tuple]:
    """A replica following the tenant: when each page of changes was written."""
    replica = _open_replica(directory, user)
    client = _client(replica, url, watch=True)
    applied: list[tuple[float, int, int]] = []
    apply_changes = replica.apply_changes
    cursor = [replica.meta().cursor]

    def timed(version: int, after: Any, digest: int, history: Any = ()) -> None:
        apply_changes(version, after, digest, history)
        applied.append((clock(), cursor[0], version))
        cursor[0] = runner.cursor = version

    replica.apply_changes = timed
    try:
        await runner.run_client(client)
    finally:
        replica.close()
    return applied


async def _pusher(runner: _Runner, url: str, directory: Path, go: threading.Event,
                  pushes: int, interval: float, target: str) -> dict[str, Any]:  # fmt: skip
    """Push one edit at a time, paced: when each was handed to the socket and answered."""
    from app.sync_client import wall_now

    replica = _open_replica(directory, ADMIN)
    client = _client(replica, url, watch=True)
    sent: dict[int, float] = {}
    answered: dict[int, tuple[float, int | None, str]] = {}
    answer = asyncio.Event()
    push = client.connection.push

    def timed_push(mutations: Any, now: float) -> str:
        at = clock()
        for mutation in mutations:
            sent.setdefault(mutation.seq, at)
        return str(push(mutations, now))

    client.connection.push = timed_push
    record = replica.record_outcomes

    def timed_record(results: Any, answered_at: Any) -> None:
        at = clock()
        for result in results:
            answered[result.seq] = (at, result.version, result.outcome.value)
        record(results, answered_at)
        answer.set()

    replica.record_outcomes = timed_record
    loop = asyncio.get_running_loop()
    running = asyncio.ensure_future(runner.run_client(client))
    try:
        while not runner.ready.is_set():
            if running.done():
                running.result()
            await asyncio.sleep(0.005)
        await loop.run_in_executor(None, go.wait)
        begin = clock()
        seqs: list[int] = []
        for i in range(pushes):
            wait = begin + i * interval - clock()
            if wait > 0:
                await asyncio.sleep(wait)
            answer.clear()
            now = wall_now()
            document = {"op": "set_user_attribute", "user_id": target, "key": "probe", "value": i}
            seqs += replica.add_edits([document], now, now)
            client.transport.wake()
            with contextlib.suppress(TimeoutError):
                while seqs[-1] not in answered:
                    await asyncio.wait_for(answer.wait(), 30)
                    answer.clear()
        return {"sent": sent, "answered": answered, "seqs": seqs}
    finally:
        runner.stop()
        with contextlib.suppress(Exception):
            await running
        replica.close()


def _propagation(server: ServerProcess, database: Database, key: bytes, admin_dir: Path,
                 receiver_dir: Path, receiver: str, listener_users: list[str],
                 pushes: int, interval: float, target: str) -> dict[str, Any]:  # fmt: skip
    import multiprocessing

    from app.sync_client import SyncThread
    from server.tokens import TokenSigner

    signer = TokenSigner(key)
    tokens = [
        signer.issue(tenant_id=database.tenant_id, tenant=TENANT, user=user,
                     device=f"bench-listen-dev-{i}", now=time.time())[0]
        for i, user in enumerate(listener_users)
    ]  # fmt: skip
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    listeners = context.Process(target=_listeners_process, args=(server.url, tokens, theirs))
    listeners.start()
    threads: list[Any] = []
    try:
        ours.send(database.version())
        if not ours.poll(180):
            raise RuntimeError("the listeners did not connect within 180 s")
        _ready, connected, failures = ours.recv()
        receiving, pushing = _Runner(), _Runner()
        receiver_thread, pusher_thread = SyncThread(), SyncThread()
        threads += [receiver_thread, pusher_thread]
        received = asyncio.run_coroutine_threadsafe(
            _receiver(receiving, server.url, receiver_dir, receiver), receiver_thread.loop
        )
        if not receiving.ready.wait(120):
            raise RuntimeError("the receiving client did not catch up")
        go = threading.Event()
        pushed = asyncio.run_coroutine_threadsafe(
            _pusher(pushing, server.url, admin_dir, go, pushes, interval, target),
            pusher_thread.loop,
        )
        if not pushing.ready.wait(120):
            raise RuntimeError("the pushing client did not catch up")
        # Both sessions loaded a whole policy with the collector paused: the first
        # collections after walk those objects, once (reported with the initial sync's
        # figures). Done here, so the pushes measure a client that has settled.
        started = time.perf_counter()
        gc.collect()
        settle_s = time.perf_counter() - started
        with _GcPauses() as pauses:
            go.set()
            result = pushed.result(pushes * interval + 120)
        versions = [v for _, v, _ in result["answered"].values() if v is not None]
        last = max(versions, default=0)
        deadline = clock() + 15
        while clock() < deadline:
            if receiving.cursor >= last:
                break
            time.sleep(0.01)
        ours.send(last)
        if not ours.poll(60):
            raise RuntimeError("the listeners did not report")
        _frames, frames = ours.recv()
        receiving.stop()
        applied = received.result(30)
    finally:
        listeners.join(30)
        if listeners.is_alive():
            listeners.kill()
        for thread in threads:
            thread.close()
    figures = _propagation_figures(result, applied, frames, connected, failures, pushes, interval)
    figures["settling_collection_s"] = settle_s
    figures["gc_pauses_while_pushing"] = pauses.summary()
    return figures


class _GcPauses:
    """The garbage collector's pauses in this process while the block runs."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((int(info["generation"]), time.perf_counter() - self._started))

    def __enter__(self) -> _GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self) -> dict[str, Any]:
        longest = max(self.pauses, key=lambda p: p[1], default=(None, 0.0))
        return {"count": len(self.pauses), "total_ms": sum(d for _, d in self.pauses) * 1000,
                "max_ms": longest[1] * 1000, "max_generation": longest[0]}  # fmt: skip


def _propagation_figures(result: dict[str, Any], applied: list[tuple], frames: list[list],
                         connected: int, failures: dict[str, int], pushes: int,
                         interval: float) -> dict[str, Any]:  # fmt: skip
    sent, answered = result["sent"], result["answered"]
    by_version: dict[int, tuple[float, float]] = {}
    outcomes: Counter[str] = Counter()
    for seq, (at, version, outcome) in answered.items():
        outcomes[outcome] += 1
        if version is not None and seq in sent:
            by_version[version] = (sent[seq], at)
    versions = sorted(by_version)

    def pairs(received: list[tuple[float, int, int]]) -> tuple[list[float], list[float], int]:
        from_sent, from_result, seen = [], [], 0
        for at, start, end in received:
            for version in versions:
                if start < version <= end:
                    seen += 1
                    from_sent.append(at - by_version[version][0])
                    from_result.append(at - by_version[version][1])
        return from_sent, from_result, seen

    listener_sent: list[float] = []
    listener_result: list[float] = []
    listener_pairs = 0
    for listener in frames:
        a, b, n = pairs(listener)
        listener_sent += a
        listener_result += b
        listener_pairs += n
    replica_sent, replica_result, replica_pairs = pairs(applied)
    round_trips = [by_version[v][1] - by_version[v][0] for v in versions]
    return {
        "clients": connected + 2,
        "listeners": connected,
        "listener_failures": failures,
        "pushes": pushes,
        "pushes_per_s": 1 / interval,
        "outcomes": dict(outcomes),
        "push_round_trip": summary_ms(round_trips),
        "pairs_expected": len(versions) * (connected + 1),
        "pairs_received": listener_pairs + replica_pairs,
        "all_from_push_sent": summary_ms(listener_sent + replica_sent),
        "all_from_push_result": summary_ms(listener_result + replica_result),
        "replica_applied_from_push_sent": summary_ms(replica_sent),
        "replica_slowest_ms": sorted(
            ((round(v * 1000, 1), n) for n, v in enumerate(replica_sent)), reverse=True
        )[:5],
        "listeners_from_push_sent": summary_ms(listener_sent),
    }


# --- fleetgate check as whole processes ----------------------------------------------------


def _fleetgate() -> list[str]:
    script = BIN / "fleetgate"
    return [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]


def _client_environment(*, keyring_mode: bool = False) -> dict[str, str]:
    """Passphrase mode (no keyring across processes without a real one), or keyring mode
    with the file-backed keyring of bench/file_keyring.py standing in for the OS's."""
    if keyring_mode:
        return os.environ | {
            "PYTHON_KEYRING_BACKEND": "bench.file_keyring.Keyring",
            "FLEETGATE_BENCH_KEYRING": str(OUT / "bench-keyring.json"),
            "PYTHONPATH": str(ROOT),
        }
    return os.environ | {
        "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
        "FLEETGATE_PASSPHRASE": PASSPHRASE,
    }


def _keyring_mode_copy(source: Path, target: Path) -> None:
    """A keyring-mode replica of ADMIN holding what the passphrase-mode one in `source`
    holds (policy, cursor, lease), its key in the file-backed keyring."""
    import keyring

    from app.replica import Replica
    from app.replica_file import KeyMode
    from bench.file_keyring import Keyring
    from sync.replication.digest import digest_of

    os.environ.update(_client_environment(keyring_mode=True))
    (OUT / "bench-keyring.json").unlink(missing_ok=True)
    kept = keyring.get_keyring()
    keyring.set_keyring(Keyring())
    try:
        original = _open_replica(source, ADMIN, passphrase=True)
        meta, entities = original.meta(), original.entities()
        original.close()
        shutil.rmtree(target, ignore_errors=True)
        replica = Replica.open(target, TENANT, ADMIN, create=True, mode=KeyMode.KEYRING)
        replica.replace_all(meta.cursor, entities, digest_of(entities))
        replica.set_meta(synced_at=meta.synced_at, lease_seconds=meta.lease_seconds,
                         clock_mark=meta.clock_mark)  # fmt: skip
        replica.close()
    finally:
        keyring.set_keyring(kept)
        for name in ("PYTHON_KEYRING_BACKEND", "FLEETGATE_BENCH_KEYRING"):
            os.environ.pop(name, None)


def _timed_process(
    command: list[str],
    *,
    stdout: Any = subprocess.DEVNULL,
    environment: dict[str, str] | None = None,
) -> tuple[float, float, bytes]:
    """(wall seconds, CPU seconds of the child, its stdout if piped)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        command, stdout=stdout, stderr=subprocess.PIPE, env=environment, check=False
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{command[:3]}... exited {done.returncode}: {done.stderr.decode()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout or b""


def _runs(command: list[str], runs: int, *, environment: dict[str, str] | None = None,
          prepare: Callable[[], list[str]] | None = None) -> dict[str, Any]:  # fmt: skip
    """One warm-up, then `runs` timed runs; `prepare` gives each run its command."""
    walls: list[float] = []
    cpus: list[float] = []
    first = b""
    for number in range(runs + 1):
        run_command = prepare() if prepare is not None else command
        wall, cpu, out = _timed_process(
            run_command, environment=environment,
            stdout=subprocess.PIPE if number == 0 else subprocess.DEVNULL,
        )  # fmt: skip
        if number == 0:
            first = out
        else:
            walls.append(wall)
            cpus.append(cpu)
    return {"wall_s": _spread(walls), "cpu_s": _spread(cpus), "lines": first.count(b"\n"),
            "first_line": first.split(b"\n", 1)[0].decode(errors="replace")[:300]}  # fmt: skip


_COLD_PROBE = """
import sys, time, json
started = time.perf_counter()
from app import client_cli, offline
from app.replica import Replica
from app.replica_file import passphrase_from_environment
from sync.policy.request import parse_request
imported = time.perf_counter()
directory, tenant, owner, user, action, kind, ident = sys.argv[1:8]
replica = Replica.open(directory, tenant, owner, passphrase=passphrase_from_environment())
opened = time.perf_counter()
document = {"user": user, "action": action, "resource": {"type": kind, "id": ident}}
request = parse_request(document)
decider = offline.Decider(replica, log=True)
prepared = time.perf_counter()
engine = decider.engine_for(request.user, decider.situation().at)
loaded = time.perf_counter()
answers, relied, situation = decider.decide(engine, [request], [document])
decided = time.perf_counter()
replica.close()
closed = time.perf_counter()
print(json.dumps({"imports": imported - started, "open (header, Argon2, SQLCipher, schema)":
    opened - imported, "meta and pending edits": prepared - opened,
    "load the user's part + compile": loaded - prepared,
    "decide + log (a write transaction)": decided - loaded, "close": closed - decided}))
"""


def _cold_decision(
    directory: Path, user: str, runs: int, policy_file: Path, *, keyring_mode: bool = False
) -> dict[str, Any]:
    """`fleetgate check --replica-dir ... --user U ...` as a whole process, and where its
    time goes."""
    from app.replica_file import read_header
    from app.replica_keys import derive_key

    environment = _client_environment(keyring_mode=keyring_mode)
    replica_args = ["--replica-dir", str(directory), "--tenant", TENANT, "--as", ADMIN]
    request_args = ["--user", user, "--action", "read", "--resource", "vehicle:veh-7"]
    check = [*_fleetgate(), "check", *replica_args, *request_args]
    results: dict[str, Any] = {"command": " ".join(["fleetgate", *check[len(_fleetgate()) :]])}
    results["logged"] = _runs(check, runs, environment=environment)
    results["no_log"] = _runs([*check, "--no-log"], runs, environment=environment)
    if not keyring_mode:
        results["python_startup"] = _runs([sys.executable, "-c", "pass"], runs)
        results["policy_file"] = _runs(
            [*_fleetgate(), "check", "--policy", str(policy_file), *request_args],
            max(3, runs // 2),
        )
        replica = _open_replica(directory, ADMIN, passphrase=True)
        kdf = read_header(replica.file.header_path).kdf
        replica.close()
        assert kdf is not None
        argon2: list[float] = []
        for _ in range(5):
            started = time.perf_counter()
            derive_key(PASSPHRASE, kdf)
            argon2.append(time.perf_counter() - started)
        results["argon2_s"] = _spread(argon2)
        results["kdf"] = kdf.describe()
    phases: list[dict[str, float]] = []
    probe = [sys.executable, "-c", _COLD_PROBE, str(directory), TENANT, ADMIN, user, "read",
             "vehicle", "veh-7"]  # fmt: skip
    for _ in range(max(3, runs // 2)):
        _wall, _cpu, out = _timed_process(probe, stdout=subprocess.PIPE, environment=environment)
        phases.append(json.loads(out))
    results["phases_s"] = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
    results["importtime"] = _importtime([*check[len(_fleetgate()) :]], environment)
    return results


def _importtime(arguments: list[str], environment: dict[str, str]) -> dict[str, Any]:
    """`python -X importtime` of the command: top-level imports by cumulative time, and the
    modules that take longest themselves."""
    code = "import sys; from app.cli import run; sys.argv[0] = 'fleetgate'; run()"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code, *arguments],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environment, check=False,
    )  # fmt: skip
    rows: list[tuple[int, int, str]] = []
    for line in done.stderr.decode(errors="replace").splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_text = line.split(":", 1)[1].split("|")
        rows.append((int(self_text[0]), int(self_text[1]), self_text[2].rstrip()))
    # A top-level line is indented by one space after the bar; nested ones by more.
    top_level = [(c, n.strip()) for _s, c, n in rows if len(n) - len(n.lstrip()) <= 1]
    top_level.sort(reverse=True)
    by_self = sorted(((s, n.strip()) for s, _c, n in rows), reverse=True)
    nested = sorted(((c, n.strip()) for _s, c, n in rows if len(n) - len(n.lstrip()) > 1),
                    reverse=True)  # fmt: skip
    return {
        "total_top_level_ms": sum(c for c, _ in top_level) / 1000,
        "top_cumulative_ms": [(n, c / 1000) for c, n in top_level[:10]],
        "top_nested_cumulative_ms": [(n, c / 1000) for c, n in nested[:12]],
        "top_self_ms": [(n, s / 1000) for s, n in by_self[:10]],
    }


_BATCH_PROBE = """
import gc, json, sys, time
clock = time.perf_counter
started = clock()
from app import batch, offline
from app.replica import Replica
from app.replica_file import passphrase_from_environment
from sync.policy.engine import Engine
imported = clock()
directory, tenant, owner, requests = sys.argv[1:5]
replica = Replica.open(directory, tenant, owner, passphrase=passphrase_from_environment())
opened = clock()
now = offline.Clocks().wall()
def engine():
    policy, users = replica.load_for_batch(now)
    return Engine(policy, replica.meta().cursor, load_user=users)
first = engine()
loaded = clock()
gc.freeze()
gc.disable()
with open(requests, "rb") as source:
    lines = source.read().split(b"\\n")
if not lines[-1]:
    lines.pop()
jobs = batch.usable_cores()
_routes, parts = batch.shard_lines(lines, jobs)
numbers, part_lines = parts[0]
part = b"\\n".join(part_lines) + b"\\n"  # as the batch hands a worker its part
mark = clock()
batch.decide_block(first, part, 1, now)
first_pass = clock() - mark
prebuilt = engine()
mark = clock()
for user_id in list(first._users):
    prebuilt._loaded(user_id)  # what its first request would build
building = clock() - mark
mark = clock()
batch.decide_block(prebuilt, part, 1, now)
users_built_pass = clock() - mark
mark = clock()
batch.decide_block(prebuilt, part, 1, now)
warm_pass = clock() - mark
print(json.dumps({"imports_s": imported - started, "open_s": opened - imported,
    "load_s": loaded - opened, "jobs": jobs, "share_requests": len(numbers),
    "share_users": len(first._users), "first_pass_s": first_pass,
    "building_users_s": building, "users_built_pass_s": users_built_pass,
    "warm_pass_s": warm_pass}))
"""


def _batch_phases(directory: Path, requests: Path, runs: int) -> dict[str, Any]:
    """Where the `--no-log` batch's time goes, in a fresh process doing what it does:
    importing, opening, loading; then one worker's share of the requests (`shard_lines`,
    as many shares as cores) decided three ways: as the batch does (each user built at
    its first request), with its users built beforehand (timed apart), and again with
    everything built. The medians of `runs` processes."""
    environment = _client_environment()
    probe = [sys.executable, "-c", _BATCH_PROBE, str(directory), TENANT, ADMIN, str(requests)]
    phases: list[dict[str, float]] = []
    for _ in range(runs):
        _wall, _cpu, out = _timed_process(probe, stdout=subprocess.PIPE, environment=environment)
        phases.append(json.loads(out))
    return {k: statistics.median(p[k] for p in phases) for k in phases[0]}


def _batch(directory: Path, requests: Path, policy_file: Path, runs: int) -> dict[str, Any]:
    """The requests file through `fleetgate check --requests`, from the replica (with and
    without logging) and from the policy file, whole processes."""
    environment = _client_environment()
    replica_args = ["--replica-dir", str(directory), "--tenant", TENANT, "--as", ADMIN]
    count = sum(1 for _ in requests.open("rb"))
    results: dict[str, Any] = {"requests": count, "cores": usable_cores()}
    base = [*_fleetgate(), "check", *replica_args, "--requests", str(requests)]
    results["replica_no_log"] = _runs([*base, "--no-log"], runs, environment=environment)
    copies: list[Path] = []

    def fresh_copy() -> list[str]:
        # Each logged run appends every decision to the chain: give it the same replica.
        copy = Path(tempfile.mkdtemp(prefix="fleetgate-bench-logged-"))
        shutil.rmtree(copy)
        shutil.copytree(directory, copy)
        copies.append(copy)
        return [*_fleetgate(), "check", "--replica-dir", str(copy), "--tenant", TENANT,
                "--as", ADMIN, "--requests", str(requests)]  # fmt: skip

    try:
        results["replica_logged"] = _runs(base, runs, environment=environment, prepare=fresh_copy)
    finally:
        for copy in copies:
            shutil.rmtree(copy, ignore_errors=True)
    policy_command = [*_fleetgate(), "check", "--policy", str(policy_file),
                      "--requests", str(requests)]  # fmt: skip
    results["policy_file"] = _runs(policy_command, runs)
    results["policy_file_jobs_1"] = _runs([*policy_command, "--jobs", "1"], runs)
    for key in ("replica_no_log", "replica_logged", "policy_file", "policy_file_jobs_1"):
        results[key]["per_s"] = count / results[key]["wall_s"]["median"]
    return results


# --- the run -----------------------------------------------------------------------------


def _measure(args: argparse.Namespace, results: dict[str, Any], work: Path) -> None:
    import keyring

    from app.policy_files import gc_paused

    keyring.set_keyring(_memory_keyring())
    folder = _tenant_folder(args)
    document = _bench_document(folder)
    policy_file = folder / "client-policy.json"
    policy_file.write_bytes(orjson.dumps(document))
    users = [u["id"] for u in document["users"] if u["id"] != ADMIN]
    receiver, target, probe_user = users[0], users[1], users[min(41, len(users) - 1)]
    listener_users = users[2 : 2 + args.clients - 2]
    results["tenant"] = {
        "folder": folder.name, "roles": len(document["roles"]), "users": len(document["users"]),
        "policy_bytes": policy_file.stat().st_size,
    }  # fmt: skip
    print(f"tenant {TENANT}: {len(document['roles']):,} roles, {len(document['users']):,} users; "
          "starting Postgres and importing ...", flush=True)  # fmt: skip
    with gc_paused():
        search_queries = _search_queries(document, args.seed)
        edits = _backlog_edits(document, args.backlog, args.seed, {receiver, target, probe_user})
    database = new_database(
        "fleetgate-bench-client-", "fleetgate_bench_client",
        functools.partial(create_bench_tenant, tenant=TENANT, admin=ADMIN, password=PASSWORD,
                          document=document, accounts=[receiver]),
    )  # fmt: skip
    del document
    gc.collect()
    results["import_s"] = database.import_s
    server: ServerProcess | None = None
    key = secrets.token_bytes(32)
    try:
        server = start_server(database.url, key.hex(), OUT / "client-server.log")
        print(f"server pid {server.process.pid} on port {server.port}; tenant imported in "
              f"{database.import_s:.1f} s", flush=True)  # fmt: skip
        from server.tokens import TokenSigner

        warm_token = TokenSigner(key).issue(
            tenant_id=database.tenant_id, tenant=TENANT, user=ADMIN, device="bench-warm-device",
            now=time.time(),
        )[0]  # fmt: skip
        results["server_first_cut_s"] = asyncio.run(_first_cut(server.url, warm_token))
        print(f"first snapshot (the server cuts it once): {results['server_first_cut_s']:.2f} s",
              flush=True)  # fmt: skip

        runs: list[dict[str, Any]] = []
        admin_dir = work / "admin"
        for number in range(args.sync_runs):
            directory = admin_dir if number == 0 else work / f"sync-{number}"
            with _keyring_of_its_own() if number else contextlib.nullcontext():
                run = asyncio.run(_initial_sync(server.url, directory, ADMIN))
            runs.append(run)
            print(f"initial sync {number + 1}/{args.sync_runs}: {run['seconds']:.2f} s "
                  f"({run['entities']:,} entities)", flush=True)  # fmt: skip
            if number:
                shutil.rmtree(directory, ignore_errors=True)
        results["initial_sync"] = runs
        if args.profile:
            profile = OUT / "client-initial-sync.prof"
            with _keyring_of_its_own():
                asyncio.run(_initial_sync(server.url, work / "profiled", ADMIN, profile=profile))
            shutil.rmtree(work / "profiled", ignore_errors=True)
            results["profile"] = str(profile)
        results["search_text_s"] = _search_text_cost(admin_dir)

        print("search ...", flush=True)
        results["search"] = _search(admin_dir, search_queries, args.search_rounds)

        print(f"backlog of {len(edits):,} offline edits ...", flush=True)
        results["backlog"] = asyncio.run(
            _backlog(server.url, admin_dir, edits, _processes(server, database))
        )

        print("a receiving replica and a passphrase-mode replica ...", flush=True)
        receiver_dir = work / "receiver"
        results["receiver_initial_sync"] = asyncio.run(
            _initial_sync(server.url, receiver_dir, receiver)
        )
        passphrase_dir = work / "passphrase"
        results["passphrase_initial_sync"] = asyncio.run(
            _initial_sync(server.url, passphrase_dir, ADMIN, passphrase=True)
        )
        gc.collect()

        print(f"propagation: {args.clients} clients, {args.pushes} pushes ...", flush=True)
        results["propagation"] = _propagation(
            server, database, key, admin_dir, receiver_dir, receiver, listener_users,
            args.pushes, 1 / args.push_rate, target,
        )  # fmt: skip
    finally:
        if server is not None:
            results["server_exit_code"] = server.stop()
        database.close()

    print("cold single decisions (whole processes) ...", flush=True)
    results["cold_decision"] = _cold_decision(passphrase_dir, probe_user, args.cold_runs,
                                              policy_file)  # fmt: skip
    keyring_dir = work / "keyring-mode"
    _keyring_mode_copy(passphrase_dir, keyring_dir)
    results["cold_decision_keyring"] = _cold_decision(
        keyring_dir, probe_user, args.cold_runs, policy_file, keyring_mode=True
    )
    print("batches (whole processes) ...", flush=True)
    results["batch"] = _batch(passphrase_dir, folder / "requests.jsonl", policy_file,
                              args.batch_runs)  # fmt: skip
    results["batch"]["phases_s"] = _batch_phases(passphrase_dir, folder / "requests.jsonl",
                                                 max(3, args.batch_runs))  # fmt: skip


# --- output --------------------------------------------------------------------------------


def _ms_list(pairs: list[tuple[str, float]]) -> str:
    return ", ".join(f"{name} {ms:.0f}" for name, ms in pairs) + " ms"


def _print(results: dict[str, Any]) -> None:
    tenant = results["tenant"]
    print(f"\nFleetgate client benchmark: {tenant['roles']:,} roles, {tenant['users']:,} users "
          f"({tenant['policy_bytes'] / 1e6:.1f} MB policy); Python {results['python']}, "
          f"{results['cpus']} CPUs shared by the server, Postgres and the clients")  # fmt: skip
    rows: list[tuple[str, str]] = []
    syncs = results["initial_sync"]
    seconds = [r["seconds"] for r in syncs]
    middle = sorted(syncs, key=lambda r: r["seconds"])[len(syncs) // 2]
    rate = middle["entities"] / middle["seconds"]
    rows += [
        ("initial sync, connect -> policy in replica",
         f"{statistics.median(seconds):.2f} s median of {len(seconds)} "
         f"({', '.join(f'{s:.2f}' for s in seconds)})   (goal <= {GOAL_INITIAL_SYNC_S} s)"),
        ("  rows/s, beside PowerSync",
         f"{rate:,.0f} rows/s = {rate / POWERSYNC_ROWS_PER_S:.2f} x PowerSync's published "
         f"{POWERSYNC_ROWS_PER_S:,} rows/s (richer rows, encryption and FTS included)"),
        ("  (the median run, broken down)", ""),
        ("  open a new replica (keyring key, schema)", f"{middle['open_replica_s']:.3f} s, before"),
        ("  connect, sign in, welcome", f"{middle['connect_sign_in_welcome_s']:.3f} s"),
        ("  welcome -> first snapshot chunk", f"{middle['welcome_to_first_chunk_s']:.3f} s"),
        ("  first -> last chunk (transfer)",
         f"{middle['first_to_last_chunk_s']:.3f} s for {middle['snapshot_frames']} frames, "
         f"{middle['snapshot_bytes'] / 1e6:.1f} MB; of which decoding frames (codec) "
         f"{middle['decoding_frames_s']:.3f} s"),
        ("  validate (Follower.snapshot)", f"{middle['follow_s']:.3f} s: " + ", ".join(
            f"{k} {v:.3f}" for k, v in middle["follow_steps_s"].items())),
        ("  write (Replica.replace_all)", f"{middle['write_s']:.3f} s: " + ", ".join(
            f"{k} {v:.3f}" for k, v in middle["write_steps_s"].items())),
        ("  gaps (dispatch)",
         f"{middle['last_chunk_to_follow_s'] + middle['follow_to_write_s']:.3f} s"),
        ("  to caught up (changes, more=false)", f"{middle['to_caught_up_s']:.2f} s"),
        ("  a full collection right after",
         f"{middle['collection_after_s']:.2f} s (once: the young objects of the new policy)"),
        ("  _search_text alone, all entities", f"{results['search_text_s']:.3f} s"),
        ("  server's first cut (once per version)", f"{results['server_first_cut_s']:.2f} s"),
        ("  passphrase-mode replica, same sync",
         f"{results['passphrase_initial_sync']['seconds']:.2f} s (open, Argon2 included: "
         f"{results['passphrase_initial_sync']['open_replica_s']:.2f} s before)"),
    ]  # fmt: skip
    search = results["search"]
    worst = max(search["by_kind"].items(), key=lambda kv: kv[1]["p99_ms"])
    rows += [
        ("FTS search (Replica.search)",
         f"p50 {search['p50_ms']:.2f} ms, p99 {search['p99_ms']:.2f} ms, max "
         f"{search['max_ms']:.2f} ms over {search['queries']} queries x {search['rounds']}   "
         f"(goal p99 <= {GOAL_SEARCH_P99_MS:.0f} ms)"),
        ("  p99 by kind", ", ".join(f"{k} {v['p99_ms']:.1f}" for k, v in search["by_kind"].items())
         + f" ms; slowest kind: {worst[0]}"),
        ("  first pass (cold pages)", f"p50 {search['first_pass']['p50_ms']:.2f} ms, "
         f"p99 {search['first_pass']['p99_ms']:.2f} ms"),
    ]  # fmt: skip
    backlog = results["backlog"]
    rows += [
        (f"backlog of {backlog['edits']:,} offline edits",
         f"pushed and resolved in {backlog['to_all_outcomes_s']:.2f} s, all outcomes   "
         f"(goal <= {GOAL_BACKLOG_S:.0f} s); {backlog['pushes']} pushes, outcomes "
         f"{backlog['outcomes']}" + (f", codes {backlog['codes']}" if backlog["codes"] else "")),
        ("  of which waiting for push_results",
         f"{backlog['waiting_for_answers_s']:.2f} s (push sent -> its push_result handled; "
         "the rest is this client between pushes: outbox, outcomes, changes coming back)"),
        ("  CPU seconds meanwhile", ", ".join(f"{k} {v:.1f}" for k, v in backlog["cpu_s"].items())),
        ("  replica confirmed (outbox empty)",
         f"{backlog['to_confirmed_s']:.2f} s; {backlog['outbox_left']} left in the outbox"),
        ("  queueing them offline (fleetgate edit)", f"{backlog['queue_s']:.2f} s, before"),
    ]  # fmt: skip
    prop = results["propagation"]
    every, replica = prop["all_from_push_sent"], prop["replica_applied_from_push_sent"]
    rows += [
        (f"propagation, {prop['clients']} clients connected",
         f"p50 {every['p50_ms']:.1f} ms, p99 {every['p99_ms']:.1f} ms, max {every['max_ms']:.1f} "
         f"ms from push sent to each other client (n={every['n']:,})   "
         f"(goal p99 <= {GOAL_PROPAGATION_P99_MS:.0f} ms)"),
        ("  the receiving replica (applied, committed)",
         f"p50 {replica['p50_ms']:.1f} ms, p99 {replica['p99_ms']:.1f} ms (n={replica['n']})"),
        ("  from push_result",
         f"p50 {prop['all_from_push_result']['p50_ms']:.1f} ms, "
         f"p99 {prop['all_from_push_result']['p99_ms']:.1f} ms; push round trip p50 "
         f"{prop['push_round_trip']['p50_ms']:.1f} ms"),
        ("  this process's collector",
         f"one settling collection before the pushes {prop['settling_collection_s']:.2f} s; "
         f"while pushing {prop['gc_pauses_while_pushing']['count']} pauses, longest "
         f"{prop['gc_pauses_while_pushing']['max_ms']:.1f} ms"),
        ("  pairs received",
         f"{prop['pairs_received']:,}/{prop['pairs_expected']:,}; {prop['listeners']} raw "
         f"websocket listeners + 1 receiving and 1 pushing SyncSession; outcomes "
         f"{prop['outcomes']}"),
    ]  # fmt: skip
    cold = results["cold_decision"]
    imports = cold["importtime"]
    logged, no_log = cold["logged"]["wall_s"], cold["no_log"]["wall_s"]
    argon2 = cold["argon2_s"]["median"]
    rows += [
        ("cold single decision (whole process)",
         f"median {logged['median']:.3f} s (min {logged['min']:.3f}, max {logged['max']:.3f}, "
         f"{len(logged['runs'])} runs; CPU {cold['logged']['cpu_s']['median']:.3f} s)   "
         f"(goal <= {GOAL_COLD_DECISION_S} s)"),
        ("  of which Argon2 (key derivation alone)",
         f"{argon2:.3f} s ({cold['kdf']}); the rest {logged['median'] - argon2:.3f} s"),
        ("  phases in a fresh process", ", ".join(
            f"{k} {v:.3f}" for k, v in cold["phases_s"].items()) + " s"),
        ("  python -c pass", f"{cold['python_startup']['wall_s']['median']:.3f} s"),
        ("  with --no-log", f"median {no_log['median']:.3f} s (min {no_log['min']:.3f}, "
         f"max {no_log['max']:.3f})"),
        ("  from the policy file instead",
         f"median {cold['policy_file']['wall_s']['median']:.3f} s"),
        ("  -X importtime, top-level cumulative", _ms_list(imports["top_cumulative_ms"][:6])),
        ("  -X importtime, nested cumulative", _ms_list(imports["top_nested_cumulative_ms"][:8])),
        ("  -X importtime, top self", _ms_list(imports["top_self_ms"][:6])),
    ]  # fmt: skip
    keyed = results["cold_decision_keyring"]
    logged, no_log = keyed["logged"]["wall_s"], keyed["no_log"]["wall_s"]
    rows += [
        ("  keyring mode (a file-backed keyring)",
         f"median {logged['median']:.3f} s (min {logged['min']:.3f}, max {logged['max']:.3f}, "
         f"{len(logged['runs'])} runs); --no-log {no_log['median']:.3f} s   "
         f"(goal <= {GOAL_COLD_DECISION_S} s)"),
        ("    phases in a fresh process", ", ".join(
            f"{k} {v:.3f}" for k, v in keyed["phases_s"].items()) + " s"),
    ]  # fmt: skip
    batch = results["batch"]

    def batch_row(key: str) -> str:
        run = batch[key]
        wall = run["wall_s"]
        # The CPU the batch spent, spread perfectly over the cores: no wall time below it.
        cpu = run["cpu_s"]["median"]
        cores = batch["cores"]
        return (f"{run['per_s']:,.0f} decisions/s end to end ({wall['median']:.2f} s, "
                f"min {wall['min']:.2f}, max {wall['max']:.2f}); CPU {cpu:.2f} s, "
                f"so at best {cpu / cores:.2f} s = {batch['requests'] * cores / cpu:,.0f}/s "
                f"on {cores} cores")  # fmt: skip

    ratio = batch["replica_no_log"]["per_s"] / batch["policy_file"]["per_s"]
    rows += [
        (f"batch of {batch['requests']:,} from the replica, --no-log",
         batch_row("replica_no_log") + f"   (goal >= {GOAL_BATCH_NO_LOG:,})"),
        ("  with logging", batch_row("replica_logged") + f"   (goal >= {GOAL_BATCH_LOGGED:,})"),
        ("  from the policy file (all cores)",
         batch_row("policy_file") + f"; replica --no-log / policy file = {ratio:.2f}; "
         f"before this benchmark {TODAY_POLICY_FILE_PER_S:,}/s"),
        ("  from the policy file, --jobs 1", batch_row("policy_file_jobs_1")),
    ]  # fmt: skip
    phases = batch["phases_s"]
    rows += [
        ("  --no-log, before the workers",
         f"imports {phases['imports_s']:.3f} s, open {phases['open_s']:.3f} s, "
         f"load {phases['load_s']:.3f} s"),
        (f"  --no-log, one worker's share (1 of {phases['jobs']:.0f}) in one process",
         f"{phases['share_requests']:,.0f} requests, {phases['share_users']:,.0f} users: "
         f"{phases['first_pass_s']:.3f} s as the batch decides it; "
         f"{phases['users_built_pass_s']:.3f} s with its users built first "
         f"(building them {phases['building_users_s']:.3f} s); "
         f"{phases['warm_pass_s']:.3f} s again"),
    ]  # fmt: skip
    rows.append(("server exit code", str(results.get("server_exit_code"))))
    print_rows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.client", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--roles", type=int, default=1000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--clients", type=int, default=200, help="connected in the propagation")
    parser.add_argument("--pushes", type=int, default=100, help="propagation samples")
    parser.add_argument("--push-rate", type=float, default=10.0, help="pushes per second")
    parser.add_argument("--backlog", type=int, default=10_000, help="offline edits")
    parser.add_argument("--sync-runs", type=int, default=3)
    parser.add_argument("--search-rounds", type=int, default=5)
    parser.add_argument("--cold-runs", type=int, default=7)
    parser.add_argument("--batch-runs", type=int, default=3)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="100 roles, 2,000 users, 10,000 requests, 50 clients, fewer runs",
    )
    parser.add_argument("--profile", action="store_true",
                        help="also cProfile one initial sync into bench/out/")  # fmt: skip
    args = parser.parse_args(argv)
    if args.quick:
        args.roles, args.users, args.requests = 100, 2000, 10_000
        args.clients, args.pushes, args.backlog = 50, 30, 1000
        args.cold_runs, args.batch_runs, args.search_rounds = 3, 1, 2
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "arguments": vars(args),
        "note": "the server, Postgres and every client share this machine's CPUs",
    }
    work = Path(tempfile.mkdtemp(prefix="fleetgate-bench-replicas-"))
    try:
        _measure(args, results, work)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
    name = "client-quick.json" if args.quick else "client.json"
    (OUT / name).write_text(json.dumps(results, indent=2, default=str) + "\n")
    _print(results)
    print(f"\nresults in {OUT / name}")
    return 0 if results.get("server_exit_code") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
