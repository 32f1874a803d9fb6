"""Deciding and editing from a replica, offline: what `fleetgate check --replica-dir`,
`edit`, `activate` and `outbox` do, apart from reading arguments.

Rules of this module (the client issue, § Offline decisions):

- A decision from the replica is made on the replica's view (the confirmed
  policy with the outbox replayed: `sync/replication/overlay.py`), at the
  replica's effective time, and qualified with the lease and the clock
  (`sync/replication/offline.py`).
- A single decision loads only what it needs: the user, the roles it holds
  and their closure, and what pending edits name (`Replica.load_partial`), so
  it costs the same on a tenant of 200 users and of 50,000. A batch loads
  everything once.
- Unless `log` is false, each decision is appended to the replica's decision
  chain and committed before it is returned; a batch commits each block
  before writing that block's decisions out.
- An edit is checked against the replica's view before it is queued: its
  schema, whether it applies, and whether its author may make it (the
  tenant's own policy, as the server will decide). It is queued in one
  transaction; the server decides it when the replica syncs.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson

from app.batch import MAX_LINE_BYTES, MalformedLine, parse_line, run_batch, usable_cores
from app.clock import wall_now
from app.policy_files import gc_paused
from app.replica import Replica
from sync.policy.authority import authorize
from sync.policy.decision import Decision
from sync.policy.edits import Edit, EditRefused, apply_edit, edit_from_document
from sync.policy.engine import Engine
from sync.policy.instant import Instant, parse_instant
from sync.policy.model import Policy
from sync.policy.request import MalformedRequest, Request, parse_request
from sync.protocol.messages import Clock
from sync.replication.decisions import ChainHead
from sync.replication.offline import (
    Circumstances,
    Qualifier,
    ReplicaClock,
    chain_link,
    circumstances,
)
from sync.replication.overlay import LocalEdit, decide_in_view

BLOCK = 4096
"""Requests decided, logged and committed together in a batch."""


@dataclass(frozen=True, slots=True)
class Clocks:
    """Where a replica's time comes from (handed in, so tests can move it)."""

    wall: Callable[[], Instant] = wall_now
    mono: Callable[[], float] = time.monotonic


def _replica_clock(replica: Replica, clocks: Clocks) -> ReplicaClock:
    mark = replica.meta().clock_mark
    return ReplicaClock(parse_instant(mark) if mark else None, clocks.mono())


def named_entities(edits: Iterable[LocalEdit]) -> set[tuple[str, str]]:
    """The roles and users pending edits name, read from their documents (the
    replica's documents name roles by id)."""
    names: set[tuple[str, str]] = set()
    for local in edits:
        document = local.edit
        for key, kind in (("user_id", "user"), ("role_id", "role"), ("parent_id", "role")):
            value = document.get(key)
            if isinstance(value, str):
                names.add((kind, value))
        for parent in document.get("inherits") or ():
            if isinstance(parent, str):
                names.add(("role", parent))
        owner = document.get("owner")
        if isinstance(owner, str):
            kind, _, owner_id = owner.partition(":")
            if kind in ("role", "user"):
                names.add((kind, owner_id))
    return names


def lease_field(situation: Circumstances) -> bytes:
    if situation.lease.synced_at is None:
        return b'"none"'
    return b'"fresh"' if situation.lease_fresh else b'"stale"'


def answer_line(decision: Decision, situation: Circumstances, pending: Sequence[int]) -> bytes:
    """`check --policy`'s decision line, plus the lease state (and the clock and the
    pending edits relied on, when they say something)."""
    extra = b',"lease":' + lease_field(situation)
    if situation.clock.value != "wall":
        extra += b',"clock":"frozen"'
    if pending:
        extra += b',"pending":' + orjson.dumps(list(pending))
    wire = decision.wire
    return wire[:-1] + extra + b"}"


class Decider:
    """Decisions from one replica, logged to its chain (module rules)."""

    def __init__(self, replica: Replica, *, log: bool = True, clocks: Clocks = Clocks()) -> None:
        self.replica = replica
        self.log = log
        self.clocks = clocks
        self.clock = _replica_clock(replica, clocks)
        self.meta = replica.meta()
        self.edits = replica.view_edits()

    def situation(self) -> Circumstances:
        return circumstances(self.clock, self.meta.lease, self.clocks.wall(), self.clocks.mono())

    def engine_for(self, user_id: str | None, now: Instant) -> Engine:
        """An engine over what deciding needs: the user's part, or (None) everything."""
        if user_id is None:
            policy = self.replica.load_policy(now)
        else:
            policy = self.replica.load_partial(user_id, named_entities(self.edits), now)
        return Engine(policy, self.meta.cursor)

    def decide(
        self, engine: Engine, requests: Sequence[Request], documents: Sequence[Any]
    ) -> tuple[list[Decision], list[tuple[int, ...]], Circumstances]:
        """Decide a block, log it (committed before this returns) and qualify it."""
        situation = self.situation()
        decisions, relied, _failed = decide_in_view(engine, self.edits, requests, situation.at)
        qualifier = Qualifier(situation)
        answers = [qualifier.qualify(d, p) for d, p in zip(decisions, relied, strict=True)]
        if self.log:
            head = self.replica.meta().chain_head
            links = []
            client = self.replica.client
            for document, answer, pending in zip(documents, answers, relied, strict=True):
                link = chain_link(client, head, document, answer, situation, pending)
                links.append(link)
                head = ChainHead(link.seq, link.hash)
            self.replica.append_decisions(links, self.clock.mark)
        return answers, relied, situation


def decide_one(
    replica: Replica, request: Request, document: Any, *, log: bool, clocks: Clocks = Clocks()
) -> bytes:
    """One decision line from the replica (module rules: loads only the user's part)."""
    decider = Decider(replica, log=log, clocks=clocks)
    engine = decider.engine_for(request.user, decider.situation().at)
    answers, relied, situation = decider.decide(engine, [request], [document])
    return answer_line(answers[0], situation, relied[0])


def decide_lines(
    replica: Replica,
    source: BinaryIO,
    out: BinaryIO,
    *,
    log: bool,
    clocks: Clocks = Clocks(),
) -> int:
    """One decision per request line of `source` (module rules). Raises MalformedLine
    after writing the decisions before the bad line."""
    decider = Decider(replica, log=log, clocks=clocks)
    with gc_paused():
        engine = decider.engine_for(None, decider.situation().at)
    # The compiled policy lives as long as the command: the collector need not walk it.
    gc.freeze()
    situation = decider.situation()
    if not log and not decider.edits and situation.lease_fresh and situation.clock is Clock.WALL:
        # Nothing to log, nothing pending, nothing to say but the lease: each decision
        # is the engine's, so the batch is `check --policy`'s, on every core.
        suffix = b',"lease":' + lease_field(situation) + b"}"
        return run_batch(engine, source, out, situation.at, usable_cores(), suffix=suffix)
    loads = orjson.loads
    count = 0
    for lineno, lines in _line_blocks(source):
        requests: list[Request] = []
        documents: list[Any] = []
        error = None
        for offset, line in enumerate(lines):
            try:
                if len(line) > MAX_LINE_BYTES:
                    raise MalformedRequest
                document = loads(line)
                requests.append(parse_request(document))
            except (orjson.JSONDecodeError, MalformedRequest):
                try:  # the slow path names the problem (or takes what orjson cannot)
                    requests.append(parse_line(line))
                    document = json.loads(line)
                except (MalformedRequest, ValueError) as problem:
                    error = MalformedLine(lineno + offset, str(problem))
                    break
            documents.append(document)
        if requests:
            answers, relied, situation = decider.decide(engine, requests, documents)
            out.write(_answer_lines(answers, relied, situation))
            count += len(requests)
        if error is not None:
            out.flush()
            raise error
    return count


def _answer_lines(
    answers: Sequence[Decision], relied: Sequence[Sequence[int]], situation: Circumstances
) -> bytes:
    """The block's decision lines; a decision object shared by many requests (the
    engine hands out one per rule) is written once."""
    made: dict[int, bytes] = {}
    lines = []
    for answer, pending in zip(answers, relied, strict=True):
        if pending:
            lines.append(answer_line(answer, situation, pending))
            continue
        line = made.get(id(answer))
        if line is None:
            line = made[id(answer)] = answer_line(answer, situation, ())
        lines.append(line)
    lines.append(b"")
    return b"\n".join(lines)


def _line_blocks(source: BinaryIO) -> Iterator[tuple[int, list[bytes]]]:
    lineno = 1
    block: list[bytes] = []
    first = 1
    for raw in source:
        line = raw[: MAX_LINE_BYTES + 1] if len(raw) > MAX_LINE_BYTES + 2 else raw
        block.append(line.rstrip(b"\n"))
        lineno += 1
        if len(block) >= BLOCK:
            yield first, block
            block, first = [], lineno
    if block:
        yield first, block


# --- edits ----------------------------------------------------------------------------------


class EditProblem(Exception):
    """An edit cannot be queued; the message names it and says why. Nothing was queued."""


def view_policy(replica: Replica, now: Instant) -> tuple[Policy, dict[int, str]]:
    """The replica's whole view: confirmed policy with the outbox replayed (and the
    pending edits that do not apply, seq -> why)."""
    policy = replica.load_policy(now)
    failed: dict[int, str] = {}
    for local in replica.view_edits():
        try:
            apply_edit(policy, edit_from_document(dict(local.edit), policy), local.made_at)
        except EditRefused as refused:
            failed[local.seq] = refused.reason
    return policy, failed


def queue_edits(
    replica: Replica,
    documents: Sequence[Any],
    *,
    author: str,
    clocks: Clocks = Clocks(),
    cancels: int | None = None,
    where: Callable[[int], str] = lambda i: f"edit [{i}]",
) -> list[int]:
    """Check `documents` against the replica's view and queue them (module rules).

    Returns the new seqs. Raises EditProblem naming the first edit that is
    malformed, does not apply, or that `author` may not make.
    """
    clock = _replica_clock(replica, clocks)
    now, _ = clock.read(clocks.wall(), clocks.mono())
    policy, _failed = view_policy(replica, now)
    engine = Engine(policy, replica.meta().cursor)
    checked: list[dict[str, Any]] = []
    for i, document in enumerate(documents):
        try:
            edit: Edit = edit_from_document(document, engine.policy)
        except EditRefused as refused:
            raise EditProblem(f"{where(i)}: {refused.reason}") from None
        denied = authorize(engine, edit, author, now)
        if denied is not None:
            raise EditProblem(
                f"{where(i)}: {author} may not make it: needs {denied.permission} "
                f"({denied.reason}); the server would refuse it"
            )
        try:
            engine.apply(edit, now)
        except EditRefused as refused:
            raise EditProblem(f"{where(i)}: {refused.reason}") from None
        checked.append(edit.to_document())
    return replica.add_edits(checked, now, clocks.wall(), cancels=cancels, clock_mark=clock.mark)
