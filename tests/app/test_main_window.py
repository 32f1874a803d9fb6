"""app.ui.main_window: the roles and users views over a real replica, by keyboard, named
for screen readers, searched as you type; screenshots in both themes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QWidget

from app.replica import Replica
from app.ui.main_window import MainWindow
from app.ui.theme import apply_theme
from tests.app.test_client_cli import cheap_argon2, memory_keyring  # noqa: F401
from tests.app.test_models import replica  # noqa: F401 - the fixture

SCREENSHOTS = Path(__file__).resolve().parents[2] / "screenshots"


@pytest.fixture
def window(replica: Replica, qtbot) -> Iterator[MainWindow]:  # noqa: F811
    shown = MainWindow(replica, "acme")
    qtbot.addWidget(shown)
    shown.show()
    qtbot.waitExposed(shown)
    yield shown


def _focusable(root: QWidget) -> list[QWidget]:
    return [w for w in root.findChildren(QWidget)
            if w.isVisible() and w.focusPolicy() & Qt.FocusPolicy.TabFocus]  # fmt: skip


def test_every_focusable_control_has_an_accessible_name(window: MainWindow) -> None:
    unnamed = [w.objectName() or type(w).__name__ for w in _focusable(window)
               if not w.accessibleName()]  # fmt: skip
    assert unnamed == []


def test_tab_reaches_navigation_search_and_table_without_a_trap(window: MainWindow, qtbot) -> None:
    window.navigation.setFocus()
    seen = []
    for _ in range(12):  # navigation, search, table, the status bar's five parts
        seen.append(QApplication.focusWidget().objectName())
        qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_Tab)
    assert {"navigation", "role-search", "role-table", "pending", "attention"} <= set(seen)
    assert seen[0] == "navigation" and "navigation" in seen[1:]  # it comes round again


def test_alt_2_shows_users_and_typing_searches_after_a_pause(window: MainWindow, qtbot) -> None:
    qtbot.keyClick(window, Qt.Key.Key_2, Qt.KeyboardModifier.AltModifier)
    users = window.views["user"]
    assert window.stack.currentWidget() is users
    assert QApplication.focusWidget() is users.search
    assert users.count.text() == "1,003 users"
    qtbot.keyClicks(users.search, "Person 42")
    assert users.model.filter_text == ""  # not yet: typing has not paused
    qtbot.waitUntil(lambda: users.model.filter_text == "Person 42", timeout=2000)
    assert users.model.entity_id(0) == "u00042"
    assert "match" in users.count.text()


@pytest.mark.parametrize("theme", ["standard", "high-contrast"])
def test_a_screenshot_of_each_view_in_each_theme(window: MainWindow, qtbot, theme: str) -> None:
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    apply_theme(app, theme)
    try:
        SCREENSHOTS.mkdir(exist_ok=True)
        for number, kind in enumerate(("role", "user")):
            window.show_view(number)
            qtbot.wait(10)
            image = window.grab()
            assert not image.isNull()
            assert image.save(str(SCREENSHOTS / f"{kind}s-{theme}.png"))
    finally:
        apply_theme(app, "standard")  # its palette and style sheet, for the tests after


def test_the_status_bar_reads_the_replica_and_says_when_edits_are_pending(
    replica: Replica,  # noqa: F811
    qtbot,
) -> None:
    from app import offline

    shown = MainWindow(replica, "acme", status=replica, now=offline.effective_clock(replica))
    qtbot.addWidget(shown)
    labels = shown.status_labels
    assert labels["synced"].text() == "Never synced"
    assert labels["pending"].text() == "No pending edits"
    assert labels["lease"].text() == "No lease yet: never synced"
    assert all(label.accessibleName() for label in labels.values())
    edit = {"op": "describe_role", "role_id": "r-driver", "description": "drives"}
    offline.queue_edits(replica, [edit], author="boss")
    shown.refresh_status()
    assert labels["pending"].text() == "1 pending edit"


def test_the_status_timer_runs_only_while_the_window_is_shown(
    replica: Replica,  # noqa: F811
    qtbot,
) -> None:
    # A closed window's timer kept reading a replica closed after it (CI: "the replica
    # file is closed", raised in the Qt event loop during later tests).
    shown = MainWindow(replica, "acme", status=replica)
    qtbot.addWidget(shown)
    assert not shown._status_timer.isActive()
    shown.show()
    assert shown._status_timer.isActive()
    shown.close()
    assert not shown._status_timer.isActive()
