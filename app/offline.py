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
  before writing that block's decisions out, so a decision written out is
  never lost. Where there are cores to spare, forked workers decide the
  blocks (and write their links' fields for hashing) while this process
  chains, commits and writes out the ones before, in order: only it knows
  where a link goes in the chain, which it reads inside the transaction.
  Each block is cut by user, a part per worker, so each user is built once.
- A logged request must be one the log can keep and the server take: one
  holding a NUL or an unpaired surrogate, or a number beyond a double's range,
  is malformed (`unloggable`); unlogged, it is decided.
- An edit is checked against the replica's view before it is queued: its
  schema, whether it applies, and whether its author may make it (the
  tenant's own policy, as the server will decide). It is queued in one
  transaction; the server decides it when the replica syncs.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson

from app.batch import (
    MAX_LINE_BYTES,
    MalformedLine,
    blocks,
    forked_shards,
    in_line_order,
    parse_line,
    run_batch,
    shard_lines,
    usable_cores,
)
from app.clock import wall_now
from app.policy_files import gc_paused
from app.replica import DecisionRow, Replica
from sync.policy.authority import authorize
from sync.policy.decision import Decision
from sync.policy.document import UNSTORABLE_TEXT, holds_unstorable
from sync.policy.edits import Edit, EditRefused, Touched, Undo, apply_edit, edit_from_document
from sync.policy.engine import Engine
from sync.policy.instant import Instant, parse_instant
from sync.policy.model import Policy
from sync.policy.reach import edits_to_reach
from sync.policy.request import MalformedRequest, Request, parse_request
from sync.protocol.messages import Clock
from sync.replication.decisions import ChainHead, EncodedLinks, chain_hashes, encode_links
from sync.replication.encoding import compact_json
from sync.replication.offline import (
    Circumstances,
    Qualifier,
    ReplicaClock,
    answer_fields,
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


def effective_clock(replica: Replica, clocks: Clocks = Clocks()) -> Callable[[], Instant]:
    """The replica's effective time, read each call (module rules: a clock moved back
    freezes it): for what shows the lease, such as the desktop app's status bar."""
    clock = _replica_clock(replica, clocks)
    return lambda: clock.read(clocks.wall(), clocks.mono())[0]


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


AnswerRow = tuple[int, str, str, str, int, str, int]
"""The columns of a chain link after its request (`DecisionRow`): allowed, reason, at,
clock, lease_fresh, pending (JSON), policy_version."""


@dataclass(frozen=True, slots=True)
class Links:
    """A block's decisions as links of the chain, but for their place in it (seq,
    prev_hash and hash: only the process appending them knows it)."""

    encoded: EncodedLinks
    """What their hashes are made of."""
    answers: list[AnswerRow]
    """The block's answers as the chain stores them, by kind (`DecidedBlock.kinds`)."""
    requests: dict[int, str]
    """The requests the chain stores as written here, by position; the others as
    their lines are (orjson read them, so they read back as the same document)."""

    def rows_after(self, client: str, head: ChainHead, lines: Sequence[bytes]) -> list[DecisionRow]:
        """The links as rows of the chain after `head`; `lines` are their requests'."""
        hashes = chain_hashes(client, head, self.encoded)
        texts = [line.decode() for line in lines[: len(hashes)]]
        texts += [""] * (len(hashes) - len(texts))
        for position, text in self.requests.items():
            texts[position] = text
        answers = self.answers
        seqs = range(head.seq + 1, head.seq + 1 + len(hashes))
        prevs = [head.hash, *hashes[:-1]]
        return [(seq, prev, digest, text) + answers[kind]
                for seq, prev, digest, text, kind
                in zip(seqs, prevs, hashes, texts, self.encoded.kinds, strict=True)]  # fmt: skip


@dataclass(frozen=True, slots=True)
class DecidedBlock:
    """A block of requests decided: what a worker process hands back to the one that
    logs and writes out. Compact: the engine hands out one decision per rule, so a
    block has far fewer answers than decisions."""

    kinds: list[int]
    """Which answer each decision is."""
    answer_lines: list[bytes]
    """Each answer's decision line."""
    links: Links | None
    """The decisions as links of the chain (None: not logged)."""
    error: MalformedLine | None = None
    """The malformed line the block stops before."""

    def output(self) -> bytes:
        """The block's decision lines."""
        if not self.kinds:
            return b""
        lines = self.answer_lines
        return b"\n".join([lines[kind] for kind in self.kinds]) + b"\n"


def decide_requests(
    engine: Engine,
    edits: Sequence[LocalEdit],
    situation: Circumstances,
    requests: Sequence[Request],
    documents: Sequence[Any],
    *,
    log: bool,
    written: Iterable[int] | None = None,
) -> DecidedBlock:
    """Decide `requests` (parsed from `documents`) in the replica's view at `situation`.

    `written`: the positions of the requests the chain is to store as `documents`
    are written out again (None: all); the others, as their lines are.
    """
    decisions, relied, _failed = decide_in_view(engine, edits, requests, situation.at)
    return decided_block(decisions, relied, situation, documents, log=log, written=written)


def decided_block(
    decisions: Sequence[Decision],
    relied: Sequence[tuple[int, ...]],
    situation: Circumstances,
    documents: Sequence[Any],
    *,
    log: bool,
    written: Iterable[int] | None = None,
) -> DecidedBlock:
    """The engine's `decisions` of the requests `documents` (and the pending edits each
    `relied` on) qualified at `situation`, as a block (`decide_requests`)."""
    qualifier = Qualifier(situation)
    kinds: list[int] = []
    append = kinds.append
    lines: list[bytes] = []
    fields: list[tuple[Any, ...]] = []
    seen: dict[object, int] = {}
    for decision, pending in zip(decisions, relied, strict=True):
        # The engine hands out one decision per rule: each is qualified, written and
        # logged once per block.
        key = (id(decision), pending) if pending else id(decision)
        kind = seen.get(key)
        if kind is None:
            kind = seen[key] = len(lines)
            answer = qualifier.qualify(decision, pending)
            lines.append(answer_line(answer, situation, pending))
            fields.append(answer_fields(answer, situation, pending))
        append(kind)
    if not log:
        return DecidedBlock(kinds, lines, None)
    rows = [(int(allowed), reason, at, clock, int(fresh), _dumps(seqs), version)
            for allowed, reason, at, clock, fresh, seqs, version in fields]  # fmt: skip
    positions = range(len(documents)) if written is None else written
    stored = {position: _dumps(documents[position]) for position in positions}
    links = Links(encode_links(documents, fields, kinds), rows, stored)
    return DecidedBlock(kinds, lines, links)


def decide_block(
    engine: Engine,
    edits: Sequence[LocalEdit],
    situation: Circumstances,
    lines: Sequence[bytes],
    first_lineno: int,
    *,
    log: bool,
) -> DecidedBlock:
    """Decide the request `lines` (without their newlines, `first_lineno` the first's
    number) in the replica's view at `situation`, up to the first malformed one."""
    # Parsed documents and requests are thousands of young containers, kept to the
    # end of the block: with the collector walking them, deciding took twice as long.
    with gc_paused():
        requests, documents, slow, error = _parse_lines(lines, first_lineno, log=log)
        if not requests:
            return DecidedBlock([], [], None, error)
        block = decide_requests(engine, edits, situation, requests, documents, log=log,
                                written=slow)  # fmt: skip
    return DecidedBlock(block.kinds, block.answer_lines, block.links, error)


def _parse_lines(
    lines: Sequence[bytes], first_lineno: int, *, log: bool
) -> tuple[list[Request], list[Any], list[int], MalformedLine | None]:
    """The requests of `lines` up to the first malformed one, their documents, the
    positions of those orjson did not read, and the malformed line. Logged, a request
    the log cannot keep (`unloggable`) is malformed."""
    loads = orjson.loads
    requests: list[Request] = []
    documents: list[Any] = []
    slow: list[int] = []
    for offset, line in enumerate(lines):
        try:
            if len(line) > MAX_LINE_BYTES:
                raise MalformedRequest
            document = loads(line)
            request = parse_request(document)
            # orjson reads no lone surrogate: only an escaped NUL can be unloggable.
            if log and b"\\u0000" in line:
                unloggable(document)
            requests.append(request)
        except (orjson.JSONDecodeError, MalformedRequest):
            try:  # the slow path names the problem (or takes what orjson cannot)
                request = parse_line(line)
                document = json.loads(line)
                if log:
                    unloggable(document)
                requests.append(request)
                slow.append(offset)
            except (MalformedRequest, ValueError) as problem:
                return requests, documents, slow, MalformedLine(first_lineno + offset, str(problem))
        documents.append(document)
    return requests, documents, slow, None


def unloggable(document: Any) -> None:
    """Raise MalformedRequest if the request `document` holds what the decision log
    cannot keep: a string no store can hold (the server refuses an upload holding one
    whole, so logged, it would block the upload of every decision after it), or a
    number beyond a double's range (JSON has no infinity: the log would say null)."""
    if holds_unstorable(document):
        problem = f"{UNSTORABLE_TEXT}: the decision log cannot keep it (the server refuses it)"
    elif _holds_infinity(document):
        problem = (
            "a number is beyond the range of a double: the decision log cannot keep it as "
            "it was decided (JSON has no infinity)"
        )
    else:
        return
    raise MalformedRequest(f"{problem}; --no-log decides it")


def _holds_infinity(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is float and not math.isfinite(item):
            return True
        if type(item) is dict:
            stack.extend(item.values())
        elif type(item) is list:
            stack.extend(item)
    return False


def _dumps(value: Any) -> str:
    return compact_json(value)  # an integer beyond 64 bits too


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

    def batch_engine(self, now: Instant) -> Engine:
        """An engine for a batch: over the confirmed policy with pending edits to replay
        on it, or (none pending) one that builds each user as its first request comes,
        in the worker deciding it (`Replica.load_for_batch`)."""
        with gc_paused():
            if self.edits:
                return self.engine_for(None, now)
            policy, users = self.replica.load_for_batch(now)
            return Engine(policy, self.meta.cursor, load_user=users)

    def decide(
        self, engine: Engine, requests: Sequence[Request], documents: Sequence[Any]
    ) -> tuple[list[Decision], list[tuple[int, ...]], Circumstances]:
        """Decide a few requests, log them (committed before this returns) and qualify
        them. Raises MalformedRequest, before deciding any, for one the log cannot keep
        (`unloggable`)."""
        if self.log:
            for document in documents:
                unloggable(document)
        situation = self.situation()
        decisions, relied, _failed = decide_in_view(engine, self.edits, requests, situation.at)
        block = decided_block(decisions, relied, situation, documents, log=self.log)
        self.append(block, (), self.clock.mark)
        qualifier = Qualifier(situation)
        answers = [qualifier.qualify(d, p) for d, p in zip(decisions, relied, strict=True)]
        return answers, relied, situation

    def append(self, block: DecidedBlock, lines: Sequence[bytes], mark: Instant | None) -> None:
        """Append a decided block to the chain (if it is logged), committed when this
        returns. `lines`: its requests' lines; `mark`: the clock's mark after the
        block's reading of the clock."""
        links = block.links
        if links is None:
            return
        client = self.replica.client
        with gc_paused():  # the rows are thousands of young tuples too
            self.replica.extend_chain(lambda head: links.rows_after(client, head, lines), mark)

    def write(
        self, block: DecidedBlock, lines: Sequence[bytes], mark: Instant | None, out: BinaryIO
    ) -> int:
        """Log a decided block (`append`), then write its decisions out; raises its
        MalformedLine after them. Returns the number of decisions written."""
        self.append(block, lines, mark)
        out.write(block.output())
        if block.error is not None:
            out.flush()
            raise block.error
        return len(block.kinds)


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
    after writing the decisions before the bad line, WorkerDied if a worker process
    stopped (the decisions written stand, and are logged)."""
    decider = Decider(replica, log=log, clocks=clocks)
    situation = decider.situation()
    if not log and not decider.edits and situation.lease_fresh and situation.clock is Clock.WALL:
        # Nothing to log, nothing pending, nothing to say but the lease: each decision
        # is the engine's, so the batch is `check --policy`'s, on every core. Users
        # are built as their requests come, each by the worker deciding them.
        suffix = b',"lease":' + lease_field(situation) + b"}"
        engine = decider.batch_engine(situation.at)
        return run_batch(engine, source, out, situation.at, usable_cores(), suffix=suffix)
    engine = decider.batch_engine(situation.at)
    # The compiled policy lives as long as the command: the collector need not walk it.
    gc.freeze()
    # Nor what the engine builds as it goes (users, in the workers), which every
    # collection between blocks walked again: paused to the end, workers included.
    with gc_paused():
        return _decide_blocks(decider, engine, source, out)


def _decide_blocks(decider: Decider, engine: Engine, source: BinaryIO, out: BinaryIO) -> int:
    pieces = _line_blocks(source)
    first = next(pieces, None)
    if first is None:
        return 0
    second = next(pieces, None)
    # Imported here: a process pool costs more to import than a decision from a replica.
    import multiprocessing  # noqa: PLC0415

    jobs = usable_cores()
    if second is not None and jobs > 1 and "fork" in multiprocessing.get_all_start_methods():
        return _decide_forked(decider, engine, itertools.chain((first, second), pieces), out, jobs)
    count = 0
    for lineno, lines in itertools.chain((first,), () if second is None else (second,), pieces):
        situation = decider.situation()
        block = decide_block(engine, decider.edits, situation, lines, lineno, log=decider.log)
        count += decider.write(block, lines, decider.clock.mark, out)
    return count


_worker: tuple[Engine, Sequence[LocalEdit]] | None = None
"""What a forked worker decides with (set before the fork, so the workers share it)."""


def _decide_in_worker(task: tuple[Circumstances, list[bytes], int, bool]) -> DecidedBlock:
    assert _worker is not None
    situation, lines, lineno, log = task
    return decide_block(_worker[0], _worker[1], situation, lines, lineno, log=log)


def _decide_forked(
    decider: Decider,
    engine: Engine,
    pieces: Iterator[tuple[int, list[bytes]]],
    out: BinaryIO,
    jobs: int,
) -> int:
    """Blocks decided by forked workers while this process logs and writes out the
    ones before, in order: each is committed before it is written (module rules).
    Each block is cut by user into a part per worker (`shard_lines`), so that each
    user is built by one worker only, and the parts are put back together in the
    order of the block's lines (`merged_blocks`)."""
    global _worker  # noqa: PLW0603 - handed to the forked workers

    def tasks() -> Iterator[tuple[list[tuple[Circumstances, list[bytes], int, bool]], Any]]:
        for lineno, lines in pieces:
            # Each block is decided at its own reading of the clock, as in one process.
            situation = decider.situation()
            routes, parts = shard_lines(lines, jobs)
            arguments = [(situation, part, 0, decider.log) for _numbers, part in parts]
            numbers = [numbers for numbers, _part in parts]
            yield arguments, (lineno, lines, routes, numbers, decider.clock.mark)

    _worker = (engine, decider.edits)
    count = 0
    try:
        # Workers fork before the first task, outside any transaction: none holds the
        # writer lock, and none touches the database.
        with contextlib.closing(forked_shards(jobs, _decide_in_worker, tasks())) as done:
            for results, (lineno, lines, routes, numbers, mark) in done:
                block = merged_blocks(results, routes, numbers, lineno)
                count += decider.write(block, lines, mark, out)
        return count
    finally:
        _worker = None


def merged_blocks(
    parts: Sequence[DecidedBlock],
    routes: bytes,
    numbers: Sequence[Sequence[int]],
    first_lineno: int,
) -> DecidedBlock:
    """One block from its parts (`shard_lines`: `routes`, each line's part; `numbers`,
    per part its lines' offsets in the block), each decided as a block whose first
    line is number 0: its decisions and links in the order of the block's lines, up
    to the first malformed line of any part, which is the block's."""
    cut = len(routes)
    error = None
    for part, offsets in zip(parts, numbers, strict=True):
        if part.error is not None and offsets[part.error.lineno] < cut:
            cut = offsets[part.error.lineno]
            error = MalformedLine(first_lineno + cut, part.error.message)
    order = routes[:cut]
    answer_lines: list[bytes] = []
    shifted: list[list[int]] = []
    for part in parts:
        shifted.append([kind + len(answer_lines) for kind in part.kinds])
        answer_lines += part.answer_lines
    kinds = in_line_order(shifted, order)
    if not kinds or all(part.links is None for part in parts):
        return DecidedBlock(kinds, answer_lines if kinds else [], None, error)
    unwritten: dict[int, list[Any]] = {}
    texts: dict[int, str] = {}
    ends: list[bytes | None] = []
    rows: list[AnswerRow] = []
    for part, offsets in zip(parts, numbers, strict=True):
        links = part.links
        if links is None:  # a part with no line: no answer either
            continue
        # Positions in the part are its lines' numbers there: those in the block replace them.
        kept = links.encoded.unwritten.items()
        unwritten.update((offsets[i], fields) for i, fields in kept if offsets[i] < cut)
        texts.update((offsets[i], text) for i, text in links.requests.items() if offsets[i] < cut)
        ends += links.encoded.answers
        rows += links.answers
    written = [part.links.encoded.requests if part.links else [] for part in parts]
    requests = in_line_order(written, order)
    encoded = EncodedLinks(requests, kinds, ends, unwritten)
    return DecidedBlock(kinds, answer_lines, Links(encoded, rows, texts), error)


def _line_blocks(source: BinaryIO) -> Iterator[tuple[int, list[bytes]]]:
    """`(number of its first line, its lines without newlines)`: BLOCK lines at a time."""
    lines: list[bytes] = []
    first = 1
    for _, data in blocks(source):
        # Whole lines, each ending in a newline but maybe the last of the input (or
        # one longer than any request, cut short: it is malformed).
        got = data.split(b"\n")
        if not got[-1]:
            got.pop()
        lines += got
        while len(lines) >= BLOCK:
            yield first, lines[:BLOCK]
            del lines[:BLOCK]
            first += BLOCK
    if lines:
        yield first, lines


# --- edits ----------------------------------------------------------------------------------


class EditProblem(Exception):
    """An edit cannot be queued; the message names it and says why. Nothing was queued."""


def view_policy(replica: Replica, now: Instant) -> tuple[Policy, dict[int, str]]:
    """The replica's whole view: confirmed policy with the outbox replayed (and the
    pending edits that do not apply, seq -> why)."""
    return replayed(replica.load_policy(now), replica.view_edits())


def replayed(
    confirmed: Policy, edits: Iterable[LocalEdit], *, skip: int | None = None
) -> tuple[Policy, dict[int, str]]:
    """A copy of `confirmed` with `edits` replayed on it (but edit `skip`), and the edits
    that do not apply, seq -> why. `confirmed` is not changed: an edit replaces the
    entities it changes, so the copy shares the others."""
    policy = confirmed.copy()
    failed: dict[int, str] = {}
    for local in edits:
        if local.seq == skip:
            continue
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
    engine: Engine | None = None,
) -> list[int]:
    """Check `documents` against the replica's view and queue them (module rules).

    `engine`: one compiled over the replica's view as it is now (the desktop app
    keeps one); the edits are applied to it when they are queued, and it is left
    as it was when they are not. Without it, the view is loaded for this call.

    Returns the new seqs. Raises EditProblem naming the first edit that is
    malformed, does not apply, or that `author` may not make.
    """
    clock = _replica_clock(replica, clocks)
    now, _ = clock.read(clocks.wall(), clocks.mono())
    if engine is None:
        policy, _failed = view_policy(replica, now)
        engine = Engine(policy, replica.meta().cursor)
    undo = Undo(engine.policy)
    touched = Touched()
    checked: list[dict[str, Any]] = []
    try:
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
                touched = touched | engine.apply(edit, now, undo=undo)
            except EditRefused as refused:
                raise EditProblem(f"{where(i)}: {refused.reason}") from None
            checked.append(edit.to_document())
        return replica.add_edits(
            checked, now, clocks.wall(), cancels=cancels, clock_mark=clock.mark
        )
    except BaseException:
        engine.revert(undo, touched)
        raise


def take_back(
    replica: Replica,
    seq: int,
    now: Instant,
    *,
    current: Policy | None = None,
    confirmed: Policy | None = None,
) -> list[dict[str, Any]]:
    """The edits that put back what pending edit `seq` changed in the replica's view
    (nothing is deleted from the outbox without an outcome: cancelling queues
    these). Empty when it changes nothing now. `current` (the view) and `confirmed`
    (the confirmed policy, not changed here) spare loading them again. Raises
    KeyError when `seq` is not in the outbox, Unreachable when its effect cannot be
    taken back."""
    rows = {row.seq: row for row in replica.outbox()}
    target = rows[seq]
    if confirmed is None:
        confirmed = replica.load_policy(now)
    edits = replica.view_edits()
    if current is None:
        current, _ = replayed(confirmed, edits)
    without, _ = replayed(confirmed, edits, skip=seq)
    return edits_to_reach(current, without, only=named_entities([target.local()]))
