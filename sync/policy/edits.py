"""Edits: intent-level changes to a policy ("assign role R to user U").

Edits are what an admin does and what sync later queues, pushes and
re-executes on the server, so each is a small frozen value that can be
checked against the current policy (`EditRefused` with a code and a reason a
person can read), applied, and turned into a document and back.

`apply_edit` is the one way to change a `Policy`: it checks the edit, applies
it, checks separation-of-duty constraints for every user the edit can affect
at the time of the edit, and undoes the change if one would break. It returns
what was touched so that an `Engine` can update only that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any, ClassVar

from sync.policy.conditions import ConditionError, is_json_value
from sync.policy.constraints import violations
from sync.policy.instant import Instant
from sync.policy.model import WILDCARD, Assignment, Effect, Policy, Role, Rule, User


class RefusalCode(StrEnum):
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    INVALID = "invalid"
    CYCLE = "cycle"
    CONSTRAINT = "constraint"


class EditRefused(Exception):
    """The edit cannot apply to this policy; nothing was changed."""

    def __init__(self, code: RefusalCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


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

    def absorb(self, later: Undo) -> None:
        """Take over what a later Undo of the same policy would put back."""
        self.saved.extend(later.saved)
        for table_id, order in later.orders.items():
            self.orders.setdefault(table_id, order)  # the earlier order is the one to restore
        later.saved = []
        later.orders = {}


def _role(policy: Policy, role_id: str) -> Role:
    role = policy.roles.get(role_id)
    if role is None:
        raise EditRefused(RefusalCode.NOT_FOUND, f"no role with id {role_id!r}")
    return role


def _user(policy: Policy, user_id: str) -> User:
    user = policy.users.get(user_id)
    if user is None:
        raise EditRefused(RefusalCode.NOT_FOUND, f"no user {user_id!r}")
    return user


def check_rule(policy: Policy, rule: Rule) -> None:
    """Raise EditRefused unless `rule` names listed types and actions (policy-format.md)."""
    types = policy.resource_types
    if rule.resource != WILDCARD and rule.resource not in types:
        raise EditRefused(RefusalCode.INVALID, f"unknown resource type {rule.resource!r}")
    if not rule.actions:
        raise EditRefused(RefusalCode.INVALID, "a rule needs at least one action")
    listed = (
        {a for actions in types.values() for a in actions}
        if rule.resource == WILDCARD
        else set(types[rule.resource])
    )
    for action in rule.actions:
        if action != WILDCARD and action not in listed:
            raise EditRefused(
                RefusalCode.INVALID, f"action {action!r} is not listed for {rule.resource!r}"
            )


class Edit:
    """Base of all edits. `op` names the edit in documents; `permission` is the
    (resource type, action) its author needs in the tenant's own policy."""

    op: ClassVar[str]
    permission: ClassVar[tuple[str, str]]

    def apply(self, policy: Policy, undo: Undo) -> Touched:
        raise NotImplementedError

    def permission_needed(self) -> tuple[str, str]:
        """The (resource type, action) the author needs, e.g. ("role", "assign")."""
        return self.permission

    def to_document(self) -> dict[str, Any]:
        document: dict[str, Any] = {"op": self.op}
        for item in fields(self):  # type: ignore[arg-type]
            name = item.name
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


@dataclass(frozen=True, slots=True)
class CreateRole(Edit):
    role_id: str
    name: str
    description: str = ""
    inherits: tuple[str, ...] = ()
    op: ClassVar[str] = "create_role"
    permission: ClassVar[tuple[str, str]] = ("role", "create")

    def apply(self, policy: Policy, undo: Undo) -> Touched:
        if self.role_id in policy.roles:
            raise EditRefused(RefusalCode.ALREADY_EXISTS, f"role id {self.role_id!r} is taken")
        _check_new_name(policy, self.name, self.role_id)
        for parent in self.inherits:
            _role(policy, parent)
        role = Role(self.role_id, self.name, self.description, tuple(self.inherits))
        undo.put(policy.roles, self.role_id, role)
        return Touched(roles=frozenset({self.role_id}), inheritance=True)


def _check_new_name(policy: Policy, name: str, role_id: str) -> None:
    if not name:
        raise EditRefused(RefusalCode.INVALID, "a role needs a name")
    other = policy.role_by_name(name)
    if other is not None and other.id != role_id:
        raise EditRefused(RefusalCode.ALREADY_EXISTS, f"a role named {name!r} exists")


@dataclass(frozen=True, slots=True)
class RenameRole(Edit):
    role_id: str
    name: str
    op: ClassVar[str] = "rename_role"
    permission: ClassVar[tuple[str, str]] = ("role", "update")

    def apply(self, policy: Policy, undo: Undo) -> Touched:
        role = _role(policy, self.role_id)
        _check_new_name(policy, self.name, self.role_id)
        undo.put(policy.roles, self.role_id, _replace(role, name=self.name))
        # Names appear in decision reasons only; indexes are keyed by id.
        return Touched()


@dataclass(frozen=True, slots=True)
class DescribeRole(Edit):
    role_id: str
    description: str
    op: ClassVar[str] = "describe_role"
    permission: ClassVar[tuple[str, str]] = ("role", "update")

    def apply(self, policy: Policy, undo: Undo) -> Touched:
        role = _role(policy, self.role_id)
        new = _replace(role, description=self.description)
        undo.put(policy.roles, self.role_id, new)
        return Touched()


@dataclass(frozen=True, slots=True)
class DeleteRole(Edit):
    """Delete a role, its assignments, and every reference to it."""

    role_id: str
    op: ClassVar[str] = "delete_role"
    permission: ClassVar[tuple[str, str]] = ("role", "delete")

    def apply(self, policy: Policy, undo: Undo) -> Touched:
        _role(policy, self.role_id)
        undo.put(policy.roles, self.role_id, _MISSING)
        for role in list(policy.roles.values()):
            if self.role_id in role.inherits:
                kept = tuple(r for r in role.inherits if r != self.role_id)
                undo.put(policy.roles, role.id, _replace(role, inherits=kept))
        users: set[str] = set()
        for user in list(policy.users.values()):
            if any(a.role_id == self.role_id for a in user.roles):
                kept_roles = tuple(a for a in user.roles if a.role_id != self.role_id)
                undo.put(policy.users, user.id, _replace(user, roles=kept_roles))
                users.add(user.id)
        if any(self.role_id in c.exclusive for c in policy.constraints):
            # A constraint left with one role keeps nothing apart: it goes too.
            kept_constraints = (
                _replace(c, exclusive=tuple(r for r in c.exclusive if r != self.role_id))
                for c in policy.constraints
            )
            policy.constraints = tuple(c for c in kept_constraints if len(c.exclusive) >= 2)
        # The role's own id too: undoing the deletion must index it again.
        return Touched(roles=frozenset({self.role_id}), users=frozenset(users), inheritance=True)


@dataclass(frozen=True, slots=True)
class AddInheritance(Edit):
    role_id: str
    parent_id: str
    op: ClassVar[str] = "add_inheritance"
    permission: ClassVar[tuple[str, str]] = ("role", "update")

    def apply(self, policy: Policy, undo: Undo) -> Touched:
        role = _role(policy, self.role_id)
        parent = _role(policy, self.parent_id)
        if self.parent_id in role.inherits:
            return Touched()
        if self.role_id in {r for r, _ in policy.ancestors(self.parent_id)}:
            raise EditRefused(
                RefusalCode.CYCLE,
                f"role {role.name!r} cannot inherit {parent.name!r}: "
                f"{parent.name!r} already holds {role.name!r}",
            )
        new = _replace(role, inherits=(*role.inherits, self.parent_id))
        undo.put(policy.roles, self.role_id, new)
        return Touched(inheritance=True, sod_roles=frozenset({self.role_id}))


@dataclass(frozen=True, slots=True)
class RemoveInheritance(Edit):
    role_id: str
    parent_id: str
    op: ClassVar[str] = "remove_inheritance"
    permission: ClassVar[tuple[str, str]] = ("role", "update")

    def apply(self, policy: Policy, undo: Undo) -> Touched:
        role = _role(policy, self.role_id)
        if self.parent_id not in role.inherits:
            return Touched()
        kept = tuple(r for r in role.inherits if r != self.parent_id)
        undo.put(policy.roles, self.role_id, _replace(role, inherits=kept))
        return Touched(inheritance=True)


class _RuleEdit(Edit):
    """An edit of one owner's rules: a user's own rules need user:update."""

    owner: str

    def permission_needed(self) -> tuple[str, str]:
        return ("user", "update") if self.owner.startswith("user:") else self.permission


@dataclass(frozen=True, slots=True)
class AddRule(_RuleEdit):
    """Add a grant or deny to a role (`owner` "role:<id>") or a user ("user:<id>").
    Adding a rule the owner already has changes nothing."""

    owner: str
    effect: Effect
    rule: Rule
    op: ClassVar[str] = "add_rule"
    permission: ClassVar[tuple[str, str]] = ("role", "update")

    def apply(self, policy: Policy, undo: Undo) -> Touched:
        check_rule(policy, self.rule)
        return _change_rules(policy, undo, self.owner, self.effect, add=self.rule)


@dataclass(frozen=True, slots=True)
class RemoveRule(_RuleEdit):
    """Remove the owner's rule equal to `rule` (same resource, actions and condition).
    Removing a rule that is not there changes nothing."""

    owner: str
    effect: Effect
    rule: Rule
    op: ClassVar[str] = "remove_rule"
    permission: ClassVar[tuple[str, str]] = ("role", "update")

    def apply(self, policy: Policy, undo: Undo) -> Touched:
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
    holder: Role | User
    if kind == "role":
        holder = _role(policy, owner_id)
    elif kind == "user":
        holder = _user(policy, owner_id)
    else:
        raise EditRefused(
            RefusalCode.INVALID, f"a rule's owner is role:<id> or user:<id>, not {owner!r}"
        )
    rules = list(holder.rules(effect))
    if add is not None:
        if add in rules:
            return Touched()
        rules.append(add)
    if remove is not None:
        if remove not in rules:
            return Touched()
        rules.remove(remove)
    field_name = "grants" if effect is Effect.GRANT else "denies"
    new = _replace(holder, **{field_name: tuple(rules)})
    if kind == "role":
        undo.put(policy.roles, owner_id, new)
        return Touched(roles=frozenset({owner_id}))
    undo.put(policy.users, owner_id, new)
    return Touched(users=frozenset({owner_id}))


@dataclass(frozen=True, slots=True)
class AssignRole(Edit):
    """Give a user a role, until `expires` if given; re-assigning replaces the expiry."""

    user_id: str
    role_id: str
    expires: str | None = None
    op: ClassVar[str] = "assign_role"
    permission: ClassVar[tuple[str, str]] = ("role", "assign")

    def apply(self, policy: Policy, undo: Undo) -> Touched:
        user = _user(policy, self.user_id)
        _role(policy, self.role_id)
        try:
            assignment = Assignment.build(self.role_id, self.expires)
        except ValueError as error:
            raise EditRefused(RefusalCode.INVALID, f"expires: {error}") from None
        kept = tuple(a for a in user.roles if a.role_id != self.role_id)
        undo.put(policy.users, self.user_id, _replace(user, roles=(*kept, assignment)))
        return Touched(users=frozenset({self.user_id}))


@dataclass(frozen=True, slots=True)
class UnassignRole(Edit):
    user_id: str
    role_id: str
    op: ClassVar[str] = "unassign_role"
    permission: ClassVar[tuple[str, str]] = ("role", "assign")

    def apply(self, policy: Policy, undo: Undo) -> Touched:
        user = _user(policy, self.user_id)
        kept = tuple(a for a in user.roles if a.role_id != self.role_id)
        if len(kept) == len(user.roles):
            return Touched()
        undo.put(policy.users, self.user_id, _replace(user, roles=kept))
        return Touched(users=frozenset({self.user_id}))


@dataclass(frozen=True, slots=True)
class CreateUser(Edit):
    user_id: str
    name: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    op: ClassVar[str] = "create_user"
    permission: ClassVar[tuple[str, str]] = ("user", "create")

    def apply(self, policy: Policy, undo: Undo) -> Touched:
        if not self.user_id:
            raise EditRefused(RefusalCode.INVALID, "a user needs an id")
        if self.user_id in policy.users:
            raise EditRefused(RefusalCode.ALREADY_EXISTS, f"user {self.user_id!r} exists")
        user = User(self.user_id, self.name, dict(self.attributes))
        undo.put(policy.users, self.user_id, user)
        return Touched(users=frozenset({self.user_id}))


@dataclass(frozen=True, slots=True)
class DeleteUser(Edit):
    user_id: str
    op: ClassVar[str] = "delete_user"
    permission: ClassVar[tuple[str, str]] = ("user", "delete")

    def apply(self, policy: Policy, undo: Undo) -> Touched:
        _user(policy, self.user_id)
        undo.put(policy.users, self.user_id, _MISSING)
        return Touched(users=frozenset({self.user_id}))


@dataclass(frozen=True, slots=True)
class SetUserAttribute(Edit):
    """Set one attribute; a `value` of None removes it (null means missing)."""

    user_id: str
    key: str
    value: Any = None
    op: ClassVar[str] = "set_user_attribute"
    permission: ClassVar[tuple[str, str]] = ("user", "update")

    def apply(self, policy: Policy, undo: Undo) -> Touched:
        user = _user(policy, self.user_id)
        if not self.key:
            raise EditRefused(RefusalCode.INVALID, "an attribute needs a name")
        if not is_json_value(self.value):
            raise EditRefused(RefusalCode.INVALID, f"{self.value!r} is not a JSON value")
        attributes = dict(user.attributes)
        if self.value is None:
            attributes.pop(self.key, None)
        else:
            attributes[self.key] = self.value
        undo.put(policy.users, self.user_id, _replace(user, attributes=attributes))
        return Touched(users=frozenset({self.user_id}))


def _replace(entity: Any, **changes: Any) -> Any:
    return replace(entity, **changes)


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
        CreateUser,
        DeleteUser,
        SetUserAttribute,
    )
}


def apply_edit(policy: Policy, edit: Edit, now: Instant, undo: Undo | None = None) -> Touched:
    """Apply `edit` to `policy` in place, or raise EditRefused and change nothing.

    `now` is the time of the edit, against which separation-of-duty
    constraints are checked (policy-format.md: an assignment counts while the
    time of the edit is before its `expires`). With `undo`, what the edit
    replaced is recorded there, so a series of edits can be taken back.
    """
    mine = Undo(policy)
    try:
        touched = edit.apply(policy, mine)
    except Exception:
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


def edit_from_document(document: Mapping[str, Any], policy: Policy) -> Edit:
    """Build an edit from `{"op": "assign_role", "user_id": ..., ...}`.

    Role fields (`role_id`, `parent_id`, `inherits`, and the id in `owner`
    "role:<id>") accept a role's id or, for documents written by people, its
    name. Raises EditRefused(INVALID) naming the field that is wrong.
    """
    op = document.get("op")
    cls = EDIT_TYPES.get(op) if isinstance(op, str) else None
    if cls is None or not isinstance(op, str):
        known = ", ".join(EDIT_TYPES)
        raise EditRefused(RefusalCode.INVALID, f"unknown edit op {op!r} (known: {known})")
    names = {item.name for item in fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for name, value in document.items():
        if name == "op":
            continue
        if name not in names:
            raise EditRefused(RefusalCode.INVALID, f"{op}: unknown field {name!r}")
        values[name] = _edit_value(policy, op, name, value)
    try:
        return cls(**values)
    except TypeError as error:
        raise EditRefused(RefusalCode.INVALID, f"{op}: {error}") from None


def _role_ref(policy: Policy, value: Any) -> Any:
    if isinstance(value, str) and value not in policy.roles:
        role = policy.role_by_name(value)
        if role is not None:
            return role.id
    return value


def _edit_value(policy: Policy, op: str, name: str, value: Any) -> Any:
    if name in ("role_id", "parent_id") and op != "create_role":
        return _role_ref(policy, value)
    if name == "inherits":
        if not isinstance(value, list):
            raise EditRefused(RefusalCode.INVALID, f"{op}: inherits must be a list")
        return tuple(_role_ref(policy, v) for v in value)
    if name == "owner" and isinstance(value, str) and value.startswith("role:"):
        return "role:" + str(_role_ref(policy, value[5:]))
    if name == "effect":
        try:
            return Effect(value)
        except ValueError:
            raise EditRefused(RefusalCode.INVALID, f"{op}: effect is grant or deny") from None
    if name == "rule":
        if not isinstance(value, dict) or set(value) - {"resource", "actions", "when"}:
            raise EditRefused(RefusalCode.INVALID, f"{op}: rule is {{resource, actions, when}}")
        resource, actions = value.get("resource"), value.get("actions")
        if not isinstance(resource, str) or not isinstance(actions, list):
            raise EditRefused(RefusalCode.INVALID, f"{op}: rule needs resource and actions")
        try:
            return Rule.build(resource, tuple(actions), value.get("when"))
        except ConditionError as error:
            where = f"when.{error.path}" if error.path else "when"
            raise EditRefused(RefusalCode.INVALID, f"{op}: rule.{where}: {error.message}") from None
    return value
