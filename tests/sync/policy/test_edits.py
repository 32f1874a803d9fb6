"""sync.edits: each edit applies, refuses cleanly, and an Engine refreshed with
what it touched decides exactly like an Engine compiled afresh.

The fresh-versus-incremental check (`assert_engine_is_current`) runs a grid
of requests covering every user, every listed pair, attribute values that
make conditions hold and fail, and times on both sides of every expiry. The
engine is warmed with the same grid before each edit so that anything it
caches is in place to go stale.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync.policy.document import (
    dump_policy,
    export_policy,
    holds_unstorable,
    parse_policy,
    parse_text,
)
from sync.policy.edits import (
    EDIT_TYPES,
    ActivateRole,
    AddInheritance,
    AddRule,
    AssignRole,
    CreateRole,
    CreateUser,
    DeactivateRole,
    DeleteRole,
    DeleteUser,
    DescribeRole,
    Edit,
    EditRefused,
    MakeEligible,
    RefusalCode,
    RemoveEligible,
    RemoveInheritance,
    RemoveRule,
    RenameRole,
    ResumeUser,
    SetUserAttribute,
    SuspendUser,
    Touched,
    UnassignRole,
    apply_edit,
    edit_from_document,
)
from sync.policy.engine import Engine
from sync.policy.instant import parse_instant
from sync.policy.model import Effect, Policy, Rule
from sync.policy.request import Request
from tests.sync.conftest import EXAMPLE

NOW = parse_instant("2026-11-22T09:30:00Z")
TIMES = (
    None,
    {"time": "2026-12-30T23:59:59.999999999Z"},
    {"time": "2026-12-31T00:00:00Z"},
    {"time": "2027-06-01T00:00:00Z"},
)
ATTRIBUTES = (
    {},
    {"region": "north", "classification": "confidential"},
    {"region": "south", "classification": "public"},
)


def requests_for(policy: Policy) -> Iterator[Request]:
    users = [*policy.users, "ghost"]
    pairs = [(t, a) for t, actions in policy.resource_types.items() for a in actions]
    for user in users:
        for type_name, action in pairs:
            for attrs in ATTRIBUTES:
                for context in TIMES:
                    yield Request(
                        user, action, type_name, "x1", attrs, context or {}, _time(context)
                    )


def _time(context: dict[str, str] | None) -> Any:
    return None if context is None else parse_instant(context["time"])


def warm(engine: Engine) -> None:
    for request in requests_for(engine.policy):
        engine.decide(request, NOW)


def assert_engine_is_current(engine: Engine, policy: Policy) -> None:
    fresh = Engine(policy.copy(), engine.version)
    for request in requests_for(policy):
        got = engine.decide(request, NOW).to_dict()
        want = fresh.decide(request, NOW).to_dict()
        assert got == want, f"{request.to_dict()}: incremental {got} != fresh {want}"


def edit_and_refresh(engine: Engine, edit: Edit) -> Touched:
    """Apply `edit` to the engine's policy, refresh, and check against a fresh compile."""
    warm(engine)
    touched = apply_edit(engine.policy, edit, NOW)
    engine.refresh(roles=touched.roles, users=touched.users, inheritance=touched.inheritance)
    assert_engine_is_current(engine, engine.policy)
    return touched


def allowed(engine: Engine, user: str, action: str, resource_type: str, **attrs: Any) -> bool:
    context = attrs.pop("context", {})
    time = parse_instant(context["time"]) if "time" in context else None
    request = Request(user, action, resource_type, "x1", attrs, context, time)
    return engine.decide(request, NOW).allowed


def role_id(policy: Policy, name: str) -> str:
    role = policy.role_by_name(name)
    assert role is not None, name
    return role.id


@pytest.fixture
def engine(example_policy: Policy) -> Engine:
    return Engine(example_policy, version=7)


# --- each edit, applied ------------------------------------------------------------------


def test_create_role_then_grant_and_assign_it(engine: Engine) -> None:
    policy = engine.policy
    viewer = role_id(policy, "viewer")
    edit_and_refresh(engine, CreateRole("auditor-id", "auditor", "Reads reports", (viewer,)))
    assert policy.roles["auditor-id"].name == "auditor"
    assert policy.roles["auditor-id"].inherits == (viewer,)
    edit_and_refresh(engine, AssignRole("dave", "auditor-id"))
    assert allowed(engine, "dave", "read", "vehicle")
    assert not allowed(engine, "dave", "export", "report")
    grant = Rule.build("report", ("export",), {"resource.classification": {"ne": "secret"}})
    edit_and_refresh(engine, AddRule("role:auditor-id", Effect.GRANT, grant))
    assert allowed(engine, "dave", "export", "report", classification="public")
    assert not allowed(engine, "dave", "export", "report")


def test_rename_role_keeps_its_id_and_decisions_name_it_anew(engine: Engine) -> None:
    policy = engine.policy
    dispatcher = role_id(policy, "dispatcher")
    edit_and_refresh(engine, RenameRole(dispatcher, "router"))
    assert policy.roles[dispatcher].name == "router"
    decision = engine.decide(Request("alice", "update", "route", "r", {"region": "north"}), NOW)
    assert decision.allowed is True
    assert decision.matched[0].source == "role:router"
    assert "router" in decision.reason
    again = parse_policy(export_policy(policy), now=NOW)
    assert again.roles[dispatcher].name == "router"


def test_describe_role_changes_only_the_description(engine: Engine) -> None:
    viewer = role_id(engine.policy, "viewer")
    before = engine.policy.roles[viewer]
    edit_and_refresh(engine, DescribeRole(viewer, "Sees things"))
    after = engine.policy.roles[viewer]
    assert after.description == "Sees things"
    assert (after.name, after.inherits, after.grants, after.denies) == (
        before.name,
        before.inherits,
        before.grants,
        before.denies,
    )


def test_delete_role_removes_its_rules_assignments_and_references(engine: Engine) -> None:
    policy = engine.policy
    dispatcher = role_id(policy, "dispatcher")
    fleet_manager = role_id(policy, "fleet-manager")
    assert allowed(engine, "alice", "update", "route", region="north")
    touched = edit_and_refresh(engine, DeleteRole(dispatcher))
    assert dispatcher not in policy.roles
    assert policy.roles[fleet_manager].inherits == ()
    assert [a.role_id for a in policy.users["alice"].roles] == [fleet_manager]
    assert touched.inheritance is True
    assert "alice" in touched.users
    assert not allowed(engine, "alice", "update", "route", region="north")
    assert not allowed(engine, "alice", "read", "driver")
    assert allowed(engine, "alice", "dispatch", "vehicle")


def test_delete_an_inherited_role_removes_it_from_every_holder(engine: Engine) -> None:
    viewer = role_id(engine.policy, "viewer")
    edit_and_refresh(engine, DeleteRole(viewer))
    assert not allowed(engine, "bob", "read", "vehicle")
    assert not allowed(engine, "alice", "read", "driver")
    assert engine.policy.users["bob"].roles == ()


def test_delete_role_drops_it_from_constraints(engine: Engine) -> None:
    policy = engine.policy
    approver = role_id(policy, "payment-approver")
    edit_and_refresh(engine, DeleteRole(approver))
    assert all(approver not in c.exclusive for c in policy.constraints)


def test_a_policy_after_delete_role_still_exports_to_a_valid_document(engine: Engine) -> None:
    edit_and_refresh(engine, DeleteRole(role_id(engine.policy, "payment-approver")))
    parse_policy(export_policy(engine.policy), now=NOW)


def test_add_inheritance_gives_holders_the_parents_rules(engine: Engine) -> None:
    policy = engine.policy
    creator = role_id(policy, "payment-creator")
    viewer = role_id(policy, "viewer")
    assert not allowed(engine, "carol", "read", "vehicle")
    edit_and_refresh(engine, AddInheritance(creator, viewer))
    assert policy.roles[creator].inherits == (viewer,)
    assert allowed(engine, "carol", "read", "vehicle")
    assert not allowed(engine, "carol", "read", "report", classification="confidential")


def test_add_inheritance_reaches_holders_of_an_expiring_role(engine: Engine) -> None:
    policy = engine.policy
    fleet_manager = role_id(policy, "fleet-manager")
    approver = role_id(policy, "payment-approver")
    edit_and_refresh(engine, AddInheritance(fleet_manager, approver))
    assert allowed(engine, "alice", "export", "report")
    late = {"time": "2026-12-31T00:00:00Z"}
    assert not allowed(engine, "alice", "export", "report", context=late)


def test_add_inheritance_already_present_changes_nothing(engine: Engine) -> None:
    policy = engine.policy
    before = export_policy(policy)
    touched = edit_and_refresh(
        engine, AddInheritance(role_id(policy, "dispatcher"), role_id(policy, "viewer"))
    )
    assert touched == Touched()
    assert export_policy(policy) == before


def test_remove_inheritance_takes_the_parents_rules_away(engine: Engine) -> None:
    policy = engine.policy
    dispatcher = role_id(policy, "dispatcher")
    viewer = role_id(policy, "viewer")
    edit_and_refresh(engine, RemoveInheritance(dispatcher, viewer))
    assert policy.roles[dispatcher].inherits == ()
    assert not allowed(engine, "alice", "read", "driver")
    assert allowed(engine, "bob", "read", "driver")
    assert allowed(engine, "alice", "update", "route", region="north")


def test_remove_inheritance_that_is_not_there_changes_nothing(engine: Engine) -> None:
    policy = engine.policy
    before = export_policy(policy)
    edit = RemoveInheritance(role_id(policy, "viewer"), role_id(policy, "dispatcher"))
    assert edit_and_refresh(engine, edit) == Touched()
    assert export_policy(policy) == before


@pytest.mark.parametrize("effect", [Effect.GRANT, Effect.DENY])
def test_add_and_remove_a_rule_of_a_role(engine: Engine, effect: Effect) -> None:
    viewer = role_id(engine.policy, "viewer")
    rule = Rule.build("driver", ("update",), {"resource.region": "$user.region"})
    if effect is Effect.DENY:
        rule = Rule.build("vehicle", ("read",), {"resource.region": {"ne": "$user.region"}})
    edit_and_refresh(engine, AddRule(f"role:{viewer}", effect, rule))
    assert rule in engine.policy.roles[viewer].rules(effect)
    if effect is Effect.GRANT:
        assert allowed(engine, "bob", "update", "driver", region="south")
        assert not allowed(engine, "bob", "update", "driver", region="north")
    else:
        assert not allowed(engine, "bob", "read", "vehicle", region="north")
        assert allowed(engine, "bob", "read", "vehicle", region="south")
        assert allowed(engine, "bob", "read", "vehicle")
    edit_and_refresh(engine, RemoveRule(f"role:{viewer}", effect, rule))
    assert rule not in engine.policy.roles[viewer].rules(effect)
    assert allowed(engine, "bob", "read", "vehicle", region="north")
    assert not allowed(engine, "bob", "update", "driver", region="south")


@pytest.mark.parametrize("effect", [Effect.GRANT, Effect.DENY])
def test_add_and_remove_a_direct_rule_of_a_user(engine: Engine, effect: Effect) -> None:
    rule = Rule.build("*", ("read",))
    edit_and_refresh(engine, AddRule("user:alice", effect, rule))
    assert allowed(engine, "alice", "read", "vehicle") is (effect is Effect.GRANT)
    if effect is Effect.DENY:
        decision = engine.decide(Request("alice", "read", "vehicle"), NOW)
        assert decision.matched[0].source == "user:alice"
    edit_and_refresh(engine, RemoveRule("user:alice", effect, rule))
    assert allowed(engine, "alice", "read", "vehicle")
    assert engine.policy.users["alice"].rules(effect) == ()


def test_adding_a_rule_the_owner_has_changes_nothing(engine: Engine) -> None:
    viewer = role_id(engine.policy, "viewer")
    rule = Rule.build("*", ("read",))
    assert edit_and_refresh(engine, AddRule(f"role:{viewer}", Effect.GRANT, rule)) == Touched()
    assert len(engine.policy.roles[viewer].grants) == 1


def test_removing_a_rule_the_owner_lacks_changes_nothing(engine: Engine) -> None:
    viewer = role_id(engine.policy, "viewer")
    rule = Rule.build("*", ("update",))
    assert edit_and_refresh(engine, RemoveRule(f"role:{viewer}", Effect.GRANT, rule)) == Touched()


def test_assign_role_gives_the_user_its_rules(engine: Engine) -> None:
    edit_and_refresh(engine, AssignRole("dave", role_id(engine.policy, "fleet-manager")))
    assert allowed(engine, "dave", "dispatch", "vehicle")
    assert allowed(engine, "dave", "read", "driver")
    assert not allowed(engine, "dave", "update", "route", region="north")


def test_assign_role_with_expiry_counts_until_then(engine: Engine) -> None:
    viewer = role_id(engine.policy, "viewer")
    edit_and_refresh(engine, AssignRole("dave", viewer, "2026-12-31T02:00:00+02:00"))
    assert allowed(engine, "dave", "read", "vehicle")
    assert not allowed(engine, "dave", "read", "vehicle", context={"time": "2026-12-31T00:00:00Z"})


@pytest.mark.parametrize("expires", [None, "2027-06-01T00:00:00Z", "2026-12-01T00:00:00Z"])
def test_reassigning_a_role_replaces_its_expiry(engine: Engine, expires: str | None) -> None:
    fleet_manager = role_id(engine.policy, "fleet-manager")
    edit_and_refresh(engine, AssignRole("alice", fleet_manager, expires))
    held = [a for a in engine.policy.users["alice"].roles if a.role_id == fleet_manager]
    assert [a.expires for a in held] == [expires]
    late = {"time": "2027-01-01T00:00:00Z"}
    still = expires is None or expires > "2027"
    assert allowed(engine, "alice", "dispatch", "vehicle", context=late) is still


def test_unassign_role_takes_its_rules_away(engine: Engine) -> None:
    edit_and_refresh(engine, UnassignRole("bob", role_id(engine.policy, "viewer")))
    assert engine.policy.users["bob"].roles == ()
    assert not allowed(engine, "bob", "read", "vehicle")


def test_unassign_role_keeps_what_other_roles_give(engine: Engine) -> None:
    edit_and_refresh(engine, UnassignRole("alice", role_id(engine.policy, "dispatcher")))
    # fleet-manager inherits dispatcher, until it expires.
    assert allowed(engine, "alice", "update", "route", region="north")
    late = {"time": "2027-01-01T00:00:00Z"}
    assert not allowed(engine, "alice", "update", "route", region="north", context=late)


def test_unassign_a_role_the_user_lacks_changes_nothing(engine: Engine) -> None:
    edit = UnassignRole("dave", role_id(engine.policy, "viewer"))
    assert edit_and_refresh(engine, edit) == Touched()


def test_create_user_makes_a_known_user_without_rights(engine: Engine) -> None:
    assert "unknown user" in engine.decide(Request("erin", "read", "vehicle"), NOW).reason
    edit_and_refresh(engine, CreateUser("erin", "Erin", {"region": "north"}))
    decision = engine.decide(Request("erin", "read", "vehicle"), NOW)
    assert decision.allowed is False
    assert "no grant matches" in decision.reason
    edit_and_refresh(engine, AssignRole("erin", role_id(engine.policy, "dispatcher")))
    assert allowed(engine, "erin", "update", "route", region="north")


def test_delete_user_makes_the_user_unknown(engine: Engine) -> None:
    edit_and_refresh(engine, DeleteUser("alice"))
    assert "alice" not in engine.policy.users
    decision = engine.decide(Request("alice", "read", "vehicle"), NOW)
    assert decision.allowed is False
    assert "unknown user" in decision.reason


def test_set_user_attribute_changes_what_conditions_see(engine: Engine) -> None:
    edit_and_refresh(engine, SetUserAttribute("alice", "region", "south"))
    assert engine.policy.users["alice"].attributes["region"] == "south"
    assert allowed(engine, "alice", "update", "route", region="south")
    assert not allowed(engine, "alice", "update", "route", region="north")
    edit_and_refresh(engine, SetUserAttribute("alice", "region", None))
    assert "region" not in engine.policy.users["alice"].attributes
    assert not allowed(engine, "alice", "update", "route", region="south")


def test_set_user_attribute_to_a_list_or_object(engine: Engine) -> None:
    edit_and_refresh(engine, SetUserAttribute("alice", "region", ["north"]))
    assert not allowed(engine, "alice", "update", "route", region="north")
    assert allowed(engine, "alice", "update", "route", region=["north"])


def test_a_rename_then_delete_then_recreate_under_the_same_id_stays_current(
    engine: Engine,
) -> None:
    policy = engine.policy
    viewer = role_id(policy, "viewer")
    edit_and_refresh(engine, RenameRole(viewer, "watcher"))
    edit_and_refresh(engine, DeleteRole(viewer))
    edit_and_refresh(engine, CreateRole(viewer, "viewer"))
    edit_and_refresh(engine, AddRule(f"role:{viewer}", Effect.GRANT, Rule.build("driver", ("*",))))
    edit_and_refresh(engine, AssignRole("bob", viewer))
    edit_and_refresh(engine, AddInheritance(role_id(policy, "dispatcher"), viewer))
    assert allowed(engine, "bob", "delete", "driver")
    assert allowed(engine, "alice", "delete", "driver")
    assert not allowed(engine, "bob", "read", "vehicle")


# --- refusals ----------------------------------------------------------------------------


def refused(engine: Engine, edit: Edit, code: RefusalCode) -> EditRefused:
    """Check `edit` is refused with `code` and changes neither policy nor decisions."""
    warm(engine)
    before = export_policy(engine.policy)
    with pytest.raises(EditRefused) as raised:
        apply_edit(engine.policy, edit, NOW)
    assert raised.value.code is code, raised.value.reason
    assert raised.value.reason
    assert export_policy(engine.policy) == before
    assert_engine_is_current(engine, engine.policy)
    return raised.value


def test_edits_naming_an_unknown_role_are_refused(engine: Engine) -> None:
    viewer = role_id(engine.policy, "viewer")
    for edit in (
        AssignRole("dave", "no-such-role"),
        AddInheritance(viewer, "no-such-role"),
        AddInheritance("no-such-role", viewer),
        RemoveInheritance("no-such-role", viewer),
        RenameRole("no-such-role", "x"),
        DescribeRole("no-such-role", "x"),
        DeleteRole("no-such-role"),
        CreateRole("new", "new", inherits=("no-such-role",)),
        AddRule("role:no-such-role", Effect.GRANT, Rule.build("*", ("read",))),
        RemoveRule("role:no-such-role", Effect.GRANT, Rule.build("*", ("read",))),
    ):
        refused(engine, edit, RefusalCode.NOT_FOUND)


def test_assigning_by_name_instead_of_id_is_refused(engine: Engine) -> None:
    refused(engine, AssignRole("dave", "viewer"), RefusalCode.NOT_FOUND)


def test_edits_naming_an_unknown_user_are_refused(engine: Engine) -> None:
    viewer = role_id(engine.policy, "viewer")
    for edit in (
        AssignRole("ghost", viewer),
        UnassignRole("ghost", viewer),
        DeleteUser("ghost"),
        SetUserAttribute("ghost", "region", "north"),
        AddRule("user:ghost", Effect.DENY, Rule.build("*", ("read",))),
    ):
        refused(engine, edit, RefusalCode.NOT_FOUND)


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        ("viewer", "dispatcher"),
        ("viewer", "fleet-manager"),
        ("dispatcher", "fleet-manager"),
        ("viewer", "viewer"),
    ],
)
def test_an_inheritance_that_would_close_a_cycle_is_refused(
    engine: Engine, child: str, parent: str
) -> None:
    policy = engine.policy
    error = refused(
        engine, AddInheritance(role_id(policy, child), role_id(policy, parent)), RefusalCode.CYCLE
    )
    assert child in error.reason
    assert parent in error.reason


def test_a_duplicate_role_name_or_id_is_refused(engine: Engine) -> None:
    viewer = role_id(engine.policy, "viewer")
    refused(engine, CreateRole("fresh-id", "viewer"), RefusalCode.ALREADY_EXISTS)
    refused(engine, CreateRole(viewer, "fresh-name"), RefusalCode.ALREADY_EXISTS)
    refused(engine, RenameRole(viewer, "dispatcher"), RefusalCode.ALREADY_EXISTS)
    refused(engine, CreateUser("alice"), RefusalCode.ALREADY_EXISTS)


def test_renaming_a_role_to_its_own_name_is_allowed(engine: Engine) -> None:
    viewer = role_id(engine.policy, "viewer")
    edit_and_refresh(engine, RenameRole(viewer, "viewer"))
    assert engine.policy.roles[viewer].name == "viewer"


INVALID_EDITS: dict[str, Callable[[str], dict[str, Any]]] = {
    "role without a name": lambda v: {"op": "create_role", "role_id": "x", "name": ""},
    "rename to no name": lambda v: {"op": "rename_role", "role_id": v, "name": ""},
    "user without an id": lambda v: {"op": "create_user", "user_id": ""},
    "attribute without a name": lambda v: {"op": "set_user_attribute", "user_id": "alice",
                                           "key": "", "value": "x"},
    "attribute that is a set": lambda v: {"op": "set_user_attribute", "user_id": "alice",
                                          "key": "k", "value": {1, 2}},
    "attribute that is an object": lambda v: {"op": "set_user_attribute", "user_id": "alice",
                                              "key": "k", "value": object()},
    "expires in words": lambda v: {"op": "assign_role", "user_id": "dave", "role_id": v,
                                   "expires": "next tuesday"},
    "expires without a time": lambda v: {"op": "assign_role", "user_id": "dave", "role_id": v,
                                         "expires": "2026-12-31"},
    "rule on an unknown type": lambda v: {"op": "add_rule", "owner": f"role:{v}",
        "effect": "grant", "rule": {"resource": "spaceship", "actions": ["read"]}},
    "rule with an action not listed for its type": lambda v: {"op": "add_rule",
        "owner": f"role:{v}", "effect": "grant", "rule": {"resource": "vehicle",
                                                          "actions": ["export"]}},
    "star rule with an action listed nowhere": lambda v: {"op": "add_rule", "owner": f"role:{v}",
        "effect": "grant", "rule": {"resource": "*", "actions": ["fly"]}},
    "rule without actions": lambda v: {"op": "add_rule", "owner": f"role:{v}",
        "effect": "grant", "rule": {"resource": "vehicle", "actions": []}},
    "rule owner neither role nor user": lambda v: {"op": "add_rule", "owner": f"group:{v}",
        "effect": "grant", "rule": {"resource": "vehicle", "actions": ["read"]}},
}  # fmt: skip


def refused_document(engine: Engine, document: dict[str, Any]) -> EditRefused:
    """Check the edit document is refused INVALID, when read or applied, changing nothing."""
    before = export_policy(engine.policy)
    with pytest.raises(EditRefused) as raised:
        apply_edit(engine.policy, edit_from_document(document, engine.policy), NOW)
    assert raised.value.code is RefusalCode.INVALID, raised.value.reason
    assert export_policy(engine.policy) == before
    return raised.value


@pytest.mark.parametrize("make", INVALID_EDITS.values(), ids=INVALID_EDITS.keys())
def test_an_invalid_edit_is_refused(engine: Engine, make: Callable[[str], dict[str, Any]]) -> None:
    refused_document(engine, make(role_id(engine.policy, "viewer")))


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, [1, math.nan], {"k": {1: "x"}}, {1: "x"}], ids=repr
)
def test_set_user_attribute_refuses_values_json_cannot_hold(engine: Engine, value: Any) -> None:
    refused_document(
        engine, {"op": "set_user_attribute", "user_id": "alice", "key": "score", "value": value}
    )
    parse_text(dump_policy(engine.policy))


# --- separation of duty ------------------------------------------------------------------


def _breach(engine: Engine, edit: Edit) -> str:
    reason = refused(engine, edit, RefusalCode.CONSTRAINT).reason
    for word in ("payments-sod", "payment-creator", "payment-approver"):
        assert word in reason
    return reason


def test_assigning_an_exclusive_role_is_refused_naming_constraint_user_and_roles(
    engine: Engine,
) -> None:
    reason = _breach(engine, AssignRole("carol", role_id(engine.policy, "payment-approver")))
    assert "carol" in reason


def test_inheriting_an_exclusive_role_is_refused_for_the_holders(engine: Engine) -> None:
    policy = engine.policy
    creator = role_id(policy, "payment-creator")
    approver = role_id(policy, "payment-approver")
    assert "carol" in _breach(engine, AddInheritance(creator, approver))


def test_inheritance_reaching_holders_through_descendants_is_refused(engine: Engine) -> None:
    policy = engine.policy
    edit_and_refresh(engine, CreateRole("clerk", "clerk"))
    edit_and_refresh(engine, CreateRole("team", "team", inherits=("clerk",)))
    edit_and_refresh(engine, AssignRole("dave", "team"))
    edit_and_refresh(engine, AddInheritance("clerk", role_id(policy, "payment-creator")))
    assert "dave" in _breach(engine, AddInheritance("clerk", role_id(policy, "payment-approver")))


def test_a_role_inheriting_both_exclusive_roles_may_exist_but_not_be_held(
    engine: Engine,
) -> None:
    policy = engine.policy
    both = (role_id(policy, "payment-creator"), role_id(policy, "payment-approver"))
    edit_and_refresh(engine, CreateRole("both", "both", inherits=both))
    assert "dave" in _breach(engine, AssignRole("dave", "both"))


@pytest.mark.parametrize(
    "expires", ["2026-11-22T09:30:00Z", "2026-11-22T10:30:00+01:00", "2026-01-01T00:00:00Z"]
)
def test_an_assignment_expired_at_the_time_of_the_edit_does_not_count(
    engine: Engine, expires: str
) -> None:
    policy = engine.policy
    approver = role_id(policy, "payment-approver")
    edit_and_refresh(engine, AssignRole("carol", approver, expires))
    creator = role_id(policy, "payment-creator")
    edit_and_refresh(engine, AssignRole("dave", approver))
    edit_and_refresh(engine, AssignRole("dave", creator, expires))


def test_an_assignment_active_at_the_time_of_the_edit_counts(engine: Engine) -> None:
    approver = role_id(engine.policy, "payment-approver")
    _breach(engine, AssignRole("carol", approver, "2026-11-22T09:30:00.000000001Z"))


def test_reassigning_with_an_expiry_in_the_past_lifts_the_breach(engine: Engine) -> None:
    policy = engine.policy
    creator = role_id(policy, "payment-creator")
    approver = role_id(policy, "payment-approver")
    edit_and_refresh(engine, AssignRole("carol", creator, "2026-01-01T00:00:00Z"))
    edit_and_refresh(engine, AssignRole("carol", approver))
    _breach(engine, AssignRole("carol", creator))


# --- edits as documents ------------------------------------------------------------------


def _one_of_each(policy: Policy) -> list[Edit]:
    viewer = role_id(policy, "viewer")
    dispatcher = role_id(policy, "dispatcher")
    rule = Rule.build("route", ("update",), {"resource.region": {"in": ["a", "$x"]}})
    return [
        CreateRole("r9", "nine", "ninth", (viewer, dispatcher)),
        RenameRole(viewer, "watcher"),
        DescribeRole(viewer, "sees"),
        DeleteRole(viewer),
        AddInheritance(viewer, dispatcher),
        RemoveInheritance(dispatcher, viewer),
        AddRule(f"role:{viewer}", Effect.DENY, rule),
        RemoveRule("user:alice", Effect.GRANT, Rule.build("*", ("read",))),
        AssignRole("alice", viewer, "2027-01-01T00:00:00Z"),
        UnassignRole("alice", viewer),
        CreateUser("erin", "Erin", {"region": "north", "tags": ["a"]}),
        DeleteUser("erin"),
        SetUserAttribute("alice", "region", {"k": [1, None]}),
        MakeEligible("alice", viewer, 8, "2027-01-01T00:00:00Z"),
        RemoveEligible("alice", viewer),
        ActivateRole("alice", viewer, 2, "night shift cover"),
        DeactivateRole("alice", viewer),
        SuspendUser("alice"),
        ResumeUser("alice"),
    ]


def test_an_edit_document_holds_op_and_the_edits_fields(example_policy: Policy) -> None:
    for edit in _one_of_each(example_policy):
        document = edit.to_document()
        fields = {f for f in edit.__dataclass_fields__ if f not in ("op", "permission", "schema")}  # type: ignore[attr-defined]
        assert document["op"] == edit.op
        assert fields <= set(document)
        json.dumps(document)


def test_every_edit_type_is_covered_here(example_policy: Policy) -> None:
    assert {type(e) for e in _one_of_each(example_policy)} == set(EDIT_TYPES.values())


def test_an_edit_document_builds_back_the_same_edit(example_policy: Policy) -> None:
    for edit in _one_of_each(example_policy):
        document = json.loads(json.dumps(edit.to_document()))
        assert document["op"] == edit.op
        assert edit_from_document(document, example_policy) == edit


def _with_each_string_spoilt(value: Any, bad: str) -> Iterator[Any]:
    """`value` once for each string in it (values and keys), that string made to hold `bad`."""
    if isinstance(value, str):
        yield value + bad
    elif isinstance(value, list):
        for i, item in enumerate(value):
            for spoilt in _with_each_string_spoilt(item, bad):
                yield [*value[:i], spoilt, *value[i + 1 :]]
    elif isinstance(value, dict):
        for key, item in value.items():
            for spoilt in _with_each_string_spoilt(item, bad):
                yield {**value, key: spoilt}
            yield {(k + bad if k == key else k): v for k, v in value.items()}


@pytest.mark.parametrize("bad", ["\x00", "\ud800", "\udfff"], ids=["nul", "high", "low"])
def test_no_edit_builds_from_a_document_holding_a_nul_or_a_lone_surrogate(
    example_policy: Policy, bad: str
) -> None:
    # The server refuses a push holding one unread: queued, it would block the outbox.
    spoilt_count = 0
    for edit in _one_of_each(example_policy):
        document = edit.to_document()
        for name, value in document.items():
            if name == "op":
                continue
            for spoilt in _with_each_string_spoilt(value, bad):
                spoilt_count += 1
                with pytest.raises(EditRefused):
                    edit_from_document({**document, name: spoilt}, example_policy)
    assert spoilt_count > len(EDIT_TYPES)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
    | st.sampled_from(["", "*", "viewer", "alice", "role:viewer", "user:alice", "\x00", "\ud800",
                       "2027-01-01T00:00:00Z", "route", "read", "grant", "deny"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=4),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_edit_document_is_refused_naming_a_field_or_builds_an_edit_that_applies_or_is_refused(
    data: st.DataObject,
) -> None:
    # Every way an outside edit document can be wrong (wrong types above all), field by
    # field of a valid one or not an edit at all: EditRefused or an edit, never a traceback;
    # an edit built goes back to its document, and applies or is refused.
    policy = parse_policy(copy.deepcopy(EXAMPLE), now=NOW)
    documents = [edit.to_document() for edit in _one_of_each(policy)]
    document = data.draw(st.sampled_from(documents))
    how = data.draw(st.sampled_from(["field", "extra", "drop", "whole"]))
    if how == "field":
        document = {**document, data.draw(st.sampled_from(sorted(document))): data.draw(_JSON)}
    elif how == "extra":
        document = {**document, data.draw(st.text(max_size=6)): data.draw(_JSON)}
    elif how == "drop":
        dropped = data.draw(st.sampled_from(sorted(document)))
        document = {k: v for k, v in document.items() if k != dropped}
    else:
        document = data.draw(_JSON)
    try:
        edit = edit_from_document(document, policy)
    except EditRefused as refused:
        assert refused.reason
        return
    assert edit_from_document(json.loads(json.dumps(edit.to_document())), policy) == edit
    try:
        apply_edit(policy, edit, NOW)
    except EditRefused as refused:
        assert refused.reason


def test_what_no_store_can_hold_is_found_anywhere_in_a_value() -> None:
    assert not holds_unstorable({"a": ["b", {"c": ("d", 1, None, 2.5)}], "\U0001f600": "ok"})
    for bad in ("\x00", "\ud800", "\udbff", "\udc00", "\udfff"):
        assert holds_unstorable([1, {"a": [f"x{bad}y"]}])
        assert holds_unstorable({"k": {f"{bad}": 1}})
        assert holds_unstorable((f"{bad}",))


def test_an_edit_document_may_name_roles_instead_of_ids(example_policy: Policy) -> None:
    viewer = role_id(example_policy, "viewer")
    edit = edit_from_document(
        {"op": "assign_role", "user_id": "dave", "role_id": "viewer"}, example_policy
    )
    assert edit == AssignRole("dave", viewer)
    edit = edit_from_document(
        {
            "op": "add_rule",
            "owner": "role:viewer",
            "effect": "deny",
            "rule": {"resource": "report", "actions": ["export"]},
        },
        example_policy,
    )
    assert edit == AddRule(f"role:{viewer}", Effect.DENY, Rule.build("report", ("export",)))


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ({"op": "grant_everything"}, "unknown edit op"),
        ({}, "unknown edit op"),
        ({"op": "delete_user", "user_id": "x", "force": True}, "unknown field 'force'"),
        ({"op": "delete_user"}, "delete_user"),
        ({"op": "add_rule", "owner": "user:alice", "effect": "maybe", "rule": {}}, "effect"),
        (
            {
                "op": "add_rule",
                "owner": "user:alice",
                "effect": "grant",
                "rule": {
                    "resource": "route",
                    "actions": ["read"],
                    "when": {"resource.a": {"near": 1}},
                },
            },
            "rule.when.resource.a.near",
        ),
        (
            {
                "op": "add_rule",
                "owner": "user:alice",
                "effect": "grant",
                "rule": {"resource": "route"},
            },
            "resource and actions",
        ),
        ({"op": "create_role", "role_id": "x", "name": "x", "inherits": "viewer"}, "list"),
    ],
)
def test_a_malformed_edit_document_is_refused_naming_the_problem(
    example_policy: Policy, document: dict[str, Any], words: str
) -> None:
    with pytest.raises(EditRefused) as raised:
        edit_from_document(document, example_policy)
    assert raised.value.code is RefusalCode.INVALID
    assert words in raised.value.reason


def test_apply_edit_leaves_an_unrelated_copy_of_the_policy_alone(example_policy: Policy) -> None:
    copy_before = example_policy.copy()
    snapshot = copy.deepcopy(export_policy(copy_before))
    apply_edit(example_policy, DeleteUser("alice"), NOW)
    apply_edit(example_policy, DeleteRole(role_id(example_policy, "viewer")), NOW)
    assert export_policy(copy_before) == snapshot
