"""The tenant's own policy decides who may edit it (sync/authority.py)."""

from __future__ import annotations

from typing import Any

import pytest

from sync.policy.authority import authorize, permission_requests
from sync.policy.document import parse_policy
from sync.policy.edits import (
    AddInheritance,
    AddRule,
    AssignRole,
    CreateRole,
    CreateUser,
    DeleteRole,
    DeleteUser,
    Edit,
    RenameRole,
    SetUserAttribute,
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
        "role": ["read", "create", "update", "delete", "assign"],
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
                     "when": {"resource.id": {"in": ["reader"]}}},
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
    assert not denied.decision.allowed
    assert "role assign" in denied.decision.reason
    assert denied.permission == "role:assign on 'admin'"


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
    assert denied.permission == "role:assign on 'admin'"  # not role:create, which lena has


def test_role_requests_name_the_role_by_name_with_its_id_as_an_attribute(engine: Engine) -> None:
    (request,) = permission_requests(engine.policy, DeleteRole("r-reader"), "root")
    assert (request.resource_type, request.action, request.resource_id) == (
        "role", "delete", "reader")  # fmt: skip
    assert request.resource_attrs == {"role_id": "r-reader", "name": "reader"}
