"""Deciding a pushed batch of mutations: exactly one outcome each, merged per member.

This is the server's judgement of a `push` (PROTOCOL.md § How the server
decides a push), kept pure so it can be tested without a database. The server
calls `execute_push` with the tenant's engine at its current version, under
the tenant's lock, then stores what it returns in one transaction, or calls
`Engine.revert` with the decision's undo when that transaction fails.

Rules of this module, per push:

- Seqs (`check_push`): a client's seqs start at 1; within a push the new seqs
  must run last seq + 1, + 2, … without a gap (repeats at or below the last
  one may come anywhere). Otherwise the whole push is refused (`seq_gap`,
  naming the expected seq) and nothing is decided or recorded. No mutation is
  ever answered `stale`.
- An op this server does not accept (`PushContext.ops`, sent in `welcome`)
  refuses the whole push too (`unsupported_op`): a rolling upgrade must not
  turn a newer client's edit into a rejection it would roll back.

Rules per mutation, in order (another client: not the mutation's own):

1. Another client's mutation is rejected (`wrong_client`) and not recorded.
2. A repeated seq gets its stored outcome again; nothing is applied.
3. The edit must fit its op's schema (`invalid`, naming the field) and its
   `base_version` cannot be ahead of the tenant (`invalid`).
4. An edit naming a role or user that another client deleted or (re-)created
   after `base_version` is `rejected superseded`: deletes win, and ids may be
   reused, so it may not mean what the client meant.
5. The author must hold the permissions the edit needs and everything it
   would confer (`forbidden`, sync/policy/authority.py), and the edit must
   apply (its refusal code) and leave every entity within `MAX_ENTITY_BYTES`.
6. Its effect is read as member changes (sync/replication/members.py):
   a narrowing change always applies; a widening change to a member another
   client narrowed after `base_version` is `rejected superseded`; a scalar
   another client changed after `base_version` keeps the server's value
   (`conflict`, with both values). An edit whose `base_version` is below the
   merge floor (stamps older than it may be pruned) is judged as if every
   member it touches had been changed and narrowed by another client at the
   floor.
7. The strongest verdict decides (rejected > conflict > merged > applied);
   nothing of the edit applies unless it is `applied`, or `merged` when
   another client changed one of the same entities after `base_version`. An
   edit that changes nothing is applied (or merged) at the current version.
8. Anything that fails unexpectedly while deciding one mutation is taken
   back and answered `rejected internal` (no exception text), and recorded in
   `PushDecision.faults` for the server's log: no fault blocks the queue or
   leaves the engine different from the database.

Every outcome except 1 and 2 is new and must be stored, so a repeat of the
mutation returns it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sync.policy.authority import authorize
from sync.policy.edits import Edit, EditRefused, Touched, Undo, edit_from_document
from sync.policy.engine import Engine
from sync.policy.instant import Instant
from sync.policy.wording import cap_bytes, quoted
from sync.protocol.errors import ErrorCode
from sync.protocol.messages import Conflict, Mutation, Outcome, Result, ResultCode
from sync.replication.digest import updated
from sync.replication.entities import MAX_ENTITY_BYTES, Entity, changed_entities, oversized
from sync.replication.members import (
    ABSENT,
    TOUCHED,
    ChangeKind,
    Member,
    MemberChange,
    Stamp,
    entity_changes,
    member_label,
    stamp_changes,
)

MAX_REASON_BYTES = 1024
"""UTF-8 bytes of an outcome's reason."""


@dataclass(frozen=True, slots=True)
class PushContext:
    """What the server knows beside the engine when it decides a push."""

    author: str
    client: str
    last_seq: int
    """The client's last recorded seq (0 for a new client)."""
    stored: Mapping[int, Result]
    """Stored outcomes of this client's seqs that appear in the batch."""
    stamps: Mapping[Member, Stamp]
    floor: int
    """The merge floor: stamps of changes before it may have been pruned."""
    ops: frozenset[str]
    """The ops this server accepts."""
    digest: int
    """The policy's digest at the engine's version (sync/replication/digest.py)."""
    now: Instant
    at: str
    """`now` as RFC 3339 text: the time recorded with each change."""


class PushRefused(Exception):
    """The whole push is refused; nothing was decided or recorded."""

    def __init__(self, code: ErrorCode, message: str, expected_seq: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.expected_seq = expected_seq


@dataclass(frozen=True, slots=True)
class Commit:
    """One mutation that changed the policy and must be stored as a change."""

    mutation: Mutation
    version: int
    edit: dict[str, Any]
    before: list[Entity]
    after: list[Entity]
    digest: int
    """The policy's digest after this change."""


@dataclass(slots=True)
class PushDecision:
    results: list[Result] = field(default_factory=list)
    """One outcome per mutation, in order."""
    commits: list[Commit] = field(default_factory=list)
    new_outcomes: list[Result] = field(default_factory=list)
    """Outcomes to record (first-time ones), in order."""
    stamps: dict[Member, Stamp] = field(default_factory=dict)
    """Stamps the commits wrote, to store (and to keep once stored)."""
    undo: Undo | None = None
    touched: Touched = field(default_factory=Touched)
    start_version: int = 0
    digest: int = 0
    """The digest after the last commit."""
    faults: list[tuple[int, str]] = field(default_factory=list)
    """(seq, what failed) of mutations answered `internal`: for the server's log."""


def outcome_document(result: Result) -> dict[str, Any]:
    """A result as stored: the wire fields without client and seq."""
    document: dict[str, Any] = {"outcome": result.outcome.value}
    for name in ("version", "code", "reason"):
        value = getattr(result, name)
        if value is not None:
            document[name] = value
    if result.conflict is not None:
        conflict = result.conflict
        document["conflict"] = {"member": conflict.member, "server": conflict.server,
                                "client": conflict.client}  # fmt: skip
    return document


def outcome_from_document(client: str, seq: int, document: Mapping[str, Any]) -> Result:
    """The result a stored outcome document stands for, for `client` and `seq`."""
    found = document.get("conflict")
    conflict = None
    if found is not None:
        conflict = Conflict(found["member"], found.get("server"), found.get("client"))
    return Result(
        client,
        seq,
        Outcome(document["outcome"]),
        document.get("version"),
        document.get("code"),
        document.get("reason"),
        conflict,
    )


def _rejected(mutation: Mutation, code: ResultCode | str, reason: str,
              version: int | None = None) -> Result:  # fmt: skip
    return Result(
        mutation.client, mutation.seq, Outcome.REJECTED, version, str(code),
        cap_bytes(reason, MAX_REASON_BYTES),
    )  # fmt: skip


_OP_NAME = re.compile("[a-z][a-z_]{0,63}")


def check_push(context: PushContext, mutations: Sequence[Mutation]) -> None:
    """Raise PushRefused unless the push can be decided (the module's push rules)."""
    running = context.last_seq
    for mutation in mutations:
        if mutation.client != context.client:
            continue
        if mutation.seq <= running:
            if mutation.seq <= context.last_seq and mutation.seq not in context.stored:
                raise PushRefused(
                    ErrorCode.INTERNAL,
                    f"the server has no outcome stored for seq {mutation.seq}; nothing was "
                    "recorded (report this: the client's queue must not be dropped)",
                )
            continue
        if mutation.seq != running + 1:
            raise PushRefused(
                ErrorCode.SEQ_GAP,
                f"seq {mutation.seq} was pushed where seq {running + 1} was expected next "
                f"(the last recorded seq is {context.last_seq}); nothing was recorded: push "
                f"again from seq {context.last_seq + 1}",
                expected_seq=context.last_seq + 1,
            )
        running = mutation.seq
        op = mutation.edit.get("op") if isinstance(mutation.edit, dict) else None
        if isinstance(op, str) and _OP_NAME.fullmatch(op) and op not in context.ops:
            raise PushRefused(
                ErrorCode.UNSUPPORTED_OP,
                f"seq {mutation.seq}: this server does not accept op {quoted(op)} yet; "
                "nothing was recorded: keep it and push it again after reconnecting",
                expected_seq=context.last_seq + 1,
            )


def execute_push(
    engine: Engine, context: PushContext, mutations: Sequence[Mutation]
) -> PushDecision:
    """Decide and apply `mutations` on `engine` (see the module's rules).

    The engine is left with every applied edit in it and `engine.version` at
    the last new version; the decision's `undo`, `touched` and
    `start_version` take it back (`Engine.revert`) if storing fails. Raises
    PushRefused (nothing decided) for a push that breaks the push rules.
    """
    check_push(context, mutations)
    decision = PushDecision(
        undo=Undo(engine.policy), start_version=engine.version or 0, digest=context.digest
    )
    try:
        _decide_all(engine, context, mutations, decision)
    except BaseException:
        assert decision.undo is not None
        engine.revert(decision.undo, decision.touched, decision.start_version)
        raise
    return decision


def _decide_all(
    engine: Engine, context: PushContext, mutations: Sequence[Mutation], decision: PushDecision
) -> None:
    version = decision.start_version
    stored = dict(context.stored)
    stamps = _Overlay(context.stamps, decision.stamps)
    for mutation in mutations:
        if mutation.client != context.client:
            reason = "this mutation belongs to another client"
            decision.results.append(_rejected(mutation, ResultCode.WRONG_CLIENT, reason))
            continue
        earlier = stored.get(mutation.seq)
        if earlier is not None:
            decision.results.append(earlier)
            continue
        judge = _Judge(engine, context, mutation, version, stamps, decision)
        result = judge.run()
        version = max(version, engine.version or 0)
        stored[mutation.seq] = result
        decision.results.append(result)
        decision.new_outcomes.append(result)


class _Overlay:
    """The stored stamps with those this push wrote on top (the server's copy is
    not touched until the push is stored)."""

    def __init__(self, base: Mapping[Member, Stamp], written: dict[Member, Stamp]) -> None:
        self.base = base
        self.written = written

    def get(self, member: Member) -> Stamp | None:
        stamp = self.written.get(member)
        return stamp if stamp is not None else self.base.get(member)


class _Verdict(Exception):
    """One mutation's outcome was found before it was applied for good."""

    def __init__(self, result: Result) -> None:
        self.result = result


class _Judge:
    """Decides one mutation (the module's rules 3 to 8)."""

    def __init__(
        self,
        engine: Engine,
        context: PushContext,
        mutation: Mutation,
        version: int,
        stamps: _Overlay,
        decision: PushDecision,
    ) -> None:
        self.engine = engine
        self.context = context
        self.mutation = mutation
        self.version = version
        self.stamps = stamps
        self.decision = decision
        self.below_floor = mutation.base_version < context.floor

    def run(self) -> Result:
        mine = Undo(self.engine.policy)
        try:
            return self._decide(mine)
        except _Verdict as verdict:
            return verdict.result
        except Exception as error:  # noqa: BLE001 - rule 8: one fault must not block the queue
            self._take_back(mine)
            self.decision.faults.append((self.mutation.seq, f"{type(error).__name__}: {error}"))
            reason = (
                "the server could not decide this edit (a fault on the server's side, "
                "recorded for its operators); it was not applied"
            )
            return _rejected(self.mutation, ResultCode.INTERNAL, reason)

    def _take_back(self, mine: Undo) -> None:
        """Put the engine back as it was before this mutation, whatever failed."""
        try:
            self.engine.revert(mine, mine.touched(), self.version)
        except Exception:  # noqa: BLE001 - the indexes may be half-built: rebuild them all
            self.engine.refresh(resource_types=True, version=self.version)

    def _reject(self, code: ResultCode | str, reason: str, version: int | None = None) -> None:
        raise _Verdict(_rejected(self.mutation, code, reason, version))

    def _decide(self, mine: Undo) -> Result:
        mutation, context, engine = self.mutation, self.context, self.engine
        try:
            edit = edit_from_document(mutation.edit, engine.policy)
        except EditRefused as refusal:
            self._reject(refusal.code.value, refusal.reason)
        if mutation.base_version > self.version:
            reason = f"base_version {mutation.base_version} is ahead of the tenant's {self.version}"
            self._reject(ResultCode.INVALID, reason)
        self._check_names(edit)
        denied = authorize(engine, edit, context.author, context.now)
        if denied is not None:
            needs = f"needs {denied.permission}"
            reason = f"{context.author} may not {edit.op} ({needs}): {denied.reason}"
            self._reject(ResultCode.FORBIDDEN, reason)
        try:
            touched = engine.apply(edit, context.now, version=self.version + 1, undo=mine)
        except EditRefused as refusal:
            engine.version = self.version
            self._reject(refusal.code.value, refusal.reason)
        before, after = changed_entities(mine)
        too_big = oversized(after)
        if too_big is not None:
            engine.revert(mine, touched, self.version)
            self._reject(
                ResultCode.INVALID,
                f"{too_big.kind} {quoted(too_big.id)} would take more than "
                f"{MAX_ENTITY_BYTES // 1024} KiB; split it",
            )
        changes = entity_changes(before, after)
        self._judge_members(changes, mine, touched)
        merged = self._merged(after) if after or changes else self._merged_names(edit)
        outcome = Outcome.MERGED if merged else Outcome.APPLIED
        if not after:
            engine.version = self.version
            return Result(mutation.client, mutation.seq, outcome, self.version)
        return self._commit(edit, mine, touched, before, after, changes, outcome)

    def _superseded(self, stamp: Stamp | None, narrowing_only: bool) -> int | None:
        """The version of another client's change (or narrowing) after the base, if any."""
        mutation = self.mutation
        if self.below_floor:
            return self.context.floor
        if stamp is None:
            return None
        if narrowing_only:
            return stamp.narrowed_since(mutation.base_version, mutation.client)
        return stamp.changed_since(mutation.base_version, mutation.client)

    def _check_names(self, edit: Edit) -> None:
        """Rule 4: what the edit names was deleted or re-created by someone else."""
        if self.below_floor:
            return  # judged by its member changes (rule 6): narrowing still applies
        for kind, entity_id in edit.names():
            version = self._superseded(self.stamps.get((kind, entity_id)), narrowing_only=False)
            if version is not None:
                self._reject(
                    ResultCode.SUPERSEDED,
                    f"{kind} {quoted(entity_id)} was deleted or created by someone else at "
                    f"version {version}, after version {self.mutation.base_version} that this "
                    "edit was made against",
                    version,
                )

    def _judge_members(self, changes: list[MemberChange], mine: Undo, touched: Touched) -> None:
        conflict: tuple[MemberChange, int] | None = None
        for change in changes:
            if change.kind is ChangeKind.NARROWING:
                continue
            stamp = self.stamps.get(change.member)
            if change.kind is ChangeKind.WIDENING:
                version = self._superseded(stamp, narrowing_only=True)
                if version is not None:
                    self.engine.revert(mine, touched, self.version)
                    self._reject(
                        ResultCode.SUPERSEDED,
                        f"{member_label(change.member)} was narrowed by someone else at version "
                        f"{version}, after version {self.mutation.base_version} that this edit "
                        "was made against; a stale edit may not widen it again",
                        version,
                    )
            elif conflict is None:
                version = self._superseded(stamp, narrowing_only=False)
                if version is not None:
                    conflict = (change, version)
        if conflict is not None:
            change, version = conflict
            self.engine.revert(mine, touched, self.version)
            label = member_label(change.member)
            server = None if change.old is ABSENT else change.old
            client = None if change.new is ABSENT else change.new
            reason = (
                f"{label} was changed by someone else at version {version}, after version "
                f"{self.mutation.base_version} that this edit was made against; the server "
                "keeps its value"
            )
            raise _Verdict(
                Result(
                    self.mutation.client, self.mutation.seq, Outcome.CONFLICT, version,
                    ResultCode.CONCURRENT_CHANGE.value, cap_bytes(reason, MAX_REASON_BYTES),
                    Conflict(label, server, client),
                )
            )  # fmt: skip

    def _merged(self, entities: Sequence[Entity]) -> bool:
        """Rule 7: another client changed one of these entities after the base."""
        return any(
            self._superseded(self.stamps.get((e.kind, e.id, TOUCHED)), narrowing_only=False)
            is not None
            for e in entities
        )

    def _merged_names(self, edit: Edit) -> bool:
        if self.below_floor:
            return True
        return any(
            self._superseded(self.stamps.get((kind, i, TOUCHED)), narrowing_only=False) is not None
            for kind, i in edit.names()
        )

    def _commit(
        self,
        edit: Edit,
        mine: Undo,
        touched: Touched,
        before: list[Entity],
        after: list[Entity],
        changes: list[MemberChange],
        outcome: Outcome,
    ) -> Result:
        decision, version = self.decision, self.version + 1
        digest = updated(decision.digest, before, after)
        written = stamp_changes(self.stamps.get, changes, after, version, self.mutation.client)
        commit = Commit(self.mutation, version, edit.to_document(), before, after, digest)
        # Nothing below can fail: the mutation is in the decision whole, or not at all.
        decision.digest = digest
        decision.stamps.update(written)
        assert decision.undo is not None
        decision.undo.absorb(mine)
        decision.touched = decision.touched | touched
        decision.commits.append(commit)
        return Result(self.mutation.client, self.mutation.seq, outcome, version)
