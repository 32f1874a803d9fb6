"""Drive the desktop app end to end: sign in through the sign-in window against a real
server process, open the administration window on the replica with its live sync,
wait for what the person would wait for (online, the outbox pushed), and ask another,
headless client what the server holds.

Used by tests/e2e/test_desktop_workflows.py. Qt runs offscreen (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QWidget

from app.ui.admin import AdminWindow
from app.ui.live_sync import LiveSync
from app.ui.sign_in import SignedIn, SignInWindow
from app.ui.workspace import Workspace
from tests.e2e.headless import Headless, fleetgate
from tests.server.conftest import PASSWORD

WAIT_MS = 30_000
"""The longest any one step may take (they take well under a second here)."""

QtBot = Any
"""pytest-qt's bot (its methods carry no types)."""


@dataclass
class Desktop:
    """One person's desktop app: the replica signed in, its workspace and window."""

    signed_in: SignedIn
    workspace: Workspace
    window: AdminWindow
    chosen: dict[str, Path] = field(default_factory=dict)
    """What the window's file chooser answers next, by caption ("Export policy" ...)."""

    @property
    def sync(self) -> LiveSync:
        assert self.signed_in.sync is not None
        return self.signed_in.sync

    def connection(self) -> str:
        """What the status bar says of the connection."""
        return self.window.connection.text()

    def status(self, part: str) -> str:
        """What the status bar's `part` says (synced, pending, attention, lease)."""
        return self.window.status_labels[part].text()

    def cursor(self) -> int:
        return self.workspace.replica.meta().cursor

    def close(self) -> None:
        """Stop the sync (the window's close does), then close the UI's replica."""
        self.window.close()
        self.sync.stop()
        self.workspace.replica.close()


def sign_in(qtbot: QtBot, directory: Path, url: str, user: str = "admin") -> Desktop:
    """Type the password into the sign-in window and press Enter; once the replica has
    caught up, open the administration window as the app does (app/desktop.py)."""
    window = SignInWindow(directory, server=url, tenant="acme", user=user)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    got: list[SignedIn] = []
    opened: list[Desktop] = []

    def open_admin(done: SignedIn) -> None:
        # Connected to `signed_in` as app/desktop.py connects it: the window is built in
        # the same turn of the event loop as the sign-in finishes.
        got.append(done)
        opened.append(_admin(qtbot, done))

    window.signed_in.connect(open_admin)
    qtbot.keyClicks(window.password, PASSWORD)
    qtbot.keyClick(window.password, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: bool(opened), timeout=WAIT_MS)
    assert not window.isVisible(), "the sign-in window stays open after signing in"
    return opened[0]


def _admin(qtbot: QtBot, done: SignedIn) -> Desktop:
    workspace = Workspace(done.replica, done.user)
    chosen: dict[str, Path] = {}

    def choose(_parent: QWidget, caption: str, _saving: bool) -> Path | None:
        return chosen.get(caption)

    window = AdminWindow(
        workspace, f"{done.tenant} \u2014 {done.user}", sync=done.sync, file_chooser=choose
    )
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    window.activateWindow()  # offscreen: no window manager hands it the focus
    return Desktop(done, workspace, window, chosen)


def wait_live(qtbot: QtBot, desktop: Desktop) -> None:
    """Wait until the live sync's connection is LIVE (read from the session itself:
    what the status bar should then say is a test of its own)."""
    from sync.protocol.client import ClientState

    def live() -> bool:
        session = desktop.sync.session
        return session is not None and session.connection.state is ClientState.LIVE

    qtbot.waitUntil(live, timeout=WAIT_MS)


def wait_pushed(qtbot: QtBot, desktop: Desktop, after: int) -> None:
    """Wait until the outbox is empty, the confirmed policy moved past cursor `after`,
    and the window read it again (its status bar says nothing is pending)."""

    def pushed() -> bool:
        return (
            not desktop.workspace.pending()
            and desktop.cursor() > after
            and desktop.status("pending") == "No pending edits"
            and desktop.window.pending_view.pending_model.rowCount() == 0
        )

    qtbot.waitUntil(pushed, timeout=WAIT_MS)


class Headlessly(Headless):
    """A headless client (`fleetgate` processes) whose calls run to the end from a
    synchronous test: the event loop is the UI thread's, blocked meanwhile."""

    def run(self, *extra: str) -> tuple[int, str, str]:
        return asyncio.run(self.sync(*extra))

    def state(self) -> dict[str, Any]:
        """The replica's cursor, digest, pending edits and outcomes (`fleetgate outbox`)."""
        return asyncio.run(self.outbox())

    def decide(self, user: str, action: str, resource: str) -> dict[str, Any]:
        """A decision of this replica (not logged: nobody acts on it)."""
        code, out, err = asyncio.run(
            fleetgate("check", *self.replica, "--no-log", "--user", user, "--action", action,
                      "--resource", resource)
        )  # fmt: skip
        assert code == 0, err
        return dict(json.loads(out))

    def queue(self, edits: list[dict[str, Any]], tmp: Path) -> None:
        code, _, err = asyncio.run(self.edit(edits, tmp))
        assert code == 0, err


def agree(desktop: Desktop, other: Headlessly) -> dict[str, Any]:
    """Sync `other` and check the desktop's confirmed policy is the one it got from the
    server: the same cursor and digest. Returns `other`'s state."""
    code, _, err = other.run()
    assert code == 0, err
    state = other.state()
    meta = desktop.workspace.replica.meta()
    assert (meta.cursor, meta.digest) == (state["cursor"], state["digest"])
    return state
