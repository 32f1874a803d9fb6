"""What every window of the desktop app works on: one replica, its view, its author.

Rules of this module (the desktop issue, § Windows and workflows):

- The view is the replica's confirmed policy with the outbox replayed
  (`app/offline.py`), compiled once into an `Engine` and kept up to date
  edit by edit: queueing an edit applies it to that engine, so an edit on a
  50,000-user tenant costs what the edit touches, not a reload.
- Every change to the view goes through `queue` (or `take_back`), which checks
  it as the server will (schema, applies, author may make it) and queues it
  in one transaction; nothing here writes policy any other way.
- After a change (a queued edit, a sync that moved the cursor) `changed` is
  emitted; windows read what they show again from here.
- Used on the UI thread only, like the replica it holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtCore import QObject, Signal

from app import offline
from app.replica import Attention, OutboxRow, Replica
from sync.policy.engine import Engine
from sync.policy.instant import Instant
from sync.policy.model import Policy


class Workspace(QObject):
    """One replica's view and the person editing it (module rules)."""

    changed = Signal()
    """The view changed: a local edit was queued or taken back, or a sync arrived."""

    def __init__(
        self,
        replica: Replica,
        author: str,
        *,
        clocks: offline.Clocks | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.replica = replica
        self.author = author
        """The user id edits are made as (the signed-in person)."""
        self.clocks = clocks or offline.Clocks()
        self._now: Callable[[], Instant] = offline.effective_clock(replica, self.clocks)
        self._engine: Engine | None = None
        self._failed: dict[int, str] = {}

    def now(self) -> Instant:
        """The replica's effective time (a clock moved back does not reverse it)."""
        return self._now()

    def engine(self) -> Engine:
        """The view compiled: confirmed policy plus pending edits (built on first use)."""
        if self._engine is None:
            policy, self._failed = offline.view_policy(self.replica, self.now())
            self._engine = Engine(policy, self.replica.meta().cursor)
        return self._engine

    def policy(self) -> Policy:
        """The view's policy. Read it, never change it: changes go through `queue`."""
        return self.engine().policy

    def failed(self) -> dict[int, str]:
        """Pending edits that do not apply to the view, seq -> why."""
        self.engine()
        return dict(self._failed)

    def queue(
        self,
        documents: Sequence[Any],
        *,
        cancels: int | None = None,
        where: Callable[[int], str] = lambda i: f"edit [{i}]",
    ) -> list[int]:
        """Check and queue edit documents (the edit documents of `what-if`) as the
        author; returns their seqs. Raises offline.EditProblem naming the edit and
        why, with nothing queued."""
        seqs = offline.queue_edits(
            self.replica,
            documents,
            author=self.author,
            clocks=self.clocks,
            cancels=cancels,
            where=where,
            engine=self.engine(),
        )
        self.changed.emit()
        return seqs

    def take_back(self, seq: int) -> list[int]:
        """Queue the edits that undo pending edit `seq` (nothing leaves the outbox
        without an outcome); returns their seqs, none when it changes nothing now.
        Raises offline.EditProblem or sync.policy.reach.Unreachable saying why not."""
        documents = offline.take_back(self.replica, seq, self.now())
        if not documents:
            return []
        return self.queue(
            documents, cancels=seq, where=lambda i: f"taking back edit {seq}: edit [{i}]"
        )

    def pending(self) -> list[OutboxRow]:
        """Edits queued here that have no outcome yet, lowest seq first."""
        return self.replica.pending()

    def attention(self) -> list[Attention]:
        """Outcomes the person must see: refused, superseded, conflicts."""
        return self.replica.attention()

    def dismiss(self, seq: int) -> bool:
        """Mark the outcome of edit `seq` as seen (it leaves `attention`); False when it
        was already. Says so through `changed`, as the status bar counts outcomes."""
        dismissed = self.replica.dismiss(seq)
        if dismissed:
            self.changed.emit()
        return dismissed

    def reload(self) -> None:
        """The confirmed policy moved (a sync): compile the view again, then say so."""
        self._engine = None
        self.changed.emit()
