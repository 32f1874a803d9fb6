"""Dialogs that choose one role among every role of the tenant.

Rules of this module (the desktop issue, § Roles, § Users):

- A picker lists every role, however many (no cap: the list lays thousands
  out at once, every row one line high), in the order of the model it is
  given: by name, whatever its case (`by_name`).
- A field above the list filters it as you type: part of a role's name, id or
  description, in any case, as the model's `search_role` text holds them.
- How many roles are shown is said beside the list, in words; each picker
  says when that is announced, what a row shows and what choosing does.
"""

from __future__ import annotations

from collections.abc import Iterable

from PySide6.QtCore import QAbstractItemModel, QSortFilterProxyModel, Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QLabel,
    QLineEdit,
    QListView,
    QVBoxLayout,
    QWidget,
)

from app.ui.controls import text_label
from sync.policy.model import Role


def by_name(roles: Iterable[Role]) -> list[Role]:
    """`roles` in the order a picker lists them: by name, whatever its case."""
    return sorted(roles, key=lambda role: role.name.casefold())


class RoleListDialog(QDialog):
    """A dialog titled `title` (module rules) whose `list` shows `model`'s roles through
    `proxy`, filtered by what is typed in `filter` (labelled `filter_text`, named
    `filter_name`), with `count` below it; `list_text`, when given, labels the list.
    `names` starts the objectName of each of them. Subclasses add their controls to
    `rows`, the dialog's layout, and say what choosing does."""

    def __init__(
        self,
        title: str,
        model: QAbstractItemModel,
        search_role: int,
        *,
        names: str,
        filter_text: str,
        filter_name: str,
        list_text: str = "",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("role-picker")
        self.setWindowTitle(title)
        self.setAccessibleName(title)
        model.setParent(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(model)
        self.proxy.setFilterRole(search_role)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)

        filter_label = QLabel(filter_text, self)
        self.filter = QLineEdit(self)
        self.filter.setObjectName(f"{names}filter")
        self.filter.setAccessibleName(filter_name)
        self.filter.setAccessibleDescription("Type part of a role's name, id or description")
        self.filter.setClearButtonEnabled(True)
        filter_label.setBuddy(self.filter)
        self.list = QListView(self)
        self.list.setObjectName(f"{names}list")
        self.list.setAccessibleName("Roles")
        self.list.setModel(self.proxy)
        self.list.setUniformItemSizes(True)  # thousands of roles lay out at once
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.count = text_label(self, f"{names}count", "Roles shown")

        self.rows = QVBoxLayout(self)
        self.rows.addWidget(filter_label)
        self.rows.addWidget(self.filter)
        if list_text:
            list_label = QLabel(list_text, self)
            list_label.setBuddy(self.list)
            self.rows.addWidget(list_label)
        self.rows.addWidget(self.list, 1)
        self.rows.addWidget(self.count)
