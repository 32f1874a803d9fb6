"""sync.replication.offline: the replica's clock, its lease, and what decisions say."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sync.policy.decision import Decision
from sync.policy.instant import format_instant, parse_instant
from sync.protocol.messages import Clock, StaleDecisions
from sync.replication.decisions import GENESIS, ChainHead, continue_chain
from sync.replication.offline import (
    Lease,
    Qualifier,
    ReplicaClock,
    chain_link,
    circumstances,
    instant_seconds,
    seconds_instant,
)

T0 = parse_instant("2026-12-01T08:00:00Z")


def at(seconds: float) -> tuple[int, str]:
    return seconds_instant(instant_seconds(T0) + seconds)


def test_the_wall_clock_is_used_while_it_moves_forward() -> None:
    clock = ReplicaClock(None, mono=100.0)
    assert clock.read(at(0), 100.0) == (at(0), Clock.WALL)
    assert clock.read(at(60), 160.0) == (at(60), Clock.WALL)
    assert clock.mark == at(60)


def test_a_clock_moved_backwards_freezes_time_and_never_reverses_it() -> None:
    clock = ReplicaClock(None, mono=0.0)
    clock.read(at(3600), 0.0)
    # The wall clock jumps six hours back; ten monotonic seconds pass.
    moment, which = clock.read(at(3600 - 6 * 3600), 10.0)
    assert which is Clock.FROZEN
    assert moment == at(3610)
    later, _ = clock.read(at(3600 - 6 * 3600 + 5), 15.0)
    assert later == at(3615)


def test_a_new_process_starts_from_the_stored_mark() -> None:
    first = ReplicaClock(None, mono=50.0)
    first.read(at(1000), 50.0)
    stored = first.mark
    # Another process, whose monotonic clock has nothing to do with the first's.
    second = ReplicaClock(stored, mono=7.0)
    assert second.read(at(10), 7.0) == (at(1000), Clock.FROZEN)
    assert second.read(at(2000), 8.0) == (at(2000), Clock.WALL)


def test_the_server_time_raises_the_mark_but_never_lowers_it() -> None:
    clock = ReplicaClock(None, mono=0.0)
    clock.read(at(0), 0.0)
    clock.heard(at(500), 1.0)
    assert clock.read(at(2), 2.0) == (at(501), Clock.FROZEN)
    clock.heard(at(-10_000), 3.0)  # a server behind: the mark stays
    assert clock.read(at(3), 3.0)[0] == at(502)


@given(steps=st.lists(st.tuples(st.floats(-1e5, 1e5), st.floats(0, 100)), max_size=40))
def test_effective_time_is_monotonic_whatever_the_wall_clock_does(
    steps: list[tuple[float, float]],
) -> None:
    clock = ReplicaClock(None, mono=0.0)
    mono = 0.0
    last = None
    for wall_offset, elapsed in steps:
        mono += elapsed
        moment, _ = clock.read(at(wall_offset), mono)
        if last is not None:
            assert moment >= last
        last = moment


def test_a_lease_is_fresh_until_its_seconds_have_passed_since_the_last_sync() -> None:
    lease = Lease(3600, StaleDecisions.ANSWER, T0)
    assert lease.fresh(at(3599)) and not lease.fresh(at(3600))
    assert lease.until == at(3600)
    assert lease.describe(at(60)).startswith("fresh until 2026-12-01T09:00:00Z (59 min left)")
    assert lease.describe(at(4000)) == "stale since 2026-12-01T09:00:00Z"
    assert not Lease().fresh(at(0)) and "never synced" in Lease().describe(at(0))


DECISION = Decision(True, "granted by role driver: vehicle drive", (), 7)


def _situation(lease: Lease, wall: float, *, frozen: bool = False):  # type: ignore[no-untyped-def]
    clock = ReplicaClock(None, mono=0.0)
    if frozen:
        clock.read(at(wall + 100), 0.0)
    return circumstances(clock, lease, at(wall), 0.0)


def test_a_fresh_lease_leaves_the_decision_as_the_engine_made_it() -> None:
    qualifier = Qualifier(_situation(Lease(3600, StaleDecisions.ANSWER, T0), 10))
    assert qualifier.qualify(DECISION) is DECISION


def test_past_the_lease_a_decision_answers_and_says_it_is_stale() -> None:
    qualifier = Qualifier(_situation(Lease(3600, StaleDecisions.ANSWER, T0), 7200))
    answer = qualifier.qualify(DECISION)
    assert answer.allowed
    assert answer.reason == (
        "granted by role driver: vehicle drive "
        "(stale: the replica's lease ran out at 2026-12-01T09:00:00Z)"
    )
    assert qualifier.qualify(DECISION) is answer  # qualified once per rule


def test_past_the_lease_a_tenant_that_denies_stale_decisions_gets_a_denial() -> None:
    qualifier = Qualifier(_situation(Lease(3600, StaleDecisions.DENY, T0), 7200))
    answer = qualifier.qualify(DECISION)
    assert not answer.allowed
    assert answer.reason.startswith("denied offline: the replica's lease ran out")
    assert "the policy says: granted by role driver" in answer.reason


def test_a_frozen_clock_and_pending_edits_are_named_in_the_reason() -> None:
    qualifier = Qualifier(_situation(Lease(3600, StaleDecisions.ANSWER, T0), 10, frozen=True))
    answer = qualifier.qualify(DECISION, (3, 5))
    assert "the wall clock is behind the replica's last known time" in answer.reason
    assert "relies on pending edits 3, 5, not yet confirmed by the server" in answer.reason


def test_chain_links_continue_the_chain_the_server_checks() -> None:
    situation = _situation(Lease(3600, StaleDecisions.ANSWER, T0), 10)
    request = {"user": "ana", "action": "drive", "resource": {"type": "vehicle", "id": "v-1"}}
    head = ChainHead()
    links = []
    for _ in range(3):
        link = chain_link("c-1", head, request, DECISION, situation, ())
        links.append(link)
        head = ChainHead(link.seq, link.hash)
    assert links[0].prev_hash == GENESIS and [link.seq for link in links] == [1, 2, 3]
    assert links[0].at == format_instant(at(10)) and links[0].policy_version == 7
    new, last = continue_chain("c-1", ChainHead(), links)
    assert new == links and last == head


def test_clocks_drifting_apart_by_microseconds_do_not_freeze_time() -> None:
    # Between two blocks of a batch the wall clock ran 30 µs slower than the monotonic one.
    clock = ReplicaClock(None, mono=0.0)
    clock.read(at(0), 0.0)
    moment, which = clock.read(at(1.99997), 2.0)
    assert which is Clock.WALL and moment == at(2.0)  # never back, and not "frozen"
