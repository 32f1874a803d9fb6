"""sync.policy.fixes: the ranked changes that would allow a denied request, each one
verified by applying it, and the grants an allowed request stands on."""

from __future__ import annotations

import copy
import random
from typing import Any

from sync.policy.document import PolicyInvalid, parse_policy
from sync.policy.edits import edit_from_document
from sync.policy.engine import Engine
from sync.policy.fixes import (
    COST_REMOVE_DENY,
    JUSTIFICATION,
    Fix,
    apply_request_change,
    fixes_for,
    grants_relied_on,
    with_justification,
)
from sync.policy.instant import format_instant, parse_instant
from sync.policy.request import Request
from sync.policy.whatif import propose

NOW = parse_instant("2026-11-22T09:30:00Z")

Doc = dict[str, Any]


def fleet(**parts: Any) -> Doc:
    """A small fleet tenant; `parts` replace or add top-level entries."""
    document: Doc = {
        "format": "fleetgate.policy/1",
        "tenant": "t",
        "resource_types": {
            "vehicle": ["read", "drive", "refuel"],
            "report": ["read", "export"],
        },
        "roles": [
            {"name": "viewer", "grants": [{"resource": "vehicle", "actions": ["read"]}]},
            {"name": "driver", "grants": [{"resource": "vehicle", "actions": ["drive"]}]},
            {
                "name": "fleet-manager",
                "inherits": ["driver"],
                "grants": [
                    {"resource": "vehicle", "actions": ["*"]},
                    {"resource": "report", "actions": ["read"]},
                ],
            },
            {
                "name": "night-dispatcher",
                "inherits": ["viewer"],
                "grants": [
                    {
                        "resource": "vehicle",
                        "actions": ["drive"],
                        "when": {
                            "all": [
                                {"resource.region": "$user.region"},
                                {"context.hour": {"gte": 20}},
                            ]
                        },
                    }
                ],
            },
        ],
        "users": [
            {"id": "vic", "roles": [{"role": "viewer"}]},
            {"id": "sam", "roles": [{"role": "driver", "eligible": {"max_hours": 8}}]},
        ],
    }
    document.update(parts)
    return document


def engine_of(document: Doc) -> Engine:
    return Engine(parse_policy(document, now=NOW))


def allows_after(engine: Engine, request: Request, fix: Fix) -> bool:
    """Apply the fix to a fresh copy of the policy, compiled afresh (not the engine's
    what-if), and decide the request as the fix changes it."""
    policy = engine.policy
    edits = [edit_from_document(copy.deepcopy(d), policy) for d in fix.edits]
    changed = apply_request_change(request, fix.request_change or {})
    return Engine(propose(policy, edits, NOW)).decide(changed, NOW).allowed


def labels(fixes: list[Fix]) -> list[str]:
    return [f.label for f in fixes]


# --- the candidates -----------------------------------------------------------------------


def test_assigning_the_role_that_grants_it_is_offered_and_allows() -> None:
    engine = engine_of(fleet())
    request = Request("vic", "drive", "vehicle", "v-1")
    fixes = fixes_for(engine, request, NOW)
    top = fixes[0]
    assert top.label == "assign role driver to vic"
    assert top.kind == "assign"
    assert top.edits == (
        {"op": "assign_role", "user_id": "vic", "role_id": top.edits[0]["role_id"]},
    )
    assert engine.policy.role_name(top.edits[0]["role_id"]) == "driver"
    assert top.request_change is None
    assert all(allows_after(engine, request, f) for f in fixes)


def test_the_role_that_confers_least_is_ranked_before_a_broader_one() -> None:
    engine = engine_of(fleet())
    fixes = fixes_for(engine, Request("vic", "drive", "vehicle"), NOW)
    by_label = {f.label: f for f in fixes}
    narrow = by_label["assign role driver to vic"]
    broad = by_label["assign role fleet-manager to vic"]
    assert narrow.widens == ()
    assert set(broad.widens) == {"vehicle refuel", "report read"}  # vic reads vehicles already
    assert narrow.cost == broad.cost
    assert labels(fixes).index(narrow.label) < labels(fixes).index(broad.label)


def test_an_eligible_role_is_activated_before_it_would_be_assigned() -> None:
    engine = engine_of(fleet())
    request = Request("sam", "drive", "vehicle")
    fixes = fixes_for(engine, request, NOW)
    assert fixes[0].label == "activate eligible role driver for sam (1 h, up to 8 h)"
    assert fixes[0].kind == "activate"
    (edit,) = fixes[0].edits
    assert edit["op"] == "activate_role" and edit["hours"] == 1
    assert edit["justification"] == JUSTIFICATION
    assert "assign role driver to sam" in labels(fixes)
    assert labels(fixes).index("assign role driver to sam") > 0
    assert all(allows_after(engine, request, f) for f in fixes)


def test_an_activation_lasts_until_the_requests_time_within_max_hours() -> None:
    engine = engine_of(fleet())
    later = (NOW[0] + 5 * 3600 + 60, "")
    request = Request("sam", "drive", "vehicle", time=later)
    activation = fixes_for(engine, request, NOW)[0]
    assert activation.edits[0]["hours"] == 6
    too_late = Request("sam", "drive", "vehicle", time=(NOW[0] + 9 * 3600, ""))
    kinds = [f.kind for f in fixes_for(engine, too_late, NOW)]
    assert "activate" not in kinds and "assign" in kinds  # 8 h cannot reach it


def test_with_justification_replaces_the_placeholder_of_activations_only() -> None:
    engine = engine_of(fleet())
    fixes = fixes_for(engine, Request("sam", "drive", "vehicle"), NOW)
    (edit,) = with_justification(fixes[0], "Covering the 14:00 route")
    assert edit["justification"] == "Covering the 14:00 route"
    assert fixes[0].edits[0]["justification"] == JUSTIFICATION  # the fix is unchanged
    assert with_justification(fixes[1], "x") == fixes[1].edits


def test_a_resource_attribute_the_condition_needs_is_a_request_change_without_edits() -> None:
    document = fleet()
    document["users"].append(
        {"id": "nia", "attributes": {"region": "north"}, "roles": [{"role": "night-dispatcher"}]}
    )
    engine = engine_of(document)
    request = Request("nia", "drive", "vehicle", "v-1", {"region": "south"}, {"hour": 21})
    fixes = fixes_for(engine, request, NOW)
    top = fixes[0]
    assert top.label == 'resource.region would have to be "north"'
    assert top.kind == "attribute"
    assert top.edits == ()
    assert top.request_change == {"resource.region": "north"}
    assert all(allows_after(engine, request, f) for f in fixes)


def test_a_context_value_below_a_bound_is_said_as_the_bound() -> None:
    document = fleet()
    document["users"].append(
        {"id": "nia", "attributes": {"region": "north"}, "roles": [{"role": "night-dispatcher"}]}
    )
    engine = engine_of(document)
    request = Request("nia", "drive", "vehicle", "v-1", {"region": "north"}, {"hour": 9})
    top = fixes_for(engine, request, NOW)[0]
    assert top.label == "context.hour would have to be at least 20"
    assert top.kind == "request" and top.request_change == {"context.hour": 20}


def test_a_condition_on_a_user_attribute_gives_a_user_attribute_fix() -> None:
    document = fleet()
    document["roles"].append(
        {
            "name": "depot-driver",
            "grants": [
                {"resource": "vehicle", "actions": ["refuel"], "when": {"user.depot": "d1"}}
            ],
        }
    )
    document["users"].append({"id": "dee", "roles": [{"role": "depot-driver"}]})
    engine = engine_of(document)
    request = Request("dee", "refuel", "vehicle")
    fixes = fixes_for(engine, request, NOW)
    top = fixes[0]
    assert top.label == 'set attribute depot of user dee to "d1"'
    assert top.kind == "user_attribute"
    assert top.edits == (
        {"op": "set_user_attribute", "user_id": "dee", "key": "depot", "value": "d1"},
    )
    assert top.request_change is None
    assert all(allows_after(engine, request, f) for f in fixes)


def test_a_reference_between_user_and_resource_can_be_met_from_either_side() -> None:
    document = fleet()
    document["users"].append(
        {"id": "nia", "attributes": {"region": "south"}, "roles": [{"role": "night-dispatcher"}]}
    )
    engine = engine_of(document)
    request = Request("nia", "drive", "vehicle", None, {"region": "north"}, {"hour": 22})
    fixes = fixes_for(engine, request, NOW)
    assert labels(fixes)[:2] == [
        'resource.region would have to be "south"',  # changes nothing in the policy
        'set attribute region of user nia to "north"',
    ]


def test_a_suspended_user_is_resumed_and_told_what_else_is_needed() -> None:
    document = fleet()
    document["users"] += [
        {"id": "sus", "suspended": True, "roles": [{"role": "driver"}]},
        {"id": "sue", "suspended": True, "roles": [{"role": "viewer"}]},
    ]
    engine = engine_of(document)
    held = fixes_for(engine, Request("sus", "drive", "vehicle"), NOW)
    assert held[0].label == "resume user sus (suspended)"
    assert held[0].kind == "resume"
    assert held[0].edits == ({"op": "resume_user", "user_id": "sus"},)
    request = Request("sue", "drive", "vehicle")
    more = fixes_for(engine, request, NOW)
    assert more[0].label == "resume user sue (suspended), and assign role driver to sue"
    assert more[0].kind == "resume"
    assert [e["op"] for e in more[0].edits] == ["resume_user", "assign_role"]
    assert "vehicle read" in more[0].widens  # resuming gives back what sue held
    assert all(allows_after(engine, request, f) for f in more)


def test_a_deny_that_overrides_the_grant_makes_that_assignment_not_offered() -> None:
    document = fleet()
    document["roles"].append(
        {"name": "probation", "denies": [{"resource": "vehicle", "actions": ["drive"]}]}
    )
    document["users"].append({"id": "pat", "roles": [{"role": "probation"}]})
    engine = engine_of(document)
    fixes = fixes_for(engine, Request("pat", "drive", "vehicle"), NOW)
    assert not any(f.kind == "assign" and len(f.edits) == 1 for f in fixes)
    assert fixes == []  # nothing short of taking probation away would do


def test_a_conditional_deny_is_avoided_by_changing_what_it_reads() -> None:
    document = fleet()
    document["roles"].append(
        {
            "name": "no-south",
            "denies": [
                {"resource": "vehicle", "actions": ["drive"], "when": {"resource.region": "south"}}
            ],
        }
    )
    document["users"].append({"id": "pat", "roles": [{"role": "no-south"}]})
    engine = engine_of(document)
    request = Request("pat", "drive", "vehicle", None, {"region": "south"})
    fixes = fixes_for(engine, request, NOW)
    assert "assign role driver to pat" not in labels(fixes)
    assert fixes[0].label == (
        "assign role driver to pat, and resource.region would have to be absent"
    )
    assert all(allows_after(engine, request, f) for f in fixes)


def test_removing_a_matching_deny_is_offered_last_when_a_grant_is_held() -> None:
    document = fleet()
    document["roles"].append(
        {
            "name": "careful",
            "grants": [{"resource": "vehicle", "actions": ["drive"]}],
            "denies": [
                {"resource": "vehicle", "actions": ["drive"], "when": {"context.hour": {"lt": 6}}}
            ],
        }
    )
    document["users"] += [
        {"id": "pat", "roles": [{"role": "careful"}]},
        {"id": "kim", "roles": [{"role": "careful"}]},
    ]
    engine = engine_of(document)
    request = Request("pat", "drive", "vehicle", None, {}, {"hour": 3})
    fixes = fixes_for(engine, request, NOW)
    assert fixes[0].label == "context.hour would have to be absent"
    last = fixes[-1]
    assert last.kind == "deny"
    assert last.cost >= COST_REMOVE_DENY
    assert last.label.startswith("remove the deny of role careful: vehicle drive when")
    assert last.edits[0]["op"] == "remove_rule" and last.edits[0]["effect"] == "deny"
    assert last.widens == ("lifts the deny for every holder of role careful (2)",)
    assert all(allows_after(engine, request, f) for f in fixes)


def test_an_assignment_a_constraint_refuses_is_not_offered() -> None:
    document = fleet(constraints=[{"name": "no-self-drive", "exclusive": ["viewer", "driver"]}])
    engine = engine_of(document)
    request = Request("vic", "drive", "vehicle")
    fixes = fixes_for(engine, request, NOW)
    assert "assign role driver to vic" not in labels(fixes)
    assert "assign role fleet-manager to vic" not in labels(fixes)  # inherits driver
    assert all(allows_after(engine, request, f) for f in fixes)


def test_unknown_users_types_and_actions_and_allowed_requests_have_no_fix() -> None:
    engine = engine_of(fleet())
    assert fixes_for(engine, Request("nobody", "drive", "vehicle"), NOW) == []
    assert fixes_for(engine, Request("vic", "drive", "boat"), NOW) == []
    assert fixes_for(engine, Request("vic", "fly", "vehicle"), NOW) == []
    assert fixes_for(engine, Request("vic", "*", "vehicle"), NOW) == []
    assert fixes_for(engine, Request("vic", "read", "vehicle"), NOW) == []


def test_fixes_leave_the_engine_as_it_was_and_keep_to_the_limit() -> None:
    engine = engine_of(fleet())
    request = Request("vic", "drive", "vehicle")
    users = dict(engine.policy.users)
    roles = dict(engine.policy.roles)
    assert len(fixes_for(engine, request, NOW, limit=1)) == 1
    assert engine.policy.users == users and engine.policy.roles == roles
    assert not engine.decide(request, NOW).allowed


# --- what an allowed request stands on ------------------------------------------------------


def test_grants_relied_on_name_each_matching_grant_with_its_path_decider_first() -> None:
    document = fleet()
    document["users"].append(
        {"id": "max", "roles": [{"role": "fleet-manager"}, {"role": "viewer"}]}
    )
    engine = engine_of(document)
    lines = grants_relied_on(engine, Request("max", "read", "vehicle"), NOW)
    assert lines[0] == (
        "grant vehicle read via max -> fleet-manager (role fleet-manager grants[0], decides)"
    )
    assert "grant vehicle read via max -> viewer (role viewer grants[0])" in lines
    assert len(lines) == 2
    assert grants_relied_on(engine, Request("max", "export", "report"), NOW) == []


def test_grants_relied_on_skip_grants_whose_condition_fails_and_say_until() -> None:
    document = fleet()
    document["users"].append(
        {
            "id": "nia",
            "attributes": {"region": "north"},
            "roles": [
                {"role": "night-dispatcher"},
                {"role": "driver", "expires": "2026-12-01T00:00:00Z"},
            ],
        }
    )
    engine = engine_of(document)
    day = Request("nia", "drive", "vehicle", None, {"region": "north"}, {"hour": 9})
    assert grants_relied_on(engine, day, NOW) == [
        "grant vehicle drive via nia -> driver (until 2026-12-01T00:00:00Z)"
        " (role driver grants[0], decides)"
    ]
    night = Request("nia", "drive", "vehicle", None, {"region": "north"}, {"hour": 22})
    assert len(grants_relied_on(engine, night, NOW)) == 2


# --- property: every fix returned allows the request ------------------------------------------

_CONDITIONS: list[Doc] = [
    {"resource.region": "$user.region"},
    {"user.level": {"gte": 3}},
    {"context.hour": {"lt": 8}},
    {"resource.tag": {"in": ["a", "b"]}},
    {"not": {"resource.secret": True}},
    {"any": [{"user.region": "n"}, {"resource.public": True}]},
    {"resource.owner": "$user.id"},
    {"user.tags": {"contains": "x"}},
    {"all": [{"resource.region": "n"}, {"user.level": {"gt": 1}}]},
    {"resource.level": {"lte": "$user.level"}},
]
_TYPES = {"doc": ["read", "write", "share"], "car": ["drive", "read"]}


def _rule(rng: random.Random) -> Doc:
    resource = rng.choice(["doc", "car", "*"])
    actions = (
        ["*"]
        if rng.random() < 0.2
        else rng.sample(
            sorted({a for t in _TYPES.values() for a in t})
            if resource == "*"
            else _TYPES[resource],
            1,
        )
    )
    rule: Doc = {"resource": resource, "actions": actions}
    if rng.random() < 0.6:
        rule["when"] = rng.choice(_CONDITIONS)
    return rule


def _random_policy(rng: random.Random) -> Doc:
    roles = []
    for i in range(5):
        role: Doc = {
            "name": f"r{i}",
            "inherits": rng.sample([f"r{j}" for j in range(i)], min(i, rng.randint(0, 1))),
            "grants": [_rule(rng) for _ in range(rng.randint(0, 2))],
            "denies": [_rule(rng) for _ in range(rng.random() < 0.4)],
        }
        roles.append(role)
    users = []
    for i in range(4):
        attributes: Doc = {}
        if rng.random() < 0.6:
            attributes["region"] = rng.choice(["n", "s"])
        if rng.random() < 0.5:
            attributes["level"] = rng.randint(0, 5)
        if rng.random() < 0.3:
            attributes["tags"] = rng.sample(["x", "y"], rng.randint(0, 2))
        entries: list[Doc] = []
        for name in rng.sample([r["name"] for r in roles], rng.randint(0, 2)):
            kind = rng.random()
            if kind < 0.25:
                entries.append({"role": name, "eligible": {"max_hours": rng.randint(1, 8)}})
            elif kind < 0.4:
                entries.append({"role": name, "expires": format_instant((NOW[0] + 3600, ""))})
            else:
                entries.append({"role": name})
        user: Doc = {"id": f"u{i}", "attributes": attributes, "roles": entries}
        if rng.random() < 0.2:
            user["suspended"] = True
        if rng.random() < 0.2:
            user["grants"] = [_rule(rng)]
        if rng.random() < 0.15:
            user["denies"] = [_rule(rng)]
        users.append(user)
    document: Doc = {"format": "fleetgate.policy/1", "tenant": "t", "resource_types": _TYPES,
                     "roles": roles, "users": users}  # fmt: skip
    if rng.random() < 0.3:
        document["constraints"] = [{"name": "sod", "exclusive": rng.sample(["r2", "r3", "r4"], 2)}]
    return document


_REQUEST_ATTRIBUTES: list[tuple[str, list[Any]]] = [
    ("region", ["n", "s"]),
    ("tag", ["a", "c"]),
    ("secret", [True, False]),
    ("public", [True]),
    ("owner", ["u0", "u1"]),
    ("level", [0, 4]),
]


def _random_request(rng: random.Random) -> Request:
    type_name = rng.choice(["doc", "car"])
    attributes: Doc = {}
    for key, values in _REQUEST_ATTRIBUTES:
        if rng.random() < 0.4:
            attributes[key] = rng.choice(values)
    context: Doc = {"hour": rng.randint(0, 23)} if rng.random() < 0.6 else {}
    time = (NOW[0] + rng.choice([0, 1800, 7200]), "") if rng.random() < 0.3 else None
    return Request(
        rng.choice(["u0", "u1", "u2", "u3"]),
        rng.choice(_TYPES[type_name]),
        type_name,
        rng.choice([None, "x1"]),
        attributes,
        context,
        time,
    )


def test_every_fix_returned_for_random_requests_really_allows_them() -> None:
    rng = random.Random(20261122)
    policies = found = 0
    kinds: set[str] = set()
    while policies < 100:
        try:
            policy = parse_policy(_random_policy(rng), now=NOW)
        except PolicyInvalid:
            continue  # a random constraint the random assignments break
        policies += 1
        engine = Engine(policy)
        for _ in range(15):
            request = _random_request(rng)
            allowed = engine.decide(request, NOW).allowed
            fixes = fixes_for(engine, request, NOW)
            assert engine.decide(request, NOW).allowed is allowed  # the engine is as it was
            if allowed:
                assert fixes == []
                assert grants_relied_on(engine, request, NOW)
                continue
            keys = [(f.cost, len(f.widens), f.label) for f in fixes]
            assert keys == sorted(keys)
            for fix in fixes:
                assert allows_after(engine, request, fix), (fix, request.to_dict())
                assert fix.edits or fix.request_change
                kinds.add(fix.kind)
            found += len(fixes)
    assert found > 500
    assert {
        "assign",
        "activate",
        "attribute",
        "user_attribute",
        "request",
        "resume",
        "deny",
    } <= kinds
