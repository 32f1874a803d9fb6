"""Errors of the sync protocol (PROTOCOL.md § Errors), shared by server and client.

Rules of this module:

- Errors the *peer* caused raise `ProtocolViolation` (turned into an `error`
  message and maybe a close code where input enters); a message *we* cannot
  build is our bug and raises `ProtocolBug`. They are never mixed.
"""

from __future__ import annotations

from enum import StrEnum

from sync.policy.wording import cap_bytes


class ErrorCode(StrEnum):
    MALFORMED = "malformed"
    UNKNOWN_TYPE = "unknown_type"
    TOO_LARGE = "too_large"
    TOO_DEEP = "too_deep"
    TOO_MANY = "too_many"
    RATE_LIMITED = "rate_limited"
    UNAUTHENTICATED = "unauthenticated"
    EXPIRED_TOKEN = "expired_token"  # noqa: S105 - an error code, not a secret
    FORBIDDEN = "forbidden"
    REVOKED = "revoked"
    WRONG_STATE = "wrong_state"
    NOT_FOUND = "not_found"
    UPGRADE_REQUIRED = "upgrade_required"
    """The hello's protocol version is not this server's: the client keeps its outbox."""
    SEQ_GAP = "seq_gap"
    """A push's first new seq is not the client's last + 1: nothing was recorded."""
    UNSUPPORTED_OP = "unsupported_op"
    """A pushed edit's op is not one this server accepts (welcome.ops): nothing was recorded."""
    CHAIN_BROKEN = "chain_broken"
    """Uploaded offline decisions do not continue the client's stored chain."""
    SUSPENDED = "suspended"
    """The user is suspended: no sign-in, no session (the replica is kept)."""
    WEAK_PASSWORD = "weak_password"  # noqa: S105 - an error code, not a secret
    INTERNAL = "internal"


class CloseCode:
    """Websocket close codes (PROTOCOL.md § Errors)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1008
    TOO_LARGE = 1009
    INTERNAL_ERROR = 1011
    UNAUTHENTICATED = 4401
    FORBIDDEN = 4403
    REVOKED = 4409
    """Wiped: the device was revoked or the user removed (the `wipe` message says which)."""
    AUTH_TIMEOUT = 4408
    """The connection did not authenticate in time."""
    SUSPENDED = 4423
    """The user is suspended; the replica stays."""
    UPGRADE_REQUIRED = 4426
    RATE_LIMITED = 4429


MAX_ERROR_TEXT = 1024
"""UTF-8 bytes of an error's message (what it quotes of the peer's input is cut
further, to 64 characters: `sync.policy.wording.quoted`)."""


class ProtocolViolation(Exception):
    """The peer sent something wrong: `code` and a message for the `error` reply."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        ref: str | None = None,
        *,
        expected_seq: int | None = None,
    ) -> None:
        message = cap_bytes(message, MAX_ERROR_TEXT)
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref
        self.expected_seq = expected_seq


class ProtocolBug(Exception):
    """Our own side built a message the protocol does not allow."""
