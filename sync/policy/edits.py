"""Edits: intent-level changes to a policy ("assign role R to user U").

Edits are what an admin does and what sync queues, pushes and re-executes on
the server, so each is a small frozen value that can be read from a document
(`edit_from_document`, which checks it against the op's schema), checked
against the current policy (`EditRefused` with a code and a reason a person
can read), applied, and turned into a document again.

Rules of this module:

- Every op has a schema (`_SCHEMAS`): each field's type, length and whether
  it may be absent. A document that breaks it is refused `invalid` naming the
  field (`create_role.name: must be a string of 1 to 256 characters, not a
  number`), before anything looks at the policy; no malformed value ever
  reaches a policy, a store or an exception message.
- A reason quotes at most 64 characters of anything the document carried
  (`sync.policy.wording.quoted`).
- `apply_edit` is the one way to change a `Policy`: it applies the edit,
  checks separation-of-duty constraints for every user the edit can affect at
  the time of the edit, and undoes the change if one would break. It returns
  what was touched so that an `Engine` can update only that.
- Eligible assignments (policy-format.md § Additions) are entries of their
  own: assigning or unassigning a role leaves the role's eligible entry as it
  is, and `activate_role` adds an ordinary entry beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any, ClassVar

from sync.policy.conditions import ConditionError, is_json_value, json_kind
from sync.policy.constraints import violations
from sync.policy.document import UNSTORABLE_TEXT, holds_unstorable
from sync.policy.instant import Instant, format_instant, parse_instant
from sync.policy.model import WILDCARD, Assignment, Effect, Policy, Role, Rule, User, json_key
from sync.policy.wording import quoted

MAX_ID = 256
"""Characters of an id or a name: the protocol's limit for ids (PROTOCOL.md § Limits)."""
MAX_TEXT = 4096
"""Characters of a description or a justification."""
MAX_LIST = 256
"""Entries of a list in an edit (`inherits`, a rule's `actions`) and keys of `attributes`."""
MAX_HOURS = 720
"""Longest eligibility, and longest activation, in hours (policy-format.md § Additions)."""


class RefusalCode(StrEnum):
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    INVALID = "invalid"
    CYCLE = "cycle"
    CONSTRAINT = "constraint"
    NOT_ELIGIBLE = "not_eligible"


class EditRefused(Exception):
    """The edit cannot apply to this policy; nothing was changed."""

    def __init__(self, code: RefusalCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _invalid(reason: str) -> EditRefused:
    return EditRefused(RefusalCode.INVALID, reason)


@dataclass(frozen=True, slots=True)
class Touched:
    """What an applied edit changed, for `Engine.refresh`."""

    roles: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    inheritance: bool = False
    """Inheritance changed or roles appeared/disappeared: closures must be recomputed."""
    sod_roles: frozenset[str] = frozenset()
    """Roles whose holders must be checked against constraints."""

    def __or__(self, other: Touched) -> Touched:
        return Touched(
            self.roles | other.roles,
            self.users | other.users,
            self.inheritance or other.inheritance,
            self.sod_roles | other.sod_roles,
        )


_MISSING = object()


class Undo:
    """The old values of what edits replaced in a policy, to put them back."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.saved: list[tuple[dict[str, Any], str, Any]] = []
        self.constraints = policy.constraints
        self.orders: dict[int, list[str]] = {}
        """Key order of each table before its first deletion: a key put back
        after a deletion would otherwise move to the end."""

    def put(self, table: dict[str, Any], key: str, value: Any) -> None:
        self.saved.append((table, key, table.get(key, _MISSING)))
        if value is _MISSING:
            self.orders.setdefault(id(table), list(table))
            del table[key]
        else:
            table[key] = value

    def revert(self) -> None:
        """Put the policy back as it was when this Undo was made, in the same order."""
        tables: dict[int, dict[str, Any]] = {}
        for table, key, old in reversed(self.saved):
            tables[id(table)] = table
            if old is _MISSING:
                table.pop(key, None)
            else:
                table[key] = old
        for table_id, order in self.orders.items():
            table = tables.get(table_id)
            if table is not None:
                values = dict(table)
                table.clear()
                table.update((key, values.pop(key)) for key in order if key in values)
                table.update(values)
        self.saved.clear()
        self.orders.clear()
        self.policy.constraints = self.constraints

    def touched(self) -> Touched:
        """Everything the recorded edits could have touched, read from what they
        replaced: for rebuilding an engine's indexes when an edit failed half-way."""
        policy = self.policy
        roles = frozenset(key for table, key, _ in self.saved if table is policy.roles)
        users = frozenset(key for table, key, _ in self.saved if table is policy.users)
        return Touched(roles, users, inheritance=True)

    def absorb(self, later: Undo) -> None:
        """Take over what a later Undo of the same policy would put back."""
        self.saved.extend(later.saved)
        for table_id, order in later.orders.items():
            self.orders.setdefault(table_id, order)  # the earlier order is the one to restore
        later.saved = []
        later.orders = {}


# --- the policy's entities, looked up for an edit --------------------------------------


def _role(policy: Policy, role_id: str) -> Role:
    role = policy.roles.get(role_id)
    if role is None:
        raise EditRefused(RefusalCode.NOT_FOUND, f"no role with id {quoted(role_id)}")
    return role


def _user(policy: Policy, user_id: str) -> User:
    user = policy.users.get(user_id)
    if user is None:
        raise EditRefused(RefusalCode.NOT_FOUND, f"no user {quoted(user_id)}")
    return user


def _put_user(policy: Policy, undo: Undo, user: User, new: User) -> Touched:
    """Replace `user` by `new`. Each edit finds out itself whether it changes
    anything (an edit that changes nothing records and commits nothing): `==`
    on a user would call `True` and `1` the same attribute value."""
    undo.put(policy.users, user.id, new)
    return Touched(users=frozenset({user.id}))


def _drop_entries(
    policy: Policy, undo: Undo, user_id: str, drop: Callable[[Assignment], bool]
) -> Touched:
    """Take away the user's assignments that `drop` picks (none picked: no change)."""
    user = _user(policy, user_id)
    kept = tuple(a for a in user.roles if not drop(a))
    if len(kept) == len(user.roles):
        return Touched()
    return _put_user(policy, undo, user, replace(user, roles=kept))


def check_rule(policy: Policy, rule: Rule) -> None:
    """Raise EditRefused unless `rule` names listed types and actions (policy-format.md)."""
    types = policy.resource_types
    if rule.resource != WILDCARD and rule.resource not in types:
        raise _invalid(f"unknown resource type {quoted(rule.resource)}")
    if not rule.actions:
        raise _invalid("a rule needs at least one action")
    listed = (
        {a for actions in types.values() for a in actions}
        if rule.resource == WILDCARD
        else set(types[rule.resource])
    )
    for action in rule.actions:
        if action != WILDCARD and action not in listed:
            raise _invalid(f"action {quoted(action)} is not listed for {quoted(rule.resource)}")


# --- reading an edit document: one schema per op ----------------------------------------

Check = Callable[[Any, str, Policy], Any]
"""Checks one field's value (`where` names it, e.g. `create_role.name`) and
returns it as the edit holds it; raises EditRefused(INVALID) naming the field."""

_ARTICLES = {"array": "a list", "object": "an object", "null": "null", "other": "no JSON value"}


def _a(value: object) -> str:
    kind = json_kind(value)
    return _ARTICLES.get(kind, f"a {kind}")


def _text(minimum: int, limit: int) -> Check:
    def check(value: Any, where: str, policy: Policy) -> str:
        if type(value) is not str:
            raise _invalid(f"{where}: must be a string, not {_a(value)}")
        if not minimum <= len(value) <= limit:
            raise _invalid(
                f"{where}: must be {minimum} to {limit} characters long, not {len(value)}"
            )
        return value

    return check


_ID = _text(1, MAX_ID)
_DESCRIPTION = _text(0, MAX_TEXT)
_JUSTIFICATION = _text(1, MAX_TEXT)


def _nullable(check: Check) -> Check:
    def nullable(value: Any, where: str, policy: Policy) -> Any:
        return None if value is None else check(value, where, policy)

    return nullable


def _role_ref(value: Any, where: str, policy: Policy) -> str:
    """A role named by its id or, in documents written by people, by its name."""
    text: str = _ID(value, where, policy)
    if text not in policy.roles:
        role = policy.role_by_name(text)
        if role is not None:
            return role.id
    return text


def _role_refs(value: Any, where: str, policy: Policy) -> tuple[str, ...]:
    if type(value) is not list:
        raise _invalid(f"{where}: must be a list of roles, not {_a(value)}")
    if len(value) > MAX_LIST:
        raise _invalid(f"{where}: must list at most {MAX_LIST} roles, not {len(value)}")
    return tuple(_role_ref(item, f"{where}[{i}]", policy) for i, item in enumerate(value))


def _hours(value: Any, where: str, policy: Policy) -> int:
    if type(value) is not int or not 1 <= value <= MAX_HOURS:
        raise _invalid(f"{where}: must be a whole number of hours from 1 to {MAX_HOURS}")
    return value


def _instant_text(value: Any, where: str, policy: Policy) -> str:
    text: str = _ID(value, where, policy)
    try:
        parse_instant(text)
    except ValueError:
        example = "2026-12-31T00:00:00Z"
        raise _invalid(f"{where}: must be an RFC 3339 date-time like {example}") from None
    return text


def _json_value(value: Any, where: str, policy: Policy) -> Any:
    if not is_json_value(value):
        raise _invalid(f"{where}: must be a JSON value")
    return value


def _attributes(value: Any, where: str, policy: Policy) -> dict[str, Any]:
    if type(value) is not dict:
        raise _invalid(f"{where}: must be an object of attributes, not {_a(value)}")
    if len(value) > MAX_LIST:
        raise _invalid(f"{where}: must hold at most {MAX_LIST} attributes, not {len(value)}")
    for key, item in value.items():
        _ID(key, f"{where} key", policy)
        _json_value(item, f"{where}.{key[:64]}", policy)
    return dict(value)


def _owner(value: Any, where: str, policy: Policy) -> str:
    text: str = _text(1, MAX_ID + 5)(value, where, policy)
    kind, _, owner_id = text.partition(":")
    if kind not in ("role", "user") or not owner_id:
        raise _invalid(f"{where}: must be role:<id> or user:<id>, not {quoted(text)}")
    if kind == "role":
        return "role:" + _role_ref(owner_id, where, policy)
    return text


def _effect(value: Any, where: str, policy: Policy) -> Effect:
    if value not in ("grant", "deny") or type(value) is not str:
        raise _invalid(f'{where}: must be "grant" or "deny"')
    return Effect(value)


def _rule(value: Any, where: str, policy: Policy) -> Rule:
    if type(value) is not dict:
        raise _invalid(f"{where}: must be an object {{resource, actions, when}}, not {_a(value)}")
    unknown = sorted(set(value) - {"resource", "actions", "when"})
    if unknown:
        raise _invalid(f"{where}: unknown field {quoted(unknown[0])}")
    if "resource" not in value or "actions" not in value:
        raise _invalid(f"{where}: needs resource and actions")
    resource: str = _ID(value["resource"], f"{where}.resource", policy)
    actions = value["actions"]
    if type(actions) is not list or not actions:
        raise _invalid(f"{where}.actions: must be a non-empty list of actions")
    if len(actions) > MAX_LIST:
        raise _invalid(f"{where}.actions: must list at most {MAX_LIST} actions")
    names = tuple(_ID(a, f"{where}.actions[{i}]", policy) for i, a in enumerate(actions))
    when = value.get("when")
    if when is not None and type(when) is not dict:
        raise _invalid(f"{where}.when: a condition must be an object, not {_a(when)}")
    try:
        return Rule.build(resource, names, when)
    except ConditionError as error:
        path = f"{where}.when.{error.path}" if error.path else f"{where}.when"
        raise _invalid(f"{path}: {error.message}") from None


Schema = Mapping[str, tuple[Check, bool]]
"""Field name -> (its check, whether the document must carry it)."""


# --- the edits --------------------------------------------------------------------------


class Edit:
    """Base of all edits. `op` names the edit in documents; `permission` is the
    (resource type, action) its author needs in the tenant's own policy;
    `schema` the fields a document of this op carries."""

    op: ClassVar[str]
    permission: ClassVar[tuple[str, str]]
    schema: ClassVar[Schema]

    def apply(self, policy: Policy, undo: Undo, now: Instant) -> Touched:
        """Change `policy` (recording each replaced entity in `undo`) or raise EditRefused."""
        raise NotImplementedError

    def permission_needed(self) -> tuple[str, str]:
        """The (resource type, action) the author needs, e.g. ("role", "assign")."""
        return self.permission

    def names(self) -> tuple[tuple[str, str], ...]:
        """The entities this edit names, as (kind, id): what it changes and what it
        refers to (an assignment names its user and its role)."""
        raise NotImplementedError

    def to_document(self) -> dict[str, Any]:
        document: dict[str, Any] = {"op": self.op}
        for name in _field_names(type(self)):
            value = getattr(self, name)
            if isinstance(value, Rule):
                value = value.to_document()
            elif isinstance(value, Effect):
                value = value.value
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            document[name] = value
        return document


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(kind: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(kind)
    if names is None:
        names = _FIELD_NAMES[kind] = tuple(f.name for f in fields(kind))
    return names


class _RoleEdit(Edit):
    role_id: str

    def names(self) -> tuple[tuple[str, str], ...]:
        return (("role", self.role_id),)


class _UserEdit(Edit):
    user_id: str

    def names(self) -> tuple[tuple[str, str], ...]:
        return (("user", self.user_id),)


class _AssignmentEdit(Edit):
    user_id: str
    role_id: str

    def names(self) -> tuple[tuple[str, str], ...]:
        return (("user", self.user_id), ("role", self.role_id))


@dataclass(frozen=True, slots=True)
class CreateRole(Edit):
    role_id: str
    name: str
    description: str = ""
    inherits: tuple[str, ...] = ()
    op: ClassVar[str] = "create_role"
    permission: ClassVar[tuple[str, str]] = ("role", "create")
    schema: ClassVar[Schema] = {
        "role_id": (_ID, True),
        "name": (_ID, True),
        "description": (_DESCRIPTION, False),
        "inherits": (_role_refs, False),
    }

    def names(self) -> tuple[tuple[str, str], ...]:
        return (("role", self.role_id), *(("role", p) for p in self.inherits))

    def apply(self, policy: Policy, undo: Undo, now: Instant) -> Touched:
        if self.role_id in policy.roles:
            raise EditRefused(
                RefusalCode.ALREADY_EXISTS, f"role id {quoted(self.role_id)} is taken"
            )
        _check_new_name(policy, self.name, self.role_id)
        for parent in self.inherits:
            _role(policy, parent)
        role = Role(self.role_id, self.name, self.description, tuple(dict.fromkeys(self.inherits)))
        undo.put(policy.roles, self.role_id, role)
        return Touched(roles=frozenset({self.role_id}), inheritance=True)


def _check_new_name(policy: Policy, name: str, role_id: str) -> None:
    other = policy.role_by_name(name)
    if other is not None and other.id != role_id:
        raise EditRefused(RefusalCode.ALREADY_EXISTS, f"a role named {quoted(name)} exists")


@dataclass(frozen=True, slots=True)
class RenameRole(_RoleEdit):
    role_id: str
    name: str
    op: ClassVar[str] = "rename_role"
    permission: ClassVar[tuple[str, str]] = ("role", "update")
    schema: ClassVar[Schema] = {"role_id": (_role_ref, True), "name": (_ID, True)}

    def apply(self, policy: Policy, undo: Undo, now: Instant) -> Touched:
        role = _role(policy, self.role_id)
        _check_new_name(policy, self.name, self.role_id)
        if role.name != self.name:
            undo.put(policy.roles, self.role_id, replace(role, name=self.name))
        # Names appear in decision reasons only; indexes are keyed by id.
        return Touched()


@dataclass(frozen=True, slots=True)
class DescribeRole(_RoleEdit):
    role_id: str
    description: str
    op: ClassVar[str] = "describe_role"
    permission: ClassVar[tuple[str, str]] = ("role", "update")
    schema: ClassVar[Schema] = {"role_id": (_role_ref, True), "description": (_DESCRIPTION, True)}

    def apply(self, policy: Policy, undo: Undo, now: Instant) -> Touched:
        role = _role(policy, self.role_id)
        if role.description != self.description:
            undo.put(policy.roles, self.role_id, replace(role, description=self.description))
        return Touched()


@dataclass(frozen=True, slots=True)
class DeleteRole(_RoleEdit):
    """Delete a role, its assignments (eligible ones too), and every reference to it."""

    role_id: str
    op: ClassVar[str] = "delete_role"
    permission: ClassVar[tuple[str, str]] = ("role", "delete")
    schema: ClassVar[Schema] = {"role_id": (_role_ref, True)}

    def apply(self, policy: Policy, undo: Undo, now: Instant) -> Touched:
        _role(policy, self.role_id)
        undo.put(policy.roles, self.role_id, _MISSING)
        for role in list(policy.roles.values()):
            if self.role_id in role.inherits:
                kept = tuple(r for r in role.inherits if r != self.role_id)
                undo.put(policy.roles, role.id, replace(role, inherits=kept))
        users: set[str] = set()
        for user in list(policy.users.values()):
            if any(a.role_id == self.role_id for a in user.roles):
                kept_roles = tuple(a for a in user.roles if a.role_id != self.role_id)
                undo.put(policy.users, user.id, replace(user, roles=kept_roles))
                users.add(user.id)
        if any(self.role_id in c.exclusive for c in policy.constraints):
            # A constraint left with one role keeps nothing apart: it goes too.
            kept_constraints = (
                replace(c, exclusive=tuple(r for r in c.exclusive if r != self.role_id))
                for c in policy.constraints
            )
            policy.constraints = tuple(c for c in kept_constraints if len(c.exclusive) >= 2)
        # The role's own id too: undoing the deletion must index it again.
        return Touched(roles=frozenset({self.role_id}), users=frozenset(users), inheritance=True)


@dataclass(frozen=True, slots=True)
class AddInheritance(_RoleEdit):
    role_id: str
    parent_id: str
    op: ClassVar[str] = "add_inheritance"
    permission: ClassVar[tuple[str, str]] = ("role", "update")
    schema: ClassVar[Schema] = {"role_id": (_role_ref, True), "parent_id": (_role_ref, True)}

    def names(self) -> tuple[tuple[str, str], ...]:
        return (("role", self.role_id), ("role", self.parent_id))

    def apply(self, policy: Policy, undo: Undo, now: Instant) -> Touched:
        role = _role(policy, self.role_id)
        parent = _role(policy, self.parent_id)
        if self.parent_id in role.inherits:
            return Touched()
        if self.role_id in {r for r, _ in policy.ancestors(self.parent_id)}:
            raise EditRefused(
                RefusalCode.CYCLE,
                f"role {quoted(role.name)} cannot inherit {quoted(parent.name)}: "
                f"{quoted(parent.name)} already holds {quoted(role.name)}",
            )
        new = replace(role, inherits=(*role.inherits, self.parent_id))
        undo.put(policy.roles, self.role_id, new)
        return Touched(inheritance=True, sod_roles=frozenset({self.role_id}))


@dataclass(frozen=True, slots=True)
class RemoveInheritance(_RoleEdit):
    role_id: str
    parent_id: str
    op: ClassVar[str] = "remove_inheritance"
    permission: ClassVar[tuple[str, str]] = ("role", "update")
    schema: ClassVar[Schema] = {"role_id": (_role_ref, True), "parent_id": (_role_ref, True)}

    def names(self) -> tuple[tuple[str, str], ...]:
        return (("role", self.role_id), ("role", self.parent_id))

    def apply(self, policy: Policy, undo: Undo, now: Instant) -> Touched:
        role = _role(policy, self.role_id)
        if self.parent_id not in role.inherits:
            return Touched()
        kept = tuple(r for r in role.inherits if r != self.parent_id)
        undo.put(policy.roles, self.role_id, replace(role, inherits=kept))
        return Touched(inheritance=True)


class _RuleEdit(Edit):
    """An edit of one owner's rules: a user's own rules need user:update."""

    owner: str

    def permission_needed(self) -> tuple[str, str]:
        return ("user", "update") if self.owner.startswith("user:") else self.permission

    def names(self) -> tuple[tuple[str, str], ...]:
        kind, _, owner_id = self.owner.partition(":")
        return ((kind, owner_id),)


_RULE_SCHEMA: Schema = {"owner": (_owner, True), "effect": (_effect, True), "rule": (_rule, True)}


@dataclass(frozen=True, slots=True)
class AddRule(_RuleEdit):
    """Add a grant or deny to a role (`owner` "role:<id>") or a user ("user:<id>").
    Adding a rule the owner already has changes nothing."""

    owner: str
    effect: Effect
    rule: Rule
    op: ClassVar[str] = "add_rule"
    permission: ClassVar[tuple[str, str]] = ("role", "update")
    schema: ClassVar[Schema] = _RULE_SCHEMA

    def apply(self, policy: Policy, undo: Undo, now: Instant) -> Touched:
        check_rule(policy, self.rule)
        return _change_rules(policy, undo, self.owner, self.effect, add=self.rule)


@dataclass(frozen=True, slots=True)
class RemoveRule(_RuleEdit):
    """Remove the owner's rule equal to `rule` (same resource, actions and condition,
    compared type-strictly). Removing a rule that is not there changes nothing."""

    owner: str
    effect: Effect
    rule: Rule
    op: ClassVar[str] = "remove_rule"
    permission: ClassVar[tuple[str, str]] = ("role", "update")
    schema: ClassVar[Schema] = _RULE_SCHEMA

    def apply(self, policy: Policy, undo: Undo, now: Instant) -> Touched:
        return _change_rules(policy, undo, self.owner, self.effect, remove=self.rule)


def _change_rules(
    policy: Policy,
    undo: Undo,
    owner: str,
    effect: Effect,
    *,
    add: Rule | None = None,
    remove: Rule | None = None,
) -> Touched:
    kind, _, owner_id = owner.partition(":")
    holder: Role | User = _role(policy, owner_id) if kind == "role" else _user(policy, owner_id)
    rules = list(holder.rules(effect))
    if add is not None:
        if add in rules:
            return Touched()
        rules.append(add)
    if remove is not None:
        if remove not in rules:
            return Touched()
        rules.remove(remove)
    new = (
        replace(holder, grants=tuple(rules))
        if effect is Effect.GRANT
        else replace(holder, denies=tuple(rules))
    )
    if kind == "role":
        undo.put(policy.roles, owner_id, new)
        return Touched(roles=frozenset({owner_id}))
    undo.put(policy.users, owner_id, new)
    return Touched(users=frozenset({owner_id}))


def _ordinary(assignment: Assignment, role_id: str) -> bool:
    return assignment.role_id == role_id and assignment.eligible is None


def _eligible(assignment: Assignment, role_id: str) -> bool:
    return assignment.role_id == role_id and assignment.eligible is not None


@dataclass(frozen=True, slots=True)
class AssignRole(_AssignmentEdit):
    """Give a user a role, until `expires` if given; re-assigning replaces the expiry.
    An eligible entry of the role stays as it is."""

    user_id: str
    role_id: str
    expires: str | None = None
    op: ClassVar[str] = "assign_role"
    permission: ClassVar[tuple[str, str]] = ("role", "assign")
    schema: ClassVar[Schema] = {
        "user_id": (_ID, True),
        "role_id": (_role_ref, True),
        "expires": (_nullable(_instant_text), False),
    }

    def apply(self, policy: Policy, undo: Undo, now: Instant) -> Touched:
        user = _user(policy, self.user_id)
        _role(policy, self.role_id)
        assignment = Assignment.build(self.role_id, self.expires)
        current = [a for a in user.roles if _ordinary(a, self.role_id)]
        if current == [assignment]:
            return Touched()
        kept = tuple(a for a in user.roles if not _ordinary(a, self.role_id))
        return _put_user(policy, undo, user, replace(user, roles=(*kept, assignment)))


@dataclass(frozen=True, slots=True)
class UnassignRole(_AssignmentEdit):
    """Take a role's ordinary assignment away (its eligible entry stays:
    `remove_eligible` takes that)."""

    user_id: str
    role_id: str
    op: ClassVar[str] = "unassign_role"
    permission: ClassVar[tuple[str, str]] = ("role", "assign")
    schema: ClassVar[Schema] = {"user_id": (_ID, True), "role_id": (_role_ref, True)}

    def apply(self, policy: Policy, undo: Undo, now: Instant) -> Touched:
        return _drop_entries(policy, undo, self.user_id, lambda a: _ordinary(a, self.role_id))


@dataclass(frozen=True, slots=True)
class MakeEligible(_AssignmentEdit):
    """Make a user eligible for a role (just-in-time elevation): activations of
    at most `max_hours`, until `expires` if given. Replaces an earlier eligibility
    of the same role."""

    user_id: str
    role_id: str
    max_hours: int
    expires: str | None = None
    op: ClassVar[str] = "make_eligible"
    permission: ClassVar[tuple[str, str]] = ("role", "assign")
    schema: ClassVar[Schema] = {
        "user_id": (_ID, True),
        "role_id": (_role_ref, True),
        "max_hours": (_hours, True),
        "expires": (_nullable(_instant_text), False),
    }

    def apply(self, policy: Policy, undo: Undo, now: Instant) -> Touched:
        user = _user(policy, self.user_id)
        _role(policy, self.role_id)
        entry = Assignment.build(self.role_id, self.expires, self.max_hours)
        if entry in user.roles:  # role, expiry and max_hours: strings and ints
            return Touched()
        kept = tuple(a for a in user.roles if not _eligible(a, self.role_id))
        index = next((i for i, a in enumerate(user.roles) if _eligible(a, self.role_id)), None)
        roles = list(kept)
        roles.insert(len(roles) if index is None else index, entry)  # in place when replaced
        return _put_user(policy, undo, user, replace(user, roles=tuple(roles)))


@dataclass(frozen=True, slots=True)
class RemoveEligible(_AssignmentEdit):
    """End a user's eligibility for a role; an activation in force stays until it ends."""

    user_id: str
    role_id: str
    op: ClassVar[str] = "remove_eligible"
    permission: ClassVar[tuple[str, str]] = ("role", "assign")
    schema: ClassVar[Schema] = {"user_id": (_ID, True), "role_id": (_role_ref, True)}

    def apply(self, policy: Policy, undo: Undo, now: Instant) -> Touched:
        return _drop_entries(policy, undo, self.user_id, lambda a: _eligible(a, self.role_id))


@dataclass(frozen=True, slots=True)
class ActivateRole(_AssignmentEdit):
    """Activate an eligible role for `hours` from the time of the edit (the server's
    clock when it syncs): an ordinary assignment ending then, or when the
    eligibility ends if that is sooner. The user may do this themself
    (sync/policy/authority.py); the justification goes to the audit log with
    the change."""

    user_id: str
    role_id: str
    hours: int
    justification: str
    op: ClassVar[str] = "activate_role"
    permission: ClassVar[tuple[str, str]] = ("role", "assign")
    schema: ClassVar[Schema] = {
        "user_id": (_ID, True),
        "role_id": (_role_ref, True),
        "hours": (_hours, True),
        "justification": (_JUSTIFICATION, True),
    }

    def apply(self, policy: Policy, undo: Undo, now: Instant) -> Touched:
        user = _user(policy, self.user_id)
        role = _role(policy, self.role_id)
        entry = next((a for a in user.roles if _eligible(a, self.role_id)), None)
        who = f"user {quoted(user.id)}"
        if entry is None:
            raise EditRefused(
                RefusalCode.NOT_ELIGIBLE, f"{who} is not eligible for role {quoted(role.name)}"
            )
        if not entry.eligible_at(now):
            raise EditRefused(
                RefusalCode.NOT_ELIGIBLE,
                f"{who}'s eligibility for role {quoted(role.name)} ended at {entry.expires}",
            )
        assert entry.eligible is not None
        if self.hours > entry.eligible:
            raise EditRefused(
                RefusalCode.NOT_ELIGIBLE,
                f"role {quoted(role.name)} may be activated for at most {entry.eligible} hours",
            )
        ends: Instant = (now[0] + self.hours * 3600, now[1])
        if entry.expires_at is not None and entry.expires_at < ends:
            ends = entry.expires_at
        current = next((a for a in user.roles if _ordinary(a, self.role_id)), None)
        if current is not None and (current.expires_at is None or current.expires_at >= ends):
            return Touched()  # already held at least that long: nothing to extend
        activation = Assignment.build(self.role_id, format_instant(ends))
        kept = tuple(a for a in user.roles if not _ordinary(a, self.role_id))
        return _put_user(policy, undo, user, replace(user, roles=(*kept, activation)))


@dataclass(frozen=True, slots=True)
class DeactivateRole(_AssignmentEdit):
    """End an activation early: the role's ordinary assignment that has an expiry
    goes (an assignment without one is not an activation and stays)."""

    user_id: str
    role_id: str
    op: ClassVar[str] = "deactivate_role"
    permission: ClassVar[tuple[str, str]] = ("role", "assign")
    schema: ClassVar[Schema] = {"user_id": (_ID, True), "role_id": (_role_ref, True)}

    def apply(self, policy: Policy, undo: Undo, now: Instant) -> Touched:
        role_id = self.role_id
        return _drop_entries(
            policy, undo, self.user_id, lambda a: _ordinary(a, role_id) and a.expires is not None
        )


@dataclass(frozen=True, slots=True)
class CreateUser(_UserEdit):
    user_id: str
    name: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    op: ClassVar[str] = "create_user"
    permission: ClassVar[tuple[str, str]] = ("user", "create")
    schema: ClassVar[Schema] = {
        "user_id": (_ID, True),
        "name": (_nullable(_ID), False),
        "attributes": (_attributes, False),
    }

    def apply(self, policy: Policy, undo: Undo, now: Instant) -> Touched:
        if self.user_id in policy.users:
            raise EditRefused(RefusalCode.ALREADY_EXISTS, f"user {quoted(self.user_id)} exists")
        user = User(self.user_id, self.name, dict(self.attributes))
        undo.put(policy.users, self.user_id, user)
        return Touched(users=frozenset({self.user_id}))


@dataclass(frozen=True, slots=True)
class DeleteUser(_UserEdit):
    user_id: str
    op: ClassVar[str] = "delete_user"
    permission: ClassVar[tuple[str, str]] = ("user", "delete")
    schema: ClassVar[Schema] = {"user_id": (_ID, True)}

    def apply(self, policy: Policy, undo: Undo, now: Instant) -> Touched:
        _user(policy, self.user_id)
        undo.put(policy.users, self.user_id, _MISSING)
        return Touched(users=frozenset({self.user_id}))


@dataclass(frozen=True, slots=True)
class SetUserAttribute(_UserEdit):
    """Set one attribute; a `value` of None removes it (null means missing)."""

    user_id: str
    key: str
    value: Any = None
    op: ClassVar[str] = "set_user_attribute"
    permission: ClassVar[tuple[str, str]] = ("user", "update")
    schema: ClassVar[Schema] = {
        "user_id": (_ID, True),
        "key": (_ID, True),
        "value": (_json_value, False),
    }

    def apply(self, policy: Policy, undo: Undo, now: Instant) -> Touched:
        user = _user(policy, self.user_id)
        old = user.attributes.get(self.key)
        if old is None and self.value is None:
            return Touched()
        if old is not None and self.value is not None and json_key(old) == json_key(self.value):
            return Touched()  # the same value, type for type (`True` is not `1`)
        attributes = dict(user.attributes)
        if self.value is None:
            attributes.pop(self.key, None)
        else:
            attributes[self.key] = self.value
        return _put_user(policy, undo, user, replace(user, attributes=attributes))


@dataclass(frozen=True, slots=True)
class SuspendUser(_UserEdit):
    """Suspend a user: every request of theirs is denied until `resume_user`."""

    user_id: str
    op: ClassVar[str] = "suspend_user"
    permission: ClassVar[tuple[str, str]] = ("user", "update")
    schema: ClassVar[Schema] = {"user_id": (_ID, True)}

    def apply(self, policy: Policy, undo: Undo, now: Instant) -> Touched:
        user = _user(policy, self.user_id)
        if user.suspended:
            return Touched()
        return _put_user(policy, undo, user, replace(user, suspended=True))


@dataclass(frozen=True, slots=True)
class ResumeUser(_UserEdit):
    user_id: str
    op: ClassVar[str] = "resume_user"
    permission: ClassVar[tuple[str, str]] = ("user", "update")
    schema: ClassVar[Schema] = {"user_id": (_ID, True)}

    def apply(self, policy: Policy, undo: Undo, now: Instant) -> Touched:
        user = _user(policy, self.user_id)
        if not user.suspended:
            return Touched()
        return _put_user(policy, undo, user, replace(user, suspended=False))


EDIT_TYPES: dict[str, type[Edit]] = {
    cls.op: cls
    for cls in (
        CreateRole,
        RenameRole,
        DescribeRole,
        DeleteRole,
        AddInheritance,
        RemoveInheritance,
        AddRule,
        RemoveRule,
        AssignRole,
        UnassignRole,
        MakeEligible,
        RemoveEligible,
        ActivateRole,
        DeactivateRole,
        CreateUser,
        DeleteUser,
        SetUserAttribute,
        SuspendUser,
        ResumeUser,
    )
}
"""Every op this code knows, by name (the ops a server accepts: PROTOCOL.md § welcome)."""


def apply_edit(policy: Policy, edit: Edit, now: Instant, undo: Undo | None = None) -> Touched:
    """Apply `edit` to `policy` in place, or raise EditRefused and change nothing.

    `now` is the time of the edit, against which separation-of-duty
    constraints are checked (policy-format.md: an assignment counts while the
    time of the edit is before its `expires`) and activations are timed. With
    `undo`, what the edit replaced is recorded there, so a series of edits can
    be taken back.
    """
    mine = Undo(policy)
    try:
        touched = edit.apply(policy, mine, now)
    except BaseException:
        mine.revert()  # whatever the edit changed before it found the problem (or failed)
        raise
    affected = set(touched.users)
    if touched.sod_roles and policy.constraints:
        below: set[str] = set()
        for role_id in touched.sod_roles:
            below |= policy.descendants(role_id)
        affected |= {
            u.id for u in policy.users.values() if any(a.role_id in below for a in u.roles)
        }
    broken = violations(policy, now, sorted(affected))
    if broken:
        mine.revert()
        raise EditRefused(RefusalCode.CONSTRAINT, str(broken[0]))
    if undo is not None:
        undo.absorb(mine)
    return touched


def edit_from_document(document: Any, policy: Policy) -> Edit:
    """Build an edit from `{"op": "assign_role", "user_id": ..., ...}`, checked
    against its op's schema.

    Role fields (`role_id`, `parent_id`, `inherits`, and the id in `owner`
    "role:<id>") accept a role's id or, for documents written by people, its
    name. Raises EditRefused(INVALID) naming the field that is wrong.
    """
    if type(document) is not dict:
        raise _invalid(f"an edit is an object with an op, not {_a(document)}")
    op = document.get("op")
    cls = EDIT_TYPES.get(op) if type(op) is str else None
    if cls is None:
        raise _invalid(f"unknown edit op {quoted(op)} (known: {', '.join(EDIT_TYPES)})")
    schema = cls.schema
    for name in document:
        if name != "op" and name not in schema:
            fields = ", ".join(schema)
            raise _invalid(f"{cls.op}: unknown field {quoted(name)} (its fields: {fields})")
    values: dict[str, Any] = {}
    for name, (check, required) in schema.items():
        if name in document:
            values[name] = check(document[name], f"{cls.op}.{name}", policy)
        elif required:
            raise _invalid(f"{cls.op}.{name}: is missing")
    for name, value in document.items():
        # Queued, it would block every edit behind it: the server refuses it unread.
        if holds_unstorable(value):
            raise _invalid(f"{cls.op}.{name}: {UNSTORABLE_TEXT}, which the server cannot store")
    return cls(**values)
