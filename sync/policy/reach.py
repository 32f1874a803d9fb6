"""The edits that turn one policy into another (`edits_to_reach`).

Two features use it: `fleetgate edit --apply-policy FILE` queues the
difference from the replica's policy to a file as edits that sync, and
cancelling a pending edit queues the edits that put back what it touched
(`only`). The server re-executes each edit, so each is one intent-level change
of one member (a rule, a parent, an assignment, an attribute), never "replace
the role".

What is compared is what `sync.policy.diff` compares: roles by id (a rename
is one field), users by id; rules by identity (`Rule.__eq__`), in order;
a user's ordinary assignments by role and `expires` text, eligible entries by
role, `max_hours` and `expires` text, each apart (policy-format.md §
Additions).

Rules of this module:

- Edits come in phases (`_Phase`), in this order; inside a phase, roles come
  before users (but for the deletions), each in document order:

  1. suspensions of existing users; deletions of users, then of roles. A
     deleted role takes its assignments, its place in other roles'
     `inherits` and in constraints with it (`DeleteRole`), so no unassign or
     remove_inheritance is written for it, and its name is free for what
     follows.
  2. renames (a cycle of renames, a -> b and b -> a, goes through a
     temporary name that no role has or will have), descriptions.
  3. roles created with name and description only (their parents are added
     in phase 7, once every role exists, so new roles may inherit each
     other in any order); users created with their attributes (and
     suspended at once when the target says so).
  4. denies added.
  5. what takes access away: grants removed, parents removed, roles
     unassigned or their expiry brought forward, eligibility removed or
     narrowed.
  6. attributes set or removed.
  7. what gives access: parents added, grants added, roles assigned or their
     expiry put later, eligibility given or widened.
  8. denies removed.
  9. users resumed.

  Why: up to phase 5 every edit only takes holdings away, and from phase 7
  on only adds holdings the target has, so every state in between holds a
  subset of what the current policy or the target holds. No edit can then
  break a separation-of-duty constraint that neither end breaks at the time
  of the edits (unassign X before assigning Y exclusive with it), and no
  added parent can close a cycle (the parents in force are a subset of the
  target's: a -> b reversed to b -> a works). It also fails closed: a series
  cut short half-way has taken access away before it gave any.
- Deletions come first, not last: deleting later would need a temporary name
  for a new role that takes a deleted role's name, and explicit unassigns
  before assigning a role exclusive with the deleted one. One delete_role per
  role also keeps the series short (no unassign per holder).
- Rule and parent order are reproduced: a rule's index is what a decision's
  `matched[].rule` reports (policy-format.md § Request and decision) and the
  order of `inherits` decides which path an explanation shows. The ops only
  append, so the longest prefix of the target already in order stays and the
  rules after it are removed and appended again; a moved deny is removed and
  re-added in two adjacent edits, a moved grant likewise.
- The order of a user's assignments, of roles and users in the document, of
  attributes, resource types and constraints is not reproduced: it means
  nothing, and no op moves an entity or an entry (`assign_role` always
  appends). An expiry changes by one `assign_role` (it replaces the role's
  ordinary entries), an eligibility by one `make_eligible` (it replaces the
  role's eligible entry in place): no window in which it is missing.
- Deciding no edit needs a clock: an expiry is "brought forward" or "put
  later" by comparing the two instants, so the order holds at whatever time
  the server applies the edits.
- What no op expresses raises `Unreachable`, listing each such change:
  resource types, constraints (other than what deleting a role does to them)
  and the tenant (unless `only` is given), a user's display name, a rule
  listed twice, a role held twice by one user, and any value an op's schema
  cannot carry (a description over 4096 characters). An attribute set to
  null is absent (`set_user_attribute` with null removes it; null means
  missing, policy-format.md § Conditions), so such a key is neither written
  nor removed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from sync.policy.edits import (
    MAX_ID,
    MAX_LIST,
    AddInheritance,
    AddRule,
    AssignRole,
    CreateRole,
    CreateUser,
    DeleteRole,
    DeleteUser,
    DescribeRole,
    Edit,
    EditRefused,
    MakeEligible,
    RemoveEligible,
    RemoveInheritance,
    RemoveRule,
    RenameRole,
    ResumeUser,
    SetUserAttribute,
    SuspendUser,
    UnassignRole,
    edit_from_document,
)
from sync.policy.instant import Instant, parse_instant
from sync.policy.model import Assignment, Constraint, Effect, Policy, Role, Rule, User, json_key
from sync.policy.wording import quoted

KINDS = ("role", "user")
"""The kinds of entity `only` may name."""


class Unreachable(Exception):
    """What no edit op can change (resource types, constraints, a user's name, ...);
    `.parts` lists each, in words."""

    def __init__(self, parts: list[str]) -> None:
        super().__init__("no edit can make these changes: " + "; ".join(parts))
        self.parts = parts


class _Phase(IntEnum):
    """The phases of a series of edits, in order (the module's rules say why)."""

    FIRST = 1
    """Suspensions of existing users; deletions of users, then of roles."""
    RENAME = 2
    CREATE = 3
    ADD_DENIES = 4
    TAKE = 5
    ATTRIBUTES = 6
    GIVE = 7
    REMOVE_DENIES = 8
    RESUME = 9


def edits_to_reach(
    current: Policy, target: Policy, *, only: Collection[tuple[str, str]] | None = None
) -> list[dict[str, Any]]:
    """Edit documents (as `Edit.to_document()` writes them, roles named by id) that,
    applied in order with `apply_edit` to `current`, give a policy equal to
    `target`: same roles (by id) with the same name, description, inherits
    and rules (grants/denies, in order, compared by rule identity), same users
    with the same attributes, own rules, assignments (role, expires), eligible
    entries (max_hours, expires) and suspension. Each document is meant to be
    read with `edit_from_document` against the policy as the edits before it
    left it. Empty when there is nothing to change.

    `only`: restrict to these entities, as (kind, id) with kind "role" or
    "user" (to cancel one edit: only what it touched is put back). Entities
    outside it are left as they are, except that a role `only` deletes goes
    from their assignments and `inherits` too.

    Raises Unreachable listing every change no op can make: resource types,
    constraints or tenant that differ (only when `only` is None; what deleting
    a role does to a constraint is reachable), a user's name, a duplicate rule
    or assignment, a value an op's schema refuses; and with `only`, a name or
    a role the entities need that belongs to an entity outside it. Raises
    ValueError for a kind in `only` other than "role" or "user".
    """
    return _Planner(current, target, only).documents()


def _ends(entry: Assignment) -> Instant | None:
    """When the entry stops counting; None: never."""
    if entry.expires is None:
        return None
    return entry.expires_at if entry.expires_at is not None else parse_instant(entry.expires)


def _not_later(first: Instant | None, second: Instant | None) -> bool:
    """`first` ends no later than `second` (None is never)."""
    return second is None or (first is not None and first <= second)


@dataclass(frozen=True, slots=True)
class _Steps:
    """How one ordered list (rules, parents) becomes another: `dropped` are removed
    for good; `steps` are (add?, key) in order: a moved key is removed, then added."""

    dropped: list[str]
    steps: list[tuple[bool, str]]


def _list_steps(
    before: list[str], after: list[str], *, remove_all: bool, drop_first: bool
) -> _Steps | None:
    """The fewest removals and appends that turn `before` into `after`, or None.

    What stays is the longest prefix of `after` that `before` holds in order
    (found greedily); everything after it in `after` is appended, a key of
    `before` being removed first.

    Removing takes the first equal key (`remove_rule`), or every one with
    `remove_all` (`remove_inheritance`); adding a key already there changes
    nothing. `drop_first`: `dropped` go before `steps` (else after). The
    plan is checked by running it, so duplicates that the ops cannot
    reproduce give None rather than a wrong list.
    """
    kept = 0
    matched: set[int] = set()
    for i, key in enumerate(before):
        if kept < len(after) and key == after[kept]:
            matched.add(i)
            kept += 1
    tail = after[kept:]
    wanted = set(tail)
    present = set(before)
    dropped = list(
        dict.fromkeys(k for i, k in enumerate(before) if i not in matched and k not in wanted)
    )
    steps: list[tuple[bool, str]] = []
    for key in tail:
        if key in present:
            steps.append((False, key))
        steps.append((True, key))
    plan = _Steps(dropped, steps)
    if _run(before, plan, remove_all=remove_all, drop_first=drop_first) == after:
        return plan
    # Duplicates in `before`: take everything away, then add `after` in order.
    removals = list(dict.fromkeys(before)) if remove_all else list(before)
    plan = _Steps([], [(False, k) for k in removals] + [(True, k) for k in after])
    if _run(before, plan, remove_all=remove_all, drop_first=drop_first) == after:
        return plan
    return None


def _run(before: list[str], plan: _Steps, *, remove_all: bool, drop_first: bool) -> list[str]:
    keys = list(before)
    drops = [(False, k) for k in plan.dropped]
    for add, key in (drops + plan.steps) if drop_first else (plan.steps + drops):
        if add:
            if key not in keys:
                keys.append(key)
        elif remove_all:
            keys = [k for k in keys if k != key]
        elif key in keys:
            keys.remove(key)
    return keys


class _Planner:
    def __init__(
        self, current: Policy, target: Policy, only: Collection[tuple[str, str]] | None
    ) -> None:
        self.current = current
        self.target = target
        self.only = only
        self.parts: list[str] = []
        self.phases: dict[_Phase, list[Edit]] = {phase: [] for phase in _Phase}
        if only is None:
            self.role_scope: set[str] = set(current.roles) | set(target.roles)
            self.user_scope: set[str] = set(current.users) | set(target.users)
        else:
            for kind, _ in only:
                if kind not in KINDS:
                    raise ValueError(f"an entity of `only` is a role or a user, not {kind!r}")
            self.role_scope = {i for kind, i in only if kind == "role"}
            self.user_scope = {i for kind, i in only if kind == "user"}
        self.deleted_roles = {
            r for r in current.roles if r in self.role_scope and r not in target.roles
        }

    def add(self, phase: _Phase, edit: Edit) -> None:
        self.phases[phase].append(edit)

    def unreachable(self, part: str) -> None:
        self.parts.append(part)

    def role_label(self, role_id: str) -> str:
        """`role 'dispatcher'`: by its name in the target, else in the current policy."""
        role = self.target.roles.get(role_id) or self.current.roles.get(role_id)
        return f"role {quoted(role.name if role is not None else role_id)}"

    def documents(self) -> list[dict[str, Any]]:
        if self.only is None:
            self.check_fixed_parts()
        for user_id, user in self.current.users.items():
            if user_id not in self.user_scope:
                continue
            wanted = self.target.users.get(user_id)
            if wanted is None:
                self.add(_Phase.FIRST, DeleteUser(user_id))
            elif wanted.suspended and not user.suspended:
                # Before anything else: the quickest way to take everything away.
                self.add(_Phase.FIRST, SuspendUser(user_id))
        for role_id in self.current.roles:
            if role_id in self.deleted_roles:
                self.add(_Phase.FIRST, DeleteRole(role_id))
        self.plan_names()
        for role_id in self.target.roles:
            if role_id in self.role_scope:
                self.plan_role(role_id)
        for user_id in self.target.users:
            if user_id in self.user_scope:
                self.plan_user(user_id)
        edits = [edit for phase in _Phase for edit in self.phases[phase]]
        documents = [edit.to_document() for edit in edits]
        for edit, document in zip(edits, documents, strict=True):
            # What the server will do with the document first: a value the op's
            # schema refuses (a description over 4096 characters) is unreachable.
            try:
                edit_from_document(document, self.current)
            except EditRefused as error:
                kind, entity = edit.names()[0]
                label = self.role_label(entity) if kind == "role" else f"user {quoted(entity)}"
                self.unreachable(f"{label}: {error.reason}")
        if self.parts:
            raise Unreachable(self.parts)
        return documents

    # --- what no op changes -------------------------------------------------------------

    def check_fixed_parts(self) -> None:
        current, target = self.current, self.target
        if current.tenant != target.tenant:
            self.unreachable(f"tenant {quoted(current.tenant)} -> {quoted(target.tenant)}")
        before = {t: set(a) for t, a in current.resource_types.items()}
        after = {t: set(a) for t, a in target.resource_types.items()}
        for name, actions in target.resource_types.items():
            if name not in before:
                self.unreachable(f"resource type {quoted(name)} added")
            elif before[name] != after[name]:
                old = ", ".join(current.resource_types[name]) or "no actions"
                new = ", ".join(actions) or "no actions"
                self.unreachable(f"resource type {quoted(name)}: actions {old} -> {new}")
        for name in current.resource_types:
            if name not in after:
                self.unreachable(f"resource type {quoted(name)} removed")
        self.check_constraints()

    def check_constraints(self) -> None:
        # What the deletions leave of each constraint (DeleteRole drops the role,
        # and a constraint left with one role), compared by meaning.
        left: list[Constraint] = []
        for c in self.current.constraints:
            kept = tuple(r for r in c.exclusive if r not in self.deleted_roles)
            if len(kept) >= 2:
                left.append(Constraint(c.name, kept))
        before = {c.name: c for c in left}
        after = {c.name: c for c in self.target.constraints}

        def names(policy: Policy, c: Constraint) -> str:
            return ", ".join(policy.role_name(r) for r in c.exclusive)

        for name, c in after.items():
            old = before.get(name)
            if old is None:
                self.unreachable(f"constraint {quoted(name)} added ({names(self.target, c)})")
            elif set(old.exclusive) != set(c.exclusive):
                change = f"{names(self.current, old)} -> {names(self.target, c)}"
                self.unreachable(f"constraint {quoted(name)}: {change}")
        for name in before:
            if name not in after:
                self.unreachable(f"constraint {quoted(name)} removed")

    # --- roles ---------------------------------------------------------------------------

    def plan_names(self) -> None:
        """Renames, in an order in which each new name is free when it is taken."""
        holder = {
            role.name: role.id
            for role in self.current.roles.values()
            if role.id not in self.deleted_roles
        }
        pending: dict[str, str] = {}  # role id -> the name it is to have
        for role in self.target.roles.values():
            if role.id not in self.role_scope:
                continue
            other = holder.get(role.name)
            if other is not None and other != role.id and other not in self.role_scope:
                self.unreachable(
                    f"{self.role_label(role.id)}: the name belongs to role id {quoted(other)},"
                    " which is not among the entities to change"
                )
                continue
            old = self.current.roles.get(role.id)
            if old is not None and old.name != role.name:
                pending[role.id] = role.name
        if self.parts:
            return
        used = set(holder) | {role.name for role in self.target.roles.values()}
        while pending:
            done = [r for r, name in pending.items() if holder.get(name, r) == r]
            for role_id in done:
                self.rename(holder, role_id, pending.pop(role_id))
            if done:
                continue
            # Every pending name is held by another pending role: a cycle of renames.
            # Follow it from any role; the first role met twice is on the cycle.
            seen: set[str] = set()
            role_id = next(iter(pending))
            while role_id not in seen:
                seen.add(role_id)
                role_id = holder[pending[role_id]]
            old_name = self.current.roles[role_id].name
            temporary = _temporary_name(old_name, used)
            used.add(temporary)
            self.rename(holder, role_id, temporary)

    def rename(self, holder: dict[str, str], role_id: str, name: str) -> None:
        for old_name, held in list(holder.items()):
            if held == role_id:
                del holder[old_name]
        holder[name] = role_id
        self.add(_Phase.RENAME, RenameRole(role_id, name))

    def plan_role(self, role_id: str) -> None:
        role = self.target.roles[role_id]
        old = self.current.roles.get(role_id)
        if old is None:
            self.add(_Phase.CREATE, CreateRole(role_id, role.name, role.description))
            old = Role(role_id, role.name, role.description)
        elif old.description != role.description:
            self.add(_Phase.RENAME, DescribeRole(role_id, role.description))
        label = self.role_label(role_id)
        for parent in role.inherits:
            self.check_role_exists(parent, f"{label} inherits")
        parents = [p for p in old.inherits if p not in self.deleted_roles]
        if parents != list(role.inherits):
            plan = _list_steps(parents, list(role.inherits), remove_all=True, drop_first=True)
            if plan is None:
                self.unreachable(f"{label}: inherits a role twice, which add_inheritance cannot")
            else:
                for parent in plan.dropped:
                    self.add(_Phase.TAKE, RemoveInheritance(role_id, parent))
                for add, parent in plan.steps:
                    step = AddInheritance if add else RemoveInheritance
                    self.add(_Phase.GIVE, step(role_id, parent))
        owner = f"role:{role_id}"
        self.plan_rules(owner, label, Effect.GRANT, old.grants, role.grants)
        self.plan_rules(owner, label, Effect.DENY, old.denies, role.denies)

    def check_role_exists(self, role_id: str, where: str) -> None:
        """A role the target's entities name must exist once the edits ran."""
        if role_id not in self.current.roles and role_id not in self.role_scope:
            self.unreachable(
                f"{where} {self.role_label(role_id)}, which does not exist and is"
                " not among the entities to change"
            )

    def plan_rules(
        self,
        owner: str,
        label: str,
        effect: Effect,
        before: tuple[Rule, ...],
        after: tuple[Rule, ...],
    ) -> None:
        if before == after:
            return
        grant = effect is Effect.GRANT
        plan = _list_steps(
            [r.identity for r in before],
            [r.identity for r in after],
            remove_all=False,
            drop_first=grant,
        )
        if plan is None:
            self.unreachable(f"{label}: lists one {effect.value} twice, which add_rule cannot")
            return
        old = {r.identity: r for r in before}
        new = {r.identity: r for r in after}  # added as the target writes it
        # Fail closed: grants go before grants come, denies come before denies go.
        drop_phase, step_phase = (
            (_Phase.TAKE, _Phase.GIVE) if grant else (_Phase.REMOVE_DENIES, _Phase.ADD_DENIES)
        )
        for key in plan.dropped:
            self.add(drop_phase, RemoveRule(owner, effect, old[key]))
        for add, key in plan.steps:
            step = AddRule(owner, effect, new[key]) if add else RemoveRule(owner, effect, old[key])
            self.add(step_phase, step)

    # --- users ---------------------------------------------------------------------------

    def plan_user(self, user_id: str) -> None:
        user = self.target.users[user_id]
        old = self.current.users.get(user_id)
        if old is user:
            return
        label = f"user {quoted(user_id)}"
        if old is None:
            attributes = list(user.attributes.items())
            first, rest = attributes[:MAX_LIST], attributes[MAX_LIST:]
            self.add(_Phase.CREATE, CreateUser(user_id, user.name, dict(first)))
            for key, value in rest:
                if value is not None:
                    self.add(_Phase.CREATE, SetUserAttribute(user_id, key, value))
            if user.suspended:
                self.add(_Phase.CREATE, SuspendUser(user_id))
            old = User(user_id, user.name, user.attributes, suspended=user.suspended)
        else:
            if old.name != user.name:
                change = f"{quoted(old.name)} -> {quoted(user.name)}"
                self.unreachable(f"{label}: name {change}, which no edit op renames")
            if old.suspended and not user.suspended:
                self.add(_Phase.RESUME, ResumeUser(user_id))
            self.plan_attributes(user_id, old.attributes, user.attributes)
        self.plan_assignments(user_id, label, old.roles, user.roles)
        owner = f"user:{user_id}"
        self.plan_rules(owner, label, Effect.GRANT, old.grants, user.grants)
        self.plan_rules(owner, label, Effect.DENY, old.denies, user.denies)

    def plan_attributes(
        self, user_id: str, before: Mapping[str, Any], after: Mapping[str, Any]
    ) -> None:
        # Null is missing (set_user_attribute with null removes the key): a key
        # whose value is null on either side counts as absent there.
        for key, value in after.items():
            old = before.get(key)
            if value is None:
                if old is not None:
                    self.add(_Phase.ATTRIBUTES, SetUserAttribute(user_id, key, None))
            elif old is None or json_key(old) != json_key(value):
                self.add(_Phase.ATTRIBUTES, SetUserAttribute(user_id, key, value))
        for key, old in before.items():
            if key not in after and old is not None:
                self.add(_Phase.ATTRIBUTES, SetUserAttribute(user_id, key, None))

    def plan_assignments(
        self,
        user_id: str,
        label: str,
        before: tuple[Assignment, ...],
        after: tuple[Assignment, ...],
    ) -> None:
        held: dict[str, list[Assignment]] = {}
        eligible: dict[str, Assignment] = {}
        for entry in before:
            if entry.role_id in self.deleted_roles:
                continue  # the deletion takes it
            if entry.eligible is None:
                held.setdefault(entry.role_id, []).append(entry)
            else:
                eligible.setdefault(entry.role_id, entry)
        wanted: dict[str, list[Assignment]] = {}
        wanted_eligible: dict[str, Assignment] = {}
        for entry in after:
            if entry.eligible is None:
                wanted.setdefault(entry.role_id, []).append(entry)
            else:
                wanted_eligible.setdefault(entry.role_id, entry)
        for role_id, entries in wanted.items():
            self.check_role_exists(role_id, f"{label} holds")
            had = held.get(role_id, [])
            if sorted(e.expires or "" for e in entries) == sorted(e.expires or "" for e in had):
                continue
            if len(entries) > 1:
                self.unreachable(
                    f"{label}: holds {self.role_label(role_id)} {len(entries)} times,"
                    " and assign_role gives one assignment of a role"
                )
                continue
            # Brought forward (or the same instant written otherwise): it takes away.
            sooner = bool(had) and _not_later(_ends(entries[0]), _latest(had))
            phase = _Phase.TAKE if sooner else _Phase.GIVE
            self.add(phase, AssignRole(user_id, role_id, entries[0].expires))
        for role_id in held:
            if role_id not in wanted:
                self.add(_Phase.TAKE, UnassignRole(user_id, role_id))
        for role_id, entry in wanted_eligible.items():
            self.check_role_exists(role_id, f"{label} is eligible for")
            assert entry.eligible is not None
            old = eligible.get(role_id)
            if old is not None and (old.eligible, old.expires) == (entry.eligible, entry.expires):
                continue
            narrower = (
                old is not None
                and old.eligible is not None
                and entry.eligible <= old.eligible
                and _not_later(_ends(entry), _ends(old))
            )
            phase = _Phase.TAKE if narrower else _Phase.GIVE
            self.add(phase, MakeEligible(user_id, role_id, entry.eligible, entry.expires))
        for role_id in eligible:
            if role_id not in wanted_eligible:
                self.add(_Phase.TAKE, RemoveEligible(user_id, role_id))


def _latest(entries: list[Assignment]) -> Instant | None:
    """When the last of `entries` stops counting; None: one never does."""
    ends = [_ends(e) for e in entries]
    if any(end is None for end in ends):
        return None
    return max(end for end in ends if end is not None)


def _temporary_name(name: str, used: set[str]) -> str:
    """A name for a role in the middle of a cycle of renames that no role has, will
    have, or was given as another temporary name."""
    base = f"{name[: MAX_ID - 24]} (renaming)"
    candidate, count = base, 1
    while candidate in used:
        count += 1
        candidate = f"{name[: MAX_ID - 24]} (renaming {count})"
    return candidate
