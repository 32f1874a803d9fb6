"""sync.policy.impact: the exact access delta of edits, against brute force; refusals and
separation-of-duty breaks reported, not raised."""

from __future__ import annotations

import contextlib
import copy
import random
from typing import Any

import pytest

from sync.policy.document import PolicyInvalid, export_policy, parse_policy
from sync.policy.edits import (
    ActivateRole,
    AddInheritance,
    AddRule,
    AssignRole,
    CreateRole,
    CreateUser,
    DeleteRole,
    DeleteUser,
    Edit,
    EditRefused,
    MakeEligible,
    RefusalCode,
    RemoveInheritance,
    RemoveRule,
    ResumeUser,
    SetUserAttribute,
    SuspendUser,
    UnassignRole,
    apply_edit,
)
from sync.policy.engine import Engine
from sync.policy.impact import (
    ChangeGroup,
    Grants,
    Impact,
    PermissionChange,
    SuspensionChange,
    access_delta,
    broken_constraints,
    policy_delta,
    replay,
)
from sync.policy.instant import parse_instant
from sync.policy.model import Effect, Policy, Rule

NOW = parse_instant("2026-11-22T09:30:00Z")
DRIVE_WHEN = {"resource.region": "$user.region"}

FLEET: dict[str, Any] = {
    "format": "fleetgate.policy/1",
    "tenant": "acme",
    "resource_types": {"vehicle": ["read", "drive", "refuel"], "report": ["read", "export"]},
    "roles": [
        {"id": "r-viewer", "name": "viewer", "grants": [{"resource": "*", "actions": ["read"]}]},
        {
            "id": "r-driver",
            "name": "driver",
            "inherits": ["viewer"],
            "grants": [{"resource": "vehicle", "actions": ["drive"], "when": DRIVE_WHEN}],
        },
        {"id": "r-senior", "name": "senior-driver", "inherits": ["driver"]},
        {
            "id": "r-reader",
            "name": "reader",
            "grants": [{"resource": "vehicle", "actions": ["read"]}],
        },
        {"id": "r-creator", "name": "payment-creator"},
        {"id": "r-approver", "name": "payment-approver"},
    ],
    "users": [
        {"id": "vic", "attributes": {"region": "north"}},
        {"id": "ann", "roles": [{"role": "driver"}]},
        {"id": "bo", "roles": [{"role": "senior-driver"}]},
        {"id": "cy", "roles": [{"role": "senior-driver"}, {"role": "reader"}]},
        {"id": "dee", "roles": [{"role": "payment-creator"}]},
        {"id": "eve", "roles": [{"role": "payment-creator"}]},
    ],
    "constraints": [{"name": "payments-sod", "exclusive": ["payment-creator", "payment-approver"]}],
}


@pytest.fixture
def fleet() -> Policy:
    return parse_policy(copy.deepcopy(FLEET), now=NOW)


def _changes(changes: tuple[PermissionChange, ...]) -> set[tuple[str, str, str, str]]:
    return {(c.user_id, c.resource_type, c.action, c.effect.value) for c in changes}


def test_assigning_a_role_gains_its_permissions_and_those_it_inherits(fleet: Policy) -> None:
    impact = access_delta(fleet, [AssignRole("vic", "r-driver")], NOW)
    assert _changes(impact.gained) == {
        ("vic", "vehicle", "drive", "grant"),
        ("vic", "vehicle", "read", "grant"),
        ("vic", "report", "read", "grant"),
    }
    assert impact.lost == () and impact.users_affected == 1
    paths = {(c.resource_type, c.action): c.path_after for c in impact.gained}
    assert paths["vehicle", "drive"] == ("vic", "driver")
    assert paths["report", "read"] == ("vic", "driver", "viewer")
    assert all(c.path_before is None and c.comes for c in impact.gained)


def test_removing_a_parents_grant_loses_it_for_every_holder_through_inheritance(
    fleet: Policy,
) -> None:
    grant = fleet.roles["r-viewer"].grants[0]
    impact = access_delta(fleet, [RemoveRule("role:r-viewer", Effect.GRANT, grant)], NOW)
    # cy still reads vehicles as a reader: only the report read goes.
    assert _changes(impact.lost) == {
        ("ann", "vehicle", "read", "grant"),
        ("ann", "report", "read", "grant"),
        ("bo", "vehicle", "read", "grant"),
        ("bo", "report", "read", "grant"),
        ("cy", "report", "read", "grant"),
    }
    assert impact.gained == () and impact.users_affected == 3
    bo = next(c for c in impact.lost if c.user_id == "bo")
    assert bo.path_before == ("bo", "senior-driver", "driver", "viewer")
    assert bo.path_after is None


def test_a_permission_still_held_through_another_role_is_not_a_loss(fleet: Policy) -> None:
    impact = access_delta(fleet, [UnassignRole("cy", "r-reader")], NOW)
    assert impact.lost == () and impact.gained == ()
    assert not impact.changes_access
    assert impact.summary_lines() == ["No one's access changes."]


def test_a_permission_reached_by_another_path_is_no_change(fleet: Policy) -> None:
    # bo held driver through senior-driver; holding it directly too changes nothing.
    impact = access_delta(fleet, [AssignRole("bo", "r-driver")], NOW)
    assert not impact.changes_access and impact.users_examined >= 1


def test_a_deny_added_is_lost_access_for_every_holder(fleet: Policy) -> None:
    deny = AddRule("role:r-driver", Effect.DENY, Rule.build("vehicle", ("refuel",)))
    impact = access_delta(fleet, [deny], NOW)
    assert _changes(impact.lost) == {
        (user, "vehicle", "refuel", "deny") for user in ("ann", "bo", "cy")
    }
    assert impact.gained == ()
    (group,) = impact.groups()
    assert group == ChangeGroup(False, "vehicle", "refuel", Effect.DENY, None, ("ann", "bo", "cy"))
    assert group.describe() == "ann, bo and cy are now denied vehicle refuel"
    # ...and taking it away again is gained access.
    added = replay(fleet, [deny], NOW).policy
    undone = access_delta(added, [RemoveRule("role:r-driver", Effect.DENY, deny.rule)], NOW)
    assert _changes(undone.gained) == _changes(impact.lost)
    assert undone.groups()[0].describe() == "ann, bo and cy are no longer denied vehicle refuel"


def test_a_conditional_grant_keeps_its_condition_in_words(fleet: Policy) -> None:
    impact = access_delta(fleet, [AssignRole("vic", "r-driver")], NOW)
    drive = next(c for c in impact.gained if c.action == "drive")
    assert drive.condition == "resource.region = $user.region"
    lines = impact.summary_lines()
    assert "vic gains vehicle drive (when resource.region = $user.region)." in lines
    assert lines[0] == "Access changes for 1 user."


def test_many_users_are_counted_not_named(fleet: Policy) -> None:
    group = ChangeGroup(True, "vehicle", "drive", Effect.GRANT, "x = 1", ("a", "b", "c", "d"))
    assert group.describe() == "4 users gain vehicle drive (when x = 1)"
    assert group.what() == "gain vehicle drive (when x = 1)"


def test_suspending_loses_everything_as_one_change_and_resuming_gives_it_back(
    fleet: Policy,
) -> None:
    impact = access_delta(fleet, [SuspendUser("cy")], NOW)
    # vehicle drive (when ...), vehicle read (from two roles: one permission), report read
    assert impact.suspended == (SuspensionChange("cy", True, 3),)
    assert impact.lost == () and impact.gained == () and impact.users_affected == 1
    assert "cy is suspended: loses every permission (3)." in impact.summary_lines()
    suspended = replay(fleet, [SuspendUser("cy")], NOW).policy
    back = access_delta(suspended, [ResumeUser("cy")], NOW)
    assert back.resumed == (SuspensionChange("cy", False, 3),)
    # A suspended user given a role gains nothing while suspended.
    assert not access_delta(suspended, [AssignRole("cy", "r-creator")], NOW).changes_access


def test_removing_a_parent_and_deleting_a_role_reach_holders_through_inheritance(
    fleet: Policy,
) -> None:
    parent = access_delta(fleet, [RemoveInheritance("r-driver", "r-viewer")], NOW)
    assert {c.user_id for c in parent.lost} == {"ann", "bo", "cy"}
    deleted = access_delta(fleet, [DeleteRole("r-driver")], NOW)
    assert {(c.user_id, c.action) for c in deleted.lost if c.resource_type == "vehicle"} == {
        ("ann", "drive"), ("ann", "read"), ("bo", "drive"), ("bo", "read"), ("cy", "drive"),
    }  # fmt: skip


def test_a_refused_edit_is_reported_and_the_edits_after_it_still_apply(fleet: Policy) -> None:
    impact = access_delta(
        fleet, [AssignRole("nobody", "r-driver"), AssignRole("vic", "r-reader")], NOW
    )
    (refusal,) = impact.refused
    assert refusal.index == 0 and refusal.code is RefusalCode.NOT_FOUND
    assert "nobody" in refusal.reason
    assert _changes(impact.gained) == {("vic", "vehicle", "read", "grant")}
    lines = impact.summary_lines(lambda i: f"Edit {i + 10}")
    assert lines[-1] == f"Edit 10 does not apply: {refusal.reason}."


def test_a_constraint_break_names_every_user_and_the_constraint(fleet: Policy) -> None:
    # Making the creator role inherit the approver would put dee and eve in both.
    impact = access_delta(fleet, [AddInheritance("r-creator", "r-approver")], NOW)
    (refusal,) = impact.refused
    assert refusal.code is RefusalCode.CONSTRAINT
    assert [(b.index, b.constraint, b.user_id) for b in impact.constraints] == [
        (0, "payments-sod", "dee"),
        (0, "payments-sod", "eve"),
    ]
    assert impact.summary_lines()[-1] == (
        "Edit [0] would break constraint payments-sod: eve would hold both "
        "payment-creator and payment-approver."
    )
    assert not impact.changes_access


def test_broken_constraints_leaves_the_policy_as_it_was(fleet: Policy, state) -> None:  # type: ignore[no-untyped-def]
    before = state(fleet)
    found = broken_constraints(fleet, AssignRole("dee", "r-approver"), NOW)
    assert [(v.constraint, v.user) for v in found] == [("payments-sod", "dee")]
    assert broken_constraints(fleet, AssignRole("vic", "r-driver"), NOW) == []
    assert broken_constraints(fleet, AssignRole("nobody", "r-driver"), NOW) == []
    assert state(fleet) == before


def test_the_policy_asked_about_is_not_changed(fleet: Policy, state) -> None:  # type: ignore[no-untyped-def]
    before = state(fleet)
    access_delta(fleet, [DeleteRole("r-driver"), SuspendUser("vic")], NOW)
    assert state(fleet) == before


def test_documents_are_read_in_turn_and_each_edit_at_its_own_time(fleet: Policy) -> None:
    documents: list[dict[str, Any]] = [
        {"op": "create_role", "role_id": "r-new", "name": "fuel", "inherits": []},
        {"op": "add_rule", "owner": "role:fuel", "effect": "grant",
         "rule": {"resource": "vehicle", "actions": ["refuel"]}},
        {"op": "make_eligible", "user_id": "vic", "role_id": "fuel", "max_hours": 2},
        {"op": "activate_role", "user_id": "vic", "role_id": "fuel", "hours": 2,
         "justification": "night run"},
    ]  # fmt: skip
    early = parse_instant("2026-11-22T08:00:00Z")  # the activation ends at 10:00
    impact = access_delta(fleet, documents, NOW, times=[early] * 4)
    assert _changes(impact.gained) == {("vic", "vehicle", "refuel", "grant")}
    late = parse_instant("2026-11-22T06:00:00Z")  # ...ends at 08:00, before NOW
    assert not access_delta(fleet, documents, NOW, times=[late] * 4).changes_access
    with pytest.raises(ValueError, match="4 edits but 1 times"):
        access_delta(fleet, documents, NOW, times=[early])


def test_policy_delta_compares_two_policies_as_an_import_would(fleet: Policy) -> None:
    document = copy.deepcopy(FLEET)
    document["users"][0]["roles"] = [{"role": "reader"}]
    imported = parse_policy(document, now=NOW)
    impact = policy_delta(fleet, imported, NOW)
    assert _changes(impact.gained) == {("vic", "vehicle", "read", "grant")}
    assert impact.users_examined == len(fleet.users)


# --- against brute force -----------------------------------------------------------------

TYPES = {"doc": ["read", "write"], "car": ["read", "drive"]}
WHENS: list[dict[str, Any] | None] = [None, None, {"user.region": "north"}, {"context.hour": 3}]
TIMES = [None, None, "2026-11-22T00:00:00Z", "2026-12-31T00:00:00Z"]


def _random_rule(rng: random.Random) -> dict[str, Any]:
    resource = rng.choice(["doc", "car", "*"])
    listed = (
        sorted({a for actions in TYPES.values() for a in actions})
        if resource == "*"
        else TYPES[resource]
    )
    actions = rng.choice([["*"], [rng.choice(listed)], listed])
    rule: dict[str, Any] = {"resource": resource, "actions": actions}
    when = rng.choice(WHENS)
    if when is not None:
        rule["when"] = when
    return rule


def _random_policy(rng: random.Random) -> dict[str, Any]:
    count = rng.randint(2, 5)
    roles = [
        {
            "id": f"r{i}",
            "name": f"role{i}",
            "inherits": [f"role{j}" for j in range(i) if rng.random() < 0.35],
            "grants": [_random_rule(rng) for _ in range(rng.randint(0, 2))],
            "denies": [
                _random_rule(rng) for _ in range(rng.randint(0, 1) if rng.random() < 0.4 else 0)
            ],
        }
        for i in range(count)
    ]
    users = []
    for u in range(rng.randint(2, 6)):
        held: list[dict[str, Any]] = []
        for i in rng.sample(range(count), rng.randint(0, min(3, count))):
            entry: dict[str, Any] = {"role": f"role{i}"}
            expires = rng.choice(TIMES)
            if expires is not None:
                entry["expires"] = expires
            if rng.random() < 0.15:
                entry["eligible"] = {"max_hours": 4}
            held.append(entry)
        user: dict[str, Any] = {"id": f"u{u}", "roles": held}
        if rng.random() < 0.2:
            user["grants"] = [_random_rule(rng)]
        if rng.random() < 0.15:
            user["denies"] = [_random_rule(rng)]
        if rng.random() < 0.15:
            user["suspended"] = True
        users.append(user)
    document = {"format": "fleetgate.policy/1", "tenant": "t", "resource_types": TYPES,
                "roles": roles, "users": users}  # fmt: skip
    if rng.random() < 0.6:
        document["constraints"] = [{"name": "sod", "exclusive": ["role0", "role1"]}]
        try:
            parse_policy(document, now=NOW)
        except PolicyInvalid:
            del document["constraints"]
    return document


def _random_edit(rng: random.Random, policy: Policy) -> Edit:
    roles = list(policy.roles) or ["r0"]
    users = [*policy.users, "new"]
    role, user, other = rng.choice(roles), rng.choice(users), rng.choice(roles)
    rule = _random_rule(rng)
    built = Rule.build(rule["resource"], tuple(rule["actions"]), rule.get("when"))
    existing = [r for holder in policy.roles.values() for r in (*holder.grants, *holder.denies)]
    choices: list[Edit] = [
        AssignRole(user, role, rng.choice(TIMES)),
        UnassignRole(user, role),
        AddRule(f"role:{role}", rng.choice(list(Effect)), built),
        AddRule(f"user:{user}", rng.choice(list(Effect)), built),
        AddInheritance(role, other),
        RemoveInheritance(role, other),
        DeleteRole(role),
        CreateRole(f"x{rng.randint(0, 99)}", f"made{rng.randint(0, 99)}", inherits=(other,)),
        SuspendUser(user),
        ResumeUser(user),
        DeleteUser(user),
        CreateUser("new"),
        MakeEligible(user, role, 4),
        ActivateRole(user, role, 2, "because"),
        SetUserAttribute(user, "region", rng.choice(["north", None])),
    ]
    if existing:
        effect = rng.choice(list(Effect))
        choices.append(RemoveRule(f"role:{role}", effect, rng.choice(existing)))
    return rng.choice(choices)


def _brute(engine: Engine, user_id: str) -> dict[Grants, tuple[str, ...]]:
    if user_id not in engine.policy.users:
        return {}
    held: dict[Grants, tuple[str, ...]] = {}
    for p in engine.effective_permissions(user_id, NOW):
        held.setdefault((p.resource_type, p.action, p.effect, p.condition), p.path)
    return held


def _expected(before: Engine, after: Engine) -> Impact:
    gained: list[PermissionChange] = []
    lost: list[PermissionChange] = []
    suspended: list[SuspensionChange] = []
    resumed: list[SuspensionChange] = []
    affected = 0
    users = dict.fromkeys([*before.policy.users, *after.policy.users])
    for user_id in users:
        old, new = _brute(before, user_id), _brute(after, user_id)
        was = user_id in before.policy.users and before.policy.users[user_id].suspended
        now = user_id in after.policy.users and after.policy.users[user_id].suspended
        if was != now:
            affected += 1
            if now:
                suspended.append(SuspensionChange(user_id, True, len(old)))
            else:
                resumed.append(SuspensionChange(user_id, False, len(new)))
            continue
        if old.keys() != new.keys():
            affected += 1
        for key in new.keys() - old.keys():
            type_name, action, effect, condition = key
            change = PermissionChange(
                user_id, type_name, action, effect, condition, path_after=new[key]
            )
            (gained if key[2] is Effect.GRANT else lost).append(change)
        for key in old.keys() - new.keys():
            type_name, action, effect, condition = key
            change = PermissionChange(
                user_id, type_name, action, effect, condition, path_before=old[key]
            )
            (lost if key[2] is Effect.GRANT else gained).append(change)
    return Impact(tuple(gained), tuple(lost), tuple(suspended), tuple(resumed),
                  users_affected=affected)  # fmt: skip


def test_the_delta_is_what_brute_force_finds_on_many_random_policies() -> None:
    rng = random.Random(20261122)
    checked = changed = sod = 0
    for _ in range(400):
        document = _random_policy(rng)
        policy = parse_policy(document, now=NOW)
        edits: list[Edit] = []
        scratch = policy.copy()
        for _ in range(rng.randint(1, 4)):
            edit = _random_edit(rng, scratch)
            edits.append(edit)
            with contextlib.suppress(EditRefused):
                apply_edit(scratch, edit, NOW)
        impact = access_delta(policy, edits, NOW)
        # Brute force: both policies parsed afresh from their documents, every user's
        # effective permissions compared.
        before = Engine(parse_policy(export_policy(policy), now=NOW))
        fresh = parse_policy(export_policy(policy), now=NOW)
        refused = []
        for index, edit in enumerate(edits):
            try:
                apply_edit(fresh, edit, NOW)
            except EditRefused:
                refused.append(index)
        after = Engine(parse_policy(export_policy(fresh), now=NOW))
        expected = _expected(before, after)
        assert set(impact.gained) == set(expected.gained), (document, edits)
        assert set(impact.lost) == set(expected.lost), (document, edits)
        assert set(impact.suspended) == set(expected.suspended), (document, edits)
        assert set(impact.resumed) == set(expected.resumed), (document, edits)
        assert impact.users_affected == expected.users_affected, (document, edits)
        assert [r.index for r in impact.refused] == refused
        for refusal in impact.refused:
            breaks = [b for b in impact.constraints if b.index == refusal.index]
            assert bool(breaks) == (refusal.code is RefusalCode.CONSTRAINT)
            sod += bool(breaks)
        checked += 1
        changed += impact.changes_access
    # The cases are not mostly empty, and some break the constraint.
    assert checked == 400 and changed > 150 and sod > 5, (changed, sod)
