"""Deciding from a replica: its clock, its lease, and what a decision says about both.

Rules of this module (PRODUCT.md § Work offline; PROTOCOL.md § Offline decisions):

- **Effective time** is max(wall clock, mark + monotonic seconds since the mark
  was set). The mark is the latest of the server's time at the last sync and
  the local times already used for a decision. A wall clock moved backwards
  therefore never takes time back: time is held at the mark and moves on with
  the monotonic clock only, and such a decision's clock is `frozen` (its reason
  says so) when the wall clock is behind by more than a second (less is the
  two clocks drifting apart, not a clock moved back). A replica opened by a
  new process starts from the stored mark (monotonic time does not survive a
  restart).
- **The lease** starts at the server's time of the last sync and lasts the
  tenant's `lease_seconds` (from `welcome`). A replica that never synced has
  no lease. Past the lease, per the tenant's `stale_decisions`, a decision is
  still answered and says it is stale (`answer`), or is denied (`deny`).
- A decision that relied on edits not yet confirmed by the server names their
  seqs in its reason and in its chain link (`pending`).
- Each decision made from a replica becomes one link of the client's hash
  chain (`sync/replication/decisions.py`), which the replica uploads on sync.

Nothing here reads a clock: the wall time (an Instant) and the monotonic time
(seconds) are handed in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sync.policy.decision import Decision
from sync.policy.instant import Instant, format_instant
from sync.protocol.messages import Clock, OfflineDecision, StaleDecisions
from sync.replication.decisions import ChainHead, link_hash

FROZEN_AFTER = 1.0
"""Seconds the wall clock must be behind the mark for a decision to say time was held."""
DEFAULT_LEASE_SECONDS = 7 * 24 * 3600
"""The server's default lease (168 hours), until a replica hears its tenant's own."""


def instant_seconds(instant: Instant) -> float:
    """An Instant as float seconds since the epoch (for arithmetic, not comparison)."""
    seconds, fraction = instant
    return seconds + (float(f"0.{fraction}") if fraction else 0.0)


def seconds_instant(value: float) -> Instant:
    """Float seconds since the epoch as an Instant, to the microsecond."""
    micros = round(value * 1_000_000)
    seconds, rest = divmod(micros, 1_000_000)
    return (seconds, f"{rest:06d}".rstrip("0") if rest else "")


class ReplicaClock:
    """The replica's effective time (module rules)."""

    def __init__(self, mark: Instant | None, mono: float) -> None:
        """`mark`: the stored high-water mark (None: never set); `mono`: monotonic now."""
        self._mark = instant_seconds(mark) if mark is not None else None
        self._set_at = mono

    @property
    def mark(self) -> Instant | None:
        """The high-water mark to store (it only ever moves forward)."""
        return seconds_instant(self._mark) if self._mark is not None else None

    def read(self, wall: Instant, mono: float) -> tuple[Instant, Clock]:
        """The effective time at `wall`/`mono`, and whether it is the wall clock's.

        Using a time raises the mark to it: a later reading never goes back.
        """
        wall_seconds = instant_seconds(wall)
        if self._mark is None:
            self._mark, self._set_at = wall_seconds, mono
            return wall, Clock.WALL
        held = self._mark + max(0.0, mono - self._set_at)
        if wall_seconds >= held:
            self._mark, self._set_at = wall_seconds, mono
            return wall, Clock.WALL
        self._mark, self._set_at = held, mono
        # The two clocks drift apart by microseconds (NTP slews the wall clock): only a
        # wall clock behind by more than FROZEN_AFTER is one that was moved back.
        frozen = held - wall_seconds > FROZEN_AFTER
        return seconds_instant(held), Clock.FROZEN if frozen else Clock.WALL

    def heard(self, server_time: Instant, mono: float) -> None:
        """The server said its time (welcome, pong): the mark is at least that."""
        server_seconds = instant_seconds(server_time)
        held = None if self._mark is None else self._mark + max(0.0, mono - self._set_at)
        if held is None or server_seconds > held:
            self._mark = server_seconds
        else:
            self._mark = held
        self._set_at = mono


@dataclass(frozen=True, slots=True)
class Lease:
    """How long the replica's decisions are trusted offline (module rules)."""

    seconds: int = DEFAULT_LEASE_SECONDS
    stale_decisions: StaleDecisions = StaleDecisions.ANSWER
    synced_at: Instant | None = None
    """The server's time at the last sync (None: never synced)."""

    @property
    def until(self) -> Instant | None:
        if self.synced_at is None:
            return None
        return (self.synced_at[0] + self.seconds, self.synced_at[1])

    def fresh(self, at: Instant) -> bool:
        until = self.until
        return until is not None and at < until

    def describe(self, at: Instant, time_text: Callable[[Instant], str] = format_instant) -> str:
        """The lease's state in words, for `check` and the status bar; `time_text` writes
        its end (RFC 3339 by default, as `check` prints it)."""
        until = self.until
        if until is None:
            return "no lease: this replica has never synced"
        if at < until:
            left = int(instant_seconds(until) - instant_seconds(at))
            return f"fresh until {time_text(until)} ({_duration(left)} left)"
        return f"stale since {time_text(until)}"


def _duration(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"


@dataclass(frozen=True, slots=True)
class Circumstances:
    """What every decision of one reading of the replica shares."""

    at: Instant
    clock: Clock
    lease: Lease
    lease_fresh: bool
    at_text: str
    """`at` as RFC 3339 text, as decisions record it."""


def circumstances(clock: ReplicaClock, lease: Lease, wall: Instant, mono: float) -> Circumstances:
    """Read the replica's clock once, for a decision or a block of them."""
    at, which = clock.read(wall, mono)
    return Circumstances(at, which, lease, lease.fresh(at), format_instant(at))


class Qualifier:
    """Turns an engine's decision into the replica's answer (module rules).

    The engine hands out one Decision object per rule that decides; the
    qualified copy of each is kept, so a batch qualifies each rule once.
    """

    def __init__(self, situation: Circumstances) -> None:
        self.situation = situation
        self._plain: dict[int, tuple[Decision, Decision]] = {}
        self._notes = _notes(situation)
        self._deny = not situation.lease_fresh and (
            situation.lease.stale_decisions is StaleDecisions.DENY
        )

    def qualify(self, decision: Decision, pending: Sequence[int] = ()) -> Decision:
        if pending:
            return self._make(decision, pending)
        kept = self._plain.get(id(decision))
        if kept is not None and kept[0] is decision:
            return kept[1]
        made = self._make(decision, ())
        self._plain[id(decision)] = (decision, made)
        return made

    def _make(self, decision: Decision, pending: Sequence[int]) -> Decision:
        notes = list(self._notes)
        if pending:
            seqs = ", ".join(str(s) for s in pending)
            notes.append(
                f"relies on pending edit{'s' if len(pending) > 1 else ''} {seqs}, "
                "not yet confirmed by the server"
            )
        if self._deny:
            until = self.situation.lease.until
            when = format_instant(until) if until is not None else "never: not synced yet"
            reason = (
                f"denied offline: the replica's lease ran out ({when}) and this tenant denies "
                f"stale decisions; sync to decide (the policy says: {decision.reason})"
            )
            return Decision(
                False, _with_notes(reason, notes), decision.matched, decision.policy_version
            )
        if not notes:
            return decision
        return Decision(
            decision.allowed,
            _with_notes(decision.reason, notes),
            decision.matched,
            decision.policy_version,
        )


def _notes(situation: Circumstances) -> list[str]:
    notes = []
    if situation.clock is Clock.FROZEN:
        notes.append(
            f"the wall clock is behind the replica's last known time: decided at "
            f"{situation.at_text}, time held there"
        )
    if not situation.lease_fresh and situation.lease.stale_decisions is StaleDecisions.ANSWER:
        until = situation.lease.until
        notes.append(
            "stale: the replica has never synced"
            if until is None
            else f"stale: the replica's lease ran out at {format_instant(until)}"
        )
    return notes


def _with_notes(reason: str, notes: Sequence[str]) -> str:
    return f"{reason} ({'; '.join(notes)})" if notes else reason


def answer_fields(
    decision: Decision, situation: Circumstances, pending: Sequence[int]
) -> tuple[bool, str, str, str, bool, list[int], int]:
    """A link's fields after its request: `allowed`, `reason`, `at`, `clock`,
    `lease_fresh`, `pending` and `policy_version`, as its hash reads them."""
    return (decision.allowed, decision.reason, situation.at_text, situation.clock.value,
            situation.lease_fresh, list(pending), decision.policy_version or 0)  # fmt: skip


def chain_link(
    client: str,
    head: ChainHead,
    request: Mapping[str, Any],
    decision: Decision,
    situation: Circumstances,
    pending: Sequence[int],
) -> OfflineDecision:
    """The next link of the client's decision chain, after `head`."""
    seq, answer = head.seq + 1, answer_fields(decision, situation, pending)
    digest = link_hash([client, seq, head.hash, request, *answer])
    return OfflineDecision(seq, head.hash, digest, request, decision.allowed, decision.reason,
                           situation.at_text, situation.clock, situation.lease_fresh,
                           tuple(pending), answer[-1])  # fmt: skip
