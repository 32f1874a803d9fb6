"""A replica's view: the confirmed policy with its own unconfirmed edits replayed over it.

Rules of this module (the client issue, § Offline decisions and § The sync client):

- The view is the confirmed policy (the server's, at the replica's cursor)
  with, in seq order, every local edit that has no outcome yet and every edit
  the server applied whose version the cursor has not reached (so reads never
  go backwards between an `applied` outcome and the change that carries it).
- Each edit is replayed at the time it was made. An edit that no longer
  applies to the confirmed policy (its role was deleted meanwhile, say) is
  left out of the view and its reason kept: the server will most likely
  reject it, and the person sees why before it does.
- A decision relies on pending edits when the view decides it otherwise than
  the confirmed policy does (allowed or reason); it then names the edits that
  touched its user or a role the user holds. Deciding for anyone the edits
  did not touch costs nothing extra.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sync.policy.decision import Decision
from sync.policy.edits import Edit, EditRefused, Touched, Undo, edit_from_document
from sync.policy.engine import Engine
from sync.policy.instant import Instant
from sync.policy.request import Request


@dataclass(frozen=True, slots=True)
class LocalEdit:
    """An edit of the replica's outbox, as replayed into its view."""

    seq: int
    edit: Mapping[str, Any]
    """The edit's document (`Edit.to_document`)."""
    made_at: Instant
    """The replica's effective time when the edit was made (it times activations)."""


@dataclass(frozen=True, slots=True)
class Replayed:
    seq: int
    touched: Touched
    failure: str | None = None
    """Why the edit does not apply to the confirmed policy now (None: it does)."""


class Overlay:
    """Local edits applied to an engine, which then decides as the replica's view.

    `take_back()` returns the engine to the confirmed policy. The engine must
    not decide for anyone else meanwhile (it is changed in place).
    """

    def __init__(self, engine: Engine, edits: Sequence[LocalEdit]) -> None:
        self.engine = engine
        self.replayed: list[Replayed] = []
        self._undo = Undo(engine.policy)
        self._touched = Touched()
        self._applied = False
        self._apply(edits)
        self.affected = self._affected_users()
        """Users whose decisions the applied edits may change."""

    def _apply(self, edits: Sequence[LocalEdit]) -> None:
        engine = self.engine
        for local in edits:
            try:
                edit: Edit = edit_from_document(dict(local.edit), engine.policy)
                touched = engine.apply(edit, local.made_at, undo=self._undo)
            except EditRefused as refused:
                self.replayed.append(Replayed(local.seq, Touched(), refused.reason))
                continue
            self._touched = self._touched | touched
            self.replayed.append(Replayed(local.seq, touched))
        self._applied = True

    def _affected_users(self) -> set[str]:
        users = set(self._touched.users)
        users.update(self._holders())
        return users

    def _holders(self) -> list[str]:
        touched = self._touched
        if not (touched.roles or touched.inheritance):
            return []
        return self.engine.holders(set(touched.roles) | set(touched.sod_roles))

    @property
    def failed(self) -> dict[int, str]:
        """Seq -> why, for the local edits that do not apply to the confirmed policy."""
        return {r.seq: r.failure for r in self.replayed if r.failure is not None}

    def take_back(self) -> None:
        """Return the engine to the confirmed policy. `affected` then also counts
        those who held a touched role before the edits (a deleted role's holders)."""
        if self._applied:
            self.engine.revert(self._undo, self._touched)
            self._applied = False
            self.affected.update(self._holders())

    def touching(self, user_id: str) -> tuple[int, ...]:
        """Seqs of the applied edits that touched `user_id` or a role the user holds."""
        policy = self.engine.policy
        user = policy.users.get(user_id)
        held: set[str] = set()
        if user is not None:
            for assignment in user.roles:
                held.update(role_id for role_id, _ in policy.ancestors(assignment.role_id))
        return tuple(
            r.seq
            for r in self.replayed
            if r.failure is None
            and (user_id in r.touched.users or not held.isdisjoint(r.touched.roles))
        )


def decide_in_view(
    engine: Engine, edits: Sequence[LocalEdit], requests: Sequence[Request], now: Instant
) -> tuple[list[Decision], list[tuple[int, ...]], dict[int, str]]:
    """Decide `requests` in the replica's view (module rules).

    Returns the decisions, for each the seqs of the pending edits it relied on
    (empty when it did not), and the local edits that do not apply (seq ->
    why). The engine is back at the confirmed policy afterwards.
    """
    if not edits:
        return engine.decide_many(requests, now), [()] * len(requests), {}
    overlay = Overlay(engine, edits)
    try:
        decisions = engine.decide_many(requests, now)
        users = {r.user for r in requests}
        touching = {user: overlay.touching(user) for user in users & overlay.affected}
    finally:
        overlay.take_back()
    # And the edits that touched what they held before (a deleted role's holders).
    for user in users & overlay.affected:
        seqs = set(touching.get(user, ())) | set(overlay.touching(user))
        touching[user] = tuple(sorted(seqs))
    affected = [i for i, r in enumerate(requests) if r.user in overlay.affected]
    relied: list[tuple[int, ...]] = [()] * len(requests)
    for i in affected:
        confirmed = engine.decide(requests[i], now)
        if confirmed.allowed != decisions[i].allowed or confirmed.reason != decisions[i].reason:
            relied[i] = touching[requests[i].user]
    return decisions, relied, overlay.failed
