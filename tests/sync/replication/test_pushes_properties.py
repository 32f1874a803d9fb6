"""Property tests for deciding pushes (sync/pushes.py), on random mutation streams.

A small ledger here plays the server's part between pushes (stored outcomes,
each client's last seq, the last change to each entity, the stored entities),
as server/tenants.py does with the database. Random pushes from three
clients, with repeated and stale seqs, stale base versions, edits that are
refused, forbidden or conflict, and stores that fail, must keep:

1. exactly one outcome per mutation, in order; a (client, seq) seen before
   gets the very outcome it got the first time, and nothing is applied again;
2. versions of committed changes are consecutive, with no gap or repeat;
3. replaying the committed changes in version order on the first policy
   (what every other process and client does) gives the server's policy;
4. the stored entities, written from each commit's after-entities, load back
   as the server's policy;
5. the engine updated push by push decides like an engine compiled afresh;
6. a push whose store fails (`Engine.revert`) leaves no trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sync.policy.document import export_policy, parse_policy
from sync.policy.edits import apply_edit, edit_from_document
from sync.policy.engine import Engine
from sync.policy.instant import format_instant, parse_instant
from sync.protocol.messages import Mutation, Outcome, Result
from sync.replication.entities import policy_document, policy_entities
from sync.replication.pushes import PushContext, execute_push

NOW = parse_instant("2026-11-22T09:30:00Z")
CLIENTS = {"c1": "root", "c2": "lena", "c3": "nick"}  # client -> its author

POLICY: dict[str, Any] = {
    "format": "fleetgate.policy/1",
    "tenant": "t",
    "resource_types": {
        "role": ["read", "create", "update", "delete", "assign"],
        "user": ["read", "create", "update", "delete"],
        "doc": ["read", "write"],
    },
    "roles": [
        {"id": "r-admin", "name": "admin",
         "grants": [{"resource": "role", "actions": ["*"]},
                    {"resource": "user", "actions": ["*"]}]},
        {"id": "r-lead", "name": "lead",
         "grants": [{"resource": "user", "actions": ["update"],
                     "when": {"resource.depot": "$user.depot"}},
                    {"resource": "role", "actions": ["assign"],
                     "when": {"resource.id": {"in": ["reader", "writer"]}}}]},
        {"id": "r-reader", "name": "reader", "grants": [{"resource": "doc", "actions": ["read"]}]},
        {"id": "r-writer", "name": "writer", "inherits": ["reader"],
         "grants": [{"resource": "doc", "actions": ["write"]}]},
    ],
    "users": [
        {"id": "root", "roles": [{"role": "admin"}]},
        {"id": "lena", "attributes": {"depot": "n"}, "roles": [{"role": "lead"}]},
        {"id": "nick", "attributes": {"depot": "n"}, "roles": [{"role": "reader"}]},
        {"id": "sam", "attributes": {"depot": "s"}, "roles": [{"role": "writer"}]},
    ],
    "constraints": [{"name": "read-xor-admin", "exclusive": ["reader", "admin"]}],
}  # fmt: skip

USERS = ["root", "lena", "nick", "sam", "u1", "u2"]
ROLES = ["r-admin", "r-lead", "r-reader", "r-writer", "r-x", "r-y"]

edits = st.one_of(
    st.builds(lambda u, r: {"op": "assign_role", "user_id": u, "role_id": r},
              st.sampled_from(USERS), st.sampled_from(ROLES)),
    st.builds(lambda u, r: {"op": "unassign_role", "user_id": u, "role_id": r},
              st.sampled_from(USERS), st.sampled_from(ROLES)),
    st.builds(lambda u, v: {"op": "set_user_attribute", "user_id": u, "key": "depot", "value": v},
              st.sampled_from(USERS), st.sampled_from(["n", "s", None])),
    st.builds(lambda u: {"op": "create_user", "user_id": u}, st.sampled_from(USERS)),
    st.builds(lambda u: {"op": "delete_user", "user_id": u}, st.sampled_from(USERS)),
    st.builds(lambda r: {"op": "create_role", "role_id": r, "name": r[2:]},
              st.sampled_from(ROLES)),
    st.builds(lambda r: {"op": "delete_role", "role_id": r}, st.sampled_from(ROLES)),
    st.builds(lambda r, p: {"op": "add_inheritance", "role_id": r, "parent_id": p},
              st.sampled_from(ROLES), st.sampled_from(ROLES)),
    st.builds(lambda r: {"op": "add_rule", "owner": f"role:{r}", "effect": "grant",
                         "rule": {"resource": "doc", "actions": ["write"]}},
              st.sampled_from(ROLES)),
    st.just({"op": "no_such_op"}),
)  # fmt: skip


@st.composite
def pushes(draw: st.DrawFn) -> list[tuple[str, list[tuple[int, int, dict[str, Any]]], bool]]:
    """Pushes: (client, [(seq offset, base lag, edit)], whether storing it fails)."""
    return draw(
        st.lists(
            st.tuples(
                st.sampled_from(sorted(CLIENTS)),
                st.lists(
                    st.tuples(st.integers(-2, 2), st.integers(0, 3), edits), min_size=1, max_size=6
                ),
                st.booleans().map(lambda b: b and draw(st.integers(0, 4)) == 0),
            ),
            min_size=1,
            max_size=12,
        )
    )


@dataclass
class Ledger:
    """What the database keeps between pushes."""

    last_seq: dict[str, int] = field(default_factory=dict)
    outcomes: dict[tuple[str, int], Result] = field(default_factory=dict)
    last_touch: dict[str, tuple[int, str]] = field(default_factory=dict)
    entities: dict[str, Any] = field(default_factory=dict)
    changes: list[tuple[int, dict[str, Any], str]] = field(default_factory=list)


def _decisions(engine: Engine) -> dict[str, Any]:
    """Everything the engine answers about these users, in the order it answers."""
    answers: dict[str, Any] = {
        user: [str(p) for p in engine.effective_permissions(user, NOW)]
        for user in engine.policy.users
    }
    for action in ("read", "write"):
        answers[f"who can {action} doc"] = [
            (user, d.reason) for user, d in engine.who_can(action, "doc", now=NOW)
        ]
    answers["holders"] = engine.holders({"r-reader", "r-admin"})
    return answers


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=pushes())
def test_random_pushes_keep_exactly_once_gap_free_and_replayable(
    stream: list[tuple[str, list[tuple[int, int, dict[str, Any]]], bool]],
) -> None:
    first = parse_policy(POLICY, now=NOW)
    engine = Engine(parse_policy(POLICY, now=NOW), version=1)
    ledger = Ledger(entities={e.key: e for e in policy_entities(first)})
    at = format_instant(NOW)
    for client, items, store_fails in stream:
        seq = ledger.last_seq.get(client, 0)
        mutations = []
        for offset, lag, edit in items:
            seq = max(1, seq + offset) if offset else seq + 1  # repeats, stale and fresh seqs
            mutations.append(Mutation(client, seq, max(0, (engine.version or 0) - lag), edit))
        repeats = {m.seq for m in mutations if m.seq <= ledger.last_seq.get(client, 0)}
        context = PushContext(
            author=CLIENTS[client],
            client=client,
            last_seq=ledger.last_seq.get(client, 0),
            stored={
                s: ledger.outcomes[(client, s)] for s in repeats if (client, s) in ledger.outcomes
            },
            horizon=0,
            last_touch=ledger.last_touch,
            now=NOW,
            at=at,
        )
        before = export_policy(engine.policy)
        before_version = engine.version
        decision = execute_push(engine, context, mutations)

        for result in decision.results:
            event(f"{result.outcome.value} {result.code or ''}".strip())
        # 1. one outcome per mutation; repeats get exactly their first outcome
        assert len(decision.results) == len(mutations)
        for mutation, result in zip(mutations, decision.results, strict=True):
            assert (result.client, result.seq) == (mutation.client, mutation.seq)
            earlier = ledger.outcomes.get((client, mutation.seq))
            if earlier is not None:
                assert result == earlier
        # 2. consecutive versions
        versions = [c.version for c in decision.commits]
        assert versions == list(
            range((before_version or 0) + 1, (before_version or 0) + 1 + len(versions))
        )

        if store_fails:  # 6. the transaction failed: no trace
            assert decision.undo is not None
            engine.revert(decision.undo, decision.touched, decision.start_version)
            assert export_policy(engine.policy) == before
            assert engine.version == before_version
            continue
        for result in decision.new_outcomes:  # what the transaction stores
            ledger.outcomes.setdefault((client, result.seq), result)
            ledger.last_seq[client] = max(ledger.last_seq.get(client, 0), result.seq)
        for commit in decision.commits:
            ledger.changes.append((commit.version, commit.edit, client))
            for entity in commit.after:
                ledger.last_touch[entity.key] = (commit.version, client)
                if entity.document is None:
                    ledger.entities.pop(entity.key, None)
                else:
                    ledger.entities[entity.key] = entity
        assert all(r.outcome is not Outcome.MERGED for r in decision.results)

    # 3. replaying the change log on the first policy gives the same policy
    replayed = parse_policy(POLICY, now=NOW)
    for _version, edit, _client in ledger.changes:
        apply_edit(replayed, edit_from_document(edit, replayed), NOW)
    assert export_policy(replayed) == export_policy(engine.policy)
    # 4. stored entities load back as the same policy (order by the live policy's)
    order = {e.key: i for i, e in enumerate(policy_entities(engine.policy))}
    assert set(order) == set(ledger.entities)
    stored = sorted(ledger.entities.values(), key=lambda e: order[e.key])
    loaded = parse_policy(policy_document("t", stored), now=NOW)
    assert export_policy(loaded) == export_policy(engine.policy)
    # 5. incremental equals fresh
    assert _decisions(engine) == _decisions(
        Engine(parse_policy(export_policy(engine.policy), now=NOW))
    )
