"""Random convergence runs, in the style of Yjs's fuzz tests: real clients, a simulated
network, an in-memory server on the same rules, and invariants checked at every step.

A run (`run_seed`) starts a tenant on a `MemoryServer` and 3 to 5 real clients
(`Replica` on SQLCipher, `ClientConnection`, `SyncSession`), each behind a
`SimTransport` on a `Network` that delays frames, drops them (the connection
then dies half-open, as TCP ones do), duplicates them, cuts sockets and
partitions clients for a while. People make random offline edits through
`app.offline.queue_edits` (mostly tenant admins, who may escalate; managers
whose edits are refused locally or by the server), decide offline through
`decide_one` (so decision chains upload), restart their programs, run one-shot
`fleetgate sync`s or keep a watching session, and see their wall clock jump
back; an admin imports a policy and compacts the log at random times, the
server restarts or is upgraded to accept an op it held back, a device is
revoked, a user with a client is deleted (its replica is wiped) and another is
suspended and resumed. Then the network heals and everyone syncs until nothing
moves, and the run is checked:

- convergence: every replica's cursor, confirmed digest and exported policy are
  the server's (its roles and users in the same order too);
- exactly once: every mutation a client queued has one outcome on the server,
  decided once, and the client saw that outcome and nothing else (its outbox
  is empty, rejected and conflicting edits are in its `outcomes`); no
  (client, seq) is in the change log twice; none was lost;
- the merge rules held over the whole history (not only the stamps the
  server kept): no change widened a member another client had narrowed after
  the change's base, no change widened (or set a scalar) against a base below
  the merge floor, no change named an entity another client had created or
  deleted after its base, no scalar another client had set after the base was
  overwritten;
- reads were monotonic: after every step of every client its cursor never went
  back, its confirmed digest was the server's digest at that version, and
  an edit answered `applied` stayed in its view until its version arrived;
- decision chains: the server holds each client's chain whole (seqs from 1,
  every link and hash right), up to the client's head, and nothing is unsent;
- wiped clients left no file and no keyring entry behind (a removed user's
  replica the server could no longer tell is counted as `unwiped`, see
  `Sim.removed` and the xfail test at the end).

`run_seed(seed, clients, edits)` returns a `SimReport`; its `problems` name the
seed, so a failing soak seed can be run again on its own:
`python -m tests.app.test_convergence 1000 2000` runs seeds 1000 to 1999.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import keyring
import pytest

from app.offline import Clocks, EditProblem, decide_one, queue_edits, view_policy
from app.replica import Replica
from app.replica_file import replica_files, slot_name
from app.sync_client import EXIT_SIGN_IN, EXIT_WIPED, SyncSession
from server.tenants import SERVER_OPS
from sync.policy.document import export_policy, parse_policy
from sync.policy.edits import EditRefused, apply_edit, edit_from_document
from sync.policy.instant import format_instant, parse_instant
from sync.policy.model import Effect, Policy
from sync.policy.request import parse_request
from sync.protocol import client as protocol_client
from sync.protocol.client import ClientConnection, ClientState, Password, Tokens
from sync.protocol.messages import Outcome, Result, StaleDecisions
from sync.replication.decisions import GENESIS, decision_hash
from sync.replication.digest import digest_of, digest_text
from sync.replication.entities import policy_entities
from sync.replication.members import ChangeKind
from sync.replication.offline import ReplicaClock
from sync.replication.pushes import outcome_document
from tests.app.memory_keyring import MemoryKeyring
from tests.app.memory_server import PASSWORD, MemoryServer
from tests.app.simnet import Faults, Network, Scheduler, SimTransport, VirtualClock

TENANT = "sim"

# --- the tenant ---------------------------------------------------------------------------

RESOURCE_TYPES = {
    "doc": ["read", "write", "delete"],
    "role": ["read", "create", "update", "delete", "assign", "escalate"],
    "user": ["read", "create", "update", "delete"],
}
RULES: list[dict[str, Any]] = [
    {"resource": "doc", "actions": ["read"]},
    {"resource": "doc", "actions": ["write"]},
    {"resource": "doc", "actions": ["delete"]},
    {"resource": "doc", "actions": ["read", "write"]},
    {"resource": "doc", "actions": ["write"], "when": {"resource.region": "$user.region"}},
    {"resource": "doc", "actions": ["delete"], "when": {"resource.region": {"eq": "north"}}},
]
ADMINS = ("a1", "a2", "a3")
MANAGERS = ("m1", "v1")
PLAIN = ("p1", "p2", "p3", "p4")
PROTECTED_ROLES = frozenset({"r-admin", "r-manager"})
HOT_ROLES = ("r-h1", "r-h2", "r-h3", "r-h4")
REGIONS = ("north", "south", "east")
DESCRIPTIONS = ("", "night shift", "day shift", "audit")


def base_document() -> dict[str, Any]:
    """The tenant's first policy: admins who may escalate, two managers who may assign
    only what they hold, a few plain users, four roles everyone fights over, and a
    separation-of-duty constraint between two of them."""
    return {
        "format": "fleetgate.policy/1",
        "tenant": TENANT,
        "resource_types": RESOURCE_TYPES,
        "roles": [
            {"id": "r-admin", "name": "Tenant admin",
             "grants": [{"resource": "*", "actions": ["*"]}]},
            {"id": "r-manager", "name": "Manager",
             "grants": [{"resource": "role", "actions": ["read", "assign"]},
                        {"resource": "user", "actions": ["read", "update"]},
                        {"resource": "doc", "actions": ["read"]}]},
            {"id": "r-viewer", "name": "Viewer", "grants": [RULES[0]]},
            {"id": "r-h1", "name": "Hot one", "grants": [RULES[1]]},
            {"id": "r-h2", "name": "Hot two", "inherits": ["Hot one"], "grants": [RULES[4]]},
            {"id": "r-h3", "name": "Hot three", "grants": [RULES[2]]},
            {"id": "r-h4", "name": "Hot four", "grants": [RULES[5]], "denies": [RULES[1]]},
        ],
        "users": [
            *({"id": a, "attributes": {"region": "north"}, "roles": [{"role": "Tenant admin"}]}
              for a in ADMINS),
            *({"id": m, "attributes": {"region": "south"},
               "roles": [{"role": "Manager"}, {"role": "Viewer"}]} for m in MANAGERS),
            {"id": "p1", "roles": [{"role": "Viewer"}, {"role": "Hot one"}]},
            {"id": "p2", "attributes": {"region": "east"}, "roles": [{"role": "Hot two"}]},
            {"id": "p3", "roles": [{"role": "Hot three"}]},
            {"id": "p4", "attributes": {"depot": "d1"}},
        ],
        "constraints": [{"name": "three-four", "exclusive": ["Hot three", "Hot four"]}],
    }  # fmt: skip


# --- random edits ---------------------------------------------------------------------------


class EditMaker:
    """Random edit documents that mostly apply to the policy they are made against,
    aimed at a few hot roles and users so that clients collide."""

    def __init__(self, rng: random.Random, tag: str, protected_users: frozenset[str]) -> None:
        self.rng = rng
        self.tag = tag
        self.protected_users = protected_users
        self.made = 0

    def _new_id(self, prefix: str) -> str:
        self.made += 1
        return f"{prefix}-{self.tag}-{self.made}"

    def _expires(self, wall: float) -> str | None:
        if self.rng.random() < 0.5:
            return None
        seconds = int(wall + self.rng.choice([-30, 40, 120, 600, 3600, 86400]))
        return format_instant((seconds, ""))

    def make(self, policy: Policy, author: str | None, wall: float) -> list[dict[str, Any]]:
        """One or two edits; `author` None: an import's (anything but the protected)."""
        rng = self.rng
        roles = [r for r in policy.roles if r not in PROTECTED_ROLES]
        hot = [r for r in roles if r in HOT_ROLES] or roles
        pick_role = (lambda: rng.choice(hot if rng.random() < 0.6 else roles)) if roles else None
        plain = [u for u in policy.users if u not in self.protected_users]
        assignable = [u for u in policy.users if u not in ("a1",)]
        me = policy.users.get(author) if author else None
        if author in MANAGERS and plain and rng.random() < 0.6:
            # What a manager may do (it holds what the viewer role grants), while the
            # admins may take that away meanwhile.
            user = rng.choice(plain)
            if rng.random() < 0.6:
                op = "assign_role" if rng.random() < 0.6 else "unassign_role"
                return [{"op": op, "user_id": user, "role_id": "r-viewer"}]
            return [{"op": "suspend_user" if rng.random() < 0.5 else "resume_user",
                     "user_id": user}]  # fmt: skip
        kind = rng.choices(
            ["create_role", "rename_role", "describe_role", "delete_role", "inherit",
             "uninherit", "add_rule", "remove_rule", "assign", "unassign", "create_user",
             "delete_user", "attribute", "suspend", "resume", "eligible", "remove_eligible",
             "activate", "deactivate", "authority", "create_and_assign", "recreate"],
            [3, 3, 4, 1, 2, 2, 7, 5, 8, 5, 2, 1, 7, 2, 2, 3, 1, 3, 1, 3, 2, 1],
        )[0]  # fmt: skip
        if pick_role is None and kind not in ("create_role", "create_user", "attribute"):
            kind = "create_role"
        if kind == "create_role":
            role_id = self._new_id("r")
            doc: dict[str, Any] = {"op": "create_role", "role_id": role_id,
                                   "name": f"Role {role_id}"}  # fmt: skip
            if roles and rng.random() < 0.4:
                doc["inherits"] = [rng.choice(roles)]
            return [doc]
        if kind == "recreate":  # an id used again: someone else's edit meant the old one
            if plain and rng.random() < 0.5:
                user = rng.choice(plain)
                return [{"op": "delete_user", "user_id": user},
                        {"op": "create_user", "user_id": user}]  # fmt: skip
            role_id = pick_role()
            return [{"op": "delete_role", "role_id": role_id},
                    {"op": "create_role", "role_id": role_id,
                     "name": policy.roles[role_id].name}]  # fmt: skip
        if kind == "create_and_assign" and assignable:
            role_id = self._new_id("r")
            return [
                {"op": "create_role", "role_id": role_id, "name": f"Role {role_id}"},
                {"op": "add_rule", "owner": f"role:{role_id}", "effect": "grant",
                 "rule": rng.choice(RULES)},
                {"op": "assign_role", "user_id": rng.choice(assignable), "role_id": role_id},
            ]  # fmt: skip
        if kind == "rename_role":
            return [
                {
                    "op": "rename_role",
                    "role_id": pick_role(),
                    "name": f"Role {rng.choice(['alpha', 'beta', 'gamma', 'delta'])}",
                }
            ]
        if kind == "describe_role":
            return [
                {
                    "op": "describe_role",
                    "role_id": pick_role(),
                    "description": rng.choice(DESCRIPTIONS),
                }
            ]
        if kind == "delete_role":
            return [{"op": "delete_role", "role_id": pick_role()}]
        if kind in ("inherit", "uninherit"):
            child, parent = pick_role(), pick_role()
            if kind == "uninherit" and policy.roles[child].inherits:
                parent = rng.choice(policy.roles[child].inherits)
            op = "add_inheritance" if kind == "inherit" else "remove_inheritance"
            return [{"op": op, "role_id": child, "parent_id": parent}]
        if kind in ("add_rule", "remove_rule"):
            on_user = plain and rng.random() < 0.25
            owner = f"user:{rng.choice(plain)}" if on_user else f"role:{pick_role()}"
            effect = "deny" if rng.random() < 0.3 else "grant"
            rule = rng.choice(RULES)
            if kind == "remove_rule":
                holder_kind, _, holder_id = owner.partition(":")
                holder = (policy.roles if holder_kind == "role" else policy.users)[holder_id]
                present = holder.rules(Effect(effect))
                if present:
                    rule = rng.choice(present).to_document()
            return [{"op": kind, "owner": owner, "effect": effect, "rule": rule}]
        if kind in ("assign", "unassign") and assignable:
            user = rng.choice(assignable)
            if kind == "unassign" and policy.users[user].roles:
                entry = rng.choice(policy.users[user].roles)
                if entry.role_id not in PROTECTED_ROLES:
                    return [{"op": "unassign_role", "user_id": user, "role_id": entry.role_id}]
            doc = {"op": "assign_role", "user_id": user, "role_id": pick_role()}
            expires = self._expires(wall)
            if expires is not None:
                doc["expires"] = expires
            return [doc]
        if kind == "create_user":
            user_id = self._new_id("u")
            doc = {"op": "create_user", "user_id": user_id}
            if rng.random() < 0.5:
                doc["attributes"] = {"region": rng.choice(REGIONS)}
            return [doc]
        if kind == "delete_user" and plain:
            return [{"op": "delete_user", "user_id": rng.choice(plain)}]
        if kind in ("suspend", "resume") and plain:
            op = "suspend_user" if kind == "suspend" else "resume_user"
            return [{"op": op, "user_id": rng.choice(plain)}]
        if kind in ("eligible", "remove_eligible") and assignable:
            user = rng.choice(assignable)
            if kind == "remove_eligible":
                return [{"op": "remove_eligible", "user_id": user, "role_id": pick_role()}]
            doc = {"op": "make_eligible", "user_id": user, "role_id": pick_role(),
                   "max_hours": rng.randint(1, 8)}  # fmt: skip
            expires = self._expires(wall)
            if expires is not None:
                doc["expires"] = expires
            return [doc]
        if kind in ("activate", "deactivate"):
            own = me is not None and rng.random() < 0.7
            user = me if own else policy.users.get(rng.choice(assignable)) if assignable else None
            if user is not None:
                eligible = [a.role_id for a in user.roles if a.eligible is not None]
                if kind == "activate" and eligible:
                    return [{"op": "activate_role", "user_id": user.id,
                             "role_id": rng.choice(eligible), "hours": rng.randint(1, 2),
                             "justification": "on call"}]  # fmt: skip
                timed = [a.role_id for a in user.roles if a.eligible is None and a.expires]
                if kind == "deactivate" and timed:
                    return [{"op": "deactivate_role", "user_id": user.id,
                             "role_id": rng.choice(timed)}]  # fmt: skip
        if kind == "authority":
            # What lets the managers assign: taken away and given back.
            if rng.random() < 0.5:
                op = "remove_rule" if rng.random() < 0.5 else "add_rule"
                return [
                    {
                        "op": op,
                        "owner": "role:r-manager",
                        "effect": "grant",
                        "rule": {"resource": "role", "actions": ["read", "assign"]},
                    }
                ]
            manager = rng.choice(MANAGERS)
            if manager in policy.users:
                op = "unassign_role" if rng.random() < 0.5 else "assign_role"
                return [{"op": op, "user_id": manager, "role_id": "r-manager"}]
        target = rng.choice(plain or list(policy.users))
        return [{"op": "set_user_attribute", "user_id": target,
                 "key": rng.choice(["region", "depot", "level"]),
                 "value": rng.choice([*REGIONS, 1, 2, True, None])}]  # fmt: skip


# --- the report -----------------------------------------------------------------------------


@dataclass(slots=True)
class SimReport:
    """What one run did, and every invariant it broke (`problems`, each naming the seed)."""

    seed: int
    clients: int
    mutations: int = 0
    applied: int = 0
    merged: int = 0
    conflicts: int = 0
    rejected: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    refused_locally: int = 0
    lost: int = 0
    doubled: int = 0
    resurrected: int = 0
    decisions: int = 0
    wiped: int = 0
    unwiped: int = 0
    """Replicas of removed users the server could not tell (`Sim.removed`)."""
    imports: int = 0
    compactions: int = 0
    versions: int = 0
    virtual_seconds: float = 0.0
    frames: int = 0
    dropped: int = 0
    cuts: int = 0
    events: Counter[str] = field(default_factory=Counter)
    """Connection events of every client, by type (`ResyncRequested`, `Disconnected`...)."""
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"seed {self.seed}: {self.clients} clients, {self.mutations} mutations "
            f"({self.applied} applied, {self.merged} merged, {self.conflicts} conflicts, "
            f"{self.rejected} rejected {dict(self.codes)}), {self.refused_locally} refused "
            f"locally, {self.decisions} decisions, {self.versions} versions, {self.imports} "
            f"imports, {self.compactions} compactions, {self.wiped} wiped ({self.unwiped} "
            f"removed, not told), {self.frames} frames "
            f"({self.dropped} dropped, {self.cuts} cuts), {self.virtual_seconds:.0f} virtual s, "
            f"{self.events['ResyncRequested']} resyncs, {self.events['Disconnected']} "
            f"reconnects, {self.events['ServerMisbehaved']} misbehaved; "
            f"lost {self.lost}, doubled {self.doubled}, resurrected {self.resurrected}"
        )


# --- clients --------------------------------------------------------------------------------


class SimClient:
    """One installation: a replica, the person using it, and its sync program."""

    def __init__(self, sim: Sim, index: int, user: str, *, watch: bool, skew: float) -> None:
        self.sim = sim
        self.user = user
        self.name = f"c{index}-{user}"
        self.watch = watch
        self.skew = skew
        self.directory = sim.root / self.name
        self.directory.mkdir(parents=True)
        self.replica = Replica.open(self.directory, TENANT, user, create=True)
        self.client_id = self.replica.client
        self.device = self.replica.meta().device
        self.rng = random.Random(sim.rng.random())
        self.maker = EditMaker(self.rng, f"{index}", sim.protected_users)
        self.clocks = Clocks(self.wall, sim.clock.mono)
        self.transport: SimTransport | None = None
        self.queued: list[int] = []
        self.seen: dict[int, list[Result]] = {}
        self.awaiting: dict[int, int] = {}
        """Seqs answered applied or merged whose version the cursor has not reached."""
        self.cursor = 0
        self.wiped = False
        self.signed_in_once = False
        self.lines: list[str] = []
        self.runs = 0
        self.started_at = 0.0
        self.decisions = 0
        self.sign_in_needed = False
        """The last sync ended asking the person to sign in: the next one does."""
        self.events: list[Any] = []
        """Every event of every sync program's connection, in order."""

    def wall(self) -> Any:
        return self.sim.clock.wall(self.skew)

    def problem(self, text: str) -> None:
        self.sim.problem(f"{self.name}: {text}")

    def say(self, line: str) -> None:
        self.lines.append(f"{self.sim.clock.now:9.3f} {line}")
        if not self.sim.trace:
            del self.lines[:-300]

    # --- the sync program ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.transport is not None and self.transport.running

    def run_sync(self, *, password: bool = False) -> None:
        """Start `fleetgate sync` (watching, or one-shot with a timeout)."""
        if self.wiped or self.running:
            return
        self.runs += 1
        self.started_at = self.sim.clock.now
        password = password or self.sign_in_needed
        self.sign_in_needed = False
        access, refresh = self.replica.tokens()
        tokens = Tokens(access, refresh) if refresh is not None else None
        credentials = None
        if password or tokens is None:
            credentials = Password(TENANT, self.user, PASSWORD)
        connection = ClientConnection(
            device=self.replica.meta().device,
            client=self.replica.client,
            rng=random.Random(self.rng.random()).random,
            tokens=tokens,
            credentials=credentials,
        )
        session = SyncSession(self.replica, connection, report=self.say, watch=self.watch,
                              wall=self.wall, mono=self.sim.clock.mono)  # fmt: skip
        clock = self.sim.clock
        self.transport = SimTransport(
            self.sim.network, self.name, session, mono=clock.mono,
            until=lambda: session.finished,
            deadline=None if self.watch else clock.now + 90.0,
            step=self._step, stopped=self._stopped,
        )  # fmt: skip
        self.say(f"sync starts ({'watch' if self.watch else 'one-shot'})")
        if self.sim.trace:
            self.transport.trace = self.lines
        self.transport.events = self.events
        self.transport.start()

    def restart(self, *, reopen: bool) -> None:
        """The program is closed (and the replica opened again), then started again."""
        if self.wiped:
            return
        if self.transport is not None and self.transport.running:
            self.transport.stop()
        if self.wiped:
            return
        if reopen:
            self.replica.close()
            self.replica = Replica.open(self.directory, TENANT, self.user)
        if self.watch:
            self.run_sync()

    def wake(self) -> None:
        if self.transport is not None and self.transport.running:
            self.transport.wake()
        elif not self.watch and self.rng.random() < 0.5 and not self.sim.healing:
            self.sim.scheduler.after(self.rng.uniform(1.0, 30.0), self.run_sync)

    def _stopped(self, transport: SimTransport) -> None:
        ending = transport.session.ending
        if ending is None:
            return
        self.say(f"ended: {ending.message}")
        if ending.code == EXIT_WIPED:
            self.wiped = True
        elif ending.code == EXIT_SIGN_IN:
            # The person signs in again a little later (a suspension may have ended).
            self.sign_in_needed = True
            self.sim.scheduler.after(self.rng.uniform(10.0, 40.0), self.run_sync)
        else:
            self.problem(f"sync ended: {ending.code} {ending.message}")
            self.sign_in_needed = True
            self.sim.scheduler.after(30.0, self.run_sync)

    def _step(self, transport: SimTransport) -> None:
        """After every step of the transport: reads never go back (module rules)."""
        session = transport.session
        if self.wiped or (session.ending is not None and session.ending.code == EXIT_WIPED):
            self.wiped = True
            return
        if session.outcomes:
            for result in session.outcomes:
                self.seen.setdefault(result.seq, []).append(result)
                if result.outcome in (Outcome.APPLIED, Outcome.MERGED) and result.version:
                    self.awaiting[result.seq] = result.version
            session.outcomes.clear()
        meta = self.replica.meta()
        if meta.cursor < self.cursor:
            self.problem(f"the cursor went back from {self.cursor} to {meta.cursor}")
        self.cursor = meta.cursor
        if meta.cursor and meta.digest != self.sim.server.digests.get(meta.cursor):
            self.problem(
                f"at version {meta.cursor} the replica's digest is not the server's at that version"
            )
        if self.awaiting:
            for seq in [s for s, v in self.awaiting.items() if v <= meta.cursor]:
                del self.awaiting[seq]
            if self.awaiting:
                in_view = {e.seq for e in self.replica.view_edits()}
                for seq, version in self.awaiting.items():
                    if seq not in in_view:
                        self.problem(
                            f"edit {seq} was applied as version {version} but left the view "
                            f"at cursor {meta.cursor}, before that version arrived"
                        )

    # --- the person -----------------------------------------------------------------------

    def act(self) -> None:
        """One random thing a person does."""
        if self.wiped or self.sim.healing:
            return
        roll = self.rng.random()
        if roll < 0.75:
            self.edit()
        elif roll < 0.93:
            self.decide()
        else:
            self.restart(reopen=self.rng.random() < 0.5)

    def edit(self, documents: list[dict[str, Any]] | None = None) -> list[int]:
        if self.wiped or not self.replica.has_policy():
            return []
        if documents is None:
            policy, _ = view_policy(self.replica, self.wall())
            documents = self.maker.make(policy, self.user, self.sim.clock.wall_seconds(self.skew))
        try:
            seqs = queue_edits(self.replica, documents, author=self.user, clocks=self.clocks)
        except EditProblem as problem:
            self.sim.report.refused_locally += 1
            self.say(f"refused locally: {problem}")
            return []
        self.queued += seqs
        self.say(f"queued {seqs}: {json.dumps(documents)[:200]}")
        self.wake()
        return seqs

    def decide(self) -> None:
        if self.wiped or not self.replica.has_policy():
            return
        users = [*ADMINS, *MANAGERS, *PLAIN]
        document = {
            "user": self.rng.choice(users),
            "action": self.rng.choice(RESOURCE_TYPES["doc"]),
            "resource": {"type": "doc", "attributes": {"region": self.rng.choice(REGIONS)}},
        }
        decide_one(self.replica, parse_request(document), document, log=True,
                   clocks=self.clocks)  # fmt: skip
        self.decisions += 1
        self.say(f"decided offline: link {self.replica.meta().chain_seq}")
        self.wake()


# --- a run ----------------------------------------------------------------------------------


class Sim:
    """One seeded run: the server, the network, the clients and the plan."""

    def __init__(
        self,
        seed: int,
        clients: int,
        edits: int,
        root: Path,
        *,
        trace: bool = False,
        faults: Faults | None = None,
        lose: float = 0.0,
        chaos: float = 1.0,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.root = root
        self.trace = trace
        self.report = SimReport(seed, clients)
        self.clock = VirtualClock()
        self.scheduler = Scheduler(self.clock)
        rng = self.rng
        lease = rng.choice([60, 120, 7 * 24 * 3600])
        self.server = MemoryServer(
            parse_policy(base_document(), now=self.clock.wall()),
            mono=self.clock.mono,
            wall=self.clock.wall,
            lease_seconds=lease,
            stale_decisions=rng.choice(list(StaleDecisions)),
            page=rng.choice([2, 5, 500]),
            part_bytes=rng.choice([None, 700, 2000]),
            access_lifetime=rng.choice([60.0, 900.0]),
            # A server a release behind, upgraded during the run: edits it does not
            # accept yet are held back, and the queue behind them.
            ops=rng.choice([SERVER_OPS, SERVER_OPS, SERVER_OPS - {"make_eligible"}]),
        )
        self.revoked: set[str] = set()
        """Clients whose device an admin revoked."""
        faults = faults or Faults(
            latency=(0.002, rng.choice([0.02, 0.3])),
            slow=rng.choice([0.0, 0.01]),
            drop=rng.choice([0.0, 0.005, 0.02]),
            duplicate=rng.choice([0.0, 0.005, 0.02]),
            cut=rng.choice([0.0, 0.005, 0.02]),
            connect_fail=rng.choice([0.0, 0.1]),
        )
        if chaos != 1.0:
            faults = replace(
                faults, slow=faults.slow * chaos, drop=faults.drop * chaos,
                duplicate=faults.duplicate * chaos, cut=faults.cut * chaos,
                connect_fail=min(0.9, faults.connect_fail * chaos),
            )  # fmt: skip
        faults = replace(faults, lose=lose) if lose else faults
        self.network = Network(self.scheduler, self.server, random.Random(rng.random()), faults)
        self.healing = False
        self.edits = edits
        others = ["a2", "m1", "v1", "a3"]
        rng.shuffle(others)
        roster = ["a1", *others[: clients - 1]]
        self.protected_users = frozenset(roster)
        self.clients = [
            SimClient(
                self,
                i,
                user,
                watch=i == 0 or rng.random() < 0.7,
                skew=rng.choice([0.0, 0.0, -45.0, 20.0]),
            )
            for i, user in enumerate(roster)
        ]
        self.duration = 8.0 * edits

    def problem(self, text: str) -> None:
        line = f"seed {self.seed} at {self.clock.now:.3f}: {text}"
        if line not in self.report.problems:
            self.report.problems.append(line)

    # --- the plan ---------------------------------------------------------------------------

    def plan(self) -> None:
        rng, at, end = self.rng, self.scheduler.at, self.duration
        for client in self.clients:
            at(rng.uniform(0.0, 5.0), client.run_sync)
            for _ in range(self.edits):
                at(rng.uniform(5.0, end), client.act)
            if not client.watch:
                for _ in range(int(end // 60)):
                    at(rng.uniform(5.0, end), client.run_sync)
            for _ in range(rng.choice([0, 1, 2])):
                start = rng.uniform(5.0, end)
                length = rng.choice([15.0, 60.0, 200.0, 400.0])
                at(start, lambda c=client: self.network.partition(c.name))
                at(min(start + length, end), lambda c=client: self.network.reconnect(c.name))
            if rng.random() < 0.2:
                at(rng.uniform(5.0, end), lambda c=client: setattr(c, "skew", c.skew - 120.0))
        for _ in range(rng.choice([0, 1, 2])):
            at(rng.uniform(20.0, end), self.import_policy)
        for _ in range(rng.choice([1, 2, 3])):
            at(rng.uniform(20.0, end), lambda: self.compact(rng.choice([0, 1, 3, 10])))
        users = [c.user for c in self.clients]
        if "v1" in users:  # an admin deletes a user who has a replica: it is wiped
            at(rng.uniform(30.0, end), lambda: self.admin_edit([{"op": "delete_user",
                                                                 "user_id": "v1"}]))  # fmt: skip
        others = [u for u in users if u not in ("a1", "v1")]
        if self.server.ops != SERVER_OPS or rng.random() < 0.3:  # a restart, or an upgrade
            at(rng.uniform(10.0, end), lambda: self.server.restart(SERVER_OPS))
        revocable = [c for c in self.clients[1:] if c.user != "v1"]
        if revocable and rng.random() < 0.15:  # an admin revokes a device: it is wiped
            client = rng.choice(revocable)
            at(rng.uniform(20.0, end), lambda: self.revoke(client))
        if others and rng.random() < 0.6:  # suspended, then resumed by the first admin
            user = rng.choice(others)
            start = rng.uniform(20.0, end)
            at(start, lambda: self.admin_edit([{"op": "suspend_user", "user_id": user}]))
            at(start + rng.uniform(30.0, 200.0), self.resume_suspended)

    def revoke(self, client: SimClient) -> None:
        self.revoked.add(client.name)
        self.server.revoke_device(client.device)

    def admin_edit(self, documents: list[dict[str, Any]]) -> None:
        """An edit by the first admin's client (which never loses its authority)."""
        self.clients[0].edit(documents)

    def resume_suspended(self) -> None:
        """The first admin resumes the users with a replica its view shows suspended."""
        admin = self.clients[0]
        if not admin.replica.has_policy():
            return
        policy, _ = view_policy(admin.replica, admin.wall())
        for client in self.clients:
            user = policy.users.get(client.user)
            if user is not None and user.suspended and not client.wiped:
                admin.edit([{"op": "resume_user", "user_id": client.user}])

    def import_policy(self) -> None:
        """`fleetgate admin import`: the server's policy with a few random edits."""
        now = self.clock.wall()
        policy = parse_policy(export_policy(self.server.policy), now=now)
        maker = EditMaker(self.rng, f"i{self.report.imports}", self.protected_users)
        for _ in range(self.rng.randint(1, 4)):
            for document in maker.make(policy, None, self.clock.wall_seconds()):
                with contextlib.suppress(EditRefused):
                    apply_edit(policy, edit_from_document(document, policy), now)
        self.report.imports += 1
        self.server.import_policy(policy)

    def compact(self, keep: int) -> None:
        self.report.compactions += 1
        self.server.compact(keep)

    # --- running ----------------------------------------------------------------------------

    def run(self) -> SimReport:
        self.plan()
        self.scheduler.run_until(self.duration)
        self.heal()
        self.check()
        report = self.report
        report.virtual_seconds = self.clock.now
        report.versions = self.server.version
        report.frames = self.network.stats.frames
        report.dropped = self.network.stats.dropped
        report.cuts = self.network.stats.cuts
        return report

    def heal(self) -> None:
        """The network heals; everyone syncs until nothing moves."""
        self.healing = True
        self.network.faults = self.network.faults.calm
        self.network.offline.clear()
        for socket in self.network.sockets:
            if socket.silent and not socket.dead:
                socket.cut()  # the TCP timeout that would end it
        limit = self.clock.now + 3600.0
        while self.clock.now < limit:
            self.resume_suspended()
            for client in self.clients:
                if not client.wiped and not client.running:
                    client.run_sync()
            self.scheduler.run_until(self.clock.now + 20.0)
            if self.quiet():
                return
        self.problem("did not converge within an hour of a healed network: " + "; ".join(
            self.unsettled()))  # fmt: skip

    def unsettled(self) -> list[str]:
        found = []
        server = self.server
        for client in self.clients:
            if client.wiped or self.removed(client):
                continue
            if client.name in self.revoked:
                found.append(f"{client.name} revoked, not wiped")
                continue
            replica = client.replica
            meta = replica.meta()
            state = client.transport.connection.state if client.transport else None
            what = []
            if meta.cursor != server.version or meta.digest != digest_text(server.digest):
                what.append(f"at {meta.cursor} of {server.version}")
            if replica.pending():
                what.append(f"{len(replica.pending())} pending")
            if replica.unsent_decisions(1):
                what.append("decisions unsent")
            if client.watch and state is not ClientState.LIVE:
                what.append(f"state {state}")
            if what:
                found.append(f"{client.name} " + ", ".join(what))
        user_ids = self.server.policy.users
        for client in self.clients:
            user = user_ids.get(client.user)
            if not client.wiped and user is not None and user.suspended:
                found.append(f"{client.user} suspended")
        if self.network.in_flight():
            found.append(f"{self.network.in_flight()} frames in flight")
        return found

    def quiet(self) -> bool:
        return not self.unsettled()

    def removed(self, client: SimClient) -> bool:
        """The client's user is gone, and the server never told the client so: it had no
        access token still good to say hello with, and a sign-in or refresh refused
        says only that it was refused (a refusal carrying the wipe may have been lost).
        Such a replica cannot be wiped; it is left out of the checks, and counted."""
        if client.wiped or client.running or client.user in self.server.policy.users:
            return False
        if any(isinstance(e, protocol_client.Wiped) for e in client.events):
            return False
        removed_at = max(
            (c.committed_at - self.clock.epoch for c in self.server.history
             if c.edit.get("op") == "delete_user" and c.edit.get("user_id") == client.user),
            default=0.0,
        )  # fmt: skip
        return client.started_at > removed_at  # it tried since

    # --- the checks -------------------------------------------------------------------------

    def check(self) -> None:
        server = self.server
        report = self.report
        if digest_of(policy_entities(server.policy)) != server.digest:
            self.problem("the server's digest is not the digest of its policy")
        for client, seq, fault in server.faults:
            self.problem(f"the server failed deciding {client} {seq}: {fault}")
        self.check_history()
        expected = _canonical(export_policy(server.policy))
        for client in self.clients:
            report.mutations += len(client.queued)
            report.decisions += client.decisions
            report.events.update(type(e).__name__ for e in client.events)
            if client.wiped:
                report.wiped += 1
                self.check_wiped(client)
                continue
            if self.removed(client):
                report.unwiped += 1
                continue
            if client.name in self.revoked:
                client.problem("its device was revoked, and the replica is still there")
                continue
            self.check_client(client, expected)

    def check_wiped(self, client: SimClient) -> None:
        left = replica_files(client.directory, TENANT, client.user)
        if left:
            client.problem(f"wiped, but files are left: {[p.name for p in left]}")
        backend = keyring.get_keyring()
        slot = slot_name(TENANT, client.user)
        if isinstance(backend, MemoryKeyring):
            kept = [k for k in backend.entries if k[1].startswith(slot)]
            if kept:
                client.problem(f"wiped, but keyring entries are left: {kept}")
        record = self.server.clients.get(client.client_id)
        for seq in client.queued:
            if record is not None and self.server.decided[client.client_id, seq] > 1:
                self.report.doubled += 1
                client.problem(f"edit {seq} was decided twice")

    def check_client(self, client: SimClient, expected: Any) -> None:
        server, report = self.server, self.report
        replica = client.replica
        meta = replica.meta()
        if meta.cursor != server.version:
            client.problem(f"the replica is at version {meta.cursor}, the server at "
                           f"{server.version}")  # fmt: skip
        if meta.digest != digest_text(server.digest):
            client.problem("the replica's confirmed digest is not the server's")
        exported = export_policy(replica.load_policy(client.wall()))
        mine = _canonical(exported)
        if mine != expected:
            client.problem(
                "the replica's policy is not the server's: " + _difference(mine, expected)
            )
        elif _plain(exported) != _plain(export_policy(server.policy)):
            client.problem(
                "the replica's policy is the server's in another order: roles "
                f"{[r['id'] for r in exported['roles']]}, users "
                f"{[u['id'] for u in exported['users']]} here, "
                f"{list(server.policy.roles)}, "
                f"{list(server.policy.users)} on the server"
            )
        if replica.outbox():
            client.problem(f"the outbox still holds {[r.seq for r in replica.outbox()]}")
        record = server.clients.get(client.client_id)
        outcomes = record.outcomes if record is not None else {}
        attention = {a.seq: a for a in replica.attention(include_dismissed=True)}
        for seq in client.queued:
            stored = outcomes.get(seq)
            decided = server.decided[client.client_id, seq]
            if stored is None or decided == 0:
                report.lost += 1
                client.problem(f"edit {seq} never reached the server")
                continue
            if decided > 1:
                report.doubled += 1
                client.problem(f"edit {seq} was decided {decided} times")
            outcome = stored["outcome"]
            if outcome == Outcome.APPLIED:
                report.applied += 1
            elif outcome == Outcome.MERGED:
                report.merged += 1
            elif outcome == Outcome.CONFLICT:
                report.conflicts += 1
            else:
                report.rejected += 1
                report.codes[stored.get("code", "?")] += 1
            seen = client.seen.get(seq, [])
            if not seen:
                client.problem(f"edit {seq} has an outcome the client never saw")
            for result in seen:
                if outcome_document(result) != stored:
                    client.problem(f"edit {seq} was answered {outcome_document(result)}, the "
                                   f"server keeps {stored}")  # fmt: skip
            if outcome in (Outcome.REJECTED, Outcome.CONFLICT):
                found = attention.get(seq)
                if found is None or found.outcome != outcome:
                    client.problem(f"edit {seq} ({outcome}) is not among the outcomes to see")
        unsent = replica.unsent_decisions(1)
        if unsent:
            client.problem(f"offline decisions from {unsent[0].seq} on were never uploaded")
        self.check_chain(client, meta.chain_seq, meta.chain_hash)

    def check_chain(self, client: SimClient, seq: int, head: str) -> None:
        record = self.server.clients.get(client.client_id)
        decisions = record.decisions if record is not None else []
        previous = GENESIS
        for number, decision in enumerate(decisions, 1):
            if decision.seq != number or decision.prev_hash != previous:
                client.problem(f"the server's chain breaks at decision {number}")
                return
            if decision_hash(client.client_id, decision) != decision.hash:
                client.problem(f"the server's decision {number} has a wrong hash")
                return
            previous = decision.hash
        if (len(decisions), previous) != (seq, head):
            client.problem(f"the server's chain ends at {len(decisions)}, the client's at {seq}")

    def check_history(self) -> None:
        """The merge rules over every change ever committed (module rules)."""
        server, report = self.server, self.report
        seen: Counter[tuple[str, int]] = Counter()
        narrowed: dict[tuple[str, ...], list[tuple[int, str]]] = {}
        changed: dict[tuple[str, ...], list[tuple[int, str]]] = {}
        empty = Policy(TENANT, {})
        for change in server.history:
            if change.base_version is not None:
                seen[change.client, change.seq] += 1
                if seen[change.client, change.seq] == 2:
                    report.doubled += 1
                    self.problem(f"{change.client} {change.seq} is in the change log twice")
                self._check_change(change, narrowed, changed, empty)
            for member in change.members:
                changed.setdefault(member.member, []).append((change.version, change.client))
                if member.kind is ChangeKind.NARROWING:
                    narrowed.setdefault(member.member, []).append((change.version, change.client))

    def _check_change(self, change: Any, narrowed: Any, changed: Any, empty: Policy) -> None:
        base, version, client = change.base_version, change.version, change.client

        def by_another(events: list[tuple[int, str]]) -> int | None:
            for when, who in events:
                if who != client and base < when < version:
                    return when
            return None

        op = change.edit.get("op")
        where = f"version {version} ({op} by {client} seq {change.seq}, base {base})"
        for member in change.members:
            if base < change.floor and member.kind is not ChangeKind.NARROWING:
                self.report.resurrected += member.kind is ChangeKind.WIDENING
                self.problem(f"{where} made a {member.kind} change of {member.member} against a "
                             f"base below the merge floor {change.floor}")  # fmt: skip
                continue
            if member.kind is ChangeKind.WIDENING:
                entity = member.member[:2]
                when = by_another(narrowed.get(member.member, []))
                if when is None and len(member.member) > 2:
                    when = by_another(changed.get(entity, []))
                if when is not None:
                    self.report.resurrected += 1
                    self.problem(f"{where} widened {member.member}, narrowed by another "
                                 f"client at version {when}")  # fmt: skip
            elif member.kind is ChangeKind.SCALAR:
                when = by_another(changed.get(member.member, []))
                if when is not None:
                    self.problem(f"{where} overwrote {member.member}, set by another client "
                                 f"at version {when}")  # fmt: skip
        if base >= change.floor:
            edit = edit_from_document(dict(change.edit), empty)
            for name in edit.names():
                when = by_another(changed.get(name, []))
                if when is not None:
                    self.problem(f"{where} names {name}, created or deleted by another "
                                 f"client at version {when}")  # fmt: skip


def _plain(document: dict[str, Any]) -> Any:
    return json.loads(json.dumps(document, sort_keys=True))


def _canonical(document: dict[str, Any]) -> Any:
    """A policy document compared as a whole: roles and users by id."""
    found = dict(document)
    found["roles"] = sorted(found.get("roles", []), key=lambda r: r["id"])
    found["users"] = sorted(found.get("users", []), key=lambda u: u["id"])
    return json.loads(json.dumps(found, sort_keys=True))


def _difference(mine: Any, theirs: Any) -> str:
    for part in ("roles", "users"):
        left = {e["id"]: e for e in mine.get(part, [])}
        right = {e["id"]: e for e in theirs.get(part, [])}
        for key in sorted(left.keys() | right.keys()):
            if left.get(key) != right.get(key):
                return f"{part} {key}: {left.get(key)} here, {right.get(key)} on the server"
    return "their heads differ"


@contextlib.contextmanager
def memory_keyring() -> Iterator[MemoryKeyring]:
    """The in-memory keyring while the block runs (so no Argon2 runs), then the old one."""
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(previous)


def run_seed(
    seed: int,
    clients: int = 4,
    edits: int = 30,
    directory: Path | None = None,
    *,
    lose: float = 0.0,
    chaos: float = 1.0,
    trace: bool = False,
) -> SimReport:
    """One random run (module rules); its report lists every invariant broken.

    `directory` holds the replicas (a temporary one by default); `lose` is the
    chance that a frame is lost while its socket goes on (`Faults.lose`: no real
    transport does that), `chaos` multiplies the chance of every other fault,
    `trace` keeps every frame in the clients' `lines`.
    The run has an in-memory keyring of its own: the clients are separate
    machines, and a keyring shared with an earlier run would hand its entries
    to these replicas (their entries are named by tenant and user only).
    """
    if directory is None:
        with tempfile.TemporaryDirectory() as temporary:
            return run_seed(
                seed, clients, edits, Path(temporary), lose=lose, chaos=chaos, trace=trace
            )
    with memory_keyring():
        sim = Sim(seed, clients, edits, directory, lose=lose, chaos=chaos, trace=trace)
        try:
            return sim.run()
        finally:
            for client in sim.clients:
                if not client.wiped:
                    client.replica.close()


# --- the suite ------------------------------------------------------------------------------

SEEDS = range(1, 21)


@pytest.fixture
def in_memory_keyring() -> Iterator[MemoryKeyring]:
    with memory_keyring() as backend:
        yield backend


_REPORTS: dict[int, SimReport] = {}


@pytest.mark.parametrize("seed", SEEDS)
def test_random_runs_converge_exactly_once(
    seed: int, tmp_path: Path, in_memory_keyring: MemoryKeyring
) -> None:
    report = run_seed(seed, clients=3 + seed % 3, edits=30, directory=tmp_path)
    _REPORTS[seed] = report
    assert not report.problems, "\n".join([report.summary(), *report.problems[:20]])
    assert (report.lost, report.doubled, report.resurrected) == (0, 0, 0), report.summary()


def test_the_runs_together_go_through_every_outcome_and_every_end() -> None:
    # Runs that never merge, conflict, supersede or wipe would prove little.
    if set(_REPORTS) != set(SEEDS):
        pytest.skip("only with every seed of the suite")
    reports = _REPORTS.values()
    codes: Counter[str] = Counter()
    events: Counter[str] = Counter()
    for report in reports:
        codes.update(report.codes)
        events.update(report.events)
    assert sum(r.merged for r in reports) and sum(r.conflicts for r in reports)
    assert codes["superseded"] and codes["forbidden"], codes
    assert sum(r.wiped for r in reports) and sum(r.imports for r in reports)
    assert sum(r.compactions for r in reports) and sum(r.decisions for r in reports)
    for kind in ("ResyncRequested", "Disconnected", "ServerMisbehaved", "SignInNeeded"):
        assert events[kind], kind


def main(argv: list[str]) -> int:
    """Soak: `python -m tests.app.test_convergence FIRST [LAST]` runs seeds FIRST..LAST-1."""
    first = int(argv[0]) if argv else 1
    last = int(argv[1]) if len(argv) > 1 else first + 1
    failed = 0
    with memory_keyring():
        for seed in range(first, last):
            started = time.perf_counter()
            report = run_seed(seed, clients=3 + seed % 3, edits=30)
            print(f"{report.summary()} [{time.perf_counter() - started:.1f} s]")
            for line in report.problems:
                print("  " + line)
            failed += bool(report.problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


# --- regressions found by the runs ----------------------------------------------------------


def calm_sim(tmp_path: Path, clients: int = 1) -> Sim:
    """A run without faults, whose plan the test makes itself."""
    sim = Sim(0, clients, 0, tmp_path, faults=Faults(latency=(0.01, 0.02)))
    sim.server.ops = SERVER_OPS
    return sim


def test_an_upload_in_flight_at_a_resync_is_made_again_in_the_next_session(
    tmp_path: Path, in_memory_keyring: MemoryKeyring
) -> None:
    sim = calm_sim(tmp_path)
    (client,) = sim.clients
    client.run_sync()
    sim.scheduler.run_until(5.0)
    client.decide()  # its upload is on the way to the server...
    sim.import_policy()  # ...when an import tells every session to resync
    sim.scheduler.run_until(60.0)
    assert client.replica.unsent_decisions(10) == []
    assert sim.server.clients[client.client_id].chain.seq == 1


def test_a_replica_whose_clock_is_behind_takes_a_policy_valid_at_the_servers_time(
    tmp_path: Path, in_memory_keyring: MemoryKeyring
) -> None:
    # p3 holds "Hot three" until a moment the server has passed and this replica's clock
    # has not; then "Hot four", which the constraint keeps apart from it, is assigned.
    sim = calm_sim(tmp_path, clients=2)
    admin, late = sim.clients
    late.skew = -120.0
    admin.run_sync()
    sim.scheduler.run_until(5.0)
    until = format_instant((int(sim.clock.wall_seconds()) + 30, ""))
    assert admin.edit([{"op": "assign_role", "user_id": "p3", "role_id": "r-h3",
                        "expires": until}])  # fmt: skip
    sim.scheduler.run_until(40.0)
    assert admin.edit([{"op": "assign_role", "user_id": "p3", "role_id": "r-h4"}])
    sim.scheduler.run_until(45.0)
    late.run_sync()  # a snapshot of a policy valid since the server's time
    sim.scheduler.run_until(60.0)
    late.restart(reopen=True)  # and the confirmed policy read again from the replica
    sim.scheduler.run_until(65.0)
    assert admin.edit([{"op": "set_user_attribute", "user_id": "p3", "key": "level",
                        "value": 1}])  # fmt: skip
    sim.scheduler.run_until(90.0)
    assert not sim.report.problems, sim.report.problems
    meta = late.replica.meta()
    assert (meta.cursor, meta.digest) == (sim.server.version, digest_text(sim.server.digest))
    assert late.transport is not None and late.transport.session.ending is None


def test_a_replica_read_offline_with_a_clock_behind_the_server_reads_the_servers_policy(
    tmp_path: Path, in_memory_keyring: MemoryKeyring
) -> None:
    # As above, but the replica took the change live and is then read by another process
    # (`fleetgate check`, `edit`): its time starts from the stored clock mark.
    sim = calm_sim(tmp_path, clients=2)
    admin, late = sim.clients
    late.skew = -120.0
    admin.run_sync()
    late.run_sync()
    sim.scheduler.run_until(5.0)
    until = format_instant((int(sim.clock.wall_seconds()) + 35, ""))  # after the last pong
    assert admin.edit([{"op": "assign_role", "user_id": "p3", "role_id": "r-h3",
                        "expires": until}])  # fmt: skip
    sim.scheduler.run_until(42.0)
    assert admin.edit([{"op": "assign_role", "user_id": "p3", "role_id": "r-h4"}])
    sim.scheduler.run_until(43.0)
    assert late.replica.meta().cursor == sim.server.version
    mark = late.replica.meta().clock_mark
    assert mark is not None
    now, _ = ReplicaClock(parse_instant(mark), 0.0).read(late.wall(), 0.0)
    view, _ = view_policy(late.replica, now)
    assert _canonical(export_policy(view)) == _canonical(export_policy(sim.server.policy))


def test_a_role_deleted_and_created_again_in_one_page_comes_last_as_on_the_server(
    tmp_path: Path, in_memory_keyring: MemoryKeyring
) -> None:
    sim = calm_sim(tmp_path, clients=2)
    admin, other = sim.clients
    admin.run_sync()
    other.run_sync()
    sim.scheduler.run_until(5.0)
    assert admin.edit([{"op": "delete_role", "role_id": "r-h1"},
                       {"op": "create_role", "role_id": "r-h1", "name": "Hot one"},
                       {"op": "delete_user", "user_id": "p1"},
                       {"op": "create_user", "user_id": "p1"}])  # fmt: skip
    sim.scheduler.run_until(10.0)
    assert sim.server.version == 5 and list(sim.server.policy.roles)[-1] == "r-h1"
    for client in (admin, other):
        assert client.replica.meta().cursor == 5
        mine = export_policy(client.replica.load_policy(client.wall()))
        assert _plain(mine) == _plain(export_policy(sim.server.policy)), client.name


def test_a_removed_users_replica_is_wiped_even_when_the_refusal_that_said_so_was_lost(
    tmp_path: Path, in_memory_keyring: MemoryKeyring
) -> None:
    sim = calm_sim(tmp_path, clients=2)
    sim.server.access_lifetime = 20.0
    admin, victim = sim.clients
    victim.user = "v1"  # a user of the policy the admin may delete (a client's own slot)
    victim.replica.close()
    victim.replica = Replica.open(victim.directory, TENANT, "v1", create=True)
    victim.client_id, victim.device = victim.replica.client, victim.replica.meta().device
    admin.run_sync()
    victim.run_sync()
    sim.scheduler.run_until(5.0)
    sim.network.partition(victim.name)
    assert admin.edit([{"op": "delete_user", "user_id": "v1"}])
    sim.scheduler.run_until(40.0)  # the victim's access token has expired meanwhile

    lost: list[bytes] = []

    def lose_the_removal(to_server: bool, frame: bytes) -> bool:
        # The first answer that says so is lost (its socket cut); later ones get through.
        if to_server or b"was removed" not in frame or lost:
            return False
        lost.append(frame)
        socket = victim.transport.socket if victim.transport else None
        if socket is not None:
            sim.scheduler.after(0.0, socket.cut)
        return True

    sim.network.blocks.append(lose_the_removal)
    sim.network.reconnect(victim.name)
    sim.scheduler.run_until(400.0)
    assert victim.wiped
