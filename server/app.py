"""The sync server: websockets on one port, with health and metrics over HTTP.

Rules of this module:

- A session wraps one `sync.protocol.server.ServerConnection` mechanically: read a
  frame, feed it, act on the events, write what is outgoing, close with the
  close code it sets. What the protocol allows is decided there, not here.
- A session's identity (tenant, user, device, client) comes from its verified
  access token and the hello it was checked against; every read and write is
  made for that tenant.
- The database is reached through one pool; changes fan out through
  `server.hub.Hub`; a session's queue of changes is bounded and a session too
  far behind is told to resync.
- `GET /healthz`, `/readyz` and `/metrics` are answered without a websocket
  upgrade; `/sync` upgrades; anything else is 404.
- Logs are JSON lines (`server.logs`) with ids and counts, never a password,
  token or policy content.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from server import store
from server.hub import UNKNOWN_COMMIT_TIME, Batch, Hub
from server.logs import log
from server.metrics import Metrics
from server.migrations import MIGRATIONS
from server.tenants import REPLACE_POLICY, Author, Tenants, change_message
from server.tokens import (
    REFRESH_LIFETIME,
    FailureLimiter,
    Passwords,
    TokenExpired,
    TokenInvalid,
    TokenSigner,
    new_refresh_token,
    refresh_token_hash,
)
from sync.protocol import server as protocol_state
from sync.protocol.codec import change_pages, encode
from sync.protocol.errors import CloseCode, ErrorCode, ProtocolBug
from sync.protocol.messages import (
    MAX_MESSAGE_BYTES,
    CatchUp,
    Changes,
    DecisionsRecorded,
    Outcome,
    PushResult,
    SignedIn,
    Snapshot,
    Welcome,
)
from sync.protocol.server import (
    DecisionsReceived,
    HelloReceived,
    PushReceived,
    RefreshRequested,
    SignInRequested,
    SnapshotResumeRequested,
    State,
)
from sync.replication.snapshots import snapshot_parts

QUEUE_LIMIT = 256
"""Batches of changes a session may have waiting; more and it is told to resync."""
CHANGES_PAGE = 500
"""Changes per `changes` message while catching up."""
SNAPSHOT_AFTER = 20_000
"""A client further behind than this many versions gets a snapshot instead of changes."""
SNAPSHOTS_KEPT = 32
GENERIC_SIGN_IN_FAILURE = "wrong tenant, user or password"


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8765
    poll_interval: float = 2.0
    token_lifetime: int = 900
    drain_timeout: float = 10.0
    """How long shutdown waits for pushes in flight."""


@dataclass(frozen=True, slots=True)
class CutSnapshot:
    """A tenant's policy at `version`, cut into `snapshot` messages and encoded once."""

    id: str
    tenant_id: int
    version: int
    messages: tuple[Snapshot, ...]
    frames: tuple[bytes, ...]


def cut_snapshot(tenant_id: int, version: int, document: dict[str, Any]) -> CutSnapshot:
    """The tenant's policy document at `version`, cut into encoded `snapshot` messages."""
    parts = snapshot_parts(document)
    # Named by its content: every process cuts the same snapshot of a version
    # with the same id, so a client can resume it on whichever process it reaches.
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, separators=(",", ":")).encode())
    snapshot_id = f"s{version}-{digest.hexdigest()[:24]}"
    messages = tuple(
        Snapshot(snapshot_id, version, number, len(parts), part)
        for number, part in enumerate(parts)
    )
    return CutSnapshot(snapshot_id, tenant_id, version, messages, tuple(map(encode, messages)))


@dataclass
class Snapshots:
    """Snapshots this process has cut, for `snapshot_resume` and for every new
    client of the same version; the least recently used are dropped."""

    kept: OrderedDict[tuple[int, str], CutSnapshot] = field(default_factory=OrderedDict)
    latest: dict[int, str] = field(default_factory=dict)
    cutting: dict[int, asyncio.Lock] = field(default_factory=dict)

    def add(self, snapshot: CutSnapshot) -> None:
        self.kept[(snapshot.tenant_id, snapshot.id)] = snapshot
        self.latest[snapshot.tenant_id] = snapshot.id
        while len(self.kept) > SNAPSHOTS_KEPT:
            dropped = self.kept.popitem(last=False)[1]
            if self.latest.get(dropped.tenant_id) == dropped.id:
                del self.latest[dropped.tenant_id]

    def get(self, snapshot_id: str, tenant_id: int) -> CutSnapshot | None:
        """The tenant's snapshot of that id (another tenant's is simply unknown)."""
        snapshot = self.kept.get((tenant_id, snapshot_id))
        if snapshot is not None:
            self.kept.move_to_end((tenant_id, snapshot_id))
        return snapshot

    def current(self, tenant_id: int, version: int) -> CutSnapshot | None:
        """The tenant's snapshot at `version`, if one was cut."""
        snapshot_id = self.latest.get(tenant_id)
        snapshot = self.get(snapshot_id, tenant_id) if snapshot_id else None
        return snapshot if snapshot is not None and snapshot.version == version else None


class SyncServer:
    """One server process: sessions, the hub, and the HTTP endpoints."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        conninfo: str,
        signer: TokenSigner,
        *,
        passwords: Passwords | None = None,
        limiter: FailureLimiter | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.pool = pool
        self.signer = signer
        self.passwords = passwords or Passwords()
        self.limiter = limiter or FailureLimiter()
        self.settings = settings or Settings()
        self.metrics = Metrics()
        self.tenants = Tenants(pool)
        self.hub = Hub(pool, conninfo, self.settings.poll_interval)
        self.snapshots = Snapshots()
        self.sessions: set[Session] = set()
        self.pushes_in_flight = 0
        self.pushes_done = asyncio.Event()
        self.draining = False
        self.stop = asyncio.Event()
        self._server: Server | None = None
        self._hub_task: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen on the configured host and port (port 0 picks a free one)."""
        self._hub_task = asyncio.create_task(self.hub.run(self.stop))
        self._server = await serve(
            self._session,
            self.settings.host,
            self.settings.port,
            process_request=self._http,
            # Frames up to twice the protocol's limit reach the protocol, which
            # answers with an error naming the limit; larger ones are cut off by
            # the library with the same close code (1009).
            max_size=2 * MAX_MESSAGE_BYTES,
            compression=None,
            server_header=None,
            # A peer that does not answer our close frame is dropped after this.
            close_timeout=2.0,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.hub.listening.wait(), 5.0)
        log("listening", host=self.settings.host, port=self.port)

    async def shutdown(self) -> None:
        """Stop accepting, let pushes in flight finish, close every session with 1001."""
        log("shutting down", sessions=len(self.sessions), pushes=self.pushes_in_flight)
        self.draining = True
        if self._server is not None:
            self._server.close(close_connections=False)
        if self.pushes_in_flight:
            self.pushes_done.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.pushes_done.wait(), self.settings.drain_timeout)
        await asyncio.gather(*(s.go_away() for s in list(self.sessions)), return_exceptions=True)
        self.stop.set()
        if self._hub_task is not None:
            await self._hub_task
        if self._server is not None:
            await self._server.wait_closed()
        log("stopped")

    # --- HTTP ----------------------------------------------------------------------------

    async def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/sync":
            if self.draining:
                return _response(HTTPStatus.SERVICE_UNAVAILABLE, "shutting down\n")
            return None
        if path == "/healthz":
            return _response(HTTPStatus.OK, "ok\n")
        if path == "/readyz":
            problem = await self._readiness_problem()
            if problem:
                return _response(HTTPStatus.SERVICE_UNAVAILABLE, problem + "\n")
            return _response(HTTPStatus.OK, "ready\n")
        if path == "/metrics":
            self.metrics.gauges["fleetgate_connections"] = len(self.sessions)
            return _response(
                HTTPStatus.OK, self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8"
            )
        return _response(HTTPStatus.NOT_FOUND, "not found\n")

    async def _readiness_problem(self) -> str | None:
        if self.draining:
            return "shutting down"
        try:
            async with self.pool.connection(timeout=2.0) as conn:
                cursor = await conn.execute(
                    "SELECT coalesce(max(version), 0) FROM schema_migrations"
                )
                row = await cursor.fetchone()
        except (psycopg.Error, OSError, TimeoutError) as error:
            return f"database unreachable ({type(error).__name__})"
        if row is None or row[0] != len(MIGRATIONS):
            return f"database schema at {row[0] if row else 0}, expected {len(MIGRATIONS)}"
        return None

    # --- sessions ------------------------------------------------------------------------

    async def _session(self, websocket: ServerConnection) -> None:
        session = Session(self, websocket, next(self._ids))
        self.sessions.add(session)
        self.metrics.count("fleetgate_connections_total")
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
            self.hub.leave(session)


def _response(status: HTTPStatus, body: str, content_type: str = "text/plain") -> Response:
    headers = Headers([("Content-Type", content_type), ("Cache-Control", "no-store")])
    return Response(status.value, status.phrase, headers, body.encode())


class Session:
    """One websocket: the protocol state machine, the session's identity, its queue."""

    def __init__(self, server: SyncServer, websocket: ServerConnection, number: int) -> None:
        self.server = server
        self.websocket = websocket
        self.number = number
        self.conn = protocol_state.ServerConnection(time.monotonic())
        self.tenant_id = 0
        self.tenant = ""
        self.user = ""
        self.device = ""
        self.client = ""
        self.cursor = 0
        self.queue: asyncio.Queue[Batch] = asyncio.Queue(QUEUE_LIMIT)
        self.live = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._closing: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        address = websocket.remote_address
        self.address = str(address[0]) if address else "unknown"

    # --- the read loop -------------------------------------------------------------------

    async def run(self) -> None:
        """Read, feed, act and write until the connection ends; a failure ends this session only."""
        pump = asyncio.create_task(self._pump())
        try:
            await self._read()
        except Exception as error:  # noqa: BLE001 - a bug here must end one session, not the server
            log("session failed", logging.ERROR, session=self.number,
                error=type(error).__name__)  # fmt: skip
            if self.conn.state is not State.CLOSED:
                self.conn.refuse(ErrorCode.INTERNAL, "the server failed; reconnect",
                                 close=CloseCode.INTERNAL_ERROR)  # fmt: skip
                with contextlib.suppress(ConnectionClosed, ProtocolBug):
                    await self.flush()
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            for task in (self._closing, self._closer):
                if task is not None:
                    with contextlib.suppress(ConnectionClosed):
                        await task
            await self.websocket.close(self.conn.close_code or CloseCode.NORMAL)

    async def _read(self) -> None:
        try:
            async for frame in self.websocket:
                now = time.monotonic()
                if isinstance(frame, str):
                    self.conn.receive(frame, now)
                else:
                    self.conn.receive_binary(now)
                for event in self.conn.events():
                    self.server.metrics.count(
                        "fleetgate_messages_total", "type", type(event).__name__
                    )
                    await self._handle(event)
                await self.flush()
                # Once closed, frames still arriving are read and dropped (the
                # connection ignores them) so the close handshake is not stuck
                # behind a full receive queue; the loop ends when it completes.
        except ConnectionClosed:
            pass

    async def flush(self) -> None:
        """Write what the connection has queued, in order; close if it says so."""
        async with self._send_lock:
            for frame in self.conn.outgoing():
                with contextlib.suppress(ConnectionClosed):
                    await self.websocket.send(frame, text=True)
        if self.conn.close_code is not None and self._closer is None:
            self._count_error_frames()
            self._closer = asyncio.create_task(self.websocket.close(self.conn.close_code))

    def _count_error_frames(self) -> None:
        self.server.metrics.count("fleetgate_rejections_total", "code", str(self.conn.close_code))

    async def _handle(self, event: protocol_state.Event) -> None:
        try:
            if isinstance(event, SignInRequested):
                await self._sign_in(event)
            elif isinstance(event, RefreshRequested):
                await self._refresh(event)
            elif isinstance(event, HelloReceived):
                await self._hello(event)
            elif isinstance(event, PushReceived):
                await self._push(event)
            elif isinstance(event, SnapshotResumeRequested):
                await self._resume_snapshot(event)
            elif isinstance(event, DecisionsReceived):
                await self._record_decisions(event)
        except (psycopg.Error, OSError) as error:
            log("database error", logging.ERROR, session=self.number, error=type(error).__name__)
            ref = getattr(getattr(event, "message", event), "ref", None)
            if self.conn.state is not State.CLOSED and self.conn.state is not State.AUTHENTICATING:
                self.conn.refuse(
                    ErrorCode.INTERNAL,
                    "the server could not reach its database; try again",
                    ref=ref,
                )
            elif self.conn.state is State.AUTHENTICATING:
                self.conn.refuse(
                    ErrorCode.INTERNAL,
                    "the server could not reach its database; try again",
                    close=CloseCode.GOING_AWAY,
                )

    # --- sign-in and tokens --------------------------------------------------------------

    def _refuse_counted(self, code: ErrorCode, message: str, **kwargs: Any) -> None:
        self.server.metrics.count("fleetgate_rejections_total", "code", code.value)
        self.conn.refuse(code, message, **kwargs)

    async def _sign_in(self, event: SignInRequested) -> None:
        message = event.message
        server = self.server
        limiter = server.limiter
        # Failures count in this process (cheap, first) and in the database, so
        # the limits hold however many server processes share it.
        user_key, address_key = f"user:{message.tenant}:{message.user}", f"address:{self.address}"
        wait = limiter.blocked(
            tenant=message.tenant, user=message.user, address=self.address, now=time.time()
        )
        if not wait:
            async with server.pool.connection() as conn:
                wait = await store.failure_wait(
                    conn,
                    [(user_key, limiter.per_user), (address_key, limiter.per_address)],
                    limiter.window,
                )
        if wait:
            server.metrics.count("fleetgate_sign_ins_total", "result", "limited")
            self._refuse_counted(
                ErrorCode.RATE_LIMITED,
                f"too many failed sign-ins; try again in {math.ceil(wait)} s",
                ref=message.ref,
            )
            return
        async with server.pool.connection() as conn:
            row = await store.tenant_by_name(conn, message.tenant)
            stored_hash = await store.password_hash(conn, row.id, message.user) if row else None
        good = await asyncio.to_thread(server.passwords.verify, stored_hash, message.password)
        if good and row is not None:
            tenant = await server.tenants.current(row.id)
            good = message.user in tenant.engine.policy.users
        if not good or row is None:
            limiter.failed(
                tenant=message.tenant, user=message.user, address=self.address, now=time.time()
            )
            async with server.pool.connection() as conn:
                await store.record_failure(conn, [user_key, address_key], limiter.window)
            server.metrics.count("fleetgate_sign_ins_total", "result", "failed")
            log("sign-in failed", session=self.number, tenant=message.tenant, user=message.user)
            self._refuse_counted(
                ErrorCode.UNAUTHENTICATED, GENERIC_SIGN_IN_FAILURE, ref=message.ref
            )
            return
        limiter.succeeded(tenant=message.tenant, user=message.user)
        async with server.pool.connection() as conn:
            await store.forget_failures(conn, user_key)
        if not await self._device_usable(row.id, message.device, message.user, message.ref):
            return
        server.metrics.count("fleetgate_sign_ins_total", "result", "ok")
        log("signed in", session=self.number, tenant=row.name, user=message.user,
            device=message.device)  # fmt: skip
        await self._issue(row.id, row.name, message.user, message.device, message.ref)

    async def _device_usable(self, tenant_id: int, device: str, user: str, ref: str) -> bool:
        async with self.server.pool.connection() as conn:
            revoked = await store.touch_device(conn, tenant_id, device, user)
        if revoked:
            self._refuse_counted(ErrorCode.REVOKED, "this device was revoked", ref=ref)
            self.conn.wipe("this device was revoked by an administrator")
            return False
        return True

    async def _issue(self, tenant_id: int, tenant: str, user: str, device: str, ref: str) -> None:
        token, claims = self.server.signer.issue(
            tenant_id=tenant_id, tenant=tenant, user=user, device=device, now=time.time()
        )
        refresh = new_refresh_token()
        expires = datetime.now(UTC) + timedelta(seconds=REFRESH_LIFETIME)
        async with self.server.pool.connection() as conn:
            await store.store_refresh_token(
                conn, refresh_token_hash(refresh), tenant_id, user, device, expires
            )
        access_expires = datetime.fromtimestamp(claims.expires_at, UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        self.conn.signed_in(SignedIn(ref, token, access_expires, refresh, user, tenant))

    async def _refresh(self, event: RefreshRequested) -> None:
        message = event.message
        server = self.server
        if server.limiter.address_blocked(self.address, time.time()):
            self._refuse_counted(
                ErrorCode.RATE_LIMITED, "too many failed attempts", ref=message.ref
            )
            return
        async with server.pool.connection() as conn:
            grant = await store.use_refresh_token(
                conn, refresh_token_hash(message.refresh_token), message.device
            )
        if grant is None:
            server.limiter.address_failed(self.address, time.time())
            self._refuse_counted(
                ErrorCode.UNAUTHENTICATED,
                "the refresh token is not valid (unknown, used, expired or revoked)",
                ref=message.ref,
            )
            return
        if self.tenant_id and (grant.tenant_id, grant.user) != (self.tenant_id, self.user):
            self._refuse_counted(
                ErrorCode.FORBIDDEN, "that refresh token is not this session's", ref=message.ref
            )
            return
        await self._issue(grant.tenant_id, grant.tenant, grant.user, message.device, message.ref)

    # --- hello and catching up -----------------------------------------------------------

    async def _hello(self, event: HelloReceived) -> None:
        message = event.message
        server = self.server
        try:
            claims = server.signer.verify(message.access_token, time.time())
        except TokenExpired:
            self._refuse_counted(
                ErrorCode.EXPIRED_TOKEN, "the access token has expired: refresh it",
                close=CloseCode.UNAUTHENTICATED,
            )  # fmt: skip
            return
        except TokenInvalid as error:
            self._refuse_counted(
                ErrorCode.UNAUTHENTICATED, f"the access token is not valid: {error}",
                close=CloseCode.UNAUTHENTICATED,
            )  # fmt: skip
            return
        if claims.device != message.device:
            self._refuse_counted(
                ErrorCode.FORBIDDEN, "the access token was issued to another device",
                close=CloseCode.FORBIDDEN,
            )  # fmt: skip
            return
        try:
            tenant = await server.tenants.current(claims.tenant_id)
        except LookupError:
            self._refuse_counted(
                ErrorCode.UNAUTHENTICATED, "the token's tenant does not exist",
                close=CloseCode.UNAUTHENTICATED,
            )  # fmt: skip
            return
        if claims.user not in tenant.engine.policy.users:
            self._refuse_counted(
                ErrorCode.FORBIDDEN, f"user {claims.user!r} is no longer in the tenant's policy",
                close=CloseCode.FORBIDDEN,
            )  # fmt: skip
            return
        async with server.pool.connection() as conn:
            if await store.touch_device(conn, claims.tenant_id, claims.device, claims.user):
                self.conn.wipe("this device was revoked by an administrator")
                return
            try:
                await store.claim_client(
                    conn, claims.tenant_id, message.client, claims.device, claims.user
                )
            except store.ClientTaken as error:
                self._refuse_counted(ErrorCode.FORBIDDEN, str(error), close=CloseCode.FORBIDDEN)
                return
        self.tenant_id, self.tenant, self.user = claims.tenant_id, claims.tenant, claims.user
        self.device, self.client = claims.device, message.client
        version = tenant.version
        cursor = message.cursor
        by_snapshot = (
            cursor < tenant.horizon or cursor > version or version - cursor > SNAPSHOT_AFTER
        )
        self.conn.welcome(
            Welcome(
                self.tenant,
                self.user,
                version,
                CatchUp.SNAPSHOT if by_snapshot else CatchUp.CHANGES,
            )
        )
        log("session started", session=self.number, tenant=self.tenant, user=self.user,
            device=self.device, cursor=cursor, version=version)  # fmt: skip
        await self.flush()
        if by_snapshot:
            cursor = await self._send_snapshot()
        self.cursor = cursor
        # Join the fan-out before the last read, so nothing committed in between is missed.
        server.hub.join(self, self.cursor)
        await self._catch_up(final=True)
        self.live.set()

    async def _send_snapshot(self) -> int:
        snapshot = await self._current_snapshot()
        await self._send_parts(snapshot, 0)
        return snapshot.version

    async def _current_snapshot(self) -> CutSnapshot:
        """The snapshot of the tenant's current version: cut once, shared by every client."""
        snapshots = self.server.snapshots
        async with snapshots.cutting.setdefault(self.tenant_id, asyncio.Lock()):
            tenant = await self.server.tenants.current(self.tenant_id)
            snapshot = snapshots.current(self.tenant_id, tenant.version)
            if snapshot is None:
                version, document = await self.server.tenants.snapshot_document(tenant)
                snapshot = await asyncio.to_thread(cut_snapshot, self.tenant_id, version, document)
                snapshots.add(snapshot)
        return snapshot

    async def _send_parts(self, snapshot: CutSnapshot, start: int) -> None:
        for message, frame in zip(snapshot.messages[start:], snapshot.frames[start:], strict=True):
            if self.conn.state is State.CLOSED:
                return
            self.conn.snapshot(message, frame)
            await self.flush()

    async def _catch_up(self, *, final: bool, up_to: int | None = None) -> bool:
        """Send the changes after the cursor (to `up_to`); False when the client must resync."""
        while self.conn.state is not State.CLOSED:
            async with self.server.pool.connection() as conn:
                rows = await store.changes_after(
                    conn, self.tenant_id, self.cursor, CHANGES_PAGE, up_to
                )
            if any(row.edit.get("op") == REPLACE_POLICY for row in rows):
                self._resync("the policy was replaced by an import; catch up again")
                return False
            if not rows and not final:
                return True
            # The first page that fits one message; the rest is read again.
            pages = change_pages([change_message(row) for row in rows]) or [()]
            changes = pages[0]
            more = len(pages) > 1 or len(rows) == CHANGES_PAGE
            start = self.cursor
            if changes:
                self.cursor = changes[-1].version
            self.conn.changes(Changes(start, self.cursor, changes, more or not final))
            await self.flush()
            if not more:
                return True
        return False

    # --- live changes --------------------------------------------------------------------

    def deliver(self, batch: Batch) -> None:
        """From the hub: a batch of committed changes (never blocks)."""
        try:
            self.queue.put_nowait(batch)
        except asyncio.QueueFull:
            self.server.metrics.count("fleetgate_resyncs_total")
            self._resync("too far behind: reconnect and catch up")

    def revoke(self) -> None:
        """From the hub: this session's device was revoked."""
        self.conn.wipe("this device was revoked by an administrator")
        self._close_soon()

    def _resync(self, reason: str) -> None:
        if self.conn.state in (State.SYNCING, State.LIVE):
            self.conn.resync(reason)
            self._close_soon()

    def _close_soon(self) -> None:
        if self._closing is None:
            self._closing = asyncio.create_task(self.flush())

    async def go_away(self) -> None:
        """Shutdown: close with 1001 after what is queued."""
        self.conn.going_away()
        await self.flush()

    async def _pump(self) -> None:
        await self.live.wait()
        while self.conn.state is not State.CLOSED:
            batch = await self.queue.get()
            if batch.to_version <= self.cursor:
                continue
            gap = batch.from_version > self.cursor  # fill it from the log
            if gap and not await self._catch_up(final=False, up_to=batch.from_version):
                return
            if batch.replaces_policy:
                self._resync("the policy was replaced by an import; catch up again")
                await self.flush()
                return
            if batch.from_version == self.cursor:  # the usual case: the frame made once
                self.conn.changes(batch.message, batch.frame)
            else:
                fresh = tuple(c for c in batch.changes if c.version > self.cursor)
                self.conn.changes(Changes(self.cursor, fresh[-1].version, fresh, False))
            self.cursor = batch.to_version
            await self.flush()
            if batch.committed_at != UNKNOWN_COMMIT_TIME:
                self.server.metrics.latency.observe(time.time() - batch.committed_at)

    # --- pushes and snapshots ------------------------------------------------------------

    async def _push(self, event: PushReceived) -> None:
        server = self.server
        if server.draining:
            self.conn.refuse(
                ErrorCode.INTERNAL, "the server is shutting down; push again after reconnecting",
                ref=event.ref,
            )  # fmt: skip
            return
        server.pushes_in_flight += 1
        try:  # until the result is written: shutdown waits for it
            author = Author(self.user, self.device, self.client)
            try:
                results, changes, committed_at = await server.tenants.push(
                    self.tenant_id, author, event.mutations
                )
            except store.ClientTaken as error:
                self._refuse_counted(ErrorCode.FORBIDDEN, str(error), ref=event.ref)
                return
            server.metrics.count("fleetgate_pushes_total")
            for result in results:
                server.metrics.count("fleetgate_mutations_total", "outcome", result.outcome.value)
                if result.outcome is Outcome.CONFLICT:
                    server.metrics.count("fleetgate_conflicts_total")
            self.conn.push_result(PushResult(event.ref, tuple(results)))
            await self.flush()
        finally:
            server.pushes_in_flight -= 1
            if not server.pushes_in_flight:
                server.pushes_done.set()
        if changes:
            await server.hub.advance(self.tenant_id, changes[-1].version, committed_at, changes)

    async def _resume_snapshot(self, event: SnapshotResumeRequested) -> None:
        message = event.message
        found = self.server.snapshots.get(message.snapshot, self.tenant_id)
        if found is None and message.snapshot.startswith("s"):
            # Cut by another process (or dropped here): the same version cuts the same id.
            current = await self._current_snapshot()
            found = current if current.id == message.snapshot else None
        if found is None or message.next_chunk >= len(found.messages):
            self._refuse_counted(
                ErrorCode.NOT_FOUND,
                "no such snapshot chunk here (the tenant may have moved on): send hello again",
            )
            return
        await self._send_parts(found, message.next_chunk)

    async def _record_decisions(self, event: DecisionsReceived) -> None:
        """Offline decisions uploaded on sync land in the tenant's audit chain."""
        message = event.message
        count = await self.server.tenants.record_decisions(
            self.tenant_id, self.user, self.device, message.decisions
        )
        self.conn.decisions_recorded(DecisionsRecorded(message.ref, count))
