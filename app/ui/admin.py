"""The administration window: the main window with every view, menu and shortcut wired.

Rules of this module (the desktop issue, § Windows and workflows):

- One `Workspace` feeds every view; each view says what it did through its
  `message` signal, which the status bar shows and announces.
- After a local edit the lists and the status bar are read again and the
  live sync (if any) is woken to push it at once.
- When the sync moves the confirmed policy (a change from elsewhere, an
  outcome), the view is compiled again, but at most once per MOVED_DELAY_MS:
  a snapshot arrives as many frames.
- Menus have mnemonics; frequent actions have shortcuts, and the help window
  (F1) lists every one of them, read from the actions themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QLabel,
    QMessageBox,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.settings import Resolved
from app.ui.check_view import CheckView
from app.ui.live_sync import STATE_WORDS, LiveSync
from app.ui.log_view import LogView
from app.ui.main_window import MainWindow
from app.ui.outcomes_view import OutcomesView
from app.ui.pending_view import PendingView
from app.ui.policy_io import ExportCancelled, ExportProgress, ImportDialog
from app.ui.role_editor import RoleEditor
from app.ui.settings_window import SettingsWindow
from app.ui.sizing import characters, resize_in_text_units
from app.ui.theme import apply_theme
from app.ui.user_editor import UserEditor
from app.ui.workspace import Workspace
from app.ui.workspace_view import WorkspaceView
from sync.policy.impact import access_delta
from sync.policy.instant import Instant
from sync.policy.model import Policy
from sync.protocol.client import ClientState

MOVED_DELAY_MS = 300

FileChooser = Callable[[QWidget, str, bool], Path | None]
"""(parent, caption, saving) -> the chosen path, or None when cancelled."""


def choose_file(parent: QWidget, caption: str, saving: bool) -> Path | None:
    kinds = "Policy files (*.json *.yaml *.yml)"
    if saving:
        name, _ = QFileDialog.getSaveFileName(parent, caption, "policy.json", kinds)
    else:
        name, _ = QFileDialog.getOpenFileName(parent, caption, "", kinds)
    return Path(name) if name else None


class AdminWindow(MainWindow):
    """Every view of the desktop app over one workspace (module rules)."""

    views_ready = Signal()
    """The views that needed the compiled view are built (`views_built`)."""

    def __init__(
        self,
        workspace: Workspace,
        title: str,
        *,
        sync: LiveSync | None = None,
        file_chooser: FileChooser = choose_file,
        settings: tuple[Resolved, Any] | None = None,
    ) -> None:
        """`settings`: what the app started with and the person's store, for the
        settings window (None: no settings window)."""
        super().__init__(workspace.replica, title, status=workspace.replica, now=workspace.now)
        self.workspace = workspace
        self.sync = sync
        self.file_chooser = file_chooser
        self.settings = settings
        self._closed = False
        self._building = False
        self.views_built = False
        """The editors, check and pending views are in their places."""
        # The editors, the check and the pending views need the compiled view; on a
        # large tenant it is compiled after the window is usable (Workspace.prepare),
        # and until then their places say so.
        self.places = {key: _Place(name, self) for key, name in _PLACES}
        for kind in ("role", "user"):
            splitter = self.set_detail(kind, self.places[kind])
            splitter.setSizes([characters(self, 58), characters(self, 102)])
        self.outcomes_view = OutcomesView(workspace, self)
        self.log_view = LogView(workspace, self)
        self.add_page("check", "&Check and explain", self.places["check"])
        self.add_page("pending", "&Pending edits", self.places["pending"])
        self.add_page("outcomes", "C&onflicts and refusals", self.outcomes_view)
        self.add_page("log", "Audit and &log", self.log_view)
        self.link_status("pending", "pending")
        self.link_status("attention", "outcomes")
        for view in (self.outcomes_view, self.log_view):
            view.message.connect(self.show_message)
        workspace.changed.connect(self._view_changed)
        self._moved = QTimer(self)
        self._moved.setSingleShot(True)
        self._moved.setInterval(MOVED_DELAY_MS)
        self._moved.timeout.connect(self._sync_moved)
        self._cursor = workspace.replica.meta().cursor
        self._attention = len(workspace.attention())
        if sync is not None:
            sync.state.connect(self._sync_state)
            sync.moved.connect(self._moved.start)
            sync.ended.connect(self._sync_ended)
            # Built after the sign-in saw the replica catch up: the state then was
            # "online" already, and no state change may follow for hours.
            self._sync_state(sync.last_state)
        else:
            self.set_connection("offline")
        self.exporting: ExportProgress | None = None
        """The last export started (its dialog shows how far it is)."""
        self._build_menus()
        if workspace.is_preparing():
            workspace.ready.connect(lambda: self._build_views(staged=True))
        else:
            self._build_views()
        self.resize(1280, 780)

    # --- wiring --------------------------------------------------------------------------

    def _build_views(self, *, staged: bool = False) -> None:
        """The views that need the compiled view, in their places (module rules);
        `staged`: one view a turn of the event loop (the window is in use already)."""
        if self._building or self._closed:
            return  # under way or built, or the window closed before the view compiled
        self._building = True
        steps = [self._place_role_editor, self._place_user_editor, self._place_check_view,
                 self._place_pending_view, self._views_placed]  # fmt: skip

        def run(index: int) -> None:
            if self._closed:
                return
            steps[index]()
            if index + 1 < len(steps):
                QTimer.singleShot(0, lambda: run(index + 1))

        if staged:
            run(0)
        else:
            for step in steps:
                step()

    def _place(self, key: str, view: WorkspaceView) -> None:
        self.places[key].fill(view)
        view.message.connect(self.show_message)

    def _place_role_editor(self) -> None:
        self.role_editor = RoleEditor(self.workspace, self)
        self._place("role", self.role_editor)
        self._follow_selection("role", self.role_editor.show_role)

    def _place_user_editor(self) -> None:
        self.user_editor = UserEditor(self.workspace, self)
        self._place("user", self.user_editor)
        self._follow_selection("user", self.user_editor.show_user)

    def _place_check_view(self) -> None:
        self.check_view = CheckView(self.workspace, self)
        self._place("check", self.check_view)

    def _place_pending_view(self) -> None:
        self.pending_view = PendingView(self.workspace, self)
        self._place("pending", self.pending_view)

    def _views_placed(self) -> None:
        existing = self.edit_menu.actions()
        for action in (self.pending_view.undo_action, self.pending_view.redo_action):
            # From the menu and anywhere in the window, not only inside the pending view.
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            if existing:
                self.edit_menu.insertAction(existing[0], action)
            else:
                self.edit_menu.addAction(action)
        self.actions_by_menu["&Edit"] = [
            self.pending_view.undo_action, self.pending_view.redo_action,
            *self.actions_by_menu.get("&Edit", []),
        ]  # fmt: skip
        self._select_first()
        self.views_built = True
        self.views_ready.emit()

    def _select_first(self) -> None:
        for view in (self.views["role"], self.views["user"]):
            if view.model.rowCount() and not view.table.selectionModel().hasSelection():
                view.table.selectRow(0)

    def _follow_selection(self, kind: str, show: Callable[[str | None], None]) -> None:
        view = self.views[kind]

        def selected() -> None:
            rows = view.table.selectionModel().selectedRows()
            if rows:
                show(view.model.entity_id(rows[0].row()))

        # The table's selection model outlives the model's resets (a search, a refresh).
        view.table.selectionModel().selectionChanged.connect(lambda *_: selected())

    def _build_menus(self) -> None:
        bar = self.menuBar()
        self.actions_by_menu: dict[str, list[QAction]] = {}
        file_menu = bar.addMenu("&File")
        self._add(file_menu, "&File", "&Export policy...", "Ctrl+E", self.export_policy)
        self._add(file_menu, "&File", "&Import policy...", "Ctrl+I", self.import_policy)
        file_menu.addSeparator()
        self._add(file_menu, "&File", "&Settings...", "Ctrl+,", self.open_settings)
        file_menu.addSeparator()
        self._add(file_menu, "&File", "&Quit", QKeySequence.StandardKey.Quit, self.close)
        edit_menu = self.edit_menu = bar.addMenu("&Edit")
        self._add(edit_menu, "&Edit", "&New role", "Ctrl+Shift+R", self.new_role)
        self._add(edit_menu, "&Edit", "New &user", "Ctrl+Shift+U", self.new_user)
        view_menu = bar.addMenu("&View")
        for number, title in enumerate(self.navigation_titles(), 1):
            # The key itself is the main window's shortcut (one per view): a second
            # one on the action would make Alt+number ambiguous, and neither would act.
            action = QAction(f"{title}\tAlt+{number}", self)
            action.triggered.connect(lambda _checked=False, n=number - 1: self.show_view(n))
            view_menu.addAction(action)
        view_menu.addSeparator()
        self.high_contrast = self._add(view_menu, "&View", "&High-contrast theme", "Ctrl+Shift+H",
                                       self.toggle_contrast)  # fmt: skip
        self.high_contrast.setCheckable(True)
        help_menu = bar.addMenu("&Help")
        self._add(help_menu, "&Help", "&Keyboard shortcuts", QKeySequence.StandardKey.HelpContents,
                  self.show_shortcuts)  # fmt: skip

    def navigation_titles(self) -> list[str]:
        return [self.navigation.item(i).text() for i in range(self.navigation.count())]

    def _add(
        self,
        menu: object,
        menu_name: str,
        text: str,
        shortcut: str | QKeySequence | QKeySequence.StandardKey,
        slot: Callable[[], object],
    ) -> QAction:
        action = QAction(text, self)
        action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(lambda _checked=False: slot())
        menu.addAction(action)  # type: ignore[attr-defined]
        self.actions_by_menu.setdefault(menu_name, []).append(action)
        return action

    # --- what happens -----------------------------------------------------------------

    def _view_changed(self) -> None:
        for view in self.views.values():
            view.refresh()
        self.refresh_status()
        if self.sync is not None:
            self.sync.wake()

    def _sync_state(self, state: str) -> None:
        self.set_connection(STATE_WORDS.get(ClientState(state), state))

    def _sync_moved(self) -> None:
        if self._closed:
            return  # the timer outlived the window (its replica may be closed)
        meta = self.workspace.replica.meta()
        attention = len(self.workspace.attention())
        if meta.cursor != self._cursor or attention != self._attention:
            self._cursor, self._attention = meta.cursor, attention
            self.workspace.reload()
        else:
            self.refresh_status()

    def _sync_ended(self, code: int, message: str) -> None:
        self.set_connection("offline")
        self.show_message(f"Sync stopped: {message}. Your pending edits are kept.")

    def export_policy(self) -> Path | None:
        """Write the view to a file the person chooses, on a worker thread (a 50,000-user
        policy takes a second to write); the status bar says when it is done."""
        path = self.file_chooser(self, "Export policy", True)
        if path is None:
            return None
        # A copy: the view's dictionaries change when an edit is queued meanwhile; the
        # entities themselves never change (an edit replaces them).
        snapshot = self.workspace.policy().copy()
        progress = ExportProgress(snapshot, path, self)

        def said(outcome: object) -> None:
            if isinstance(outcome, ExportCancelled):
                self.show_message(f"Export to {path} cancelled; nothing was written")
            elif isinstance(outcome, Exception):
                problem = outcome.strerror if isinstance(outcome, OSError) else None
                self.show_message(f"Export failed: {problem or outcome}; nothing was written")
            else:
                self.show_message(f"Exported the policy (with pending edits) to {path}")
            progress.deleteLater()

        progress.finished_with.connect(said)
        self.exporting = progress
        self.show_message(f"Exporting the policy to {path} ...")
        progress.start()
        progress.open()
        return path

    def import_policy(self) -> ImportDialog | None:
        path = self.file_chooser(self, "Import policy", False)
        if path is None:
            return None
        dialog = ImportDialog(self.workspace, path, access_delta=self.access_delta,
                              parent=self)  # fmt: skip
        dialog.message.connect(self.show_message)
        dialog.start()
        dialog.open()
        return dialog

    @staticmethod
    def access_delta(view: Policy, documents: list[dict[str, Any]], now: Instant) -> list[str]:
        """The access `documents` would change in `view`, in words (for an import, on its
        worker: it reads `view` only)."""
        impact = access_delta(view, documents, now)
        return impact.summary_lines(lambda index: f"Edit [{index}] of the file")

    def open_settings(self) -> QDialog | None:
        """The settings window (from the settings the app started with)."""
        if self.settings is None:
            return None
        resolved, store = self.settings
        window = SettingsWindow(resolved, store, self)
        window.message.connect(self.show_message)
        window.theme_changed.connect(self._theme_stored)
        window.open()
        return window

    def _theme_stored(self, theme: str) -> None:
        app = QApplication.instance()
        if isinstance(app, QApplication):
            apply_theme(app, theme)
            self.high_contrast.setChecked(theme == "high-contrast")

    def new_role(self) -> None:
        """The new-role form, the focus in its name field."""
        self.show_page("role")
        self.role_editor.new_role()

    def new_user(self) -> None:
        """The new-user form, the focus in its id field."""
        self.show_page("user")
        self.user_editor.show_user(None)
        self.user_editor.new_id.setFocus(Qt.FocusReason.ShortcutFocusReason)

    def toggle_contrast(self) -> None:
        app = QApplication.instance()
        if isinstance(app, QApplication):
            apply_theme(app, "high-contrast" if self.high_contrast.isChecked() else "standard")

    def shortcut_rows(self) -> list[tuple[str, str, str]]:
        """(menu, action, shortcut) for every action with a shortcut."""
        rows: list[tuple[str, str, str]] = [
            ("View", title, f"Alt+{number}")
            for number, title in enumerate(self.navigation_titles(), 1)
            if number < 10
        ]
        for menu, actions in self.actions_by_menu.items():
            for action in actions:
                key = action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
                if key:
                    rows.append((menu.replace("&", ""), action.text().replace("&", ""), key))
        return rows

    def show_shortcuts(self) -> QDialog:
        dialog = ShortcutsDialog(self.shortcut_rows(), self)
        dialog.open()
        return dialog

    def closeEvent(self, event: object) -> None:
        self._closed = True
        self._moved.stop()
        if self.sync is not None:
            self.sync.stop()
        super().closeEvent(event)  # type: ignore[arg-type]


_PLACES = (("role", "Role editor"), ("user", "User editor"), ("check", "Check and explain"),
           ("pending", "Pending edits"))  # fmt: skip


class _Place(QStackedWidget):
    """Where a view goes once the policy is compiled; until then it says so."""

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName(f"{name.lower().replace(' ', '-')}-place")
        self.setAccessibleName(name)
        self.waiting = QLabel("Loading the policy ...", self)
        self.waiting.setAccessibleName(f"{name}: loading the policy")
        self.waiting.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.addWidget(self.waiting)

    def fill(self, view: QWidget) -> None:
        self.addWidget(view)
        self.setCurrentWidget(view)
        self.removeWidget(self.waiting)
        self.waiting.deleteLater()


class ShortcutsDialog(QDialog):
    """Every keyboard shortcut, in a table a screen reader reads with its headers."""

    def __init__(self, rows: list[tuple[str, str, str]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("shortcuts")
        self.setWindowTitle("Keyboard shortcuts")
        self.setAccessibleName("Keyboard shortcuts")
        table = QTableWidget(len(rows), 3, self)
        table.setObjectName("shortcuts-table")
        table.setAccessibleName("Keyboard shortcuts")
        table.setHorizontalHeaderLabels(["Menu", "Action", "Shortcut"])
        table.verticalHeader().setVisible(False)
        table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        table.setTabKeyNavigation(False)
        for row, values in enumerate(rows):
            for column, value in enumerate(values):
                table.setItem(row, column, QTableWidgetItem(value))
        table.resizeColumnsToContents()
        table.horizontalHeader().setStretchLastSection(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.reject)
        buttons.button(QDialogButtonBox.StandardButton.Close).setAccessibleName("Close")
        layout = QVBoxLayout(self)
        layout.addWidget(table)
        layout.addWidget(buttons)
        self.table = table
        resize_in_text_units(self, 70, 30)


def confirm(parent: QWidget, question: str) -> bool:
    """Ask a yes/no question (the views' default `confirm`)."""
    answer = QMessageBox.question(parent, "Fleetgate", question)
    return answer == QMessageBox.StandardButton.Yes
