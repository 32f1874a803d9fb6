"""The desktop app's sync: one `SyncSession` kept connected (`--watch`) on a thread of its own.

Rules of this module (the client issue, § The sync client; the desktop issue, § Start):

- The session, its connection and its replica live on the `SyncThread`'s loop
  (a replica is used only on the thread that opened it): `open_replica` is
  called there. The UI thread has a replica of its own on the same file; the
  file's lock makes them take turns writing.
- What happens is handed to the UI thread by Qt signals only (queued, since
  this object lives on the UI thread and they are emitted from the loop's):
  `state` for every state change of the connection, `report` for each line
  `fleetgate sync --watch` would print, `moved` when the confirmed policy or
  the outcomes changed (the UI reads the replica again), `ended` when the
  session stopped for good (sign-in needed, wiped, upgrade required).
- `wake()` after a local edit pushes it at once instead of at the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal

from app.replica import Replica
from app.replica_file import ReplicaError
from app.sync_client import SyncSession, SyncThread, Transport, jitter
from app.ui.background import ui_thread_collects
from sync.protocol import client as protocol

STATE_WORDS = {
    protocol.ClientState.IDLE: "offline",
    protocol.ClientState.WAITING: "offline, retrying",
    protocol.ClientState.CONNECTING: "connecting",
    protocol.ClientState.SIGNING_IN: "signing in",
    protocol.ClientState.AUTHENTICATING: "signing in",
    protocol.ClientState.SYNCING: "syncing",
    protocol.ClientState.LIVE: "online",
    protocol.ClientState.WIPED: "wiped",
    protocol.ClientState.UPGRADE_REQUIRED: "upgrade required",
    protocol.ClientState.SIGN_IN_NEEDED: "sign-in needed",
}
"""What the status bar says for each state of the connection."""


class _WatchedSession(SyncSession):
    """A session that also tells `LiveSync` what its events were."""

    def __init__(self, owner: LiveSync, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner = owner

    def handle(self, events: list[protocol.Event]) -> None:
        super().handle(events)
        owner = self._owner
        for event in events:
            if isinstance(event, protocol.StateChanged):
                owner.last_state = event.new.value
                owner.state.emit(event.new.value)
                if event.new is protocol.ClientState.WAITING and owner.transport is not None:
                    failure = owner.transport.last_failure
                    if failure:
                        owner.unreachable.emit(failure)
            elif isinstance(event, protocol.CaughtUp):
                owner.caught_up.emit()
            elif isinstance(event, protocol.SnapshotReceived):
                owner.progress.emit(event.message.chunk + 1, event.message.chunks)
        owner.moved.emit()
        if self.ending is not None and not owner._ended:
            owner._ended = True
            owner.ended.emit(self.ending.code, self.ending.message)


class LiveSync(QObject):
    """Keeps one replica in sync while the app runs (module rules)."""

    state = Signal(str)
    """The connection's new state (a `ClientState` value; `STATE_WORDS` says it)."""
    report = Signal(str)
    caught_up = Signal()
    """The replica holds everything the server had when it said so."""
    progress = Signal(int, int)
    """A snapshot is arriving: parts received, parts in all."""
    moved = Signal()
    unreachable = Signal(str)
    """A connection attempt failed (why); the session keeps retrying."""
    ended = Signal(int, str)
    """Stopped for good: the exit status `fleetgate sync` would give, and why."""

    def __init__(
        self,
        url: str,
        open_replica: Callable[[], Replica],
        *,
        credentials: protocol.Password | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.url = url
        self._open_replica = open_replica
        self._credentials = credentials
        self._thread: SyncThread | None = None
        self._stopping = False
        self._ended = False
        self._running: Any = None
        self.transport: Transport | None = None
        self.session: SyncSession | None = None
        self.last_state = protocol.ClientState.IDLE.value
        """The connection's latest state: a window built later starts from it."""

    def start(self) -> None:
        """Connect and stay connected (returns at once)."""
        if self._thread is not None:
            return
        ui_thread_collects()  # the sync thread allocates: it must never collect Qt objects
        self._thread = SyncThread()
        self._running = asyncio.run_coroutine_threadsafe(self._run(), self._thread.loop)

    async def _run(self) -> None:
        try:
            replica = self._open_replica()
        except ReplicaError as error:
            self._ended = True
            self.ended.emit(2, str(error))
            return
        try:
            meta = replica.meta()
            access, refresh = replica.tokens()
            tokens = protocol.Tokens(access, refresh) if refresh is not None else None
            connection = protocol.ClientConnection(
                device=meta.device,
                client=replica.client,
                rng=jitter(),
                tokens=tokens,
                credentials=self._credentials if tokens is None else None,
            )
            self._credentials = None  # the password is not kept once handed over
            session = _WatchedSession(
                self, replica, connection, report=self.report.emit, watch=True
            )
            self.session = session
            self.transport = Transport(self.url, session)
            await self.transport.run(lambda: self._stopping or session.ending is not None)
        finally:
            replica.close()

    def wake(self) -> None:
        """Look at the outbox now (an edit was queued). Any thread."""
        thread, transport = self._thread, self.transport
        if thread is not None and transport is not None:
            thread.call(transport.wake)

    def stop(self, timeout: float = 10.0) -> None:
        """Disconnect, wait for the session to end (up to `timeout` s) and stop the thread."""
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        self.wake()
        if self._running is not None:
            # Ending anyway, whatever the session raised: the replica keeps everything.
            with contextlib.suppress(Exception):
                self._running.result(timeout)
        thread.close()
        self._thread = None
