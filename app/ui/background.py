"""Work off the UI thread: run a function on a worker, hand its result back on the UI thread.

The desktop issue asks that nothing freeze the window: reading a 50,000-user policy
file, writing one, deciding for every user. Widgets are touched only on the UI thread
(STYLE.md), so the result comes back by a queued signal of an object living there.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QCoreApplication, QObject, Qt, QTimer, Signal

from app.policy_files import automatic_collection_off, collection_paused

COLLECT_EVERY_MS = 250
"""How often the UI thread looks whether the cyclic collector has work (`ui_thread_collects`)."""

_collector: list[QTimer] = []


def ui_thread_collects() -> None:
    """Run the cyclic garbage collector on the UI thread only, from a timer, instead of in
    whichever thread crosses its allocation threshold (call it before starting threads;
    once is enough, later calls change nothing).

    A collection in a worker (the sync's loop, a read) frees the Qt objects of the
    cyclic garbage it finds there, and a QObject destroyed off its thread crashes the
    process: the test suite segfaulted so, in the sync thread, during a sign-in test.
    The pattern calibre and pyqtgraph use: automatic collection off, and the UI thread
    collects each generation when its count passes the threshold the collector would
    have used (nothing while a `gc_paused` block builds a large structure).
    """
    if _collector:
        return
    application = QCoreApplication.instance()
    if application is None:
        raise RuntimeError("ui_thread_collects needs the application object first")
    automatic_collection_off()
    timer = QTimer(application)
    timer.setObjectName("fleetgate-collector")
    timer.timeout.connect(collect_due)
    timer.start(COLLECT_EVERY_MS)
    _collector.append(timer)


def collect_due() -> int | None:
    """Collect the oldest generation whose count passed its threshold, as the automatic
    collector would have; returns it (None: nothing was due, or a pause is under way)."""
    if collection_paused():
        return None
    counts, thresholds = gc.get_count(), gc.get_threshold()
    due = [generation for generation in range(3) if counts[generation] > thresholds[generation]]
    if not due:
        return None
    generation = max(due)
    gc.collect(generation)
    return generation


UI_SWITCH_INTERVAL_S = 0.001
"""How long a worker thread may hold the GIL while the UI thread waits for it.

The UI thread gives the GIL up at every SQLite statement and Qt call; with a worker
computing (who can, a role's holders, the view compiled after a sync) it then waits
for the worker's turn to end, 5 ms by default. A page refresh runs about a hundred
statements: that was a 190 ms stall after queueing one edit. At 1 ms the wait is a
fifth; a worker alone (no thread waiting) is never interrupted for it."""


def prefer_the_ui_thread() -> None:
    """Let the UI thread have the GIL back soon when a worker computes (process-wide:
    call it where the app starts its windows)."""
    sys.setswitchinterval(min(sys.getswitchinterval(), UI_SWITCH_INTERVAL_S))


class Courier(QObject):
    """Carries results from workers to the UI thread (create it on the UI thread)."""

    _done = Signal(object, object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        ui_thread_collects()  # before any worker of ours allocates
        self._done.connect(lambda deliver, result: deliver(result),
                           Qt.ConnectionType.QueuedConnection)  # fmt: skip

    def run(self, name: str, work: Callable[[], Any], deliver: Callable[[Any], None]) -> None:
        """Run `work()` on a thread named `name`; `deliver(result)` on the UI thread, the
        result being the exception `work` raised, if it raised one. The thread starts
        when the UI thread is back in its event loop (`after_this_event`)."""

        def run() -> None:
            try:
                result: Any = work()
            except Exception as error:  # noqa: BLE001 - handed to the UI thread
                result = error
            with contextlib.suppress(RuntimeError):  # the window closed meanwhile
                self._done.emit(deliver, result)

        after_this_event(self, threading.Thread(target=run, name=name, daemon=True).start)


PAINTED_FIRST_MS = 20
"""How long a worker's start waits: the UI thread paints what changed first."""


def after_this_event(owner: QObject, start: Callable[[], None]) -> None:
    """Call `start` (a worker's start) once the UI thread has finished what it is doing
    and painted it (`owner`: a QObject of the UI thread that outlives the wait).

    A worker computing in Python takes the GIL from the UI thread at every call into
    Python the UI thread makes, and painting a table calls its model for every cell
    shown: started at once, a worker made the repaint after an edit (every view shows
    the view again) last as long as itself, 170 ms on 50,000 users. Started after it,
    the two do not overlap."""
    timer = QTimer(owner)  # owned: kept alive until it fires, gone with `owner`
    timer.setSingleShot(True)
    # A function, not `start` itself: Qt holds a bound method weakly, and the thread
    # whose start it is may have no other owner.
    timer.timeout.connect(lambda: start())  # noqa: PLW0108 - see above
    timer.timeout.connect(timer.deleteLater)
    timer.start(PAINTED_FIRST_MS)


RETIRE_CHUNK = 2000
"""Entries freed between two chances for the UI thread to take the GIL back."""


def retire(owner: QObject, *structures: object) -> None:
    """Free large structures nobody else holds on a worker, a piece at a time, instead of
    all at once on the UI thread where their last reference goes (`owner`: as for
    `after_this_event`).

    Freeing the view a sync replaced (an engine and policy of 50,000 users) is one
    cascade of deallocations holding the GIL: 60 ms of the UI thread's stall. Here each
    large dictionary, set or list of theirs, and of the objects only they hold, is
    emptied RETIRE_CHUNK entries at a time, with the GIL given up in between. An object
    someone else still holds (a read under way on the old view) is left as it is, to be
    freed when they let it go.
    """
    kept = list(structures)
    del structures

    def work() -> None:
        while kept:
            item = kept.pop()
            if sys.getrefcount(item) <= _ONLY_HERE:
                _empty(item)
            del item

    after_this_event(
        owner, threading.Thread(target=work, name="fleetgate-retire", daemon=True).start
    )


_ONLY_HERE = 2
"""`sys.getrefcount` of an object held by one name only (and the call's argument)."""
_ONLY_ITS_OWNER = 3
"""... of an attribute's value held by its owner only (its slot, a name, the argument)."""


def _empty(item: object, depth: int = 0) -> None:
    """Empty `item`'s large containers that it alone holds, and do the same for the
    objects it alone holds (two levels down: a view's engine, its policy)."""
    names = list(getattr(item, "__dict__", {}))
    for klass in type(item).__mro__:
        names += [n for n in getattr(klass, "__slots__", ()) if isinstance(n, str)]
    for name in names:
        value = getattr(item, name, None)
        if value is None or sys.getrefcount(value) > _ONLY_ITS_OWNER:
            del value
            continue
        if isinstance(value, dict | set | list):
            if len(value) > RETIRE_CHUNK:
                _drain(value)
        elif depth < 2 and (hasattr(value, "__dict__") or hasattr(type(value), "__slots__")):
            _empty(value, depth + 1)
        del value


def _drain(container: dict[Any, Any] | set[Any] | list[Any]) -> None:
    take = container.popitem if isinstance(container, dict) else container.pop
    while container:
        for _ in range(min(RETIRE_CHUNK, len(container))):
            take()
        time.sleep(0)  # the GIL, for the UI thread if it waits
