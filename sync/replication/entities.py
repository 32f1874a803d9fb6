"""A policy as entities: the rows a store keeps and a change names.

Rules of this module:

- An entity is `(kind, id)` with a JSON document. Kinds: `role` (one per
  role), `user` (one per user, with the user's assignments and own rules) and
  `settings` (`resource_types` and `constraints`, the tenant-wide parts).
- Entity documents name roles by **id**, never by name, so renaming a role
  changes one entity. `policy_document` turns a set of entities back into a
  format-1 document (names in place of ids) that `parse_policy` validates.
- What an edit changed is read from its `Undo` (every entity it replaced, with
  the old value), so nothing here has to know what each edit does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from sync.policy.conditions import ConditionError
from sync.policy.document import (
    PolicyInvalid,
    constraints_document,
    parse_policy,
    role_document,
    user_document,
)
from sync.policy.edits import Undo
from sync.policy.instant import Instant
from sync.policy.model import FORMAT, Assignment, Constraint, Policy, Role, Rule, User
from sync.replication.encoding import compact_json

ROLE = "role"
USER = "user"
SETTINGS = "settings"
RESOURCE_TYPES = "resource_types"
CONSTRAINTS = "constraints"
KINDS = (SETTINGS, ROLE, USER)

Document = dict[str, Any]

MAX_ENTITY_BYTES = 64 * 1024
"""An entity's document as compact JSON may not exceed this: a role or a user
must fit, many times over, in one sync message (a snapshot part, a change)."""


@dataclass(frozen=True, slots=True)
class Entity:
    kind: str
    id: str
    document: Any
    """The entity's document; None for an entity that no longer exists."""

    @property
    def key(self) -> str:
        """`"role:<id>"`, `"user:<id>"` or `"settings:<name>"`: the entity's name in a change."""
        return f"{self.kind}:{self.id}"


def policy_entities(policy: Policy, *, by_name: bool = False) -> Iterator[Entity]:
    """Every entity of `policy`: settings first, then roles and users in policy order.

    `by_name`: reference roles by name, as a format-1 document does (for export).
    """
    name = policy.role_name if by_name else None
    types = {t: list(actions) for t, actions in policy.resource_types.items()}
    yield Entity(SETTINGS, RESOURCE_TYPES, types)
    yield Entity(SETTINGS, CONSTRAINTS, constraints_document(policy.constraints, name))
    for role in policy.roles.values():
        yield Entity(ROLE, role.id, role_document(role, name))
    for user in policy.users.values():
        yield Entity(USER, user.id, user_document(user, name))


def changed_entities(undo: Undo) -> tuple[list[Entity], list[Entity]]:
    """What the edits recorded in `undo` changed: (before, after), in the same order.

    An entity that did not exist before, or no longer exists, has a None
    document on that side. Entities changed and changed back are left out.
    """
    policy = undo.policy
    first: dict[tuple[str, str], Any] = {}
    for table, key, old in undo.saved:
        kind = ROLE if table is policy.roles else USER
        first.setdefault((kind, key), old)
    before: list[Entity] = []
    after: list[Entity] = []
    for (kind, key), old in first.items():
        new = (policy.roles if kind == ROLE else policy.users).get(key)
        if new is old:
            continue
        before.append(Entity(kind, key, _entity_document(old)))
        after.append(Entity(kind, key, _entity_document(new)))
    if policy.constraints != undo.constraints:
        before.append(Entity(SETTINGS, CONSTRAINTS, constraints_document(undo.constraints)))
        after.append(Entity(SETTINGS, CONSTRAINTS, constraints_document(policy.constraints)))
    return before, after


def _entity_document(value: Any) -> Document | None:
    if isinstance(value, Role):
        return role_document(value)
    if isinstance(value, User):
        return user_document(value)
    return None  # absent (Undo's marker for "was not there")


def policy_document(tenant: str, entities: Iterable[Entity], *, by_name: bool = False) -> Document:
    """The format-1 document of a tenant's entities (roles in the order given).

    Role ids are written as names where the format references roles (unless
    the entities already do: `by_name`), and each role keeps its `id`. The
    result is for `parse_policy`, which validates it: a reference to a role
    that is not there comes back as a problem there.
    """
    types: Any = {}
    constraints: list[Document] = []
    roles: list[Document] = []
    users: list[Document] = []
    for entity in entities:
        if entity.kind == SETTINGS and entity.id == RESOURCE_TYPES:
            types = entity.document
        elif entity.kind == SETTINGS and entity.id == CONSTRAINTS:
            constraints = entity.document
        elif entity.kind == ROLE:
            roles.append(entity.document)
        elif entity.kind == USER:
            users.append(entity.document)
    document: Document = {"format": FORMAT, "tenant": tenant, "resource_types": types}
    if by_name:
        document |= {"roles": roles, "users": users}
        if constraints:
            document["constraints"] = constraints
        return document
    names: dict[str, str] = {role["id"]: role["name"] for role in roles}

    def name(role_id: str) -> str:
        return names.get(role_id, role_id)

    document |= {
        "roles": [
            role | {"inherits": [name(r) for r in role["inherits"]]} if "inherits" in role else role
            for role in roles
        ],
        "users": [_user_with_names(user, name) for user in users],
    }
    if constraints:
        document["constraints"] = [
            {"name": c["name"], "exclusive": [name(r) for r in c["exclusive"]]} for c in constraints
        ]
    return document


NOT_A_POLICY = (PolicyInvalid, KeyError, TypeError, ValueError, AttributeError)
"""What `built_policy` raises for entities that make no policy."""


def built_policy(tenant: str, entities: Sequence[Entity], now: Instant) -> Policy:
    """The policy of entities that were validated when they were stored: built as
    trusted (`trusted_policy`), and validated again (`parse_policy`) only if they do
    not build. Raises one of NOT_A_POLICY when they do not validate either."""
    try:
        return trusted_policy(tenant, entities)
    except (KeyError, TypeError, ValueError, AttributeError, ConditionError):
        pass
    return parse_policy(policy_document(tenant, entities), now=now)


def document_entities(document: Mapping[str, Any]) -> list[Entity]:
    """The entities of a document `policy_document` wrote (roles referenced by name):
    its inverse, in the same order, without validating anything.

    For a snapshot, whose digest then shows whether these are the server's own
    entities (sync/replication/follow.py). A reference to a name that is no
    role's is kept as written, as `policy_document` keeps an id that is no role's.
    Raises KeyError, TypeError, AttributeError or ValueError for a document of
    another shape.
    """
    roles = document["roles"]
    users = document["users"]
    if type(roles) is not list or type(users) is not list:
        raise TypeError("roles and users are lists")
    ids: dict[str, str] = {role["name"]: role["id"] for role in roles}

    def role_id(name: str) -> str:
        return ids.get(name, name)

    entities = [
        Entity(SETTINGS, RESOURCE_TYPES, document["resource_types"]),
        Entity(SETTINGS, CONSTRAINTS, [
            {"name": c["name"], "exclusive": [role_id(r) for r in c["exclusive"]]}
            for c in document.get("constraints", ())
        ]),
    ]  # fmt: skip
    for role in roles:
        if "inherits" in role:
            inherits = [role_id(r) for r in role["inherits"]]
            entities.append(Entity(ROLE, role["id"], role | {"inherits": inherits}))
        else:
            entities.append(Entity(ROLE, role["id"], role))
    for user in users:
        if "roles" in user:
            # `role_id` first, the rest as sent: the order `user_document` writes.
            held = [
                {"role_id": role_id(a["role"])} | {k: v for k, v in a.items() if k != "role"}
                for a in user["roles"]
            ]
            entities.append(Entity(USER, user["id"], user | {"roles": held}))
        else:
            entities.append(Entity(USER, user["id"], user))
    return entities


def _user_with_names(user: Document, name: Any) -> Document:
    """The user's document with `role_id` written as `role` (a name) in each entry of
    its roles; every other field (`expires`, `eligible`; the user's `suspended`) as
    stored, for `parse_policy` to validate."""
    if "roles" not in user:
        return user
    roles = [
        # `role` last: a stray `role` field of a damaged entry must not name another role.
        {k: v for k, v in a.items() if k != "role_id"} | {"role": name(a["role_id"])}
        for a in user["roles"]
    ]
    return user | {"roles": roles}


def trusted_policy(tenant: str, entities: Iterable[Entity]) -> Policy:
    """The policy of entities that were validated when they were stored, built without
    validating them again: a replica's own rows, read back from its authenticated
    file, which `parse_policy` checked when they arrived (a snapshot, or a change
    replayed). About five times faster than `parse_policy(policy_document(...))`,
    which is what makes a 50,000-user replica quick to load.

    Raises KeyError, TypeError, ValueError or AttributeError for entities that
    are not what was stored; the caller then validates them the slow way.
    """
    types: dict[str, tuple[str, ...]] = {}
    constraints: tuple[Constraint, ...] = ()
    roles: dict[str, Role] = {}
    users: dict[str, User] = {}
    parts = _Shared()
    rule = parts.rule
    for entity in entities:
        document = entity.document
        if entity.kind == ROLE:
            roles[entity.id] = Role(
                document["id"], document["name"], document.get("description", ""),
                tuple(document.get("inherits", ())),
                tuple(rule(r) for r in document.get("grants", ())),
                tuple(rule(r) for r in document.get("denies", ())),
            )  # fmt: skip
        elif entity.kind == USER:
            users[entity.id] = trusted_user(document, parts)
        elif entity.id == RESOURCE_TYPES:
            types = {name: tuple(actions) for name, actions in document.items()}
        elif entity.id == CONSTRAINTS:
            constraints = tuple(Constraint(c["name"], tuple(c["exclusive"])) for c in document)
    for role in roles.values():
        if any(parent not in roles for parent in role.inherits):
            raise KeyError(f"role {role.id} inherits a role that is not there")
    for user in users.values():
        _check_holdings(user, roles)
    return Policy(tenant, types, roles, users, constraints)


class _Shared:
    """Parts many entities write alike, each built once: rules (roles and users share
    rules written alike; a rule's condition is compiled once) and plain assignments
    (a role held without expiry or eligibility). Both are immutable."""

    def __init__(self) -> None:
        self._rules: dict[str, Rule] = {}
        self._plain: dict[str, Assignment] = {}

    def rule(self, document: Document) -> Rule:
        key = compact_json(document)
        found = self._rules.get(key)
        if found is None:
            when = document.get("when")
            found = self._rules[key] = Rule(document["resource"], tuple(document["actions"]), when)
        return found

    def assignments(self, entries: Iterable[Document]) -> tuple[Assignment, ...]:
        """A user's `roles` entries, each plain one the shared object (the hot path of
        building a user: most entries are plain)."""
        plain = self._plain
        found = []
        for entry in entries:
            assignment = plain.get(entry["role_id"]) if len(entry) == 1 else None
            found.append(assignment if assignment is not None else self.assignment(entry))
        return tuple(found)

    def assignment(self, document: Document) -> Assignment:
        if len(document) == 1:
            role_id = document["role_id"]
            found = self._plain.get(role_id)
            if found is None:
                found = self._plain[role_id] = Assignment.build(role_id)
            return found
        return Assignment.build(
            document["role_id"], document.get("expires"),
            document["eligible"]["max_hours"] if "eligible" in document else None,
        )  # fmt: skip


_ABSENT: tuple[()] = ()
"""A key the document does not have (None would be a value it has: a wrong type)."""


def trusted_user(document: Document, parts: _Shared) -> User:
    """A stored user's document as a `User`, as `trusted_policy` builds it; raises as it
    does for a document that is not what was stored."""
    rule = parts.rule
    grants = document.get("grants", _ABSENT)
    denies = document.get("denies", _ABSENT)
    return User(
        document["id"], document.get("name"), document.get("attributes", {}),
        parts.assignments(document.get("roles", ())),
        () if grants is _ABSENT else tuple([rule(r) for r in grants]),
        () if denies is _ABSENT else tuple([rule(r) for r in denies]),
        suspended=document.get("suspended", False) is True,
    )  # fmt: skip


def _check_holdings(user: User, roles: Mapping[str, Role]) -> None:
    for assignment in user.roles:
        if assignment.role_id not in roles:
            raise KeyError(f"user {user.id} holds a role that is not there")


class StoredUsers:
    """A policy's users read from their stored documents one at a time, as they are
    first asked for: the `load_user` of an engine that decides a batch from a
    replica, so that loading does not grow with the tenant (Engine).

    `documents` maps each user id to its stored document as JSON text; `roles` are
    the policy's (built whole). A document that does not build as stored goes to
    `validated(user_id, document)`, which builds it the slow way (None: no user).
    """

    def __init__(
        self,
        documents: Mapping[str, str | bytes],
        roles: Mapping[str, Role],
        validated: Callable[[str, Any], User | None],
    ) -> None:
        self._documents = documents
        self._roles = roles
        self._validated = validated
        self._parts = _Shared()

    def __call__(self, user_id: str) -> User | None:
        text = self._documents.get(user_id)
        if text is None:
            return None
        try:
            document = orjson.loads(text)
        except orjson.JSONDecodeError:
            return self._validated(user_id, None)
        try:
            user = trusted_user(document, self._parts)
            _check_holdings(user, self._roles)
            if user.id != user_id:
                raise KeyError(f"user {user_id} is stored as {user.id}")
        except (KeyError, TypeError, ValueError, AttributeError, ConditionError):
            return self._validated(user_id, document)
        return user


def entity_bytes(document: Any) -> int:
    """Bytes of an entity document as compact UTF-8 JSON."""
    return len(compact_json(document).encode("utf-8", "surrogatepass"))


def oversized(entities: Iterable[Entity]) -> Entity | None:
    """The first entity whose document is over `MAX_ENTITY_BYTES`, if any."""
    for entity in entities:
        if entity.document is not None and entity_bytes(entity.document) > MAX_ENTITY_BYTES:
            return entity
    return None
