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
- `chain_hashes` hashes a run of links from their fields after `prev_hash`,
  written beforehand (`encode_links`, in the processes that decide): the same
  bytes `link_hash` writes, put together with less work per link, in the one
  process that appends them to the chain.
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


@dataclass(frozen=True, slots=True)
class EncodedLinks:
    """Links' fields after their `prev_hash`, written as `link_hash` writes them, for
    `chain_hashes`: made where the links are decided, hashed where they are appended."""

    requests: list[bytes]
    """Each link's request (b"" where orjson cannot write the link)."""
    kinds: list[int]
    """Which of `answers` each link's answer is."""
    answers: list[bytes | None]
    """Answers many links share: from the comma before `allowed` to the closing
    bracket (None where orjson cannot write it)."""
    unwritten: dict[int, list[Any]]
    """The fields of the links orjson cannot write, by position."""


def encode_links(
    requests: Sequence[Any], answers: Sequence[Sequence[Any]], kinds: list[int]
) -> EncodedLinks:
    """Links whose fields after `prev_hash` are each its request, then the fields
    `answers[kind]` (`allowed` to `policy_version`), for `chain_hashes`."""
    dumps, sort = orjson.dumps, orjson.OPT_SORT_KEYS
    ends: list[bytes | None] = []
    for answer in answers:
        try:
            ends.append(b"," + dumps(list(answer), option=sort)[1:])
        except TypeError:
            ends.append(None)
    written = _written_apart(requests)
    unwritten: dict[int, list[Any]] = {}
    if written is None or None in ends:
        written = []
        for position, (request, kind) in enumerate(zip(requests, kinds, strict=True)):
            try:
                if ends[kind] is not None:
                    written.append(dumps(request, option=sort))
                    continue
            except TypeError:
                pass
            written.append(b"")
            unwritten[position] = [request, *answers[kind]]
    return EncodedLinks(written, kinds, ends, unwritten)


_APART = "\x00\x01"
_APART_WRITTEN = b',"\\u0000\\u0001",'


def _written_apart(requests: Sequence[Any]) -> list[bytes] | None:
    """Each of `requests` as orjson writes it with sorted keys, written in one call (a
    call for each took four times as long): the requests with a string between them,
    cut where it is. None where orjson cannot write them all, or where a request holds
    that string too (it is then found more often than it was put in)."""
    if not requests:
        return []
    items: list[Any] = [_APART] * (2 * len(requests) - 1)
    items[::2] = requests
    try:
        data = orjson.dumps(items, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return None
    written = data[1:-1].split(_APART_WRITTEN)
    return written if len(written) == len(requests) else None


def chain_hashes(client: str, head: ChainHead, links: EncodedLinks) -> list[str]:
    """The hashes of `links` after `head`, in order: for each,
    `link_hash([client, seq, prev_hash, *fields])` (module rules)."""
    sha256 = hashlib.sha256
    seq, prev = head.seq, head.hash
    try:
        # orjson writes an array as its items' own JSON, comma-separated, so these bytes
        # and a link's are what it writes for the link's whole array.
        opening: bytes | None = b"[" + orjson.dumps(client) + b","
        prev_json = orjson.dumps(prev)
    except TypeError:
        opening, prev_json = None, b""
    ends = links.answers
    hashes: list[str] = []
    append = hashes.append
    for request, kind in zip(links.requests, links.kinds, strict=True):
        seq += 1
        end = ends[kind]
        if request and opening is not None and end is not None:
            prev = sha256(b"%b%d,%b,%b%b" % (opening, seq, prev_json, request, end)).hexdigest()
        else:
            unwritten = links.unwritten.get(seq - head.seq - 1)
            fields = unwritten or orjson.loads(b"[" + request + (end or b"]"))
            prev = link_hash([client, seq, prev, *fields])
        append(prev)
        prev_json = b'"%b"' % prev.encode()
    return hashes


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
