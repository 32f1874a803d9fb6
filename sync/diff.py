"""Differences between two policies, as stable lines a person reads.

Roles are matched by id (a rename is one changed field, not a removal and an
addition), then, for roles left unmatched, by name. Lines come in document
order of the new policy, removals after; each starts with `+`, `-` or `~`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sync.model import Assignment, Effect, Policy, Role, Rule, User


def _text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def diff_policies(old: Policy, new: Policy) -> list[str]:
    """Everything that differs from `old` to `new`; empty when they are the same."""
    lines: list[str] = []
    if old.tenant != new.tenant:
        lines.append(f"~ tenant {_text(old.tenant)} -> {_text(new.tenant)}")
    lines.extend(_diff_types(old, new))
    lines.extend(_diff_roles(old, new))
    lines.extend(_diff_users(old, new))
    lines.extend(_diff_constraints(old, new))
    return lines


def _diff_types(old: Policy, new: Policy) -> Iterable[str]:
    for name, actions in new.resource_types.items():
        before = old.resource_types.get(name)
        if before is None:
            yield f"+ resource type {name}: {', '.join(actions)}"
            continue
        for action in actions:
            if action not in before:
                yield f"+ resource type {name} action {action}"
        for action in before:
            if action not in actions:
                yield f"- resource type {name} action {action}"
    for name in old.resource_types:
        if name not in new.resource_types:
            yield f"- resource type {name}"


def _match_roles(old: Policy, new: Policy) -> dict[str, str]:
    """new role id -> old role id, by id first and then by name."""
    pairs = {role_id: role_id for role_id in new.roles if role_id in old.roles}
    taken = set(pairs.values())
    old_by_name = {r.name: r.id for r in old.roles.values() if r.id not in taken}
    for role in new.roles.values():
        if role.id not in pairs and role.name in old_by_name:
            pairs[role.id] = old_by_name.pop(role.name)
    return pairs


def _rule_lines(subject: str, effect: Effect, before: tuple[Rule, ...], after: tuple[Rule, ...]):  # type: ignore[no-untyped-def]
    for rule in after:
        if rule not in before:
            yield f"+ {subject} {effect.value}: {rule.describe()}"
    for rule in before:
        if rule not in after:
            yield f"- {subject} {effect.value}: {rule.describe()}"


def _diff_roles(old: Policy, new: Policy) -> Iterable[str]:
    pairs = _match_roles(old, new)
    for role in new.roles.values():
        old_id = pairs.get(role.id)
        if old_id is None:
            yield f"+ role {role.name}"
            for effect in (Effect.GRANT, Effect.DENY):
                for rule in role.rules(effect):
                    yield f"+ role {role.name} {effect.value}: {rule.describe()}"
            for parent in role.inherits:
                yield f"+ role {role.name} inherits {new.role_name(parent)}"
            continue
        yield from _diff_role(old, new, old.roles[old_id], role)
    matched = set(pairs.values())
    for role in old.roles.values():
        if role.id not in matched:
            yield f"- role {role.name}"


def _diff_role(old: Policy, new: Policy, before: Role, after: Role) -> Iterable[str]:
    subject = f"role {after.name}"
    if before.name != after.name:
        yield f"~ role {before.name} renamed to {after.name}"
    if before.description != after.description:
        yield f"~ {subject} description {_text(before.description)} -> {_text(after.description)}"
    old_parents = [old.role_name(r) for r in before.inherits]
    new_parents = [new.role_name(r) for r in after.inherits]
    for parent in new_parents:
        if parent not in old_parents:
            yield f"+ {subject} inherits {parent}"
    for parent in old_parents:
        if parent not in new_parents:
            yield f"- {subject} inherits {parent}"
    for effect in (Effect.GRANT, Effect.DENY):
        yield from _rule_lines(subject, effect, before.rules(effect), after.rules(effect))


def _diff_users(old: Policy, new: Policy) -> Iterable[str]:
    for user in new.users.values():
        before = old.users.get(user.id)
        if before is None:
            yield f"+ user {user.id}" + (f" ({user.name})" if user.name else "")
            yield from _assignment_lines(new, f"user {user.id}", (), user.roles)
            for effect in (Effect.GRANT, Effect.DENY):
                yield from _rule_lines(f"user {user.id}", effect, (), user.rules(effect))
            continue
        yield from _diff_user(old, new, before, user)
    for user in old.users.values():
        if user.id not in new.users:
            yield f"- user {user.id}"


def _diff_user(old: Policy, new: Policy, before: User, after: User) -> Iterable[str]:
    subject = f"user {after.id}"
    if before.name != after.name:
        yield f"~ {subject} name {_text(before.name)} -> {_text(after.name)}"
    for key, value in after.attributes.items():
        if key not in before.attributes:
            yield f"+ {subject} attribute {key} = {_text(value)}"
        elif before.attributes[key] != value:
            yield f"~ {subject} attribute {key} {_text(before.attributes[key])} -> {_text(value)}"
    for key in before.attributes:
        if key not in after.attributes:
            yield f"- {subject} attribute {key}"
    # Assignments compare by role name, so a role matched across a rename stays matched.
    yield from _assignment_lines(new, subject, _named(old, before.roles), after.roles)
    for effect in (Effect.GRANT, Effect.DENY):
        yield from _rule_lines(subject, effect, before.rules(effect), after.rules(effect))


def _named(
    policy: Policy, assignments: tuple[Assignment, ...]
) -> tuple[tuple[str, str | None], ...]:
    return tuple((policy.role_name(a.role_id), a.expires) for a in assignments)


def _assignment_lines(
    new: Policy,
    subject: str,
    before: tuple[tuple[str, str | None], ...],
    after: tuple[Assignment, ...],
) -> Iterable[str]:
    old_expiry = dict(before)
    new_named = _named(new, after)
    new_expiry = dict(new_named)
    for role, expires in new_named:
        until = f" until {expires}" if expires else ""
        if role not in old_expiry:
            yield f"+ {subject} holds {role}{until}"
        elif old_expiry[role] != expires:
            change = f"{old_expiry[role] or 'never'} -> {expires or 'never'}"
            yield f"~ {subject} holds {role}: expires {change}"
    for role, _expires in before:
        if role not in new_expiry:
            yield f"- {subject} holds {role}"


def _diff_constraints(old: Policy, new: Policy) -> Iterable[str]:
    before = {c.name: [old.role_name(r) for r in c.exclusive] for c in old.constraints}
    after = {c.name: [new.role_name(r) for r in c.exclusive] for c in new.constraints}
    for name, roles in after.items():
        if name not in before:
            yield f"+ constraint {name}: {', '.join(roles)}"
        elif before[name] != roles:
            yield f"~ constraint {name}: {', '.join(before[name])} -> {', '.join(roles)}"
    for name in before:
        if name not in after:
            yield f"- constraint {name}"
