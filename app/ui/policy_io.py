"""Policy as code in the desktop app: export the view to a file; import a file as edits.

Rules of this module (the desktop issue, § Windows and workflows, Policy as code):

- Export writes the replica's view (pending edits included) as a policy
  document (policy-format.md), JSON or YAML by the file's suffix, through a
  temporary file renamed over the target: a failed export leaves no half file.
- Import never replaces anything: the file is read and compared with the view
  on a worker thread (a 50,000-user file takes a second to parse), then the
  dialog shows the differences in words and the access they change, and only
  when the person applies them are they queued, as the same intent-level
  edits `fleetgate edit --apply-policy` queues, which then sync.
- While a file is being read the dialog is modal and can be cancelled: the
  view is not changed meanwhile (the worker reads it).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from PySide6.QtCore import QStringListModel, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QListView,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app import offline
from app.policy_files import load_policy_file
from app.ui.background import Courier
from app.ui.feedback import say
from app.ui.workspace import Workspace
from sync.policy.diff import diff_policies
from sync.policy.document import PolicyInvalid, export_policy
from sync.policy.instant import Instant
from sync.policy.model import Policy
from sync.policy.reach import Unreachable, edits_to_reach


def export_policy_file(policy: Policy, path: Path) -> None:
    """Write `policy` to `path` (YAML for .yaml/.yml, else JSON); raises OSError."""
    document = export_policy(policy)
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml  # noqa: PLC0415 - only for a YAML export

        data = yaml.safe_dump(document, sort_keys=False, allow_unicode=True).encode()
    else:
        data = orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass(frozen=True, slots=True)
class ImportPlan:
    """What importing a file would do to the view."""

    path: Path
    differences: list[str] = field(default_factory=list)
    """The differences in words (sync.policy.diff)."""
    documents: list[dict[str, Any]] = field(default_factory=list)
    """The edits that make the view the file's policy, in the order they are queued."""
    problem: str | None = None
    """Why the file cannot be imported (nothing else is then set)."""


def plan_import(current: Policy, path: Path, now: Instant) -> ImportPlan:
    """Read `path` and work out the edits from `current` to it. Pure but for reading
    the file; safe on a worker thread while nothing changes `current`."""
    try:
        target = load_policy_file(path, now=now)
    except PolicyInvalid as error:
        return ImportPlan(path, problem="; ".join(str(p) for p in error.problems))
    except OSError as error:
        return ImportPlan(path, problem=f"cannot read {path}: {error.strerror or error}")
    if target.tenant != current.tenant:
        return ImportPlan(
            path, problem=f"the file is tenant {target.tenant}, this replica's is {current.tenant}"
        )
    try:
        documents = edits_to_reach(current, target)
    except Unreachable as error:
        return ImportPlan(
            path,
            problem=f"no edit can change {'; '.join(error.parts)} (an import on the server can)",
        )
    return ImportPlan(path, diff_policies(current, target), documents)


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


class ImportDialog(QDialog):
    """Read a policy file, show what it changes, queue it when asked (module rules)."""

    message = Signal(str)

    def __init__(
        self,
        workspace: Workspace,
        path: Path,
        *,
        access_delta: Callable[[list[dict[str, Any]]], list[str]] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        """`access_delta`: the access the edits would change, in words (the view's impact)."""
        super().__init__(parent)
        self.workspace = workspace
        self.path = path
        self.plan: ImportPlan | None = None
        self._access_delta = access_delta
        self._cancelled = False
        self.setObjectName("import-dialog")
        self.setWindowTitle(f"Import {path.name}")
        self.setAccessibleName(f"Import policy file {path.name}")
        self.setModal(True)
        self.status = QLabel(f"Reading {path} ...")
        self.status.setObjectName("import-status")
        self.status.setAccessibleName("Import status")
        self.status.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setObjectName("import-progress")
        self.progress.setAccessibleName("Reading the file")
        self.progress.setRange(0, 0)
        differences_label = QLabel("&Differences from this replica's view:")
        self.differences = QListView()
        self.differences.setObjectName("import-differences")
        self.differences.setAccessibleName("Differences")
        self.differences.setModel(QStringListModel(self))
        differences_label.setBuddy(self.differences)
        access_label = QLabel("&Access that changes:")
        self.access = QListView()
        self.access.setObjectName("import-access")
        self.access.setAccessibleName("Access that changes")
        self.access.setModel(QStringListModel(self))
        access_label.setBuddy(self.access)
        buttons = QDialogButtonBox()
        self.apply_button = QPushButton("&Apply as pending edits")
        self.apply_button.setAccessibleName("Apply as pending edits")
        self.apply_button.setEnabled(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setAccessibleName("Cancel import")
        buttons.addButton(self.apply_button, QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.addButton(self.cancel_button, QDialogButtonBox.ButtonRole.RejectRole)
        self.apply_button.clicked.connect(self.apply)
        self.cancel_button.clicked.connect(self.reject)
        layout = QVBoxLayout(self)
        for widget in (
            self.status,
            self.progress,
            differences_label,
            self.differences,
            access_label,
            self.access,
        ):
            layout.addWidget(widget)
        layout.addWidget(buttons)
        # In characters and lines: the dialog grows with the system's text size.
        metrics = self.fontMetrics()
        self.resize(metrics.averageCharWidth() * 106, metrics.lineSpacing() * 34)
        self._courier = Courier(self)

    def start(self) -> None:
        """Read the file on a worker thread; the dialog fills in when it is read."""
        current, path, now = self.workspace.policy(), self.path, self.workspace.now()
        self._courier.run("fleetgate-import", lambda: plan_import(current, path, now),
                          self._planned)  # fmt: skip

    def _planned(self, plan: ImportPlan | Exception) -> None:
        if self._cancelled:
            return
        if isinstance(plan, Exception):  # not a problem of the file: a bug, said as one
            plan = ImportPlan(self.path, problem=f"reading it failed ({plan!r})")
        self.plan = plan
        self.progress.hide()
        if plan.problem is not None:
            self._say(f"{plan.path.name} cannot be imported: {plan.problem}")
            return
        differences = self.differences.model()
        assert isinstance(differences, QStringListModel)
        differences.setStringList(plan.differences)
        if not plan.documents:
            self._say(f"This replica's view already is {plan.path.name}: nothing to import.")
            return
        access = self.access.model()
        assert isinstance(access, QStringListModel)
        if self._access_delta is not None:
            access.setStringList(self._access_delta(plan.documents))
        self._say(
            f"{plan.path.name}: {_count(len(plan.differences), 'difference')}, "
            f"{_count(len(plan.documents), 'edit')} to queue. Nothing changes until "
            "you apply them."
        )
        self.apply_button.setEnabled(True)
        self.apply_button.setDefault(True)
        self.apply_button.setFocus()

    def _say(self, text: str) -> None:
        say(self.status, text)

    def apply(self) -> None:
        """Queue the file's edits (checked as the server will) and close."""
        plan = self.plan
        if plan is None or not plan.documents:
            return
        try:
            seqs = self.workspace.queue(
                plan.documents, where=lambda i: f"{plan.path.name}: edit [{i}]"
            )
        except offline.EditProblem as problem:
            self._say(f"Nothing was queued: {problem}")
            self.message.emit(f"Import refused: {problem}")
            return
        text = f"Queued {len(seqs)} edits from {plan.path.name} (edits {seqs[0]}-{seqs[-1]})"
        self.message.emit(text)
        self.accept()

    def reject(self) -> None:
        self._cancelled = True
        super().reject()
