"""`fleetgate-admin`: the desktop app's entry point.

    fleetgate-admin --replica-dir DIR --tenant T --user U   open U's replica (offline)
    fleetgate-admin --self-test                            check the app, headless

Settings not given on the command line come from the environment, the
person's settings and the machine's (app/settings.py). The sign-in window
arrives with the rest of the desktop issue; until then a replica that was
synced with `fleetgate sync` opens here, offline.

`--self-test` (the desktop issue, § Start) opens the main window offscreen on
a temporary encrypted replica filled from the demo tenant, closes and reopens
that replica, visits every view, checks that every focusable control has an
accessible name, prints the time to a usable window and to each view's first
paint, and exits 0 (1 on any failure, naming it).
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()
"""As early as this module can see: the self-test's times run from here."""

import argparse  # noqa: E402 - after STARTED on purpose
import os  # noqa: E402
import secrets  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fleetgate-admin", description="Fleetgate administration (desktop)"
    )
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="open every view offscreen on a temporary replica, print timings",
    )
    parser.add_argument(
        "--replica-dir", type=Path, default=None, metavar="DIR", help="where the replicas are kept"
    )
    parser.add_argument("--tenant", default=None, metavar="T")
    parser.add_argument("--user", default=None, metavar="U")
    parser.add_argument(
        "--server", default=None, metavar="URL", help="the sync server (ws:// or wss://)"
    )
    parser.add_argument("--theme", default=None,
                        choices=["system", "standard", "high-contrast"])  # fmt: skip
    return parser.parse_args(argv)


def _unnamed_controls(window: Any) -> list[str]:
    from PySide6.QtCore import Qt  # noqa: PLC0415 - Qt only once the app runs
    from PySide6.QtWidgets import QWidget  # noqa: PLC0415

    return [
        w.objectName() or type(w).__name__
        for w in window.findChildren(QWidget)
        if w.isVisible() and w.focusPolicy() & Qt.FocusPolicy.TabFocus and not w.accessibleName()
    ]


def self_test() -> int:
    """The self-test of the module docstring."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication  # noqa: PLC0415

    from app.demo import DEMO, TENANT  # noqa: PLC0415
    from app.policy_files import load_policy_file  # noqa: PLC0415
    from app.replica import Replica  # noqa: PLC0415
    from app.replica_file import KeyMode  # noqa: PLC0415
    from app.sync_client import wall_now  # noqa: PLC0415
    from app.ui.main_window import MainWindow  # noqa: PLC0415
    from app.ui.theme import apply_theme  # noqa: PLC0415
    from sync.replication.digest import digest_of  # noqa: PLC0415
    from sync.replication.entities import policy_entities  # noqa: PLC0415

    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    apply_theme(app, "standard")
    passphrase = secrets.token_urlsafe(24)  # this run's only: nothing is left behind
    with tempfile.TemporaryDirectory(prefix="fleetgate-self-test-") as folder:
        directory = Path(folder)
        policy = load_policy_file(DEMO, now=wall_now())
        entities = list(policy_entities(policy))
        created = Replica.open(directory, TENANT, "self-test", create=True,
                               mode=KeyMode.PASSPHRASE, passphrase=lambda: passphrase)  # fmt: skip
        created.replace_all(1, entities, digest_of(entities))
        created.close()
        replica = Replica.open(directory, TENANT, "self-test", passphrase=lambda: passphrase)
        try:
            if replica.entity_count("user") != len(policy.users):
                print("self-test: the reopened replica lost users", file=sys.stderr)
                return 1
            window = MainWindow(replica, f"{TENANT} (self-test)", status=replica)
            window.show()
            app.processEvents()
            window.grab()
            usable = time.perf_counter() - STARTED
            print(f"window usable: {usable:.3f} s after start "
                  f"({len(policy.roles):,} roles, {len(policy.users):,} users)")  # fmt: skip
            for number, (kind, view) in enumerate(window.views.items()):
                begun = time.perf_counter()
                window.show_view(number)
                app.processEvents()
                view.grab()
                painted = time.perf_counter() - begun
                print(f"{kind}s view: first paint {painted * 1000:.1f} ms, "
                      f"{view.count.text()}")  # fmt: skip
            unnamed = _unnamed_controls(window)
            if unnamed:
                print(f"self-test: controls without an accessible name: {', '.join(unnamed)}",
                      file=sys.stderr)  # fmt: skip
                return 1
            window.close()
        finally:
            replica.close()
    print("self-test passed")
    return 0


def open_replica_window(arguments: argparse.Namespace) -> int:
    """The main window over a replica synced before (offline)."""
    from PySide6.QtWidgets import QApplication, QMessageBox  # noqa: PLC0415

    from app.replica import Replica  # noqa: PLC0415
    from app.replica_file import ReplicaError, passphrase_from_environment  # noqa: PLC0415
    from app.settings import resolve_from_qt  # noqa: PLC0415
    from app.ui.main_window import MainWindow  # noqa: PLC0415
    from app.ui.theme import apply_theme  # noqa: PLC0415

    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    given = {"replica_dir": arguments.replica_dir and str(arguments.replica_dir),
             "tenant": arguments.tenant, "user": arguments.user,
             "server_url": arguments.server, "theme": arguments.theme}  # fmt: skip
    settings, _stored = resolve_from_qt(given)
    for problem in settings.problems:
        print(f"fleetgate-admin: {problem}", file=sys.stderr)
    apply_theme(app, settings["theme"])
    if not (settings["tenant"] and settings["user"]):
        window = build_window()
        window.show()
        return int(app.exec())
    from app.replica_paths import default_replica_dir  # noqa: PLC0415

    directory = Path(settings["replica_dir"]) if settings["replica_dir"] else default_replica_dir()
    try:
        replica = Replica.open(directory, settings["tenant"], settings["user"],
                               passphrase=passphrase_from_environment())  # fmt: skip
    except ReplicaError as error:
        QMessageBox.critical(None, "Fleetgate", str(error))
        print(f"fleetgate-admin: {error}", file=sys.stderr)
        return 2
    from app.offline import effective_clock  # noqa: PLC0415

    try:
        window = MainWindow(replica, settings["tenant"], status=replica,
                            now=effective_clock(replica))  # fmt: skip
        window.show()
        return int(app.exec())
    finally:
        replica.close()


def build_window() -> Any:
    """The window shown when no replica is named: how to get one, every control named."""
    from PySide6.QtWidgets import QLabel, QMainWindow  # noqa: PLC0415

    window = QMainWindow()
    window.setWindowTitle("Fleetgate")
    window.setAccessibleName("Fleetgate administration")
    label = QLabel(
        "No replica to open yet. Sync one with the command line, then open it here:\n"
        "fleetgate sync --server URL --tenant T --user U\n"
        "fleetgate-admin --tenant T --user U"
    )
    label.setObjectName("status")
    label.setAccessibleName("Fleetgate status")
    label.setAccessibleDescription("How to open a replica: the sign-in window is not built yet.")
    label.setWordWrap(True)
    window.setCentralWidget(label)
    window.resize(520, 180)
    return window


def main(argv: list[str] | None = None) -> int:
    arguments = _arguments(argv)
    if arguments.self_test:
        return self_test()
    return open_replica_window(arguments)


if __name__ == "__main__":
    sys.exit(main())
