"""app.ui.outcomes_view: refused, superseded and conflicting edits of a real replica, as
the server answered a push (`Replica.record_outcomes`), reviewed through the widgets:
both values side by side, keep the server's, reapply mine, discard after asking."""

from __future__ import annotations

from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QWidget

from app.replica import Replica
from app.ui.outcomes_view import OutcomesView
from app.ui.theme import apply_theme
from app.ui.wording import describe_edit
from app.ui.workspace import Workspace
from sync.policy.instant import parse_instant
from sync.protocol.messages import Change, Conflict, Outcome, Result
from sync.replication.entities import ROLE, Entity
from tests.app import ui_fixtures
from tests.app.ui_fixtures import cheap_argon2, memory_keyring, ui_replica, workspace  # noqa: F401

ANSWERED = "2026-12-02T10:00:00Z"
RENAME = {"op": "rename_role", "role_id": "r-driver", "name": "chauffeur"}
REGRANT = {"op": "add_rule", "owner": "role:r-driver", "effect": "grant",
           "rule": {"resource": "vehicle", "actions": ["read"]}}  # fmt: skip
ASSIGN = {"op": "assign_role", "user_id": "vic", "role_id": "r-clerk"}


CHANGED_AT = "2026-12-02T09:30:00Z"


def _server_renamed_driver(replica: Replica, version: int) -> None:
    """Ann renamed driver to motorist at `version` on another device: the change a sync
    brings, with its author, device and the server's time."""
    (driver,) = [e for e in replica.entities() if e.kind == ROLE and e.id == "r-driver"]
    document = dict(driver.document) | {"name": "motorist"}
    change = Change(version, {"op": "rename_role", "role_id": "r-driver", "name": "motorist"},
                    "ann", "d-ann", "c-ann", 4, CHANGED_AT)  # fmt: skip
    replica.apply_changes(version, [Entity(ROLE, "r-driver", document)], 12345, [change])


@pytest.fixture
def answered(workspace: Workspace) -> dict[str, int]:  # noqa: F811
    """Three edits pushed and answered: a conflict, a superseded grant, a refusal."""
    rename, regrant, assign = workspace.queue([RENAME, REGRANT, ASSIGN])
    replica, client = workspace.replica, workspace.replica.client
    _server_renamed_driver(replica, 9)
    replica.record_outcomes(
        [
            Result(client, rename, Outcome.CONFLICT, 9, "concurrent_change",
                   "role r-driver name was changed by someone else at version 9, after "
                   "version 7 that this edit was made against; the server keeps its value",
                   Conflict("role r-driver name", "motorist", "chauffeur")),
            # Version 8 came within the snapshot: the replica has no history of it.
            Result(client, regrant, Outcome.REJECTED, 8, "superseded",
                   "role r-driver grants vehicle read was narrowed by someone else at "
                   "version 8, after version 7 that this edit was made against"),
            Result(client, assign, Outcome.REJECTED, None, "forbidden",
                   "boss may not assign clerk: needs role assign"),
        ],
        parse_instant(ANSWERED),
    )  # fmt: skip
    workspace.reload()  # as a sync does once the cursor moved
    return {"rename": rename, "regrant": regrant, "assign": assign}


@pytest.fixture
def view(workspace: Workspace, answered: dict[str, int], qtbot: Any) -> OutcomesView:  # noqa: F811
    shown = OutcomesView(workspace)
    qtbot.addWidget(shown)
    shown.resize(980, 640)
    shown.show()
    qtbot.waitExposed(shown)
    return shown


def _selected_seq(view: OutcomesView) -> int | None:
    selected = view.selected()
    return selected.seq if selected is not None else None


def _column(view: OutcomesView, column: int) -> list[str]:
    model = view.model
    return [model.index(row, column).data() for row in range(model.rowCount())]


def test_the_table_lists_each_outcome_with_its_kind_words_and_reason(
    view: OutcomesView, answered: dict[str, int]
) -> None:
    assert _column(view, 0) == [str(answered[k]) for k in ("rename", "regrant", "assign")]
    assert _column(view, 1) == ["conflict", "superseded", "rejected"]
    assert _column(view, 2) == [
        "rename role r-driver to \u201cchauffeur\u201d",
        "add grant vehicle read to role motorist",
        "assign role clerk to vic",
    ]
    assert _column(view, 4) == ["2026-12-02 10:00:00"] * 3
    assert _column(view, 5) == ["concurrent_change", "superseded", "forbidden"]
    assert "boss may not assign clerk" in _column(view, 6)[2]
    assert view.count.text() == "3 to review, 1 conflict"
    # The outcome is words and an icon, never colour alone.
    icon = view.model.index(0, 1).data(Qt.ItemDataRole.DecorationRole)
    assert icon is not None and not icon.isNull()


def test_a_conflict_shows_mine_and_the_servers_value_side_by_side(view: OutcomesView) -> None:
    view.select_seq(1)
    mine, servers = view.mine[1].toPlainText(), view.servers[1].toPlainText()
    assert mine.splitlines()[0] == "chauffeur"
    assert "Made by boss at" in mine
    assert servers.splitlines()[0] == "motorist"
    # Who and when, from the change the replica received.
    assert "Changed by ann (device d-ann) at 2026-12-02 09:30:00 UTC, as version 9" in servers
    assert "the server keeps its value" in servers
    assert "conflict on role r-driver name" in view.summary.text()
    # Side by side: the two boxes share a row.
    assert view.mine[1].y() == view.servers[1].y()
    assert view.mine[1].x() < view.servers[1].x()


def test_a_change_the_replica_did_not_receive_as_one_is_said_to_be_in_the_servers_audit(
    view: OutcomesView,
) -> None:
    view.select_seq(2)
    servers = view.servers[1].toPlainText()
    assert "version 8" in servers and "within a snapshot" in servers
    assert "server's audit log" in servers and "Changed by ann" not in servers


def test_a_refusal_shows_my_edit_and_the_servers_code_and_reason(view: OutcomesView) -> None:
    view.select_seq(3)
    assert view.mine[1].toPlainText().startswith("assign role clerk to vic")
    servers = view.servers[1].toPlainText()
    assert servers.startswith("Refused (forbidden).")
    assert "Reason (forbidden): boss may not assign clerk" in servers


def test_reapply_mine_queues_the_edit_again_as_a_new_edit_and_dismisses_it(
    view: OutcomesView,
    workspace: Workspace,  # noqa: F811
    qtbot: Any,
) -> None:
    said: list[str] = []
    view.message.connect(said.append)
    assert workspace.pending() == []
    view.select_seq(1)
    qtbot.mouseClick(view.reapply, Qt.MouseButton.LeftButton)
    (again,) = workspace.pending()
    assert again.seq > 3 and again.edit == RENAME
    assert [a.seq for a in workspace.attention()] == [2, 3]
    assert workspace.policy().roles["r-driver"].name == "chauffeur"
    assert said == [f"Reapplied edit 1 as edit {again.seq}: rename role r-driver to "
                    "\u201cchauffeur\u201d"]  # fmt: skip
    assert view.status.text() == said[0]
    assert _column(view, 0) == ["2", "3"]


def test_reapplying_an_edit_that_no_longer_applies_says_why_and_keeps_it(
    view: OutcomesView,
    workspace: Workspace,  # noqa: F811
    qtbot: Any,
) -> None:
    workspace.queue([{"op": "delete_role", "role_id": "r-clerk"}])
    said: list[str] = []
    view.message.connect(said.append)
    view.select_seq(3)
    qtbot.mouseClick(view.reapply, Qt.MouseButton.LeftButton)
    assert len(workspace.pending()) == 1
    assert [a.seq for a in workspace.attention()] == [1, 2, 3]
    assert said and said[0].startswith("reapplying edit 3:")
    assert said[0].endswith("edit 3 stays to review")


def test_keep_the_servers_dismisses_the_outcome_by_keyboard(
    view: OutcomesView,
    workspace: Workspace,  # noqa: F811
    qtbot: Any,
) -> None:
    said: list[str] = []
    view.message.connect(said.append)
    view.table.setFocus()
    qtbot.keyClick(view.table, Qt.Key.Key_Down)
    assert _selected_seq(view) == 2
    qtbot.keyClick(view.table, Qt.Key.Key_K, Qt.KeyboardModifier.AltModifier)
    # A mnemonic clicks as a person sees it: the button is pressed for a moment first.
    qtbot.waitUntil(lambda: [a.seq for a in workspace.attention()] == [1, 3], timeout=2000)
    assert said == ["Kept the server's refusal for edit 2: add grant vehicle read to role motorist"]
    assert workspace.pending() == []
    # The next outcome is selected, and the table keeps the focus.
    assert _selected_seq(view) == 3
    assert QApplication.focusWidget() is view.table


def test_discard_asks_first_and_does_nothing_when_told_no(
    view: OutcomesView,
    workspace: Workspace,  # noqa: F811
    qtbot: Any,
) -> None:
    asked: list[str] = []
    answers = [False, True]

    def confirm(_parent: QWidget, _title: str, question: str) -> bool:
        asked.append(question)
        return answers.pop(0)

    view.confirm = confirm
    view.select_seq(3)
    qtbot.mouseClick(view.discard, Qt.MouseButton.LeftButton)
    assert asked == ["Discard edit 3 (assign role clerk to vic)? It is not sent again."]
    assert len(workspace.attention()) == 3
    assert view.status.text() == "Kept edit 3 to review"
    qtbot.mouseClick(view.discard, Qt.MouseButton.LeftButton)
    assert [a.seq for a in workspace.attention()] == [1, 2]
    assert view.status.text() == "Discarded edit 3: assign role clerk to vic"
    assert workspace.pending() == []


def test_when_nothing_is_left_the_view_says_so_and_the_actions_are_off(
    view: OutcomesView,
    workspace: Workspace,  # noqa: F811
) -> None:
    for _ in range(3):
        view.keep_servers()
    assert workspace.attention() == []
    assert view.count.text() == "Nothing to review: no refused edits or conflicts"
    assert not view.keep.isEnabled() and not view.reapply.isEnabled()
    assert not view.discard.isEnabled()


def test_an_outcome_recorded_by_a_later_sync_appears_after_the_workspace_changes(
    view: OutcomesView,
    workspace: Workspace,  # noqa: F811
) -> None:
    (seq,) = workspace.queue([{"op": "suspend_user", "user_id": "sam"}])
    workspace.replica.record_outcomes(
        [Result(workspace.replica.client, seq, Outcome.REJECTED, None, "constraint", "no")],
        parse_instant(ANSWERED),
    )
    workspace.reload()
    assert _column(view, 0)[-1] == str(seq)
    assert _column(view, 2)[-1] == "suspend user sam"


def test_edits_are_described_in_words() -> None:
    names = {"r-driver": "driver"}.get
    assert describe_edit({"op": "set_user_attribute", "user_id": "sam", "key": "depot",
                          "value": "d1"}) == "set sam's attribute depot to d1"  # fmt: skip
    activate = {"op": "activate_role", "user_id": "sam", "role_id": "r-driver", "hours": 2,
                "justification": "night run"}  # fmt: skip
    assert describe_edit(activate, lambda i: names(i) or i) == (
        "activate role driver for sam for 2 h: \u201cnight run\u201d"
    )
    assert describe_edit({"op": "future_op", "x": 1}) == 'future_op {"x":1}'


def _focusable(root: QWidget) -> list[QWidget]:
    return [w for w in root.findChildren(QWidget)
            if w.isVisible() and w.focusPolicy() & Qt.FocusPolicy.TabFocus]  # fmt: skip


def test_every_focusable_control_has_an_accessible_name(view: OutcomesView) -> None:
    focusable = _focusable(view)
    assert {view.table, view.mine[1], view.servers[1], view.keep} <= set(focusable)
    unnamed = [w.objectName() or type(w).__name__ for w in focusable if not w.accessibleName()]
    assert unnamed == []
    assert view.accessibleName() and view.objectName() == "outcomes-view"


def test_tab_goes_from_the_table_through_both_values_to_the_actions(
    view: OutcomesView, qtbot: Any
) -> None:
    view.table.setFocus()
    seen = []
    for _ in range(6):
        seen.append(QApplication.focusWidget())
        qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_Tab)
    assert seen[:6] == [view.table, view.mine[1], view.servers[1], view.keep, view.reapply,
                        view.discard]  # fmt: skip


@pytest.mark.parametrize("theme", ["standard", "high-contrast"])
def test_a_screenshot_in_each_theme(view: OutcomesView, qtbot: Any, theme: str) -> None:
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    apply_theme(app, theme)
    try:
        view.select_seq(1)
        view.table.resizeColumnsToContents()
        qtbot.wait(10)
        ui_fixtures.SCREENSHOTS.mkdir(exist_ok=True)
        image = view.grab()
        assert not image.isNull()
        assert image.save(str(ui_fixtures.SCREENSHOTS / f"outcomes-{theme}.png"))
    finally:
        apply_theme(app, "standard")
