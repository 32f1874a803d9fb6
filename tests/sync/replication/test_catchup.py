"""sync.replication.catchup: how a client catches up and what a live session sends."""

from __future__ import annotations

import pytest

from sync.protocol.messages import CatchUp, Change
from sync.replication.catchup import (
    SNAPSHOT_AFTER,
    Delivery,
    SessionEnd,
    catch_up_by,
    delivery,
    is_snapshot_id,
    session_end,
    snapshot_messages,
)

DOCUMENT = {"format": "fleetgate.policy/1", "tenant": "t", "resource_types": {},
            "roles": [{"id": "r", "name": "r"}], "users": [{"id": "u"}]}  # fmt: skip


@pytest.mark.parametrize(
    ("cursor", "version", "horizon", "expected"),
    [(10, 20, 5, "changes"), (4, 20, 5, "snapshot"), (21, 20, 0, "snapshot"),
     (0, SNAPSHOT_AFTER + 1, 0, "snapshot"), (1, SNAPSHOT_AFTER + 1, 0, "changes")],
)  # fmt: skip
def test_a_client_is_sent_changes_unless_a_snapshot_is_needed(
    cursor: int, version: int, horizon: int, expected: str
) -> None:
    assert catch_up_by(cursor, version, horizon) is CatchUp(expected)


def test_a_snapshot_is_named_by_its_content_so_every_process_cuts_the_same() -> None:
    first = snapshot_messages(7, DOCUMENT, "ab" * 32)
    again = snapshot_messages(7, dict(DOCUMENT), "ab" * 32)
    assert [m.snapshot for m in first] == [m.snapshot for m in again]
    assert first[0].snapshot.startswith("s7-") and is_snapshot_id(first[0].snapshot)
    other = snapshot_messages(7, DOCUMENT | {"users": []}, "ab" * 32)
    assert other[0].snapshot != first[0].snapshot
    assert {m.digest for m in first} == {"ab" * 32}


@pytest.mark.parametrize(
    ("cursor", "start", "end", "plan"),
    [(10, 5, 10, Delivery.SKIP), (10, 12, 14, Delivery.FILL_GAP), (10, 10, 12, Delivery.WHOLE),
     (10, 8, 12, Delivery.TAIL)],
)  # fmt: skip
def test_a_live_session_skips_fills_or_trims_each_batch(
    cursor: int, start: int, end: int, plan: Delivery
) -> None:
    assert delivery(cursor, start, end) is plan


def change(edit: dict[str, str]) -> Change:
    return Change(1, edit, "admin", "d", "c", 1, "2026-11-22T09:30:00Z")


def test_a_session_ends_when_its_user_is_deleted_or_suspended() -> None:
    assert session_end("ann", [change({"op": "delete_user", "user_id": "ann"})]) is (
        SessionEnd.USER_REMOVED)  # fmt: skip
    assert session_end("ann", [change({"op": "suspend_user", "user_id": "ann"})]) is (
        SessionEnd.SUSPENDED)  # fmt: skip
    assert session_end("ann", [change({"op": "delete_user", "user_id": "bob"})]) is None
    assert session_end("ann", [change({"op": "resume_user", "user_id": "ann"})]) is None


def test_a_user_suspended_and_resumed_in_one_page_keeps_the_session() -> None:
    suspend = change({"op": "suspend_user", "user_id": "ann"})
    resume = change({"op": "resume_user", "user_id": "ann"})
    assert session_end("ann", [suspend, resume]) is None
    assert session_end("ann", [resume, suspend]) is SessionEnd.SUSPENDED
    assert session_end("ann", [suspend, resume, suspend]) is SessionEnd.SUSPENDED
