"""The policy model: what a tenant's policy is, inside the product.

Entities are frozen; a `Policy` holds them in dictionaries keyed by stable
ids and is changed by replacing entities (see `sync.policy.edits`). Roles are
referenced by id everywhere inside the product (inheritance, assignments,
constraints), so renaming a role is one field change; the document format
uses names, and `sync.policy.document` translates at the boundary.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sync.policy.conditions import Condition, Predicate, compile_condition, parse_condition
from sync.policy.instant import Instant, parse_instant

FORMAT = "fleetgate.policy/1"
"""The policy document format this code reads and writes (policy-format.md)."""

WILDCARD = "*"


class Effect(StrEnum):
    GRANT = "grant"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class Rule:
    """A grant or deny: `resource` is a type name or `*`; `actions` may hold `*`.

    `when` is the condition document as written (exported verbatim);
    `condition` its parsed tree and `predicate` the compiled closure.
    """

    resource: str
    actions: tuple[str, ...]
    when: Mapping[str, Any] | None = None
    condition: Condition | None = field(default=None, compare=False, repr=False)
    predicate: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def build(
        cls, resource: str, actions: tuple[str, ...], when: Mapping[str, Any] | None = None
    ) -> Rule:
        """A rule with its condition parsed and compiled (raises ConditionError)."""
        return cls(resource, actions, when)

    def __post_init__(self) -> None:
        # Fail closed: a rule made with `when` always carries its compiled
        # condition, however it was made; without it the engine would read
        # the rule as unconditional.
        if self.when is not None and (self.condition is None or self.predicate is None):
            condition = parse_condition(self.when)
            predicate: Predicate = compile_condition(condition)
            object.__setattr__(self, "condition", condition)
            object.__setattr__(self, "predicate", predicate)

    def describe(self) -> str:
        """`route update when resource.region = $user.region`."""
        target = "any resource" if self.resource == WILDCARD else self.resource
        actions = "any action" if WILDCARD in self.actions else ", ".join(self.actions)
        text = f"{target} {actions}"
        if self.condition is not None:
            text += f" when {self.condition}"
        return text

    def to_document(self) -> dict[str, Any]:
        document: dict[str, Any] = {"resource": self.resource, "actions": list(self.actions)}
        if self.when is not None:
            document["when"] = self.when
        return document


@dataclass(frozen=True, slots=True)
class Role:
    id: str
    name: str
    description: str = ""
    inherits: tuple[str, ...] = ()
    """Ids of the roles this one inherits, in document order."""
    grants: tuple[Rule, ...] = ()
    denies: tuple[Rule, ...] = ()

    def rules(self, effect: Effect) -> tuple[Rule, ...]:
        return self.grants if effect is Effect.GRANT else self.denies


@dataclass(frozen=True, slots=True)
class Assignment:
    """A user holds `role_id`, until `expires` (RFC 3339 text as written) if given."""

    role_id: str
    expires: str | None = None
    expires_at: Instant | None = field(default=None, compare=False)

    @classmethod
    def build(cls, role_id: str, expires: str | None = None) -> Assignment:
        """Raises ValueError when `expires` is not an RFC 3339 date-time."""
        return cls(role_id, expires, None if expires is None else parse_instant(expires))

    def active_at(self, instant: Instant) -> bool:
        """policy-format.md: an entry with `expires` stops counting when time >= expires."""
        return self.expires_at is None or instant < self.expires_at


@dataclass(frozen=True, slots=True)
class User:
    id: str
    name: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    roles: tuple[Assignment, ...] = ()
    grants: tuple[Rule, ...] = ()
    denies: tuple[Rule, ...] = ()

    def rules(self, effect: Effect) -> tuple[Rule, ...]:
        return self.grants if effect is Effect.GRANT else self.denies


@dataclass(frozen=True, slots=True)
class Constraint:
    """Separation of duty: no user may hold two roles of `exclusive` (role ids)."""

    name: str
    exclusive: tuple[str, ...]


class Policy:
    """One tenant's policy. Dictionaries keep document order."""

    __slots__ = ("constraints", "resource_types", "roles", "tenant", "users")

    def __init__(
        self,
        tenant: str,
        resource_types: Mapping[str, tuple[str, ...]],
        roles: Mapping[str, Role] | None = None,
        users: Mapping[str, User] | None = None,
        constraints: tuple[Constraint, ...] = (),
    ) -> None:
        self.tenant = tenant
        self.resource_types: dict[str, tuple[str, ...]] = dict(resource_types)
        self.roles: dict[str, Role] = dict(roles or {})
        self.users: dict[str, User] = dict(users or {})
        self.constraints: tuple[Constraint, ...] = constraints

    def copy(self) -> Policy:
        """A policy that can be changed without changing this one (entities are shared)."""
        return Policy(self.tenant, self.resource_types, self.roles, self.users, self.constraints)

    def role_by_name(self, name: str) -> Role | None:
        for role in self.roles.values():
            if role.name == name:
                return role
        return None

    def role_name(self, role_id: str) -> str:
        role = self.roles.get(role_id)
        return role.name if role is not None else role_id

    def ancestors(self, role_id: str) -> Iterator[tuple[str, tuple[str, ...]]]:
        """Every role `role_id` holds through inheritance, itself first, each once.

        Yields `(role id, path of role ids from role_id to it)`, depth first
        in `inherits` order, so the first path found to a role is kept.
        """
        seen: set[str] = set()
        stack: list[tuple[str, tuple[str, ...]]] = [(role_id, (role_id,))]
        while stack:
            current, path = stack.pop()
            if current in seen or current not in self.roles:
                continue
            seen.add(current)
            yield current, path
            parents = self.roles[current].inherits
            stack.extend((p, (*path, p)) for p in reversed(parents))

    def descendants(self, role_id: str) -> set[str]:
        """Ids of the roles that inherit `role_id`, directly or not (itself included)."""
        children: dict[str, list[str]] = {}
        for role in self.roles.values():
            for parent in role.inherits:
                children.setdefault(parent, []).append(role.id)
        found = {role_id}
        stack = [role_id]
        while stack:
            for child in children.get(stack.pop(), ()):
                if child not in found:
                    found.add(child)
                    stack.append(child)
        return found

    def held_roles(self, user: User, instant: Instant) -> dict[str, tuple[str, ...]]:
        """The roles `user` holds at `instant`: role id -> path of ids from the assignment."""
        held: dict[str, tuple[str, ...]] = {}
        for assignment in user.roles:
            if assignment.active_at(instant):
                for role_id, path in self.ancestors(assignment.role_id):
                    held.setdefault(role_id, path)
        return held
