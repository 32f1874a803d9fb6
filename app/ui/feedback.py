"""What a view says to the person, and what it asks them.

Rules of this module (the desktop issue, § Accessibility; the views' `message`):

- An outcome is one line, shown in the view's label for it, announced to
  assistive technology from that label (`announce`), and emitted on the view's
  `message` signal for the main window's status bar: text and speech, never
  one without the other.
- `ask` puts a question that may lose something (a deletion, a discard) in a
  Yes/No box whose default is No: Enter alone never confirms it.
"""

from __future__ import annotations

from PySide6.QtCore import SignalInstance
from PySide6.QtWidgets import QLabel, QMessageBox, QWidget

from app.ui.main_window import announce


def say(label: QLabel, text: str, message: SignalInstance | None = None) -> None:
    """Show `text` in `label`, announce it from there and emit it on `message` (a view's
    one-line outcome signal; None: shown and announced only)."""
    label.setText(text)
    announce(label, text)
    if message is not None:
        message.emit(text)


def ask(parent: QWidget, title: str, question: str) -> bool:
    """Ask `question` in a Yes/No box titled `title`, No by default; True for Yes."""
    buttons = QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No
    answer = QMessageBox.question(parent, title, question, buttons, QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes
