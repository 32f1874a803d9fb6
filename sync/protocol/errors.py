"""Errors of the sync protocol (PROTOCOL.md § Errors), shared by server and client.

Rules of this module:

- Errors the *peer* caused raise `ProtocolViolation` (turned into an `error`
  message and maybe a close code where input enters); a message *we* cannot
  build is our bug and raises `ProtocolBug`. They are never mixed.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


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
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"
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
    RATE_LIMITED = 4429


MAX_ERROR_TEXT = 1024
"""Characters of an error's message: what it quotes of the peer's input is cut."""


def quoted(value: Any, limit: int = 64) -> str:
    """`value` for an error message: its repr, cut to `limit` characters of the value."""
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit]) + "…"
    return repr(value)


class ProtocolViolation(Exception):
    """The peer sent something wrong: `code` and a message for the `error` reply."""

    def __init__(self, code: ErrorCode, message: str, ref: str | None = None) -> None:
        if len(message) > MAX_ERROR_TEXT:
            message = message[: MAX_ERROR_TEXT - 1] + "…"
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


class ProtocolBug(Exception):
    """Our own side built a message the protocol does not allow."""
