"""The placeholder window: it opens headless and names itself for screen readers."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtWidgets import QLabel

from app.desktop import build_window


def test_placeholder_window_is_named_for_assistive_technology(qtbot) -> None:
    window = build_window()
    qtbot.addWidget(window)
    window.show()
    label = window.findChild(QLabel, "status")
    assert window.accessibleName() == "Fleetgate administration"
    assert label is not None
    assert label.accessibleName() == "Fleetgate status"
    assert "command line" in label.text()
    assert not window.grab().isNull()


def test_installed_qt_keeps_the_reference_count_of_none(qapp) -> None:  # type: ignore[no-untyped-def]
    # PySide6 6.12.0 leaked a decref of None per processEvents() call, which
    # pytest-qt makes after every test: the interpreter aborted at exit.
    before = sys.getrefcount(None)
    for _ in range(1000):
        qapp.processEvents()
    assert sys.getrefcount(None) - before >= -10


def test_self_test_opens_every_view_on_a_temporary_replica_and_exits_0(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import subprocess

    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "TMPDIR": str(tmp_path),
           "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"}  # fmt: skip
    argv = [sys.executable, "-m", "app.desktop", "--self-test"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("window usable: ") and "228 users" in lines[0]
    assert any(line.startswith("roles view: first paint") for line in lines)
    assert any(line.startswith("users view: first paint") for line in lines)
    assert lines[-1] == "self-test passed"
    assert list(tmp_path.iterdir()) == []  # the temporary replica is gone


def test_a_replica_that_does_not_open_is_named_and_exits_2(  # type: ignore[no-untyped-def]
    tmp_path, monkeypatch, capsys, qapp
) -> None:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QMessageBox

    from app.desktop import main

    # Nobody's own settings or this machine's decide the test.
    for scope in (QSettings.Scope.SystemScope, QSettings.Scope.UserScope):
        QSettings.setPath(QSettings.Format.NativeFormat, scope, str(tmp_path / scope.name))
    shown: list[str] = []
    monkeypatch.setattr(QMessageBox, "critical", lambda _parent, _title, text: shown.append(text))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
    try:
        code = main(["--replica-dir", str(tmp_path), "--tenant", "acme", "--user", "ann"])
    finally:
        fmt = QSettings.Format.NativeFormat
        QSettings.setPath(fmt, QSettings.Scope.SystemScope, "/etc/xdg")
        QSettings.setPath(fmt, QSettings.Scope.UserScope, str(Path.home() / ".config"))
    assert code == 2
    assert shown and "there is no replica" in shown[0]
    assert "there is no replica" in capsys.readouterr().err
