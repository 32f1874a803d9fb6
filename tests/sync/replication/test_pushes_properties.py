"""Property tests of deciding pushes (sync/replication/pushes.py) over random histories.

Issue "merge rules" § Proof. Two to four clients push random batches in a
random interleaving: edits of every op, well typed or malformed (fields of the
wrong JSON type, missing or unknown fields, unknown ops), made against random
base versions (the version the client last synced to, older ones, ones below
the merge floor, one ahead of the tenant), with repeated seqs, gaps and
another client's mutations mixed in; between pushes, imports, compactions and
stores that fail. `Server` plays the server around `execute_push` (the
stored outcomes, each client's last seq, the stamps, the merge floor, the
stored entities, the change log) and keeps, for the checks, its own history of
every member change, built from the commits and not from the code's stamps.

Edits are drawn from one of a few universes of ids: everything (existing and
unknown users and roles, names for ids), a few contended ids, or races on one
user's assignments, so that merges, conflicts and supersedes happen often.
Each test runs such histories and checks one property after every push:

1. one outcome per mutation, in order; a (client, seq) seen before gets its
   first outcome again and nothing is applied again; a gap refuses the whole
   push (`seq_gap`, naming last + 1) and changes nothing;
2. committed versions are consecutive across pushes and imports;
3. least privilege: a widening change is made only from a base at or after
   the member's last narrowing, when another client made it; the stronger
   rule, at or after *every* narrowing by another client, is checked on races
   over one assignment (a stamp keeps the latest narrowing by someone other
   than the last narrower, so a stale client's own narrowing cannot hide
   another's); deletes win: an edit naming
   an entity another client deleted or created after its base is never
   applied (at or above the merge floor: below it a narrowing edit applies
   whatever it names, pushes.py rule 6);
4. replaying the change log on the first policy gives the server's policy;
5. the stored entities load back as the server's policy;
6. the engine, updated push by push (and taken back when the store fails),
   decides like an engine compiled afresh;
7. every digest is the digest of the policy it stands for;
8. outcomes are well formed: conflicts keep the server's value, rejections
   carry a known code and a short reason without exception text.
"""

from __future__ import annotations

import contextlib
import copy
import re
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sync.policy.document import export_policy, parse_policy
from sync.policy.edits import EDIT_TYPES, EditRefused, apply_edit, edit_from_document
from sync.policy.engine import Engine
from sync.policy.instant import format_instant, parse_instant
from sync.policy.model import Policy
from sync.policy.request import Request
from sync.protocol.errors import ErrorCode
from sync.protocol.messages import Mutation, Outcome, Result, ResultCode
from sync.replication.digest import digest_of
from sync.replication.entities import Entity, policy_document, policy_entities
from sync.replication.members import (
    ABSENT,
    ChangeKind,
    Member,
    MemberChange,
    Stamp,
    entity_changes,
    entity_members,
    member_label,
    policy_changes,
    stamp_changes,
)
from sync.replication.pushes import (
    MAX_REASON_BYTES,
    Commit,
    PushContext,
    PushDecision,
    PushRefused,
    execute_push,
)

NOW = parse_instant("2026-11-22T09:30:00Z")
AT = format_instant(NOW)
START = 10
"""The tenant's version when a history begins."""
OPS = frozenset(EDIT_TYPES)
IMPORT_CLIENT = ""
"""The client an import's stamps are written by (server/tenants.py)."""

POLICY: dict[str, Any] = {
    "format": "fleetgate.policy/1",
    "tenant": "t",
    "resource_types": {
        "role": ["read", "create", "update", "delete", "assign", "escalate"],
        "user": ["read", "create", "update", "delete"],
        "doc": ["read", "write"],
    },
    "roles": [
        {"id": "r-admin", "name": "admin",
         "grants": [{"resource": "role", "actions": ["*"]},
                    {"resource": "user", "actions": ["*"]},
                    {"resource": "doc", "actions": ["*"]}]},
        {"id": "r-lead", "name": "lead",
         "grants": [{"resource": "user", "actions": ["read", "update"],
                     "when": {"resource.depot": "$user.depot"}},
                    {"resource": "role", "actions": ["assign"],
                     "when": {"resource.id": {"in": ["r-reader", "r-writer"]}}},
                    {"resource": "doc", "actions": ["read"]}]},
        {"id": "r-reader", "name": "reader", "grants": [{"resource": "doc", "actions": ["read"]}]},
        {"id": "r-writer", "name": "writer", "inherits": ["reader"],
         "grants": [{"resource": "doc", "actions": ["write"]}],
         "denies": [{"resource": "doc", "actions": ["write"], "when": {"context.locked": True}}]},
    ],
    "users": [
        {"id": "root", "roles": [{"role": "admin"}]},
        {"id": "ada", "roles": [{"role": "admin"}]},
        {"id": "ben", "attributes": {"depot": "s"}, "roles": [{"role": "admin"}]},
        {"id": "lena", "attributes": {"depot": "n"},
         "roles": [{"role": "lead"},
                   {"role": "writer", "eligible": {"max_hours": 8},
                    "expires": "2027-01-01T00:00:00Z"}]},
        {"id": "nick", "attributes": {"depot": "n"},
         "roles": [{"role": "reader", "expires": "2027-03-01T00:00:00Z"},
                   {"role": "writer", "eligible": {"max_hours": 4}}]},
        {"id": "sam", "attributes": {"depot": "s"}, "roles": [{"role": "writer"}],
         "denies": [{"resource": "doc", "actions": ["write"]}]},
    ],
    "constraints": [{"name": "reader-xor-admin", "exclusive": ["reader", "admin"]}],
}  # fmt: skip

CLIENTS = [("c1", "root"), ("c2", "lena"), ("c3", "ada"), ("c4", "ben")]
"""(client, its author): lena's lead role is limited, so edits are forbidden too."""

# --- edits ----------------------------------------------------------------------------

USERS = ["root", "lena", "nick", "sam", "u1", "u2", "ü-ñ"]
ROLES = ["r-admin", "r-lead", "r-reader", "r-writer", "r-x", "r-y", "reader", "writer"]
"""Role ids, existing and not, and two names (a role may be named in a document)."""
NAMES = ["admin", "reader", "x", "y", "auditor", "r-x"]
EXPIRIES = [
    None,
    "2026-11-01T00:00:00Z",  # already over
    "2026-11-22T12:00:00Z",
    "2026-12-31T00:00:00Z",
    "2027-06-01T00:00:00Z",
]
RULES: list[dict[str, Any]] = [
    {"resource": "doc", "actions": ["read"]},
    {"resource": "doc", "actions": ["write"]},
    {"resource": "doc", "actions": ["read"], "when": {"context.locked": True}},
    {"resource": "doc", "actions": ["read"], "when": {"context.locked": 1}},
    {"resource": "doc", "actions": ["write"], "when": {"context.locked": True}},
    {"resource": "user", "actions": ["update"], "when": {"resource.depot": "$user.depot"}},
    {"resource": "role", "actions": ["*"]},
    {"resource": "*", "actions": ["*"]},
    {"resource": "role", "actions": ["escalate"]},
    {"resource": "doc", "actions": ["print"]},  # not a listed action
]

HOURS = [1, 4, 8, 720]
ATTRIBUTE_VALUES: list[Any] = ["n", "s", 1, True, None, ["a"], {"k": 1}]


ASSIGNMENT_OPS = ("assign_role", "unassign_role", "make_eligible", "remove_eligible",
                  "activate_role", "deactivate_role")  # fmt: skip


@dataclass(frozen=True, eq=False)
class Universe:
    """The ids and values edits are drawn from, and the ops (repeated for weight)."""

    users: list[str]
    roles: list[str]
    names: list[str]
    rules: list[dict[str, Any]]
    ops: tuple[str, ...] = (*EDIT_TYPES, *ASSIGNMENT_OPS)
    """Any op, assignments twice as often: least privilege is mostly about them."""
    chaos: bool = True
    """Malformed edits, odd seqs and bases, imports, compactions and failed stores too."""


EVERYTHING = Universe(USERS, ROLES, NAMES, RULES)
CONTENDED = Universe(["nick", "nick", "sam"], ["r-reader", "r-writer", "r-writer"],
                     ["writer", "scribe"], RULES[1:3] + RULES[4:5])  # fmt: skip
"""Few ids, so that clients edit the same entities: merges, conflicts, supersedes."""
RACE = Universe(
    ["nick"],
    ["r-reader", "r-reader", "r-writer"],
    ["reader", "scribe"],
    RULES[:2],
    ("assign_role", "assign_role", "assign_role", "make_eligible", "make_eligible",
     *ASSIGNMENT_OPS, "add_rule", "remove_rule", "suspend_user", "resume_user",
     "set_user_attribute", "rename_role"),
)  # fmt: skip
"""One user's assignments, narrowed and widened by everyone: races on one member."""
UNIVERSES = [EVERYTHING, CONTENDED, RACE]
ONE_ASSIGNMENT = Universe(
    ["nick"], ["r-reader"], [], [], ("assign_role", "assign_role", "unassign_role"), chaos=False
)
"""Clients racing on nick's assignment of reader, and on nothing else."""


def _op(op: str, required: dict[str, Any], optional: dict[str, Any] | None = None) -> Any:
    fields = {"op": st.just(op), **required}
    return st.fixed_dictionaries(fields, optional=optional or {})


def well_typed(universe: Universe) -> dict[str, Any]:
    """A strategy of well-typed edit documents for each op, over `universe`."""
    users, roles = st.sampled_from(universe.users), st.sampled_from(universe.roles)
    names, hours = st.sampled_from(universe.names), st.sampled_from(HOURS)
    expiries = st.sampled_from(EXPIRIES)
    values = st.sampled_from(ATTRIBUTE_VALUES)
    owners = st.one_of(roles.map(lambda r: f"role:{r}"), users.map(lambda u: f"user:{u}"))
    assignment = {"user_id": users, "role_id": roles}
    rule = {
        "owner": owners,
        "effect": st.sampled_from(["grant", "deny"]),
        "rule": st.sampled_from(universe.rules).map(copy.deepcopy),
    }
    return {
        "create_role": _op(
            "create_role",
            {"role_id": roles, "name": names},
            {"description": st.sampled_from(["", "d"]), "inherits": st.lists(roles, max_size=2)},
        ),
        "rename_role": _op("rename_role", {"role_id": roles, "name": names}),
        "describe_role": _op(
            "describe_role", {"role_id": roles, "description": st.sampled_from(["", "d", "e"])}
        ),
        "delete_role": _op("delete_role", {"role_id": roles}),
        "add_inheritance": _op("add_inheritance", {"role_id": roles, "parent_id": roles}),
        "remove_inheritance": _op("remove_inheritance", {"role_id": roles, "parent_id": roles}),
        "add_rule": _op("add_rule", rule),
        "remove_rule": _op("remove_rule", rule),
        "assign_role": _op("assign_role", assignment, {"expires": expiries}),
        "unassign_role": _op("unassign_role", assignment),
        "make_eligible": _op(
            "make_eligible", {**assignment, "max_hours": hours}, {"expires": expiries}
        ),
        "remove_eligible": _op("remove_eligible", assignment),
        "activate_role": _op(
            "activate_role",
            {
                **assignment,
                "hours": hours,
                "justification": st.sampled_from(["on call", "incident"]),
            },
        ),
        "deactivate_role": _op("deactivate_role", assignment),
        "create_user": _op(
            "create_user",
            {"user_id": users},
            {
                "name": st.sampled_from([None, "Uli"]),
                "attributes": st.dictionaries(
                    st.sampled_from(["depot", "level"]), values, max_size=2
                ),
            },
        ),
        "delete_user": _op("delete_user", {"user_id": users}),
        "set_user_attribute": _op(
            "set_user_attribute",
            {"user_id": users, "key": st.sampled_from(["depot", "level"])},
            {"value": values},
        ),
        "suspend_user": _op("suspend_user", {"user_id": users}),
        "resume_user": _op("resume_user", {"user_id": users}),
    }


WELL_TYPED = {universe: well_typed(universe) for universe in [*UNIVERSES, ONE_ASSIGNMENT]}
WELL_TYPED_EDITS = {
    universe: st.one_of(*(ops[op] for op in universe.ops)) for universe, ops in WELL_TYPED.items()
}


def well_typed_edits(universe: Universe) -> Any:
    return WELL_TYPED_EDITS[universe]


wrong_values = st.one_of(
    st.integers(-2, 10**6),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.one_of(st.integers(0, 3), st.text(max_size=2)), max_size=2),
    st.dictionaries(st.sampled_from(["a", "op", "resource"]), st.integers(0, 2), max_size=2),
    st.none(),
    st.sampled_from(["", "x" * 300, "é-ü", "日本語のロール", "🚚" * 70]),
)
"""Values of the wrong JSON type for a field (or of the right one, out of bounds)."""
unknown_ops = st.one_of(
    st.sampled_from(["grant_everything", "rotate_keys"]),
    st.sampled_from(["Create_Role", "create-role", "x" * 300, "delete_role "]),
    wrong_values,
)
"""A lowercase name like `grant_everything` is an op of a newer server: the whole
push is refused (`unsupported_op`); anything else is no op at all (`invalid`)."""


def _paths(document: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key of the document, nested objects (a rule, its condition) included."""
    found = []
    for key, value in document.items():
        found.append((*prefix, key))
        if isinstance(value, dict):
            found.extend(_paths(value, (*prefix, key)))
    return found


@st.composite
def malformed_edits(draw: st.DrawFn, universe: Universe = EVERYTHING) -> dict[str, Any]:
    """A well-typed edit with one thing wrong: a field of the wrong type, a field
    missing, an unknown field (at any depth), or an unknown op."""
    document: dict[str, Any] = copy.deepcopy(draw(well_typed_edits(universe)))
    how = draw(st.sampled_from(["wrong", "wrong", "missing", "unknown", "op"]))
    if how == "op":
        document["op"] = draw(unknown_ops)
        return document
    path = draw(st.sampled_from(_paths(document)))
    holder = document
    for key in path[:-1]:
        holder = holder[key]
    if how == "wrong":
        holder[path[-1]] = draw(wrong_values)
    elif how == "missing":
        del holder[path[-1]]
    else:
        holder[draw(st.sampled_from(["extra", "Op", "rule_id", ""]))] = draw(wrong_values)
    return document


@st.composite
def edits(draw: st.DrawFn, universe: Universe = EVERYTHING) -> dict[str, Any]:
    """Mostly well-typed edits, one in four malformed."""
    if universe.chaos and draw(st.integers(0, 3)) == 0:
        return draw(malformed_edits(universe))
    document: dict[str, Any] = draw(well_typed_edits(universe))
    return document


# --- the server, as the test keeps it -------------------------------------------------


@dataclass
class Client:
    id: str
    author: str
    known: int
    """The server version this client last synced to."""
    pending: list[Mutation] = field(default_factory=list)
    """Its queue: mutations with seqs after the last recorded one, pushed until recorded."""


@dataclass(frozen=True)
class State:
    """What a push must leave as it was when it is refused or its store fails."""

    policy: dict[str, Any]
    version: int
    stamps: dict[Member, Stamp]
    digest: int
    engine_digest: int


@dataclass
class Step:
    """One mutation of a push as decided, with the policy it was decided against
    (the test's replay: the policy before the mutation)."""

    mutation: Mutation
    result: Result
    kind: str
    """`new` (a seq decided for the first time), `repeat`, or `foreign` (another client's)."""
    version: int
    """The tenant's version when the mutation was reached."""
    policy: Policy
    history: int
    """How many entries the server's history had when the mutation was reached."""
    commit: Commit | None = None
    digest: int | None = None
    """With a commit: the digest of the replayed policy after it."""


@dataclass
class Pushed:
    client: Client
    mutations: list[Mutation]
    last: int
    """The client's last recorded seq before the push."""
    floor: int
    before: State
    outcomes: dict[tuple[str, int], Result]
    """The stored outcomes before the push."""
    store_fails: bool
    decision: PushDecision | None = None
    refused: PushRefused | None = None
    steps: list[Step] = field(default_factory=list)
    stray_commits: list[Commit] = field(default_factory=list)
    """Commits that belong to no mutation decided for the first time (must be none)."""


class Check:
    """One property, checked as a history runs."""

    def decided(self, server: Server, pushed: Pushed) -> None:
        """After `execute_push` returned (or refused), before the push is stored."""

    def settled(self, server: Server, pushed: Pushed) -> None:
        """After the push was stored, or taken back because its store failed."""

    def imported(self, server: Server) -> None:
        """After an import."""

    def finished(self, server: Server) -> None:
        """At the end of the history."""


class Server:
    """What the server keeps between pushes (the ledger), and what the test keeps
    to judge it by: a history of member changes, a replayed policy, the change
    log and the stored entities."""

    def __init__(self) -> None:
        self.first = parse_policy(POLICY, now=NOW)
        self.engine = Engine(parse_policy(POLICY, now=NOW), version=START)
        self.floor = 0
        self.stamps: dict[Member, Stamp] = {}
        self.outcomes: dict[tuple[str, int], Result] = {}
        self.recorded: dict[tuple[str, int], Mutation] = {}
        self.last: dict[str, int] = {}
        self.digest = digest_of(policy_entities(self.engine.policy))
        self.entities: dict[str, Entity] = {e.key: e for e in policy_entities(self.engine.policy)}
        self.log: list[tuple[int, dict[str, Any] | None, dict[str, Any] | None]] = []
        """(version, edit of a change, or the whole policy document of an import)."""
        self.replica = self.first.copy()
        self.history: list[tuple[int, str, MemberChange]] = []
        """(version, client, change) of every stored member change, in order."""

    @property
    def version(self) -> int:
        return self.engine.version or 0

    def state(self) -> State:
        return State(
            export_policy(self.engine.policy),
            self.version,
            dict(self.stamps),
            self.digest,
            digest_of(policy_entities(self.engine.policy)),
        )

    def push(self, client: Client, mutations: list[Mutation], store_fails: bool,
             check: Check) -> Pushed:  # fmt: skip
        last = self.last.get(client.id, 0)
        context = PushContext(
            author=client.author,
            client=client.id,
            last_seq=last,
            stored={s: r for (c, s), r in self.outcomes.items() if c == client.id},
            stamps=self.stamps,
            floor=self.floor,
            ops=OPS,
            digest=self.digest,
            now=NOW,
            at=AT,
        )
        pushed = Pushed(client, mutations, last, self.floor, self.state(), dict(self.outcomes),
                        store_fails)  # fmt: skip
        try:
            pushed.decision = execute_push(self.engine, context, mutations)
        except PushRefused as refused:
            pushed.refused = refused
            check.decided(self, pushed)
            check.settled(self, pushed)
            return pushed
        mark = len(self.history)
        trial = self._walk(pushed)
        check.decided(self, pushed)
        decision = pushed.decision
        if store_fails:
            assert decision.undo is not None
            self.engine.revert(decision.undo, decision.touched, decision.start_version)
            del self.history[mark:]
        else:
            self._store(pushed, trial)
        check.settled(self, pushed)
        return pushed

    def _walk(self, pushed: Pushed) -> Policy:
        """Replay the decision's commits on a copy of the replica, mutation by mutation."""
        decision = pushed.decision
        assert decision is not None
        trial = self.replica.copy()
        commits = list(decision.commits)
        seen = {s for c, s in self.outcomes if c == pushed.client.id}
        version = pushed.before.version
        for mutation, result in zip(pushed.mutations, decision.results, strict=False):
            if mutation.client != pushed.client.id:
                kind = "foreign"
            elif mutation.seq in seen:
                kind = "repeat"
            else:
                kind = "new"
                seen.add(mutation.seq)
            step = Step(mutation, result, kind, version, trial.copy(), len(self.history))
            pushed.steps.append(step)
            if kind == "new" and commits and commits[0].mutation is mutation:
                commit = step.commit = commits.pop(0)
                apply_edit(trial, edit_from_document(commit.edit, trial), NOW)
                step.digest = digest_of(policy_entities(trial))
                changes = entity_changes(commit.before, commit.after)
                self.history += [(commit.version, pushed.client.id, c) for c in changes]
                version = commit.version
        pushed.stray_commits = commits
        return trial

    def _store(self, pushed: Pushed, trial: Policy) -> None:
        """What the server's transaction stores."""
        decision = pushed.decision
        assert decision is not None
        client = pushed.client
        for step in pushed.steps:
            if step.kind == "new":
                self.outcomes[(client.id, step.mutation.seq)] = step.result
                self.recorded[(client.id, step.mutation.seq)] = step.mutation
                self.last[client.id] = max(self.last.get(client.id, 0), step.mutation.seq)
        self.stamps.update(decision.stamps)
        self.digest = decision.digest
        for commit in decision.commits:
            self.log.append((commit.version, commit.edit, None))
            for entity in commit.after:
                if entity.document is None:
                    self.entities.pop(entity.key, None)
                else:
                    self.entities[entity.key] = entity
        self.replica = trial
        last = self.last.get(client.id, 0)
        client.pending = [m for m in client.pending if m.seq > last]

    def import_policy(self, documents: list[dict[str, Any]]) -> None:
        """Replace the policy with a modified copy, as server/tenants.py `replace_policy`."""
        new = self.engine.policy.copy()
        for document in documents:
            with contextlib.suppress(EditRefused):
                apply_edit(new, edit_from_document(document, new), NOW)
        new = parse_policy(export_policy(new), now=NOW)
        version = self.version + 1
        entities = {e.key: e for e in policy_entities(new)}
        changes, touched = policy_changes(policy_entities(self.engine.policy), entities.values())
        self.stamps.update(stamp_changes(self.stamps.get, changes, touched, version, IMPORT_CLIENT))
        self.engine = Engine(new, version)
        self.digest = digest_of(entities.values())
        self.entities = entities
        self.replica = new.copy()
        self.history += [(version, IMPORT_CLIENT, c) for c in changes]
        self.log.append((version, None, export_policy(new)))

    def compact(self, floor: int) -> None:
        """Raise the merge floor and drop the stamps below it, as `store.compact` does."""
        self.floor = max(self.floor, floor)
        self.stamps = {m: s for m, s in self.stamps.items() if s.changed >= self.floor}

    def narrowed_by_others(self, member: Member, client: str, upto: int) -> int | None:
        """The latest narrowing of `member` by a client other than `client`, among the
        first `upto` entries of the history."""
        versions = [
            v for v, c, change in self.history[:upto]
            if change.member == member and change.kind is ChangeKind.NARROWING and c != client
        ]  # fmt: skip
        return max(versions, default=None)

    def last_narrowed_by_another(self, member: Member, client: str, upto: int) -> int | None:
        """The version of the last narrowing of `member` (among the first `upto` entries
        of the history) if another client than `client` made it."""
        narrowings = [
            (v, c) for v, c, change in self.history[:upto]
            if change.member == member and change.kind is ChangeKind.NARROWING
        ]  # fmt: skip
        if not narrowings or narrowings[-1][1] == client:
            return None
        return narrowings[-1][0]

    def existence_changed_by_others(self, member: Member, client: str, upto: int) -> list[int]:
        """Versions at which another client created or deleted the entity `member`."""
        return [
            v for v, c, change in self.history[:upto] if change.member == member and c != client
        ]


# --- histories ------------------------------------------------------------------------


def _base_version(data: st.DataObject, server: Server, client: Client, universe: Universe) -> int:
    """Mostly the client's known version; sometimes older, below the merge floor, or
    one ahead of the tenant."""
    choice = data.draw(st.integers(0, 9), label="base")
    if choice < 6 or not universe.chaos:
        return client.known
    if choice < 8:
        return data.draw(st.integers(0, server.version), label="older base")
    if choice < 9:
        return max(0, server.floor - 1)
    return server.version + 1


def _batch(
    data: st.DataObject, server: Server, client: Client, clients: list[Client], universe: Universe
) -> list[Mutation]:
    """The client's queue and new edits, with repeats, a gap, another client's
    mutation or a seq pushed twice mixed in now and then."""
    last = server.last.get(client.id, 0)
    for _ in range(data.draw(st.integers(0 if client.pending else 1, 4), label="new edits")):
        seq = last + len(client.pending) + 1
        base = _base_version(data, server, client, universe)
        client.pending.append(
            Mutation(client.id, seq, base, data.draw(edits(universe), label="edit"))
        )
    batch = list(client.pending)
    tweaks = st.lists(st.sampled_from(["repeat", "gap", "foreign", "twice"]), max_size=2)
    for tweak in data.draw(tweaks, label="tweaks") if universe.chaos else []:
        if tweak == "repeat" and last:
            seq = data.draw(st.integers(1, last), label="repeated seq")
            at = data.draw(st.integers(0, len(batch)), label="at")
            batch.insert(at, server.recorded[(client.id, seq)])
        elif tweak == "gap":
            news = [i for i, m in enumerate(batch) if m.seq > last]
            if len(news) >= 2:
                del batch[data.draw(st.sampled_from(news[:-1]), label="left out")]
            elif news:
                old = batch[news[0]]
                batch[news[0]] = Mutation(client.id, old.seq + 1, old.base_version, old.edit)
        elif tweak == "foreign":
            other = data.draw(st.sampled_from([c for c in clients if c is not client]))
            edit = data.draw(edits(universe), label="foreign edit")
            seq = data.draw(st.integers(1, 5), label="foreign seq")
            at = data.draw(st.integers(0, len(batch)), label="at")
            batch.insert(at, Mutation(other.id, seq, other.known, edit))
        elif tweak == "twice" and batch:
            i = data.draw(st.integers(0, len(batch) - 1), label="twice")
            batch.insert(data.draw(st.integers(i + 1, len(batch)), label="again at"), batch[i])
    return batch


def run_history(data: st.DataObject, check: Check, universes: list[Universe] = UNIVERSES) -> Server:
    """Run a random history over one of `universes`, calling `check` as it goes."""
    server = Server()
    count = data.draw(st.integers(2, 4), label="clients")
    clients = [Client(c, author, START) for c, author in CLIENTS[:count]]
    universe = data.draw(st.sampled_from(universes), label="universe")
    actions = ["push"] * 6 + ["sync"] * 2 + (["import", "compact"] if universe.chaos else [])
    for _ in range(data.draw(st.integers(1, 14), label="steps")):
        action = data.draw(st.sampled_from(actions))
        client = data.draw(st.sampled_from(clients), label="client")
        if action == "sync":
            client.known = server.version
        elif action == "import":
            imported = st.lists(well_typed_edits(universe), min_size=1, max_size=4)
            server.import_policy(data.draw(imported, label="import"))
            check.imported(server)
        elif action == "compact":
            server.compact(data.draw(st.integers(server.floor, server.version), label="floor"))
        else:
            batch = _batch(data, server, client, clients, universe)
            store_fails = universe.chaos and data.draw(st.integers(0, 5), label="fails") == 0
            server.push(client, batch, store_fails, check)
    check.finished(server)
    return server


HISTORIES = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- 1. exactly once ------------------------------------------------------------------


OP_NAME = re.compile("[a-z][a-z_]{0,63}")
"""What looks like an op of a newer server, not a malformed one."""


def _expected_refusal(pushed: Pushed) -> ErrorCode | None:
    """The push rules: new seqs run last + 1, + 2, …; no op of a newer server."""
    running = pushed.last
    for mutation in pushed.mutations:
        if mutation.client != pushed.client.id or mutation.seq <= running:
            continue
        if mutation.seq != running + 1:
            return ErrorCode.SEQ_GAP
        running = mutation.seq
        op = mutation.edit.get("op")
        if isinstance(op, str) and OP_NAME.fullmatch(op) and op not in OPS:
            return ErrorCode.UNSUPPORTED_OP
    return None


def _unchanged(server: Server, before: State) -> None:
    assert export_policy(server.engine.policy) == before.policy
    assert server.version == before.version
    assert server.stamps == before.stamps
    assert server.digest == before.digest
    assert digest_of(policy_entities(server.engine.policy)) == before.engine_digest


class ExactlyOnce(Check):
    def decided(self, server: Server, pushed: Pushed) -> None:
        expected = _expected_refusal(pushed)
        if pushed.refused is not None or expected is not None:
            assert pushed.refused is not None, f"expected {expected}"
            assert pushed.refused.code is expected
            assert pushed.refused.expected_seq == pushed.last + 1
            _unchanged(server, pushed.before)
            return
        decision = pushed.decision
        assert decision is not None
        assert len(decision.results) == len(pushed.mutations)
        first: dict[int, Result] = {}
        for step in pushed.steps:
            mutation, result = step.mutation, step.result
            assert (result.client, result.seq) == (mutation.client, mutation.seq)
            assert result.outcome.value != "stale" and result.code != "stale"
            if step.kind == "foreign":
                assert (result.outcome, result.code) == (Outcome.REJECTED, ResultCode.WRONG_CLIENT)
            elif step.kind == "repeat":
                stored = pushed.outcomes.get((mutation.client, mutation.seq))
                assert result == (stored if stored is not None else first[mutation.seq])
                assert step.commit is None
            else:
                first[mutation.seq] = result
        assert decision.new_outcomes == [s.result for s in pushed.steps if s.kind == "new"]
        assert pushed.stray_commits == []
        assert server.stamps == pushed.before.stamps  # the stored stamps are not written to

    def settled(self, server: Server, pushed: Pushed) -> None:
        if pushed.refused is not None or pushed.store_fails:
            _unchanged(server, pushed.before)


@HISTORIES
@given(data=st.data())
def test_every_mutation_gets_one_outcome_once_and_a_gap_refuses_the_push_unchanged(
    data: st.DataObject,
) -> None:
    run_history(data, ExactlyOnce())


# --- 2. versions ----------------------------------------------------------------------


class ConsecutiveVersions(Check):
    def decided(self, server: Server, pushed: Pushed) -> None:
        decision = pushed.decision
        if decision is None:
            return
        start = pushed.before.version
        versions = [c.version for c in decision.commits]
        assert versions == list(range(start + 1, start + 1 + len(versions)))
        assert server.version == start + len(versions)
        for step in pushed.steps:
            if step.kind == "new" and step.result.outcome in (Outcome.APPLIED, Outcome.MERGED):
                made = step.commit.version if step.commit is not None else step.version
                assert step.result.version == made

    def settled(self, server: Server, pushed: Pushed) -> None:
        self._log_is_gap_free(server)

    def imported(self, server: Server) -> None:
        self._log_is_gap_free(server)

    @staticmethod
    def _log_is_gap_free(server: Server) -> None:
        versions = [v for v, _, _ in server.log]
        assert versions == list(range(START + 1, START + 1 + len(versions)))
        assert server.version == START + len(versions)


@HISTORIES
@given(data=st.data())
def test_committed_versions_are_consecutive_without_gap_or_repeat_across_pushes(
    data: st.DataObject,
) -> None:
    run_history(data, ConsecutiveVersions())


# --- 3. least privilege, deletes win --------------------------------------------------


class LeastPrivilege(Check):
    """A widening change to a member is made only from a base at or after every
    narrowing of it by another client (read from the test's own history)."""

    def __init__(self, *, every_narrowing: bool = True) -> None:
        self.every_narrowing = every_narrowing
        """False: only the member's last narrowing counts, when another client made it."""

    def decided(self, server: Server, pushed: Pushed) -> None:
        for step in pushed.steps:
            if step.commit is None:
                continue
            client, base = step.mutation.client, step.mutation.base_version
            for change in entity_changes(step.commit.before, step.commit.after):
                if change.kind is not ChangeKind.WIDENING:
                    continue
                if self.every_narrowing:
                    narrowed = server.narrowed_by_others(change.member, client, step.history)
                else:
                    narrowed = server.last_narrowed_by_another(change.member, client, step.history)
                assert narrowed is None or narrowed <= base, (
                    f"{member_label(change.member)} narrowed at {narrowed} by another client "
                    f"was widened by {client} from base {base} at {step.commit.version}"
                )


class DeletesWin(Check):
    """An edit naming an entity another client deleted or created after its base is
    never applied (above the merge floor: below it, narrowing edits apply, rule 6)."""

    def decided(self, server: Server, pushed: Pushed) -> None:
        for step in pushed.steps:
            mutation = step.mutation
            if step.kind != "new" or mutation.base_version < pushed.floor:
                continue
            if step.result.outcome not in (Outcome.APPLIED, Outcome.MERGED):
                continue
            document = step.commit.edit if step.commit is not None else mutation.edit
            edit = edit_from_document(document, step.policy)
            for kind, entity_id in edit.names():
                changed = [
                    v
                    for v in server.existence_changed_by_others(
                        (kind, entity_id), mutation.client, step.history
                    )
                    if v > mutation.base_version
                ]
                assert not changed, (
                    f"{edit.op} from base {mutation.base_version} applied to {kind} "
                    f"{entity_id} created or deleted by another client at {changed}"
                )


@HISTORIES
@given(data=st.data())
def test_least_privilege_a_stale_edit_never_widens_what_another_client_narrowed_last(
    data: st.DataObject,
) -> None:
    run_history(data, LeastPrivilege(every_narrowing=False))


@HISTORIES
@given(data=st.data())
def test_least_privilege_a_member_narrowed_by_another_client_is_widened_only_from_a_later_base(
    data: st.DataObject,
) -> None:
    run_history(data, LeastPrivilege(), universes=[ONE_ASSIGNMENT])


@HISTORIES
@given(data=st.data())
def test_deletes_win_an_edit_naming_an_entity_deleted_or_created_after_its_base_never_applies(
    data: st.DataObject,
) -> None:
    run_history(data, DeletesWin())


def _assign(seq: int, client: str, expires: str | None) -> Mutation:
    edit = {"op": "assign_role", "user_id": "nick", "role_id": "r-reader", "expires": expires}
    return Mutation(client, seq, START, edit)


def test_a_stale_client_cannot_undo_another_clients_narrowing_by_narrowing_first() -> None:
    """What the property above finds: c3 shortens nick's reader; c1, offline since
    version 10, shortens it further and then makes it permanent, past c3's
    revoke it never saw."""
    server, check = Server(), Check()
    c1, c3 = Client("c1", "root", START), Client("c3", "ada", START)
    server.push(c3, [_assign(1, "c3", "2026-12-31T00:00:00Z")], False, check)  # narrowing, 11
    pushed = server.push(
        c1, [_assign(1, "c1", "2026-11-22T12:00:00Z"), _assign(2, "c1", None)], False, check
    )
    assert pushed.decision is not None
    narrowing, widening = pushed.decision.results
    assert (narrowing.outcome, narrowing.version) == (Outcome.MERGED, 12)
    assert (widening.outcome, widening.code, widening.version) == (
        Outcome.REJECTED, ResultCode.SUPERSEDED, 11)  # fmt: skip
    roles = server.engine.policy.users["nick"].roles
    (reader,) = [a for a in roles if a.role_id == "r-reader" and a.eligible is None]
    assert reader.expires == "2026-11-22T12:00:00Z"


# --- 4, 5. replay, stored entities ----------------------------------------------------


class Replay(Check):
    def settled(self, server: Server, pushed: Pushed) -> None:
        assert export_policy(server.replica) == export_policy(server.engine.policy)

    def finished(self, server: Server) -> None:
        replayed = parse_policy(POLICY, now=NOW)
        for _version, edit, imported in sorted(server.log, key=lambda entry: entry[0]):
            if edit is not None:
                apply_edit(replayed, edit_from_document(edit, replayed), NOW)
            else:
                replayed = parse_policy(imported, now=NOW)
        assert export_policy(replayed) == export_policy(server.engine.policy)


@HISTORIES
@given(data=st.data())
def test_replaying_the_committed_changes_on_the_first_policy_gives_the_servers_policy(
    data: st.DataObject,
) -> None:
    run_history(data, Replay())


def _documents(entities: Any) -> dict[str, Any]:
    return {e.key: e.document for e in entities}


class StoredEntities(Check):
    def settled(self, server: Server, pushed: Pushed) -> None:
        self._load_back(server)

    def imported(self, server: Server) -> None:
        self._load_back(server)

    @staticmethod
    def _load_back(server: Server) -> None:
        live = _documents(policy_entities(server.engine.policy))
        assert _documents(server.entities.values()) == live
        loaded = parse_policy(policy_document("t", server.entities.values()), now=NOW)
        assert _documents(policy_entities(loaded)) == live


@HISTORIES
@given(data=st.data())
def test_the_stored_entities_load_back_as_the_servers_policy(data: st.DataObject) -> None:
    run_history(data, StoredEntities())


# --- 6. incremental engine ------------------------------------------------------------


def _answers(engine: Engine) -> dict[str, Any]:
    """Everything the engine answers about the policy's users."""
    answers: dict[str, Any] = {}
    for user in engine.policy.users:
        answers[user] = engine.effective_permissions(user, NOW)
        requests = [
            Request(user, "read", "doc", "d1"),
            Request(user, "write", "doc", "d1", {}, {"locked": True}),
            Request(user, "write", "doc", "d1", {}, {"locked": False}),
            Request(user, "update", "user", "nick", {"depot": "n"}),
            Request(user, "assign", "role", "r-reader", {"role_id": "r-reader", "name": "reader"}),
            Request(user, "escalate", "role", "r-admin", {"role_id": "r-admin", "name": "admin"}),
        ]
        answers[f"{user} decides"] = engine.decide_many(requests, NOW)
    answers["who can write doc"] = engine.who_can("write", "doc", now=NOW)
    answers["holders"] = engine.holders({"r-reader", "r-admin", "r-x"})
    return answers


def _decides_like_a_fresh_compile(engine: Engine) -> None:
    fresh = Engine(parse_policy(export_policy(engine.policy), now=NOW), engine.version)
    assert _answers(engine) == _answers(fresh)


class IncrementalEngine(Check):
    def decided(self, server: Server, pushed: Pushed) -> None:
        _decides_like_a_fresh_compile(server.engine)

    def settled(self, server: Server, pushed: Pushed) -> None:
        if pushed.store_fails:
            assert export_policy(server.engine.policy) == pushed.before.policy
            assert server.version == pushed.before.version
        _decides_like_a_fresh_compile(server.engine)


@HISTORIES
@given(data=st.data())
def test_the_engine_updated_push_by_push_decides_like_a_fresh_compile_after_failed_stores_too(
    data: st.DataObject,
) -> None:
    run_history(data, IncrementalEngine())


# --- 7. digest ------------------------------------------------------------------------


class Digests(Check):
    def decided(self, server: Server, pushed: Pushed) -> None:
        assert pushed.before.digest == pushed.before.engine_digest
        decision = pushed.decision
        if decision is None:
            return
        assert decision.digest == digest_of(policy_entities(server.engine.policy))
        if not decision.commits:
            assert decision.digest == pushed.before.digest
        for step in pushed.steps:
            if step.commit is not None:
                assert step.commit.digest == step.digest

    def settled(self, server: Server, pushed: Pushed) -> None:
        assert server.digest == digest_of(policy_entities(server.engine.policy))


@HISTORIES
@given(data=st.data())
def test_the_decisions_digest_is_the_digest_of_the_policy_it_leaves(data: st.DataObject) -> None:
    run_history(data, Digests())


# --- 8. outcomes ----------------------------------------------------------------------

EXCEPTION_TEXT = ("Error:", "Traceback", "unhashable", "object has no attribute")
CODES = {code.value for code in ResultCode}


def _member_values(policy: Policy) -> dict[str, Any]:
    """Every member of the policy by its label, as a conflict names it."""
    values: dict[str, Any] = {}
    for entity in policy_entities(policy):
        values[member_label((entity.kind, entity.id))] = True
        members = entity_members(entity.kind, entity.id, entity.document)
        values.update((member_label(m), v) for m, v in members.items())
    return values


def _well_worded(reason: str | None) -> None:
    assert isinstance(reason, str) and reason
    assert len(reason.encode("utf-8")) <= MAX_REASON_BYTES
    assert not any(text in reason for text in EXCEPTION_TEXT), reason


class WellFormedOutcomes(Check):
    def decided(self, server: Server, pushed: Pushed) -> None:
        decision = pushed.decision
        if decision is None:
            return
        assert decision.faults == []
        for step in pushed.steps:
            result, mutation = step.result, step.mutation
            event(f"{result.outcome.value} {result.code or ''}".strip())
            assert result.outcome in (
                Outcome.APPLIED, Outcome.MERGED, Outcome.REJECTED, Outcome.CONFLICT)  # fmt: skip
            if step.kind != "new":
                continue
            if mutation.base_version > step.version:
                assert (result.outcome, result.code) == (Outcome.REJECTED, ResultCode.INVALID)
            if result.outcome in (Outcome.APPLIED, Outcome.MERGED):
                assert result.code is None and result.conflict is None
                continue
            assert step.commit is None
            assert result.code in CODES
            _well_worded(result.reason)
            if result.code == ResultCode.SUPERSEDED or result.outcome is Outcome.CONFLICT:
                assert result.version is not None
                assert mutation.base_version < result.version <= step.version
            if result.outcome is Outcome.CONFLICT:
                assert result.code == ResultCode.CONCURRENT_CHANGE
                assert result.conflict is not None
                kept = _member_values(step.policy).get(result.conflict.member, ABSENT)
                assert result.conflict.server == (None if kept is ABSENT else kept)
            else:
                assert result.conflict is None


@HISTORIES
@given(data=st.data())
def test_outcomes_are_well_formed_conflicts_keep_the_servers_value_and_reasons_are_clean(
    data: st.DataObject,
) -> None:
    run_history(data, WellFormedOutcomes())


@HISTORIES
@given(edit=st.one_of(wrong_values, st.lists(st.just("op"), max_size=2), st.text(max_size=3)))
def test_an_edit_that_is_not_an_object_is_rejected_invalid_and_never_raises(edit: Any) -> None:
    server = Server()
    pushed = server.push(Client("c1", "root", START), [Mutation("c1", 1, START, edit)], False,
                         Check())  # fmt: skip
    assert pushed.decision is not None
    (result,) = pushed.decision.results
    assert (result.outcome, result.code) == (Outcome.REJECTED, ResultCode.INVALID)
    assert export_policy(server.engine.policy) == export_policy(server.first)


def test_the_generators_cover_every_op() -> None:
    for strategies in WELL_TYPED.values():
        assert set(strategies) == set(EDIT_TYPES)
