"""Table views set up the way every view of the desktop app shows a table.

Rules of this module (the desktop issue, § Accessibility):

- Tab leaves a table for the next control (tab-key navigation inside a table
  is a trap for keyboard and screen-reader users: main_window); the arrow keys
  move inside it.
- A table selects one whole row, alternates row colours and does not wrap its
  cells (one line a row: a long cell is elided and its tooltip says all).
- Columns are resized by the person; the last one takes what is left, unless
  a view makes one column the one that stretches (`stretch_one_column`).
- The model is set before anything that reads the header's sections, so that
  a view can size its columns at once.
"""

from __future__ import annotations

from PySide6.QtCore import QAbstractItemModel
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView, QWidget


def table_view(
    parent: QWidget,
    name: str,
    accessible: str,
    model: QAbstractItemModel,
    description: str = "",
) -> QTableView:
    """A table of `model` set up as the module rules say, for `parent`.

    `name` is its objectName, `accessible` its accessible name; `description`, when
    the name is not enough, its accessible description.
    """
    table = QTableView(parent)
    table.setObjectName(name)
    table.setAccessibleName(accessible)
    if description:
        table.setAccessibleDescription(description)
    table.setModel(model)
    table.setTabKeyNavigation(False)  # Tab leaves the table (main_window: a11y traps)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.setAlternatingRowColors(True)
    table.setWordWrap(False)
    table.verticalHeader().setVisible(False)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    header.setStretchLastSection(True)
    return table


def stretch_one_column(table: QTableView, column: int) -> None:
    """Size every column of `table` to its contents but `column`, which takes what is
    left (a table of few rows whose words are in one column)."""
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setSectionResizeMode(column, QHeaderView.ResizeMode.Stretch)
    header.setStretchLastSection(False)
