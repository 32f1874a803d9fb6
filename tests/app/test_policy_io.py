"""app.ui.policy_io: the view exported to a file (in batches, saying how far, cancellable
with nothing left behind), and a file imported as pending edits after its differences
are shown; bad files say why and queue nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.policy_files import load_policy_file
from app.ui import policy_io
from app.ui.policy_io import ExportCancelled, ImportDialog, export_policy_file
from app.ui.workspace import Workspace
from sync.policy.document import export_policy
from sync.policy.request import Request
from tests.app.ui_fixtures import (  # noqa: F401
    SCREENSHOTS,
    cheap_argon2,
    memory_keyring,
    ui_replica,
    workspace,
)


def _import(qtbot: Any, space: Workspace, path: Path) -> ImportDialog:
    def delta(_view: Any, docs: list[Any], _now: Any) -> list[str]:
        return [f"{len(docs)} edits"]

    dialog = ImportDialog(space, path, access_delta=delta)
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.start()
    qtbot.waitUntil(lambda: dialog.plan is not None, timeout=20_000)
    return dialog


def test_export_writes_the_view_with_its_pending_edits(
    workspace: Workspace,  # noqa: F811
    tmp_path: Path,
) -> None:
    workspace.queue([{"op": "assign_role", "user_id": "vic", "role_id": "driver"}])
    folder = tmp_path / "exports"
    folder.mkdir()
    path = folder / "acme.json"
    export_policy_file(workspace.policy(), path)
    document = json.loads(path.read_text())
    vic = next(u for u in document["users"] if u["id"] == "vic")
    assert {"role": "driver"} in vic["roles"]
    assert [p.name for p in folder.iterdir()] == ["acme.json"]  # no temporary left


def test_a_yaml_export_is_written_in_batches_saying_how_far_and_reads_back_as_the_view(
    workspace: Workspace,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(policy_io, "EXPORT_BATCH", 3)
    policy = workspace.policy()
    path = tmp_path / "acme.yaml"
    reports: list[tuple[int, int]] = []
    export_policy_file(policy, path, lambda done, total: reports.append((done, total)) or True)
    total = len(policy.roles) + len(policy.users)
    assert reports[0] == (0, total) and reports[-1] == (total, total)
    assert len(reports) > total // 3  # a report after each batch of three
    assert [done for done, _ in reports] == sorted(done for done, _ in reports)
    back = load_policy_file(path, now=workspace.now())
    assert export_policy(back) == export_policy(policy)
    assert "&id" not in path.read_text()  # no YAML anchor: batches cannot share one


@pytest.mark.parametrize("name", ["acme.yaml", "acme.json"])
def test_a_cancelled_export_leaves_nothing_behind(
    workspace: Workspace,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    monkeypatch.setattr(policy_io, "EXPORT_BATCH", 2)
    folder = tmp_path / "exports"
    folder.mkdir()
    calls: list[int] = []

    def stop_after_the_first_batch(done: int, _total: int) -> bool:
        calls.append(done)
        return len(calls) < 2

    with pytest.raises(ExportCancelled):
        export_policy_file(workspace.policy(), folder / name, stop_after_the_first_batch)
    assert list(folder.iterdir()) == []


def test_an_edited_export_imports_as_pending_edits_after_showing_the_differences(
    workspace: Workspace,  # noqa: F811
    tmp_path: Path,
    qtbot: Any,
) -> None:
    path = tmp_path / "acme.yaml"
    export_policy_file(workspace.policy(), path)
    import yaml

    document = yaml.safe_load(path.read_text())
    next(u for u in document["users"] if u["id"] == "vic")["roles"].append({"role": "driver"})
    path.write_text(yaml.safe_dump(document))
    dialog = _import(qtbot, workspace, path)
    differences = dialog.differences.model().stringList()
    assert any("vic" in line and "driver" in line for line in differences), differences
    assert dialog.access.model().stringList() == ["1 edits"]
    assert workspace.pending() == []  # nothing before applying
    SCREENSHOTS.mkdir(exist_ok=True)
    dialog.grab().save(str(SCREENSHOTS / "import-standard.png"))
    dialog.apply_button.click()
    assert len(workspace.pending()) == 1
    assert workspace.engine().decide(Request("vic", "drive", "vehicle"), workspace.now()).allowed


def test_a_malformed_file_says_where_and_queues_nothing(
    workspace: Workspace,  # noqa: F811
    tmp_path: Path,
    qtbot: Any,
) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"format": "fleetgate.policy/1", "tenant": "acme", "roles": 5}')
    dialog = _import(qtbot, workspace, path)
    assert "cannot be imported" in dialog.status.text() and "roles" in dialog.status.text()
    assert not dialog.apply_button.isEnabled() and workspace.pending() == []


def test_a_file_of_another_tenant_is_refused(
    workspace: Workspace,  # noqa: F811
    tmp_path: Path,
    qtbot: Any,
) -> None:
    path = tmp_path / "other.json"
    export_policy_file(workspace.policy(), path)
    document = json.loads(path.read_text())
    document["tenant"] = "globex"
    path.write_text(json.dumps(document))
    dialog = _import(qtbot, workspace, path)
    assert "tenant globex" in dialog.status.text() and not dialog.apply_button.isEnabled()


def test_the_same_policy_imports_as_nothing_to_do(
    workspace: Workspace,  # noqa: F811
    tmp_path: Path,
    qtbot: Any,
) -> None:
    path = tmp_path / "same.json"
    export_policy_file(workspace.policy(), path)
    dialog = _import(qtbot, workspace, path)
    assert "nothing to import" in dialog.status.text() and not dialog.apply_button.isEnabled()
