"""How a client catches up, and what a live session does with each batch.

The server's adapter (server/app.py) only reads, sends and waits; what to
send is decided here, so a client and a second server implementation agree.

Rules of this module (PROTOCOL.md § Catching up):

- A client gets a snapshot when its cursor is below the tenant's horizon (an
  import or a compaction dropped what came before), above the tenant's
  version (a replica from a different history), or more than
  `SNAPSHOT_AFTER` versions behind; otherwise the changes after its cursor.
- A snapshot is the policy document at one version cut into parts
  (sync/replication/snapshots.py) and named by its content, so every server
  process cuts the same snapshot of a version under the same id and a
  client may resume it on any of them.
- A live session keeps a cursor: a batch entirely at or below it is skipped,
  one starting beyond it first needs the gap filled from the change log, one
  overlapping it is sent from the cursor on.
- A session ends when a change deletes its user (`wipe`, `user_removed`) or
  suspends them (closed, the replica kept), unless a later change of the same
  page resumes them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any

from sync.protocol.messages import CatchUp, Change, Snapshot
from sync.replication.snapshots import snapshot_parts

SNAPSHOT_AFTER = 20_000
"""A client further behind than this many versions gets a snapshot instead of changes."""


def catch_up_by(cursor: int, version: int, horizon: int) -> CatchUp:
    """How a client at `cursor` catches up with a tenant at `version` (module rules)."""
    if cursor < horizon or cursor > version or version - cursor > SNAPSHOT_AFTER:
        return CatchUp.SNAPSHOT
    return CatchUp.CHANGES


def snapshot_messages(
    version: int, document: Mapping[str, Any], digest: str
) -> tuple[Snapshot, ...]:
    """The `snapshot` messages of the policy `document` at `version` (module rules)."""
    parts = snapshot_parts(document)
    content = hashlib.sha256()
    for part in parts:
        content.update(json.dumps(part, sort_keys=True, separators=(",", ":")).encode())
    snapshot_id = f"s{version}-{content.hexdigest()[:24]}"
    return tuple(
        Snapshot(snapshot_id, version, number, len(parts), part, digest)
        for number, part in enumerate(parts)
    )


def is_snapshot_id(text: str) -> bool:
    """Whether `text` has the shape of a snapshot id any process could cut again."""
    return text.startswith("s") and "-" in text


class Delivery(Enum):
    SKIP = "skip"
    """Nothing in the batch is new to the session."""
    FILL_GAP = "fill_gap"
    """The batch starts after the cursor: read what is between from the change log first."""
    WHOLE = "whole"
    """The batch starts at the cursor: send it as it is (its frame made once)."""
    TAIL = "tail"
    """The batch overlaps the cursor: send the changes after it."""


def delivery(cursor: int, from_version: int, to_version: int) -> Delivery:
    """What a live session at `cursor` does with a batch of changes after
    `from_version` up to `to_version` (module rules)."""
    if to_version <= cursor:
        return Delivery.SKIP
    if from_version > cursor:
        return Delivery.FILL_GAP
    if from_version == cursor:
        return Delivery.WHOLE
    return Delivery.TAIL


class SessionEnd(Enum):
    USER_REMOVED = "user_removed"
    SUSPENDED = "suspended"


def session_end(user: str, changes: Iterable[Change]) -> SessionEnd | None:
    """Whether `changes` end the sessions of `user` (module rules)."""
    ended = None
    for change in changes:
        op, target = change.edit.get("op"), change.edit.get("user_id")
        if target != user:
            continue
        if op == "delete_user":
            return SessionEnd.USER_REMOVED
        if op == "suspend_user":
            ended = SessionEnd.SUSPENDED
        elif op == "resume_user":
            # Suspended and resumed while the client was away: it may go on.
            ended = None
    return ended
