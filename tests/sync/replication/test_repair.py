"""Repairing stored entities that fail validation (sync/replication/repair.py).

Every repaired result is checked by `repaired`: it loads from its entities,
exports and re-imports to itself, and repairing it again changes nothing.
Decisions are made by the real `Engine`, before (on the valid stored policy)
and after the damage and its repair.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sync.replication.repair as repair_module
from sync.policy.document import PolicyInvalid, Problem, export_policy, parse_policy
from sync.policy.engine import Engine
from sync.policy.instant import parse_instant
from sync.policy.model import Assignment, Policy
from sync.policy.request import parse_request
from sync.replication.entities import (
    CONSTRAINTS,
    RESOURCE_TYPES,
    ROLE,
    SETTINGS,
    USER,
    Entity,
    policy_document,
    policy_entities,
)
from sync.replication.repair import Repair, repair_entities

NOW = parse_instant("2026-11-22T09:30:00Z")
TENANT = "acme-logistics"

_EXAMPLE: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "data" / "policy-format-example.json").read_text()
)
DOCUMENT = copy.deepcopy(_EXAMPLE)
DOCUMENT["users"] += [
    {"id": "bob", "attributes": {"region": "south"}, "roles": [{"role": "viewer"}]},
    {"id": "carol", "roles": [{"role": "payment-creator"}]},
    {
        "id": "dave",
        "grants": [{"resource": "vehicle", "actions": ["read", "update"]}],
        "denies": [{"resource": "vehicle", "actions": ["update"], "when": {"resource.id": "v-9"}}],
    },
    {
        "id": "erin",
        "roles": [
            {"role": "fleet-manager", "eligible": {"max_hours": 8}},
            {"role": "payment-approver"},
        ],
    },
    {"id": "frank", "suspended": True, "roles": [{"role": "viewer"}]},
]
POLICY = parse_policy(DOCUMENT, now=NOW)
ID = {role.name: role.id for role in POLICY.roles.values()}
"""Role name -> id in the stored policy."""


def stored() -> list[Entity]:
    """The example tenant's entities, deep copies: a test may damage them."""
    return [Entity(e.kind, e.id, copy.deepcopy(e.document)) for e in policy_entities(POLICY)]


def role(entities: list[Entity], name: str) -> Any:
    """The document of the stored role named `name`."""
    return next(e for e in entities if e.kind == ROLE and e.id == ID[name]).document


def user(entities: list[Entity], user_id: str) -> Any:
    return next(e for e in entities if e.kind == USER and e.id == user_id).document


def setting(entities: list[Entity], name: str) -> Any:
    return next(e for e in entities if e.kind == SETTINGS and e.id == name).document


def put(entities: list[Entity], kind: str, entity_id: str, new: Entity) -> None:
    index = next(i for i, e in enumerate(entities) if (e.kind, e.id) == (kind, entity_id))
    entities[index] = new


def state(policy: Policy) -> dict[str, Any]:
    return {
        "tenant": policy.tenant,
        "resource_types": dict(policy.resource_types),
        "roles": dict(policy.roles),
        "users": dict(policy.users),
        "constraints": policy.constraints,
    }


def repaired(entities: list[Entity]) -> Repair:
    """`repair_entities`, with what every result must satisfy checked."""
    given = repr(entities)
    result = repair_entities(TENANT, entities, NOW)
    assert repr(entities) == given  # the stored entities are left as they were
    assert result.changed == bool(result.problems)
    assert not [p for p in result.problems if p.startswith("policy: ")]  # no last resort
    assert state(parse_policy(export_policy(result.policy), now=NOW)) == state(result.policy)
    loaded = parse_policy(policy_document(TENANT, result.entities), now=NOW)
    assert state(loaded) == state(result.policy)
    again = repair_entities(TENANT, result.entities, NOW)
    assert (again.changed, again.problems) == (False, [])
    assert state(again.policy) == state(result.policy)
    return result


def allowed(
    policy: Policy,
    user_id: str,
    action: str,
    resource_type: str,
    attributes: dict[str, Any] | None = None,
    resource_id: str | None = None,
) -> bool:
    return decision(policy, user_id, action, resource_type, attributes, resource_id).allowed


def decision(
    policy: Policy,
    user_id: str,
    action: str,
    resource_type: str,
    attributes: dict[str, Any] | None = None,
    resource_id: str | None = None,
) -> Any:
    resource: dict[str, Any] = {"type": resource_type, "attributes": attributes or {}}
    if resource_id is not None:
        resource["id"] = resource_id
    request = parse_request({"user": user_id, "action": action, "resource": resource})
    return Engine(policy).decide(request, NOW)


CONFIDENTIAL = {"classification": "confidential"}


# --- valid entities ----------------------------------------------------------------------


def test_a_valid_policy_comes_back_unchanged_with_no_problems() -> None:
    example = parse_policy(copy.deepcopy(_EXAMPLE), now=NOW)
    entities = list(policy_entities(example))
    result = repair_entities(TENANT, entities, NOW)
    assert (result.changed, result.problems) == (False, [])
    assert state(result.policy) == state(example)
    assert result.entities == entities


def test_valid_entities_cost_one_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    real = repair_module.parse_policy

    def counted(document: object, *, now: Any) -> Policy:
        calls.append(document)
        return real(document, now=now)

    monkeypatch.setattr(repair_module, "parse_policy", counted)
    assert not repair_entities(TENANT, stored(), NOW).changed
    assert len(calls) == 1


# --- the defects of the review -----------------------------------------------------------


def test_a_role_named_5_loads_named_by_its_id_and_keeps_its_holders() -> None:
    entities = stored()
    role(entities, "dispatcher")["name"] = 5
    result = repaired(entities)
    rid = ID["dispatcher"]
    assert result.changed
    assert result.problems == [f"role {rid!r}: name 5 is not a string; named {rid!r}"]
    assert result.policy.roles[rid].name == rid
    # Roles are referenced by id: alice still holds it, fleet-manager still inherits it.
    north = {"region": "north"}
    assert allowed(result.policy, "alice", "assign", "route", north)
    assert result.policy.roles[ID["fleet-manager"]].inherits == (rid,)


def test_a_role_renamed_to_7_loads_named_by_its_id() -> None:
    entities = stored()
    role(entities, "payment-creator")["name"] = 7
    result = repaired(entities)
    rid = ID["payment-creator"]
    assert f"role {rid!r}: name 7 is not a string; named {rid!r}" in result.problems
    assert allowed(result.policy, "carol", "read", "report")
    assert result.policy.constraints == POLICY.constraints


def test_a_description_that_is_an_object_becomes_empty() -> None:
    entities = stored()
    role(entities, "viewer")["description"] = {"x": 1}
    result = repaired(entities)
    rid = ID["viewer"]
    assert result.problems == [f"role {rid!r}: description {{\"x\": 1}} is not a string; set to ''"]
    assert result.policy.roles[rid].description == ""


def test_a_user_name_that_is_a_list_is_removed() -> None:
    entities = stored()
    user(entities, "alice")["name"] = ["a"]
    result = repaired(entities)
    assert result.problems == ["user 'alice': name [\"a\"] is not a string; removed"]
    assert result.policy.users["alice"].name is None
    assert result.policy.users["alice"].roles == POLICY.users["alice"].roles


def test_a_role_with_the_empty_id_is_dropped_with_every_reference_to_it() -> None:
    entities = stored()
    put(entities, SETTINGS, CONSTRAINTS, Entity(SETTINGS, CONSTRAINTS, []))
    entities.append(
        Entity(
            ROLE, "", {"id": "", "name": "ghost", "grants": [{"resource": "*", "actions": ["*"]}]}
        )
    )
    user(entities, "carol")["roles"].append({"role_id": ""})
    role(entities, "payment-approver")["inherits"] = [""]
    result = repaired(entities)
    assert (
        "role '': id '' is not a non-empty string of at most 256 characters; dropped the role"
        in result.problems
    )
    ghost = "role 'ghost' (id '')"
    assert f"user 'carol': roles[1] names {ghost}, which was dropped; dropped" in result.problems
    rid = ID["payment-approver"]
    assert f"role {rid!r}: inherits {ghost}, which was dropped; dropped" in result.problems
    assert "" not in result.policy.roles
    assert [a.role_id for a in result.policy.users["carol"].roles] == [ID["payment-creator"]]
    assert not allowed(result.policy, "carol", "delete", "vehicle")


def test_attributes_that_are_a_string_suspend_the_user() -> None:
    entities = stored()
    user(entities, "alice")["attributes"] = "x"
    result = repaired(entities)
    assert result.problems == [
        "user 'alice': attributes 'x' are not an object; suspended, with no attributes "
        "(conditions on them cannot be decided)"
    ]
    alice = result.policy.users["alice"]
    assert (alice.suspended, dict(alice.attributes)) == (True, {})
    denied = decision(result.policy, "alice", "read", "vehicle")
    assert not denied.allowed
    assert "suspended" in denied.reason


# --- fail closed -------------------------------------------------------------------------


def test_an_invalid_deny_of_a_role_denies_everything_to_its_holders() -> None:
    assert allowed(POLICY, "bob", "read", "vehicle")
    assert allowed(POLICY, "alice", "read", "report")
    entities = stored()
    role(entities, "viewer")["denies"][0]["resource"] = 5
    result = repaired(entities)
    rid = ID["viewer"]
    assert result.problems == [
        f"role {rid!r}: denies[0] resource 5 is not a resource type; made a deny of "
        "everything: the role now denies everything to its holders"
    ]
    for user_id in ("bob", "alice"):  # bob holds viewer, alice through dispatcher
        assert not allowed(result.policy, user_id, "read", "vehicle")
        assert not allowed(result.policy, user_id, "dispatch", "vehicle")
    assert allowed(result.policy, "carol", "read", "report")  # holds no viewer


def test_an_invalid_deny_of_a_user_denies_that_user_everything() -> None:
    assert allowed(POLICY, "dave", "read", "vehicle")
    entities = stored()
    user(entities, "dave")["denies"][0]["actions"] = ["fly"]
    result = repaired(entities)
    assert result.problems == [
        "user 'dave': denies[0] action 'fly' is not listed for 'vehicle'; made a deny of "
        "everything: every request of the user is now denied"
    ]
    assert not allowed(result.policy, "dave", "read", "vehicle")


def test_denies_that_are_not_a_list_deny_everything() -> None:
    entities = stored()
    user(entities, "bob")["denies"] = {"resource": "*"}
    result = repaired(entities)
    assert not allowed(result.policy, "bob", "read", "vehicle")
    assert any(p.startswith("user 'bob': denies {") for p in result.problems)


def test_an_invalid_grant_grants_nothing() -> None:
    assert allowed(POLICY, "carol", "read", "report")
    entities = stored()
    role(entities, "payment-creator")["grants"][0]["when"] = {"resource.region": {"near": 1}}
    result = repaired(entities)
    rid = ID["payment-creator"]
    assert len(result.problems) == 1
    assert result.problems[0].startswith(f"role {rid!r}: grants[0] has a malformed condition")
    assert result.problems[0].endswith("; dropped that grant")
    assert result.policy.roles[rid].grants == ()
    assert not allowed(result.policy, "carol", "read", "report")
    assert allowed(result.policy, "erin", "export", "report")


def test_an_attribute_that_is_not_a_json_value_is_dropped_and_suspends_the_user() -> None:
    entities = stored()
    user(entities, "alice")["attributes"]["depot"] = math.nan
    result = repaired(entities)
    alice = result.policy.users["alice"]
    assert alice.suspended
    assert dict(alice.attributes) == {"region": "north"}
    assert result.problems == [
        "user 'alice': attribute 'depot' is not a JSON value; dropped, and the user suspended "
        "(conditions on it cannot be decided)"
    ]


@pytest.mark.parametrize("value", ["yes", None, 1, {}])
def test_an_unreadable_suspended_suspends(value: object) -> None:
    entities = stored()
    user(entities, "bob")["suspended"] = value
    result = repaired(entities)
    assert result.policy.users["bob"].suspended
    assert not allowed(result.policy, "bob", "read", "vehicle")


def test_holders_of_a_dropped_role_keep_its_denies() -> None:
    # viewer grants read and denies confidential reports: dropping it takes the
    # grant away from its holders, but the deny stays theirs.
    assert not allowed(POLICY, "alice", "read", "report", CONFIDENTIAL)
    entities = stored()
    viewer = role(entities, "viewer")
    viewer["id"] = "someone-else"
    role(entities, "dispatcher")["grants"].append({"resource": "report", "actions": ["read"]})
    result = repaired(entities)
    rid, dispatcher = ID["viewer"], ID["dispatcher"]
    assert (
        f"role {rid!r}: document id 'someone-else' differs from the entity's; dropped the role"
        in (result.problems)
    )
    assert rid not in result.policy.roles
    assert allowed(result.policy, "alice", "read", "report")  # the new grant of dispatcher
    assert not allowed(result.policy, "alice", "read", "report", CONFIDENTIAL)
    assert not allowed(result.policy, "bob", "read", "vehicle")  # bob held only viewer
    assert result.policy.roles[dispatcher].denies == POLICY.roles[rid].denies
    assert (
        f"role {dispatcher!r}: keeps as its own the denies of role 'viewer' (id {rid!r}), which "
        'it no longer holds: report read when resource.classification = "confidential"'
    ) in result.problems


def test_holders_of_a_role_whose_document_cannot_be_read_are_denied_everything() -> None:
    entities = stored()
    put(entities, ROLE, ID["viewer"], Entity(ROLE, ID["viewer"], ["not", "a", "role"]))
    result = repaired(entities)
    assert ID["viewer"] not in result.policy.roles
    assert not allowed(result.policy, "alice", "update", "vehicle")  # via fleet-manager
    assert allowed(result.policy, "carol", "read", "report")  # holds no viewer


def test_an_assignment_that_cannot_be_read_keeps_every_deny_of_the_tenant() -> None:
    entities = stored()
    user(entities, "carol")["roles"].append(5)
    result = repaired(entities)
    assert "user 'carol': roles[1] 5 is not an object; dropped" in result.problems
    assert allowed(result.policy, "carol", "read", "report")
    assert not allowed(result.policy, "carol", "read", "report", CONFIDENTIAL)


# --- references, cycles, constraints -------------------------------------------------------


def test_references_to_unknown_roles_are_dropped() -> None:
    entities = stored()
    role(entities, "viewer")["inherits"] = ["nobody"]
    # A dangling id that happens to be a role's *name* is not read as that role.
    user(entities, "carol")["roles"].append({"role_id": "fleet-manager"})
    result = repaired(entities)
    assert result.problems == [
        f"role {ID['viewer']!r}: inherits the unknown role 'nobody'; dropped",
        "user 'carol': roles[1] names the unknown role 'fleet-manager'; dropped",
    ]
    assert not allowed(result.policy, "carol", "update", "vehicle")


def test_an_entry_carrying_a_role_name_beside_its_id_is_not_read_as_that_role() -> None:
    # policy_document would let the stray "role" replace the name of role_id.
    entities = stored()
    user(entities, "bob")["roles"][0]["role"] = "fleet-manager"
    result = repaired(entities)
    assert result.problems[0] == "user 'bob': roles[0] has an unknown field 'role'; dropped"
    assert result.policy.users["bob"].roles == ()
    assert not allowed(result.policy, "bob", "update", "vehicle")


def test_an_inheritance_edge_closing_a_cycle_is_dropped_and_named() -> None:
    entities = stored()
    role(entities, "viewer")["inherits"] = [ID["fleet-manager"]]
    result = repaired(entities)
    fleet_manager = ID["fleet-manager"]
    assert (
        f"role {fleet_manager!r}: inherits role 'dispatcher' (id {ID['dispatcher']!r}), which "
        "closes the cycle "
        "fleet-manager -> dispatcher -> viewer -> fleet-manager; dropped that edge"
    ) in result.problems
    roles = result.policy.roles
    assert roles[ID["viewer"]].inherits == (fleet_manager,)
    assert roles[fleet_manager].inherits == ()
    # fleet-manager no longer reaches viewer, but keeps its deny.
    assert roles[fleet_manager].denies == POLICY.roles[ID["viewer"]].denies
    assert not allowed(result.policy, "alice", "read", "report", CONFIDENTIAL)


def test_a_role_inheriting_itself_loses_that_edge() -> None:
    entities = stored()
    role(entities, "viewer")["inherits"] = [ID["viewer"]]
    result = repaired(entities)
    assert result.problems == [f"role {ID['viewer']!r}: inherits itself; dropped that edge"]


def test_constraint_members_that_are_unknown_are_dropped_and_a_short_constraint_goes() -> None:
    entities = stored()
    setting(entities, CONSTRAINTS)[0]["exclusive"][1] = "nobody"
    result = repaired(entities)
    assert result.problems == [
        "settings 'constraints': 'payments-sod' names the unknown role 'nobody'; removed",
        "settings 'constraints': 'payments-sod' lists fewer than two roles; dropped",
    ]
    assert result.policy.constraints == ()


def test_a_user_breaking_a_constraint_loses_the_later_assignment() -> None:
    entities = stored()
    user(entities, "carol")["roles"].append({"role_id": ID["payment-approver"]})
    result = repaired(entities)
    approver = ID["payment-approver"]
    assert result.problems == [
        f"user 'carol': holding role 'payment-approver' (id {approver!r}) breaks constraint "
        "'payments-sod' "
        "('payment-creator' with 'payment-approver'); unassigned"
    ]
    assert [a.role_id for a in result.policy.users["carol"].roles] == [ID["payment-creator"]]
    assert not allowed(result.policy, "carol", "export", "report")


def test_a_duplicate_role_name_goes_to_the_later_role_named_by_its_id() -> None:
    entities = stored()
    role(entities, "payment-approver")["name"] = "viewer"
    result = repaired(entities)
    rid = ID["payment-approver"]
    assert result.problems == [
        f"role {rid!r}: name 'viewer' is taken by role {ID['viewer']!r}; named {rid!r}"
    ]
    assert result.policy.roles[ID["viewer"]].name == "viewer"


# --- assignments -----------------------------------------------------------------------------


def test_an_assignment_with_a_malformed_expiry_is_dropped() -> None:
    entities = stored()
    user(entities, "alice")["roles"][1]["expires"] = "next tuesday"
    result = repaired(entities)
    assert result.problems[0] == (
        "user 'alice': roles[1] expires 'next tuesday' is not an RFC 3339 date-time; "
        "dropped that assignment"
    )
    assert [a.role_id for a in result.policy.users["alice"].roles] == [ID["dispatcher"]]
    assert not allowed(result.policy, "alice", "update", "vehicle")


def test_a_malformed_or_second_eligible_entry_is_dropped() -> None:
    entities = stored()
    roles = user(entities, "erin")["roles"]
    roles.append({"role_id": ID["fleet-manager"], "eligible": {"max_hours": 4}})
    roles.append({"role_id": ID["viewer"], "eligible": {"max_days": 3}})
    result = repaired(entities)
    assert result.problems == [
        f"user 'erin': roles[2] makes role 'fleet-manager' (id {ID['fleet-manager']!r}) eligible "
        "a second time; dropped",
        'user \'erin\': roles[3] eligible {"max_days": 3} is not {"max_hours": 1 to 720}; '
        "dropped that eligibility",
    ]
    assert result.policy.users["erin"].roles == POLICY.users["erin"].roles


# --- resource types and entities ---------------------------------------------------------------


def test_bad_resource_types_and_actions_are_dropped_and_rules_naming_them_follow() -> None:
    entities = stored()
    types = setting(entities, RESOURCE_TYPES)
    types["report"] = "read, export"  # not a list: the type goes
    types["vehicle"].append(5)
    result = repaired(entities)
    assert "report" not in result.policy.resource_types
    assert result.policy.resource_types["vehicle"] == POLICY.resource_types["vehicle"]
    # viewer's deny on reports now names an unknown type: it denies everything.
    assert not allowed(result.policy, "bob", "read", "vehicle")
    # payment-creator's grant on reports is dropped.
    assert result.policy.roles[ID["payment-creator"]].grants == ()
    assert (
        "settings 'resource_types': resource type 'vehicle': action 5 is not a non-empty "
        'string other than "*"; dropped'
    ) in result.problems


def test_entities_of_unknown_kinds_or_settings_are_dropped() -> None:
    entities = [*stored(), Entity("group", "g", {}), Entity(SETTINGS, "theme", {"dark": True})]
    result = repaired(entities)
    assert result.problems == [
        "entity 'group':'g': unknown kind; dropped",
        "settings 'theme': not a setting of a policy; dropped",
    ]
    assert state(result.policy) == state(POLICY)


def test_a_document_without_its_id_gets_the_entitys() -> None:
    entities = stored()
    del user(entities, "bob")["id"]
    result = repaired(entities)
    assert result.problems == ["user 'bob': document has no id; given the entity's"]
    assert state(result.policy) == state(POLICY)


def test_unknown_fields_are_removed() -> None:
    entities = stored()
    user(entities, "bob")["colour"] = "blue"
    result = repaired(entities)
    assert result.problems == ["user 'bob': unknown field 'colour'; removed"]


def test_an_id_longer_than_256_characters_is_dropped() -> None:
    long_id = "u" * 257
    entities = [*stored(), Entity(USER, long_id, {"id": long_id, "roles": []})]
    result = repaired(entities)
    assert long_id not in result.policy.users
    assert result.problems == [
        f"user {'u' * 64!r}…: id {'u' * 64!r}… is not a non-empty string of at most 256 "
        "characters; dropped the user"
    ]


def test_null_lists_that_entities_cannot_hold_are_removed() -> None:
    entities = stored()
    role(entities, "viewer")["inherits"] = None
    user(entities, "bob")["roles"] = None
    result = repaired(entities)
    assert result.problems == [
        f"role {ID['viewer']!r}: inherits is null; removed",
        "user 'bob': roles is null; removed",
    ]


def test_denies_kept_beyond_the_entity_limit_become_one_deny_of_everything() -> None:
    entities = stored()
    for name in ("payment-creator", "payment-approver", "fleet-manager"):
        role(entities, name)["denies"] = [
            {
                "resource": "vehicle",
                "actions": ["read"],
                "when": {"resource.tag": f"{name}{i:01000}"},
            }
            for i in range(40)
        ]
    user(entities, "bob")["roles"].append("?")  # could have named any of them
    result = repaired(entities)
    bob = result.policy.users["bob"]
    assert [rule.to_document() for rule in bob.denies] == [{"resource": "*", "actions": ["*"]}]
    assert result.problems[-1] == (
        "user 'bob': the denies kept would make it larger than 65536 bytes; "
        "it denies everything instead"
    )


# --- the safety net ------------------------------------------------------------------------------


def test_what_parse_still_names_after_repair_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    real = repair_module.parse_policy

    def picky(document: Any, *, now: Any) -> Policy:
        if document.get("users"):
            raise PolicyInvalid([Problem("users[0].id", "injected")])
        return real(document, now=now)

    monkeypatch.setattr(repair_module, "parse_policy", picky)
    result = repair_entities(TENANT, stored(), NOW)
    assert result.changed
    assert result.policy.users == {}
    assert set(result.policy.roles) == set(POLICY.roles)
    assert "user 'alice': still invalid after repair; dropped the user" in result.problems


def test_a_role_dropped_late_leaves_its_holders_denied_everything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = repair_module.parse_policy

    def picky(document: Any, *, now: Any) -> Policy:
        if document["roles"] and document["roles"][0]["name"] == "viewer":
            raise PolicyInvalid([Problem("roles[0].name", "injected")])
        return real(document, now=now)

    monkeypatch.setattr(repair_module, "parse_policy", picky)
    result = repair_entities(TENANT, stored(), NOW)
    assert ID["viewer"] not in result.policy.roles
    assert not allowed(result.policy, "alice", "update", "vehicle")
    assert not allowed(result.policy, "bob", "read", "vehicle")
    assert allowed(result.policy, "carol", "read", "report")


def test_the_last_resort_keeps_only_the_resource_types(monkeypatch: pytest.MonkeyPatch) -> None:
    def hopeless(document: Any, *, now: Any) -> Policy:
        raise PolicyInvalid([Problem("resource_types", "injected")])

    monkeypatch.setattr(repair_module, "parse_policy", hopeless)
    result = repair_entities(TENANT, stored(), NOW)
    assert (result.policy.roles, result.policy.users) == ({}, {})
    assert result.policy.resource_types == POLICY.resource_types
    assert result.problems[-1] == "policy: could not be repaired; serving only its resource types"


@pytest.mark.parametrize(
    "entities",
    [
        [],
        [Entity(SETTINGS, RESOURCE_TYPES, None)],
        [Entity(SETTINGS, RESOURCE_TYPES, [1]), Entity(SETTINGS, CONSTRAINTS, {"a": 1})],
        [Entity(ROLE, ["x"], {}), Entity(USER, 5, []), Entity(["k"], "x", {})],  # type: ignore[arg-type]
        [Entity(USER, "u", {"id": "u", "roles": "all"}), Entity(ROLE, "r", {"id": "r"})],
    ],
)
def test_nonsense_loads_as_something(entities: list[Entity]) -> None:
    repaired(entities)


def test_a_bug_in_the_repair_itself_still_serves_the_resource_types(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(repair_module._Repairer, "name_roles", broken)
    entities = stored()
    role(entities, "viewer")["name"] = 5
    result = repair_entities(TENANT, entities, NOW)
    assert (result.policy.roles, result.policy.users) == ({}, {})
    assert result.policy.resource_types == POLICY.resource_types
    assert "policy: repair failed (KeyError: 'a bug')" in result.problems


def test_a_tenant_name_that_cannot_load_still_does_not_raise() -> None:
    result = repair_entities("", stored(), NOW)
    assert (result.policy.roles, result.policy.users) == ({}, {})
    assert result.problems[-1] == "policy: could not be repaired; serving only its resource types"


# --- properties --------------------------------------------------------------------------------

WRONG: list[Any] = [
    5, -1, 0, 1.5, True, False, None, "", "x", "*", "read", "viewer", "r-nowhere",
    "2026-13-01T00:00:00Z", [], ["a"], [5], [None], {}, {"x": 1}, {"max_hours": 0},
    {"resource": "*"}, {"role_id": "r-nowhere"}, {"user.region": {"eq": []}}, "$user.",
    # Real role ids: damage that makes cycles, breaks constraints, or points elsewhere.
    ID["viewer"], ID["fleet-manager"], ID["payment-approver"], [ID["fleet-manager"]],
    {"role_id": ID["payment-approver"]},
]  # fmt: skip
KEYS = [
    "bogus", "id", "name", "description", "inherits", "grants", "denies", "role_id", "eligible",
    "expires", "suspended", "attributes", "roles", "resource", "actions", "when", "exclusive",
    "max_hours",
]  # fmt: skip

USERS = list(POLICY.users)
PAIRS = [(t, a) for t, actions in POLICY.resource_types.items() for a in actions]
RESOURCES: list[tuple[dict[str, Any], str | None]] = [
    ({"region": "north", "classification": "confidential"}, "v-9"),
    ({"region": "south"}, None),
]


def _places(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key or index) inside a JSON value (the value itself excluded)."""
    found: list[tuple[Any, Any]] = []
    stack = [value] if isinstance(value, dict | list) else []
    while stack:
        current = stack.pop()
        items = current.items() if isinstance(current, dict) else enumerate(current)
        for key, item in items:
            found.append((current, key))
            if isinstance(item, dict | list):
                stack.append(item)
    return found


def _dicts(value: Any) -> list[dict[str, Any]]:
    found = [value] if isinstance(value, dict) else []
    return found + [c[k] for c, k in _places(value) if isinstance(c[k], dict)]


def corrupt(data: st.DataObject, entities: list[Entity], kinds: tuple[str, ...]) -> set[str]:
    """Damage a few random entities of `kinds` in place; the keys of those touched."""
    touched: set[str] = set()
    candidates = [i for i, e in enumerate(entities) if e.kind in kinds]
    role_names = [e.document["name"] for e in entities if e.kind == ROLE]
    for _ in range(data.draw(st.integers(1, 4), label="damages")):
        index = data.draw(st.sampled_from(candidates), label="entity")
        entity = entities[index]
        document = entity.document
        how = data.draw(
            st.sampled_from(["replace", "replace", "delete", "add", "append", "name", "whole"])
        )
        if how == "replace":
            places = _places(document)
            if not places:
                continue
            container, key = data.draw(st.sampled_from(places), label="where")
            container[key] = copy.deepcopy(data.draw(st.sampled_from(WRONG), label="value"))
        elif how == "delete":
            dicts = [d for d in _dicts(document) if d]
            if not dicts:
                continue
            target = data.draw(st.sampled_from(dicts), label="in")
            del target[data.draw(st.sampled_from(sorted(target)), label="key")]
        elif how == "add":
            dicts = _dicts(document)
            if not dicts:
                continue
            target = data.draw(st.sampled_from(dicts), label="in")
            value = copy.deepcopy(data.draw(st.sampled_from(WRONG), label="value"))
            target[data.draw(st.sampled_from(KEYS), label="key")] = value
        elif how == "append":
            lists = [c[k] for c, k in _places(document) if isinstance(c[k], list)]
            if not lists:
                continue
            target = data.draw(st.sampled_from(lists), label="to")
            target.append(copy.deepcopy(data.draw(st.sampled_from(WRONG), label="value")))
        elif how == "name":
            if entity.kind != ROLE or not isinstance(document, dict):
                continue
            document["name"] = data.draw(st.sampled_from(role_names), label="name")
        else:
            new = copy.deepcopy(data.draw(st.sampled_from(WRONG), label="document"))
            entities[index] = Entity(entity.kind, entity.id, new)
        touched.add(entity.key)
    return touched


def decisions(policy: Policy, user_id: str) -> list[bool]:
    engine = Engine(policy)
    found = []
    for resource_type, action in PAIRS:
        for attributes, resource_id in RESOURCES:
            resource: dict[str, Any] = {"type": resource_type, "attributes": attributes}
            if resource_id is not None:
                resource["id"] = resource_id
            request = parse_request({"user": user_id, "action": action, "resource": resource})
            found.append(engine.decide(request, NOW).allowed)
    return found


BEFORE = {user_id: decisions(POLICY, user_id) for user_id in USERS}
HELD = {
    user_id: {r for a in POLICY.users[user_id].roles for r, _ in POLICY.ancestors(a.role_id)}
    for user_id in USERS
}
"""The roles each user's entries reach in the stored policy, eligible ones included."""


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_damaged_roles_and_users_are_repaired_and_the_untouched_decide_as_before(
    data: st.DataObject,
) -> None:
    entities = stored()
    touched = corrupt(data, entities, (ROLE, USER))
    result = repaired(entities)
    for user_id in USERS:
        if f"{USER}:{user_id}" in touched or any(f"{ROLE}:{r}" in touched for r in HELD[user_id]):
            continue
        assert decisions(result.policy, user_id) == BEFORE[user_id], (user_id, result.problems)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_damage_anywhere_never_raises_and_loads(data: st.DataObject) -> None:
    entities = stored()
    corrupt(data, entities, (SETTINGS, ROLE, USER))
    result = repaired(entities)
    for user_id in USERS:
        if user_id in result.policy.users:
            decisions(result.policy, user_id)


ROLE_IDS = list(POLICY.roles)


def _with_id(entities: list[Entity], old: str, new: str) -> list[Entity]:
    """`entities` with role `old` stored under the id `new`, references included."""
    text = json.dumps([[e.kind, e.id, e.document] for e in entities]).replace(
        json.dumps(old), json.dumps(new)
    )
    return [Entity(kind, entity_id, document) for kind, entity_id, document in json.loads(text)]


@pytest.mark.parametrize("name", sorted(ID))
@pytest.mark.parametrize("how", ["document id differs", "empty id", "not an object"])
def test_dropping_any_role_grants_nothing_more(name: str, how: str) -> None:
    entities = stored()
    if how == "document id differs":
        role(entities, name)["id"] = "elsewhere"
    elif how == "empty id":
        entities = _with_id(entities, ID[name], "")
    else:
        put(entities, ROLE, ID[name], Entity(ROLE, ID[name], "?"))
    result = repaired(entities)
    assert ID[name] not in result.policy.roles
    for user_id in USERS:
        for after, before in zip(decisions(result.policy, user_id), BEFORE[user_id], strict=True):
            assert before or not after, (user_id, result.problems)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edges=st.lists(st.tuples(st.sampled_from(ROLE_IDS), st.sampled_from(ROLE_IDS)), max_size=6),
    assignments=st.lists(st.tuples(st.sampled_from(USERS), st.sampled_from(ROLE_IDS)), max_size=4),
)
def test_cycles_and_broken_constraints_are_repaired_without_granting_more(
    edges: list[tuple[str, str]], assignments: list[tuple[str, str]]
) -> None:
    """The stored policy's meaning is known here: an engine reads cycles (each role
    of one holds them all) and ignores constraints. The repair allows no more."""
    roles = dict(POLICY.roles)
    for child, parent in edges:
        roles[child] = dataclasses.replace(roles[child], inherits=(*roles[child].inherits, parent))
    users = dict(POLICY.users)
    for user_id, role_id in assignments:
        extra = (*users[user_id].roles, Assignment(role_id))
        users[user_id] = dataclasses.replace(users[user_id], roles=extra)
    meant = Policy(TENANT, POLICY.resource_types, roles, users, POLICY.constraints)
    result = repaired(list(policy_entities(meant)))
    for user_id in USERS:
        for after, before in zip(
            decisions(result.policy, user_id), decisions(meant, user_id), strict=True
        ):
            assert before or not after, (user_id, result.problems)


def test_decisions_helper_sees_every_pair() -> None:
    # Guards the property above: its sample of requests is not empty or all denied.
    assert any(BEFORE["alice"]) and not all(BEFORE["alice"])
    assert len(BEFORE["alice"]) == len(PAIRS) * len(RESOURCES)
