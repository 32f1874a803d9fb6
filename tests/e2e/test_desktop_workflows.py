"""End to end: the desktop app's workflows through its widgets, against a real sync
server process on the session's embedded Postgres (the desktop issue, § Proof).

Each test is one workflow of a person at the administration window, signed in through
the sign-in window (password typed, Enter) and kept in sync by the app's `LiveSync`:
a role with a condition; an assignment with an end and a just-in-time activation; a
denied request explained and fixed in one click; an offline rename that meets another
client's, the conflict seen and resolved; an export edited and imported with its diff.
Each ends with the replica's confirmed policy equal to what another client, a headless
`fleetgate sync` of another user, gets from the server (cursor and digest).

Widgets are driven by keys and clicks; the one setter called instead (an end date:
a date editor's sections are unreliable to type into offscreen) says so. Three tests
check two bugs these workflows found (the status bar said "connecting" after signing
in, and Edit > New role left the focus in the list's search).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from PySide6.QtCore import QDateTime, Qt, QTimeZone
from PySide6.QtWidgets import QApplication

from app.ui.policy_io import ImportDialog
from app.ui.user_editor import ActivateDialog, RolePicker
from server import store
from sync.policy.instant import format_instant
from sync.policy.model import Policy
from tests.app.ui_fixtures import cheap_argon2, memory_keyring  # noqa: F401
from tests.e2e.desktop_driver import (
    WAIT_MS,
    Desktop,
    Headlessly,
    QtBot,
    agree,
    sign_in,
    wait_live,
    wait_pushed,
)
from tests.e2e.faults import ServerProcess
from tests.server.conftest import ACME_POLICY, add_account, make_tenant

POLICY: dict[str, Any] = copy.deepcopy(ACME_POLICY)
POLICY["roles"].append({"id": "r-yard", "name": "yard-marshal",
                        "grants": [{"resource": "vehicle", "actions": ["dispatch"]}]})  # fmt: skip
POLICY["users"] += [
    {"id": user, "attributes": {"depot": "north"}} for user in ("eve", "gus", "hal", "ivy")
]
"""ACME_POLICY, and a user and a role of its own for each workflow: the tests share one
server, and none depends on what another did."""


# --- the server --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def desktop_database(postgres_uri: str) -> Iterator[str]:
    """A migrated database with tenant acme (POLICY) and accounts for ann and dora."""
    name = f"e2e_desktop_{os.getpid()}"
    with psycopg.connect(postgres_uri, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # our own name
    url = store.create_database(postgres_uri, name)
    with psycopg.connect(url, autocommit=True) as connection:
        store.migrate(connection)

    async def tenant() -> None:
        tenant_id = await make_tenant(url, "acme", document=POLICY)
        for user in ("ann", "dora"):
            await add_account(url, tenant_id, user)

    asyncio.run(tenant())
    yield url
    with psycopg.connect(postgres_uri, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def acme_server(
    desktop_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    server = ServerProcess(desktop_database, tmp_path_factory.mktemp("logs"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dora(acme_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Headlessly:
    """Another client (dora, who holds no role), asked what the server holds."""
    other = Headlessly(acme_server.port, tmp_path_factory.mktemp("dora"), "dora")
    code, _, err = other.run()
    assert code == 0, err
    return other


@pytest.fixture
def desktop(acme_server: ServerProcess, tmp_path: Path, qtbot: QtBot) -> Iterator[Desktop]:
    """admin, signed in through the sign-in window; the sync live."""
    shown = sign_in(qtbot, tmp_path / "replicas", acme_server.url)
    try:
        wait_live(qtbot, shown)
        yield shown
    finally:
        shown.close()


def confirmed(desktop: Desktop) -> Policy:
    """The replica's confirmed policy (the server's, as of the replica's cursor)."""
    return desktop.workspace.replica.load_policy(desktop.workspace.now())


def _key(qtbot: QtBot, desktop: Desktop, key: Qt.Key, modifiers: Any) -> None:
    qtbot.keyClick(desktop.window, key, modifiers)


CTRL_SHIFT = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier


def _select(desktop: Desktop, qtbot: QtBot, kind: str, entity_id: str) -> None:
    """Search the list of `kind` for `entity_id` as typed, and choose it (the editor
    beside the list follows the selection)."""
    view = desktop.window.views[kind]
    desktop.window.show_page(kind)
    view.search.clear()
    qtbot.keyClicks(view.search, entity_id)
    qtbot.keyClick(view.search, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: view.model.filter_text == entity_id, timeout=WAIT_MS)
    rows = [r for r in range(view.model.rowCount()) if view.model.entity_id(r) == entity_id]
    assert rows, f"{entity_id} is not in the {kind} list"
    _click_row(qtbot, view.table, rows[0])


def _click_row(qtbot: QtBot, table: Any, row: int) -> None:
    index = table.model().index(row, 0)
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton,
                     pos=table.visualRect(index).center())  # fmt: skip


def _cells(table: Any) -> list[list[str]]:
    model = table.model()
    return [[model.index(r, c).data() for c in range(model.columnCount())]
            for r in range(model.rowCount())]  # fmt: skip


# --- the workflows -------------------------------------------------------------------------


def test_after_signing_in_the_status_bar_says_online(desktop: Desktop, qtbot: QtBot) -> None:
    qtbot.waitUntil(lambda: desktop.connection() == "online", timeout=2_000)


@pytest.mark.parametrize(("key", "field"), [(Qt.Key.Key_R, "role name"),
                                            (Qt.Key.Key_U, "user id")],
                         ids=["new-role", "new-user"])  # fmt: skip
def test_new_role_and_new_user_from_the_edit_menu_put_the_focus_in_the_form(
    desktop: Desktop, qtbot: QtBot, key: Qt.Key, field: str
) -> None:
    window = desktop.window
    wanted = {"role name": window.role_editor.name, "user id": window.user_editor.new_id}[field]
    _key(qtbot, desktop, key, CTRL_SHIFT)  # Edit > New role, Edit > New user
    assert wanted.isVisible()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is wanted, timeout=2_000)


def test_signing_in_opens_the_window_on_the_servers_policy(
    desktop: Desktop, dora: Headlessly
) -> None:
    agree(desktop, dora)
    assert desktop.status("synced").startswith("Last synced ")
    assert desktop.status("pending") == "No pending edits"
    assert desktop.window.views["role"].model.total == len(confirmed(desktop).roles)
    assert desktop.window.role_editor.role_id is not None  # the first role, not a blank


def test_a_role_with_a_condition_made_in_the_role_editor_reaches_the_server(
    desktop: Desktop, dora: Headlessly, qtbot: QtBot
) -> None:
    editor, before = desktop.window.role_editor, desktop.cursor()
    roles = desktop.window.views["role"].model
    listed = roles.total
    _key(qtbot, desktop, Qt.Key.Key_R, CTRL_SHIFT)  # Edit > New role
    assert editor.role_id is None and editor.title.text() == "New role"
    qtbot.waitUntil(lambda: QApplication.focusWidget() is editor.name, timeout=2_000)
    qtbot.keyClicks(editor.name, "depot dispatcher")
    qtbot.keyClick(editor.name, Qt.Key.Key_Return)
    assert editor.role_id == "r-depot-dispatcher"
    assert editor.details_feedback.text().endswith("create role depot dispatcher "
                                                   "(r-depot-dispatcher)")  # fmt: skip

    bar = editor.tabs.tabBar()
    qtbot.mouseClick(bar, Qt.MouseButton.LeftButton, pos=bar.tabRect(1).center())
    assert editor.tabs.currentIndex() == 1  # the rules tab
    qtbot.mouseClick(editor.add_rule_button, Qt.MouseButton.LeftButton)
    dialog = editor.rule_dialog
    assert dialog is not None and dialog.isVisible()
    dialog.resource.setFocus()
    qtbot.keyClicks(dialog.resource, "veh")  # a closed combo box finds the item typed
    assert dialog.resource.currentData() == "vehicle"
    dialog.action_list.setFocus()
    for key in (Qt.Key.Key_Down, Qt.Key.Key_Down, Qt.Key.Key_Space):  # *, read, dispatch
        qtbot.keyClick(dialog.action_list, key)
    assert dialog.chosen_actions() == ["dispatch"]
    condition = dialog.condition
    qtbot.mouseClick(condition.add_comparison_button, Qt.MouseButton.LeftButton)
    line = condition.attribute.lineEdit()
    assert line is not None
    line.clear()
    qtbot.keyClicks(line, "user.depot")
    qtbot.keyClicks(condition.value, "north")
    assert condition.valid(), condition.problems()
    assert dialog.reading.text().startswith("Adds: grant vehicle dispatch when user.depot")
    qtbot.mouseClick(dialog.ok, Qt.MouseButton.LeftButton)
    assert not dialog.isVisible()
    assert [dict(row.edit)["op"] for row in desktop.workspace.pending()] in (
        ["create_role", "add_rule"], ["add_rule"], []  # the sync may have pushed some already
    )  # fmt: skip

    wait_pushed(qtbot, desktop, before)
    role = confirmed(desktop).roles["r-depot-dispatcher"]
    assert role.name == "depot dispatcher"
    assert [r.to_document() for r in role.grants] == [
        {"resource": "vehicle", "actions": ["dispatch"], "when": {"user.depot": "north"}}
    ]
    # The list (of the confirmed roles) shows it once the server has it.
    qtbot.waitUntil(lambda: roles.total == listed + 1, timeout=WAIT_MS)
    agree(desktop, dora)


def test_an_assignment_with_an_end_and_an_activation_made_in_the_user_editor_sync(
    desktop: Desktop, dora: Headlessly, qtbot: QtBot
) -> None:
    editor, before = desktop.window.user_editor, desktop.cursor()
    _select(desktop, qtbot, "user", "eve")
    assert editor.user_id == "eve"
    qtbot.mouseClick(editor.assign_button, Qt.MouseButton.LeftButton)
    picker = editor.dialog
    assert isinstance(picker, RolePicker)
    qtbot.mouseClick(picker.expires_check, Qt.MouseButton.LeftButton)
    assert picker.expires_edit.isEnabled()
    ends = desktop.workspace.now()[0] // 60 * 60 + 2 * 86400
    # A date editor's sections are unreliable to type into offscreen: the end is set.
    picker.expires_edit.setDateTime(QDateTime.fromSecsSinceEpoch(ends, QTimeZone.utc()))
    qtbot.keyClicks(picker.filter, "driver")
    qtbot.keyClick(picker.filter, Qt.Key.Key_Return)  # the one match is chosen
    assert editor.dialog is None
    until = format_instant((ends, ""))
    assert _cells(editor.assignment_table)[0][:2] == ["driver", "assigned"]
    assert _cells(editor.assignment_table)[0][2].startswith(f"until {until} (")

    _select(desktop, qtbot, "user", "gus")
    qtbot.mouseClick(editor.eligible_button, Qt.MouseButton.LeftButton)
    picker = editor.dialog
    assert isinstance(picker, RolePicker) and picker.hours is not None
    qtbot.keyClicks(picker.filter, "driver")  # the first match is chosen
    picker.hours.selectAll()
    qtbot.keyClicks(picker.hours, "4")
    qtbot.keyClick(picker.hours, Qt.Key.Key_Return)
    assert editor.dialog is None
    rows = editor.assignment_model.rows()
    (eligible,) = [n for n, row in enumerate(rows) if row.kind == "eligible"]
    _click_row(qtbot, editor.assignment_table, eligible)
    qtbot.mouseClick(editor.activate_button, Qt.MouseButton.LeftButton)
    dialog = editor.dialog
    assert isinstance(dialog, ActivateDialog)
    assert dialog.hours.maximum() == 4
    dialog.hours.selectAll()
    qtbot.keyClicks(dialog.hours, "2")
    qtbot.keyClicks(dialog.justification, "Covering the north depot tonight")
    qtbot.mouseClick(dialog.ok, Qt.MouseButton.LeftButton)
    countdown = re.compile(r"driver activated: (2 h 0|1 h 59) min left")
    assert countdown.fullmatch(editor.countdown.text()), editor.countdown.text()

    wait_pushed(qtbot, desktop, before)
    policy = confirmed(desktop)
    (eve,) = policy.users["eve"].roles
    assert (eve.role_id, eve.expires, eve.eligible) == ("r-driver", until, None)
    gus = {(a.eligible is not None): a for a in policy.users["gus"].roles}
    assert (gus[True].role_id, gus[True].eligible) == ("r-driver", 4)
    activation = gus[False]
    assert activation.role_id == "r-driver" and activation.expires_at is not None
    # The activation is timed by the server's clock when it synced: two hours from then.
    assert 0 < activation.expires_at[0] - desktop.workspace.now()[0] <= 2 * 3600
    assert countdown.fullmatch(editor.countdown.text()), editor.countdown.text()
    agree(desktop, dora)
    assert dora.decide("gus", "read", "vehicle:v-1")["allowed"] is True


def test_a_denied_request_explained_and_fixed_in_one_click_is_allowed_on_the_server(
    desktop: Desktop, dora: Headlessly, qtbot: QtBot
) -> None:
    view, before = desktop.window.check_view, desktop.cursor()
    assert dora.decide("hal", "read", "vehicle:v-1")["allowed"] is False
    _key(qtbot, desktop, Qt.Key.Key_3, Qt.KeyboardModifier.AltModifier)  # Check and explain
    assert desktop.window.stack.currentWidget() is desktop.window.pages["check"]
    qtbot.keyClicks(view.user, "hal")
    for combo, text in ((view.type, "vehicle"), (view.action, "read")):
        combo.setFocus()
        qtbot.keyClicks(combo, text)  # a closed combo box finds the item typed
        assert combo.currentText() == text
    qtbot.keyClicks(view.resource_id, "v-1")
    qtbot.keyClick(view.resource_id, Qt.Key.Key_Return)
    assert view.verdict.text() == "Denied"
    assert view.reason.text() == "Reason: no grant matches vehicle read"
    trace = view.trace_model.stringList()
    assert trace[0].startswith("request: user 'hal' read vehicle:v-1")
    assert trace[-1] == "decision: denied: no grant matches vehicle read"
    assert view.fixes_box.isVisible() and view.fix_model.rowCount() > 0
    top = view.fix_model.fixes[0].label
    assert "hal" in top, top

    qtbot.mouseClick(view.apply_button, Qt.MouseButton.LeftButton)  # one click
    assert view.verdict.text() == "Allowed"
    assert view.outcome.text().endswith(f"{top}; the request is now allowed")
    assert desktop.status("pending") in ("1 pending edit", "No pending edits")

    wait_pushed(qtbot, desktop, before)
    qtbot.mouseClick(view.check_button, Qt.MouseButton.LeftButton)
    assert view.verdict.text() == "Allowed"
    assert view.note.text().startswith("Based on the replica's confirmed policy")
    agree(desktop, dora)
    assert dora.decide("hal", "read", "vehicle:v-1")["allowed"] is True


def test_an_offline_rename_meets_an_online_one_and_the_conflict_is_resolved(
    desktop_database: str, acme_server: ServerProcess, tmp_path: Path, qtbot: QtBot
) -> None:
    # A's own server process on the same database: killing it takes A offline while B,
    # on the module's server, stays online.
    a_server = ServerProcess(desktop_database, tmp_path / "logs", name="a-server")
    a_server.start()
    ann = Headlessly(acme_server.port, tmp_path / "ann", "ann")
    desktop: Desktop | None = None
    try:
        assert ann.run()[0] == 0
        desktop = sign_in(qtbot, tmp_path / "replicas", a_server.url)
        wait_live(qtbot, desktop)
        window, editor = desktop.window, desktop.window.role_editor

        a_server.kill()  # A's network is gone
        qtbot.waitUntil(lambda: desktop.connection() == "offline, retrying", timeout=WAIT_MS)
        _select(desktop, qtbot, "role", "r-yard")
        assert editor.role_id == "r-yard" and editor.name.text() == "yard-marshal"
        editor.name.selectAll()
        qtbot.keyClicks(editor.name, "yard boss")
        qtbot.keyClick(editor.name, Qt.Key.Key_Return)
        assert editor.title.text() == "Role yard boss"
        assert desktop.status("pending") == "1 pending edit"
        pending = window.pending_view.pending_model
        assert pending.rowCount() == 1 and "yard boss" in pending.index(0, 1).data()

        # B, online, renames the same role otherwise.
        ann.queue([{"op": "rename_role", "role_id": "r-yard", "name": "yard chief"}], tmp_path)
        code, out, err = ann.run()
        assert code == 0 and "applied as version" in out, err

        a_server.start()  # A is back: the live sync reconnects by itself and pushes
        qtbot.waitUntil(lambda: desktop.status("attention") == "1 conflict to review",
                        timeout=WAIT_MS)  # fmt: skip
        assert not desktop.workspace.pending()
        assert desktop.connection() == "online"
        qtbot.waitUntil(lambda: editor.title.text() == "Role yard chief", timeout=WAIT_MS)

        qtbot.mouseClick(window.status_labels["attention"], Qt.MouseButton.LeftButton)
        outcomes = window.outcomes_view
        assert window.stack.currentWidget() is window.pages["outcomes"]
        assert outcomes.model.rowCount() == 1
        _click_row(qtbot, outcomes.table, 0)
        mine, servers = outcomes.mine[1].toPlainText(), outcomes.servers[1].toPlainText()
        assert mine.splitlines()[0] == "yard boss", mine
        assert servers.splitlines()[0] == "yard chief", servers
        assert "Changed by ann (device " in servers, servers  # who and when, not only what
        assert outcomes.mine[1].y() == outcomes.servers[1].y()  # side by side
        assert outcomes.mine[1].x() < outcomes.servers[1].x()

        before = desktop.cursor()
        qtbot.mouseClick(outcomes.reapply, Qt.MouseButton.LeftButton)  # reapply mine
        assert outcomes.status.text().startswith("Reapplied edit ")
        qtbot.waitUntil(lambda: desktop.status("attention") == "Nothing to review",
                        timeout=WAIT_MS)  # fmt: skip
        assert outcomes.model.rowCount() == 0
        wait_pushed(qtbot, desktop, before)
        assert confirmed(desktop).roles["r-yard"].name == "yard boss"
        state = agree(desktop, ann)
        assert state["pending"] == []
    finally:
        if desktop is not None:
            desktop.close()
        a_server.stop()


def test_an_exported_policy_edited_and_imported_shows_its_diff_and_syncs(
    desktop: Desktop, dora: Headlessly, tmp_path: Path, qtbot: QtBot
) -> None:
    window, before = desktop.window, desktop.cursor()
    exported = tmp_path / "acme.json"
    desktop.chosen["Export policy"] = exported
    _key(qtbot, desktop, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)  # File > Export
    wanted = f"Exported the policy (with pending edits) to {exported}"  # on a worker thread
    qtbot.waitUntil(lambda: window.statusBar().currentMessage() == wanted, timeout=10_000)
    document = json.loads(exported.read_text())
    ivy = next(u for u in document["users"] if u["id"] == "ivy")
    ivy.setdefault("roles", []).append({"role": "clerk"})
    edited = tmp_path / "acme-edited.json"
    edited.write_text(json.dumps(document, indent=2))

    desktop.chosen["Import policy"] = edited
    _key(qtbot, desktop, Qt.Key.Key_I, Qt.KeyboardModifier.ControlModifier)  # File > Import
    dialog = window.findChild(ImportDialog)
    assert dialog is not None and dialog.isVisible()
    qtbot.waitUntil(lambda: dialog.plan is not None, timeout=WAIT_MS)
    differences = dialog.differences.model().stringList()  # type: ignore[attr-defined]
    access = dialog.access.model().stringList()  # type: ignore[attr-defined]
    assert any("ivy" in line and "clerk" in line for line in differences), differences
    assert any("ivy" in line for line in access), access
    assert dialog.status.text().startswith("acme-edited.json: 1 difference, 1 edit to queue")
    assert QApplication.focusWidget() is dialog.apply_button
    qtbot.keyClick(dialog.apply_button, Qt.Key.Key_Space)
    assert not dialog.isVisible()

    wait_pushed(qtbot, desktop, before)
    assert [a.role_id for a in confirmed(desktop).users["ivy"].roles] == ["r-clerk"]
    agree(desktop, dora)
    assert dora.decide("ivy", "update", "user:dora")["allowed"] is True
