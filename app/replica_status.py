"""What the desktop app's status bar says about a replica, in words (the desktop issue,
§ Status bar): last synced, pending edits, outcomes to see, and the lease.

Pure over what the replica returns, so the words are tested without Qt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sync.policy.instant import Instant, format_instant
from sync.replication.offline import Lease


class StatusSource(Protocol):
    """What the status reads (app.replica.Replica)."""

    def meta(self) -> Any: ...

    def pending(self) -> Sequence[Any]: ...

    def attention(self) -> Sequence[Any]: ...


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    synced: str
    pending: str
    attention: str
    lease: str
    lease_fresh: bool


def _plural(count: int, one: str, many: str) -> str:
    return f"{count:,} {one if count == 1 else many}"


def _to_the_minute(text: str) -> str:
    """An RFC 3339 time as the status bar writes it: "2026-12-01 18:10 UTC"."""
    return f"{text[:16].replace('T', ' ')} UTC"


def _lease_words(lease: Lease, now: Instant) -> str:
    # The command line's words, with the time to the minute.
    if lease.until is None:
        return "No lease yet: never synced"
    return "Lease " + lease.describe(now, lambda until: _to_the_minute(format_instant(until)))


def replica_status(source: StatusSource, now: Instant) -> ReplicaStatus:
    """The status bar's words for `source` at `now` (the replica's effective time)."""
    meta = source.meta()
    # The server's RFC 3339 time, to the minute: "2026-12-01 18:10 UTC".
    synced = f"Last synced {_to_the_minute(meta.synced_at)}" if meta.synced_at else "Never synced"
    pending = len(source.pending())
    outcomes = source.attention()
    conflicts = sum(1 for a in outcomes if a.outcome == "conflict")
    others = len(outcomes) - conflicts
    if not outcomes:
        attention = "Nothing to review"
    else:
        parts = []
        if conflicts:
            parts.append(_plural(conflicts, "conflict", "conflicts"))
        if others:
            parts.append(_plural(others, "refused edit", "refused edits"))
        attention = " and ".join(parts) + " to review"
    lease: Lease = meta.lease
    return ReplicaStatus(
        synced,
        _plural(pending, "pending edit", "pending edits") if pending else "No pending edits",
        attention,
        _lease_words(lease, now),
        lease.fresh(now),
    )
