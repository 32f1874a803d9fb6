"""fleetgate-admin: the first window it shows, and its self-test."""

from __future__ import annotations

import sys
from pathlib import Path


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


def _isolated_settings(tmp_path: Path) -> None:
    from PySide6.QtCore import QSettings

    # Nobody's own settings or this machine's decide the test.
    for scope in (QSettings.Scope.SystemScope, QSettings.Scope.UserScope):
        QSettings.setPath(QSettings.Format.NativeFormat, scope, str(tmp_path / scope.name))


def _restore_settings() -> None:
    from PySide6.QtCore import QSettings

    fmt = QSettings.Format.NativeFormat
    QSettings.setPath(fmt, QSettings.Scope.SystemScope, "/etc/xdg")
    QSettings.setPath(fmt, QSettings.Scope.UserScope, str(Path.home() / ".config"))


def test_without_a_replica_the_sign_in_window_opens_prefilled(  # type: ignore[no-untyped-def]
    tmp_path, monkeypatch, qapp
) -> None:
    from app.desktop import _arguments, start_windows
    from app.ui.sign_in import SignInWindow

    _isolated_settings(tmp_path)
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
    try:
        windows = start_windows(
            _arguments(
                [
                    "--replica-dir",
                    str(tmp_path),
                    "--tenant",
                    "acme",
                    "--user",
                    "ann",
                    "--server",
                    "ws://fleet:8765/sync",
                ]
            )
        )
    finally:
        _restore_settings()
    (window,) = windows
    assert isinstance(window, SignInWindow) and window.isVisible()
    assert (window.server.text(), window.tenant.text(), window.user.text()) == (
        "ws://fleet:8765/sync",
        "acme",
        "ann",
    )
    window.close()


def test_a_replica_signed_in_before_opens_the_admin_window_offline(  # type: ignore[no-untyped-def]
    tmp_path, monkeypatch, qapp
) -> None:
    from app.desktop import _arguments, start_windows
    from app.ui.admin import AdminWindow
    from tests.app.ui_fixtures import fill_replica, ui_policy

    _isolated_settings(tmp_path)
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
    monkeypatch.setenv("FLEETGATE_PASSPHRASE", "the field laptop's passphrase")
    from app.replica_file import KeyMode

    replica = fill_replica(
        tmp_path / "replicas",
        ui_policy(),
        mode=KeyMode.PASSPHRASE,
        passphrase=lambda: "the field laptop's passphrase",
    )
    replica.close()
    try:
        windows = start_windows(
            _arguments(
                [
                    "--replica-dir",
                    str(tmp_path / "replicas"),
                    "--tenant",
                    "acme",
                    "--user",
                    "boss",
                    "--offline",
                ]
            )
        )
    finally:
        _restore_settings()
    (window,) = windows
    try:
        assert isinstance(window, AdminWindow) and window.sync is None
        assert window.views["role"].model.total == len(ui_policy()["roles"])
    finally:
        window.close()
        window.workspace.replica.close()
