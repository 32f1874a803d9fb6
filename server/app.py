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
import itertools
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

from server import accounts, audit, store
from server.audit import AuditEntry
from server.hub import UNKNOWN_COMMIT_TIME, Batch, Hub
from server.logs import log
from server.metrics import Metrics
from server.migrations import MIGRATIONS
from server.passwords import PasswordRejected, check_new_password
from server.tenants import (
    DEVICE_REVOKED,
    REPLACE_POLICY,
    SERVER_OPS,
    Author,
    QuotaExceeded,
    SessionEnded,
    Tenant,
    Tenants,
    change_message,
    now_instant,
)
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
from sync.policy.authority import authorize_account
from sync.protocol import server as protocol_state
from sync.protocol.codec import change_pages, encode, push_results
from sync.protocol.errors import CloseCode, ErrorCode, ProtocolBug
from sync.protocol.messages import (
    MAX_MESSAGE_BYTES,
    CatchUp,
    Change,
    Changes,
    DecisionsRecorded,
    Invited,
    Outcome,
    PasswordSet,
    Pong,
    SignedIn,
    Snapshot,
    StaleDecisions,
    Welcome,
    WipeCode,
)
from sync.protocol.server import (
    DecisionsReceived,
    EnrollRequested,
    HelloReceived,
    InviteRequested,
    PingReceived,
    PushReceived,
    RefreshRequested,
    SetPasswordRequested,
    SignInRequested,
    SnapshotResumeRequested,
)
from sync.protocol.states import State
from sync.replication.catchup import (
    Delivery,
    SessionEnd,
    catch_up_by,
    delivery,
    is_snapshot_id,
    session_end,
    snapshot_messages,
)
from sync.replication.decisions import ChainBroken
from sync.replication.digest import digest_text
from sync.replication.pushes import PushRefused

QUEUE_LIMIT = 256
"""Batches of changes a session may have waiting; more and it is told to resync."""
CHANGES_PAGE = 500
"""Changes per `changes` message while catching up."""
SNAPSHOTS_KEPT = 32
GENERIC_SIGN_IN_FAILURE = "wrong tenant, user or password"
PASSWORD_CHECKS = 2
"""Password hashes computed at once (argon2id takes 64 MiB each): more attempts wait."""


@dataclass(frozen=True, slots=True)
class Settings:
    """How one server process runs. The access token lifetime is not here: it is the
    `TokenSigner`'s (`lifetime`), which issues and verifies the tokens."""

    host: str = "127.0.0.1"
    port: int = 8765
    poll_interval: float = 2.0
    drain_timeout: float = 10.0
    """How long shutdown waits for pushes in flight."""
    auth_timeout: float = 10.0
    """How long a connection may stay open without saying hello."""
    send_timeout: float = 10.0
    """How long one frame may take to be taken in by the peer before the session is dropped."""
    ops: frozenset[str] = SERVER_OPS
    """The edit ops this server accepts (fewer in a test of a rolling upgrade)."""


@dataclass(frozen=True, slots=True)
class CutSnapshot:
    """A tenant's policy at `version`, cut into `snapshot` messages and encoded once."""

    id: str
    tenant_id: int
    version: int
    messages: tuple[Snapshot, ...]
    frames: tuple[bytes, ...]


def cut_snapshot(
    tenant_id: int, version: int, document: dict[str, Any], digest: str
) -> CutSnapshot:
    """The tenant's policy document at `version`, cut into encoded `snapshot` messages
    (named by content: sync/replication/catchup.py)."""
    messages = snapshot_messages(version, document, digest)
    snapshot_id = messages[0].snapshot
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
        self.tenants = Tenants(pool, ops=self.settings.ops)
        self.hub = Hub(pool, conninfo, self.settings.poll_interval)
        self.snapshots = Snapshots()
        self.sessions: set[Session] = set()
        self.pushes_in_flight = 0
        self.pushes_done = asyncio.Event()
        self.draining = False
        self.stop = asyncio.Event()
        self._server: Server | None = None
        self._hub_task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self.password_checks = asyncio.Semaphore(PASSWORD_CHECKS)
        """Bounds the memory and cores concurrent sign-ins can take (argon2id)."""

    async def check_password(self, stored_hash: str | None, password: str) -> bool:
        """Verify a password off the event loop, at most `PASSWORD_CHECKS` at once."""
        async with self.password_checks:
            return await asyncio.to_thread(self.passwords.verify, stored_hash, password)

    async def hash_password(self, password: str) -> str:
        async with self.password_checks:
            return await asyncio.to_thread(self.passwords.hash, password)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen on the configured host and port (port 0 picks a free one)."""
        self._hub_task = asyncio.create_task(self.hub.run(self.stop))
        self._watchdog = asyncio.create_task(self._watch_sends())
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
        if self._watchdog is not None:
            await self._watchdog
        if self._server is not None:
            await self._server.wait_closed()
        log("stopped")

    async def _watch_sends(self) -> None:
        """Drop every session whose current frame has not been taken in within
        `send_timeout`: a peer that stops reading must not pin its queue, its
        snapshot frames and a task for ever."""
        limit = self.settings.send_timeout
        interval = min(1.0, limit / 4)
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), interval)
            now = time.monotonic()
            for session in list(self.sessions):
                since = session.sending_since
                if since is not None and now - since > limit:
                    session.drop()

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
        self.conn = protocol_state.ServerConnection(
            time.monotonic(), auth_timeout=server.settings.auth_timeout
        )
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
        self._dropped = False
        self.sending_since: float | None = None
        """When the frame being sent started to be sent (None: nothing being sent)."""
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
        while not self._dropped:
            deadline = self.conn.deadline()
            try:
                if deadline is None:
                    frame = await self.websocket.recv()
                else:
                    wait = max(0.0, deadline - time.monotonic())
                    frame = await asyncio.wait_for(self.websocket.recv(), wait)
            except TimeoutError:
                self.conn.expire(time.monotonic())
                await self.flush()
                continue
            except ConnectionClosed:
                return
            now = time.monotonic()
            if isinstance(frame, str):
                self.conn.receive(frame, now)
            else:
                self.conn.receive_binary(now)
            for event in self.conn.events():
                self.server.metrics.count("fleetgate_messages_total", "type", type(event).__name__)
                await self._handle(event)
            await self.flush()
            # Once closed, frames still arriving are read and dropped (the
            # connection ignores them) so the close handshake is not stuck
            # behind a full receive queue; the loop ends when it completes.

    async def flush(self) -> None:
        """Write what the connection has queued, in order; close if it says so.

        Each frame must be taken in within `send_timeout`: a peer that stops
        reading is dropped, so it cannot pin the server's memory (the frames
        queued for it) or a task forever.
        """
        async with self._send_lock:
            for frame in self.conn.outgoing():
                if self._dropped:
                    break
                # The server's watchdog drops a session whose send has taken longer
                # than `send_timeout` (a timer per frame would cost every fan-out).
                self.sending_since = time.monotonic()
                try:
                    await self.websocket.send(frame, text=True)
                except ConnectionClosed:
                    pass
                finally:
                    self.sending_since = None
        if self.conn.close_code is not None and self._closer is None and not self._dropped:
            self._count_error_frames()
            self._closer = asyncio.create_task(self.websocket.close(self.conn.close_code))

    def drop(self) -> None:
        """The peer stopped taking its data: cut the connection without a handshake."""
        if self._dropped:
            return
        self._dropped = True
        self.server.metrics.count("fleetgate_dropped_sessions_total")
        log("session dropped: not reading", logging.WARNING, session=self.number)
        self.conn.going_away()
        self.websocket.transport.abort()

    def _count_error_frames(self) -> None:
        self.server.metrics.count("fleetgate_rejections_total", "code", str(self.conn.close_code))

    async def _handle(self, event: protocol_state.Event) -> None:
        try:
            if isinstance(event, PingReceived):
                self.conn.pong(Pong(event.ref, now_instant()[1]))
            elif isinstance(event, SignInRequested):
                await self._sign_in(event)
            elif isinstance(event, EnrollRequested):
                await self._enroll(event)
            elif isinstance(event, RefreshRequested):
                await self._refresh(event)
            elif isinstance(event, HelloReceived):
                await self._hello(event)
            elif isinstance(event, PushReceived):
                await self._push(event)
            elif isinstance(event, SnapshotResumeRequested):
                await self._resume_snapshot(event.message.snapshot, event.message.next_chunk)
            elif isinstance(event, DecisionsReceived):
                await self._record_decisions(event)
            elif isinstance(event, InviteRequested | SetPasswordRequested):
                await self._account(event)
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

    async def _reserve(self, tenant: str, user: str, ref: str) -> list[int] | None:
        """Count an attempt to sign in as (tenant, user) as a failure before its secret
        is checked, in this process and in the database; the database rows it took,
        or None (refused: too many failures) — so concurrent attempts cannot get
        past the limit (5 per user, 20 per address in 5 minutes)."""
        server, limiter = self.server, self.server.limiter
        now = time.time()
        wait = limiter.blocked(tenant=tenant, user=user, address=self.address, now=now)
        ids: list[int] = []
        if not wait:
            limiter.failed(tenant=tenant, user=user, address=self.address, now=now)
            keys = [(f"user:{tenant}:{user}", limiter.per_user),
                    (f"address:{self.address}", limiter.per_address)]  # fmt: skip
            async with server.pool.connection() as conn:
                ids, wait = await store.reserve_attempt(conn, keys, limiter.window)
            if wait:
                limiter.forgive(tenant=tenant, user=user, address=self.address, at=now)
        if wait:
            server.metrics.count("fleetgate_sign_ins_total", "result", "limited")
            self._refuse_counted(
                ErrorCode.RATE_LIMITED,
                f"too many failed sign-ins; try again in {math.ceil(wait)} s",
                ref=ref,
            )
            return None
        return ids

    async def _succeeded(self, tenant: str, user: str, ids: list[int]) -> None:
        """The attempt was good: its reservation and the user's failures are forgotten."""
        server = self.server
        server.limiter.succeeded(tenant=tenant, user=user, address=self.address)
        async with server.pool.connection() as conn:
            await store.release_attempt(conn, ids)
            await store.forget_failures(conn, f"user:{tenant}:{user}")

    def _failed(self, tenant: str, user: str, ref: str) -> None:
        self.server.metrics.count("fleetgate_sign_ins_total", "result", "failed")
        log("sign-in failed", session=self.number, tenant=tenant, user=user)
        self._refuse_counted(ErrorCode.UNAUTHENTICATED, GENERIC_SIGN_IN_FAILURE, ref=ref)

    async def _standing(self, tenant_id: int, user: str) -> str | None:
        """None when `user` may sign in to the tenant; else why not: `absent` (not in
        its policy) or `suspended`."""
        tenant = await self.server.tenants.current(tenant_id)
        holder = tenant.engine.policy.users.get(user)
        if holder is None:
            return "absent"
        return "suspended" if holder.suspended else None

    def _refuse_standing(self, standing: str, tenant: str, user: str, ref: str) -> None:
        if standing == "suspended":
            self._refuse_counted(ErrorCode.SUSPENDED, f"user {user!r} is suspended", ref=ref)
        else:
            self._failed(tenant, user, ref)

    async def _sign_in(self, event: SignInRequested) -> None:
        message = event.message
        server = self.server
        ids = await self._reserve(message.tenant, message.user, message.ref)
        if ids is None:
            return
        async with server.pool.connection() as conn:
            row = await store.tenant_by_name(conn, message.tenant)
            stored_hash = await store.password_hash(conn, row.id, message.user) if row else None
        good = await server.check_password(stored_hash, message.password)
        if not good or row is None:
            self._failed(message.tenant, message.user, message.ref)
            return
        standing = await self._standing(row.id, message.user)
        if standing is not None:
            self._refuse_standing(standing, message.tenant, message.user, message.ref)
            return
        await self._succeeded(message.tenant, message.user, ids)
        if not await self._device_usable(row.id, message.device, message.user, message.ref):
            return
        server.metrics.count("fleetgate_sign_ins_total", "result", "ok")
        log("signed in", session=self.number, tenant=row.name, user=message.user,
            device=message.device)  # fmt: skip
        await self._issue(row.id, row.name, message.user, message.device, message.ref)

    def _refused_last(self) -> bool:
        """Whether an error frame is already queued (`_member` answered itself)."""
        return bool(self.conn._outgoing)

    async def _enroll(self, event: EnrollRequested) -> None:
        """A first sign-in with an invitation code: sets the password, then signs in."""
        message = event.message
        server = self.server
        ids = await self._reserve(message.tenant, message.user, message.ref)
        if ids is None:
            return
        try:
            check_new_password(message.password, user=message.user, tenant=message.tenant)
        except PasswordRejected as rejected:
            # Before the code is spent: the person can choose again with the same code.
            self._refuse_counted(ErrorCode.WEAK_PASSWORD, str(rejected), ref=message.ref)
            return
        async with server.pool.connection() as conn:
            row = await store.tenant_by_name(conn, message.tenant)
        standing = "absent" if row is None else await self._standing(row.id, message.user)
        if row is None or standing is not None:
            self._refuse_standing(standing or "absent", message.tenant, message.user, message.ref)
            return
        password_hash = await server.hash_password(message.password)
        async with server.pool.connection() as conn, conn.transaction():
            spent = await store.use_invitation(
                conn, row.id, message.user, accounts.code_hash(message.code)
            )
            if spent:
                await accounts.set_password(conn, row.id, message.user, password_hash)
                _, at = now_instant()
                await audit.append_many(conn, row.id, [AuditEntry(
                    "account.enrolled", message.user, message.device, {"user": message.user}, at,
                )])  # fmt: skip
        if not spent:
            self._failed(message.tenant, message.user, message.ref)
            return
        await self._succeeded(message.tenant, message.user, ids)
        if not await self._device_usable(row.id, message.device, message.user, message.ref):
            return
        log("enrolled", session=self.number, tenant=row.name, user=message.user)
        await self._issue(row.id, row.name, message.user, message.device, message.ref)

    async def _device_usable(self, tenant_id: int, device: str, user: str, ref: str) -> bool:
        async with self.server.pool.connection() as conn:
            revoked = await store.touch_device(conn, tenant_id, device, user)
        if revoked:
            self._refuse_counted(ErrorCode.REVOKED, "this device was revoked", ref=ref)
            self.conn.wipe(WipeCode.DEVICE_REVOKED, DEVICE_REVOKED)
            return False
        return True

    async def _issue(
        self,
        tenant_id: int,
        tenant: str,
        user: str,
        device: str,
        ref: str,
        family: bytes | None = None,
        predecessor: bytes | None = None,
    ) -> None:
        token, claims = self.server.signer.issue(
            tenant_id=tenant_id, tenant=tenant, user=user, device=device, now=time.time()
        )
        refresh = new_refresh_token()
        expires = datetime.now(UTC) + timedelta(seconds=REFRESH_LIFETIME)
        async with self.server.pool.connection() as conn:
            await store.store_refresh_token(
                conn, refresh_token_hash(refresh), tenant_id, user, device, expires, family,
                predecessor,
            )  # fmt: skip
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
        owner = (self.tenant_id, self.user) if self.tenant_id else None
        spent = refresh_token_hash(message.refresh_token)
        async with server.pool.connection() as conn:
            holder_of = await store.refresh_token_holder(conn, spent)
        # A suspended user's token is checked but not spent: once resumed, the same
        # token works (it used to be spent first, so they had to sign in again).
        hold = holder_of is not None and await self._standing(*holder_of) == "suspended"
        async with server.pool.connection() as conn:
            grant = await store.use_refresh_token(conn, spent, message.device, owner, hold=hold)
        verdict = grant.verdict
        if verdict is store.RefreshVerdict.NOT_YOURS:
            self._refuse_counted(
                ErrorCode.FORBIDDEN, "that refresh token is not this session's", ref=message.ref
            )
            return
        if verdict is store.RefreshVerdict.DEVICE_REVOKED:
            self._refuse_counted(ErrorCode.REVOKED, "this device was revoked", ref=message.ref)
            self.conn.wipe(WipeCode.DEVICE_REVOKED, DEVICE_REVOKED)
            return
        if verdict is store.RefreshVerdict.HELD:
            self._refuse_counted(
                ErrorCode.SUSPENDED, f"user {grant.user!r} is suspended", ref=message.ref
            )
            return
        if verdict is not store.RefreshVerdict.GRANTED:
            server.limiter.address_failed(self.address, time.time())
            if verdict is store.RefreshVerdict.REPLAYED:
                log("refresh token replayed: family revoked", logging.WARNING,
                    session=self.number, tenant=grant.tenant, user=grant.user)  # fmt: skip
                # A replica whose user was removed must hear it even when the answer
                # that said so was lost and its token is a replay now (the sign-in it
                # would try next is refused as a wrong password): wipe it.
                tenant = await server.tenants.current(grant.tenant_id)
                if grant.user not in tenant.engine.policy.users:
                    removed = f"user {grant.user!r} was removed"
                    self._refuse_counted(ErrorCode.UNAUTHENTICATED, removed, ref=message.ref)
                    self.conn.wipe(WipeCode.USER_REMOVED, removed)
                    return
            self._refuse_counted(
                ErrorCode.UNAUTHENTICATED,
                "the refresh token is not valid (unknown, used, expired or revoked)",
                ref=message.ref,
            )
            return
        tenant = await server.tenants.current(grant.tenant_id)
        holder = tenant.engine.policy.users.get(grant.user)
        if holder is None:
            self._refuse_counted(
                ErrorCode.UNAUTHENTICATED, f"user {grant.user!r} was removed", ref=message.ref
            )
            self.conn.wipe(WipeCode.USER_REMOVED, f"user {grant.user!r} was removed")
            return
        # Suspended since `hold` was decided: the token is spent, so its successor is
        # issued all the same (refusing now would sign them out for good); the `hello`
        # it is for is refused `suspended`, and the successor works once they are resumed.
        await self._issue(
            grant.tenant_id, grant.tenant, grant.user, message.device, message.ref, grant.family,
            spent,
        )  # fmt: skip

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
        holder = tenant.engine.policy.users.get(claims.user)
        if holder is None:
            self.conn.wipe(WipeCode.USER_REMOVED, f"user {claims.user!r} was removed")
            return
        if holder.suspended:
            self.conn.suspended(f"user {claims.user!r} is suspended")
            return
        async with server.pool.connection() as conn:
            if await store.touch_device(conn, claims.tenant_id, claims.device, claims.user):
                self.conn.wipe(WipeCode.DEVICE_REVOKED, DEVICE_REVOKED)
                return
            try:
                last_seq = await store.claim_client(
                    conn, claims.tenant_id, message.client, claims.device, claims.user
                )
            except store.ClientTaken as error:
                self._refuse_counted(ErrorCode.FORBIDDEN, str(error), close=CloseCode.FORBIDDEN)
                return
            chain = await store.decision_chain(conn, claims.tenant_id, message.client)
        self.tenant_id, self.tenant, self.user = claims.tenant_id, claims.tenant, claims.user
        self.device, self.client = claims.device, message.client
        version = tenant.version
        cursor = message.cursor
        catch_up = catch_up_by(cursor, version, tenant.horizon)
        resume = message.resume
        resumable = None
        if resume is not None and is_snapshot_id(resume.snapshot):
            current = await self._current_snapshot()
            if current.id == resume.snapshot and resume.next_chunk < len(current.messages):
                resumable, catch_up = current, CatchUp.SNAPSHOT
        self.conn.welcome(self._welcome(tenant, catch_up, last_seq, chain))
        log("session started", session=self.number, tenant=self.tenant, user=self.user,
            device=self.device, cursor=cursor, version=version)  # fmt: skip
        await self.flush()
        if resumable is not None and resume is not None:
            await self._send_parts(resumable, resume.next_chunk)
            cursor = resumable.version
        elif catch_up is CatchUp.SNAPSHOT:
            cursor = await self._send_snapshot()
        self.cursor = cursor
        # Join the fan-out before the last read, so nothing committed in between is missed.
        server.hub.join(self, self.cursor)
        await self._catch_up(final=True)
        self.live.set()

    def _welcome(
        self,
        tenant: Tenant,
        catch_up: CatchUp,
        last_seq: int,
        chain: store.DecisionChain | None,
    ) -> Welcome:
        return Welcome(
            self.tenant,
            self.user,
            tenant.version,
            catch_up,
            now_instant()[1],
            last_seq,
            tenant.lease_seconds,
            StaleDecisions(tenant.stale_decisions),
            tuple(sorted(self.server.settings.ops)),
            chain.seq if chain is not None else 0,
        )

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
                version, document, digest = await self.server.tenants.snapshot_document(tenant)
                snapshot = await asyncio.to_thread(
                    cut_snapshot, self.tenant_id, version, document, digest
                )
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
            digest = None
            if changes:
                self.cursor = changes[-1].version
                digest = rows[len(changes) - 1].digest
            self.conn.changes(Changes(start, self.cursor, changes, more or not final, digest))
            await self.flush()
            if self._ended_by(changes):
                return False
            if not more:
                return True
        return False

    def _ended_by(self, changes: tuple[Any, ...]) -> bool:
        """End the session when `changes` delete or suspend its user (they were sent)."""
        end = session_end(self.user, changes)
        if end is SessionEnd.USER_REMOVED:
            self.conn.wipe(WipeCode.USER_REMOVED, f"user {self.user!r} was removed")
        elif end is SessionEnd.SUSPENDED:
            self.conn.suspended(f"user {self.user!r} was suspended")
        else:
            return False
        self._close_soon()
        return True

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
        self.conn.wipe(WipeCode.DEVICE_REVOKED, DEVICE_REVOKED)
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
            plan = delivery(self.cursor, batch.from_version, batch.to_version)
            if plan is Delivery.SKIP:
                continue
            if plan is Delivery.FILL_GAP:
                if not await self._catch_up(final=False, up_to=batch.from_version):
                    return
                plan = delivery(self.cursor, batch.from_version, batch.to_version)
            if batch.replaces_policy:
                self._resync("the policy was replaced by an import; catch up again")
                await self.flush()
                return
            if plan is Delivery.WHOLE:  # the usual case: the frame made once
                self.conn.changes(batch.message, batch.frame)
                sent = batch.changes
            else:
                sent = tuple(c for c in batch.changes if c.version > self.cursor)
                self.conn.changes(
                    Changes(self.cursor, sent[-1].version, sent, False, batch.message.digest)
                )
            self.cursor = batch.to_version
            await self.flush()
            if batch.committed_at != UNKNOWN_COMMIT_TIME:
                self.server.metrics.latency.observe(time.time() - batch.committed_at)
            if self._ended_by(sent):
                return

    # --- pushes, snapshots, decisions, accounts ------------------------------------------

    async def _push(self, event: PushReceived) -> None:
        server = self.server
        if server.draining:
            self.conn.refuse(
                ErrorCode.INTERNAL, "the server is shutting down; push again after reconnecting",
                ref=event.ref,
            )  # fmt: skip
            return
        server.pushes_in_flight += 1
        changes: list[Change] = []
        try:  # until the result is written: shutdown waits for it
            author = Author(self.user, self.device, self.client)
            try:
                decision, changes, committed_at = await server.tenants.push(
                    self.tenant_id, author, event.mutations
                )
            except store.ClientTaken as error:
                self._refuse_counted(ErrorCode.FORBIDDEN, str(error), ref=event.ref)
                return
            except PushRefused as refused:
                self._refuse_counted(
                    refused.code, refused.message, ref=event.ref, expected_seq=refused.expected_seq
                )
                return
            except SessionEnded as ended:
                self._end(ended)
                return
            for seq, fault in decision.faults:
                server.metrics.count("fleetgate_push_faults_total")
                log("push fault", logging.ERROR, session=self.number, tenant=self.tenant,
                    client=self.client, seq=seq, error=fault.split(":", 1)[0])  # fmt: skip
            server.metrics.count("fleetgate_pushes_total")
            for result in decision.results:
                server.metrics.count("fleetgate_mutations_total", "outcome", result.outcome.value)
                if result.outcome is Outcome.CONFLICT:
                    server.metrics.count("fleetgate_conflicts_total")
            self.conn.push_result(push_results(event.ref, decision.results))
            await self.flush()
        finally:
            server.pushes_in_flight -= 1
            if not server.pushes_in_flight:
                server.pushes_done.set()
        if changes:
            digests = {c.version: digest_text(c.digest) for c in decision.commits}
            await server.hub.advance(
                self.tenant_id, changes[-1].version, committed_at, changes, digests
            )

    def _end(self, ended: SessionEnded) -> None:
        if ended.wipe is not None:
            self.conn.wipe(ended.wipe, ended.reason)
        else:
            self.conn.suspended(ended.reason)

    async def _resume_snapshot(self, snapshot_id: str, next_chunk: int) -> None:
        found = self.server.snapshots.get(snapshot_id, self.tenant_id)
        if found is None and is_snapshot_id(snapshot_id):
            # Cut by another process (or dropped here): the same version cuts the same id.
            current = await self._current_snapshot()
            found = current if current.id == snapshot_id else None
        if found is None or next_chunk >= len(found.messages):
            self._refuse_counted(
                ErrorCode.NOT_FOUND,
                "no such snapshot chunk here (the tenant may have moved on): send hello again",
            )
            return
        await self._send_parts(found, next_chunk)

    async def _record_decisions(self, event: DecisionsReceived) -> None:
        """Offline decisions uploaded on sync land in the tenant's audit chain, once each."""
        message = event.message
        author = Author(self.user, self.device, self.client)
        try:
            count, head = await self.server.tenants.record_decisions(
                self.tenant_id, author, message.decisions
            )
        except ChainBroken as broken:
            self._refuse_counted(ErrorCode.CHAIN_BROKEN, str(broken), ref=message.ref)
            return
        except QuotaExceeded as exceeded:
            self._refuse_counted(ErrorCode.RATE_LIMITED, str(exceeded), ref=message.ref)
            return
        except SessionEnded as ended:
            self._end(ended)
            return
        self.conn.decisions_recorded(DecisionsRecorded(message.ref, count, head.seq, head.hash))

    async def _account(self, event: InviteRequested | SetPasswordRequested) -> None:
        """An invitation or a password reset for a user, by a user allowed to."""
        message = event.message
        server = self.server
        tenant = await server.tenants.current(self.tenant_id)
        moment, at = now_instant()
        denied = authorize_account(tenant.engine, self.user, message.user, moment)
        if denied is not None:
            self._refuse_counted(
                ErrorCode.FORBIDDEN,
                f"{self.user} may not manage the account of {message.user!r} "
                f"(needs {denied.permission}): {denied.reason}",
                ref=message.ref,
            )
            return
        if isinstance(event, SetPasswordRequested):
            password = event.message.password
            try:
                check_new_password(password, user=message.user, tenant=self.tenant)
            except PasswordRejected as rejected:
                self._refuse_counted(ErrorCode.WEAK_PASSWORD, str(rejected), ref=message.ref)
                return
            password_hash = await server.hash_password(password)
        async with server.pool.connection() as conn, conn.transaction():
            if isinstance(event, InviteRequested):
                code, expires = await accounts.invite(
                    conn, self.tenant_id, message.user, self.user, event.message.hours
                )
                kind, payload = "account.invited", {"user": message.user, "expires": str(expires)}
            else:
                await accounts.set_password(conn, self.tenant_id, message.user, password_hash)
                kind, payload = "account.password_set", {"user": message.user}
            await audit.append_many(conn, self.tenant_id, [
                AuditEntry(kind, self.user, self.device, payload, at)
            ])  # fmt: skip
        if isinstance(event, InviteRequested):
            when = f"{expires.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
            self.conn.invited(Invited(message.ref, message.user, code, when))
        else:
            self.conn.password_set(PasswordSet(message.ref, message.user))
