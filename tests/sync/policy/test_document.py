"""sync.document: loading, validating and exporting the policy document
(policy-format.md § Policy document)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.policy_files import load_policy_file
from sync.policy.document import (
    FORMAT,
    PolicyInvalid,
    Problem,
    dump_policy,
    export_policy,
    parse_policy,
    parse_text,
    role_id_for,
)
from sync.policy.engine import Engine
from sync.policy.instant import Instant, parse_instant
from sync.policy.model import Policy

Doc = dict[str, Any]
NOW = parse_instant("2026-11-22T09:30:00Z")


def problems_of(document: Any, now: Instant = NOW) -> list[Problem]:
    with pytest.raises(PolicyInvalid) as raised:
        parse_policy(document, now=now)
    assert raised.value.problems, "PolicyInvalid must list its problems"
    return raised.value.problems


def paths_of(document: Any, now: Instant = NOW) -> list[str]:
    return [p.path for p in problems_of(document, now)]


def only_problem(document: Any, now: Instant = NOW) -> Problem:
    problems = problems_of(document, now)
    assert len(problems) == 1, problems
    return problems[0]


# --- what a valid document becomes ------------------------------------------------------


def test_the_spec_example_parses_into_roles_users_and_constraints(example_policy: Policy):
    policy = example_policy
    assert policy.tenant == "acme-logistics"
    assert policy.resource_types["report"] == ("read", "export")
    names = [role.name for role in policy.roles.values()]
    assert names == [
        "viewer",
        "dispatcher",
        "fleet-manager",
        "payment-creator",
        "payment-approver",
    ]
    dispatcher = policy.role_by_name("dispatcher")
    viewer = policy.role_by_name("viewer")
    assert dispatcher is not None and viewer is not None
    assert dispatcher.inherits == (viewer.id,)
    assert viewer.description == "Read-only access to fleet data"
    alice = policy.users["alice"]
    assert alice.name == "Alice Ng"
    assert dict(alice.attributes) == {"region": "north", "depot": "d1"}
    assert [policy.role_name(a.role_id) for a in alice.roles] == ["dispatcher", "fleet-manager"]
    assert alice.roles[1].expires == "2026-12-31T00:00:00Z"
    (constraint,) = policy.constraints
    assert constraint.name == "payments-sod"
    assert [policy.role_name(r) for r in constraint.exclusive] == [
        "payment-creator",
        "payment-approver",
    ]


def test_absent_sections_mean_empty(minimal: Callable[..., Doc]) -> None:
    policy = parse_policy(minimal(roles=[{"name": "solo"}], users=[{"id": "u"}]), now=NOW)
    role = next(iter(policy.roles.values()))
    assert (role.inherits, role.grants, role.denies, role.description) == ((), (), (), "")
    user = policy.users["u"]
    assert (user.roles, user.grants, user.denies, dict(user.attributes)) == ((), (), (), {})
    assert policy.constraints == ()
    empty = parse_policy(minimal(), now=NOW)
    assert (empty.roles, empty.users, empty.constraints) == ({}, {}, ())


def test_null_sections_mean_empty(minimal: Callable[..., Doc]) -> None:
    document = minimal(
        roles=[{"name": "r", "inherits": None, "grants": None, "denies": None}],
        users=[{"id": "u", "roles": None, "attributes": None}],
        constraints=None,
    )
    policy = parse_policy(document, now=NOW)
    assert policy.users["u"].roles == ()


def test_a_role_id_given_in_the_document_is_kept(minimal: Callable[..., Doc]) -> None:
    policy = parse_policy(minimal(roles=[{"name": "a", "id": "role-7"}]), now=NOW)
    assert list(policy.roles) == ["role-7"]
    assert policy.roles["role-7"].name == "a"


def test_a_role_without_an_id_gets_a_stable_distinct_one(minimal: Callable[..., Doc]) -> None:
    document = minimal(roles=[{"name": "a"}, {"name": "b"}])
    first = parse_policy(document, now=NOW)
    second = parse_policy(copy.deepcopy(document), now=NOW)
    assert list(first.roles) == list(second.roles)
    assert len(set(first.roles)) == 2
    assert next(iter(first.roles)) == role_id_for("t", "a")


def test_a_derived_role_id_never_takes_an_id_given_to_another_role(
    minimal: Callable[..., Doc],
) -> None:
    taken = role_id_for("t", "a")
    policy = parse_policy(minimal(roles=[{"name": "a"}, {"name": "b", "id": taken}]), now=NOW)
    assert policy.roles[taken].name == "b"
    assert len(policy.roles) == 2


def test_ids_are_never_references(minimal: Callable[..., Doc]) -> None:
    document = minimal(roles=[{"name": "a", "id": "x"}, {"name": "b", "inherits": ["x"]}])
    assert only_problem(document).path == "roles[1].inherits[0]"


def test_an_unquoted_yaml_timestamp_stays_a_string() -> None:
    text = "expires: 2026-12-31T00:00:00Z\nday: 2026-12-31\n"
    assert parse_text(text, yaml_syntax=True) == {
        "expires": "2026-12-31T00:00:00Z",
        "day": "2026-12-31",
    }


EXAMPLE_YAML = """\
format: fleetgate.policy/1
tenant: acme-logistics
resource_types:
  vehicle: [read, create, update, delete, dispatch]
  driver: [read, create, update, delete]
  route: [read, create, update, delete, assign]
  report: [read, export]
  user: [read, create, update, delete]
  role: [read, create, update, delete, assign]
roles:
  - name: viewer
    description: Read-only access to fleet data
    inherits: []
    grants:
      - {resource: "*", actions: [read]}
    denies:
      - resource: report
        actions: [read]
        when: {resource.classification: confidential}
  - name: dispatcher
    inherits: [viewer]
    grants:
      - resource: route
        actions: [update, assign]
        when:
          resource.region: $user.region
  - name: fleet-manager
    inherits: [dispatcher]
    grants: [{resource: vehicle, actions: ["*"]}]
  - {name: payment-creator, grants: [{resource: report, actions: [read]}]}
  - {name: payment-approver, grants: [{resource: report, actions: [export]}]}
users:
  - id: alice
    name: Alice Ng
    attributes: {region: north, depot: d1}
    roles:
      - role: dispatcher
      - role: fleet-manager
        expires: 2026-12-31T00:00:00Z
    grants: []
    denies: []
  - id: bob
    attributes: {region: south}
    roles: [{role: viewer}]
  - id: carol
    roles: [{role: payment-creator}]
  - id: dave
constraints:
  - name: payments-sod
    exclusive: [payment-creator, payment-approver]
"""


def test_yaml_loads_the_same_policy_as_json(example_doc: Doc, state: Callable[..., Any]) -> None:
    from_yaml = parse_text(EXAMPLE_YAML, yaml_syntax=True)
    assert from_yaml == example_doc
    from_json = parse_text(json.dumps(example_doc))
    assert state(parse_policy(from_yaml, now=NOW)) == state(parse_policy(from_json, now=NOW))


def test_load_policy_file_reads_json_and_yaml_alike(
    tmp_path: Path, example_doc: Doc, state: Callable[..., Any]
) -> None:
    (tmp_path / "p.json").write_text(json.dumps(example_doc))
    (tmp_path / "p.yaml").write_text(EXAMPLE_YAML)
    (tmp_path / "p.YML").write_text(EXAMPLE_YAML)
    policies = [load_policy_file(tmp_path / n, now=NOW) for n in ("p.json", "p.yaml", "p.YML")]
    assert state(policies[0]) == state(policies[1]) == state(policies[2])


def test_load_policy_file_refuses_a_file_over_the_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_text(" " * 100 + "{}")
    with pytest.raises(PolicyInvalid, match="limit"):
        load_policy_file(path, now=NOW, max_bytes=50)


def test_load_policy_file_reports_a_file_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(PolicyInvalid, match="cannot read"):
        load_policy_file(tmp_path / "missing.json", now=NOW)


def test_load_policy_file_validates_what_it_read(tmp_path: Path, example_doc: Doc) -> None:
    example_doc["format"] = "fleetgate.policy/2"
    path = tmp_path / "p.json"
    path.write_text(json.dumps(example_doc))
    with pytest.raises(PolicyInvalid) as raised:
        load_policy_file(path, now=NOW)
    assert [p.path for p in raised.value.problems] == ["format"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"format": "x",\n "tenant": }', "line 2 column"),
        ('{"tenant": "a", "tenant": "b"}', "duplicate key 'tenant'"),
        ('{"n": NaN}', "NaN is not a JSON number"),
        ('{"n": Infinity}', "Infinity is not a JSON number"),
        (b"\xff\xfe{", "not"),
    ],
)
def test_parse_text_rejects_text_that_is_not_one_json_document(
    text: str | bytes, words: str
) -> None:
    with pytest.raises(PolicyInvalid, match=words):
        parse_text(text)


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "[1, .nan]", "{1: x}"])
def test_yaml_values_json_cannot_hold_are_rejected_in_user_attributes(value: str) -> None:
    text = (
        "format: fleetgate.policy/1\ntenant: t\nresource_types: {doc: [read]}\n"
        f"users:\n  - id: u\n    attributes: {{score: {value}}}\n"
    )
    problems = problems_of(parse_text(text, yaml_syntax=True))
    assert all(p.path.startswith("users[0].attributes") for p in problems), problems


def test_parse_text_rejects_broken_yaml() -> None:
    with pytest.raises(PolicyInvalid, match="not valid YAML"):
        parse_text("roles: [a, b\n", yaml_syntax=True)


def test_parse_text_rejects_absurd_nesting_without_crashing() -> None:
    with pytest.raises(PolicyInvalid, match="nests too deeply"):
        parse_text("[" * 100_000 + "]" * 100_000)


# --- rejections, each with its place -----------------------------------------------------


@pytest.mark.parametrize("value", [None, "fleetgate.policy/2", "fleetgate.policy/1 ", 1])
def test_a_wrong_or_missing_format_is_rejected_at_format(
    minimal: Callable[..., Doc], value: Any
) -> None:
    document = minimal(format=value)
    if value is None:
        del document["format"]
    problem = only_problem(document)
    assert problem.path == "format"
    assert FORMAT in problem.message


@pytest.mark.parametrize("document", [None, [], "policy", 5])
def test_a_document_that_is_not_an_object_is_rejected(document: Any) -> None:
    assert only_problem(document).path == ""


@pytest.mark.parametrize("tenant", [None, "", 5])
def test_a_missing_or_empty_tenant_is_rejected(minimal: Callable[..., Doc], tenant: Any) -> None:
    assert only_problem(minimal(tenant=tenant)).path == "tenant"


def test_missing_resource_types_is_rejected(minimal: Callable[..., Doc]) -> None:
    document = minimal()
    del document["resource_types"]
    assert only_problem(document).path == "resource_types"


@pytest.mark.parametrize(
    ("types", "path"),
    [
        ({"*": ["read"]}, "resource_types.*"),
        ({"": ["read"]}, "resource_types."),
        ({"doc": "read"}, "resource_types.doc"),
        ({"doc": ["read", "*"]}, "resource_types.doc[1]"),
        ({"doc": ["read", ""]}, "resource_types.doc[1]"),
        ({"doc": ["read", 5]}, "resource_types.doc[1]"),
        ({"doc": ["read", "write", "read"]}, "resource_types.doc[2]"),
    ],
)
def test_a_malformed_resource_type_is_rejected_at_its_place(
    minimal: Callable[..., Doc], types: dict[str, Any], path: str
) -> None:
    assert only_problem(minimal(resource_types=types)).path == path


def test_an_unknown_top_level_field_is_rejected(minimal: Callable[..., Doc]) -> None:
    problem = only_problem(minimal(rolez=[]))
    assert problem.path == "rolez"


@pytest.mark.parametrize(
    ("roles", "path"),
    [
        ([{"name": "a", "inherits": ["ghost"]}], "roles[0].inherits[0]"),
        ([{"name": "a"}, {"name": "b", "inherits": ["a", "ghost"]}], "roles[1].inherits[1]"),
        ([{"name": "a", "inherits": ["a"]}], "roles[0].inherits[0]"),
        ([{"name": "a", "inherits": [5]}], "roles[0].inherits[0]"),
        ([{"name": "a", "inherits": "b"}, {"name": "b"}], "roles[0].inherits"),
    ],
)
def test_an_unknown_role_in_inherits_is_rejected(
    minimal: Callable[..., Doc], roles: list[Doc], path: str
) -> None:
    assert only_problem(minimal(roles=roles)).path == path


def test_an_unknown_role_in_a_users_roles_is_rejected(minimal: Callable[..., Doc]) -> None:
    document = minimal(
        roles=[{"name": "a"}],
        users=[{"id": "u"}, {"id": "v", "roles": [{"role": "a"}, {"role": "ghost"}]}],
    )
    problem = only_problem(document)
    assert problem.path == "users[1].roles[1].role"
    assert "ghost" in problem.message


def test_an_unknown_role_in_exclusive_is_rejected(minimal: Callable[..., Doc]) -> None:
    document = minimal(
        roles=[{"name": "a"}, {"name": "b"}],
        constraints=[{"name": "c", "exclusive": ["a", "b", "ghost"]}],
    )
    problem = only_problem(document)
    assert problem.path == "constraints[0].exclusive[2]"
    assert "ghost" in problem.message


@pytest.mark.parametrize(
    ("roles", "paths", "words"),
    [
        (
            [{"name": "a", "inherits": ["b"]}, {"name": "b", "inherits": ["a"]}],
            {"roles[0].inherits", "roles[1].inherits"},
            "a -> b -> a",
        ),
        (
            [
                {"name": "x"},
                {"name": "a", "inherits": ["x", "c"]},
                {"name": "b", "inherits": ["a"]},
                {"name": "c", "inherits": ["b"]},
            ],
            {"roles[1].inherits", "roles[2].inherits", "roles[3].inherits"},
            "a -> c -> b -> a",
        ),
    ],
)
def test_an_inheritance_cycle_is_rejected_naming_it(
    minimal: Callable[..., Doc], roles: list[Doc], paths: set[str], words: str
) -> None:
    # Any role on the cycle is a fair place to name.
    problem = only_problem(minimal(roles=roles))
    assert problem.path in paths
    assert "cycle" in problem.message
    assert words in problem.message


def test_diamond_inheritance_is_not_a_cycle(minimal: Callable[..., Doc]) -> None:
    roles = [
        {"name": "top", "inherits": ["left", "right"]},
        {"name": "left", "inherits": ["base"]},
        {"name": "right", "inherits": ["base"]},
        {"name": "base"},
    ]
    policy = parse_policy(minimal(roles=roles), now=NOW)
    assert len(policy.roles) == 4


@pytest.mark.parametrize(
    ("rule", "path"),
    [
        ({"resource": "ghost", "actions": ["read"]}, "roles[0].grants[0].resource"),
        ({"resource": 5, "actions": ["read"]}, "roles[0].grants[0].resource"),
        ({"actions": ["read"]}, "roles[0].grants[0].resource"),
        ({"resource": "doc", "actions": ["read", "fly"]}, "roles[0].grants[0].actions[1]"),
        ({"resource": "doc", "actions": ["drive"]}, "roles[0].grants[0].actions[0]"),
        ({"resource": "*", "actions": ["fly"]}, "roles[0].grants[0].actions[0]"),
        ({"resource": "doc", "actions": [5]}, "roles[0].grants[0].actions[0]"),
        ({"resource": "doc", "actions": []}, "roles[0].grants[0].actions"),
        ({"resource": "doc", "actions": "read"}, "roles[0].grants[0].actions"),
        ({"resource": "doc"}, "roles[0].grants[0].actions"),
        ({"resource": "doc", "actions": ["read"], "effect": "x"}, "roles[0].grants[0].effect"),
        ("doc:read", "roles[0].grants[0]"),
    ],
)
def test_an_unknown_resource_type_or_action_in_a_rule_is_rejected(
    minimal: Callable[..., Doc], rule: Any, path: str
) -> None:
    types = {"doc": ["read", "write"], "car": ["drive"]}
    document = minimal(resource_types=types, roles=[{"name": "r", "grants": [rule]}])
    assert only_problem(document).path == path


def test_a_star_rule_may_name_an_action_listed_for_only_one_type(
    minimal: Callable[..., Doc],
) -> None:
    types = {"doc": ["read", "write"], "car": ["drive"]}
    document = minimal(
        resource_types=types,
        roles=[{"name": "r", "grants": [{"resource": "*", "actions": ["drive", "read", "*"]}]}],
    )
    assert parse_policy(document, now=NOW).roles


def test_rules_of_users_are_validated_like_rules_of_roles(minimal: Callable[..., Doc]) -> None:
    document = minimal(
        users=[
            {
                "id": "u",
                "grants": [{"resource": "doc", "actions": ["read"]}],
                "denies": [{"resource": "doc", "actions": ["fly"]}],
            }
        ]
    )
    assert only_problem(document).path == "users[0].denies[0].actions[0]"


def _role_with_conditions(*whens: Any) -> list[Doc]:
    """Four plain roles, then a fifth (roles[3] is the one with the conditions)."""
    grants = [{"resource": "doc", "actions": ["read"], "when": w} for w in whens]
    return [{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d", "grants": grants}]


@pytest.mark.parametrize(
    ("when", "path"),
    [
        (
            {"resource.region": {"between": [1, 2]}},
            "roles[3].grants[1].when.resource.region.between",
        ),
        ({"resource.region": "$foo"}, "roles[3].grants[1].when.resource.region"),
        ({"resource.region": "$user."}, "roles[3].grants[1].when.resource.region"),
        ({"resource.region": {"ne": "$user."}}, "roles[3].grants[1].when.resource.region.ne"),
        ({"region": "north"}, "roles[3].grants[1].when.region"),
        ({"resource.region": {"eq": 1, "ne": 2}}, "roles[3].grants[1].when.resource.region"),
        ({"any": [{}, {"user.": 1}]}, "roles[3].grants[1].when.any[1].user."),
        ({"not": {"resource.a": {"in": "$x"}}}, "roles[3].grants[1].when.not.resource.a.in"),
        ("resource.region = north", "roles[3].grants[1].when"),
        (["resource.region"], "roles[3].grants[1].when"),
    ],
)
def test_a_malformed_condition_or_reference_is_rejected_at_its_exact_path(
    minimal: Callable[..., Doc], when: Any, path: str
) -> None:
    document = minimal(roles=_role_with_conditions({}, when))
    assert only_problem(document).path == path


def test_an_unknown_operator_names_the_operator(minimal: Callable[..., Doc]) -> None:
    document = minimal(roles=_role_with_conditions({}, {"resource.region": {"between": [1, 2]}}))
    problem = only_problem(document)
    assert "between" in problem.message
    assert "unknown operator" in problem.message


def test_a_condition_in_a_users_deny_reports_the_users_path(minimal: Callable[..., Doc]) -> None:
    deny = {"resource": "doc", "actions": ["read"], "when": {"context.hour": {"gt": "$"}}}
    document = minimal(users=[{"id": "u"}, {"id": "v", "denies": [deny]}])
    assert only_problem(document).path == "users[1].denies[0].when.context.hour.gt"


def test_duplicate_role_names_are_rejected(minimal: Callable[..., Doc]) -> None:
    problem = only_problem(minimal(roles=[{"name": "a"}, {"name": "b"}, {"name": "a"}]))
    assert problem.path == "roles[2].name"
    assert "duplicate" in problem.message


def test_duplicate_role_ids_are_rejected(minimal: Callable[..., Doc]) -> None:
    roles = [{"name": "a", "id": "x"}, {"name": "b", "id": "y"}, {"name": "c", "id": "x"}]
    problem = only_problem(minimal(roles=roles))
    assert problem.path == "roles[2].id"
    assert "duplicate" in problem.message


def test_duplicate_user_ids_are_rejected(minimal: Callable[..., Doc]) -> None:
    problem = only_problem(minimal(users=[{"id": "u"}, {"id": "v"}, {"id": "u"}]))
    assert problem.path == "users[2].id"
    assert "duplicate" in problem.message


@pytest.mark.parametrize(
    ("user", "path"),
    [
        ({}, "users[0].id"),
        ({"id": ""}, "users[0].id"),
        ({"id": 5}, "users[0].id"),
        ({"id": "u", "name": 5}, "users[0].name"),
        ({"id": "u", "attributes": ["region"]}, "users[0].attributes"),
        ({"id": "u", "roles": "a"}, "users[0].roles"),
        ({"id": "u", "roles": ["a"]}, "users[0].roles[0]"),
        ({"id": "u", "roles": [{"role": "a", "until": "x"}]}, "users[0].roles[0].until"),
        ({"id": "u", "roles": [{"role": "a", "expires": "soon"}]}, "users[0].roles[0].expires"),
        ({"id": "u", "roles": [{"role": "a", "expires": 5}]}, "users[0].roles[0].expires"),
        (
            {"id": "u", "roles": [{"role": "a", "expires": "2026-12-31T00:00:00"}]},
            "users[0].roles[0].expires",
        ),
    ],
)
def test_a_malformed_user_is_rejected_at_its_place(
    minimal: Callable[..., Doc], user: Doc, path: str
) -> None:
    assert only_problem(minimal(roles=[{"name": "a"}], users=[user])).path == path


@pytest.mark.parametrize(
    ("role", "path"),
    [
        ({}, "roles[0].name"),
        ({"name": ""}, "roles[0].name"),
        ({"name": "a", "id": ""}, "roles[0].id"),
        ({"name": "a", "id": 5}, "roles[0].id"),
        ({"name": "a", "description": 5}, "roles[0].description"),
        ({"name": "a", "grants": {"resource": "doc"}}, "roles[0].grants"),
        ({"name": "a", "owner": "x"}, "roles[0].owner"),
    ],
)
def test_a_malformed_role_is_rejected_at_its_place(
    minimal: Callable[..., Doc], role: Doc, path: str
) -> None:
    assert only_problem(minimal(roles=[role])).path == path


@pytest.mark.parametrize(
    ("constraint", "path"),
    [
        ({"exclusive": ["a", "b"]}, "constraints[0].name"),
        ({"name": "c", "exclusive": ["a"]}, "constraints[0].exclusive"),
        ({"name": "c", "exclusive": []}, "constraints[0].exclusive"),
        ({"name": "c"}, "constraints[0].exclusive"),
        ({"name": "c", "exclusive": "a"}, "constraints[0].exclusive"),
        ({"name": "c", "exclusive": ["a", "b"], "why": "x"}, "constraints[0].why"),
    ],
)
def test_a_malformed_constraint_is_rejected_at_its_place(
    minimal: Callable[..., Doc], constraint: Doc, path: str
) -> None:
    document = minimal(roles=[{"name": "a"}, {"name": "b"}], constraints=[constraint])
    assert path in paths_of(document)


def test_duplicate_constraint_names_are_rejected(minimal: Callable[..., Doc]) -> None:
    document = minimal(
        roles=[{"name": "a"}, {"name": "b"}],
        constraints=[{"name": "c", "exclusive": ["a", "b"]}] * 2,
    )
    assert only_problem(document).path == "constraints[1].name"


# --- separation of duty at import --------------------------------------------------------

SOD_ROLES = [
    {"name": "creator"},
    {"name": "approver"},
    {"name": "both", "inherits": ["creator", "approver"]},
    {"name": "via-creator", "inherits": ["creator"]},
]
SOD = [{"name": "payments-sod", "exclusive": ["creator", "approver"]}]


def test_a_user_holding_two_exclusive_roles_breaks_the_constraint(
    minimal: Callable[..., Doc],
) -> None:
    users = [{"id": "ok", "roles": [{"role": "creator"}]}]
    users.append({"id": "eve", "roles": [{"role": "creator"}, {"role": "approver"}]})
    problem = only_problem(minimal(roles=SOD_ROLES, users=users, constraints=SOD))
    assert problem.path == "users[1].roles"
    for word in ("payments-sod", "eve", "creator", "approver"):
        assert word in problem.message


@pytest.mark.parametrize(
    "held",
    [["both"], ["via-creator", "approver"], ["approver", "via-creator"]],
)
def test_holding_exclusive_roles_through_inheritance_breaks_the_constraint(
    minimal: Callable[..., Doc], held: list[str]
) -> None:
    users = [{"id": "eve", "roles": [{"role": r} for r in held]}]
    problem = only_problem(minimal(roles=SOD_ROLES, users=users, constraints=SOD))
    assert problem.path == "users[0].roles"
    assert "payments-sod" in problem.message
    assert "eve" in problem.message


@pytest.mark.parametrize(
    "expires",
    ["2026-11-22T09:30:00Z", "2026-11-22T11:30:00+02:00", "2026-11-22T09:29:59.999999999Z"],
)
def test_an_assignment_expired_at_import_time_does_not_count(
    minimal: Callable[..., Doc], expires: str
) -> None:
    users = [
        {"id": "eve", "roles": [{"role": "creator"}, {"role": "approver", "expires": expires}]}
    ]
    assert parse_policy(minimal(roles=SOD_ROLES, users=users, constraints=SOD), now=NOW)


@pytest.mark.parametrize("expires", ["2026-11-22T09:30:00.000000001Z", "2026-11-22T11:31:00+02:00"])
def test_an_assignment_still_active_at_import_time_counts(
    minimal: Callable[..., Doc], expires: str
) -> None:
    users = [
        {"id": "eve", "roles": [{"role": "creator"}, {"role": "approver", "expires": expires}]}
    ]
    problem = only_problem(minimal(roles=SOD_ROLES, users=users, constraints=SOD))
    assert problem.path == "users[0].roles"


def test_a_role_listed_twice_in_exclusive_is_not_blamed_on_its_holders(
    minimal: Callable[..., Doc],
) -> None:
    document = minimal(
        roles=[{"name": "a"}, {"name": "b"}],
        users=[{"id": "u", "roles": [{"role": "a"}]}],
        constraints=[{"name": "c", "exclusive": ["a", "a"]}],
    )
    try:
        parse_policy(document, now=NOW)
    except PolicyInvalid as error:
        assert [p.path for p in error.problems] == ["constraints[0].exclusive[1]"]


def test_one_role_from_each_of_two_constraints_breaks_neither(
    minimal: Callable[..., Doc],
) -> None:
    roles = [{"name": n} for n in "abcd"]
    constraints = [{"name": "ab", "exclusive": ["a", "b"]}, {"name": "cd", "exclusive": ["c", "d"]}]
    fine = [{"id": "u", "roles": [{"role": "a"}, {"role": "c"}]}]
    assert parse_policy(minimal(roles=roles, users=fine, constraints=constraints), now=NOW)
    broken = [{"id": "u", "roles": [{"role": "a"}, {"role": "c"}, {"role": "d"}]}]
    problem = only_problem(minimal(roles=roles, users=broken, constraints=constraints))
    assert "'cd'" in problem.message
    assert "'ab'" not in problem.message


# --- every problem, not just the first ---------------------------------------------------


def test_every_problem_in_the_document_is_reported(minimal: Callable[..., Doc]) -> None:
    document = minimal(
        format="fleetgate.policy/0",
        roles=[
            {"name": "a", "inherits": ["ghost"]},
            {"name": "b", "grants": [{"resource": "nope", "actions": ["read"]}]},
            {"name": "a"},
            {"name": "c", "denies": [{"resource": "doc", "actions": ["read"], "when": {"x": 1}}]},
        ],
        users=[
            {"id": "u", "roles": [{"role": "ghost"}]},
            {"id": "u"},
        ],
        constraints=[{"name": "k", "exclusive": ["a", "phantom"]}],
    )
    assert sorted(paths_of(document)) == sorted(
        [
            "format",
            "roles[0].inherits[0]",
            "roles[1].grants[0].resource",
            "roles[2].name",
            "roles[3].denies[0].when.x",
            "users[0].roles[0].role",
            "users[1].id",
            "constraints[0].exclusive[1]",
        ]
    )


def test_problems_in_several_conditions_are_all_reported(minimal: Callable[..., Doc]) -> None:
    bad = [{"resource.a": {"between": 1}}, {"resource.b": "$nope"}, {"c": 1}]
    rules = [{"resource": "doc", "actions": ["read"], "when": w} for w in bad]
    document = minimal(roles=[{"name": "r", "grants": rules, "denies": rules[:1]}])
    assert paths_of(document) == [
        "roles[0].grants[0].when.resource.a.between",
        "roles[0].grants[1].when.resource.b",
        "roles[0].grants[2].when.c",
        "roles[0].denies[0].when.resource.a.between",
    ]


def test_a_cycle_is_reported_alongside_other_problems(minimal: Callable[..., Doc]) -> None:
    document = minimal(
        roles=[
            {"name": "a", "inherits": ["b"]},
            {"name": "b", "inherits": ["a"]},
            {"name": "c", "grants": [{"resource": "nope", "actions": ["read"]}]},
        ]
    )
    problems = problems_of(document)
    assert "roles[2].grants[0].resource" in [p.path for p in problems]
    assert any("cycle" in p.message for p in problems)


@pytest.mark.parametrize(
    "skipped", [{"name": "x"}, "not a role", {"description": "no name"}], ids=repr
)
def test_a_cycle_after_a_skipped_role_names_a_role_on_the_cycle(
    minimal: Callable[..., Doc], skipped: Any
) -> None:
    document = minimal(
        roles=[
            {"name": "x"},
            skipped,
            skipped,
            {"name": "a", "inherits": ["b"]},
            {"name": "b", "inherits": ["a"]},
        ]
    )
    cycles = [p for p in problems_of(document) if "cycle" in p.message]
    assert [p.path for p in cycles] in (["roles[3].inherits"], ["roles[4].inherits"])


def test_every_inheritance_cycle_is_reported(minimal: Callable[..., Doc]) -> None:
    document = minimal(
        roles=[
            {"name": "a", "inherits": ["b"]},
            {"name": "b", "inherits": ["a"]},
            {"name": "c", "inherits": ["d"]},
            {"name": "d", "inherits": ["c"]},
        ]
    )
    cycles = [p.message for p in problems_of(document) if "cycle" in p.message]
    assert len(cycles) == 2
    assert any("a -> b" in m or "b -> a" in m for m in cycles)
    assert any("c -> d" in m or "d -> c" in m for m in cycles)


def test_policy_invalid_message_lists_the_first_problems_and_counts_the_rest(
    minimal: Callable[..., Doc],
) -> None:
    document = minimal(users=[{"id": "u"}] * 6)
    with pytest.raises(PolicyInvalid) as raised:
        parse_policy(document, now=NOW)
    assert len(raised.value.problems) == 5
    assert "users[1].id" in str(raised.value)
    assert "(and 2 more)" in str(raised.value)


# --- export and round trip ---------------------------------------------------------------


def test_export_then_parse_gives_an_equal_policy_with_the_same_role_ids(
    example_policy: Policy, state: Callable[..., Any]
) -> None:
    again = parse_policy(export_policy(example_policy), now=NOW)
    assert state(again) == state(example_policy)
    assert list(again.roles) == list(example_policy.roles)


def test_export_is_a_fixed_point_after_one_round_trip(example_policy: Policy) -> None:
    document = export_policy(example_policy)
    assert export_policy(parse_policy(copy.deepcopy(document), now=NOW)) == document


def test_export_writes_role_ids_and_keeps_conditions_verbatim(example_policy: Policy) -> None:
    document = export_policy(example_policy)
    assert all("id" in role for role in document["roles"])
    dispatcher = next(r for r in document["roles"] if r["name"] == "dispatcher")
    assert dispatcher["inherits"] == ["viewer"]
    assert dispatcher["grants"][0]["when"] == {"resource.region": "$user.region"}
    alice = document["users"][0]
    assert alice["roles"] == [
        {"role": "dispatcher"},
        {"role": "fleet-manager", "expires": "2026-12-31T00:00:00Z"},
    ]
    assert "grants" not in alice
    assert document["constraints"] == [
        {"name": "payments-sod", "exclusive": ["payment-creator", "payment-approver"]}
    ]


def test_round_trip_keeps_every_kind_of_value(
    minimal: Callable[..., Doc], state: Callable[..., Any]
) -> None:
    when = {
        "any": [{"resource.a": {"in": [1, 2.5, "x", True, None, [1], {"k": []}]}}, {}],
        "not": {"resource.b": "$$literal"},
        "all": [],
        "context.hour": {"gte": "$user.shift"},
    }
    document = minimal(
        roles=[
            {
                "name": "a",
                "id": "A",
                "description": "first",
                "grants": [{"resource": "doc", "actions": ["*"]}],
            },
            {
                "name": "b",
                "inherits": ["a", "a"],
                "denies": [{"resource": "*", "actions": ["write"], "when": when}],
            },
        ],
        users=[
            {
                "id": "u",
                "name": "You",
                "attributes": {"shift": 9, "nested": {"x": [None]}, "gone": None},
                "roles": [{"role": "b", "expires": "2030-01-01T02:00:00.50+02:00"}],
                "grants": [{"resource": "doc", "actions": ["read"], "when": {}}],
            }
        ],
    )
    policy = parse_policy(document, now=NOW)
    assert state(parse_policy(export_policy(policy), now=NOW)) == state(policy)


@pytest.mark.parametrize("yaml_syntax", [False, True])
def test_dumped_text_loads_back_to_an_equal_policy(
    example_policy: Policy, state: Callable[..., Any], yaml_syntax: bool
) -> None:
    text = dump_policy(example_policy, yaml_syntax=yaml_syntax)
    again = parse_policy(parse_text(text, yaml_syntax=yaml_syntax), now=NOW)
    assert state(again) == state(example_policy)


def test_a_round_trip_decides_like_the_original(example_policy: Policy) -> None:
    from sync.policy.request import Request

    again = parse_policy(export_policy(example_policy), now=NOW)
    first, second = Engine(example_policy), Engine(again)
    for user in ("alice", "bob", "carol", "dave"):
        for type_name, actions in example_policy.resource_types.items():
            for action in actions:
                for region in ("north", "south"):
                    request = Request(user, action, type_name, "x", {"region": region})
                    assert first.decide(request, NOW) == second.decide(request, NOW)


# --- suspended users and eligible assignments (policy-format.md § Additions) -------------


def test_a_suspended_user_is_read_and_absent_or_false_means_active(
    minimal: Callable[..., Doc],
) -> None:
    users = [{"id": "s", "suspended": True}, {"id": "f", "suspended": False}, {"id": "a"}]
    policy = parse_policy(minimal(users=users), now=NOW)
    assert [u.suspended for u in policy.users.values()] == [True, False, False]


@pytest.mark.parametrize("value", ["yes", "true", 1, 0, None, [], {}])
def test_a_suspended_that_is_not_a_boolean_is_rejected_at_its_place(
    minimal: Callable[..., Doc], value: Any
) -> None:
    users = [{"id": "a"}, {"id": "b"}, {"id": "c", "suspended": value}]
    problem = only_problem(minimal(users=users))
    assert str(problem) == "users[2].suspended: must be true or false"


def test_an_eligible_entry_is_read_with_its_max_hours_and_expiry(
    minimal: Callable[..., Doc],
) -> None:
    roles = [
        {"role": "a"},
        {"role": "b", "eligible": {"max_hours": 8}},
        {"role": "a", "eligible": {"max_hours": 720}, "expires": "2027-01-01T00:00:00Z"},
    ]
    document = minimal(roles=[{"name": "a"}, {"name": "b"}], users=[{"id": "u", "roles": roles}])
    policy = parse_policy(document, now=NOW)
    a, b = (policy.role_by_name(n) for n in "ab")
    assert a is not None and b is not None
    entries = policy.users["u"].roles
    assert [(e.role_id, e.eligible, e.expires) for e in entries] == [
        (a.id, None, None),
        (b.id, 8, None),
        (a.id, 720, "2027-01-01T00:00:00Z"),
    ]
    assert entries[2].expires_at == parse_instant("2027-01-01T00:00:00Z")


@pytest.mark.parametrize(
    ("eligible", "problem"),
    [
        (8, 'users[0].roles[1].eligible: must be an object {"max_hours": N}, not number'),
        (None, 'users[0].roles[1].eligible: must be an object {"max_hours": N}, not null'),
        ([8], 'users[0].roles[1].eligible: must be an object {"max_hours": N}, not array'),
        ({}, "users[0].roles[1].eligible.max_hours: missing: an integer from 1 to 720"),
        ({"max_days": 3}, "users[0].roles[1].eligible.max_days: unknown field (known: max_hours)"),
        (
            {"max_hours": 8, "hours": 8},
            "users[0].roles[1].eligible.hours: unknown field (known: max_hours)",
        ),
        (
            {"max_hours": 0},
            "users[0].roles[1].eligible.max_hours: must be an integer from 1 to 720, not 0",
        ),
        (
            {"max_hours": 721},
            "users[0].roles[1].eligible.max_hours: must be an integer from 1 to 720, not 721",
        ),
        (
            {"max_hours": True},
            "users[0].roles[1].eligible.max_hours: must be an integer from 1 to 720, not true",
        ),
        (
            {"max_hours": 8.0},
            "users[0].roles[1].eligible.max_hours: must be an integer from 1 to 720, not 8.0",
        ),
        (
            {"max_hours": "8"},
            'users[0].roles[1].eligible.max_hours: must be an integer from 1 to 720, not "8"',
        ),
        (
            {"max_hours": None},
            "users[0].roles[1].eligible.max_hours: must be an integer from 1 to 720, not null",
        ),
    ],
)
def test_a_malformed_eligible_is_rejected_naming_its_place(
    minimal: Callable[..., Doc], eligible: Any, problem: str
) -> None:
    roles = [{"role": "a"}, {"role": "b", "eligible": eligible}]
    document = minimal(roles=[{"name": "a"}, {"name": "b"}], users=[{"id": "u", "roles": roles}])
    assert str(only_problem(document)) == problem


def test_an_eligible_entry_with_a_bad_expiry_is_rejected_at_its_expires(
    minimal: Callable[..., Doc],
) -> None:
    roles = [{"role": "a", "eligible": {"max_hours": 8}, "expires": "soon"}]
    document = minimal(roles=[{"name": "a"}], users=[{"id": "u", "roles": roles}])
    assert only_problem(document).path == "users[0].roles[0].expires"


def test_a_second_eligible_entry_of_one_role_is_rejected(minimal: Callable[..., Doc]) -> None:
    roles = [
        {"role": "x", "eligible": {"max_hours": 8}},
        {"role": "y", "eligible": {"max_hours": 8}},
        {"role": "x", "eligible": {"max_hours": 4}, "expires": "2027-01-01T00:00:00Z"},
    ]
    document = minimal(roles=[{"name": "x"}, {"name": "y"}], users=[{"id": "u", "roles": roles}])
    assert str(only_problem(document)) == (
        "users[0].roles[2]: role 'x' is already eligible for this user"
    )


def test_the_same_role_may_be_eligible_for_two_users(minimal: Callable[..., Doc]) -> None:
    entry = {"role": "x", "eligible": {"max_hours": 8}}
    users = [{"id": "u", "roles": [entry]}, {"id": "v", "roles": [entry]}]
    assert parse_policy(minimal(roles=[{"name": "x"}], users=users), now=NOW)


def test_an_activation_beside_its_eligible_entry_is_allowed(minimal: Callable[..., Doc]) -> None:
    # policy-format.md: "An activation is written as an ordinary entry of that
    # role with `expires`, beside the eligible entry".
    roles = [
        {"role": "x", "eligible": {"max_hours": 8}},
        {"role": "x", "expires": "2026-11-22T17:30:00Z"},
    ]
    policy = parse_policy(
        minimal(roles=[{"name": "x"}], users=[{"id": "u", "roles": roles}]), now=NOW
    )
    assert [e.eligible for e in policy.users["u"].roles] == [8, None]


def test_eligible_roles_do_not_break_a_constraint_at_import(minimal: Callable[..., Doc]) -> None:
    eligible = [
        {"role": "creator"},
        {"role": "approver", "eligible": {"max_hours": 8}},
        {"role": "both", "eligible": {"max_hours": 1}},
    ]
    users = [{"id": "eve", "roles": eligible}]
    assert parse_policy(minimal(roles=SOD_ROLES, users=users, constraints=SOD), now=NOW)


def test_an_activation_of_an_eligible_role_breaks_a_constraint_at_import(
    minimal: Callable[..., Doc],
) -> None:
    roles = [
        {"role": "creator"},
        {"role": "approver", "eligible": {"max_hours": 8}},
        {"role": "approver", "expires": "2026-11-22T17:30:00Z"},
    ]
    problem = only_problem(
        minimal(roles=SOD_ROLES, users=[{"id": "eve", "roles": roles}], constraints=SOD)
    )
    assert problem.path == "users[0].roles"
    assert "payments-sod" in problem.message


ADDITIONS_USERS = [
    {
        "id": "u",
        "name": "You",
        "suspended": True,
        "roles": [
            {"role": "a"},
            {"role": "b", "eligible": {"max_hours": 8}, "expires": "2027-01-01T00:00:00Z"},
            {"role": "b", "expires": "2026-11-22T17:30:00Z"},
            {"role": "a", "eligible": {"max_hours": 2}},
        ],
    },
    {"id": "v", "suspended": False, "roles": [{"role": "a"}]},
]


def test_export_writes_suspended_only_when_true_and_eligible_entries_in_order(
    minimal: Callable[..., Doc],
) -> None:
    document = minimal(roles=[{"name": "a"}, {"name": "b"}], users=ADDITIONS_USERS)
    exported = export_policy(parse_policy(copy.deepcopy(document), now=NOW))
    first, second = exported["users"]
    assert first == {
        "id": "u",
        "name": "You",
        "suspended": True,
        "roles": [
            {"role": "a"},
            {"role": "b", "eligible": {"max_hours": 8}, "expires": "2027-01-01T00:00:00Z"},
            {"role": "b", "expires": "2026-11-22T17:30:00Z"},
            {"role": "a", "eligible": {"max_hours": 2}},
        ],
    }
    assert second == {"id": "v", "roles": [{"role": "a"}]}
    assert list(first) == ["id", "name", "suspended", "roles"]
    assert list(first["roles"][1]) == ["role", "eligible", "expires"]


def test_entity_documents_write_eligible_entries_by_role_id(minimal: Callable[..., Doc]) -> None:
    from sync.policy.document import user_document

    document = minimal(
        roles=[{"name": "a", "id": "A"}, {"name": "b", "id": "B"}], users=ADDITIONS_USERS
    )
    policy = parse_policy(document, now=NOW)
    assert user_document(policy.users["u"]) == {
        "id": "u",
        "name": "You",
        "suspended": True,
        "roles": [
            {"role_id": "A"},
            {"role_id": "B", "eligible": {"max_hours": 8}, "expires": "2027-01-01T00:00:00Z"},
            {"role_id": "B", "expires": "2026-11-22T17:30:00Z"},
            {"role_id": "A", "eligible": {"max_hours": 2}},
        ],
    }
    assert "suspended" not in user_document(policy.users["v"])


def test_round_trip_keeps_suspension_and_eligibility(
    minimal: Callable[..., Doc], state: Callable[..., Any]
) -> None:
    document = minimal(roles=[{"name": "a"}, {"name": "b"}], users=ADDITIONS_USERS)
    policy = parse_policy(document, now=NOW)
    exported = export_policy(policy)
    again = parse_policy(copy.deepcopy(exported), now=NOW)
    assert state(again) == state(policy)
    assert export_policy(again) == exported
    for yaml_syntax in (False, True):
        text = dump_policy(policy, yaml_syntax=yaml_syntax)
        assert state(parse_policy(parse_text(text, yaml_syntax=yaml_syntax), now=NOW)) == state(
            policy
        )


def test_a_round_tripped_rule_keeps_its_key(minimal: Callable[..., Doc]) -> None:
    from sync.policy.model import rule_key

    when = {"any": [{"context.x": True}, {"resource.n": {"in": [1, 2.0, [False]]}}], "all": []}
    document = minimal(
        roles=[
            {
                "name": "a",
                "grants": [{"resource": "doc", "actions": ["write", "read"], "when": when}],
            }
        ]
    )
    policy = parse_policy(document, now=NOW)
    again = parse_policy(parse_text(dump_policy(policy)), now=NOW)
    (before,) = next(iter(policy.roles.values())).grants
    (after,) = next(iter(again.roles.values())).grants
    assert rule_key(after) == rule_key(before)
    assert after == before
