"""Tenants in this server process: each one's policy engine, kept at the
database's version, and the operations that change a tenant.

Rules of this module:

- The database is the truth. A process loads a tenant's entities once and then
  follows the change log (`catch_up`), because other processes commit too.
- Every write of a tenant holds its in-process lock and, in its transaction,
  the tenant's row lock (`store.lock_tenant`): the engine is brought to the
  locked version, the push is decided on it (`sync.replication.pushes.execute_push`), and
  the changes, outcomes, audit rows and webhook deliveries are stored with
  the version bump. If anything fails before the commit, the engine's edits
  are taken back (`Engine.revert`) so memory never runs ahead of the database.
- The caller (a session) is identified by the server from its token; nothing
  here takes a tenant or an author from a message.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from server import audit, store, webhooks
from server.audit import AuditEntry
from server.policy_files import gc_paused
from sync.policy.document import export_policy, parse_policy
from sync.policy.edits import EditRefused, edit_from_document
from sync.policy.engine import Engine
from sync.policy.instant import Instant, format_instant, instant_from_datetime, parse_instant
from sync.policy.model import Policy
from sync.protocol.messages import Change, Mutation, OfflineDecision, Outcome, Result
from sync.replication.entities import Entity, policy_document, policy_entities
from sync.replication.pushes import (
    PushContext,
    PushDecision,
    execute_push,
    outcome_document,
    outcome_from_document,
)

REPLACE_POLICY = "replace_policy"
"""The change-log op of an import: clients behind it catch up by snapshot."""
CATCH_UP_PAGE = 1000


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


class Tenant:
    """One tenant's engine in this process, at `engine.version`."""

    def __init__(self, tenant_id: int, name: str, engine: Engine, horizon: int) -> None:
        self.id = tenant_id
        self.name = name
        self.engine = engine
        self.horizon = horizon
        self.last_touch: dict[str, tuple[int, str]] = {}
        self.lock = asyncio.Lock()

    @property
    def version(self) -> int:
        return self.engine.version or 0


def _compile(name: str, entities: Sequence[Entity], version: int) -> Engine:
    with gc_paused():
        return Engine(policy_from_entities(name, entities, now_instant()[0]), version)


def policy_from_entities(name: str, entities: Sequence[Entity], now: Instant) -> Policy:
    """The validated policy of a tenant's stored entities; raises PolicyInvalid."""
    return parse_policy(policy_document(name, entities), now=now)


MAX_LOADED = 256
"""Tenants whose engines a process keeps; the least recently used idle ones go first."""


class Tenants:
    """The tenants this process has loaded; tenants are loaded on first use.

    At most `max_loaded` engines are kept: the least recently used tenant that
    is not being written is dropped, and loaded again from the database when
    it is next used (the database is the truth, so nothing is lost).
    """

    def __init__(self, pool: AsyncConnectionPool, max_loaded: int = MAX_LOADED) -> None:
        self.pool = pool
        self.max_loaded = max_loaded
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

    async def _load(self, conn: psycopg.AsyncConnection, tenant_id: int) -> Tenant:
        row = await store.tenant_by_id(conn, tenant_id)
        if row is None:
            raise LookupError(f"no tenant with id {tenant_id}")
        version, entities = await store.load_entities(conn, tenant_id)
        # Validating and compiling a large policy takes a while: off the event loop.
        engine = await asyncio.to_thread(_compile, row.name, entities, version)
        tenant = Tenant(tenant_id, row.name, engine, row.horizon)
        tenant.last_touch = await store.last_touches(conn, tenant_id, row.horizon)
        return tenant

    async def _reload(self, conn: psycopg.AsyncConnection, tenant: Tenant) -> None:
        fresh = await self._load(conn, tenant.id)
        tenant.engine, tenant.horizon, tenant.last_touch = (
            fresh.engine,
            fresh.horizon,
            fresh.last_touch,
        )

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
                for key in row.after:
                    tenant.last_touch[key] = (row.version, row.client)

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
        tenant.horizon = row.horizon  # compaction moves it without a new version

    async def push(
        self, tenant_id: int, author: Author, mutations: Sequence[Mutation]
    ) -> tuple[list[Result], list[Change], float]:
        """Decide and store a push; the results, the committed changes and the commit time.

        Raises store.ClientTaken when the session's client id belongs to
        another device or user (nothing is decided then).
        """
        tenant = await self.get(tenant_id)
        async with tenant.lock:
            moment, at = now_instant()
            decision: PushDecision | None = None
            try:
                async with self.pool.connection() as conn, conn.transaction():
                    await self._follow(conn, tenant, await store.lock_tenant(conn, tenant.id))
                    last_seq = await store.claim_client(
                        conn, tenant.id, author.client, author.device, author.user
                    )
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
                        horizon=tenant.horizon,
                        last_touch=tenant.last_touch,
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
            changes = []
            for commit in decision.commits:
                for entity in commit.after:
                    tenant.last_touch[entity.key] = (commit.version, author.client)
                changes.append(
                    Change(
                        commit.version, commit.edit, author.user, author.device,
                        author.client, commit.mutation.seq, at,
                    )
                )  # fmt: skip
            return decision.results, changes, committed_at

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
            if result.outcome is not Outcome.APPLIED:
                payload = {"client": result.client, "seq": result.seq} | outcome_document(result)
                entries.append(AuditEntry("mutation." + result.outcome.value, author.user,
                                          author.device, payload, at))  # fmt: skip
                events.append(("push.rejected", payload))
        if commits:
            final: dict[str, Entity] = {}
            existed: dict[str, bool] = {}
            for commit in commits:
                for before, after in zip(commit.before, commit.after, strict=True):
                    existed.setdefault(after.key, before.document is not None)
                    final[after.key] = after
            version = commits[-1].version
            await store.write_entities(
                conn, tenant.id, [(e, existed[key]) for key, e in final.items()], version
            )
            rows = [
                store.ChangeRow(
                    c.version, c.edit,
                    {e.key: e.document for e in c.before}, {e.key: e.document for e in c.after},
                    author.user, author.device, author.client, c.mutation.seq, at,
                )
                for c in commits
            ]  # fmt: skip
            await store.append_changes(conn, tenant.id, rows)
            await store.set_version(conn, tenant.id, version)
            for change in rows:
                payload = _change_payload(change)
                entries.append(AuditEntry("change", author.user, author.device, payload, at))
                events.append(("change.committed", payload))
            await store.notify_change(conn, tenant.id, version, time.time())
        if entries:
            await audit.append_many(conn, tenant.id, entries)
        await webhooks.enqueue_many(conn, tenant.id, events)

    async def record_decisions(
        self, tenant_id: int, user: str, device: str, decisions: Sequence[OfflineDecision]
    ) -> int:
        """Append decisions a replica made offline to the audit chain; how many."""
        if not decisions:
            return 0
        _, at = now_instant()
        entries = [
            AuditEntry(
                "decision.offline", user, device,
                {"request": dict(d.request), "allowed": d.allowed, "reason": d.reason,
                 "decided_at": d.at, "policy_version": d.policy_version},
                at,
            )
            for d in decisions
        ]  # fmt: skip
        async with self.pool.connection() as conn, conn.transaction():
            await audit.append_many(conn, tenant_id, entries)
            await webhooks.enqueue(
                conn, tenant_id, "decisions.recorded",
                {"user": user, "device": device, "count": len(entries),
                 "denied": sum(not d.allowed for d in decisions)},
            )  # fmt: skip
        return len(entries)

    async def snapshot_document(self, tenant: Tenant) -> tuple[int, dict[str, Any]]:
        """The tenant's policy as a format-1 document (role ids kept), and its version.

        The caller has just brought the tenant up to date (`current`)."""
        async with tenant.lock:  # no edit can change the policy while it is exported
            document = await asyncio.to_thread(export_policy, tenant.engine.policy)
            return tenant.version, document


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
    conn: psycopg.AsyncConnection, tenant_id: int, policy: Policy, author: str
) -> int:
    """Make `policy` the tenant's whole policy (an import) in one transaction: a
    new version, the horizon there (every client catches up by snapshot), an
    audit row. Server processes drop their engine when they see the change."""
    _, at = now_instant()
    async with conn.transaction():
        row = await store.lock_tenant(conn, tenant_id)
        version = row.version + 1
        entities = list(policy_entities(policy))
        await store.replace_entities(conn, tenant_id, entities, version)
        edit = {"op": REPLACE_POLICY, "roles": len(policy.roles), "users": len(policy.users)}
        await store.append_changes(
            conn,
            tenant_id,
            [store.ChangeRow(version, edit, {}, {}, author, "admin", "admin", 0, at)],
        )
        await store.set_version(conn, tenant_id, version, horizon=version)
        payload = {"version": version, "edit": edit}
        await audit.append_many(
            conn, tenant_id, [AuditEntry("import", author, "admin", payload, at)]
        )
        await webhooks.enqueue(conn, tenant_id, "change.committed", payload)
        await store.notify_change(conn, tenant_id, version, time.time())
    return version
