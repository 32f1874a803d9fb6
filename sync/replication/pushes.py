"""Deciding a pushed batch of mutations: exactly one outcome each.

This is the server's judgement of a `push` (PROTOCOL.md), kept pure so it can
be tested without a database and so the merge rules of the sync issue land
here. The server calls `execute_push` with the tenant's engine at its current
version, under the tenant's lock, then stores what it returns in one
transaction, or calls `Engine.revert` when that transaction fails.

Rules of this module, per mutation, in order:

1. A mutation of another client than the session's is rejected
   (`wrong_client`) and not recorded: its seq belongs to someone else.
2. A seq at or below the client's last one is a repeat: it gets its stored
   outcome again and nothing is applied (`stale` if none is stored).
3. The edit document must be a known edit (`invalid`).
4. `base_version` cannot be ahead of the server (`invalid`).
5. The author must hold the permission the edit needs, decided by the
   tenant's own policy as it is now (`forbidden`; sync/policy/authority.py).
6. The edit is applied; a refusal (not found, cycle, constraint...) rejects it
   with its code, and so does leaving an entity over `MAX_ENTITY_BYTES`
   (`invalid`: every entity must fit a message). An edit that changes nothing
   is `applied` at the current version.
7. Conflict, until the merge rules of the sync issue: if an entity the edit
   changed was changed by *another* client after `base_version`, or the
   policy was replaced (import) or its history compacted after it, the edit is
   taken back and the outcome is `conflict`, naming that version.
8. Otherwise it is `applied` with the next version.

Every outcome except 1 and 2 is new and must be stored, so a repeat of the
mutation returns it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sync.policy.authority import authorize
from sync.policy.edits import EditRefused, Touched, Undo, edit_from_document
from sync.policy.engine import Engine
from sync.policy.instant import Instant
from sync.protocol.messages import Mutation, Outcome, Result
from sync.replication.entities import MAX_ENTITY_BYTES, Entity, changed_entities, oversized


@dataclass(frozen=True, slots=True)
class PushContext:
    """What the server knows beside the engine when it decides a push."""

    author: str
    client: str
    last_seq: int
    """The client's last recorded seq."""
    stored: Mapping[int, Result]
    """Stored outcomes of this client's seqs that appear in the batch."""
    horizon: int
    """The policy was last replaced (imported), or its history compacted, at this
    version: what came before is unknown, so an edit made before it conflicts."""
    last_touch: Mapping[str, tuple[int, str]]
    """Entity key -> (version, client) of the last change to it."""
    now: Instant
    at: str
    """`now` as RFC 3339 text: the time recorded with each change."""


@dataclass(frozen=True, slots=True)
class Commit:
    """One mutation that changed the policy and must be stored as a change."""

    mutation: Mutation
    version: int
    edit: dict[str, Any]
    before: list[Entity]
    after: list[Entity]


@dataclass(slots=True)
class PushDecision:
    results: list[Result] = field(default_factory=list)
    """One outcome per mutation, in order."""
    commits: list[Commit] = field(default_factory=list)
    new_outcomes: list[Result] = field(default_factory=list)
    """Outcomes to record (first-time ones), in order."""
    undo: Undo | None = None
    touched: Touched = field(default_factory=Touched)
    start_version: int = 0


def outcome_document(result: Result) -> dict[str, Any]:
    """A result as stored: the wire fields without client and seq."""
    document: dict[str, Any] = {"outcome": result.outcome.value}
    for name in ("version", "code", "reason"):
        value = getattr(result, name)
        if value is not None:
            document[name] = value
    return document


def outcome_from_document(client: str, seq: int, document: Mapping[str, Any]) -> Result:
    """The result a stored outcome document stands for, for `client` and `seq`."""
    return Result(
        client,
        seq,
        Outcome(document["outcome"]),
        document.get("version"),
        document.get("code"),
        document.get("reason"),
    )


MAX_REASON = 1024
"""Characters of a reason: 500 results of a push stay well under a message's limit
however much of a hostile edit a reason quotes."""


def _cap(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 1] + "…"


def _rejected(mutation: Mutation, code: str, reason: str) -> Result:
    return Result(mutation.client, mutation.seq, Outcome.REJECTED, code=code, reason=_cap(reason))


def execute_push(
    engine: Engine, context: PushContext, mutations: Sequence[Mutation]
) -> PushDecision:
    """Decide and apply `mutations` on `engine` (see the module's rules).

    The engine is left with every applied edit in it and `engine.version` at
    the last new version; the decision's `undo`, `touched` and
    `start_version` take it back (`Engine.revert`) if storing fails.
    """
    decision = PushDecision(undo=Undo(engine.policy), start_version=engine.version or 0)
    assert decision.undo is not None
    version = decision.start_version
    last_seq = context.last_seq
    stored = dict(context.stored)
    touches = dict(context.last_touch)
    for mutation in mutations:
        if mutation.client != context.client:
            decision.results.append(
                _rejected(mutation, "wrong_client", "this mutation belongs to another client")
            )
            continue
        if mutation.seq <= last_seq:
            earlier = stored.get(mutation.seq)
            decision.results.append(
                earlier
                if earlier is not None
                else _rejected(mutation, "stale", f"seq {mutation.seq} was used before")
            )
            continue
        last_seq = mutation.seq
        result, commit = _decide_one(engine, context, mutation, version, touches, decision)
        if commit is not None:
            version = commit.version
            decision.commits.append(commit)
            for entity in commit.after:
                touches[entity.key] = (version, mutation.client)
        stored[mutation.seq] = result
        decision.results.append(result)
        decision.new_outcomes.append(result)
    return decision


def _decide_one(
    engine: Engine,
    context: PushContext,
    mutation: Mutation,
    version: int,
    touches: Mapping[str, tuple[int, str]],
    decision: PushDecision,
) -> tuple[Result, Commit | None]:
    try:
        edit = edit_from_document(mutation.edit, engine.policy)
    except EditRefused as refusal:
        return _rejected(mutation, refusal.code.value, refusal.reason), None
    if mutation.base_version > version:
        reason = f"base_version {mutation.base_version} is ahead of the tenant's {version}"
        return _rejected(mutation, "invalid", reason), None
    denied = authorize(engine, edit, context.author, context.now)
    if denied is not None:
        reason = (
            f"{context.author} may not {edit.op} (needs {denied.permission}): "
            f"{denied.decision.reason}"
        )
        return _rejected(mutation, "forbidden", reason), None
    mine = Undo(engine.policy)
    try:
        touched = engine.apply(edit, context.now, version=version + 1, undo=mine)
    except EditRefused as refusal:
        return _rejected(mutation, refusal.code.value, refusal.reason), None
    except Exception as error:  # noqa: BLE001 - a bug in one edit must not block the queue
        # apply_edit put the policy back; the indexes are rebuilt in case
        # the failure was in updating them.
        mine.revert()
        engine.refresh(resource_types=True, version=version)
        return _rejected(mutation, "internal", f"the server failed on this edit: {error}"), None
    before, after = changed_entities(mine)
    too_big = oversized(after)
    if too_big is not None:
        engine.revert(mine, touched, version)
        reason = (
            f"{too_big.kind} {too_big.id!r} would take more than "
            f"{MAX_ENTITY_BYTES // 1024} KiB; split it"
        )
        return _rejected(mutation, "invalid", reason), None
    if not after:
        engine.version = version
        applied = Result(mutation.client, mutation.seq, Outcome.APPLIED, version)
        return applied, None
    conflict = _conflict(context, mutation, after, touches)
    if conflict is not None:
        engine.revert(mine, touched, version)
        if mutation.base_version < context.horizon:
            reason = (
                f"made against version {mutation.base_version}, before the policy was "
                f"replaced or its history compacted at version {context.horizon}"
            )
        else:
            reason = (
                f"changed at version {conflict} by someone else since version "
                f"{mutation.base_version}, which this edit was made against"
            )
        result = Result(
            mutation.client, mutation.seq, Outcome.CONFLICT, conflict, "stale_base", _cap(reason)
        )
        return result, None
    assert decision.undo is not None
    decision.undo.absorb(mine)
    decision.touched = decision.touched | touched
    commit = Commit(mutation, version + 1, edit.to_document(), before, after)
    return Result(mutation.client, mutation.seq, Outcome.APPLIED, version + 1), commit


def _conflict(
    context: PushContext,
    mutation: Mutation,
    after: Sequence[Entity],
    touches: Mapping[str, tuple[int, str]],
) -> int | None:
    if mutation.base_version < context.horizon:
        return context.horizon
    newest: int | None = None
    for entity in after:
        touch = touches.get(entity.key)
        if touch is not None and touch[0] > mutation.base_version and touch[1] != mutation.client:
            newest = max(newest or 0, touch[0])
    return newest
