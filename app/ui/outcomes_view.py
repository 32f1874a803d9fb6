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
- The server's answer names the version of the change an edit met; who made it,
  from which device and when are read from the replica's history of changes
  received (`Replica.change`). A change the replica did not receive as one (it
  came within a snapshot) is said to be so rather than guessed.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from app.offline import EditProblem
from app.replica import Attention
from app.ui.controls import push_button, splitter, text_label
from app.ui.feedback import ask, say
from app.ui.icons import icon
from app.ui.models import TEXT_ROLES, RowsModel
from app.ui.tables import table_view
from app.ui.wording import SUPERSEDED, describe_edit, time_text, value_text
from app.ui.workspace import Workspace
from app.ui.workspace_view import WorkspaceView


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


class OutcomesModel(RowsModel[Attention]):
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
        super().__init__(self.HEADERS)
        self._role_name = role_name

    def outcome(self, row: int) -> Attention:
        return self._rows[row]

    def row_of(self, seq: int) -> int | None:
        for row, attention in enumerate(self._rows):
            if attention.seq == seq:
                return row
        return None

    def text(self, attention: Attention, column: int) -> str:
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

    def cell(self, attention: Attention, column: int, role: int) -> Any:
        if role in TEXT_ROLES:
            return self.text(attention, column)
        if role == Qt.ItemDataRole.ToolTipRole:
            times = {3: attention.made_at, 4: attention.answered_at}
            return times.get(column) or self.text(attention, column)
        if role == Qt.ItemDataRole.DecorationRole and column == 1:
            return icon(_OUTCOME_ICONS.get(outcome_kind(attention), _OUTCOME_ICONS["rejected"]))
        if role == self.SEQ_ROLE:
            return attention.seq
        return None


# --- the view --------------------------------------------------------------------------


class OutcomesView(WorkspaceView):
    """The outcomes to review and what to do with each (module rules)."""

    def __init__(self, workspace: Workspace, parent: QWidget | None = None) -> None:
        super().__init__(workspace, "outcomes-view", "Conflicts and refused edits", parent)
        self.confirm: Callable[[QWidget, str, str], bool] = ask
        """Asks (parent, title, question) and says whether to go on; tests answer it."""

        self.model = OutcomesModel(self._role_name)
        heading = QLabel("Edits the server refused or that met another change", self)
        heading.setObjectName("outcomes-heading")
        heading.setWordWrap(True)

        self.table = table_view(
            self,
            "outcomes-table",
            "Outcomes to review",
            self.model,
            "Each refused, superseded or conflicting edit; the one selected is shown below",
        )
        header = self.table.horizontalHeader()
        for section in range(header.count() - 1):  # wide enough for its heading, any text size
            size = max(header.sectionSizeHint(section), header.defaultSectionSize())
            header.resizeSection(section, size)
        self.table.selectionModel().currentRowChanged.connect(lambda *_: self._show_selected())

        self.count = text_label(self, "outcomes-count", "Outcomes to review")

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

        self.status = text_label(self, "outcomes-status", "Last action", wrap=True)

        top = QWidget(self)
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(heading)
        top_layout.addWidget(self.table, 1)
        top_layout.addWidget(self.count)
        panes = splitter(self, Qt.Orientation.Vertical, "outcomes-splitter",
                         [(top, 1), (self.detail, 1)])  # fmt: skip
        layout = QVBoxLayout(self)
        layout.addWidget(panes, 1)
        layout.addWidget(self.status)

        chain = (self.table, self.mine[1], self.servers[1], self.keep, self.reapply, self.discard)
        for first, second in pairwise(chain):
            self.setTabOrder(first, second)
        self.follow_changes(self.refresh)
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
        return push_button(self.detail, text, f"outcome-{name}", description)

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
            lines.append(self._whose(attention.version))
        lines.append(f"Answered at {time_text(attention.answered_at)} UTC.")
        if attention.reason:
            lines.append(f"Reason ({attention.code}): {attention.reason}")
        return "\n".join(lines)

    def _whose(self, version: int) -> str:
        """Who made the server's change `version`, from where and when, as far as this
        replica knows (module rules)."""
        change = self.workspace.replica.change(version)
        if change is None:
            return (
                f"The server's change is version {version}. This replica received it within "
                "a snapshot, not as a change: who made it and when is in the server's "
                "audit log."
            )
        return (
            f"Changed by {change.author} (device {change.device}) at {time_text(change.at)} "
            f"UTC, as version {version}: {describe_edit(change.edit, self._role_name)}."
        )

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
        say(self.status, text, self.message)
