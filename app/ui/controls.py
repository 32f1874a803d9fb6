"""Controls made the way every view makes them: named for assistive technology where
they are created.

Rules of this module (the desktop issue, § Accessibility; STYLE.md 6):

- Every control gets a stable objectName and its accessible name where it is
  created; a button's accessible name is its text without the mnemonic's `&`
  and the ellipsis `…`, unless a clearer one is given.
- A label that shows a state or an outcome is named too, for assistive
  technology, whatever text it shows at the moment.
- Panes beside or above each other never collapse to nothing (each view's
  splitters were made so; `splitter` keeps it).
- A dialog whose accept button may refuse in place (say why and stay open)
  has its own accept button; its handler decides whether to close.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QDialog,
    QDialogButtonBox,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QWidget,
)

from app.ui.main_window import announce


def push_button(
    parent: QWidget, text: str, name: str, description: str = "", accessible: str = ""
) -> QPushButton:
    """A button showing `text` (with its mnemonic), named `name`, its accessible name
    `accessible` or else its text without `&` and `…`; `description`, when the name
    is not enough, its accessible description."""
    button = QPushButton(text, parent)
    button.setObjectName(name)
    button.setAccessibleName(accessible or text.replace("&", "").replace("\u2026", ""))
    if description:
        button.setAccessibleDescription(description)
    return button


def name_spin_box(box: QAbstractSpinBox, name: str, description: str = "") -> None:
    """Name `box` (a spin box, a date and time field) and the line edit inside it, which
    takes the focus with it and is what a screen reader reads: `name`, and
    `description` when the name is not enough."""
    box.setAccessibleName(name)
    if description:
        box.setAccessibleDescription(description)
    for inner in box.findChildren(QLineEdit):
        inner.setAccessibleName(name)
        if description:
            inner.setAccessibleDescription(description)


def text_label(
    parent: QWidget, name: str, accessible: str, *, wrap: bool = False, selectable: bool = False
) -> QLabel:
    """An empty label for a state or an outcome, named `name` and, for assistive
    technology, `accessible`; `wrap`: its text wraps at its width; `selectable`: the
    mouse can select it (to copy a reason or a problem)."""
    label = QLabel(parent)
    label.setObjectName(name)
    label.setAccessibleName(accessible)
    if wrap:
        label.setWordWrap(True)
    if selectable:
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def progress_bar(parent: QWidget, name: str, accessible: str) -> QProgressBar:
    """A progress bar named `name` and, for assistive technology, `accessible` (what
    it counts)."""
    bar = QProgressBar(parent)
    bar.setObjectName(name)
    bar.setAccessibleName(accessible)
    return bar


def splitter(
    parent: QWidget, orientation: Qt.Orientation, name: str, panes: Sequence[tuple[QWidget, int]]
) -> QSplitter:
    """Panes side by side (Horizontal) or one above another (Vertical), named `name`;
    each pane with its stretch factor; none collapses (module rules)."""
    split = QSplitter(orientation, parent)
    split.setObjectName(name)
    split.setChildrenCollapsible(False)
    for number, (pane, stretch) in enumerate(panes):
        split.addWidget(pane)
        split.setStretchFactor(number, stretch)
    return split


def accept_buttons(
    dialog: QDialog, text: str, name: str, accepted: Callable[[], None]
) -> tuple[QDialogButtonBox, QPushButton]:
    """The dialog's buttons: an accept button showing `text`, named `name`, that calls
    `accepted` (which closes the dialog or says why not: module rules), and Cancel,
    which rejects it. Returns the box and the accept button."""
    buttons = QDialogButtonBox(dialog)
    ok = buttons.addButton(text, QDialogButtonBox.ButtonRole.AcceptRole)
    ok.setObjectName(name)
    ok.setAccessibleName(text.replace("&", ""))
    cancel = buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
    cancel.setAccessibleName("Cancel")
    ok.clicked.connect(accepted)
    cancel.clicked.connect(dialog.reject)
    return buttons, ok


def accept_or_explain(dialog: QDialog, problem: str | None, label: QLabel, heading: str) -> None:
    """Close `dialog` as accepted when there is no `problem`; else show `heading:
    problem` in `label` and announce the problem, the dialog staying open (module
    rules: refused in place)."""
    if problem is None:
        dialog.accept()
        return
    label.setText(f"{heading}: {problem}")
    announce(label, problem)
