"""Item models over the replica: roles and users a page at a time, filtered by search.

Rules of this module (the desktop issue, § Large tenants):

- A list never holds the tenant: `EntityListModel` reads `PAGE` rows when the
  view asks for more (`canFetchMore`/`fetchMore`), by rowid from the
  replica's `entities` table, so 50,000 users open as fast as 50.
- A filter is answered by the replica's FTS5 search (`Replica.search`), up
  to `MATCHES` hits, each read by its key; clearing it goes back to paging.
- Every column has a header name, for the table and for screen readers; a
  cell's text says everything its decoration does (no meaning in colour).
- Models read on the thread that owns the replica (the UI thread); each
  read is one indexed query of at most PAGE rows (about a millisecond).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt

PAGE = 200
MATCHES = 500

Index = QModelIndex | QPersistentModelIndex


class EntitySource(Protocol):
    """What the models read (app.replica.Replica)."""

    def entity_page(self, kind: str, after: int, limit: int) -> list[tuple[int, str, Any]]: ...

    def entity_count(self, kind: str) -> int: ...

    def entities_named(self, kind: str, ids: Sequence[str]) -> list[tuple[int, str, Any]]: ...

    def search(self, text: str, limit: int = 50) -> list[tuple[str, str]]: ...


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    text: Callable[[str, Any], str]
    """The cell's text from the entity's id and document."""


def _count(document: Any, key: str) -> str:
    listed = document.get(key) if isinstance(document, dict) else None
    return str(len(listed)) if isinstance(listed, list) else "0"


def _attributes(document: Any) -> str:
    attributes = document.get("attributes") if isinstance(document, dict) else None
    if not isinstance(attributes, dict):
        return ""
    return ", ".join(f"{k}: {v}" for k, v in attributes.items())


def _text(key: str) -> Callable[[str, Any], str]:
    def read(_entity_id: str, document: Any) -> str:
        value = document.get(key) if isinstance(document, dict) else None
        return value if isinstance(value, str) else ""

    return read


def _suspended(_entity_id: str, document: Any) -> str:
    return "suspended" if isinstance(document, dict) and document.get("suspended") else "active"


USER_COLUMNS = (
    Column("User", lambda entity_id, _d: entity_id),
    Column("Name", _text("name")),
    Column("Status", _suspended),
    Column("Roles", lambda _i, document: _count(document, "roles")),
    Column("Attributes", lambda _i, document: _attributes(document)),
)
ROLE_COLUMNS = (
    Column("Role", _text("name")),
    Column("Id", lambda entity_id, _d: entity_id),
    Column("Inherits", lambda _i, document: _count(document, "inherits")),
    Column("Description", _text("description")),
)


class EntityListModel(QAbstractTableModel):
    """The roles or users of a replica (module rules)."""

    ID_ROLE = Qt.ItemDataRole.UserRole + 1
    """The entity's id (for views to open it), whatever the column shows."""

    def __init__(self, source: EntitySource, kind: str, columns: Sequence[Column]) -> None:
        super().__init__()
        self._source = source
        self._kind = kind
        self._columns = tuple(columns)
        self._rows: list[tuple[int, str, Any]] = []
        self._filter = ""
        self._total = source.entity_count(kind)
        self._exhausted = self._total == 0

    # --- what the view asks ----------------------------------------------------------

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 - Qt's API
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._columns)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self._rows):
            return None
        _rowid, entity_id, document = self._rows[index.row()]
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.AccessibleTextRole):
            return self._columns[index.column()].text(entity_id, document)
        if role == self.ID_ROLE:
            return entity_id
        return None

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation is Qt.Orientation.Horizontal and role in (
            Qt.ItemDataRole.DisplayRole,
            Qt.ItemDataRole.AccessibleTextRole,
        ):
            return self._columns[section].header
        return None

    def canFetchMore(self, parent: Index = QModelIndex()) -> bool:  # noqa: B008
        return not parent.isValid() and not self._exhausted

    def fetchMore(self, parent: Index = QModelIndex()) -> None:  # noqa: B008
        if parent.isValid() or self._exhausted:
            return
        after = self._rows[-1][0] if self._rows else 0
        page = self._source.entity_page(self._kind, after, PAGE)
        if len(page) < PAGE:
            self._exhausted = True
        if page:
            first = len(self._rows)
            self.beginInsertRows(QModelIndex(), first, first + len(page) - 1)
            self._rows.extend(page)
            self.endInsertRows()

    # --- filtering -------------------------------------------------------------------

    @property
    def total(self) -> int:
        """Every entity of the kind in the replica (not only those loaded)."""
        return self._total

    @property
    def filter_text(self) -> str:
        return self._filter

    def set_filter(self, text: str) -> int:
        """Show the entities matching `text` (all of them for an empty text); returns
        how many match (up to MATCHES)."""
        text = text.strip()
        self.beginResetModel()
        self._filter = text
        if text:
            hits = [i for kind, i in self._source.search(text, MATCHES) if kind == self._kind]
            self._rows = self._source.entities_named(self._kind, hits)
            self._exhausted = True
        else:
            self._rows = []
            self._exhausted = self._total == 0
        self.endResetModel()
        if not text:
            self.fetchMore()
        return len(self._rows)

    def refresh(self) -> None:
        """Read again from the replica (after a sync or an edit), keeping the filter."""
        self._total = self._source.entity_count(self._kind)
        loaded = len(self._rows)
        self.set_filter(self._filter)
        while not self._filter and len(self._rows) < loaded and self.canFetchMore():
            self.fetchMore()

    def entity_id(self, row: int) -> str:
        return self._rows[row][1]
