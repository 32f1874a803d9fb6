"""`fleetgate-admin`: the desktop app's entry point.

    fleetgate-admin [--server URL] [--tenant T] [--user U] [--replica-dir DIR]
                    [--theme THEME] [--offline]
    fleetgate-admin --self-test                            check the app, headless

A replica signed in before (by the app or `fleetgate sync`) whose key is at
hand (the keyring, or FLEETGATE_PASSPHRASE) opens at once and is kept in sync
with the server it was signed in to; otherwise the sign-in window asks, with
the server, tenant and user prefilled. Settings not given on the command line
come from the environment, the person's settings and the machine's
(app/settings.py).

`--self-test` (the desktop issue, § Start) opens the administration window
offscreen on a temporary encrypted replica filled from the demo tenant, closes
and reopens that replica, visits every view, checks that every focusable
control has an accessible name, prints the time to a usable window and to
each view's first paint, and exits 0 (1 on any failure, naming it).
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
    parser.add_argument("--offline", action="store_true", default=None,
                        help="open the replica without connecting to the server")  # fmt: skip
    return parser.parse_args(argv)


PAGE_WORDS = {"role": "roles", "user": "users", "check": "check and explain",
              "pending": "pending edits", "outcomes": "conflicts and refusals",
              "log": "audit log"}  # fmt: skip


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
    from app.ui.admin import AdminWindow  # noqa: PLC0415
    from app.ui.theme import apply_theme  # noqa: PLC0415
    from app.ui.workspace import Workspace  # noqa: PLC0415
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
            window = AdminWindow(Workspace(replica, "self-test"), f"{TENANT} (self-test)")
            window.show()
            app.processEvents()
            window.grab()
            usable = time.perf_counter() - STARTED
            print(f"window usable: {usable:.3f} s after start "
                  f"({len(policy.roles):,} roles, {len(policy.users):,} users)")  # fmt: skip
            unnamed: list[str] = []
            for number, (key, page) in enumerate(window.pages.items()):
                begun = time.perf_counter()
                window.show_view(number)
                app.processEvents()
                page.grab()
                painted = time.perf_counter() - begun
                view = window.views.get(key)
                shown = f", {view.count.text()}" if view is not None else ""
                print(f"{PAGE_WORDS.get(key, key)} view: first paint {painted * 1000:.1f} ms"
                      f"{shown}")  # fmt: skip
                unnamed += [f"{name} ({key})" for name in _unnamed_controls(window)]
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
    """Run the app until its last window closes (`start_windows`)."""
    from PySide6.QtWidgets import QApplication  # noqa: PLC0415

    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    windows = start_windows(arguments)
    try:
        return int(app.exec())
    finally:
        for window in windows:
            replica = getattr(getattr(window, "workspace", None), "replica", None)
            if replica is not None:
                replica.close()


def start_windows(arguments: argparse.Namespace) -> list[Any]:
    """Show the first window: the administration window on the person's replica when it
    was signed in before (kept in sync unless offline), otherwise the sign-in window,
    prefilled from the settings. Returns the windows shown (the list grows when the
    sign-in window opens the administration window)."""
    from PySide6.QtWidgets import QApplication  # noqa: PLC0415

    from app.replica_paths import default_replica_dir  # noqa: PLC0415
    from app.settings import resolve_from_qt  # noqa: PLC0415
    from app.ui.sign_in import SignedIn, SignInWindow  # noqa: PLC0415
    from app.ui.theme import apply_theme  # noqa: PLC0415

    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    given = {"replica_dir": arguments.replica_dir and str(arguments.replica_dir),
             "tenant": arguments.tenant, "user": arguments.user,
             "server_url": arguments.server, "theme": arguments.theme,
             "work_offline": arguments.offline}  # fmt: skip
    settings, _stored = resolve_from_qt(given)
    for problem in settings.problems:
        print(f"fleetgate-admin: {problem}", file=sys.stderr)
    apply_theme(app, settings["theme"])
    directory = Path(settings["replica_dir"]) if settings["replica_dir"] else default_replica_dir()
    windows: list[Any] = []

    def open_admin(done: SignedIn) -> None:
        windows.append(admin_window(done))
        windows[-1].show()

    offline = bool(settings["work_offline"])
    done = _signed_in_before(directory, settings["tenant"], settings["user"],
                             settings["server_url"], offline=offline)  # fmt: skip
    if done is not None:
        open_admin(done)
    else:
        server = settings["server_url"] or ""
        sign_in = SignInWindow(directory, server=server, tenant=settings["tenant"] or "",
                               user=settings["user"] or "")  # fmt: skip
        sign_in.signed_in.connect(open_admin)
        sign_in.show()
        windows.append(sign_in)
    return windows


def _signed_in_before(
    directory: Path, tenant: str | None, user: str | None, server: str | None, *, offline: bool
) -> Any:
    """A `SignedIn` for a replica that holds a policy and was signed in before, opened
    without asking anything (keyring, or FLEETGATE_PASSPHRASE); None when the sign-in
    window must ask (no replica, no key at hand, not signed in)."""
    if not (tenant and user):
        return None
    from app.replica import Replica  # noqa: PLC0415
    from app.replica_file import ReplicaError  # noqa: PLC0415
    from app.ui.live_sync import LiveSync  # noqa: PLC0415
    from app.ui.sign_in import SignedIn, replica_mode  # noqa: PLC0415

    if replica_mode(directory, tenant, user) is None:
        return None
    phrase = os.environ.get("FLEETGATE_PASSPHRASE")
    source = (lambda: phrase) if phrase else None

    def reopen() -> Replica:
        return Replica.open(directory, tenant, user, passphrase=source)

    try:
        replica = reopen()
    except ReplicaError as error:
        print(f"fleetgate-admin: {error}", file=sys.stderr)
        return None
    if not replica.has_policy():
        replica.close()
        return None
    url = server or replica.meta().server
    sync = None
    if url and not offline and replica.tokens()[1] is not None:
        sync = LiveSync(url, reopen)
        sync.start()
    return SignedIn(replica, tenant, user, sync, reopen)


def admin_window(done: Any) -> Any:
    """The administration window over a signed-in (or unlocked) replica."""
    from app.ui.admin import AdminWindow  # noqa: PLC0415
    from app.ui.workspace import Workspace  # noqa: PLC0415

    workspace = Workspace(done.replica, done.user)
    workspace.prepare(done.reopen)  # usable before a large tenant's view is compiled
    return AdminWindow(workspace, f"{done.tenant} \u2014 {done.user}", sync=done.sync)


def main(argv: list[str] | None = None) -> int:
    arguments = _arguments(argv)
    if arguments.self_test:
        return self_test()
    return open_replica_window(arguments)


if __name__ == "__main__":
    sys.exit(main())
