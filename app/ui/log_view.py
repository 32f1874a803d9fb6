"""The audit and decision log: this device's offline decisions, its edits and the
policy's changes as received, filtered, searched and exported.

Rules of this module (the desktop issue, § Audit and decision log):

- Three tabs: the replica's decision chain (`decisions`: what was decided here
  offline, each with its lease state and clock), the edits made here with
  their outcomes (`outbox` and `outcomes`), and the policy's changes as this
  replica received them from the server (`changes`: every change since its
  first snapshot, by anyone, with its author, device and the server's time).
  The replica keeps links the server has not confirmed and edits it has not
  seen confirmed; what came before its first snapshot, and what the server
  records besides policy changes (sign-ins, devices), is in the server's own
  audit log.
- Filters: the user (who asked, for a decision; who made it, for an edit: every
  edit of a replica is its user's; the author, for a change), an entity (a user
  or role by id or name, named in the request, its reason or the edit), a time
  range (UTC, both ends included) and full-text search over the replica's FTS5
  indexes, each word a
  prefix (`Replica.search`'s quoting: FTS5 syntax in the input means nothing).
  Typing is debounced by SEARCH_DELAY_MS. User text only ever reaches SQL as a
  bound parameter; the statements are made of this module's constant clauses.
- A tab never holds the log: `LogModel` reads PAGE rows when the view asks
  (newest first, by seq below the last row read, with LIMIT), so a chain of
  200,000 links opens at once. A filter that matches few rows scans the
  chain; no total is counted (a count of a filtered 200,000-row chain is
  0.3 s); the count says when more rows are to come.
- Export writes every row the filters select (not only those loaded), as CSV
  (a header row, the csv module's quoting) or JSON (an array of objects),
  EXPORT_PAGE rows at a time. It runs on the UI thread: between pages it
  lets Qt handle events, so the window stays responsive and Cancel works.
  It writes to a `.part` file renamed at the end: a cancelled or failed
  export leaves no half file.
- Allowed and denied are words and an icon; each decision says whether its
  lease was fresh and whether the clock was frozen (time held at the mark).
"""

from __future__ import annotations

import csv
import itertools
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from PySide6.QtCore import QDateTime, Qt, QTimer, QTimeZone
from PySide6.QtGui import QHideEvent, QShowEvent
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QDateTimeEdit,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QStyle,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.replica import HistoryEntry, Replica, fts_query
from app.ui.controls import name_spin_box, push_button, text_label
from app.ui.feedback import say
from app.ui.icons import ALLOWED, WARNING, icon, verdict_pixmap
from app.ui.main_window import SEARCH_DELAY_MS, announce
from app.ui.models import TEXT_ROLES, ReadByPageModel
from app.ui.tables import table_view
from app.ui.wording import SUPERSEDED, describe_edit, time_text
from app.ui.workspace import Workspace
from app.ui.workspace_view import WorkspaceView

PAGE = 200
"""Rows a tab reads when the view asks for more."""
EXPORT_PAGE = 1000
"""Rows an export reads and writes between two looks at the event loop."""
_BEFORE_ALL = 1 << 62
"""A seq above every seq: where reading newest first starts."""


# --- what the filters select -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogFilter:
    """What a tab shows; empty fields select everything."""

    user: str = ""
    """Who asked (decisions) or made the edit (edits), exactly."""
    entities: tuple[str, ...] = ()
    """A user or role as ids and names: named in a request, its reason or an edit."""
    since: str | None = None
    """`YYYY-MM-DDTHH:MM:SS` (UTC), included."""
    until: str | None = None
    """`YYYY-MM-DDTHH:MM:SS` (UTC), included."""
    text: str = ""
    """Words to search for, as typed."""

    @property
    def active(self) -> bool:
        return bool(self.user or self.entities or self.since or self.until or self.text.strip())


@dataclass(frozen=True, slots=True)
class DecisionEntry:
    """A link of the replica's decision chain."""

    seq: int
    request: dict[str, Any]
    allowed: bool
    reason: str
    at: str
    clock: str
    lease_fresh: bool
    pending: list[int]
    policy_version: int

    @property
    def key(self) -> int:
        return self.seq

    @property
    def user(self) -> str:
        return str(self.request.get("user", ""))

    @property
    def action(self) -> str:
        return str(self.request.get("action", ""))

    @property
    def resource(self) -> dict[str, Any]:
        resource = self.request.get("resource")
        return resource if isinstance(resource, dict) else {}

    @property
    def resource_text(self) -> str:
        resource = self.resource
        kind, resource_id = resource.get("type", ""), resource.get("id")
        return f"{kind}:{resource_id}" if resource_id is not None else str(kind)

    @property
    def decision(self) -> str:
        return "allowed" if self.allowed else "denied"

    @property
    def lease(self) -> str:
        """ "lease fresh" or "lease stale", and whether the clock was frozen."""
        text = "lease fresh" if self.lease_fresh else "lease stale"
        return text + ("; clock frozen" if self.clock == "frozen" else "")

    def record(self) -> dict[str, Any]:
        """The link as an export's JSON object."""
        return {
            "seq": self.seq, "at": self.at, "request": self.request, "allowed": self.allowed,
            "decision": self.decision, "reason": self.reason, "lease_fresh": self.lease_fresh,
            "lease": "fresh" if self.lease_fresh else "stale", "clock": self.clock,
            "pending": self.pending, "policy_version": self.policy_version,
        }  # fmt: skip


DECISION_CSV = ("seq", "at", "user", "action", "resource_type", "resource_id", "decision",
                "reason", "lease", "clock", "pending", "policy_version", "request")  # fmt: skip


def decision_csv_row(entry: DecisionEntry) -> list[Any]:
    resource = entry.resource
    return [entry.seq, entry.at, entry.user, entry.action, resource.get("type", ""),
            resource.get("id", ""), entry.decision, entry.reason,
            "fresh" if entry.lease_fresh else "stale", entry.clock,
            " ".join(map(str, entry.pending)), entry.policy_version,
            orjson.dumps(entry.request).decode()]  # fmt: skip


@dataclass(frozen=True, slots=True)
class EditEntry:
    """An edit made here: pending, applied (not yet confirmed here), or answered otherwise."""

    seq: int
    edit: dict[str, Any]
    made_at: str
    outcome: str
    """pending, applied, merged, rejected or conflict."""
    code: str | None
    reason: str | None
    version: int | None
    answered_at: str | None
    conflict: dict[str, Any] | None
    dismissed: bool
    queued: bool
    """Still in the outbox (not moved to `outcomes`)."""

    @property
    def key(self) -> tuple[int, int]:
        return (self.seq, int(self.queued))

    @property
    def state(self) -> str:
        """The outcome in words: superseded apart from other refusals, reviewed ones so."""
        state = SUPERSEDED if self.code == SUPERSEDED else self.outcome
        return f"{state} (reviewed)" if self.dismissed else state

    def record(self) -> dict[str, Any]:
        return {
            "seq": self.seq, "made_at": self.made_at, "edit": self.edit,
            "description": describe_edit(self.edit), "outcome": self.outcome,
            "code": self.code, "reason": self.reason, "version": self.version,
            "answered_at": self.answered_at, "conflict": self.conflict,
            "reviewed": self.dismissed,
        }  # fmt: skip


EDIT_CSV = ("seq", "made_at", "op", "description", "outcome", "code", "reason", "version",
            "answered_at", "reviewed", "edit")  # fmt: skip


def edit_csv_row(entry: EditEntry) -> list[Any]:
    return [entry.seq, entry.made_at, entry.edit.get("op", ""), describe_edit(entry.edit),
            entry.outcome, entry.code or "", entry.reason or "",
            "" if entry.version is None else entry.version, entry.answered_at or "",
            "yes" if entry.dismissed else "no", orjson.dumps(entry.edit).decode()]  # fmt: skip


@dataclass(frozen=True, slots=True)
class ChangeEntry:
    """A change of the policy as this replica received it."""

    change: HistoryEntry

    @property
    def key(self) -> int:
        return self.change.version

    def record(self) -> dict[str, Any]:
        change = self.change
        return {
            "version": change.version, "at": change.at, "author": change.author,
            "device": change.device, "client": change.client, "seq": change.seq,
            "edit": change.edit, "description": describe_edit(change.edit),
        }  # fmt: skip


CHANGE_CSV = ("version", "at", "author", "device", "client", "seq", "op", "description",
              "edit")  # fmt: skip


def change_csv_row(entry: ChangeEntry) -> list[Any]:
    change = entry.change
    return [change.version, change.at, change.author, change.device, change.client,
            change.seq, change.edit.get("op", ""), describe_edit(change.edit),
            orjson.dumps(change.edit).decode()]  # fmt: skip


# --- the queries -----------------------------------------------------------------------
# Each statement is this module's constant clauses joined; user text is bound (`?`).

_DECISION_COLUMNS = (
    "SELECT d.seq, d.request, d.allowed, d.reason, d.at, d.clock, d.lease_fresh, d.pending, "
    "d.policy_version "
)
_DECISIONS = "FROM decisions d WHERE d.seq < ?"
# With words, the search index leads: FTS5 reads its matches in rowid order itself.
_DECISIONS_MATCHING = (
    "FROM decision_text t JOIN decisions d ON d.seq = t.rowid "
    "WHERE decision_text MATCH ? AND t.rowid < ?"
)
_DECISION_USER = " AND json_extract(d.request, '$.user') = ?"
_DECISION_SINCE = " AND substr(d.at, 1, 19) >= ?"
_DECISION_UNTIL = " AND substr(d.at, 1, 19) <= ?"
_DECISION_ENTITY = (
    " AND (json_extract(d.request, '$.user') IN ({marks})"
    " OR json_extract(d.request, '$.resource.id') IN ({marks}) OR {reasons})"
)
_REASON_NAMES = "instr(d.reason, ?) > 0"
_DECISION_ORDER = " ORDER BY d.seq DESC LIMIT ?"
_DECISION_ORDER_MATCHING = " ORDER BY t.rowid DESC LIMIT ?"

_EDITS = (
    "SELECT e.seq, e.edit, e.made_at, e.outcome, e.code, e.reason, e.version, e.answered_at, "
    "e.conflict, e.dismissed, e.queued FROM ("
    "SELECT seq, edit, made_at, coalesce(outcome, 'pending') AS outcome, NULL AS code, "
    "NULL AS reason, version, answered_at, NULL AS conflict, 0 AS dismissed, 1 AS queued "
    "FROM outbox UNION ALL "
    "SELECT seq, edit, made_at, outcome, code, reason, version, answered_at, conflict, "
    "dismissed, 0 FROM outcomes) AS e "
    "WHERE (e.seq < ? OR (e.seq = ? AND e.queued < ?))"
)
_EDIT_SINCE = " AND substr(e.made_at, 1, 19) >= ?"
_EDIT_UNTIL = " AND substr(e.made_at, 1, 19) <= ?"
_EDIT_ENTITY = (
    " AND (json_extract(e.edit, '$.user_id') IN ({marks})"
    " OR json_extract(e.edit, '$.role_id') IN ({marks})"
    " OR json_extract(e.edit, '$.parent_id') IN ({marks})"
    " OR json_extract(e.edit, '$.owner') IN ({owners}))"
)
# Edits in the outbox are found by its index; answered ones left it (and its index:
# `Replica.record_outcomes`), so each word is looked for in their text instead.
_EDIT_TEXT = (
    " AND ((e.queued = 1 AND e.seq IN "
    "(SELECT rowid FROM outbox_text WHERE outbox_text MATCH ?)) OR (e.queued = 0 AND {words}))"
)
_EDIT_WORD = (
    "instr(lower(e.edit || ' ' || coalesce(e.code, '') || ' ' || coalesce(e.reason, '')), ?) > 0"
)
_EDIT_ORDER = " ORDER BY e.seq DESC, e.queued DESC LIMIT ?"

# Aliased `e` like the edits: an entity is found in a change's edit as in one's own.
_CHANGES = (
    "SELECT e.version, e.author, e.device, e.client, e.seq, e.at, e.edit FROM changes e "
    "WHERE e.version < ?"
)
_CHANGE_AUTHOR = " AND e.author = ?"
_CHANGE_SINCE = " AND substr(e.at, 1, 19) >= ?"
_CHANGE_UNTIL = " AND substr(e.at, 1, 19) <= ?"
_CHANGE_TEXT = " AND e.version IN (SELECT rowid FROM change_text WHERE change_text MATCH ?)"
_CHANGE_ORDER = " ORDER BY e.version DESC LIMIT ?"


def search_terms(text: str) -> tuple[str, list[str]]:
    """`text` as an FTS5 query (`Replica.search`'s: each word a quoted prefix) and its
    words, lower case."""
    query = fts_query(text)
    return query, [word.lower() for word in re.findall(r'"([^"]*)"\*', query)]


def _time_range(filters: LogFilter, since: str, until: str, parameters: list[Any]) -> str:
    """The clauses of the filters' time range (`since` and `until`: a tab's constant
    clauses), their values appended to `parameters`."""
    sql = ""
    for clause, value in ((since, filters.since), (until, filters.until)):
        if value:
            sql += clause
            parameters.append(value)
    return sql


INDEX_STEP = 4096
"""Decisions indexed for search between two turns of the event loop (about 65 ms)."""


def decisions_to_index(replica: Replica) -> int:
    """How many links a search must index first (`Replica.index_decisions`: links are
    indexed when a search first needs them; 200,000 take about 3 s)."""
    ((last, indexed),) = replica.query(
        "SELECT (SELECT max(seq) FROM decisions), (SELECT max(rowid) FROM decision_text)"
    )
    return max(0, (last or 0) - (indexed or 0))


def decision_page(
    replica: Replica, filters: LogFilter, before: int | None, limit: int
) -> list[DecisionEntry]:
    """Up to `limit` links the filters select, newest first, below seq `before` (None:
    from the newest). Reads only the replica (and indexes new links for search)."""
    query, _words = search_terms(filters.text)
    parameters: list[Any] = []
    if query:
        replica.index_decisions()
        sql = _DECISION_COLUMNS + _DECISIONS_MATCHING
        parameters += [query, _BEFORE_ALL if before is None else before]
    else:
        sql = _DECISION_COLUMNS + _DECISIONS
        parameters.append(_BEFORE_ALL if before is None else before)
    if filters.user:
        sql += _DECISION_USER
        parameters.append(filters.user)
    sql += _time_range(filters, _DECISION_SINCE, _DECISION_UNTIL, parameters)
    if filters.entities:
        names = filters.entities
        marks = ", ".join("?" * len(names))
        reasons = " OR ".join([_REASON_NAMES] * len(names))
        sql += _DECISION_ENTITY.format(marks=marks, reasons=reasons)
        parameters += [*names, *names, *(f"role {name}" for name in names)]
    sql += _DECISION_ORDER_MATCHING if query else _DECISION_ORDER
    parameters.append(limit)
    return [
        DecisionEntry(seq, orjson.loads(request), bool(allowed), reason, at, clock,
                      bool(fresh), list(orjson.loads(pending)), version)
        for seq, request, allowed, reason, at, clock, fresh, pending, version
        in replica.query(sql, parameters)
    ]  # fmt: skip


def edit_page(
    replica: Replica,
    filters: LogFilter,
    before: tuple[int, int] | None,
    limit: int,
    author: str,
) -> list[EditEntry]:
    """Up to `limit` edits made here that the filters select, newest first, below the
    key (seq, queued) `before` (None: from the newest); `author`: the replica's user,
    who made them all."""
    if filters.user and filters.user != author:
        return []
    seq, queued = before if before is not None else (_BEFORE_ALL, 0)
    sql = _EDITS
    parameters: list[Any] = [seq, seq, queued]
    sql += _time_range(filters, _EDIT_SINCE, _EDIT_UNTIL, parameters)
    sql += _entity_clause(filters, parameters)
    query, words = search_terms(filters.text)
    if query:
        sql += _EDIT_TEXT.format(words=" AND ".join([_EDIT_WORD] * len(words)))
        parameters += [query, *words]
    sql += _EDIT_ORDER
    parameters.append(limit)
    return [
        EditEntry(seq, orjson.loads(edit), made, outcome, code, reason, version, answered,
                  orjson.loads(conflict) if conflict else None, bool(dismissed), bool(queued))
        for seq, edit, made, outcome, code, reason, version, answered, conflict, dismissed,
        queued in replica.query(sql, parameters)
    ]  # fmt: skip


def _entity_clause(filters: LogFilter, parameters: list[Any]) -> str:
    """The clause finding the filters' entities in an edit `e.edit`, its values appended."""
    if not filters.entities:
        return ""
    names = filters.entities
    marks = ", ".join("?" * len(names))
    owners = [f"{kind}:{name}" for name in names for kind in ("role", "user")]
    parameters += [*names, *names, *names, *owners]
    return _EDIT_ENTITY.format(marks=marks, owners=", ".join("?" * len(owners)))


def change_page(
    replica: Replica, filters: LogFilter, before: int | None, limit: int
) -> list[ChangeEntry]:
    """Up to `limit` changes received that the filters select, newest first, below
    version `before` (None: from the newest)."""
    parameters: list[Any] = [_BEFORE_ALL if before is None else before]
    sql = _CHANGES
    if filters.user:
        sql += _CHANGE_AUTHOR
        parameters.append(filters.user)
    sql += _time_range(filters, _CHANGE_SINCE, _CHANGE_UNTIL, parameters)
    sql += _entity_clause(filters, parameters)
    query, _words = search_terms(filters.text)
    if query:
        sql += _CHANGE_TEXT
        parameters.append(query)
    sql += _CHANGE_ORDER
    parameters.append(limit)
    return [
        ChangeEntry(HistoryEntry(version, author, device, client, seq, at, orjson.loads(edit)))
        for version, author, device, client, seq, at, edit in replica.query(sql, parameters)
    ]


# --- export ----------------------------------------------------------------------------


class ExportCancelled(Exception):
    """The person cancelled an export; nothing was written."""


@dataclass(frozen=True, slots=True)
class LogKind:
    """How one tab reads its rows and writes them out."""

    noun: str
    plural: str
    page: Callable[[LogFilter, Any, int], list[Any]]
    """(filters, key of the last row read or None, limit) -> entries."""
    csv_header: Sequence[str]
    csv_row: Callable[[Any], list[Any]]


def all_pages(kind: LogKind, filters: LogFilter, size: int | None = None) -> Iterator[list[Any]]:
    """Every row the filters select, `size` (EXPORT_PAGE) at a time, as a tab reads them."""
    size = size or EXPORT_PAGE
    after = None
    while True:
        page = kind.page(filters, after, size)
        if page:
            yield page
        if len(page) < size:
            return
        after = page[-1].key


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What makes a spreadsheet read a CSV cell as a formula (OWASP, CSV injection)."""


def spreadsheet_safe(cell: Any) -> Any:
    """`cell` as a spreadsheet shows it as text: a string that would be read as a
    formula gets a leading apostrophe. A request's user id or a reason is whatever
    someone typed, and an exported log is opened in a spreadsheet."""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


def export_log(
    path: Path,
    fmt: str,
    kind: LogKind,
    pages: Iterator[list[Any]],
    progress: Callable[[int], bool] = lambda _written: True,
) -> int:
    """Write every entry of `pages` to `path` as "csv" or "json"; returns how many.

    `progress(written)` is called after each page and returns False to stop: then
    ExportCancelled is raised and nothing is left at `path` (nor of it). Raises
    OSError when the file cannot be written, also leaving nothing.
    """
    partial = path.with_name(path.name + ".part")
    written = 0
    try:
        with partial.open("w", encoding="utf-8", newline="") as out:
            if fmt == "csv":
                writer = csv.writer(out)
                writer.writerow(kind.csv_header)
            else:
                out.write("[")
            for page in pages:
                if fmt == "csv":
                    writer.writerows(
                        [spreadsheet_safe(cell) for cell in kind.csv_row(entry)] for entry in page
                    )
                else:
                    out.write("".join(
                        (",\n" if written or i else "\n") + orjson.dumps(entry.record()).decode()
                        for i, entry in enumerate(page)
                    ))  # fmt: skip
                written += len(page)
                if not progress(written):
                    raise ExportCancelled
            if fmt != "csv":
                out.write("\n]\n" if written else "]\n")
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return written


# --- the models ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogColumn:
    header: str
    text: Callable[[Any], str]
    icon: Callable[[Any], QStyle.StandardPixmap | None] | None = None
    tip: Callable[[Any], str] | None = None


def _decision_icon(entry: DecisionEntry) -> QStyle.StandardPixmap:
    return verdict_pixmap(entry.allowed)


def _lease_icon(entry: DecisionEntry) -> QStyle.StandardPixmap | None:
    if entry.lease_fresh and entry.clock != "frozen":
        return None
    return WARNING


_EDIT_ICONS = {
    "pending": QStyle.StandardPixmap.SP_BrowserReload,
    "applied": ALLOWED,
    "merged": ALLOWED,
    "conflict": WARNING,
}


def _edit_icon(entry: EditEntry) -> QStyle.StandardPixmap | None:
    return _EDIT_ICONS.get(entry.outcome, QStyle.StandardPixmap.SP_MessageBoxCritical)


DECISION_COLUMNS = (
    LogColumn("Seq", lambda e: str(e.seq)),
    LogColumn("Time (UTC)", lambda e: time_text(e.at), tip=lambda e: e.at),
    LogColumn("User", lambda e: e.user),
    LogColumn("Action", lambda e: e.action),
    LogColumn("Resource", lambda e: e.resource_text),
    LogColumn("Decision", lambda e: e.decision, _decision_icon),
    LogColumn("Lease", lambda e: e.lease, _lease_icon),
    LogColumn("Pending edits", lambda e: ", ".join(map(str, e.pending))),
    LogColumn("Policy version", lambda e: str(e.policy_version)),
    LogColumn("Reason", lambda e: e.reason, tip=lambda e: e.reason),
)


def edit_columns(role_name: Callable[[str], str]) -> tuple[LogColumn, ...]:
    return (
        LogColumn("Edit", lambda e: str(e.seq)),
        LogColumn("Made (UTC)", lambda e: time_text(e.made_at), tip=lambda e: e.made_at),
        LogColumn(
            "What the edit did",
            lambda e: describe_edit(e.edit, role_name),
            tip=lambda e: orjson.dumps(e.edit).decode(),
        ),
        LogColumn("Outcome", lambda e: e.state, _edit_icon),
        LogColumn("Version", lambda e: "" if e.version is None else str(e.version)),
        LogColumn("Answered (UTC)", lambda e: time_text(e.answered_at)),
        LogColumn("Code", lambda e: e.code or ""),
        LogColumn("Reason", lambda e: e.reason or "", tip=lambda e: e.reason or ""),
    )


def change_columns(role_name: Callable[[str], str]) -> tuple[LogColumn, ...]:
    return (
        LogColumn("Version", lambda e: str(e.change.version)),
        LogColumn("Time (UTC)", lambda e: time_text(e.change.at), tip=lambda e: e.change.at),
        LogColumn("Author", lambda e: e.change.author),
        LogColumn("Device", lambda e: e.change.device),
        LogColumn(
            "What changed",
            lambda e: describe_edit(e.change.edit, role_name),
            tip=lambda e: orjson.dumps(e.change.edit).decode(),
        ),
    )


class LogModel(ReadByPageModel[Any]):
    """One tab's rows, read a page at a time as the view asks (module rules)."""

    def __init__(self, kind: LogKind, columns: Sequence[LogColumn]) -> None:
        super().__init__([column.header for column in columns], PAGE)
        self.kind = kind
        self._columns = tuple(columns)
        self._filters = LogFilter()

    @property
    def filters(self) -> LogFilter:
        return self._filters

    def entry(self, row: int) -> Any:
        return self._rows[row]

    def cell(self, entry: Any, column: int, role: int) -> Any:
        shown = self._columns[column]
        if role in TEXT_ROLES:
            return shown.text(entry)
        if role == Qt.ItemDataRole.DecorationRole and shown.icon is not None:
            pixmap = shown.icon(entry)
            return icon(pixmap) if pixmap is not None else None
        if role == Qt.ItemDataRole.ToolTipRole and shown.tip is not None:
            return shown.tip(entry)
        return None

    def read_page(self, after: Any | None, limit: int) -> list[Any]:
        return self.kind.page(self._filters, after.key if after is not None else None, limit)

    def set_filters(self, filters: LogFilter) -> None:
        """Show what `filters` select, from the newest (the first page read now)."""
        self._filters = filters
        self.start_over()
        self.fetchMore()

    def refresh(self) -> None:
        """Read again (after a sync or an edit), as many rows as were loaded."""
        loaded = len(self._rows)
        self.set_filters(self._filters)
        self.read_up_to(loaded)


# --- the view --------------------------------------------------------------------------


def _save_path(parent: QWidget, caption: str, suggested: str, pattern: str) -> str | None:
    path, _chosen = QFileDialog.getSaveFileName(parent, caption, suggested, pattern)
    return path or None


class _TimeEdit(QDateTimeEdit):
    """A date and time field that Tab leaves (QDateTimeEdit's Tab walks its five
    sections first); the arrow keys move between sections and change them."""

    def focusNextPrevChild(self, next: bool) -> bool:
        return QWidget.focusNextPrevChild(self, next)


def _utc(instant_seconds: int) -> QDateTime:
    return QDateTime.fromSecsSinceEpoch(instant_seconds, QTimeZone.utc())


class LogView(WorkspaceView):
    """The decision log and the edits made here, filtered and exported (module rules);
    `message` says what an export did."""

    def __init__(self, workspace: Workspace, parent: QWidget | None = None) -> None:
        super().__init__(workspace, "log-view", "Audit and decision log", parent)
        self.choose_path: Callable[[QWidget, str, str, str], str | None] = _save_path
        """Asks (parent, caption, suggested name, file pattern) where to export; None:
        not at all. Tests answer it."""
        self._cancelled = False
        self._exporting = False

        replica = workspace.replica
        self._author = replica.meta().user or workspace.author
        decisions = LogKind(
            "decision", "decisions",
            lambda filters, after, limit: decision_page(replica, filters, after, limit),
            DECISION_CSV, decision_csv_row,
        )  # fmt: skip
        edits = LogKind(
            "edit", "edits",
            lambda filters, after, limit: edit_page(replica, filters, after, limit, self._author),
            EDIT_CSV, edit_csv_row,
        )  # fmt: skip
        changes = LogKind(
            "change", "changes",
            lambda filters, after, limit: change_page(replica, filters, after, limit),
            CHANGE_CSV, change_csv_row,
        )  # fmt: skip
        self.decisions = LogModel(decisions, DECISION_COLUMNS)
        self.edits = LogModel(edits, edit_columns(self._role_name))
        self.changes = LogModel(changes, change_columns(self._role_name))

        self.user = self._field("log-user", "&User:", "User",
                                "Only decisions this user asked for, and edits and changes "
                                "this user made (exactly this id)", "user id")  # fmt: skip
        self.entity = self._field("log-entity", "&Entity:", "Entity",
                                  "Only what names this user or role (id or name): in the "
                                  "request, the reason or the edit", "user or role")  # fmt: skip
        self.search = self._field("log-search", "&Search:", "Search the log",
                                  "Words in the log, each the start of a word; the tabs "
                                  "follow as you type", "words")  # fmt: skip
        self.search[1].setClearButtonEnabled(True)

        now = workspace.now()[0]
        self.since_on, self.since = self._time("since", "&From", "From (UTC)",
                                               "Only rows at or after this time",
                                               _utc(now - 7 * 86400))  # fmt: skip
        self.until_on, self.until = self._time("until", "&To", "To (UTC)",
                                               "Only rows at or before this minute",
                                               _utc(now + 3600))  # fmt: skip
        zone = QLabel("(UTC)", self)

        self.export_csv = self._button("log-export-csv", "Export CS&V\u2026", "Export as CSV",
                                       "Write every row the filters select on this tab to a "
                                       "CSV file")  # fmt: skip
        self.export_json = self._button("log-export-json", "Export &JSON\u2026",
                                        "Export as JSON", "Write every row the filters select "
                                        "on this tab to a JSON file")  # fmt: skip
        self.cancel = self._button("log-export-cancel", "&Cancel export", "Cancel export",
                                   "Stop the export running; nothing is written")  # fmt: skip
        self.cancel.setEnabled(False)
        self.export_csv.clicked.connect(lambda: self.export("csv"))
        self.export_json.clicked.connect(lambda: self.export("json"))
        self.cancel.clicked.connect(self.cancel_export)

        self.tabs = QTabWidget(self)
        self.tabs.setObjectName("log-tabs")
        self.tabs.setAccessibleName("Log")
        self.tabs.tabBar().setAccessibleName("Log tabs")
        self.tabs.tabBar().setAccessibleDescription(
            "Decisions made here, edits made here, or the policy's changes as received"
        )
        self.decision_table = table_view(
            self,
            "decision-log-table",
            "Decisions",
            self.decisions,
            "The decisions made on this device, newest first",
        )
        self.edit_table = table_view(self, "edit-log-table", "Edits", self.edits,
                                     "The edits made on this device and their outcomes, "
                                     "newest first")  # fmt: skip
        self.change_table = table_view(self, "change-log-table", "Changes", self.changes,
                                       "The policy's changes as this device received them "
                                       "from the server, by anyone, newest first")  # fmt: skip
        self.tabs.addTab(self.decision_table, "&Decisions")
        self.tabs.addTab(self.edit_table, "Ed&its")
        self.tabs.addTab(self.change_table, "Chan&ges")
        self.tabs.currentChanged.connect(lambda _i: self._show_count(announce_it=False))

        self.count = text_label(self, "log-count", "Rows shown")
        self.status = text_label(self, "log-status", "Export", wrap=True)

        self._indexing = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(SEARCH_DELAY_MS)
        self._timer.timeout.connect(self.apply_filters)
        for _label, field in (self.user, self.entity, self.search):
            field.textChanged.connect(lambda _text: self._timer.start())
        for box in (self.since_on, self.until_on):
            box.toggled.connect(lambda _on: self._timer.start())
        for edit in (self.since, self.until):
            edit.dateTimeChanged.connect(lambda _when: self._timer.start())

        first = QHBoxLayout()
        for label, field in (self.user, self.entity, self.search):
            first.addWidget(label)
            first.addWidget(field, 2 if field is self.search[1] else 1)
        second = QHBoxLayout()
        second.addWidget(self.since_on)
        second.addWidget(self.since)
        second.addWidget(self.until_on)
        second.addWidget(self.until)
        second.addWidget(zone)
        second.addStretch(1)
        second.addWidget(self.export_csv)
        second.addWidget(self.export_json)
        second.addWidget(self.cancel)
        bottom = QHBoxLayout()
        bottom.addWidget(self.count, 1)
        bottom.addWidget(self.status, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(first)
        layout.addLayout(second)
        layout.addWidget(self.tabs, 1)
        layout.addLayout(bottom)

        order = [self.user[1], self.entity[1], self.search[1], self.since_on, self.since,
                 self.until_on, self.until, self.export_csv, self.export_json, self.cancel,
                 self.tabs]  # fmt: skip
        for before, after in itertools.pairwise(order):
            self.setTabOrder(before, after)

        self._fitted: set[QTableView] = set()
        self.follow_changes(self.refresh)
        self.apply_filters(announce_it=False)
        for table in (self.decision_table, self.edit_table, self.change_table):
            if table not in self._fitted:
                self._fit_table(table)  # its headings, until rows come

    # --- construction ------------------------------------------------------------------

    def _field(
        self, name: str, text: str, accessible: str, description: str, placeholder: str
    ) -> tuple[QLabel, QLineEdit]:
        label = QLabel(text, self)
        field = QLineEdit(self)
        field.setObjectName(name)
        field.setAccessibleName(accessible)
        field.setAccessibleDescription(description)
        field.setPlaceholderText(placeholder)
        label.setBuddy(field)
        return label, field

    def _time(
        self, name: str, text: str, accessible: str, description: str, value: QDateTime
    ) -> tuple[QCheckBox, QDateTimeEdit]:
        box = QCheckBox(text, self)
        box.setObjectName(f"log-{name}-on")
        box.setAccessibleName(f"Filter {accessible.lower()}")
        box.setAccessibleDescription(f"{description}, when checked")
        edit = _TimeEdit(self)
        edit.setObjectName(f"log-{name}")
        edit.setTimeZone(QTimeZone.utc())
        edit.setDisplayFormat("yyyy-MM-dd HH:mm")
        edit.setCalendarPopup(True)
        edit.setDateTime(value)
        name_spin_box(edit, accessible, description)
        edit.setEnabled(False)
        box.toggled.connect(edit.setEnabled)
        return box, edit

    def _button(self, name: str, text: str, accessible: str, description: str) -> QPushButton:
        return push_button(self, text, name, description, accessible)

    def _fit_columns(self) -> None:
        """Each tab's columns as wide as the first rows it shows, once (a tab empty at
        first, as the changes before a sync, is fitted when rows come): none wider
        than about 56 characters (a third of a screen at the default text size; the
        last, the reason, takes what is left). Widths the person set stay."""
        for table in (self.decision_table, self.edit_table, self.change_table):
            if table not in self._fitted and table.model().rowCount():
                self._fitted.add(table)
                self._fit_table(table)

    @staticmethod
    def _fit_table(table: QTableView) -> None:
        table.resizeColumnsToContents()
        header = table.horizontalHeader()
        widest = table.fontMetrics().averageCharWidth() * 56
        for section in range(header.count() - 1):
            header.resizeSection(section, min(header.sectionSize(section), widest))

    def _role_name(self, role_id: str) -> str:
        return self.workspace.policy().role_name(role_id)

    # --- filtering ---------------------------------------------------------------------

    def filters(self) -> LogFilter:
        """What the filter controls select now."""
        entity = self.entity[1].text().strip()
        entities: tuple[str, ...] = ()
        if entity:
            policy = self.workspace.policy()
            found = [entity]
            role = policy.roles.get(entity) or policy.role_by_name(entity)
            if role is not None:
                found += [role.id, role.name]
            entities = tuple(dict.fromkeys(found))

        def bound(box: QCheckBox, edit: QDateTimeEdit, seconds: str) -> str | None:
            if not box.isChecked():
                return None
            return edit.dateTime().toTimeZone(QTimeZone.utc()).toString("yyyy-MM-ddTHH:mm:") + (
                seconds
            )

        return LogFilter(
            user=self.user[1].text().strip(),
            entities=entities,
            since=bound(self.since_on, self.since, "00"),
            until=bound(self.until_on, self.until, "59"),
            text=self.search[1].text(),
        )

    def hideEvent(self, event: QHideEvent) -> None:
        # A hidden view filters when it is shown again, not behind the person's back
        # (and not after its replica was closed, when the window is going away).
        self._filter_when_shown = self._timer.isActive()
        self._timer.stop()
        super().hideEvent(event)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if getattr(self, "_filter_when_shown", False):
            self._filter_when_shown = False
            self.apply_filters(announce_it=False)

    def apply_filters(self, *, announce_it: bool = True) -> None:
        """Filter both tabs now (the debounce timer calls this when typing pauses)."""
        self._timer.stop()
        if self._indexing:
            self._timer.start()  # typed while indexing: filter once it is done
            return
        filters = self.filters()
        if search_terms(filters.text)[0]:
            waiting = decisions_to_index(self.workspace.replica)
            if waiting > INDEX_STEP:  # a noticeable wait: say what it is, piece by piece
                self.status.setText(f"Indexing {waiting:,} decisions for search\u2026")
                announce(self.status, self.status.text())
                done = 0
                self._indexing = True
                try:
                    while indexed := self.workspace.replica.index_decisions(INDEX_STEP):
                        done += indexed
                        self.status.setText(
                            f"Indexing decisions for search: {done:,} of {waiting:,}\u2026"
                        )
                        QApplication.processEvents()  # the window stays responsive
                finally:
                    self._indexing = False
                self.status.setText("")
                filters = self.filters()  # what is typed now
        for model in self.models:
            model.set_filters(filters)
        self._fit_columns()
        self._show_count(announce_it=announce_it)

    def refresh(self) -> None:
        for model in self.models:
            model.refresh()
        self._fit_columns()
        self._show_count(announce_it=False)

    @property
    def models(self) -> tuple[LogModel, LogModel, LogModel]:
        """The tabs' models, in tab order."""
        return (self.decisions, self.edits, self.changes)

    def current_model(self) -> LogModel:
        return self.models[max(0, self.tabs.currentIndex())]

    def _show_count(self, *, announce_it: bool) -> None:
        model = self.current_model()
        kind, shown = model.kind, model.rowCount()
        noun = kind.noun if shown == 1 else kind.plural
        matching = " matching" if model.filters.active else ""
        if model.exhausted:
            text = f"{shown:,}{matching} {noun}" if shown else f"No{matching} {kind.plural}"
            if not shown and model is self.edits and model.filters.user not in ("", self._author):
                text += f": every edit here is made by {self._author}"
            elif not shown and model is self.changes and not model.filters.active:
                text += ": those made after this replica's first snapshot appear as they arrive"
        else:
            text = f"{shown:,}{matching} {noun} loaded; more as you scroll"
        self.count.setText(text)
        if announce_it:
            announce(self.count, text)

    # --- export ------------------------------------------------------------------------

    def export(self, fmt: str) -> int | None:
        """Export every row the filters select on the current tab as "csv" or "json", to
        a file the person chooses (`choose_path`); returns how many rows were written
        (None: not exported)."""
        if self._exporting:
            return None
        model = self.current_model()
        kind, filters = model.kind, model.filters
        pattern = "CSV files (*.csv)" if fmt == "csv" else "JSON files (*.json)"
        chosen = self.choose_path(self, f"Export {kind.plural}", f"{kind.plural}.{fmt}", pattern)
        if not chosen:
            return None
        path = Path(chosen)
        self._exporting, self._cancelled = True, False
        self.cancel.setEnabled(True)
        self.export_csv.setEnabled(False)
        self.export_json.setEnabled(False)
        self._say(f"Exporting {kind.plural} to {path.name}\u2026", emit=False)
        try:
            written = export_log(path, fmt, kind, all_pages(kind, filters), self._progress)
        except ExportCancelled:
            self._say("Export cancelled; nothing was written")
            return None
        except OSError as error:
            self._say(f"Could not export to {path}: {error.strerror or error}")
            return None
        finally:
            self._exporting = False
            self.cancel.setEnabled(False)
            self.export_csv.setEnabled(True)
            self.export_json.setEnabled(True)
        noun = kind.noun if written == 1 else kind.plural
        self._say(f"Exported {written:,} {noun} to {path}")
        return written

    def cancel_export(self) -> None:
        """Stop the running export after the page it is writing."""
        self._cancelled = True

    def _progress(self, written: int) -> bool:
        self.status.setText(f"Exported {written:,} so far\u2026")
        QApplication.processEvents()
        return not self._cancelled

    def _say(self, text: str, *, emit: bool = True) -> None:
        say(self.status, text, self.message if emit else None)
