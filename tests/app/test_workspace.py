"""app.ui.workspace: edits checked and queued against the kept engine, which then
decides as the replica's view does; refused edits leave both as they were."""

from __future__ import annotations

import pytest

from app import offline
from app.ui.workspace import Workspace
from sync.policy.engine import Engine
from sync.policy.request import Request
from sync.replication.entities import USER, Entity
from tests.app.ui_fixtures import cheap_argon2, memory_keyring, ui_replica, workspace  # noqa: F401

DRIVE = Request("vic", "drive", "vehicle", "v-1")


def _fresh_engine(space: Workspace) -> Engine:
    policy, _ = offline.view_policy(space.replica, space.now())
    return Engine(policy)


def test_a_queued_edit_is_in_the_kept_engine_and_in_a_fresh_view(workspace: Workspace) -> None:  # noqa: F811
    seen: list[str] = []
    workspace.changed.connect(lambda: seen.append("changed"))
    assert not workspace.engine().decide(DRIVE, workspace.now()).allowed
    seqs = workspace.queue([{"op": "assign_role", "user_id": "vic", "role_id": "driver"}])
    assert len(seqs) == 1 and seen == ["changed"]
    assert workspace.engine().decide(DRIVE, workspace.now()).allowed
    assert _fresh_engine(workspace).decide(DRIVE, workspace.now()).allowed
    assert [row.seq for row in workspace.pending()] == seqs


def test_a_refused_edit_in_a_series_leaves_the_engine_and_outbox_as_they_were(
    workspace: Workspace,  # noqa: F811
) -> None:
    documents = [
        {"op": "assign_role", "user_id": "vic", "role_id": "driver"},
        {"op": "assign_role", "user_id": "nobody", "role_id": "driver"},
    ]
    with pytest.raises(offline.EditProblem, match=r"edit \[1\]"):
        workspace.queue(documents)
    assert not workspace.engine().decide(DRIVE, workspace.now()).allowed
    assert workspace.pending() == []


def test_an_edit_the_author_may_not_make_is_refused_with_the_permission(
    workspace: Workspace,  # noqa: F811
) -> None:
    vic = Workspace(workspace.replica, "vic")
    with pytest.raises(offline.EditProblem, match="vic may not make it"):
        vic.queue([{"op": "assign_role", "user_id": "vic", "role_id": "tenant-admin"}])
    assert workspace.pending() == []


def test_take_back_queues_the_compensating_edit_and_keeps_the_first(
    workspace: Workspace,  # noqa: F811
) -> None:
    (first,) = workspace.queue([{"op": "assign_role", "user_id": "vic", "role_id": "driver"}])
    undo = workspace.take_back(first)
    assert undo and all(seq > first for seq in undo)
    assert [row.seq for row in workspace.pending()] == [first, *undo]
    assert [row.cancels for row in workspace.pending()][1:] == [first] * len(undo)
    assert not workspace.engine().decide(DRIVE, workspace.now()).allowed


def test_take_back_of_an_unknown_seq_says_so(workspace: Workspace) -> None:  # noqa: F811
    with pytest.raises(KeyError):
        workspace.take_back(999)


def test_reload_builds_the_view_again_and_says_so(workspace: Workspace) -> None:  # noqa: F811
    before = workspace.engine()
    seen: list[str] = []
    workspace.changed.connect(lambda: seen.append("changed"))
    workspace.reload()
    assert workspace.engine() is not before and seen == ["changed"]


def _reopen(space: Workspace):  # type: ignore[no-untyped-def]
    from app.replica import Replica

    file = space.replica.file
    return lambda: Replica.open(file.directory, "acme", "boss")


def test_prepare_compiles_the_view_on_a_worker_and_says_when_it_is_ready(
    workspace: Workspace,  # noqa: F811
    qtbot,  # type: ignore[no-untyped-def]
) -> None:
    assert not workspace.is_ready() and not workspace.is_preparing()
    with qtbot.waitSignal(workspace.ready, timeout=20_000):
        workspace.prepare(_reopen(workspace))
        assert workspace.is_preparing()
    assert workspace.is_ready() and not workspace.is_preparing()
    assert workspace.engine().decide(Request("vic", "read", "vehicle"), workspace.now()).allowed


def test_asking_for_the_engine_while_it_is_prepared_waits_for_that_work(
    workspace: Workspace,  # noqa: F811
) -> None:
    workspace.prepare(_reopen(workspace))
    engine = workspace.engine()  # joins the worker, does not compile a second time
    assert workspace.engine() is engine and not workspace.is_preparing()


def _server_gave_vic_driver(space: Workspace) -> None:
    """A sync brought a change: vic holds driver in the confirmed policy now."""
    replica = space.replica
    (vic,) = [e for e in replica.entities() if e.kind == USER and e.id == "vic"]
    document = dict(vic.document)
    document["roles"] = [*document.get("roles", []), {"role_id": "r-driver"}]
    replica.apply_changes(replica.meta().cursor + 1, [Entity(USER, "vic", document)], 1)


def test_a_view_prepared_before_a_reload_is_compiled_again_on_the_worker(
    workspace: Workspace,  # noqa: F811
    qtbot,  # type: ignore[no-untyped-def]
) -> None:
    workspace.prepare(_reopen(workspace))
    _server_gave_vic_driver(workspace)
    workspace.reload()  # the confirmed policy moved while the worker read the old one
    with qtbot.waitSignal(workspace.ready, timeout=20_000):
        pass
    assert workspace.is_ready()  # the second compile, not the stale first one
    assert workspace.engine().decide(DRIVE, workspace.now()).allowed


def test_a_reload_compiles_on_a_worker_while_the_old_view_is_shown(
    workspace: Workspace,  # noqa: F811
    qtbot,  # type: ignore[no-untyped-def]
) -> None:
    with qtbot.waitSignal(workspace.ready, timeout=20_000):
        workspace.prepare(_reopen(workspace))
    shown = workspace.engine()
    _server_gave_vic_driver(workspace)
    with qtbot.waitSignal(workspace.changed, timeout=20_000):
        workspace.reload()
        # Meanwhile the window goes on with the view it had: nothing compiles here.
        assert workspace.is_refreshing() and workspace.engine() is shown
        assert not shown.decide(DRIVE, workspace.now()).allowed
    assert not workspace.is_refreshing()
    assert workspace.engine() is not shown
    assert workspace.engine().decide(DRIVE, workspace.now()).allowed
    assert [a.role_id for a in workspace.confirmed().users["vic"].roles][-1] == "r-driver"


def test_an_edit_queued_while_the_view_refreshes_is_in_the_view_that_replaces_it(
    workspace: Workspace,  # noqa: F811
    qtbot,  # type: ignore[no-untyped-def]
) -> None:
    with qtbot.waitSignal(workspace.ready, timeout=20_000):
        workspace.prepare(_reopen(workspace))
    _server_gave_vic_driver(workspace)
    workspace.reload()
    suspend = {"op": "suspend_user", "user_id": "sam"}
    workspace.queue([suspend])  # on the view shown; the one compiling lacks it
    assert workspace.engine().decide(Request("sam", "read", "vehicle"), workspace.now()).reason \
        == "user sam is suspended"  # fmt: skip
    qtbot.waitUntil(lambda: not workspace.is_refreshing(), timeout=20_000)
    engine = workspace.engine()
    assert engine.decide(DRIVE, workspace.now()).allowed  # the sync's change
    assert engine.decide(Request("sam", "read", "vehicle"), workspace.now()).reason == (
        "user sam is suspended"  # and the edit queued meanwhile
    )


def test_the_admin_window_says_loading_until_the_view_is_prepared(
    workspace: Workspace,  # noqa: F811
    qtbot,  # type: ignore[no-untyped-def]
) -> None:
    from app.ui.admin import AdminWindow

    workspace.prepare(_reopen(workspace))
    window = AdminWindow(workspace, "acme")
    qtbot.addWidget(window)
    assert window.places["role"].currentWidget().accessibleName().endswith("loading the policy")
    qtbot.waitUntil(lambda: window.views_built, timeout=20_000)
    assert window.places["role"].currentWidget() is window.role_editor
    assert window.role_editor.role_id is not None  # the first role, not a blank form


def test_the_confirmed_policy_is_kept_apart_from_the_view_and_spares_take_back_a_load(
    workspace: Workspace,  # noqa: F811
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    (first,) = workspace.queue([{"op": "assign_role", "user_id": "vic", "role_id": "driver"}])
    confirmed = workspace.confirmed()
    assert [a.role_id for a in confirmed.users["vic"].roles] == ["r-viewer"]  # no pending edit
    assert "r-driver" in [a.role_id for a in workspace.policy().users["vic"].roles]
    loads: list[int] = []
    original = workspace.replica.load_policy
    monkeypatch.setattr(workspace.replica, "load_policy",
                        lambda now: loads.append(1) or original(now))  # fmt: skip
    assert workspace.take_back(first)
    assert loads == []  # undo reads the kept policies, not the replica's 50,000 rows
    assert [a.role_id for a in workspace.confirmed().users["vic"].roles] == ["r-viewer"]


def test_a_read_is_not_delivered_to_a_widget_deleted_meanwhile(
    workspace: Workspace,  # noqa: F811
    qtbot,  # type: ignore[no-untyped-def]
) -> None:
    import shiboken6
    from PySide6.QtWidgets import QLabel

    label = QLabel("waiting")
    got: list[object] = []
    workspace.read_later(lambda engine: len(engine.policy.users), got.append, label)
    shiboken6.delete(label)  # its window closed before the worker started
    kept: list[object] = []
    workspace.read_later(lambda engine: len(engine.policy.users), kept.append)
    qtbot.waitUntil(lambda: bool(kept), timeout=5_000)
    qtbot.wait(100)  # time enough for the first, asked before it
    assert got == [] and kept == [len(workspace.policy().users)]
