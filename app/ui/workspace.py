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
- Used on the UI thread only, like the replica it holds. The one exception is
  `prepare`: it compiles the view on a worker thread, from a replica of its own
  (a replica is used only on the thread that opened it), so a window on 50,000
  users is usable before the view is compiled; `ready` says when it is. Asking
  for the engine before then waits for that work instead of doing it twice.
- A sync that moves the cursor (`reload`) compiles the new view on a worker
  too, from the same `reopen`, while the windows go on with the one they had
  (a second behind, never half-changed); `changed` says when the new one is in
  place. An edit queued meanwhile is applied to the view shown, and makes the
  one being compiled stale: it is compiled again, so no edit is ever missing
  from the view. Without `reopen` (no `prepare` was asked), a reload drops the
  view and the next use compiles it.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Callable, Sequence
from typing import Any

import shiboken6
from PySide6.QtCore import QObject, Qt, Signal

from app import offline
from app.policy_files import gc_paused
from app.replica import Attention, OutboxRow, Replica
from app.ui.background import Courier, after_this_event, prefer_the_ui_thread, retire
from sync.policy.engine import Engine
from sync.policy.instant import Instant
from sync.policy.model import Policy


class Workspace(QObject):
    """One replica's view and the person editing it (module rules)."""

    changed = Signal()
    """The view changed: a local edit was queued or taken back, or a sync arrived."""
    ready = Signal()
    """The view is compiled (after `prepare`): windows may show what needs it."""
    _prepared = Signal(int, object)

    def __init__(
        self,
        replica: Replica,
        author: str,
        *,
        clocks: offline.Clocks | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        prefer_the_ui_thread()  # this object's workers compute beside the window
        self.replica = replica
        self.author = author
        """The user id edits are made as (the signed-in person)."""
        self.clocks = clocks or offline.Clocks()
        self._now: Callable[[], Instant] = offline.effective_clock(replica, self.clocks)
        self._engine: Engine | None = None
        self._confirmed: Policy | None = None
        self._failed: dict[int, str] = {}
        self._generation = 0
        """Counts reloads: a view prepared before the last one is stale."""
        self._preparing: threading.Thread | None = None
        self._result: tuple[int, Engine, Policy, dict[int, str]] | BaseException | None = None
        self._reopen: Callable[[], Replica] | None = None
        self._stale = False
        """The view shown is behind the replica (a sync moved it): a new one is prepared."""
        self._prepared_at = 0
        """`_changes` when the view being prepared started: one queued since is missing."""
        self._prepared.connect(self._take_prepared, Qt.ConnectionType.QueuedConnection)
        self._writing = threading.Lock()
        """Held while an edit is applied to the engine, or a worker reads all of it."""
        self._changes = 0
        """Counts changes to the view: a read made before the last one is not delivered."""
        self._courier = Courier(self)

    def now(self) -> Instant:
        """The replica's effective time (a clock moved back does not reverse it)."""
        return self._now()

    def engine(self) -> Engine:
        """The view compiled: confirmed policy plus pending edits (built on first use, or
        taken from `prepare` when it is under way)."""
        if self._engine is None and self._preparing is not None:
            self._preparing.join()
            self._take_prepared(self._generation, None)
        if self._engine is None:  # (a view still shown while its successor compiles is kept)
            with gc_paused():
                self._engine, self._confirmed, self._failed = _compile(self.replica, self.now())
                _freeze_compiled()
        return self._engine

    def confirmed(self) -> Policy:
        """The confirmed policy (what the server last said), without pending edits. Read
        it, never change it; it is kept until the next sync (`reload`)."""
        if self._confirmed is None:
            self.engine()
        if self._confirmed is None:  # compiled before it was kept (a prepared view)
            self._confirmed = self.replica.load_policy(self.now())
        return self._confirmed

    def is_ready(self) -> bool:
        """Whether the view is compiled (`engine()` returns at once)."""
        return self._engine is not None

    def is_preparing(self) -> bool:
        """Whether `prepare` is compiling the view (`ready` follows)."""
        return self._preparing is not None and self._engine is None

    def is_refreshing(self) -> bool:
        """Whether the view shown is behind the replica while its successor compiles."""
        return self._stale

    def prepare(self, reopen: Callable[[], Replica]) -> None:
        """Compile the view on a worker thread, from the replica `reopen()` opens there;
        `ready` is emitted on the UI thread when it is done (at once if it is). Later
        reloads compile on a worker from `reopen` too (module rules)."""
        self._reopen = reopen
        if self._engine is not None:
            self.ready.emit()
            return
        if self._preparing is not None:
            return
        self._start_preparing()

    def _start_preparing(self) -> None:
        reopen = self._reopen
        assert reopen is not None
        generation, now = self._generation, self.now()
        self._prepared_at = self._changes
        signal = self._prepared

        def work() -> None:
            try:
                replica = reopen()
                try:
                    # Millions of objects at once: the collector paused, as in the CLI
                    # (and its passes would stall the UI thread, which waits for the GIL).
                    with gc_paused():
                        engine, confirmed, failed = _compile(replica, now)
                        _freeze_compiled()  # before the collector is back (see there)
                finally:
                    replica.close()
                self._result = (generation, engine, confirmed, failed)
            except BaseException as error:  # noqa: BLE001 - handed to the UI thread
                self._result = error
            with contextlib.suppress(RuntimeError):  # the window closed meanwhile
                signal.emit(generation, None)

        self._preparing = threading.Thread(target=work, name="fleetgate-view", daemon=True)
        if self._engine is None:
            self._preparing.start()  # nothing is shown yet: at once
        else:
            after_this_event(self, self._preparing.start)  # after the reload's own event

    def _take_prepared(self, generation: int, _unused: object) -> None:
        result, self._result = self._result, None
        thread, self._preparing = self._preparing, None
        if thread is None or result is None:
            return  # taken already (engine() waited for it)
        if self._stale:
            self._take_refreshed(result)
            return
        if not isinstance(result, BaseException) and result[0] != self._generation:
            # A sync moved the replica while the first view compiled: compile it again
            # there (`ready` when that one is in place).
            self._start_preparing()
            return
        if isinstance(result, BaseException):
            # Failed: engine() compiles it here when asked (and says what is wrong):
            # windows waiting for the view go on.
            self.ready.emit()
            return
        _, engine, confirmed, failed = result
        if self._engine is None and generation == self._generation:
            self._engine, self._confirmed, self._failed = engine, confirmed, failed
            self.ready.emit()

    def _take_refreshed(
        self, result: tuple[int, Engine, Policy, dict[int, str]] | BaseException
    ) -> None:
        """The view compiled after a reload: in place of the one shown, unless the replica
        moved again or an edit was queued since it started (then compiled again)."""
        if isinstance(result, BaseException):
            # Shown as the first use compiles it: here, saying what is wrong.
            self._stale = False
            self._engine = self._confirmed = None
            self.changed.emit()
            return
        if result[0] != self._generation or self._prepared_at != self._changes:
            self._start_preparing()
            return
        _, engine, confirmed, failed = result
        old = [self._engine, self._confirmed]
        self._engine, self._confirmed, self._failed = engine, confirmed, failed
        self._stale = False
        self._changes += 1  # reads begun on the view before are not delivered
        self.changed.emit()  # the windows let the old view go
        retire(self, *old)  # freed a piece at a time on a worker, not here at once
        old.clear()

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
        engine = self.engine()
        with self._writing:  # a read on a worker (`read_later`) finishes first
            seqs = offline.queue_edits(self.replica, documents, author=self.author,
                                       clocks=self.clocks, cancels=cancels, where=where,
                                       engine=engine)  # fmt: skip
        self._changes += 1
        self.changed.emit()
        return seqs

    def read_later(
        self,
        work: Callable[[Engine], Any],
        deliver: Callable[[Any], None],
        receiver: QObject | None = None,
    ) -> None:
        """Run `work(engine)` on a worker thread and hand its result to `deliver` on the UI
        thread, unless the view changed meanwhile (the view then asks again, as it does
        on `changed`). For reads of the whole tenant (who can; a role's 80,000 holders)
        that would stall the window: `queue` waits for one under way, and a read never
        changes the engine (it may fill its caches). An exception from `work` is
        delivered as the result; nothing is delivered once `receiver` (the widget that
        asked) is deleted."""
        engine = self.engine()
        changes, writing = self._changes, self._writing

        def read() -> Any:
            with writing:
                return work(engine)

        def delivered(result: Any) -> None:
            if receiver is not None and not shiboken6.isValid(receiver):
                return  # its window closed meanwhile
            if changes == self._changes and self._engine is not None:
                deliver(result)

        self._courier.run("fleetgate-read", read, delivered)

    def take_back(self, seq: int) -> list[int]:
        """Queue the edits that undo pending edit `seq` (nothing leaves the outbox
        without an outcome); returns their seqs, none when it changes nothing now.
        Raises offline.EditProblem or sync.policy.reach.Unreachable saying why not."""
        documents = offline.take_back(self.replica, seq, self.now(), current=self.policy(),
                                      confirmed=self.confirmed())  # fmt: skip
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
        """The confirmed policy moved (a sync): compile the view again, then say so (on
        a worker when `prepare` was asked, else on first use: module rules)."""
        self._generation += 1
        self._changes += 1
        gc.unfreeze()  # what the old view leaves may be collected; the new one is frozen
        if self._reopen is not None and self._engine is not None:
            self._stale = True
            if self._preparing is None:
                self._start_preparing()
            # else: the one under way is stale, and _take_refreshed starts another
            return
        self._stale = False
        self._engine = None
        self._confirmed = None
        self.changed.emit()


def _compile(replica: Replica, now: Instant) -> tuple[Engine, Policy, dict[int, str]]:
    """The view compiled, the confirmed policy it was made from, the edits that fail."""
    confirmed = replica.load_policy(now)
    view, failed = offline.replayed(confirmed, replica.view_edits())
    return Engine(view, replica.meta().cursor), confirmed, failed


def _freeze_compiled() -> None:
    # The compiled view lives until the next sync: the collector need not walk its
    # millions of objects again (a full pass took up to 800 ms on 50,000 users, and
    # stalled whatever the person was doing). Frozen before the collector runs again:
    # its first pass after a pause walked every new object, 250 ms holding the GIL.
    gc.freeze()
