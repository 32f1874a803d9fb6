"""app.offline: batches decided from a replica, every decision in the chain before it
is written out, in one process or with forked workers; and the decision log found by
search.

The replica is filled as a snapshot would fill it, in passphrase mode (so a child
process can open it too); `BLOCK` is made small so that a few dozen requests are
several blocks.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import keyring
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keyring.backends.null import Keyring as NullKeyring

from app import offline, replica_keys
from app.batch import MalformedLine, shard_lines
from app.replica import Replica
from sync.policy.instant import parse_instant
from sync.protocol import codec
from sync.protocol.messages import OfflineDecision, RecordDecisions
from sync.replication.decisions import ChainHead, continue_chain
from tests.app.test_client_cli import POLICY, fill

ROOT = Path(__file__).resolve().parents[2]
PASSPHRASE = "correct horse battery staple"


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replica_keys, "ARGON2_DEFAULTS", replica_keys.Argon2Parameters(1, 8, 1))


@pytest.fixture(autouse=True)
def no_keyring() -> Iterator[None]:
    previous = keyring.get_keyring()
    keyring.set_keyring(NullKeyring())
    yield
    keyring.set_keyring(previous)


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offline, "BLOCK", 7)


def cores(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """Decide on `count` cores: 1 in this process, more with forked workers."""
    monkeypatch.setattr(offline, "usable_cores", lambda: count)


def make_replica(directory: Path) -> Path:
    fill(directory, "boss", passphrase=PASSPHRASE)
    return directory


def opened(directory: Path) -> Replica:
    return Replica.open(directory, "acme", "boss", passphrase=lambda: PASSPHRASE)


def request_lines(count: int) -> list[bytes]:
    """Requests for each user and action, each naming its own vehicle (keys in the
    order a person writes them, not sorted)."""
    users, actions = ("vic", "sam", "boss", "nobody"), ("read", "drive")
    return [
        json.dumps({"user": users[i % 4], "action": actions[i // 4 % 2],
                    "resource": {"type": "vehicle", "id": f"vx{i}"}}).encode()
        for i in range(count)
    ]  # fmt: skip


def decide(directory: Path, lines: list[bytes], *, log: bool = True) -> tuple[int, list[bytes]]:
    out = io.BytesIO()
    replica = opened(directory)
    try:
        count = offline.decide_lines(replica, io.BytesIO(b"\n".join(lines) + b"\n"), out,
                                     log=log)  # fmt: skip
    finally:
        replica.close()
    return count, out.getvalue().splitlines()


def chain(directory: Path) -> list[OfflineDecision]:
    """The replica's unsent links, checked as the server checks an upload."""
    replica = opened(directory)
    try:
        links = replica.unsent_decisions(100_000)
        new, head = continue_chain(replica.client, ChainHead(), links)
        assert new == links and head == replica.meta().chain_head
    finally:
        replica.close()
    return links


def assert_logged(links: list[OfflineDecision], lines: list[bytes], out: list[bytes]) -> None:
    """Each decision written out is the link of its request, in order."""
    assert len(links) == len(out)
    for link, line, written in zip(links, lines, out, strict=False):
        request, decision = json.loads(line), json.loads(written)
        assert link.request == request and list(link.request) == list(request)
        assert (link.allowed, link.reason) == (decision["allowed"], decision["reason"])
        assert link.policy_version == decision["policy_version"] == 7


@pytest.mark.parametrize("count", [1, 2], ids=["one process", "forked workers"])
def test_a_batch_logs_every_decision_in_one_chain_and_writes_them_as_unlogged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_blocks: None, count: int
) -> None:
    cores(monkeypatch, count)
    directory = make_replica(tmp_path / "replicas")
    lines = request_lines(40)
    written, logged = decide(directory, lines)
    _, unlogged = decide(directory, lines, log=False)
    assert written == 40 and logged == unlogged
    links = chain(directory)
    assert_logged(links, lines, logged)
    assert [link.seq for link in links] == list(range(1, 41))
    # Each block is decided at its own reading of the clock, which the replica keeps.
    # Compared as instants: the text drops trailing zeros ("15.8Z" is before "15.81Z").
    assert links == sorted(links, key=lambda link: parse_instant(link.at))
    replica = opened(directory)
    assert replica.meta().clock_mark == links[-1].at
    replica.close()


def test_an_unlogged_batch_of_many_blocks_from_forked_workers_writes_the_logged_decisions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Unlogged, the workers build each user as its first request comes (app/batch.py):
    # over several blocks and both workers, the answers are the logged ones.
    cores(monkeypatch, 2)
    directory = make_replica(tmp_path / "replicas")
    lines = request_lines(24_000)  # about 2 MB: several blocks
    written, logged = decide(directory, lines)
    _, unlogged = decide(directory, lines, log=False)
    assert written == 24_000 and unlogged == logged
    assert {json.loads(line)["allowed"] for line in unlogged} == {True, False}


_BLOCK_LINES = st.one_of(
    st.sampled_from(request_lines(16)),
    st.sampled_from([
        # Read the slow way (`_slow_reads`): the standard library's integer beyond 64
        # bits, which orjson then cannot write back (its link is hashed apart).
        b'{"user": "vic", "action": "read", "resource": {"type": "vehicle", '
        b'"attributes": {"n": 123456789012345678901234567890, "slow": 1}}}',
        b'{"user": "sam", "action": "drive", "resource": {"type": "vehicle", "slow": 2}}',
        b'{"user": "nobody", "action": "fly", "resource": {"type": "vehicle"}}',
        b'{"resource": {"type": "vehicle"}, "action": "drive", "user": "sam"}',
    ]),
)  # fmt: skip
_BAD_LINES = st.sampled_from([b"", b"[]", b'{"user": 3}', b"{", b"\xff",
                              b'{"user": "vic", "action": "read", "resource": {"type": "x", '
                              b'"n": 1e400}}'])  # fmt: skip


@contextlib.contextmanager
def _slow_reads() -> Iterator[None]:
    """orjson made to refuse the lines holding `"slow"`, so that they take the slow way
    (the standard library), as a line orjson cannot read but json can would."""
    real = offline.orjson.loads

    def loads(data: Any) -> Any:
        if isinstance(data, bytes) and b'"slow"' in data:
            raise orjson.JSONDecodeError("made slow", "", 0)
        return real(data)

    with mock.patch.object(offline.orjson, "loads", loads):
        yield


_DECIDING: dict[Path, tuple[Any, ...]] = {}


def _deciding(directory: Path) -> tuple[Any, ...]:
    """An engine, the pending edits, a situation and the client id, as a batch has them."""
    if directory not in _DECIDING:
        replica = opened(make_replica(directory))
        decider = offline.Decider(replica, log=True)
        situation = decider.situation()
        engine = decider.batch_engine(situation.at)
        _DECIDING[directory] = (engine, decider.edits, situation, replica.client)
        replica.close()
    return _DECIDING[directory]


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    lines=st.lists(_BLOCK_LINES, min_size=1, max_size=60),
    bad=st.none() | st.tuples(st.floats(0, 1), _BAD_LINES),
    parts=st.sampled_from([2, 3]),
)
def test_a_logged_block_cut_by_user_and_put_back_is_the_block_decided_whole(
    tmp_path: Path, lines: list[bytes], bad: tuple[float, bytes] | None, parts: int
) -> None:
    # What workers hand back for the parts of a block, merged, is what one process
    # decides for the whole block: the same lines out and the same links in the chain
    # (hashes included), up to the same first malformed line.
    engine, edits, situation, client = _deciding(tmp_path / "replicas")
    if bad is not None:
        lines.insert(int(bad[0] * len(lines)), bad[1])
    with _slow_reads():
        whole = offline.decide_block(engine, edits, situation, lines, 1, log=True)
        routes, cut = shard_lines(lines, parts)
        decided = [offline.decide_block(engine, edits, situation, part, 0, log=True)
                   for _numbers, part in cut]  # fmt: skip
    merged = offline.merged_blocks(decided, routes, [numbers for numbers, _ in cut], 1)
    assert merged.output() == whole.output()
    assert merged.kinds == [] or len(merged.kinds) == len(whole.kinds)

    def where(block: offline.DecidedBlock) -> tuple[int, str] | None:
        return None if block.error is None else (block.error.lineno, block.error.message)

    assert where(merged) == where(whole)
    head = ChainHead(41, "ab" * 32)
    if whole.links is None:
        assert merged.links is None
    else:
        assert merged.links is not None
        assert merged.links.rows_after(client, head, lines) == whole.links.rows_after(
            client, head, lines
        )


_ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**80), 2**80)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=10,
)  # fmt: skip


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    requests=st.lists(
        st.fixed_dictionaries(
            {"user": st.sampled_from(["vic", "sam", "nobody", ""]),
             "action": st.sampled_from(["read", "drive", "fly"]),
             "resource": st.fixed_dictionaries({"type": st.sampled_from(["vehicle", "x"])},
                                               optional={"id": _ANY_JSON,
                                                         "attributes": _ANY_JSON})},
            optional={"context": _ANY_JSON, "extra": _ANY_JSON},
        ),
        min_size=1, max_size=12,
    ),
    ascii_only=st.booleans(),
)  # fmt: skip
def test_every_decision_a_batch_logs_is_one_the_server_takes(
    tmp_path: Path, requests: list[dict[str, Any]], ascii_only: bool
) -> None:
    # Any decidable request, whatever its values (integers beyond 64 bits, floats, text
    # in any script, nesting): logged, its link continues the chain as the server checks
    # it, and the upload that carries it is a message the server decodes. A request the
    # log cannot keep (`unloggable`) stops the batch there, as a malformed line.
    directory = tmp_path / "replicas"
    if not directory.exists():
        make_replica(directory)
    lines = [json.dumps(request, ensure_ascii=ascii_only).encode() for request in requests]
    replica = opened(directory)
    before = len(replica.unsent_decisions(100_000))
    out = io.BytesIO()
    try:
        offline.decide_lines(replica, io.BytesIO(b"\n".join(lines) + b"\n"), out, log=True)
        stopped = None
    except MalformedLine as malformed:
        stopped = malformed
    finally:
        replica.close()
    links = chain(directory)[before:]
    assert len(links) == len(out.getvalue().splitlines())
    if stopped is not None:
        assert "decision log cannot keep it" in stopped.message
        assert len(links) == stopped.lineno - 1
    else:
        assert len(links) == len(lines)
    if links:
        upload = codec.encode(RecordDecisions("r1", tuple(links)))
        assert codec.decode(upload, codec.Direction.TO_SERVER) == RecordDecisions(
            "r1", tuple(links)
        )


def test_a_second_batch_continues_the_chain_of_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_blocks: None
) -> None:
    cores(monkeypatch, 2)
    directory = make_replica(tmp_path / "replicas")
    lines = request_lines(30)
    decide(directory, lines[:9])
    _, out = decide(directory, lines[9:])
    links = chain(directory)
    assert len(links) == 30
    assert_logged(links[9:], lines[9:], out)


def test_decisions_that_rely_on_pending_edits_are_logged_with_them_by_the_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_blocks: None
) -> None:
    cores(monkeypatch, 2)
    directory = make_replica(tmp_path / "replicas")
    replica = opened(directory)
    try:
        offline.queue_edits(replica, [{"op": "assign_role", "user_id": "vic",
                                       "role_id": "r-driver"}], author="boss")  # fmt: skip
    finally:
        replica.close()
    lines = request_lines(24)
    _, out = decide(directory, lines)
    links = chain(directory)
    assert_logged(links, lines, out)
    relying = [(link, json.loads(line)) for link, line in zip(links, out, strict=True)
               if link.request["user"] == "vic" and link.request["action"] == "drive"]  # fmt: skip
    assert relying and all(link.pending == (1,) and link.allowed for link, _ in relying)
    assert all(decision["pending"] == [1] for _, decision in relying)


@pytest.mark.parametrize("count", [1, 2], ids=["one process", "forked workers"])
def test_a_malformed_line_in_a_later_block_stops_the_batch_after_logging_those_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_blocks: None, count: int
) -> None:
    cores(monkeypatch, count)
    directory = make_replica(tmp_path / "replicas")
    lines = request_lines(40)
    lines[17] = b'{"user": 3}'
    out = io.BytesIO()
    replica = opened(directory)
    with pytest.raises(MalformedLine) as malformed:
        offline.decide_lines(replica, io.BytesIO(b"\n".join(lines)), out, log=True)
    replica.close()
    assert malformed.value.lineno == 18
    written = out.getvalue().splitlines()
    assert len(written) == 17
    assert_logged(chain(directory), lines, written)


@pytest.mark.parametrize("count", [1, 2], ids=["one process", "forked workers"])
def test_a_block_that_fails_to_commit_is_not_written_out_and_the_blocks_before_stand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_blocks: None, count: int
) -> None:
    cores(monkeypatch, count)
    directory = make_replica(tmp_path / "replicas")
    real = Replica.extend_chain
    calls = []

    def third_fails(replica: Replica, *args: Any, **kwargs: Any) -> ChainHead:
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk gone")
        return real(replica, *args, **kwargs)

    monkeypatch.setattr(Replica, "extend_chain", third_fails)
    lines = request_lines(40)
    out = io.BytesIO()
    replica = opened(directory)
    with pytest.raises(OSError, match="disk gone"):
        offline.decide_lines(replica, io.BytesIO(b"\n".join(lines)), out, log=True)
    replica.close()
    written = out.getvalue().splitlines()
    assert len(written) == 14
    assert_logged(chain(directory), lines, written)


def test_a_decision_another_process_logs_between_two_blocks_takes_its_place_in_the_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_blocks: None
) -> None:
    cores(monkeypatch, 2)
    directory = make_replica(tmp_path / "replicas")
    real = Replica.extend_chain
    calls = []

    def another_between(replica: Replica, *args: Any, **kwargs: Any) -> ChainHead:
        calls.append(1)
        if len(calls) == 2:  # another process (its own connection) decides meanwhile
            other = opened(directory)
            offline.decide_one(other, *_request("vic", "vx-other"), log=True)
            other.close()
        return real(replica, *args, **kwargs)

    monkeypatch.setattr(Replica, "extend_chain", another_between)
    lines = request_lines(20)
    _, out = decide(directory, lines)
    links = chain(directory)
    assert len(links) == 21 and links[7].request["resource"]["id"] == "vx-other"
    assert_logged(links[:7] + links[8:], lines, out)


def test_a_batch_killed_midway_has_logged_every_decision_it_wrote_out(tmp_path: Path) -> None:
    directory = make_replica(tmp_path / "replicas")
    lines = request_lines(60_000)
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(b"\n".join(lines) + b"\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FLEETGATE_PASSPHRASE": PASSPHRASE,
           "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"}  # fmt: skip
    argv = [sys.executable, "-m", "app.cli", "check", "--replica-dir", str(directory),
            "--tenant", "acme", "--as", "boss", "--requests", str(requests)]  # fmt: skip
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env, cwd=ROOT)
    assert child.stdout is not None
    got = b""
    while got.count(b"\n") <= offline.BLOCK:  # past the first block: the second is written
        chunk = child.stdout.read1(1 << 16)
        assert chunk, "the batch ended before it could be killed"
        got += chunk
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    # Its workers go with it: nothing holds its output open (a pipeline ends).
    output = child.stdout.fileno()
    while ready := select.select([output], [], [], 30)[0]:
        chunk = os.read(output, 1 << 16)
        if not chunk:
            break
        got += chunk
    assert ready, "the batch's workers outlived it"
    written = got.split(b"\n")[:-1]  # what came out whole
    assert offline.BLOCK < len(written) < len(lines)
    links = chain(directory)
    assert len(links) >= len(written)
    assert_logged(links[: len(written)], lines, written)


def test_search_finds_the_decisions_a_batch_logged_until_the_server_confirms_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_blocks: None
) -> None:
    cores(monkeypatch, 2)
    directory = make_replica(tmp_path / "replicas")
    lines = request_lines(40)
    decide(directory, lines)
    replica = opened(directory)
    try:
        # Decision 18 is request 17's: vehicle vx17 (and "vx17" is a prefix of nothing else).
        assert replica.search("vx17") == [("decision", "18")]
        assert ("decision", "40") in replica.search("vx39 nobody denied")
        replica.decisions_confirmed(20)
        assert replica.search("vx17") == []
        assert replica.search("vx25") == [("decision", "26")]
        replica.decisions_confirmed(40)  # the index is empty now; the chain goes on
    finally:
        replica.close()
    decide(directory, request_lines(45)[40:])
    replica = opened(directory)
    try:
        assert replica.search("vx42") == [("decision", "43")]
        assert replica.search("vx25") == []
        offline.decide_one(replica, *_request("vic", "vx99"), log=True)
        assert replica.search("vx99") == [("decision", "46")]
    finally:
        replica.close()


def _request(user: str, vehicle: str) -> tuple[Any, dict[str, Any]]:
    from sync.policy.request import parse_request

    document = {"user": user, "action": "read", "resource": {"type": "vehicle", "id": vehicle}}
    return parse_request(document), document


@pytest.mark.parametrize("source", ["replica", "policy file"])
def test_a_batch_killed_without_logging_takes_its_workers_with_it(
    tmp_path: Path, source: str
) -> None:
    # The no-log batch is check --policy's (app/batch.py): its workers outlived a
    # killed parent, holding its output open, so a pipeline reading it never ended.
    directory = make_replica(tmp_path / "replicas")
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(b"\n".join(request_lines(200_000)) + b"\n")
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FLEETGATE_PASSPHRASE": PASSPHRASE,
           "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"}  # fmt: skip
    where = (["--replica-dir", str(directory), "--tenant", "acme", "--as", "boss", "--no-log"]
             if source == "replica" else ["--policy", str(policy)])  # fmt: skip
    argv = [sys.executable, "-m", "app.cli", "check", *where, "--requests", str(requests)]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env, cwd=ROOT)
    assert child.stdout is not None
    got = b""
    while got.count(b"\n") <= 10_000:  # several blocks in: the workers are running
        chunk = child.stdout.read1(1 << 16)
        assert chunk, "the batch ended before it could be killed"
        got += chunk
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    output = child.stdout.fileno()
    while ready := select.select([output], [], [], 30)[0]:
        if not os.read(output, 1 << 16):
            break
    assert ready, "the batch's workers outlived it"


def test_a_worker_that_dies_is_named_and_exits_70_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.batch import WorkerDied
    from app.cli import main

    directory = make_replica(tmp_path / "replicas")
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(b"\n".join(request_lines(3)) + b"\n")

    def dies(*_args: object, **_kwargs: object) -> int:
        raise WorkerDied("a worker process deciding the batch stopped unexpectedly")

    monkeypatch.setattr(offline, "decide_lines", dies)
    monkeypatch.setenv("FLEETGATE_PASSPHRASE", PASSPHRASE)
    code = main(["check", "--replica-dir", str(directory), "--tenant", "acme", "--as", "boss",
                 "--requests", str(requests)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 70 and "a worker process deciding the batch stopped" in err
    assert "Traceback" not in err
