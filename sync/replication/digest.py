"""The digest of a tenant's policy: a fingerprint a replica compares with its own.

PROTOCOL.md § Digest: the last `changes` page and every snapshot carry the
digest of the policy at that version, so a client whose replica diverged
(a bug, a damaged file) sees it and asks for a snapshot.

Rules of this module:

- The digest is a multiset hash: the sum, modulo 2^256, of SHA-256 over each
  entity's canonical form `[kind, id, document]` (JSON with sorted keys and no
  whitespace, UTF-8, as `sync.replication.encoding.canonical_json_bytes`
  writes it), written as 64 lowercase hex digits. A sum is order-free and updates
  in O(changed entities): subtract what an edit replaced, add what it wrote.
- An entity's document is the one `sync/replication/entities.py` writes (roles
  by id); the empty policy's digest is 64 zeros.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from sync.replication.encoding import canonical_json_bytes
from sync.replication.entities import Entity

_MODULUS = 1 << 256


def entity_hash(kind: str, entity_id: str, document: Any) -> int:
    """The entity's share of the digest (0 for an entity that does not exist)."""
    if document is None:
        return 0
    data = canonical_json_bytes([kind, entity_id, document])
    return int.from_bytes(hashlib.sha256(data).digest(), "big")


def digest_of(entities: Iterable[Entity]) -> int:
    """The digest (as a number) of a whole policy's entities."""
    return sum(entity_hash(e.kind, e.id, e.document) for e in entities) % _MODULUS


def updated(digest: int, before: Iterable[Entity], after: Iterable[Entity]) -> int:
    """`digest` after entities `before` were replaced by `after` (same keys)."""
    for entity in before:
        digest -= entity_hash(entity.kind, entity.id, entity.document)
    for entity in after:
        digest += entity_hash(entity.kind, entity.id, entity.document)
    return digest % _MODULUS


def digest_text(digest: int) -> str:
    """The digest as the protocol writes it: 64 lowercase hex digits."""
    return f"{digest:064x}"
