"""What every view and editor of the workspace is (the desktop issue, § Windows and
workflows): a widget constructed as `X(workspace, parent=None)`, with a stable
objectName and an accessible name, that says on `message` the one-line outcome of
what the person did ("Queued edit 12: assign role driver to vic", or the reason it
was refused) for the main window's status bar. Each view connects
`workspace.changed` to its own refresh once its controls are built.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
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
