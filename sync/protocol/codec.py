"""The sync protocol's codec (PROTOCOL.md § Limits): frames to messages and back.

Rules of this module:

- One JSON object per websocket text frame; `decode` checks the size before
  parsing, the nesting depth after, then the message against its schema
  (exact field set, types, lengths, ranges). Nothing here does I/O.
- A peer's mistake raises `ProtocolViolation`; a message we cannot encode is
  our bug and raises `ProtocolBug` (sync.protocol.errors).
- Each side decodes only the messages the other side may send (`Direction`).
- A key written twice in an object is refused in what clients send: a
  reviewer would read one value and the engine use the other. Frames from the
  server are read by orjson, which keeps the last (a third of the time of a
  snapshot's 10 MB): the server's encoder never writes a key twice, and the
  server is the authority over what the replica holds anyway. Anything
  orjson does not read as `json` would (an integer beyond 64 bits, which it
  makes a float; anything it refuses) goes to the strict reader instead.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import fields
from enum import StrEnum
from typing import Any, NoReturn

import orjson

from sync.policy.document import (
    UNSTORABLE,
    UNSTORABLE_TEXT,
    reject_json_constant,
    unique_pairs,
)
from sync.policy.instant import check_instant
from sync.policy.wording import quoted
from sync.protocol.errors import ErrorCode, ProtocolBug, ProtocolViolation
from sync.protocol.messages import (
    HASH_HEX,
    MAX_BATCH,
    MAX_DEPTH,
    MAX_ID,
    MAX_INT,
    MAX_MESSAGE_BYTES,
    MAX_PASSWORD,
    MAX_TEXT,
    MAX_TOKEN,
    PROTOCOL_VERSION,
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

Check = Callable[[Any, str], Any]
_MISSING = object()


def _fail(where: str, message: str) -> NoReturn:
    raise ProtocolViolation(ErrorCode.MALFORMED, f"{where}: {message}")


def _string(limit: int, minimum: int = 1) -> Check:
    def check(value: Any, where: str) -> str:
        if type(value) is not str:
            _fail(where, "must be a string")
        if not minimum <= len(value) <= limit:
            _fail(where, f"must be {minimum} to {limit} characters")
        return value

    return check


def _integer(value: Any, where: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_INT:
        _fail(where, f"must be a whole number from 0 to {MAX_INT}")
    return value


def _boolean(value: Any, where: str) -> bool:
    if type(value) is not bool:
        _fail(where, "must be true or false")
    return value


def _enum(kind: type[StrEnum]) -> Check:
    def check(value: Any, where: str) -> StrEnum:
        try:
            return kind(value)
        except ValueError:
            _fail(where, f"must be one of {', '.join(k.value for k in kind)}")

    return check


def _object(value: Any, where: str) -> dict[str, Any]:
    if type(value) is not dict:
        _fail(where, "must be an object")
    return value


def _edit(value: Any, where: str) -> dict[str, Any]:
    edit = _object(value, where)
    if type(edit.get("op")) is not str:
        _fail(f"{where}.op", "an edit names its op")
    return edit


_MAY_BE_ABSENT: set[Check] = set()
"""Checks of optional fields: absent reads as null, and null is not written."""


def _optional(check: Check) -> Check:
    def optional(value: Any, where: str) -> Any:
        return None if value is None else check(value, where)

    _MAY_BE_ABSENT.add(optional)
    return optional


def _list_of(kind: type, schema: dict[str, Check], limit: int) -> Check:
    def check(value: Any, where: str) -> tuple[Any, ...]:
        if type(value) is not list:
            _fail(where, "must be a list")
        if len(value) > limit:
            raise ProtocolViolation(ErrorCode.TOO_MANY, f"{where}: more than {limit} entries")
        return tuple(_build(kind, schema, item, f"{where}[{i}]") for i, item in enumerate(value))

    return check


_ID = _string(MAX_ID)
_TOKEN = _string(MAX_TOKEN)
_TEXT = _string(MAX_TEXT, minimum=0)

_MUTATION: dict[str, Check] = {
    "client": _ID,
    "seq": _integer,
    "base_version": _integer,
    "edit": _edit,
}
_CHANGE: dict[str, Check] = {
    "version": _integer,
    "edit": _edit,
    "author": _ID,
    "device": _ID,
    "client": _ID,
    "seq": _integer,
    "at": _ID,
}


def _instant(value: Any, where: str) -> str:
    text = _ID(value, where)
    try:
        check_instant(text)
    except ValueError:
        _fail(where, "must be an RFC 3339 date-time")
    return str(text)


_HEX = re.compile(f"[0-9a-f]{{{HASH_HEX}}}")


def _hash(value: Any, where: str) -> str:
    if type(value) is not str or not _HEX.fullmatch(value):
        _fail(where, f"must be {HASH_HEX} lowercase hex digits")
    return value


def _any(value: Any, where: str) -> Any:
    return value  # any JSON value: decode has already refused what JSON cannot hold


def _items(check: Check, limit: int) -> Check:
    """A list of at most `limit` values, each passing `check`."""

    def items(value: Any, where: str) -> tuple[Any, ...]:
        if type(value) is not list:
            _fail(where, "must be a list")
        if len(value) > limit:
            raise ProtocolViolation(ErrorCode.TOO_MANY, f"{where}: more than {limit} entries")
        return tuple(check(item, f"{where}[{i}]") for i, item in enumerate(value))

    return items


def _nested(kind: type, schema: dict[str, Check]) -> Check:
    def check(value: Any, where: str) -> Any:
        return _build(kind, schema, value, where)

    return check


_HOURS = 720

_DECISION: dict[str, Check] = {
    "seq": _integer,
    "prev_hash": _hash,
    "hash": _hash,
    "request": _object,
    "allowed": _boolean,
    "reason": _TEXT,
    "at": _instant,
    "clock": _enum(Clock),
    "lease_fresh": _boolean,
    "pending": _items(_integer, MAX_BATCH),
    "policy_version": _integer,
}
_CONFLICT: dict[str, Check] = {
    "member": _TEXT,
    "server": _optional(_any),
    "client": _optional(_any),
}
_RESULT: dict[str, Check] = {
    "client": _ID,
    "seq": _integer,
    "outcome": _enum(Outcome),
    "version": _optional(_integer),
    "code": _optional(_ID),
    "reason": _optional(_TEXT),
    "conflict": _optional(_nested(Conflict, _CONFLICT)),
}
_RESUME: dict[str, Check] = {"snapshot": _ID, "next_chunk": _integer}


def _hours(value: Any, where: str) -> int:
    if type(value) is not int or not 1 <= value <= _HOURS:
        _fail(where, f"must be a whole number of hours from 1 to {_HOURS}")
    return value


_SCHEMAS: dict[str, tuple[type, Direction, dict[str, Check]]] = {
    "sign_in": (SignIn, Direction.TO_SERVER, {
        "ref": _ID, "tenant": _ID, "user": _ID,
        "password": _string(MAX_PASSWORD), "device": _ID}),
    "enroll": (Enroll, Direction.TO_SERVER, {
        "ref": _ID, "tenant": _ID, "user": _ID, "code": _TOKEN,
        "password": _string(MAX_PASSWORD), "device": _ID}),
    "refresh": (Refresh, Direction.TO_SERVER, {
        "ref": _ID, "refresh_token": _TOKEN, "device": _ID}),
    "hello": (Hello, Direction.TO_SERVER, {
        "protocol": _integer, "access_token": _TOKEN, "device": _ID, "client": _ID,
        "cursor": _integer, "resume": _optional(_nested(Resume, _RESUME))}),
    "push": (Push, Direction.TO_SERVER, {
        "ref": _ID, "mutations": _list_of(Mutation, _MUTATION, MAX_BATCH)}),
    "snapshot_resume": (SnapshotResume, Direction.TO_SERVER, _RESUME),
    "record_decisions": (RecordDecisions, Direction.TO_SERVER, {
        "ref": _ID, "decisions": _list_of(OfflineDecision, _DECISION, MAX_BATCH)}),
    "invite": (Invite, Direction.TO_SERVER, {"ref": _ID, "user": _ID, "hours": _hours}),
    "set_password": (SetPassword, Direction.TO_SERVER, {
        "ref": _ID, "user": _ID, "password": _string(MAX_PASSWORD)}),
    "ping": (Ping, Direction.TO_SERVER, {"ref": _ID}),
    "signed_in": (SignedIn, Direction.TO_CLIENT, {
        "ref": _ID, "access_token": _TOKEN, "access_expires": _ID,
        "refresh_token": _TOKEN, "user": _ID, "tenant": _ID}),
    "welcome": (Welcome, Direction.TO_CLIENT, {
        "tenant": _ID, "user": _ID, "version": _integer, "catch_up": _enum(CatchUp),
        "server_time": _instant, "last_seq": _integer, "lease_seconds": _integer,
        "stale_decisions": _enum(StaleDecisions), "ops": _items(_ID, MAX_BATCH),
        "decisions_through": _integer}),
    "changes": (Changes, Direction.TO_CLIENT, {
        "from_version": _integer, "to_version": _integer,
        "changes": _list_of(Change, _CHANGE, 10 * MAX_BATCH), "more": _boolean,
        "digest": _optional(_hash)}),
    "snapshot": (Snapshot, Direction.TO_CLIENT, {
        "snapshot": _ID, "version": _integer, "chunk": _integer, "chunks": _integer,
        "part": _object, "digest": _hash}),
    "push_result": (PushResult, Direction.TO_CLIENT, {
        "ref": _ID, "results": _list_of(Result, _RESULT, MAX_BATCH), "more": _boolean}),
    "decisions_recorded": (DecisionsRecorded, Direction.TO_CLIENT, {
        "ref": _ID, "count": _integer, "through": _integer, "head": _hash}),
    "resync": (Resync, Direction.TO_CLIENT, {"reason": _TEXT}),
    "wipe": (Wipe, Direction.TO_CLIENT, {"code": _enum(WipeCode), "reason": _TEXT}),
    "invited": (Invited, Direction.TO_CLIENT, {
        "ref": _ID, "user": _ID, "code": _TOKEN, "expires": _instant}),
    "password_set": (PasswordSet, Direction.TO_CLIENT, {"ref": _ID, "user": _ID}),
    "pong": (Pong, Direction.TO_CLIENT, {"ref": _ID, "server_time": _instant}),
    "error": (Error, Direction.TO_CLIENT, {
        "code": _enum(ErrorCode), "message": _TEXT, "fatal": _boolean,
        "ref": _optional(_ID), "expected_seq": _optional(_integer)}),
}  # fmt: skip
_TYPES: dict[type, str] = {cls: name for name, (cls, _d, _s) in _SCHEMAS.items()}


def _build(kind: type, schema: dict[str, Check], document: Any, where: str) -> Any:
    if type(document) is not dict:
        _fail(where or "message", "must be an object")
    values: dict[str, Any] = {}
    for name, check in schema.items():
        value = document.get(name, _MISSING)
        if value is _MISSING:
            if check in _MAY_BE_ABSENT:
                value = None
            else:
                _fail(f"{where}.{name}" if where else name, "is missing")
        values[name] = check(value, f"{where}.{name}" if where else name)
    extra = document.keys() - schema.keys() - {"type"}
    if extra:
        _fail(where or "message", f"unknown field {quoted(sorted(extra)[0])}")
    return kind(**values)


# NUL and lone surrogates (a \ud800 escape without its pair) are refused in
# every string: Postgres text and jsonb cannot hold NUL, and a lone surrogate
# cannot be encoded as UTF-8 to answer or store. A message that could never be
# stored must not reach a queue it would block.
# (`UNSTORABLE`, from sync/policy/document.py: the rule a client's queue and chain keep.)


_RAW_SURROGATE = re.compile(rb"\xed[\xa0-\xbf]")


def _may_be_unstorable(data: bytes | str) -> bool:
    """Whether any string of the JSON text `data` could hold what `UNSTORABLE` refuses.

    False is certain: a NUL or a surrogate is in the text as itself (raw, or
    in bytes as its UTF-8-like form, which `json.loads` reads with
    surrogatepass) or as a `\\u` escape. True may be wrong (an escaped
    backslash before `u0000`, a valid surrogate pair): then every string is
    looked at. One scan of the text instead of a regex per string: a snapshot
    part holds tens of thousands of strings.
    """
    if isinstance(data, str):
        return (
            "\\u0000" in data
            or "\\ud" in data
            or "\\uD" in data
            or UNSTORABLE.search(data) is not None
        )
    return (
        b"\\u0000" in data
        or b"\\ud" in data
        or b"\\uD" in data
        or b"\x00" in data
        or (b"\xed" in data and _RAW_SURROGATE.search(data) is not None)
    )


class _LongInteger(Exception):
    """orjson read a number as a float that json reads as an integer beyond 64 bits."""


def _too_deep(value: Any, limit: int, *, floats: bool = False) -> ProtocolViolation | None:
    """Nesting deeper than `limit` (containers only: see `_may_be_unstorable`).

    `floats`: `value` is orjson's, which reads an integer beyond 64 bits as a
    float; raises _LongInteger on a whole float that large (json would not).
    """
    stack = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        item, depth = pop()
        if depth > limit:
            return ProtocolViolation(ErrorCode.TOO_DEEP, f"nests deeper than {limit}")
        for child in item.values() if type(item) is dict else item:
            kind = type(child)
            if kind is dict or kind is list:
                push((child, depth + 1))
            elif kind is float and floats and abs(child) >= _TWO_TO_63 and child.is_integer():
                raise _LongInteger
    return None


_TWO_TO_63 = float(2**63)


def _shape_problem(value: Any, limit: int) -> ProtocolViolation | None:
    """Nesting deeper than `limit`, or a string no store can hold (`UNSTORABLE`)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return ProtocolViolation(ErrorCode.TOO_DEEP, f"nests deeper than {limit}")
        kind = type(item)
        if kind is str:
            if UNSTORABLE.search(item):
                return ProtocolViolation(ErrorCode.MALFORMED, UNSTORABLE_TEXT)
        elif kind is dict:
            for key, child in item.items():
                if UNSTORABLE.search(key):
                    return ProtocolViolation(ErrorCode.MALFORMED, UNSTORABLE_TEXT)
                stack.append((child, depth + 1))
        elif kind is list:
            stack.extend((v, depth + 1) for v in item)
    return None


# --- codec -------------------------------------------------------------------------------


def _size(data: bytes | str) -> int:
    """Bytes of the frame: a text frame's characters take up to 4 bytes each in UTF-8."""
    if isinstance(data, bytes) or len(data) * 4 <= MAX_MESSAGE_BYTES:
        return len(data)
    return len(data.encode("utf-8", "surrogatepass"))


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:32]} is out of range")
    return value


def _strict_loads(data: bytes | str) -> Any:
    try:
        return json.loads(
            data,
            object_pairs_hook=unique_pairs,
            parse_constant=reject_json_constant,
            parse_float=_finite,
        )
    except RecursionError:
        raise ProtocolViolation(ErrorCode.TOO_DEEP, "message nests too deeply") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ProtocolViolation(ErrorCode.MALFORMED, f"not JSON: {error}") from None


def decode(data: bytes | str, direction: Direction) -> Message:
    """The message in one frame, sent in `direction`.

    Raises ProtocolViolation (with the message's `ref` when it could be read)
    for anything the protocol does not allow.
    """
    if _size(data) > MAX_MESSAGE_BYTES:
        raise ProtocolViolation(ErrorCode.TOO_LARGE, f"message over {MAX_MESSAGE_BYTES:,} bytes")
    unstorable = _may_be_unstorable(data)
    document: Any = _MISSING
    if direction is Direction.TO_CLIENT and not unstorable:
        with contextlib.suppress(orjson.JSONDecodeError):  # the strict reader says why
            document = orjson.loads(data)
    problem: ProtocolViolation | None = None
    if type(document) is dict:
        try:
            problem = _too_deep(document, MAX_DEPTH, floats=True)
        except _LongInteger:  # orjson made it a float: read the frame as json does
            document = _MISSING
    elif document is not _MISSING:
        raise ProtocolViolation(ErrorCode.MALFORMED, "a message is a JSON object")
    if document is _MISSING:
        document = _strict_loads(data)
        if type(document) is not dict:
            raise ProtocolViolation(ErrorCode.MALFORMED, "a message is a JSON object")
        problem = (_shape_problem if unstorable else _too_deep)(document, MAX_DEPTH)
    ref = document.get("ref")
    ref = ref if type(ref) is str and len(ref) <= MAX_ID and not UNSTORABLE.search(ref) else None
    if problem is not None:
        problem.ref = ref
        raise problem
    kind = document.get("type")
    schema = _SCHEMAS.get(kind) if type(kind) is str else None
    if schema is None or schema[1] is not direction:
        raise ProtocolViolation(ErrorCode.UNKNOWN_TYPE, f"no message type {quoted(kind)} here", ref)
    if kind == "hello" and direction is Direction.TO_SERVER:
        # Read before the strict checks: another version's hello may have other fields.
        version = document.get("protocol")
        if type(version) is int and version != PROTOCOL_VERSION:
            raise ProtocolViolation(
                ErrorCode.UPGRADE_REQUIRED,
                f"this server speaks sync protocol {PROTOCOL_VERSION}, not {version}: "
                "upgrade the client (its pending edits are kept)",
            )
    cls, _direction, checks = schema
    try:
        message: Message = _build(cls, checks, document, "")
    except ProtocolViolation as error:
        error.ref = ref
        raise
    return message


def to_document(message: Message) -> dict[str, Any]:
    """The message as the JSON object sent on the wire."""
    kind = _TYPES.get(type(message))
    if kind is None:
        raise ProtocolBug(f"{type(message).__name__} is not a protocol message")
    return {"type": kind, **_plain(message)}


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _plain(value: Any) -> Any:
    # Only optional fields can hold None (every schema says so): left out.
    kind = type(value)
    if kind is str or kind is int or kind is bool or kind is dict:
        return value  # the common leaves, and edit/part documents (already plain JSON)
    if isinstance(value, StrEnum):
        return value.value
    if kind is tuple:
        return [_plain(v) for v in value]
    names = _FIELD_NAMES.get(kind)
    if names is None:
        if not hasattr(value, "__dataclass_fields__"):
            return value
        names = _FIELD_NAMES[kind] = tuple(f.name for f in fields(value))
    return {name: _plain(item) for name in names if (item := getattr(value, name)) is not None}


def encode(message: Message) -> bytes:
    """One frame's bytes; raises ProtocolBug if the message breaks the limits."""
    data = json.dumps(to_document(message), ensure_ascii=False, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolBug(f"{type(message).__name__} of {len(data):,} bytes is over the limit")
    return data


MAX_PAGE_BYTES = 768 * 1024
"""What the changes of one `changes` message may take, leaving room for the rest."""


def change_pages(
    changes: Sequence[Change], limit: int = MAX_PAGE_BYTES
) -> list[tuple[Change, ...]]:
    """`changes` cut into runs that each fit one `changes` message (at least one
    change per run: a single change always fits, since an edit came in a message)."""
    pages: list[tuple[Change, ...]] = []
    page: list[Change] = []
    size = 0
    for change in changes:
        change_size = len(
            json.dumps(_plain(change), ensure_ascii=False, separators=(",", ":")).encode()
        )
        if page and size + change_size > limit:
            pages.append(tuple(page))
            page, size = [], 0
        page.append(change)
        size += change_size + 1
    if page:
        pages.append(tuple(page))
    return pages


def error_for(violation: ProtocolViolation, *, fatal: bool = False) -> Error:
    """The `error` message answering a violation."""
    return Error(violation.code, violation.message, fatal, violation.ref, violation.expected_seq)


def push_results(ref: str, results: Sequence[Result]) -> list[PushResult]:
    """The `push_result` messages answering a push: as few as fit the frame limit
    (each outcome's reason is capped, but 500 outcomes of long client ids and
    reasons may not fit one message), all but the last with `more`."""
    messages: list[PushResult] = []
    batch: list[Result] = []
    size = 0
    for result in results:
        result_size = len(
            json.dumps(_plain(result), ensure_ascii=False, separators=(",", ":")).encode()
        )
        if batch and size + result_size > MAX_PAGE_BYTES:
            messages.append(PushResult(ref, tuple(batch), more=True))
            batch, size = [], 0
        batch.append(result)
        size += result_size + 1
    messages.append(PushResult(ref, tuple(batch), more=False))
    return messages
