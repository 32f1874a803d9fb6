"""Offline decisions as a hash chain per client (PROTOCOL.md § Offline decisions).

A replica appends each decision it makes to its own chain and uploads the
chain on sync; the server appends each new link to the tenant's audit log.

Rules of this module:

- A decision's `hash` is SHA-256, as 64 lowercase hex digits, over the UTF-8
  bytes of the JSON array `[client, seq, prev_hash, request, allowed, reason,
  at, clock, lease_fresh, pending, policy_version]` written by orjson with
  sorted keys (no whitespace, UTF-8 as is); what orjson cannot write (an
  integer beyond 64 bits) by the standard library with sorted keys, compact
  separators and `ensure_ascii=False`. Both sides use this function, so the
  number format is the same on both. The first decision's `prev_hash` is
  `GENESIS` (64 zeros); each later one's is the hash of the one before it.
- Seqs count from 1 without gaps. `continue_chain` checks an upload against
  the chain's stored head: decisions at or below the head are skipped
  (already recorded: an upload retried after a lost answer adds nothing); the
  first new one must be head + 1 and link to the head's hash; every hash must
  be the hash of its decision; every request must be a well-formed request
  (policy-format.md). Anything else is `ChainBroken` and nothing is recorded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from sync.policy.request import MalformedRequest, parse_request
from sync.protocol.messages import OfflineDecision

GENESIS = "0" * 64
"""The `prev_hash` of a client's first decision."""


def decision_hash(client: str, decision: OfflineDecision) -> str:
    """The hash a decision must carry (module rules)."""
    return link_hash(
        [
            client,
            decision.seq,
            decision.prev_hash,
            decision.request,
            decision.allowed,
            decision.reason,
            decision.at,
            decision.clock.value,
            decision.lease_fresh,
            list(decision.pending),
            decision.policy_version,
        ]
    )


def link_hash(fields: list[Any]) -> str:
    """The hash of a link's fields, in the order of the module rules."""
    try:
        data = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        # What orjson cannot write (integers beyond 64 bits, lone surrogates): the
        # standard library, the same way on both sides of the protocol.
        text = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        data = text.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last decision of a client's chain the server has (seq 0: none yet)."""

    seq: int = 0
    hash: str = GENESIS


class ChainBroken(Exception):
    """An upload does not continue the stored chain; nothing of it is recorded."""

    def __init__(self, seq: int, problem: str) -> None:
        super().__init__(f"decision {seq}: {problem}")
        self.seq = seq
        self.problem = problem


def continue_chain(
    client: str, head: ChainHead, decisions: Sequence[OfflineDecision]
) -> tuple[list[OfflineDecision], ChainHead]:
    """The decisions of an upload that are new, in order, and the chain's new head.

    Raises ChainBroken (module rules).
    """
    new: list[OfflineDecision] = []
    last = head
    for decision in decisions:
        if decision.seq <= last.seq:
            continue
        if decision.seq != last.seq + 1:
            raise ChainBroken(decision.seq, f"expected decision {last.seq + 1} next")
        if decision.prev_hash != last.hash:
            raise ChainBroken(decision.seq, "does not link to the decision before it")
        if decision_hash(client, decision) != decision.hash:
            raise ChainBroken(decision.seq, "its hash is not the hash of its content")
        try:
            parse_request(dict(decision.request))
        except MalformedRequest as error:
            raise ChainBroken(decision.seq, f"its request is malformed: {error}") from None
        new.append(decision)
        last = ChainHead(decision.seq, decision.hash)
    return new, last
