"""app.ui.admin: the administration window with every view wired, walked as a person
would (keyboard, menus, status bar) and as an accessibility checker would (names,
roles, focus chain, contrast); a screenshot of every view in both themes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QDialog, QWidget

from app.settings import resolve
from app.ui.admin import AdminWindow
from app.ui.theme import apply_theme, contrast_problems
from app.ui.workspace import Workspace
from sync.policy.request import Request
from tests.app.accessibility import focusable, role_problem
from tests.app.ui_fixtures import (  # noqa: F401
    SCREENSHOTS,
    cheap_argon2,
    memory_keyring,
    ui_replica,
    workspace,
)

PAGES = ("role", "user", "check", "pending", "outcomes", "log")


@pytest.fixture
def window(workspace: Workspace, tmp_path: Path, qtbot: Any) -> AdminWindow:  # noqa: F811
    chosen = {"path": tmp_path / "acme.json"}
    settings = (resolve({}, {}, {}, {}), {})
    shown = AdminWindow(
        workspace,
        "acme \u2014 boss",
        settings=settings,
        file_chooser=lambda _parent, _caption, _saving: chosen["path"],
    )
    shown.chosen = chosen  # type: ignore[attr-defined]
    qtbot.addWidget(shown)
    shown.show()
    qtbot.waitExposed(shown)
    return shown


def test_every_view_opens_by_alt_number_and_every_control_is_named_with_a_fitting_role(
    window: AdminWindow, qtbot: Any
) -> None:
    assert list(window.pages) == list(PAGES)
    for number, key in enumerate(PAGES, 1):
        qtbot.keyClick(window, Qt.Key(Qt.Key.Key_0 + number), Qt.KeyboardModifier.AltModifier)
        assert window.stack.currentWidget() is window.pages[key]
        unnamed = [
            w.objectName() or type(w).__name__
            for w in focusable(window)
            if not w.accessibleName().strip()
        ]
        assert unnamed == [], key
        unfit = [
            w.objectName() or type(w).__name__
            for w in focusable(window)
            if role_problem(w) is not None
        ]
        assert unfit == [], key


def test_the_focus_chain_reaches_every_control_of_every_view_with_no_trap(
    window: AdminWindow, qtbot: Any
) -> None:
    for number in range(len(PAGES)):
        window.show_view(number)
        reachable = set(focusable(window))
        seen: set[QWidget] = set()
        widget = window.navigation
        widget.setFocus()
        for _ in range(len(reachable) * 3 + 10):
            seen.add(widget)
            qtbot.keyClick(widget, Qt.Key.Key_Tab)
            widget = QApplication.focusWidget()
            if widget is window.navigation:
                break
        assert widget is window.navigation, f"Tab stopped coming round in {PAGES[number]}"
        missed = [
            w.objectName() or type(w).__name__
            for w in reachable - seen
            if w.focusPolicy() & Qt.FocusPolicy.TabFocus and not isinstance(w, QDialog)
        ]
        assert missed == [], PAGES[number]


def test_contrast_of_both_themes_and_a_screenshot_of_every_view(
    window: AdminWindow, qapp: Any
) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    try:
        for theme in ("standard", "high-contrast"):
            palette = apply_theme(qapp, theme)
            if theme == "high-contrast":
                assert contrast_problems(palette) == []
            for number, key in enumerate(PAGES):
                window.show_view(number)
                qapp.processEvents()
                window.grab().save(str(SCREENSHOTS / f"window-{key}-{theme}.png"))
    finally:
        apply_theme(qapp, "standard")


def test_choosing_a_role_in_the_list_opens_it_in_the_editor(
    window: AdminWindow, qtbot: Any
) -> None:
    roles = window.views["role"]
    row = next(r for r in range(roles.model.rowCount()) if roles.model.entity_id(r) == "r-night")
    roles.table.selectRow(row)
    assert window.role_editor.role_id == "r-night"
    users = window.views["user"]
    users.table.selectRow(2)
    assert window.user_editor.user_id == users.model.entity_id(2)


def test_an_edit_in_a_view_shows_in_the_status_bar_and_the_pending_view(
    window: AdminWindow,
    workspace: Workspace,  # noqa: F811
    qtbot: Any,
) -> None:
    messages: list[str] = []
    window.statusBar().messageChanged.connect(messages.append)
    workspace.queue([{"op": "assign_role", "user_id": "vic", "role_id": "driver"}])
    assert window.status_labels["pending"].text().startswith("1 ")
    window.status_labels["pending"].click()
    assert window.stack.currentWidget() is window.pages["pending"]
    window.pending_view.undo_action.trigger()
    assert (
        not workspace.engine().decide(Request("vic", "drive", "vehicle"), workspace.now()).allowed
    )
    assert any("vic" in m or "edit" in m.lower() for m in messages), messages


def test_hidden_views_read_a_change_when_they_are_shown_and_undo_works_from_anywhere(
    window: AdminWindow,
    workspace: Workspace,  # noqa: F811
    qtbot: Any,
) -> None:
    window.show_page("role")
    roles = window.views["role"]
    roles.table.selectRow(
        next(r for r in range(roles.model.rowCount()) if roles.model.entity_id(r) == "r-driver")
    )
    impacts: list[int] = []
    original = window.pending_view._show_impact

    def counted() -> None:
        impacts.append(1)
        original()

    window.pending_view._show_impact = counted  # type: ignore[method-assign]
    workspace.queue([{"op": "assign_role", "user_id": "vic", "role_id": "driver"}])
    # Hidden: the log and the access delta wait until they are shown...
    assert window.log_view.edits.rowCount() == 0 and impacts == []
    # ...but undo is ready from this page already.
    assert window.pending_view.undo_action.isEnabled()
    window.show_page("log")
    assert window.log_view.edits.rowCount() == 1
    window.show_page("pending")
    assert impacts == [1]
    impact = window.pending_view.impact_model
    assert [impact.index(0, c).data() for c in range(3)] == ["Gain", "vehicle drive", "1"]


def test_export_then_import_through_the_file_menu(
    window: AdminWindow,
    workspace: Workspace,  # noqa: F811
    tmp_path: Path,
    qtbot: Any,
) -> None:
    exporting = window.export_policy()
    assert exporting is not None
    messages: list[str] = []
    window.statusBar().messageChanged.connect(messages.append)
    qtbot.waitUntil(lambda: any(m.startswith("Exported") for m in messages), timeout=10_000)
    path = window.chosen["path"]  # type: ignore[attr-defined]
    document = json.loads(path.read_text())
    next(u for u in document["users"] if u["id"] == "vic")["roles"].append({"role": "driver"})
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(document))
    window.chosen["path"] = edited  # type: ignore[attr-defined]
    dialog = window.import_policy()
    assert dialog is not None
    qtbot.waitUntil(lambda: dialog.plan is not None, timeout=20_000)
    access = dialog.access.model().stringList()
    assert any("vic" in line for line in access), access
    dialog.apply_button.click()
    assert len(workspace.pending()) == 1


def test_an_export_shows_its_progress_and_cancel_leaves_no_file(
    window: AdminWindow,
    tmp_path: Path,
    qtbot: Any,
) -> None:
    messages: list[str] = []
    window.statusBar().messageChanged.connect(messages.append)
    target = tmp_path / "acme.yaml"
    window.chosen["path"] = target  # type: ignore[attr-defined]
    assert window.export_policy() == target
    dialog = window.exporting
    assert dialog is not None and dialog.isVisible()
    unnamed = [w.objectName() or type(w).__name__ for w in focusable(dialog)
               if not w.accessibleName().strip()]  # fmt: skip
    assert unnamed == [] and dialog.cancel_button in focusable(dialog)
    qtbot.keyClick(dialog, Qt.Key.Key_Escape)  # the same as Cancel, before a batch is out
    qtbot.waitUntil(lambda: any("nothing was written" in m for m in messages), timeout=10_000)
    assert messages[-1] == f"Export to {target} cancelled; nothing was written"
    assert list(tmp_path.glob("*acme*")) == []  # nor a temporary beside it


def test_the_help_window_lists_every_shortcut_of_the_menus(window: AdminWindow) -> None:
    rows = window.shortcut_rows()
    actions = {(menu, action) for menu, action, _key in rows}
    assert {
        ("File", "Export policy..."),
        ("File", "Import policy..."),
        ("Edit", "Undo"),
        ("Edit", "Redo"),
        ("View", "High-contrast theme"),
    } <= actions
    dialog = window.show_shortcuts()
    assert dialog.table.rowCount() == len(rows)  # type: ignore[attr-defined]
    headers = [dialog.table.horizontalHeaderItem(i).text() for i in range(3)]  # type: ignore[attr-defined]
    assert headers == ["Menu", "Action", "Shortcut"]
    dialog.close()


def test_every_menu_has_a_mnemonic_and_every_dialog_control_is_named(
    window: AdminWindow, qtbot: Any
) -> None:
    titles = [action.text() for action in window.menuBar().actions()]
    assert titles and all("&" in title for title in titles)
    settings = window.open_settings()
    assert settings is not None
    unnamed = [
        w.objectName() or type(w).__name__
        for w in focusable(settings)
        if not w.accessibleName().strip()
    ]
    assert unnamed == []
    settings.close()
    shortcuts = window.show_shortcuts()
    assert all(w.accessibleName() for w in focusable(shortcuts))
    shortcuts.close()


def test_the_high_contrast_toggle_switches_the_palette(window: AdminWindow, qapp: Any) -> None:
    try:
        window.high_contrast.trigger()
        assert qapp.palette().window().color().lightness() < 50
        window.high_contrast.trigger()
        assert qapp.palette().window().color().lightness() > 200
    finally:
        apply_theme(qapp, "standard")
