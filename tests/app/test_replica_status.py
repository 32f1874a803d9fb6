"""app.replica_status: the status bar's words for a replica."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from app.replica_status import replica_status
from sync.policy.instant import parse_instant
from sync.replication.offline import Lease

SYNCED = "2026-12-01T08:00:00.123456Z"


@dataclass
class Source:
    synced_at: str | None
    pending_count: int = 0
    outcomes: tuple[str, ...] = ()

    def meta(self) -> Any:
        synced = parse_instant(self.synced_at) if self.synced_at else None
        return SimpleNamespace(synced_at=self.synced_at, lease=Lease(3600, synced_at=synced))

    def pending(self) -> list[int]:
        return list(range(self.pending_count))

    def attention(self) -> list[Any]:
        return [SimpleNamespace(outcome=o) for o in self.outcomes]


def test_a_replica_never_synced_says_so_and_has_no_lease() -> None:
    status = replica_status(Source(None), parse_instant("2026-12-01T09:00:00Z"))
    assert (status.synced, status.pending, status.attention) == (
        "Never synced", "No pending edits", "Nothing to review")  # fmt: skip
    assert status.lease == "No lease yet: never synced"
    assert not status.lease_fresh


def test_counts_and_the_lease_in_words() -> None:
    source = Source(SYNCED, 3, ("conflict", "rejected", "superseded"))
    status = replica_status(source, parse_instant("2026-12-01T08:30:00Z"))
    assert status.synced == "Last synced 2026-12-01 08:00 UTC"
    assert status.pending == "3 pending edits"
    assert status.attention == "1 conflict and 2 refused edits to review"
    assert status.lease == "Lease fresh until 2026-12-01 09:00 UTC (30 min left)"
    later = replica_status(Source(SYNCED, 1, ("rejected",)), parse_instant("2026-12-01T10:00:00Z"))
    assert (later.pending, later.attention) == ("1 pending edit", "1 refused edit to review")
    assert later.lease.startswith("Lease stale since") and not later.lease_fresh
