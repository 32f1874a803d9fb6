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
