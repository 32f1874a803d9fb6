"""Fan-out: committed changes reach every connected session of a tenant, in
this process and in every other process sharing the database.

Rules of this module (issue 3 § Change log and pushes):

- A commit sends `pg_notify(tenant:version:time)`, delivered only on commit.
  Each process keeps one dedicated LISTEN connection; on a notification it
  reads the change log past the last version it fanned out for that tenant
  and hands the batch to the tenant's sessions. A push committed in this
  process is handed over at once (`advance` with the changes in hand); the
  notification that follows finds nothing new.
- A notification missed while LISTEN reconnects is never replayed, so a poll
  every `poll_interval` compares each watched tenant's version with what was
  fanned out, and a reconnect polls at once.
- Each session has a bounded queue of batches; a session whose queue is full
  is told to resync (a slow client must not slow the others). Sessions keep
  their own cursor and fill a gap from the change log themselves, so a batch
  arriving early or twice does no harm.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import psycopg
from psycopg_pool import AsyncConnectionPool

from server import store
from server.logs import log
from server.tenants import REPLACE_POLICY, change_message
from sync.protocol.codec import change_pages, encode
from sync.protocol.messages import Change, Changes

FETCH_LIMIT = 2000
UNKNOWN_COMMIT_TIME = 0.0
"""Found by the poll: when it was committed is not known (no latency is recorded)."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Changes `from_version` < version <= `to_version` of one tenant, with the
    `changes` message and its frame, made once for every session it goes to."""

    from_version: int
    to_version: int
    changes: tuple[Change, ...]
    committed_at: float
    message: Changes
    frame: bytes
    replaces_policy: bool
    """An import is among the changes: sessions are told to resync instead."""

    @classmethod
    def of(
        cls,
        from_version: int,
        changes: tuple[Change, ...],
        committed_at: float,
        digest: str | None = None,
    ) -> Batch:
        """A batch of `changes` after `from_version` (`digest`: the policy's at the
        last), with its message encoded once."""
        message = Changes(from_version, changes[-1].version, changes, False, digest)
        replaces = any(c.edit.get("op") == REPLACE_POLICY for c in changes)
        return cls(from_version, message.to_version, changes, committed_at, message,
                   encode(message), replaces)  # fmt: skip


class Listener(Protocol):
    """What the hub needs of a session."""

    tenant_id: int
    device: str

    def deliver(self, batch: Batch) -> None: ...

    def revoke(self) -> None: ...


class Hub:
    def __init__(
        self, pool: AsyncConnectionPool, conninfo: str, poll_interval: float = 2.0
    ) -> None:
        self.pool = pool
        self.conninfo = conninfo
        self.poll_interval = poll_interval
        self._sessions: dict[int, set[Listener]] = {}
        self._sent: dict[int, int] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self.listening = asyncio.Event()
        self._listened = False
        """The LISTEN connection got as far as listening since the last failure."""

    # --- sessions ------------------------------------------------------------------------

    def join(self, session: Listener, version: int) -> None:
        """Start fanning out the tenant's changes to `session` (caught up to `version`)."""
        self._sessions.setdefault(session.tenant_id, set()).add(session)
        self._sent.setdefault(session.tenant_id, version)

    def leave(self, session: Listener) -> None:
        """Stop fanning out to `session` (it closed)."""
        sessions = self._sessions.get(session.tenant_id)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self._sessions[session.tenant_id]
                self._sent.pop(session.tenant_id, None)

    def session_count(self) -> int:
        return sum(len(s) for s in self._sessions.values())

    # --- fan-out -------------------------------------------------------------------------

    async def advance(
        self,
        tenant_id: int,
        version: int,
        committed_at: float,
        changes: Sequence[Change] = (),
        digests: Mapping[int, str] | None = None,
    ) -> None:
        """The tenant reached `version`: fan out what its sessions have not been sent.

        `changes` are the newest changes when the caller has them (a local
        push), with the policy's digest after each (`digests`, by version);
        anything older not yet fanned out is read from the change log.
        """
        if tenant_id not in self._sessions:
            return
        lock = self._locks.setdefault(tenant_id, asyncio.Lock())
        async with lock:
            sent = self._sent.get(tenant_id)
            if sent is None or sent >= version:
                return
            have = [c for c in changes if c.version > sent]
            known = dict(digests or {})
            if not have or have[0].version != sent + 1 or have[-1].version != version:
                async with self.pool.connection() as conn:
                    rows = await store.changes_after(conn, tenant_id, sent, FETCH_LIMIT, version)
                have = [change_message(row) for row in rows]
                known = {row.version: row.digest for row in rows if row.digest is not None}
                if not have:
                    return
            for page in change_pages(have):  # each batch must fit one message
                batch = Batch.of(sent, page, committed_at, known.get(page[-1].version))
                sent = self._sent[tenant_id] = batch.to_version
                for session in list(self._sessions.get(tenant_id, ())):
                    session.deliver(batch)
        if batch.to_version < version:  # more than one page behind
            await self.advance(tenant_id, version, committed_at)

    def revoke(self, tenant_id: int, device: str) -> None:
        for session in list(self._sessions.get(tenant_id, ())):
            if session.device == device:
                session.revoke()

    # --- the LISTEN connection and the poll ----------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Listen and poll until `stop` is set; reconnects after any failure."""
        poller = asyncio.create_task(self._poll_loop(stop))
        delay = 0.1
        try:
            while not stop.is_set():
                try:
                    await self._listen(stop)
                    delay = 0.1
                except (psycopg.Error, OSError) as error:
                    if self._listened:
                        # It was listening: a new loss, not the same outage going on (the
                        # backoff grew for the life of the process, and notifications
                        # stopped for 5 s after every later loss).
                        delay, self._listened = 0.1, False
                    self.listening.clear()
                    log("listen connection lost", logging.WARNING, error=type(error).__name__)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    delay = min(delay * 2, 5.0)
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller

    async def _listen(self, stop: asyncio.Event) -> None:
        conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        try:
            await conn.execute(f"LISTEN {store.CHANGES_CHANNEL}")  # constants, not input
            await conn.execute(f"LISTEN {store.DEVICES_CHANNEL}")
            self.listening.set()
            self._listened = True
            await self.poll()  # whatever was committed while not listening
            notifies = conn.notifies()
            stopping = asyncio.create_task(stop.wait())
            try:
                while not stop.is_set():
                    nxt = asyncio.ensure_future(anext(notifies))
                    done, _ = await asyncio.wait({nxt, stopping}, return_when="FIRST_COMPLETED")
                    if nxt not in done:
                        nxt.cancel()
                        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                            await nxt
                        break
                    await self._notified(nxt.result())
            finally:
                stopping.cancel()
        finally:
            self.listening.clear()
            await conn.close()

    async def _notified(self, notify: psycopg.Notify) -> None:
        try:
            if notify.channel == store.CHANGES_CHANNEL:
                tenant, version, committed = notify.payload.split(":")
                await self.advance(int(tenant), int(version), float(committed))
            elif notify.channel == store.DEVICES_CHANNEL:
                tenant_id, device = json.loads(notify.payload)
                self.revoke(int(tenant_id), str(device))
        except (ValueError, TypeError):
            log("ignored a malformed notification", logging.WARNING, channel=notify.channel)

    async def _poll_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_interval)
            try:
                await self.poll()
            except (psycopg.Error, OSError) as error:
                log("catch-up poll failed", logging.WARNING, error=type(error).__name__)

    async def poll(self) -> None:
        """Fan out anything committed that was not fanned out, and revoke devices
        revoked meanwhile (a missed notification: LISTEN was reconnecting)."""
        watched = list(self._sessions)
        if not watched:
            return
        devices = sorted({(s.tenant_id, s.device) for t in watched for s in self._sessions[t]})
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT id, version FROM tenants WHERE id = ANY(%s)", (watched,)
            )
            rows = await cursor.fetchall()
            revoked = await store.revoked_devices(conn, devices)
        for tenant_id, device in revoked:
            self.revoke(tenant_id, device)
        for tenant_id, version in rows:
            if version > self._sent.get(tenant_id, version):
                await self.advance(tenant_id, version, UNKNOWN_COMMIT_TIME)
