"""Deciding a pushed batch (sync/replication/pushes.py): one outcome per mutation,
exactly once, merged per member, and never a half-applied or doubled edit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from sync.policy.document import export_policy, parse_policy
from sync.policy.edits import EDIT_TYPES
from sync.policy.engine import Engine
from sync.policy.instant import format_instant, parse_instant
from sync.protocol.errors import ErrorCode
from sync.protocol.messages import Conflict, Mutation, Outcome, Result
from sync.replication.digest import digest_of
from sync.replication.entities import policy_entities
from sync.replication.members import Member, Stamp
from sync.replication.pushes import (
    MAX_REASON_BYTES,
    PushContext,
    PushDecision,
    PushRefused,
    execute_push,
    outcome_document,
    outcome_from_document,
)

NOW = parse_instant("2026-11-22T09:30:00Z")

POLICY: dict[str, Any] = {
    "format": "fleetgate.policy/1",
    "tenant": "t",
    "resource_types": {
        "role": ["read", "create", "update", "delete", "assign", "escalate"],
        "user": ["read", "create", "update", "delete"],
        "doc": ["read", "write"],
    },
    "roles": [
        {"id": "r-admin", "name": "admin",
         "grants": [{"resource": "role", "actions": ["*"]},
                    {"resource": "user", "actions": ["*"]},
                    {"resource": "doc", "actions": ["*"]}]},
        {"id": "r-a", "name": "a", "grants": [{"resource": "doc", "actions": ["read"]}]},
        {"id": "r-b", "name": "b"},
    ],
    "users": [
        {"id": "root", "roles": [{"role": "admin"}]},
        {"id": "uma"},
    ],
    "constraints": [{"name": "a-or-b", "exclusive": ["a", "b"]}],
}  # fmt: skip

READ = {"resource": "doc", "actions": ["read"]}
WRITE = {"resource": "doc", "actions": ["write"]}


def compile_policy(document: dict[str, Any] = POLICY) -> Engine:
    return Engine(parse_policy(document, now=NOW), version=10)


@pytest.fixture
def engine() -> Engine:
    return compile_policy()


class Ledger:
    """What the server keeps between pushes, in memory: stored outcomes, each
    client's last seq, the stamps."""

    def __init__(self, engine: Engine, floor: int = 0) -> None:
        self.engine = engine
        self.floor = floor
        self.stamps: dict[Member, Stamp] = {}
        self.outcomes: dict[tuple[str, int], Result] = {}
        self.last: dict[str, int] = {}
        self.digest = digest_of(policy_entities(engine.policy))

    def push(
        self,
        client: str,
        *mutations: Mutation,
        author: str = "root",
        ops: frozenset[str] | None = None,
    ) -> PushDecision:
        context = PushContext(
            author=author,
            client=client,
            last_seq=self.last.get(client, 0),
            stored={s: r for (c, s), r in self.outcomes.items() if c == client},
            stamps=self.stamps,
            floor=self.floor,
            ops=ops if ops is not None else frozenset(EDIT_TYPES),
            digest=self.digest,
            now=NOW,
            at=format_instant(NOW),
        )
        decision = execute_push(self.engine, context, mutations)
        for result in decision.new_outcomes:
            self.outcomes[(client, result.seq)] = result
            self.last[client] = max(self.last.get(client, 0), result.seq)
        self.stamps.update(decision.stamps)
        self.digest = decision.digest
        return decision


def m(client: str, seq: int, base: int = 10, **edit: Any) -> Mutation:
    return Mutation(client, seq, base, edit)


def outcomes(results: list[Result]) -> list[tuple[int, str, int | None, str | None]]:
    return [(r.seq, r.outcome.value, r.version, r.code) for r in results]


def assert_engine_matches_a_fresh_compile(engine: Engine) -> None:
    fresh = Engine(parse_policy(export_policy(engine.policy), now=NOW), engine.version)
    for user in engine.policy.users:
        assert engine.effective_permissions(user, NOW) == fresh.effective_permissions(user, NOW)


# --- basics ---------------------------------------------------------------------------


def test_applied_edits_get_consecutive_versions_and_commits(engine: Engine) -> None:
    decision = Ledger(engine).push(
        "c1", m("c1", 1, op="create_user", user_id="v"),
        m("c1", 2, op="assign_role", user_id="v", role_id="a"),
    )  # fmt: skip
    assert outcomes(decision.results) == [(1, "applied", 11, None), (2, "applied", 12, None)]
    assert [c.version for c in decision.commits] == [11, 12]
    assert engine.version == 12
    assert [e.key for e in decision.commits[1].after] == ["user:v"]
    assert decision.new_outcomes == decision.results


def test_the_decisions_digest_is_the_digest_of_the_policy_it_leaves(engine: Engine) -> None:
    ledger = Ledger(engine)
    decision = ledger.push(
        "c1", m("c1", 1, op="create_user", user_id="v"),
        m("c1", 2, op="delete_role", role_id="b"),
    )  # fmt: skip
    assert decision.digest == digest_of(policy_entities(engine.policy))
    assert decision.commits[0].digest != decision.commits[1].digest


def test_a_repeated_seq_returns_the_stored_outcome_and_applies_nothing(engine: Engine) -> None:
    ledger = Ledger(engine)
    first = ledger.push("c1", m("c1", 1, op="create_user", user_id="v"))
    again = ledger.push("c1", m("c1", 1, op="create_user", user_id="v"))
    assert again.results == first.results
    assert again.commits == [] and again.new_outcomes == []


def test_a_seq_repeated_within_one_batch_gets_the_first_outcome(engine: Engine) -> None:
    decision = Ledger(engine).push(
        "c1", m("c1", 1, op="create_user", user_id="v"), m("c1", 1, op="delete_user", user_id="v")
    )
    assert decision.results[0] == decision.results[1]
    assert "v" in engine.policy.users
    assert len(decision.new_outcomes) == 1


def test_another_clients_mutation_is_rejected_and_not_recorded(engine: Engine) -> None:
    decision = Ledger(engine).push("c1", m("c2", 1, op="create_user", user_id="v"))
    assert outcomes(decision.results) == [(1, "rejected", None, "wrong_client")]
    assert decision.new_outcomes == []


def test_no_mutation_ever_gets_stale_a_gap_refuses_the_whole_push(engine: Engine) -> None:
    """Defect 4: seq 3 pushed before 1 and 2 used to leave 1 and 2 `stale` for ever."""
    ledger = Ledger(engine)
    with pytest.raises(PushRefused) as refused:
        ledger.push("c1", m("c1", 3, op="create_user", user_id="v"))
    assert refused.value.code is ErrorCode.SEQ_GAP
    assert refused.value.expected_seq == 1
    assert "v" not in engine.policy.users and engine.version == 10
    decision = ledger.push(
        "c1", m("c1", 1, op="create_user", user_id="v"), m("c1", 2, op="create_user", user_id="w"),
        m("c1", 3, op="create_user", user_id="x"),
    )  # fmt: skip
    assert [r.outcome for r in decision.results] == [Outcome.APPLIED] * 3


def test_lost_edits_after_a_failed_push_a_later_batch_cannot_skip_them(engine: Engine) -> None:
    """Defect 4: a batch sent behind a failed one must not move the last seq past it."""
    ledger = Ledger(engine)
    ledger.push("c1", m("c1", 1, op="create_user", user_id="v"))
    # seqs 2 and 3 were in a push whose transaction failed (nothing recorded); 4 and 5 follow
    with pytest.raises(PushRefused) as refused:
        ledger.push("c1", m("c1", 4, op="create_user", user_id="y"))
    assert refused.value.expected_seq == 2
    retried = ledger.push(
        "c1", m("c1", 2, op="create_user", user_id="w"), m("c1", 3, op="create_user", user_id="x"),
        m("c1", 4, op="create_user", user_id="y"),
    )  # fmt: skip
    assert [r.outcome for r in retried.results] == [Outcome.APPLIED] * 3


def test_repeats_may_come_before_the_new_seqs(engine: Engine) -> None:
    ledger = Ledger(engine)
    ledger.push("c1", m("c1", 1, op="create_user", user_id="v"))
    decision = ledger.push(
        "c1", m("c1", 1, op="create_user", user_id="v"), m("c1", 2, op="create_user", user_id="w")
    )
    assert outcomes(decision.results) == [(1, "applied", 11, None), (2, "applied", 12, None)]


def test_an_op_this_server_does_not_accept_refuses_the_push_so_nothing_is_lost(
    engine: Engine,
) -> None:
    ops = frozenset(EDIT_TYPES) - {"make_eligible"}
    with pytest.raises(PushRefused) as refused:
        Ledger(engine).push(
            "c1", m("c1", 1, op="create_user", user_id="v"),
            m("c1", 2, op="make_eligible", user_id="v", role_id="a", max_hours=4), ops=ops,
        )  # fmt: skip
    assert refused.value.code is ErrorCode.UNSUPPORTED_OP
    assert "make_eligible" in refused.value.message
    assert "v" not in engine.policy.users


def test_an_edit_that_changes_nothing_is_applied_without_a_new_version(engine: Engine) -> None:
    decision = Ledger(engine).push("c1", m("c1", 1, op="unassign_role", user_id="uma", role_id="a"))
    assert outcomes(decision.results) == [(1, "applied", 10, None)]
    assert decision.commits == []


def test_refusals_keep_their_codes(engine: Engine) -> None:
    decision = Ledger(engine).push(
        "c1",
        m("c1", 1, op="assign_role", user_id="uma", role_id="a"),
        m("c1", 2, op="assign_role", user_id="uma", role_id="b"),  # breaks a-or-b
        m("c1", 3, op="create_user", user_id="root"),
        m("c1", 4, base=99, op="create_user", user_id="x"),
        m("c1", 5, op="add_inheritance", role_id="admin", parent_id="admin"),
    )
    assert outcomes(decision.results) == [
        (1, "applied", 11, None),
        (2, "rejected", None, "constraint"),
        (3, "rejected", None, "already_exists"),
        (4, "rejected", None, "invalid"),
        (5, "rejected", None, "cycle"),
    ]
    assert "a-or-b" in (decision.results[1].reason or "")


# --- defects 1 to 3, 5, 15, 17: malformed edits --------------------------------------


POISON = [
    ({"op": "create_role", "role_id": "r-x", "name": 5}, "create_role.name"),
    (
        {"op": "describe_role", "role_id": "r-a", "description": {"x": 1}},
        "describe_role.description",
    ),
    ({"op": "create_user", "user_id": "x", "name": ["a"]}, "create_user.name"),
    ({"op": "create_role", "role_id": "", "name": "x"}, "create_role.role_id"),
    ({"op": "rename_role", "role_id": "r-a", "name": 7}, "rename_role.name"),
    ({"op": "assign_role", "user_id": "uma", "role_id": ["x"]}, "assign_role.role_id"),
    ({"op": "create_user", "user_id": "x", "attributes": "x"}, "create_user.attributes"),
    (
        {"op": "create_user", "user_id": "x", "attributes": {"k": float("nan")}},
        "create_user.attributes",
    ),
    ({"op": "create_user"}, "create_user.user_id: is missing"),
    ({"op": "add_rule", "owner": 5, "effect": "grant", "rule": READ}, "add_rule.owner"),
    ({"op": "add_rule", "owner": "role:r-a", "effect": True, "rule": READ}, "add_rule.effect"),
    (
        {
            "op": "add_rule",
            "owner": "role:r-a",
            "effect": "grant",
            "rule": {"resource": "doc", "actions": "read"},
        },
        "add_rule.rule.actions",
    ),
    (
        {
            "op": "add_rule",
            "owner": "role:r-a",
            "effect": "grant",
            "rule": {
                "resource": "doc",
                "actions": ["read"],
                "when": {"user.x": {"eq": 1, "ne": 2}},
            },
        },
        "add_rule.rule.when",
    ),
    ({"op": "assign_role", "user_id": "uma", "role_id": "a", "expires": 5}, "assign_role.expires"),
    (
        {"op": "assign_role", "user_id": "uma", "role_id": "a", "expires": "soon"},
        "assign_role.expires",
    ),
    ({"op": "set_user_attribute", "user_id": "uma", "key": ""}, "set_user_attribute.key"),
    (
        {"op": "make_eligible", "user_id": "uma", "role_id": "a", "max_hours": True},
        "make_eligible.max_hours",
    ),
    (
        {"op": "make_eligible", "user_id": "uma", "role_id": "a", "max_hours": 721},
        "make_eligible.max_hours",
    ),
    (
        {"op": "activate_role", "user_id": "uma", "role_id": "a", "hours": 2},
        "activate_role.justification",
    ),
    ({"op": "suspend_user", "user_id": 3}, "suspend_user.user_id"),
    ({"op": "delete_user", "user_id": "uma", "extra": 1}, "unknown field 'extra'"),
    ({"op": 5}, "unknown edit op 5"),
    ({"op": "x" * 300}, "unknown edit op"),
]


@pytest.mark.parametrize(("edit", "named"), POISON, ids=[str(i) for i in range(len(POISON))])
def test_poisoned_tenant_malformed_edits_are_rejected_invalid_naming_the_field(
    engine: Engine, edit: dict[str, Any], named: str
) -> None:
    """Defects 1 to 3: each was applied (or raised) and left the tenant unloadable."""
    before = export_policy(engine.policy)
    decision = Ledger(engine).push("c1", Mutation("c1", 1, 10, edit))
    (result,) = decision.results
    assert (result.outcome, result.code) == (Outcome.REJECTED, "invalid")
    assert named in (result.reason or "")
    assert "Error" not in (result.reason or "") and "unhashable" not in (result.reason or "")
    assert export_policy(engine.policy) == before and engine.version == 10
    parse_policy(export_policy(engine.policy), now=NOW)  # still loads


def test_exception_text_as_reasons_a_fault_is_internal_without_its_text(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 2: a fault while deciding must leave no trace and still give an outcome."""
    from sync.policy import edits

    real = edits.AssignRole.apply

    def half_then_fail(self: Any, policy: Any, undo: Any, now: Any) -> Any:
        real(self, policy, undo, now)
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(edits.AssignRole, "apply", half_then_fail)
    before = export_policy(engine.policy)
    decision = Ledger(engine).push(
        "c1", m("c1", 1, op="assign_role", user_id="uma", role_id="a"),
        m("c1", 2, op="create_user", user_id="v"),
    )  # fmt: skip
    assert outcomes(decision.results) == [
        (1, "rejected", None, "internal"),
        (2, "applied", 11, None),
    ]
    assert "secret" not in (decision.results[0].reason or "")
    assert decision.faults == [(1, "RuntimeError: secret internal detail")]
    monkeypatch.undo()
    assert engine.policy.users["uma"].roles == ()
    del engine.policy.users["v"]
    assert export_policy(engine.policy) == before


def test_half_applied_push_a_fault_while_authorizing_leaves_the_engine_as_it_was(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sync.replication import pushes

    def broken(*args: Any) -> Any:
        raise TypeError("unhashable type: 'list'")

    monkeypatch.setattr(pushes, "authorize", broken)
    decision = Ledger(engine).push("c1", m("c1", 1, op="create_user", user_id="v"))
    assert outcomes(decision.results) == [(1, "rejected", None, "internal")]
    assert "v" not in engine.policy.users and engine.version == 10


def test_a_reason_quotes_at_most_64_characters_of_a_hostile_id(engine: Engine) -> None:
    """Defect 15."""
    hostile = "é" * 250
    decision = Ledger(engine).push(
        "c1", m("c1", 1, op="assign_role", user_id="uma", role_id=hostile)
    )
    reason = decision.results[0].reason or ""
    assert decision.results[0].code == "not_found"
    assert "é" * 64 in reason and "é" * 65 not in reason
    assert len(reason.encode()) <= MAX_REASON_BYTES


def test_rule_equality_is_type_strict_true_is_not_one(engine: Engine) -> None:
    """Defect 17: removing the rule with `1` must not remove the one with `true`."""
    flag = {"resource": "doc", "actions": ["read"], "when": {"context.flag": True}}
    one = {"resource": "doc", "actions": ["read"], "when": {"context.flag": 1}}
    ledger = Ledger(engine)
    ledger.push(
        "c1", m("c1", 1, op="add_rule", owner="role:r-b", effect="grant", rule=flag),
        m("c1", 2, op="add_rule", owner="role:r-b", effect="grant", rule=one),
        m("c1", 3, op="remove_rule", owner="role:r-b", effect="grant", rule=one),
    )  # fmt: skip
    (left,) = engine.policy.roles["r-b"].grants
    assert left.when == {"context.flag": True}


# --- merge rules ------------------------------------------------------------------------


def test_two_admins_add_different_grants_to_one_role_both_apply_one_merged(
    engine: Engine,
) -> None:
    ledger = Ledger(engine)
    first = ledger.push(
        "c1", m("c1", 1, op="add_rule", owner="role:r-b", effect="grant", rule=READ)
    )
    second = ledger.push(
        "c2", m("c2", 1, op="add_rule", owner="role:r-b", effect="grant", rule=WRITE)
    )
    assert outcomes(first.results) == [(1, "applied", 11, None)]
    assert outcomes(second.results) == [(1, "merged", 12, None)]
    assert {g.actions for g in engine.policy.roles["r-b"].grants} == {("read",), ("write",)}


def test_the_same_change_made_twice_is_applied_or_merged_never_a_conflict(engine: Engine) -> None:
    ledger = Ledger(engine)
    ledger.push("c1", m("c1", 1, op="rename_role", role_id="r-b", name="bee"))
    again = ledger.push("c2", m("c2", 1, op="rename_role", role_id="r-b", name="bee"))
    assert outcomes(again.results) == [(1, "merged", 11, None)]
    assert again.commits == []


def test_a_stale_grant_never_resurrects_a_revoke(engine: Engine) -> None:
    ledger = Ledger(engine)
    ledger.push("c1", m("c1", 1, op="remove_rule", owner="role:r-a", effect="grant", rule=READ))
    stale = ledger.push(
        "c2", m("c2", 1, op="add_rule", owner="role:r-a", effect="grant", rule=READ)
    )
    (result,) = stale.results
    assert (result.outcome, result.code, result.version) == (Outcome.REJECTED, "superseded", 11)
    assert "narrowed by someone else at version 11" in (result.reason or "")
    assert engine.policy.roles["r-a"].grants == ()
    # made after the revoke, the same grant is applied
    fresh = ledger.push("c2", m("c2", 2, base=11, op="add_rule", owner="role:r-a",
                                effect="grant", rule=READ))  # fmt: skip
    assert fresh.results[0].outcome is Outcome.APPLIED


def test_a_stale_assignment_never_outlives_an_unassignment(engine: Engine) -> None:
    ledger = Ledger(engine)
    ledger.push("c1", m("c1", 1, op="assign_role", user_id="uma", role_id="a"))
    ledger.push("c1", m("c1", 2, base=11, op="unassign_role", user_id="uma", role_id="a"))
    stale = ledger.push("c2", m("c2", 1, base=11, op="assign_role", user_id="uma", role_id="a",
                                expires="2027-01-01T00:00:00Z"))  # fmt: skip
    assert stale.results[0].code == "superseded"
    assert engine.policy.users["uma"].roles == ()


def test_a_narrowing_change_always_applies(engine: Engine) -> None:
    ledger = Ledger(engine)
    ledger.push("c1", m("c1", 1, op="assign_role", user_id="uma", role_id="a"))
    narrow = ledger.push("c2", m("c2", 1, op="unassign_role", user_id="uma", role_id="a"))
    assert outcomes(narrow.results) == [(1, "merged", 12, None)]
    assert engine.policy.users["uma"].roles == ()


def test_an_expiry_moved_later_is_widening_and_earlier_narrowing(engine: Engine) -> None:
    ledger = Ledger(engine)
    ledger.push("c1", m("c1", 1, op="assign_role", user_id="uma", role_id="a",
                        expires="2027-01-01T00:00:00Z"))  # fmt: skip
    ledger.push("c1", m("c1", 2, base=11, op="assign_role", user_id="uma", role_id="a",
                        expires="2026-12-01T00:00:00Z"))  # earlier: narrowing at 12  # fmt: skip
    later = ledger.push("c2", m("c2", 1, base=11, op="assign_role", user_id="uma", role_id="a",
                                expires="2027-06-01T00:00:00Z"))  # fmt: skip
    earlier = ledger.push("c2", m("c2", 2, base=11, op="assign_role", user_id="uma", role_id="a",
                                  expires="2026-11-30T00:00:00Z"))  # fmt: skip
    assert later.results[0].code == "superseded"
    assert earlier.results[0].outcome is Outcome.MERGED
    assert engine.policy.users["uma"].roles[0].expires == "2026-11-30T00:00:00Z"


def test_role_reborn_an_assignment_made_before_a_delete_and_recreate_is_superseded(
    engine: Engine,
) -> None:
    """Defect 6: ids can be reused; the client meant the role that was deleted."""
    ledger = Ledger(engine)
    ledger.push(
        "c1", m("c1", 1, op="delete_role", role_id="r-b"),
        m("c1", 2, base=11, op="create_role", role_id="r-b", name="b"),
    )  # fmt: skip
    stale = ledger.push("c2", m("c2", 1, op="assign_role", user_id="uma", role_id="r-b"))
    assert stale.results[0].code == "superseded"
    assert "role 'r-b' was deleted or created by someone else" in (stale.results[0].reason or "")
    assert engine.policy.users["uma"].roles == ()


def test_deletes_win_an_edit_of_an_entity_deleted_after_its_base_is_superseded(
    engine: Engine,
) -> None:
    ledger = Ledger(engine)
    ledger.push("c1", m("c1", 1, op="delete_user", user_id="uma"))
    for seq, edit in enumerate(
        [
            {"op": "set_user_attribute", "user_id": "uma", "key": "k", "value": 1},
            {"op": "unassign_role", "user_id": "uma", "role_id": "a"},
            {"op": "create_user", "user_id": "uma"},
        ],
        1,
    ):
        result = ledger.push("c2", Mutation("c2", seq, 10, edit)).results[0]
        assert (result.outcome, result.code) == (Outcome.REJECTED, "superseded"), edit
    assert "uma" not in engine.policy.users


def test_a_scalar_changed_by_another_client_keeps_the_servers_value(engine: Engine) -> None:
    ledger = Ledger(engine)
    ledger.push("c1", m("c1", 1, op="rename_role", role_id="r-b", name="alpha"))
    late = ledger.push("c2", m("c2", 1, op="rename_role", role_id="r-b", name="beta"))
    (result,) = late.results
    assert (result.outcome, result.code, result.version) == (
        Outcome.CONFLICT, "concurrent_change", 11)  # fmt: skip
    assert result.conflict == Conflict("role r-b name", "alpha", "beta")
    assert engine.policy.roles["r-b"].name == "alpha"


def test_an_attribute_conflict_carries_both_values(engine: Engine) -> None:
    ledger = Ledger(engine)
    ledger.push("c1", m("c1", 1, op="set_user_attribute", user_id="uma", key="depot", value="n"))
    late = ledger.push("c2", m("c2", 1, op="set_user_attribute", user_id="uma", key="depot",
                               value="s"))  # fmt: skip
    assert late.results[0].conflict == Conflict("user uma attribute depot", "n", "s")
    other = ledger.push("c2", m("c2", 2, op="set_user_attribute", user_id="uma", key="region",
                                value="x"))  # fmt: skip
    assert other.results[0].outcome is Outcome.MERGED


def test_a_clients_own_earlier_change_is_not_someone_elses(engine: Engine) -> None:
    ledger = Ledger(engine)
    ledger.push("c1", m("c1", 1, op="remove_rule", owner="role:r-a", effect="grant", rule=READ))
    again = ledger.push(
        "c1", m("c1", 2, op="add_rule", owner="role:r-a", effect="grant", rule=READ)
    )
    assert again.results[0].outcome is Outcome.APPLIED


def test_one_mutation_one_outcome_nothing_of_a_superseded_edit_applies(engine: Engine) -> None:
    """create_role that inherits a role deleted meanwhile: the role is not created either."""
    ledger = Ledger(engine)
    ledger.push("c1", m("c1", 1, op="delete_role", role_id="r-b"),
                m("c1", 2, base=11, op="create_role", role_id="r-b", name="b"))  # fmt: skip
    late = ledger.push("c2", m("c2", 1, op="create_role", role_id="r-new", name="new",
                               inherits=["r-b"]))  # fmt: skip
    assert late.results[0].code == "superseded"
    assert "r-new" not in engine.policy.roles


def test_below_the_merge_floor_widening_is_superseded_and_narrowing_applies(
    engine: Engine,
) -> None:
    ledger = Ledger(engine, floor=10)
    widen = ledger.push("c1", m("c1", 1, base=5, op="add_rule", owner="role:r-b", effect="grant",
                                rule=READ))  # fmt: skip
    narrow = ledger.push("c1", m("c1", 2, base=5, op="remove_rule", owner="role:r-a",
                                 effect="grant", rule=READ))  # fmt: skip
    rename = ledger.push("c1", m("c1", 3, base=5, op="rename_role", role_id="r-b", name="x"))
    assert widen.results[0].code == "superseded"
    assert narrow.results[0].outcome is Outcome.MERGED
    assert rename.results[0].outcome is Outcome.CONFLICT


def test_stamps_record_the_last_change_and_the_last_narrowing(engine: Engine) -> None:
    ledger = Ledger(engine)
    ledger.push("c1", m("c1", 1, op="assign_role", user_id="uma", role_id="a"))
    ledger.push("c2", m("c2", 1, base=11, op="unassign_role", user_id="uma", role_id="a"))
    ledger.push("c1", m("c1", 2, base=12, op="assign_role", user_id="uma", role_id="a"))
    stamp = ledger.stamps[("user", "uma", "role", "r-a")]
    assert stamp == Stamp(13, "c1", 12, "c2", changed_other=12)
    assert ledger.stamps[("user", "uma", "*")] == Stamp(13, "c1", changed_other=12)


# --- authority ---------------------------------------------------------------------------


def test_an_author_without_the_permission_is_rejected(engine: Engine) -> None:
    decision = Ledger(engine).push(
        "c9", m("c9", 1, op="assign_role", user_id="uma", role_id="admin"), author="uma"
    )
    (result,) = decision.results
    assert (result.outcome, result.code) == (Outcome.REJECTED, "forbidden")
    assert (result.reason or "").startswith(
        "uma may not assign_role (needs role:assign on 'r-admin')"
    )
    assert engine.policy.users["uma"].roles == ()


def test_a_permission_granted_earlier_in_the_batch_counts(engine: Engine) -> None:
    """Decided against the policy as it is when the mutation is reached, in order."""
    ledger = Ledger(engine)
    ledger.push("c1", m("c1", 1, op="assign_role", user_id="uma", role_id="admin"))
    after = ledger.push("c9", m("c9", 1, base=11, op="create_user", user_id="q"), author="uma")
    assert after.results[0].outcome is Outcome.APPLIED


def test_revert_takes_the_whole_batch_back(engine: Engine) -> None:
    before = export_policy(engine.policy)
    decision = Ledger(engine).push(
        "c1", m("c1", 1, op="create_user", user_id="v"),
        m("c1", 2, op="assign_role", user_id="uma", role_id="a"),
        m("c1", 3, op="delete_role", role_id="b"),
    )  # fmt: skip
    assert decision.undo is not None
    engine.revert(decision.undo, decision.touched, decision.start_version)
    assert export_policy(engine.policy) == before
    assert engine.version == 10
    assert_engine_matches_a_fresh_compile(engine)


def test_stored_outcomes_round_trip() -> None:
    for result in (
        Result("c", 1, Outcome.APPLIED, 3),
        Result("c", 2, Outcome.REJECTED, None, "forbidden", "no"),
        Result(
            "c",
            3,
            Outcome.CONFLICT,
            7,
            "concurrent_change",
            "changed",
            Conflict("role r name", "a", None),
        ),
        Result("c", 4, Outcome.REJECTED, 9, "superseded", "gone"),
    ):
        document: Mapping[str, Any] = outcome_document(result)
        assert outcome_from_document("c", result.seq, document) == result
