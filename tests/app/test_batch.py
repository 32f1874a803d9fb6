"""app.batch: blocks of lines, decided in order, in one process or several."""

from __future__ import annotations

import io
import json
import os

import pytest

from app import batch
from app.batch import MalformedLine, WorkerDied, blocks, run_batch
from sync.policy.document import parse_policy
from sync.policy.engine import Engine
from sync.policy.instant import Instant, parse_instant

NOW = parse_instant("2026-11-22T12:00:00Z")
POLICY = {
    "format": "fleetgate.policy/1",
    "tenant": "t",
    "resource_types": {"route": ["read", "update"]},
    "roles": [
        {"name": "viewer", "grants": [{"resource": "route", "actions": ["read"]}]},
        {
            "name": "editor",
            "inherits": ["viewer"],
            "grants": [
                {"resource": "route", "actions": ["update"], "when": {"resource.n": {"lt": 500}}}
            ],
        },
    ],
    "users": [{"id": f"u{i}", "roles": [{"role": "editor" if i % 2 else "viewer"}]}
              for i in range(50)],
}  # fmt: skip


def _requests(count: int) -> list[bytes]:
    return [
        json.dumps(
            {
                "user": f"u{i % 60}",
                "action": "update" if i % 3 else "read",
                "resource": {"type": "route", "attributes": {"n": i % 1000}},
            }
        ).encode()
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(parse_policy(POLICY, now=NOW))


def _run(engine: Engine, data: bytes, jobs: int, block_bytes: int = 4096) -> tuple[bytes, str]:
    out = io.BytesIO()
    try:
        run_batch(engine, io.BytesIO(data), out, NOW, jobs, block_bytes)
    except MalformedLine as error:
        return out.getvalue(), str(error)
    return out.getvalue(), ""


def test_blocks_cut_at_line_ends_and_count_lines() -> None:
    data = b"a\nbb\nccc\ndddd"
    pieces = list(blocks(io.BytesIO(data), size=3))
    assert b"".join(block for _, block in pieces) == data
    assert all(block.endswith(b"\n") for _, block in pieces[:-1])
    starts = [start for start, _ in pieces]
    assert starts == sorted(starts)
    assert starts[0] == 1
    assert [start for start, block in pieces if block.startswith(b"dddd")] == [4]


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_parallel_output_is_the_serial_output_in_input_order(engine: Engine, jobs: int) -> None:
    data = b"\n".join(_requests(3000)) + b"\n"
    serial, error = _run(engine, data, 1, block_bytes=1 << 30)
    assert error == ""
    parallel, error = _run(engine, data, jobs)
    assert error == ""
    assert parallel == serial
    decisions = [json.loads(line) for line in parallel.splitlines()]
    assert len(decisions) == 3000
    assert {d["allowed"] for d in decisions} == {True, False}


@pytest.mark.parametrize("jobs", [1, 2])
def test_malformed_line_in_a_later_block_stops_after_the_lines_before_it(
    engine: Engine, jobs: int
) -> None:
    lines = _requests(3000)
    lines[2499] = b'{"user": "u1", "action": "read"}'
    output, error = _run(engine, b"\n".join(lines) + b"\n", jobs)
    assert error.startswith("line 2500: malformed request:")
    assert len(output.splitlines()) == 2499


def test_last_line_without_newline_is_decided(engine: Engine) -> None:
    data = b"\n".join(_requests(10))
    output, error = _run(engine, data, 2, block_bytes=64)
    assert error == ""
    assert len(output.splitlines()) == 10


def test_a_killed_worker_is_reported_not_waited_for(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = batch.decide_block

    def dies_on_a_later_block(
        engine: Engine, block: bytes, first_lineno: int, now: Instant, suffix: bytes = b""
    ) -> tuple[bytes, MalformedLine | None]:
        if first_lineno > 1:
            os._exit(9)  # as if the OOM killer took it
        return real(engine, block, first_lineno, now, suffix)

    monkeypatch.setattr(batch, "decide_block", dies_on_a_later_block)
    with pytest.raises(WorkerDied):
        _run(engine, b"\n".join(_requests(3000)) + b"\n", 2)


@pytest.mark.parametrize("jobs", [1, 2])
def test_an_endless_line_is_malformed_and_not_read_whole(engine: Engine, jobs: int) -> None:
    good = b"\n".join(_requests(3000)) + b"\n"
    endless = b'{"user": "' + b"x" * (3 * batch.MAX_LINE_BYTES)
    output, error = _run(engine, good + endless, jobs)
    assert error == "line 3001: malformed request: longer than 1,048,576 bytes"
    assert len(output.splitlines()) == 3000
