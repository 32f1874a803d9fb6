"""Secrets the server must be able to read back but must not store in clear.

Rules of this module:

- A webhook's signing secret is needed to sign every delivery, so it cannot be
  hashed like a password; it is sealed with AES-256-GCM under a key derived
  (HKDF-SHA256) from the server's token key, and stored only sealed.
- The token key comes from FLEETGATE_TOKEN_KEY where it is set: then the
  database holds nothing that opens the secrets. Without it the key is kept
  in the database (a development default, said in the README).
- Each sealed value is bound to what it belongs to (`context`, e.g. the
  tenant): a sealed secret copied to another tenant's row does not open.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_PREFIX = "fgs1:"
_NONCE = 12


class SecretUnreadable(Exception):
    """A sealed secret does not open with this key and context."""


class SecretBox:
    """Seals and opens short secrets with a key derived from `key` (32 bytes or more)."""

    def __init__(self, key: bytes, purpose: bytes = b"fleetgate/webhook-secrets/v1") -> None:
        if len(key) < 32:
            raise ValueError("a sealing key needs at least 32 bytes")
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(key)
        self._aead = AESGCM(derived)

    def __repr__(self) -> str:
        return "SecretBox(...)"

    def seal(self, secret: str, context: str) -> str:
        """`secret` encrypted and authenticated, bound to `context`, as ASCII text."""
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, secret.encode(), context.encode())
        return _PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, sealed: str, context: str) -> str:
        """The secret; raises SecretUnreadable for another key, context or a changed value."""
        if not sealed.startswith(_PREFIX):
            raise SecretUnreadable("not a sealed secret")
        try:
            raw = base64.urlsafe_b64decode(sealed[len(_PREFIX) :].encode())
            opened = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], context.encode())
        except (InvalidTag, ValueError):
            raise SecretUnreadable(
                "the secret does not open with this server's key (was FLEETGATE_TOKEN_KEY "
                "changed?) or was altered"
            ) from None
        return opened.decode()
