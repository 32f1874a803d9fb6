"""Work off the UI thread: run a function on a worker, hand its result back on the UI thread.

The desktop issue asks that nothing freeze the window: reading a 50,000-user policy
file, writing one, deciding for every user. Widgets are touched only on the UI thread
(STYLE.md), so the result comes back by a queued signal of an object living there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal


class Courier(QObject):
    """Carries results from workers to the UI thread (create it on the UI thread)."""

    _done = Signal(object, object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._done.connect(lambda deliver, result: deliver(result),
                           Qt.ConnectionType.QueuedConnection)  # fmt: skip

    def run(self, name: str, work: Callable[[], Any], deliver: Callable[[Any], None]) -> None:
        """Run `work()` on a thread named `name`; `deliver(result)` on the UI thread, the
        result being the exception `work` raised, if it raised one."""

        def run() -> None:
            try:
                result: Any = work()
            except Exception as error:  # noqa: BLE001 - handed to the UI thread
                result = error
            self._done.emit(deliver, result)

        threading.Thread(target=run, name=name, daemon=True).start()
