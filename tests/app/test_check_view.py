"""app.ui.check_view: check a request against the replica's view through the widgets,
see why, turn a ranked fix into a pending edit, and ask who can; by keyboard, named
for screen readers; screenshots in both themes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QWidget

from app.ui import check_view
from app.ui.check_view import PAGE, CheckView, WhoCanModel, parse_value, value_text
from app.ui.theme import apply_theme
from app.ui.workspace import Workspace
from tests.app import ui_fixtures
from tests.app.ui_fixtures import cheap_argon2, memory_keyring, ui_replica, workspace  # noqa: F401


@pytest.fixture
def view(workspace: Workspace, qtbot) -> Iterator[CheckView]:  # noqa: F811
    shown = CheckView(workspace)
    qtbot.addWidget(shown)
    shown.resize(1180, 720)
    shown.show()
    qtbot.waitExposed(shown)
    yield shown


def fill(
    view: CheckView,
    qtbot,
    user: str,
    action: str,
    resource_type: str = "vehicle",
    resource_id: str = "",
    pairs: dict[str, str] | None = None,
) -> None:
    """Fill the form as a person would: type the user, pick type and action, type the
    id, and type each key and value into a new row of the table."""
    view.user.clear()
    qtbot.keyClicks(view.user, user)
    view.type.setCurrentText(resource_type)
    view.action.setCurrentText(action)
    assert view.action.currentText() == action
    view.resource_id.clear()
    qtbot.keyClicks(view.resource_id, resource_id)
    view.pairs.clear()
    for key, text in (pairs or {}).items():
        qtbot.mouseClick(view.pairs.add, Qt.MouseButton.LeftButton)
        for column, typed in ((0, key), (1, text)):
            index = view.pairs.model.index(view.pairs.model.rowCount() - 1, column)
            view.pairs.table.setCurrentIndex(index)
            view.pairs.table.edit(index)
            editor = QApplication.focusWidget()
            assert editor is not None
            qtbot.keyClicks(editor, typed)
            qtbot.keyClick(editor, Qt.Key.Key_Return)


def check(view: CheckView, qtbot) -> None:
    qtbot.mouseClick(view.check_button, Qt.MouseButton.LeftButton)


def fix_labels(view: CheckView) -> list[str]:
    return [f.label for f in view.fix_model.fixes]


# --- checking -----------------------------------------------------------------------------


def test_vic_driving_a_vehicle_is_denied_with_the_reason_the_trace_and_fixes(
    view: CheckView, qtbot
) -> None:
    messages: list[str] = []
    view.message.connect(messages.append)
    fill(view, qtbot, "vic", "drive", resource_id="v-1")
    check(view, qtbot)
    assert view.verdict.text() == "Denied"
    assert view.verdict_icon.pixmap() is not None and not view.verdict_icon.pixmap().isNull()
    assert view.verdict_icon.accessibleName() == "Denied icon"
    assert view.reason.text() == "Reason: no grant matches vehicle drive"
    trace = view.trace_model.stringList()
    assert trace[0].startswith("request: user 'vic' drive vehicle:v-1")
    assert trace[-1] == "decision: denied: no grant matches vehicle drive"
    assert view.fixes_box.isVisible() and not view.grants_box.isVisible()
    assert fix_labels(view)[0] == "assign role driver to vic"
    assert view.fix_list.currentIndex().row() == 0
    assert view.note.text().startswith("Based on the replica's confirmed policy")
    assert messages == ["vic drive vehicle v-1: Denied, no grant matches vehicle drive"]


def test_making_the_top_fix_a_pending_edit_queues_it_and_the_check_says_allowed(
    view: CheckView,
    workspace: Workspace,  # noqa: F811
    qtbot,
) -> None:
    messages: list[str] = []
    view.message.connect(messages.append)
    fill(view, qtbot, "vic", "drive", resource_id="v-1")
    check(view, qtbot)
    assert view.apply_button.text() == "Make it a pending &edit"
    before = len(workspace.pending())
    qtbot.mouseClick(view.apply_button, Qt.MouseButton.LeftButton)
    pending = workspace.pending()
    assert len(pending) == before + 1
    assert pending[-1].edit["op"] == "assign_role" and pending[-1].edit["user_id"] == "vic"
    assert view.verdict.text() == "Allowed"
    assert view.grants_box.isVisible() and not view.fixes_box.isVisible()
    assert view.note.text().startswith("Based on the replica's view including 1 pending edit")
    assert messages[-1] == (
        f"Queued edit {pending[-1].seq}: assign role driver to vic; the request is now allowed"
    )
    assert view.outcome.text() == messages[-1]


def test_sam_is_offered_activating_his_eligible_driver_role_first_with_a_justification(
    view: CheckView,
    workspace: Workspace,  # noqa: F811
    qtbot,
) -> None:
    fill(view, qtbot, "sam", "drive")
    check(view, qtbot)
    assert view.verdict.text() == "Denied"
    assert fix_labels(view)[0].startswith("activate eligible role driver for sam")
    assert "assign role driver to sam" in fix_labels(view)[1:]
    assert view.justification.isEnabled()
    view.justification.clear()
    qtbot.keyClicks(view.justification, "Covering the 14:00 route")
    view.fix_list.setFocus()
    qtbot.keyClick(view.fix_list, Qt.Key.Key_Return)  # Enter on the chosen fix
    (row,) = workspace.pending()
    assert row.edit["op"] == "activate_role"
    assert row.edit["justification"] == "Covering the 14:00 route"
    assert view.verdict.text() == "Allowed"


def test_a_fix_that_changes_the_request_fills_the_form_and_queues_nothing(
    view: CheckView,
    workspace: Workspace,  # noqa: F811
    qtbot,
) -> None:
    # u001 is a night dispatcher in the south: a northern vehicle at 21:00 is not theirs.
    fill(view, qtbot, "u001", "drive", pairs={"resource.region": "north", "context.hour": "21"})
    check(view, qtbot)
    assert view.verdict.text() == "Denied"
    assert fix_labels(view)[0] == 'resource.region would have to be "south"'
    assert view.apply_button.text() == "Try this r&equest"
    assert not view.justification.isEnabled()
    qtbot.mouseClick(view.apply_button, Qt.MouseButton.LeftButton)
    assert workspace.pending() == []
    assert dict(view.pairs.pairs())["resource.region"] == "south"
    assert view.verdict.text() == "Allowed"
    assert view.outcome.text().startswith("Changed the request: resource.region")


def test_an_allowed_request_shows_the_grants_it_relies_on(view: CheckView, qtbot) -> None:
    fill(view, qtbot, "vic", "read")
    check(view, qtbot)
    assert view.verdict.text() == "Allowed"
    assert view.verdict_icon.accessibleName() == "Allowed icon"
    assert view.grant_model.stringList() == [
        "grant vehicle read via vic -> viewer (role viewer grants[0], decides)"
    ]
    assert view.fix_model.rowCount() == 0


def test_the_context_time_is_the_requests_when_now_is_not_ticked(
    view: CheckView,
    workspace: Workspace,  # noqa: F811
    qtbot,
) -> None:
    fill(view, qtbot, "vic", "read")
    assert not view.time.isEnabled()
    qtbot.mouseClick(view.now, Qt.MouseButton.LeftButton)
    assert view.time.isEnabled()
    later = (workspace.now()[0] + 3 * 86400, "")
    view.set_time(later)
    request = view.request()
    assert request is not None and request.time == later
    check(view, qtbot)
    assert "(context.time)" in view.trace_model.stringList()[0]


def test_an_unknown_user_is_denied_with_no_fix_and_an_empty_user_is_asked_for(
    view: CheckView, qtbot
) -> None:
    fill(view, qtbot, "nobody", "drive")
    check(view, qtbot)
    assert view.verdict.text() == "Denied"
    assert view.reason.text() == "Reason: unknown user 'nobody'"
    assert view.fix_model.rowCount() == 0 and not view.apply_button.isEnabled()
    view.user.clear()
    check(view, qtbot)
    assert view.verdict.text() == "Not checked yet"
    assert view.reason.text() == "Enter the id of a user to check."


def test_a_fix_the_author_may_not_make_says_why_and_queues_nothing(
    ui_replica,  # noqa: F811
    qtbot,
) -> None:
    as_vic = Workspace(ui_replica, "vic")
    shown = CheckView(as_vic)
    qtbot.addWidget(shown)
    messages: list[str] = []
    shown.message.connect(messages.append)
    fill(shown, qtbot, "vic", "drive")
    check(shown, qtbot)
    shown.apply_fix(0)
    assert as_vic.pending() == []
    assert "vic may not make it" in shown.outcome.text()
    assert messages[-1] == shown.outcome.text()
    assert shown.verdict.text() == "Denied"


def test_a_queued_edit_elsewhere_checks_the_request_again(
    view: CheckView,
    workspace: Workspace,  # noqa: F811
    qtbot,
) -> None:
    fill(view, qtbot, "vic", "drive")
    check(view, qtbot)
    workspace.queue([{"op": "assign_role", "user_id": "vic", "role_id": "driver"}])
    assert view.verdict.text() == "Allowed"


def test_the_verdict_is_announced_when_checked_and_when_the_view_changes_it(
    view: CheckView,
    workspace: Workspace,  # noqa: F811
    qtbot,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spoken: list[str] = []
    monkeypatch.setattr(check_view, "announce", lambda _widget, text: spoken.append(text))
    fill(view, qtbot, "vic", "drive")
    check(view, qtbot)
    assert spoken == ["Denied. no grant matches vehicle drive. 1 change would allow it"]
    workspace.queue([{"op": "assign_role", "user_id": "u000", "role_id": "driver"}])
    assert len(spoken) == 1  # the same verdict: nothing new to say
    workspace.queue([{"op": "assign_role", "user_id": "vic", "role_id": "driver"}])
    assert spoken[-1] == "Allowed. granted by role driver: vehicle drive"


# --- keyboard -----------------------------------------------------------------------------


def test_enter_in_a_field_and_ctrl_return_anywhere_check(view: CheckView, qtbot) -> None:
    fill(view, qtbot, "vic", "drive")
    qtbot.keyClick(view.resource_id, Qt.Key.Key_Return)
    assert view.verdict.text() == "Denied"
    view.action.setCurrentText("read")
    view.action.setFocus()
    qtbot.keyClick(view.action, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert view.verdict.text() == "Allowed"


def test_tab_moves_through_the_form_in_reading_order(view: CheckView, qtbot) -> None:
    view.user.setFocus()
    seen = []
    for _ in range(10):
        widget = QApplication.focusWidget()
        assert widget is not None
        seen.append(widget.objectName())
        qtbot.keyClick(widget, Qt.Key.Key_Tab)
    order = ["check-user", "check-type", "check-action", "check-resource-id",
             "check-pairs-table", "check-add-row", "check-remove-row", "check-now"]  # fmt: skip
    assert seen[: len(order)] == order


def test_the_user_field_completes_from_the_views_user_ids(view: CheckView, qtbot) -> None:
    qtbot.keyClicks(view.user, "u03")
    completer = view.completer
    completer.setCompletionPrefix("u03")
    found = [completer.completionModel().index(i, 0).data()
             for i in range(completer.completionCount())]  # fmt: skip
    assert found == [f"u03{i}" for i in range(10)]


# --- who can ------------------------------------------------------------------------------


def _who_can(view: CheckView, qtbot, action: str, pairs: dict[str, str]) -> list[str]:
    view.tabs.setCurrentIndex(1)
    view.who_type.setCurrentText("vehicle")
    view.who_action.setCurrentText(action)
    view.who_pairs.clear()
    for key, text in pairs.items():
        view.who_pairs.set_value(key, parse_value(text))
    qtbot.mouseClick(view.who_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not view.who_busy, timeout=10_000)  # worked out on a worker
    model = view.who_model
    return [model.index(row, 0).data() for row in range(model.rowCount())]


def test_who_can_drive_a_northern_vehicle_at_night_lists_the_northern_dispatchers(
    view: CheckView,
    workspace: Workspace,  # noqa: F811
    qtbot,
) -> None:
    found = _who_can(view, qtbot, "drive", {"resource.region": "north", "context.hour": "21"})
    # ui_fixtures: u<i> is in the north for even i, a (senior) night dispatcher when i % 3 > 0.
    expected = [f"u{i:03}" for i in range(40) if i % 2 == 0 and i % 3 > 0]
    assert found == expected
    assert view.who_count.text() == f"{len(expected)} users can drive vehicle"
    assert view.who_model.index(0, 1).data() == "Person 2"
    assert view.who_model.index(0, 2).data().startswith("granted by role night-dispatcher")
    workspace.queue([{"op": "assign_role", "user_id": "vic", "role_id": "driver"}])
    qtbot.waitUntil(lambda: not view.who_busy, timeout=10_000)
    assert view.who_model.user_id(0) == "vic"  # refreshed: vic comes first in the policy
    assert view.who_count.text() == f"{len(expected) + 1} users can drive vehicle"


def test_who_can_with_nobody_allowed_says_so(view: CheckView, qtbot) -> None:
    assert _who_can(view, qtbot, "refuel", {}) == []
    assert view.who_count.text() == "0 users can refuel vehicle"


def test_a_who_can_answer_of_50000_users_reaches_the_view_a_page_at_a_time() -> None:
    model = WhoCanModel()
    model.set_found([(f"u{i:05}", "", "granted") for i in range(50_000)])
    assert model.total == 50_000 and model.rowCount() == PAGE
    assert model.canFetchMore()
    model.fetchMore()
    assert model.rowCount() == 2 * PAGE


def test_values_typed_in_the_table_are_json_when_they_parse() -> None:
    assert parse_value("20") == 20
    assert parse_value("north") == "north"
    assert parse_value('"20"') == "20"
    assert parse_value('["a"]') == ["a"]
    for value in ("north", "20", 20, True, ["a"]):
        assert parse_value(value_text(value)) == value


# --- accessibility and screenshots --------------------------------------------------------


def _focusable(root: QWidget) -> list[QWidget]:
    return [w for w in root.findChildren(QWidget)
            if w.isVisible() and w.focusPolicy() & Qt.FocusPolicy.TabFocus]  # fmt: skip


def test_every_focusable_control_has_an_accessible_name(view: CheckView, qtbot) -> None:
    fill(view, qtbot, "vic", "drive")
    check(view, qtbot)
    unnamed = [w.objectName() or type(w).__name__ for w in _focusable(view)
               if not w.accessibleName()]  # fmt: skip
    assert unnamed == []
    view.tabs.setCurrentIndex(1)
    qtbot.mouseClick(view.who_button, Qt.MouseButton.LeftButton)
    unnamed = [w.objectName() or type(w).__name__ for w in _focusable(view)
               if not w.accessibleName()]  # fmt: skip
    assert unnamed == []
    assert view.objectName() == "check-view" and view.accessibleName() == "Check and explain"


@pytest.mark.parametrize("theme", ["standard", "high-contrast"])
def test_a_screenshot_of_each_state_in_each_theme(view: CheckView, qtbot, theme: str) -> None:
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    apply_theme(app, theme)
    try:
        ui_fixtures.SCREENSHOTS.mkdir(exist_ok=True)
        fill(view, qtbot, "vic", "drive", resource_id="v-1",
             pairs={"resource.region": "north", "context.hour": "9"})  # fmt: skip
        check(view, qtbot)
        qtbot.wait(10)
        assert view.grab().save(str(ui_fixtures.SCREENSHOTS / f"check-{theme}.png"))
        fill(view, qtbot, "vic", "read", resource_id="v-1")
        check(view, qtbot)
        qtbot.wait(10)
        assert view.grab().save(str(ui_fixtures.SCREENSHOTS / f"check-allowed-{theme}.png"))
        _who_can(view, qtbot, "drive", {"resource.region": "north", "context.hour": "21"})
        qtbot.wait(10)
        assert view.grab().save(str(ui_fixtures.SCREENSHOTS / f"check-who-can-{theme}.png"))
    finally:
        apply_theme(app, "standard")


def test_the_completer_is_given_only_the_ids_starting_with_what_was_typed(
    view: CheckView, qtbot
) -> None:
    view.user.clear()
    qtbot.keyClicks(view.user, "U01")  # case does not matter
    suggested = view.completer.model().stringList()
    assert suggested == [f"u{i:03}" for i in range(10, 20)]
    qtbot.keyClicks(view.user, "7")
    assert view.completer.model().stringList() == ["u017"]


def test_a_hidden_check_view_checks_again_only_when_it_is_shown(
    view: CheckView,
    workspace: Workspace,  # noqa: F811
    qtbot,
) -> None:
    fill(view, qtbot, "vic", "drive", resource_id="v-1")
    check(view, qtbot)
    assert view.verdict.text() == "Denied"
    view.hide()
    workspace.queue([{"op": "assign_role", "user_id": "vic", "role_id": "driver"}])
    assert view.verdict.text() == "Denied"  # not re-checked behind the person's back
    view.show()
    qtbot.waitUntil(lambda: view.verdict.text() == "Allowed", timeout=5_000)


def test_after_an_edit_only_the_tab_shown_is_worked_out_again(
    view: CheckView,
    workspace: Workspace,  # noqa: F811
    qtbot,
) -> None:
    fill(view, qtbot, "vic", "drive", resource_id="v-1")
    check(view, qtbot)
    view.tabs.setCurrentIndex(1)
    view.who_type.setCurrentText("vehicle")
    view.who_action.setCurrentText("drive")
    view.find_who_can()
    qtbot.waitUntil(lambda: not view.who_busy, timeout=10_000)
    before = view.who_count.text()
    view.tabs.setCurrentIndex(0)
    workspace.queue([{"op": "assign_role", "user_id": "vic", "role_id": "driver"}])
    assert view.verdict.text() == "Allowed"  # the shown tab, at once
    assert view.who_count.text() == before  # the hidden tab, not yet
    view.tabs.setCurrentIndex(1)
    qtbot.waitUntil(lambda: not view.who_busy, timeout=10_000)
    assert view.who_count.text() != before  # vic can drive now: worked out when shown


def test_an_edit_queued_while_who_can_is_worked_out_is_not_answered_with_the_old_view(
    view: CheckView,
    workspace: Workspace,  # noqa: F811
    qtbot,
) -> None:
    view.tabs.setCurrentIndex(1)
    view.who_type.setCurrentText("vehicle")
    view.who_action.setCurrentText("drive")
    view.find_who_can()  # on a worker: the edit below waits for it, then asks again
    workspace.queue([{"op": "assign_role", "user_id": "vic", "role_id": "driver"}])
    qtbot.waitUntil(lambda: not view.who_busy, timeout=10_000)
    assert "vic" in [view.who_model.user_id(r) for r in range(view.who_model.rowCount())]
