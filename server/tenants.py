"""Tenants in this server process: each one's policy engine, merge stamps and
digest, kept at the database's version, and the operations that change a tenant.

Rules of this module:

- The database is the truth. A process loads a tenant's entities and stamps
  once and then follows the change log (`catch_up`), because other processes
  commit too; following a change updates the stamps and digest exactly as
  committing it did (the same functions of sync/replication).
- Every write of a tenant holds its in-process lock and, in its transaction,
  the tenant's row lock (`store.lock_tenant`): the engine is brought to the
  locked version, the push is decided on it (`sync.replication.pushes.execute_push`),
  and the changes, stamps, outcomes, audit rows and webhook deliveries are
  stored with the version bump. If anything fails before the commit, the
  engine's edits are taken back (`Engine.revert`) so memory never runs ahead of
  the database; stamps and digest are only replaced after the commit.
- Every push checks, in its transaction, that the session's device is not
  revoked and its user is still in the policy and not suspended
  (`SessionEnded`), so a revocation missed by the fan-out still stops it.
- The caller (a session) is identified by the server from its token; nothing
  here takes a tenant or an author from a message.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from server import audit, store, webhooks
from server.audit import AuditEntry
from server.logs import log
from server.policy_files import gc_paused
from sync.policy.document import export_policy
from sync.policy.edits import EDIT_TYPES, EditRefused, edit_from_document
from sync.policy.engine import Engine
from sync.policy.instant import Instant, format_instant, instant_from_datetime, parse_instant
from sync.policy.model import Policy
from sync.protocol.messages import Change, Mutation, OfflineDecision, Outcome, WipeCode
from sync.replication.decisions import ChainBroken, ChainHead, continue_chain
from sync.replication.digest import digest_of, digest_text, updated
from sync.replication.entities import Entity, policy_entities
from sync.replication.members import (
    Member,
    Stamp,
    entity_changes,
    policy_changes,
    stamp_changes,
    touches,
)
from sync.replication.pushes import (
    PushContext,
    PushDecision,
    execute_push,
    outcome_document,
    outcome_from_document,
)
from sync.replication.repair import Repair, repair_entities

REPLACE_POLICY = "replace_policy"
"""The change-log op of an import: clients behind it catch up by snapshot."""
IMPORT_CLIENT = ""
"""The client stamps of an import are written by: no real client has an empty id."""
CATCH_UP_PAGE = 1000
DEVICE_REVOKED = "this device was revoked by an administrator"
DECISIONS_PER_HOUR = 20_000
"""Offline decisions one client may upload per hour (a flood must not bloat the audit log)."""
SERVER_OPS = frozenset(EDIT_TYPES)


def now_instant() -> tuple[Instant, str]:
    """The server's time as an instant and as the RFC 3339 text recorded with changes."""
    moment = instant_from_datetime(datetime.now(UTC))
    return moment, format_instant(moment)


@dataclass(frozen=True, slots=True)
class Author:
    """Who is pushing: from the session's token, never from a message."""

    user: str
    device: str
    client: str


class SessionEnded(Exception):
    """The session's device or user may no longer sync: `wipe` (None: suspended)."""

    def __init__(self, wipe: WipeCode | None, reason: str) -> None:
        super().__init__(reason)
        self.wipe = wipe
        self.reason = reason


class QuotaExceeded(Exception):
    """A client uploaded more offline decisions this hour than it may."""


class Tenant:
    """One tenant's engine in this process, at `engine.version`."""

    def __init__(
        self,
        row: store.TenantRow,
        engine: Engine,
        stamps: dict[Member, Stamp],
        digest: int,
    ) -> None:
        self.id = row.id
        self.name = row.name
        self.engine = engine
        self.stamps = stamps
        self.digest = digest
        self.lock = asyncio.Lock()
        self.follow_row(row)

    def follow_row(self, row: store.TenantRow) -> None:
        """Take the settings of the tenant's row (compaction and `set-lease` change
        them without a new version)."""
        self.horizon = row.horizon
        self.floor = row.merge_floor
        self.lease_seconds = row.lease_seconds
        self.stale_decisions = row.stale_decisions

    @property
    def version(self) -> int:
        return self.engine.version or 0


def _compile(name: str, entities: Sequence[Entity], version: int) -> tuple[Engine, int, Repair]:
    """The engine and digest of a tenant's stored entities, repaired where they are
    damaged (fail-closed: sync/replication/repair.py), so a damaged store never
    locks a tenant out."""
    with gc_paused():
        repair = repair_entities(name, entities, now_instant()[0])
        return Engine(repair.policy, version), digest_of(repair.entities), repair


def _entities(documents: Mapping[str, Any]) -> list[Entity]:
    """A change row's entity documents (key "kind:id" -> document) as entities."""
    found = []
    for key, document in documents.items():
        kind, _, entity_id = key.partition(":")
        found.append(Entity(kind, entity_id, document))
    return found


MAX_LOADED = 256
"""Tenants whose engines a process keeps; the least recently used idle ones go first."""


class Tenants:
    """The tenants this process has loaded; tenants are loaded on first use.

    At most `max_loaded` engines are kept: the least recently used tenant that
    is not being written is dropped, and loaded again from the database when
    it is next used (the database is the truth, so nothing is lost).
    """

    def __init__(
        self,
        pool: AsyncConnectionPool,
        max_loaded: int = MAX_LOADED,
        ops: frozenset[str] = SERVER_OPS,
    ) -> None:
        self.pool = pool
        self.max_loaded = max_loaded
        self.ops = ops
        self._loaded: OrderedDict[int, Tenant] = OrderedDict()
        self._loading = asyncio.Lock()

    async def get(self, tenant_id: int) -> Tenant:
        """The tenant's engine in this process, loaded (and compiled) on first use."""
        tenant = self._loaded.get(tenant_id)
        if tenant is not None:
            self._loaded.move_to_end(tenant_id)
            return tenant
        async with self._loading:
            tenant = self._loaded.get(tenant_id)
            if tenant is None:
                async with self.pool.connection() as conn:
                    tenant = await self._load(conn, tenant_id)
                self._loaded[tenant_id] = tenant
                self._evict()
        return tenant

    def _evict(self) -> None:
        idle = [t for t in self._loaded.values() if not t.lock.locked()]
        while len(self._loaded) > self.max_loaded and idle:
            self._loaded.pop(idle.pop(0).id, None)

    def loaded(self) -> int:
        return len(self._loaded)

    async def _load(
        self, conn: psycopg.AsyncConnection, tenant_id: int, *, stored_back: bool = False
    ) -> Tenant:
        row = await store.tenant_by_id(conn, tenant_id)
        if row is None:
            raise LookupError(f"no tenant with id {tenant_id}")
        version, entities = await store.load_entities(conn, tenant_id)
        stamps = await store.load_stamps(conn, tenant_id)
        stamps.update(touches(stamps))
        # Validating and compiling a large policy takes a while: off the event loop.
        engine, digest, repair = await asyncio.to_thread(_compile, row.name, entities, version)
        # The engine lives as long as the process: the cyclic collector need not walk
        # its millions of objects again at every full collection (they are freed by
        # reference counting when the tenant is dropped, as before).
        gc.freeze()
        if repair.changed:
            log("stored policy damaged: serving it repaired", logging.ERROR, tenant=row.name,
                problems=len(repair.problems))  # fmt: skip
            idle = conn.info.transaction_status is psycopg.pq.TransactionStatus.IDLE
            if idle and not stored_back:
                # Stored back as a new version (like an import), so the database
                # says what every process serves and clients catch up by snapshot;
                # inside another transaction it is served from memory only.
                await replace_policy(conn, tenant_id, repair.policy, "server",
                                     problems=repair.problems)  # fmt: skip
                return await self._load(conn, tenant_id, stored_back=True)
        return Tenant(row, engine, stamps, digest)

    async def _reload(self, conn: psycopg.AsyncConnection, tenant: Tenant) -> None:
        fresh = await self._load(conn, tenant.id)
        tenant.engine, tenant.stamps, tenant.digest = fresh.engine, fresh.stamps, fresh.digest
        tenant.horizon, tenant.floor = fresh.horizon, fresh.floor
        tenant.lease_seconds, tenant.stale_decisions = fresh.lease_seconds, fresh.stale_decisions

    async def catch_up(self, conn: psycopg.AsyncConnection, tenant: Tenant, version: int) -> None:
        """Bring the tenant's engine to `version` from the change log (hold `tenant.lock`)."""
        while tenant.version < version:
            rows = await store.changes_after(
                conn, tenant.id, tenant.version, CATCH_UP_PAGE, version
            )
            if not rows:
                await self._reload(conn, tenant)  # the log was compacted below us
                return
            for row in rows:
                if row.edit.get("op") == REPLACE_POLICY or row.version != tenant.version + 1:
                    await self._reload(conn, tenant)
                    return
                try:
                    edit = edit_from_document(row.edit, tenant.engine.policy)
                    tenant.engine.apply(edit, parse_instant(row.at), version=row.version)
                except (EditRefused, ValueError):
                    # Replaying a committed change cannot fail unless memory and
                    # database disagree: start again from the database.
                    await self._reload(conn, tenant)
                    return
                before, after = _entities(row.before), _entities(row.after)
                changes = entity_changes(before, after)
                tenant.stamps.update(
                    stamp_changes(tenant.stamps.get, changes, after, row.version, row.client)
                )
                tenant.digest = updated(tenant.digest, before, after)

    async def current(self, tenant_id: int) -> Tenant:
        """The tenant, caught up with the database (the caller holds no lock)."""
        tenant = await self.get(tenant_id)
        async with tenant.lock, self.pool.connection() as conn:
            row = await store.tenant_by_id(conn, tenant_id)
            if row is not None:
                await self._follow(conn, tenant, row)
        return tenant

    async def _follow(
        self, conn: psycopg.AsyncConnection, tenant: Tenant, row: store.TenantRow
    ) -> None:
        """Bring the tenant to the database's `row` (the caller holds `tenant.lock`)."""
        if row.version != tenant.version:
            await self.catch_up(conn, tenant, row.version)
        tenant.follow_row(row)

    @staticmethod
    def _check_session(tenant: Tenant, author: Author, device_revoked: bool) -> None:
        """Raise SessionEnded when the author's device or user may no longer sync."""
        if device_revoked:
            raise SessionEnded(WipeCode.DEVICE_REVOKED, DEVICE_REVOKED)
        user = tenant.engine.policy.users.get(author.user)
        if user is None:
            raise SessionEnded(WipeCode.USER_REMOVED, f"user {author.user!r} was removed")
        if user.suspended:
            raise SessionEnded(None, f"user {author.user!r} is suspended")

    async def push(
        self, tenant_id: int, author: Author, mutations: Sequence[Mutation]
    ) -> tuple[PushDecision, list[Change], float]:
        """Decide and store a push; the decision, the committed changes and the commit time.

        Raises store.ClientTaken when the session's client id belongs to
        another device or user, PushRefused for a push the rules refuse as a
        whole, SessionEnded when the session may no longer push (nothing is
        decided then).
        """
        tenant = await self.get(tenant_id)
        async with tenant.lock:
            moment, at = now_instant()
            decision: PushDecision | None = None
            try:
                async with self.pool.connection() as conn, conn.transaction():
                    await self._follow(conn, tenant, await store.lock_tenant(conn, tenant.id))
                    last_seq, revoked = await store.claim_client_and_device(
                        conn, tenant.id, author.client, author.device, author.user
                    )
                    self._check_session(tenant, author, revoked)
                    repeats = [
                        m.seq for m in mutations if m.client == author.client and m.seq <= last_seq
                    ]
                    stored = await store.stored_outcomes(conn, tenant.id, author.client, repeats)
                    context = PushContext(
                        author=author.user,
                        client=author.client,
                        last_seq=last_seq,
                        stored={
                            s: outcome_from_document(author.client, s, d) for s, d in stored.items()
                        },
                        stamps=tenant.stamps,
                        floor=tenant.floor,
                        ops=self.ops,
                        digest=tenant.digest,
                        now=moment,
                        at=at,
                    )
                    decision = execute_push(tenant.engine, context, mutations)
                    await self._store(conn, tenant, author, decision, at)
                committed_at = time.time()
            except BaseException:
                if decision is not None and decision.undo is not None:
                    tenant.engine.revert(decision.undo, decision.touched, decision.start_version)
                raise
            tenant.stamps.update(decision.stamps)
            tenant.digest = decision.digest
            changes = [
                Change(
                    commit.version, commit.edit, author.user, author.device,
                    author.client, commit.mutation.seq, at,
                )
                for commit in decision.commits
            ]  # fmt: skip
            return decision, changes, committed_at

    async def _store(
        self,
        conn: psycopg.AsyncConnection,
        tenant: Tenant,
        author: Author,
        decision: PushDecision,
        at: str,
    ) -> None:
        commits = decision.commits
        await store.record_outcomes(
            conn,
            tenant.id,
            author.client,
            [(r.seq, outcome_document(r)) for r in decision.new_outcomes],
        )
        entries: list[AuditEntry] = []
        events: list[tuple[str, dict[str, Any]]] = []
        for result in decision.new_outcomes:
            if result.outcome in (Outcome.REJECTED, Outcome.CONFLICT):
                payload = {"client": result.client, "seq": result.seq} | outcome_document(result)
                entries.append(AuditEntry("mutation." + result.outcome.value, author.user,
                                          author.device, payload, at))  # fmt: skip
                events.append(("push.rejected", payload))
        if commits:
            final: dict[str, Entity] = {}
            existed: dict[str, bool] = {}
            reborn: set[str] = set()
            for commit in commits:
                for before, after in zip(commit.before, commit.after, strict=True):
                    existed.setdefault(after.key, before.document is not None)
                    if before.document is None and after.key in final:
                        # Deleted and created again in this push: in memory it is a new
                        # key, last of its kind; it must be in the store too, or a process
                        # that loads the policy orders it elsewhere (and cuts another
                        # snapshot of the same version: PROTOCOL.md § Catching up).
                        del final[after.key]
                        if existed[after.key]:
                            reborn.add(after.key)
                    final[after.key] = after
            written: list[tuple[Entity, bool]] = []
            for key, entity in final.items():
                if key in reborn and entity.document is not None:
                    written += [(Entity(entity.kind, entity.id, None), True), (entity, False)]
                else:
                    written.append((entity, existed[key]))
            version = commits[-1].version
            await store.write_entities(conn, tenant.id, written, version)
            rows = [
                store.ChangeRow(
                    c.version, c.edit,
                    {e.key: e.document for e in c.before}, {e.key: e.document for e in c.after},
                    author.user, author.device, author.client, c.mutation.seq, at,
                    digest_text(c.digest),
                )
                for c in commits
            ]  # fmt: skip
            await store.append_changes(conn, tenant.id, rows)
            await store.write_stamps(conn, tenant.id, decision.stamps)
            await store.commit_version(conn, tenant.id, version, time.time())
            for change in rows:
                payload = _change_payload(change)
                entries.append(AuditEntry("change", author.user, author.device, payload, at))
                events.append(("change.committed", payload))
        if entries:
            await audit.append_many(conn, tenant.id, entries)
        await webhooks.enqueue_many(conn, tenant.id, events)

    async def record_decisions(
        self, tenant_id: int, author: Author, decisions: Sequence[OfflineDecision]
    ) -> tuple[int, ChainHead]:
        """Append the new decisions of a client's offline chain to the audit chain;
        how many, and the chain's head.

        Raises ChainBroken (audited, nothing else recorded), QuotaExceeded,
        or SessionEnded.
        """
        tenant = await self.current(tenant_id)
        _, at = now_instant()
        broken: ChainBroken | None = None
        async with self.pool.connection() as conn, conn.transaction():
            await store.lock_tenant(conn, tenant_id)  # the audit chain's lock too
            revoked = await store.device_revoked(conn, tenant_id, author.device)
            self._check_session(tenant, author, revoked)
            chain = await store.decision_chain(conn, tenant_id, author.client, lock=True)
            if chain is None:
                raise SessionEnded(None, "this client is not registered: say hello first")
            head = ChainHead(chain.seq, chain.head)
            try:
                new, head = continue_chain(author.client, head, decisions)
            except ChainBroken as error:
                broken = error
                payload = {"client": author.client, "seq": error.seq, "problem": error.problem}
                await audit.append_many(conn, tenant_id, [
                    AuditEntry("decision.chain_broken", author.user, author.device, payload, at)
                ])  # fmt: skip
                new = []
            if new:
                window_start, count = _quota(chain, len(new))
                entries = [_decision_entry(author, d, at) for d in new]
                await audit.append_many(conn, tenant_id, entries)
                await store.save_decision_chain(
                    conn, tenant_id, author.client,
                    store.DecisionChain(head.seq, head.hash, window_start, count),
                )  # fmt: skip
                await webhooks.enqueue(
                    conn, tenant_id, "decisions.recorded",
                    {"user": author.user, "device": author.device, "client": author.client,
                     "count": len(new), "denied": sum(not d.allowed for d in new)},
                )  # fmt: skip
        if broken is not None:
            raise broken
        return len(new), head

    async def snapshot_document(self, tenant: Tenant) -> tuple[int, dict[str, Any], str]:
        """The tenant's policy as a format-1 document (role ids kept), its version and
        digest. The caller has just brought the tenant up to date (`current`)."""
        async with tenant.lock:  # no edit can change the policy while it is exported
            document = await asyncio.to_thread(export_policy, tenant.engine.policy)
            return tenant.version, document, digest_text(tenant.digest)


def _quota(chain: store.DecisionChain, adding: int) -> tuple[datetime, int]:
    """The chain's hourly window after `adding` decisions; raises QuotaExceeded."""
    now = datetime.now(UTC)
    start, count = chain.window_start, chain.window_count
    if start is None or now - start >= timedelta(hours=1):
        start, count = now, 0
    if count + adding > DECISIONS_PER_HOUR:
        wait = int((start + timedelta(hours=1) - now).total_seconds()) + 1
        raise QuotaExceeded(
            f"this client may upload {DECISIONS_PER_HOUR:,} offline decisions an hour; "
            f"upload the rest in {wait} s"
        )
    return start, count + adding


def _decision_entry(author: Author, decision: OfflineDecision, at: str) -> AuditEntry:
    payload = {
        "client": author.client,
        "seq": decision.seq,
        "hash": decision.hash,
        "prev_hash": decision.prev_hash,
        "request": dict(decision.request),
        "allowed": decision.allowed,
        "reason": decision.reason,
        "decided_at": decision.at,
        "clock": decision.clock.value,
        "lease_fresh": decision.lease_fresh,
        "pending": list(decision.pending),
        "policy_version": decision.policy_version,
    }
    return AuditEntry("decision.offline", author.user, author.device, payload, at)


def _change_payload(change: store.ChangeRow) -> dict[str, Any]:
    return {
        "version": change.version,
        "edit": change.edit,
        "client": change.client,
        "seq": change.seq,
        "before": change.before,
        "after": change.after,
    }


def change_message(row: store.ChangeRow) -> Change:
    """The protocol's `change` for a change-log row."""
    return Change(row.version, row.edit, row.author, row.device, row.client, row.seq, row.at)


async def replace_policy(
    conn: psycopg.AsyncConnection,
    tenant_id: int,
    policy: Policy,
    author: str,
    problems: Sequence[str] = (),
) -> int:
    """Make `policy` the tenant's whole policy (an import) in one transaction: a
    new version, the horizon there (every client catches up by snapshot),
    merge stamps from the member diff of the old and new policy (so clients
    offline across the import merge instead of conflicting wholesale), an
    audit row. Server processes reload their engine when they see the change.
    `problems`: the policy is a repair of a damaged store (audited as such)."""
    _, at = now_instant()
    async with conn.transaction():
        row = await store.lock_tenant(conn, tenant_id)
        version = row.version + 1
        _, old_entities = await store.load_entities(conn, tenant_id)
        entities = list(policy_entities(policy))
        changes, touched = policy_changes(old_entities, entities)
        stored = await store.stamps_of(conn, tenant_id, [c.member for c in changes])
        stamps = stamp_changes(stored.get, changes, touched, version, IMPORT_CLIENT)
        await store.replace_entities(conn, tenant_id, entities, version)
        edit = {"op": REPLACE_POLICY, "roles": len(policy.roles), "users": len(policy.users)}
        digest = digest_text(digest_of(entities))
        await store.append_changes(
            conn,
            tenant_id,
            [store.ChangeRow(version, edit, {}, {}, author, "admin", "admin", 0, at, digest)],
        )
        await store.write_stamps(conn, tenant_id, stamps)
        await store.set_version(conn, tenant_id, version, horizon=version)
        payload: dict[str, Any] = {"version": version, "edit": edit}
        kind = "import"
        if problems:
            kind, payload = "policy.repaired", payload | {"problems": list(problems)}
        await audit.append_many(conn, tenant_id, [AuditEntry(kind, author, "admin", payload, at)])
        await webhooks.enqueue(conn, tenant_id, "change.committed", payload)
        await store.notify_change(conn, tenant_id, version, time.time())
    return version
