"""The client's side of sync: a replica, a `ClientConnection` and a websocket between them.

Rules of this module (the client issue, § The sync client):

- `SyncSession` acts on the connection's events with the replica: tokens
  stored, snapshots and changes written (`sync/replication/follow.py`
  checks them), pushes made from the outbox's lowest pending seq, outcomes
  recorded, the decision chain uploaded and pruned. What to do is decided in
  `sync/`; this only reads and writes the replica.
- `Transport` only moves frames between the websocket and the connection,
  feeds it the monotonic clock and hands its events to the session. It runs
  on an asyncio loop of its own thread (`SyncThread`), which the desktop app
  reuses; the replica is opened on that thread and used only there.
- Only a wipe destroys the replica (its file, its key and its tokens). A
  refused sign-in, a suspension and an upgrade stop the session and keep
  the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection as Websocket
from websockets.asyncio.client import connect

from app.clock import wall_now
from app.policy_files import gc_paused
from app.replica import Replica
from sync.policy.instant import Instant, format_instant, parse_instant
from sync.policy.model import Policy
from sync.protocol import client as protocol
from sync.protocol.errors import ErrorCode
from sync.protocol.messages import MAX_BATCH, MAX_MESSAGE_BYTES, Outcome, Result, Resume
from sync.replication.follow import Diverged, Follower
from sync.replication.offline import ReplicaClock

CONNECT_TIMEOUT = 10.0
LARGE_FRAME = 64 * 1024
"""Characters of a frame decoded with the garbage collector paused (snapshot parts)."""
OUTBOX_POLL = 1.0
"""Seconds between looks at the outbox while connected (edits queued elsewhere)."""


@dataclass(frozen=True, slots=True)
class Ending:
    """Why a session stopped for good, and the exit status a command gives for it."""

    code: int
    message: str


EXIT_SIGN_IN = 77
"""The person must sign in (a password refused, a suspension, a refresh refused)."""
EXIT_WIPED = 78
EXIT_UPGRADE = 79
EXIT_UNREACHABLE = 75


def describe_result(result: Result, edit: dict[str, Any] | None = None) -> str:
    """One line for a person: what happened to an edit."""
    what = f"edit {result.seq}"
    if edit is not None:
        what += f" ({edit.get('op')})"
    if result.outcome in (Outcome.APPLIED, Outcome.MERGED):
        merged = ""
        if result.outcome is Outcome.MERGED:
            merged = " (merged with another client's change)"
        return f"{what}: applied as version {result.version}{merged}"
    if result.outcome is Outcome.CONFLICT and result.conflict is not None:
        c = result.conflict
        return (
            f"{what}: conflict on {c.member}: the server keeps {c.server!r}, "
            f"yours was {c.client!r} ({result.reason})"
        )
    return f"{what}: rejected {result.code}: {result.reason}"


class SyncSession:
    """Acts on a connection's events with a replica (module rules)."""

    def __init__(
        self,
        replica: Replica,
        connection: protocol.ClientConnection,
        *,
        report: Callable[[str], None],
        watch: bool = False,
        wall: Callable[[], Instant] = wall_now,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.replica = replica
        self.connection = connection
        self.report = report
        self.watch = watch
        self.wall = wall
        self.mono = mono
        meta = replica.meta()
        self.clock = ReplicaClock(
            parse_instant(meta.clock_mark) if meta.clock_mark else None, mono()
        )
        self.follower: Follower | None = None
        self.caught_up = False
        self.uploading = False
        self.ending: Ending | None = None
        self.fresh_snapshot = False
        self._diverged = 0
        self._build_policy = False
        self.outcomes: list[Result] = []
        self.changes_applied = 0
        self._pushed: dict[int, Any] = {}
        """The edits of the push in flight, by seq: what its answer's report names."""

    # --- what the transport asks ------------------------------------------------------

    def hello_cursor(self) -> tuple[int, Resume | None]:
        """The cursor (and a snapshot to resume) for the next `hello`."""
        follower = self.follower
        resume = follower.resume if follower is not None else None
        # A replica with a policy resumes an interrupted snapshot too (one after an
        # import or a compaction): restarted at chunk 0 on every socket, a large
        # snapshot never completes on a link that drops sooner than it takes.
        wanted = Resume(*resume) if resume is not None else None
        if self.fresh_snapshot or not self.replica.has_policy():
            return 0, wanted
        return self.replica.meta().cursor, wanted

    @property
    def finished(self) -> bool:
        """A one-shot sync is done: caught up, nothing left to push or upload (or ended)."""
        if self.ending is not None:
            return True
        if self.watch or not self.caught_up or not self.connection.can_push or self.uploading:
            return False
        rows, _ = self.replica.pushable(self.replica.meta().ops, 1)
        if rows or self.replica.unsent_decisions(1):
            return False
        # Pulled, too: the changes our own applied edits made have arrived.
        return all(row.outcome is None for row in self.replica.outbox())

    # --- events -----------------------------------------------------------------------

    def handle(self, events: list[protocol.Event]) -> None:
        for event in events:
            handler = _HANDLERS.get(type(event))
            if handler is not None:
                handler(self, event)

    def _signed_in(self, event: protocol.SignedInReceived) -> None:
        message = event.message
        self.replica.store_tokens(
            message.access_token, message.refresh_token, message.access_expires
        )

    def _welcomed(self, event: protocol.Welcomed) -> None:
        welcome = event.message
        meta = self.replica.meta()
        if (welcome.tenant, welcome.user) != (meta.tenant, meta.user):
            self.ending = Ending(
                2,
                f"the server signed this replica in as {welcome.user} of "
                f"{welcome.tenant}, not {meta.user} of {meta.tenant}",
            )
            self.connection.stop(self.mono())
            return
        self.clock.heard(parse_instant(welcome.server_time), self.mono())
        mark = self.clock.mark
        self.replica.set_meta(
            lease_seconds=welcome.lease_seconds,
            stale_decisions=welcome.stale_decisions.value,
            synced_at=welcome.server_time,
            ops=list(welcome.ops),
            last_seq=max(meta.last_seq, welcome.last_seq),
            clock_mark=format_instant(mark) if mark else None,
            held_back=None,
        )
        if welcome.decisions_through > meta.decisions_through:
            self.replica.decisions_confirmed(welcome.decisions_through)
        self.caught_up = False
        # A new session: an upload of the socket before was forgotten with it, also when
        # that socket ended without `Disconnected` (a resync, a resnapshot).
        self.uploading = False

    def _now(self) -> Instant:
        """The replica's effective time: never behind the server's time last heard. The
        confirmed policy is read and checked at it: separation of duty holds in it from
        the server's time of each change on, and may not at a wall clock behind that."""
        return self.clock.read(self.wall(), self.mono())[0]

    def _ensure_follower(self) -> Follower:
        if self.follower is None:
            meta = self.replica.meta()
            if self.replica.has_policy():
                # Built when a change first needs it: a sync that brings none (the
                # usual case) does not read 50,000 users.
                digest = int(meta.digest, 16) if meta.digest else None
                self.follower = Follower(self._load_policy, meta.cursor, digest)
            else:
                self.follower = Follower(None, 0, None)
        return self.follower

    def _load_policy(self) -> Policy:
        with gc_paused():  # the whole policy at once (app/policy_files.py)
            return self.replica.load_policy(self._now())

    def _snapshot(self, event: protocol.SnapshotReceived) -> None:
        follower = self._ensure_follower()
        # The last chunk makes the whole policy, its entities and their rows at once:
        # collections meanwhile would walk those objects again and again.
        with gc_paused():
            try:
                followed = follower.snapshot(event.message, self._now())
            except Diverged as diverged:
                self._diverge(str(diverged))
                return
            if followed is not None:
                self.replica.replace_all(followed.version, followed.entities, followed.digest)
                self.fresh_snapshot = False
                self.report(
                    f"snapshot of version {followed.version}: {len(followed.entities)} entities"
                )

    def _changes(self, event: protocol.ChangesReceived) -> None:
        follower = self._ensure_follower()
        try:
            followed = follower.changes(event.message)
        except Diverged as diverged:
            self._diverge(str(diverged))
            return
        if followed.changes or followed.version != self.replica.meta().cursor:
            self.replica.apply_changes(
                followed.version, followed.entities, followed.digest, followed.changes
            )
        self.changes_applied += len(followed.changes)
        if self.watch:
            for change in followed.changes:
                self.report(
                    f"version {change.version}: {change.author} {change.edit.get('op')} "
                    f"{_edit_summary(change.edit)}"
                )

    def _diverge(self, why: str) -> None:
        self._diverged += 1
        self.follower = None
        if self._diverged > 3:
            self.ending = Ending(70, f"the replica keeps disagreeing with the server ({why})")
            self.connection.stop(self.mono())
            return
        self.report(f"the replica disagrees with the server ({why}): taking a fresh snapshot")
        self.fresh_snapshot = True
        self.connection.resnapshot(self.mono())

    def _caught_up(self, _event: protocol.CaughtUp) -> None:
        self.caught_up = True
        self._diverged = 0
        # Watching, changes will come: the policy they replay on is built when the
        # transport is next idle (`idle`), not when the first one arrives (it held that
        # one back by as long as reading the tenant takes: 1.6 s on the bench tenant).
        self._build_policy = self.watch

    def idle(self) -> None:
        """Work that waits for nothing, done when the transport has nothing to handle or
        send (so that what caught up was already said): the policy changes replay on."""
        if self._build_policy:
            self._build_policy = False
            with contextlib.suppress(Diverged):  # a change then diverges, as it would
                _ = self._ensure_follower().policy

    def _ready_to_push(self, _event: protocol.ReadyToPush) -> None:
        self.push()

    def push(self) -> None:
        """Push the next batch from the outbox, if one may go now."""
        if not self.connection.can_push or self.ending is not None:
            return
        meta = self.replica.meta()
        rows, held = self.replica.pushable(meta.ops, MAX_BATCH)
        if held != meta.held_back:
            self.replica.set_meta(held_back=held)
            if held:
                self.report(held)
        if rows:
            client = self.replica.client
            self.connection.push([row.mutation(client) for row in rows], self.mono())
            self._pushed = {row.seq: row.edit for row in rows}

    def _push_answered(self, event: protocol.PushAnswered) -> None:
        # The pushed rows, not the outbox read again: with a backlog, reading every
        # pending edit once more per push cost as much as recording the outcomes.
        edits, self._pushed = self._pushed, {}
        self.replica.record_outcomes(event.results, self.clock.read(self.wall(), self.mono())[0])
        self.outcomes.extend(event.results)
        for result in event.results:
            self.report(describe_result(result, edits.get(result.seq)))

    def _push_refused(self, event: protocol.PushRefused) -> None:
        if event.code is ErrorCode.SEQ_GAP and event.expected_seq is not None:
            self.replica.renumber_from(event.expected_seq)
        elif event.code is ErrorCode.UNSUPPORTED_OP:
            self.replica.set_meta(held_back=event.message)
            self.report(f"held back: {event.message}")
        else:
            self.report(f"push refused ({event.code}): {event.message}; retrying")

    def _ready_to_upload(self, _event: protocol.ReadyToUpload) -> None:
        self.upload()

    def upload(self) -> None:
        if self.uploading or self.ending is not None or not self.connection.can_upload:
            return
        links = self.replica.unsent_decisions(MAX_BATCH)
        if links:
            self.connection.record_decisions(links, self.mono())
            self.uploading = True

    def _decisions_acknowledged(self, event: protocol.DecisionsAcknowledged) -> None:
        self.uploading = False
        self.replica.decisions_confirmed(event.message.through)
        if event.message.count:
            self.report(f"{event.message.count} offline decisions recorded by the server")

    def _decisions_refused(self, event: protocol.DecisionsRefused) -> None:
        self.uploading = False
        self.report(f"offline decisions refused ({event.code}): {event.message}")
        if event.code is ErrorCode.CHAIN_BROKEN:
            self.ending = Ending(
                70, f"the server refused this replica's decision log: {event.message}"
            )
            self.connection.stop(self.mono())

    def _pong(self, event: protocol.PongReceived) -> None:
        self.clock.heard(parse_instant(event.server_time), self.mono())
        if self.connection.state is protocol.ClientState.LIVE:
            mark = self.clock.mark
            self.replica.set_meta(
                synced_at=event.server_time, clock_mark=format_instant(mark) if mark else None
            )

    def _disconnected(self, event: protocol.Disconnected) -> None:
        self.uploading = False
        self.caught_up = False
        if self.watch:
            self.report(f"disconnected ({event.reason or event.code}); reconnecting")

    def _wiped(self, event: protocol.Wiped) -> None:
        self.replica.file.wipe()
        self.ending = Ending(
            EXIT_WIPED,
            f"the server asked to wipe this replica ({event.code}: {event.reason}); it is gone",
        )

    def _upgrade(self, event: protocol.UpgradeRequired) -> None:
        self.ending = Ending(
            EXIT_UPGRADE, f"the server needs a newer Fleetgate: {event.message}; the outbox is kept"
        )

    def _sign_in_needed(self, event: protocol.SignInNeeded) -> None:
        self.ending = Ending(EXIT_SIGN_IN, f"sign-in needed: {event.reason} (the outbox is kept)")

    def _resync(self, event: protocol.ResyncRequested) -> None:
        self.report(f"the server asks to reconnect: {event.reason}")
        self.follower = None

    def _misbehaved(self, event: protocol.ServerMisbehaved) -> None:
        self.report(f"the server sent something wrong ({event.message}); reconnecting")

    def _server_error(self, event: protocol.ServerError) -> None:
        self.report(f"server error {event.error.code}: {event.error.message}")


_HANDLERS: dict[type, Callable[[SyncSession, Any], None]] = {
    protocol.SignedInReceived: SyncSession._signed_in,
    protocol.Welcomed: SyncSession._welcomed,
    protocol.SnapshotReceived: SyncSession._snapshot,
    protocol.ChangesReceived: SyncSession._changes,
    protocol.CaughtUp: SyncSession._caught_up,
    protocol.ReadyToPush: SyncSession._ready_to_push,
    protocol.PushAnswered: SyncSession._push_answered,
    protocol.PushRefused: SyncSession._push_refused,
    protocol.ReadyToUpload: SyncSession._ready_to_upload,
    protocol.DecisionsAcknowledged: SyncSession._decisions_acknowledged,
    protocol.DecisionsRefused: SyncSession._decisions_refused,
    protocol.PongReceived: SyncSession._pong,
    protocol.Disconnected: SyncSession._disconnected,
    protocol.Wiped: SyncSession._wiped,
    protocol.UpgradeRequired: SyncSession._upgrade,
    protocol.SignInNeeded: SyncSession._sign_in_needed,
    protocol.ResyncRequested: SyncSession._resync,
    protocol.ServerMisbehaved: SyncSession._misbehaved,
    protocol.ServerError: SyncSession._server_error,
}


def _edit_summary(edit: Any) -> str:
    if not isinstance(edit, dict):
        return ""
    return " ".join(f"{k}={v}" for k, v in edit.items() if k != "op" and isinstance(v, str))


# --- the transport --------------------------------------------------------------------------


class Transport:
    """Moves frames between one websocket at a time and the connection (module rules)."""

    def __init__(
        self,
        url: str,
        session: SyncSession,
        *,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.session = session
        self.connection = session.connection
        self.mono = mono
        self._websocket: Websocket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[tuple[Websocket, str | bytes | None, int | None, str]] = (
            asyncio.Queue()
        )
        self._wake = asyncio.Event()
        self._connect = False
        self.last_failure = ""

    def wake(self) -> None:
        """Something changed outside (a local edit): look at the outbox again. Loop thread only."""
        self._wake.set()

    async def run(self, until: Callable[[], bool], deadline: float | None = None) -> bool:
        """Run until `until()` is true (True) or the monotonic `deadline` passes (False)."""
        connection = self.connection
        connection.start(self.mono())
        try:
            while True:
                self._dispatch()
                await self._flush()
                if until():
                    return True
                if self._connect:
                    self._connect = False
                    await self._open()
                    continue
                now = self.mono()
                if deadline is not None and now >= deadline:
                    return False
                timer = connection.deadline()
                limits = [t for t in (timer, deadline) if t is not None]
                timeout = max(0.0, min(limits) - now) if limits else None
                # The outbox is looked at again every OUTBOX_POLL seconds: another
                # process (`fleetgate edit`, the app) may have queued an edit.
                timeout = OUTBOX_POLL if timeout is None else min(timeout, OUTBOX_POLL)
                self.session.idle()
                await self._wait(timeout)
        finally:
            connection.stop(self.mono())
            self._dispatch()
            await self._flush()
            await self._drop()

    def _dispatch(self) -> None:
        # Handling may make more events (an answered push makes the next push): until none.
        while events := self.connection.events():
            if any(isinstance(event, protocol.ConnectWanted) for event in events):
                self._connect = True
            self.session.handle(events)

    async def _flush(self) -> None:
        connection = self.connection
        frames = connection.outgoing()
        websocket = self._websocket
        if websocket is not None:
            for frame in frames:
                try:
                    await websocket.send(frame.decode("utf-8"))
                except websockets.ConnectionClosed:
                    break
        if connection.close_code is not None and websocket is not None:
            code = connection.close_code
            connection.close_code = None
            self._websocket = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(websocket.close(code), 2.0)
            if self._reader is not None:
                self._reader.cancel()
                self._reader = None

    async def _open(self) -> None:
        cursor, resume = self.session.hello_cursor()
        try:
            websocket = await asyncio.wait_for(
                connect(
                    self.url,
                    max_size=MAX_MESSAGE_BYTES,
                    open_timeout=CONNECT_TIMEOUT,
                    ping_interval=None,
                    close_timeout=2.0,
                ),
                CONNECT_TIMEOUT + 1,
            )
        except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as error:
            self.last_failure = f"cannot reach {self.url}: {error or type(error).__name__}"
            self.connection.disconnected(self.mono(), None, self.last_failure)
            return
        self._websocket = websocket
        self._reader = asyncio.get_running_loop().create_task(self._read(websocket))
        self.connection.connected(self.mono(), cursor, resume)

    async def _read(self, websocket: Websocket) -> None:
        try:
            async for frame in websocket:
                await self._inbox.put((websocket, frame, None, ""))
        except websockets.ConnectionClosed:
            pass
        except OSError as error:
            await self._inbox.put((websocket, None, None, str(error)))
            return
        code = websocket.close_code
        await self._inbox.put((websocket, None, code, websocket.close_reason or ""))

    async def _wait(self, timeout: float | None) -> None:
        getting = asyncio.ensure_future(self._inbox.get())
        waking = asyncio.ensure_future(self._wake.wait())
        done, pending = await asyncio.wait(
            {getting, waking}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        now = self.mono()
        if not done:
            self.session.push()
            self.session.upload()
        if waking in done:
            self._wake.clear()
            self.session.push()
            self.session.upload()
        if getting in done:
            websocket, frame, code, reason = getting.result()
            if websocket is not self._websocket:
                return  # from a socket given up already
            if frame is None:
                self._websocket = None
                self._reader = None
                self.connection.disconnected(now, code, reason)
            elif isinstance(frame, bytes):
                self.connection.receive_binary(now)
            elif len(frame) > LARGE_FRAME:
                with gc_paused():  # a snapshot part: tens of thousands of objects at once
                    self.connection.receive(frame, now)
            else:
                self.connection.receive(frame, now)
        self.connection.expire(now)

    async def _drop(self) -> None:
        websocket, self._websocket = self._websocket, None
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if websocket is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(websocket.close(), 2.0)


class SyncThread:
    """An asyncio loop on a thread of its own, running one sync session at a time.

    `make` builds the session on that thread (a replica is used only on the
    thread that opened it); the desktop app keeps one of these for its life.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="fleetgate-sync", daemon=True
        )
        self._thread.start()

    def run(self, coroutine: Any) -> Any:
        """Run `coroutine` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def call(self, function: Callable[[], Any]) -> None:
        self.loop.call_soon_threadsafe(function)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


def jitter(seed: int | None = None) -> Callable[[], float]:
    """The connection's random source (full-jitter backoff)."""
    return random.Random(seed).random  # noqa: S311 - jitter, not a secret
