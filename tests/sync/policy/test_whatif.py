"""sync.whatif: decisions against a policy with proposed edits applied."""

from __future__ import annotations

import pytest

from sync.policy.edits import (
    AddInheritance,
    AddRule,
    AssignRole,
    CreateRole,
    DeleteRole,
    DeleteUser,
    Edit,
    EditRefused,
    RefusalCode,
    RemoveInheritance,
    RenameRole,
    SetUserAttribute,
    UnassignRole,
)
from sync.policy.engine import Engine
from sync.policy.instant import parse_instant
from sync.policy.model import Effect, Policy, Rule
from sync.policy.request import Request
from sync.policy.whatif import changed_decisions, propose, what_if, what_if_live

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


def _grid(policy: Policy) -> list[Request]:
    attributes = ({}, {"region": "north", "classification": "confidential"})
    contexts = ({}, {"time": "2026-12-31T00:00:00Z"})
    return [
        Request(user, action, rtype, None, attrs, context)
        for user in [*policy.users, "nobody"]
        for rtype, actions in policy.resource_types.items()
        for action in actions
        for attrs in attributes
        for context in contexts
    ]


def _series(policy: Policy) -> dict[str, list[Edit]]:
    viewer = _role_id(policy, "viewer")
    dispatcher = _role_id(policy, "dispatcher")
    manager = _role_id(policy, "fleet-manager")
    return {
        "grant and assign": [
            AddRule(f"role:{viewer}", Effect.GRANT, Rule.build("vehicle", ("dispatch",))),
            AssignRole("bob", manager, "2026-12-31T00:00:00Z"),
        ],
        "delete an inherited role": [DeleteRole(viewer)],
        "create, inherit, rename": [
            CreateRole("r-new", "night-shift", inherits=(dispatcher,)),
            AssignRole("dave", "r-new"),
            RenameRole(dispatcher, "router"),
        ],
        "rewire inheritance": [
            RemoveInheritance(manager, dispatcher),
            AddInheritance(manager, viewer),
            AddRule("user:alice", Effect.DENY, Rule.build("*", ("read",))),
        ],
        "attributes and users": [
            SetUserAttribute("bob", "region", "north"),
            DeleteUser("carol"),
            UnassignRole("alice", dispatcher),
        ],
    }


@pytest.mark.parametrize(
    "name", ["grant and assign", "delete an inherited role", "create, inherit, rename",
             "rewire inheritance", "attributes and users"]
)  # fmt: skip
def test_proposed_edits_decide_like_a_fresh_compile_and_leave_nothing_behind(
    example_policy: Policy,
    state,  # type: ignore[no-untyped-def]
    name: str,
) -> None:
    engine = Engine(example_policy)
    grid = _grid(example_policy)
    original = state(example_policy)
    before = [d.to_dict() for d in engine.decide_many(grid, NOW)]  # caches filled, to go stale
    edits = _series(example_policy)[name]
    expected = [
        d.to_dict() for d in Engine(propose(example_policy, edits, NOW)).decide_many(grid, NOW)
    ]
    with engine.proposed(edits, NOW):
        assert [d.to_dict() for d in engine.decide_many(grid, NOW)] == expected
    assert state(example_policy) == original
    assert [d.to_dict() for d in engine.decide_many(grid, NOW)] == before
    fresh = Engine(example_policy)
    assert [d.to_dict() for d in fresh.decide_many(grid, NOW)] == before


def test_a_refused_edit_in_a_proposal_undoes_the_ones_before_it(
    example_policy: Policy,
    state,  # type: ignore[no-untyped-def]
) -> None:
    engine = Engine(example_policy)
    original = state(example_policy)
    creator = _role_id(example_policy, "payment-creator")
    approver = _role_id(example_policy, "payment-approver")
    with (
        pytest.raises(EditRefused),
        engine.proposed([AssignRole("bob", creator), AssignRole("bob", approver)], NOW),
    ):
        pass  # pragma: no cover - never entered
    assert state(example_policy) == original
    assert engine.decide(Request("bob", "export", "report"), NOW).allowed is False


def test_what_if_live_matches_what_if(example_policy: Policy) -> None:
    grid = _grid(example_policy)
    for edits in _series(example_policy).values():
        live = what_if_live(Engine(example_policy), edits, grid, NOW)
        fresh = what_if(example_policy, edits, grid, NOW)
        assert [(c.index, c.before, c.after) for c in live] == [
            (c.index, c.before, c.after) for c in fresh
        ]
