"""The user editor: one user's attributes, role assignments, just-in-time activations
and effective permissions, edited through the workspace's outbox.

Rules of this module (the desktop issue, § Users; policy-format.md § Additions):

- Every change is one edit document queued with `Workspace.queue`; the view
  (and so this editor) shows it at once, offline too. A refused edit changes
  nothing: its reason is shown beside the controls, as an alert, and said in
  `message`; a queued one is said in `message` ("Queued edit 12: ...") and
  announced.
- Assignments are read from the view's `User.roles`: an ordinary entry is a
  holding (until its `expires`, if any); an eligible entry (`eligible` =
  max_hours) holds nothing; an activation is an ordinary entry with `expires`
  written beside the eligible entry of the same role (sync/policy/edits.py
  ActivateRole), and ending it early is `deactivate_role`.
- Times are the workspace's (`Workspace.now()`, the replica's effective clock).
  While the editor is shown, COUNTDOWN_EVERY_MS re-reads it so the time left
  counts down; the countdown's text is not announced on every tick (that
  would be noise), only an activation starting or ending.
- Role pickers list every role of the tenant, filtered as you type; no cap.
- Suspending asks first (`confirm`, replaceable in tests); resuming does not.
- Every list is a Qt model; effective permissions are formatted as the view
  asks for rows (`PermissionModel` fetches PAGE rows at a time).
- Widgets are touched only on the UI thread.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QDateTime,
    QItemSelection,
    QModelIndex,
    QPersistentModelIndex,
    Qt,
    QTimer,
    QTimeZone,
)
from PySide6.QtGui import QAccessible, QAccessibleEvent, QFont, QHideEvent, QIcon, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QDateTimeEdit,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.offline import EditProblem
from app.ui.controls import name_spin_box, push_button, splitter, text_label
from app.ui.feedback import ask
from app.ui.icons import ALLOWED, DENIED, icon
from app.ui.main_window import announce
from app.ui.models import TEXT_ROLES, RowsModel, ShownByPageModel
from app.ui.pickers import RoleListDialog, by_name
from app.ui.sizing import resize_in_text_units
from app.ui.tables import table_view
from app.ui.typed_values import parse_value, value_text
from app.ui.workspace import Workspace
from app.ui.workspace_view import WorkspaceView
from sync.policy.engine import Permission
from sync.policy.instant import Instant, format_instant, parse_instant
from sync.policy.model import MAX_ELIGIBLE_HOURS, Assignment, Effect, Policy, Role, User
from sync.replication.offline import instant_seconds

COUNTDOWN_EVERY_MS = 30_000
"""How often a shown editor reads the clock again (activations count down)."""
PAGE = 200
"""Effective permissions formatted per fetch."""
FILTER_DELAY_MS = 150
"""Typing pauses shorter than this do not announce the picker's count."""
DEFAULT_MAX_HOURS = 8

Index = QModelIndex | QPersistentModelIndex
Confirm = Callable[[QWidget, str, str], bool]
"""Asks the person a yes/no question (parent, title, text); True for yes."""


def time_left(seconds: float) -> str:
    """`2 h 14 min left`, `3 d 2 h left`, `less than 1 min left`."""
    whole = int(seconds)
    if whole < 60:
        return "less than 1 min left"
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h left"
    if hours:
        return f"{hours} h {minutes} min left"
    return f"{minutes} min left"


def seconds_until(expires: Instant, now: Instant) -> float:
    return instant_seconds(expires) - instant_seconds(now)


def describe_end(expires: str | None, at: Instant | None, now: Instant) -> str:
    """`permanent`, `until 2026-12-03T10:00:00Z (2 h 0 min left)` or `ended <time>`."""
    if expires is None or at is None:
        return "permanent"
    if now >= at:
        return f"ended {expires}"
    return f"until {expires} ({time_left(seconds_until(at, now))})"


# --- assignments -------------------------------------------------------------------------


class Kind(StrEnum):
    """What an entry of a user's roles is (module rules)."""

    ASSIGNED = "assigned"
    ACTIVATION = "activation"
    """An ordinary entry with `expires` beside an eligible entry of the same role."""
    ELIGIBLE = "eligible"


@dataclass(frozen=True, slots=True)
class AssignmentRow:
    """One entry of a user's roles, as the assignments table shows it."""

    role_id: str
    role_name: str
    kind: Kind
    assignment: Assignment
    active: bool = False
    """For an eligible row: an activation of it is in force now."""

    def state(self) -> str:
        if self.kind is Kind.ELIGIBLE:
            text = f"eligible, up to {self.assignment.eligible} h"
            return text + (", activated" if self.active else ", not active")
        return "activated just in time" if self.kind is Kind.ACTIVATION else "assigned"

    def can_unassign(self, now: Instant) -> bool:
        """An assignment, or an activation that has ended (`unassign_role` takes both)."""
        return self.kind is Kind.ASSIGNED or (
            self.kind is Kind.ACTIVATION and not self.assignment.active_at(now)
        )

    def can_end(self, now: Instant) -> bool:
        """An activation in force (its row, or its eligible entry's)."""
        if self.kind is Kind.ELIGIBLE:
            return self.active
        return self.kind is Kind.ACTIVATION and self.assignment.active_at(now)

    def can_activate(self, now: Instant, rows: Sequence[AssignmentRow]) -> bool:
        """An eligibility in force, of a role not already held without an end (the
        activation would change nothing: sync/policy/edits.py ActivateRole)."""
        return (
            self.kind is Kind.ELIGIBLE
            and self.assignment.eligible_at(now)
            and not any(r.role_id == self.role_id and r.kind is Kind.ASSIGNED
                        and r.assignment.expires is None for r in rows)
        )  # fmt: skip


def assignment_rows(policy: Policy, user: User, now: Instant) -> list[AssignmentRow]:
    """The rows of `user`'s assignments in the view (module rules), in document order."""
    eligible = {a.role_id for a in user.roles if a.eligible is not None}
    active = {a.role_id for a in user.roles
              if a.eligible is None and a.expires is not None and a.active_at(now)}  # fmt: skip
    rows = []
    for assignment in user.roles:
        role_id = assignment.role_id
        if assignment.eligible is not None:
            kind = Kind.ELIGIBLE
        elif assignment.expires is not None and role_id in eligible:
            kind = Kind.ACTIVATION
        else:
            kind = Kind.ASSIGNED
        rows.append(AssignmentRow(role_id, policy.role_name(role_id), kind, assignment,
                                  active=kind is Kind.ELIGIBLE and role_id in active))  # fmt: skip
    return rows


ASSIGNMENT_HEADERS = ("Role", "Assignment", "Ends")


class AssignmentModel(RowsModel[AssignmentRow]):
    """A user's role assignments (module rules); `tick` moves the time left on."""

    ROW_ROLE = Qt.ItemDataRole.UserRole + 1
    """The row's AssignmentRow."""

    def __init__(self) -> None:
        super().__init__(ASSIGNMENT_HEADERS)
        self._now: Instant = (0, "")

    def set_rows(self, rows: Sequence[AssignmentRow], now: Instant | None = None) -> None:
        """Show `rows`, their time left as at `now` (None: as at the last time given)."""
        if now is not None:
            self._now = now
        super().set_rows(rows)

    def tick(self, now: Instant) -> None:
        """Show the time left as at `now`."""
        self._now = now
        if self._rows:
            last = len(self._rows) - 1
            self.dataChanged.emit(self.index(0, 2), self.index(last, 2), list(TEXT_ROLES))

    def text(self, row: AssignmentRow, column: int) -> str:
        if column == 0:
            return row.role_name
        if column == 1:
            return row.state()
        entry = row.assignment
        return describe_end(entry.expires, entry.expires_at, self._now)

    def cell(self, row: AssignmentRow, column: int, role: int) -> Any:
        if role in TEXT_ROLES:
            return self.text(row, column)
        if role == Qt.ItemDataRole.ToolTipRole:
            return ", ".join(self.text(row, c) for c in range(len(ASSIGNMENT_HEADERS)))
        if role == self.ROW_ROLE:
            return row
        return None


# --- effective permissions -----------------------------------------------------------------

PERMISSION_HEADERS = ("Effect", "Resource type", "Action", "Condition", "Role path", "Until")


def role_path(permission: Permission) -> str:
    """`vic → night-dispatcher → viewer`; a direct rule of the user says so."""
    if len(permission.path) == 1:
        return f"{permission.path[0]} (direct rule)"
    return " → ".join(permission.path)


class PermissionModel(ShownByPageModel[Permission]):
    """A user's effective permissions, formatted as the view asks (PAGE rows a fetch)."""

    def __init__(self, allowed_icon: QIcon, denied_icon: QIcon) -> None:
        super().__init__(PERMISSION_HEADERS, PAGE)
        self._now: Instant = (0, "")
        self._icons = {Effect.GRANT: allowed_icon, Effect.DENY: denied_icon}

    def set_permissions(self, permissions: Sequence[Permission], now: Instant) -> None:
        self._now = now
        self.set_rows(permissions)

    def tick(self, now: Instant) -> None:
        self._now = now
        if self._shown:
            self.dataChanged.emit(self.index(0, 5), self.index(self._shown - 1, 5),
                                  list(TEXT_ROLES))  # fmt: skip

    def permission(self, row: int) -> Permission:
        return self._rows[row]

    def text(self, permission: Permission, column: int) -> str:
        if column == 0:
            return "allow" if permission.effect is Effect.GRANT else "deny"
        if column == 1:
            return permission.resource_type
        if column == 2:
            return permission.action
        if column == 3:
            return permission.condition or "always"
        if column == 4:
            return role_path(permission)
        until = permission.until
        return describe_end(until, None if until is None else parse_instant(until), self._now)

    def cell(self, permission: Permission, column: int, role: int) -> Any:
        if role in TEXT_ROLES:
            return self.text(permission, column)
        if role == Qt.ItemDataRole.DecorationRole and column == 0:
            return self._icons[permission.effect]
        if role == Qt.ItemDataRole.ToolTipRole:
            return str(permission)
        return None


# --- attributes ------------------------------------------------------------------------------


class AttributeModel(RowsModel[tuple[str, Any]]):
    """A user's attributes; editing a value calls `on_edit(key, value)`, which says
    whether the change was made (module rules: it is queued, or refused)."""

    HEADERS = ("Attribute", "Value")

    def __init__(self, on_edit: Callable[[str, Any], bool]) -> None:
        super().__init__(self.HEADERS)
        self._on_edit = on_edit

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        self.set_rows(list(attributes.items()))

    def key(self, row: int) -> str:
        return self._rows[row][0]

    def keys(self) -> list[str]:
        return [key for key, _value in self._rows]

    def cell(self, row: tuple[str, Any], column: int, role: int) -> Any:
        key, value = row
        if role in (*TEXT_ROLES, Qt.ItemDataRole.EditRole):
            return key if column == 0 else value_text(value)
        return None

    def flags(self, index: Index) -> Qt.ItemFlag:
        flags = super().flags(index)
        if index.isValid() and index.column() == 1:
            flags |= Qt.ItemFlag.ItemIsEditable
        return flags

    def setData(self, index: Index, value: Any, role: int = Qt.ItemDataRole.EditRole) -> bool:
        if role != Qt.ItemDataRole.EditRole or not index.isValid() or index.column() != 1:
            return False
        return self._on_edit(self._rows[index.row()][0], parse_value(str(value)))


# --- choosing a role -----------------------------------------------------------------------


class RoleListModel(QAbstractListModel):
    """Every role of the view, by name (the picker filters it; no cap)."""

    ID_ROLE = Qt.ItemDataRole.UserRole + 1
    FILTER_ROLE = Qt.ItemDataRole.UserRole + 2
    """Name, id and description: what the filter matches."""

    def __init__(self, roles: Sequence[Role]) -> None:
        super().__init__()
        self._roles = list(roles)

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._roles)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self._roles):
            return None
        entry = self._roles[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return entry.name
        if role == Qt.ItemDataRole.AccessibleTextRole:
            return f"{entry.name}: {entry.description}" if entry.description else entry.name
        if role == Qt.ItemDataRole.ToolTipRole:
            return entry.description or None
        if role == self.ID_ROLE:
            return entry.id
        if role == self.FILTER_ROLE:
            return f"{entry.name}\n{entry.id}\n{entry.description}"
        return None


def _utc(instant: Instant) -> QDateTime:
    return QDateTime.fromSecsSinceEpoch(instant[0], QTimeZone.utc())


def _name_buttons(box: QDialogButtonBox) -> None:
    for button in box.buttons():
        button.setAccessibleName(button.text().replace("&", ""))


class RolePicker(RoleListDialog):
    """Choose one of all the roles, with an optional expiry (and, to make a user
    eligible, the longest activation)."""

    def __init__(
        self,
        roles: Sequence[Role],
        now: Instant,
        title: str,
        *,
        hours: bool = False,
        parent: QWidget | None = None,
    ) -> None:
        model = RoleListModel(by_name(roles))
        super().__init__(title, model, RoleListModel.FILTER_ROLE, names="role-",
                         filter_text="&Filter roles:", filter_name="Filter roles",
                         list_text="&Roles:", parent=parent)  # fmt: skip
        self.model = model
        self.filter.setPlaceholderText("name, id or description ...")

        self.expires_check = QCheckBox("&Ends at:", self)
        self.expires_check.setObjectName("expires-check")
        self.expires_check.setAccessibleName("Ends at a set time")
        self.expires_check.setAccessibleDescription(
            "Unchecked: no end. Checked: it ends at the time beside, in UTC"
        )
        self.expires_edit = QDateTimeEdit(self)
        self.expires_edit.setObjectName("expires-time")
        name_spin_box(self.expires_edit, "End time (UTC)")
        self.expires_edit.setTimeZone(QTimeZone.utc())
        self.expires_edit.setDisplayFormat("yyyy-MM-dd HH:mm 'UTC'")
        self.expires_edit.setCalendarPopup(True)
        self.expires_edit.setMinimumDateTime(_utc(now))
        self.expires_edit.setDateTime(_utc((now[0] + 86400, "")))
        self.expires_edit.setEnabled(False)
        self.expires_check.toggled.connect(self.expires_edit.setEnabled)

        self.hours: QSpinBox | None = None
        form = QFormLayout()
        row = QHBoxLayout()
        row.addWidget(self.expires_check)
        row.addWidget(self.expires_edit, 1)
        form.addRow(row)
        if hours:
            self.hours = QSpinBox(self)
            self.hours.setObjectName("max-hours")
            name_spin_box(self.hours, "Maximum hours")
            self.hours.setAccessibleDescription("The longest one activation may last")
            self.hours.setRange(1, MAX_ELIGIBLE_HOURS)
            self.hours.setValue(DEFAULT_MAX_HOURS)
            self.hours.setSuffix(" h")
            hours_label = QLabel("Maximum &hours:", self)
            hours_label.setBuddy(self.hours)
            form.addRow(hours_label, self.hours)
            self.expires_check.setText("&Eligible until:")
            self.expires_check.setAccessibleName("Eligibility ends at a set time")

        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self
        )
        self.buttons.setObjectName("picker-buttons")
        _name_buttons(self.buttons)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        self.rows.addLayout(form)
        self.rows.addWidget(self.buttons)

        self._count_timer = QTimer(self)
        self._count_timer.setSingleShot(True)
        self._count_timer.setInterval(FILTER_DELAY_MS)
        self._count_timer.timeout.connect(lambda: announce(self.count, self.count.text()))
        self.filter.textChanged.connect(self._filter_changed)
        self.filter.returnPressed.connect(self._filter_entered)
        self.list.selectionModel().selectionChanged.connect(self._selection_changed)
        self.list.doubleClicked.connect(lambda _index: self.accept())
        self._select_first()
        self._show_count()
        resize_in_text_units(self, 70, 34)

    def _filter_changed(self, text: str) -> None:
        self.proxy.setFilterFixedString(text.strip())
        if not self.list.selectionModel().hasSelection():
            self._select_first()
        self._show_count()
        self._count_timer.start()

    def _filter_entered(self) -> None:
        if self.role_id() is not None:
            self.accept()

    def _select_first(self) -> None:
        if self.proxy.rowCount():
            self.list.setCurrentIndex(self.proxy.index(0, 0))
        self._selection_changed()

    def _selection_changed(self, *_args: QItemSelection) -> None:
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setEnabled(self.role_id() is not None)

    def _show_count(self) -> None:
        total, shown = self.model.rowCount(), self.proxy.rowCount()
        noun = "role" if total == 1 else "roles"
        if self.proxy.filterRegularExpression().pattern():
            self.count.setText(f"{shown:,} of {total:,} {noun} match")
        else:
            self.count.setText(f"{total:,} {noun}")

    def choose(self, role_name: str) -> None:
        """Select the role named `role_name` (for keyboard tests and scripts)."""
        for row in range(self.proxy.rowCount()):
            index = self.proxy.index(row, 0)
            if index.data() == role_name:
                self.list.setCurrentIndex(index)
                return
        raise KeyError(role_name)

    def role_id(self) -> str | None:
        indexes = self.list.selectionModel().selectedIndexes()
        if not indexes:
            return None
        return str(indexes[0].data(RoleListModel.ID_ROLE))

    def expires(self) -> str | None:
        """The chosen end, RFC 3339 in UTC; None for no end."""
        if not self.expires_check.isChecked():
            return None
        return format_instant((self.expires_edit.dateTime().toSecsSinceEpoch(), ""))

    def max_hours(self) -> int:
        return self.hours.value() if self.hours is not None else DEFAULT_MAX_HOURS


class ActivateDialog(QDialog):
    """Activate an eligible role for some hours, with a justification (required)."""

    def __init__(
        self, user_id: str, role_name: str, max_hours: int, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        title = f"Activate {role_name} for {user_id}"
        self.setObjectName("activate-dialog")
        self.setWindowTitle(title)
        self.setAccessibleName(title)

        intro = QLabel(
            f"{user_id} holds {role_name} for the hours chosen (at most {max_hours} h), "
            "from when the edit is made. Offline, it is queued and the server times it "
            "when this replica syncs.",
            self,
        )
        intro.setWordWrap(True)
        self.hours = QSpinBox(self)
        self.hours.setObjectName("activate-hours")
        name_spin_box(self.hours, "Hours")
        self.hours.setAccessibleDescription(f"How long the activation lasts, 1 to {max_hours}")
        self.hours.setRange(1, max_hours)
        self.hours.setValue(1)
        self.hours.setSuffix(" h")
        hours_label = QLabel("&Hours:", self)
        hours_label.setBuddy(self.hours)

        self.justification = QPlainTextEdit(self)
        self.justification.setObjectName("justification")
        self.justification.setAccessibleName("Justification")
        self.justification.setAccessibleDescription(
            "Required: why the role is needed; it goes to the audit log"
        )
        self.justification.setPlaceholderText("Why is the role needed now? (required)")
        self.justification.setTabChangesFocus(True)
        justification_label = QLabel("&Justification:", self)
        justification_label.setBuddy(self.justification)

        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self
        )
        self.buttons.setObjectName("activate-buttons")
        self.ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok.setText("&Activate")
        _name_buttons(self.buttons)
        self.ok.setAccessibleDescription("Enabled once a justification is written")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.justification.textChanged.connect(self._justification_changed)
        self._justification_changed()

        form = QFormLayout()
        form.addRow(hours_label, self.hours)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(justification_label)
        layout.addWidget(self.justification, 1)
        layout.addWidget(self.buttons)
        resize_in_text_units(self, 70, 21)

    def text(self) -> str:
        return self.justification.toPlainText().strip()

    def _justification_changed(self) -> None:
        self.ok.setEnabled(bool(self.text()))


# --- the editor ------------------------------------------------------------------------------


class UserEditor(WorkspaceView):
    """One user of the workspace's view, edited through its outbox (module rules);
    `message` says `Queued edit 12: ...` or the problem."""

    def __init__(self, workspace: Workspace, parent: QWidget | None = None) -> None:
        super().__init__(workspace, "user-editor", "User editor", parent)
        self.user_id: str | None = None
        self.confirm: Confirm = ask
        """Asked before suspending (tests answer it)."""
        self.dialog: QDialog | None = None
        """The dialog open now (a role picker or an activation), if any."""
        self._draft: dict[str, Any] = {}
        self._activations: dict[str, Instant] | None = None
        """The activations in force when last read (None: not read for this user yet)."""
        self._allowed_icon = icon(ALLOWED)
        self._denied_icon = icon(DENIED)

        # Header: who, and whether suspended.
        self.title = text_label(self, "user-title", "User", selectable=True)
        font = QFont(self.title.font())
        font.setPointSizeF(font.pointSizeF() * 1.3)
        font.setBold(True)
        self.title.setFont(font)
        self.state = text_label(self, "user-state", "User state")
        self.suspend_button = push_button(self, "&Suspend…", "suspend",
                                      "Deny every request of this user until resumed")  # fmt: skip
        self.resume_button = push_button(self, "&Resume", "resume",
                                     "Let this user's roles and rules count again")  # fmt: skip
        self.suspend_button.clicked.connect(self.suspend)
        self.resume_button.clicked.connect(self.resume)

        self.problem = text_label(self, "user-problem", "Problem", wrap=True, selectable=True)
        self.problem.setVisible(False)
        self.outcome = text_label(self, "user-outcome", "Last change", wrap=True)

        self._build_new_user_form()
        self._build_attributes()
        self._build_assignments()
        self._build_permissions()

        header = QHBoxLayout()
        header.addWidget(self.title)
        header.addSpacing(12)
        header.addWidget(self.state, 1)
        header.addWidget(self.suspend_button)
        header.addWidget(self.resume_button)

        # Attributes and assignments side by side; the permissions, which have the
        # most columns, below them across the whole width.
        left = QWidget(self)
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.new_user_box)
        left_layout.addWidget(self.attributes_box, 1)
        create_row = self.create_row = QWidget(left)
        create_layout = QHBoxLayout(create_row)
        create_layout.setContentsMargins(0, 0, 0, 0)
        create_layout.addStretch(1)
        create_layout.addWidget(self.create_button)
        left_layout.addWidget(create_row)
        top = splitter(self, Qt.Orientation.Horizontal, "user-editor-top",
                       [(left, 2), (self.assignments_box, 3)])  # fmt: skip
        self.splitter = splitter(self, Qt.Orientation.Vertical, "user-editor-splitter",
                                 [(top, 1), (self.permissions_box, 1)])  # fmt: skip

        layout = QVBoxLayout(self)
        layout.addLayout(header)
        layout.addWidget(self.problem)
        layout.addWidget(self.outcome)
        layout.addWidget(self.splitter, 1)

        # Tab goes as the eye reads: the header, the form, attributes (then creating
        # the new user), assignments, permissions (hidden and disabled ones skipped).
        chain = (self.suspend_button, self.resume_button, self.new_id, self.new_name,
                 self.attribute_table, self.attribute_key, self.attribute_value,
                 self.add_attribute_button, self.remove_attribute_button, self.create_button,
                 self.assignment_table, self.assign_button, self.unassign_button,
                 self.eligible_button, self.remove_eligible_button, self.activate_button,
                 self.end_button, self.permission_table)  # fmt: skip
        for first, second in itertools.pairwise(chain):
            self.setTabOrder(first, second)

        self._timer = QTimer(self)
        self._timer.setInterval(COUNTDOWN_EVERY_MS)
        self._timer.timeout.connect(self.tick)
        self.follow_changes(self.refresh)
        self.show_user(None)

    # --- building ------------------------------------------------------------------------

    def _build_new_user_form(self) -> None:
        box = self.new_user_box = QGroupBox("New user", self)
        box.setObjectName("new-user")
        self.new_id = QLineEdit(box)
        self.new_id.setObjectName("new-user-id")
        self.new_id.setAccessibleName("New user id")
        self.new_id.setAccessibleDescription("The id requests will name; it never changes")
        id_label = QLabel("User &id:", box)
        id_label.setBuddy(self.new_id)
        self.new_name = QLineEdit(box)
        self.new_name.setObjectName("new-user-name")
        self.new_name.setAccessibleName("New user name")
        self.new_name.setAccessibleDescription("Optional, for display")
        name_label = QLabel("&Name:", box)
        name_label.setBuddy(self.new_name)
        self.create_button = push_button(self, "&Create user", "create-user",
                                     "Queue the new user, with the attributes below")  # fmt: skip
        self.create_button.clicked.connect(self.create_user)
        self.new_id.returnPressed.connect(self.create_user)
        form = QFormLayout(box)
        form.addRow(id_label, self.new_id)
        form.addRow(name_label, self.new_name)

    def _build_attributes(self) -> None:
        box = self.attributes_box = QGroupBox("A&ttributes", self)
        box.setObjectName("attributes")
        self.attribute_model = AttributeModel(self._edit_attribute)
        self.attribute_table = table_view(
            box,
            "attribute-table",
            "Attributes",
            self.attribute_model,
            'F2 edits a value: JSON where it reads as JSON (5, true, ["a"]), else text',
        )
        self.attribute_table.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked
            | QAbstractItemView.EditTrigger.EditKeyPressed
        )
        self.attribute_key = QLineEdit(box)
        self.attribute_key.setObjectName("attribute-key")
        self.attribute_key.setAccessibleName("Attribute name")
        self.attribute_key.setPlaceholderText("region")
        key_label = QLabel("&Key:", box)
        key_label.setBuddy(self.attribute_key)
        self.attribute_value = QLineEdit(box)
        self.attribute_value.setObjectName("attribute-value")
        self.attribute_value.setAccessibleName("Attribute value")
        self.attribute_value.setAccessibleDescription(
            'JSON where it reads as JSON (5, true, ["a"]), else text'
        )
        self.attribute_value.setPlaceholderText("north, 5, true ...")
        # In characters, so the attributes keep room beside the assignments at any text size.
        self.attribute_key.setMinimumWidth(self.fontMetrics().horizontalAdvance("x" * 12))
        self.attribute_value.setMinimumWidth(self.fontMetrics().horizontalAdvance("x" * 20))
        value_label = QLabel("&Value:", box)
        value_label.setBuddy(self.attribute_value)
        self.add_attribute_button = push_button(box, "Se&t", "set-attribute",
                                            "Set the attribute to the value")  # fmt: skip
        self.remove_attribute_button = push_button(box, "Re&move", "remove-attribute",
                                               "Remove the selected attribute")  # fmt: skip
        self.add_attribute_button.clicked.connect(self.set_attribute_from_fields)
        self.attribute_value.returnPressed.connect(self.set_attribute_from_fields)
        self.remove_attribute_button.clicked.connect(self.remove_selected_attribute)
        self.attribute_table.selectionModel().selectionChanged.connect(self._update_buttons)

        # A field a row, the buttons below: beside the assignments (and with large text)
        # one row of fields and buttons leaves each field a few characters wide.
        fields = QFormLayout()
        fields.addRow(key_label, self.attribute_key)
        fields.addRow(value_label, self.attribute_value)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.add_attribute_button)
        buttons.addWidget(self.remove_attribute_button)
        layout = QVBoxLayout(box)
        layout.addWidget(self.attribute_table, 1)
        layout.addLayout(fields)
        layout.addLayout(buttons)

    def _build_assignments(self) -> None:
        box = self.assignments_box = QGroupBox("Assi&gnments", self)
        box.setObjectName("assignments")
        self.assignment_model = AssignmentModel()
        self.assignment_table = table_view(
            box,
            "assignment-table",
            "Role assignments",
            self.assignment_model,
            "Each role held, eligible or activated, and when it ends",
        )
        self.assignment_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.assignment_table.selectionModel().selectionChanged.connect(self._update_buttons)

        self.assign_button = push_button(box, "&Assign role…", "assign-role",
                                     "Give the user a role, with an optional end")  # fmt: skip
        self.unassign_button = push_button(box, "&Unassign", "unassign-role",
                                       "Take away the selected assigned role")  # fmt: skip
        self.eligible_button = push_button(box, "Make &eligible…", "make-eligible",
                                       "Let the user activate a role for a few hours")  # fmt: skip
        self.remove_eligible_button = push_button(box, "Remove eligi&bility", "remove-eligible",
                                              "End the selected eligibility")  # fmt: skip
        self.activate_button = push_button(box, "Act&ivate…", "activate-role",
                                       "Activate the selected eligible role for hours")  # fmt: skip
        self.end_button = push_button(box, "E&nd now", "end-activation",
                                  "End the selected activation before its time")  # fmt: skip
        self.assign_button.clicked.connect(self.open_assign)
        self.unassign_button.clicked.connect(self.unassign_selected)
        self.eligible_button.clicked.connect(self.open_make_eligible)
        self.remove_eligible_button.clicked.connect(self.remove_selected_eligibility)
        self.activate_button.clicked.connect(self.open_activate)
        self.end_button.clicked.connect(self.end_selected_activation)

        self.countdown = text_label(box, "activation-countdown", "Activations", wrap=True)

        first = QHBoxLayout()
        for button in (self.assign_button, self.unassign_button, self.eligible_button,
                       self.remove_eligible_button):  # fmt: skip
            first.addWidget(button)
        first.addStretch(1)
        second = QHBoxLayout()
        second.addWidget(self.activate_button)
        second.addWidget(self.end_button)
        second.addWidget(self.countdown, 1)
        layout = QVBoxLayout(box)
        layout.addWidget(self.assignment_table, 1)
        layout.addLayout(first)
        layout.addLayout(second)

    def _build_permissions(self) -> None:
        box = self.permissions_box = QGroupBox("Effective &permissions", self)
        box.setObjectName("permissions")
        self.permission_model = PermissionModel(self._allowed_icon, self._denied_icon)
        self.permission_table = table_view(
            box,
            "permission-table",
            "Effective permissions",
            self.permission_model,
            "Every grant and deny that applies now, with the role path it comes by",
        )
        self.permission_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.permission_count = text_label(box, "permission-count", "Effective permissions count",
                                           wrap=True)  # fmt: skip
        layout = QVBoxLayout(box)
        layout.addWidget(self.permission_count)
        layout.addWidget(self.permission_table, 1)

    # --- showing ---------------------------------------------------------------------------

    def show_user(self, user_id: str | None) -> None:
        """Show user `user_id` of the view; None shows the form for a new user."""
        self.user_id = user_id
        self._draft = {}
        self._activations = None  # what is in force when a user is opened is not news
        self.assignment_table.clearSelection()
        self.attribute_table.clearSelection()
        self.problem.clear()
        self.problem.setVisible(False)
        self.outcome.clear()
        if user_id is None:
            self.new_id.clear()
            self.new_name.clear()
        self.refresh()

    def user(self) -> User | None:
        """The shown user as the view has it now (None: a new user, or gone)."""
        if self.user_id is None:
            return None
        return self.workspace.policy().users.get(self.user_id)

    def refresh(self) -> None:
        """Read the shown user from the view again (after any change: module rules)."""
        new = self.user_id is None
        user = self.user()
        exists = user is not None
        self.new_user_box.setVisible(new)
        self.create_row.setVisible(new)
        self.assignments_box.setVisible(exists)
        self.permissions_box.setVisible(exists)
        self.attributes_box.setVisible(new or exists)
        self.suspend_button.setVisible(exists)
        self.resume_button.setVisible(exists)
        if new:
            self.title.setText("New user")
            self.state.setText("Not created yet: give it an id, then create it")
            self.attribute_model.set_attributes(self._draft)
            self.assignment_model.set_rows([], (0, ""))
            self.permission_model.set_permissions([], (0, ""))
            self._activations = None
            self._update_buttons()
            return
        if user is None:
            self.title.setText(str(self.user_id))
            self.state.setText("This user is not in the replica's view (deleted?)")
            self._activations = None
            self._update_buttons()
            return
        now = self.workspace.now()
        self.title.setText(f"{user.id} \u2014 {user.name}" if user.name else user.id)
        self.state.setText("Suspended: every request is denied" if user.suspended else "Active")
        self.state.setAccessibleDescription(
            "Resume to let the user's roles count again" if user.suspended else ""
        )
        self.attribute_model.set_attributes(user.attributes)
        self.attribute_table.resizeColumnToContents(0)
        keep = self._selected_assignment()
        rows = assignment_rows(self.workspace.policy(), user, now)
        self.assignment_model.set_rows(rows, now)
        self.assignment_table.resizeColumnsToContents()
        if keep is not None:
            self._select_assignment(keep.role_id, keep.kind)
        self._show_permissions(user, now)
        self._show_countdown(rows, now, say_changes=True)
        self._update_buttons()

    def _show_permissions(self, user: User, now: Instant) -> None:
        permissions = self.workspace.engine().effective_permissions(user.id, now)
        self.permission_model.set_permissions(permissions, now)
        self.permission_table.resizeColumnsToContents()  # PAGE rows at most are loaded
        if user.suspended:
            text = f"No permissions: {user.id} is suspended, every request is denied"
        elif not permissions:
            text = "No permissions"
        else:
            allowed = sum(1 for p in permissions if p.effect is Effect.GRANT)
            denied = len(permissions) - allowed
            noun = "permission" if len(permissions) == 1 else "permissions"
            text = f"{len(permissions):,} {noun}: {allowed:,} allow, {denied:,} deny"
        self.permission_count.setText(text)

    def _show_countdown(self, rows: Sequence[AssignmentRow], now: Instant, *,
                        say_changes: bool) -> None:  # fmt: skip
        """Show the time left of each activation in force; say which started or ended
        (module rules: the ticking itself is not announced)."""
        activations: dict[str, Instant] = {}
        names: dict[str, str] = {}
        for row in rows:
            at = row.assignment.expires_at
            if row.kind is Kind.ACTIVATION and at is not None and now < at:
                activations[row.role_id] = at
                names[row.role_id] = row.role_name
        parts = [f"{names[r]} activated: {time_left(seconds_until(at, now))}"
                 for r, at in activations.items()]  # fmt: skip
        self.countdown.setText("; ".join(parts) if parts else "No role activated just in time")
        before = self._activations
        if say_changes and before is not None:
            policy = self.workspace.policy()
            for role_id, at in activations.items():
                if before.get(role_id) != at:
                    announce(self.countdown, f"{names[role_id]} activated for {self.user_id}: "
                             f"{time_left(seconds_until(at, now))}")  # fmt: skip
            for role_id in before.keys() - activations.keys():
                announce(
                    self.countdown,
                    f"Activation of {policy.role_name(role_id)} ended for {self.user_id}",
                )
        self._activations = activations

    def tick(self) -> None:
        """Move the countdowns on to the workspace's time now (the timer calls this)."""
        user = self.user()
        if user is None:
            return
        now = self.workspace.now()
        ended = any(not now < at for at in (self._activations or {}).values())
        if ended:  # what the user holds changed: read it all again, and say so
            self.refresh()
            return
        self.assignment_model.tick(now)
        self.permission_model.tick(now)
        self._show_countdown(self.assignment_model.rows(), now, say_changes=False)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.tick()
        self._timer.start()

    def hideEvent(self, event: QHideEvent) -> None:
        self._timer.stop()
        super().hideEvent(event)

    # --- selection -------------------------------------------------------------------------

    def _selected_assignment(self) -> AssignmentRow | None:
        rows = self.assignment_table.selectionModel().selectedRows()
        return self.assignment_model.row(rows[0].row()) if rows else None

    def _select_assignment(self, role_id: str, kind: Kind) -> None:
        for number, row in enumerate(self.assignment_model.rows()):
            if row.role_id == role_id and row.kind == kind:
                self.assignment_table.selectRow(number)
                return

    def select_assignment(self, role_name: str, kind: str = "assigned") -> None:
        """Select the row of role `role_name` of `kind` (a Kind's value)."""
        for number, row in enumerate(self.assignment_model.rows()):
            if row.role_name == role_name and row.kind == kind:
                self.assignment_table.selectRow(number)
                return
        raise KeyError((role_name, kind))

    def _selected_attribute(self) -> str | None:
        rows = self.attribute_table.selectionModel().selectedRows()
        return self.attribute_model.key(rows[0].row()) if rows else None

    def _update_buttons(self, *_args: QItemSelection) -> None:
        user = self.user()
        self.suspend_button.setEnabled(user is not None and not user.suspended)
        self.resume_button.setEnabled(user is not None and user.suspended)
        self.remove_attribute_button.setEnabled(self._selected_attribute() is not None)
        row = self._selected_assignment()
        now = self.workspace.now()
        rows = self.assignment_model.rows()
        self.unassign_button.setEnabled(row is not None and row.can_unassign(now))
        self.remove_eligible_button.setEnabled(row is not None and row.kind is Kind.ELIGIBLE)
        self.activate_button.setEnabled(row is not None and row.can_activate(now, rows))
        self.end_button.setEnabled(row is not None and row.can_end(now))

    # --- queueing --------------------------------------------------------------------------

    def _queue(self, document: dict[str, Any], summary: str) -> bool:
        """Queue one edit (module rules); True when it was queued."""
        try:
            seqs = self.workspace.queue([document])
        except EditProblem as problem:
            self._show_problem(str(problem))
            return False
        self.problem.clear()
        self.problem.setVisible(False)
        text = f"Queued edit {seqs[-1]}: {summary}" if seqs else f"Nothing to queue: {summary}"
        self.outcome.setText(text)
        announce(self.outcome, text)
        self.message.emit(text)
        return True

    def _show_problem(self, text: str) -> None:
        self.problem.setText(f"Not queued: {text}")
        self.problem.setAccessibleDescription(text)
        self.problem.setVisible(True)
        QAccessible.updateAccessibility(QAccessibleEvent(self.problem, QAccessible.Event.Alert))
        announce(self.problem, f"Not queued: {text}")
        self.message.emit(text)

    # --- the header ------------------------------------------------------------------------

    def suspend(self) -> None:
        """Suspend the shown user, once the person confirms."""
        user = self.user()
        if user is None or user.suspended:
            return
        question = (f"Suspend {user.id}? Every request of {user.id} will be denied, "
                    "whatever their roles, until they are resumed.")  # fmt: skip
        if not self.confirm(self, f"Suspend {user.id}", question):
            return
        self._queue({"op": "suspend_user", "user_id": user.id}, f"suspend {user.id}")

    def resume(self) -> None:
        user = self.user()
        if user is None or not user.suspended:
            return
        self._queue({"op": "resume_user", "user_id": user.id}, f"resume {user.id}")

    def create_user(self) -> None:
        """Queue the new user of the form (id, name, the attributes entered)."""
        if self.user_id is not None:
            return
        user_id = self.new_id.text().strip()
        document: dict[str, Any] = {"op": "create_user", "user_id": user_id}
        name = self.new_name.text().strip()
        if name:
            document["name"] = name
        if self._draft:
            document["attributes"] = dict(self._draft)
        if self._queue(document, f"create user {user_id}"):
            text = self.outcome.text()
            self.show_user(user_id)
            self.outcome.setText(text)

    # --- attributes ------------------------------------------------------------------------

    def _edit_attribute(self, key: str, value: Any) -> bool:
        if self.user_id is None:  # the new-user form: kept until the user is created
            self._draft[key] = value
            self.attribute_model.set_attributes(self._draft)
            return True
        shown = value_text(value)
        document = {"op": "set_user_attribute", "user_id": self.user_id, "key": key,
                    "value": value}  # fmt: skip
        return self._queue(document, f"set {self.user_id}'s {key} to {shown}")

    def set_attribute_from_fields(self) -> None:
        """Set the attribute named in the Key field to the Value field's value."""
        key = self.attribute_key.text().strip()
        if not key:
            self._show_problem("set an attribute: give its key")
            return
        if self._edit_attribute(key, parse_value(self.attribute_value.text())):
            self.attribute_key.clear()
            self.attribute_value.clear()

    def remove_selected_attribute(self) -> None:
        key = self._selected_attribute()
        if key is None:
            return
        if self.user_id is None:
            self._draft.pop(key, None)
            self.attribute_model.set_attributes(self._draft)
            return
        # set_user_attribute without a value removes it (sync/policy/edits.py).
        document = {"op": "set_user_attribute", "user_id": self.user_id, "key": key}
        self._queue(document, f"remove {self.user_id}'s attribute {key}")

    # --- assignments -----------------------------------------------------------------------

    def _open(self, dialog: QDialog, accepted: Callable[[], None]) -> None:
        if self.dialog is not None:
            self.dialog.close()
        self.dialog = dialog
        dialog.accepted.connect(accepted)
        dialog.finished.connect(lambda _result: self._dialog_closed(dialog))
        dialog.open()

    def _dialog_closed(self, dialog: QDialog) -> None:
        if self.dialog is dialog:
            self.dialog = None
        dialog.deleteLater()

    def open_assign(self) -> None:
        """Open the role picker to assign a role (every role; optional end)."""
        user_id = self.user_id
        if user_id is None:
            return
        roles = list(self.workspace.policy().roles.values())
        picker = RolePicker(roles, self.workspace.now(), f"Assign a role to {user_id}",
                            parent=self)  # fmt: skip

        def assign() -> None:
            role_id = picker.role_id()
            if role_id is None:
                return
            document: dict[str, Any] = {"op": "assign_role", "user_id": user_id,
                                        "role_id": role_id}  # fmt: skip
            expires = picker.expires()
            name = self.workspace.policy().role_name(role_id)
            summary = f"assign {name} to {user_id}"
            if expires is not None:
                document["expires"] = expires
                summary += f" until {expires}"
            self._queue(document, summary)

        self._open(picker, assign)

    def open_make_eligible(self) -> None:
        """Open the role picker to make the user eligible for a role."""
        user_id = self.user_id
        if user_id is None:
            return
        roles = list(self.workspace.policy().roles.values())
        picker = RolePicker(roles, self.workspace.now(), f"Make {user_id} eligible for a role",
                            hours=True, parent=self)  # fmt: skip

        def make() -> None:
            role_id = picker.role_id()
            if role_id is None:
                return
            hours = picker.max_hours()
            document: dict[str, Any] = {"op": "make_eligible", "user_id": user_id,
                                        "role_id": role_id, "max_hours": hours}  # fmt: skip
            name = self.workspace.policy().role_name(role_id)
            summary = f"make {user_id} eligible for {name}, up to {hours} h"
            expires = picker.expires()
            if expires is not None:
                document["expires"] = expires
                summary += f", until {expires}"
            self._queue(document, summary)

        self._open(picker, make)

    def unassign_selected(self) -> None:
        row = self._selected_assignment()
        if self.user_id is None or row is None or not row.can_unassign(self.workspace.now()):
            return
        document = {"op": "unassign_role", "user_id": self.user_id, "role_id": row.role_id}
        self._queue(document, f"unassign {row.role_name} from {self.user_id}")

    def remove_selected_eligibility(self) -> None:
        row = self._selected_assignment()
        if self.user_id is None or row is None or row.kind is not Kind.ELIGIBLE:
            return
        document = {"op": "remove_eligible", "user_id": self.user_id, "role_id": row.role_id}
        self._queue(document, f"remove {self.user_id}'s eligibility for {row.role_name}")

    def open_activate(self) -> None:
        """Open the activation dialog for the selected eligible role."""
        row = self._selected_assignment()
        user_id = self.user_id
        if user_id is None or row is None or row.kind is not Kind.ELIGIBLE:
            return
        max_hours = row.assignment.eligible or 1
        dialog = ActivateDialog(user_id, row.role_name, max_hours, parent=self)

        def activate() -> None:
            hours = dialog.hours.value()
            document = {"op": "activate_role", "user_id": user_id, "role_id": row.role_id,
                        "hours": hours, "justification": dialog.text()}  # fmt: skip
            self._queue(document, f"activate {row.role_name} for {user_id} for {hours} h")

        self._open(dialog, activate)

    def end_selected_activation(self) -> None:
        row = self._selected_assignment()
        if self.user_id is None or row is None or not row.can_end(self.workspace.now()):
            return
        document = {"op": "deactivate_role", "user_id": self.user_id, "role_id": row.role_id}
        self._queue(document, f"end {self.user_id}'s activation of {row.role_name}")
