"""app.ui.settings_window: each setting's value and where it comes from, a setting IT locked
shown locked and never written, the person's changes stored (or refused, inline), by
keyboard; named for screen readers; screenshots."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QApplication, QCheckBox, QComboBox, QLineEdit, QWidget

from app.settings import SETTINGS, Resolved, resolve
from app.ui import settings_window as window_module
from app.ui.main_window import announce
from app.ui.settings_window import LOCKED, SettingsWindow, label_with_mnemonic
from app.ui.theme import apply_theme
from tests.app.ui_fixtures import SCREENSHOTS

URL = "wss://fleet.example:8443"


def _window(qtbot: Any, resolved: Resolved, store: Any) -> SettingsWindow:
    window = SettingsWindow(resolved, store)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    return window


def _every_source() -> Resolved:
    return resolve(
        {"server_url": "ws://cli:1"},
        {"FLEETGATE_TENANT": "env-t"},
        {"user": "dreed"},
        {"replica_dir": "/srv/replicas", "theme": "high-contrast"},
    )


def _locked_theme() -> Resolved:
    return resolve({}, {"FLEETGATE_THEME": "standard"}, {"tenant": "acme"},
                   {"theme": "high-contrast", "locked": "theme", "server_url": URL})  # fmt: skip


def _editor(window: SettingsWindow, name: str) -> Any:
    return window.rows[name].editor


def _focusable(root: QWidget) -> list[QWidget]:
    return [w for w in root.findChildren(QWidget) if w.isVisible() and w.isEnabled()
            and w.focusPolicy() & Qt.FocusPolicy.TabFocus]  # fmt: skip


@pytest.fixture
def announced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    said: list[str] = []

    def record(widget: QWidget, text: str) -> None:
        said.append(text)
        announce(widget, text)

    monkeypatch.setattr(window_module, "announce", record)
    return said


def test_each_row_shows_its_value_and_where_it_comes_from(qtbot: Any) -> None:
    window = _window(qtbot, _every_source(), {})
    assert [w.setting.name for w in window.rows.values()] == [s.name for s in SETTINGS]
    assert _editor(window, "server_url").text() == "ws://cli:1"
    assert _editor(window, "tenant").text() == "env-t"
    assert _editor(window, "user").text() == "dreed"
    assert _editor(window, "replica_dir").text() == "/srv/replicas"
    assert _editor(window, "theme").currentData() == "high-contrast"
    assert _editor(window, "theme").currentText() == "High contrast"
    assert _editor(window, "work_offline").isChecked() is False
    source = {name: row.source.text() for name, row in window.rows.items()}
    assert source["server_url"].startswith("from the command line (--server)")
    assert source["tenant"].startswith("from the environment (FLEETGATE_TENANT)")
    assert source["user"] == "your setting"
    assert source["replica_dir"] == "this machine's setting"
    assert source["theme"] == "this machine's setting"
    assert source["work_offline"] == "default"
    assert all(row.source.isVisible() for row in window.rows.values())
    assert not any(row.lock.isVisible() for row in window.rows.values())
    assert _editor(window, "user").accessibleDescription() == "your setting"


def test_each_editor_fits_its_setting_and_has_a_label_with_its_own_mnemonic(qtbot: Any) -> None:
    window = _window(qtbot, _every_source(), {})
    kinds = {name: type(row.editor) for name, row in window.rows.items()}
    assert kinds == {"server_url": QLineEdit, "tenant": QLineEdit, "user": QLineEdit,
                     "replica_dir": QLineEdit, "theme": QComboBox,
                     "work_offline": QCheckBox}  # fmt: skip
    assert window.rows["replica_dir"].browse is not None
    themes = _editor(window, "theme")
    assert [themes.itemData(i) for i in range(themes.count())] == [
        "system", "standard", "high-contrast"]  # fmt: skip
    letters = []
    for setting in SETTINGS:
        label = window.rows[setting.name].label
        assert label.buddy() is window.rows[setting.name].editor
        assert setting.description.lower() in label.text().replace("&", "").lower()
        letters.append(label.text()[label.text().index("&") + 1].lower())
    assert len(set(letters)) == len(letters) and not set(letters) & {"s", "b", "p"}
    assert label_with_mnemonic("the sync server's address", {"s"}) == "The sync server's &address"


def test_a_value_from_the_command_line_or_environment_is_editable_and_says_it_is_overridden(
    qtbot: Any,
) -> None:
    store: dict[str, Any] = {}
    window = _window(qtbot, _every_source(), store)
    server, tenant = window.rows["server_url"], window.rows["tenant"]
    server_editor: Any = server.editor
    tenant_editor: Any = tenant.editor
    assert "overridden now by --server" in server.source.text()
    assert "overridden now by FLEETGATE_TENANT" in tenant.source.text()
    assert server_editor.isEnabled() and not server_editor.isReadOnly()
    tenant_editor.clear()
    qtbot.keyClicks(tenant_editor, "acme")
    qtbot.keyClick(tenant_editor, Qt.Key.Key_Return)
    assert store == {"tenant": "acme"}
    assert "overridden now" in tenant.source.text()  # still: the environment wins today
    assert "Overridden now: the tenant to sign in to" in window.status.text()


def test_a_machine_locked_theme_shows_locked_and_disabled_and_saving_never_writes_it(
    qtbot: Any,
) -> None:
    store: dict[str, Any] = {}
    window = _window(qtbot, _locked_theme(), store)
    themes: list[str] = []
    window.theme_changed.connect(themes.append)
    row = window.rows["theme"]
    row_editor: Any = row.editor
    assert row.lock.isVisible() and not row.lock.pixmap().isNull()
    assert row.source.text() == f"{LOCKED}: this machine's setting"
    assert not row_editor.isEnabled()
    assert LOCKED in row_editor.accessibleDescription()
    assert row_editor.currentData() == "high-contrast"  # the machine's, not the environment's
    assert row_editor not in _focusable(window)
    row_editor.setCurrentIndex(row_editor.findData("standard"))  # as if it could be changed
    tenant = _editor(window, "tenant")
    tenant.selectAll()
    qtbot.keyClicks(tenant, "globex")
    window.save_button.click()
    assert store == {"tenant": "globex"} and themes == []
    assert window.resolved.locked == {"theme"} and window.resolved["tenant"] == "globex"


def test_changing_the_tenant_by_keyboard_stores_it_in_the_person_s_settings(
    qtbot: Any, announced: list[str]
) -> None:
    store: dict[str, Any] = {}
    window = _window(qtbot, _locked_theme(), store)
    messages: list[str] = []
    window.message.connect(messages.append)
    stored: list[tuple[str, Any]] = []
    window.setting_stored.connect(lambda name, value: stored.append((name, value)))
    tenant = window.rows["tenant"]
    tenant_editor: Any = tenant.editor
    assert tenant.source.text() == "your setting"
    tenant_editor.selectAll()
    qtbot.keyClicks(tenant_editor, "  globex ")
    qtbot.keyClick(tenant_editor, Qt.Key.Key_Return)
    assert store == {"tenant": "globex"} and stored == [("tenant", "globex")]
    assert messages == ["Saved the tenant to sign in to."] and announced == messages
    assert window.isVisible() and window.status.text() == messages[0]
    assert window.resolved.sources["tenant"].value == "your settings"
    window.save_button.click()
    assert messages[-1] == "Nothing changed, nothing saved." and store == {"tenant": "globex"}


def test_an_invalid_server_url_shows_the_error_next_to_it_and_stores_nothing(
    qtbot: Any, announced: list[str]
) -> None:
    store: dict[str, Any] = {}
    window = _window(qtbot, _every_source(), store)
    server = window.rows["server_url"]
    server_editor: Any = server.editor
    server_editor.selectAll()
    qtbot.keyClicks(server_editor, "https://fleet.example")
    tenant = _editor(window, "tenant")
    tenant.selectAll()
    qtbot.keyClicks(tenant, "acme")
    qtbot.keyClick(tenant, Qt.Key.Key_Return)
    assert store == {}
    wrong = "Not saved: the sync server's address must be a ws:// or wss:// address."
    assert server.error.isVisible() and server.error.text() == wrong
    assert server.error_icon.isVisible()
    assert wrong in announced and server_editor.accessibleDescription().startswith(wrong)
    assert not window.rows["tenant"].error.isVisible()
    assert window.focusWidget() is server.editor and window.isVisible()
    server_editor.selectAll()
    qtbot.keyClicks(server_editor, URL)
    window.save_button.click()
    assert store == {"server_url": URL, "tenant": "acme"} and not server.error.isVisible()


def test_storing_the_theme_emits_theme_changed_and_stores_into_qsettings(
    qtbot: Any, tmp_path: Path
) -> None:
    user = QSettings(str(tmp_path / "Fleetgate.conf"), QSettings.Format.IniFormat)
    window = _window(qtbot, resolve({}, {}, {}, {}), user)
    theme = _editor(window, "theme")
    theme.setFocus()
    qtbot.keyClick(theme, Qt.Key.Key_End)  # the last: high contrast
    with qtbot.waitSignal(window.theme_changed, timeout=1000) as changed:
        qtbot.keyClick(theme, Qt.Key.Key_Return)
    assert changed.args == ["high-contrast"]
    again = QSettings(str(tmp_path / "Fleetgate.conf"), QSettings.Format.IniFormat)
    assert again.value("theme") == "high-contrast"
    assert window.rows["theme"].source.text() == "your setting"


def test_a_theme_overridden_now_is_stored_but_not_applied(qtbot: Any) -> None:
    store: dict[str, Any] = {}
    window = _window(qtbot, resolve({"theme": "standard"}, {}, {}, {}), store)
    themes: list[str] = []
    window.theme_changed.connect(themes.append)
    theme = _editor(window, "theme")
    theme.setCurrentIndex(theme.findData("high-contrast"))
    window.save_button.click()
    assert store == {"theme": "high-contrast"} and themes == []


def test_work_offline_is_toggled_by_keyboard_and_stored_as_a_flag(qtbot: Any) -> None:
    store: dict[str, Any] = {}
    window = _window(qtbot, resolve({}, {}, {}, {"work_offline": "true"}), store)
    check = _editor(window, "work_offline")
    assert (
        check.isChecked() and window.rows["work_offline"].source.text() == "this machine's setting"
    )
    check.setFocus()
    qtbot.keyClick(check, Qt.Key.Key_Space)
    qtbot.keyClick(check, Qt.Key.Key_Return)
    assert store == {"work_offline": False}


def test_browse_puts_the_chosen_folder_in_the_replica_field(qtbot: Any, tmp_path: Path) -> None:
    store: dict[str, Any] = {}
    window = _window(qtbot, resolve({}, {}, {}, {}), store)
    row = window.rows["replica_dir"]
    row_editor: Any = row.editor
    assert row.browse is not None
    row.browse.click()
    dialog = window.folder_dialog
    assert dialog is not None and dialog.isVisible() and dialog.accessibleName()
    dialog.fileSelected.emit(str(tmp_path))
    dialog.reject()
    assert row_editor.text() == str(tmp_path)
    window.save_button.click()
    assert store == {"replica_dir": str(tmp_path)}


def test_problems_in_the_settings_are_listed_at_the_top_and_announced(
    qtbot: Any, announced: list[str]
) -> None:
    resolved = resolve({}, {}, {"theme": "neon"}, {"locked": "colour"})
    window = _window(qtbot, resolved, {})
    assert window.problems.isVisible() and window.problems_label.isVisible()
    shown = [window.problems_model.item(i).text() for i in range(window.problems_model.rowCount())]
    assert shown == list(resolved.problems) and len(shown) == 2
    assert any("theme must be one of" in p for p in shown)
    assert "2 problems found in the settings, listed at the top" in announced
    assert window.problems.y() < _editor(window, "server_url").y()
    quiet = _window(qtbot, _every_source(), {})
    assert not quiet.problems.isVisible()


def test_escape_closes_without_storing(qtbot: Any) -> None:
    store: dict[str, Any] = {}
    window = _window(qtbot, _every_source(), store)
    user = _editor(window, "user")
    user.selectAll()
    qtbot.keyClicks(user, "someone")
    qtbot.keyClick(user, Qt.Key.Key_Escape)
    assert not window.isVisible() and store == {}


def test_every_focusable_control_is_named_and_tab_reaches_every_editor(qtbot: Any) -> None:
    resolved = resolve({}, {}, {"theme": "neon"}, {"locked": "server_url", "server_url": URL})
    window = _window(qtbot, resolved, {})
    focusable = _focusable(window)
    assert [w.objectName() or type(w).__name__ for w in focusable if not w.accessibleName()] == []
    editors = [r.editor for r in window.rows.values() if not r.locked]
    browse = window.rows["replica_dir"].browse
    expected = [window.problems, *editors[:3], browse, *editors[3:],
                window.save_button, window.close_button]  # fmt: skip
    window.problems.setFocus()
    order = [window.focusWidget()]
    for _ in range(len(expected) - 1):
        qtbot.keyClick(window.focusWidget(), Qt.Key.Key_Tab)
        order.append(window.focusWidget())
    assert order == expected
    assert set(focusable) <= set(order)
    for row in window.rows.values():
        assert row.editor.accessibleName() and row.source.accessibleName()
        assert row.error.accessibleName() and row.lock.accessibleName()


@pytest.fixture
def themed() -> Iterator[QApplication]:
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    kept = app.palette()
    yield app
    apply_theme(app, "standard")
    app.setPalette(kept)


@pytest.mark.parametrize("theme", ["standard", "high-contrast"])
def test_a_screenshot_with_a_locked_setting_in_each_theme(
    qtbot: Any, themed: QApplication, theme: str
) -> None:
    apply_theme(themed, theme)
    machine = {"server_url": URL, "locked": "server_url", "work_offline": "false"}
    resolved = resolve({"user": "dreed"}, {"FLEETGATE_TENANT": "acme"}, {"theme": "neon"}, machine)
    window = _window(qtbot, resolved, {})
    _editor(window, "user").clear()
    window.save_button.click()  # an inline error in the picture too
    assert window.rows["user"].error.isVisible()
    _editor(window, "tenant").setFocus()
    assert window.rows["server_url"].lock.isVisible()
    qtbot.wait(10)
    SCREENSHOTS.mkdir(exist_ok=True)
    window.grab().save(str(SCREENSHOTS / f"settings-{theme}.png"))
