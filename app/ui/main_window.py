"""The main window: roles and users of a replica, searchable, with a status bar that speaks.

Rules of this module (the desktop issue, § Windows and workflows, § Accessibility):

- Views are chosen from a list on the left (Alt+1, Alt+2, ...; each has a
  mnemonic) and shown beside it; every list is an `EntityListModel` over the
  replica, so the window opens as fast on 50,000 users as on 50.
- Search is as you type, debounced by SEARCH_DELAY_MS, and answered by the
  replica's FTS5 index; the count of matches is shown and announced.
- Every control gets its accessible name where it is created, next to its
  label (a buddy, for fields); tables keep Tab for moving between controls.
- Status changes (counts, the sync state) are shown in the status bar and
  announced to assistive technology (`announce`).
- Widgets are touched only on the UI thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import (
    QAccessible,
    QAccessibleAnnouncementEvent,
    QHideEvent,
    QKeySequence,
    QShortcut,
    QShowEvent,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QSplitter,
    QStackedWidget,
    QStatusBar,
    QTableView,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.clock import wall_now
from app.replica_status import StatusSource, replica_status
from app.ui.models import ROLE_COLUMNS, USER_COLUMNS, Column, EntityListModel, EntitySource
from app.ui.sizing import characters
from sync.policy.instant import Instant

SEARCH_DELAY_MS = 150
"""Typing pauses shorter than this do not search (the desktop issue: debounced)."""
STATUS_EVERY_MS = 30_000
"""How often the status bar reads the replica again (the lease counts down)."""
STATUS_PARTS = (
    ("connection", "Connection"),
    ("synced", "Last synced"),
    ("pending", "Pending edits"),
    ("attention", "Outcomes to review"),
    ("lease", "Offline lease"),
)


def announce(widget: QWidget, message: str) -> None:
    """Say `message` to assistive technology, as a polite announcement from `widget`."""
    event = QAccessibleAnnouncementEvent(widget, message)
    event.setPoliteness(QAccessible.AnnouncementPoliteness.Polite)
    QAccessible.updateAccessibility(event)


@dataclass(frozen=True, slots=True)
class ViewSpec:
    kind: str
    title: str
    """With its mnemonic, as the navigation list shows it."""
    singular: str
    plural: str
    columns: tuple[Column, ...]


VIEWS = (
    ViewSpec("role", "&Roles", "role", "roles", ROLE_COLUMNS),
    ViewSpec("user", "&Users", "user", "users", USER_COLUMNS),
)


class EntityListView(QWidget):
    """A searchable table of one kind of entity (module rules)."""

    def __init__(self, source: EntitySource, spec: ViewSpec, parent: QWidget | None = None):
        super().__init__(parent)
        self.spec = spec
        self.setObjectName(f"{spec.kind}-view")
        self.setAccessibleName(spec.title.replace("&", ""))
        self.model = EntityListModel(source, spec.kind, spec.columns)

        label = QLabel(f"&Search {spec.plural}:", self)
        self.search = QLineEdit(self)
        self.search.setObjectName(f"{spec.kind}-search")
        self.search.setAccessibleName(f"Search {spec.plural}")
        self.search.setAccessibleDescription(
            f"Type to find {spec.plural} by id, name, attribute or rule; the list follows."
        )
        self.search.setPlaceholderText("id, name, attribute, rule ...")
        self.search.setClearButtonEnabled(True)
        label.setBuddy(self.search)

        self.table = QTableView(self)
        self.table.setObjectName(f"{spec.kind}-table")
        self.table.setAccessibleName(f"{spec.plural.capitalize()} list")
        self.table.setModel(self.model)
        # Each column starts as wide as its heading (sizing to the contents would read
        # every row; the model loads them lazily).
        header = self.table.horizontalHeader()
        for column, spec_column in enumerate(spec.columns):
            wanted = characters(self.table, spec_column.characters)
            header.resizeSection(column, max(header.sectionSizeHint(column), wanted))
        self.table.setTabKeyNavigation(False)  # Tab leaves the table (FACTS: Qt a11y traps)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)  # one line a row: long text is elided, the last stretches
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)

        self.count = QLabel(self)
        self.count.setObjectName(f"{spec.kind}-count")
        self.count.setAccessibleName(f"{spec.plural.capitalize()} shown")

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(SEARCH_DELAY_MS)
        self._timer.timeout.connect(self.apply_search)
        self.search.textChanged.connect(lambda _text: self._timer.start())

        row = QHBoxLayout()
        row.addWidget(label)
        row.addWidget(self.search, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.count)
        self.setTabOrder(self.search, self.table)
        self.model.fetchMore()
        self._show_count(announce_it=False)

    def hideEvent(self, event: QHideEvent) -> None:
        # Hidden, it searches when shown again (and never after its replica closed).
        self._search_when_shown = self._timer.isActive()
        self._timer.stop()
        super().hideEvent(event)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if getattr(self, "_search_when_shown", False):
            self._search_when_shown = False
            self.apply_search()

    def apply_search(self) -> None:
        """Filter now (the debounce timer calls this when typing pauses)."""
        self._timer.stop()
        self.model.set_filter(self.search.text())
        self._show_count(announce_it=True)

    def refresh(self) -> None:
        self.model.refresh()
        self._show_count(announce_it=False)

    def _show_count(self, *, announce_it: bool) -> None:
        spec, model = self.spec, self.model
        if model.filter_text:
            shown = model.rowCount()
            noun = spec.singular if shown == 1 else spec.plural
            text = f"{shown:,} {noun} match \u201c{model.filter_text}\u201d"
        else:
            noun = spec.singular if model.total == 1 else spec.plural
            text = f"{model.total:,} {noun}"
        self.count.setText(text)
        # A screen reader reads a label's accessible name, not its text: both, in the name.
        self.count.setAccessibleName(f"{spec.plural.capitalize()} shown: {text}")
        if announce_it:
            announce(self.count, text)


class MainWindow(QMainWindow):
    """Navigation on the left, the chosen view beside it, the status bar below."""

    def __init__(
        self,
        source: EntitySource,
        title: str,
        *,
        status: StatusSource | None = None,
        now: Callable[[], Instant] = wall_now,
    ) -> None:
        """`status`: the replica the status bar describes (None: only the connection);
        `now`: the replica's effective time (app/offline.py), for the lease."""
        super().__init__()
        self.setObjectName("main-window")
        self.setWindowTitle(f"Fleetgate \u2014 {title}")
        self.setAccessibleName("Fleetgate administration")

        self.navigation = QListWidget(self)
        self.navigation.setObjectName("navigation")
        self.navigation.setAccessibleName("Views")
        self.navigation.setAccessibleDescription("Choose what the window shows")
        self.stack = QStackedWidget(self)
        self.stack.setObjectName("views")
        self.views: dict[str, EntityListView] = {}
        self.pages: dict[str, QWidget] = {}
        """Every view by key, in navigation order: the lists, then `add_page`'s."""
        self._focus: dict[str, QWidget] = {}
        for spec in VIEWS:
            view = EntityListView(source, spec, self.stack)
            self.views[spec.kind] = view
            self.add_page(spec.kind, spec.title, view, focus=view.search)
        self.navigation.currentRowChanged.connect(self.stack.setCurrentIndex)
        self._fit_navigation()
        self.navigation.setCurrentRow(0)

        central = QWidget(self)
        layout = QHBoxLayout(central)
        layout.addWidget(self.navigation)
        layout.addWidget(self.stack, 1)
        self.setCentralWidget(central)

        bar = QStatusBar(self)
        bar.setObjectName("status-bar")
        bar.setAccessibleName("Status")
        self.status_labels: dict[str, QToolButton] = {}
        for key, name in STATUS_PARTS:
            # Buttons, not labels: each opens its view (`link_status`), by keyboard too.
            label = QToolButton(bar)
            label.setObjectName(key)
            label.setAccessibleName(name)
            label.setAutoRaise(True)
            label.setFocusPolicy(Qt.FocusPolicy.TabFocus)
            bar.addPermanentWidget(label)
            self.status_labels[key] = label
        self.connection = self.status_labels["connection"]
        self._set_part(self.connection, "Offline")
        self.setStatusBar(bar)
        self._status_source = status
        self._now = now
        # The lease counts down while the window is shown (and only then: a hidden
        # window's replica may be closed already).
        self._status_timer = QTimer(self)
        self._status_timer.setInterval(STATUS_EVERY_MS)
        self._status_timer.timeout.connect(self.refresh_status)
        self.refresh_status()
        self.setTabOrder(self.navigation, self.views[VIEWS[0].kind].search)
        self.resize(960, 620)

    def add_page(
        self, key: str, title: str, widget: QWidget, *, focus: QWidget | None = None
    ) -> int:
        """Add a view to the navigation (Alt+its number); `focus` gets the focus when it is
        shown. Returns its number (0-based)."""
        number = len(self.pages)
        self.pages[key] = widget
        if focus is not None:
            self._focus[key] = focus
        item = QListWidgetItem(title.replace("&", ""))
        item.setToolTip(f"Alt+{number + 1}")
        item.setData(Qt.ItemDataRole.UserRole, key)
        self.navigation.addItem(item)
        self.stack.addWidget(widget)
        if number < 9:
            shortcut = QShortcut(QKeySequence(f"Alt+{number + 1}"), self)
            shortcut.activated.connect(lambda n=number: self.show_view(n))
        self._fit_navigation()
        return number

    def _fit_navigation(self) -> None:
        # As wide as its longest title in the person's text size (200 % text too).
        navigation = self.navigation
        navigation.setFixedWidth(
            max(navigation.sizeHintForColumn(0), characters(navigation, 12))
            + 2 * navigation.frameWidth()
            + characters(navigation, 2)
        )

    def set_detail(self, kind: str, detail: QWidget) -> QSplitter:
        """Show `detail` (an editor) beside the list of `kind`, in a splitter that
        replaces the list in its page."""
        view = self.views[kind]
        number = list(self.pages).index(kind)
        splitter = QSplitter(Qt.Orientation.Horizontal, self.stack)
        splitter.setObjectName(f"{kind}-page")
        splitter.setAccessibleName(view.accessibleName())
        self.stack.removeWidget(view)
        splitter.addWidget(view)
        view.show()  # removeWidget hid it, and a splitter keeps a hidden widget hidden
        splitter.addWidget(detail)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        self.stack.insertWidget(number, splitter)
        self.pages[kind] = splitter
        self.stack.setCurrentIndex(self.navigation.currentRow())
        return splitter

    def page_number(self, key: str) -> int:
        return list(self.pages).index(key)

    def show_view(self, number: int) -> None:
        """Show view `number` (0-based) and put the focus where its work starts."""
        self.navigation.setCurrentRow(number)
        key = list(self.pages)[number]
        focus = self._focus.get(key)
        if focus is not None:
            focus.setFocus(Qt.FocusReason.ShortcutFocusReason)
        else:
            self.pages[key].setFocus(Qt.FocusReason.ShortcutFocusReason)

    def show_page(self, key: str) -> None:
        self.show_view(self.page_number(key))

    def link_status(self, part: str, key: str) -> None:
        """Make the status bar's `part` open the view `key`."""
        button = self.status_labels[part]
        button.setAccessibleDescription(f"Opens the {key} view")
        button.clicked.connect(lambda: self.show_page(key))

    def show_message(self, text: str) -> None:
        """Say what just happened, in the status bar and to assistive technology."""
        self.statusBar().showMessage(text, 15_000)
        announce(self.statusBar(), text)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._status_source is not None:
            self.refresh_status()
            self._status_timer.start()

    def hideEvent(self, event: QHideEvent) -> None:
        self._status_timer.stop()
        super().hideEvent(event)

    def refresh_status(self) -> None:
        """Read the replica's status again; say what changed (module rules)."""
        if self._status_source is None:
            return
        words = replica_status(self._status_source, self._now())
        texts = {"synced": words.synced, "pending": words.pending,
                 "attention": words.attention, "lease": words.lease}  # fmt: skip
        for key, text in texts.items():
            label = self.status_labels[key]
            if label.text() != text:
                announce_it = bool(label.text()) and key != "lease"  # not every minute
                self._set_part(label, text)
                if announce_it:
                    announce(label, text)

    def _set_part(self, part: QToolButton, text: str) -> None:
        # The part's name says what it is and what it says: a screen reader reads the
        # name of a button, and the text alone ("3 pending") would not say which part.
        part.setText(text)
        part.setAccessibleName(f"{dict(STATUS_PARTS)[part.objectName()]}: {text}")

    def set_connection(self, text: str) -> None:
        """Show and announce the sync state (online, offline, syncing ...)."""
        if self.connection.text() != text:
            self._set_part(self.connection, text)
            announce(self.connection, f"Connection: {text}")
