"""Who may make an edit: the tenant's own policy, applied to its administration.

PRODUCT.md § The policy: editing a role needs `role:update` on that tenant,
assigning needs `role:assign`, and so on; the server checks this for every
pushed mutation against its current policy, and a client can check the same
offline before it queues an edit.

Rules of this module:

- The author must be a user of the tenant and not suspended.
- An edit is allowed when every request `permission_requests` builds for it
  is allowed for its author (deny overrides, fail closed, as for any decision).
- The request's resource is what the edit changes: for a role, `resource.id`
  is the role's stable **id** (so a rule written about a role keeps
  protecting it after a rename) and its attributes are `role_id` and `name`
  (its current name); for a user, `resource.id` is the user id and its
  attributes are the user's, so "supervisors manage the users of their own
  depot" can be written as a condition.
- Making a role inherit another (also at creation) needs `role:assign` on
  that parent, since every holder of the child gets it.
- A user may activate and deactivate their own eligible roles without any
  permission: the eligibility, given by someone allowed to, is the permission.
- **Escalation** (as Kubernetes RBAC prevents it): an edit that widens
  someone's access confers permissions (`conferred`), and its author must
  already hold each of them, unless the author is allowed `escalate` on
  resource type `role` (the resource being the role concerned, if any). What
  an edit confers, decided conservatively:
  - a grant added (to a role or a user): its (type, action) pairs under its
    condition;
  - a deny lifted — removed from a role or user, or no longer reaching
    someone because a role is unassigned, deactivated or deleted or an
    inheritance is removed: the deny's pairs under its condition;
  - a role assigned (or its expiry moved later), made eligible (or its
    eligibility widened), activated by someone else, or inherited: every
    grant of the role and of the roles it inherits;
  - a user resumed: every grant the user holds.
  The author holds a conferred pair when one of their grants in force covers
  that type and action with no condition or exactly the same condition
  (compared type-strictly), and none of their denies covers that type and
  action at all, whatever its condition. User attributes are not counted as
  access here (setting an attribute a condition reads is not checked for
  escalation); nor are edits that only narrow access.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sync.policy.edits import (
    ActivateRole,
    AddInheritance,
    AddRule,
    AssignRole,
    CreateRole,
    CreateUser,
    DeactivateRole,
    DeleteRole,
    Edit,
    MakeEligible,
    RemoveEligible,
    RemoveInheritance,
    RemoveRule,
    ResumeUser,
    UnassignRole,
)
from sync.policy.engine import Engine
from sync.policy.instant import Instant
from sync.policy.model import WILDCARD, Assignment, Effect, Policy, Rule, User, condition_key
from sync.policy.request import Request
from sync.policy.wording import quoted

ESCALATE = "escalate"
"""The action on resource type `role` that lets its holder confer what they do not hold."""


def _role_request(
    policy: Policy, author: str, action: str, role_id: str, name: str | None
) -> Request:
    role = policy.roles.get(role_id)
    label = name if name is not None else (role.name if role is not None else role_id)
    return Request(author, action, "role", role_id, {"role_id": role_id, "name": label})


def _user_request(policy: Policy, author: str, action: str, user_id: str) -> Request:
    user = policy.users.get(user_id)
    attributes = dict(user.attributes) if user is not None else {}
    return Request(author, action, "user", user_id, attributes)


def _self_service(edit: Edit, author: str) -> bool:
    return isinstance(edit, ActivateRole | DeactivateRole) and edit.user_id == author


def permission_requests(policy: Policy, edit: Edit, author: str) -> list[Request]:
    """The requests `author` must be allowed for `edit` to be made, against `policy`."""
    resource_type, action = edit.permission_needed()
    if _self_service(edit, author):
        return []
    if isinstance(edit, CreateUser):
        return [Request(author, action, "user", edit.user_id, dict(edit.attributes))]
    if isinstance(edit, CreateRole):
        requests = [_role_request(policy, author, action, edit.role_id, edit.name)]
        requests += [_role_request(policy, author, "assign", p, None) for p in edit.inherits]
        return requests
    if isinstance(edit, AddInheritance):
        return [
            _role_request(policy, author, action, edit.role_id, None),
            _role_request(policy, author, "assign", edit.parent_id, None),
        ]
    target: str | None = getattr(edit, "owner", None)
    if target is not None:  # a rule edit: "role:<id>" or "user:<id>"
        kind, _, target_id = target.partition(":")
        if kind == "user":
            return [_user_request(policy, author, action, target_id)]
        return [_role_request(policy, author, action, target_id, None)]
    if resource_type == "user":
        return [_user_request(policy, author, action, getattr(edit, "user_id", ""))]
    return [_role_request(policy, author, action, getattr(edit, "role_id", ""), None)]


# --- what an edit confers ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Conferral:
    """A rule whose access an edit hands to someone: `rule` itself for a grant,
    the deny being lifted for a deny; `source` says where it comes from."""

    rule: Rule
    source: str


def _grants_of_role(policy: Policy, role_id: str) -> list[Conferral]:
    return [
        Conferral(rule, f"role {policy.role_name(held)}")
        for held, _path in policy.ancestors(role_id)
        for rule in policy.roles[held].grants
    ]


def _denies_of_role(policy: Policy, role_id: str) -> list[Conferral]:
    return [
        Conferral(rule, f"the lifted deny of role {policy.role_name(held)}")
        for held, _path in policy.ancestors(role_id)
        for rule in policy.roles[held].denies
    ]


def _ordinary(user: User, role_id: str) -> Assignment | None:
    return next((a for a in user.roles if a.role_id == role_id and a.eligible is None), None)


def _eligibility(user: User, role_id: str) -> Assignment | None:
    return next((a for a in user.roles if a.role_id == role_id and a.eligible is not None), None)


def _later(new: Instant | None, old: Instant | None) -> bool:
    """Whether an end at `new` (None: never) is later than one at `old`."""
    if old is None:
        return False
    return new is None or new > old


def _assignment_widens(user: User, role_id: str, expires: str | None) -> bool:
    current = _ordinary(user, role_id)
    if current is None:
        return True
    return _later(Assignment.build(role_id, expires).expires_at, current.expires_at)


def _eligibility_widens(user: User, edit: MakeEligible) -> bool:
    current = _eligibility(user, edit.role_id)
    if current is None:
        return True
    new = Assignment.build(edit.role_id, edit.expires, edit.max_hours)
    return edit.max_hours > (current.eligible or 0) or _later(new.expires_at, current.expires_at)


def user_grants(policy: Policy, user: User, now: Instant) -> list[Conferral]:
    """Every grant `user` holds at `now`: their own and their roles' (what resuming
    them, or taking over their account, would hand to someone)."""
    held = [Conferral(rule, f"a direct grant of user {user.id}") for rule in user.grants]
    for role_id in policy.held_roles(user, now):
        source = f"role {policy.role_name(role_id)}"
        held += [Conferral(rule, source) for rule in policy.roles[role_id].grants]
    return held


def conferred(policy: Policy, edit: Edit, author: str, now: Instant) -> list[Conferral]:
    """What `edit` would hand to someone that they may not have had (module rules),
    against `policy` before the edit is applied; empty for an edit that only narrows."""
    if isinstance(edit, AddRule | RemoveRule):
        kind, _, owner_id = edit.owner.partition(":")
        holder = (policy.roles if kind == "role" else policy.users).get(owner_id)
        if holder is None:
            return []
        present = edit.rule in holder.rules(edit.effect)
        if isinstance(edit, AddRule) and edit.effect is Effect.GRANT and not present:
            return [Conferral(edit.rule, "the grant being added")]
        if isinstance(edit, RemoveRule) and edit.effect is Effect.DENY and present:
            return [Conferral(edit.rule, "the deny being removed")]
        return []
    if isinstance(edit, CreateRole):
        return [c for p in edit.inherits if p in policy.roles for c in _grants_of_role(policy, p)]
    if isinstance(edit, DeleteRole):
        return _denies_of_role(policy, edit.role_id) if edit.role_id in policy.roles else []
    role_id: str | None = getattr(edit, "role_id", None)
    if isinstance(edit, AddInheritance | RemoveInheritance):
        role, parent = policy.roles.get(edit.role_id), edit.parent_id
        if role is None or parent not in policy.roles:
            return []
        if isinstance(edit, AddInheritance) and parent not in role.inherits:
            return _grants_of_role(policy, parent)
        if isinstance(edit, RemoveInheritance) and parent in role.inherits:
            return _denies_of_role(policy, parent)
        return []
    user_id: str | None = getattr(edit, "user_id", None)
    user = policy.users.get(user_id) if user_id is not None else None
    if user is None:
        return []
    if isinstance(edit, ResumeUser):
        return user_grants(policy, user, now) if user.suspended else []
    if role_id is None or role_id not in policy.roles:
        return []
    if isinstance(edit, AssignRole):
        widens = _assignment_widens(user, role_id, edit.expires)
        return _grants_of_role(policy, role_id) if widens else []
    if isinstance(edit, MakeEligible):
        return _grants_of_role(policy, role_id) if _eligibility_widens(user, edit) else []
    if isinstance(edit, ActivateRole):
        return [] if _self_service(edit, author) else _grants_of_role(policy, role_id)
    if isinstance(edit, UnassignRole | DeactivateRole):
        return _denies_of_role(policy, role_id) if _ordinary(user, role_id) else []
    if isinstance(edit, RemoveEligible):
        return []  # an eligibility by itself gives nothing
    return []


# --- whether the author holds it --------------------------------------------------------


def _pairs(policy: Policy, rule: Rule) -> Iterator[tuple[str, str]]:
    """The listed (type, action) pairs a rule covers."""
    types = policy.resource_types
    for type_name in types if rule.resource == WILDCARD else (rule.resource,):
        listed = types.get(type_name, ())
        actions: Iterable[str] = listed if WILDCARD in rule.actions else rule.actions
        yield from ((type_name, a) for a in actions if a in listed)


@dataclass(slots=True)
class _Holdings:
    """What an author holds: per pair, the condition keys of their grants (None for
    a grant without condition), and the pairs any of their denies covers."""

    grants: dict[tuple[str, str], set[str | None]]
    denied: set[tuple[str, str]]

    @classmethod
    def of(cls, policy: Policy, user: User, now: Instant) -> _Holdings:
        grants: dict[tuple[str, str], set[str | None]] = {}
        denied: set[tuple[str, str]] = set()
        owners = [(user.grants, user.denies)]
        owners += [
            (policy.roles[r].grants, policy.roles[r].denies) for r in policy.held_roles(user, now)
        ]
        for owner_grants, owner_denies in owners:
            for rule in owner_grants:
                key = condition_key(rule.when)
                for pair in _pairs(policy, rule):
                    grants.setdefault(pair, set()).add(key)
            for rule in owner_denies:
                denied.update(_pairs(policy, rule))
        return cls(grants, denied)

    def lacks(self, policy: Policy, rule: Rule) -> tuple[str, str] | None:
        key = condition_key(rule.when)
        for pair in _pairs(policy, rule):
            keys = self.grants.get(pair)
            if pair in self.denied or keys is None or (None not in keys and key not in keys):
                return pair
        return None


@dataclass(frozen=True, slots=True)
class Denied:
    """Why an author may not make an edit: the permission they lack (`role:assign
    on 'r-admin'`, `vehicle:dispatch`) and a reason a person can read."""

    permission: str
    reason: str
    request: Request | None = None
    """The request that was denied, when a plain permission was missing."""


def _author(policy: Policy, author: str) -> User | Denied:
    user = policy.users.get(author)
    if user is None:
        return Denied("membership", f"{quoted(author)} is not a user of this tenant")
    if user.suspended:
        return Denied("membership", f"user {quoted(author)} is suspended")
    return user


def _covers(
    engine: Engine, user: User, conferrals: list[Conferral], role_id: str | None, now: Instant
) -> Denied | None:
    """None when `user` holds everything in `conferrals` or may escalate (module rules)."""
    if not conferrals:
        return None
    policy = engine.policy
    attributes = {"role_id": role_id, "name": policy.role_name(role_id)} if role_id else {}
    escalate = Request(user.id, ESCALATE, "role", role_id, attributes)
    if engine.decide(escalate, now).allowed:
        return None
    holdings = _Holdings.of(policy, user, now)
    for conferral in conferrals:
        pair = holdings.lacks(policy, conferral.rule)
        if pair is not None:
            permission = f"{pair[0]}:{pair[1]}"
            condition = conferral.rule.condition
            when = f" when {condition}" if condition is not None else ""
            reason = (
                f"it would confer {permission}{when} ({conferral.source}), which "
                f"{user.id} does not hold without a condition or with the same one, or holds "
                f"with a deny on it; only a holder of role:{ESCALATE} may confer more than "
                "they hold"
            )
            return Denied(permission, reason)
    return None


def authorize_account(engine: Engine, author: str, target: str, now: Instant) -> Denied | None:
    """None when `author` may invite `target` or reset their password.

    It takes `user:update` on the target, and since whoever holds an account's
    password holds everything the account holds, the author must also hold
    every grant of the target's (or `role:escalate`), as for an edit.
    """
    policy = engine.policy
    user = _author(policy, author)
    if isinstance(user, Denied):
        return user
    request = _user_request(policy, author, "update", target)
    decision = engine.decide(request, now)
    if not decision.allowed:
        return Denied(f"user:update on {quoted(target)}", decision.reason, request)
    holder = policy.users.get(target)
    if holder is None:
        return Denied("a user", f"there is no user {quoted(target)} in the tenant's policy")
    return _covers(engine, user, user_grants(policy, holder, now), None, now)


def authorize(engine: Engine, edit: Edit, author: str, now: Instant) -> Denied | None:
    """None when `author` may make `edit`; otherwise why not (module rules).

    `now` is the time the permission is decided at (expiring assignments).
    """
    policy = engine.policy
    user = _author(policy, author)
    if isinstance(user, Denied):
        return user
    for request in permission_requests(policy, edit, author):
        decision = engine.decide(request, now)
        if not decision.allowed:
            permission = f"{request.resource_type}:{request.action}"
            permission += f" on {quoted(request.resource_id)}"
            return Denied(permission, decision.reason, request)
    conferrals = conferred(policy, edit, author, now)
    if not conferrals:
        return None
    role_id = next((i for kind, i in edit.names() if kind == "role"), None)
    return _covers(engine, user, conferrals, role_id, now)
