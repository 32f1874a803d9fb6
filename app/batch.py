"""Batch decisions: `fleetgate check --requests`, one decision per request line.

The input is cut into blocks of whole lines. Each block is decided by
`decide_block` (the hot loop: parse, decide, append the decision's bytes).
When more than one core is usable, each block is cut by user into a part per
worker process (`shard_lines`), always the same worker for the same user, and
the parts' decisions are put back in input order (`merged`). Workers are forked
after the policy is read, so they share it instead of loading it again; an
engine that builds users as their first request comes (Engine's `load_user`)
then builds each user once, in the worker that decides it.

On a malformed line, every decision before it is written, then
`MalformedLine` names the line (policy-format.md § Command line).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, BinaryIO, TypeVar

import orjson

from app.policy_files import gc_paused
from sync.policy.decision import Decision
from sync.policy.document import reject_json_constant
from sync.policy.engine import Engine
from sync.policy.instant import Instant
from sync.policy.request import MalformedRequest, Request, parse_request

BLOCK_BYTES = 1 << 20
"""About 4,500 requests: large enough to amortise a round trip to a worker."""
MAX_LINE_BYTES = 1 << 20
"""Longest request line read; a longer one is malformed (and is not read whole)."""
T = TypeVar("T")
_USER = re.compile(rb'"user"\s*:\s*"([^"\\]*)"')
"""A request line's user, as `shard_lines` finds it (unescaped ids only)."""


class MalformedLine(Exception):
    """The request on line `lineno` cannot be decided."""

    def __init__(self, lineno: int, message: str) -> None:
        super().__init__(f"line {lineno}: malformed request: {message}")
        self.lineno = lineno
        self.message = message

    def __reduce__(self) -> tuple[type[MalformedLine], tuple[int, str]]:
        # Workers send it back to the parent: without this, unpickling calls
        # __init__ with the formatted text only, fails in the pool's result
        # thread, and the parent waits for that result forever.
        return (MalformedLine, (self.lineno, self.message))


def parse_line(line: bytes) -> Request:
    """The request on one line (without its newline); raises MalformedRequest."""
    if len(line) > MAX_LINE_BYTES:
        raise MalformedRequest(f"longer than {MAX_LINE_BYTES:,} bytes")
    if line.endswith(b"\r"):
        line = line[:-1]
    if not line.strip():
        raise MalformedRequest("empty line, expected a JSON object")
    try:
        document: Any = orjson.loads(line)
    except orjson.JSONDecodeError as fast_error:
        # orjson refuses integers beyond 64 bits, which JSON allows.
        try:
            document = json.loads(line, parse_constant=reject_json_constant)
        except (ValueError, RecursionError):
            raise MalformedRequest(f"not valid JSON: {fast_error}") from None
    return parse_request(document)


def decide_block(
    engine: Engine, block: bytes, first_lineno: int, now: Instant, suffix: bytes = b""
) -> tuple[bytes, MalformedLine | None]:
    """Decide every line of `block` (whole lines, each ending in a newline but
    maybe the last): the decisions, one per line, and the first malformed
    line, before which the decisions stop."""
    decide = engine.decide
    loads = orjson.loads
    lines = block.split(b"\n")
    if not lines[-1]:
        lines.pop()
    wires: list[bytes] = []
    append = wires.append
    suffixed: dict[int, tuple[Decision, bytes]] = {}
    error = None
    # Each line is a few young dictionaries, freed as soon as it is decided: the
    # collector finds nothing in them, yet walking them took a third of the time.
    with gc_paused():
        for offset, line in enumerate(lines):
            # The hot loop of `fleetgate check`: kept flat on purpose.
            try:
                if len(line) > MAX_LINE_BYTES:
                    raise MalformedRequest
                request = parse_request(loads(line))
            except (orjson.JSONDecodeError, MalformedRequest):
                try:
                    request = parse_line(line)
                except MalformedRequest as problem:
                    error = MalformedLine(first_lineno + offset, str(problem))
                    break
            decision = decide(request, now)
            if suffix:
                # The engine hands out a few decisions many times: each is written
                # with the suffix once (and kept alive here, so its id stays its own).
                found = suffixed.get(id(decision))
                if found is None:
                    found = suffixed[id(decision)] = (decision, decision.wire[:-1] + suffix)
                append(found[1])
            else:
                append(decision.wire)
    wires.append(b"")
    return b"\n".join(wires) if len(wires) > 1 else b"", error


def blocks(source: BinaryIO, size: int = BLOCK_BYTES) -> Iterator[tuple[int, bytes]]:
    """`(number of its first line, block of whole lines)` from `source`."""
    rest = b""
    lineno = 1
    while chunk := source.read(size):
        data = rest + chunk
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            if len(data) > MAX_LINE_BYTES:
                # One line longer than any request: deciding stops there, so
                # hand over enough of it to say so and read no further.
                yield lineno, data[: MAX_LINE_BYTES + 1]
                return
            rest = data
            continue
        block, rest = data[:cut], data[cut:]
        yield lineno, block
        lineno += block.count(b"\n")
    if rest:
        yield lineno, rest


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def run_batch(
    engine: Engine,
    source: BinaryIO,
    out: BinaryIO,
    now: Instant,
    jobs: int,
    block_bytes: int = BLOCK_BYTES,
    suffix: bytes = b"",
) -> int:
    """Decide every request of `source`, writing decisions to `out` in order.

    `jobs` > 1 forks that many workers where the platform can fork. `suffix`
    replaces each decision's closing brace (a replica adds its lease). Returns
    the number of decisions written. Raises MalformedLine after writing the
    decisions before the malformed line.
    """
    # The compiled policy lives as long as the batch: frozen, the collector
    # stops walking its millions of objects (and forked workers do not write
    # to, and so copy, the pages they share with the parent).
    gc.freeze()
    # And paused to the end: an engine that loads users builds them as it goes, and
    # each collection after a block walked every one built so far again.
    with gc_paused():
        pieces = blocks(source, block_bytes)
        first = next(pieces, None)
        if first is None:
            return 0
        # Imported here: a process pool costs more to import than a decision from a replica.
        import multiprocessing  # noqa: PLC0415

        if jobs > 1 and "fork" in multiprocessing.get_all_start_methods():
            second = next(pieces, None)
            if second is not None:
                return _run_forked(engine, _chain(first, second, pieces), out, now, jobs, suffix)
            pieces = iter(())
        written = 0
        for lineno, block in _chain(first, None, pieces):
            written += _write(decide_block(engine, block, lineno, now, suffix), out)
        return written


def _chain(
    first: tuple[int, bytes], second: tuple[int, bytes] | None, rest: Iterator[tuple[int, bytes]]
) -> Iterator[tuple[int, bytes]]:
    yield first
    if second is not None:
        yield second
    yield from rest


_worker_engine: Engine | None = None
_worker_now: Instant = (0, "")
_worker_suffix = b""


def _work_shard(task: tuple[int, list[int], bytes]) -> tuple[bytes, MalformedLine | None]:
    """Decide a worker's part of a block: its lines' numbers (offsets in the block) and
    the lines. A malformed line is named by its number in the block."""
    assert _worker_engine is not None
    lineno, numbers, part = task
    output, error = decide_block(_worker_engine, part, 0, _worker_now, _worker_suffix)
    if error is not None:
        error = MalformedLine(lineno + numbers[error.lineno], error.message)
    return output, error


def exit_with_parent() -> None:
    """In a worker: end with the process that forked it. Killed, it cannot tell its
    workers; without this they wait for work forever, holding its output open."""
    import multiprocessing.connection  # noqa: PLC0415 - see run_batch
    import threading  # noqa: PLC0415

    parent = multiprocessing.parent_process()
    if parent is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="parent watch", daemon=True).start()


def _run_forked(
    engine: Engine,
    pieces: Iterator[tuple[int, bytes]],
    out: BinaryIO,
    now: Instant,
    jobs: int,
    suffix: bytes = b"",
) -> int:
    """Each block cut by user into one part per worker (`shard_lines`), and each
    worker given its part: a user's requests all go to one worker, which alone
    builds what deciding them needs (an engine that loads users does it then)."""
    global _worker_engine, _worker_now, _worker_suffix  # noqa: PLW0603 - handed to forked workers
    _worker_engine, _worker_now, _worker_suffix = engine, now, suffix

    def tasks() -> Iterator[tuple[list[tuple[int, list[int], bytes]], tuple[int, bytes]]]:
        for lineno, block in pieces:
            lines = block.split(b"\n")
            if not lines[-1]:
                lines.pop()
            routes, parts = shard_lines(lines, jobs)
            # Each part ends in a newline: a blank last line is then a line, and malformed.
            yield [(lineno, numbers, b"\n".join(part) + b"\n" if part else b"")
                   for numbers, part in parts], (lineno, routes)  # fmt: skip

    written = 0
    try:
        with contextlib.closing(forked_shards(jobs, _work_shard, tasks())) as done:
            for results, (lineno, routes) in done:
                written += _write(merged(results, routes, lineno), out)
        return written
    finally:
        _worker_engine = None


def shard_lines(
    lines: list[bytes], shards: int
) -> tuple[bytes, list[tuple[list[int], list[bytes]]]]:
    """Which shard each line goes to (by a hash of its user, so that a user's lines
    all go to one), and per shard the numbers (offsets) of its lines and the lines.

    The user is the first `"user": "..."` of the line, without escapes; a line
    without one goes to the first shard. A line in the wrong shard (the key was
    in an attribute first, or the id escaped) is decided all the same: this only
    spreads the work.
    """
    routes = bytearray(len(lines))
    numbers: list[list[int]] = [[] for _ in range(shards)]
    texts: list[list[bytes]] = [[] for _ in range(shards)]
    search = _USER.search
    for offset, line in enumerate(lines):
        found = search(line)
        if found is None:
            shard = 0
        else:
            shard = hash(found[1]) % shards
            routes[offset] = shard
        numbers[shard].append(offset)
        texts[shard].append(line)
    return bytes(routes), list(zip(numbers, texts, strict=True))


def merged(
    results: list[tuple[bytes, MalformedLine | None]], routes: bytes, first_lineno: int
) -> tuple[bytes, MalformedLine | None]:
    """The shards' decisions of one block (`decide_block`'s results, by shard) put
    back in the order of its lines (`routes`: each line's shard); up to the first
    malformed line of any shard, which is the block's."""
    errors = [error for _, error in results if error is not None]
    error = min(errors, key=lambda e: e.lineno) if errors else None
    count = len(routes) if error is None else error.lineno - first_lineno
    lines = in_line_order([output.split(b"\n") for output, _ in results], routes[:count])
    lines.append(b"")
    return b"\n".join(lines) if count else b"", error


def in_line_order(parts: Sequence[Sequence[T]], routes: bytes) -> list[T]:
    """One item per line of a block, taken in turn from its part (`routes`: each line's
    part, as `shard_lines` gives them): the parts' items put back in the block's order."""
    nexts = [iter(part).__next__ for part in parts]
    return [nexts[shard]() for shard in routes]


def forked_shards(
    jobs: int, work: Callable[[Any], Any], tasks: Iterable[tuple[list[Any], Any]]
) -> Iterator[tuple[list[Any], Any]]:
    """`([work(a) for a in arguments], extra)` for each `(arguments, extra)` of `tasks`
    (one argument per worker), in their order, from `jobs` forked workers: the
    first argument of every task goes to the first worker, and so on, so that each
    worker keeps what it built for the ones before. Two tasks are in flight.

    Use it closed (`contextlib.closing`): closing waits for the workers to go, since
    a parent that exits first (fleetgate ends with os._exit) would leave them waiting
    for work forever. Raises WorkerDied when a worker is killed or crashes.
    """
    import multiprocessing  # noqa: PLC0415 - see run_batch
    import queue  # noqa: PLC0415
    import threading  # noqa: PLC0415

    context = multiprocessing.get_context("fork")
    workers = []
    for _ in range(jobs):
        ours, theirs = context.Pipe()
        parents = [ours, *(connection for _, connection in workers)]
        process = context.Process(target=_serve, args=(theirs, parents, work), daemon=True)
        process.start()
        theirs.close()  # ours then reads an end of file when the worker dies
        workers.append((process, ours))
    # Sending from a thread of its own: a worker blocked on handing back a large
    # result would otherwise wait for this one, blocked on handing it more work.
    outbox: queue.Queue[tuple[Any, Any] | None] = queue.Queue(maxsize=2 * jobs)

    def send() -> None:
        while (item := outbox.get()) is not None:
            connection, argument = item
            with contextlib.suppress(OSError):  # a worker that died: the reader says so
                connection.send(argument)

    sender = threading.Thread(target=send, name="batch sender", daemon=True)
    sender.start()
    window: deque[Any] = deque()
    try:
        for arguments, extra in tasks:
            for (_process, connection), argument in zip(workers, arguments, strict=True):
                outbox.put((connection, argument))
            window.append(extra)
            if len(window) >= 2:
                yield _results(workers), window.popleft()
        while window:
            yield _results(workers), window.popleft()
    finally:
        # The sender goes first: a pipe closed while it was writing to it failed in its
        # thread ('NoneType' object cannot be interpreted as an integer), a batch stopped
        # early (a malformed line) leaving it work to send.
        with contextlib.suppress(queue.Empty):
            while True:
                outbox.get_nowait()
        outbox.put(None)  # room: only this thread puts, and the queue is empty
        sender.join(timeout=1)
        if sender.is_alive():  # writing to a worker that no longer reads: it goes now
            for process, _connection in workers:
                process.kill()
            sender.join()
        for process, connection in workers:
            connection.close()
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()


def _serve(connection: Any, parents: list[Any], work: Callable[[Any], Any]) -> None:
    """A forked worker: `work` on each argument received, until the parent goes."""
    for inherited in parents:  # the parent's ends, copied by the fork: ours to close
        inherited.close()
    exit_with_parent()
    while True:
        try:
            argument = connection.recv()
        except (EOFError, OSError):
            os._exit(0)
        result = work(argument)
        try:
            connection.send(result)
        except OSError:  # the parent stopped reading (a malformed line, or it ended)
            os._exit(0)


def _results(workers: list[tuple[Any, Any]]) -> list[Any]:
    results = []
    for _process, connection in workers:
        try:
            results.append(connection.recv())
        except (EOFError, OSError):
            raise WorkerDied("a worker process deciding the batch stopped unexpectedly") from None
    return results


class WorkerDied(RuntimeError):
    """A worker process was killed or crashed; the decisions written so far stand."""


def _write(result: tuple[bytes, MalformedLine | None], out: BinaryIO) -> int:
    output, error = result
    out.write(output)
    if error is not None:
        raise error
    return output.count(b"\n")
