"""Pending edits and their impact: what is queued and not yet synced, and exactly who
gains or loses what if it syncs; undo and redo for those edits.

Rules of this module (the desktop issue, § Pending edits and their impact):

- The table lists `Workspace.pending()`: each edit's seq, what it does in
  words (`app.ui.wording.describe_edit`, the words every view uses),
  when it was made in local time, and whether it applies to the view
  (`Workspace.failed()` says why not).
- The impact is `sync.policy.impact.access_delta` of the edits the view
  replays (`Replica.view_edits`, each at the time it was made) against the
  confirmed policy: every user who gains or loses each permission, users
  suspended or resumed, edits that do not apply and the separation-of-duty
  constraints they would break. Of all of them together, or of the selected
  one alone (against the confirmed policy with the edits before it). The
  confirmed policy is loaded once and kept until a sync moves it (the
  replica's cursor or digest changes, or the workspace compiles its view
  again); on 50,000 users that load takes seconds and each impact a tenth
  of one, on the UI thread (a worker would be the next step there).
- A change names its users when there are few and counts them otherwise;
  the users of the selected change are listed by a model that hands the
  list a page at a time.
- Undo (Ctrl+Z) takes back the selected pending edit, or the last one not
  taken back yet, through `Workspace.take_back` (a compensating edit is
  queued; nothing leaves the outbox without an outcome). Redo (Ctrl+Shift+Z,
  Ctrl+Y) queues again, as a new edit, the document the last undo took
  back. The redo stack is in memory and cleared when anyone queues an edit
  that is not a redo or an undo of this view. Taking back a deletion with
  the button asks first (`confirm`); undo never asks: redo undoes it.
- Every outcome is shown in the view, announced, and emitted as `message`.
- Widgets are touched only on the UI thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListView,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.offline import EditProblem
from app.ui.controls import splitter, text_label
from app.ui.feedback import ask, say
from app.ui.icons import ALLOWED, WARNING, icon, verdict_pixmap
from app.ui.main_window import announce
from app.ui.models import TEXT_ROLES, RowsModel, ShownByPageModel
from app.ui.tables import stretch_one_column, table_view
from app.ui.wording import describe_edit
from app.ui.workspace import Workspace
from app.ui.workspace_view import WorkspaceView
from sync.policy.edits import Edit
from sync.policy.impact import Impact, access_delta, replay
from sync.policy.instant import Instant, parse_instant
from sync.policy.model import Effect, Policy
from sync.policy.reach import Unreachable

Index = QModelIndex | QPersistentModelIndex

PAGE = 200
"""Users a list asks for at a time."""
NAMED = 3
"""A change names at most this many users; more are counted."""

ALL, SELECTED = 0, 1
"""The impact shown: of every pending edit together, or of the selected one."""


def local_time(stored: str) -> str:
    """A stored RFC 3339 time in this computer's time zone, to the minute."""
    try:
        seconds, _fraction = parse_instant(stored)
    except ValueError:
        return stored
    return datetime.fromtimestamp(seconds, UTC).astimezone().strftime("%Y-%m-%d %H:%M")


def is_deletion(document: dict[str, Any]) -> bool:
    """The edit deletes a role or a user."""
    return document.get("op") in ("delete_role", "delete_user")


# --- the pending edits -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PendingRow:
    seq: int
    edit: dict[str, Any]
    what: str
    made_at: str
    cancels: int | None
    problem: str | None
    """Why the edit does not apply to the view; None when it does."""


class PendingEditsModel(RowsModel[PendingRow]):
    """The pending edits, lowest seq first (module rules)."""

    HEADERS = ("Edit", "What it does", "Made (local time)", "Applies to the view")
    SEQ_ROLE = Qt.ItemDataRole.UserRole + 1

    def __init__(self) -> None:
        super().__init__(self.HEADERS)

    def pending(self, row: int) -> PendingRow:
        return self._rows[row]

    def row_of(self, seq: int) -> int | None:
        return next((i for i, r in enumerate(self._rows) if r.seq == seq), None)

    def text(self, row: PendingRow, column: int) -> str:
        if column == 0:
            return str(row.seq)
        if column == 1:
            return row.what + (f" (takes back edit {row.cancels})" if row.cancels else "")
        if column == 2:
            return local_time(row.made_at)
        return "Yes" if row.problem is None else f"No: {row.problem}"

    def cell(self, row: PendingRow, column: int, role: int) -> Any:
        if role in TEXT_ROLES:
            return self.text(row, column)
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{row.made_at} (UTC)" if column == 2 else self.text(row, column)
        if role == Qt.ItemDataRole.DecorationRole and column == 3:
            return icon(ALLOWED if row.problem is None else WARNING)
        if role == self.SEQ_ROLE:
            return row.seq
        return None


# --- the impact ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImpactRow:
    change: str
    """Gain, Lose, Now denied, No longer denied, Suspended, Resumed, Does not apply, ..."""
    what: str
    users: tuple[str, ...]
    good: bool | None
    """Access comes (True), goes (False), or a problem with an edit (None): for the icon."""


def impact_rows(impact: Impact, edit_label: Callable[[int], str]) -> list[ImpactRow]:
    """One row per permission gained or lost (with its users), suspension, refused edit
    and constraint break."""
    rows: list[ImpactRow] = []
    for group in impact.groups():
        if group.effect is Effect.GRANT:
            change = "Gain" if group.gained else "Lose"
        else:
            change = "No longer denied" if group.gained else "Now denied"
        what = f"{group.resource_type} {group.action}"
        if group.condition:
            what += f" when {group.condition}"
        rows.append(ImpactRow(change, what, group.users, group.gained))
    for suspension in (*impact.suspended, *impact.resumed):
        if suspension.suspended:
            text = f"every permission ({suspension.permissions})"
            rows.append(ImpactRow("Suspended", text, (suspension.user_id,), False))
        else:
            text = f"every permission back ({suspension.permissions})"
            rows.append(ImpactRow("Resumed", text, (suspension.user_id,), True))
    for refusal in impact.refused:
        rows.append(
            ImpactRow("Does not apply", f"{edit_label(refusal.index)}: {refusal.reason}", (), None)
        )
    for broken in impact.constraints:
        what = (
            f"{edit_label(broken.index)}: {broken.constraint} "
            f"({broken.first_role} and {broken.second_role})"
        )
        rows.append(ImpactRow("Breaks constraint", what, (broken.user_id,), None))
    return rows


def who_text(users: Sequence[str]) -> str:
    """`vic, sam and ann`, or `vic, sam, ann and 2,997 more`."""
    if not users:
        return ""
    if len(users) <= NAMED:
        listed = list(users)
        return listed[0] if len(listed) == 1 else f"{', '.join(listed[:-1])} and {listed[-1]}"
    return f"{', '.join(users[:NAMED])} and {len(users) - NAMED:,} more"


class ImpactModel(RowsModel[ImpactRow]):
    """The changes of an `Impact`, one row each (module rules)."""

    HEADERS = ("Change", "Permission or edit", "Users", "Who")

    def __init__(self) -> None:
        super().__init__(self.HEADERS)

    def impact_row(self, row: int) -> ImpactRow:
        return self._rows[row]

    def text(self, row: ImpactRow, column: int) -> str:
        if column == 0:
            return row.change
        if column == 1:
            return row.what
        if column == 2:
            return f"{len(row.users):,}" if row.users else ""
        return who_text(row.users)

    def cell(self, row: ImpactRow, column: int, role: int) -> Any:
        if role in TEXT_ROLES:
            return self.text(row, column)
        if role == Qt.ItemDataRole.ToolTipRole:
            who = f" \u2014 {who_text(row.users)}" if row.users else ""
            return f"{row.change}: {row.what}{who}"
        if role == Qt.ItemDataRole.DecorationRole and column == 0:
            return icon(WARNING if row.good is None else verdict_pixmap(row.good))
        return None


class UsersModel(ShownByPageModel[str]):
    """The users of one change, a page at a time (`canFetchMore`/`fetchMore`), for a
    list: one column."""

    ID_ROLE = Qt.ItemDataRole.UserRole + 1

    def __init__(self, name: Callable[[str], str | None]) -> None:
        super().__init__(("User",), PAGE)
        self._name = name

    def set_users(self, users: tuple[str, ...]) -> None:
        self.set_rows(users)

    def index(self, row: int, column: int = 0, parent: Index = QModelIndex()) -> QModelIndex:  # noqa: B008
        """The index of `row` (a list's: column 0 unless another is asked for)."""
        return super().index(row, column, parent)

    def cell(self, user_id: str, column: int, role: int) -> Any:
        if role in TEXT_ROLES:
            name = self._name(user_id)
            return f"{user_id} ({name})" if name else user_id
        if role == self.ID_ROLE:
            return user_id
        return None


# --- the view --------------------------------------------------------------------------


class PendingView(WorkspaceView):
    """The pending edits, their impact, undo and redo (module rules)."""

    def __init__(self, workspace: Workspace, parent: QWidget | None = None) -> None:
        super().__init__(workspace, "pending-view", "Pending edits and their impact", parent)
        self.confirm: Callable[[QWidget, str, str], bool] = ask
        """Asks (parent, title, question) and says whether to go on; tests answer it."""
        self._redo: list[tuple[int, dict[str, Any]]] = []
        """(seq taken back, its document), the last undo last."""
        self._own = False
        """True while this view queues: the edits it queues keep the redo stack."""
        self._newest = 0
        self._summary_said = ""

        self.pending_model = PendingEditsModel()
        label = QLabel("&Pending edits (not synced yet):", self)
        self.table = table_view(
            self,
            "pending-table",
            "Pending edits",
            self.pending_model,
            "Edits queued here and not synced yet; select one to see its impact alone below",
        )
        stretch_one_column(self.table, 1)
        label.setBuddy(self.table)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._selection_moved())
        self.count = text_label(self, "pending-count", "Pending edits count")

        self.undo_action = QAction("&Undo", self)
        self.undo_action.setObjectName("pending-undo")
        self.undo_action.setShortcuts(QKeySequence.StandardKey.Undo)
        self.undo_action.triggered.connect(self.undo)
        self.redo_action = QAction("&Redo", self)
        self.redo_action.setObjectName("pending-redo")
        self.redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        self.redo_action.triggered.connect(self.redo)
        for action in (self.undo_action, self.redo_action):
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            self.addAction(action)

        self.take_back_button = QPushButton("&Take back\u2026", self)
        self.take_back_button.setObjectName("pending-take-back")
        self.take_back_button.setAccessibleName("Take back")
        self.take_back_button.setAccessibleDescription(
            "Queue the edit that undoes the selected pending edit; asks first for a deletion"
        )
        self.take_back_button.clicked.connect(self.take_back_selected)
        self.undo_button = self._tool_button(self.undo_action, "Undo")
        self.redo_button = self._tool_button(self.redo_action, "Redo")
        buttons = QHBoxLayout()
        buttons.addWidget(self.take_back_button)
        buttons.addWidget(self.undo_button)
        buttons.addWidget(self.redo_button)
        buttons.addStretch(1)
        buttons.addWidget(self.count)

        impact_box = QGroupBox("Impact if these edits sync", self)
        impact_box.setObjectName("pending-impact")
        scope_label = QLabel("Impact &of:", impact_box)
        self.scope = QComboBox(impact_box)
        self.scope.setObjectName("pending-scope")
        self.scope.setAccessibleName("Impact of")
        self.scope.setAccessibleDescription(
            "Show the impact of every pending edit together, or of the selected edit alone"
        )
        self.scope.addItems(["All pending edits together", "The selected edit alone"])
        scope_label.setBuddy(self.scope)
        self.scope.currentIndexChanged.connect(lambda _i: self._show_impact())
        self.summary = text_label(impact_box, "pending-summary", "Impact summary", wrap=True,
                                  selectable=True)  # fmt: skip

        self.impact_model = ImpactModel()
        changes_label = QLabel("C&hanges:", impact_box)
        self.impact_table = table_view(
            impact_box,
            "pending-impact-table",
            "Changes in access",
            self.impact_model,
            "Each permission gained or lost with how many users, suspensions, edits that do "
            "not apply and constraints they would break; the users of the selected one are listed",
        )
        stretch_one_column(self.impact_table, 1)
        changes_label.setBuddy(self.impact_table)
        self.impact_table.selectionModel().currentRowChanged.connect(lambda *_: self._show_users())

        self.users_model = UsersModel(self._user_name)
        users_label = QLabel("U&sers of the selected change:", impact_box)
        self.users = QListView(impact_box)
        self.users.setObjectName("pending-users")
        self.users.setAccessibleName("Users of the selected change")
        self.users.setModel(self.users_model)
        self.users.setUniformItemSizes(True)
        users_label.setBuddy(self.users)
        self.users_count = text_label(impact_box, "pending-users-count",
                                      "Users of the selected change, count")  # fmt: skip

        scope_row = QHBoxLayout()
        scope_row.addWidget(scope_label)
        scope_row.addWidget(self.scope)
        scope_row.addStretch(1)
        changes = QWidget(impact_box)
        changes_layout = QVBoxLayout(changes)
        changes_layout.setContentsMargins(0, 0, 0, 0)
        changes_layout.addWidget(changes_label)
        changes_layout.addWidget(self.impact_table, 1)
        people = QWidget(impact_box)
        people_layout = QVBoxLayout(people)
        people_layout.setContentsMargins(0, 0, 0, 0)
        people_layout.addWidget(users_label)
        people_layout.addWidget(self.users, 1)
        people_layout.addWidget(self.users_count)
        beside = splitter(impact_box, Qt.Orientation.Horizontal, "pending-impact-splitter",
                          [(changes, 3), (people, 1)])  # fmt: skip
        impact_layout = QVBoxLayout(impact_box)
        impact_layout.addLayout(scope_row)
        impact_layout.addWidget(self.summary)
        impact_layout.addWidget(beside, 1)

        self.status = text_label(self, "pending-status", "Last action", wrap=True)

        top = QWidget(self)
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(label)
        top_layout.addWidget(self.table, 1)
        top_layout.addLayout(buttons)
        panes = splitter(self, Qt.Orientation.Vertical, "pending-splitter",
                         [(top, 2), (impact_box, 3)])  # fmt: skip
        panes.setSizes([260, 390])
        layout = QVBoxLayout(self)
        layout.addWidget(panes, 1)
        layout.addWidget(self.status)

        chain = (self.table, self.take_back_button, self.undo_button, self.redo_button,
                 self.scope, self.impact_table, self.users)  # fmt: skip
        for first, second in pairwise(chain):
            self.setTabOrder(first, second)
        workspace.changed.connect(self.refresh)
        self.refresh()

    def _tool_button(self, action: QAction, name: str) -> QToolButton:
        button = QToolButton(self)
        button.setObjectName(f"{action.objectName()}-button")
        button.setDefaultAction(action)
        button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        button.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        button.setAccessibleName(name)
        return button

    # --- names -------------------------------------------------------------------------

    def _role_name(self, role_id: str) -> str:
        policy = self.workspace.policy()
        if role_id in policy.roles:
            return policy.role_name(role_id)
        return self._confirmed_policy().role_name(role_id)  # a role a pending edit deletes

    def _user_name(self, user_id: str) -> str | None:
        user = self.workspace.policy().users.get(user_id)
        if user is None:
            user = self._confirmed_policy().users.get(user_id)
        return user.name if user is not None else None

    def _what(self, document: dict[str, Any]) -> str:
        return describe_edit(document, self._role_name)

    # --- reading -----------------------------------------------------------------------

    def refresh(self) -> None:
        """Read the pending edits again and show their impact (after any change)."""
        self._confirmed_policy()  # first: it names the roles pending edits delete
        selected = self.selected()
        failed = self.workspace.failed()
        rows = [
            PendingRow(r.seq, dict(r.edit), self._what(dict(r.edit)), r.made_at, r.cancels,
                       failed.get(r.seq))
            for r in self.workspace.pending()
        ]  # fmt: skip
        newest = max((r.seq for r in rows), default=0)
        if newest > self._newest and not self._own:
            self._redo.clear()  # someone queued an edit: what the last undo took back stays so
        self._newest = max(self._newest, newest)
        self.pending_model.set_rows(rows)
        row = self.pending_model.row_of(selected.seq) if selected is not None else None
        if row is not None:
            self.table.selectRow(row)
        count = len(rows)
        problems = sum(1 for r in rows if r.problem is not None)
        text = f"{count} pending edit{'s' if count != 1 else ''}" if count else "No pending edits"
        if problems:
            text += f", {problems} not applying to the view"
        self.count.setText(text)
        self._update_actions()  # undo and redo work from every page: always now
        if self.isVisible():
            self._show_impact()
        else:  # the access delta (every affected user) when the view is shown
            self._refresh_on_show = self._show_impact

    def selected(self) -> PendingRow | None:
        """The selected pending edit, if one is."""
        chosen = self.table.selectionModel().selectedRows()
        if not chosen:
            return None
        return self.pending_model.pending(chosen[0].row())

    def select_seq(self, seq: int) -> bool:
        """Select pending edit `seq` (False: it is not pending)."""
        row = self.pending_model.row_of(seq)
        if row is None:
            return False
        self.table.selectRow(row)
        return True

    def undo_target(self) -> PendingRow | None:
        """What Undo takes back: the selected edit, or the last one that applies, is not
        itself a take-back and has not been taken back."""
        selected = self.selected()
        if selected is not None:
            return selected
        rows = self.pending_model.rows()
        taken = {r.cancels for r in rows if r.cancels is not None}
        for row in reversed(rows):
            if row.cancels is None and row.seq not in taken and row.problem is None:
                return row
        return None

    def _selection_moved(self) -> None:
        self._update_actions()
        if self.scope.currentIndex() == SELECTED:
            self._show_impact()

    def _update_actions(self) -> None:
        target = self.undo_target()
        self.take_back_button.setEnabled(self.selected() is not None)
        self.undo_action.setEnabled(target is not None)
        undo_tip = f"Take back edit {target.seq}: {target.what}" if target else "Nothing to undo"
        self.undo_action.setToolTip(f"{undo_tip} (Ctrl+Z)")
        self.undo_action.setStatusTip(undo_tip)
        self.undo_button.setAccessibleDescription(undo_tip)
        self.redo_action.setEnabled(bool(self._redo))
        redo_tip = (
            f"Queue again: {self._what(self._redo[-1][1])}" if self._redo else "Nothing to redo"
        )
        self.redo_action.setToolTip(f"{redo_tip} (Ctrl+Shift+Z)")
        self.redo_action.setStatusTip(redo_tip)
        self.redo_button.setAccessibleDescription(redo_tip)

    # --- the impact --------------------------------------------------------------------

    def _confirmed_policy(self) -> Policy:
        """The confirmed policy: the one the workspace compiled its view from (kept until
        a sync moves it), never loaded again here."""
        return self.workspace.confirmed()

    def impact(self, scope: int = ALL) -> Impact | None:
        """The impact of every pending edit together (ALL) or of the selected one
        (SELECTED; None when none is selected), against the confirmed policy."""
        confirmed = self._confirmed_policy()
        now = self.workspace.now()
        edits = self.workspace.replica.view_edits()
        documents: list[Edit | dict[str, Any]] = [dict(e.edit) for e in edits]
        times: list[Instant] = [e.made_at for e in edits]
        if scope == ALL:
            return access_delta(confirmed, documents, now, times=times)
        selected = self.selected()
        at = next((i for i, e in enumerate(edits) if selected and e.seq == selected.seq), None)
        if at is None:
            return None
        before = replay(confirmed, documents[:at], now, times=times[:at]).policy
        return access_delta(before, documents[at : at + 1], now, times=times[at : at + 1])

    def _edit_label(self, scope: int) -> Callable[[int], str]:
        seqs = [e.seq for e in self.workspace.replica.view_edits()]
        selected = self.selected()
        if scope == SELECTED and selected is not None:
            return lambda _i: f"Edit {selected.seq}"
        return lambda i: f"Edit {seqs[i]}" if i < len(seqs) else f"Edit [{i}]"

    def _show_impact(self) -> None:
        scope = self.scope.currentIndex()
        impact = self.impact(scope)
        if impact is None:
            self.impact_model.set_rows([])
            text = "Select a pending edit above to see its impact alone."
        else:
            label = self._edit_label(scope)
            self.impact_model.set_rows(impact_rows(impact, label))
            if not self.pending_model.rowCount():
                text = "No pending edits: nothing would change."
            else:
                text = impact.summary_lines(label)[0]
                if impact.refused:
                    count = len(impact.refused)
                    text += f" {count} edit{'s' if count != 1 else ''} would not apply."
        self.summary.setText(text)
        if self._summary_said and text != self._summary_said:
            announce(self.summary, text)
        self._summary_said = text
        if self.impact_model.rowCount():
            self.impact_table.selectRow(0)
        self._show_users()

    def _show_users(self) -> None:
        index = self.impact_table.currentIndex()
        rows = self.impact_model.rowCount()
        row = self.impact_model.impact_row(index.row()) if index.isValid() and rows else None
        self.users_model.set_users(row.users if row is not None else ())
        total = self.users_model.total
        if row is None:
            self.users_count.setText("")
        else:
            noun = "user" if total == 1 else "users"
            self.users_count.setText(f"{total:,} {noun}: {row.change.lower()} {row.what}")

    # --- the actions -------------------------------------------------------------------

    def take_back_selected(self) -> None:
        """Take back the selected edit, asking first when it is a deletion (`confirm`)."""
        row = self.selected()
        if row is None:
            self._say("Select a pending edit to take back")
            return
        if is_deletion(row.edit) and not self.confirm(
            self,
            "Take back a deletion",
            f"Take back edit {row.seq} ({row.what})? What it deletes is kept; "
            "Redo deletes it again.",
        ):
            self._say(f"Kept edit {row.seq}: {row.what}")
            return
        self._take_back(row)

    def undo(self) -> None:
        """Take back the selected pending edit, or the last one (module rules)."""
        row = self.undo_target()
        if row is None:
            self._say("Nothing to undo: no pending edit to take back")
            return
        self._take_back(row)

    def _take_back(self, row: PendingRow) -> None:
        self._own = True
        try:
            seqs = self.workspace.take_back(row.seq)
        except (EditProblem, Unreachable) as problem:
            self._say(f"Cannot take back edit {row.seq}: {problem}")
            return
        except KeyError:
            self._say(f"Edit {row.seq} is no longer pending")
            return
        finally:
            self._own = False
        if not seqs:
            self._say(f"Edit {row.seq} changes nothing now: nothing to take back")
            return
        self._redo.append((row.seq, row.edit))
        self.table.clearSelection()
        self._update_actions()
        queued = ", ".join(map(str, seqs))
        noun = "edits" if len(seqs) > 1 else "edit"
        self._say(f"Took back edit {row.seq} ({row.what}): queued {noun} {queued}")

    def redo(self) -> None:
        """Queue again the edit the last undo took back."""
        if not self._redo:
            self._say("Nothing to redo")
            return
        seq, document = self._redo.pop()
        what = self._what(document)
        self._own = True
        try:
            seqs = self.workspace.queue([document], where=lambda _i: f"redoing edit {seq}")
        except EditProblem as problem:
            self._say(f"Cannot redo: {problem}")
            self._update_actions()
            return
        finally:
            self._own = False
        self.table.clearSelection()
        self._update_actions()
        self._say(f"Queued edit {', '.join(map(str, seqs))} again: {what}")

    def _say(self, text: str) -> None:
        say(self.status, text, self.message)
