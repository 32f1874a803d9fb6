"""The tenant's own policy decides who may edit it, and nobody confers what they do
not hold (sync/policy/authority.py)."""

from __future__ import annotations

from typing import Any

import pytest

from sync.policy.authority import authorize, authorize_account, permission_requests
from sync.policy.document import parse_policy
from sync.policy.edits import (
    ActivateRole,
    AddInheritance,
    AddRule,
    AssignRole,
    CreateRole,
    CreateUser,
    DeactivateRole,
    DeleteRole,
    DeleteUser,
    Edit,
    MakeEligible,
    RemoveRule,
    RenameRole,
    ResumeUser,
    SetUserAttribute,
    SuspendUser,
    UnassignRole,
)
from sync.policy.engine import Engine
from sync.policy.instant import parse_instant
from sync.policy.model import Effect, Rule

NOW = parse_instant("2026-11-22T09:30:00Z")

ADMIN_POLICY: dict[str, Any] = {
    "format": "fleetgate.policy/1",
    "tenant": "t",
    "resource_types": {
        "role": ["read", "create", "update", "delete", "assign", "escalate"],
        "user": ["read", "create", "update", "delete"],
        "doc": ["read"],
    },
    "roles": [
        {"id": "r-admin", "name": "admin",
         "grants": [{"resource": "role", "actions": ["*"]},
                    {"resource": "user", "actions": ["*"]}]},
        {"id": "r-reader", "name": "reader", "grants": [{"resource": "doc", "actions": ["read"]}]},
        {"id": "r-lead", "name": "depot-lead",
         "grants": [{"resource": "user", "actions": ["update", "create"],
                     "when": {"resource.depot": "$user.depot"}},
                    {"resource": "role", "actions": ["assign"],
                     "when": {"resource.id": {"in": ["r-reader"]}}},
                    {"resource": "doc", "actions": ["read"]},
                    {"resource": "role", "actions": ["create", "update"]}]},
    ],
    "users": [
        {"id": "root", "roles": [{"role": "admin"}]},
        {"id": "lena", "attributes": {"depot": "north"}, "roles": [{"role": "depot-lead"}]},
        {"id": "nick", "attributes": {"depot": "north"}},
        {"id": "sam", "attributes": {"depot": "south"}},
    ],
}  # fmt: skip


@pytest.fixture
def engine() -> Engine:
    return Engine(parse_policy(ADMIN_POLICY, now=NOW))


def allowed(engine: Engine, author: str, edit: Edit) -> bool:
    return authorize(engine, edit, author, NOW) is None


def test_an_admin_may_make_every_edit(engine: Engine) -> None:
    edits: list[Edit] = [
        CreateRole("r-new", "new", inherits=("r-admin",)),
        RenameRole("r-reader", "readers"),
        DeleteRole("r-reader"),
        AddInheritance("r-reader", "r-admin"),
        AssignRole("sam", "r-admin"),
        UnassignRole("lena", "r-lead"),
        CreateUser("zoe"),
        DeleteUser("sam"),
        SetUserAttribute("sam", "depot", "east"),
        AddRule("user:sam", Effect.GRANT, Rule.build("doc", ("read",))),
    ]
    assert all(allowed(engine, "root", edit) for edit in edits)


def test_nobody_without_a_grant_may_edit(engine: Engine) -> None:
    denied = authorize(engine, AssignRole("nick", "r-admin"), "nick", NOW)
    assert denied is not None
    assert denied.request is not None
    assert "role assign" in denied.reason
    assert denied.permission == "role:assign on 'r-admin'"


def test_unknown_authors_are_denied(engine: Engine) -> None:
    assert not allowed(engine, "ghost", CreateUser("x"))


def test_a_condition_on_the_role_name_limits_which_roles_may_be_assigned(engine: Engine) -> None:
    assert allowed(engine, "lena", AssignRole("nick", "r-reader"))
    assert not allowed(engine, "lena", AssignRole("nick", "r-admin"))
    assert not allowed(engine, "lena", UnassignRole("root", "r-admin"))


def test_user_edits_see_the_target_users_attributes(engine: Engine) -> None:
    assert allowed(engine, "lena", SetUserAttribute("nick", "title", "driver"))
    assert not allowed(engine, "lena", SetUserAttribute("sam", "title", "driver"))
    assert allowed(engine, "lena", CreateUser("newbie", attributes={"depot": "north"}))
    assert not allowed(engine, "lena", CreateUser("newbie", attributes={"depot": "south"}))


def test_a_rule_on_a_user_needs_user_update_on_that_user(engine: Engine) -> None:
    grant = Rule.build("doc", ("read",))
    assert allowed(engine, "lena", AddRule("user:nick", Effect.GRANT, grant))
    assert not allowed(engine, "lena", AddRule("user:sam", Effect.GRANT, grant))
    requests = permission_requests(engine.policy, AddRule("user:sam", Effect.GRANT, grant), "lena")
    assert [(r.resource_type, r.action, r.resource_id) for r in requests] == [
        ("user", "update", "sam")
    ]


def test_inheriting_a_role_needs_the_right_to_assign_it(engine: Engine) -> None:
    """Every holder of the child gets the parent: like assigning it to all of them."""
    assert allowed(engine, "lena", AddInheritance("r-lead", "r-reader"))
    assert not allowed(engine, "lena", AddInheritance("r-lead", "r-admin"))
    assert allowed(engine, "lena", CreateRole("r-x", "x", inherits=("r-reader",)))
    denied = authorize(engine, CreateRole("r-y", "y", inherits=("r-admin",)), "lena", NOW)
    assert denied is not None
    assert denied.permission == "role:assign on 'r-admin'"  # not role:create, which lena has


def test_role_requests_name_the_role_by_its_stable_id_with_its_name_as_an_attribute(
    engine: Engine,
) -> None:
    (request,) = permission_requests(engine.policy, DeleteRole("r-reader"), "root")
    assert (request.resource_type, request.action, request.resource_id) == (
        "role", "delete", "r-reader")  # fmt: skip
    assert request.resource_attrs == {"role_id": "r-reader", "name": "reader"}


# --- defect 9: a rule about a role keeps protecting it across renames ---------------------

PROTECTED: dict[str, Any] = {
    **ADMIN_POLICY,
    "roles": [
        {"id": "tenant-admin", "name": "tenant-admin",
         "grants": [{"resource": "role", "actions": ["*"]},
                    {"resource": "user", "actions": ["*"]}],
         "denies": [{"resource": "role", "actions": ["delete"],
                     "when": {"resource.id": "tenant-admin"}}]},
    ],
    "users": [{"id": "root", "roles": [{"role": "tenant-admin"}]}],
}  # fmt: skip


def test_protection_bypassed_by_a_rename_the_deny_follows_the_role() -> None:
    engine = Engine(parse_policy(PROTECTED, now=NOW))
    assert authorize(engine, DeleteRole("tenant-admin"), "root", NOW) is not None
    engine.apply(RenameRole("tenant-admin", "former-admin"), NOW)
    denied = authorize(engine, DeleteRole("tenant-admin"), "root", NOW)
    assert denied is not None
    assert "denied by role former-admin" in denied.reason


# --- defect 8: nobody confers a permission they do not hold ---------------------------------

IT: dict[str, Any] = {
    "format": "fleetgate.policy/1",
    "tenant": "t",
    "resource_types": ADMIN_POLICY["resource_types"] | {"vehicle": ["read", "dispatch"]},
    "roles": [
        {"id": "tenant-admin", "name": "tenant-admin",
         "grants": [{"resource": "role", "actions": ["*"]}, {"resource": "user", "actions": ["*"]},
                    {"resource": "vehicle", "actions": ["*"]}]},
        {"id": "it-admin", "name": "it-admin",
         "description": "Manages accounts; cannot hand out administrator roles",
         "grants": [{"resource": "user", "actions": ["read", "create", "update", "delete"]},
                    {"resource": "role", "actions": ["read"]},
                    {"resource": "role", "actions": ["assign"],
                     "when": {"resource.id": {"not_in": ["tenant-admin", "it-admin"]}}}]},
        {"id": "driver", "name": "driver",
         "grants": [{"resource": "vehicle", "actions": ["read"]}],
         "denies": [{"resource": "vehicle", "actions": ["dispatch"],
                     "when": {"context.hour": {"gte": 22}}}]},
        {"id": "dispatcher", "name": "dispatcher",
         "grants": [{"resource": "vehicle", "actions": ["dispatch"]}]},
    ],
    "users": [
        {"id": "root", "roles": [{"role": "tenant-admin"}]},
        {"id": "ivy", "roles": [{"role": "it-admin"}],
         "denies": [{"resource": "role", "actions": ["create"]}]},
        {"id": "dan", "roles": [{"role": "driver"}]},
        {"id": "lead", "roles": [{"role": "it-admin"}, {"role": "dispatcher"}]},
        {"id": "newbie"},
    ],
}  # fmt: skip


@pytest.fixture
def it() -> Engine:
    return Engine(parse_policy(IT, now=NOW))


def test_self_escalation_through_direct_rules_is_refused_at_every_step(it: Engine) -> None:
    """Defect 8: remove one's own deny, grant oneself role:*, assign oneself tenant-admin."""
    lift = RemoveRule("user:ivy", Effect.DENY, Rule.build("role", ("create",)))
    denied = authorize(it, lift, "ivy", NOW)
    assert denied is not None and denied.permission == "role:create"
    assert "the deny being removed" in denied.reason
    grant = AddRule("user:ivy", Effect.GRANT, Rule.build("role", ("*",)))
    denied = authorize(it, grant, "ivy", NOW)
    assert denied is not None and denied.permission in ("role:create", "role:update")
    assert "only a holder of role:escalate" in denied.reason
    denied = authorize(it, AssignRole("ivy", "tenant-admin"), "ivy", NOW)
    assert denied is not None and denied.permission == "role:assign on 'tenant-admin'"


def test_a_role_whose_grants_the_author_lacks_cannot_be_assigned(it: Engine) -> None:
    denied = authorize(it, AssignRole("dan", "dispatcher"), "ivy", NOW)
    assert denied is not None and denied.permission == "vehicle:dispatch"
    assert "role dispatcher" in denied.reason
    assert authorize(it, AssignRole("dan", "dispatcher"), "lead", NOW) is None


def test_a_conditional_grant_covers_only_the_same_condition(it: Engine) -> None:
    conditional = Rule.build("vehicle", ("dispatch",), {"resource.region": "north"})
    denied = authorize(it, AddRule("user:dan", Effect.GRANT, conditional), "ivy", NOW)
    assert denied is not None and denied.permission == "vehicle:dispatch"
    assert authorize(it, AddRule("user:dan", Effect.GRANT, conditional), "lead", NOW) is None


def test_unassigning_a_role_with_a_deny_lifts_the_deny(it: Engine) -> None:
    denied = authorize(it, UnassignRole("dan", "driver"), "ivy", NOW)
    assert denied is not None and denied.permission == "vehicle:dispatch"
    assert "lifted deny of role driver" in denied.reason
    assert authorize(it, UnassignRole("dan", "driver"), "lead", NOW) is None


def test_the_escalate_permission_lets_its_holder_confer_anything(it: Engine) -> None:
    for edit in (
        AssignRole("ivy", "tenant-admin"),
        AddRule("user:dan", Effect.GRANT, Rule.build("*", ("*",))),
        RemoveRule("user:ivy", Effect.DENY, Rule.build("role", ("create",))),
    ):
        assert authorize(it, edit, "root", NOW) is None, edit


def test_narrowing_edits_confer_nothing(it: Engine) -> None:
    assert (
        authorize(it, AddRule("user:dan", Effect.DENY, Rule.build("*", ("*",))), "ivy", NOW) is None
    )
    assert authorize(it, RemoveRule("user:ivy", Effect.GRANT, Rule.build("doc", ("read",))),
                     "ivy", NOW) is None  # fmt: skip
    assert authorize(it, SuspendUser("dan"), "ivy", NOW) is None


def test_resuming_a_user_confers_what_they_hold(it: Engine) -> None:
    it.apply(SuspendUser("dan"), NOW)
    denied = authorize(it, ResumeUser("dan"), "lead", NOW)
    assert denied is not None and denied.permission == "vehicle:read"
    assert authorize(it, ResumeUser("dan"), "root", NOW) is None


def test_a_suspended_or_unknown_author_may_do_nothing(it: Engine) -> None:
    it.apply(SuspendUser("lead"), NOW)
    denied = authorize(it, CreateUser("x"), "lead", NOW)
    assert denied is not None and "suspended" in denied.reason
    assert authorize(it, CreateUser("x"), "ghost", NOW) is not None


def test_a_user_activates_their_own_eligible_role_without_a_permission(it: Engine) -> None:
    it.apply(MakeEligible("dan", "dispatcher", 8), NOW)
    assert authorize(it, ActivateRole("dan", "dispatcher", 4, "cover"), "dan", NOW) is None
    assert authorize(it, DeactivateRole("dan", "dispatcher"), "dan", NOW) is None
    assert authorize(it, ActivateRole("dan", "dispatcher", 4, "cover"), "ivy", NOW) is not None
    denied = authorize(it, MakeEligible("ivy", "dispatcher", 8), "ivy", NOW)
    assert denied is not None and denied.permission == "vehicle:dispatch"


def test_taking_over_an_account_needs_everything_it_holds(it: Engine) -> None:
    denied = authorize_account(it, "ivy", "root", NOW)
    assert denied is not None
    denied = authorize_account(it, "ivy", "dan", NOW)
    assert denied is not None and denied.permission == "vehicle:read"
    assert authorize_account(it, "ivy", "newbie", NOW) is None
    assert authorize_account(it, "dan", "newbie", NOW) is not None  # no user:update
    assert authorize_account(it, "root", "ivy", NOW) is None
