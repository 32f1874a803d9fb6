"""Work off the UI thread: run a function on a worker, hand its result back on the UI thread.

The desktop issue asks that nothing freeze the window: reading a 50,000-user policy
file, writing one, deciding for every user. Widgets are touched only on the UI thread
(STYLE.md), so the result comes back by a queued signal of an object living there.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Qt, QTimer, Signal

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

        after_this_event(threading.Thread(target=run, name=name, daemon=True).start)


def after_this_event(start: Callable[[], None]) -> None:
    """Call `start` (a worker's start) once the UI thread has finished what it is doing.

    A worker computing in Python takes the GIL from the UI thread at every call into
    Qt or SQLite it makes: started in the middle of a refresh (an edit queued, every
    view reading the view again), it made that refresh twice as long. Started after
    it, the two do not overlap."""
    QTimer.singleShot(0, start)
