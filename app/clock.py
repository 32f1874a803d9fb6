"""The client's wall clock, read in one place (sync/ is handed times, never reads them)."""

from __future__ import annotations

from datetime import UTC, datetime

from sync.policy.instant import Instant, instant_from_datetime


def wall_now() -> Instant:
    return instant_from_datetime(datetime.now(UTC))
