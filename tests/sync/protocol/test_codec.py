"""sync.protocol: every message round-trips; hostile frames get a named violation."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sync.protocol.codec import decode, encode, error_for
from sync.protocol.errors import ErrorCode, ProtocolBug, ProtocolViolation
from sync.protocol.messages import (
    MAX_BATCH,
    MAX_MESSAGE_BYTES,
    CatchUp,
    Change,
    Changes,
    Direction,
    Error,
    Hello,
    Message,
    Mutation,
    Outcome,
    Ping,
    Pong,
    Push,
    PushResult,
    Refresh,
    Result,
    Resync,
    SignedIn,
    SignIn,
    Snapshot,
    SnapshotResume,
    Welcome,
    Wipe,
)

EDIT = {"op": "assign_role", "user_id": "alice", "role_id": "r-1", "expires": None}
TO_SERVER: list[Message] = [
    SignIn("r1", "acme", "alice", "correct horse", "dev-1"),
    Refresh("r2", "refresh-token", "dev-1"),
    Hello(1, "access-token", "dev-1", "client-1", 0),
    Push("r3", (Mutation("client-1", 1, 41, EDIT), Mutation("client-1", 2, 41, EDIT))),
    SnapshotResume("snap-1", 3),
    Ping("r4"),
]
TO_CLIENT: list[Message] = [
    SignedIn("r1", "access", "2026-11-22T10:00:00Z", "refresh", "alice", "acme"),
    Welcome("acme", "alice", 42, CatchUp.CHANGES),
    Changes(
        40, 42, (Change(41, EDIT, "alice", "dev-1", "client-1", 1, "2026-11-22T09:00:00Z"),), False
    ),
    Snapshot("snap-1", 42, 0, 3, {"roles": []}),
    PushResult(
        "r3",
        (
            Result("client-1", 1, Outcome.APPLIED, version=43),
            Result(
                "client-1", 2, Outcome.REJECTED, code="constraint", reason="breaks payments-sod"
            ),
        ),
    ),
    Resync("fell behind"),
    Wipe("device revoked"),
    Pong("r4"),
    Error(ErrorCode.FORBIDDEN, "role:assign needed", fatal=False, ref="r3"),
]


@pytest.mark.parametrize("message", TO_SERVER, ids=lambda m: type(m).__name__)
def test_client_messages_round_trip(message: Message) -> None:
    assert decode(encode(message), Direction.TO_SERVER) == message


@pytest.mark.parametrize("message", TO_CLIENT, ids=lambda m: type(m).__name__)
def test_server_messages_round_trip(message: Message) -> None:
    assert decode(encode(message), Direction.TO_CLIENT) == message


def test_wire_form_is_the_documented_one() -> None:
    frame = encode(Push("r3", (Mutation("c", 7, 41, EDIT),)))
    assert json.loads(frame) == {
        "type": "push",
        "ref": "r3",
        "mutations": [{"client": "c", "seq": 7, "base_version": 41, "edit": EDIT}],
    }
    result = json.loads(encode(PushResult("r", (Result("c", 7, Outcome.APPLIED, version=43),))))
    assert result["results"] == [{"client": "c", "seq": 7, "outcome": "applied", "version": 43}]


def test_secrets_stay_out_of_reprs() -> None:
    assert "correct horse" not in repr(TO_SERVER[0])
    assert "refresh-token" not in repr(TO_SERVER[1])
    assert "access-token" not in repr(TO_SERVER[2])
    assert "refresh" not in repr(TO_CLIENT[0]).split("tenant")[1]


def _hello(**changes: Any) -> dict[str, Any]:
    document = {
        "type": "hello",
        "protocol": 1,
        "access_token": "t",
        "device": "d",
        "client": "c",
        "cursor": 0,
    }
    document.update(changes)
    return document


def _push(count: int, **mutation: Any) -> dict[str, Any]:
    item = {"client": "c", "seq": 1, "base_version": 0, "edit": EDIT} | mutation
    return {"type": "push", "ref": "p1", "mutations": [item] * count}


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


HOSTILE: list[tuple[str, bytes | str, ErrorCode, str]] = [
    ("not json", b"{nope", ErrorCode.MALFORMED, "not JSON"),
    ("not utf-8", b'{"type": "\xff"}', ErrorCode.MALFORMED, "not JSON"),
    ("a list", b"[]", ErrorCode.MALFORMED, "JSON object"),
    ("a string", b'"hello"', ErrorCode.MALFORMED, "JSON object"),
    ("NaN", json.dumps(_hello()).replace('"cursor": 0', '"cursor": NaN'), ErrorCode.MALFORMED, ""),
    ("no type", b'{"ref": "x"}', ErrorCode.UNKNOWN_TYPE, "None"),
    ("unknown type", b'{"type": "drop_tables"}', ErrorCode.UNKNOWN_TYPE, "drop_tables"),
    ("type not a string", b'{"type": 5}', ErrorCode.UNKNOWN_TYPE, "5"),
    ("server-only type", json.dumps({"type": "wipe", "reason": "x"}), ErrorCode.UNKNOWN_TYPE, ""),
    ("missing field", json.dumps({"type": "ping"}), ErrorCode.MALFORMED, "ref: is missing"),
    ("unknown field", json.dumps(_hello(author="root")), ErrorCode.MALFORMED, "'author'"),
    ("tenant in hello", json.dumps(_hello(tenant="other")), ErrorCode.MALFORMED, "'tenant'"),
    ("cursor a string", json.dumps(_hello(cursor="5")), ErrorCode.MALFORMED, "cursor"),
    ("cursor a bool", json.dumps(_hello(cursor=True)), ErrorCode.MALFORMED, "cursor"),
    ("cursor negative", json.dumps(_hello(cursor=-1)), ErrorCode.MALFORMED, "cursor"),
    ("cursor huge", json.dumps(_hello(cursor=2**64)), ErrorCode.MALFORMED, "cursor"),
    ("cursor a float", json.dumps(_hello(cursor=1.5)), ErrorCode.MALFORMED, "cursor"),
    ("empty device", json.dumps(_hello(device="")), ErrorCode.MALFORMED, "device"),
    ("long device", json.dumps(_hello(device="d" * 257)), ErrorCode.MALFORMED, "device"),
    ("long token", json.dumps(_hello(access_token="t" * 4097)), ErrorCode.MALFORMED, "token"),
    ("token an object", json.dumps(_hello(access_token={})), ErrorCode.MALFORMED, "token"),
    ("batch too big", json.dumps(_push(MAX_BATCH + 1)), ErrorCode.TOO_MANY, "mutations"),
    ("mutation not object", json.dumps({"type": "push", "ref": "p", "mutations": [1]}),
     ErrorCode.MALFORMED, "mutations[0]"),
    ("mutations not list", json.dumps({"type": "push", "ref": "p", "mutations": {}}),
     ErrorCode.MALFORMED, "mutations"),
    ("edit without op", json.dumps(_push(1, edit={"user_id": "x"})), ErrorCode.MALFORMED,
     "mutations[0].edit.op"),
    ("forged author", json.dumps(_push(1, author="admin")), ErrorCode.MALFORMED, "'author'"),
    ("seq negative", json.dumps(_push(1, seq=-5)), ErrorCode.MALFORMED, "mutations[0].seq"),
    ("too large", b'{"type": "ping", "ref": "' + b"x" * MAX_MESSAGE_BYTES + b'"}',
     ErrorCode.TOO_LARGE, "bytes"),
    ("too deep", json.dumps(_push(1, edit={"op": "x", "a": _nested(32)})),
     ErrorCode.TOO_DEEP, "deeper"),
    ("recursion bomb", b"[" * 100_000 + b"]" * 100_000, ErrorCode.TOO_DEEP, ""),
    ("password too long", json.dumps({"type": "sign_in", "ref": "r", "tenant": "t", "user": "u",
     "password": "p" * 1025, "device": "d"}), ErrorCode.MALFORMED, "password"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("frame", "code", "words"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_hostile_frames_are_refused_with_a_code_naming_the_problem(
    frame: bytes | str, code: ErrorCode, words: str
) -> None:
    with pytest.raises(ProtocolViolation) as refused:
        decode(frame, Direction.TO_SERVER)
    assert refused.value.code is code
    assert words in refused.value.message


def test_a_violation_keeps_the_ref_so_the_error_answers_the_right_request() -> None:
    with pytest.raises(ProtocolViolation) as refused:
        decode(json.dumps(_push(1, seq="one")), Direction.TO_SERVER)
    error = error_for(refused.value, fatal=False)
    assert (error.ref, error.code) == ("p1", ErrorCode.MALFORMED)
    assert decode(encode(error), Direction.TO_CLIENT) == error


def test_a_password_never_appears_in_a_violation_message() -> None:
    frame = json.dumps(
        {"type": "sign_in", "ref": "r", "tenant": "t", "user": "u", "password": "hunter2" * 200,
         "device": "d"}
    )  # fmt: skip
    with pytest.raises(ProtocolViolation) as refused:
        decode(frame, Direction.TO_SERVER)
    assert "hunter2" not in refused.value.message


def test_encoding_something_that_is_not_a_message_is_our_bug() -> None:
    with pytest.raises(ProtocolBug):
        encode(object())  # type: ignore[arg-type]
    with pytest.raises(ProtocolBug):
        encode(Snapshot("s", 1, 0, 1, {"blob": "x" * MAX_MESSAGE_BYTES}))


def test_optional_result_fields_may_be_absent_or_null() -> None:
    frame = json.dumps(
        {"type": "push_result", "ref": "r", "results": [
            {"client": "c", "seq": 1, "outcome": "applied", "version": 3, "code": None}]}
    )  # fmt: skip
    message = decode(frame, Direction.TO_CLIENT)
    assert isinstance(message, PushResult)
    assert message.results[0] == Result("c", 1, Outcome.APPLIED, version=3)


def test_pong_and_ping_are_directional() -> None:
    assert decode(encode(Ping("x")), Direction.TO_SERVER) == Ping("x")
    with pytest.raises(ProtocolViolation):
        decode(encode(Pong("x")), Direction.TO_SERVER)
