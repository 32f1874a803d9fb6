"""Members: the parts of a policy that merge on their own, and their stamps.

An edit's effect is read as a set of member changes, diffed from the entity
documents before and after it (sync/replication/entities.py), so nothing here
has to know what each edit does (issue 7 § Merge rules).

Rules of this module:

- Members (a tuple of strings, `member_text` for storage):
  - `(kind, id)`: the entity itself (a role or a user) exists;
  - a role's `name`, `description`, each `inherits` parent, each `grant` and
    `deny` (named by `rule_key`, a hash of the canonical, type-strict rule);
  - a user's `name`, each `attribute`, each `role` (its ordinary assignment;
    the value is its expiry, None for none), each `eligible` entry (value
    `[max_hours, expires]`), each `grant` and `deny`, and `suspended`;
  - the tenant settings: each `constraint` and each resource `type`.
- A change is **narrowing** (removes a grant, an inheritance, an assignment or
  an eligibility, adds a deny, deletes an entity, suspends a user, moves an
  expiry earlier or lowers `max_hours`), **widening** (the reverse) or
  **scalar** (names, descriptions, attributes, settings). An assignment whose
  expiry moves later while another part moves earlier is widening (the bias
  is to least privilege: widening is what a stale edit may not do).
- Creating or deleting an entity is one change of its existence member; the
  members inside it are not stamped one by one (an edit made before the
  entity appeared or disappeared is judged by the existence stamp).
- A **stamp** per member: the version and client of its last change and of
  its last narrowing. `(kind, id, "*")` stamps the last change of anything in
  the entity (for `merged`). Tombstones (existence stamps of deleted
  entities) outlive them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sync.policy.instant import Instant, parse_instant
from sync.policy.model import rule_key_of
from sync.replication.encoding import canonical_json_bytes, compact_json
from sync.replication.entities import ROLE, SETTINGS, USER, Entity

Member = tuple[str, ...]
ABSENT: Any = type("Absent", (), {"__repr__": lambda self: "ABSENT"})()
"""The value of a member that is not there."""
TOUCHED = "*"
"""The part of the pseudo-member that stamps any change of an entity."""


class ChangeKind(StrEnum):
    NARROWING = "narrowing"
    WIDENING = "widening"
    SCALAR = "scalar"


@dataclass(frozen=True, slots=True)
class MemberChange:
    member: Member
    kind: ChangeKind
    old: Any
    """The value before (`ABSENT` when it was not there)."""
    new: Any


@dataclass(frozen=True, slots=True)
class Stamp:
    """The last change of a member and its last narrowing, each with the latest one
    by a client other than its author (`*_other`): a stale client that changes a
    member itself must not hide that someone else changed it after its base."""

    changed: int
    changed_by: str
    narrowed: int | None = None
    narrowed_by: str | None = None
    changed_other: int | None = None
    """The latest change by a client other than `changed_by` (None: none known)."""
    narrowed_other: int | None = None
    """The latest narrowing by a client other than `narrowed_by`."""

    def changed_since(self, base: int, client: str) -> int | None:
        """The latest change after `base` by a client other than `client`, if any."""
        return _since(self.changed, self.changed_by, self.changed_other, base, client)

    def narrowed_since(self, base: int, client: str) -> int | None:
        """The latest narrowing after `base` by a client other than `client`, if any."""
        return _since(self.narrowed, self.narrowed_by, self.narrowed_other, base, client)


def _since(
    version: int | None, by: str | None, other: int | None, base: int, client: str
) -> int | None:
    found = version if by != client else other
    return found if found is not None and found > base else None


def _moved(
    version: int | None, by: str | None, other: int | None, now: int, client: str
) -> tuple[int, str, int | None]:
    """(latest, its author, latest by someone else) after `client` changes it at `now`."""
    if by is None or by == client:
        return now, client, other
    return now, client, version


def member_text(member: Member) -> str:
    """The member as stored: a compact JSON array of its parts."""
    return compact_json(list(member))


def member_from_text(text: str) -> Member:
    return tuple(json.loads(text))


def member_label(member: Member) -> str:
    """The member in words for a reason: `role r-1 name`, `user alice attribute region`."""
    if len(member) == 2:
        return f"{member[0]} {member[1]}"
    return " ".join(member)


def _mapping(value: Any) -> dict[str, Any]:
    # Documents read from a store may be damaged (sync/replication/repair.py): a
    # part that is not what it should be is read as empty, never raises.
    return value if isinstance(value, dict) else {}


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _rule_members(prefix: Member, part: str, rules: Any) -> Iterable[tuple[Member, Any]]:
    for rule in map(_mapping, _items(rules)):
        key = rule_key_of(rule.get("resource"), rule.get("actions"), rule.get("when"))
        yield (*prefix, part, key), True


Sections = frozenset[str] | None
"""The top-level fields of a document to read members from (None: all)."""


def _role_members(
    role_id: str, document: Mapping[str, Any], only: Sections = None
) -> dict[Member, Any]:
    prefix: Member = (ROLE, role_id)
    members: dict[Member, Any] = {}
    if only is None or "name" in only:
        members[(*prefix, "name")] = document.get("name")
    if only is None or "description" in only:
        members[(*prefix, "description")] = document.get("description", "")
    if only is None or "inherits" in only:
        for parent in _items(document.get("inherits")):
            if isinstance(parent, str):
                members[(*prefix, "inherits", parent)] = True
    if only is None or "grants" in only:
        members.update(_rule_members(prefix, "grant", document.get("grants")))
    if only is None or "denies" in only:
        members.update(_rule_members(prefix, "deny", document.get("denies")))
    return members


def _latest(current: Any, expires: Any) -> Any:
    """The longer of two ends of an assignment (None is never)."""
    if current is ABSENT:
        return expires
    end, other = _end(expires), _end(current)
    if end is None or other is None:
        return None
    return expires if end > other else current


def _user_members(
    user_id: str, document: Mapping[str, Any], only: Sections = None
) -> dict[Member, Any]:
    prefix: Member = (USER, user_id)
    members: dict[Member, Any] = {}
    if only is None or "name" in only:
        members[(*prefix, "name")] = document.get("name")
    if only is None or "attributes" in only:
        for key, value in _mapping(document.get("attributes")).items():
            members[(*prefix, "attribute", key)] = value
    if only is None or "roles" in only:
        for entry in map(_mapping, _items(document.get("roles"))):
            role_id = entry.get("role_id")
            if not isinstance(role_id, str):
                continue
            eligible = entry.get("eligible")
            if eligible is not None:
                members[(*prefix, "eligible", role_id)] = [
                    _mapping(eligible).get("max_hours"),
                    entry.get("expires"),
                ]
            else:
                member = (*prefix, "role", role_id)
                members[member] = _latest(members.get(member, ABSENT), entry.get("expires"))
    if only is None or "grants" in only:
        members.update(_rule_members(prefix, "grant", document.get("grants")))
    if only is None or "denies" in only:
        members.update(_rule_members(prefix, "deny", document.get("denies")))
    if (only is None or "suspended" in only) and document.get("suspended"):
        members[(*prefix, "suspended")] = True
    return members


def _settings_members(name: str, document: Any) -> dict[Member, Any]:
    prefix: Member = (SETTINGS, name)
    if name == "constraints":
        found = map(_mapping, _items(document))
        return {(*prefix, "constraint", str(c.get("name"))): c.get("exclusive") for c in found}
    return {(*prefix, "type", t): actions for t, actions in _mapping(document).items()}


def entity_members(
    kind: str, entity_id: str, document: Any, only: Sections = None
) -> dict[Member, Any]:
    """The members inside one entity document (without its existence member), from
    the top-level fields `only` if given; a damaged document gives the members
    that can be read."""
    if not isinstance(document, dict) and kind != SETTINGS:
        return {}
    if kind == ROLE:
        return _role_members(entity_id, document, only)
    if kind == USER:
        return _user_members(entity_id, document, only)
    return _settings_members(entity_id, document)


_PLAIN = (str, int, float, type(None))


def _same(left: Any, right: Any) -> bool:
    """The same JSON value, type for type (`true` is not `1`, whatever Python says)."""
    if left is right:
        return True
    kind = type(left)
    if kind is not type(right):
        return False
    if kind in _PLAIN or kind is bool:
        return bool(left == right)
    return canonical_json_bytes(left) == canonical_json_bytes(right)


def _end(text: Any) -> Instant | None:
    """When an assignment ends; None for never, and for an end that cannot be read
    (the widest reading: a damaged end never makes a change look narrowing)."""
    try:
        return None if text is None else parse_instant(text)
    except (TypeError, ValueError):
        return None


def _moves_later(old: str | None, new: str | None) -> bool:
    """Whether an end moves later (None: never ends)."""
    before, after = _end(old), _end(new)
    if before is None:
        return False
    return after is None or after > before


def classify(member: Member, old: Any, new: Any) -> ChangeKind:
    """Narrowing, widening or scalar (module rules)."""
    if len(member) == 2:
        return ChangeKind.WIDENING if old is ABSENT else ChangeKind.NARROWING
    part = member[2]
    if part in ("inherits", "grant"):
        return ChangeKind.WIDENING if old is ABSENT else ChangeKind.NARROWING
    if part in ("deny", "suspended"):
        return ChangeKind.NARROWING if old is ABSENT else ChangeKind.WIDENING
    if part in ("role", "eligible"):
        if old is ABSENT:
            return ChangeKind.WIDENING
        if new is ABSENT:
            return ChangeKind.NARROWING
        if part == "role":
            return ChangeKind.WIDENING if _moves_later(old, new) else ChangeKind.NARROWING
        old_hours, new_hours = old[0], new[0]
        if not isinstance(old_hours, int) or not isinstance(new_hours, int):
            return ChangeKind.WIDENING  # a damaged document: the conservative reading
        more_hours = new_hours > old_hours
        return (
            ChangeKind.WIDENING
            if more_hours or _moves_later(old[1], new[1])
            else (ChangeKind.NARROWING)
        )
    return ChangeKind.SCALAR


def member_changes(kind: str, entity_id: str, before: Any, after: Any) -> list[MemberChange]:
    """What changed in one entity, as member changes (module rules); `before` and
    `after` are its documents (None where it does not exist)."""
    if before is None and after is None:
        return []
    existence: Member = (kind, entity_id)
    if before is None:
        return [MemberChange(existence, ChangeKind.WIDENING, ABSENT, True)]
    if after is None:
        return [MemberChange(existence, ChangeKind.NARROWING, True, ABSENT)]
    only: Sections = None
    if kind != SETTINGS and isinstance(before, dict) and isinstance(after, dict):
        # Most edits change one field of a document: only the fields that differ
        # are read member by member.
        only = frozenset(
            field for field in before.keys() | after.keys()
            if not _same(before.get(field), after.get(field))
        )  # fmt: skip
        if not only:
            return []
    changes: list[MemberChange] = []
    if only is not None and only & _RULE_SECTIONS:
        # A role with many rules: only the rules that differ get their keys made.
        for section, part in (("grants", "grant"), ("denies", "deny")):
            if section in only:
                changes += _rule_changes((kind, entity_id), part, before, after, section)
        only -= _RULE_SECTIONS
    old = entity_members(kind, entity_id, before, only)
    new = entity_members(kind, entity_id, after, only)
    for member, value in new.items():
        previous = old.get(member, ABSENT)
        if previous is ABSENT or not _same(previous, value):
            changes.append(MemberChange(member, classify(member, previous, value), previous, value))
    for member, value in old.items():
        if member not in new:
            changes.append(MemberChange(member, classify(member, value, ABSENT), value, ABSENT))
    return changes


_RULE_SECTIONS = frozenset({"grants", "denies"})


def _rule_changes(
    prefix: Member, part: str, before: Mapping[str, Any], after: Mapping[str, Any], section: str
) -> list[MemberChange]:
    """The rules added to and removed from one section. Rules whose documents are the
    same on both sides are matched first, without a key (making a rule's key is the
    costly part); the others are compared by their keys."""
    old_rules = [_mapping(r) for r in _items(before.get(section))]
    new_rules = [_mapping(r) for r in _items(after.get(section))]
    # The same document object on both sides is the same rule (documents of an
    # unchanged rule are made once: Rule.to_document); the rest by their text.
    same_object: dict[int, int] = {}
    for rule in old_rules:
        same_object[id(rule)] = same_object.get(id(rule), 0) + 1
    fresh = []
    for rule in new_rules:
        if same_object.get(id(rule)):
            same_object[id(rule)] -= 1
        else:
            fresh.append(rule)
    unmatched: dict[bytes, list[Mapping[str, Any]]] = {}
    for rule in old_rules:
        if same_object.get(id(rule)):
            same_object[id(rule)] -= 1
            unmatched.setdefault(canonical_json_bytes(rule), []).append(rule)
    added = []
    for rule in fresh:
        same = unmatched.get(canonical_json_bytes(rule))
        if same:
            same.pop()
        else:
            added.append(rule)
    removed = [rule for rules in unmatched.values() for rule in rules]

    def keys(rules: Sequence[Mapping[str, Any]]) -> dict[Member, Any]:
        return dict(_rule_members(prefix, part, rules))

    old, new = keys(removed), keys(added)
    changes = [
        MemberChange(m, classify(m, ABSENT, True), ABSENT, True) for m in new if m not in old
    ]
    changes += [
        MemberChange(m, classify(m, True, ABSENT), True, ABSENT) for m in old if m not in new
    ]
    return changes


def entity_changes(before: Sequence[Entity], after: Sequence[Entity]) -> list[MemberChange]:
    """Member changes of entities changed together (`changed_entities` order)."""
    changes: list[MemberChange] = []
    for old, new in zip(before, after, strict=True):
        changes.extend(member_changes(new.kind, new.id, old.document, new.document))
    return changes


def stamp_changes(
    stamp_of: Callable[[Member], Stamp | None],
    changes: Iterable[MemberChange],
    entities: Iterable[Entity],
    version: int,
    client: str,
) -> dict[Member, Stamp]:
    """The stamps that record `changes`, committed at `version` by `client`, and the
    touch of each of `entities`; `stamp_of` reads the stamps as they were."""
    written: dict[Member, Stamp] = {}

    def stamp(member: Member, narrowing: bool) -> None:
        old = written.get(member) or stamp_of(member)
        if old is None:
            old = Stamp(0, "")  # nothing known: the first change starts both marks
            changed: tuple[int, str, int | None] = (version, client, None)
        else:
            changed = _moved(old.changed, old.changed_by, old.changed_other, version, client)
        narrowed = (old.narrowed, old.narrowed_by, old.narrowed_other)
        if narrowing:
            narrowed = _moved(*narrowed, version, client)
        written[member] = Stamp(changed[0], changed[1], narrowed[0], narrowed[1],
                                changed[2], narrowed[2])  # fmt: skip

    for change in changes:
        stamp(change.member, change.kind is ChangeKind.NARROWING)
    for entity in entities:
        stamp((entity.kind, entity.id, TOUCHED), False)
    return written


def policy_changes(
    old: Iterable[Entity], new: Iterable[Entity]
) -> tuple[list[MemberChange], list[Entity]]:
    """What replacing a whole policy (an import, a repair) changes: its member
    changes, and the entities they are in (to stamp as touched)."""
    before = {e.key: e for e in old}
    after = {e.key: e for e in new}
    changes: list[MemberChange] = []
    touched: list[Entity] = []
    for key in sorted(before.keys() | after.keys()):
        was, now = before.get(key), after.get(key)
        was_document = was.document if was is not None else None
        now_document = now.document if now is not None else None
        if canonical_json_bytes(was_document) == canonical_json_bytes(now_document):
            continue
        entity = now or was
        assert entity is not None
        found = member_changes(entity.kind, entity.id, was_document, now_document)
        if found:
            changes += found
            touched.append(entity)
    return changes, touched


def is_touch(member: Member) -> bool:
    """Whether `member` is an entity's touch stamp (kept in memory, derived on load)."""
    return len(member) == 3 and member[2] == TOUCHED


def touches(stamps: Mapping[Member, Stamp]) -> dict[Member, Stamp]:
    """The touch stamp of every entity, derived from its members' stamps: its last
    change, and the latest one by a client other than that change's author. A
    store keeps member stamps only; this gives back the touches exactly."""
    latest: dict[Member, tuple[int, str]] = {}
    for member, stamp in stamps.items():
        if is_touch(member):
            continue
        entity = member[:2]
        if entity not in latest or stamp.changed > latest[entity][0]:
            latest[entity] = (stamp.changed, stamp.changed_by)
    other: dict[Member, int] = {}
    for member, stamp in stamps.items():
        if is_touch(member):
            continue
        entity = member[:2]
        by = latest[entity][1]
        version = stamp.changed if stamp.changed_by != by else stamp.changed_other
        if version is not None and version > other.get(entity, -1):
            other[entity] = version
    return {
        (*entity, TOUCHED): Stamp(version, by, changed_other=other.get(entity))
        for entity, (version, by) in latest.items()
    }
