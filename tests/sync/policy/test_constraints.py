"""sync.constraints: separation of duty (policy-format.md, `constraints`): no
user may hold, directly or through inheritance, two roles of one `exclusive`
list; an assignment counts while the time of the check is before its expiry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sync.policy.constraints import Violation, violations
from sync.policy.instant import parse_instant
from sync.policy.model import Assignment, Constraint, Policy, Role, User

NOW = parse_instant("2026-11-22T09:30:00Z")


def policy_with(
    users: dict[str, list[Assignment]],
    constraints: tuple[Constraint, ...] = (Constraint("sod", ("a", "b")),),
) -> Policy:
    roles = {
        "a": Role("a", "alpha"),
        "b": Role("b", "beta"),
        "c": Role("c", "gamma", inherits=("a",)),
        "d": Role("d", "delta", inherits=("c", "b")),
        "e": Role("e", "epsilon"),
    }
    return Policy(
        "t",
        {"doc": ("read",)},
        roles,
        {uid: User(uid, roles=tuple(held)) for uid, held in users.items()},
        constraints,
    )


def held(*role_ids: str, expires: str | None = None) -> list[Assignment]:
    return [Assignment.build(r, expires) for r in role_ids]


def test_no_constraints_means_no_violations() -> None:
    assert violations(policy_with({"u": held("a", "b")}, ()), NOW) == []


def test_holding_two_exclusive_roles_directly_is_a_violation() -> None:
    (found,) = violations(policy_with({"u": held("a", "b")}), NOW)
    assert found == Violation("sod", "u", "alpha", "beta")


@pytest.mark.parametrize("roles", [("c", "b"), ("d",), ("b", "c"), ("c", "d")])
def test_holding_them_through_inheritance_is_a_violation(roles: tuple[str, ...]) -> None:
    (found,) = violations(policy_with({"u": held(*roles)}), NOW)
    assert (found.constraint, found.user) == ("sod", "u")
    assert {found.first_role, found.second_role} == {"alpha", "beta"}


@pytest.mark.parametrize("roles", [("a",), ("c",), ("a", "c", "e"), ("b", "e"), ()])
def test_holding_at_most_one_exclusive_role_is_fine(roles: tuple[str, ...]) -> None:
    assert violations(policy_with({"u": held(*roles)}), NOW) == []


@pytest.mark.parametrize(
    ("expires", "counts"),
    [
        ("2026-11-22T09:30:00Z", False),
        ("2026-11-22T10:30:00+01:00", False),
        ("2026-11-22T09:29:59.999Z", False),
        ("2026-11-22T09:30:00.000000001Z", True),
        ("2026-11-22T10:30:01+01:00", True),
    ],
)
def test_an_assignment_counts_while_the_check_time_is_before_its_expiry(
    expires: str, counts: bool
) -> None:
    policy = policy_with({"u": held("a") + held("b", expires=expires)})
    assert bool(violations(policy, NOW)) is counts


def test_only_the_named_users_are_checked_and_unknown_ones_are_skipped() -> None:
    policy = policy_with({"u": held("a", "b"), "v": held("d"), "w": held("a")})
    assert [v.user for v in violations(policy, NOW)] == ["u", "v"]
    assert [v.user for v in violations(policy, NOW, ["v", "ghost", "w"])] == ["v"]
    assert violations(policy, NOW, []) == []


def test_each_broken_constraint_is_reported() -> None:
    constraints = (Constraint("ab", ("a", "b")), Constraint("be", ("b", "e")))
    policy = policy_with({"u": held("a", "b", "e")}, constraints)
    assert [v.constraint for v in violations(policy, NOW)] == ["ab", "be"]


def test_a_violation_reads_as_a_sentence_naming_user_roles_and_constraint() -> None:
    text = str(Violation("payments-sod", "carol", "payment-creator", "payment-approver"))
    assert text == (
        "user 'carol' would hold both 'payment-creator' and 'payment-approver', "
        "which constraint 'payments-sod' keeps apart"
    )


def test_import_checks_constraints_at_the_time_it_is_given(
    minimal: Callable[..., dict[str, Any]],
) -> None:
    from sync.policy.document import PolicyInvalid, parse_policy

    document = minimal(
        roles=[{"name": "a"}, {"name": "b"}],
        users=[
            {"id": "u", "roles": [{"role": "a"}, {"role": "b", "expires": "2027-01-01T00:00:00Z"}]}
        ],
        constraints=[{"name": "sod", "exclusive": ["a", "b"]}],
    )
    with pytest.raises(PolicyInvalid):
        parse_policy(document, now=NOW)
    assert parse_policy(document, now=parse_instant("2027-01-01T00:00:00Z"))


def test_an_eligible_entry_does_not_count_for_separation_of_duty() -> None:
    # policy-format.md § Additions: not until it is activated.
    for eligible in (
        [Assignment.build("b", eligible=8)],
        [Assignment.build("d", "2027-01-01T00:00:00Z", 720)],
    ):
        assert violations(policy_with({"u": held("a") + eligible}), NOW) == []
    both = [Assignment.build("a", eligible=1), Assignment.build("b", eligible=1)]
    assert violations(policy_with({"u": both}), NOW) == []


def test_an_activation_counts_like_any_assignment_while_it_lasts() -> None:
    activation = "2026-11-22T17:30:00Z"
    roles = [*held("a"), Assignment.build("b", eligible=8), *held("b", expires=activation)]
    policy = policy_with({"u": roles})
    assert violations(policy, NOW) == [Violation("sod", "u", "alpha", "beta")]
    assert violations(policy, parse_instant(activation)) == []
