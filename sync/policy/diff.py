"""Differences between two policies, as stable lines a person reads.

Roles are matched by id (a rename is one changed field, not a removal and an
addition), then, for roles left unmatched, by name. Lines come in document
order of the new policy, removals after; each starts with `+`, `-` or `~`.

A user's eligibility for a role (policy-format.md § Additions) is its own line
(`+ user alice eligible for fleet-manager (up to 8 h)`), apart from the
ordinary assignments of that role; suspending and resuming are `~ user alice
suspended` and `~ user alice resumed`, and a user added suspended gets
`+ user alice` then `~ user alice suspended`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sync.policy.model import Assignment, Effect, Policy, Role, Rule, User


def _text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def diff_policies(old: Policy, new: Policy) -> list[str]:
    """Everything that differs from `old` to `new`; empty when they are the same."""
    lines: list[str] = []
    if old.tenant != new.tenant:
        lines.append(f"~ tenant {_text(old.tenant)} -> {_text(new.tenant)}")
    pairs = _match_roles(old, new)
    lines.extend(_diff_types(old, new))
    lines.extend(_diff_roles(old, new, pairs))
    lines.extend(_diff_users(old, new, pairs))
    lines.extend(_diff_constraints(old, new, pairs))
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


def _rule_lines(
    subject: str, effect: Effect, before: tuple[Rule, ...], after: tuple[Rule, ...]
) -> Iterable[str]:
    for rule in after:
        if rule not in before:
            yield f"+ {subject} {effect.value}: {rule.describe()}"
    for rule in before:
        if rule not in after:
            yield f"- {subject} {effect.value}: {rule.describe()}"


def _diff_roles(old: Policy, new: Policy, pairs: dict[str, str]) -> Iterable[str]:
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
        yield from _diff_role(old, new, pairs, old.roles[old_id], role)
    matched = set(pairs.values())
    for role in old.roles.values():
        if role.id not in matched:
            yield f"- role {role.name}"


def _diff_role(
    old: Policy, new: Policy, pairs: dict[str, str], before: Role, after: Role
) -> Iterable[str]:
    subject = f"role {after.name}"
    if before.name != after.name:
        yield f"~ role {before.name} renamed to {after.name}"
    if before.description != after.description:
        yield f"~ {subject} description {_text(before.description)} -> {_text(after.description)}"
    # Compared by the old policy's ids, so a renamed parent is the same parent.
    new_parents = [pairs.get(r, f"new:{r}") for r in after.inherits]
    for parent, mapped in zip(after.inherits, new_parents, strict=True):
        if mapped not in before.inherits:
            yield f"+ {subject} inherits {new.role_name(parent)}"
    for parent in before.inherits:
        if parent not in new_parents:
            yield f"- {subject} inherits {old.role_name(parent)}"
    for effect in (Effect.GRANT, Effect.DENY):
        yield from _rule_lines(subject, effect, before.rules(effect), after.rules(effect))


def _diff_users(old: Policy, new: Policy, pairs: dict[str, str]) -> Iterable[str]:
    for user in new.users.values():
        before = old.users.get(user.id)
        if before is None:
            yield f"+ user {user.id}" + (f" ({user.name})" if user.name else "")
            if user.suspended:
                yield f"~ user {user.id} suspended"
            yield from _assignment_lines(old, new, pairs, f"user {user.id}", (), user.roles)
            for effect in (Effect.GRANT, Effect.DENY):
                yield from _rule_lines(f"user {user.id}", effect, (), user.rules(effect))
            continue
        yield from _diff_user(old, new, pairs, before, user)
    for user in old.users.values():
        if user.id not in new.users:
            yield f"- user {user.id}"


def _diff_user(
    old: Policy, new: Policy, pairs: dict[str, str], before: User, after: User
) -> Iterable[str]:
    subject = f"user {after.id}"
    if before.name != after.name:
        yield f"~ {subject} name {_text(before.name)} -> {_text(after.name)}"
    if before.suspended != after.suspended:
        yield f"~ {subject} {'suspended' if after.suspended else 'resumed'}"
    for key, value in after.attributes.items():
        if key not in before.attributes:
            yield f"+ {subject} attribute {key} = {_text(value)}"
        elif before.attributes[key] != value:
            yield f"~ {subject} attribute {key} {_text(before.attributes[key])} -> {_text(value)}"
    for key in before.attributes:
        if key not in after.attributes:
            yield f"- {subject} attribute {key}"
    yield from _assignment_lines(old, new, pairs, subject, before.roles, after.roles)
    for effect in (Effect.GRANT, Effect.DENY):
        yield from _rule_lines(subject, effect, before.rules(effect), after.rules(effect))


def _assignment_lines(
    old: Policy,
    new: Policy,
    pairs: dict[str, str],
    subject: str,
    before: tuple[Assignment, ...],
    after: tuple[Assignment, ...],
) -> Iterable[str]:
    # Keyed by the old policy's role ids, so a renamed role stays the same role;
    # a role's eligible entry (at most one per user) is keyed apart from its
    # ordinary entries, which include the activations of that eligibility.
    old_expiry = {a.role_id: a.expires for a in before if a.eligible is None}
    new_expiry = {
        pairs.get(a.role_id, f"new:{a.role_id}"): a.expires for a in after if a.eligible is None
    }
    old_eligible = {a.role_id: a for a in before if a.eligible is not None}
    new_eligible = {
        pairs.get(a.role_id, f"new:{a.role_id}") for a in after if a.eligible is not None
    }
    for assignment in after:
        role = new.role_name(assignment.role_id)
        key = pairs.get(assignment.role_id, f"new:{assignment.role_id}")
        if assignment.eligible is not None:
            yield from _eligible_lines(subject, role, old_eligible.get(key), assignment)
            continue
        expires = assignment.expires
        until = f" until {expires}" if expires else ""
        if key not in old_expiry:
            yield f"+ {subject} holds {role}{until}"
        elif old_expiry[key] != expires:
            change = f"{old_expiry[key] or 'never'} -> {expires or 'never'}"
            yield f"~ {subject} holds {role}: expires {change}"
    for assignment in before:
        if assignment.eligible is not None:
            if assignment.role_id not in new_eligible:
                yield f"- {subject} eligible for {old.role_name(assignment.role_id)}"
        elif assignment.role_id not in new_expiry:
            yield f"- {subject} holds {old.role_name(assignment.role_id)}"


def _eligible_lines(
    subject: str, role: str, before: Assignment | None, after: Assignment
) -> Iterable[str]:
    if before is None:
        until = f" until {after.expires}" if after.expires else ""
        yield f"+ {subject} eligible for {role} (up to {after.eligible} h){until}"
        return
    if before.eligible != after.eligible:
        yield f"~ {subject} eligible for {role}: up to {before.eligible} h -> {after.eligible} h"
    if before.expires != after.expires:
        change = f"{before.expires or 'never'} -> {after.expires or 'never'}"
        yield f"~ {subject} eligible for {role}: expires {change}"


def _diff_constraints(old: Policy, new: Policy, pairs: dict[str, str]) -> Iterable[str]:
    before = {c.name: list(c.exclusive) for c in old.constraints}
    after = {c.name: c.exclusive for c in new.constraints}
    for name, roles in after.items():
        names = ", ".join(new.role_name(r) for r in roles)
        if name not in before:
            yield f"+ constraint {name}: {names}"
        elif before[name] != [pairs.get(r, f"new:{r}") for r in roles]:
            old_names = ", ".join(old.role_name(r) for r in before[name])
            yield f"~ constraint {name}: {old_names} -> {names}"
    for name in before:
        if name not in after:
            yield f"- constraint {name}"
