"""sync.diff: what changed between two policies, as stable lines."""

from __future__ import annotations

import copy
from typing import Any

from sync.policy.diff import diff_policies
from sync.policy.document import export_policy, parse_policy
from sync.policy.instant import parse_instant

NOW = parse_instant("2026-11-22T09:30:00Z")


def _policies(document: dict[str, Any], change: Any) -> list[str]:
    """Diff of `document` against a copy that `change` edits in place (ids kept)."""
    before = parse_policy(document, now=NOW)
    edited = export_policy(before)  # carries role ids, as an admin's export does
    change(edited)
    return diff_policies(before, parse_policy(edited, now=NOW))


def _role(document: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in document["roles"] if r["name"] == name)


def test_identical_policies_have_no_differences(example_doc: dict[str, Any]) -> None:
    assert _policies(example_doc, lambda d: None) == []


def test_rename_with_kept_id_is_one_line_even_where_the_role_is_referenced(
    example_doc: dict[str, Any],
) -> None:
    def rename(document: dict[str, Any]) -> None:
        _role(document, "dispatcher")["name"] = "router"
        _role(document, "fleet-manager")["inherits"] = ["router"]
        for user in document["users"]:
            for assignment in user.get("roles", []):
                if assignment["role"] == "dispatcher":
                    assignment["role"] = "router"

    assert _policies(example_doc, rename) == ["~ role dispatcher renamed to router"]


def test_rename_without_ids_is_a_removal_and_an_addition(example_doc: dict[str, Any]) -> None:
    edited = copy.deepcopy(example_doc)
    _role(edited, "payment-approver")["name"] = "payment-signer"
    edited["constraints"][0]["exclusive"] = ["payment-creator", "payment-signer"]
    lines = diff_policies(parse_policy(example_doc, now=NOW), parse_policy(edited, now=NOW))
    assert "+ role payment-signer" in lines
    assert "- role payment-approver" in lines
    assert (
        "~ constraint payments-sod: payment-creator, payment-approver -> "
        "payment-creator, payment-signer"
    ) in lines


def test_rules_inheritance_and_descriptions(example_doc: dict[str, Any]) -> None:
    def change(document: dict[str, Any]) -> None:
        viewer = _role(document, "viewer")
        viewer["description"] = "Reads fleet data"
        viewer["denies"] = []
        viewer["grants"].append(
            {"resource": "vehicle", "actions": ["dispatch"], "when": {"context.hour": {"lt": 6}}}
        )
        _role(document, "fleet-manager")["inherits"] = ["viewer"]

    assert _policies(example_doc, change) == [
        '~ role viewer description "Read-only access to fleet data" -> "Reads fleet data"',
        "+ role viewer grant: vehicle dispatch when context.hour < 6",
        '- role viewer deny: report read when resource.classification = "confidential"',
        "+ role fleet-manager inherits viewer",
        "- role fleet-manager inherits dispatcher",
    ]


def test_users_attributes_assignments_and_expiry(example_doc: dict[str, Any]) -> None:
    def change(document: dict[str, Any]) -> None:
        alice = document["users"][0]
        alice["name"] = "Alice Ng-Smith"
        alice["attributes"]["region"] = "south"
        del alice["attributes"]["depot"]
        alice["attributes"]["badge"] = 7
        alice["roles"] = [
            {"role": "fleet-manager", "expires": "2027-01-31T00:00:00Z"},
            {"role": "payment-creator"},
        ]
        document["users"].append({"id": "zoe", "roles": [{"role": "viewer"}]})
        document["users"] = [u for u in document["users"] if u["id"] != "dave"]

    assert _policies(example_doc, change) == [
        '~ user alice name "Alice Ng" -> "Alice Ng-Smith"',
        '~ user alice attribute region "north" -> "south"',
        "+ user alice attribute badge = 7",
        "- user alice attribute depot",
        "~ user alice holds fleet-manager: expires 2026-12-31T00:00:00Z -> 2027-01-31T00:00:00Z",
        "+ user alice holds payment-creator",
        "- user alice holds dispatcher",
        "+ user zoe",
        "+ user zoe holds viewer",
        "- user dave",
    ]


def test_resource_types_and_constraints(example_doc: dict[str, Any]) -> None:
    def change(document: dict[str, Any]) -> None:
        document["resource_types"]["vehicle"].append("tow")
        document["resource_types"]["trailer"] = ["read"]
        document["constraints"] = []

    assert _policies(example_doc, change) == [
        "+ resource type vehicle action tow",
        "+ resource type trailer: read",
        "- constraint payments-sod",
    ]


def test_lines_are_stable_across_runs(example_doc: dict[str, Any]) -> None:
    def change(document: dict[str, Any]) -> None:
        for user in document["users"]:
            user.setdefault("attributes", {})["shift"] = "night"

    assert _policies(example_doc, change) == _policies(example_doc, change)


def _user(document: dict[str, Any], user_id: str) -> dict[str, Any]:
    return next(u for u in document["users"] if u["id"] == user_id)


def test_suspending_and_resuming_a_user_are_one_line_each(example_doc: dict[str, Any]) -> None:
    example_doc["users"][1]["suspended"] = True  # bob

    def change(document: dict[str, Any]) -> None:
        _user(document, "alice")["suspended"] = True
        del _user(document, "bob")["suspended"]

    assert _policies(example_doc, change) == ["~ user alice suspended", "~ user bob resumed"]


def test_a_user_added_suspended_is_added_then_suspended(example_doc: dict[str, Any]) -> None:
    def change(document: dict[str, Any]) -> None:
        document["users"].append(
            {"id": "zoe", "name": "Zoe", "suspended": True, "roles": [{"role": "viewer"}]}
        )

    assert _policies(example_doc, change) == [
        "+ user zoe (Zoe)",
        "~ user zoe suspended",
        "+ user zoe holds viewer",
    ]


def test_eligibility_added_removed_and_changed(example_doc: dict[str, Any]) -> None:
    _user(example_doc, "alice")["roles"].append({"role": "viewer", "eligible": {"max_hours": 8}})
    _user(example_doc, "bob")["roles"].append(
        {"role": "dispatcher", "eligible": {"max_hours": 4}, "expires": "2027-01-01T00:00:00Z"}
    )
    _user(example_doc, "carol")["roles"].append(
        {"role": "payment-approver", "eligible": {"max_hours": 2}}
    )

    def change(document: dict[str, Any]) -> None:
        _user(document, "alice")["roles"][2]["eligible"]["max_hours"] = 4
        _user(document, "bob")["roles"][1]["expires"] = "2027-02-01T00:00:00Z"
        _user(document, "carol")["roles"].pop()
        _user(document, "dave")["roles"] = [
            {"role": "viewer", "eligible": {"max_hours": 1}, "expires": "2027-01-01T00:00:00Z"},
            {"role": "fleet-manager", "eligible": {"max_hours": 720}},
        ]

    assert _policies(example_doc, change) == [
        "~ user alice eligible for viewer: up to 8 h -> 4 h",
        "~ user bob eligible for dispatcher: expires 2027-01-01T00:00:00Z -> 2027-02-01T00:00:00Z",
        "- user carol eligible for payment-approver",
        "+ user dave eligible for viewer (up to 1 h) until 2027-01-01T00:00:00Z",
        "+ user dave eligible for fleet-manager (up to 720 h)",
    ]


def test_an_eligibility_and_an_assignment_of_one_role_are_told_apart(
    example_doc: dict[str, Any],
) -> None:
    def add_eligible(document: dict[str, Any]) -> None:
        _user(document, "bob")["roles"].append({"role": "viewer", "eligible": {"max_hours": 3}})

    assert _policies(example_doc, add_eligible) == ["+ user bob eligible for viewer (up to 3 h)"]

    add_eligible(example_doc)

    def drop_ordinary(document: dict[str, Any]) -> None:
        _user(document, "bob")["roles"] = _user(document, "bob")["roles"][1:]

    assert _policies(example_doc, drop_ordinary) == ["- user bob holds viewer"]

    def limit_ordinary(document: dict[str, Any]) -> None:
        _user(document, "bob")["roles"][0]["expires"] = "2026-11-22T12:30:00Z"

    assert _policies(example_doc, limit_ordinary) == [
        "~ user bob holds viewer: expires never -> 2026-11-22T12:30:00Z"
    ]


def test_an_eligibility_follows_a_renamed_role(example_doc: dict[str, Any]) -> None:
    _user(example_doc, "bob")["roles"].append({"role": "dispatcher", "eligible": {"max_hours": 3}})

    def rename(document: dict[str, Any]) -> None:
        _role(document, "dispatcher")["name"] = "router"
        _role(document, "fleet-manager")["inherits"] = ["router"]
        for user in document["users"]:
            for assignment in user.get("roles", []):
                if assignment["role"] == "dispatcher":
                    assignment["role"] = "router"

    assert _policies(example_doc, rename) == ["~ role dispatcher renamed to router"]


def test_a_condition_on_true_becoming_1_is_a_changed_rule_and_5_becoming_5_0_is_not(
    example_doc: dict[str, Any],
) -> None:
    _role(example_doc, "viewer")["grants"].append(
        {"resource": "vehicle", "actions": ["dispatch"], "when": {"context.urgent": True}}
    )
    _role(example_doc, "viewer")["grants"].append(
        {"resource": "vehicle", "actions": ["dispatch"], "when": {"context.hour": {"lt": 5}}}
    )

    def retype(document: dict[str, Any]) -> None:
        grants = _role(document, "viewer")["grants"]
        grants[1]["when"] = {"context.urgent": 1}
        grants[2]["when"] = {"context.hour": {"lt": 5.0}}

    assert _policies(example_doc, retype) == [
        "+ role viewer grant: vehicle dispatch when context.urgent = 1",
        "- role viewer grant: vehicle dispatch when context.urgent = true",
    ]
