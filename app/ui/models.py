"""Item models: rows with a header each column, all shown, shown a page at a time, or
read a page at a time; the roles and users of a replica, searchable.

Rules of this module (the desktop issue, § Large tenants, § Accessibility):

- Every column has a header name, for the table and for screen readers; a
  cell's text is its accessible text too, and says everything its decoration
  does (no meaning in colour).
- A model never formats or reads more rows than the view has asked for: a
  `ShownByPageModel` holds rows already worked out and hands the view a page
  at a time; a `ReadByPageModel` reads each page from its source when the view
  asks for more (`canFetchMore`/`fetchMore`).
- A list never holds the tenant: `EntityListModel` reads `PAGE` rows at a time,
  by rowid from the replica's `entities` table, so 50,000 users open as fast
  as 50.
- A filter is answered by the replica's FTS5 search (`Replica.search`), up
  to `MATCHES` hits, each read by its key; clearing it goes back to paging.
- Models read on the thread that owns the replica (the UI thread); each
  read is one indexed query of at most PAGE rows (about a millisecond).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, QPersistentModelIndex, Qt

PAGE = 200
MATCHES = 500

Index = QModelIndex | QPersistentModelIndex
TEXT_ROLES = (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.AccessibleTextRole)
"""The roles a cell answers with its words: what is shown is what is read out."""

Row = TypeVar("Row")


# --- rows with headers -------------------------------------------------------------


class RowsModel(QAbstractTableModel, Generic[Row]):
    """A table of rows of one kind, a header each column (module rules); subclasses say
    a cell's words (`text`), or what it is in any role (`cell`)."""

    def __init__(self, headers: Sequence[str], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._headers = tuple(headers)
        self._rows: list[Row] = []

    def set_rows(self, rows: Sequence[Row]) -> None:
        """Show `rows` in place of what was shown (a reset: the selection goes)."""
        self.beginResetModel()
        self._rows = list(rows)
        self.endResetModel()

    def rows(self) -> list[Row]:
        """Every row the model holds (a copy)."""
        return list(self._rows)

    def row(self, number: int) -> Row:
        """Row `number` (from 0)."""
        return self._rows[number]

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 - Qt's API
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._headers)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation is Qt.Orientation.Horizontal and role in TEXT_ROLES:
            return self._headers[section]
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= self.rowCount():
            return None
        return self.cell(self._rows[index.row()], index.column(), role)

    def cell(self, row: Row, column: int, role: int) -> Any:
        """What the cell at `column` of `row` is in `role`: by default its words
        (`text`) for the text roles, nothing for the others."""
        return self.text(row, column) if role in TEXT_ROLES else None

    def text(self, row: Row, column: int) -> str:
        """The words of the cell at `column` of `row`; a subclass that keeps the default
        `cell` says them."""
        raise NotImplementedError


class ShownByPageModel(RowsModel[Row]):
    """Rows all worked out, handed to the view `page` at a time as it scrolls
    (`canFetchMore`/`fetchMore`): a 50,000-row answer formats the rows shown only."""

    def __init__(self, headers: Sequence[str], page: int, parent: QObject | None = None) -> None:
        super().__init__(headers, parent)
        self._page = page
        self._shown = 0

    def set_rows(self, rows: Sequence[Row]) -> None:
        """Hold `rows` in place of what was held; the first page is shown."""
        self.beginResetModel()
        self._rows = list(rows)
        self._shown = min(self._page, len(self._rows))
        self.endResetModel()

    @property
    def total(self) -> int:
        """Every row held, shown or not yet."""
        return len(self._rows)

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 - Qt's API
        return 0 if parent.isValid() else self._shown

    def canFetchMore(self, parent: Index = QModelIndex()) -> bool:  # noqa: B008
        return not parent.isValid() and self._shown < len(self._rows)

    def fetchMore(self, parent: Index = QModelIndex()) -> None:  # noqa: B008
        if not self.canFetchMore(parent):
            return
        more = min(self._page, len(self._rows) - self._shown)
        self.beginInsertRows(QModelIndex(), self._shown, self._shown + more - 1)
        self._shown += more
        self.endInsertRows()


class ReadByPageModel(RowsModel[Row]):
    """Rows read from a source `page` at a time as the view asks for more
    (`canFetchMore`/`fetchMore`); `read_page` says how to read the rows after one."""

    def __init__(self, headers: Sequence[str], page: int, parent: QObject | None = None) -> None:
        super().__init__(headers, parent)
        self._page = page
        self._exhausted = False

    def read_page(self, after: Row | None, limit: int) -> list[Row]:
        """Up to `limit` rows that come after row `after` (None: from the first)."""
        raise NotImplementedError

    @property
    def exhausted(self) -> bool:
        """Every row there is to read is loaded."""
        return self._exhausted

    def canFetchMore(self, parent: Index = QModelIndex()) -> bool:  # noqa: B008
        return not parent.isValid() and not self._exhausted

    def fetchMore(self, parent: Index = QModelIndex()) -> None:  # noqa: B008
        if parent.isValid() or self._exhausted:
            return
        page = self.read_page(self._rows[-1] if self._rows else None, self._page)
        if len(page) < self._page:
            self._exhausted = True
        if page:
            first = len(self._rows)
            self.beginInsertRows(QModelIndex(), first, first + len(page) - 1)
            self._rows.extend(page)
            self.endInsertRows()

    def start_over(self, rows: Sequence[Row] = (), *, exhausted: bool = False) -> None:
        """Show `rows` (none: read from the first when the view asks) in place of what
        was loaded; `exhausted`: they are all there is."""
        self.beginResetModel()
        self._rows = list(rows)
        self._exhausted = exhausted
        self.endResetModel()

    def read_up_to(self, count: int) -> None:
        """Read pages until `count` rows are loaded or there are no more (a refresh keeps
        the rows the person had scrolled to)."""
        while len(self._rows) < count and self.canFetchMore():
            self.fetchMore()


# --- the roles and users of a replica ------------------------------------------------


class EntitySource(Protocol):
    """What the models read (app.replica.Replica)."""

    def entity_page(self, kind: str, after: int, limit: int) -> list[tuple[int, str, Any]]: ...

    def entity_count(self, kind: str) -> int: ...

    def entities_named(self, kind: str, ids: Sequence[str]) -> list[tuple[int, str, Any]]: ...

    def search(self, text: str, limit: int = 50) -> list[tuple[str, str]]: ...


@dataclass(frozen=True, slots=True)
class Column:
    """A column of an `EntityListModel`: its header and how each cell's text is made."""

    header: str
    text: Callable[[str, Any], str]
    """The cell's text from the entity's id and document."""
    characters: int = 10
    """How wide the column starts, in average characters (at least its header)."""


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
    Column("User", lambda entity_id, _d: entity_id, 12),
    Column("Name", _text("name"), 18),
    Column("Status", _suspended),
    Column("Roles", lambda _i, document: _count(document, "roles"), 6),
    Column("Attributes", lambda _i, document: _attributes(document)),
)
ROLE_COLUMNS = (
    Column("Role", _text("name"), 20),
    Column("Id", lambda entity_id, _d: entity_id, 14),
    Column("Inherits", lambda _i, document: _count(document, "inherits"), 8),
    Column("Description", _text("description")),
)


class EntityListModel(ReadByPageModel[tuple[int, str, Any]]):
    """The roles or users of a replica (module rules)."""

    ID_ROLE = Qt.ItemDataRole.UserRole + 1
    """The entity's id (for views to open it), whatever the column shows."""

    def __init__(self, source: EntitySource, kind: str, columns: Sequence[Column]) -> None:
        super().__init__([column.header for column in columns], PAGE)
        self._source = source
        self._kind = kind
        self._columns = tuple(columns)
        self._filter = ""
        self._total = source.entity_count(kind)
        self._exhausted = self._total == 0

    # --- what the view asks ----------------------------------------------------------

    def cell(self, row: tuple[int, str, Any], column: int, role: int) -> Any:
        _rowid, entity_id, document = row
        if role in TEXT_ROLES:
            return self._columns[column].text(entity_id, document)
        if role == self.ID_ROLE:
            return entity_id
        return None

    def read_page(
        self, after: tuple[int, str, Any] | None, limit: int
    ) -> list[tuple[int, str, Any]]:
        return self._source.entity_page(self._kind, after[0] if after else 0, limit)

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
        self._filter = text
        if text:
            hits = [i for kind, i in self._source.search(text, MATCHES) if kind == self._kind]
            self.start_over(self._source.entities_named(self._kind, hits), exhausted=True)
        else:
            self.start_over(exhausted=self._total == 0)
            self.fetchMore()
        return len(self._rows)

    def refresh(self) -> None:
        """Read again from the replica (after a sync or an edit), keeping the filter."""
        self._total = self._source.entity_count(self._kind)
        loaded = len(self._rows)
        self.set_filter(self._filter)
        self.read_up_to(loaded)

    def entity_id(self, row: int) -> str:
        return self._rows[row][1]
