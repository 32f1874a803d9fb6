"""app.batch: blocks of lines, decided in order, in one process or several."""

from __future__ import annotations

import io
import json
import os
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


def test_a_batch_stopped_early_never_closes_a_pipe_its_sender_is_writing_to(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The workers' pipes were closed while the sender thread could still be writing to
    # one: "'NoneType' object cannot be interpreted as an integer" in that thread, in
    # about 1 run in 30 of a batch stopped by a malformed line with work still queued.
    failed: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda hook: failed.append(hook.exc_value))
    lines = _requests(20_000)
    lines[1200] = b'{"user": "u1", "action": "read"}'
    data = b"\n".join(lines) + b"\n"
    for block_bytes in [4096, 65536, 200_000] * 40:
        _, error = _run(engine, data, 2, block_bytes)
        assert error.startswith("line 1201: malformed request:")
    assert failed == []


def test_last_line_without_newline_is_decided(engine: Engine) -> None:
    data = b"\n".join(_requests(10))
    output, error = _run(engine, data, 2, block_bytes=64)
    assert error == ""
    assert len(output.splitlines()) == 10


def test_a_killed_worker_is_reported_not_waited_for(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = batch.decide_block
    calls: list[int] = []  # each forked worker has its own copy

    def dies_on_a_later_block(
        engine: Engine, block: bytes, first_lineno: int, now: Instant, suffix: bytes = b""
    ) -> tuple[bytes, MalformedLine | None]:
        calls.append(1)
        if len(calls) > 1:
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


# --- shards: each user's lines go to one worker, and come back in input order ------------


def test_each_users_lines_go_to_one_shard_however_the_json_is_spaced() -> None:
    lines = [b'{"user":"u%d","action":"read","resource":{"type":"route"}}' % (i % 40)
             for i in range(400)]  # fmt: skip
    lines += [json.dumps({"user": f"u{i % 40}", "action": "read"}).encode() for i in range(400)]
    lines += [b"", b"[]", b'{"action": "read"}']
    routes, parts = batch.shard_lines(lines, 3)
    shard_of: dict[bytes, set[int]] = {}
    for line, shard in zip(lines, routes, strict=True):
        user = json.loads(line).get("user") if line.startswith(b"{") else None
        if user is not None:
            shard_of.setdefault(user, set()).add(shard)
    assert all(len(shards) == 1 for shards in shard_of.values())
    assert len({next(iter(s)) for s in shard_of.values()}) == 3  # the work is spread
    assert routes[-3:] == b"\0\0\0"  # no user: the first shard
    # Every line is in its shard's part once, in order.
    for shard, (numbers, part) in enumerate(parts):
        assert numbers == [i for i, r in enumerate(routes) if r == shard]
        assert part == [lines[i] for i in numbers]


@pytest.mark.parametrize("jobs", [2, 3])
def test_malformed_lines_in_several_shards_stop_at_the_first_of_them(
    engine: Engine, jobs: int
) -> None:
    lines = _requests(6000)
    # Users of two shards (hashes differ from run to run): the earlier malformed line
    # in a later shard, both in the first block, and one more in a later block.
    first = next(f"u{i}" for i in range(60) if hash(f"u{i}".encode()) % jobs)
    lines[1700] = b'{"user": "%s", "action": "read"}' % first.encode()
    lines[2200] = b""  # blank, and no user: the first shard's
    lines[5999] = b'{"user": "u2", "action": "read"}'
    output, error = _run(engine, b"\n".join(lines) + b"\n", jobs, block_bytes=1 << 18)
    assert error.startswith("line 1701: malformed request:")
    serial, _ = _run(engine, b"\n".join(lines[:1700]) + b"\n", 1)
    assert output == serial


@pytest.mark.parametrize("spaced", [True, False], ids=["json.dumps", "compact"])
def test_a_sharded_batch_writes_what_one_process_writes(engine: Engine, spaced: bool) -> None:
    lines = _requests(5000)
    if not spaced:
        lines = [json.dumps(json.loads(line), separators=(",", ":")).encode() for line in lines]
    data = b"\n".join(lines) + b"\n"
    serial, _ = _run(engine, data, 1, block_bytes=1 << 30)
    for block_bytes in (4096, 1 << 30):
        assert _run(engine, data, 2, block_bytes)[0] == serial


_DECIDABLE = st.one_of(
    st.sampled_from(_requests(60)),
    st.sampled_from([
        # Another "user" first (an attribute): the line may go to the wrong shard.
        b'{"resource": {"type": "route", "attributes": {"user": "u9"}}, "user": "u1", '
        b'"action": "read"}',
        b'{"user": "u\\u0031", "action": "update", "resource": {"type": "route"}}',
        b'{"user":"u51","action":"read","resource":{"type":"route"}}\r',
        b'{"user": "u2", "action": "fly", "resource": {"type": "route"}}',
    ]),
)  # fmt: skip
_MALFORMED = st.one_of(
    st.sampled_from([b"", b"[]", b"{}", b"null", b'{"user": 3}', b"\xff\xfe", b"{", b"\r",
                     b'{"user": "u1", "action": "read", "resource": {"type": 4}}']),
    st.binary(max_size=40).filter(lambda b: b"\n" not in b),
)  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(_DECIDABLE, min_size=1, max_size=400),
    bad=st.none() | st.tuples(st.floats(0, 1), _MALFORMED),
    block=st.sampled_from([256, 2048, 8192]),
)
def test_any_lines_sharded_give_what_one_process_gives(
    engine: Engine, lines: list[bytes], bad: tuple[float, bytes] | None, block: int
) -> None:
    if bad is not None:
        lines.insert(int(bad[0] * len(lines)), bad[1])
    data = b"\n".join(lines) + b"\n"
    assert _run(engine, data, 2, block) == _run(engine, data, 1, block)
