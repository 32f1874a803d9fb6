"""sync.replication.decisions: a client's offline decisions as a hash chain."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.protocol.messages import Clock, OfflineDecision
from sync.replication.decisions import (
    GENESIS,
    ChainBroken,
    ChainHead,
    chain_hashes,
    continue_chain,
    decision_hash,
    encode_links,
    link_hash,
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


# Text orjson writes and text it cannot (a lone surrogate), numbers it cannot (beyond
# 64 bits), escapes, and keys out of order: chain_hashes must hash what link_hash does.
_TEXT = st.text(st.characters(codec=None), max_size=6) | st.sampled_from(
    ["\ud800", "é\u2028", '"\\\n\t', "\x00\x1f\x7f", "\x00\x01", '",\x00\x01"']
)
_SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | _TEXT
    | st.floats(allow_nan=False, allow_infinity=False)
)  # fmt: skip
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=6,
)
_REQUEST = st.fixed_dictionaries(
    {"user": _TEXT, "action": _TEXT, "resource": st.fixed_dictionaries({"type": _TEXT})},
    optional={"context": st.dictionaries(_TEXT, _JSON, max_size=3)},
)
_ANSWER = st.tuples(
    st.booleans(), _TEXT, st.just("2026-12-01T08:00:00.5Z"), st.sampled_from(["wall", "frozen"]),
    st.booleans(), st.lists(st.integers(1, 2**64), max_size=2), st.integers(0, 2**66),
)  # fmt: skip


@given(
    client=st.sampled_from(["c-0123abcd", "c-\u00e9\u2028", "c-\ud800"]),
    head=st.sampled_from([ChainHead(), ChainHead(41, "ab" * 32)]),
    answers=st.lists(_ANSWER, min_size=1, max_size=3),
    links=st.lists(st.tuples(_REQUEST, st.integers(0, 2)), max_size=6),
)
def test_hashes_of_encoded_links_are_the_hashes_of_their_fields(
    client: str, head: ChainHead, answers: list[tuple[Any, ...]],
    links: list[tuple[dict[str, Any], int]],
) -> None:  # fmt: skip
    requests = [request for request, _ in links]
    kinds = [kind % len(answers) for _, kind in links]
    expected, seq, prev = [], head.seq, head.hash
    for request, kind in zip(requests, kinds, strict=True):
        seq += 1
        prev = link_hash([client, seq, prev, request, *answers[kind]])
        expected.append(prev)
    assert chain_hashes(client, head, encode_links(requests, answers, kinds)) == expected


@pytest.mark.parametrize(
    "context",
    [{"hour": 9}, {"n": 2**65}, {"apart": [1, "\x00\x01", 2]}],
    ids=["written", "beyond what orjson writes", "holding what requests are written apart by"],
)
def test_links_hashed_from_their_encoding_continue_the_chain_the_server_checks(
    context: dict[str, Any],
) -> None:
    at = "2026-12-01T08:00:00Z"
    answers = [(True, "granted by role driver", at, "wall", True, [], 3),
               (False, "no grant matches", at, "wall", True, [2], 3)]  # fmt: skip
    requests = [REQUEST, {**REQUEST, "context": context}, REQUEST]
    kinds = [0, 1, 0]
    hashes = chain_hashes("c", ChainHead(), encode_links(requests, answers, kinds))
    prevs = [GENESIS, *hashes[:-1]]
    links = [
        OfflineDecision(seq, prev, digest, request, answers[kind][0], answers[kind][1],
                        answers[kind][2], Clock(answers[kind][3]), answers[kind][4],
                        tuple(answers[kind][5]), answers[kind][6])
        for seq, prev, digest, request, kind
        in zip((1, 2, 3), prevs, hashes, requests, kinds, strict=True)
    ]  # fmt: skip
    new, head = continue_chain("c", ChainHead(), links)
    assert new == links and head == ChainHead(3, hashes[-1])
