"""app.ui.user_editor: a user's attributes, assignments with expiry, suspension, just-in-time
activation with a countdown, and effective permissions with their role paths, edited
through the widgets against a real replica; named for screen readers; screenshots."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
from PySide6.QtCore import QDateTime, Qt, QTimeZone
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QDialog, QDialogButtonBox, QLineEdit, QWidget
from pytestqt.qtbot import QtBot

from app import offline
from app.replica import Replica
from app.ui.main_window import announce
from app.ui.theme import apply_theme
from app.ui.user_editor import ActivateDialog, RolePicker, UserEditor, time_left
from app.ui.workspace import Workspace
from sync.policy.instant import Instant, parse_instant
from tests.app import ui_fixtures
from tests.app.ui_fixtures import cheap_argon2, memory_keyring, ui_replica, workspace  # noqa: F401

T0 = "2026-12-02T10:00:00Z"
DAY = 86400


class FixedClock:
    """A wall clock that moves only when told (the monotonic one never does)."""

    def __init__(self, at: str) -> None:
        self.now: Instant = parse_instant(at)

    def advance(self, seconds: int) -> None:
        self.now = (self.now[0] + seconds, self.now[1])

    def clocks(self) -> offline.Clocks:
        return offline.Clocks(wall=lambda: self.now, mono=lambda: 0.0)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def boss(ui_replica: Replica, clock: FixedClock) -> Workspace:  # noqa: F811
    return Workspace(ui_replica, "boss", clocks=clock.clocks())


@pytest.fixture
def sam(ui_replica: Replica, clock: FixedClock) -> Workspace:  # noqa: F811
    return Workspace(ui_replica, "sam", clocks=clock.clocks())


@pytest.fixture
def said(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the editor announces to assistive technology."""
    heard: list[str] = []

    def record(widget: QWidget, text: str) -> None:
        heard.append(text)
        announce(widget, text)

    monkeypatch.setattr("app.ui.user_editor.announce", record)
    return heard


def _editor(space: Workspace, qtbot: QtBot, user_id: str | None) -> UserEditor:
    shown = UserEditor(space)
    qtbot.addWidget(shown)
    shown.resize(1180, 720)
    shown.show_user(user_id)
    with qtbot.waitExposed(shown):
        shown.show()
    return shown


def _messages(editor: UserEditor) -> list[str]:
    seen: list[str] = []
    editor.message.connect(seen.append)
    return seen


def _cells(table: Any) -> list[list[str]]:
    model = table.model()
    return [[model.index(r, c).data() for c in range(model.columnCount())]
            for r in range(model.rowCount())]  # fmt: skip


def _pending_ops(space: Workspace) -> list[dict[str, Any]]:
    """The pending edits' documents, without the optional fields left empty."""
    return [{k: v for k, v in row.edit.items() if v is not None} for row in space.pending()]


def _click(qtbot: QtBot, button: Any) -> None:
    assert button.isEnabled(), button.objectName()
    QTest.mouseClick(button, Qt.MouseButton.LeftButton)


def _ok(dialog: QDialog) -> Any:
    box = dialog.findChild(QDialogButtonBox)
    assert box is not None
    return box.button(QDialogButtonBox.StandardButton.Ok)


def _picker(editor: UserEditor) -> RolePicker:
    assert isinstance(editor.dialog, RolePicker)
    return editor.dialog


def _utc(seconds: int) -> QDateTime:
    return QDateTime.fromSecsSinceEpoch(seconds, QTimeZone.utc())


def _activate_driver(editor: UserEditor, qtbot: QtBot, hours: int = 2) -> ActivateDialog:
    editor.select_assignment("driver", "eligible")
    _click(qtbot, editor.activate_button)
    dialog = editor.dialog
    assert isinstance(dialog, ActivateDialog)
    dialog.hours.setValue(hours)
    QTest.keyClicks(dialog.justification, "Covering the night shift")
    _click(qtbot, dialog.ok)
    return dialog


# --- showing -------------------------------------------------------------------------------


def test_vic_shows_the_viewer_assignment_and_what_it_permits(boss: Workspace, qtbot: QtBot) -> None:
    editor = _editor(boss, qtbot, "vic")
    assert editor.title.text() == "vic"
    assert editor.state.text() == "Active"
    assert _cells(editor.assignment_table) == [["viewer", "assigned", "permanent"]]
    assert _cells(editor.permission_table) == [
        ["allow", "vehicle", "read", "always", "vic → viewer", "permanent"]
    ]
    assert editor.permission_count.text() == "1 permission: 1 allow, 0 deny"
    assert not editor.new_user_box.isVisible()


def test_inherited_rules_show_their_whole_role_path_and_condition(
    boss: Workspace, qtbot: QtBot
) -> None:
    editor = _editor(boss, qtbot, "u002")  # senior-dispatcher
    rows = _cells(editor.permission_table)
    paths = {(r[1], r[2], r[0]): r[4] for r in rows}
    assert (
        paths["vehicle", "read", "allow"] == "u002 → senior-dispatcher → night-dispatcher → viewer"
    )
    drive = next(r for r in rows if r[2] == "drive")
    assert "user.region" in drive[3] and "context.hour" in drive[3]
    assert ("vehicle", "refuel", "deny") in paths


# --- assignments -----------------------------------------------------------------------------


def test_assigning_driver_for_two_days_queues_it_and_shows_the_end_and_the_new_permission(
    boss: Workspace, qtbot: QtBot, said: list[str]
) -> None:
    editor = _editor(boss, qtbot, "vic")
    messages = _messages(editor)
    _click(qtbot, editor.assign_button)
    picker = _picker(editor)
    assert picker.expires_edit.dateTime().toSecsSinceEpoch() == parse_instant(T0)[0] + DAY
    assert not picker.expires_edit.isEnabled()
    QTest.mouseClick(picker.expires_check, Qt.MouseButton.LeftButton)
    assert picker.expires_edit.isEnabled()
    picker.expires_edit.setDateTime(_utc(parse_instant(T0)[0] + 2 * DAY))
    QTest.keyClicks(picker.filter, "driv")
    assert picker.count.text() == "1 of 6 roles match"
    QTest.keyClick(picker.filter, Qt.Key.Key_Return)  # the one match is chosen
    assert editor.dialog is None

    ends = "2026-12-04T10:00:00Z"
    assert _pending_ops(boss) == [
        {"op": "assign_role", "user_id": "vic", "role_id": "r-driver", "expires": ends}
    ]
    assert ["driver", "assigned", f"until {ends} (2 d 0 h left)"] in _cells(editor.assignment_table)
    drive = [r for r in _cells(editor.permission_table) if r[2] == "drive"]
    assert drive == [["allow", "vehicle", "drive", "always", "vic → driver",
                      f"until {ends} (2 d 0 h left)"]]  # fmt: skip
    seq = boss.pending()[0].seq
    text = f"Queued edit {seq}: assign driver to vic until {ends}"
    assert messages == [text] and editor.outcome.text() == text and text in said


def test_unassign_takes_the_selected_role_away(boss: Workspace, qtbot: QtBot) -> None:
    editor = _editor(boss, qtbot, "vic")
    assert not editor.unassign_button.isEnabled()  # nothing selected
    editor.select_assignment("viewer")
    _click(qtbot, editor.unassign_button)
    assert _pending_ops(boss) == [{"op": "unassign_role", "user_id": "vic", "role_id": "r-viewer"}]
    assert _cells(editor.assignment_table) == []
    assert editor.permission_count.text() == "No permissions"


def test_a_refused_edit_shows_why_beside_the_controls_and_queues_nothing(
    ui_replica: Replica,  # noqa: F811
    clock: FixedClock,
    qtbot: QtBot,
    said: list[str],
) -> None:
    vic = Workspace(ui_replica, "vic", clocks=clock.clocks())
    editor = _editor(vic, qtbot, "vic")
    messages = _messages(editor)
    _click(qtbot, editor.assign_button)
    picker = _picker(editor)
    picker.choose("tenant-admin")
    _click(qtbot, _ok(picker))
    assert vic.pending() == []
    assert editor.problem.isVisible()
    assert "vic may not make it" in editor.problem.text()
    assert "vic may not make it" in editor.problem.accessibleDescription()
    assert len(messages) == 1 and "vic may not make it" in messages[0]
    assert any(text.startswith("Not queued:") for text in said)


def test_the_picker_lists_every_role_however_many_there_are(boss: Workspace, qtbot: QtBot) -> None:
    boss.queue([{"op": "create_role", "role_id": f"r-{i:03}", "name": f"depot-{i:03}"}
                for i in range(100)])  # fmt: skip
    editor = _editor(boss, qtbot, "vic")
    _click(qtbot, editor.assign_button)
    picker = _picker(editor)
    assert picker.proxy.rowCount() == 106 == len(boss.policy().roles)
    assert picker.count.text() == "106 roles"
    shown = {picker.proxy.index(r, 0).data() for r in range(picker.proxy.rowCount())}
    assert shown == {role.name for role in boss.policy().roles.values()}
    QTest.keyClicks(picker.filter, "DEPOT-09")
    assert picker.proxy.rowCount() == 10
    assert picker.count.text() == "10 of 106 roles match"
    picker.reject()


# --- suspension ------------------------------------------------------------------------------


def test_suspend_asks_first_then_denies_everything_and_resume_needs_no_question(
    boss: Workspace, qtbot: QtBot
) -> None:
    editor = _editor(boss, qtbot, "vic")
    asked: list[str] = []
    answers = [False, True]

    def confirm(_parent: QWidget, title: str, _text: str) -> bool:
        asked.append(title)
        return answers.pop(0)

    editor.confirm = confirm

    _click(qtbot, editor.suspend_button)
    assert asked == ["Suspend vic"] and boss.pending() == []  # answered no

    _click(qtbot, editor.suspend_button)
    assert _pending_ops(boss) == [{"op": "suspend_user", "user_id": "vic"}]
    assert editor.state.text() == "Suspended: every request is denied"
    assert _cells(editor.permission_table) == []
    assert editor.permission_count.text() == (
        "No permissions: vic is suspended, every request is denied"
    )
    assert not editor.suspend_button.isEnabled() and editor.resume_button.isEnabled()

    _click(qtbot, editor.resume_button)
    assert asked == ["Suspend vic", "Suspend vic"]  # resuming asked nothing
    assert _pending_ops(boss)[-1] == {"op": "resume_user", "user_id": "vic"}
    assert editor.state.text() == "Active"
    assert len(_cells(editor.permission_table)) == 1


# --- eligibility and activation ------------------------------------------------------------


def test_making_u001_eligible_for_driver_up_to_4_hours(boss: Workspace, qtbot: QtBot) -> None:
    editor = _editor(boss, qtbot, "u001")
    _click(qtbot, editor.eligible_button)
    picker = _picker(editor)
    assert picker.hours is not None and picker.hours.value() == 8
    picker.choose("driver")
    picker.hours.setValue(4)
    _click(qtbot, _ok(picker))
    assert _pending_ops(boss) == [
        {"op": "make_eligible", "user_id": "u001", "role_id": "r-driver", "max_hours": 4}
    ]
    assert ["driver", "eligible, up to 4 h, not active", "permanent"] in _cells(
        editor.assignment_table
    )
    assert "u001 → driver" not in [r[4] for r in _cells(editor.permission_table)]  # not held

    editor.select_assignment("driver", "eligible")
    _click(qtbot, editor.remove_eligible_button)
    assert _pending_ops(boss)[-1] == {
        "op": "remove_eligible",
        "user_id": "u001",
        "role_id": "r-driver",
    }
    assert all(r[0] != "driver" for r in _cells(editor.assignment_table))


def test_sam_activates_driver_for_two_hours_with_a_justification_and_a_countdown_shows(
    sam: Workspace, clock: FixedClock, qtbot: QtBot, said: list[str]
) -> None:
    editor = _editor(sam, qtbot, "sam")
    assert editor.countdown.text() == "No role activated just in time"
    editor.select_assignment("driver", "eligible")
    assert not editor.end_button.isEnabled()
    _click(qtbot, editor.activate_button)
    dialog = editor.dialog
    assert isinstance(dialog, ActivateDialog)
    assert dialog.hours.maximum() == 8  # sam's max_hours
    dialog.hours.setValue(2)
    assert not dialog.ok.isEnabled()  # no justification yet
    QTest.keyClicks(dialog.justification, "   ")
    assert not dialog.ok.isEnabled()  # blanks are not a justification
    QTest.keyClicks(dialog.justification, "Covering the night shift")
    assert dialog.ok.isEnabled()
    _click(qtbot, dialog.ok)

    activation = {"op": "activate_role", "user_id": "sam", "role_id": "r-driver", "hours": 2,
                  "justification": "Covering the night shift"}  # fmt: skip
    assert _pending_ops(sam) == [activation]
    ends = "2026-12-02T12:00:00Z"
    rows = _cells(editor.assignment_table)
    assert ["driver", "eligible, up to 8 h, activated", "permanent"] in rows
    assert ["driver", "activated just in time", f"until {ends} (2 h 0 min left)"] in rows
    assert editor.countdown.text() == "driver activated: 2 h 0 min left"
    assert "driver activated for sam: 2 h 0 min left" in said
    assert [r[4] for r in _cells(editor.permission_table) if r[2] == "drive"] == ["sam → driver"]

    heard = len(said)
    clock.advance(46 * 60)
    editor.tick()
    assert editor.countdown.text() == "driver activated: 1 h 14 min left"
    assert f"until {ends} (1 h 14 min left)" in [r[2] for r in _cells(editor.assignment_table)]
    assert len(said) == heard  # the countdown's ticks are not announced


def test_end_now_queues_deactivate_role_and_says_the_activation_ended(
    sam: Workspace, qtbot: QtBot, said: list[str]
) -> None:
    editor = _editor(sam, qtbot, "sam")
    _activate_driver(editor, qtbot)
    editor.select_assignment("driver", "activation")
    _click(qtbot, editor.end_button)
    assert _pending_ops(sam)[-1] == {
        "op": "deactivate_role",
        "user_id": "sam",
        "role_id": "r-driver",
    }
    assert editor.countdown.text() == "No role activated just in time"
    assert "Activation of driver ended for sam" in said
    assert ["driver", "eligible, up to 8 h, not active", "permanent"] in _cells(
        editor.assignment_table
    )
    assert not [r for r in _cells(editor.permission_table) if r[2] == "drive"]


def test_opening_a_user_whose_activation_is_in_force_announces_nothing_of_it(
    sam: Workspace, qtbot: QtBot, said: list[str]
) -> None:
    editor = _editor(sam, qtbot, "sam")
    _activate_driver(editor, qtbot)
    heard = len(said)
    editor.show_user("vic")
    editor.show_user("sam")
    assert editor.countdown.text() == "driver activated: 2 h 0 min left"
    assert said[heard:] == []  # shown, not news


def test_an_activation_that_runs_out_leaves_the_countdown_and_the_permissions(
    sam: Workspace, clock: FixedClock, qtbot: QtBot, said: list[str]
) -> None:
    editor = _editor(sam, qtbot, "sam")
    _activate_driver(editor, qtbot, hours=1)
    clock.advance(3600)
    editor.tick()
    assert editor.countdown.text() == "No role activated just in time"
    assert "Activation of driver ended for sam" in said
    assert not [r for r in _cells(editor.permission_table) if r[2] == "drive"]


def test_the_countdown_timer_runs_only_while_the_editor_is_shown(
    sam: Workspace, qtbot: QtBot
) -> None:
    editor = UserEditor(sam)
    qtbot.addWidget(editor)
    editor.show_user("sam")
    assert not editor._timer.isActive()
    editor.show()
    assert editor._timer.isActive()
    editor.hide()
    assert not editor._timer.isActive()


def test_time_left_reads_in_days_hours_and_minutes() -> None:
    assert time_left(2 * 3600 + 14 * 60 + 59) == "2 h 14 min left"
    assert time_left(3 * DAY + 7200) == "3 d 2 h left"
    assert time_left(600) == "10 min left"
    assert time_left(30) == "less than 1 min left"


# --- attributes ------------------------------------------------------------------------------


def test_attributes_are_edited_in_the_table_set_from_the_fields_and_removed(
    boss: Workspace, qtbot: QtBot
) -> None:
    editor = _editor(boss, qtbot, "u001")
    table = editor.attribute_table
    assert _cells(table) == [["region", "south"], ["depot", "d1"]]

    table.setCurrentIndex(editor.attribute_model.index(0, 1))
    QTest.keyClick(table, Qt.Key.Key_F2)
    field = table.viewport().findChild(QLineEdit)
    assert field is not None and field.text() == "south"
    field.selectAll()
    QTest.keyClicks(field, "north")
    QTest.keyClick(field, Qt.Key.Key_Return)  # the delegate commits on the next event loop
    qtbot.waitUntil(lambda: boss.pending() != [], timeout=2000)
    assert _pending_ops(boss) == [
        {"op": "set_user_attribute", "user_id": "u001", "key": "region", "value": "north"}
    ]
    assert _cells(table)[0] == ["region", "north"]

    QTest.keyClicks(editor.attribute_key, "level")
    QTest.keyClicks(editor.attribute_value, "3")
    _click(qtbot, editor.add_attribute_button)
    assert _pending_ops(boss)[-1]["value"] == 3  # JSON where it reads as JSON
    QTest.keyClicks(editor.attribute_key, "code")
    QTest.keyClicks(editor.attribute_value, '"7"')
    QTest.keyClick(editor.attribute_value, Qt.Key.Key_Return)
    assert _pending_ops(boss)[-1]["value"] == "7"
    assert _cells(table)[2:] == [["level", "3"], ["code", '"7"']]  # a string that reads as 7

    table.selectRow(1)
    _click(qtbot, editor.remove_attribute_button)
    assert _pending_ops(boss)[-1] == {"op": "set_user_attribute", "user_id": "u001", "key": "depot"}
    assert [row[0] for row in _cells(table)] == ["region", "level", "code"]


def test_the_new_user_form_creates_the_user_with_its_attributes(
    boss: Workspace, qtbot: QtBot
) -> None:
    editor = _editor(boss, qtbot, None)
    assert editor.new_user_box.isVisible() and not editor.assignments_box.isVisible()
    QTest.keyClicks(editor.new_id, "nia")
    QTest.keyClicks(editor.new_name, "Nia Okafor")
    QTest.keyClicks(editor.attribute_key, "region")
    QTest.keyClicks(editor.attribute_value, "north")
    _click(qtbot, editor.add_attribute_button)
    assert boss.pending() == []  # kept in the form until the user is created
    assert _cells(editor.attribute_table) == [["region", "north"]]
    _click(qtbot, editor.create_button)
    assert _pending_ops(boss) == [{"op": "create_user", "user_id": "nia", "name": "Nia Okafor",
                                   "attributes": {"region": "north"}}]  # fmt: skip
    assert editor.user_id == "nia" and editor.title.text() == "nia \u2014 Nia Okafor"
    assert editor.assignments_box.isVisible() and not editor.new_user_box.isVisible()
    assert editor.outcome.text().endswith("create user nia")


def test_a_new_user_without_an_id_is_refused_inline(boss: Workspace, qtbot: QtBot) -> None:
    editor = _editor(boss, qtbot, None)
    _click(qtbot, editor.create_button)
    assert boss.pending() == [] and editor.problem.isVisible()
    assert "user_id" in editor.problem.text()


# --- accessibility and looks -----------------------------------------------------------------


def _focusable(root: QWidget) -> list[QWidget]:
    return [w for w in root.findChildren(QWidget)
            if w.isVisible() and w.focusPolicy() & Qt.FocusPolicy.TabFocus]  # fmt: skip


def _unnamed(root: QWidget) -> list[str]:
    return [w.objectName() or type(w).__name__ for w in _focusable(root)
            if not w.accessibleName()]  # fmt: skip


def test_every_focusable_widget_of_the_editor_and_its_dialogs_is_named(
    sam: Workspace, boss: Workspace, qtbot: QtBot
) -> None:
    editor = _editor(sam, qtbot, "sam")
    assert editor.accessibleName() == "User editor"
    assert len(_focusable(editor)) >= 12
    assert _unnamed(editor) == []
    editor.select_assignment("driver", "eligible")
    _click(qtbot, editor.activate_button)
    assert editor.dialog is not None and _unnamed(editor.dialog) == []
    editor.dialog.reject()

    admin = _editor(boss, qtbot, "u001")
    _click(qtbot, admin.eligible_button)
    picker = _picker(admin)
    QTest.mouseClick(picker.expires_check, Qt.MouseButton.LeftButton)
    assert _unnamed(picker) == []
    picker.reject()

    form = _editor(boss, qtbot, None)
    assert _unnamed(form) == []


def test_tab_goes_through_the_editor_in_reading_order_without_a_trap(
    boss: Workspace, qtbot: QtBot
) -> None:
    editor = _editor(boss, qtbot, "vic")
    with qtbot.waitActive(editor):
        editor.activateWindow()
    editor.suspend_button.setFocus()
    seen: list[str] = []
    for _ in range(14):
        focused = QApplication.focusWidget()
        assert focused is not None
        seen.append(focused.objectName())
        QTest.keyClick(focused, Qt.Key.Key_Tab)
    order = ["suspend", "attribute-table", "attribute-key", "attribute-value", "set-attribute",
             "assignment-table", "assign-role", "make-eligible", "permission-table"]  # fmt: skip
    assert seen[: len(order)] == order
    assert seen[len(order)] == "suspend"  # round again: no control keeps the focus


@pytest.fixture
def themed() -> Iterator[QApplication]:
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    kept = app.palette()
    yield app
    apply_theme(app, "standard")
    app.setPalette(kept)


@pytest.mark.parametrize("theme", ["standard", "high-contrast"])
def test_a_screenshot_with_an_activation_counting_down_in_each_theme(
    sam: Workspace,
    boss: Workspace,
    clock: FixedClock,
    qtbot: QtBot,
    themed: QApplication,
    theme: str,
) -> None:
    attributes = {"region": "north", "depot": "d2", "licence": "C1"}
    boss.queue([{"op": "set_user_attribute", "user_id": "sam", "key": key, "value": value}
                for key, value in attributes.items()])  # fmt: skip
    apply_theme(themed, theme)
    editor = _editor(sam, qtbot, "sam")
    _activate_driver(editor, qtbot)
    clock.advance(46 * 60)
    editor.tick()
    editor.select_assignment("driver", "activation")
    qtbot.wait(10)
    assert "1 h 14 min left" in editor.countdown.text()
    ui_fixtures.SCREENSHOTS.mkdir(exist_ok=True)
    image = editor.grab()
    assert not image.isNull()
    assert image.save(str(ui_fixtures.SCREENSHOTS / f"user-editor-{theme}.png"))
