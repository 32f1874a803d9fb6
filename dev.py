#!/usr/bin/env python3
"""Fleetgate's two quick-start commands, plus the benchmark.

    python3 dev.py start    start the product: the sync server, the demo tenant, the CLI, the app
    python3 dev.py test     lint, type-check and run every test
    python3 dev.py bench    run the decision benchmark against pycasbin and cedarpy
    python3 dev.py bench-server   run the sync server benchmark (500 websocket clients)
    python3 dev.py bench-client   run the client benchmark (replica sync, search, cold check)
    python3 dev.py bench-app      run the desktop app benchmark (startup, search, UI stalls)
    python3 dev.py soak [--seeds N] [--scenario NAME]   fault-injection runs against a real server

Each creates (once) a virtualenv in .venv beside this file and installs the
project into it, so a fresh machine needs only Python 3.11+ and the package
index. The install is redone when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")


def _ensure_venv(extras: str) -> None:
    """Create .venv and install the project with `extras` unless already done."""
    if not PYTHON.exists():
        print(f"creating virtualenv in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    stamp = VENV / f".installed-{extras or 'base'}-{digest}"
    if not stamp.exists():
        _install(extras, stamp)
    _compile_sources()


def _install(extras: str, stamp: Path) -> None:
    print(f"installing fleetgate[{extras}] into {VENV}", flush=True)
    quiet = ["--quiet", "--disable-pip-version-check"]
    subprocess.run([str(PYTHON), "-m", "pip", "install", *quiet, "--upgrade", "pip"], check=True)
    target = f"{ROOT}[{extras}]" if extras else str(ROOT)
    subprocess.run([str(PYTHON), "-m", "pip", "install", *quiet, "-e", target], check=True)
    stamp.touch()


def _compile_sources() -> None:
    """Write the project's bytecode, as installing a wheel does. An editable install
    leaves that to the first import, and with PYTHONDONTWRITEBYTECODE set (as on the
    machine this was written on) every process compiled every module again: 60 ms more
    for each `fleetgate` started, which the benchmarks timed and an install never spends."""
    sources = [name for name in ("app", "sync", "server", "bench") if (ROOT / name).is_dir()]
    subprocess.run([str(PYTHON), "-m", "compileall", "-q", *sources], cwd=ROOT,
                   stdout=subprocess.DEVNULL, check=False)  # fmt: skip


def _run(*args: str) -> int:
    return subprocess.run([str(PYTHON), *args], cwd=ROOT, check=False).returncode


def start() -> int:
    _ensure_venv("")
    return _run("-m", "app.demo", "--serve")


def test() -> int:
    _ensure_venv("dev")
    for step in (
        ("-m", "ruff", "check", "."),
        ("-m", "ruff", "format", "--check", "."),
        ("-m", "mypy"),
    ):
        print("$", " ".join(step[1:]), flush=True)
        if (code := _run(*step)) != 0:
            return code
    print("$ pytest", flush=True)
    return _run("-m", "pytest", "-q", "-p", "no:cacheprovider")


def bench() -> int:
    _ensure_venv("dev,bench")
    return _run("-m", "bench.decisions", *sys.argv[2:])


def bench_server() -> int:
    _ensure_venv("dev,bench")
    if (code := _run("-m", "bench.pushes")) != 0:
        return code
    if (code := _run("-m", "bench.slow_readers")) != 0:
        return code
    return _run("-m", "bench.sync_server", *sys.argv[2:])


def bench_client() -> int:
    _ensure_venv("dev,bench")
    return _run("-m", "bench.client", *sys.argv[2:])


def bench_app() -> int:
    _ensure_venv("dev,bench")
    return _run("-m", "bench.app", *sys.argv[2:])


def soak() -> int:
    """python3 dev.py soak [--seeds N] [--scenario NAME]: fault injection, many seeds."""
    _ensure_venv("dev")
    return _run("-m", "bench.soak", *sys.argv[2:])


COMMANDS = {
    "start": start,
    "test": test,
    "bench": bench,
    "bench-server": bench_server,
    "bench-client": bench_client,
    "bench-app": bench_app,
    "soak": soak,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    sys.exit(COMMANDS[sys.argv[1]]())
