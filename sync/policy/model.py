"""The policy model: what a tenant's policy is, inside the product.

Entities are frozen; a `Policy` holds them in dictionaries keyed by stable
ids and is changed by replacing entities (see `sync.policy.edits`). Roles are
referenced by id everywhere inside the product (inheritance, assignments,
constraints), so renaming a role is one field change; the document format
uses names, and `sync.policy.document` translates at the boundary.
"""

from __future__ import annotations

import hashlib
import json
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


def _canonical(value: Any) -> Any:
    """`value` (JSON) with every integral float turned into the int it equals.

    policy-format.md § Conditions: numbers are one type (`5` equals `5.0`) and
    booleans are not numbers. Types are compared exactly, not with
    isinstance, so a bool (an int to Python) stays a bool, and the encoder
    then writes `true` and `1` apart and `5.0` like `5`.
    """
    kind = type(value)
    if kind is str or kind is bool or kind is int or value is None:
        return value
    if kind is float:
        return int(value) if value.is_integer() else value
    if kind is list or kind is tuple:
        return [_canonical(item) for item in value]
    if kind is dict or isinstance(value, Mapping):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    return value  # not JSON: the encoder raises TypeError


def canonical_rule(resource: Any, actions: Any, when: Any) -> str:
    """A rule's identity as compact JSON: `[resource, sorted actions, when]`.

    Actions are sorted with duplicates removed (a rule covers a set of
    actions); `when` keeps its lists in order and its keys sorted, with
    numbers and booleans kept apart as `_canonical` says. The text is the
    same in every process and Python version, so `rule_key` can be stored.
    The parts may be a stored document's, unchecked: whatever they hold gets
    a form. Raises TypeError for a value that is not JSON at all.
    """
    if isinstance(actions, list | tuple):
        if all(type(a) is str for a in actions):
            actions = sorted(set(actions))
        else:
            # Strings sort as strings; anything else (a malformed edit document's
            # `"actions": [1, ["x"]]`, refused later by check_rule) after them,
            # by its JSON text, so that such a rule gets an identity, not a crash.
            unique: dict[tuple[int, str], Any] = {}
            for action in actions:
                unique.setdefault(
                    (0, action) if type(action) is str else (1, _text(action)), action
                )
            actions = [unique[k] for k in sorted(unique)]
    return _text([resource, actions, when])


def condition_key(when: Mapping[str, Any] | None) -> str | None:
    """A condition's canonical JSON text (type-strict, as in `canonical_rule`), or
    None for no condition: equal keys mean the same condition."""
    return None if when is None else _text(when)


def json_key(value: Any) -> str:
    """A JSON value's canonical text, type-strict as in `canonical_rule` (`true` is
    not `1`, `5` is `5.0`): equal keys mean the same value."""
    return _text(value)


def rule_key_of(resource: Any, actions: Any, when: Any) -> str:
    """`rule_key` of a rule given by its document's parts (`resource`, `actions`,
    `when`; a stored entity's, not parsed): the same key as the built Rule's."""
    return _digest(canonical_rule(resource, actions, when))


def _digest(text: str) -> str:
    # surrogatepass: JSON text may hold a lone surrogate ("\ud800"), which
    # strict UTF-8 cannot encode; the key must exist for every rule.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
"""Made once: json.dumps with options builds an encoder per call, half the cost."""


def _text(value: Any) -> str:
    return _ENCODER.encode(_canonical(value))


@dataclass(frozen=True, slots=True, eq=False)
class Rule:
    """A grant or deny: `resource` is a type name or `*`; `actions` may hold `*`.

    `when` is the condition document as written (exported verbatim);
    `condition` its parsed tree and `predicate` the compiled closure.

    Two rules are equal when their canonical forms are (`canonical_rule`):
    same resource, same set of actions, and conditions equal as JSON with
    `true` never equal to `1` and `5` equal to `5.0`.
    """

    resource: str
    actions: tuple[str, ...]
    when: Mapping[str, Any] | None = None
    condition: Condition | None = field(default=None, compare=False, repr=False)
    predicate: Any = field(default=None, compare=False, repr=False)
    _identity: str = field(default="", init=False, compare=False, repr=False)
    _document: dict[str, Any] | None = field(default=None, init=False, compare=False, repr=False)
    _condition_text: str = field(default="", init=False, compare=False, repr=False)

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

    @property
    def identity(self) -> str:
        """`canonical_rule` of this rule, computed once, on first use.

        Not when the rule is made: a 50,000-user policy is loaded with all its
        rules, and only edits and diffs ever compare them.
        """
        identity = self._identity
        if not identity:  # never empty once computed: it is a JSON array
            identity = canonical_rule(self.resource, self.actions, self.when)
            object.__setattr__(self, "_identity", identity)
        return identity

    # Written out, not generated: the generated ones compare `when` with
    # Python's ==, for which `true` and `1` are the same condition.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Rule):
            return NotImplemented
        if self is other:
            return True
        # The resource is part of the identity: most rules of a role differ in
        # it, and then no canonical form needs computing (an edit compares the
        # rule it adds or removes with each rule of the role).
        return self.resource == other.resource and self.identity == other.identity

    def __hash__(self) -> int:
        return hash(self.identity)

    @property
    def condition_text(self) -> str | None:
        """The condition in words (`resource.region = $user.region`), None without one;
        written once, on first use: effective permissions list it for every rule a user
        holds, and a check's fixes list them for each change they try."""
        if self.condition is None:
            return None
        text = self._condition_text
        if not text:  # never empty once written: a condition has words
            text = str(self.condition)
            object.__setattr__(self, "_condition_text", text)
        return text

    def describe(self) -> str:
        """`route update when resource.region = $user.region`."""
        target = "any resource" if self.resource == WILDCARD else self.resource
        actions = "any action" if WILDCARD in self.actions else ", ".join(self.actions)
        text = f"{target} {actions}"
        if self.condition is not None:
            text += f" when {self.condition_text}"
        return text

    def to_document(self) -> dict[str, Any]:
        """The rule as a document: made once and the same object every time (an edit of
        a role writes all its rules again, before and after), so it must not be
        changed by the caller, as the `when` it holds must not."""
        document = self._document
        if document is None:
            document = {"resource": self.resource, "actions": list(self.actions)}
            if self.when is not None:
                document["when"] = self.when
            object.__setattr__(self, "_document", document)
        return document


def rule_key(rule: Rule) -> str:
    """A short stable name of `rule`: the first 16 hex digits of the SHA-256 of its
    canonical form (`canonical_rule`). Equal rules have equal keys, in any
    process and Python version (no `hash()`), so keys can be stored."""
    return _digest(rule.identity)


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


MAX_ELIGIBLE_HOURS = 720
"""policy-format.md § Additions: `max_hours` is an integer from 1 to 720."""


def check_max_hours(value: object) -> int:
    """`value` as an eligible entry's `max_hours`; raises ValueError unless it is an
    int from 1 to MAX_ELIGIBLE_HOURS (a bool or a float such as 8.0 is not)."""
    if type(value) is not int or not 1 <= value <= MAX_ELIGIBLE_HOURS:
        raise ValueError(
            f"max_hours must be an integer from 1 to {MAX_ELIGIBLE_HOURS}, not {value!r}"
        )
    return value


@dataclass(frozen=True, slots=True)
class Assignment:
    """An entry of a user's roles: the user holds `role_id`, until `expires`
    (RFC 3339 text as written) if given.

    With `eligible` (its `max_hours`) the entry is an eligibility, not a
    holding (policy-format.md § Additions): it never counts by itself, and
    `expires` is when the eligibility ends. An activation is a separate,
    ordinary entry of the same role with `expires`.
    """

    role_id: str
    expires: str | None = None
    expires_at: Instant | None = field(default=None, compare=False)
    eligible: int | None = None

    @classmethod
    def build(
        cls, role_id: str, expires: str | None = None, eligible: int | None = None
    ) -> Assignment:
        """Raises ValueError when `expires` is not an RFC 3339 date-time, or
        `eligible` (max_hours) is not an integer from 1 to 720."""
        if eligible is not None:
            check_max_hours(eligible)
        at = None if expires is None else parse_instant(expires)
        return cls(role_id, expires, at, eligible)

    def active_at(self, instant: Instant) -> bool:
        """policy-format.md: an entry with `expires` stops counting when time >= expires;
        an eligible entry never counts."""
        if self.eligible is not None:
            return False
        return self.expires_at is None or instant < self.expires_at

    def eligible_at(self, instant: Instant) -> bool:
        """This is an eligible entry and its eligibility has not ended at `instant`."""
        if self.eligible is None:
            return False
        return self.expires_at is None or instant < self.expires_at


@dataclass(frozen=True, slots=True)
class User:
    id: str
    name: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    roles: tuple[Assignment, ...] = ()
    grants: tuple[Rule, ...] = ()
    denies: tuple[Rule, ...] = ()
    suspended: bool = False
    """policy-format.md § Additions: every request of a suspended user is denied."""

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

    def children(self) -> dict[str, list[str]]:
        """Role id -> ids of the roles that inherit it directly (for many `descendants`)."""
        children: dict[str, list[str]] = {}
        for role in self.roles.values():
            for parent in role.inherits:
                children.setdefault(parent, []).append(role.id)
        return children

    def descendants(
        self, role_id: str, children: Mapping[str, list[str]] | None = None
    ) -> set[str]:
        """Ids of the roles that inherit `role_id`, directly or not (itself included).
        `children`: `self.children()`, when many are asked of an unchanged policy."""
        if children is None:
            children = self.children()
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
