"""app.ui.sign_in: signing in against a real sync server process (embedded Postgres),
a wrong password, a server that cannot be reached, working offline, the passphrase
asked where no keyring works; every control named."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QWidget

from app.ui.sign_in import SignedIn, SignInWindow
from tests.app.ui_fixtures import SCREENSHOTS, cheap_argon2, memory_keyring  # noqa: F401
from tests.e2e.faults import ServerProcess
from tests.server.conftest import ACME_POLICY, PASSWORD, make_tenant


@pytest.fixture
def acme_server(migrated: str, tmp_path: Path) -> Iterator[ServerProcess]:
    asyncio.run(make_tenant(migrated, "acme", document=ACME_POLICY))
    server = ServerProcess(migrated, tmp_path / "logs")
    server.start()
    yield server
    server.stop()


def _window(qtbot: Any, directory: Path, server: str, **kwargs: Any) -> SignInWindow:
    window = SignInWindow(directory, server=server, tenant="acme", user="admin", **kwargs)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    return window


def _signed_in(window: SignInWindow) -> list[SignedIn]:
    got: list[SignedIn] = []
    window.signed_in.connect(got.append)
    return got


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_signing_in_fills_the_replica_and_keeps_the_sync_running(
    acme_server: ServerProcess, tmp_path: Path, qtbot: Any
) -> None:
    window = _window(qtbot, tmp_path / "replicas", acme_server.url)
    got = _signed_in(window)
    qtbot.keyClicks(window.password, PASSWORD)
    qtbot.keyClick(window.password, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: bool(got), timeout=30_000)
    done = got[0]
    try:
        assert done.sync is not None and done.replica.has_policy()
        assert done.replica.entity_count("role") == len(ACME_POLICY["roles"])
        assert window.password.text() == ""  # not kept in the window
        # The first sync's snapshot arrived in parts the window counted.
        assert window.progress.maximum() >= 1
        assert window.progress.value() == window.progress.maximum()
    finally:
        done.sync.stop()
        done.replica.close()


def test_a_wrong_password_says_so_and_keeps_the_window_open(
    acme_server: ServerProcess, tmp_path: Path, qtbot: Any
) -> None:
    window = _window(qtbot, tmp_path / "replicas", acme_server.url)
    got = _signed_in(window)
    qtbot.keyClicks(window.password, "not the password")
    window.sign_in_button.click()
    qtbot.waitUntil(lambda: "Not signed in" in window.status.text(), timeout=30_000)
    assert not got and window.isVisible() and window.sign_in_button.isEnabled()


def test_an_unreachable_server_offers_to_work_offline_on_the_existing_replica(
    acme_server: ServerProcess, tmp_path: Path, qtbot: Any
) -> None:
    directory = tmp_path / "replicas"
    first = _window(qtbot, directory, acme_server.url)
    got = _signed_in(first)
    first.password.setText(PASSWORD)
    first.sign_in_button.click()
    qtbot.waitUntil(lambda: bool(got), timeout=30_000)
    assert got[0].sync is not None
    got[0].sync.stop()
    got[0].replica.close()
    window = _window(qtbot, directory, f"ws://127.0.0.1:{_closed_port()}/sync")
    offline = _signed_in(window)
    window.sign_in_button.click()
    qtbot.waitUntil(lambda: "cannot be reached" in window.status.text(), timeout=30_000)
    assert "work offline" in window.status.text() and window.offline_button.isEnabled()
    window.offline_button.click()
    assert offline and offline[0].sync is None and offline[0].replica.has_policy()
    offline[0].replica.close()


def test_an_unreachable_server_and_no_replica_says_there_is_nothing_to_open(
    tmp_path: Path, qtbot: Any
) -> None:
    window = _window(qtbot, tmp_path / "replicas", f"ws://127.0.0.1:{_closed_port()}/sync")
    window.password.setText(PASSWORD)
    window.sign_in_button.click()
    qtbot.waitUntil(lambda: "no replica" in window.status.text(), timeout=30_000)
    got = _signed_in(window)
    window.offline_button.click()
    assert not got and "holds no policy yet" in window.status.text()


def test_without_a_keyring_the_passphrase_is_asked_for_and_required(
    tmp_path: Path, qtbot: Any
) -> None:
    window = _window(qtbot, tmp_path / "replicas", "ws://127.0.0.1:1/sync",
                     keyring_works=lambda: False)  # fmt: skip
    assert window.passphrase.isVisible()
    window.password.setText(PASSWORD)
    window.sign_in_button.click()
    assert "passphrase" in window.status.text()
    keyed = _window(qtbot, tmp_path / "other", "ws://127.0.0.1:1/sync", keyring_works=lambda: True)
    assert not keyed.passphrase.isVisible()


def test_a_server_address_that_is_not_a_websocket_is_refused_before_connecting(
    tmp_path: Path, qtbot: Any
) -> None:
    window = _window(qtbot, tmp_path / "replicas", "https://fleetgate.example")
    window.password.setText(PASSWORD)
    window.sign_in_button.click()
    assert "wss://" in window.status.text() and window.sign_in_button.isEnabled()


def test_a_password_holding_a_nul_is_refused_before_connecting_and_says_why(
    tmp_path: Path, qtbot: Any
) -> None:
    # Pasted, a NUL reaches the field; sent, the server refuses the message unread.
    window = _window(qtbot, tmp_path / "replicas", f"ws://127.0.0.1:{_closed_port()}/sync")
    got = _signed_in(window)
    window.password.setText("hunter\x00zebra")
    window.sign_in_button.click()
    assert "NUL character" in window.status.text() and "zebra" not in window.status.text()
    assert window._sync is None and not got and window.sign_in_button.isEnabled()
    assert window.password.text() == ""


def test_a_tenant_of_text_no_server_holds_is_refused_before_a_replica_is_made(
    tmp_path: Path, qtbot: Any
) -> None:
    window = _window(qtbot, tmp_path / "replicas", f"ws://127.0.0.1:{_closed_port()}/sync")
    window.tenant.setText("acme\x00")
    window.password.setText(PASSWORD)
    window.sign_in_button.click()
    assert "unpaired surrogate" in window.status.text() and window._sync is None
    assert not (tmp_path / "replicas").exists() or not any((tmp_path / "replicas").iterdir())


def test_every_control_is_named_and_reachable_by_tab(tmp_path: Path, qtbot: Any) -> None:
    window = _window(qtbot, tmp_path / "replicas", "wss://fleetgate.example/sync")
    focusable = [w for w in window.findChildren(QWidget)
                 if w.isVisible() and w.focusPolicy() & Qt.FocusPolicy.TabFocus]  # fmt: skip
    assert [w for w in focusable if not w.accessibleName()] == []
    seen = set()
    start = widget = window.password
    for _ in range(500):  # the chain also holds labels: walk it round once
        seen.add(widget)
        widget = widget.nextInFocusChain()
        if widget is start:
            break
    assert set(focusable) <= seen
    SCREENSHOTS.mkdir(exist_ok=True)
    window.grab().save(str(SCREENSHOTS / "sign-in-standard.png"))


def test_a_revoked_device_is_wiped_and_the_window_says_why(
    acme_server: ServerProcess, migrated: str, tmp_path: Path, qtbot: Any
) -> None:
    import subprocess
    import sys

    from app.ui.sign_in import replica_mode

    directory = tmp_path / "replicas"
    first = _window(qtbot, directory, acme_server.url)
    got = _signed_in(first)
    first.password.setText(PASSWORD)
    first.sign_in_button.click()
    qtbot.waitUntil(lambda: bool(got), timeout=30_000)
    device = got[0].replica.meta().device
    assert got[0].sync is not None
    got[0].sync.stop()
    got[0].replica.close()
    revoked = subprocess.run(
        [sys.executable, "-m", "server", "admin", "revoke-device", "acme", device,
         "--database-url", migrated],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert revoked.returncode == 0, revoked.stderr
    window = _window(qtbot, directory, acme_server.url)
    again = _signed_in(window)
    window.sign_in_button.click()  # signed in before: the stored token is used
    qtbot.waitUntil(lambda: "revoked" in window.status.text(), timeout=30_000)
    assert not again and "wiped" in window.status.text()
    assert replica_mode(directory, "acme", "admin") is None  # its files are gone
