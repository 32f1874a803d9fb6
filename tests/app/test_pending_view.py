"""app.ui.pending_view: pending edits listed in words, their exact impact against the
confirmed policy, undo and redo through the keyboard, take-back asking before a deletion,
named for screen readers; screenshots in both themes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QWidget

from app.replica import Replica
from app.ui.pending_view import ALL, SELECTED, PendingView, local_time
from app.ui.theme import apply_theme
from app.ui.workspace import Workspace
from sync.policy.document import parse_policy
from sync.policy.instant import parse_instant
from sync.replication.digest import digest_of
from sync.replication.entities import policy_entities
from tests.app.test_client_cli import SYNCED
from tests.app.ui_fixtures import (  # noqa: F401
    SCREENSHOTS,
    cheap_argon2,
    memory_keyring,
    ui_policy,
    ui_replica,
    workspace,
)

ASSIGN = {"op": "assign_role", "user_id": "vic", "role_id": "driver"}
CTRL = Qt.KeyboardModifier.ControlModifier
SHIFT = Qt.KeyboardModifier.ShiftModifier


@pytest.fixture
def view(workspace: Workspace, qtbot: Any) -> Iterator[PendingView]:  # noqa: F811
    shown = PendingView(workspace)
    qtbot.addWidget(shown)
    shown.resize(980, 680)
    shown.show()
    qtbot.waitExposed(shown)
    messages: list[str] = []
    shown.message.connect(messages.append)
    shown.messages = messages  # type: ignore[attr-defined]
    yield shown


def _cells(table: Any) -> list[list[str]]:
    model = table.model()
    return [
        [model.index(r, c).data() for c in range(model.columnCount())]
        for r in range(model.rowCount())
    ]


def _impact(view: PendingView) -> list[tuple[str, str, str]]:
    return [(row[0], row[1], row[3]) for row in _cells(view.impact_table)]


def _sync(replica: Replica, document: dict[str, Any], version: int = 8) -> None:
    """What a snapshot from the server does: the confirmed policy becomes `document`."""
    entities = list(policy_entities(parse_policy(document, now=parse_instant(SYNCED))))
    replica.replace_all(version, entities, digest_of(entities))


def test_the_table_lists_pending_edits_in_words_with_local_time(
    view: PendingView,
    workspace: Workspace,  # noqa: F811
) -> None:
    until = {**ASSIGN, "expires": "2026-12-05T00:00:00Z"}
    seqs = workspace.queue([until, {"op": "suspend_user", "user_id": "u001"}])
    rows = _cells(view.table)
    made = workspace.pending()[0].made_at
    assert rows == [
        [str(seqs[0]), "assign role driver to vic until 2026-12-05T00:00:00Z", local_time(made),
         "Yes"],
        [str(seqs[1]), "suspend user u001", local_time(made), "Yes"],
    ]  # fmt: skip
    assert view.count.text() == "2 pending edits"
    tip = view.pending_model.index(0, 2).data(Qt.ItemDataRole.ToolTipRole)
    assert tip == f"{made} (UTC)"


def test_the_impact_lists_vic_gaining_vehicle_drive_after_assign_driver(
    view: PendingView,
    workspace: Workspace,  # noqa: F811
) -> None:
    assert view.summary.text() == "No pending edits: nothing would change."
    workspace.queue([ASSIGN])
    assert _impact(view) == [("Gain", "vehicle drive", "vic")]
    assert view.summary.text() == "Access changes for 1 user."
    assert view.users_model.rowCount() == 1
    assert view.users_model.index(0).data() == "vic"
    assert view.users_count.text() == "1 user: gain vehicle drive"


def test_a_conditional_grant_keeps_its_condition_and_inherited_grants_show(
    view: PendingView,
    workspace: Workspace,  # noqa: F811
) -> None:
    workspace.queue([{"op": "assign_role", "user_id": "sam", "role_id": "night-dispatcher"}])
    assert _impact(view) == [
        ("Gain", "vehicle drive when (resource.region = $user.region and context.hour >= 20)",
         "sam"),
        ("Gain", "vehicle read", "sam"),  # through viewer, which night-dispatcher inherits
        ("Now denied", "vehicle refuel", "sam"),
    ]  # fmt: skip


def test_thousands_are_counted_and_the_users_list_pages(
    view: PendingView,
    workspace: Workspace,  # noqa: F811
) -> None:
    deny = {"op": "add_rule", "owner": "role:viewer", "effect": "deny",
            "rule": {"resource": "vehicle", "actions": ["read"]}}  # fmt: skip
    workspace.queue([deny])
    ((change, what, users, who),) = _cells(view.impact_table)
    # vic and the 40 u-users hold viewer, directly or through night/senior-dispatcher.
    assert (change, what, users) == ("Now denied", "vehicle read", "41")
    assert who == "vic, u000, u001 and 38 more"
    assert view.users_count.text() == "41 users: now denied vehicle read"
    assert view.users_model.index(1).data() == "u000 (Person 0)"


def test_undo_queues_a_compensating_edit_and_redo_brings_the_edit_back(
    view: PendingView,
    workspace: Workspace,  # noqa: F811
    qtbot: Any,
) -> None:
    assert not view.undo_action.isEnabled() and not view.redo_action.isEnabled()
    (first,) = workspace.queue([ASSIGN])
    assert view.undo_action.isEnabled() and not view.redo_action.isEnabled()
    assert view.undo_action.statusTip() == f"Take back edit {first}: assign role driver to vic"
    view.table.setFocus()
    qtbot.keyClick(view.table, Qt.Key.Key_Z, CTRL)
    pending = workspace.pending()
    assert [row.cancels for row in pending] == [None, first]
    assert _impact(view) == []
    assert view.summary.text() == "No one's access changes."
    assert view.messages[-1] == (  # type: ignore[attr-defined]
        f"Took back edit {first} (assign role driver to vic): queued edit {pending[1].seq}"
    )
    assert view.status.text() == view.messages[-1]  # type: ignore[attr-defined]
    # Nothing left to undo: the edit is taken back and the take-back is not undone by undo.
    assert not view.undo_action.isEnabled() and view.redo_action.isEnabled()
    assert view.redo_action.statusTip() == "Queue again: assign role driver to vic"

    qtbot.keyClick(view.table, Qt.Key.Key_Z, CTRL | SHIFT)
    again = workspace.pending()[-1]
    assert again.cancels is None and again.edit["op"] == "assign_role"
    assert _impact(view) == [("Gain", "vehicle drive", "vic")]
    assert view.messages[-1] == f"Queued edit {again.seq} again: assign role driver to vic"  # type: ignore[attr-defined]
    assert not view.redo_action.isEnabled() and view.undo_action.isEnabled()

    # Ctrl+Y redoes too.
    qtbot.keyClick(view.table, Qt.Key.Key_Z, CTRL)
    assert _impact(view) == []
    qtbot.keyClick(view.table, Qt.Key.Key_Y, CTRL)
    assert _impact(view) == [("Gain", "vehicle drive", "vic")]


def test_an_edit_queued_by_anyone_else_clears_redo(
    view: PendingView,
    workspace: Workspace,  # noqa: F811
) -> None:
    workspace.queue([ASSIGN])
    view.undo_action.trigger()
    assert view.redo_action.isEnabled()
    workspace.queue([{"op": "suspend_user", "user_id": "u002"}])
    assert not view.redo_action.isEnabled()
    view.redo_action.trigger()  # disabled: nothing happens
    assert view.redo_action.statusTip() == "Nothing to redo"


def test_undo_takes_back_the_selected_edit(
    view: PendingView,
    workspace: Workspace,  # noqa: F811
) -> None:
    first, second = workspace.queue([ASSIGN, {"op": "suspend_user", "user_id": "u002"}])
    assert view.undo_target() is not None and view.undo_target().seq == second  # type: ignore[union-attr]
    assert view.select_seq(first)
    view.undo_action.trigger()
    assert [row.cancels for row in workspace.pending()][2:] == [first]
    assert [c for c, _w, _u in _impact(view)] == ["Suspended"]


def test_take_back_asks_only_for_a_deletion(
    view: PendingView,
    workspace: Workspace,  # noqa: F811
    qtbot: Any,
) -> None:
    asked: list[str] = []
    answers = [False, True]

    def answer(_parent: QWidget, _title: str, question: str) -> bool:
        asked.append(question)
        return answers.pop(0)

    view.confirm = answer
    (assign,) = workspace.queue([ASSIGN])
    view.select_seq(assign)
    qtbot.mouseClick(view.take_back_button, Qt.MouseButton.LeftButton)
    assert asked == [] and workspace.pending()[-1].cancels == assign

    (delete,) = workspace.queue([{"op": "delete_user", "user_id": "u003"}])
    assert [c for c, _w, _u in _impact(view)][-1] == "Lose"
    view.select_seq(delete)
    qtbot.mouseClick(view.take_back_button, Qt.MouseButton.LeftButton)
    assert len(asked) == 1 and f"Take back edit {delete} (delete user u003)?" in asked[0]
    assert workspace.pending()[-1].seq == delete  # kept: the answer was no
    assert view.messages[-1] == f"Kept edit {delete}: delete user u003"  # type: ignore[attr-defined]
    view.select_seq(delete)
    qtbot.keyClick(view.take_back_button, Qt.Key.Key_Space)
    assert workspace.pending()[-1].cancels == delete
    assert _impact(view) == []


def test_the_selected_edit_alone_shows_its_own_impact(
    view: PendingView,
    workspace: Workspace,  # noqa: F811
) -> None:
    first, second = workspace.queue([ASSIGN, {"op": "suspend_user", "user_id": "vic"}])
    assert [c for c, _w, _u in _impact(view)] == ["Suspended"]  # together: vic is suspended
    view.scope.setCurrentIndex(SELECTED)
    assert view.summary.text() == "Select a pending edit above to see its impact alone."
    view.select_seq(first)
    assert _impact(view) == [("Gain", "vehicle drive", "vic")]
    view.select_seq(second)
    assert _impact(view) == [("Suspended", "every permission (2)", "vic")]
    assert view.impact(ALL) is not None


def test_a_pending_edit_that_no_longer_applies_is_marked_with_why(
    view: PendingView,
    workspace: Workspace,  # noqa: F811
) -> None:
    (seq,) = workspace.queue([ASSIGN])
    document = ui_policy()
    document["roles"] = [r for r in document["roles"] if r["name"] != "driver"]
    for user in document["users"]:
        user["roles"] = [a for a in user.get("roles", []) if a["role"] != "driver"]
    _sync(workspace.replica, document)
    workspace.reload()
    ((_seq, _what, _made, applies),) = _cells(view.table)
    assert applies == "No: no role with id 'r-driver'"
    assert view.count.text() == "1 pending edit, 1 not applying to the view"
    assert _impact(view) == [("Does not apply", f"Edit {seq}: no role with id 'r-driver'", "")]
    assert view.summary.text() == "No one's access changes. 1 edit would not apply."
    assert not view.undo_action.isEnabled()  # it changes nothing to take back


def test_a_constraint_the_pending_edits_would_break_names_the_users(
    view: PendingView,
    workspace: Workspace,  # noqa: F811
) -> None:
    (seq,) = workspace.queue([ASSIGN])
    document = ui_policy()
    document["constraints"] = [{"name": "drive-or-view", "exclusive": ["viewer", "driver"]}]
    _sync(workspace.replica, document)
    workspace.reload()
    rows = _impact(view)
    assert rows[0][0] == "Does not apply" and "drive-or-view" in rows[0][1]
    assert rows[1] == ("Breaks constraint", f"Edit {seq}: drive-or-view (viewer and driver)", "vic")


def test_every_focusable_widget_has_an_accessible_name(
    view: PendingView,
    workspace: Workspace,  # noqa: F811
) -> None:
    workspace.queue([ASSIGN])
    focusable = [
        w
        for w in view.findChildren(QWidget)
        if w.isVisible() and w.focusPolicy() & Qt.FocusPolicy.TabFocus
    ]
    names = {w.objectName() for w in focusable}
    assert names >= {"pending-table", "pending-take-back", "pending-undo-button", "pending-scope"}
    assert [w.objectName() or type(w).__name__ for w in focusable if not w.accessibleName()] == []
    assert view.undo_action.text() == "&Undo" and view.redo_action.text() == "&Redo"
    assert view.undo_action.objectName() == "pending-undo"


@pytest.mark.parametrize("theme", ["standard", "high-contrast"])
def test_a_screenshot_in_each_theme(
    view: PendingView,
    workspace: Workspace,  # noqa: F811
    qtbot: Any,
    theme: str,
) -> None:
    workspace.queue([
        {**ASSIGN, "expires": "2026-12-05T00:00:00Z"},
        {"op": "assign_role", "user_id": "sam", "role_id": "night-dispatcher"},
        {"op": "add_rule", "owner": "role:viewer", "effect": "deny",
         "rule": {"resource": "vehicle", "actions": ["read"], "when": {"context.hour": {"lt": 6}}}},
        {"op": "suspend_user", "user_id": "u004"},
    ])  # fmt: skip
    view.impact_table.selectRow(2)
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    apply_theme(app, theme)
    try:
        SCREENSHOTS.mkdir(exist_ok=True)
        qtbot.wait(10)
        image = view.grab()
        assert not image.isNull()
        assert image.save(str(SCREENSHOTS / f"pending-{theme}.png"))
    finally:
        apply_theme(app, "standard")
