"""sync.replication.follow: a replica's confirmed policy following the server's."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sync.policy.document import export_policy, parse_policy
from sync.policy.edits import Undo, apply_edit, edit_from_document
from sync.policy.instant import format_instant, parse_instant
from sync.policy.model import Policy
from sync.protocol.messages import Change, Changes, Snapshot
from sync.replication.catchup import snapshot_messages
from sync.replication.digest import digest_of, digest_text
from sync.replication.entities import policy_entities
from sync.replication.follow import Diverged, Follower

NOW = parse_instant("2026-12-01T08:00:00Z")

DOCUMENT: dict[str, Any] = {
    "format": "fleetgate.policy/1",
    "tenant": "acme",
    "resource_types": {"vehicle": ["read", "drive"]},
    "roles": [
        {
            "id": "r-driver",
            "name": "driver",
            "grants": [{"resource": "vehicle", "actions": ["drive"]}],
        },
        {
            "id": "r-viewer",
            "name": "viewer",
            "grants": [{"resource": "vehicle", "actions": ["read"]}],
        },
    ],
    "users": [{"id": "ana", "roles": [{"role": "viewer"}]}, {"id": f"u-{'x' * 200}"}],
}


def server_policy() -> Policy:
    return parse_policy(copy.deepcopy(DOCUMENT), now=NOW)


def snapshot_of(policy: Policy, version: int) -> tuple[Snapshot, ...]:
    digest = digest_text(digest_of(policy_entities(policy)))
    return snapshot_messages(version, export_policy(policy), digest)


def commit(policy: Policy, version: int, document: dict[str, Any]) -> Change:
    """What the server does with an edit: apply it, and describe it as a change."""
    apply_edit(policy, edit_from_document(document, policy), NOW, Undo(policy))
    return Change(version, document, "dreed", "d-1", "c-1", version, format_instant(NOW))


def digest(policy: Policy) -> str:
    return digest_text(digest_of(policy_entities(policy)))


def test_a_snapshot_becomes_the_confirmed_policy_once_every_chunk_is_in() -> None:
    policy = server_policy()
    messages = snapshot_of(policy, 4)
    follower = Follower(None, 0, None)
    results = [follower.snapshot(m, NOW) for m in reversed(messages)]
    assert results[:-1] == [None] * (len(messages) - 1)
    followed = results[-1]
    assert followed is not None and followed.whole and followed.version == 4
    assert follower.policy is not None
    assert export_policy(follower.policy) == export_policy(policy)


def test_an_interrupted_snapshot_says_where_to_resume() -> None:
    from sync.replication import snapshots

    policy = server_policy()
    original = snapshots.PART_BYTES
    snapshots.PART_BYTES = 200
    try:
        digest_value = digest(policy)
        parts = snapshots.snapshot_parts(export_policy(policy), 200)
    finally:
        snapshots.PART_BYTES = original
    messages = [
        Snapshot("s4-x", 4, i, len(parts), part, digest_value) for i, part in enumerate(parts)
    ]
    assert len(messages) >= 3
    follower = Follower(None, 0, None)
    follower.snapshot(messages[0], NOW)
    follower.snapshot(messages[1], NOW)
    assert follower.resume == ("s4-x", 2)
    for message in messages[2:]:
        follower.snapshot(message, NOW)
    assert follower.version == 4 and follower.resume is None


def test_a_snapshot_whose_digest_is_not_the_servers_diverges() -> None:
    policy = server_policy()
    (message,) = snapshot_of(policy, 4)
    wrong = Snapshot(message.snapshot, 4, 0, 1, message.part, "0" * 64)
    with pytest.raises(Diverged, match="digest"):
        Follower(None, 0, None).snapshot(wrong, NOW)


def _following() -> tuple[Policy, Follower]:
    server = server_policy()
    follower = Follower(None, 0, None)
    for message in snapshot_of(server, 4):
        follower.snapshot(message, NOW)
    return server, follower


def test_changes_replay_in_order_and_keep_the_digest_the_servers() -> None:
    server, follower = _following()
    changes = (
        commit(server, 5, {"op": "assign_role", "user_id": "ana", "role_id": "r-driver"}),
        commit(server, 6, {"op": "rename_role", "role_id": "r-viewer", "name": "watcher"}),
    )
    followed = follower.changes(Changes(4, 6, changes, False, digest(server)))
    assert followed.version == 6 and followed.changes == changes
    assert {e.key for e in followed.entities} == {"user:ana", "role:r-viewer"}
    assert follower.policy is not None
    assert export_policy(follower.policy) == export_policy(server)
    # The same page again (a repeated delivery) changes nothing.
    again = follower.changes(Changes(4, 6, changes, False, digest(server)))
    assert again.changes == () and again.version == 6


def test_a_gap_a_change_that_does_not_replay_or_a_wrong_digest_diverges_changing_nothing() -> None:
    server, follower = _following()
    assert follower.policy is not None
    before = export_policy(follower.policy)
    five = commit(server, 5, {"op": "assign_role", "user_id": "ana", "role_id": "r-driver"})
    seven = Change(
        7, {"op": "delete_role", "role_id": "r-viewer"}, "x", "d", "c", 1, format_instant(NOW)
    )
    with pytest.raises(Diverged, match="arrived after"):
        follower.changes(Changes(4, 7, (five, seven), False))
    broken = Change(
        6, {"op": "delete_role", "role_id": "r-nope"}, "x", "d", "c", 1, format_instant(NOW)
    )
    with pytest.raises(Diverged, match="does not replay"):
        follower.changes(Changes(4, 6, (five, broken), False))
    with pytest.raises(Diverged, match="digest"):
        follower.changes(Changes(4, 5, (five,), False, "f" * 64))
    assert export_policy(follower.policy) == before and follower.version == 4


# --- hostile input: whatever the server sends, the follower diverges or follows -----------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_EDITS = st.one_of(
    _JSON,
    st.fixed_dictionaries(
        {
            "op": st.sampled_from(
                ["assign_role", "delete_role", "rename_role", "add_rule", "create_user", "nope"]
            )
        },
        optional={
            "user_id": _JSON,
            "role_id": _JSON,
            "name": _JSON,
            "owner": _JSON,
            "rule": _JSON,
            "effect": _JSON,
        },
    ),
)


@settings(max_examples=200, deadline=None)
@given(edits=st.lists(_EDITS, min_size=1, max_size=4), at=st.text(max_size=25))
def test_changes_of_any_shape_either_replay_or_diverge_and_change_nothing(
    edits: list[Any], at: str
) -> None:
    _server, follower = _following()
    assert follower.policy is not None
    before = export_policy(follower.policy)
    changes = tuple(
        Change(5 + i, edit, "x", "d", "c", i + 1, at or format_instant(NOW))
        for i, edit in enumerate(edits)
    )
    try:
        follower.changes(Changes(4, 4 + len(changes), changes, False))
    except Diverged:
        assert export_policy(follower.policy) == before and follower.version == 4


@settings(max_examples=150, deadline=None)
@given(
    part=st.dictionaries(
        st.sampled_from(
            ["format", "tenant", "resource_types", "roles", "users", "constraints", "extra"]
        ),
        _JSON,
    )
)
def test_a_snapshot_of_any_shape_is_taken_whole_or_diverges(part: dict[str, Any]) -> None:
    follower = Follower(None, 0, None)
    try:
        followed = follower.snapshot(Snapshot("s1-x", 1, 0, 1, part, "0" * 64), NOW)
    except Diverged:
        assert follower.policy is None
    else:
        assert followed is not None  # a valid document with that digest: not reached


def test_a_snapshot_with_the_servers_digest_is_taken_as_sent_and_built_only_when_needed() -> None:
    server = server_policy()
    follower = Follower(None, 0, None)
    for message in snapshot_of(server, 4):
        followed = follower.snapshot(message, NOW)
    assert followed is not None
    # The entities are the server's, byte for byte, without a policy built for them.
    assert followed.entities == list(policy_entities(server))
    assert callable(follower._policy)
    assert follower.policy is not None and export_policy(follower.policy) == export_policy(server)
    assert not callable(follower._policy)


def test_a_snapshot_written_otherwise_than_the_server_writes_is_validated_instead() -> None:
    # Equivalent to the server's policy, but not as its store writes it (an empty
    # attributes object, an entry naming its role by id): the digest of the document
    # as sent differs, so it is validated and its canonical entities must match.
    server = server_policy()
    document = export_policy(server)
    document["users"][0] = {"id": "ana", "attributes": {}, "roles": [{"role": "viewer"}]}
    message = Snapshot("s4-y", 4, 0, 1, document, digest(server))
    followed = Follower(None, 0, None).snapshot(message, NOW)
    assert followed is not None
    assert followed.entities == list(policy_entities(server))


def test_a_snapshot_that_only_claims_the_digest_and_does_not_validate_diverges() -> None:
    document = export_policy(server_policy())
    document["users"].append({"id": "bo", "roles": [{"role": "no-such-role"}]})
    message = Snapshot("s4-z", 4, 0, 1, document, digest(server_policy()))
    with pytest.raises(Diverged, match="does not validate"):
        Follower(None, 0, None).snapshot(message, NOW)


def test_a_policy_built_lazily_that_does_not_build_diverges_when_a_change_needs_it() -> None:
    # The digest says these are the server's entities, but they make no policy (a
    # server bug): the divergence shows when the first change is replayed.
    document = export_policy(server_policy())
    document["users"].append({"id": "bo", "roles": [{"role": "no-such-role"}]})
    from sync.replication.entities import document_entities

    claimed = digest_text(digest_of(document_entities(document)))
    follower = Follower(None, 0, None)
    assert follower.snapshot(Snapshot("s4-w", 4, 0, 1, document, claimed), NOW) is not None
    change = Change(5, {"op": "suspend_user", "user_id": "ana"}, "dreed", "d-1", "c-1", 5,
                    format_instant(NOW))  # fmt: skip
    with pytest.raises(Diverged, match="does not validate"):
        follower.changes(Changes(4, 5, (change,), False, None))


def test_a_page_with_nothing_new_checks_the_digest_without_building_the_policy() -> None:
    server, follower = _following()
    followed = follower.changes(Changes(4, 4, (), False, digest(server)))
    assert followed.version == 4 and followed.entities == [] and callable(follower._policy)
    with pytest.raises(Diverged, match="digest"):
        follower.changes(Changes(4, 4, (), False, "0" * 64))
