"""A replica's confirmed policy following the server: snapshots and changes, checked.

Rules of this module (PROTOCOL.md § Catching up, § Digest):

- A snapshot's chunks are collected until all `chunks` of one snapshot id
  are there (in any order, repeats ignored); then the joined document becomes
  the confirmed policy at the snapshot's version. Its digest must be the
  snapshot's. The document is read back into entities as the server wrote it
  (`document_entities`); when their digest is the server's they *are* the
  server's entities, which it validated when they were written, and the
  policy is built from them only when a change needs it (a 50,000-user
  snapshot is stored in half the time). Otherwise the document is validated
  (`parse_policy`) and its entities' digest must be the server's.
- Changes are replayed in version order, each at its `at` (which times an
  activation), on the confirmed policy. A change at or below the version is
  skipped (already applied); one beyond version + 1 is a gap. A change that
  does not replay, a gap, or a digest that differs from the page's means the
  replica and the server disagree: `Diverged`, and the replica asks for a
  fresh snapshot (the outbox is replayed over it as over any policy).
- What a page changed is returned as entities (the last document of each,
  None for a removed one) for the store to write in order, with the new
  version and digest, in one transaction. An entity deleted and created again
  in the page comes twice: removed first, then as a new entity where its
  creation put it (last of its kind, as in the policy), so a store that keeps
  the policy's order keeps the server's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from sync.policy.document import PolicyInvalid, parse_policy
from sync.policy.edits import EditRefused, Undo, apply_edit, edit_from_document
from sync.policy.instant import Instant, parse_instant
from sync.policy.model import Policy
from sync.protocol.messages import Change, Changes, Snapshot
from sync.replication.digest import digest_of, digest_text, updated
from sync.replication.entities import (
    NOT_A_POLICY,
    Entity,
    built_policy,
    changed_entities,
    document_entities,
    policy_entities,
)
from sync.replication.snapshots import join_snapshot_parts


class Diverged(Exception):
    """The replica's confirmed policy and the server's disagree: take a fresh snapshot."""


@dataclass(frozen=True, slots=True)
class Followed:
    """What one snapshot or page of changes did to the confirmed policy."""

    version: int
    digest: int
    entities: list[Entity]
    """A snapshot: every entity. Changes: each entity changed, its new document (None: gone),
    in the order to write them (module rules)."""
    whole: bool
    """True for a snapshot (the store replaces everything)."""
    changes: tuple[Change, ...] = ()
    """The changes applied (not those skipped)."""


class Follower:
    """The confirmed policy of a replica, at `version`, with its digest."""

    def __init__(
        self, policy: Policy | Callable[[], Policy] | None, version: int, digest: int | None
    ) -> None:
        """`policy`: the confirmed policy, or what builds it when it is first needed
        (a replica's 50,000 users need not be built for a sync that brings nothing)."""
        self._policy = policy
        self.version = version
        self.digest = digest
        self._snapshot: str | None = None
        self._parts: dict[int, Any] = {}

    @property
    def policy(self) -> Policy | None:
        """The confirmed policy (built now if it was not yet). Raises Diverged for a
        snapshot's entities that do not make a policy."""
        if callable(self._policy):
            self._policy = self._policy()
        return self._policy

    @property
    def resume(self) -> tuple[str, int] | None:
        """(snapshot id, next chunk) of a snapshot being received, if its chunks so far
        run from 0 without a hole (so it can go on from there after a reconnect)."""
        if self._snapshot is None or not self._parts:
            return None
        following = 0
        while following in self._parts:
            following += 1
        return self._snapshot, following

    def snapshot(self, message: Snapshot, now: Instant) -> Followed | None:
        """Take one chunk; when the snapshot is whole, it becomes the confirmed policy.

        Raises Diverged when the joined document does not validate or its
        digest is not the server's.
        """
        if message.snapshot != self._snapshot:
            self._snapshot, self._parts = message.snapshot, {}
        self._parts.setdefault(message.chunk, message.part)
        if len(self._parts) < message.chunks or any(
            i not in self._parts for i in range(message.chunks)
        ):
            return None
        parts = [self._parts[i] for i in range(message.chunks)]
        self._snapshot, self._parts = None, {}
        # The parts are the peer's: a list where a list belongs, or the snapshot is not one.
        if not all(
            isinstance(part, Mapping)
            and all(isinstance(part.get(key, []), list) for key in ("roles", "users"))
            for part in parts
        ):
            raise Diverged(f"the snapshot of version {message.version} is malformed")
        document = join_snapshot_parts(parts)
        tenant = document.get("tenant")
        try:
            entities = document_entities(document)
        except (KeyError, TypeError, AttributeError, ValueError):
            entities = []
        digest = digest_of(entities) if entities and isinstance(tenant, str) else None
        if digest is not None and isinstance(tenant, str) and digest_text(digest) == message.digest:
            policy: Policy | Callable[[], Policy] = partial(
                _built, tenant, entities, now, message.version
            )
        else:
            try:
                policy = parse_policy(document, now=now)
            except PolicyInvalid as invalid:
                raise Diverged(
                    f"the snapshot of version {message.version} does not validate: "
                    f"{invalid.problems[0]}"
                ) from None
            entities = list(policy_entities(policy))
            digest = digest_of(entities)
            if digest_text(digest) != message.digest:
                raise Diverged(
                    f"the snapshot of version {message.version} does not have the server's digest"
                )
        self._policy, self.version, self.digest = policy, message.version, digest
        return Followed(message.version, digest, entities, whole=True)

    def changes(self, message: Changes) -> Followed:
        """Replay a page of changes. Raises Diverged (module rules); then the
        confirmed policy is as it was before the page."""
        if self._policy is None or self.digest is None:
            raise Diverged("the replica has no policy to apply changes to")
        if all(change.version <= self.version for change in message.changes):
            # Nothing new (the page that ends a catch-up is often empty): the policy
            # need not be built to see that the digest is still the server's.
            _check_digest(message, self.version, self.digest)
            return Followed(self.version, self.digest, [], False, ())
        policy = self.policy
        assert policy is not None  # self._policy was not None
        undo = Undo(policy)
        version, digest = self.version, self.digest
        after: dict[tuple[str, str], Entity] = {}
        gone: dict[tuple[str, str], Entity] = {}
        applied: list[Change] = []
        try:
            for change in message.changes:
                if change.version <= version:
                    continue
                if change.version != version + 1:
                    raise Diverged(f"change {change.version} arrived after version {version}")
                mine = Undo(policy)
                try:
                    edit = edit_from_document(change.edit, policy)
                    apply_edit(policy, edit, parse_instant(change.at), mine)
                except (EditRefused, ValueError) as error:
                    raise Diverged(
                        f"change {change.version} does not replay here: {error}"
                    ) from None
                before_entities, after_entities = changed_entities(mine)
                digest = updated(digest, before_entities, after_entities)
                for old, entity in zip(before_entities, after_entities, strict=True):
                    key = (entity.kind, entity.id)
                    if old.document is None and key in after:
                        # Deleted and created again in this page: a new entity, last of
                        # its kind as in the policy; the store drops its old row first.
                        del after[key]
                        gone.setdefault(key, Entity(entity.kind, entity.id, None))
                    after[key] = entity
                undo.absorb(mine)
                version = change.version
                applied.append(change)
            _check_digest(message, version, digest)
        except Diverged:
            undo.revert()
            raise
        self.version, self.digest = version, digest
        entities = [*gone.values(), *after.values()]
        return Followed(self.version, digest, entities, False, tuple(applied))


def _check_digest(message: Changes, version: int, digest: int) -> None:
    """Raise Diverged when the page ends at `version` with another digest than `digest`."""
    if (
        message.digest is not None
        and version == message.to_version
        and digest_text(digest) != message.digest
    ):
        raise Diverged(f"the policy's digest at version {version} is not the server's")


def _built(tenant: str, entities: list[Entity], now: Instant, version: int) -> Policy:
    """The policy of a snapshot's entities, which had the server's digest (module rules)."""
    try:
        return built_policy(tenant, entities, now)
    except NOT_A_POLICY as invalid:
        problem = invalid.problems[0] if isinstance(invalid, PolicyInvalid) else invalid
        raise Diverged(f"the snapshot of version {version} does not validate: {problem}") from None
