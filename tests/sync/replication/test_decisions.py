"""sync.replication.decisions: a client's offline decisions as a hash chain."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sync.protocol.messages import Clock, OfflineDecision
from sync.replication.decisions import (
    GENESIS,
    ChainBroken,
    ChainHead,
    continue_chain,
    decision_hash,
)

REQUEST = {"user": "dora", "action": "read", "resource": {"type": "vehicle"}}


def chain(client: str, count: int, start: int = 1, prev: str = GENESIS) -> list[OfflineDecision]:
    links = []
    for seq in range(start, start + count):
        decision = OfflineDecision(seq, prev, "", REQUEST, False, "no grant matches",
                                   "2026-11-20T06:00:00Z", Clock.WALL, True, (), 3)  # fmt: skip
        decision = replace(decision, hash=decision_hash(client, decision))
        links.append(decision)
        prev = decision.hash
    return links


def test_a_new_chain_continues_from_genesis() -> None:
    links = chain("c", 3)
    new, head = continue_chain("c", ChainHead(), links)
    assert new == links and head == ChainHead(3, links[-1].hash)


def test_decisions_already_recorded_are_skipped_so_a_retry_adds_nothing() -> None:
    links = chain("c", 4)
    _, head = continue_chain("c", ChainHead(), links[:2])
    new, head = continue_chain("c", head, links)
    assert [d.seq for d in new] == [3, 4]
    again, same = continue_chain("c", head, links)
    assert (again, same) == ([], head)


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        (lambda ds: [ds[0], replace(ds[1], allowed=True), ds[2]],
         "decision 2: its hash is not the hash of its content"),
        (lambda ds: ds[1:], "decision 2: expected decision 1 next"),
        (lambda ds: [ds[0], replace(ds[2], seq=2)], "decision 2: does not link"),
        (lambda ds: [replace(ds[0], prev_hash="1" * 64)], "decision 1: does not link"),
    ],
)  # fmt: skip
def test_a_chain_that_does_not_continue_is_broken_and_names_the_decision(
    tamper: object, problem: str
) -> None:
    with pytest.raises(ChainBroken) as broken:
        continue_chain("c", ChainHead(), tamper(chain("c", 3)))  # type: ignore[operator]
    assert str(broken.value).startswith(problem)


def test_another_clients_chain_does_not_verify() -> None:
    with pytest.raises(ChainBroken):
        continue_chain("other", ChainHead(), chain("c", 1))


def test_a_decision_of_a_malformed_request_is_broken() -> None:
    bad = replace(chain("c", 1)[0], request={"action": "read"})
    bad = replace(bad, hash=decision_hash("c", bad))
    with pytest.raises(ChainBroken, match="its request is malformed"):
        continue_chain("c", ChainHead(), [bad])
