"""The impact of edits not yet synced (or of an import): the exact access delta.

The desktop app shows an admin, before pending edits sync, every user who
gains or loses each permission and what the edits cannot do; an import is
the same question, asked of the edits that reach the imported document
(`sync.policy.reach.edits_to_reach`), or of the two policies (`policy_delta`).
Unlike `sync.policy.whatif`, which decides a sample of requests, this
compares the effective permissions (`Engine.effective_permissions`: every
rule that applies, by what it covers) of every user the edits can affect.

Rules of this module:

- The users affected are those the edits touch themselves (`Touched.users`)
  and the holders, through inheritance, of every role whose rules or parents
  the edits change or that they delete (`holders`), after the edits and, when
  inheritance changed, before them. Nobody else's permissions can change.
- Permissions are compared by what they grant: (resource type, action,
  effect, condition text). A permission still reached by another path, or
  with another expiry, is no change. The path reported is the one
  `Engine.effective_permissions` lists first (direct rules, then the
  closure of the assignments without an end, then of those with one).
- A grant that comes is gained and one that goes is lost; a deny that comes
  is lost access (the user is now denied), and a deny that goes is gained.
- A user whose suspension changes loses (or gets back) everything: that is one
  `SuspensionChange`, with how many permissions it takes or gives, not a
  change per permission. A user suspended before and after has none either way.
- Edits apply in order, each at its own time (a pending edit at the time it
  was made, as `app/offline.view_policy` replays them); an edit that does not
  apply is reported (`Refusal`) and skipped, like the view skips it, and the
  ones after it still apply. One refused for separation of duty also reports
  every constraint and user it would break (`broken_constraints`).
- Edits are applied to a copy of the policy (`replay`; entities are frozen
  and shared, so a copy costs its dictionaries), not to a compiled engine:
  no second compile, no index to refresh (an inheritance change refreshes
  every user's closure in an Engine, a second or so on 50,000 users, twice
  with the undo), and an engine deciding meanwhile is not disturbed. What a
  role's rules cover is read once per role object, a user's closure once per
  list of assignments, so a role held by thousands costs milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sync.policy.constraints import Violation, violations
from sync.policy.edits import (
    Edit,
    EditRefused,
    RefusalCode,
    RemoveInheritance,
    Touched,
    Undo,
    apply_edit,
    edit_from_document,
)
from sync.policy.instant import Instant
from sync.policy.model import WILDCARD, Effect, Policy, Role, Rule, User

Proposal = Edit | Mapping[str, Any]
"""An edit, or an edit document (read against the policy as it is when its turn comes)."""

Grants = tuple[str, str, Effect, str | None]
"""What a permission grants (or denies): resource type, action, effect, condition text."""


@dataclass(frozen=True, slots=True)
class PermissionChange:
    """One user gaining or losing one permission (module rules)."""

    user_id: str
    resource_type: str
    action: str
    effect: Effect
    condition: str | None
    path_before: tuple[str, ...] | None = None
    """How the user held it before, for a permission that goes (else None)."""
    path_after: tuple[str, ...] | None = None
    """How the user holds it after, for a permission that comes (else None)."""

    @property
    def grants(self) -> Grants:
        return (self.resource_type, self.action, self.effect, self.condition)

    @property
    def comes(self) -> bool:
        """The rule applies after the edits (and did not before)."""
        return self.path_after is not None


@dataclass(frozen=True, slots=True)
class ChangeGroup:
    """The users who gain (or lose) one permission, for "12 users gain vehicle drive"."""

    gained: bool
    resource_type: str
    action: str
    effect: Effect
    condition: str | None
    users: tuple[str, ...]

    def what(self) -> str:
        """`gain vehicle drive (when ...)`, `are now denied vehicle refuel`, for many users."""
        return self._words(plural=True)

    def describe(self, listed: int = 3) -> str:
        """The group in a sentence: users named when at most `listed`, else counted."""
        count = len(self.users)
        who = _and(list(self.users)) if count <= listed else f"{count:,} users"
        return f"{who} {self._words(plural=count != 1)}"

    def _words(self, *, plural: bool) -> str:
        target = "any resource" if self.resource_type == WILDCARD else self.resource_type
        thing = f"{target} {self.action}"
        if self.effect is Effect.GRANT:
            verb = "gain" if self.gained else "lose"
            verb = verb if plural else verb + "s"
        elif self.gained:
            verb = "are no longer denied" if plural else "is no longer denied"
        else:
            verb = "are now denied" if plural else "is now denied"
        text = f"{verb} {thing}"
        if self.condition:
            text += f" (when {self.condition})"
        return text


@dataclass(frozen=True, slots=True)
class SuspensionChange:
    """A user suspended (losing every permission) or resumed (getting them back)."""

    user_id: str
    suspended: bool
    permissions: int
    """How many permissions (counted by what they grant) it takes away or gives back."""

    def describe(self) -> str:
        if self.suspended:
            return f"{self.user_id} is suspended: loses every permission ({self.permissions})"
        return f"{self.user_id} is resumed: gets every permission back ({self.permissions})"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Edit `index` does not apply (and is skipped): `code` and `reason` of its EditRefused."""

    index: int
    code: RefusalCode
    reason: str


@dataclass(frozen=True, slots=True)
class ConstraintBreak:
    """Edit `index` would make `user_id` hold two roles `constraint` keeps apart."""

    index: int
    constraint: str
    user_id: str
    first_role: str
    second_role: str

    def describe(self, edit: str) -> str:
        return (
            f"{edit} would break constraint {self.constraint}: {self.user_id} would hold "
            f"both {self.first_role} and {self.second_role}"
        )


def _edit_label(index: int) -> str:
    return f"Edit [{index}]"


@dataclass(frozen=True, slots=True)
class Impact:
    """What edits change in who may do what (module rules)."""

    gained: tuple[PermissionChange, ...] = ()
    lost: tuple[PermissionChange, ...] = ()
    suspended: tuple[SuspensionChange, ...] = ()
    resumed: tuple[SuspensionChange, ...] = ()
    refused: tuple[Refusal, ...] = ()
    constraints: tuple[ConstraintBreak, ...] = ()
    """Separation-of-duty breaks of the refused edits (every user and constraint)."""
    users_affected: int = 0
    """Users whose access changes (they gain, lose, are suspended or resumed)."""
    users_examined: int = 0
    """Users whose effective permissions were compared (module rules: touched and holders)."""

    @property
    def changes_access(self) -> bool:
        return bool(self.gained or self.lost or self.suspended or self.resumed)

    def groups(self) -> list[ChangeGroup]:
        """Gains then losses, one group per permission, users in the order found."""
        return _group(self.gained, gained=True) + _group(self.lost, gained=False)

    def summary_lines(self, edit_label: Callable[[int], str] = _edit_label) -> list[str]:
        """The impact in plain words, one line per group, suspension, refusal and break.

        `edit_label` names edit `index` at the start of a sentence (the app says
        "Edit 12", by its seq). User ids are written as they are, never capitalised.
        """
        lines: list[str] = []
        if not self.changes_access:
            lines.append("No one's access changes.")
        else:
            noun = "user" if self.users_affected == 1 else "users"
            lines.append(f"Access changes for {self.users_affected:,} {noun}.")
        lines.extend(group.describe() + "." for group in self.groups())
        lines.extend(change.describe() + "." for change in (*self.suspended, *self.resumed))
        for refusal in self.refused:
            lines.append(f"{edit_label(refusal.index)} does not apply: {refusal.reason}.")
        lines.extend(b.describe(edit_label(b.index)) + "." for b in self.constraints)
        return lines


def _and(names: list[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} and {names[-1]}"


def _group(changes: Sequence[PermissionChange], *, gained: bool) -> list[ChangeGroup]:
    users: dict[Grants, list[str]] = {}
    for change in changes:
        users.setdefault(change.grants, []).append(change.user_id)
    return [
        ChangeGroup(gained, type_name, action, effect, condition, tuple(ids))
        for (type_name, action, effect, condition), ids in users.items()
    ]


# --- replaying edits ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Applied:
    """What `replay` made: a copy of the policy with the edits that apply, the union of
    what they touched, the edits as read (None where refused), and the refusals."""

    policy: Policy
    touched: Touched
    edits: tuple[Edit | None, ...]
    refused: tuple[Refusal, ...]
    constraints: tuple[ConstraintBreak, ...]


def replay(
    policy: Policy,
    edits: Sequence[Proposal],
    now: Instant,
    *,
    times: Sequence[Instant] | None = None,
) -> Applied:
    """A copy of `policy` with `edits` applied in order, skipping those that do not
    apply (as `app/offline.view_policy` replays pending edits); `policy` is not changed.

    Edit `i` is made at `times[i]` (default `now`); a document is read against
    the policy as the edits before it left it. Raises ValueError when `times`
    does not give one time per edit; a refused edit is in `Applied.refused`.
    """
    if times is not None and len(times) != len(edits):
        raise ValueError(f"{len(edits)} edits but {len(times)} times")
    proposed = policy.copy()  # the entities are shared: a copy costs the dictionaries
    touched = Touched()
    read: list[Edit | None] = []
    refused: list[Refusal] = []
    breaks: list[ConstraintBreak] = []
    for index, proposal in enumerate(edits):
        at = now if times is None else times[index]
        edit: Edit | None = None
        try:
            edit = (
                proposal
                if isinstance(proposal, Edit)
                else edit_from_document(dict(proposal), proposed)
            )
            touched = touched | apply_edit(proposed, edit, at)
        except EditRefused as error:
            refused.append(Refusal(index, error.code, error.reason))
            if edit is not None and error.code is RefusalCode.CONSTRAINT:
                breaks.extend(
                    ConstraintBreak(index, v.constraint, v.user, v.first_role, v.second_role)
                    for v in broken_constraints(proposed, edit, at)
                )
            read.append(None)
            continue
        read.append(edit)
    return Applied(proposed, touched, tuple(read), tuple(refused), tuple(breaks))


def holders(policy: Policy, role_ids: Iterable[str]) -> list[str]:
    """Ids of the users with an assignment (not an eligibility) of one of `role_ids`
    or of a role inheriting one, in policy order; expired assignments count (the
    caller compares at its own time)."""
    below: set[str] = set()
    for role_id in role_ids:
        if role_id not in below:
            below |= policy.descendants(role_id)
    if not below:
        return []
    return [
        user.id
        for user in policy.users.values()
        if any(a.role_id in below and a.eligible is None for a in user.roles)
    ]


def broken_constraints(policy: Policy, edit: Edit, now: Instant) -> list[Violation]:
    """The separation-of-duty breaks `edit` would bring at `now`: every user and
    constraint (`apply_edit` refuses the edit naming the first only).

    The edit is applied to `policy` without the check and taken back before
    this returns; an engine compiled over `policy` must not decide meanwhile.
    Empty when the edit breaks none, or does not apply for another reason.
    """
    undo = Undo(policy)
    try:
        touched = edit.apply(policy, undo, now)
    except EditRefused:
        undo.revert()
        return []
    try:
        # The users apply_edit checks: those touched, and the holders of every
        # role below one whose inheritance the edit changed.
        affected = set(touched.users)
        below: set[str] = set()
        for role_id in touched.sod_roles:
            below |= policy.descendants(role_id)
        affected |= {
            u.id for u in policy.users.values() if any(a.role_id in below for a in u.roles)
        }
        users = sorted(affected)
        after = violations(policy, now, users)
    finally:
        undo.revert()
    before = set(violations(policy, now, users))
    return [v for v in after if v not in before]


# --- the delta ----------------------------------------------------------------------------


Closure = dict[str, tuple[str, ...]]
"""The roles a user holds: role id -> path of role ids from the assignment to it."""
_NONE: frozenset[Grants] = frozenset()


class _Rules:
    """What each role's or user's own rules grant, read once per entity object (edits
    replace the entities they change, so an entity shared by both states is unchanged)."""

    def __init__(self, resource_types: Mapping[str, Sequence[str]]) -> None:
        self.types = resource_types
        self._read: dict[int, tuple[Role | User, frozenset[Grants]]] = {}

    def of(self, holder: Role | User) -> frozenset[Grants]:
        if not holder.grants and not holder.denies:
            return _NONE
        found = self._read.get(id(holder))
        if found is not None and found[0] is holder:
            return found[1]
        grants: set[Grants] = set()
        for effect in (Effect.DENY, Effect.GRANT):
            for rule in holder.rules(effect):
                condition = rule.condition_text
                grants.update((t, a, effect, condition) for t, a in self._covered(rule))
        read = frozenset(grants)
        self._read[id(holder)] = (holder, read)
        return read

    def _covered(self, rule: Rule) -> Iterator[tuple[str, str]]:
        # policy-format.md: `*` as the resource covers every type, and in
        # `actions` exactly the listed actions of each type covered.
        names = self.types if rule.resource == WILDCARD else (rule.resource,)
        for type_name in names:
            listed = self.types.get(type_name, ())
            for action in listed if WILDCARD in rule.actions else rule.actions:
                if action in listed:
                    yield type_name, action


class _Holdings:
    """Users' roles in one state of the policy, in the order the engine reaches them:
    direct rules, then the closure of the assignments without an end, then of those
    with one (so the path reported is the one `Engine.effective_permissions` lists first)."""

    def __init__(self, policy: Policy, now: Instant, rules: _Rules) -> None:
        self.policy = policy
        self.now = now
        self.rules = rules
        self._ancestry: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {}
        self._closures: dict[tuple[tuple[str, ...], tuple[str, ...]], Closure] = {}
        self._role_rules: dict[str, frozenset[Grants]] = {}
        self._unions: dict[int, tuple[Closure, frozenset[Grants]]] = {}

    def closure(self, user: User) -> Closure:
        """Role id -> path of role ids from the assignment, for the roles `user` holds."""
        now = self.now
        static = tuple(
            dict.fromkeys(a.role_id for a in user.roles if a.eligible is None and a.expires is None)
        )
        timed = tuple(
            a.role_id
            for a in user.roles
            if a.eligible is None and a.expires is not None and a.active_at(now)
        )
        found = self._closures.get((static, timed))
        if found is None:
            found = {}
            for held in (*static, *timed):
                ancestry = self._ancestry.get(held)
                if ancestry is None:
                    ancestry = self._ancestry[held] = tuple(self.policy.ancestors(held))
                for role_id, path in ancestry:
                    found.setdefault(role_id, path)
            self._closures[static, timed] = found
        return found

    def role_rules(self, role_id: str) -> frozenset[Grants]:
        found = self._role_rules.get(role_id)
        if found is None:
            found = self._role_rules[role_id] = self.rules.of(self.policy.roles[role_id])
        return found

    def path(self, user: User, closure: Closure, key: Grants) -> tuple[str, ...]:
        """The first path by which `user` holds `key` (which it holds)."""
        if key in self.rules.of(user):
            return (user.id,)
        for role_id, via in closure.items():
            if key in self.role_rules(role_id):
                return (user.id, *(self.policy.role_name(r) for r in via))
        raise AssertionError(f"{user.id} does not hold {key}")

    def holds(self, user: User, closure: Closure, key: Grants) -> bool:
        return key in self.rules.of(user) or key in self.union(closure)

    def union(self, closure: Closure) -> frozenset[Grants]:
        """Everything the roles of `closure` grant (a closure lives as long as this)."""
        found = self._unions.get(id(closure))
        if found is None or found[0] is not closure:
            held: set[Grants] = set()
            for role_id in closure:
                held |= self.role_rules(role_id)
            found = self._unions[id(closure)] = (closure, frozenset(held))
        return found[1]

    def everything(self, user: User) -> frozenset[Grants]:
        return self.rules.of(user) | self.union(self.closure(user))


def access_delta(
    policy: Policy,
    edits: Sequence[Proposal],
    now: Instant,
    *,
    times: Sequence[Instant] | None = None,
) -> Impact:
    """Who gains and loses which permission when `edits` apply to `policy`.

    `now`: when permissions are compared (assignments expire) and, unless
    `times` gives each edit its own, when the edits are made. `policy` is not
    changed (`replay`). An edit that does not apply is in `Impact.refused`,
    not raised.
    """
    applied = replay(policy, edits, now, times=times)
    touched = applied.touched
    roles = set(touched.roles | touched.sod_roles)
    # Removing a parent touches no role's rules and checks no constraint,
    # but every holder of the role loses what the parent gave.
    roles |= {e.role_id for e in applied.edits if isinstance(e, RemoveInheritance)}
    found = holders(applied.policy, roles)
    if touched.inheritance:
        # A role deleted, or a parent taken away: some held it before only.
        found += holders(policy, roles)
    order = list(dict.fromkeys([*found, *sorted(touched.users)]))
    impact = policy_delta(policy, applied.policy, now, order)
    return replace(impact, refused=applied.refused, constraints=applied.constraints)


def policy_delta(
    before: Policy, after: Policy, now: Instant, user_ids: Sequence[str] | None = None
) -> Impact:
    """The access delta from `before` to `after` at `now` for `user_ids` (default:
    every user of either), as `access_delta` reports it; for comparing two policies
    directly, e.g. before an import. Entities the two share are read once."""
    if user_ids is None:
        user_ids = list(dict.fromkeys([*before.users, *after.users]))
    shared = _Rules(before.resource_types)
    then = _Holdings(before, now, shared)
    later = _Holdings(
        after,
        now,
        shared if after.resource_types == before.resource_types else _Rules(after.resource_types),
    )
    # Roles whose rules or parents differ; when no parents differ and no role
    # went, an unchanged user holds the same roles in both (one closure).
    changed = {r for r, role in after.roles.items() if before.roles.get(r) is not role}
    changed |= {r for r in before.roles if r not in after.roles}
    same_shape = all(
        r in after.roles
        and (r not in before.roles or before.roles[r].inherits == after.roles[r].inherits)
        for r in changed
    )
    nobody = User("")
    gained: list[PermissionChange] = []
    lost: list[PermissionChange] = []
    suspended: list[SuspensionChange] = []
    resumed: list[SuspensionChange] = []
    affected = 0
    for user_id in user_ids:
        old = before.users.get(user_id) or replace(nobody, id=user_id)
        new = after.users.get(user_id) or replace(nobody, id=user_id)
        if old.suspended and new.suspended:
            continue  # denied everything before and after
        if old.suspended != new.suspended:
            affected += 1
            if new.suspended:
                suspended.append(SuspensionChange(user_id, True, len(then.everything(old))))
            else:
                resumed.append(SuspensionChange(user_id, False, len(later.everything(new))))
            continue
        comes: set[Grants] = set()
        goes: set[Grants] = set()
        was = then.closure(old)
        if old is new and same_shape:
            holds = was
            for role_id in was:
                if role_id in changed:
                    comes |= later.role_rules(role_id) - then.role_rules(role_id)
                    goes |= then.role_rules(role_id) - later.role_rules(role_id)
            if not comes and not goes:
                continue
        else:
            holds = later.closure(new)
            comes |= later.rules.of(new) - then.rules.of(old)
            goes |= then.rules.of(old) - later.rules.of(new)
            for role_id in holds:
                if role_id not in was:
                    comes |= later.role_rules(role_id)
                elif role_id in changed:
                    comes |= later.role_rules(role_id) - then.role_rules(role_id)
            for role_id in was:
                if role_id not in holds:
                    goes |= then.role_rules(role_id)
                elif role_id in changed:
                    goes |= then.role_rules(role_id) - later.role_rules(role_id)
        changes = False
        for key in comes:
            if not then.holds(old, was, key):
                changes = True
                type_name, action, effect, condition = key
                change = PermissionChange(
                    user_id, type_name, action, effect, condition,
                    path_after=later.path(new, holds, key),
                )  # fmt: skip
                (gained if effect is Effect.GRANT else lost).append(change)
        for key in goes:
            if not later.holds(new, holds, key):
                changes = True
                type_name, action, effect, condition = key
                change = PermissionChange(
                    user_id, type_name, action, effect, condition,
                    path_before=then.path(old, was, key),
                )  # fmt: skip
                (lost if effect is Effect.GRANT else gained).append(change)
        affected += changes
    return Impact(
        gained=_ordered(gained),
        lost=_ordered(lost),
        suspended=tuple(suspended),
        resumed=tuple(resumed),
        users_affected=affected,
        users_examined=len(user_ids),
    )


def _ordered(changes: list[PermissionChange]) -> tuple[PermissionChange, ...]:
    # Stable: within one permission, users stay in the order they were examined.
    return tuple(sorted(changes, key=_permission_order))


def _permission_order(change: PermissionChange) -> tuple[str, str, bool, str]:
    return (
        change.resource_type,
        change.action,
        change.effect is not Effect.DENY,
        change.condition or "",
    )
