"""Check and explain: decide a request against the replica's view, say why, and offer
the ranked changes that would allow it; and who can do something to a resource.

Rules of this module (the desktop issue, § Check and explain):

- The decision is the workspace engine's, so it is the replica's view: the
  confirmed policy with the pending edits replayed; the view says how many
  pending edits it includes.
- The verdict is a word and an icon ("Allowed" with a check, "Denied" with a
  cross), never colour alone; it, the reason and the full trace are shown
  and the verdict is announced to assistive technology.
- For a denial the fixes of `sync.policy.fixes.fixes_for`, ranked, each one
  activation (Enter, double-click or the button) from being queued through
  `Workspace.queue`; a fix that changes only the request fills the form
  instead. Either way the request is checked again and the outcome emitted
  as `message`. For an allow, the grants it relies on.
- Who can: `Engine.who_can` over every user, shown by a model that hands
  the view a page at a time, so a 50,000-user answer does not build 50,000 rows.
- The user field completes from the view's user ids, a list built the first
  time the person types and again after the view changes.
- Widgets are touched only on the UI thread.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QDateTime,
    QModelIndex,
    QPersistentModelIndex,
    QStringListModel,
    Qt,
    QTimeZone,
)
from PySide6.QtGui import (
    QFontDatabase,
    QKeySequence,
    QShortcut,
    QShowEvent,
    QStandardItem,
    QStandardItemModel,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QCompleter,
    QDateTimeEdit,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListView,
    QPushButton,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app import offline
from app.ui.controls import name_spin_box, text_label
from app.ui.feedback import say
from app.ui.icons import icon, verdict_pixmap
from app.ui.main_window import announce
from app.ui.models import TEXT_ROLES, ShownByPageModel
from app.ui.tables import table_view
from app.ui.typed_values import parse_value, value_text
from app.ui.workspace import Workspace
from app.ui.workspace_view import WorkspaceView
from sync.policy.decision import Decision
from sync.policy.engine import Engine
from sync.policy.fixes import JUSTIFICATION, Fix, fixes_for, grants_relied_on, with_justification
from sync.policy.instant import Instant, format_instant, instant_from_datetime
from sync.policy.request import Request

PAGE = 200
"""Who-can rows handed to the view at a time."""

Index = QModelIndex | QPersistentModelIndex


# --- models -------------------------------------------------------------------------------


class FixListModel(QAbstractListModel):
    """The ranked fixes of one denial: `1. assign role driver to vic`, with what else
    each gives on a second line."""

    def __init__(self) -> None:
        super().__init__()
        self._fixes: list[Fix] = []

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 - Qt's API
        return 0 if parent.isValid() else len(self._fixes)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self._fixes):
            return None
        fix = self._fixes[index.row()]
        if role in TEXT_ROLES:
            text = f"{index.row() + 1}. {fix.label}"
            if not fix.edits:
                text += "\n    (a change to the request, not to the policy)"
            if fix.widens:
                text += "\n    also gives: " + ", ".join(fix.widens)
            return text
        if role == Qt.ItemDataRole.ToolTipRole:
            return "Enter: make it a pending edit" if fix.edits else "Enter: try this request"
        return None

    def set_fixes(self, fixes: Sequence[Fix]) -> None:
        self.beginResetModel()
        self._fixes = list(fixes)
        self.endResetModel()

    def fix(self, row: int) -> Fix:
        return self._fixes[row]

    @property
    def fixes(self) -> list[Fix]:
        return list(self._fixes)


WHO_CAN_HEADERS = ("User", "Name", "Allowed by")


class WhoCanModel(ShownByPageModel[tuple[str, str, str]]):
    """Users allowed a request, with the deciding grant; rows reach the view a
    PAGE at a time (`canFetchMore`/`fetchMore`) out of the whole answer."""

    def __init__(self) -> None:
        super().__init__(WHO_CAN_HEADERS, PAGE)

    def cell(self, row: tuple[str, str, str], column: int, role: int) -> Any:
        if role in (*TEXT_ROLES, Qt.ItemDataRole.ToolTipRole):
            return row[column]
        return None

    def set_found(self, found: Sequence[tuple[str, str, str]]) -> None:
        """(user id, name, reason) of every user allowed; the first page is shown."""
        self.set_rows(found)

    def user_id(self, row: int) -> str:
        return self._rows[row][0]


# --- a small key/value editor -------------------------------------------------------------


class PairsEditor(QWidget):
    """Resource attributes and context as rows of key and value: `resource.region`
    (or just `region`) is a resource attribute, `context.hour` a context value;
    values are JSON when they parse."""

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName(f"{name}-pairs")
        self.model = QStandardItemModel(0, 2, self)
        self.model.setHorizontalHeaderLabels(["Key", "Value"])
        self.table = QTableView(self)
        self.table.setObjectName(f"{name}-pairs-table")
        self.table.setAccessibleName("Resource attributes and context")
        self.table.setAccessibleDescription(
            "One row per value: key resource.<name> or context.<name>, value as JSON or text. "
            "F2 edits a cell."
        )
        self.table.setModel(self.model)
        self.table.setTabKeyNavigation(False)  # Tab leaves the table
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.setMinimumHeight(self.fontMetrics().lineSpacing() * 6)  # a few rows, any font
        self.add = QPushButton("Add ro&w", self)
        self.add.setObjectName(f"{name}-add-row")
        self.add.setAccessibleName("Add a key and value row")
        self.add.clicked.connect(self.add_row)
        self.remove = QPushButton("Remo&ve row", self)
        self.remove.setObjectName(f"{name}-remove-row")
        self.remove.setAccessibleName("Remove the selected row")
        self.remove.clicked.connect(self.remove_row)
        buttons = QHBoxLayout()
        buttons.addWidget(self.add)
        buttons.addWidget(self.remove)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table)
        layout.addLayout(buttons)

    def add_row(self) -> None:
        """Add an empty row and start editing its key."""
        self.model.appendRow([QStandardItem(""), QStandardItem("")])
        index = self.model.index(self.model.rowCount() - 1, 0)
        self.table.setCurrentIndex(index)
        self.table.setFocus(Qt.FocusReason.OtherFocusReason)
        self.table.edit(index)

    def remove_row(self) -> None:
        row = self.table.currentIndex().row()
        if row >= 0:
            self.model.removeRow(row)

    def pairs(self) -> list[tuple[str, Any]]:
        """(key as typed, parsed value) of each row with a key and a value."""
        found = []
        for row in range(self.model.rowCount()):
            key = (self.model.item(row, 0).text() if self.model.item(row, 0) else "").strip()
            text = (self.model.item(row, 1).text() if self.model.item(row, 1) else "").strip()
            if key and text:
                found.append((key, parse_value(text)))
        return found

    def split(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(resource attributes, context) from the rows."""
        attributes: dict[str, Any] = {}
        context: dict[str, Any] = {}
        for key, value in self.pairs():
            root, dot, name = key.partition(".")
            if dot and root == "context" and name:
                context[name] = value
            elif dot and root == "resource" and name:
                attributes[name] = value
            else:
                attributes[key] = value
        return attributes, context

    def _row_of(self, path: str) -> int | None:
        bare = path.removeprefix("resource.") if path.startswith("resource.") else None
        for row in range(self.model.rowCount()):
            item = self.model.item(row, 0)
            key = item.text().strip() if item else ""
            if key == path or (bare is not None and key == bare):
                return row
        return None

    def set_value(self, path: str, value: Any) -> None:
        """Set `path` (`resource.region`, `context.hour`) to `value`; None removes its row."""
        row = self._row_of(path)
        if value is None:
            if row is not None:
                self.model.removeRow(row)
            return
        if row is None:
            self.model.appendRow([QStandardItem(path), QStandardItem(value_text(value))])
        else:
            self.model.setItem(row, 1, QStandardItem(value_text(value)))

    def clear(self) -> None:
        self.model.removeRows(0, self.model.rowCount())


# --- the view -----------------------------------------------------------------------------


def _labelled(text: str, buddy: QWidget, parent: QWidget) -> QLabel:
    label = QLabel(text, parent)
    label.setBuddy(buddy)
    return label


class CheckView(WorkspaceView):
    """Check and explain, and who can (module rules)."""

    def __init__(self, workspace: Workspace, parent: QWidget | None = None) -> None:
        super().__init__(workspace, "check-view", "Check and explain", parent)
        self._users_stale = True
        self._sorted_users: list[tuple[str, str]] = []
        self._refresh_when_shown = False
        self._users = QStringListModel(self)
        self._checked: Request | None = None
        self._verdict: bool | None = None
        self._applying = False
        self._types: tuple[str, ...] = ()

        self.tabs = QTabWidget(self)
        self.tabs.setObjectName("check-tabs")
        self.tabs.setAccessibleName("Check or who can")
        self.tabs.tabBar().setAccessibleName("Check or who can")
        self.tabs.addTab(self._build_check(), "&Check a request")
        self.tabs.addTab(self._build_who_can(), "W&ho can")
        self._stale_tabs: set[int] = set()
        self.who_busy = False
        """A who-can answer is being worked out on a worker (`find_who_can`)."""
        self.tabs.currentChanged.connect(self._refresh_tab)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs)

        for keys in ("Ctrl+Return", "Ctrl+Enter"):
            shortcut = QShortcut(QKeySequence(keys), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(self._run_current_tab)

        self._fill_types()
        self._show_nothing()
        self.time.setDateTime(QDateTime.fromSecsSinceEpoch(workspace.now()[0], QTimeZone.utc()))
        workspace.changed.connect(self.refresh)

    # --- building ---------------------------------------------------------------------

    def _build_check(self) -> QWidget:
        page = QWidget(self)
        page.setObjectName("check-page")

        self.user = QLineEdit(page)
        self.user.setObjectName("check-user")
        self.user.setAccessibleName("User")
        self.user.setAccessibleDescription("The id of the user whose request is checked")
        self.user.setPlaceholderText("user id")
        self.completer = QCompleter(self._users, self.user)
        self.completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.completer.setFilterMode(Qt.MatchFlag.MatchStartsWith)
        self.completer.setMaxVisibleItems(12)
        popup = self.completer.popup()
        if popup is not None:
            popup.setAccessibleName("Matching users")
        self.user.setCompleter(self.completer)
        self.user.textEdited.connect(self._suggest_users)
        self.user.returnPressed.connect(self.check)

        self.type = QComboBox(page)
        self.type.setObjectName("check-type")
        self.type.setAccessibleName("Resource type")
        self.action = QComboBox(page)
        self.action.setObjectName("check-action")
        self.action.setAccessibleName("Action")
        self.action.setAccessibleDescription("The actions listed for the chosen resource type")
        self.type.currentTextChanged.connect(lambda _t: self._fill_actions(self.type, self.action))

        self.resource_id = QLineEdit(page)
        self.resource_id.setObjectName("check-resource-id")
        self.resource_id.setAccessibleName("Resource id")
        self.resource_id.setPlaceholderText("optional")
        self.resource_id.returnPressed.connect(self.check)

        self.pairs = PairsEditor("check", page)

        self.now = QCheckBox("&Now", page)
        self.now.setObjectName("check-now")
        self.now.setAccessibleName("Check at the replica's current time")
        self.now.setChecked(True)
        self.time = QDateTimeEdit(page)
        self.time.setObjectName("check-time")
        name_spin_box(self.time, "Context time (UTC)")
        self.time.setAccessibleDescription("The request's context.time, when Now is not ticked")
        self.time.setTimeZone(QTimeZone.utc())
        self.time.setDisplayFormat("yyyy-MM-dd HH:mm:ss 'UTC'")
        self.time.setCalendarPopup(True)
        self.time.setEnabled(False)
        self.now.toggled.connect(lambda checked: self.time.setEnabled(not checked))
        time_row = QHBoxLayout()
        time_row.addWidget(self.now)
        time_row.addWidget(self.time, 1)

        self.check_button = QPushButton("Chec&k", page)
        self.check_button.setObjectName("check-run")
        self.check_button.setAccessibleName("Check the request")
        self.check_button.setAccessibleDescription("Decide the request (Enter, or Ctrl+Return)")
        self.check_button.setDefault(True)
        self.check_button.setToolTip("Ctrl+Return")
        self.check_button.clicked.connect(self.check)

        form = QFormLayout()
        form.addRow(_labelled("&User:", self.user, page), self.user)
        form.addRow(_labelled("Resource &type:", self.type, page), self.type)
        form.addRow(_labelled("&Action:", self.action, page), self.action)
        form.addRow(_labelled("Resource &id:", self.resource_id, page), self.resource_id)
        form.addRow(_labelled("Attri&butes, context:", self.pairs.table, page), self.pairs)
        form.addRow(_labelled("Ti&me:", self.time, page), time_row)
        request_box = QGroupBox("Request", page)
        request_box.setObjectName("check-request")
        box_layout = QVBoxLayout(request_box)
        box_layout.addLayout(form)
        box_layout.addWidget(self.check_button, 0, Qt.AlignmentFlag.AlignRight)
        box_layout.addStretch(1)

        result = self._build_result(page)
        row = QHBoxLayout(page)
        row.addWidget(request_box, 2)
        row.addWidget(result, 3)

        chain: list[QWidget] = [self.user, self.type, self.action, self.resource_id,
                                self.pairs.table, self.pairs.add, self.pairs.remove, self.now,
                                self.time, self.check_button, self.fix_list, self.justification,
                                self.apply_button, self.grants, self.trace]  # fmt: skip
        for first, second in pairwise(chain):
            self.setTabOrder(first, second)
        return page

    def _build_result(self, page: QWidget) -> QWidget:
        result = QWidget(page)
        result.setObjectName("check-result")
        self.verdict_icon = text_label(result, "check-verdict-icon", "Verdict icon")
        self.verdict = text_label(result, "check-verdict", "Verdict")
        font = self.verdict.font()
        font.setPointSizeF(font.pointSizeF() * 1.8)
        font.setBold(True)
        self.verdict.setFont(font)
        verdict_row = QHBoxLayout()
        verdict_row.addWidget(self.verdict_icon)
        verdict_row.addWidget(self.verdict, 1)

        self.reason = text_label(result, "check-reason", "Reason", wrap=True, selectable=True)
        self.note = text_label(result, "check-note", "What the decision is based on", wrap=True)

        self.fixes_box = QGroupBox("Changes that would allow it, best first", result)
        self.fixes_box.setObjectName("check-fixes")
        self.fix_model = FixListModel()
        self.fix_list = QListView(self.fixes_box)
        self.fix_list.setObjectName("check-fix-list")
        self.fix_list.setAccessibleName("Changes that would allow it")
        self.fix_list.setAccessibleDescription(
            "Ranked: the smallest change first. Enter makes the chosen one a pending edit."
        )
        self.fix_list.setModel(self.fix_model)
        self.fix_list.setWordWrap(True)
        self.fix_list.setUniformItemSizes(False)
        self.fix_list.setSpacing(3)
        self.fix_list.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.fix_list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.fix_list.activated.connect(lambda index: self.apply_fix(index.row()))
        self.fix_list.selectionModel().currentChanged.connect(lambda *_: self._fix_chosen())
        self.justification = QLineEdit(self.fixes_box)
        self.justification.setObjectName("check-justification")
        self.justification.setAccessibleName("Justification for an activation")
        self.justification.setAccessibleDescription(
            "Recorded in the audit log when a fix activates an eligible role"
        )
        self.justification.setText(JUSTIFICATION)
        self.apply_button = QPushButton("Make it a pending &edit", self.fixes_box)
        self.apply_button.setObjectName("check-apply-fix")
        self.apply_button.setAccessibleName("Make the chosen change a pending edit")
        self.apply_button.clicked.connect(
            lambda: self.apply_fix(self.fix_list.currentIndex().row())
        )
        fixes_layout = QVBoxLayout(self.fixes_box)
        fixes_layout.addWidget(self.fix_list, 1)
        justification_row = QHBoxLayout()
        justification_row.addWidget(_labelled("&Justification:", self.justification, result))
        justification_row.addWidget(self.justification, 1)
        fixes_layout.addLayout(justification_row)
        fixes_layout.addWidget(self.apply_button, 0, Qt.AlignmentFlag.AlignRight)

        self.grants_box = QGroupBox("Grants it relies on", result)
        self.grants_box.setObjectName("check-grants")
        self.grant_model = QStringListModel(self)
        self.grants = QListView(self.grants_box)
        self.grants.setObjectName("check-grant-list")
        self.grants.setAccessibleName("Grants the decision relies on")
        self.grants.setModel(self.grant_model)
        self.grants.setWordWrap(True)
        self.grants.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        grants_layout = QVBoxLayout(self.grants_box)
        grants_layout.addWidget(self.grants)

        trace_box = QGroupBox("Trace", result)
        trace_box.setObjectName("check-trace-box")
        self.trace_model = QStringListModel(self)
        self.trace = QListView(trace_box)
        self.trace.setObjectName("check-trace")
        self.trace.setAccessibleName("Trace of the decision")
        self.trace.setAccessibleDescription("Every step that led to the decision, in order")
        self.trace.setModel(self.trace_model)
        self.trace.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.trace.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.trace.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        trace_layout = QVBoxLayout(trace_box)
        trace_layout.addWidget(self.trace)

        self.outcome = text_label(result, "check-outcome", "Outcome", wrap=True)

        layout = QVBoxLayout(result)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(verdict_row)
        layout.addWidget(self.reason)
        layout.addWidget(self.note)
        layout.addWidget(self.fixes_box, 3)
        layout.addWidget(self.grants_box, 2)
        layout.addWidget(trace_box, 3)
        layout.addWidget(self.outcome)
        return result

    def _build_who_can(self) -> QWidget:
        page = QWidget(self)
        page.setObjectName("who-can-page")
        self.who_type = QComboBox(page)
        self.who_type.setObjectName("who-can-type")
        self.who_type.setAccessibleName("Resource type")
        self.who_action = QComboBox(page)
        self.who_action.setObjectName("who-can-action")
        self.who_action.setAccessibleName("Action")
        self.who_type.currentTextChanged.connect(
            lambda _t: self._fill_actions(self.who_type, self.who_action)
        )
        self.who_resource_id = QLineEdit(page)
        self.who_resource_id.setObjectName("who-can-resource-id")
        self.who_resource_id.setAccessibleName("Resource id")
        self.who_resource_id.setPlaceholderText("optional")
        self.who_resource_id.returnPressed.connect(self.find_who_can)
        self.who_pairs = PairsEditor("who-can", page)
        self.who_button = QPushButton("&Find who can", page)
        self.who_button.setObjectName("who-can-run")
        self.who_button.setAccessibleName("Find the users who can")
        self.who_button.setToolTip("Ctrl+Return")
        self.who_button.clicked.connect(self.find_who_can)

        form = QFormLayout()
        form.addRow(_labelled("Resource &type:", self.who_type, page), self.who_type)
        form.addRow(_labelled("&Action:", self.who_action, page), self.who_action)
        form.addRow(_labelled("Resource &id:", self.who_resource_id, page), self.who_resource_id)
        form.addRow(_labelled("Attri&butes, context:", self.who_pairs.table, page), self.who_pairs)
        box = QGroupBox("Resource", page)
        box.setObjectName("who-can-request")
        box_layout = QVBoxLayout(box)
        box_layout.addLayout(form)
        box_layout.addWidget(self.who_button, 0, Qt.AlignmentFlag.AlignRight)
        box_layout.addStretch(1)

        self.who_count = text_label(page, "who-can-count", "Users who can")
        self.who_model = WhoCanModel()
        self.who_table = table_view(page, "who-can-table", "Users who can", self.who_model)
        self.who_table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 8)
        characters = self.fontMetrics().averageCharWidth()  # widths follow the text size
        self.who_table.setColumnWidth(0, characters * 18)
        self.who_table.setColumnWidth(1, characters * 23)
        results = QVBoxLayout()
        results.addWidget(self.who_count)
        results.addWidget(self.who_table, 1)

        row = QHBoxLayout(page)
        row.addWidget(box, 2)
        row.addLayout(results, 3)
        chain: list[QWidget] = [self.who_type, self.who_action, self.who_resource_id,
                                self.who_pairs.table, self.who_pairs.add, self.who_pairs.remove,
                                self.who_button, self.who_table]  # fmt: skip
        for first, second in pairwise(chain):
            self.setTabOrder(first, second)
        return page

    # --- reading the form -------------------------------------------------------------

    def _ensure_users(self) -> None:
        """The user ids, sorted for prefix lookups, built when first needed and after the
        view changed."""
        if self._users_stale:
            self._sorted_users = sorted((u.casefold(), u) for u in self.workspace.policy().users)
            self._users_stale = False

    def _suggest_users(self, text: str) -> None:
        """The completer gets only the ids starting with what was typed (at most
        SUGGESTED): filtering 50,000 ids in the completer took 200-300 ms a key."""
        self._ensure_users()
        prefix = text.strip().casefold()
        ids = self._sorted_users
        start = bisect.bisect_left(ids, (prefix, ""))
        found = []
        for folded, user_id in itertools.islice(ids, start, start + SUGGESTED):
            if not folded.startswith(prefix):
                break
            found.append(user_id)
        self._users.setStringList(found)

    def _fill_types(self) -> None:
        types = tuple(self.workspace.policy().resource_types)
        if types == self._types:
            for combo, actions in ((self.type, self.action), (self.who_type, self.who_action)):
                self._fill_actions(combo, actions)
            return
        self._types = types
        for combo in (self.type, self.who_type):
            kept = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(list(types))
            if kept in types:
                combo.setCurrentText(kept)
            combo.blockSignals(False)
        self._fill_actions(self.type, self.action)
        self._fill_actions(self.who_type, self.who_action)

    def _fill_actions(self, types: QComboBox, actions: QComboBox) -> None:
        listed = list(self.workspace.policy().resource_types.get(types.currentText(), ()))
        kept = actions.currentText()
        if [actions.itemText(i) for i in range(actions.count())] == listed:
            return
        actions.clear()
        actions.addItems(listed)
        if kept in listed:
            actions.setCurrentText(kept)

    def set_time(self, instant: Instant | None) -> None:
        """Check at `instant` (None: at the replica's current time, the Now box)."""
        if instant is None:
            self.now.setChecked(True)
            return
        self.now.setChecked(False)
        self.time.setDateTime(QDateTime.fromSecsSinceEpoch(instant[0], QTimeZone.utc()))

    def request(self) -> Request | None:
        """The request the form describes, or None while it has no user."""
        user = self.user.text().strip()
        if not user:
            return None
        attributes, context = self.pairs.split()
        time: Instant | None = None
        if not self.now.isChecked():
            seconds = self.time.dateTime().toSecsSinceEpoch()
            time = instant_from_datetime(datetime.fromtimestamp(seconds, UTC))
            context["time"] = format_instant(time)
        resource_id = self.resource_id.text().strip() or None
        return Request(
            user,
            self.action.currentText(),
            self.type.currentText(),
            resource_id,
            attributes,
            context,
            time,
        )

    def _run_current_tab(self) -> None:
        if self.tabs.currentIndex() == 0:
            self.check()
        else:
            self.find_who_can()

    # --- checking ---------------------------------------------------------------------

    def check(self) -> None:
        """Decide the form's request, show why, and what would change it (module rules)."""
        request = self.request()
        if request is None:
            self._show_nothing("Enter the id of a user to check.")
            announce(self.reason, self.reason.text())
            self.user.setFocus(Qt.FocusReason.OtherFocusReason)
            return
        decision = self._show(request)
        self.message.emit(f"{_described(request)}: {_verdict(decision)}, {decision.reason}")

    def _show(self, request: Request, *, announce_always: bool = True) -> Decision:
        engine = self.workspace.engine()
        now = self.workspace.now()
        explanation = engine.explain(request, now)
        decision = explanation.decision
        allowed = decision.allowed
        self.verdict_icon.setPixmap(icon(verdict_pixmap(allowed)).pixmap(32, 32))
        self.verdict_icon.setAccessibleName(f"{_verdict(decision)} icon")
        self.verdict.setText(_verdict(decision))
        self.reason.setText(f"Reason: {decision.reason}")
        self.note.setText(self._basis())
        self.trace_model.setStringList(list(explanation.trace))
        if allowed:
            self.fix_model.set_fixes([])
            self.grant_model.setStringList(grants_relied_on(engine, request, now))
        else:
            self.grant_model.setStringList([])
            self.fix_model.set_fixes(fixes_for(engine, request, now))
            if self.fix_model.rowCount():
                self.fix_list.setCurrentIndex(self.fix_model.index(0))
        self.fixes_box.setVisible(not allowed)
        self.grants_box.setVisible(allowed)
        self._fix_chosen()
        changed = self._verdict is not allowed
        self._checked = request
        self._verdict = allowed
        if announce_always or changed:
            spoken = f"{_verdict(decision)}. {decision.reason}"
            if not allowed:
                count = self.fix_model.rowCount()
                spoken += f". {count} change{'s' if count != 1 else ''} would allow it"
            announce(self.verdict, spoken)
        return decision

    def _basis(self) -> str:
        pending = len(self.workspace.pending())
        version = self.workspace.engine().version
        if pending:
            noun = "edit" if pending == 1 else "edits"
            return (
                f"Based on the replica's view including {pending} pending {noun} "
                f"(not yet confirmed by the server), over version {version}."
            )
        return f"Based on the replica's confirmed policy, version {version}."

    def _show_nothing(self, reason: str = "Fill in a request and press Check.") -> None:
        self.verdict_icon.clear()
        self.verdict_icon.setAccessibleName("Verdict icon")
        self.verdict.setText("Not checked yet")
        self.reason.setText(reason)
        self.note.setText("")
        self.trace_model.setStringList([])
        self.grant_model.setStringList([])
        self.fix_model.set_fixes([])
        self.fixes_box.setVisible(False)
        self.grants_box.setVisible(False)
        self._fix_chosen()

    def _fix_chosen(self) -> None:
        row = self.fix_list.currentIndex().row()
        fix = self.fix_model.fix(row) if 0 <= row < self.fix_model.rowCount() else None
        self.apply_button.setEnabled(fix is not None)
        activates = fix is not None and any(e.get("op") == "activate_role" for e in fix.edits)
        self.justification.setEnabled(activates)
        if fix is not None and not fix.edits:
            self.apply_button.setText("Try this r&equest")
            self.apply_button.setAccessibleName("Change the request as the chosen fix says")
        else:
            self.apply_button.setText("Make it a pending &edit")
            self.apply_button.setAccessibleName("Make the chosen change a pending edit")

    # --- fixing -----------------------------------------------------------------------

    def apply_fix(self, row: int) -> None:
        """Queue fix `row`'s edits (and fill the form with its request change), then
        check again and say what happened (module rules)."""
        if not 0 <= row < self.fix_model.rowCount():
            return
        fix = self.fix_model.fix(row)
        queued: list[int] = []
        if fix.edits:
            text = self.justification.text().strip() or JUSTIFICATION
            self._applying = True
            try:
                queued = self.workspace.queue(list(with_justification(fix, text)))
            except offline.EditProblem as problem:
                self._say(str(problem))
                return
            finally:
                self._applying = False
            self._fill_types()
        for path, value in (fix.request_change or {}).items():
            self._change_form(path, value)
        request = self.request()
        if request is None:
            return
        decision = self._show(request)
        if queued:
            seqs = ", ".join(str(s) for s in queued)
            head = f"Queued edit{'s' if len(queued) > 1 else ''} {seqs}: {fix.label}"
        else:
            head = f"Changed the request: {fix.label}"
        self._say(f"{head}; the request is now {_verdict(decision).lower()}")

    def _change_form(self, path: str, value: Any) -> None:
        if path == "resource.id":
            self.resource_id.setText("" if value is None else value_text(value))
        else:
            self.pairs.set_value(path, value)

    def _say(self, text: str) -> None:
        say(self.outcome, text, self.message)

    # --- who can ----------------------------------------------------------------------

    def find_who_can(self, *, say: bool = True) -> None:
        """List every user allowed the who-can tab's action on its resource; `say`:
        announce and emit the count (the person asked, not a refresh). It decides for
        every user of the tenant (165 ms on 50,000): on a worker, the window stays live,
        and `who_busy` is True until the answer is shown."""
        action = self.who_action.currentText()
        type_name = self.who_type.currentText()
        attributes, context = self.who_pairs.split()
        resource_id = self.who_resource_id.text().strip() or None
        now = self.workspace.now()
        asked = f"{action} {type_name}" + (f" {resource_id}" if resource_id is not None else "")
        self.who_busy = True
        self.who_count.setText(f"Finding who can {asked} ...")

        def work(engine: Engine) -> list[tuple[str, str, str]]:
            policy = engine.policy
            rows = []
            for user_id, decision in engine.who_can(
                action, type_name, resource_id, attributes, context, now=now
            ):
                user = policy.users.get(user_id)
                rows.append((user_id, (user.name if user else None) or "", decision.reason))
            return rows

        self.workspace.read_later(work, lambda rows: self._show_who_can(rows, asked, say), self)

    def _show_who_can(self, rows: Any, asked: str, say: bool) -> None:
        self.who_busy = False
        if isinstance(rows, Exception):
            text = f"Who can {asked} could not be worked out: {rows}"
        else:
            self.who_model.set_found(rows)
            noun = "user" if len(rows) == 1 else "users"
            text = f"{len(rows):,} {noun} can {asked}"
        self.who_count.setText(text)
        if say:
            announce(self.who_count, text)
            self.message.emit(text)

    # --- the view changed -------------------------------------------------------------

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._refresh_when_shown:
            self.refresh()

    def refresh(self) -> None:
        """The workspace's view changed: read again, and check the last request again
        (when shown: a hidden view does it when it is shown again)."""
        self._users_stale = True
        if self._applying:
            return
        if not self.isVisible():
            self._refresh_when_shown = True
            return
        self._refresh_when_shown = False
        self._fill_types()
        # Only the tab shown is worked out again (each costs a few hundred ms on 50,000
        # users); the other when its tab is chosen.
        self._stale_tabs = {0, 1}
        self._refresh_tab(self.tabs.currentIndex())

    def _refresh_tab(self, index: int) -> None:
        if index not in self._stale_tabs:
            return
        self._stale_tabs.discard(index)
        if index == 0 and self._checked is not None:
            request = self.request()
            if request is not None:
                self._show(request, announce_always=False)
        if index == 1 and self.who_count.text():
            self.find_who_can(say=False)


SUGGESTED = 200
"""User ids the completer is given at most: those starting with what was typed."""


def _verdict(decision: Decision) -> str:
    return "Allowed" if decision.allowed else "Denied"


def _described(request: Request) -> str:
    target = request.resource_type
    if request.resource_id is not None:
        target += f" {request.resource_id}"
    return f"{request.user} {request.action} {target}"
