"""Helpers of the server tests: a small tenant, its accounts. The real Postgres
(started once per test session) and the in-process server are fixtures of
tests/conftest.py, shared with the client's end-to-end tests."""

from __future__ import annotations

from typing import Any

import psycopg

from server.cli import create_tenant
from server.tokens import Passwords

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
