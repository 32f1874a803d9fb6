"""Repairing a tenant's stored entities that fail validation, failing closed.

"Loading a stored policy that fails validation must never lock a tenant out:
it is reported, and the server keeps serving what it can." `repair_entities`
turns whatever a store holds (entities damaged by an old bug, by hand, or by a
future one) into a policy that loads, and says, one line per problem, what was
wrong and what was done about it.

Rules of this module:

- Valid entities load exactly as `parse_policy(policy_document(...))` loads
  them, at the cost of that parse and a linear check of what it cannot see
  (each entity's kind, that its document is an object whose `id` is the
  entity's, that ids are 1 to 256 characters, that every role reference is
  the id of a stored role, and that assignments carry only their own fields:
  `policy_document` would read a dangling id, or an entry's stray `role`, as
  a role *name*).
- Fail closed: a repair never lets a request through that the stored policy
  did not mean to let through. Whatever cannot be read restricts: an invalid
  grant is dropped, an invalid deny becomes a deny of everything on its
  owner, an unreadable `suspended` suspends, and a user whose attributes
  cannot be read is suspended (conditions on them cannot be decided).
- Taking a role away from a holder (a dropped role, an inheritance edge that
  closed a cycle, an assignment that breaks a constraint or cannot be read)
  takes its grants away but not its denies: the holder keeps, as its own, the
  denies of every role it no longer reaches (every deny of the tenant when
  what it referenced cannot be read at all), since a deny overrides the
  holder's other grants. Eligible entries hold nothing, so dropping one
  narrows and keeps nothing.
- The work is done on the entity documents, by id: a role's name is how the
  format-1 document references it, so repairs there would break references.
  Each document is checked field by field first, then the references between
  entities (unknown and dropped roles, cycles, duplicate names, constraints),
  and `parse_policy` checks the result. Should it still fail (a bug here),
  the entities its problems name are dropped, a bounded number of rounds; in
  the very last resort the policy keeps only its resource types. Nothing here
  raises.

What is wrong, and what is done (each one said in `Repair.problems`):

- Any entity of an unknown kind or setting, stored twice, or without a
  document: dropped.
- A role or user whose document is not an object, whose id is not 1 to 256
  characters, or whose document's id is not the entity's: dropped (a role:
  every reference to it too, and its holders keep its denies; a deny of
  everything when its document cannot be read). A document without an `id`
  is given the entity's. Unknown fields are removed.
- A role's name missing, not a string, empty, or an earlier role's: its id
  (made unique: `id-2`, ...). A description not a string: `""`. An `inherits`
  entry naming an unknown or dropped role or the role itself, or closing a
  cycle (edges taken in document order): dropped. `inherits` not a list, or an
  entry not a string: dropped, and the role keeps every deny of the tenant.
  `inherits: null` (which `policy_document` cannot read): removed.
- A user's `name` not a string: removed. `suspended` not true or false:
  suspended. `attributes` not an object: suspended, with no attributes; an
  attribute not a JSON value: dropped, and the user suspended.
- A user's `roles` not a list, or an entry not an object or without a string
  `role_id`: dropped (an ordinary entry: the user keeps every deny of the
  tenant). An entry naming an unknown or dropped role, carrying an unknown
  field, or with a bad `expires`: dropped (an ordinary one: its role's denies
  kept). `eligible` not `{"max_hours": 1..720}`, or a second eligible entry of
  one role: dropped. Holding two roles of a constraint at `now`: the later
  entry dropped, its role's denies kept. `roles: null`: removed.
- A grant that is not valid (shape, unknown type or action, condition):
  dropped. A deny that is not valid, or `denies` not a list: a deny of
  everything in its place. Denies kept that would take an entity over 64 KiB:
  one deny of everything instead.
- `resource_types` not an object: none. A type named `""` or `"*"`, or whose
  actions are not a list: dropped. An action not a string, empty, `"*"` or
  listed twice: dropped.
- `constraints` not a list: none. An entry not an object, or whose `exclusive`
  is not a list: dropped. A name not a string, empty or taken:
  `constraint-<n>`. A member unknown or dropped: removed; a constraint left
  with fewer than two: dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sync.policy.conditions import is_json_value
from sync.policy.document import PolicyInvalid, Problem, parse_policy
from sync.policy.edits import MAX_ID
from sync.policy.instant import Instant
from sync.policy.model import WILDCARD, Assignment, Policy, Rule, canonical_rule, check_max_hours
from sync.policy.wording import QUOTE_CHARS, quoted
from sync.replication.entities import (
    CONSTRAINTS,
    KINDS,
    MAX_ENTITY_BYTES,
    RESOURCE_TYPES,
    ROLE,
    SETTINGS,
    USER,
    Entity,
    entity_bytes,
    policy_document,
    policy_entities,
)

Document = dict[str, Any]

_ROLE_KEYS = frozenset({"id", "name", "description", "inherits", "grants", "denies"})
_USER_KEYS = frozenset({"id", "name", "suspended", "attributes", "roles", "grants", "denies"})
_ENTRY_KEYS = frozenset({"role_id", "eligible", "expires"})
_RULE_KEYS = frozenset({"resource", "actions", "when"})
_CONSTRAINT_KEYS = frozenset({"name", "exclusive"})

_ROUNDS = 16
"""Rounds of dropping what `parse_policy` still names before the last resort."""
_SHOWN_RULES = 3
"""Rules a problem line describes before "and N more"."""

_LOAD_ERRORS = (
    ValueError,
    LookupError,
    TypeError,
    AttributeError,
    ArithmeticError,
    RecursionError,
)
"""What `policy_document` and `parse_policy` raise on documents they were not
written for (PolicyInvalid is a ValueError; a non-object role is a TypeError)."""

_MISSING: Any = object()


def _deny_all() -> Document:
    return {"resource": WILDCARD, "actions": [WILDCARD]}


@dataclass(frozen=True, slots=True)
class Repair:
    """What `repair_entities` made of a tenant's stored entities."""

    policy: Policy
    """The validated policy that can be served."""
    entities: list[Entity]
    """That policy as entities (`policy_entities(policy)`), to store back."""
    problems: list[str]
    """What was wrong and what was done, one line each, for a person or a log."""
    changed: bool
    """False when the stored entities were valid as they were."""


def repair_entities(tenant: str, entities: Sequence[Entity], now: Instant) -> Repair:
    """The policy of a tenant's stored `entities`, repaired (fail closed) if they
    do not load as they are. `now` is the time constraints are checked at, as
    for `parse_policy`. Never raises."""
    if _well_formed(entities):
        try:
            policy = parse_policy(policy_document(tenant, entities), now=now)
        except _LOAD_ERRORS:
            pass
        else:
            return Repair(policy, list(policy_entities(policy)), [], False)
    repairer = _Repairer(tenant, now)
    try:
        policy = repairer.repair(entities)
    except _LOAD_ERRORS as error:
        # A bug of this module must not lock the tenant out either.
        repairer.note("policy", f"repair failed ({type(error).__name__}: {error})")
        policy = repairer.types_only()
    return Repair(policy, list(policy_entities(policy)), repairer.problems, True)


# --- the fast check: what parse_policy cannot see -------------------------------------


def _is_id(value: object) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_ID


def _well_formed(entities: Sequence[Entity]) -> bool:
    """The entities are what `policy_document` was written for: each kind known,
    each key once, documents objects carrying their entity's id, assignments
    with only their own fields, and every role reference (inherits, assignments,
    constraint members) a stored role's id."""
    keys: set[tuple[str, str]] = set()
    roles: list[Document] = []
    users: list[Document] = []
    constraints: Any = []
    for entity in entities:
        kind, entity_id, document = entity.kind, entity.id, entity.document
        if type(kind) is not str or type(entity_id) is not str or (kind, entity_id) in keys:
            return False
        keys.add((kind, entity_id))
        if document is None:
            return False
        if kind == SETTINGS:
            if entity_id == CONSTRAINTS:
                constraints = document
            elif entity_id != RESOURCE_TYPES:
                return False
        elif kind in (ROLE, USER):
            if type(document) is not dict or not _is_id(entity_id):
                return False
            if document.get("id") != entity_id:
                return False
            (roles if kind == ROLE else users).append(document)
        else:
            return False
    role_ids = {document["id"] for document in roles}

    def known(references: object) -> bool:
        return type(references) is list and all(
            type(r) is str and r in role_ids for r in references
        )

    for role in roles:
        if "inherits" in role and not known(role["inherits"]):
            return False
    for user in users:
        if "roles" in user:
            entries = user["roles"]
            if type(entries) is not list:
                return False
            for entry in entries:
                # policy_document lets an entry's own "role" replace the name it
                # writes for role_id: only the fields of an entry may pass.
                if type(entry) is not dict or not entry.keys() <= _ENTRY_KEYS:
                    return False
                role_id = entry.get("role_id")
                if type(role_id) is not str or role_id not in role_ids:
                    return False
    if type(constraints) is not list:
        return False
    return all(type(c) is dict and known(c.get("exclusive")) for c in constraints)


# --- wording ---------------------------------------------------------------------------


def _shown(value: object) -> str:
    """`value` in a problem line: a string quoted, anything else as JSON, short."""
    if isinstance(value, str):
        return quoted(value)
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = quoted(repr(value))
    return text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + "…"


def _role(role_id: object) -> str:
    return f"role {quoted(role_id)}"


def _user(user_id: object) -> str:
    return f"user {quoted(user_id)}"


def _described(rules: Sequence[Document]) -> str:
    texts = []
    for rule in rules[:_SHOWN_RULES]:
        try:
            texts.append(Rule.build(rule["resource"], tuple(rule["actions"]), rule.get("when")))
        except _LOAD_ERRORS:  # checked before; never expected
            continue
    text = "; ".join(r.describe() for r in texts)
    more = len(rules) - _SHOWN_RULES
    return f"{text} (and {more} more)" if more > 0 else text


def _identity(rule: Document) -> str:
    return canonical_rule(rule.get("resource"), rule.get("actions"), rule.get("when"))


def _add_rules(rules: list[Document], new: Iterable[Document]) -> list[Document]:
    """Append each of `new` not already in `rules` (by meaning); the ones added."""
    present = {_identity(r) for r in rules}
    added: list[Document] = []
    for rule in new:
        identity = _identity(rule)
        if identity not in present:
            present.add(identity)
            rules.append(rule)
            added.append(rule)
    return added


# --- drafts: entity documents being repaired ------------------------------------------


@dataclass(slots=True)
class _RoleDraft:
    id: str
    stored_name: Any
    name: str = ""
    description: str = ""
    references: list[str] = field(default_factory=list)
    """Every string of the stored `inherits`, in order (checked against roles later)."""
    unreadable_inherits: bool = False
    inherits: list[str] = field(default_factory=list)
    grants: list[Document] = field(default_factory=list)
    denies: list[Document] = field(default_factory=list)
    kept_denies: int = 0
    """How many of `denies` (the last ones) were kept from roles it no longer reaches."""


@dataclass(slots=True)
class _Entry:
    role_id: str
    assignment: Assignment
    document: Document


@dataclass(slots=True)
class _UserDraft:
    id: str
    name: str | None = None
    suspended: bool = False
    attributes: Document = field(default_factory=dict)
    entries: list[_Entry] = field(default_factory=list)
    grants: list[Document] = field(default_factory=list)
    denies: list[Document] = field(default_factory=list)
    kept_denies: int = 0


@dataclass(slots=True)
class _Constraint:
    name: str
    exclusive: list[str]


_Note = Callable[[str, str], None]


def _silent(subject: str, text: str) -> None:
    """The `note` of a dropped role's document, read only for its denies."""


class _Repairer:
    """One repair: the drafts, what was lost, and the problem lines."""

    def __init__(self, tenant: str, now: Instant) -> None:
        self.tenant = tenant
        self.now = now
        self.problems: list[str] = []
        self.types: dict[str, list[str]] = {}
        self.all_actions: set[str] = set()
        self.roles: dict[str, _RoleDraft] = {}
        self.ghosts: dict[str, _RoleDraft | None] = {}
        """Dropped roles, by the id references use: their draft (for its denies),
        or None when their document could not be read at all."""
        self.users: dict[str, _UserDraft] = {}
        self.constraints: list[_Constraint] = []
        self.lost: dict[tuple[str, str], list[str | None]] = {}
        """(kind, id) of a holder -> the roles taken away from it (None: any role)."""
        self._reach: dict[str, frozenset[str]] = {}

    def note(self, subject: str, text: str) -> None:
        self.problems.append(f"{subject}: {text}")

    def repair(self, entities: Sequence[Entity]) -> Policy:
        settings, roles, users, ghosts = self.sort(entities)
        self.read_resource_types(settings.get(RESOURCE_TYPES, _MISSING))
        for role_id, document in roles:
            self.roles[role_id] = self.role_draft(role_id, document, self.note)
        for ghost_id, ghost in ghosts.items():
            self.ghosts[ghost_id] = (
                None if ghost is None else self.role_draft(ghost_id, ghost, _silent)
            )
        self.name_roles()
        self.resolve_inherits()
        for user_id, document in users:
            self.users[user_id] = self.user_draft(user_id, document)
        self.read_constraints(settings.get(CONSTRAINTS, []))
        self.keep_constraints()
        self.keep_lost_denies()
        return self.load()

    # --- sorting entities --------------------------------------------------------------

    def sort(
        self, entities: Sequence[Entity]
    ) -> tuple[
        dict[str, Any],
        list[tuple[str, Document]],
        list[tuple[str, Document]],
        dict[str, Document | None],
    ]:
        """Settings by name, the roles and users that can be read, in order, and
        the dropped roles (their documents, None if not objects) by entity id."""
        settings: dict[str, Any] = {}
        roles: list[tuple[str, Document]] = []
        users: list[tuple[str, Document]] = []
        ghosts: dict[str, Document | None] = {}
        seen: set[tuple[str, str]] = set()
        for entity in entities:
            kind, entity_id, document = entity.kind, entity.id, entity.document
            if kind not in KINDS:
                self.note(f"entity {_shown(kind)}:{_shown(entity_id)}", "unknown kind; dropped")
                continue
            subject = f"{kind} {quoted(entity_id)}"
            if document is None:
                self.note(subject, "has no document (a deleted entity); left out")
                continue
            if type(entity_id) is str:
                if (kind, entity_id) in seen:
                    self.note(subject, "stored twice; the second dropped")
                    continue
                seen.add((kind, entity_id))
            if kind == SETTINGS:
                if entity_id in (RESOURCE_TYPES, CONSTRAINTS):
                    settings[entity_id] = document
                else:
                    self.note(subject, "not a setting of a policy; dropped")
                continue
            ghost = type(entity_id) is str and kind == ROLE
            if type(document) is not dict:
                self.note(subject, f"document {_shown(document)} is not an object; dropped it")
                if ghost:
                    ghosts[entity_id] = None
                continue
            if not _is_id(entity_id):
                self.note(
                    subject,
                    f"id {_shown(entity_id)} is not a non-empty string of at most "
                    f"{MAX_ID} characters; dropped the {kind}",
                )
                if ghost:
                    ghosts[entity_id] = document
                continue
            document_id = document.get("id", _MISSING)
            if document_id is _MISSING:
                self.note(subject, "document has no id; given the entity's")
                document = document | {"id": entity_id}
            elif document_id != entity_id or type(document_id) is not str:
                self.note(
                    subject,
                    f"document id {_shown(document_id)} differs from the entity's; "
                    f"dropped the {kind}",
                )
                if ghost:
                    ghosts[entity_id] = document
                continue
            (roles if kind == ROLE else users).append((entity_id, document))
        return settings, roles, users, ghosts

    # --- resource types ----------------------------------------------------------------

    def read_resource_types(self, document: object) -> None:
        subject = f"{SETTINGS} {quoted(RESOURCE_TYPES)}"
        if document is _MISSING:
            self.note(subject, "missing; the policy has no resource types")
            return
        if not isinstance(document, dict):
            self.note(
                subject, f"{_shown(document)} is not an object; the policy has no resource types"
            )
            return
        for type_name, stored in document.items():
            here = f"resource type {_shown(type_name)}"
            if not isinstance(type_name, str) or not type_name or type_name == WILDCARD:
                self.note(subject, f'{here} is not a name other than "*"; dropped')
                continue
            actions = [] if stored is None else stored
            if not isinstance(actions, list):
                self.note(subject, f"{here}: actions {_shown(actions)} are not a list; dropped")
                continue
            listed: list[str] = []
            for action in actions:
                if not isinstance(action, str) or not action or action == WILDCARD:
                    self.note(
                        subject,
                        f"{here}: action {_shown(action)} is not a non-empty string "
                        'other than "*"; dropped',
                    )
                elif action in listed:
                    self.note(subject, f"{here}: action {quoted(action)} listed twice; dropped")
                else:
                    listed.append(action)
            self.types[type_name] = listed
            self.all_actions.update(listed)

    # --- rules -------------------------------------------------------------------------

    def rule_error(self, value: object) -> str | None:
        """Why `value` is not a valid rule of this policy, or None."""
        if not isinstance(value, dict):
            return f"{_shown(value)} is not an object"
        unknown = [key for key in value if key not in _RULE_KEYS]
        if unknown:
            return f"has an unknown field {_shown(unknown[0])}"
        resource = value.get("resource")
        if not isinstance(resource, str):
            return f"resource {_shown(resource)} is not a resource type"
        if resource != WILDCARD and resource not in self.types:
            return f"names the unknown resource type {quoted(resource)}"
        actions = value.get("actions")
        if not isinstance(actions, list) or not actions:
            return f"actions {_shown(actions)} are not a non-empty list"
        listed = self.all_actions if resource == WILDCARD else self.types[resource]
        for action in actions:
            if not isinstance(action, str):
                return f"action {_shown(action)} is not a string"
            if action != WILDCARD and action not in listed:
                return f"action {quoted(action)} is not listed for {quoted(resource)}"
        when = value.get("when")
        if when is not None and not isinstance(when, dict):
            return f"condition {_shown(when)} is not an object"
        try:
            Rule.build(resource, tuple(actions), when)
        except _LOAD_ERRORS as error:
            return f"has a malformed condition ({error})"
        return None

    def rules(self, value: object, where: str, subject: str, note: _Note) -> list[Document]:
        """The valid rules of a `grants` (`where`) list: invalid ones dropped."""
        if value is None:
            return []
        if not isinstance(value, list):
            note(subject, f"{where} {_shown(value)} is not a list; dropped")
            return []
        kept: list[Document] = []
        for i, rule in enumerate(value):
            error = self.rule_error(rule)
            if error is None:
                kept.append(rule)
            else:
                note(subject, f"{where}[{i}] {error}; dropped that grant")
        return kept

    def denies(self, value: object, subject: str, kind: str, note: _Note) -> list[Document]:
        """The rules of a `denies` list, each invalid one (or the whole list, when it
        is not one) made a deny of everything: dropping a deny would widen access."""
        everything = (
            "the role now denies everything to its holders"
            if kind == ROLE
            else "every request of the user is now denied"
        )
        if value is None:
            return []
        if not isinstance(value, list):
            note(subject, f"denies {_shown(value)} is not a list; {everything}")
            return [_deny_all()]
        kept: list[Document] = []
        for i, rule in enumerate(value):
            error = self.rule_error(rule)
            if error is None:
                kept.append(rule)
            else:
                note(subject, f"denies[{i}] {error}; made a deny of everything: {everything}")
                _add_rules(kept, [_deny_all()])
        return kept

    # --- roles -------------------------------------------------------------------------

    def role_draft(self, role_id: str, document: Document, note: _Note) -> _RoleDraft:
        subject = _role(role_id)
        for key in document:
            if key not in _ROLE_KEYS:
                note(subject, f"unknown field {_shown(key)}; removed")
        draft = _RoleDraft(role_id, document.get("name", _MISSING))
        description = document.get("description", "")
        if not isinstance(description, str):
            note(subject, f"description {_shown(description)} is not a string; set to ''")
            description = ""
        draft.description = description
        inherits = document.get("inherits")
        if isinstance(inherits, list):
            for j, parent in enumerate(inherits):
                if isinstance(parent, str):
                    draft.references.append(parent)
                else:
                    note(subject, f"inherits[{j}] {_shown(parent)} names no role; dropped")
                    draft.unreadable_inherits = True
        elif inherits is None:
            if "inherits" in document:
                note(subject, "inherits is null; removed")
        else:
            note(subject, f"inherits {_shown(inherits)} is not a list; dropped")
            draft.unreadable_inherits = True
        draft.grants = self.rules(document.get("grants"), "grants", subject, note)
        draft.denies = self.denies(document.get("denies"), subject, ROLE, note)
        return draft

    def name_roles(self) -> None:
        """Valid names stay with the first role carrying them; every other role is
        named by its id (made unique)."""
        used: set[str] = set()
        first: dict[str, str] = {}
        for role in self.roles.values():
            name = role.stored_name
            if isinstance(name, str) and name and name not in first:
                first[name] = role.id
                used.add(name)
                role.name = name
        for role in self.roles.values():
            name = role.stored_name
            if role.name:
                continue
            if name is _MISSING:
                why = "has no name"
            elif not isinstance(name, str):
                why = f"name {_shown(name)} is not a string"
            elif not name:
                why = "name is empty"
            else:
                why = f"name {quoted(name)} is taken by {_role(first[name])}"
            candidate, n = role.id, 2
            while candidate in used:
                candidate, n = f"{role.id}-{n}", n + 1
            used.add(candidate)
            role.name = candidate
            self.note(_role(role.id), f"{why}; named {quoted(candidate)}")

    def label(self, role_id: str) -> str:
        """`role 'r-1' ('viewer')`: a role by id, and by name when it has one apart."""
        draft = self.roles.get(role_id) or self.ghosts.get(role_id)
        name = None if draft is None else draft.name or draft.stored_name
        if isinstance(name, str) and name and name != role_id:
            return f"role {quoted(name)} (id {quoted(role_id)})"
        return _role(role_id)

    def lose(self, kind: str, holder: str, role_id: str | None) -> None:
        """`role_id` (None: a role that cannot be told) was taken away from a holder."""
        if role_id is None or role_id in self.roles or role_id in self.ghosts:
            self.lost.setdefault((kind, holder), []).append(role_id)

    def resolve_inherits(self) -> None:
        """Each role's `inherits`: references to unknown or dropped roles dropped,
        then every edge that, taken in document order, would close a cycle."""
        for role in self.roles.values():
            subject = _role(role.id)
            if role.unreadable_inherits:
                self.lose(ROLE, role.id, None)
            for parent in role.references:
                if parent == role.id:
                    self.note(subject, "inherits itself; dropped that edge")
                elif parent in self.roles:
                    role.inherits.append(parent)
                elif parent in self.ghosts:
                    self.note(subject, f"inherits {self.label(parent)}, which was dropped; dropped")
                    self.lose(ROLE, role.id, parent)
                else:
                    self.note(subject, f"inherits the unknown {_role(parent)}; dropped")
        self.break_cycles()

    def break_cycles(self) -> None:
        component = _components(self.roles, lambda r: self.roles[r].inherits)
        if all(component[p] != component[r] for r in self.roles for p in self.roles[r].inherits):
            return
        taken: dict[str, list[str]] = {r: [] for r in self.roles}
        for role in self.roles.values():
            kept: list[str] = []
            for parent in role.inherits:
                if component[parent] != component[role.id]:
                    kept.append(parent)
                    continue
                path = _path(taken, parent, role.id)
                if path is None:
                    kept.append(parent)
                    taken[role.id].append(parent)
                    continue
                names = " -> ".join(self.roles[r].name for r in (role.id, *path))
                self.note(
                    _role(role.id),
                    f"inherits {self.label(parent)}, which closes the cycle {names}; "
                    "dropped that edge",
                )
                self.lose(ROLE, role.id, parent)
            role.inherits = kept

    def reach(self, role_id: str) -> frozenset[str]:
        """The roles holding `role_id` holds, itself included (after repair)."""
        found = self._reach.get(role_id)
        if found is None:
            found = frozenset(_reachable([role_id], lambda r: self.roles[r].inherits))
            self._reach[role_id] = found
        return found

    # --- users -------------------------------------------------------------------------

    def user_draft(self, user_id: str, document: Document) -> _UserDraft:
        subject = _user(user_id)
        draft = _UserDraft(user_id)
        for key in document:
            if key not in _USER_KEYS:
                self.note(subject, f"unknown field {_shown(key)}; removed")
        name = document.get("name")
        if name is not None and not isinstance(name, str):
            self.note(subject, f"name {_shown(name)} is not a string; removed")
            name = None
        draft.name = name
        suspended = document.get("suspended", False)
        if suspended is not True and suspended is not False:
            self.note(subject, f"suspended {_shown(suspended)} is not true or false; suspended")
            suspended = True
        draft.suspended = suspended
        attributes = document.get("attributes")
        if attributes is None:
            attributes = {}
        if not isinstance(attributes, dict):
            self.note(
                subject,
                f"attributes {_shown(attributes)} are not an object; suspended, with no "
                "attributes (conditions on them cannot be decided)",
            )
            draft.suspended = True
            attributes = {}
        for key, value in attributes.items():
            if isinstance(key, str) and is_json_value(value):
                draft.attributes[key] = value
            else:
                self.note(
                    subject,
                    f"attribute {_shown(key)} is not a JSON value; dropped, and the user "
                    "suspended (conditions on it cannot be decided)",
                )
                draft.suspended = True
        self.read_entries(draft, document.get("roles", _MISSING))
        draft.grants = self.rules(document.get("grants"), "grants", subject, self.note)
        draft.denies = self.denies(document.get("denies"), subject, USER, self.note)
        return draft

    def read_entries(self, user: _UserDraft, entries: object) -> None:
        subject = _user(user.id)
        if entries is _MISSING:
            return
        if entries is None:
            self.note(subject, "roles is null; removed")
            return
        if not isinstance(entries, list):
            self.note(subject, f"roles {_shown(entries)} is not a list; dropped")
            self.lose(USER, user.id, None)
            return
        eligible_roles: set[str] = set()
        for j, entry in enumerate(entries):
            where = f"roles[{j}]"
            if not isinstance(entry, dict):
                self.note(subject, f"{where} {_shown(entry)} is not an object; dropped")
                self.lose(USER, user.id, None)
                continue
            # An eligible entry holds nothing by itself (policy-format.md §
            # Additions): dropping one narrows, and keeps nothing of its role.
            eligible = "eligible" in entry
            ordinary = not eligible
            role_id = entry.get("role_id")
            if not isinstance(role_id, str):
                self.note(subject, f"{where} names no role (role_id {_shown(role_id)}); dropped")
                if ordinary:
                    self.lose(USER, user.id, None)
                continue
            unknown = [key for key in entry if key not in _ENTRY_KEYS]
            if unknown:
                self.note(subject, f"{where} has an unknown field {_shown(unknown[0])}; dropped")
                if ordinary:
                    self.lose(USER, user.id, role_id)
                continue
            if role_id not in self.roles:
                if role_id in self.ghosts:
                    self.note(
                        subject, f"{where} names {self.label(role_id)}, which was dropped; dropped"
                    )
                    if ordinary:
                        self.lose(USER, user.id, role_id)
                else:
                    self.note(subject, f"{where} names the unknown {_role(role_id)}; dropped")
                continue
            max_hours: int | None = None
            if eligible:
                value = entry["eligible"]
                try:
                    if type(value) is not dict or value.keys() != {"max_hours"}:
                        raise ValueError(value)
                    max_hours = check_max_hours(value["max_hours"])
                except ValueError:
                    self.note(
                        subject,
                        f'{where} eligible {_shown(value)} is not {{"max_hours": 1 to 720}}; '
                        "dropped that eligibility",
                    )
                    continue
            expires = entry.get("expires")
            try:
                if expires is not None and not isinstance(expires, str):
                    raise ValueError(expires)
                assignment = Assignment.build(role_id, expires, max_hours)
            except (ValueError, ArithmeticError):
                what = "eligibility" if eligible else "assignment"
                self.note(
                    subject,
                    f"{where} expires {_shown(expires)} is not an RFC 3339 date-time; "
                    f"dropped that {what}",
                )
                if ordinary:
                    self.lose(USER, user.id, role_id)
                continue
            if eligible:
                if role_id in eligible_roles:
                    self.note(
                        subject,
                        f"{where} makes {self.label(role_id)} eligible a second time; dropped",
                    )
                    continue
                eligible_roles.add(role_id)
            document: Document = {"role_id": role_id}
            if eligible:
                document["eligible"] = {"max_hours": max_hours}
            if expires is not None:
                document["expires"] = expires
            user.entries.append(_Entry(role_id, assignment, document))

    # --- constraints -------------------------------------------------------------------

    def read_constraints(self, document: object) -> None:
        subject = f"{SETTINGS} {quoted(CONSTRAINTS)}"
        if document is None:
            return
        if not isinstance(document, list):
            self.note(subject, f"{_shown(document)} is not a list; every constraint dropped")
            return
        names: set[str] = set()
        for k, item in enumerate(document):
            here = f"constraints[{k}]"
            if not isinstance(item, dict):
                self.note(subject, f"{here} {_shown(item)} is not an object; dropped")
                continue
            for key in item:
                if key not in _CONSTRAINT_KEYS:
                    self.note(subject, f"{here} has an unknown field {_shown(key)}; removed")
            members = item.get("exclusive")
            if not isinstance(members, list):
                self.note(subject, f"{here} exclusive {_shown(members)} is not a list; dropped")
                continue
            name = item.get("name")
            if not isinstance(name, str) or not name or name in names:
                candidate, n = f"constraint-{k + 1}", 2
                while candidate in names:
                    candidate, n = f"constraint-{k + 1}-{n}", n + 1
                why = "is already taken" if isinstance(name, str) and name else "is not a name"
                self.note(subject, f"{here} name {_shown(name)} {why}; named {quoted(candidate)}")
                name = candidate
            names.add(name)
            exclusive: list[str] = []
            for member in members:
                if isinstance(member, str) and member in self.roles:
                    exclusive.append(member)
                elif isinstance(member, str) and member in self.ghosts:
                    self.note(
                        subject,
                        f"{quoted(name)} names {self.label(member)}, which was dropped; removed",
                    )
                else:
                    self.note(
                        subject, f"{quoted(name)} names the unknown role {_shown(member)}; removed"
                    )
            if len(exclusive) < 2:
                self.note(subject, f"{quoted(name)} lists fewer than two roles; dropped")
                continue
            self.constraints.append(_Constraint(name, exclusive))

    def keep_constraints(self) -> None:
        """A user holding two roles of one constraint at `now` loses the entry that
        made it so (the later one), as import would have refused it."""
        if not self.constraints:
            return
        members = {r for c in self.constraints for r in c.exclusive}
        for user in self.users.values():
            held: set[str] = set()
            kept: list[_Entry] = []
            for entry in user.entries:
                if entry.assignment.active_at(self.now):
                    holding = held | (self.reach(entry.role_id) & members)
                    broken = self.broken(holding)
                    if broken is not None:
                        self.note(
                            _user(user.id),
                            f"holding {self.label(entry.role_id)} breaks constraint {broken}; "
                            "unassigned",
                        )
                        self.lose(USER, user.id, entry.role_id)
                        continue
                    held = holding
                kept.append(entry)
            user.entries = kept

    def broken(self, held: set[str]) -> str | None:
        for constraint in self.constraints:
            present = [r for r in constraint.exclusive if r in held]
            if len(present) >= 2:
                first, second = (self.roles[r].name for r in present[:2])
                return f"{quoted(constraint.name)} ({quoted(first)} with {quoted(second)})"
        return None

    # --- denies of roles taken away ----------------------------------------------------

    def keep_lost_denies(self) -> None:
        """Every holder keeps, as its own, the denies of the roles it no longer reaches."""
        if not self.lost:
            return
        nodes: dict[str, _RoleDraft | None] = {**self.ghosts, **self.roles}
        every = list(nodes)

        def stored_edges(role_id: str) -> list[str]:
            draft = nodes[role_id]
            if draft is None:
                return []
            if draft.unreadable_inherits:
                return every
            return [r for r in draft.references if r in nodes]

        stored_denies = {
            r: ([_deny_all()] if d is None else list(d.denies)) for r, d in nodes.items()
        }

        def lost_denies(targets: list[str | None]) -> list[Document]:
            starts = every if None in targets else [t for t in targets if t is not None]
            found: list[Document] = []
            for role_id in _reachable(starts, stored_edges):
                found.extend(stored_denies[role_id])
            return found

        holders = sorted(self.lost.items(), key=lambda item: item[0][0] != ROLE)
        for (kind, holder_id), targets in holders:
            owner: _RoleDraft | _UserDraft
            if kind == ROLE:
                owner = self.roles[holder_id]
                still = [d for r in self.reach(holder_id) for d in stored_denies[r]]
            else:
                owner = self.users[holder_id]
                still = [
                    d
                    for e in owner.entries
                    if e.assignment.eligible is None and e.assignment.expires is None
                    for r in self.reach(e.role_id)
                    for d in self.roles[r].denies
                ]
            still_in_effect = {_identity(d) for d in still}
            new = [d for d in lost_denies(targets) if _identity(d) not in still_in_effect]
            added = _add_rules(owner.denies, new)
            if not added:
                continue
            owner.kept_denies = len(added)
            if None in targets:
                taken = "every role, since a role it referenced cannot be read"
            else:
                labels = ", ".join(self.label(t) for t in dict.fromkeys(targets) if t is not None)
                taken = f"{labels}, which it no longer holds"
            subject = _role(holder_id) if kind == ROLE else _user(holder_id)
            self.note(subject, f"keeps as its own the denies of {taken}: {_described(added)}")

    # --- loading -----------------------------------------------------------------------

    def role_document(self, role: _RoleDraft) -> Document:
        document: Document = {"id": role.id, "name": role.name}
        if role.description:
            document["description"] = role.description
        if role.inherits:
            document["inherits"] = list(role.inherits)
        if role.grants:
            document["grants"] = list(role.grants)
        if role.denies:
            document["denies"] = list(role.denies)
        if role.kept_denies and entity_bytes(document) > MAX_ENTITY_BYTES:
            self.too_large(_role(role.id), role)
            document["denies"] = list(role.denies)
        return document

    def user_document(self, user: _UserDraft) -> Document:
        document: Document = {"id": user.id}
        if user.name is not None:
            document["name"] = user.name
        if user.suspended:
            document["suspended"] = True
        if user.attributes:
            document["attributes"] = dict(user.attributes)
        if user.entries:
            document["roles"] = [e.document for e in user.entries]
        if user.grants:
            document["grants"] = list(user.grants)
        if user.denies:
            document["denies"] = list(user.denies)
        if user.kept_denies and entity_bytes(document) > MAX_ENTITY_BYTES:
            self.too_large(_user(user.id), user)
            document["denies"] = list(user.denies)
        return document

    def too_large(self, subject: str, owner: _RoleDraft | _UserDraft) -> None:
        del owner.denies[len(owner.denies) - owner.kept_denies :]
        _add_rules(owner.denies, [_deny_all()])
        owner.kept_denies = 0
        self.note(
            subject,
            f"the denies kept would make it larger than {MAX_ENTITY_BYTES} bytes; "
            "it denies everything instead",
        )

    def drafted_entities(self) -> list[Entity]:
        constraints = [{"name": c.name, "exclusive": list(c.exclusive)} for c in self.constraints]
        return [
            Entity(SETTINGS, RESOURCE_TYPES, {t: list(a) for t, a in self.types.items()}),
            Entity(SETTINGS, CONSTRAINTS, constraints),
            *(Entity(ROLE, r.id, self.role_document(r)) for r in self.roles.values()),
            *(Entity(USER, u.id, self.user_document(u)) for u in self.users.values()),
        ]

    def load(self) -> Policy:
        """The drafts, validated; what `parse_policy` still names is dropped."""
        for _round in range(_ROUNDS):
            try:
                return parse_policy(
                    policy_document(self.tenant, self.drafted_entities()), now=self.now
                )
            except PolicyInvalid as invalid:
                problems = invalid.problems
            except _LOAD_ERRORS as error:
                problems = [Problem("", f"{type(error).__name__}: {error}")]
            if not self.drop_named(problems):
                break
        return self.types_only()

    def drop_named(self, problems: list[Problem]) -> bool:
        """Drop the role, user or constraint each problem's path names (as placed in
        the document `load` built); False when one names none of these."""
        roles, users = list(self.roles), list(self.users)
        constraints = list(self.constraints)
        doomed: dict[str, set[int]] = {"roles": set(), "users": set(), "constraints": set()}
        for problem in problems:
            match = re.match(r"(roles|users|constraints)\[(\d+)\]", problem.path)
            if match is None:
                self.note("policy", f"still invalid after repair ({problem})")
                return False
            doomed[match[1]].add(int(match[2]))
        dropped = False
        for i in sorted(doomed["roles"]):
            if i < len(roles):
                dropped = True
                self.note(_role(roles[i]), "still invalid after repair; dropped the role")
                self.drop_role(roles[i])
        for i in sorted(doomed["users"]):
            if i < len(users):
                dropped = True
                self.note(_user(users[i]), "still invalid after repair; dropped the user")
                del self.users[users[i]]
        for i in sorted(doomed["constraints"]):
            if i < len(constraints):
                dropped = True
                self.note(
                    f"constraint {quoted(constraints[i].name)}",
                    "still invalid after repair; dropped",
                )
                self.constraints.remove(constraints[i])
        return dropped

    def drop_role(self, role_id: str) -> None:
        """Drop a role late: whoever held it denies everything (its denies unknown here)."""
        del self.roles[role_id]
        self._reach.clear()
        for role in self.roles.values():
            if role_id in role.inherits:
                role.inherits = [r for r in role.inherits if r != role_id]
                _add_rules(role.denies, [_deny_all()])
                self.note(_role(role.id), f"inherited {self.label(role_id)}; now denies everything")
        for user in self.users.values():
            held = [e for e in user.entries if e.role_id == role_id]
            if held:
                user.entries = [e for e in user.entries if e.role_id != role_id]
                if any(e.assignment.eligible is None for e in held):
                    _add_rules(user.denies, [_deny_all()])
                    self.note(_user(user.id), f"held {self.label(role_id)}; now denied everything")
        for constraint in list(self.constraints):
            constraint.exclusive = [r for r in constraint.exclusive if r != role_id]
            if len(constraint.exclusive) < 2:
                self.constraints.remove(constraint)

    def types_only(self) -> Policy:
        """The last resort: the resource types, and no roles and no users."""
        self.note("policy", "could not be repaired; serving only its resource types")
        types = {t: list(a) for t, a in self.types.items()}
        try:
            document = policy_document(self.tenant, [Entity(SETTINGS, RESOURCE_TYPES, types)])
            return parse_policy(document, now=self.now)
        except _LOAD_ERRORS:
            return Policy(self.tenant, {t: tuple(a) for t, a in types.items()})


# --- graphs ----------------------------------------------------------------------------


def _reachable(starts: Iterable[str], edges: Callable[[str], Iterable[str]]) -> set[str]:
    found: set[str] = set()
    stack = list(starts)
    while stack:
        node = stack.pop()
        if node not in found:
            found.add(node)
            stack.extend(edges(node))
    return found


def _path(edges: dict[str, list[str]], start: str, goal: str) -> list[str] | None:
    """A path of nodes from `start` to `goal` along `edges` (both ends included)."""
    previous: dict[str, str | None] = {start: None}
    stack = [start]
    while stack:
        node = stack.pop()
        if node == goal:
            path = [node]
            while (before := previous[path[-1]]) is not None:
                path.append(before)
            return path[::-1]
        for nxt in edges[node]:
            if nxt not in previous:
                previous[nxt] = node
                stack.append(nxt)
    return None


def _components(nodes: Iterable[str], edges: Callable[[str], list[str]]) -> dict[str, int]:
    """Strongly connected components (Kosaraju, iterative): node -> component number.
    Only an edge inside one component can close a cycle."""
    order: list[str] = []
    seen: set[str] = set()
    for start in nodes:
        if start in seen:
            continue
        seen.add(start)
        stack = [(start, iter(edges(start)))]
        while stack:
            node, pending = stack[-1]
            for nxt in pending:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, iter(edges(nxt))))
                    break
            else:
                stack.pop()
                order.append(node)
    incoming: dict[str, list[str]] = {node: [] for node in order}
    for node in order:
        for nxt in edges(node):
            incoming[nxt].append(node)
    component: dict[str, int] = {}
    for start in reversed(order):
        if start in component:
            continue
        number = len(component)
        component[start] = number
        stack2 = [start]
        while stack2:
            for before in incoming[stack2.pop()]:
                if before not in component:
                    component[before] = number
                    stack2.append(before)
    return component
