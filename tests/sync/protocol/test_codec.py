"""sync.protocol.codec: every message of protocol 2 round-trips; hostile frames get a
named violation; answers fit a frame by construction."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.protocol.codec import decode, encode, error_for, push_results
from sync.protocol.errors import ErrorCode, ProtocolBug, ProtocolViolation
from sync.protocol.messages import (
    MAX_BATCH,
    MAX_MESSAGE_BYTES,
    CatchUp,
    Change,
    Changes,
    Clock,
    Conflict,
    DecisionsRecorded,
    Direction,
    Enroll,
    Error,
    Hello,
    Invite,
    Invited,
    Message,
    Mutation,
    OfflineDecision,
    Outcome,
    PasswordSet,
    Ping,
    Pong,
    Push,
    PushResult,
    RecordDecisions,
    Refresh,
    Result,
    Resume,
    Resync,
    SetPassword,
    SignedIn,
    SignIn,
    Snapshot,
    SnapshotResume,
    StaleDecisions,
    Welcome,
    Wipe,
    WipeCode,
)

EDIT = {"op": "assign_role", "user_id": "alice", "role_id": "r-1", "expires": None}
HASH = "ab" * 32
DECISION = OfflineDecision(
    3, "0" * 64, HASH, {"user": "dan", "action": "read", "resource": {"type": "vehicle"}},
    True, "granted by role driver: vehicle read", "2026-11-22T09:00:00Z", Clock.FROZEN, False,
    (7, 8), 41,
)  # fmt: skip
TO_SERVER: list[Message] = [
    SignIn("r1", "acme", "alice", "correct horse", "dev-1"),
    Refresh("r2", "refresh-token", "dev-1"),
    Hello(2, "access-token", "dev-1", "client-1", 0),
    Push("r3", (Mutation("client-1", 1, 41, EDIT), Mutation("client-1", 2, 41, EDIT))),
    SnapshotResume("snap-1", 3),
    Ping("r4"),
    Enroll("r5", "acme", "alice", "ABCD-EFGH", "a long new password", "dev-1"),
    Hello(2, "access-token", "dev-1", "client-1", 0, Resume("s42-abc", 3)),
    RecordDecisions("r6", (DECISION,)),
    Invite("r7", "bob", 72),
    SetPassword("r8", "bob", "another long password"),
]
TO_CLIENT: list[Message] = [
    SignedIn("r1", "access", "2026-11-22T10:00:00Z", "refresh", "alice", "acme"),
    Welcome(
        "acme",
        "alice",
        42,
        CatchUp.CHANGES,
        "2026-11-22T10:00:00Z",
        7,
        604800,
        StaleDecisions.DENY,
        ("assign_role", "create_user"),
        3,
    ),
    Changes(
        40, 42, (Change(41, EDIT, "alice", "dev-1", "client-1", 1, "2026-11-22T09:00:00Z"),), False
    ),
    Changes(40, 42, (), False, HASH),
    Snapshot("snap-1", 42, 0, 3, {"roles": []}, HASH),
    PushResult(
        "r9",
        (
            Result(
                "c",
                4,
                Outcome.CONFLICT,
                40,
                "concurrent_change",
                "kept",
                Conflict("role r-1 name", "a", None),
            ),
        ),
        more=True,
    ),
    DecisionsRecorded("r6", 1, 3, HASH),
    Invited("r7", "bob", "ABCD-EFGH", "2026-11-25T10:00:00Z"),
    PasswordSet("r8", "bob"),
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
    Wipe(WipeCode.DEVICE_REVOKED, "device revoked"),
    Wipe(WipeCode.USER_REMOVED, "user removed"),
    Pong("r4", "2026-11-22T10:00:00.25Z"),
    Error(ErrorCode.FORBIDDEN, "role:assign needed", fatal=False, ref="r3"),
    Error(ErrorCode.SEQ_GAP, "expected seq 8", ref="r3", expected_seq=8),
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
    assert result["more"] is False


def test_secrets_stay_out_of_reprs() -> None:
    assert "correct horse" not in repr(TO_SERVER[0])
    assert "refresh-token" not in repr(TO_SERVER[1])
    assert "access-token" not in repr(TO_SERVER[2])
    assert "refresh" not in repr(TO_CLIENT[0]).split("tenant")[1]
    assert "a long new password" not in repr(TO_SERVER[6]) and "ABCD" not in repr(TO_SERVER[6])
    assert "another long password" not in repr(TO_SERVER[10])
    assert "ABCD" not in repr(Invited("r7", "bob", "ABCD-EFGH", "2026-11-25T10:00:00Z"))


def _hello(**changes: Any) -> dict[str, Any]:
    document = {
        "type": "hello",
        "protocol": 2,
        "access_token": "t",
        "device": "d",
        "client": "c",
        "cursor": 0,
    }
    document.update(changes)
    return document


def _decision() -> dict[str, Any]:
    return {
        "seq": 1, "prev_hash": "0" * 64, "hash": "0" * 64, "request": {}, "allowed": False,
        "reason": "r", "at": "2026-11-22T09:00:00Z", "clock": "wall", "lease_fresh": True,
        "pending": [], "policy_version": 1,
    }  # fmt: skip


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
    ("server-only type", json.dumps({"type": "wipe", "code": "user_removed", "reason": "x"}),
     ErrorCode.UNKNOWN_TYPE, ""),
    ("protocol 1", json.dumps(_hello(protocol=1)), ErrorCode.UPGRADE_REQUIRED, "protocol 2, not 1"),
    ("protocol 3 with new fields", json.dumps(_hello(protocol=3, features=["x"])),
     ErrorCode.UPGRADE_REQUIRED, "upgrade the client"),
    ("protocol not a number", json.dumps(_hello(protocol="2")), ErrorCode.MALFORMED, "protocol"),
    ("resume not an object", json.dumps(_hello(resume="s1")), ErrorCode.MALFORMED, "resume"),
    ("resume without chunk", json.dumps(_hello(resume={"snapshot": "s"})), ErrorCode.MALFORMED,
     "resume.next_chunk"),
    ("invite hours 0", json.dumps({"type": "invite", "ref": "r", "user": "u", "hours": 0}),
     ErrorCode.MALFORMED, "hours"),
    ("invite hours a bool", json.dumps({"type": "invite", "ref": "r", "user": "u", "hours": True}),
     ErrorCode.MALFORMED, "hours"),
    ("decision hash not hex", json.dumps({"type": "record_decisions", "ref": "r", "decisions": [
        {**_decision(), "hash": "XYZ"}]}), ErrorCode.MALFORMED, "decisions[0].hash"),
    ("decision clock unknown", json.dumps({"type": "record_decisions", "ref": "r", "decisions": [
        {**_decision(), "clock": "sundial"}]}), ErrorCode.MALFORMED, "decisions[0].clock"),
    ("decision pending strings", json.dumps({"type": "record_decisions", "ref": "r", "decisions": [
        {**_decision(), "pending": ["1"]}]}), ErrorCode.MALFORMED, "pending[0]"),
    ("decision at not a time", json.dumps({"type": "record_decisions", "ref": "r", "decisions": [
        {**_decision(), "at": "yesterday"}]}), ErrorCode.MALFORMED, "decisions[0].at"),
    ("decision request a list", json.dumps({"type": "record_decisions", "ref": "r", "decisions": [
        {**_decision(), "request": []}]}), ErrorCode.MALFORMED, "decisions[0].request"),
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
        encode(Snapshot("s", 1, 0, 1, {"blob": "x" * MAX_MESSAGE_BYTES}, HASH))


def test_optional_result_fields_may_be_absent_or_null() -> None:
    frame = json.dumps(
        {"type": "push_result", "ref": "r", "results": [
            {"client": "c", "seq": 1, "outcome": "applied", "version": 3, "code": None}],
         "more": False}
    )  # fmt: skip
    message = decode(frame, Direction.TO_CLIENT)
    assert isinstance(message, PushResult)
    assert message.results[0] == Result("c", 1, Outcome.APPLIED, version=3)


def test_pong_and_ping_are_directional() -> None:
    assert decode(encode(Ping("x")), Direction.TO_SERVER) == Ping("x")
    with pytest.raises(ProtocolViolation):
        decode(encode(Pong("x", "2026-11-22T10:00:00Z")), Direction.TO_SERVER)


def test_a_stuck_queue_from_a_big_answer_results_are_split_to_fit_frames() -> None:
    """Defect 5: 500 outcomes with long multibyte reasons and client ids must still
    reach the client, in frames under the limit, in order."""
    client = "\u00e9\u0001" * 128  # 256 characters that JSON spells in 6 bytes each
    reason = "ü" * 512  # 1,024 bytes of UTF-8
    results = [
        Result(client, seq, Outcome.REJECTED, None, "forbidden", reason) for seq in range(1, 501)
    ]
    messages = push_results("r", results)
    assert len(messages) > 1
    assert [m.more for m in messages] == [True] * (len(messages) - 1) + [False]
    frames = [encode(m) for m in messages]
    assert all(len(frame) <= MAX_MESSAGE_BYTES for frame in frames)
    decoded = [decode(frame, Direction.TO_CLIENT) for frame in frames]
    assert [r for m in decoded for r in m.results] == results  # type: ignore[union-attr]


def test_a_small_answer_is_one_message() -> None:
    results = [Result("c", 1, Outcome.APPLIED, 3)]
    assert push_results("r", results) == [PushResult("r", tuple(results), more=False)]


# --- fuzz: every field of every message given a value of another type -----------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False,
    allow_infinity=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                max_size=3),
    max_leaves=6,
)  # fmt: skip


def _fields(document: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a message document a value sits at."""
    found = [path] if path else []
    if isinstance(document, dict):
        for key, value in document.items():
            if path or key != "type":
                found += _fields(value, (*path, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found += _fields(value, (*path, index))
    return found


def _replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    copy = json.loads(json.dumps(document))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return copy


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_any_field_of_any_message_given_any_json_value_is_decoded_or_refused(
    data: st.DataObject,
) -> None:
    """Wrong types, not only wrong values: decode answers with a message or a
    ProtocolViolation, never another exception."""
    message = data.draw(st.sampled_from(TO_SERVER + TO_CLIENT))
    direction = Direction.TO_SERVER if message in TO_SERVER else Direction.TO_CLIENT
    document = json.loads(encode(message))
    path = data.draw(st.sampled_from(_fields(document)))
    frame = json.dumps(_replaced(document, path, data.draw(_JSON)))
    try:
        decode(frame, direction)
    except ProtocolViolation as violation:
        assert violation.message


# The scan that lets decode skip looking at each string (codec `_may_be_unstorable`):
# every way a NUL or a lone surrogate can be written is still refused, in text and in
# bytes, in a value and in a key; what only looks like one is still accepted.
UNSTORABLE = [
    ("escaped NUL in a value", '{"type":"ping","ref":"r","x":"a\\u0000"}'),
    ("escaped NUL in a key", '{"type":"ping","ref":"r","a\\u0000":1}'),
    ("raw NUL in text", '{"type":"ping","ref":"r","x":"a\x00"}'),
    ("escaped lone surrogate", '{"type":"ping","ref":"r","x":"\\ud800"}'),
    ("escaped lone surrogate, upper case", '{"type":"ping","ref":"r","x":"\\uDFFF"}'),
    ("raw lone surrogate in text", '{"type":"ping","ref":"r","x":"\ud800"}'),
    ("surrogate encoded in bytes", b'{"type":"ping","ref":"r","x":"\xed\xa0\x80"}'),
    ("escaped NUL in bytes", b'{"type":"ping","ref":"r","x":"\\u0000"}'),
]


@pytest.mark.parametrize("frame", [u[1] for u in UNSTORABLE], ids=[u[0] for u in UNSTORABLE])
def test_a_string_no_store_can_hold_is_refused_however_it_is_written(frame: str | bytes) -> None:
    with pytest.raises(ProtocolViolation) as refused:
        decode(frame, Direction.TO_CLIENT)
    # A raw control character is not JSON at all; the others name the string.
    assert refused.value.code is ErrorCode.MALFORMED
    assert "NUL" in refused.value.message or "control character" in refused.value.message


_PONG = '{"type":"pong","ref":"r","server_time":"2026-12-01T00:00:00Z","x":'


@pytest.mark.parametrize(
    "frame",
    [
        _PONG + '"a\\\\u0000"}',  # an escaped backslash, then text
        _PONG + '"\\ud83d\\ude9a"}',  # a valid pair: a lorry
        (_PONG + '"\ud55c\uae00"}').encode(),  # Hangul: its UTF-8 starts with 0xED
    ],
    ids=["escaped backslash", "surrogate pair", "hangul"],
)
def test_what_only_looks_unstorable_is_decoded(frame: str | bytes) -> None:
    with pytest.raises(ProtocolViolation) as refused:
        decode(frame, Direction.TO_CLIENT)
    # A pong has no field x: reaching that check means the strings were accepted.
    assert "unknown field 'x'" in refused.value.message


def test_nesting_too_deep_is_refused_in_a_frame_without_any_string_to_look_at() -> None:
    frame = _PONG + "[" * 40 + "]" * 40 + "}"
    with pytest.raises(ProtocolViolation) as refused:
        decode(frame, Direction.TO_CLIENT)
    assert refused.value.code is ErrorCode.TOO_DEEP


# Frames from the server are read by orjson (codec rules); what it reads otherwise
# than json does must come out as json reads it, or be refused as before.
def _part_frame(value: str) -> str:
    return ('{"type":"snapshot","snapshot":"s1-x","version":1,"chunk":0,"chunks":1,'
            f'"digest":"{HASH}","part":{{"value":{value}}}}}')  # fmt: skip


def test_an_integer_beyond_64_bits_from_the_server_stays_an_exact_integer() -> None:
    message = decode(_part_frame(str(2**64 + 1)), Direction.TO_CLIENT)
    assert isinstance(message, Snapshot) and message.part["value"] == 2**64 + 1
    assert decode(_part_frame("1.5e300"), Direction.TO_CLIENT).part["value"] == 1.5e300  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("value", "code"),
    [("NaN", ErrorCode.MALFORMED), ("1e999", ErrorCode.MALFORMED),
     ("[" * 2000 + "]" * 2000, ErrorCode.TOO_DEEP), ("[" * 40 + "]" * 40, ErrorCode.TOO_DEEP)],
    ids=["NaN", "infinite", "deeper than orjson reads", "deeper than the limit"],
)  # fmt: skip
def test_what_orjson_refuses_from_the_server_is_refused_with_the_strict_readers_words(
    value: str, code: ErrorCode
) -> None:
    with pytest.raises(ProtocolViolation) as refused:
        decode(_part_frame(value), Direction.TO_CLIENT)
    assert refused.value.code is code


def test_a_frame_from_the_server_that_is_not_an_object_is_refused() -> None:
    for frame in ("[1, 2]", "5", '"text"'):
        with pytest.raises(ProtocolViolation, match="a message is a JSON object"):
            decode(frame, Direction.TO_CLIENT)


def test_a_key_written_twice_is_refused_from_a_client_and_the_last_kept_from_the_server() -> None:
    with pytest.raises(ProtocolViolation, match="duplicate key"):
        decode('{"type":"ping","ref":"a","ref":"b"}', Direction.TO_SERVER)
    pong = decode(
        '{"type":"pong","ref":"a","ref":"b","server_time":"2026-12-01T00:00:00Z"}',
        Direction.TO_CLIENT,
    )
    assert pong.ref == "b"  # type: ignore[attr-defined]
