"""Conflicts and refused edits: what the server said of this replica's edits, to review.

Rules of this module (the desktop issue, § Conflicts and refused edits):

- The table lists the replica's outcomes a person must see (`Workspace.attention`):
  rejected, superseded (rejected because someone else narrowed, deleted or
  re-created what the edit names) and conflicts. The selected one is shown in
  detail: mine and the server's side by side, who and when, the server's code
  and reason.
- Three actions, each ending the outcome's review: keep the server's (dismiss:
  the server's value or refusal stands), reapply mine (queue the edit's document
  again through `Workspace.queue`, as a new edit against the view as it is now,
  then dismiss; when it no longer applies, nothing is dismissed and the reason
  is said), and discard (dismiss, after asking). Nothing here writes policy.
- Each action's outcome is shown in the view, announced, and emitted as
  `message` for the main window's status bar.
- The server's answer names the version of the change an edit met, not who made
  it or when; the detail says so rather than guess.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QStyle,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.offline import EditProblem
from app.replica import Attention
from app.ui.main_window import announce
from app.ui.workspace import Workspace
from sync.policy.conditions import ConditionError
from sync.policy.model import Rule

Index = QModelIndex | QPersistentModelIndex

SUPERSEDED = "superseded"
"""The code of a rejection because someone else changed what the edit names."""


# --- an edit in words ------------------------------------------------------------------


def _quoted(value: Any) -> str:
    return f"\u201c{value}\u201d"


def _rule_text(rule: Any) -> str:
    if not isinstance(rule, dict):
        return orjson.dumps(rule).decode()
    actions = rule.get("actions")
    try:
        return Rule.build(
            str(rule.get("resource")),
            tuple(map(str, actions)) if isinstance(actions, list) else (),
            rule.get("when"),
        ).describe()
    except (ConditionError, TypeError, ValueError):
        return orjson.dumps(rule).decode()


def _owner_text(owner: Any, role: Callable[[str], str]) -> str:
    kind, _, owner_id = str(owner).partition(":")
    if kind == "role":
        return f"role {role(owner_id)}"
    return f"user {owner_id}" if kind == "user" else str(owner)


def describe_edit(document: dict[str, Any], role_name: Callable[[str], str] | None = None) -> str:
    """One line for a person: what the edit document does ("assign role driver to vic").

    `role_name`: the name to show for a role id (the view's policy); ids without it.
    A document of an op this module does not know is shown as its op and fields.
    """
    role = role_name or (lambda role_id: role_id)
    d = document
    op = d.get("op")
    user = d.get("user_id")
    role_id = str(d.get("role_id"))
    until = f" until {d['expires']}" if d.get("expires") else ""
    match op:
        case "create_role":
            inherits = ", ".join(role(str(p)) for p in d.get("inherits") or ())
            return f"create role {_quoted(d.get('name'))} ({role_id})" + (
                f" inheriting {inherits}" if inherits else ""
            )
        case "rename_role":
            return f"rename role {role_id} to {_quoted(d.get('name'))}"
        case "describe_role":
            return f"describe role {role(role_id)}: {_quoted(d.get('description'))}"
        case "delete_role":
            return f"delete role {role(role_id)}"
        case "add_inheritance":
            return f"make role {role(role_id)} inherit {role(str(d.get('parent_id')))}"
        case "remove_inheritance":
            return f"stop role {role(role_id)} inheriting {role(str(d.get('parent_id')))}"
        case "add_rule" | "remove_rule":
            verb, word = ("add", "to") if op == "add_rule" else ("remove", "from")
            owner = _owner_text(d.get("owner"), role)
            return f"{verb} {d.get('effect')} {_rule_text(d.get('rule'))} {word} {owner}"
        case "assign_role":
            return f"assign role {role(role_id)} to {user}{until}"
        case "unassign_role":
            return f"unassign role {role(role_id)} from {user}"
        case "make_eligible":
            return (
                f"make {user} eligible for role {role(role_id)}, "
                f"up to {d.get('max_hours')} h at a time{until}"
            )
        case "remove_eligible":
            return f"end {user}'s eligibility for role {role(role_id)}"
        case "activate_role":
            return (
                f"activate role {role(role_id)} for {user} for {d.get('hours')} h: "
                f"{_quoted(d.get('justification'))}"
            )
        case "deactivate_role":
            return f"deactivate role {role(role_id)} for {user}"
        case "create_user":
            name = f" {_quoted(d['name'])}" if d.get("name") else ""
            return f"create user {user}{name}"
        case "delete_user":
            return f"delete user {user}"
        case "set_user_attribute":
            if d.get("value") is None:
                return f"remove {user}'s attribute {d.get('key')}"
            return f"set {user}'s attribute {d.get('key')} to {value_text(d.get('value'))}"
        case "suspend_user":
            return f"suspend user {user}"
        case "resume_user":
            return f"resume user {user}"
    fields = {k: v for k, v in d.items() if k != "op"}
    return f"{op} {orjson.dumps(fields).decode()}"


def value_text(value: Any) -> str:
    """A member's value for a person: text as it is, absent as "(absent)", else JSON."""
    if value is None:
        return "(absent)"
    if isinstance(value, str):
        return value
    if value is True:
        return "(present)"
    return orjson.dumps(value).decode()


def time_text(stored: str | None) -> str:
    """A stored RFC 3339 UTC time as a table shows it: to the second, without the T and Z
    (headers say UTC); the stored text whole where it is not one."""
    if not stored:
        return ""
    if len(stored) >= 20 and stored[10] == "T" and stored.endswith("Z"):
        return f"{stored[:10]} {stored[11:19]}"
    return stored


def outcome_kind(attention: Attention) -> str:
    """rejected, superseded or conflict."""
    if attention.outcome == "conflict":
        return "conflict"
    return SUPERSEDED if attention.code == SUPERSEDED else attention.outcome


_OUTCOME_ICONS = {
    "conflict": QStyle.StandardPixmap.SP_MessageBoxWarning,
    SUPERSEDED: QStyle.StandardPixmap.SP_MessageBoxInformation,
    "rejected": QStyle.StandardPixmap.SP_MessageBoxCritical,
}


# --- the model -------------------------------------------------------------------------


class OutcomesModel(QAbstractTableModel):
    """The outcomes to review, lowest seq first (a replica holds few: each is dismissed)."""

    HEADERS = (
        "Edit",
        "Outcome",
        "What the edit did",
        "Made (UTC)",
        "Answered (UTC)",
        "Code",
        "Reason",
    )
    SEQ_ROLE = Qt.ItemDataRole.UserRole + 1

    def __init__(self, role_name: Callable[[str], str] | None = None) -> None:
        super().__init__()
        self._rows: list[Attention] = []
        self._role_name = role_name

    def set_rows(self, rows: Sequence[Attention]) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        self.endResetModel()

    def outcome(self, row: int) -> Attention:
        return self._rows[row]

    def row_of(self, seq: int) -> int | None:
        for row, attention in enumerate(self._rows):
            if attention.seq == seq:
                return row
        return None

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 - Qt's API
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.HEADERS)

    def _text(self, attention: Attention, column: int) -> str:
        match column:
            case 0:
                return str(attention.seq)
            case 1:
                return outcome_kind(attention)
            case 2:
                return describe_edit(attention.edit, self._role_name)
            case 3:
                return time_text(attention.made_at)
            case 4:
                return time_text(attention.answered_at)
            case 5:
                return attention.code or ""
        return attention.reason or ""

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self._rows):
            return None
        attention = self._rows[index.row()]
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.AccessibleTextRole):
            return self._text(attention, index.column())
        if role == Qt.ItemDataRole.ToolTipRole:
            times = {3: attention.made_at, 4: attention.answered_at}
            return times.get(index.column()) or self._text(attention, index.column())
        if role == Qt.ItemDataRole.DecorationRole and index.column() == 1:
            style = QApplication.style()
            return style.standardIcon(_OUTCOME_ICONS.get(outcome_kind(attention),
                                                         _OUTCOME_ICONS["rejected"]))  # fmt: skip
        if role == self.SEQ_ROLE:
            return attention.seq
        return None

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation is Qt.Orientation.Horizontal and role in (
            Qt.ItemDataRole.DisplayRole,
            Qt.ItemDataRole.AccessibleTextRole,
        ):
            return self.HEADERS[section]
        return None


# --- the view --------------------------------------------------------------------------


def _ask(parent: QWidget, title: str, question: str) -> bool:
    answer = QMessageBox.question(
        parent,
        title,
        question,
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes


class OutcomesView(QWidget):
    """The outcomes to review and what to do with each (module rules)."""

    message = Signal(str)
    """A one-line outcome of what the person did, for the status bar."""

    def __init__(self, workspace: Workspace, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.workspace = workspace
        self.setObjectName("outcomes-view")
        self.setAccessibleName("Conflicts and refused edits")
        self.confirm: Callable[[QWidget, str, str], bool] = _ask
        """Asks (parent, title, question) and says whether to go on; tests answer it."""

        self.model = OutcomesModel(self._role_name)
        heading = QLabel("Edits the server refused or that met another change", self)
        heading.setObjectName("outcomes-heading")
        heading.setWordWrap(True)

        self.table = QTableView(self)
        self.table.setObjectName("outcomes-table")
        self.table.setAccessibleName("Outcomes to review")
        self.table.setAccessibleDescription(
            "Each refused, superseded or conflicting edit; the one selected is shown below"
        )
        self.table.setModel(self.model)
        self.table.setTabKeyNavigation(False)  # Tab leaves the table (main_window: a11y traps)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        for section in range(header.count() - 1):  # wide enough for its heading, any text size
            size = max(header.sectionSizeHint(section), header.defaultSectionSize())
            header.resizeSection(section, size)
        self.table.selectionModel().currentRowChanged.connect(lambda *_: self._show_selected())

        self.count = QLabel(self)
        self.count.setObjectName("outcomes-count")
        self.count.setAccessibleName("Outcomes to review")

        self.detail = QGroupBox("Selected outcome", self)
        self.detail.setObjectName("outcome-detail")
        self.summary = QLabel(self.detail)
        self.summary.setObjectName("outcome-summary")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.mine = self._value_box("mine", "&Mine", "Mine: my edit, its value, who made it, when")
        self.servers = self._value_box(
            "servers", "Se&rver's", "The server's: its value or refusal, the reason, the version"
        )
        sides = QHBoxLayout()
        for label, box in (self.mine, self.servers):
            column = QVBoxLayout()
            column.addWidget(label)
            column.addWidget(box, 1)
            sides.addLayout(column, 1)

        self.keep = self._button(
            "keep",
            "&Keep the server's",
            "Dismiss this outcome: the server's value or refusal stays",
        )
        self.reapply = self._button(
            "reapply", "Re&apply mine", "Queue my edit again, as a new edit against the policy now"
        )
        self.discard = self._button(
            "discard", "&Discard mine\u2026", "Dismiss this outcome and drop my edit, after asking"
        )
        self.keep.clicked.connect(self.keep_servers)
        self.reapply.clicked.connect(self.reapply_mine)
        self.discard.clicked.connect(self.discard_mine)
        actions = QHBoxLayout()
        actions.addWidget(self.keep)
        actions.addWidget(self.reapply)
        actions.addWidget(self.discard)
        actions.addStretch(1)

        detail_layout = QVBoxLayout(self.detail)
        detail_layout.addWidget(self.summary)
        detail_layout.addLayout(sides, 1)
        detail_layout.addLayout(actions)

        self.status = QLabel(self)
        self.status.setObjectName("outcomes-status")
        self.status.setAccessibleName("Last action")
        self.status.setWordWrap(True)

        top = QWidget(self)
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(heading)
        top_layout.addWidget(self.table, 1)
        top_layout.addWidget(self.count)
        splitter = QSplitter(Qt.Orientation.Vertical, self)
        splitter.setObjectName("outcomes-splitter")
        splitter.setChildrenCollapsible(False)
        splitter.addWidget(top)
        splitter.addWidget(self.detail)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(splitter, 1)
        layout.addWidget(self.status)

        self.setTabOrder(self.table, self.mine[1])
        self.setTabOrder(self.mine[1], self.servers[1])
        self.setTabOrder(self.servers[1], self.keep)
        self.setTabOrder(self.keep, self.reapply)
        self.setTabOrder(self.reapply, self.discard)
        workspace.changed.connect(self.refresh)
        self.refresh()

    def _value_box(self, name: str, title: str, description: str) -> tuple[QLabel, QPlainTextEdit]:
        label = QLabel(title, self.detail)
        box = QPlainTextEdit(self.detail)
        box.setObjectName(f"outcome-{name}")
        box.setAccessibleName(title.replace("&", ""))
        box.setAccessibleDescription(description)
        box.setReadOnly(True)
        box.setTabChangesFocus(True)
        box.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByKeyboard
            | Qt.TextInteractionFlag.TextSelectableByMouse
        )
        box.setMinimumHeight(box.fontMetrics().lineSpacing() * 4 + 16)  # four lines, any font
        label.setBuddy(box)
        return label, box

    def _button(self, name: str, text: str, description: str) -> QPushButton:
        button = QPushButton(text, self.detail)
        button.setObjectName(f"outcome-{name}")
        button.setAccessibleName(text.replace("&", "").rstrip("\u2026"))
        button.setAccessibleDescription(description)
        return button

    def _role_name(self, role_id: str) -> str:
        return self.workspace.policy().role_name(role_id)

    # --- reading -----------------------------------------------------------------------

    def refresh(self) -> None:
        """Read the outcomes again, keeping the selected one if it is still there."""
        kept = self.selected()
        self.model.set_rows(self.workspace.attention())
        row = self.model.row_of(kept.seq) if kept is not None else None
        self._select(row if row is not None else 0)
        self._show_count()

    def selected(self) -> Attention | None:
        index = self.table.currentIndex()
        if not index.isValid() or index.row() >= self.model.rowCount():
            return None
        return self.model.outcome(index.row())

    def select_seq(self, seq: int) -> bool:
        """Select the outcome of edit `seq` (False: it is not to review)."""
        row = self.model.row_of(seq)
        if row is None:
            return False
        self._select(row)
        return True

    def _select(self, row: int) -> None:
        if 0 <= row < self.model.rowCount():
            self.table.setCurrentIndex(self.model.index(row, 0))
            self.table.selectRow(row)
        self._show_selected()

    def _show_count(self) -> None:
        total = self.model.rowCount()
        conflicts = sum(
            1 for r in range(total) if outcome_kind(self.model.outcome(r)) == "conflict"
        )
        if not total:
            text = "Nothing to review: no refused edits or conflicts"
        else:
            text = f"{total} to review" + (
                f", {conflicts} conflict{'s' if conflicts != 1 else ''}" if conflicts else ""
            )
        self.count.setText(text)

    def _show_selected(self) -> None:
        attention = self.selected()
        has = attention is not None
        for widget in (self.keep, self.reapply, self.discard):
            widget.setEnabled(has)
        if attention is None:
            self.summary.setText("Select an outcome above to see mine and the server's.")
            self.mine[1].setPlainText("")
            self.servers[1].setPlainText("")
            return
        what = describe_edit(attention.edit, self._role_name)
        kind = outcome_kind(attention)
        conflict = attention.conflict
        about = f" on {conflict.get('member')}" if kind == "conflict" and conflict else ""
        self.summary.setText(f"Edit {attention.seq}: {what} \u2014 {kind}{about}")
        self.mine[1].setPlainText(self._mine_text(attention, what))
        self.servers[1].setPlainText(self._servers_text(attention))

    def _mine_text(self, attention: Attention, what: str) -> str:
        conflict = attention.conflict
        value = value_text(conflict.get("client")) if conflict else what
        author = self.workspace.replica.meta().user or self.workspace.author
        made = time_text(attention.made_at)
        return f"{value}\n\nMade by {author} at {made} UTC, as edit {attention.seq}."

    def _servers_text(self, attention: Attention) -> str:
        conflict = attention.conflict
        kind = outcome_kind(attention)
        if conflict:
            first = value_text(conflict.get("server"))
        elif kind == SUPERSEDED:
            first = "Changed by someone else after this edit was made; the server keeps that."
        else:
            first = f"Refused ({attention.code or 'no code'})."
        lines = [first, ""]
        if attention.version is not None:
            lines.append(
                f"The server's change is version {attention.version}; "
                "who made it and when is not recorded in the server's answer."
            )
        lines.append(f"Answered at {time_text(attention.answered_at)} UTC.")
        if attention.reason:
            lines.append(f"Reason ({attention.code}): {attention.reason}")
        return "\n".join(lines)

    # --- the actions ---------------------------------------------------------------------

    def keep_servers(self) -> None:
        """Dismiss the selected outcome: the server's value (or its refusal) stands."""
        attention = self.selected()
        if attention is None:
            return
        what = describe_edit(attention.edit, self._role_name)
        kept = "value" if attention.conflict else "refusal"
        self._dismiss(attention, f"Kept the server's {kept} for edit {attention.seq}: {what}")

    def reapply_mine(self) -> None:
        """Queue the selected edit again as a new edit, then dismiss its outcome; when it
        cannot be queued, say why and keep the outcome."""
        attention = self.selected()
        if attention is None:
            return
        what = describe_edit(attention.edit, self._role_name)
        try:
            seqs = self.workspace.queue(
                [dict(attention.edit)], where=lambda _i: f"reapplying edit {attention.seq}"
            )
        except EditProblem as problem:
            self._say(f"{problem}; edit {attention.seq} stays to review")
            return
        new = ", ".join(map(str, seqs))
        self._dismiss(attention, f"Reapplied edit {attention.seq} as edit {new}: {what}")

    def discard_mine(self) -> None:
        """Dismiss the selected outcome and drop my edit, after asking (`confirm`)."""
        attention = self.selected()
        if attention is None:
            return
        what = describe_edit(attention.edit, self._role_name)
        if not self.confirm(
            self, "Discard my edit", f"Discard edit {attention.seq} ({what})? It is not sent again."
        ):
            self._say(f"Kept edit {attention.seq} to review")
            return
        self._dismiss(attention, f"Discarded edit {attention.seq}: {what}")

    def _dismiss(self, attention: Attention, text: str) -> None:
        row = self.model.row_of(attention.seq) or 0
        if not self.workspace.dismiss(attention.seq):
            text = f"Edit {attention.seq} was already dismissed"
        self.model.set_rows(self.workspace.attention())
        self._select(min(row, self.model.rowCount() - 1))
        self._show_count()
        self._say(text)
        self.table.setFocus(Qt.FocusReason.OtherFocusReason)

    def _say(self, text: str) -> None:
        self.status.setText(text)
        announce(self.status, text)
        self.message.emit(text)
