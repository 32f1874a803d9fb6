"""Snapshots cut into parts that fit a message, and joined back."""

from __future__ import annotations

import json

from sync.replication.snapshots import join_snapshot_parts, snapshot_parts


def _document(users: int) -> dict[str, object]:
    return {
        "format": "fleetgate.policy/1",
        "tenant": "t",
        "resource_types": {"doc": ["read"]},
        "roles": [{"id": f"r{i}", "name": f"role-{i}"} for i in range(50)],
        "users": [{"id": f"user-{i}", "attributes": {"n": "x" * 100}} for i in range(users)],
        "constraints": [],
    }


def test_parts_join_back_to_the_document() -> None:
    document = _document(5000)
    parts = snapshot_parts(document, part_bytes=64 * 1024)
    assert len(parts) > 5
    assert join_snapshot_parts(parts) == document


def test_every_part_stays_under_the_size_asked_for() -> None:
    parts = snapshot_parts(_document(5000), part_bytes=64 * 1024)
    sizes = [len(json.dumps(p, separators=(",", ":")).encode()) for p in parts]
    assert max(sizes) <= 64 * 1024
    assert min(sizes[:-1]) > 60 * 1024  # and they are not cut needlessly small


def test_the_first_part_holds_the_head_and_a_small_policy_is_one_part() -> None:
    parts = snapshot_parts(_document(3))
    assert len(parts) == 1
    assert parts[0]["format"] == "fleetgate.policy/1"


def test_an_empty_policy_is_one_part() -> None:
    document = _document(0) | {"roles": []}
    assert join_snapshot_parts(snapshot_parts(document)) == document
