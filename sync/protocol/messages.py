"""The sync protocol's messages (PROTOCOL.md), shared by server and client.

Messages are frozen dataclasses with slots; the codec (`sync.protocol.codec`)
turns them into frames and back. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sync.protocol.errors import ErrorCode

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_BATCH = 500
MAX_ID = 256
MAX_TOKEN = 4096
MAX_PASSWORD = 1024
MAX_TEXT = 4096
MAX_INT = 2**53 - 1


class Direction(StrEnum):
    TO_SERVER = "to_server"
    TO_CLIENT = "to_client"


class Outcome(StrEnum):
    APPLIED = "applied"
    MERGED = "merged"
    REJECTED = "rejected"
    CONFLICT = "conflict"


class CatchUp(StrEnum):
    CHANGES = "changes"
    SNAPSHOT = "snapshot"


# --- messages ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignIn:
    ref: str
    tenant: str
    user: str
    password: str
    device: str

    def __repr__(self) -> str:  # never a password in a log line
        return f"SignIn(ref={self.ref!r}, tenant={self.tenant!r}, user={self.user!r}, ...)"


@dataclass(frozen=True, slots=True)
class Refresh:
    ref: str
    refresh_token: str
    device: str

    def __repr__(self) -> str:
        return f"Refresh(ref={self.ref!r}, device={self.device!r}, ...)"


@dataclass(frozen=True, slots=True)
class Hello:
    protocol: int
    access_token: str
    device: str
    client: str
    cursor: int

    def __repr__(self) -> str:
        return f"Hello(device={self.device!r}, client={self.client!r}, cursor={self.cursor})"


@dataclass(frozen=True, slots=True)
class Mutation:
    client: str
    seq: int
    base_version: int
    edit: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Push:
    ref: str
    mutations: tuple[Mutation, ...]


@dataclass(frozen=True, slots=True)
class SnapshotResume:
    snapshot: str
    next_chunk: int


@dataclass(frozen=True, slots=True)
class OfflineDecision:
    """A decision a replica made while offline, uploaded for the audit log."""

    request: Mapping[str, Any]
    allowed: bool
    reason: str
    at: str
    """RFC 3339: when the replica decided."""
    policy_version: int


@dataclass(frozen=True, slots=True)
class RecordDecisions:
    ref: str
    decisions: tuple[OfflineDecision, ...]


@dataclass(frozen=True, slots=True)
class Ping:
    ref: str


@dataclass(frozen=True, slots=True)
class SignedIn:
    ref: str
    access_token: str
    access_expires: str
    refresh_token: str
    user: str
    tenant: str

    def __repr__(self) -> str:
        return f"SignedIn(ref={self.ref!r}, user={self.user!r}, tenant={self.tenant!r}, ...)"


@dataclass(frozen=True, slots=True)
class Welcome:
    tenant: str
    user: str
    version: int
    catch_up: CatchUp


@dataclass(frozen=True, slots=True)
class Change:
    version: int
    edit: Mapping[str, Any]
    author: str
    device: str
    client: str
    seq: int
    at: str


@dataclass(frozen=True, slots=True)
class Changes:
    from_version: int
    to_version: int
    changes: tuple[Change, ...]
    more: bool


@dataclass(frozen=True, slots=True)
class Snapshot:
    snapshot: str
    version: int
    chunk: int
    chunks: int
    part: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Result:
    """One mutation's outcome; `version` for applied, merged and conflict;
    `code` and `reason` for rejected and conflict."""

    client: str
    seq: int
    outcome: Outcome
    version: int | None = None
    code: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class PushResult:
    ref: str
    results: tuple[Result, ...]


@dataclass(frozen=True, slots=True)
class Resync:
    reason: str


@dataclass(frozen=True, slots=True)
class Wipe:
    reason: str


@dataclass(frozen=True, slots=True)
class DecisionsRecorded:
    ref: str
    count: int


@dataclass(frozen=True, slots=True)
class Pong:
    ref: str


@dataclass(frozen=True, slots=True)
class Error:
    code: ErrorCode
    message: str
    fatal: bool = False
    ref: str | None = None


Message = (
    SignIn | Refresh | Hello | Push | SnapshotResume | RecordDecisions | Ping
    | SignedIn | Welcome | Changes | Snapshot | PushResult | DecisionsRecorded | Resync | Wipe
    | Pong | Error
)  # fmt: skip


# --- field checks ------------------------------------------------------------------------
