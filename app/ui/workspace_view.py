"""What every view and editor of the workspace is (the desktop issue, § Windows and
workflows): a widget constructed as `X(workspace, parent=None)`, with a stable
objectName and an accessible name, that says on `message` the one-line outcome of
what the person did ("Queued edit 12: assign role driver to vic", or the reason it
was refused) for the main window's status bar. Each view follows
`workspace.changed` once its controls are built (`follow_changes`): a view on
screen refreshes at once, a hidden one when it is shown next. After a change
every view would read the view again, and only the one on screen needs to: on
50,000 users the hidden editors were 50 ms of the 165 a sync's change stalled.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Signal
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import QWidget

from app.ui.workspace import Workspace


class WorkspaceView(QWidget):
    """A view or editor of `workspace` (module rules), named `name` (its objectName) and
    `accessible` (its accessible name)."""

    message = Signal(str)
    """A one-line outcome of what the person did, for the status bar."""

    def __init__(
        self, workspace: Workspace, name: str, accessible: str, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.workspace = workspace
        self.setObjectName(name)
        self.setAccessibleName(accessible)
        self._refresh_on_show: Callable[[], None] | None = None

    def follow_changes(self, refresh: Callable[[], None]) -> None:
        """Call `refresh` after each change of the workspace's view: now when this view is
        on screen, otherwise when it is shown next (module rules)."""

        def changed() -> None:
            if self.isVisible():
                self._refresh_on_show = None
                refresh()
            else:
                self._refresh_on_show = refresh

        self.workspace.changed.connect(changed)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        refresh, self._refresh_on_show = self._refresh_on_show, None
        if refresh is not None:
            refresh()
