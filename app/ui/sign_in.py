"""The sign-in window: server, tenant, user, password; or unlock a replica and work offline.

Rules of this module (the desktop issue, § Windows and workflows, Sign-in):

- The server URL and tenant come prefilled from settings (app/settings.py).
- Signing in opens (or creates) the person's replica first, in keyring mode
  where a keyring works and else with a passphrase asked here, then starts
  the app's `LiveSync` with the password; the window closes on the first
  `caught_up`. The password goes to the connection and is dropped there.
- Every way it can fail says what happened and what to do, in the window's
  status line (announced): a wrong password (the replica and its outbox are
  kept); a server that cannot be reached (offer "Work offline" when the
  replica already holds a policy); a replica another program holds or a
  wrong passphrase; a device whose access was revoked (the replica was wiped,
  and the window says so).
- "Work offline" unlocks an existing replica without the network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.replica import Replica
from app.replica_file import KeyMode, ReplicaError, slot_name
from app.replica_keys import keyring_available, read_header
from app.sync_client import EXIT_SIGN_IN, EXIT_WIPED
from app.ui import feedback
from app.ui.controls import progress_bar, text_label
from app.ui.live_sync import LiveSync
from sync.protocol.client import Password

KEY_FROM_PASSPHRASE = "No system keyring works here: the replica's key comes from this passphrase."  # noqa: S105 - words


def replica_mode(directory: Path, tenant: str, user: str) -> KeyMode | None:
    """How the existing replica of `user` in `tenant` is keyed; None when there is none
    (or its header cannot be read: opening it then says what is wrong)."""
    header = directory / f"{slot_name(tenant, user)}.header"
    if not header.exists():
        return None
    try:
        return read_header(header).mode
    except ReplicaError:
        return None


@dataclass(slots=True)
class SignedIn:
    """What the main window needs once the person is in."""

    replica: Replica
    """Opened on the UI thread, for the windows."""
    tenant: str
    user: str
    sync: LiveSync | None
    """Kept connected; None when working offline."""
    reopen: Callable[[], Replica]
    """Opens the same replica again (on another thread: the sync's)."""


class SignInWindow(QDialog):
    """Sign in, or unlock and work offline (module rules). Emits `signed_in` then accepts."""

    signed_in = Signal(object)
    """A `SignedIn`."""

    def __init__(
        self,
        directory: Path,
        *,
        server: str = "",
        tenant: str = "",
        user: str = "",
        keyring_works: Callable[[], bool] = keyring_available,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.directory = directory
        self._keyring_works = keyring_works
        self._sync: LiveSync | None = None
        self._pending: SignedIn | None = None
        self.setWindowTitle("Sign in to Fleetgate")
        self.setObjectName("sign-in")
        self.setAccessibleName("Sign in to Fleetgate")
        form = QFormLayout()
        self.server = self._field(
            form,
            "&Server:",
            "Server address",
            server,
            "The sync server, for example wss://fleetgate.example/sync",
        )
        self.tenant = self._field(form, "&Tenant:", "Tenant", tenant, "Your organisation's tenant")
        self.user = self._field(form, "&User:", "User", user, "Your user id in the tenant")
        self.password = self._field(form, "&Password:", "Password", "", "Your password")
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.passphrase = self._field(
            form, "Replica pass&phrase:", "Replica passphrase", "", KEY_FROM_PASSPHRASE
        )
        self.passphrase.setEchoMode(QLineEdit.EchoMode.Password)
        self._passphrase_label = form.labelForField(self.passphrase)
        self.status = text_label(self, "sign-in-status", "Sign-in status", wrap=True)
        self.progress = progress_bar(
            self, "sign-in-progress", "Copying the policy to this computer"
        )
        self.progress.setFormat("%v of %m parts")
        self.progress.hide()
        buttons = QDialogButtonBox()
        self.sign_in_button = QPushButton("Sign &in")
        self.sign_in_button.setAccessibleName("Sign in")
        self.sign_in_button.setDefault(True)
        self.offline_button = QPushButton("Work &offline")
        self.offline_button.setAccessibleName("Work offline")
        self.offline_button.setAccessibleDescription(
            "Open the replica on this computer without connecting to the server"
        )
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setAccessibleName("Cancel")
        buttons.addButton(self.sign_in_button, QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.addButton(self.offline_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.cancel_button, QDialogButtonBox.ButtonRole.RejectRole)
        self.sign_in_button.clicked.connect(self.sign_in)
        self.offline_button.clicked.connect(self.work_offline)
        self.cancel_button.clicked.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.status)
        layout.addWidget(self.progress)
        layout.addWidget(buttons)
        # 77 characters (460 pixels at the default text size): a server address fits,
        # at any text size.
        self.setMinimumWidth(self.fontMetrics().averageCharWidth() * 77)
        for field in (self.tenant, self.user):
            field.textChanged.connect(self._update_fields)
        self._update_fields()
        first = next((f for f in (self.server, self.tenant, self.user) if not f.text()), None)
        (first or self.password).setFocus()

    def _field(
        self, form: QFormLayout, label: str, name: str, value: str, description: str
    ) -> QLineEdit:
        field = QLineEdit(value)
        field.setAccessibleName(name)
        field.setAccessibleDescription(description)
        field.setObjectName(name.lower().replace(" ", "-"))
        caption = QLabel(label)
        caption.setBuddy(field)
        form.addRow(caption, field)
        return field

    # --- what the person sees ----------------------------------------------------------

    def _existing_mode(self) -> KeyMode | None:
        tenant, user = self.tenant.text().strip(), self.user.text().strip()
        if not (tenant and user):
            return None
        return replica_mode(self.directory, tenant, user)

    def _needs_passphrase(self) -> bool:
        mode = self._existing_mode()
        if mode is not None:
            return mode is KeyMode.PASSPHRASE
        return not self._keyring_works()

    def _update_fields(self) -> None:
        needs = self._needs_passphrase()
        self.passphrase.setVisible(needs)
        if self._passphrase_label is not None:
            self._passphrase_label.setVisible(needs)
        self.offline_button.setEnabled(self._existing_mode() is not None)

    def say(self, text: str) -> None:
        """Show `text` in the status line and announce it."""
        feedback.say(self.status, text)

    # --- signing in --------------------------------------------------------------------

    def _open(self, *, create: bool) -> tuple[Replica, Callable[[], Replica]] | None:
        tenant, user = self.tenant.text().strip(), self.user.text().strip()
        if not (tenant and user):
            self.say("Give the tenant and your user id.")
            return None
        passphrase_text = self.passphrase.text()
        needs = self._needs_passphrase()
        if needs and not passphrase_text:
            self.say("Give the replica's passphrase: " + KEY_FROM_PASSPHRASE)
            self.passphrase.setFocus()
            return None
        mode = None if self._existing_mode() else (KeyMode.PASSPHRASE if needs else None)
        source = (lambda: passphrase_text) if needs else None
        directory = self.directory

        def reopen() -> Replica:
            return Replica.open(directory, tenant, user, passphrase=source)

        try:
            directory.mkdir(parents=True, exist_ok=True)
            replica = Replica.open(
                directory, tenant, user, create=create, passphrase=source, mode=mode
            )
        except ReplicaError as error:
            self.say(str(error))
            return None
        return replica, reopen

    def sign_in(self) -> None:
        """Open the replica and connect; the window closes once the replica caught up."""
        server = self.server.text().strip()
        if not server.startswith(("ws://", "wss://")):
            self.say("The server address starts with wss:// (or ws:// on a test network).")
            self.server.setFocus()
            return
        opened = self._open(create=True)
        if opened is None:
            return
        replica, reopen = opened
        if replica.meta().server != server:
            replica.set_meta(server=server)
        password = self.password.text()
        self.password.clear()
        credentials = Password(self.tenant.text().strip(), self.user.text().strip(), password)
        if password and (problem := credentials.problem()) is not None:
            replica.close()
            self.say(f"Not sent: {problem}, which no server can take.")
            self.password.setFocus()
            return
        has_tokens = replica.tokens()[1] is not None
        if not password and not has_tokens:
            replica.close()
            self.say("Give your password to sign in.")
            self.password.setFocus()
            return
        sync = LiveSync(server, reopen, credentials=credentials if password else None)
        self._sync = sync
        self._pending = SignedIn(
            replica, self.tenant.text().strip(), self.user.text().strip(), sync, reopen
        )
        sync.caught_up.connect(self._caught_up)
        sync.ended.connect(self._ended)
        sync.unreachable.connect(self._unreachable)
        sync.progress.connect(self._progress)
        self.sign_in_button.setEnabled(False)
        self.say(f"Connecting to {server} ...")
        sync.start()

    def _progress(self, received: int, total: int) -> None:
        """A first sync copies the tenant's policy in parts: how far it is (Cancel stops)."""
        if self._pending is None:
            return
        if self.progress.isHidden():
            self.progress.show()
            self.say("Copying the policy to this computer ... (Cancel stops; nothing is lost)")
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(received)

    def _caught_up(self) -> None:
        done = self._pending
        if done is None:
            return
        self._pending = None
        self.say("Signed in; the replica is up to date.")
        self.signed_in.emit(done)
        self.accept()

    def _give_up(self) -> None:
        sync, self._sync = self._sync, None
        if sync is not None:
            sync.stop()
        done, self._pending = self._pending, None
        if done is not None:
            done.replica.close()
        self.sign_in_button.setEnabled(True)
        self.progress.hide()
        self._update_fields()

    def _ended(self, code: int, message: str) -> None:
        self._give_up()
        if code == EXIT_SIGN_IN:
            self.say(f"Not signed in: {message}. Your replica and pending edits are kept.")
            self.password.setFocus()
        elif code == EXIT_WIPED:
            self.say(
                f"This device's access was revoked ({message}): the replica on this "
                "computer was wiped. Ask your administrator to enrol it again."
            )
        else:
            self.say(f"Sync stopped: {message}")

    def _unreachable(self, why: str) -> None:
        done = self._pending
        if done is None:
            return
        if done.replica.has_policy():
            self._give_up()
            self.say(
                f"The server cannot be reached ({why}). You can work offline on the "
                "replica on this computer; edits sync when you are back online."
            )
            self.offline_button.setFocus()
        else:
            self._give_up()
            self.say(
                f"The server cannot be reached ({why}), and there is no replica on this "
                "computer yet to work offline with. Check the address and the network."
            )

    def work_offline(self) -> None:
        """Unlock the existing replica and open it without the network."""
        opened = self._open(create=False)
        if opened is None:
            return
        replica, reopen = opened
        if not replica.has_policy():
            replica.close()
            self.say(
                "The replica on this computer holds no policy yet: sign in once while "
                "online, then it works offline."
            )
            return
        done = SignedIn(replica, self.tenant.text().strip(), self.user.text().strip(), None, reopen)
        self.say("Working offline.")
        self.signed_in.emit(done)
        self.accept()

    def reject(self) -> None:
        self._give_up()
        super().reject()
