"""Deciding a pushed batch (sync/pushes.py): one outcome per mutation, exactly once."""

from __future__ import annotations

from typing import Any

import pytest

from sync.policy.document import export_policy, parse_policy
from sync.policy.engine import Engine
from sync.policy.instant import format_instant, parse_instant
from sync.protocol.messages import Mutation, Outcome, Result
from sync.replication.pushes import (
    PushContext,
    execute_push,
    outcome_document,
    outcome_from_document,
)

NOW = parse_instant("2026-11-22T09:30:00Z")

POLICY: dict[str, Any] = {
    "format": "fleetgate.policy/1",
    "tenant": "t",
    "resource_types": {
        "role": ["read", "create", "update", "delete", "assign"],
        "user": ["read", "create", "update", "delete"],
    },
    "roles": [
        {"id": "r-admin", "name": "admin",
         "grants": [{"resource": "role", "actions": ["*"]},
                    {"resource": "user", "actions": ["*"]}]},
        {"id": "r-a", "name": "a"},
        {"id": "r-b", "name": "b"},
    ],
    "users": [
        {"id": "root", "roles": [{"role": "admin"}]},
        {"id": "uma"},
    ],
    "constraints": [{"name": "a-or-b", "exclusive": ["a", "b"]}],
}  # fmt: skip


@pytest.fixture
def engine() -> Engine:
    return Engine(parse_policy(POLICY, now=NOW), version=10)


def context(**changes: Any) -> PushContext:
    values: dict[str, Any] = {
        "author": "root",
        "client": "c1",
        "last_seq": 0,
        "stored": {},
        "horizon": 0,
        "last_touch": {},
        "now": NOW,
        "at": format_instant(NOW),
    }
    return PushContext(**(values | changes))


def m(seq: int, base: int = 10, client: str = "c1", **edit: Any) -> Mutation:
    return Mutation(client, seq, base, edit)


def outcomes(results: list[Result]) -> list[tuple[int, str, int | None, str | None]]:
    return [(r.seq, r.outcome.value, r.version, r.code) for r in results]


def test_applied_edits_get_consecutive_versions_and_commits(engine: Engine) -> None:
    decision = execute_push(
        engine, context(),
        [m(1, op="create_user", user_id="v"), m(2, op="assign_role", user_id="v", role_id="a")],
    )  # fmt: skip
    assert outcomes(decision.results) == [(1, "applied", 11, None), (2, "applied", 12, None)]
    assert [c.version for c in decision.commits] == [11, 12]
    assert engine.version == 12
    assert [e.key for e in decision.commits[1].after] == ["user:v"]
    assert decision.new_outcomes == decision.results


def test_a_repeated_seq_returns_the_stored_outcome_and_applies_nothing(engine: Engine) -> None:
    stored = Result("c1", 1, Outcome.APPLIED, 11)
    decision = execute_push(
        engine, context(last_seq=1, stored={1: stored}), [m(1, op="create_user", user_id="v")]
    )
    assert decision.results == [stored]
    assert decision.commits == [] and decision.new_outcomes == []
    assert "v" not in engine.policy.users


def test_a_seq_used_before_without_a_stored_outcome_is_stale(engine: Engine) -> None:
    decision = execute_push(engine, context(last_seq=5), [m(3, op="create_user", user_id="v")])
    assert outcomes(decision.results) == [(3, "rejected", None, "stale")]


def test_a_seq_repeated_within_one_batch_gets_the_first_outcome(engine: Engine) -> None:
    decision = execute_push(
        engine,
        context(),
        [m(1, op="create_user", user_id="v"), m(1, op="delete_user", user_id="v")],
    )
    assert decision.results[0] == decision.results[1]
    assert "v" in engine.policy.users
    assert len(decision.new_outcomes) == 1


def test_another_clients_mutation_is_rejected_and_not_recorded(engine: Engine) -> None:
    decision = execute_push(engine, context(), [m(1, client="c2", op="create_user", user_id="v")])
    assert outcomes(decision.results) == [(1, "rejected", None, "wrong_client")]
    assert decision.new_outcomes == []


def test_refusals_and_unknown_edits_are_rejected_with_their_codes(engine: Engine) -> None:
    decision = execute_push(
        engine, context(),
        [
            m(1, op="no_such_edit"),
            m(2, op="assign_role", user_id="uma", role_id="a"),
            m(3, op="assign_role", user_id="uma", role_id="b"),  # breaks a-or-b
            m(4, op="create_user", user_id="root"),
            m(5, base=11, op="create_user", user_id="w"),  # 11: the version seq 2 made
            m(6, base=99, op="create_user", user_id="x"),
        ],
    )  # fmt: skip
    assert outcomes(decision.results) == [
        (1, "rejected", None, "invalid"),
        (2, "applied", 11, None),
        (3, "rejected", None, "constraint"),
        (4, "rejected", None, "already_exists"),
        (5, "applied", 12, None),
        (6, "rejected", None, "invalid"),
    ]
    assert "a-or-b" in (decision.results[2].reason or "")


def test_an_author_without_the_permission_is_rejected(engine: Engine) -> None:
    decision = execute_push(
        engine, context(author="uma"), [m(1, op="assign_role", user_id="uma", role_id="admin")]
    )
    (result,) = decision.results
    assert (result.outcome, result.code) == (Outcome.REJECTED, "forbidden")
    assert result.reason is not None and result.reason.startswith("uma may not assign_role")
    assert engine.policy.users["uma"].roles == ()


def test_a_permission_granted_earlier_in_the_batch_counts(engine: Engine) -> None:
    """Decided against the policy as it is when the mutation is reached, in order."""
    decision = execute_push(
        engine, context(),
        [m(1, op="assign_role", user_id="uma", role_id="admin")],
    )  # fmt: skip
    assert decision.results[0].outcome is Outcome.APPLIED
    after = execute_push(
        engine,
        context(author="uma", client="c9"),
        [m(1, client="c9", op="create_user", user_id="q")],
    )
    assert after.results[0].outcome is Outcome.APPLIED


def test_an_edit_that_changes_nothing_is_applied_without_a_new_version(engine: Engine) -> None:
    decision = execute_push(
        engine, context(), [m(1, op="unassign_role", user_id="uma", role_id="a")]
    )
    assert outcomes(decision.results) == [(1, "applied", 10, None)]
    assert decision.commits == []


def test_an_entity_changed_by_another_client_after_the_base_is_a_conflict(
    engine: Engine,
) -> None:
    touches = {"user:uma": (10, "other")}
    decision = execute_push(
        engine, context(last_touch=touches),
        [m(1, base=9, op="set_user_attribute", user_id="uma", key="k", value=1),
         m(2, base=9, op="set_user_attribute", user_id="root", key="k", value=1),
         m(3, base=10, op="set_user_attribute", user_id="uma", key="k", value=2)],
    )  # fmt: skip
    assert outcomes(decision.results) == [
        (1, "conflict", 10, "stale_base"), (2, "applied", 11, None), (3, "applied", 12, None),
    ]  # fmt: skip
    assert engine.policy.users["uma"].attributes == {"k": 2}


def test_a_clients_own_earlier_change_is_not_a_conflict(engine: Engine) -> None:
    decision = execute_push(
        engine, context(last_touch={"user:uma": (10, "c1")}),
        [m(1, base=9, op="set_user_attribute", user_id="uma", key="k", value=1),
         m(2, base=9, op="set_user_attribute", user_id="uma", key="k", value=2)],
    )  # fmt: skip
    assert [r.outcome for r in decision.results] == [Outcome.APPLIED, Outcome.APPLIED]


def test_an_edit_made_before_an_import_conflicts_with_it(engine: Engine) -> None:
    decision = execute_push(
        engine, context(horizon=10), [m(1, base=9, op="create_user", user_id="v")]
    )
    assert outcomes(decision.results) == [(1, "conflict", 10, "stale_base")]


def test_revert_takes_the_whole_batch_back(engine: Engine) -> None:
    before = export_policy(engine.policy)
    decision = execute_push(
        engine, context(),
        [m(1, op="create_user", user_id="v"), m(2, op="assign_role", user_id="uma", role_id="a"),
         m(3, op="delete_role", role_id="b")],
    )  # fmt: skip
    assert decision.undo is not None
    engine.revert(decision.undo, decision.touched, decision.start_version)
    assert export_policy(engine.policy) == before
    assert engine.version == 10
    fresh = Engine(parse_policy(POLICY, now=NOW))
    for user in ("root", "uma"):
        assert engine.effective_permissions(user, NOW) == fresh.effective_permissions(user, NOW)


def test_stored_outcomes_round_trip() -> None:
    for result in (
        Result("c", 1, Outcome.APPLIED, 3),
        Result("c", 2, Outcome.REJECTED, None, "forbidden", "no"),
        Result("c", 3, Outcome.CONFLICT, 7, "stale_base", "changed"),
    ):
        assert outcome_from_document("c", result.seq, outcome_document(result)) == result
