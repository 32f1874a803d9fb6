"""sync.whatif: decisions against a policy with proposed edits applied."""

from __future__ import annotations

import pytest

from sync.edits import AddRule, AssignRole, EditRefused, RefusalCode
from sync.engine import Engine
from sync.instant import parse_instant
from sync.model import Effect, Policy, Rule
from sync.request import Request
from sync.whatif import changed_decisions, propose, what_if

NOW = parse_instant("2026-11-22T09:30:00Z")


def _role_id(policy: Policy, name: str) -> str:
    role = policy.role_by_name(name)
    assert role is not None
    return role.id


def test_lists_only_the_requests_whose_decision_changes(example_policy: Policy) -> None:
    requests = [
        Request("bob", "read", "vehicle"),
        Request("bob", "read", "route"),
        Request("alice", "read", "vehicle"),
        Request("nobody", "read", "vehicle"),
    ]
    deny = AddRule(
        f"role:{_role_id(example_policy, 'viewer')}",
        Effect.DENY,
        Rule.build("vehicle", ("read",), {"user.region": "south"}),
    )
    changes = what_if(example_policy, [deny], requests, NOW)
    assert [c.index for c in changes] == [0]
    assert changes[0].before.allowed is True
    assert changes[0].after.allowed is False
    assert changes[0].after.reason.startswith("denied by role viewer: vehicle read")


def test_the_policy_asked_about_is_not_changed(example_policy: Policy, state) -> None:  # type: ignore[no-untyped-def]
    before = state(example_policy)
    grant = AssignRole("bob", _role_id(example_policy, "fleet-manager"))
    proposed = propose(example_policy, [grant], NOW)
    assert state(example_policy) == before
    assert state(proposed) != before


def test_edits_apply_in_order_and_a_refused_one_raises(example_policy: Policy) -> None:
    creator = _role_id(example_policy, "payment-creator")
    approver = _role_id(example_policy, "payment-approver")
    with pytest.raises(EditRefused) as refused:
        propose(example_policy, [AssignRole("bob", creator), AssignRole("bob", approver)], NOW)
    assert refused.value.code is RefusalCode.CONSTRAINT
    assert "payments-sod" in refused.value.reason


def test_a_changed_reason_counts_as_a_change(example_policy: Policy) -> None:
    before = Engine(example_policy)
    viewer = f"role:{_role_id(example_policy, 'viewer')}"
    after_policy = propose(
        example_policy, [AddRule(viewer, Effect.GRANT, Rule.build("vehicle", ("read",)))], NOW
    )
    # Both grants allow; the first in order still decides, so nothing changes...
    request = Request("bob", "read", "vehicle")
    assert changed_decisions(before, Engine(after_policy), [request], NOW) == []
    # ...while a request the new grant alone allows changes from denied to allowed.
    dispatch = Request("bob", "dispatch", "vehicle")
    grant = AddRule(viewer, Effect.GRANT, Rule.build("vehicle", ("dispatch",)))
    changes = changed_decisions(
        before, Engine(propose(example_policy, [grant], NOW)), [dispatch], NOW
    )
    assert [(c.before.allowed, c.after.allowed) for c in changes] == [(False, True)]
