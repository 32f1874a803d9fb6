"""Separation-of-duty constraints (policy-format.md, `constraints`).

No user may hold, directly or through inheritance, two roles of one
`exclusive` list. An assignment counts while the time of the check (import or
edit) is before its `expires`. An eligible entry never counts
(`Assignment.active_at` says so); its activations, ordinary entries with
`expires`, count like any assignment (policy-format.md § Additions).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sync.policy.instant import Instant
from sync.policy.model import Constraint, Policy


@dataclass(frozen=True, slots=True)
class Violation:
    constraint: str
    user: str
    first_role: str
    second_role: str

    def __str__(self) -> str:
        return (
            f"user {self.user!r} would hold both {self.first_role!r} and "
            f"{self.second_role!r}, which constraint {self.constraint!r} keeps apart"
        )


def violations(
    policy: Policy, instant: Instant, user_ids: Iterable[str] | None = None
) -> list[Violation]:
    """The constraint breaches of the given users (default: all), at `instant`."""
    if not policy.constraints:
        return []
    members = {r for c in policy.constraints for r in c.exclusive}
    reach: dict[str, frozenset[str]] = {}
    found: list[Violation] = []
    for user_id in policy.users if user_ids is None else user_ids:
        user = policy.users.get(user_id)
        if user is None:
            continue
        held: set[str] = set()
        for assignment in user.roles:
            if assignment.active_at(instant):
                role_id = assignment.role_id
                if role_id not in reach:
                    reach[role_id] = frozenset(
                        r for r, _path in policy.ancestors(role_id) if r in members
                    )
                held |= reach[role_id]
        if len(held) < 2:
            continue
        for constraint in policy.constraints:
            found.extend(_breaches(policy, constraint, user_id, held))
    return found


def _breaches(
    policy: Policy, constraint: Constraint, user_id: str, held: set[str]
) -> list[Violation]:
    present = [r for r in constraint.exclusive if r in held]
    if len(present) < 2:
        return []
    return [
        Violation(
            constraint.name, user_id, policy.role_name(present[0]), policy.role_name(present[1])
        )
    ]
