"""sync.policy.reach: the edits that turn one policy into another.

Every series of edits here is applied the way the product applies it: each
document through JSON and `edit_from_document` (against the policy as the
edits before it left it), then `apply_edit`. The order of a user's
assignments is not reproduced (no op places an entry; see reach.py), so
policies are compared by their export with each user's `roles` sorted.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync.policy.constraints import violations
from sync.policy.document import PolicyInvalid, export_policy, parse_policy
from sync.policy.edits import (
    AddRule,
    AssignRole,
    CreateRole,
    DeleteRole,
    Edit,
    EditRefused,
    MakeEligible,
    RefusalCode,
    RenameRole,
    SetUserAttribute,
    SuspendUser,
    apply_edit,
    edit_from_document,
)
from sync.policy.engine import Engine
from sync.policy.instant import parse_instant
from sync.policy.model import Assignment, Constraint, Effect, Policy, Role, Rule, User
from sync.policy.reach import Unreachable, edits_to_reach
from sync.policy.request import Request

Doc = dict[str, Any]

NOW_TEXT = "2026-01-01T12:00:00Z"
NOW = parse_instant(NOW_TEXT)
TYPES: dict[str, list[str]] = {"doc": ["read", "write"], "car": ["read", "drive"], "log": []}
READ_DOC: Doc = {"resource": "doc", "actions": ["read"]}
WRITE_DOC: Doc = {"resource": "doc", "actions": ["write"]}
DRIVE: Doc = {"resource": "car", "actions": ["drive"]}
NORTH: Doc = {"resource": "doc", "actions": ["write"], "when": {"user.region": "north"}}


def role(name: str, role_id: str | None = None, **parts: Any) -> Doc:
    """A role document with the id `id-<name>` unless given."""
    return {"name": name, "id": role_id or f"id-{name}", **parts}


def build(
    roles: list[Doc] | None = None,
    users: list[Doc] | None = None,
    constraints: list[Doc] | None = None,
    **top: Any,
) -> Policy:
    document: Doc = {
        "format": "fleetgate.policy/1",
        "tenant": "t",
        "resource_types": copy.deepcopy(TYPES),
        "roles": roles or [],
        "users": users or [],
    }
    if constraints:
        document["constraints"] = constraints
    document.update(top)
    return parse_policy(copy.deepcopy(document), now=NOW)


def apply_all(policy: Policy, documents: list[Doc]) -> Policy:
    """A copy of `policy` with the documents applied, each read back as the server does."""
    policy = policy.copy()
    for document in documents:
        sent = json.loads(json.dumps(document))
        apply_edit(policy, edit_from_document(sent, policy), NOW)
    return policy


def reach(
    current: Policy, target: Policy, only: set[tuple[str, str]] | None = None
) -> tuple[list[Doc], Policy]:
    documents = edits_to_reach(current, target, only=only)
    return documents, apply_all(current, documents)


def comparable(policy: Policy) -> Doc:
    """The export, with roles, users and each user's assignments in a fixed order
    (what no op can place: reach.py's rules)."""
    document = export_policy(policy)
    document["roles"].sort(key=lambda role: role["id"])
    document["users"].sort(key=lambda user: user["id"])
    for user in document["users"]:
        if "roles" in user:
            user["roles"].sort(key=lambda entry: json.dumps(entry, sort_keys=True))
    return document


def assert_reaches(current: Policy, target: Policy) -> list[Doc]:
    documents, reached = reach(current, target)
    assert comparable(reached) == comparable(target)
    assert edits_to_reach(reached, target) == []
    return documents


def ops(documents: list[Doc]) -> list[str]:
    return [d["op"] for d in documents]


def brief(documents: list[Doc]) -> list[tuple[Any, ...]]:
    """Each document as (op, the values it names), for exact comparisons."""
    shown: list[tuple[Any, ...]] = []
    for d in documents:
        values = [v for k, v in d.items() if k != "op"]
        shown.append((d["op"], *(json.dumps(v) if isinstance(v, dict) else v for v in values)))
    return shown


# --- each kind of change ------------------------------------------------------------------


def test_the_same_policy_needs_no_edits() -> None:
    policy = build([role("a", grants=[READ_DOC])], [{"id": "u", "roles": [{"role": "a"}]}])
    assert edits_to_reach(policy, policy) == []
    assert edits_to_reach(policy, parse_policy(export_policy(policy), now=NOW)) == []


def test_a_new_role_is_created_bare_then_given_its_parents_and_rules() -> None:
    current = build([role("a")])
    target = build([role("a"), role("b", inherits=["a"], grants=[READ_DOC], denies=[NORTH])])
    documents = assert_reaches(current, target)
    assert documents[0] == {
        "op": "create_role",
        "role_id": "id-b",
        "name": "b",
        "description": "",
        "inherits": [],
    }
    assert sorted(ops(documents[1:])) == ["add_inheritance", "add_rule", "add_rule"]


def test_new_roles_may_inherit_each_other_in_any_document_order() -> None:
    current = build([role("a")])
    target = build(
        [role("a"), role("first", inherits=["second", "a"]), role("second", inherits=["a"])]
    )
    documents = assert_reaches(current, target)
    assert ops(documents) == ["create_role", "create_role", *["add_inheritance"] * 3]


def test_a_deleted_role_is_one_delete_role_that_takes_its_holders_and_children_along() -> None:
    current = build(
        [role("a"), role("b", inherits=["a"])],
        [{"id": "u", "roles": [{"role": "a"}, {"role": "a", "eligible": {"max_hours": 1}}]}],
    )
    target = build([role("b")], [{"id": "u"}])
    assert brief(assert_reaches(current, target)) == [("delete_role", "id-a")]


def test_a_new_role_may_take_the_name_of_a_deleted_one() -> None:
    current = build([role("a", "old-a")], [{"id": "u", "roles": [{"role": "a"}]}])
    target = build([role("a", "new-a")], [{"id": "u", "roles": [{"role": "a"}]}])
    documents = assert_reaches(current, target)
    assert ops(documents) == ["delete_role", "create_role", "assign_role"]


def test_a_rename_is_one_rename_role_that_keeps_the_id() -> None:
    current = build([role("a", grants=[READ_DOC])], [{"id": "u", "roles": [{"role": "a"}]}])
    target = build([role("z", "id-a", grants=[READ_DOC])], [{"id": "u", "roles": [{"role": "z"}]}])
    assert brief(assert_reaches(current, target)) == [("rename_role", "id-a", "z")]


def test_a_chain_of_renames_frees_each_name_before_it_is_taken() -> None:
    current = build([role("a"), role("b")])
    target = build([role("b", "id-a"), role("c", "id-b")])
    assert brief(assert_reaches(current, target)) == [
        ("rename_role", "id-b", "c"),
        ("rename_role", "id-a", "b"),
    ]


def test_swapped_names_go_through_a_temporary_name_nobody_has() -> None:
    # The first temporary name a role would get is taken, by a role and by the target.
    current = build([role("a"), role("b"), role("a (renaming)")])
    target = build(
        [role("b", "id-a"), role("a", "id-b"), role("a (renaming 2)", "id-a (renaming)")]
    )
    documents = assert_reaches(current, target)
    temporary = {d["name"] for d in documents} - {"a", "b", "a (renaming 2)"}
    assert len(temporary) == 1
    assert not temporary & {r.name for p in (current, target) for r in p.roles.values()}
    assert ops(documents) == ["rename_role"] * 4


def test_a_cycle_of_three_renames_needs_one_temporary_name() -> None:
    current = build([role("a"), role("b"), role("c")])
    target = build([role("b", "id-a"), role("c", "id-b"), role("a", "id-c")])
    assert ops(assert_reaches(current, target)) == ["rename_role"] * 4


def test_a_description_change_is_one_describe_role() -> None:
    current = build([role("a", description="old")])
    target = build([role("a", description="new")])
    assert brief(assert_reaches(current, target)) == [("describe_role", "id-a", "new")]


def test_reversed_inheritance_is_removed_before_it_is_added() -> None:
    # Adding b -> a first would close a cycle and be refused.
    current = build([role("a", inherits=["b"]), role("b")])
    target = build([role("a"), role("b", inherits=["a"])])
    assert brief(assert_reaches(current, target)) == [
        ("remove_inheritance", "id-a", "id-b"),
        ("add_inheritance", "id-b", "id-a"),
    ]


SOD = [{"name": "sod", "exclusive": ["x", "y"]}]


def test_a_user_moved_between_exclusive_roles_is_unassigned_before_assigned() -> None:
    roles = [role("x"), role("y")]
    current = build(roles, [{"id": "u", "roles": [{"role": "x"}]}], SOD)
    target = build(roles, [{"id": "u", "roles": [{"role": "y"}]}], SOD)
    assert brief(assert_reaches(current, target)) == [
        ("unassign_role", "u", "id-x"),
        ("assign_role", "u", "id-y", None),
    ]


def test_a_parent_moved_between_exclusive_roles_is_removed_before_added() -> None:
    users = [{"id": "u", "roles": [{"role": "team"}]}]
    current = build([role("x"), role("y"), role("team", inherits=["x"])], users, SOD)
    target = build([role("x"), role("y"), role("team", inherits=["y"])], users, SOD)
    assert brief(assert_reaches(current, target)) == [
        ("remove_inheritance", "id-team", "id-x"),
        ("add_inheritance", "id-team", "id-y"),
    ]


def test_an_expiry_brought_forward_comes_before_an_exclusive_assignment() -> None:
    roles = [role("x"), role("y")]
    current = build(roles, [{"id": "u", "roles": [{"role": "x"}]}], SOD)
    target = build(
        roles,
        [{"id": "u", "roles": [{"role": "x", "expires": NOW_TEXT}, {"role": "y"}]}],
        SOD,
    )
    assert brief(assert_reaches(current, target)) == [
        ("assign_role", "u", "id-x", NOW_TEXT),
        ("assign_role", "u", "id-y", None),
    ]


def test_a_role_exclusive_with_a_deleted_one_can_be_assigned() -> None:
    # Deleting z takes it out of the constraint, which is what the target says.
    current = build(
        [role("x"), role("y"), role("z")],
        [{"id": "u", "roles": [{"role": "z"}]}],
        [{"name": "sod", "exclusive": ["x", "y", "z"]}],
    )
    target = build(
        [role("x"), role("y")],
        [{"id": "u", "roles": [{"role": "x"}]}],
        [{"name": "sod", "exclusive": ["x", "y"]}],
    )
    assert brief(assert_reaches(current, target)) == [
        ("delete_role", "id-z"),
        ("assign_role", "u", "id-x", None),
    ]


def test_a_constraint_a_deleted_role_leaves_with_one_role_goes_with_it() -> None:
    current = build([role("x"), role("y")], constraints=SOD)
    assert ops(assert_reaches(current, build([role("x")]))) == ["delete_role"]


def test_rules_of_roles_and_users_are_added_and_removed_one_by_one() -> None:
    current = build(
        [role("a", grants=[READ_DOC, DRIVE], denies=[NORTH])],
        [{"id": "u", "grants": [READ_DOC]}],
    )
    target = build(
        [role("a", grants=[READ_DOC, NORTH], denies=[DRIVE])],
        [{"id": "u", "grants": [READ_DOC], "denies": [WRITE_DOC]}],
    )
    documents = assert_reaches(current, target)
    assert sorted((d["op"], d["owner"], d["effect"]) for d in documents) == [
        ("add_rule", "role:id-a", "deny"),
        ("add_rule", "role:id-a", "grant"),
        ("add_rule", "user:u", "deny"),
        ("remove_rule", "role:id-a", "deny"),
        ("remove_rule", "role:id-a", "grant"),
    ]
    added = [d["rule"] for d in documents if d["op"] == "add_rule" and d["effect"] == "grant"]
    assert added == [NORTH]


def test_a_rule_written_otherwise_but_the_same_is_no_change() -> None:
    same = {"resource": "doc", "actions": ["write", "read", "read"], "when": {"user.level": 5.0}}
    current = build([role("a", grants=[{**same, "when": {"user.level": 5}}])])
    assert edits_to_reach(current, build([role("a", grants=[same])])) == []
    one = build([role("a", grants=[{**same, "when": {"user.level": 1}}])])
    true = build([role("a", grants=[{**same, "when": {"user.level": True}}])])
    assert ops(assert_reaches(one, true)) == ["remove_rule", "add_rule"]


def test_reordered_rules_keep_the_longest_prefix_in_order_and_move_the_rest() -> None:
    rules = [READ_DOC, WRITE_DOC, DRIVE, NORTH]
    current = build([role("a", grants=rules)], [{"id": "u", "roles": [{"role": "a"}]}])
    target = build(
        [role("a", grants=[READ_DOC, DRIVE, WRITE_DOC, NORTH])],
        [{"id": "u", "roles": [{"role": "a"}]}],
    )
    documents = assert_reaches(current, target)
    # READ_DOC, DRIVE stay in order; WRITE_DOC and NORTH are appended again after them.
    assert [(d["op"], d["rule"]) for d in documents] == [
        ("remove_rule", WRITE_DOC),
        ("add_rule", WRITE_DOC),
        ("remove_rule", NORTH),
        ("add_rule", NORTH),
    ]
    # The order is what decisions report as the matched rule's index.
    reached = apply_all(current, documents)
    decision = Engine(reached).decide(Request("u", "write", "doc", "d", {}, {}, None), NOW)
    wanted = Engine(target).decide(Request("u", "write", "doc", "d", {}, {}, None), NOW)
    assert decision.to_dict() == wanted.to_dict()


def test_a_moved_deny_is_removed_and_added_back_in_adjacent_edits() -> None:
    current = build([role("a", denies=[READ_DOC, WRITE_DOC, DRIVE])])
    target = build([role("a", denies=[DRIVE, READ_DOC, NORTH])])
    documents = assert_reaches(current, target)
    assert [(d["op"], d["rule"]) for d in documents] == [
        ("remove_rule", READ_DOC),
        ("add_rule", READ_DOC),
        ("add_rule", NORTH),
        ("remove_rule", WRITE_DOC),  # a deny goes last, after the new deny came
    ]


def test_parents_keep_their_order() -> None:
    roles = [role("p"), role("q"), role("r")]
    current = build([*roles, role("a", inherits=["p", "q", "r"])])
    target = build([*roles, role("a", inherits=["q", "r", "p"])])
    # q, r stay in order; p is appended again after them.
    assert brief(assert_reaches(current, target)) == [
        ("remove_inheritance", "id-a", "id-p"),
        ("add_inheritance", "id-a", "id-p"),
    ]


def test_access_is_taken_away_before_it_is_given() -> None:
    current = build(
        [role("a", grants=[READ_DOC], denies=[DRIVE]), role("b")],
        [{"id": "s", "suspended": True}, {"id": "t"}, {"id": "u", "roles": [{"role": "a"}]}],
    )
    target = build(
        [role("a", grants=[WRITE_DOC], denies=[NORTH]), role("b")],
        [{"id": "s"}, {"id": "t", "suspended": True}, {"id": "u", "roles": [{"role": "b"}]}],
    )
    documents = assert_reaches(current, target)
    assert brief(documents) == [
        ("suspend_user", "t"),
        ("add_rule", "role:id-a", "deny", json.dumps(NORTH)),
        ("remove_rule", "role:id-a", "grant", json.dumps(READ_DOC)),
        ("unassign_role", "u", "id-a"),
        ("add_rule", "role:id-a", "grant", json.dumps(WRITE_DOC)),
        ("assign_role", "u", "id-b", None),
        ("remove_rule", "role:id-a", "deny", json.dumps(DRIVE)),
        ("resume_user", "s"),
    ]


def test_an_expiry_change_is_one_assign_role_and_leaves_the_eligibility_alone() -> None:
    eligible = {"role": "a", "eligible": {"max_hours": 8}}
    for before, after in [
        (None, "2027-01-01T00:00:00Z"),
        ("2027-01-01T00:00:00Z", None),
        ("2027-01-01T00:00:00Z", "2027-01-01T01:00:00+01:00"),  # the same instant, new text
    ]:
        old = {"role": "a"} if before is None else {"role": "a", "expires": before}
        new = {"role": "a"} if after is None else {"role": "a", "expires": after}
        current = build([role("a")], [{"id": "u", "roles": [eligible, old]}])
        target = build([role("a")], [{"id": "u", "roles": [eligible, new]}])
        assert brief(assert_reaches(current, target)) == [("assign_role", "u", "id-a", after)]


def test_an_activation_beside_an_eligible_entry_is_written_as_an_assignment() -> None:
    eligible = {"role": "a", "eligible": {"max_hours": 8}}
    current = build([role("a")], [{"id": "u", "roles": [eligible]}])
    activated = {"role": "a", "expires": "2026-01-01T20:00:00Z"}
    target = build([role("a")], [{"id": "u", "roles": [eligible, activated]}])
    assert brief(assert_reaches(current, target)) == [
        ("assign_role", "u", "id-a", "2026-01-01T20:00:00Z")
    ]
    assert brief(assert_reaches(target, current)) == [("unassign_role", "u", "id-a")]


def test_eligibility_is_given_changed_in_place_and_removed() -> None:
    def eligible(hours: int, expires: str | None = None) -> Doc:
        entry: Doc = {"role": "a", "eligible": {"max_hours": hours}}
        return entry if expires is None else {**entry, "expires": expires}

    plain = build([role("a")], [{"id": "u", "roles": [{"role": "a"}]}])
    eight = build([role("a")], [{"id": "u", "roles": [eligible(8), {"role": "a"}]}])
    later = "2027-01-01T00:00:00Z"
    changed = build([role("a")], [{"id": "u", "roles": [eligible(2, later), {"role": "a"}]}])
    assert brief(assert_reaches(plain, eight)) == [("make_eligible", "u", "id-a", 8, None)]
    # One make_eligible replaces the entry: no moment without the eligibility.
    assert brief(assert_reaches(eight, changed)) == [("make_eligible", "u", "id-a", 2, later)]
    assert brief(assert_reaches(changed, plain)) == [("remove_eligible", "u", "id-a")]


def test_suspension_and_resumption() -> None:
    active, suspended = build(users=[{"id": "u"}]), build(users=[{"id": "u", "suspended": True}])
    assert brief(assert_reaches(active, suspended)) == [("suspend_user", "u")]
    assert brief(assert_reaches(suspended, active)) == [("resume_user", "u")]


def test_a_new_suspended_user_is_suspended_before_anything_is_given() -> None:
    current = build([role("a")])
    new: Doc = {"id": "v", "name": "Vee", "suspended": True, "attributes": {"region": "north"}}
    target = build([role("a")], [{**new, "roles": [{"role": "a"}], "grants": [READ_DOC]}])
    assert brief(assert_reaches(current, target)) == [
        ("create_user", "v", "Vee", json.dumps({"region": "north"})),
        ("suspend_user", "v"),
        ("assign_role", "v", "id-a", None),
        ("add_rule", "user:v", "grant", json.dumps(READ_DOC)),
    ]


def test_a_deleted_user_is_one_delete_user() -> None:
    current = build([role("a")], [{"id": "u", "roles": [{"role": "a"}], "grants": [READ_DOC]}])
    assert brief(assert_reaches(current, build([role("a")]))) == [("delete_user", "u")]


def test_attributes_are_set_changed_and_removed_one_key_at_a_time() -> None:
    current = build(users=[{"id": "u", "attributes": {"a": 1, "b": "x", "c": [1], "d": 5}}])
    target = build(users=[{"id": "u", "attributes": {"a": True, "c": [1], "d": 5.0, "e": {}}}])
    documents = assert_reaches(current, target)
    assert sorted(brief(documents), key=str) == sorted(
        [
            ("set_user_attribute", "u", "a", True),  # true is not 1
            ("set_user_attribute", "u", "e", "{}"),
            ("set_user_attribute", "u", "b", None),  # null removes
        ],
        key=str,
    )


def test_an_attribute_that_is_null_counts_as_absent() -> None:
    # set_user_attribute with null removes the key; null means missing anyway.
    with_null = build(users=[{"id": "u", "attributes": {"a": None}}])
    without = build(users=[{"id": "u"}])
    assert edits_to_reach(with_null, without) == []
    assert edits_to_reach(without, with_null) == []
    valued = build(users=[{"id": "u", "attributes": {"a": 1}}])
    documents, reached = reach(valued, with_null)
    assert brief(documents) == [("set_user_attribute", "u", "a", None)]
    assert reached.users["u"].attributes == {}


def test_documents_name_roles_by_id_even_where_an_id_is_another_roles_name() -> None:
    # Role "a" has the id "b", and role "b" the id "a": a name would be read as the other.
    current = build([role("a", "b"), role("b", "a")], [{"id": "u"}])
    target = build(
        [role("a", "b", grants=[READ_DOC]), role("b", "a", inherits=["a"])],
        [{"id": "u", "roles": [{"role": "b"}]}],
    )
    assert brief(assert_reaches(current, target)) == [
        ("add_rule", "role:b", "grant", json.dumps(READ_DOC)),
        ("add_inheritance", "a", "b"),
        ("assign_role", "u", "a", None),
    ]


# --- what no edit can do --------------------------------------------------------------------


def test_resource_types_tenant_and_constraints_are_unreachable_and_each_is_named() -> None:
    current = build([role("x"), role("y"), role("z")], constraints=SOD)
    types = {"doc": ["read"], "car": ["read", "drive"], "boat": ["sail"]}
    target = build(
        [role("x"), role("y"), role("z")],
        constraints=[{"name": "other", "exclusive": ["x", "z"]}],
        tenant="t2",
        resource_types=types,
    )
    with pytest.raises(Unreachable) as raised:
        edits_to_reach(current, target)
    assert raised.value.parts == [
        "tenant 't' -> 't2'",
        "resource type 'doc': actions read, write -> read",
        "resource type 'boat' added",
        "resource type 'log' removed",
        "constraint 'other' added (x, z)",
        "constraint 'sod' removed",
    ]
    assert "tenant 't' -> 't2'" in str(raised.value)


def test_constraints_and_types_are_compared_by_meaning_not_order() -> None:
    current = build([role("x"), role("y")], constraints=SOD)
    types = {"car": ["drive", "read"], "log": [], "doc": ["write", "read"]}
    target = build(
        [role("x"), role("y")],
        constraints=[{"name": "sod", "exclusive": ["y", "x"]}],
        resource_types=types,
    )
    assert edits_to_reach(current, target) == []


def test_a_changed_constraint_is_unreachable() -> None:
    current = build([role("x"), role("y"), role("z")], constraints=SOD)
    target = build(
        [role("x"), role("y"), role("z")], constraints=[{"name": "sod", "exclusive": ["x", "z"]}]
    )
    with pytest.raises(Unreachable) as raised:
        edits_to_reach(current, target)
    assert raised.value.parts == ["constraint 'sod': x, y -> x, z"]


def test_a_users_name_change_is_unreachable() -> None:
    with pytest.raises(Unreachable) as raised:
        edits_to_reach(build(users=[{"id": "u", "name": "A"}]), build(users=[{"id": "u"}]))
    assert raised.value.parts == ["user 'u': name 'A' -> None, which no edit op renames"]


def test_a_role_held_twice_is_unreachable_unless_it_stays_as_it_is() -> None:
    twice = [{"role": "a"}, {"role": "a", "expires": "2027-01-01T00:00:00Z"}]
    current = build([role("a")], [{"id": "u"}])
    target = build([role("a")], [{"id": "u", "roles": twice}])
    with pytest.raises(Unreachable) as raised:
        edits_to_reach(current, target)
    assert raised.value.parts == [
        "user 'u': holds role 'a' 2 times, and assign_role gives one assignment of a role"
    ]
    assert edits_to_reach(target, build([role("a")], [{"id": "u", "roles": twice[::-1]}])) == []
    assert brief(assert_reaches(target, build([role("a")], [{"id": "u", "roles": twice[:1]}]))) == [
        ("assign_role", "u", "id-a", None)
    ]


def test_a_rule_listed_twice_is_unreachable_unless_it_is_already_there() -> None:
    current = build([role("a", grants=[READ_DOC])])
    target = build([role("a", grants=[READ_DOC, READ_DOC])])
    with pytest.raises(Unreachable) as raised:
        edits_to_reach(current, target)
    assert raised.value.parts == ["role 'a': lists one grant twice, which add_rule cannot"]
    # A duplicate in the current policy can be taken away.
    assert_reaches(build([role("a", grants=[READ_DOC, WRITE_DOC, READ_DOC])]), current)
    assert_reaches(
        build([role("a", grants=[READ_DOC, WRITE_DOC, READ_DOC])]),
        build([role("a", grants=[WRITE_DOC, READ_DOC])]),
    )


def test_a_parent_listed_twice_is_put_right_by_removing_it_and_adding_it_once() -> None:
    # remove_inheritance takes every copy: the parent is then added back once.
    current = build([role("p"), role("a", inherits=["p", "p"])])
    target = build([role("p"), role("a", inherits=["p"])])
    assert brief(assert_reaches(current, target)) == [
        ("remove_inheritance", "id-a", "id-p"),
        ("add_inheritance", "id-a", "id-p"),
    ]


def test_a_value_no_edit_can_carry_is_unreachable() -> None:
    current = build([role("a")])
    target = build([role("a", description="x" * 5000)])
    with pytest.raises(Unreachable) as raised:
        edits_to_reach(current, target)
    (part,) = raised.value.parts
    assert part.startswith("role 'a': describe_role.description: must be 0 to 4096 characters")


# --- only: cancelling an edit ----------------------------------------------------------------


EXAMPLE_ROLES = [
    role("viewer", grants=[READ_DOC]),
    role("dispatcher", inherits=["viewer"], grants=[WRITE_DOC]),
    role("x"),
    role("y"),
    role("z", grants=[DRIVE]),
]
EXAMPLE_USERS = [
    {
        "id": "alice",
        "attributes": {"region": "north"},
        "roles": [{"role": "dispatcher"}, {"role": "z"}],
    },
    {"id": "bob", "roles": [{"role": "x"}, {"role": "viewer", "eligible": {"max_hours": 4}}]},
]


def example() -> Policy:
    return build(copy.deepcopy(EXAMPLE_ROLES), copy.deepcopy(EXAMPLE_USERS), SOD)


CANCELLED: dict[str, Edit] = {
    "rename": RenameRole("id-viewer", "reader"),
    "create": CreateRole("id-new", "new", "", ("id-viewer",)),
    "delete": DeleteRole("id-z"),
    "assign": AssignRole("alice", "id-x", "2027-01-01T00:00:00Z"),
    "rule": AddRule("role:id-dispatcher", Effect.DENY, Rule.build("car", ("drive",))),
    "attribute": SetUserAttribute("alice", "region", None),
    "suspend": SuspendUser("bob"),
    "eligible": MakeEligible("bob", "id-viewer", 8),
}


@pytest.mark.parametrize("edit", CANCELLED.values(), ids=CANCELLED.keys())
def test_cancelling_an_edit_puts_back_what_it_touched(edit: Edit) -> None:
    before = example()
    after = before.copy()
    touched = apply_edit(after, edit, NOW)
    only = set(edit.names()) | {("user", u) for u in touched.users}
    documents, restored = reach(after, before, only)
    assert 1 <= len(documents) <= 3
    assert comparable(restored) == comparable(before)


def test_cancelling_edits_puts_back_only_what_they_touched() -> None:
    before = example()
    after = before.copy()
    apply_edit(after, RenameRole("id-viewer", "reader"), NOW)
    apply_edit(after, AssignRole("alice", "id-y"), NOW)
    documents, reached = reach(after, before, {("user", "alice")})
    assert brief(documents) == [("unassign_role", "alice", "id-y")]
    assert reached.roles["id-viewer"].name == "reader"


def test_only_deletes_a_role_from_entities_outside_it_too() -> None:
    current = example()
    target = current.copy()
    apply_edit(target, DeleteRole("id-viewer"), NOW)
    documents, reached = reach(current, target, {("role", "id-viewer")})
    assert brief(documents) == [("delete_role", "id-viewer")]
    assert reached.roles["id-dispatcher"].inherits == ()
    assert [a.role_id for a in reached.users["bob"].roles] == ["id-x"]


def test_only_cannot_take_a_name_from_a_role_outside_it() -> None:
    current = build([role("a"), role("b")])
    target = build([role("b", "id-a"), role("a", "id-b")])
    with pytest.raises(Unreachable) as raised:
        edits_to_reach(current, target, only={("role", "id-a")})
    assert raised.value.parts == [
        "role 'b': the name belongs to role id 'id-b', which is not among the entities to change"
    ]
    assert_reaches(current, target)


def test_only_cannot_refer_to_a_new_role_outside_it() -> None:
    current = build([role("a")], [{"id": "u"}])
    target = build([role("a"), role("n", inherits=["a"])], [{"id": "u", "roles": [{"role": "n"}]}])
    with pytest.raises(Unreachable) as raised:
        edits_to_reach(current, target, only={("user", "u")})
    assert raised.value.parts == [
        "user 'u' holds role 'n', which does not exist and is not among the entities to change"
    ]
    _, reached = reach(current, target, {("user", "u"), ("role", "id-n")})
    assert comparable(reached) == comparable(target)


def test_only_leaves_resource_types_tenant_and_constraints_alone() -> None:
    current = build([role("x"), role("y")], constraints=SOD)
    target = build([role("x", grants=[READ_DOC]), role("y")], tenant="other")
    documents, reached = reach(current, target, {("role", "id-x")})
    assert ops(documents) == ["add_rule"]
    assert reached.tenant == "t"
    assert reached.constraints == current.constraints


def test_only_names_roles_and_users() -> None:
    with pytest.raises(ValueError, match="'constraint'"):
        edits_to_reach(example(), example(), only={("constraint", "sod")})


# --- properties ------------------------------------------------------------------------------

# Strategies copied from test_properties.py, cut down.
PATHS = ["user.id", "user.region", "resource.region", "context.hour"]
scalars = st.sampled_from([True, False, 0, 1, 1.0, 5, "north", "south", ""])
comparisons = st.one_of(
    scalars,
    scalars.map(lambda v: {"ne": v}),
    st.lists(scalars, max_size=2).map(lambda v: {"in": v}),
)
conditions = st.dictionaries(st.sampled_from(PATHS), comparisons, min_size=1, max_size=2)
RESOURCES = [*TYPES, "*"]
ACTIONS = {**TYPES, "*": ["read", "write", "drive"]}
ACTION_LISTS = {
    resource: st.lists(
        st.sampled_from([*ACTIONS[resource], "*"]), min_size=1, max_size=2, unique=True
    )
    for resource in RESOURCES
}


@st.composite
def rules(draw: st.DrawFn) -> Rule:
    resource = draw(st.sampled_from(RESOURCES))
    actions = tuple(draw(ACTION_LISTS[resource]))
    return Rule.build(resource, actions, draw(st.none() | conditions))


rule_lists = st.lists(rules(), max_size=3, unique=True)
short_rule_lists = st.lists(rules(), max_size=1)
# Top-level null is left out: it is absent to set_user_attribute (see the test above).
values = st.one_of(scalars, st.lists(scalars, max_size=2))
attributes = st.dictionaries(st.sampled_from(["region", "level", "tags"]), values, max_size=2)
EXPIRIES = [None, None, "2026-01-01T12:00:00Z", "2026-01-01T14:00:00+02:00", "2026-06-01T00:00:00Z"]
ROLE_NAMES = [f"r{i}" for i in range(4)]


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    count = draw(st.integers(1, len(ROLE_NAMES)))
    roles = []
    for i, name in enumerate(ROLE_NAMES[:count]):
        # Inheriting only earlier roles makes a DAG; the document order is shuffled below.
        parents = (
            draw(st.lists(st.sampled_from(ROLE_NAMES[:i]), unique=True, max_size=2)) if i else []
        )
        roles.append(
            {
                "name": name,
                "id": f"id-{name}",
                "inherits": parents,
                "grants": [r.to_document() for r in draw(rule_lists)],
                "denies": [r.to_document() for r in draw(short_rule_lists)],
            }
        )
    users = []
    for user_id in ["u0", "u1", "u2"]:
        entries: list[Doc] = []
        for name in draw(st.lists(st.sampled_from(ROLE_NAMES[:count]), max_size=3, unique=True)):
            expires = draw(st.sampled_from(EXPIRIES))
            entries.append(
                {"role": name} if expires is None else {"role": name, "expires": expires}
            )
        for name in draw(st.lists(st.sampled_from(ROLE_NAMES[:count]), max_size=2, unique=True)):
            entries.append({"role": name, "eligible": {"max_hours": draw(st.sampled_from([1, 8]))}})
        users.append(
            {
                "id": user_id,
                "suspended": draw(st.booleans()),
                "attributes": draw(attributes),
                "roles": draw(st.permutations(entries)),
                "grants": [r.to_document() for r in draw(short_rule_lists)],
                "denies": [r.to_document() for r in draw(short_rule_lists)],
            }
        )
    constraints = [{"name": "sod", "exclusive": ["r0", "r1"]}] if count >= 2 else []
    try:
        return build(
            draw(st.permutations(roles)), users, constraints if draw(st.booleans()) else []
        )
    except PolicyInvalid:
        return build(roles, users)


CHANGES = [
    "create_role", "delete_role", "rename", "swap_names", "describe", "add_parent",
    "remove_parent", "reorder_parents", "add_rule", "remove_rule", "reorder_rules",
    "create_user", "delete_user", "assign", "unassign", "eligible", "not_eligible",
    "suspension", "attribute",
]  # fmt: skip


def _pick(draw: st.DrawFn, items: list[Any]) -> Any:
    return draw(st.sampled_from(items)) if items else None


def change(draw: st.DrawFn, policy: Policy, step: int) -> None:
    """One random change of `policy`, made on the model directly (not with edits):
    the resource types and constraints stay as they are."""
    kind = draw(st.sampled_from(CHANGES))
    roles, users = policy.roles, policy.users
    in_constraints = {r for c in policy.constraints for r in c.exclusive}
    role_id = _pick(draw, sorted(roles))
    user_id = _pick(draw, sorted(users))
    if kind == "create_role":
        taken = {r.name for r in roles.values()}
        name = draw(st.sampled_from([f"new{step}", *(n for n in ROLE_NAMES if n not in taken)]))
        some = st.lists(st.sampled_from(sorted(roles)), unique=True, max_size=2)
        parents = tuple(draw(some)) if roles else ()
        description = draw(st.sampled_from(["", "d"]))
        grants, denies = tuple(draw(rule_lists)), tuple(draw(short_rule_lists))
        roles[f"n{step}"] = Role(f"n{step}", name, description, parents, grants, denies)
    elif kind == "delete_role" and role_id is not None and role_id not in in_constraints:
        del roles[role_id]
        for other in list(roles.values()):
            roles[other.id] = replace(
                other, inherits=tuple(p for p in other.inherits if p != role_id)
            )
        for user in list(users.values()):
            kept = tuple(a for a in user.roles if a.role_id != role_id)
            users[user.id] = replace(user, roles=kept)
    elif kind == "rename" and role_id is not None:
        roles[role_id] = replace(roles[role_id], name=f"renamed{step}")
    elif kind == "swap_names" and len(roles) >= 2:
        chosen = draw(st.lists(st.sampled_from(sorted(roles)), min_size=2, max_size=3, unique=True))
        names = [roles[r].name for r in chosen]
        for r, name in zip(chosen, names[1:] + names[:1], strict=True):
            roles[r] = replace(roles[r], name=name)
    elif kind == "describe" and role_id is not None:
        roles[role_id] = replace(roles[role_id], description=f"described {step}")
    elif kind == "add_parent" and role_id is not None:
        parent = draw(st.sampled_from(sorted(roles)))
        held = {r for r, _ in policy.ancestors(parent)}
        if role_id not in held and parent not in roles[role_id].inherits:
            roles[role_id] = replace(roles[role_id], inherits=(*roles[role_id].inherits, parent))
    elif kind == "remove_parent" and role_id is not None and roles[role_id].inherits:
        inherits = list(roles[role_id].inherits)
        inherits.remove(draw(st.sampled_from(inherits)))
        roles[role_id] = replace(roles[role_id], inherits=tuple(inherits))
    elif kind == "reorder_parents" and role_id is not None:
        inherits = draw(st.permutations(roles[role_id].inherits))
        roles[role_id] = replace(roles[role_id], inherits=tuple(inherits))
    elif kind in ("add_rule", "remove_rule", "reorder_rules"):
        owners: list[Role | User] = [*roles.values(), *users.values()]
        if not owners:
            return
        owner = draw(st.sampled_from(owners))
        field = draw(st.sampled_from(["grants", "denies"]))
        listed = list(getattr(owner, field))
        if kind == "add_rule":
            rule = draw(rules())
            if rule not in listed:
                listed.insert(draw(st.integers(0, len(listed))), rule)
        elif kind == "remove_rule" and listed:
            listed.pop(draw(st.integers(0, len(listed) - 1)))
        else:
            listed = draw(st.permutations(listed))
        table: dict[str, Any] = roles if isinstance(owner, Role) else users
        table[owner.id] = replace(owner, **{field: tuple(listed)})
    elif kind == "create_user":
        name = draw(st.sampled_from([None, f"User {step}"]))
        users[f"v{step}"] = User(f"v{step}", name, draw(attributes), suspended=draw(st.booleans()))
    elif kind == "delete_user" and user_id is not None:
        del users[user_id]
    elif kind in ("assign", "unassign", "eligible", "not_eligible") and user_id and role_id:
        user = users[user_id]
        eligible = kind in ("eligible", "not_eligible")
        kept = [
            a for a in user.roles if a.role_id != role_id or (a.eligible is not None) != eligible
        ]
        if kind == "assign":
            entry = Assignment.build(role_id, draw(st.sampled_from(EXPIRIES)))
            kept.insert(draw(st.integers(0, len(kept))), entry)
        elif kind == "eligible":
            expires = draw(st.sampled_from(EXPIRIES))
            kept.append(Assignment.build(role_id, expires, draw(st.sampled_from([1, 8, 720]))))
        users[user_id] = replace(user, roles=tuple(kept))
    elif kind == "suspension" and user_id is not None:
        users[user_id] = replace(users[user_id], suspended=not users[user_id].suspended)
    elif kind == "attribute" and user_id is not None:
        key = draw(st.sampled_from(["region", "level", "tags"]))
        values_now = dict(users[user_id].attributes)
        if draw(st.booleans()):
            values_now[key] = draw(values)
        else:
            values_now.pop(key, None)
        users[user_id] = replace(users[user_id], attributes=values_now)


def keep_constraints(policy: Policy) -> None:
    """Take ordinary assignments away until no user breaks a constraint at NOW."""
    while broken := violations(policy, NOW):
        user = policy.users[broken[0].user]
        last = max(i for i, a in enumerate(user.roles) if a.eligible is None)
        policy.users[user.id] = replace(user, roles=user.roles[:last] + user.roles[last + 1 :])


@st.composite
def pairs(draw: st.DrawFn) -> tuple[Policy, Policy]:
    current = draw(policies())
    target = current.copy()
    for step in range(draw(st.integers(1, 8))):
        change(draw, target, step)
    keep_constraints(target)
    return current, target


PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@PROPERTY
@given(pair=pairs())
def test_the_edits_reach_the_target_and_back(pair: tuple[Policy, Policy]) -> None:
    current, target = pair
    for start, end in ((current, target), (target, current)):
        before = comparable(start)
        documents, reached = reach(start, end)
        assert comparable(reached) == comparable(end), documents
        assert comparable(start) == before  # the start policy is not changed
        assert edits_to_reach(reached, end) == []
    # The target only appended roles and users: then their order is the target's too.
    _, reached = reach(current, target)
    assert list(reached.roles) == list(target.roles)
    assert list(reached.users) == list(target.users)


def expected_with_only(current: Policy, target: Policy, only: set[tuple[str, str]]) -> Policy:
    """`current` with the entities of `only` as `target` has them: a role deleted
    goes from every assignment, `inherits` and constraint; the rest stay."""
    expected = current.copy()
    deleted = {r for kind, r in only if kind == "role" and r in current.roles} - set(target.roles)
    for role_id in deleted:
        del expected.roles[role_id]
    for role in list(expected.roles.values()):
        inherits = tuple(p for p in role.inherits if p not in deleted)
        expected.roles[role.id] = replace(role, inherits=inherits)
    for user in list(expected.users.values()):
        kept = tuple(a for a in user.roles if a.role_id not in deleted)
        expected.users[user.id] = replace(user, roles=kept)
    constraints = (
        Constraint(c.name, tuple(r for r in c.exclusive if r not in deleted))
        for c in current.constraints
    )
    expected.constraints = tuple(c for c in constraints if len(c.exclusive) >= 2)
    for kind, table, wanted in (
        ("role", expected.roles, target.roles),
        ("user", expected.users, target.users),
    ):
        for entity_id, entity in wanted.items():
            if (kind, entity_id) in only:
                table[entity_id] = entity  # type: ignore[assignment]
        for entity_id in list(table):
            if (kind, entity_id) in only and entity_id not in wanted:
                del table[entity_id]
    return expected


def close_only(current: Policy, target: Policy, only: set[tuple[str, str]]) -> None:
    """Add to `only` what its entities need from outside it: a new role they name,
    the role holding a name one of them takes."""
    while True:
        needed: set[tuple[str, str]] = set()
        for kind, entity_id in only:
            if kind == "role" and entity_id in target.roles:
                role = target.roles[entity_id]
                needed |= {("role", p) for p in role.inherits if p not in current.roles}
                holder = current.role_by_name(role.name)
                if holder is not None and holder.id != entity_id:
                    needed.add(("role", holder.id))
            if kind == "user" and entity_id in target.users:
                entries = target.users[entity_id].roles
                needed |= {("role", a.role_id) for a in entries if a.role_id not in current.roles}
        if needed <= only:
            return
        only |= needed


@PROPERTY
@given(pair=pairs(), data=st.data())
def test_with_only_the_named_entities_reach_the_target_and_the_rest_stay(
    pair: tuple[Policy, Policy], data: st.DataObject
) -> None:
    current, target = pair
    entities = sorted(
        {("role", r) for r in [*current.roles, *target.roles]}
        | {("user", u) for u in [*current.users, *target.users]}
    )
    only = set(data.draw(st.lists(st.sampled_from(entities), unique=True)))
    close_only(current, target, only)
    expected = expected_with_only(current, target, only)
    documents = edits_to_reach(current, target, only=only)
    if violations(expected, NOW):
        # What is put back breaks a constraint with what is not: an edit is refused.
        with pytest.raises(EditRefused) as raised:
            apply_all(current, documents)
        assert raised.value.code is RefusalCode.CONSTRAINT
        return
    reached = apply_all(current, documents)
    assert comparable(reached) == comparable(expected), documents
