"""Policy as code in the desktop app: export the view to a file; import a file as edits.

Rules of this module (the desktop issue, § Windows and workflows, Policy as code):

- Export writes the replica's view (pending edits included) as a policy
  document (policy-format.md), JSON or YAML by the file's suffix, through a
  temporary file renamed over the target: a failed or cancelled export leaves
  no half file. It runs on a worker thread, with its progress shown and a
  Cancel (`ExportProgress`): YAML is written EXPORT_BATCH roles or users at a
  time, each a look at Cancel (50,000 users take seconds), without YAML
  aliases (a batch cannot refer to an anchor of another).
- Import never replaces anything: the file is read and compared with the view
  on a worker thread (a 50,000-user file takes a second to parse), then the
  dialog shows the differences in words and the access they change, and only
  when the person applies them are they queued, as the same intent-level
  edits `fleetgate edit --apply-policy` queues, which then sync.
- While a file is being read the dialog is modal and can be cancelled: the
  view is not changed meanwhile (the worker reads it, and works out the access
  the file's edits change there too: on 50,000 users that is seconds).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from PySide6.QtCore import QStringListModel, Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QListView,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app import offline
from app.policy_files import load_policy_file
from app.ui.background import Courier
from app.ui.controls import progress_bar, text_label
from app.ui.feedback import say
from app.ui.workspace import Workspace
from sync.policy.diff import diff_policies
from sync.policy.document import PolicyInvalid, export_policy, safe_dumper_class
from sync.policy.instant import Instant
from sync.policy.model import Policy
from sync.policy.reach import Unreachable, edits_to_reach

EXPORT_BATCH = 1000
"""Roles or users a YAML export writes between two reports of progress."""

Progress = Callable[[int, int], bool]
"""(entities written, entities in all) -> False to stop."""


class ExportCancelled(Exception):
    """The person cancelled an export; nothing was written."""


def export_policy_file(policy: Policy, path: Path, progress: Progress | None = None) -> None:
    """Write `policy` to `path` (YAML for .yaml/.yml, else JSON), reporting to `progress`
    (module rules). Raises ExportCancelled when it returns False, OSError when the
    file cannot be written; either way nothing is left at `path` nor beside it."""
    document = export_policy(policy)
    total = sum(len(document.get(key) or ()) for key in _BATCHED)
    report = progress or (lambda _done, _total: True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            if not report(0, total):
                raise ExportCancelled
            if path.suffix.lower() in (".yaml", ".yml"):
                _write_yaml(document, file, total, report)  # its last report: all written
            else:
                file.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
                if not report(total, total):
                    raise ExportCancelled
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


_BATCHED = ("roles", "users")


def _write_yaml(document: dict[str, Any], file: Any, total: int, report: Progress) -> None:
    import yaml  # noqa: PLC0415 - only for a YAML export

    class Dumper(safe_dumper_class()):  # type: ignore[misc]
        def ignore_aliases(self, data: Any) -> bool:
            return True  # module rules: no anchor may cross a batch

    def dump(value: Any) -> bytes:
        return yaml.dump(value, Dumper=Dumper, sort_keys=False, allow_unicode=True).encode()

    done = 0
    for key, value in document.items():
        if key not in _BATCHED or not isinstance(value, list) or not value:
            file.write(dump({key: value}))
            continue
        file.write(f"{key}:\n".encode())  # `roles:` or `users:`, plain words
        for start in range(0, len(value), EXPORT_BATCH):
            batch = value[start : start + EXPORT_BATCH]
            file.write(dump(batch))  # `- id: ...`: the block sequence of the key above
            done += len(batch)
            if not report(done, total):
                raise ExportCancelled


class ExportProgress(QDialog):
    """An export under way: how far it is, and Cancel (module rules). `finished_with`
    carries the outcome: the path written, ExportCancelled or the OSError."""

    finished_with = Signal(object)
    _progressed = Signal(int, int)

    def __init__(self, policy: Policy, path: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.path = path
        self.outcome: object = None
        self._policy: Policy | None = policy
        self._cancel = threading.Event()
        self.setObjectName("export-dialog")
        self.setWindowTitle(f"Export {path.name}")
        self.setAccessibleName(f"Export the policy to {path.name}")
        self.status = text_label(self, "export-status", "Export status", wrap=True)
        self.status.setText(f"Writing {path} ...")
        self.progress = progress_bar(self, "export-progress", "Roles and users written")
        self.progress.setRange(0, 0)
        self.cancel_button = QPushButton("&Cancel export")
        self.cancel_button.setAccessibleName("Cancel export")
        self.cancel_button.setAccessibleDescription("Stop writing; nothing is left at the file")
        self.cancel_button.clicked.connect(self.cancel)
        layout = QVBoxLayout(self)
        layout.addWidget(self.status)
        layout.addWidget(self.progress)
        buttons = QDialogButtonBox()
        buttons.addButton(self.cancel_button, QDialogButtonBox.ButtonRole.RejectRole)
        layout.addWidget(buttons)
        metrics = self.fontMetrics()
        self.resize(metrics.averageCharWidth() * 70, self.sizeHint().height())
        self._progressed.connect(self._show_progress, Qt.ConnectionType.QueuedConnection)
        self._courier = Courier(self)

    def start(self) -> None:
        """Write the file on a worker thread; `finished_with` says how it ended."""
        policy, path, self._policy = self._policy, self.path, None
        assert policy is not None, "an export starts once"
        progressed, cancel = self._progressed, self._cancel

        def report(done: int, total: int) -> bool:
            with contextlib.suppress(RuntimeError):  # the window closed meanwhile
                progressed.emit(done, total)
            return not cancel.is_set()

        def work() -> Path:
            export_policy_file(policy, path, report)
            return path

        self._courier.run("fleetgate-export", work, self._done)

    def cancel(self) -> None:
        """Stop at the next batch; nothing is left at the file."""
        self._cancel.set()
        self.cancel_button.setEnabled(False)
        say(self.status, "Cancelling the export ...")

    def reject(self) -> None:  # Escape, or closing the dialog: the same as Cancel
        self.cancel()

    def _show_progress(self, done: int, total: int) -> None:
        if total and not self._cancel.is_set():
            self.progress.setRange(0, total)
            self.progress.setValue(done)
            self.status.setText(f"Writing {self.path.name}: {done:,} of {total:,} roles and users")

    def _done(self, outcome: object) -> None:
        self.outcome = outcome
        self.accept()
        parent = self.parentWidget()
        if parent is not None:  # the keyboard goes back to the window it was opened from
            parent.activateWindow()
        self.finished_with.emit(outcome)


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
        access_delta: Callable[[Policy, list[dict[str, Any]], Instant], list[str]] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        """`access_delta(view, edits, now)`: the access the edits would change in the view,
        in words; pure (it runs on the worker)."""
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
        self.status = text_label(self, "import-status", "Import status", wrap=True)
        self.status.setText(f"Reading {path} ...")
        self.progress = progress_bar(self, "import-progress", "Reading the file")
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
        """Read the file and work out what it changes on a worker thread (module rules);
        the dialog fills in when that is done."""
        current, path, now = self.workspace.policy(), self.path, self.workspace.now()
        delta = self._access_delta

        def work() -> tuple[ImportPlan, list[str]]:
            plan = plan_import(current, path, now)
            documents = plan.documents
            access = delta(current, documents, now) if delta is not None and documents else []
            return plan, access

        self._courier.run("fleetgate-import", work, self._planned)

    def _planned(self, planned: tuple[ImportPlan, list[str]] | Exception) -> None:
        if self._cancelled:
            return
        if isinstance(planned, Exception):  # not a problem of the file: a bug, said as one
            planned = (ImportPlan(self.path, problem=f"reading it failed ({planned!r})"), [])
        plan, access_lines = planned
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
        access.setStringList(access_lines)
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
