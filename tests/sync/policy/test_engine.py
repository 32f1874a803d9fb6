"""sync.engine: decisions per policy-format.md § Request and decision, on the
spec's example tenant (see conftest) and on small purpose-built policies."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from sync.policy.decision import Decision
from sync.policy.document import parse_policy
from sync.policy.engine import Engine
from sync.policy.instant import parse_instant
from sync.policy.model import Assignment, Effect, Policy
from sync.policy.request import Request, parse_request

Doc = dict[str, Any]
Decide = Callable[..., Decision]
NOW = parse_instant("2026-11-22T09:30:00Z")
AFTER_EXPIRY = parse_instant("2027-01-01T00:00:00Z")


def matched(decision: Decision) -> list[dict[str, Any]]:
    return [m.to_dict() for m in decision.matched]


def engine_of(document: Doc, version: int | None = None) -> Engine:
    return Engine(parse_policy(document, now=NOW), version)


# --- grants, denies and their reasons ----------------------------------------------------


def test_a_grant_whose_condition_holds_allows_and_names_the_role(
    example_engine: Engine, decide: Decide
) -> None:
    decision = decide(example_engine, "alice", "update", "route", attributes={"region": "north"})
    assert decision.allowed is True
    assert decision.reason.startswith("granted by role dispatcher: ")
    assert "resource.region = $user.region" in decision.reason
    assert matched(decision) == [{"effect": "grant", "source": "role:dispatcher", "rule": 0}]
    assert decision.policy_version is None


def test_a_grant_whose_condition_fails_leaves_no_grant_matching(
    example_engine: Engine, decide: Decide
) -> None:
    decision = decide(example_engine, "alice", "update", "route", attributes={"region": "south"})
    assert decision.allowed is False
    assert "no grant matches" in decision.reason
    assert decision.matched == ()


def test_a_user_without_roles_gets_no_grant(example_engine: Engine, decide: Decide) -> None:
    decision = decide(example_engine, "dave", "read", "vehicle")
    assert decision.allowed is False
    assert "no grant matches" in decision.reason


def test_a_grant_inherited_from_a_role_applies(example_engine: Engine, decide: Decide) -> None:
    decision = decide(example_engine, "alice", "read", "driver")
    assert decision.allowed is True
    assert matched(decision) == [{"effect": "grant", "source": "role:viewer", "rule": 0}]


def test_a_deny_overrides_a_grant_and_names_its_rule(
    example_engine: Engine, decide: Decide
) -> None:
    attrs = {"classification": "confidential"}
    decision = decide(example_engine, "bob", "read", "report", attributes=attrs)
    assert decision.allowed is False
    assert decision.reason.startswith("denied by role viewer: ")
    assert 'report read when resource.classification = "confidential"' in decision.reason
    assert matched(decision) == [{"effect": "deny", "source": "role:viewer", "rule": 0}]


def test_a_deny_from_an_inherited_role_applies(example_engine: Engine, decide: Decide) -> None:
    attrs = {"classification": "confidential"}
    decision = decide(example_engine, "alice", "read", "report", attributes=attrs)
    assert decision.allowed is False
    assert "viewer" in decision.reason
    assert matched(decision) == [{"effect": "deny", "source": "role:viewer", "rule": 0}]


def test_a_deny_in_one_role_overrides_a_grant_in_another(example_doc: Doc, decide: Decide) -> None:
    example_doc["users"][2]["roles"].append({"role": "viewer"})  # carol: creator and viewer
    attrs = {"classification": "confidential"}
    decision = decide(example_doc, "carol", "read", "report", attributes=attrs)
    assert decision.allowed is False
    assert matched(decision)[0]["effect"] == "deny"


def test_a_deny_whose_attribute_is_missing_does_not_apply(
    example_engine: Engine, decide: Decide
) -> None:
    for attrs in (None, {}, {"classification": None}):
        decision = decide(example_engine, "bob", "read", "report", attributes=attrs)
        assert decision.allowed is True, attrs


def test_a_deny_under_not_applies_when_the_attribute_is_missing(
    minimal: Callable[..., Doc], decide: Decide
) -> None:
    # policy-format.md: `not` of a failing comparison is true, "so write denies with care".
    document = minimal(
        roles=[
            {
                "name": "r",
                "grants": [{"resource": "doc", "actions": ["read"]}],
                "denies": [
                    {
                        "resource": "doc",
                        "actions": ["read"],
                        "when": {"not": {"resource.classification": "public"}},
                    }
                ],
            }
        ],
        users=[{"id": "u", "roles": [{"role": "r"}]}],
    )
    engine = engine_of(document)
    assert decide(engine, "u", "read", "doc").allowed is False
    assert decide(engine, "u", "read", "doc", attributes={"classification": None}).allowed is False
    public = {"classification": "public"}
    assert decide(engine, "u", "read", "doc", attributes=public).allowed is True


def test_a_missing_user_attribute_fails_the_condition_closed(
    example_doc: Doc, decide: Decide
) -> None:
    example_doc["users"][3]["roles"] = [{"role": "dispatcher"}]  # dave has no region
    for region in ("north", None):
        attrs = {"region": region}
        assert decide(example_doc, "dave", "update", "route", attributes=attrs).allowed is False


def test_matched_reports_the_index_of_the_deciding_rule(
    minimal: Callable[..., Doc], decide: Decide
) -> None:
    grants = [
        {"resource": "doc", "actions": ["read"], "when": {"resource.level": {"gt": 5}}},
        {"resource": "doc", "actions": ["write"]},
        {"resource": "doc", "actions": ["read"], "when": {"resource.level": {"lte": 5}}},
    ]
    document = minimal(
        roles=[{"name": "r", "grants": grants}], users=[{"id": "u", "roles": [{"role": "r"}]}]
    )
    engine = engine_of(document)
    low = decide(engine, "u", "read", "doc", attributes={"level": 3})
    high = decide(engine, "u", "read", "doc", attributes={"level": 9})
    assert matched(low) == [{"effect": "grant", "source": "role:r", "rule": 2}]
    assert matched(high) == [{"effect": "grant", "source": "role:r", "rule": 0}]
    assert decide(engine, "u", "read", "doc").allowed is False


def test_direct_user_rules_apply_and_name_the_user(
    minimal: Callable[..., Doc], decide: Decide
) -> None:
    document = minimal(
        roles=[{"name": "r", "grants": [{"resource": "doc", "actions": ["read", "write"]}]}],
        users=[
            {
                "id": "u",
                "roles": [{"role": "r"}],
                "denies": [
                    {"resource": "doc", "actions": ["write"], "when": {"resource.id": "d9"}}
                ],
            },
            {"id": "v", "grants": [{"resource": "doc", "actions": ["read"]}]},
        ],
    )
    engine = engine_of(document)
    denied = decide(engine, "u", "write", "doc", resource_id="d9")
    assert denied.allowed is False
    assert "user u" in denied.reason
    assert matched(denied) == [{"effect": "deny", "source": "user:u", "rule": 0}]
    assert decide(engine, "u", "write", "doc", resource_id="d1").allowed is True
    granted = decide(engine, "v", "read", "doc")
    assert granted.allowed is True
    assert matched(granted) == [{"effect": "grant", "source": "user:v", "rule": 0}]


def test_a_role_deny_overrides_a_direct_user_grant(
    minimal: Callable[..., Doc], decide: Decide
) -> None:
    document = minimal(
        roles=[{"name": "r", "denies": [{"resource": "*", "actions": ["*"]}]}],
        users=[
            {
                "id": "u",
                "roles": [{"role": "r"}],
                "grants": [{"resource": "doc", "actions": ["read"]}],
            }
        ],
    )
    decision = decide(document, "u", "read", "doc")
    assert decision.allowed is False
    assert matched(decision) == [{"effect": "deny", "source": "role:r", "rule": 0}]


def test_a_decision_reports_the_policy_version_it_was_made_against(
    example_policy: Policy, decide: Decide
) -> None:
    engine = Engine(example_policy, version=42)
    allowed = decide(engine, "alice", "read", "vehicle")
    no_grant = decide(engine, "dave", "read", "vehicle")
    unknown = decide(engine, "nobody", "read", "vehicle")
    assert [d.policy_version for d in (allowed, no_grant, unknown)] == [42, 42, 42]
    engine.refresh(version=43)
    assert decide(engine, "alice", "read", "vehicle").policy_version == 43
    assert decide(engine, "dave", "read", "vehicle").policy_version == 43


def test_the_wire_form_is_the_decisions_json(example_engine: Engine, decide: Decide) -> None:
    decision = decide(example_engine, "alice", "update", "route", attributes={"region": "north"})
    wire = json.loads(decision.wire)
    assert wire == decision.to_dict()
    assert wire == {
        "allowed": True,
        "reason": decision.reason,
        "matched": [{"effect": "grant", "source": "role:dispatcher", "rule": 0}],
        "policy_version": None,
    }
    denied = json.loads(decide(example_engine, "dave", "read", "report").wire)
    assert denied["allowed"] is False
    assert denied["matched"] == []


# --- unknown things and wildcards in requests --------------------------------------------


@pytest.mark.parametrize(
    ("asked", "words"),
    [
        (("mallory", "read", "vehicle"), "unknown user 'mallory'"),
        (("alice", "read", "spaceship"), "unknown resource type 'spaceship'"),
        (("alice", "fly", "vehicle"), "'fly' is not listed for resource type 'vehicle'"),
        (("alice", "export", "vehicle"), "'export' is not listed for resource type 'vehicle'"),
        (("alice", "read", "*"), "unknown resource type '*'"),
        (("alice", "*", "vehicle"), "'*' is not listed"),
        (("alice", "*", "*"), "'*'"),
        (("mallory", "read", "spaceship"), "spaceship"),
    ],
)
def test_unknown_users_types_actions_and_star_requests_are_denied_with_a_reason(
    example_engine: Engine, decide: Decide, asked: tuple[str, str, str], words: str
) -> None:
    decision = decide(example_engine, *asked)
    assert decision.allowed is False
    assert words in decision.reason
    assert decision.matched == ()


def test_a_star_request_is_denied_even_to_a_user_granted_everything(
    minimal: Callable[..., Doc], decide: Decide
) -> None:
    document = minimal(
        roles=[{"name": "root", "grants": [{"resource": "*", "actions": ["*"]}]}],
        users=[{"id": "u", "roles": [{"role": "root"}]}],
    )
    engine = engine_of(document)
    assert decide(engine, "u", "read", "doc").allowed is True
    assert decide(engine, "u", "write", "doc").allowed is True
    for action, resource_type in (("*", "doc"), ("read", "*"), ("*", "*")):
        assert decide(engine, "u", action, resource_type).allowed is False


def test_a_star_resource_covers_every_type(example_engine: Engine, decide: Decide) -> None:
    for resource_type in ("vehicle", "driver", "route", "report", "user", "role"):
        assert decide(example_engine, "bob", "read", resource_type).allowed is True
        assert decide(example_engine, "bob", "update", resource_type).allowed is False


def test_star_actions_cover_exactly_the_listed_actions_of_the_type(
    example_engine: Engine, decide: Decide
) -> None:
    for action in ("read", "create", "update", "delete", "dispatch"):
        assert decide(example_engine, "alice", action, "vehicle").allowed is True
    assert decide(example_engine, "alice", "assign", "vehicle").allowed is False
    assert decide(example_engine, "alice", "create", "driver").allowed is False


def test_a_star_rule_naming_an_action_covers_only_types_that_list_it(
    example_doc: Doc, decide: Decide
) -> None:
    example_doc["roles"].append(
        {"name": "assigner", "grants": [{"resource": "*", "actions": ["assign"]}]}
    )
    example_doc["users"][3]["roles"] = [{"role": "assigner"}]
    engine = engine_of(example_doc)
    assert decide(engine, "dave", "assign", "route").allowed is True
    assert decide(engine, "dave", "assign", "role").allowed is True
    for resource_type in ("vehicle", "driver", "report", "user"):
        assert decide(engine, "dave", "assign", resource_type).allowed is False
    assert decide(engine, "dave", "read", "route").allowed is False


def test_a_star_deny_covers_every_listed_pair(minimal: Callable[..., Doc], decide: Decide) -> None:
    document = minimal(
        resource_types={"doc": ["read", "write"], "car": ["drive"]},
        roles=[
            {
                "name": "r",
                "grants": [{"resource": "*", "actions": ["*"]}],
                "denies": [{"resource": "*", "actions": ["*"], "when": {"context.lockdown": True}}],
            }
        ],
        users=[{"id": "u", "roles": [{"role": "r"}]}],
    )
    engine = engine_of(document)
    for action, resource_type in (("read", "doc"), ("write", "doc"), ("drive", "car")):
        assert decide(engine, "u", action, resource_type).allowed is True
        locked = decide(engine, "u", action, resource_type, context={"lockdown": True})
        assert locked.allowed is False
        assert decide(engine, "u", action, resource_type, context={"lockdown": 1}).allowed is True


# --- time and expiry ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("time", "allowed"),
    [
        (None, True),
        ("2026-12-30T23:59:59.999999999Z", True),
        ("2026-12-31T01:59:59.999999999+02:00", True),
        ("2026-12-30T18:59:59-05:00", True),
        ("2026-12-31T00:00:00Z", False),
        ("2026-12-31T00:00:00.000Z", False),
        ("2026-12-31T02:00:00+02:00", False),
        ("2026-12-30T19:00:00-05:00", False),
        ("2026-12-31T00:00:00.000000001Z", False),
        ("2027-06-01T00:00:00Z", False),
    ],
)
def test_an_assignment_counts_until_context_time_reaches_its_expiry(
    example_engine: Engine, decide: Decide, time: str | None, allowed: bool
) -> None:
    context = None if time is None else {"time": time}
    assert (
        decide(example_engine, "alice", "dispatch", "vehicle", context=context).allowed is allowed
    )


def test_without_context_time_expiry_is_judged_at_now(example_engine: Engine) -> None:
    request = parse_request(
        {"user": "alice", "action": "dispatch", "resource": {"type": "vehicle"}}
    )
    assert example_engine.decide(request, NOW).allowed is True
    assert example_engine.decide(request, parse_instant("2026-12-31T00:00:00Z")).allowed is False
    assert example_engine.decide(request, AFTER_EXPIRY).allowed is False


def test_context_time_not_now_decides_expiry_when_given(example_engine: Engine) -> None:
    request = parse_request(
        {
            "user": "alice",
            "action": "dispatch",
            "resource": {"type": "vehicle"},
            "context": {"time": "2026-12-01T00:00:00Z"},
        }
    )
    assert example_engine.decide(request, AFTER_EXPIRY).allowed is True


def test_a_null_context_time_falls_back_to_now(example_engine: Engine) -> None:
    request = parse_request(
        {
            "user": "alice",
            "action": "dispatch",
            "resource": {"type": "vehicle"},
            "context": {"time": None},
        }
    )
    assert example_engine.decide(request, NOW).allowed is True
    assert example_engine.decide(request, AFTER_EXPIRY).allowed is False


def test_an_expired_role_leaves_the_roles_held_otherwise(
    example_engine: Engine, decide: Decide
) -> None:
    after = {"time": "2027-01-01T00:00:00Z"}
    north = {"region": "north"}
    assert decide(
        example_engine, "alice", "update", "route", attributes=north, context=after
    ).allowed
    assert decide(example_engine, "alice", "read", "vehicle", context=after).allowed


@pytest.mark.parametrize(
    ("time", "allowed"),
    [
        ("2026-12-31T00:00:00.4999Z", True),
        ("2026-12-31T00:00:00.499999999999Z", True),
        ("2026-12-31T00:00:00.5Z", False),
        ("2026-12-31T00:00:00.50000Z", False),
        ("2026-12-31T01:00:00.5+01:00", False),
        ("2026-12-31T00:00:00.51Z", False),
    ],
)
def test_fractional_expiry_is_compared_exactly(
    minimal: Callable[..., Doc], decide: Decide, time: str, allowed: bool
) -> None:
    document = minimal(
        roles=[{"name": "r", "grants": [{"resource": "doc", "actions": ["read"]}]}],
        users=[{"id": "u", "roles": [{"role": "r", "expires": "2026-12-31T00:00:00.5Z"}]}],
    )
    assert decide(document, "u", "read", "doc", context={"time": time}).allowed is allowed


def test_a_role_held_both_with_and_without_expiry_outlives_the_expiry(
    minimal: Callable[..., Doc], decide: Decide
) -> None:
    document = minimal(
        roles=[
            {"name": "base", "grants": [{"resource": "doc", "actions": ["read"]}]},
            {
                "name": "temp",
                "inherits": ["base"],
                "grants": [{"resource": "doc", "actions": ["write"]}],
            },
        ],
        users=[
            {
                "id": "u",
                "roles": [
                    {"role": "temp", "expires": "2026-12-31T00:00:00Z"},
                    {"role": "base"},
                ],
            },
            {
                "id": "v",
                "roles": [
                    {"role": "temp", "expires": "2026-12-01T00:00:00Z"},
                    {"role": "temp", "expires": "2027-01-01T00:00:00Z"},
                ],
            },
        ],
    )
    engine = engine_of(document)
    late = {"time": "2026-12-31T00:00:00Z"}
    assert decide(engine, "u", "read", "doc", context=late).allowed is True
    assert decide(engine, "u", "write", "doc", context=late).allowed is False
    assert decide(engine, "v", "write", "doc", context=late).allowed is True
    assert (
        decide(engine, "v", "write", "doc", context={"time": "2027-01-01T00:00:00Z"}).allowed
        is False
    )


def test_a_condition_on_context_time_sees_it_missing_when_the_request_has_none(
    minimal: Callable[..., Doc], decide: Decide
) -> None:
    document = minimal(
        roles=[
            {
                "name": "r",
                "grants": [
                    {
                        "resource": "doc",
                        "actions": ["read"],
                        "when": {"context.time": {"gte": "2026-01-01T00:00:00Z"}},
                    }
                ],
            }
        ],
        users=[{"id": "u", "roles": [{"role": "r"}]}],
    )
    engine = engine_of(document)
    assert decide(engine, "u", "read", "doc").allowed is False
    assert decide(engine, "u", "read", "doc", context={"time": "2026-11-22T09:30:00Z"}).allowed


# --- inheritance -------------------------------------------------------------------------

DIAMOND_ROLES = [
    {"name": "top", "inherits": ["left", "right"]},
    {
        "name": "left",
        "inherits": ["base"],
        "denies": [{"resource": "doc", "actions": ["write"], "when": {"resource.locked": True}}],
    },
    {"name": "right", "inherits": ["base"], "grants": [{"resource": "doc", "actions": ["write"]}]},
    {"name": "base", "grants": [{"resource": "doc", "actions": ["read"]}]},
]


def test_diamond_inheritance_holds_every_role_once(
    minimal: Callable[..., Doc], decide: Decide
) -> None:
    engine = engine_of(
        minimal(roles=DIAMOND_ROLES, users=[{"id": "u", "roles": [{"role": "top"}]}])
    )
    read = decide(engine, "u", "read", "doc")
    assert read.allowed is True
    assert matched(read) == [{"effect": "grant", "source": "role:base", "rule": 0}]
    assert decide(engine, "u", "write", "doc", attributes={"locked": False}).allowed is True
    locked = decide(engine, "u", "write", "doc", attributes={"locked": True})
    assert locked.allowed is False
    assert matched(locked) == [{"effect": "deny", "source": "role:left", "rule": 0}]
    base_rules = [p for p in engine.effective_permissions("u", NOW) if p.source == "role:base"]
    assert len(base_rules) == 1


def test_inheritance_is_transitive(minimal: Callable[..., Doc], decide: Decide) -> None:
    roles = [
        {"name": "a", "inherits": ["b"]},
        {"name": "b", "inherits": ["c"]},
        {"name": "c", "inherits": ["d"]},
        {"name": "d", "grants": [{"resource": "doc", "actions": ["read"]}]},
    ]
    document = minimal(roles=roles, users=[{"id": "u", "roles": [{"role": "a"}]}])
    assert decide(document, "u", "read", "doc").allowed is True
    assert decide(document, "u", "write", "doc").allowed is False


def test_inheritance_does_not_flow_downwards(minimal: Callable[..., Doc], decide: Decide) -> None:
    roles = [
        {
            "name": "child",
            "inherits": ["parent"],
            "grants": [{"resource": "doc", "actions": ["write"]}],
        },
        {"name": "parent", "grants": [{"resource": "doc", "actions": ["read"]}]},
    ]
    document = minimal(roles=roles, users=[{"id": "u", "roles": [{"role": "parent"}]}])
    assert decide(document, "u", "read", "doc").allowed is True
    assert decide(document, "u", "write", "doc").allowed is False


# --- questions about the policy ----------------------------------------------------------


def test_effective_permissions_list_rules_with_their_role_path_and_expiry(
    example_engine: Engine,
) -> None:
    permissions = example_engine.effective_permissions("alice", NOW)
    by_pair = {(p.resource_type, p.action, p.effect): p for p in permissions}
    update = by_pair["route", "update", Effect.GRANT]
    assert update.source == "role:dispatcher"
    assert update.path == ("alice", "dispatcher")
    assert update.condition == "resource.region = $user.region"
    assert update.until is None
    read = by_pair["driver", "read", Effect.GRANT]
    assert read.path == ("alice", "dispatcher", "viewer")
    deny = by_pair["report", "read", Effect.DENY]
    assert deny.source == "role:viewer"
    dispatch = by_pair["vehicle", "dispatch", Effect.GRANT]
    assert dispatch.source == "role:fleet-manager"
    assert dispatch.until == "2026-12-31T00:00:00Z"
    assert ("vehicle", "assign", Effect.GRANT) not in by_pair


def test_effective_permissions_leave_out_expired_roles(example_engine: Engine) -> None:
    permissions = example_engine.effective_permissions("alice", AFTER_EXPIRY)
    assert not any(p.source == "role:fleet-manager" for p in permissions)
    assert any(p.source == "role:dispatcher" for p in permissions)


def test_effective_permissions_of_an_unknown_user_raise_key_error(example_engine: Engine) -> None:
    with pytest.raises(KeyError):
        example_engine.effective_permissions("mallory", NOW)


def test_who_can_lists_the_allowed_users_with_their_deciding_grant(example_engine: Engine) -> None:
    north = example_engine.who_can("update", "route", "r-17", {"region": "north"}, now=NOW)
    assert [user for user, _ in north] == ["alice"]
    assert north[0][1].allowed is True
    assert "dispatcher" in north[0][1].reason
    readers = example_engine.who_can("read", "report", "q3", {"classification": "public"}, now=NOW)
    assert [user for user, _ in readers] == ["alice", "bob", "carol"]
    secret = example_engine.who_can(
        "read", "report", "q3", {"classification": "confidential"}, now=NOW
    )
    assert [user for user, _ in secret] == ["carol"]


def test_who_can_respects_expiry_at_the_given_time(example_engine: Engine) -> None:
    assert [u for u, _ in example_engine.who_can("delete", "vehicle", now=NOW)] == ["alice"]
    assert example_engine.who_can("delete", "vehicle", now=AFTER_EXPIRY) == []
    later = parse_instant("2026-12-31T00:00:00Z")
    assert example_engine.who_can("delete", "vehicle", now=NOW, time=later) == []


def test_who_can_finds_nobody_for_unknown_or_star_pairs(example_engine: Engine) -> None:
    assert example_engine.who_can("fly", "vehicle", now=NOW) == []
    assert example_engine.who_can("read", "*", now=NOW) == []


def test_explain_gives_the_same_decision_and_its_steps(example_engine: Engine) -> None:
    request = parse_request(
        {
            "user": "alice",
            "action": "dispatch",
            "resource": {"type": "vehicle", "id": "v1"},
            "context": {"time": "2027-01-01T00:00:00Z"},
        }
    )
    explanation = example_engine.explain(request, NOW)
    assert explanation.decision == example_engine.decide(request, NOW)
    text = "\n".join(explanation.trace)
    assert "expired, ignored" in text
    assert "fleet-manager" in text
    assert explanation.trace[-1].startswith("decision: denied")


def test_explain_traces_each_comparison(example_engine: Engine) -> None:
    request = Request("alice", "update", "route", "r-17", {"region": "south"})
    explanation = example_engine.explain(request, NOW)
    text = "\n".join(explanation.trace)
    assert 'resource.region is "south"' in text
    assert 'user.region is "north"' in text
    assert explanation.decision.allowed is False


def test_explain_of_an_unknown_user_says_why(example_engine: Engine) -> None:
    explanation = example_engine.explain(Request("mallory", "read", "vehicle"), NOW)
    assert explanation.decision.allowed is False
    assert "unknown user" in explanation.trace[-1]


def test_decide_many_decides_each_request_in_order(example_engine: Engine) -> None:
    requests = [
        Request("alice", "read", "vehicle"),
        Request("dave", "read", "vehicle"),
        Request("alice", "update", "route", "r", {"region": "north"}),
        Request("mallory", "read", "vehicle"),
    ]
    decisions = example_engine.decide_many(requests, NOW)
    assert [d.allowed for d in decisions] == [True, False, True, False]
    assert decisions == [example_engine.decide(r, NOW) for r in requests]


# --- suspended users and eligible assignments (policy-format.md § Additions) -------------

ADDITIONS: Doc = {
    "format": "fleetgate.policy/1",
    "tenant": "t",
    "resource_types": {"doc": ["read", "write"], "car": ["drive"]},
    "roles": [
        {"name": "reader", "grants": [{"resource": "doc", "actions": ["read"]}]},
        {
            "name": "editor",
            "inherits": ["reader"],
            "grants": [{"resource": "doc", "actions": ["write"]}],
        },
        {"name": "driver", "grants": [{"resource": "car", "actions": ["drive"]}]},
    ],
    "users": [
        {
            "id": "sam",
            "suspended": True,
            "roles": [{"role": "editor"}, {"role": "driver", "expires": "2027-01-01T00:00:00Z"}],
            "grants": [{"resource": "*", "actions": ["*"]}],
        },
        {
            "id": "eli",
            "roles": [
                {"role": "reader"},
                {"role": "editor", "eligible": {"max_hours": 8}},
                {"role": "driver", "eligible": {"max_hours": 2}, "expires": "2026-11-22T09:00:00Z"},
            ],
        },
        {"id": "ann", "roles": [{"role": "editor"}]},
    ],
}
SUSPENDED = "user sam is suspended"


def additions(version: int | None = None) -> Engine:
    return engine_of(json.loads(json.dumps(ADDITIONS)), version)


def test_every_request_of_a_suspended_user_is_denied_whatever_the_rules() -> None:
    engine = additions(version=3)
    asked = [
        Request("sam", "read", "doc"),
        Request("sam", "write", "doc", "d1", {"x": 1}),
        Request("sam", "drive", "car"),
        Request("sam", "fly", "doc"),  # not listed
        Request("sam", "read", "boat"),  # unknown type
        Request("sam", "*", "*"),
    ]
    for request in asked:
        decision = engine.decide(request, NOW)
        assert decision.to_dict() == {
            "allowed": False,
            "reason": SUSPENDED,
            "matched": [],
            "policy_version": 3,
        }, request


def test_a_suspended_users_denial_is_made_once_and_follows_the_version() -> None:
    engine = additions(version=3)
    first = engine.decide(Request("sam", "read", "doc"), NOW)
    assert engine.decide(Request("sam", "write", "doc"), NOW) is first
    engine.refresh(version=4)  # a change elsewhere in the tenant
    later = engine.decide(Request("sam", "read", "doc"), NOW)
    assert (later.reason, later.policy_version) == (SUSPENDED, 4)


def test_suspending_and_resuming_is_a_refresh_of_the_user() -> None:
    engine = additions()
    read = Request("ann", "read", "doc")
    assert engine.decide(read, NOW).allowed is True
    ann = engine.policy.users["ann"]
    engine.policy.users["ann"] = replace(ann, suspended=True)
    engine.refresh(users={"ann"})
    assert engine.decide(read, NOW).reason == "user ann is suspended"
    assert [u for u, _ in engine.who_can("read", "doc", now=NOW)] == ["eli"]
    engine.policy.users["ann"] = ann
    engine.refresh(users={"ann"})
    assert engine.decide(read, NOW).to_dict() == Engine(engine.policy).decide(read, NOW).to_dict()
    assert engine.decide(read, NOW).allowed is True


def test_explain_of_a_suspended_user_says_so_first() -> None:
    explanation = additions().explain(Request("sam", "write", "doc", "d1"), NOW)
    assert explanation.decision.reason == SUSPENDED
    assert explanation.trace[0].startswith("request: user 'sam' write doc:d1 at ")
    assert explanation.trace[1] == "user 'sam' is suspended: every request is denied"
    assert "  holds role editor" in explanation.trace
    assert "  (no rule evaluated: the user is suspended)" in explanation.trace
    assert explanation.trace[-1] == f"decision: denied: {SUSPENDED}"
    assert not any("grants[" in line for line in explanation.trace)


def test_explain_of_a_suspended_user_asking_an_unknown_action_says_so_first() -> None:
    trace = additions().explain(Request("sam", "fly", "doc"), NOW).trace
    assert trace[1:] == (
        "user 'sam' is suspended: every request is denied",
        f"decision: denied: {SUSPENDED}",
    )


def test_a_suspended_user_has_no_effective_permissions() -> None:
    assert additions().effective_permissions("sam", NOW) == []


def test_who_can_never_lists_a_suspended_user() -> None:
    engine = additions()
    assert [u for u, _ in engine.who_can("write", "doc", now=NOW)] == ["ann"]
    assert engine.who_can("drive", "car", now=NOW) == []


def test_holders_still_list_a_suspended_user() -> None:
    engine = additions()
    policy = engine.policy
    editor, driver = (policy.role_by_name(n) for n in ("editor", "driver"))
    assert editor is not None and driver is not None
    assert engine.holders({editor.id}) == ["sam", "ann"]
    assert engine.holders({driver.id}) == ["sam"]  # through its expiring assignment


def test_an_eligible_role_not_activated_gives_nothing() -> None:
    engine = additions()
    assert engine.decide(Request("eli", "read", "doc"), NOW).allowed is True  # reader: held
    write = engine.decide(Request("eli", "write", "doc"), NOW)
    assert (write.allowed, write.reason) == (False, "no grant matches doc write")
    assert engine.decide(Request("eli", "drive", "car"), NOW).allowed is False
    assert [u for u, _ in engine.who_can("write", "doc", now=NOW)] == ["ann"]
    sources = {p.source for p in engine.effective_permissions("eli", NOW)}
    assert sources == {"role:reader"}
    editor = engine.policy.role_by_name("editor")
    assert editor is not None
    assert "eli" not in engine.holders({editor.id})


def test_an_activation_beside_the_eligible_entry_counts_until_it_expires() -> None:
    document = json.loads(json.dumps(ADDITIONS))
    document["users"][1]["roles"].append({"role": "editor", "expires": "2026-11-22T17:30:00Z"})
    engine = engine_of(document)
    write = Request("eli", "write", "doc")
    assert engine.decide(write, NOW).allowed is True
    assert engine.decide(write, AFTER_EXPIRY).allowed is False
    by_source = {p.source: p.until for p in engine.effective_permissions("eli", NOW)}
    assert by_source["role:editor"] == "2026-11-22T17:30:00Z"
    editor = engine.policy.role_by_name("editor")
    assert editor is not None
    assert engine.holders({editor.id}) == ["sam", "eli", "ann"]


def test_activating_an_eligible_role_is_a_refresh_of_the_user() -> None:
    engine = additions()
    write = Request("eli", "write", "doc")
    assert engine.decide(write, NOW).allowed is False
    eli = engine.policy.users["eli"]
    editor = engine.policy.role_by_name("editor")
    assert editor is not None
    activation = Assignment.build(editor.id, "2026-11-22T17:30:00Z")
    engine.policy.users["eli"] = replace(eli, roles=(*eli.roles, activation))
    engine.refresh(users={"eli"})
    assert engine.decide(write, NOW).allowed is True
    engine.policy.users["eli"] = eli
    engine.refresh(users={"eli"})
    assert engine.decide(write, NOW).allowed is False


def test_explain_lists_eligible_roles_as_not_active() -> None:
    engine = additions()
    trace = engine.explain(Request("eli", "write", "doc"), NOW).trace
    assert trace[1:5] == (
        "user 'eli', attributes {}",
        "  holds role reader",
        "  eligible for role editor (up to 8 h), not active",
        "  eligible for role driver (up to 2 h), not active"
        " (eligibility ended 2026-11-22T09:00:00Z)",
    )
    earlier = parse_instant("2026-11-22T08:00:00Z")
    assert "  eligible for role driver (up to 2 h) until 2026-11-22T09:00:00Z, not active" in (
        engine.explain(Request("eli", "drive", "car"), earlier).trace
    )


def test_explain_of_a_user_with_only_eligible_roles_says_it_holds_none() -> None:
    document = json.loads(json.dumps(ADDITIONS))
    document["users"][1]["roles"] = [{"role": "editor", "eligible": {"max_hours": 8}}]
    trace = engine_of(document).explain(Request("eli", "read", "doc"), NOW).trace
    assert trace[2:4] == (
        "  holds no roles",
        "  eligible for role editor (up to 8 h), not active",
    )
