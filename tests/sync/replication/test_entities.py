"""A policy as entities, and what an edit changed, read from its Undo."""

from __future__ import annotations

import copy
import random
from typing import Any

from sync.policy.document import export_policy, parse_policy
from sync.policy.edits import (
    AddInheritance,
    AssignRole,
    CreateUser,
    DeleteRole,
    RenameRole,
    SetUserAttribute,
    Undo,
    apply_edit,
)
from sync.policy.instant import parse_instant
from sync.policy.model import Policy
from sync.replication.entities import (
    CONSTRAINTS,
    ROLE,
    SETTINGS,
    USER,
    changed_entities,
    policy_document,
    policy_entities,
)

NOW = parse_instant("2026-11-22T09:30:00Z")


def test_entities_give_back_the_same_policy(example_policy: Policy, state: Any) -> None:
    entities = list(policy_entities(example_policy))
    again = parse_policy(policy_document(example_policy.tenant, entities), now=NOW)
    assert state(again) == state(example_policy)
    assert export_policy(again) == export_policy(example_policy)


def test_entities_name_roles_by_id_so_a_rename_changes_one_entity(
    example_policy: Policy,
) -> None:
    dispatcher = example_policy.role_by_name("dispatcher")
    assert dispatcher is not None
    undo = Undo(example_policy)
    apply_edit(example_policy, RenameRole(dispatcher.id, "planner"), NOW, undo)
    before, after = changed_entities(undo)
    assert [(e.kind, e.id) for e in after] == [(ROLE, dispatcher.id)]
    assert (before[0].document["name"], after[0].document["name"]) == ("dispatcher", "planner")
    alice = next(e for e in policy_entities(example_policy) if e.kind == USER)
    assert {"role_id": dispatcher.id} in alice.document["roles"]


def test_a_delete_lists_every_entity_it_changed_with_none_after(example_policy: Policy) -> None:
    creator = example_policy.role_by_name("payment-creator")
    assert creator is not None
    undo = Undo(example_policy)
    apply_edit(example_policy, DeleteRole(creator.id), NOW, undo)
    before, after = changed_entities(undo)
    changed = {e.key: e.document for e in after}
    assert changed[f"role:{creator.id}"] is None
    assert changed[f"{SETTINGS}:{CONSTRAINTS}"] == []  # the constraint lost a role: gone
    assert {e.key for e in before} == set(changed)


def test_a_new_entity_has_none_before(example_policy: Policy) -> None:
    undo = Undo(example_policy)
    apply_edit(example_policy, CreateUser("zoe", attributes={"depot": "d9"}), NOW, undo)
    before, after = changed_entities(undo)
    assert [(e.key, e.document) for e in before] == [("user:zoe", None)]
    assert after[0].document == {"id": "zoe", "attributes": {"depot": "d9"}}


def test_changes_that_cancel_out_are_left_out(example_policy: Policy) -> None:
    undo = Undo(example_policy)
    apply_edit(example_policy, SetUserAttribute("alice", "x", 1), NOW, undo)
    apply_edit(example_policy, SetUserAttribute("alice", "x", None), NOW, undo)
    before, after = changed_entities(undo)
    # The user object was replaced twice; its document is the same as before.
    assert [e.document for e in before] == [e.document for e in after]


def test_random_edits_through_entities_match_the_policy(example_policy: Policy, state: Any) -> None:
    """Storing each edit's after-entities and reloading equals the edited policy."""
    rng = random.Random(7)
    stored = {e.key: e for e in policy_entities(example_policy)}
    roles = [r.id for r in example_policy.roles.values()]
    for step in range(60):
        edit = rng.choice(
            [
                CreateUser(f"u{step}", attributes={"n": step}),
                AssignRole(rng.choice(["alice", "bob", "carol", "dave"]), rng.choice(roles)),
                SetUserAttribute("alice", "k", step),
                AddInheritance(rng.choice(roles), rng.choice(roles)),
            ]
        )
        undo = Undo(example_policy)
        try:
            apply_edit(example_policy, edit, NOW, undo)
        except Exception:  # noqa: BLE001 - refusals (cycles, constraints) change nothing
            continue
        for entity in changed_entities(undo)[1]:
            if entity.document is None:
                stored.pop(entity.key, None)
            else:
                stored[entity.key] = entity
    # Dictionaries keep insertion order like the policy: new entities go last.
    order = {e.key: i for i, e in enumerate(policy_entities(example_policy))}
    entities = sorted(stored.values(), key=lambda e: order[e.key])
    again = parse_policy(policy_document(example_policy.tenant, entities), now=NOW)
    assert state(again) == state(example_policy)


ADDITIONS = {
    "format": "fleetgate.policy/1",
    "tenant": "t",
    "resource_types": {"doc": ["read", "write"]},
    "roles": [{"name": "reader", "id": "R"}, {"name": "editor", "id": "E", "inherits": ["reader"]}],
    "users": [
        {
            "id": "sam",
            "suspended": True,
            "roles": [
                {"role": "reader"},
                {"role": "editor", "eligible": {"max_hours": 8}, "expires": "2027-01-01T00:00:00Z"},
                {"role": "editor", "expires": "2026-11-22T17:30:00Z"},
            ],
        },
        {"id": "eli", "roles": [{"role": "editor", "eligible": {"max_hours": 2}}]},
    ],
}


def test_entities_carry_suspension_and_eligible_entries_by_role_id() -> None:
    policy = parse_policy(copy.deepcopy(ADDITIONS), now=NOW)
    users = {e.id: e.document for e in policy_entities(policy) if e.kind == USER}
    assert users["sam"] == {
        "id": "sam",
        "suspended": True,
        "roles": [
            {"role_id": "R"},
            {"role_id": "E", "eligible": {"max_hours": 8}, "expires": "2027-01-01T00:00:00Z"},
            {"role_id": "E", "expires": "2026-11-22T17:30:00Z"},
        ],
    }
    assert users["eli"] == {"id": "eli", "roles": [{"role_id": "E", "eligible": {"max_hours": 2}}]}


def test_policy_document_names_roles_in_eligible_entries_and_keeps_suspension(
    state: Any,
) -> None:
    policy = parse_policy(copy.deepcopy(ADDITIONS), now=NOW)
    document = policy_document("t", list(policy_entities(policy)))
    assert document["users"] == ADDITIONS["users"]
    again = parse_policy(document, now=NOW)
    assert state(again) == state(policy)
    assert export_policy(again) == export_policy(policy)
    by_name = policy_document("t", list(policy_entities(policy, by_name=True)), by_name=True)
    assert state(parse_policy(by_name, now=NOW)) == state(policy)


# --- trusted_policy: what a replica reads back is what it stored ---------------------------

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from sync.replication.entities import Entity, trusted_policy  # noqa: E402

DEMO = Path(__file__).resolve().parents[3] / "resources" / "demo" / "acme-logistics.json"


def _state(policy: Policy) -> Any:
    return (policy.tenant, policy.resource_types, policy.roles, policy.users, policy.constraints)


def test_trusted_policy_builds_the_policy_parse_policy_builds() -> None:
    now = parse_instant("2026-12-01T08:00:00Z")
    policy = parse_policy(json.loads(DEMO.read_text()), now=now)
    entities = list(policy_entities(policy))
    trusted = trusted_policy(policy.tenant, entities)
    assert _state(trusted) == _state(policy)
    assert export_policy(trusted) == export_policy(policy)
    # Expiry instants and compiled conditions are there, not only the documents.
    for user in trusted.users.values():
        for assignment in user.roles:
            assert (assignment.expires is None) == (assignment.expires_at is None)
    for role in trusted.roles.values():
        assert all(r.when is None or r.predicate is not None for r in role.grants + role.denies)


@pytest.mark.parametrize(
    "damage",
    [
        lambda e: Entity(e.kind, e.id, {**e.document, "inherits": ["r-nowhere"]}),
        lambda e: Entity(e.kind, e.id, {k: v for k, v in e.document.items() if k != "name"}),
        lambda e: Entity(e.kind, e.id, {**e.document, "grants": [{"resource": "x"}]}),
        lambda e: Entity(
            e.kind,
            e.id,
            {
                **e.document,
                "grants": [{"resource": "x", "actions": ["a"], "when": {"user.x": {"between": 3}}}],
            },
        ),
    ],
)
def test_trusted_policy_refuses_what_was_not_stored_so_the_caller_validates(damage: Any) -> None:
    policy = parse_policy(json.loads(DEMO.read_text()), now=parse_instant("2026-12-01T08:00:00Z"))
    entities = [damage(e) if e.kind == ROLE and i == 5 else e
                for i, e in enumerate(policy_entities(policy))]  # fmt: skip
    with pytest.raises((KeyError, TypeError, ValueError, AttributeError)):
        trusted_policy(policy.tenant, entities)


# --- StoredUsers: a batch's users, built from their stored documents when asked for -------

from sync.policy.engine import Engine  # noqa: E402
from sync.policy.model import User  # noqa: E402
from sync.policy.request import Request  # noqa: E402
from sync.replication.entities import StoredUsers  # noqa: E402


def _demo_policy() -> Policy:
    return parse_policy(json.loads(DEMO.read_text()), now=parse_instant("2026-12-01T08:00:00Z"))


def _stored(policy: Policy) -> dict[str, str]:
    return {e.id: json.dumps(e.document) for e in policy_entities(policy) if e.kind == USER}


def test_stored_users_build_each_user_as_trusted_policy_does() -> None:
    policy = _demo_policy()
    slow: list[str] = []
    users = StoredUsers(_stored(policy), policy.roles, lambda i, d: slow.append(i))
    for user_id, user in policy.users.items():
        assert users(user_id) == user
    assert users("nobody") is None
    assert slow == []


@pytest.mark.parametrize(
    ("damage", "given"),
    [
        (lambda d: "{not json", None),
        (lambda d: json.dumps({**json.loads(d), "roles": [{"role_id": "r-nowhere"}]}), "document"),
        (lambda d: json.dumps({**json.loads(d), "id": "someone-else"}), "document"),
        (lambda d: json.dumps({**json.loads(d), "roles": [{"role_id": 7}]}), "document"),
        (lambda d: json.dumps({**json.loads(d), "roles": "all"}), "document"),
        (lambda d: json.dumps([1, 2]), "document"),
        (lambda d: json.dumps({**json.loads(d), "grants": [{"resource": "x"}]}), "document"),
        (
            lambda d: json.dumps({**json.loads(d), "roles": [{"role_id": "r", "expires": 5}]}),
            "document",
        ),
    ],
)
def test_a_stored_user_that_does_not_build_goes_the_slow_way(
    damage: Any, given: str | None
) -> None:
    policy = _demo_policy()
    documents = _stored(policy)
    victim = next(iter(documents))
    documents[victim] = damage(documents[victim])
    asked: list[tuple[str, Any]] = []
    stand_in = User(victim)

    def validated(user_id: str, document: Any) -> User:
        asked.append((user_id, document))
        return stand_in

    users = StoredUsers(documents, policy.roles, validated)
    assert users(victim) is stand_in
    assert len(asked) == 1 and asked[0][0] == victim
    assert (asked[0][1] is None) == (given is None)


def test_an_engine_over_stored_users_refuses_edits() -> None:
    policy = _demo_policy()
    bare = Policy(policy.tenant, policy.resource_types, policy.roles, {}, policy.constraints)
    engine = Engine(bare, load_user=StoredUsers(_stored(policy), policy.roles, lambda i, d: None))
    user_id = next(iter(policy.users))
    type_name, actions = next(iter(policy.resource_types.items()))
    engine.decide(Request(user_id, actions[0], type_name), parse_instant("2026-12-01T08:00:00Z"))
    assert list(bare.users) == [user_id]
    with pytest.raises(RuntimeError, match="only decides"):
        engine.refresh(users=[user_id])
