"""Accounts for everyone in a tenant's policy: passwords, invitations, enrollment.

Rules of this module:

- A password is checked against the rules of `server.passwords` (at least 12
  characters, not a common password, not built from the user or tenant name)
  before anything is stored or spent, and stored only as an argon2id hash.
- An invitation is a one-time enrollment code: random, shown once, stored as
  its SHA-256, valid for a number of hours, spent by the first enrollment that
  uses it (a newer invitation of the same user replaces it). Codes are typed
  by people: groups of base32 letters and digits, read without case, dashes
  or spaces.
- Setting a password (a reset) ends the user's refresh tokens: whoever held
  the old password loses the sessions it made.
- Who may invite or reset is decided by the tenant's policy
  (`sync.policy.authority.authorize_account`); the caller checks it.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import UTC, datetime, timedelta

import psycopg

from server import store

INVITE_HOURS = 72
MAX_INVITE_HOURS = 720


def new_code() -> str:
    """A new enrollment code: 120 random bits as six groups of four characters."""
    text = base64.b32encode(secrets.token_bytes(15)).decode("ascii")
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def code_hash(code: str) -> bytes:
    """The SHA-256 a code is stored as, however it was typed."""
    normal = "".join(code.split()).replace("-", "").upper()
    return hashlib.sha256(normal.encode("utf-8", "surrogatepass")).digest()


async def invite(
    conn: psycopg.AsyncConnection, tenant_id: int, user: str, created_by: str, hours: int
) -> tuple[str, datetime]:
    """Make an enrollment code for `user`; the code (to show once) and when it expires.

    Raises ValueError for hours outside 1 to 720.
    """
    if not 1 <= hours <= MAX_INVITE_HOURS:
        raise ValueError(f"an invitation lasts 1 to {MAX_INVITE_HOURS} hours, not {hours}")
    code = new_code()
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=hours)
    await store.create_invitation(conn, tenant_id, user, code_hash(code), created_by, expires)
    return code, expires


async def set_password(
    conn: psycopg.AsyncConnection, tenant_id: int, user: str, password_hash: str
) -> None:
    """Store a new password hash and end the user's refresh tokens, in one transaction."""
    async with conn.transaction():
        await store.set_password(conn, tenant_id, user, password_hash)
        await store.revoke_user_tokens(conn, tenant_id, user)
