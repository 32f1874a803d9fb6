"""An in-memory sync server for simulations: one tenant, decided by the rules of `sync/`.

It follows server/tenants.py and server/app.py step by step, with the
database replaced by a few dictionaries and the clock handed in (`mono`,
`wall`), so a simulation can run thousands of sessions in a second of real
time and look at everything afterwards:

- Each socket gets a `sync.protocol.server.ServerConnection`; its events are
  handled as `Session._handle` does (sign-in with the password "pw" for any
  user of the policy, refresh tokens that rotate and revoke their family on
  a replay, `hello`, `push`, `record_decisions`, `snapshot_resume`, `ping`).
- A push is decided by `execute_push` with a `PushContext` built as
  `Tenants.push` builds it (stored outcomes of repeats, the stamps, the merge
  floor, the ops, the digest, the server's time), after the same session
  checks (device revoked, user removed or suspended); outcomes, commits,
  stamps and digest are kept as `Tenants._store` keeps them, and the commits
  go out to every live session as the hub and `Session._pump` send them.
- Catching up is `catch_up_by`, `snapshot_messages` over `export_policy` and
  pages of `change_pages`, as `Session._hello` and `_catch_up` do; a session
  ends on the changes `session_end` names.
- `import_policy` is `replace_policy` (a new version, the horizon there,
  stamps from `policy_changes`, every live session told to resync), and
  `compact` is `store.compact` (the log cut to the last `keep` changes, the
  merge floor moved to the newest version committed a lease ago, stamps older
  than it pruned, as a process that loads the tenant again sees them);
  `revoke_device` wipes a device's sessions, `restart` closes every session
  (1001) and may change the ops accepted (a rolling upgrade).

Besides what a server keeps, it keeps for the checks of a simulation the
whole history of changes (`history`, never compacted, with each change's
member changes, base version and the floor it was decided under), the
digest at every version, and how often each mutation was decided.

Left out: Postgres and other server processes, the audit log beyond the
offline decisions, webhooks, sign-in rate limits, invitations and password
resets (refused `forbidden`), and the send watchdog.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from unittest import mock

from server.app import CHANGES_PAGE, GENERIC_SIGN_IN_FAILURE
from server.store import LOST_ANSWER_GRACE
from server.tenants import DEVICE_REVOKED, IMPORT_CLIENT, REPLACE_POLICY, SERVER_OPS
from sync.policy.document import export_policy
from sync.policy.engine import Engine
from sync.policy.instant import Instant, format_instant
from sync.policy.model import Policy
from sync.protocol import server as protocol
from sync.protocol.codec import change_pages, push_results
from sync.protocol.errors import CloseCode, ErrorCode
from sync.protocol.messages import (
    CatchUp,
    Change,
    Changes,
    DecisionsRecorded,
    Mutation,
    OfflineDecision,
    Pong,
    SignedIn,
    Snapshot,
    StaleDecisions,
    Welcome,
    WipeCode,
)
from sync.protocol.states import State
from sync.replication import catchup
from sync.replication.catchup import (
    Delivery,
    SessionEnd,
    catch_up_by,
    delivery,
    is_snapshot_id,
    session_end,
    snapshot_messages,
)
from sync.replication.decisions import ChainBroken, ChainHead, continue_chain
from sync.replication.digest import digest_of, digest_text
from sync.replication.entities import Entity, policy_entities
from sync.replication.members import (
    Member,
    MemberChange,
    Stamp,
    entity_changes,
    is_touch,
    policy_changes,
    stamp_changes,
    touches,
)
from sync.replication.offline import instant_seconds
from sync.replication.pushes import (
    PushContext,
    PushRefused,
    execute_push,
    outcome_document,
    outcome_from_document,
)
from sync.replication.snapshots import snapshot_parts

PASSWORD = "pw"
"""Every user of the policy signs in with this."""


@dataclass(frozen=True, slots=True)
class LoggedChange:
    """One committed change, as the change log keeps it, and what the checks need."""

    version: int
    edit: dict[str, Any]
    before: list[Entity]
    after: list[Entity]
    author: str
    device: str
    client: str
    seq: int
    at: str
    digest: str
    committed_at: float
    """The server's wall clock at the commit, in seconds (for the merge floor)."""
    base_version: int | None = None
    """The mutation's base (None for an import)."""
    floor: int = 0
    """The merge floor the mutation was decided under."""
    members: tuple[MemberChange, ...] = ()
    """Its member changes (of an import: the member diff of the old and new policy)."""

    def message(self) -> Change:
        return Change(self.version, self.edit, self.author, self.device, self.client, self.seq,
                      self.at)  # fmt: skip


@dataclass(slots=True)
class ClientRecord:
    """What the server keeps of one client id: its device and user, its outcomes,
    its offline decision chain."""

    device: str
    user: str
    last_seq: int = 0
    outcomes: dict[int, dict[str, Any]] = field(default_factory=dict)
    chain: ChainHead = field(default_factory=ChainHead)
    decisions: list[OfflineDecision] = field(default_factory=list)


@dataclass(slots=True)
class _Refresh:
    user: str
    device: str
    family: str
    expires: float
    used_at: float | None = None
    revoked: bool = False
    successor: str | None = None


@dataclass(frozen=True, slots=True)
class _Access:
    user: str
    device: str
    expires: float


class SessionEnded(Exception):
    """The session may no longer sync: `wipe` (None: suspended)."""

    def __init__(self, wipe: WipeCode | None, reason: str) -> None:
        super().__init__(reason)
        self.wipe = wipe
        self.reason = reason


class MemoryServer:
    """One tenant's sync server, in memory (module rules).

    `mono` is the monotonic clock (seconds) the connections run on, `wall`
    the server's wall clock. `page` is the number of changes read per
    catch-up page (the real server's is 500: a smaller one exercises paging),
    `part_bytes` the size snapshots are cut at (None: the real size).
    """

    def __init__(
        self,
        policy: Policy,
        *,
        mono: Callable[[], float],
        wall: Callable[[], Instant],
        lease_seconds: int = 7 * 24 * 3600,
        stale_decisions: StaleDecisions = StaleDecisions.ANSWER,
        ops: frozenset[str] = SERVER_OPS,
        page: int = CHANGES_PAGE,
        part_bytes: int | None = None,
        access_lifetime: float = 900.0,
        refresh_lifetime: float = 30 * 24 * 3600.0,
    ) -> None:
        self.mono = mono
        self.wall = wall
        self.tenant = policy.tenant
        self.lease_seconds = lease_seconds
        self.stale_decisions = stale_decisions
        self.ops = ops
        self.page = page
        self.part_bytes = part_bytes
        self.access_lifetime = access_lifetime
        self.refresh_lifetime = refresh_lifetime
        self.engine = Engine(Policy(policy.tenant, policy.resource_types), 0)
        self.stamps: dict[Member, Stamp] = {}
        self.digest = 0
        self.horizon = 0
        self.floor = 0
        self.log: list[LoggedChange] = []
        """The change log as served (compaction drops its head)."""
        self.history: list[LoggedChange] = []
        """Every change ever committed, imports included (for the checks)."""
        self.digests: dict[int, str] = {0: digest_text(0)}
        """The policy's digest at every version."""
        self.clients: dict[str, ClientRecord] = {}
        self.decided: Counter[tuple[str, int]] = Counter()
        """How often each (client, seq) was decided (a new outcome made): once, always."""
        self.faults: list[tuple[str, int, str]] = []
        """(client, seq, what failed) of mutations answered `internal`."""
        self.devices: dict[str, str] = {}
        """device -> the user who used it last."""
        self.revoked: set[str] = set()
        self.sessions: list[MemorySession] = []
        """Sessions whose socket is open."""
        self._access: dict[str, _Access] = {}
        self._refresh: dict[str, _Refresh] = {}
        self._tokens = itertools.count(1)
        self._snapshot: tuple[int, tuple[Snapshot, ...]] | None = None
        self.import_policy(policy, author="admin")

    # --- the tenant ------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self.engine.version or 0

    @property
    def policy(self) -> Policy:
        return self.engine.policy

    def now(self) -> tuple[Instant, str]:
        moment = self.wall()
        return moment, format_instant(moment)

    def _wall_seconds(self) -> float:
        return instant_seconds(self.wall())

    def _reload_stamps(self) -> None:
        """The stamps as a process loading the tenant has them: the stored member stamps
        and the touches derived from them (server/tenants.py `_load`)."""
        members = {m: s for m, s in self.stamps.items() if not is_touch(m)}
        members.update(touches(members))
        self.stamps = members

    def import_policy(self, policy: Policy, *, author: str = "admin") -> int:
        """Make `policy` the tenant's whole policy (server/tenants.py `replace_policy`):
        a new version, the horizon there, stamps from the member diff; every live
        session is told to resync. Returns the new version."""
        _, at = self.now()
        version = self.version + 1
        old_entities = list(policy_entities(self.engine.policy))
        entities = list(policy_entities(policy))
        changes, touched = policy_changes(old_entities, entities)
        self.stamps.update(stamp_changes(self.stamps.get, changes, touched, version, IMPORT_CLIENT))
        self._reload_stamps()
        self.engine = Engine(policy, version)
        self.digest = digest_of(entities)
        self.horizon = version
        edit = {"op": REPLACE_POLICY, "roles": len(policy.roles), "users": len(policy.users)}
        change = LoggedChange(
            version, edit, [], [], author, "admin", "admin", 0, at, digest_text(self.digest),
            self._wall_seconds(), None, self.floor, tuple(changes),
        )  # fmt: skip
        self.log.append(change)
        self.history.append(change)
        self.digests[version] = digest_text(self.digest)
        self._fan_out(version - 1, [change])
        return version

    def compact(self, keep: int) -> tuple[int, int]:
        """Drop all but the last `keep` changes (server/store.py `compact`); the new
        horizon and merge floor. Stamps older than the floor are pruned, as a
        process that loads the tenant afresh has them."""
        horizon = max(self.horizon, self.version - keep)
        lease_ago = self._wall_seconds() - self.lease_seconds
        committed = [c.version for c in self.log if c.committed_at <= lease_ago]
        floor = max(self.floor, max(committed, default=0))
        if horizon > self.horizon:
            self.log = [c for c in self.log if c.version > horizon]
        if floor > self.floor:
            self.stamps = {m: s for m, s in self.stamps.items() if s.changed >= floor}
        self._reload_stamps()
        self.horizon, self.floor = horizon, floor
        return horizon, floor

    def revoke_device(self, device: str) -> None:
        """`fleetgate admin revoke-device`: its sessions are wiped at once."""
        self.revoked.add(device)
        for refresh in self._refresh.values():
            if refresh.device == device:
                refresh.revoked = True
        for session in list(self.sessions):
            if session.device == device:
                session.conn.wipe(WipeCode.DEVICE_REVOKED, DEVICE_REVOKED)
                session.flush()

    def restart(self, ops: frozenset[str] | None = None) -> None:
        """The server process restarts (with `ops`: a rolling upgrade): every session is
        closed with 1001 after what it had queued, and the tenant is loaded afresh."""
        if ops is not None:
            self.ops = ops
        for session in list(self.sessions):
            session.conn.going_away()
            session.flush()
        self._reload_stamps()
        self._snapshot = None

    def _check_session(self, user: str, device: str) -> None:
        """server/tenants.py `_check_session`."""
        if device in self.revoked:
            raise SessionEnded(WipeCode.DEVICE_REVOKED, DEVICE_REVOKED)
        holder = self.policy.users.get(user)
        if holder is None:
            raise SessionEnded(WipeCode.USER_REMOVED, f"user {user!r} was removed")
        if holder.suspended:
            raise SessionEnded(None, f"user {user!r} is suspended")

    def _claim_client(self, client: str, device: str, user: str) -> ClientRecord | None:
        """The client's record, registered to (device, user) when new; None when the
        id belongs to another device or user (store.ClientTaken)."""
        record = self.clients.setdefault(client, ClientRecord(device, user))
        if (record.device, record.user) != (device, user):
            return None
        return record

    def push(
        self, user: str, device: str, client: str, mutations: Sequence[Mutation]
    ) -> tuple[list[Any], list[LoggedChange]]:
        """Decide and keep a push (server/tenants.py `Tenants.push`): the results and the
        changes committed. Raises SessionEnded, PushRefused, or LookupError for a
        client id that is another's."""
        moment, at = self.now()
        record = self._claim_client(client, device, user)
        if record is None:
            raise LookupError(f"client {client!r} belongs to another device or user")
        self._check_session(user, device)
        repeats = [m.seq for m in mutations if m.client == client and m.seq <= record.last_seq]
        stored = {s: record.outcomes[s] for s in repeats if s in record.outcomes}
        context = PushContext(
            author=user,
            client=client,
            last_seq=record.last_seq,
            stored={s: outcome_from_document(client, s, d) for s, d in stored.items()},
            stamps=self.stamps,
            floor=self.floor,
            ops=self.ops,
            digest=self.digest,
            now=moment,
            at=at,
        )
        decision = execute_push(self.engine, context, mutations)
        bases = {m.seq: m.base_version for m in mutations if m.client == client}
        for result in decision.new_outcomes:
            record.outcomes[result.seq] = outcome_document(result)
            record.last_seq = max(record.last_seq, result.seq)
            self.decided[client, result.seq] += 1
        for seq, fault in decision.faults:
            self.faults.append((client, seq, fault))
        committed = self._wall_seconds()
        changes = [
            LoggedChange(
                commit.version, commit.edit, commit.before, commit.after, user, device, client,
                commit.mutation.seq, at, digest_text(commit.digest), committed,
                bases[commit.mutation.seq], self.floor,
                tuple(entity_changes(commit.before, commit.after)),
            )
            for commit in decision.commits
        ]  # fmt: skip
        self.stamps.update(decision.stamps)
        self.digest = decision.digest
        for change in changes:
            self.log.append(change)
            self.history.append(change)
            self.digests[change.version] = change.digest
        return decision.results, changes

    def record_decisions(
        self, user: str, device: str, client: str, decisions: Sequence[OfflineDecision]
    ) -> tuple[int, ChainHead]:
        """server/tenants.py `record_decisions`: how many were new, and the head.
        Raises ChainBroken or SessionEnded."""
        self._check_session(user, device)
        record = self.clients.get(client)
        if record is None:
            raise SessionEnded(None, "this client is not registered: say hello first")
        new, head = continue_chain(client, record.chain, decisions)
        record.decisions += new
        record.chain = head
        return len(new), head

    def current_snapshot(self) -> tuple[Snapshot, ...]:
        """The snapshot of the current version, cut once (server/app.py `_current_snapshot`)."""
        if self._snapshot is None or self._snapshot[0] != self.version:
            document = export_policy(self.policy)
            digest = digest_text(self.digest)
            if self.part_bytes is None:
                messages = snapshot_messages(self.version, document, digest)
            else:
                cut = partial(snapshot_parts, part_bytes=self.part_bytes)
                with mock.patch.object(catchup, "snapshot_parts", cut):
                    messages = snapshot_messages(self.version, document, digest)
            self._snapshot = (self.version, messages)
        return self._snapshot[1]

    def changes_after(self, after: int, limit: int, up_to: int | None = None) -> list[LoggedChange]:
        """server/store.py `changes_after`."""
        top = up_to if up_to is not None else 2**62
        return [c for c in self.log if after < c.version <= top][:limit]

    def _fan_out(self, from_version: int, changes: list[LoggedChange]) -> None:
        """The hub: a batch of committed changes to every live session."""
        if not changes:
            return
        for session in list(self.sessions):
            if session.live:
                session.deliver(from_version, changes)

    # --- accounts and tokens ---------------------------------------------------------------

    def issue(
        self, user: str, device: str, family: str | None = None, predecessor: str | None = None
    ) -> tuple[str, str, str]:
        """(access token, its expiry as RFC 3339, refresh token)."""
        number = next(self._tokens)
        access, refresh = f"access-{number}", f"refresh-{number}"
        now = self.mono()
        self._access[access] = _Access(user, device, now + self.access_lifetime)
        self._refresh[refresh] = _Refresh(user, device, family or refresh,
                                          now + self.refresh_lifetime)  # fmt: skip
        if predecessor is not None:
            self._refresh[predecessor].successor = refresh
        seconds, _ = self.wall()
        expires = format_instant((seconds + int(self.access_lifetime), ""))
        return access, expires, refresh

    def refresh_holder(self, token: str) -> str | None:
        """server/store.py `refresh_token_holder`: the user a token was issued to."""
        found = self._refresh.get(token)
        return None if found is None else found.user

    def use_refresh(
        self, token: str, device: str, owner: str | None, hold: bool = False
    ) -> tuple[str, str | None, str | None]:
        """server/store.py `use_refresh_token`: (verdict, user, family)."""
        found = self._refresh.get(token)
        if found is None:
            return "invalid", None, None
        if owner is not None and owner != found.user:
            return "not_yours", None, None
        if found.device != device:
            return "invalid", None, None
        if device in self.revoked:
            return "device_revoked", found.user, found.family
        now = self.mono()
        successor = self._refresh.get(found.successor) if found.successor else None
        retry = (
            found.used_at is not None
            and found.used_at > now - LOST_ANSWER_GRACE
            and successor is not None
            and successor.used_at is None
            and not successor.revoked
        )
        dead = found.revoked or found.expires <= now
        if hold and (retry or not (found.used_at is not None or dead)):
            return "held", found.user, found.family
        if found.used_at is not None and retry:
            assert successor is not None
            successor.revoked, successor.used_at = True, now
            return "granted", found.user, found.family
        if found.used_at is not None:
            for refresh in self._refresh.values():
                if refresh.family == found.family:
                    refresh.revoked = True
            return "replayed", found.user, found.family
        if dead:
            return "invalid", None, None
        found.used_at, found.revoked = now, True
        return "granted", found.user, found.family

    def verify(self, token: str) -> _Access | str:
        """The access token's claims, or why not: `expired`, `invalid`."""
        found = self._access.get(token)
        if found is None:
            return "invalid"
        if found.expires <= self.mono():
            return "expired"
        return found

    # --- sockets ---------------------------------------------------------------------------

    def accept(self, send: Callable[[bytes], None], close: Callable[[int], None]) -> MemorySession:
        """A socket opened: its session writes with `send` and closes with `close`."""
        session = MemorySession(self, send, close)
        self.sessions.append(session)
        return session


class MemorySession:
    """One socket, from the server's side (server/app.py `Session`)."""

    def __init__(
        self, server: MemoryServer, send: Callable[[bytes], None], close: Callable[[int], None]
    ) -> None:
        self.server = server
        self._send = send
        self._close = close
        self.conn = protocol.ServerConnection(server.mono())
        self.user = ""
        self.device = ""
        self.client = ""
        self.cursor = 0
        self.live = False
        self.closed = False

    # --- what the network calls ------------------------------------------------------------

    def receive(self, frame: str) -> None:
        """A frame from the client."""
        if self.closed:
            return
        self.conn.receive(frame, self.server.mono())
        for event in self.conn.events():
            self._handle(event)
        self.flush()

    def deadline(self) -> float | None:
        return None if self.closed else self.conn.deadline()

    def expire(self) -> None:
        if not self.closed:
            self.conn.expire(self.server.mono())
            self.flush()

    def ended(self) -> None:
        """The socket ended from the client's side (a close, or cut)."""
        self._leave()

    def _leave(self) -> None:
        self.closed = True
        self.live = False
        if self in self.server.sessions:
            self.server.sessions.remove(self)

    def flush(self) -> None:
        """Write what the connection has queued; close when it says so."""
        if self.closed:
            self.conn.outgoing()
            return
        for frame in self.conn.outgoing():
            self._send(frame)
        if self.conn.close_code is not None:
            code = self.conn.close_code
            self._leave()
            self._close(code)

    # --- events ----------------------------------------------------------------------------

    def _handle(self, event: protocol.Event) -> None:
        if self.conn.state is State.CLOSED:
            return
        if isinstance(event, protocol.PingReceived):
            self.conn.pong(Pong(event.ref, self.server.now()[1]))
        elif isinstance(event, protocol.SignInRequested):
            self._sign_in(event)
        elif isinstance(event, protocol.RefreshRequested):
            self._refresh(event)
        elif isinstance(event, protocol.HelloReceived):
            self._hello(event)
        elif isinstance(event, protocol.PushReceived):
            self._push(event)
        elif isinstance(event, protocol.SnapshotResumeRequested):
            self._resume_snapshot(event.message.snapshot, event.message.next_chunk)
        elif isinstance(event, protocol.DecisionsReceived):
            self._record_decisions(event)
        elif isinstance(event, protocol.EnrollRequested):
            self.conn.refuse(ErrorCode.UNAUTHENTICATED, GENERIC_SIGN_IN_FAILURE,
                             ref=event.message.ref)  # fmt: skip
        elif isinstance(event, protocol.InviteRequested | protocol.SetPasswordRequested):
            self.conn.refuse(ErrorCode.FORBIDDEN, "not in the simulation", ref=event.message.ref)

    def _standing(self, user: str) -> str | None:
        holder = self.server.policy.users.get(user)
        if holder is None:
            return "absent"
        return "suspended" if holder.suspended else None

    def _sign_in(self, event: protocol.SignInRequested) -> None:
        message = event.message
        server = self.server
        standing = self._standing(message.user)
        if message.tenant != server.tenant or message.password != PASSWORD or standing == "absent":
            self.conn.refuse(ErrorCode.UNAUTHENTICATED, GENERIC_SIGN_IN_FAILURE, ref=message.ref)
            return
        if standing == "suspended":
            self.conn.refuse(ErrorCode.SUSPENDED, f"user {message.user!r} is suspended",
                             ref=message.ref)  # fmt: skip
            return
        if not self._device_usable(message.device, message.user, message.ref):
            return
        self._issue(message.user, message.device, message.ref)

    def _device_usable(self, device: str, user: str, ref: str) -> bool:
        self.server.devices[device] = user
        if device in self.server.revoked:
            self.conn.refuse(ErrorCode.REVOKED, "this device was revoked", ref=ref)
            self.conn.wipe(WipeCode.DEVICE_REVOKED, DEVICE_REVOKED)
            return False
        return True

    def _issue(
        self, user: str, device: str, ref: str, family: str | None = None,
        predecessor: str | None = None,
    ) -> None:  # fmt: skip
        access, expires, refresh = self.server.issue(user, device, family, predecessor)
        self.conn.signed_in(SignedIn(ref, access, expires, refresh, user, self.server.tenant))

    def _refresh(self, event: protocol.RefreshRequested) -> None:
        message = event.message
        owner = self.user or None
        holder = self.server.refresh_holder(message.refresh_token)
        hold = holder is not None and self._standing(holder) == "suspended"
        verdict, user, family = self.server.use_refresh(message.refresh_token, message.device,
                                                        owner, hold)  # fmt: skip
        if verdict == "not_yours":
            self.conn.refuse(ErrorCode.FORBIDDEN, "that refresh token is not this session's",
                             ref=message.ref)  # fmt: skip
            return
        if verdict == "device_revoked":
            self.conn.refuse(ErrorCode.REVOKED, "this device was revoked", ref=message.ref)
            self.conn.wipe(WipeCode.DEVICE_REVOKED, DEVICE_REVOKED)
            return
        if verdict == "held":
            self.conn.refuse(ErrorCode.SUSPENDED, f"user {user!r} is suspended", ref=message.ref)
            return
        if verdict == "replayed" and user is not None and self._standing(user) == "absent":
            # As server/app.py: a replayed token of a removed user still wipes its replica.
            self.conn.refuse(ErrorCode.UNAUTHENTICATED, f"user {user!r} was removed",
                             ref=message.ref)  # fmt: skip
            self.conn.wipe(WipeCode.USER_REMOVED, f"user {user!r} was removed")
            return
        if verdict != "granted":
            self.conn.refuse(
                ErrorCode.UNAUTHENTICATED,
                "the refresh token is not valid (unknown, used, expired or revoked)",
                ref=message.ref,
            )
            return
        assert user is not None
        standing = self._standing(user)
        if standing == "absent":
            self.conn.refuse(ErrorCode.UNAUTHENTICATED, f"user {user!r} was removed",
                             ref=message.ref)  # fmt: skip
            self.conn.wipe(WipeCode.USER_REMOVED, f"user {user!r} was removed")
            return
        self._issue(user, message.device, message.ref, family, message.refresh_token)

    def _hello(self, event: protocol.HelloReceived) -> None:
        message = event.message
        server = self.server
        claims = server.verify(message.access_token)
        if claims == "expired":
            self.conn.refuse(ErrorCode.EXPIRED_TOKEN, "the access token has expired: refresh it",
                             close=CloseCode.UNAUTHENTICATED)  # fmt: skip
            return
        if isinstance(claims, str):
            self.conn.refuse(ErrorCode.UNAUTHENTICATED, "the access token is not valid",
                             close=CloseCode.UNAUTHENTICATED)  # fmt: skip
            return
        if claims.device != message.device:
            self.conn.refuse(ErrorCode.FORBIDDEN, "the access token was issued to another device",
                             close=CloseCode.FORBIDDEN)  # fmt: skip
            return
        standing = self._standing(claims.user)
        if standing == "absent":
            self.conn.wipe(WipeCode.USER_REMOVED, f"user {claims.user!r} was removed")
            return
        if standing == "suspended":
            self.conn.suspended(f"user {claims.user!r} is suspended")
            return
        server.devices[claims.device] = claims.user
        if claims.device in server.revoked:
            self.conn.wipe(WipeCode.DEVICE_REVOKED, DEVICE_REVOKED)
            return
        record = server._claim_client(message.client, claims.device, claims.user)
        if record is None:
            self.conn.refuse(ErrorCode.FORBIDDEN,
                             f"client {message.client!r} belongs to another device or user",
                             close=CloseCode.FORBIDDEN)  # fmt: skip
            return
        self.user, self.device, self.client = claims.user, claims.device, message.client
        version = server.version
        cursor = message.cursor
        catch_up = catch_up_by(cursor, version, server.horizon)
        resume = message.resume
        resumable = None
        if resume is not None and is_snapshot_id(resume.snapshot):
            current = server.current_snapshot()
            if current[0].snapshot == resume.snapshot and resume.next_chunk < len(current):
                resumable, catch_up = current, CatchUp.SNAPSHOT
        self.conn.welcome(
            Welcome(
                server.tenant, self.user, version, catch_up, server.now()[1], record.last_seq,
                server.lease_seconds, server.stale_decisions, tuple(sorted(server.ops)),
                record.chain.seq,
            )
        )  # fmt: skip
        self.flush()
        if resumable is not None and resume is not None:
            self._send_parts(resumable, resume.next_chunk)
            cursor = resumable[0].version
        elif catch_up is CatchUp.SNAPSHOT:
            snapshot = server.current_snapshot()
            self._send_parts(snapshot, 0)
            cursor = snapshot[0].version
        self.cursor = cursor
        if self._catch_up(final=True):
            self.live = self.conn.state is State.LIVE

    def _send_parts(self, snapshot: tuple[Snapshot, ...], start: int) -> None:
        for message in snapshot[start:]:
            if self.conn.state is State.CLOSED:
                return
            self.conn.snapshot(message)
            self.flush()

    def _catch_up(self, *, final: bool, up_to: int | None = None) -> bool:
        """server/app.py `_catch_up`: False when the client must resync (or was ended)."""
        server = self.server
        while self.conn.state is not State.CLOSED:
            rows = server.changes_after(self.cursor, server.page, up_to)
            if any(row.edit.get("op") == REPLACE_POLICY for row in rows):
                self._resync("the policy was replaced by an import; catch up again")
                return False
            if not rows and not final:
                return True
            pages = change_pages([row.message() for row in rows]) or [()]
            changes = pages[0]
            more = len(pages) > 1 or len(rows) == server.page
            start = self.cursor
            digest = None
            if changes:
                self.cursor = changes[-1].version
                digest = rows[len(changes) - 1].digest
            self.conn.changes(Changes(start, self.cursor, changes, more or not final, digest))
            self.flush()
            if self._ended_by(changes):
                return False
            if not more:
                return True
        return False

    def _ended_by(self, changes: Sequence[Change]) -> bool:
        end = session_end(self.user, changes)
        if end is SessionEnd.USER_REMOVED:
            self.conn.wipe(WipeCode.USER_REMOVED, f"user {self.user!r} was removed")
        elif end is SessionEnd.SUSPENDED:
            self.conn.suspended(f"user {self.user!r} was suspended")
        else:
            return False
        self.flush()
        return True

    def _resync(self, reason: str) -> None:
        if self.conn.state in (State.SYNCING, State.LIVE):
            self.conn.resync(reason)
            self.flush()

    def deliver(self, from_version: int, batch: list[LoggedChange]) -> None:
        """server/app.py `_pump`, for one batch."""
        if self.closed or self.conn.state is State.CLOSED:
            return
        changes = tuple(c.message() for c in batch)
        to_version = changes[-1].version
        plan = delivery(self.cursor, from_version, to_version)
        if plan is Delivery.SKIP:
            return
        if plan is Delivery.FILL_GAP:
            if not self._catch_up(final=False, up_to=from_version):
                return
            plan = delivery(self.cursor, from_version, to_version)
        if any(c.edit.get("op") == REPLACE_POLICY for c in changes):
            self._resync("the policy was replaced by an import; catch up again")
            return
        digest = batch[-1].digest
        if plan is Delivery.WHOLE:
            sent = changes
            self.conn.changes(Changes(from_version, to_version, changes, False, digest))
        else:
            sent = tuple(c for c in changes if c.version > self.cursor)
            self.conn.changes(Changes(self.cursor, sent[-1].version, sent, False, digest))
        self.cursor = to_version
        self.flush()
        self._ended_by(sent)

    def _end(self, ended: SessionEnded) -> None:
        if ended.wipe is not None:
            self.conn.wipe(ended.wipe, ended.reason)
        else:
            self.conn.suspended(ended.reason)

    def _push(self, event: protocol.PushReceived) -> None:
        server = self.server
        start = server.version
        try:
            results, changes = server.push(self.user, self.device, self.client, event.mutations)
        except LookupError as error:
            self.conn.refuse(ErrorCode.FORBIDDEN, str(error), ref=event.ref)
            return
        except PushRefused as refused:
            self.conn.refuse(refused.code, refused.message, ref=event.ref,
                             expected_seq=refused.expected_seq)  # fmt: skip
            return
        except SessionEnded as ended:
            self._end(ended)
            return
        self.conn.push_result(push_results(event.ref, results))
        self.flush()
        server._fan_out(start, changes)

    def _resume_snapshot(self, snapshot_id: str, next_chunk: int) -> None:
        current = self.server.current_snapshot()
        if current[0].snapshot != snapshot_id or next_chunk >= len(current):
            self.conn.refuse(
                ErrorCode.NOT_FOUND,
                "no such snapshot chunk here (the tenant may have moved on): send hello again",
            )
            return
        self._send_parts(current, next_chunk)

    def _record_decisions(self, event: protocol.DecisionsReceived) -> None:
        message = event.message
        try:
            count, head = self.server.record_decisions(
                self.user, self.device, self.client, message.decisions
            )
        except ChainBroken as broken:
            self.conn.refuse(ErrorCode.CHAIN_BROKEN, str(broken), ref=message.ref)
            return
        except SessionEnded as ended:
            self._end(ended)
            return
        self.conn.decisions_recorded(DecisionsRecorded(message.ref, count, head.seq, head.hash))
