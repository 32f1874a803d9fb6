"""app.ui.log_view: the decision chain and the edits of a real replica, made by deciding
offline (`offline.decide_lines`), by queueing and answering edits and by pages of
changes received (`Replica.apply_changes`); filtered by user,
entity, time and words through the widgets, read a page at a time, exported as CSV and
JSON and read back; screenshots in both themes."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QDateTime, Qt, QTimer, QTimeZone
from PySide6.QtWidgets import QApplication, QWidget

from app import offline
from app.replica import Replica
from app.ui import log_view
from app.ui.log_view import CHANGE_CSV, DECISION_CSV, EDIT_CSV, PAGE, LogView
from app.ui.theme import apply_theme
from app.ui.workspace import Workspace
from sync.policy.instant import parse_instant
from sync.protocol.messages import Change, Conflict, Outcome, Result
from sync.replication.entities import ROLE, USER, Entity
from tests.app import ui_fixtures
from tests.app.test_client_cli import SYNCED
from tests.app.ui_fixtures import cheap_argon2, memory_keyring, ui_replica, workspace  # noqa: F401

DAY_1, DAY_3, DAY_10 = "2026-12-01T09:00:00Z", "2026-12-03T12:00:00Z", "2026-12-10T12:00:00Z"
"""Three batches: the lease (synced at SYNCED, 7 days) is fresh for the first two."""


def _line(user: str, action: str, vehicle: str) -> bytes:
    return json.dumps(
        {"user": user, "action": action, "resource": {"type": "vehicle", "id": vehicle}}
    ).encode()


def decide_at(replica: Replica, wall: str, lines: list[bytes]) -> None:
    """Decide `lines` offline, logged, with the wall clock at `wall`."""
    clocks = offline.Clocks(wall=lambda: parse_instant(wall), mono=lambda: 0.0)
    out = io.BytesIO()
    offline.decide_lines(replica, io.BytesIO(b"\n".join(lines) + b"\n"), out, log=True,
                         clocks=clocks)  # fmt: skip
    assert len(out.getvalue().splitlines()) == len(lines)


@pytest.fixture
def decided(ui_replica: Replica) -> Replica:  # noqa: F811
    """Seven decisions: two fresh batches, one after the lease ran out, and one with the
    wall clock moved back (frozen)."""
    ui_replica.set_meta(synced_at=SYNCED)
    decide_at(ui_replica, DAY_1, [_line("vic", "read", "v-1"), _line("sam", "drive", "v-2")])
    decide_at(ui_replica, DAY_3, [_line("vic", "drive", "v-3"), _line("u001", "read", "v-4")])
    decide_at(ui_replica, DAY_10, [_line("vic", "read", "v-5"), _line("boss", "read", "v-6")])
    decide_at(ui_replica, "2026-12-09T00:00:00Z", [_line("sam", "read", "v-7")])
    return ui_replica


@pytest.fixture
def view(decided: Replica, workspace: Workspace, qtbot: Any) -> LogView:  # noqa: F811
    shown = LogView(workspace)
    qtbot.addWidget(shown)
    shown.resize(1100, 560)
    shown.show()
    qtbot.waitExposed(shown)
    return shown


def _column(view: LogView, header: str, model: Any = None) -> list[str]:
    model = model or view.decisions
    headers = [model.headerData(c, Qt.Orientation.Horizontal) for c in range(model.columnCount())]
    column = headers.index(header)
    return [model.index(row, column).data() for row in range(model.rowCount())]


def _type(qtbot: Any, field: Any, text: str) -> None:
    field.setFocus()
    qtbot.keyClicks(field, text)


def test_the_decisions_tab_lists_the_chain_newest_first(view: LogView) -> None:
    assert _column(view, "Seq") == ["7", "6", "5", "4", "3", "2", "1"]
    assert _column(view, "User") == ["sam", "boss", "vic", "u001", "vic", "sam", "vic"]
    assert _column(view, "Resource")[-1] == "vehicle:v-1"
    assert _column(view, "Time (UTC)")[-1] == "2026-12-01 09:00:00"
    assert _column(view, "Decision")[-1] == "allowed"
    assert _column(view, "Decision")[-2] == "denied"
    assert _column(view, "Reason")[-1].startswith("granted by role viewer")
    assert _column(view, "Policy version") == ["7"] * 7
    assert view.count.text() == "7 decisions"


def test_allowed_and_denied_are_words_and_an_icon(view: LogView) -> None:
    column = [view.decisions.headerData(c, Qt.Orientation.Horizontal)
              for c in range(view.decisions.columnCount())].index("Decision")  # fmt: skip
    allowed = view.decisions.index(6, column)
    denied = view.decisions.index(5, column)
    icons = [i.data(Qt.ItemDataRole.DecorationRole) for i in (allowed, denied)]
    assert all(icon is not None and not icon.isNull() for icon in icons)
    assert icons[0].cacheKey() != icons[1].cacheKey()
    assert allowed.data(Qt.ItemDataRole.AccessibleTextRole) == "allowed"


def test_each_offline_decision_says_its_lease_state_and_a_frozen_clock(view: LogView) -> None:
    assert _column(view, "Lease") == [
        "lease stale; clock frozen",
        "lease stale",
        "lease stale",
        "lease fresh",
        "lease fresh",
        "lease fresh",
        "lease fresh",
    ]
    # Time was held at the mark: the frozen decision is at the stale batch's time.
    assert _column(view, "Time (UTC)")[0] == "2026-12-10 12:00:00"


def test_typing_a_user_filters_both_tabs_after_a_pause(view: LogView, qtbot: Any) -> None:
    _type(qtbot, view.user[1], "vic")
    assert len(_column(view, "Seq")) == 7  # not yet: typing has not paused
    qtbot.waitUntil(lambda: view.decisions.filters.user == "vic", timeout=2000)
    assert _column(view, "User") == ["vic", "vic", "vic"]
    assert view.count.text() == "3 matching decisions"
    view.tabs.setCurrentIndex(1)
    assert view.edits.rowCount() == 0
    assert view.count.text() == "No matching edits: every edit here is made by boss"


def test_a_time_range_selects_the_decisions_between(view: LogView, qtbot: Any) -> None:
    view.since_on.setChecked(True)
    view.since.setDateTime(_at("2026-12-02T00:00:00Z"))
    view.until_on.setChecked(True)
    view.until.setDateTime(_at("2026-12-03T12:00:00Z"))
    view.apply_filters()
    assert view.decisions.filters.since == "2026-12-02T00:00:00"
    assert view.decisions.filters.until == "2026-12-03T12:00:59"
    assert _column(view, "Seq") == ["4", "3"]
    view.until_on.setChecked(False)
    view.apply_filters()
    assert _column(view, "Seq") == ["7", "6", "5", "4", "3"]


def _at(text: str) -> QDateTime:
    return QDateTime.fromSecsSinceEpoch(parse_instant(text)[0], QTimeZone.utc())


def test_search_finds_a_word_of_the_reason_and_ignores_fts_syntax(
    view: LogView, qtbot: Any
) -> None:
    _type(qtbot, view.search[1], "matches")
    qtbot.waitUntil(lambda: view.decisions.filters.text == "matches", timeout=2000)
    assert _column(view, "Seq") == ["7", "6", "3", "2"]
    assert all("no grant matches" in reason for reason in _column(view, "Reason"))
    view.search[1].setText('"viewe* (rol')  # FTS5 syntax in it is only words
    view.apply_filters()
    assert _column(view, "Seq") == ["5", "4", "1"]
    assert view.count.text() == "3 matching decisions"


def test_an_entity_by_role_name_finds_the_decisions_it_granted_and_its_edits(
    view: LogView,
    workspace: Workspace,  # noqa: F811
    qtbot: Any,
) -> None:
    workspace.queue([{"op": "assign_role", "user_id": "u003", "role_id": "viewer"},
                     {"op": "suspend_user", "user_id": "sam"}])  # fmt: skip
    _type(qtbot, view.entity[1], "viewer")
    qtbot.waitUntil(lambda: view.decisions.filters.entities != (), timeout=2000)
    assert view.decisions.filters.entities == ("viewer", "r-viewer")
    assert all(r.startswith("granted by role viewer") for r in _column(view, "Reason"))
    assert _column(view, "Seq") == ["5", "4", "1"]
    edits = _column(view, "What the edit did", view.edits)
    assert edits == ["assign role viewer to u003"]
    view.entity[1].setText("sam")
    view.apply_filters()
    assert _column(view, "User") == ["sam", "sam"]
    assert _column(view, "What the edit did", view.edits) == ["suspend user sam"]


def _answered_edits(workspace: Workspace) -> None:  # noqa: F811
    """Three edits: one pending, one the server refused, one in conflict."""
    replica = workspace.replica
    refused, rename = workspace.queue([
        {"op": "assign_role", "user_id": "vic", "role_id": "clerk"},
        {"op": "rename_role", "role_id": "r-driver", "name": "chauffeur"},
    ])  # fmt: skip
    replica.record_outcomes(
        [Result(replica.client, refused, Outcome.REJECTED, None, "forbidden",
                "boss may not assign clerk"),
         Result(replica.client, rename, Outcome.CONFLICT, 9, "concurrent_change",
                "role r-driver name was changed by someone else",
                Conflict("role r-driver name", "motorist", "chauffeur"))],
        parse_instant("2026-12-02T10:00:00Z"),
    )  # fmt: skip
    workspace.reload()
    workspace.queue([{"op": "describe_role", "role_id": "r-clerk", "description": "files"}])


def test_the_edits_tab_lists_each_edit_with_its_outcome(
    view: LogView,
    workspace: Workspace,  # noqa: F811
) -> None:
    _answered_edits(workspace)
    view.tabs.setCurrentIndex(1)
    assert _column(view, "Edit", view.edits) == ["3", "2", "1"]
    assert _column(view, "Outcome", view.edits) == ["pending", "conflict", "rejected"]
    assert _column(view, "Code", view.edits) == ["", "concurrent_change", "forbidden"]
    assert _column(view, "What the edit did", view.edits)[0] == (
        "describe role clerk: \u201cfiles\u201d"
    )
    assert view.count.text() == "3 edits"
    workspace.replica.dismiss(1)
    workspace.reload()
    assert _column(view, "Outcome", view.edits)[2] == "rejected (reviewed)"


def test_search_finds_edits_in_the_outbox_and_answered_ones(
    view: LogView,
    workspace: Workspace,  # noqa: F811
) -> None:
    _answered_edits(workspace)
    view.search[1].setText("files")
    view.apply_filters()
    assert _column(view, "Edit", view.edits) == ["3"]
    view.search[1].setText("chauff")
    view.apply_filters()
    assert _column(view, "Edit", view.edits) == ["2"]
    view.search[1].setText("forbid clerk")
    view.apply_filters()
    assert _column(view, "Edit", view.edits) == ["1"]


def _received_changes(workspace: Workspace) -> None:  # noqa: F811
    """Three changes by others, as pages of a sync bring them: ann renames driver and
    assigns viewer to u002, then kim suspends u003."""
    replica = workspace.replica
    entities = {(e.kind, e.id): e.document for e in replica.entities()}
    cursor = replica.meta().cursor
    pages = [
        (ROLE, "r-driver", {"name": "motorist"},
         Change(cursor + 1, {"op": "rename_role", "role_id": "r-driver", "name": "motorist"},
                "ann", "d-ann", "c-ann", 1, "2026-12-02T08:00:00Z")),
        (USER, "u002", {"roles": [{"role_id": "r-viewer"}]},
         Change(cursor + 2, {"op": "assign_role", "user_id": "u002", "role_id": "r-viewer"},
                "ann", "d-ann", "c-ann", 2, "2026-12-02T08:05:00Z")),
        (USER, "u003", {"suspended": True},
         Change(cursor + 3, {"op": "suspend_user", "user_id": "u003"},
                "kim", "d-kim", "c-kim", 1, "2026-12-04T16:30:00Z")),
    ]  # fmt: skip
    for kind, entity_id, update, change in pages:
        document = dict(entities[kind, entity_id]) | update
        replica.apply_changes(change.version, [Entity(kind, entity_id, document)], 1, [change])
    workspace.reload()


def test_the_changes_tab_lists_what_others_changed_with_who_where_and_when(
    view: LogView,
    workspace: Workspace,  # noqa: F811
    qtbot: Any,
) -> None:
    view.tabs.setCurrentIndex(2)
    assert view.changes.rowCount() == 0
    assert view.count.text().startswith("No changes: those made after this replica's first")
    _received_changes(workspace)
    assert _column(view, "Author", view.changes) == ["kim", "ann", "ann"]
    assert _column(view, "Device", view.changes) == ["d-kim", "d-ann", "d-ann"]
    assert _column(view, "Time (UTC)", view.changes)[0] == "2026-12-04 16:30:00"
    # Empty when the view opened, the tab's columns were fitted when its rows came.
    table = view.change_table
    shown = table.horizontalHeader().sectionSize(1)
    assert shown >= table.fontMetrics().horizontalAdvance("2026-12-04 16:30:00")
    what = _column(view, "What changed", view.changes)
    assert what[0] == "suspend user u003" and what[1] == "assign role viewer to u002"
    assert view.count.text() == "3 changes"
    # Filtered by author, by entity (a role by its name), by time and by words.
    _type(qtbot, view.user[1], "ann")
    qtbot.waitUntil(lambda: view.changes.filters.user == "ann", timeout=2000)
    assert _column(view, "Author", view.changes) == ["ann", "ann"]
    view.user[1].clear()
    view.entity[1].setText("viewer")
    view.apply_filters()
    assert _column(view, "What changed", view.changes) == ["assign role viewer to u002"]
    view.entity[1].clear()
    view.since_on.setChecked(True)
    view.since.setDateTime(_at("2026-12-03T00:00:00Z"))
    view.apply_filters()
    assert _column(view, "Author", view.changes) == ["kim"]
    view.since_on.setChecked(False)
    view.search[1].setText("motor")
    view.apply_filters()
    renamed = "rename role r-driver to \u201cmotorist\u201d"
    assert _column(view, "What changed", view.changes) == [renamed]
    assert view.count.text() == "1 matching change"


def test_the_changes_tab_exports_as_csv_and_json(
    view: LogView,
    workspace: Workspace,  # noqa: F811
    tmp_path: Path,
) -> None:
    _received_changes(workspace)
    view.tabs.setCurrentIndex(2)
    view.choose_path = lambda *_args: str(tmp_path / "changes.json")
    assert view.export("json") == 3
    records = json.loads((tmp_path / "changes.json").read_text(encoding="utf-8"))
    assert [r["author"] for r in records] == ["kim", "ann", "ann"]
    assert records[2]["edit"] == {"op": "rename_role", "role_id": "r-driver", "name": "motorist"}
    assert records[0]["at"] == "2026-12-04T16:30:00Z" and records[0]["device"] == "d-kim"
    view.choose_path = lambda *_args: str(tmp_path / "changes.csv")
    assert view.export("csv") == 3
    with (tmp_path / "changes.csv").open(newline="", encoding="utf-8") as read:
        rows = list(csv.DictReader(read))
    assert list(rows[0]) == list(CHANGE_CSV)
    assert rows[1]["op"] == "assign_role" and rows[1]["author"] == "ann"


def test_export_csv_writes_what_the_filters_select_with_a_header(
    view: LogView, tmp_path: Path, qtbot: Any
) -> None:
    target = tmp_path / "vic.csv"
    asked: list[str] = []

    def choose(_parent: QWidget, _caption: str, name: str, _pattern: str) -> str:
        asked.append(name)
        return str(target)

    view.choose_path = choose
    said: list[str] = []
    view.message.connect(said.append)
    view.user[1].setText("vic")
    view.apply_filters()
    qtbot.mouseClick(view.export_csv, Qt.MouseButton.LeftButton)
    assert asked == ["decisions.csv"]
    with target.open(newline="", encoding="utf-8") as read:
        rows = list(csv.reader(read))
    assert rows[0] == list(DECISION_CSV)
    records = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    assert [r["seq"] for r in records] == ["5", "3", "1"]
    assert {r["user"] for r in records} == {"vic"}
    assert records[2]["decision"] == "allowed" and records[2]["lease"] == "fresh"
    assert records[2]["at"] == DAY_1 and records[2]["resource_id"] == "v-1"
    assert json.loads(records[2]["request"])["resource"] == {"type": "vehicle", "id": "v-1"}
    assert said == [f"Exported 3 decisions to {target}"]
    assert not (tmp_path / "vic.csv.part").exists()


def test_export_json_is_an_array_of_objects_and_csv_quotes_commas(
    view: LogView,
    workspace: Workspace,  # noqa: F811
    tmp_path: Path,
) -> None:
    _answered_edits(workspace)
    view.tabs.setCurrentIndex(1)
    target = tmp_path / "edits.json"
    view.choose_path = lambda *_args: str(target)
    assert view.export("json") == 3
    records = json.loads(target.read_text(encoding="utf-8"))
    assert [r["seq"] for r in records] == [3, 2, 1]
    assert records[1]["outcome"] == "conflict"
    assert records[1]["conflict"] == {"member": "role r-driver name", "server": "motorist",
                                      "client": "chauffeur"}  # fmt: skip
    assert records[0]["edit"] == {"op": "describe_role", "role_id": "r-clerk",
                                  "description": "files"}  # fmt: skip
    view.choose_path = lambda *_args: str(tmp_path / "edits.csv")
    assert view.export("csv") == 3
    with (tmp_path / "edits.csv").open(newline="", encoding="utf-8") as read:
        rows = list(csv.DictReader(read))
    assert list(rows[0]) == list(EDIT_CSV)
    assert json.loads(rows[0]["edit"])["op"] == "describe_role"  # commas and quotes inside


def test_an_empty_selection_exports_an_empty_array(view: LogView, tmp_path: Path) -> None:
    view.user[1].setText("nobody-at-all")
    view.apply_filters()
    view.choose_path = lambda *_args: str(tmp_path / "none.json")
    assert view.export("json") == 0
    assert json.loads((tmp_path / "none.json").read_text()) == []


def test_not_choosing_a_file_exports_nothing(view: LogView) -> None:
    view.choose_path = lambda *_args: None
    assert view.export("csv") is None
    assert view.status.text() == ""


@pytest.fixture
def long_log(decided: Replica) -> Replica:
    """A log longer than two pages."""
    decide_at(decided, DAY_10, [_line(f"u{i % 40:03}", "read", f"v-{i}") for i in range(450)])
    return decided


def test_a_long_log_is_read_a_page_at_a_time_and_exported_whole(
    long_log: Replica,
    workspace: Workspace,  # noqa: F811
    qtbot: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    view = LogView(workspace)
    qtbot.addWidget(view)
    assert view.decisions.rowCount() == PAGE
    assert view.decisions.canFetchMore()
    assert view.count.text() == f"{PAGE} decisions loaded; more as you scroll"
    monkeypatch.setattr(log_view, "EXPORT_PAGE", 100)
    view.choose_path = lambda *_args: str(tmp_path / "all.csv")
    assert view.export("csv") == 457
    assert view.decisions.rowCount() == PAGE  # the export read its own pages
    with (tmp_path / "all.csv").open(newline="") as read:
        seqs = [int(row["seq"]) for row in csv.DictReader(read)]
    assert seqs == list(range(457, 0, -1))
    view.decisions.fetchMore()
    view.decisions.fetchMore()
    assert view.decisions.rowCount() == 457 and not view.decisions.canFetchMore()


def test_cancel_stops_an_export_between_pages_and_leaves_no_file(
    long_log: Replica,
    workspace: Workspace,  # noqa: F811
    qtbot: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    view = LogView(workspace)
    qtbot.addWidget(view)
    monkeypatch.setattr(log_view, "EXPORT_PAGE", 100)
    target = tmp_path / "exports" / "all.json"
    target.parent.mkdir()
    view.choose_path = lambda *_args: str(target)
    enabled: list[bool] = []

    def cancel_while_running() -> None:
        enabled.append(view.cancel.isEnabled())
        view.cancel.click()

    QTimer.singleShot(0, cancel_while_running)  # runs between the export's first pages
    assert view.export("json") is None
    assert enabled == [True]
    assert view.status.text() == "Export cancelled; nothing was written"
    assert list(target.parent.iterdir()) == []
    assert not view.cancel.isEnabled() and view.export_json.isEnabled()


def _focusable(root: QWidget) -> list[QWidget]:
    return [w for w in root.findChildren(QWidget)
            if w.isVisible() and w.focusPolicy() & Qt.FocusPolicy.TabFocus]  # fmt: skip


def test_every_focusable_control_has_an_accessible_name(view: LogView) -> None:
    view.since_on.setChecked(True)
    focusable = _focusable(view)
    assert {view.user[1], view.search[1], view.since, view.decision_table} <= set(focusable)
    unnamed = [w.objectName() or type(w).__name__ for w in focusable if not w.accessibleName()]
    assert unnamed == []
    assert view.objectName() == "log-view" and view.accessibleName()
    assert view.user[0].buddy() is view.user[1]


def test_tab_reaches_the_filters_exports_and_the_table(view: LogView, qtbot: Any) -> None:
    view.since_on.setChecked(True)
    view.user[1].setFocus()
    seen = []
    for _ in range(14):
        seen.append(QApplication.focusWidget())
        qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_Tab)
    expected = [view.user[1], view.entity[1], view.search[1], view.since_on, view.since,
                view.until_on, view.export_csv, view.export_json]  # fmt: skip
    assert seen[: len(expected)] == expected
    assert view.decision_table in seen


@pytest.mark.parametrize("theme", ["standard", "high-contrast"])
def test_a_screenshot_in_each_theme(view: LogView, qtbot: Any, theme: str) -> None:
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    apply_theme(app, theme)
    try:
        view.since_on.setChecked(True)
        view.since.setDateTime(_at(DAY_1))
        view.apply_filters()
        view.decision_table.selectRow(1)
        qtbot.wait(10)
        ui_fixtures.SCREENSHOTS.mkdir(exist_ok=True)
        image = view.grab()
        assert not image.isNull()
        assert image.save(str(ui_fixtures.SCREENSHOTS / f"log-{theme}.png"))
    finally:
        apply_theme(app, "standard")


def test_csv_export_keeps_a_formula_a_request_carried_from_running_in_a_spreadsheet(
    view: LogView, decided: Replica, tmp_path: Path
) -> None:
    decide_at(decided, DAY_3, [_line('=HYPERLINK("http://evil.example","x")', "read", "@SUM(1)")])
    view.apply_filters()
    target = tmp_path / "decisions.csv"
    view.choose_path = lambda *_args: str(target)
    assert view.export("csv") == 8
    with target.open(newline="", encoding="utf-8") as read:
        cells = [cell for row in csv.reader(read) for cell in row]
    assert not [cell for cell in cells if cell.startswith(("=", "+", "@"))]
    assert '\'=HYPERLINK("http://evil.example","x")' in cells
    view.choose_path = lambda *_args: str(tmp_path / "decisions.json")
    view.export("json")
    records = json.loads((tmp_path / "decisions.json").read_text(encoding="utf-8"))
    assert records[0]["request"]["user"].startswith("=HYPERLINK")  # JSON keeps it exact


def test_a_large_log_is_indexed_for_search_a_piece_at_a_time_saying_how_far(
    view: LogView, decided: Replica, qtbot: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.ui import log_view

    monkeypatch.setattr(log_view, "INDEX_STEP", 2)  # seven decisions: four pieces
    shown: list[str] = []
    view.status.setText("")
    original = decided.index_decisions
    calls: list[int | None] = []

    def piece(limit: int | None = None) -> int:
        calls.append(limit)
        shown.append(view.status.text())
        return original(limit)

    monkeypatch.setattr(decided, "index_decisions", piece)
    _type(qtbot, view.search[1], "granted")
    qtbot.waitUntil(lambda: bool(calls) and view.status.text() == "", timeout=5_000)
    assert calls[:4] == [2, 2, 2, 2]
    assert any("of 7" in text for text in shown), shown
    assert decided.index_decisions() == 0  # every decision is indexed now


def test_index_decisions_with_a_limit_indexes_that_many_in_seq_order(decided: Replica) -> None:
    assert decided.index_decisions(3) == 3
    assert decided.index_decisions(3) == 3
    assert decided.index_decisions() == 1
    assert decided.index_decisions() == 0
