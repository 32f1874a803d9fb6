"""The sync protocol's messages (PROTOCOL.md, protocol 2), shared by server and client.

Messages are frozen dataclasses with slots; the codec (`sync.protocol.codec`)
turns them into frames and back. Nothing here does I/O. A `__repr__` that
would show a password, a token or a code is replaced: messages get logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sync.protocol.errors import ErrorCode

PROTOCOL_VERSION = 2
MAX_MESSAGE_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_BATCH = 500
MAX_ID = 256
MAX_TOKEN = 4096
MAX_PASSWORD = 1024
MAX_TEXT = 4096
MAX_INT = 2**53 - 1
HASH_HEX = 64
"""Hex digits of a SHA-256 (decision chain hashes, digests)."""


class Direction(StrEnum):
    TO_SERVER = "to_server"
    TO_CLIENT = "to_client"


class Outcome(StrEnum):
    APPLIED = "applied"
    MERGED = "merged"
    REJECTED = "rejected"
    CONFLICT = "conflict"


class ResultCode(StrEnum):
    """Why a mutation was rejected, or what kind of conflict it met."""

    INVALID = "invalid"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    CYCLE = "cycle"
    CONSTRAINT = "constraint"
    NOT_ELIGIBLE = "not_eligible"
    SUPERSEDED = "superseded"
    """Another client narrowed, deleted or re-created what this edit widens or names."""
    WRONG_CLIENT = "wrong_client"
    INTERNAL = "internal"
    CONCURRENT_CHANGE = "concurrent_change"
    """(conflict) another client set the same field to another value meanwhile."""


class CatchUp(StrEnum):
    CHANGES = "changes"
    SNAPSHOT = "snapshot"


class StaleDecisions(StrEnum):
    """What a replica does with a decision once its lease has run out."""

    ANSWER = "answer"
    """Answer, saying the decision is stale."""
    DENY = "deny"


class WipeCode(StrEnum):
    DEVICE_REVOKED = "device_revoked"
    USER_REMOVED = "user_removed"


class Clock(StrEnum):
    """Which clock an offline decision's time came from (PROTOCOL.md § Offline decisions)."""

    WALL = "wall"
    FROZEN = "frozen"
    """The wall clock was behind the replica's high-water mark: time was held there."""


# --- client to server --------------------------------------------------------------------


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
class Enroll:
    """A first sign-in with an invitation code, which sets the user's password."""

    ref: str
    tenant: str
    user: str
    code: str
    password: str
    device: str

    def __repr__(self) -> str:
        return f"Enroll(ref={self.ref!r}, tenant={self.tenant!r}, user={self.user!r}, ...)"


@dataclass(frozen=True, slots=True)
class Refresh:
    ref: str
    refresh_token: str
    device: str

    def __repr__(self) -> str:
        return f"Refresh(ref={self.ref!r}, device={self.device!r}, ...)"


@dataclass(frozen=True, slots=True)
class Resume:
    """Where an interrupted snapshot should go on (in `hello`)."""

    snapshot: str
    next_chunk: int


@dataclass(frozen=True, slots=True)
class Hello:
    protocol: int
    access_token: str
    device: str
    client: str
    cursor: int
    resume: Resume | None = None

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
    """A decision a replica made from its copy of the policy, one link of the
    client's hash chain (sync/replication/decisions.py)."""

    seq: int
    prev_hash: str
    hash: str
    request: Mapping[str, Any]
    allowed: bool
    reason: str
    at: str
    """RFC 3339: the replica's effective time when it decided."""
    clock: Clock
    lease_fresh: bool
    pending: tuple[int, ...]
    """Seqs of the replica's unsynced mutations the decision relied on."""
    policy_version: int


@dataclass(frozen=True, slots=True)
class RecordDecisions:
    ref: str
    decisions: tuple[OfflineDecision, ...]


@dataclass(frozen=True, slots=True)
class Invite:
    """Make a one-time enrollment code for a user of the tenant (needs user:update)."""

    ref: str
    user: str
    hours: int


@dataclass(frozen=True, slots=True)
class SetPassword:
    """Reset a user's password (needs user:update on them)."""

    ref: str
    user: str
    password: str

    def __repr__(self) -> str:
        return f"SetPassword(ref={self.ref!r}, user={self.user!r}, ...)"


@dataclass(frozen=True, slots=True)
class Ping:
    ref: str


# --- server to client --------------------------------------------------------------------


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
    server_time: str
    last_seq: int
    """The client's last recorded mutation seq: its next is last_seq + 1."""
    lease_seconds: int
    stale_decisions: StaleDecisions
    ops: tuple[str, ...]
    """The edit ops this server accepts; a client holds back others."""
    decisions_through: int
    """The client's last offline decision the server has: its chain may be pruned to it."""


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
    digest: str | None = None
    """The policy's digest at `to_version` (sync/replication/digest.py), when known."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    snapshot: str
    version: int
    chunk: int
    chunks: int
    part: Mapping[str, Any]
    digest: str


@dataclass(frozen=True, slots=True)
class Conflict:
    """What a conflict is about: the member (`role r-1 name`), the value the
    server keeps and the value the client tried to set (null: absent)."""

    member: str
    server: Any
    client: Any


@dataclass(frozen=True, slots=True)
class Result:
    """One mutation's outcome; `version` for applied and merged (the version the
    edit made), for conflict and superseded (the change it met); `code` and
    `reason` for rejected and conflict; `conflict` for conflict."""

    client: str
    seq: int
    outcome: Outcome
    version: int | None = None
    code: str | None = None
    reason: str | None = None
    conflict: Conflict | None = None


@dataclass(frozen=True, slots=True)
class PushResult:
    """Outcomes of a push, in order; a long answer comes in several messages of the
    same `ref`, all but the last with `more`."""

    ref: str
    results: tuple[Result, ...]
    more: bool = False


@dataclass(frozen=True, slots=True)
class Resync:
    reason: str


@dataclass(frozen=True, slots=True)
class Wipe:
    code: WipeCode
    reason: str


@dataclass(frozen=True, slots=True)
class DecisionsRecorded:
    ref: str
    count: int
    """How many decisions were added to the audit log now."""
    through: int
    """The client's last decision seq the server has."""
    head: str
    """That decision's hash."""


@dataclass(frozen=True, slots=True)
class Invited:
    ref: str
    user: str
    code: str
    expires: str

    def __repr__(self) -> str:
        return f"Invited(ref={self.ref!r}, user={self.user!r}, expires={self.expires!r}, ...)"


@dataclass(frozen=True, slots=True)
class PasswordSet:
    ref: str
    user: str


@dataclass(frozen=True, slots=True)
class Pong:
    ref: str
    server_time: str


@dataclass(frozen=True, slots=True)
class Error:
    code: ErrorCode
    message: str
    fatal: bool = False
    ref: str | None = None
    expected_seq: int | None = None
    """For `seq_gap`: the seq the server expects next."""


Message = (
    SignIn | Enroll | Refresh | Hello | Push | SnapshotResume | RecordDecisions | Invite
    | SetPassword | Ping
    | SignedIn | Welcome | Changes | Snapshot | PushResult | DecisionsRecorded | Resync | Wipe
    | Invited | PasswordSet | Pong | Error
)  # fmt: skip
