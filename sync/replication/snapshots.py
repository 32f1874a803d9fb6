"""Snapshots in chunks: a policy document cut into parts that each fit a message.

PROTOCOL.md § snapshot: part 0 holds the document's head (format, tenant,
resource types, constraints) and roles; the following parts hold more roles,
then users. Joining the parts in order gives the document back. Parts are cut
by the size of their JSON, so every `snapshot` message stays under the limit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

PART_BYTES = 256 * 1024
"""Target size of one part's JSON; a single larger entity still gets a part of its own."""


def snapshot_parts(
    document: Mapping[str, Any], part_bytes: int = PART_BYTES
) -> list[dict[str, Any]]:
    """Cut a format-1 policy document into parts (at least one)."""
    head = {k: v for k, v in document.items() if k not in ("roles", "users")}
    parts: list[dict[str, Any]] = []
    current: dict[str, Any] = dict(head)
    size = _size(head)
    for kind in ("roles", "users"):
        for entity in document.get(kind, ()):
            # The entity, its comma, and the list's key if it opens the list here.
            entity_size = _size(entity) + 1 + (0 if kind in current else len(kind) + 5)
            if size + entity_size > part_bytes and (current.get("roles") or current.get("users")):
                parts.append(current)
                current, size = {}, 2
                entity_size = _size(entity) + len(kind) + 6
            current.setdefault(kind, []).append(entity)
            size += entity_size
    parts.append(current)
    return parts


def _size(value: Any) -> int:
    """Bytes of `value` as the protocol encodes it (compact JSON, UTF-8)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def join_snapshot_parts(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The document the parts were cut from."""
    document: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if key in ("roles", "users"):
                document.setdefault(key, []).extend(value)
            else:
                document[key] = value
    document.setdefault("roles", [])
    document.setdefault("users", [])
    return document
