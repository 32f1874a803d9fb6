"""Batch decisions: `fleetgate check --requests`, one decision per request line.

The input is cut into blocks of whole lines. Each block is decided by
`decide_block` (the hot loop: parse, decide, append the decision's bytes);
blocks go to worker processes when more than one core is usable, and their
output is written back in input order. Workers are forked after the policy is
compiled, so they share it instead of loading it again.

On a malformed line, every decision before it is written, then
`MalformedLine` names the line (policy-format.md § Command line).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from app.policy_files import gc_paused
from sync.policy.document import reject_json_constant
from sync.policy.engine import Engine
from sync.policy.instant import Instant
from sync.policy.request import MalformedRequest, Request, parse_request

if TYPE_CHECKING:
    from concurrent.futures import Future

BLOCK_BYTES = 1 << 20
"""About 4,500 requests: large enough to amortise a round trip to a worker."""
MAX_LINE_BYTES = 1 << 20
"""Longest request line read; a longer one is malformed (and is not read whole)."""


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
            if suffix:
                append(decide(request, now).wire[:-1] + suffix)
            else:
                append(decide(request, now).wire)
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


def _work(task: tuple[int, bytes]) -> tuple[bytes, MalformedLine | None]:
    assert _worker_engine is not None
    return decide_block(_worker_engine, task[1], task[0], _worker_now, _worker_suffix)


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
    global _worker_engine, _worker_now, _worker_suffix  # noqa: PLW0603 - handed to forked workers
    _worker_engine, _worker_now, _worker_suffix = engine, now, suffix
    written = 0
    try:
        with contextlib.closing(forked_in_order(jobs, _work, ((t, None) for t in pieces))) as done:
            for result, _ in done:
                written += _write(result, out)
        return written
    finally:
        _worker_engine = None


def forked_in_order(
    jobs: int, work: Callable[[Any], Any], tasks: Iterable[tuple[Any, Any]]
) -> Iterator[tuple[Any, Any]]:
    """`(work(argument), extra)` for each `(argument, extra)` of `tasks`, in their order,
    from `jobs` forked workers with 2 x `jobs` tasks in flight; a task is taken from
    `tasks` only when there is room, so what it reads (a clock) is read then.

    Use it closed (`contextlib.closing`): closing waits for the workers to go, since
    a parent that exits first (fleetgate ends with os._exit) would leave them waiting
    on their queue forever. Raises WorkerDied when a worker is killed or crashes.
    """
    import multiprocessing  # noqa: PLC0415 - see run_batch
    from concurrent.futures import ProcessPoolExecutor  # noqa: PLC0415
    from concurrent.futures.process import BrokenProcessPool  # noqa: PLC0415

    # A process pool executor, not multiprocessing.Pool: if a worker dies, its
    # futures fail with BrokenProcessPool instead of waiting forever.
    executor = ProcessPoolExecutor(
        jobs, mp_context=multiprocessing.get_context("fork"), initializer=exit_with_parent
    )
    window: deque[tuple[Future[Any], Any]] = deque()
    try:
        for argument, extra in tasks:
            window.append((executor.submit(work, argument), extra))
            if len(window) >= 2 * jobs:
                future, kept = window.popleft()
                yield future.result(), kept
        while window:
            future, kept = window.popleft()
            yield future.result(), kept
    except BrokenProcessPool:
        raise WorkerDied("a worker process deciding the batch stopped unexpectedly") from None
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


class WorkerDied(RuntimeError):
    """A worker process was killed or crashed; the decisions written so far stand."""


def _write(result: tuple[bytes, MalformedLine | None], out: BinaryIO) -> int:
    output, error = result
    out.write(output)
    if error is not None:
        raise error
    return output.count(b"\n")
