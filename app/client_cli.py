"""The client's commands: `fleetgate sync`, `check --replica-dir`, `edit`, `outbox`, `activate`.

Each works on one replica: `--replica-dir DIR` (default: the platform's user
data directory), `--tenant T` and `--as OWNER` (the user whose replica it
is; `sync` says `--user`). The replica's key comes from the OS keyring or,
where none works, from a passphrase (`FLEETGATE_PASSPHRASE`, else a prompt).
Modules are imported when a command runs, so `check --policy` does not pay
for websockets and SQLCipher.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from pathlib import Path
from typing import Any

from app.errors import BadInput, Failed


def _replica_options(parser: argparse.ArgumentParser, *, owner: str = "--as") -> None:
    parser.add_argument(
        "--replica-dir",
        type=Path,
        help="where replicas are kept (default: the user data directory)",
    )
    parser.add_argument("--tenant", required=owner == "--as", help="the tenant's name")
    if owner == "--as":
        parser.add_argument("--as", dest="owner", required=True, help="whose replica: a user id")


def _directory(args: argparse.Namespace) -> Path:
    from app.replica_file import default_replica_dir

    return args.replica_dir if args.replica_dir is not None else default_replica_dir()


def open_replica(args: argparse.Namespace, user: str, *, create: bool = False) -> Any:
    """The replica of `user` in `args.tenant`; ReplicaError becomes BadInput.

    A damaged replica is named; `sync` (`create`) rebuilds it, keeping its outbox.
    """
    from app.replica import Replica
    from app.replica_file import ReplicaDamaged, ReplicaError, passphrase_from_environment

    try:
        return Replica.open(
            _directory(args),
            args.tenant,
            user,
            create=create,
            passphrase=passphrase_from_environment(),
            wait=10.0,
        )
    except ReplicaDamaged as damaged:
        if create:
            return rebuild_replica(args, user, damaged)
        raise BadInput(
            f"{damaged}; `fleetgate sync` rebuilds it from the server, keeping its outbox"
        ) from None
    except ReplicaError as error:
        raise BadInput(str(error)) from None


def rebuild_replica(args: argparse.Namespace, user: str, damaged: Exception) -> Any:
    """Rebuild a damaged replica (`Replica.rebuild`), saying so."""
    from app.replica import Replica
    from app.replica_file import ReplicaError, passphrase_from_environment

    try:
        replica, kept = Replica.rebuild(
            _directory(args), args.tenant, user, passphrase=passphrase_from_environment()
        )
    except ReplicaError as error:
        raise BadInput(f"{damaged}; it could not be rebuilt: {error}") from None
    print(
        f"fleetgate sync: {damaged}; it was moved aside, {kept} unsynced edit"
        f"{'s' if kept != 1 else ''} kept, and the policy comes back from the server now",
        file=sys.stderr,
    )
    return replica


def _mode_line(replica: Any) -> str:
    from app.replica_file import KeyMode

    if replica.file.mode is KeyMode.KEYRING:
        return "replica key: in the OS keyring"
    return "replica key: derived from a passphrase (no usable OS keyring)"


# --- check --replica-dir ----------------------------------------------------------------------


def cmd_check_replica(args: argparse.Namespace, single: Any) -> int:
    """`check --replica-dir`: decide offline from OWNER's replica. `single` builds the
    request of `--user/--action/--resource` (app/cli.py's)."""
    from app import offline
    from app.batch import MalformedLine, WorkerDied
    from app.replica_file import ReplicaError
    from sync.policy.request import MalformedRequest

    if args.tenant is None or args.owner is None:
        raise BadInput("--replica-dir needs --tenant and --as OWNER")
    replica = open_replica(args, args.owner)
    try:
        if not replica.has_policy():
            raise BadInput(
                f"the replica of {args.owner} in {args.tenant} holds no policy yet: "
                "run `fleetgate sync` first"
            )
        out = sys.stdout.buffer
        log = not args.no_log
        if args.requests is not None:
            if args.user or args.action or args.resource:
                raise BadInput("give either --requests or --user/--action/--resource, not both")
            try:
                source = sys.stdin.buffer if args.requests == "-" else open(args.requests, "rb")  # noqa: SIM115
            except OSError as error:
                raise BadInput(f"cannot read {args.requests}: {error.strerror}") from None
            try:
                count = offline.decide_lines(replica, source, out, log=log)
            except MalformedLine as error:
                raise BadInput(str(error)) from None
            except WorkerDied as error:
                # The decisions written before stand, and are logged (app/offline.py).
                raise Failed(str(error)) from None
            finally:
                if source is not sys.stdin.buffer:
                    source.close()
            _lease_note(replica, log, count)
            return 0
        missing = [f"--{n}" for n in ("user", "action", "resource") if not getattr(args, n)]
        if missing:
            raise BadInput(f"missing {', '.join(missing)}")
        request = single(args)
        document = _request_document(request)
        try:
            line = offline.decide_one(replica, request, document, log=log)
        except MalformedRequest as error:
            raise BadInput(f"malformed request: {error}") from None
        out.write(line + b"\n")
        out.flush()
        _lease_note(replica, log, 1)
        return 0
    except ReplicaError as error:
        raise BadInput(str(error)) from None
    finally:
        replica.close()


def _request_document(request: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "user": request.user,
        "action": request.action,
        "resource": {"type": request.resource_type},
    }
    if request.resource_id is not None:
        document["resource"]["id"] = request.resource_id
    if request.resource_attrs:
        document["resource"]["attributes"] = dict(request.resource_attrs)
    if request.context:
        document["context"] = dict(request.context)
    return document


def _lease_note(replica: Any, logged: bool, count: int) -> None:
    from app.clock import wall_now

    meta = replica.meta()
    lease = meta.lease.describe(wall_now())
    log = (
        f"{count:,} decision{'s' if count != 1 else ''} logged for upload"
        if logged
        else "not logged (--no-log: for analysis nobody acts on)"
    )
    print(
        f"fleetgate check: replica at version {meta.cursor}, lease {lease}; {log}", file=sys.stderr
    )


# --- edit and activate ------------------------------------------------------------------------


def _queue(
    args: argparse.Namespace, documents: list[Any], *, cancels: int | None = None, where: Any = None
) -> list[int]:
    from app import offline
    from app.replica_file import ReplicaError

    replica = open_replica(args, args.owner)
    try:
        if not replica.has_policy():
            raise BadInput(f"the replica of {args.owner} holds no policy yet: run `fleetgate sync`")
        kwargs: dict[str, Any] = {"author": args.owner, "cancels": cancels}
        if where is not None:
            kwargs["where"] = where
        try:
            seqs: list[int] = offline.queue_edits(replica, documents, **kwargs)
        except offline.EditProblem as problem:
            raise BadInput(f"{problem}; nothing was queued") from None
        return seqs
    except ReplicaError as error:
        raise BadInput(str(error)) from None
    finally:
        replica.close()


def _read_edits(path: str) -> list[Any]:
    try:
        documents = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise BadInput(f"cannot read {path}: {error.strerror}") from None
    except ValueError as error:
        raise BadInput(f"{path}: not valid JSON: {error}") from None
    if not isinstance(documents, list):
        raise BadInput(f"{path}: expected a list of edits")
    return documents


def cmd_edit(args: argparse.Namespace) -> int:
    if (args.edits is None) == (args.apply_policy is None):
        raise BadInput("give one of --edits EDITS.json or --apply-policy FILE")
    if args.edits is not None:
        documents = _read_edits(args.edits)
        seqs = _queue(args, documents, where=lambda i: f"{args.edits}: edit [{i}]")
    else:
        documents = _edits_to_file(args)
        if not documents:
            print(f"the replica's policy already is {args.apply_policy}: nothing to queue")
            return 0
        seqs = _queue(args, documents, where=lambda i: f"edit [{i}] of the diff")
    for seq, document in zip(seqs, documents, strict=True):
        print(f"queued edit {seq}: {_summary(document)}")
    print(
        f"{len(seqs)} edit{'s' if len(seqs) != 1 else ''} queued; `fleetgate sync` sends them",
        file=sys.stderr,
    )
    return 0


def _edits_to_file(args: argparse.Namespace) -> list[Any]:
    from app import offline
    from app.clock import wall_now
    from app.policy_files import load_policy_file
    from sync.policy.document import PolicyInvalid
    from sync.policy.reach import Unreachable, edits_to_reach

    now = wall_now()
    try:
        target = load_policy_file(args.apply_policy, now=now)
    except PolicyInvalid as error:
        raise BadInput("\n".join(f"{args.apply_policy}: {p}" for p in error.problems)) from None
    replica = open_replica(args, args.owner)
    try:
        current, _ = offline.view_policy(replica, now)
    finally:
        replica.close()
    if target.tenant != current.tenant:
        raise BadInput(
            f"{args.apply_policy} is tenant {target.tenant}, the replica's is {current.tenant}"
        )
    try:
        return edits_to_reach(current, target)
    except Unreachable as error:
        raise BadInput(
            f"{args.apply_policy}: no edit can change "
            f"{'; '.join(error.parts)} (an import on the server can)"
        ) from None


def _summary(document: Any) -> str:
    if not isinstance(document, dict):
        return str(document)
    fields = ", ".join(
        f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in document.items() if k != "op"
    )
    return f"{document.get('op')} {fields}"


def cmd_activate(args: argparse.Namespace) -> int:
    document = {
        "op": "activate_role",
        "user_id": args.user or args.owner,
        "role_id": args.role,
        "hours": args.hours,
        "justification": args.why,
    }
    seqs = _queue(args, [document], where=lambda _i: "activate")
    whom = args.user or args.owner
    print(
        f"queued edit {seqs[0]}: {whom} holds {args.role} for {args.hours} h from now, "
        "offline too; the server times it by its clock when it syncs"
    )
    return 0


# --- outbox -----------------------------------------------------------------------------------


def cmd_outbox(args: argparse.Namespace) -> int:
    if args.cancel is not None:
        return _cancel(args)
    from app import offline
    from app.clock import wall_now

    replica = open_replica(args, args.owner)
    try:
        meta = replica.meta()
        _, failed = offline.view_policy(replica, wall_now()) if replica.has_policy() else (None, {})
        rows = []
        for row in replica.outbox():
            state = "pending" if row.outcome is None else f"{row.outcome}, version {row.version}"
            entry: dict[str, Any] = {
                "seq": row.seq,
                "state": state,
                "edit": row.edit,
                "made": row.wall_at,
                "base_version": row.base_version,
            }
            if row.cancels is not None:
                entry["cancels"] = row.cancels
            if row.seq in failed:
                entry["does_not_apply"] = failed[row.seq]
            rows.append(entry)
        seen = [
            {
                "seq": a.seq,
                "state": a.code if a.code == "superseded" else a.outcome,
                "outcome": a.outcome,
                "code": a.code,
                "reason": a.reason,
                "version": a.version,
                "conflict": a.conflict,
                "edit": a.edit,
                "answered": a.answered_at,
                "met": _met(replica, a.version),
            }
            for a in replica.attention()
        ]
    finally:
        replica.close()
    if args.json:
        print(
            json.dumps(
                {
                    "pending": rows,
                    "outcomes": seen,
                    "held_back": meta.held_back,
                    "cursor": meta.cursor,
                    "digest": meta.digest,
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    for entry in rows:
        problem = entry.get("does_not_apply")
        note = f"  (does not apply now: {problem})" if problem else ""
        print(f"{entry['seq']:>6}  {entry['state']:<22} {_summary(entry['edit'])}{note}")
    for entry in seen:
        summary = _summary(entry["edit"])
        line = f"{entry['seq']:>6}  {entry['state']:<22} {summary}: {entry['reason']}"
        if entry["conflict"]:
            c = entry["conflict"]
            line += (
                f"\n        {c['member']}: server keeps {json.dumps(c['server'])}, "
                f"yours {json.dumps(c['client'])}"
            )
        if met := entry["met"]:
            line += (
                f"\n        version {met['version']} by {met['author']} (device "
                f"{met['device']}) at {met['at']}"
            )
        print(line)
    if meta.held_back:
        print(meta.held_back)
    print(f"{len(rows)} in the outbox, {len(seen)} outcomes to see", file=sys.stderr)
    return 0


def _met(replica: Any, version: int | None) -> dict[str, Any] | None:
    """Who made the change an outcome met, from where and when, if the replica received
    it as a change (app/replica.py: `changes`)."""
    change = replica.change(version) if version is not None else None
    if change is None:
        return None
    return {"version": change.version, "author": change.author, "device": change.device,
            "at": change.at}  # fmt: skip


def _cancel(args: argparse.Namespace) -> int:
    from app import offline
    from app.clock import wall_now
    from sync.policy.reach import Unreachable

    replica = open_replica(args, args.owner)
    try:
        documents = offline.take_back(replica, args.cancel, wall_now())
    except KeyError:
        raise BadInput(
            f"there is no edit {args.cancel} in the outbox (see `fleetgate outbox`)"
        ) from None
    except Unreachable as error:
        raise Failed(f"cannot take back edit {args.cancel}: {'; '.join(error.parts)}") from None
    finally:
        replica.close()
    if not documents:
        print(f"edit {args.cancel} changes nothing in the replica's view now: nothing to take back")
        return 0
    seqs = _queue(
        args,
        documents,
        cancels=args.cancel,
        where=lambda i: f"taking back edit {args.cancel}: edit [{i}]",
    )
    for seq, document in zip(seqs, documents, strict=True):
        print(f"queued edit {seq} (takes back {args.cancel}): {_summary(document)}")
    return 0


# --- sync ---------------------------------------------------------------------------------------


def cmd_sync(args: argparse.Namespace) -> int:
    from app.replica_file import ReplicaDamaged

    password = None
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise BadInput("--password-stdin: standard input gave no password")
    replica = open_replica(args, args.user, create=True)
    try:
        return _sync_replica(args, replica, password)
    except ReplicaDamaged as damaged:
        # Found mid-sync (a page read for the first time): rebuild once, and sync again.
        replica.close()
        replica = rebuild_replica(args, args.user, damaged)
        return _sync_replica(args, replica, password)
    finally:
        replica.close()


def _sync_replica(args: argparse.Namespace, replica: Any, password: str | None) -> int:
    import asyncio

    from app.replica_file import ReplicaDamaged, ReplicaError, discard_rescued
    from app.sync_client import EXIT_UNREACHABLE, SyncSession, Transport, jitter
    from sync.protocol.client import ClientConnection, Password, Tokens

    try:
        print(_mode_line(replica), file=sys.stderr)
        meta = replica.meta()
        if meta.server != args.server:
            replica.set_meta(server=args.server)
        access, refresh = replica.tokens()
        if refresh is None and password is None:
            if not sys.stdin.isatty():
                raise BadInput(
                    "not signed in on this replica: give the password with --password-stdin"
                )
            password = getpass.getpass(f"password for {args.user} in {args.tenant}: ")
        credentials = Password(args.tenant, args.user, password) if password else None
        if credentials is not None and (problem := credentials.problem()) is not None:
            raise BadInput(f"{problem}: no server could take it; nothing was sent")
        tokens = Tokens(access, refresh) if refresh is not None else None
        connection = ClientConnection(
            device=meta.device,
            client=replica.client,
            rng=jitter(),
            tokens=tokens,
            credentials=credentials,
        )
        session = SyncSession(replica, connection, report=_say, watch=args.watch)
        transport = Transport(args.server, session)
        limit = None if args.watch else time.monotonic() + args.timeout
        try:
            done = asyncio.run(transport.run(lambda: session.finished, limit))
        except KeyboardInterrupt:
            done = True
        if session.ending is not None:
            print(f"fleetgate sync: {session.ending.message}", file=sys.stderr)
            return session.ending.code
        if not done:
            why = transport.last_failure or "the server did not answer in time"
            print(
                f"fleetgate sync: gave up after {args.timeout:g} s ({why}); the outbox is kept",
                file=sys.stderr,
            )
            return EXIT_UNREACHABLE
        _sync_summary(replica, session)
        discard_rescued(replica.file.directory, args.tenant, args.user)
        return 0
    except ReplicaDamaged:
        raise
    except ReplicaError as error:
        raise BadInput(str(error)) from None


def _say(line: str) -> None:
    print(line, flush=True)


def _sync_summary(replica: Any, session: Any) -> None:
    from app.clock import wall_now

    meta = replica.meta()
    pending = len(replica.pending())
    answered = len(session.outcomes)
    attention = len(replica.attention())
    changes = session.changes_applied
    print(
        f"fleetgate sync: at version {meta.cursor}; {_count(changes, 'change')} received, "
        f"{_count(answered, 'edit')} answered, {pending} pending, "
        f"{_count(attention, 'outcome')} to see; lease {meta.lease.describe(wall_now())}",
        file=sys.stderr,
    )


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


# --- parsers ------------------------------------------------------------------------------------


def add_client_commands(commands: Any) -> None:
    """Register `sync`, `edit`, `outbox` and `activate` (check's options: `check_options`)."""
    sync = commands.add_parser("sync", help="sign in if needed, push, pull, upload decisions")
    sync.add_argument("--server", required=True, help="ws://host:port/sync")
    _replica_options(sync, owner="--user")
    sync.add_argument("--user", required=True)
    sync.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input",
    )
    sync.add_argument(
        "--watch", action="store_true", help="stay connected, printing each change and outcome"
    )
    sync.add_argument(
        "--timeout", type=float, default=60.0, help="seconds a one-shot sync may take (default 60)"
    )
    sync.set_defaults(run=cmd_sync)

    edit = commands.add_parser("edit", help="queue edits in a replica's outbox")
    _replica_options(edit)
    edit.add_argument("--edits", help="JSON list of edits (as for what-if)")
    edit.add_argument("--apply-policy", help="queue the edits from the replica's policy to FILE")
    edit.set_defaults(run=cmd_edit)

    outbox = commands.add_parser("outbox", help="pending edits and outcomes to see")
    _replica_options(outbox)
    outbox.add_argument("--json", action="store_true")
    outbox.add_argument(
        "--cancel", type=int, metavar="SEQ", help="queue the edit that takes back edit SEQ"
    )
    outbox.set_defaults(run=cmd_outbox)

    activate = commands.add_parser("activate", help="just-in-time elevation, offline too")
    _replica_options(activate)
    activate.add_argument("--role", required=True, help="an eligible role (id or name)")
    activate.add_argument("--hours", type=int, required=True)
    activate.add_argument("--why", required=True, help="the justification, for the audit log")
    activate.add_argument("--user", help="activate for this user (default: OWNER)")
    activate.set_defaults(run=cmd_activate)


def check_options(check: argparse.ArgumentParser) -> None:
    """`check`'s options for deciding from a replica instead of a policy file."""
    check.add_argument(
        "--replica-dir",
        type=Path,
        help="decide offline from a replica in DIR (with --tenant and --as)",
    )
    check.add_argument("--tenant")
    check.add_argument("--as", dest="owner", help="whose replica (a user id)")
    check.add_argument(
        "--no-log", action="store_true", help="do not log the decisions (analysis nobody acts on)"
    )
