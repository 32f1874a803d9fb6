"""`fleetgate replica info | rekey | wipe`: look after the encrypted local replica.

Each command returns its exit status: 0 done, 2 bad input or a replica that cannot be
used (one line `fleetgate replica: <message>` on standard error, never a traceback);
`wipe` answered "no" at its prompt: 1, nothing deleted. They open the file without its
schema's migrations (`migrate=False`): they work on replicas of any version.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from app.replica_paths import default_replica_dir

if TYPE_CHECKING:
    from app.replica_file import ReplicaFile

EXIT_OK = 0
EXIT_DECLINED = 1
EXIT_BAD_INPUT = 2
NEW_PASSPHRASE_VARIABLE = "FLEETGATE_NEW_PASSPHRASE"  # noqa: S105 - a variable's name


class _BadInput(Exception):
    """What the person asked for cannot be done; the message says why."""


def _fail(error: Exception) -> int:
    sys.stdout.flush()
    print(f"fleetgate replica: {error}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _directory(args: argparse.Namespace) -> Path:
    return args.replica_dir if args.replica_dir is not None else default_replica_dir()


def _open(args: argparse.Namespace) -> ReplicaFile:
    from app.replica_file import ReplicaFile, passphrase_from_environment

    return ReplicaFile.open(
        _directory(args),
        args.tenant,
        args.owner,
        migrations=(),
        migrate=False,
        passphrase=passphrase_from_environment(),
    )


def _size(count: int) -> str:
    if count < 1000:
        return f"{count} bytes"
    value = count / 1000
    for unit in ("KB", "MB"):
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def cmd_replica_info(args: argparse.Namespace) -> int:
    """Print where the replica's key is, then what the file is (`--json`: all of it as JSON)."""
    from app.replica_file import ReplicaError

    try:
        with _open(args) as replica:
            info = replica.info()
            key_line = replica.describe_key()
    except ReplicaError as error:
        return _fail(error)
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    print(key_line)
    print(f"file: {info['path']}")
    print(
        f"size: {_size(info['size'] + info['wal_size'])} "
        f"({info['page_count']} pages of {info['page_size']} bytes)"
    )
    print(f"schema version: {info['schema_version']}")
    print(f"client id: {info['client_id']}")
    if info["mode"] == "keyring":
        print(f"keyring id: {info['keyring_id']}")
    print(f"created: {info['created']}")
    print(f"cipher: SQLCipher {info['cipher_version']}")
    if info["rescue_files"]:
        print(f"rescued rows waiting: {len(info['rescue_files'])} rescue file(s)")
    return EXIT_OK


def _new_passphrase() -> str:
    """FLEETGATE_NEW_PASSPHRASE, or typed twice at a terminal."""
    value = os.environ.get(NEW_PASSPHRASE_VARIABLE)
    if value:
        return value
    if sys.stdin is None or not sys.stdin.isatty():
        raise _BadInput(
            f"there is no terminal to ask for the new passphrase: set {NEW_PASSPHRASE_VARIABLE}"
        )
    try:
        first = getpass.getpass("New passphrase of the replica: ")
        second = getpass.getpass("The new passphrase again: ")
    except EOFError:
        raise _BadInput("no new passphrase was typed") from None
    if not first:
        raise _BadInput("the new passphrase is empty")
    if first != second:
        raise _BadInput("the two new passphrases differ; nothing was changed")
    return first


def cmd_replica_rekey(args: argparse.Namespace) -> int:
    """Give the replica a new key: a new random one in the keyring, or a new passphrase;
    `--to` switches between the two."""
    from app.replica_file import KeyMode, ReplicaError, keyring_available

    try:
        with _open(args) as replica:
            target = KeyMode(args.to) if args.to else replica.mode
            if target is KeyMode.KEYRING:
                if not keyring_available():
                    raise _BadInput("there is no working OS keyring here: keep a passphrase")
                replica.rekey(mode=target)
            else:
                replica.rekey(passphrase=_new_passphrase(), mode=target)
            print(f"the replica has a new {replica.describe_key()}")
    except (ReplicaError, _BadInput) as error:
        return _fail(error)
    return EXIT_OK


def cmd_replica_wipe(args: argparse.Namespace) -> int:
    """Delete the replica's files and keyring entries, after a confirmation (or `--yes`)."""
    from app.replica_file import ReplicaError, replica_files, wipe_replica

    directory = _directory(args)
    if not replica_files(directory, args.tenant, args.owner):
        return _fail(_BadInput(f"there is no replica in {directory} for this tenant and user"))
    if not args.yes:
        if sys.stdin is None or not sys.stdin.isatty():
            return _fail(_BadInput("there is no terminal to confirm on: give --yes to wipe"))
        answer = input(
            f"Delete the replica of {args.owner} in tenant {args.tenant} from {directory}, "
            "with any edits not yet synced? [y/N] "
        )
        if answer.strip().lower() not in {"y", "yes"}:
            print("fleetgate replica: nothing was deleted", file=sys.stderr)
            return EXIT_DECLINED
    try:
        wipe_replica(directory, args.tenant, args.owner)
    except ReplicaError as error:
        return _fail(error)
    print(f"the replica in {directory} is wiped")
    return EXIT_OK


def _replica_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--replica-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where replicas are kept (default: Fleetgate/replicas in the user's data "
        "directory, ~/.local/share on Linux)",
    )
    parser.add_argument("--tenant", required=True, metavar="T", help="the tenant's name")
    parser.add_argument(
        "--as", dest="owner", required=True, metavar="OWNER", help="whose replica: a user id"
    )


def add_replica_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `replica info | rekey | wipe` on the `fleetgate` subcommands."""
    replica = commands.add_parser(
        "replica", help="the encrypted local replica: where its key is, a new key, wiping it"
    )
    replica_commands = replica.add_subparsers(dest="replica_command", required=True)

    info = replica_commands.add_parser("info", help="where the key is and what the file is")
    _replica_options(info)
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(run=cmd_replica_info)

    rekey = replica_commands.add_parser(
        "rekey",
        help="a new key: random in the keyring, or a new passphrase "
        f"(from {NEW_PASSPHRASE_VARIABLE} or asked twice)",
    )
    _replica_options(rekey)
    rekey.add_argument(
        "--to",
        choices=["keyring", "passphrase"],
        help="keep the key in the OS keyring, or derive it from a passphrase",
    )
    rekey.set_defaults(run=cmd_replica_rekey)

    wipe = replica_commands.add_parser(
        "wipe", help="delete the replica and its keyring entries (unsynced edits are lost)"
    )
    _replica_options(wipe)
    wipe.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    wipe.set_defaults(run=cmd_replica_wipe)
