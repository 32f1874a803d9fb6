"""`fleetgate`: the command line.

Every command that reads a policy or requests reports bad input as one clear
message naming the place, with exit status 2, never a traceback
(policy-format.md § Command line). Status 0: done; 1: `policy diff
--exit-code` found differences; 2: bad input or usage; 70: a bug of ours.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from app import client_cli
from app.batch import (
    MalformedLine,
    WorkerDied,
    blocks,
    parse_line,
    run_batch,
    usable_cores,
)
from app.errors import BadInput, Failed
from app.policy_files import gc_paused, load_policy_file
from app.replica_commands import add_replica_parser
from sync.policy.diff import diff_policies
from sync.policy.document import PolicyInvalid, dump_policy, reject_json_constant
from sync.policy.edits import EditRefused, apply_edit, edit_from_document
from sync.policy.engine import Engine, describe_eligibility
from sync.policy.instant import Instant, instant_from_datetime
from sync.policy.model import Policy
from sync.policy.request import MalformedRequest, Request, parse_request
from sync.policy.whatif import what_if_live

EXIT_OK = 0
EXIT_DIFFERENT = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 70


def _now() -> Instant:
    return instant_from_datetime(datetime.now(UTC))


def _load(path: str, now: Instant) -> Policy:
    try:
        return load_policy_file(path, now=now)
    except PolicyInvalid as error:
        lines = "\n".join(f"{path}: {problem}" for problem in error.problems)
        raise BadInput(lines) from None


def _compile(policy: Policy) -> Engine:
    with gc_paused():
        return Engine(policy)


def _deciding(policy: Policy) -> Engine:
    """An engine that only decides: the roles compiled now, each user when its first
    request comes (in a batch, by the worker deciding it; see Engine's `load_user`)."""
    bare = Policy(policy.tenant, policy.resource_types, policy.roles, {}, policy.constraints)
    with gc_paused():
        return Engine(bare, load_user=policy.users.get)


# --- requests ----------------------------------------------------------------------------


def _lines(source: BinaryIO) -> Iterator[bytes]:
    """The lines of `source`, read in large blocks."""
    for _lineno, block in blocks(source):
        lines = block.split(b"\n")
        if not lines[-1]:
            lines.pop()
        yield from lines


def check_batch(
    engine: Engine, source: BinaryIO, out: BinaryIO, now: Instant, jobs: int = 1
) -> int:
    """Decide one request per line of `source`, writing one decision per line.

    Returns the number of decisions. On a malformed line the decisions before
    it are written, then BadInput names the line.
    """
    try:
        return run_batch(engine, source, out, now, jobs)
    except MalformedLine as error:
        raise BadInput(str(error)) from None
    except WorkerDied as error:
        raise Failed(str(error)) from None
    finally:
        out.flush()


def _attributes(pairs: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`--attr resource.region=north` pairs -> (resource attributes, context)."""
    resource: dict[str, Any] = {}
    context: dict[str, Any] = {}
    for pair in pairs:
        key, equals, text = pair.partition("=")
        if not equals:
            raise BadInput(f"--attr {pair!r}: expected PATH=VALUE, e.g. resource.region=north")
        try:
            value: Any = json.loads(text, parse_constant=reject_json_constant)
        except (ValueError, RecursionError):
            value = text
        root, dot, name = key.partition(".")
        if not dot or not name:
            raise BadInput(f"--attr {pair!r}: PATH is resource.<name> or context.<name>")
        if root == "resource":
            resource[name] = value
        elif root == "context":
            context[name] = value
        else:
            raise BadInput(
                f"--attr {pair!r}: only resource.* and context.* can be given; "
                "user attributes come from the policy"
            )
    return resource, context


def _single_request(args: argparse.Namespace, user: str | None = None) -> Request:
    resource_type, _, resource_id = args.resource.partition(":")
    attributes, context = _attributes(args.attr)
    document: dict[str, Any] = {
        "user": user if user is not None else args.user,
        "action": args.action,
        "resource": {"type": resource_type},
    }
    if resource_id:
        document["resource"]["id"] = resource_id
    if attributes:
        document["resource"]["attributes"] = attributes
    if context:
        document["context"] = context
    try:
        return parse_request(document)
    except MalformedRequest as error:
        raise BadInput(f"malformed request: {error}") from None


# --- commands ----------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    if args.replica_dir is not None or args.owner is not None:
        if args.policy is not None:
            raise BadInput("give either --policy or --replica-dir/--tenant/--as, not both")
        return client_cli.cmd_check_replica(args, _single_request)
    if args.policy is None:
        raise BadInput("give --policy FILE, or --replica-dir DIR --tenant T --as OWNER")
    now = _now()
    started = time.perf_counter()
    policy = _load(args.policy, now)
    loaded = time.perf_counter()
    engine = _deciding(policy)
    compiled = time.perf_counter()
    out = sys.stdout.buffer
    if args.requests is not None:
        if args.user or args.action or args.resource:
            raise BadInput("give either --requests or --user/--action/--resource, not both")
        try:
            if args.requests == "-":
                count = check_batch(engine, sys.stdin.buffer, out, now, args.jobs)
            else:
                with open(args.requests, "rb") as source:
                    count = check_batch(engine, source, out, now, args.jobs)
        except OSError as error:
            raise BadInput(f"cannot read {args.requests}: {error.strerror}") from None
        if args.timings:
            elapsed = time.perf_counter() - compiled
            rate = f"{count / elapsed:,.0f}/s" if elapsed else "-"
            print(
                f"fleetgate check: policy read in {loaded - started:.2f} s, compiled in "
                f"{compiled - loaded:.2f} s; {count:,} decisions in {elapsed:.2f} s ({rate}, "
                f"up to {args.jobs} processes)",
                file=sys.stderr,
            )
        return EXIT_OK
    _require(args, "user", "action", "resource")
    out.write(engine.decide(_single_request(args), now).wire + b"\n")
    out.flush()
    return EXIT_OK


def _require(args: argparse.Namespace, *names: str) -> None:
    missing = [f"--{n}" for n in names if not getattr(args, n)]
    if missing:
        raise BadInput(f"missing {', '.join(missing)}")


def cmd_explain(args: argparse.Namespace) -> int:
    now = _now()
    engine = _compile(_load(args.policy, now))
    explanation = engine.explain(_single_request(args), now)
    if args.json:
        document = {"decision": explanation.decision.to_dict(), "trace": list(explanation.trace)}
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        print("\n".join(explanation.trace))
    return EXIT_OK


def cmd_who_can(args: argparse.Namespace) -> int:
    now = _now()
    engine = _compile(_load(args.policy, now))
    probe = _single_request(args, user="")
    allowed = engine.who_can(
        probe.action,
        probe.resource_type,
        probe.resource_id,
        probe.resource_attrs,
        probe.context,
        now=now,
        time=probe.time,
    )
    if args.json:
        rows = [{"user": u, **d.to_dict()} for u, d in allowed]
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        for user_id, decision in allowed:
            print(f"{user_id}\t{decision.reason}")
        print(f"{len(allowed)} users may {probe.action} {args.resource}", file=sys.stderr)
    return EXIT_OK


def cmd_permissions(args: argparse.Namespace) -> int:
    now = _now()
    engine = _compile(_load(args.policy, now))
    try:
        permissions = engine.effective_permissions(args.user, now)
    except KeyError:
        raise BadInput(f"unknown user {args.user!r}") from None
    if args.json:
        rows = [
            {
                "resource": p.resource_type,
                "action": p.action,
                "effect": p.effect.value,
                "source": p.source,
                "rule": p.rule,
                "path": list(p.path),
                "when": p.condition,
                "until": p.until,
            }
            for p in permissions
        ]
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        for permission in permissions:
            print(permission)
        # Why the list is short, on standard error: standard output stays one
        # permission a line for scripts.
        user = engine.policy.users[args.user]
        if user.suspended:
            print(f"user {user.id} is suspended: every request is denied", file=sys.stderr)
        for entry in user.roles:
            if entry.eligible is not None:
                role = engine.policy.role_name(entry.role_id)
                print(f"{describe_eligibility(entry, role, now)}: not listed", file=sys.stderr)
    return EXIT_OK


def cmd_what_if(args: argparse.Namespace) -> int:
    now = _now()
    before = _load(args.policy, now)
    try:
        documents = json.loads(Path(args.edits).read_text(encoding="utf-8"))
    except OSError as error:
        raise BadInput(f"cannot read {args.edits}: {error.strerror}") from None
    except ValueError as error:
        raise BadInput(f"{args.edits}: not valid JSON: {error}") from None
    if not isinstance(documents, list):
        raise BadInput(f"{args.edits}: expected a list of edits")
    after = before.copy()
    edits = []
    for i, document in enumerate(documents):
        if not isinstance(document, dict):
            raise BadInput(f"{args.edits}: edit [{i}]: expected an object with an op")
        try:
            # Each edit is read against the policy as the edits before it left it.
            edits.append(edit_from_document(document, after))
            apply_edit(after, edits[-1], now)
        except EditRefused as error:
            raise BadInput(f"{args.edits}: edit [{i}]: {error.reason}") from None
    try:
        with open(args.requests, "rb") as source:
            requests = [_request_on_line(raw, n) for n, raw in enumerate(_lines(source), start=1)]
    except OSError as error:
        raise BadInput(f"cannot read {args.requests}: {error.strerror}") from None
    changes = what_if_live(_compile(before), edits, requests, now)
    for change in changes:
        row = {"line": change.index + 1, "before": change.before.to_dict(),
               "after": change.after.to_dict()}  # fmt: skip
        sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(changes)} of {len(requests)} decisions change", file=sys.stderr)
    return EXIT_OK


def _request_on_line(raw: bytes, lineno: int) -> Request:
    try:
        return parse_line(raw)
    except MalformedRequest as error:
        raise BadInput(f"line {lineno}: malformed request: {error}") from None


def cmd_policy_validate(args: argparse.Namespace) -> int:
    policy = _load(args.file, _now())
    print(
        f"{args.file}: valid: tenant {policy.tenant}, {len(policy.resource_types)} resource types, "
        f"{len(policy.roles)} roles, {len(policy.users)} users, "
        f"{len(policy.constraints)} constraints"
    )
    return EXIT_OK


def cmd_policy_diff(args: argparse.Namespace) -> int:
    now = _now()
    lines = diff_policies(_load(args.old, now), _load(args.new, now))
    for line in lines:
        print(line)
    return EXIT_DIFFERENT if lines and args.exit_code else EXIT_OK


def cmd_policy_export(args: argparse.Namespace) -> int:
    sys.stdout.write(dump_policy(_load(args.file, _now()), yaml_syntax=args.yaml))
    return EXIT_OK


# --- parser ------------------------------------------------------------------------------


def _request_options(parser: argparse.ArgumentParser, *, user: bool = True) -> None:
    if user:
        parser.add_argument("--user", help="the user's id")
    parser.add_argument("--action", help="the action, e.g. update")
    parser.add_argument("--resource", help="TYPE or TYPE:ID, e.g. route:r-17")
    parser.add_argument(
        "--attr",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="resource.<name> or context.<name>; VALUE is JSON when it parses, else a string",
    )


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"fleetgate: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fleetgate",
        description="Fleetgate: roles and permissions for fleets.",
        epilog="The sync server's commands: fleetgate server | admin | audit "
        "(fleetgate server --help).",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    check = commands.add_parser("check", help="decide requests against a policy or a replica")
    check.add_argument("--policy", help="policy document (JSON or YAML)")
    client_cli.check_options(check)
    check.add_argument("--requests", help="JSONL file of requests, one per line ('-': stdin)")
    check.add_argument(
        "--jobs",
        type=int,
        default=usable_cores(),
        help="processes deciding a batch in parallel (default: usable cores; 1: none)",
    )
    check.add_argument(
        "--timings", action="store_true", help="say on standard error how long each step took"
    )
    _request_options(check)
    check.set_defaults(run=cmd_check)

    explain = commands.add_parser("explain", help="decide one request and show every step")
    explain.add_argument("--policy", required=True)
    _request_options(explain)
    explain.add_argument("--json", action="store_true", help="print JSON instead of text")
    explain.set_defaults(run=cmd_explain, required=("user", "action", "resource"))

    who = commands.add_parser("who-can", help="the users who may do an action on a resource")
    who.add_argument("--policy", required=True)
    _request_options(who, user=False)
    who.add_argument("--json", action="store_true")
    who.set_defaults(run=cmd_who_can, required=("action", "resource"))

    perms = commands.add_parser("permissions", help="a user's effective permissions")
    perms.add_argument("--policy", required=True)
    perms.add_argument("--user", required=True)
    perms.add_argument("--json", action="store_true")
    perms.set_defaults(run=cmd_permissions)

    what_if = commands.add_parser(
        "what-if", help="decisions that change when proposed edits are applied"
    )
    what_if.add_argument("--policy", required=True)
    what_if.add_argument("--edits", required=True, help="JSON list of edits")
    what_if.add_argument("--requests", required=True, help="JSONL file of requests")
    what_if.set_defaults(run=cmd_what_if)

    policy = commands.add_parser("policy", help="validate, compare or export policy documents")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    validate = policy_commands.add_parser("validate", help="check a policy document")
    validate.add_argument("file")
    validate.set_defaults(run=cmd_policy_validate)
    diff = policy_commands.add_parser("diff", help="what changes from OLD to NEW")
    diff.add_argument("old")
    diff.add_argument("new")
    diff.add_argument("--exit-code", action="store_true", help="exit 1 when they differ")
    diff.set_defaults(run=cmd_policy_diff)
    export = policy_commands.add_parser("export", help="print a policy in normal form, with ids")
    export.add_argument("file")
    export.add_argument("--yaml", action="store_true")
    export.set_defaults(run=cmd_policy_export)
    client_cli.add_client_commands(commands)
    add_replica_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "required", None):
            _require(args, *args.required)
        return int(args.run(args))
    except BadInput as error:
        sys.stdout.flush()
        print(f"fleetgate {args.command}: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Failed as error:
        sys.stdout.flush()
        print(f"fleetgate {args.command}: {error}", file=sys.stderr)
        return EXIT_INTERNAL
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # noqa: BLE001 - the last line of defence: no traceback
        print(
            f"fleetgate {args.command}: internal error: {type(error).__name__}: {error}",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


SERVER_COMMANDS = frozenset({"server", "admin", "audit"})
"""Commands of the server's side (server/cli.py), run as `python -m server`: the
client never imports the server (PRODUCT.md: app -> sync <- server)."""


def _run_server_command(argv: list[str]) -> int:
    command = [sys.executable, "-m", "server", *argv]
    if os.name == "posix":
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, command)  # noqa: S606 - our own interpreter and module
    return subprocess.run(command, check=False).returncode  # noqa: S603


def run() -> NoReturn:
    """The `fleetgate` console script: `main`, then exit without tearing down the heap.

    Freeing a compiled 50,000-user policy object by object takes longer than
    deciding 50,000 requests; the operating system reclaims it at once.
    """
    argv = sys.argv[1:]
    code = _run_server_command(argv) if argv[:1] and argv[0] in SERVER_COMMANDS else main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    os._exit(code)


if __name__ == "__main__":
    run()
