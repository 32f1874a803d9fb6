"""What the accessibility tests of the desktop app share: which widgets a keyboard
reaches, and whether each one's accessible interface has a fitting role."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAccessible
from PySide6.QtWidgets import QWidget

FITTING_ROLES = {
    "QLineEdit": {QAccessible.Role.EditableText},
    "QPlainTextEdit": {QAccessible.Role.EditableText},
    "QAbstractSpinBox": {QAccessible.Role.SpinBox},
    "QPushButton": {QAccessible.Role.PushButton, QAccessible.Role.ButtonMenu},
    "QToolButton": {QAccessible.Role.PushButton, QAccessible.Role.ButtonMenu},
    "QCheckBox": {QAccessible.Role.CheckBox},
    "QRadioButton": {QAccessible.Role.RadioButton},
    "QComboBox": {QAccessible.Role.ComboBox},
    "QTableView": {QAccessible.Role.Table},
    "QListView": {QAccessible.Role.List},
    "QListWidget": {QAccessible.Role.List},
    "QTreeView": {QAccessible.Role.Tree},
    "QTabBar": {QAccessible.Role.PageTabList},
}
"""The accessible roles a widget of each class may have (its nearest listed base)."""


def focusable(root: QWidget) -> list[QWidget]:
    """The visible, enabled widgets under `root` that Tab stops at. A widget with a focus
    proxy (a tab widget: its tab bar; a spin box: its line edit) is reached as its proxy."""
    return [
        w
        for w in root.findChildren(QWidget)
        if w.isVisible()
        and w.isEnabled()
        and w.focusPolicy() & Qt.FocusPolicy.TabFocus
        and w.focusProxy() is None
    ]


def role_problem(widget: QWidget) -> str | None:
    """What is wrong with `widget`'s accessible role, or None when it fits its class."""
    interface = QAccessible.queryAccessibleInterface(widget)
    if interface is None:
        return "no accessible interface"
    for cls in type(widget).__mro__:
        wanted = FITTING_ROLES.get(cls.__name__)
        if wanted is not None:
            role = interface.role()
            return None if role in wanted else f"role {role.name}, wanted {cls.__name__}'s"
    return None
