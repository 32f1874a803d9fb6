"""`python3 dev.py start`: the product on the demo tenant.

Starts the sync server (with its embedded Postgres in `.fleetgate-demo/`)
and gives it the demo tenant, walks the command line through the questions
an admin asks of the policy (decide, explain, who can, effective
permissions), printing each command so it can be repeated by hand, then opens
the desktop app where there is a display and keeps the server running until
Ctrl-C. The server is run as `python -m server`: the client never imports it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from app.cli import main as fleetgate

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "resources" / "demo" / "acme-logistics.json"
DATA_DIR = ROOT / ".fleetgate-demo"
TENANT = "acme-logistics"
ADMIN = "dreed"
PASSWORD = "fleetgate-demo"  # noqa: S105 - the demo tenant's published password
PORT = 8765


def _run(*args: str) -> int:
    print(f"\n$ fleetgate {shlex.join(args)}", flush=True)
    code = fleetgate(list(args))
    sys.stdout.flush()
    return code


def main() -> int:
    policy = str(DEMO)
    document = json.loads(DEMO.read_text(encoding="utf-8"))
    user = document["users"][0]
    region = user.get("attributes", {}).get("region", "north")
    steps = [
        ("policy", "validate", policy),
        ("check", "--policy", policy, "--user", user["id"], "--action", "read",
         "--resource", "vehicle:v-101"),
        ("explain", "--policy", policy, "--user", user["id"], "--action", "update",
         "--resource", "route:r-17", "--attr", f"resource.region={region}"),
        ("who-can", "--policy", policy, "--action", "dispatch", "--resource", "vehicle:v-101",
         "--attr", f"resource.region={region}"),
        ("permissions", "--policy", policy, "--user", user["id"]),
    ]  # fmt: skip
    for step in steps:
        if (code := _run(*step)) != 0:
            return code
    return 0


def _server_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "server", *args, "--data-dir", str(DATA_DIR)]


def ensure_demo_tenant() -> None:
    """Create the demo tenant and import its policy, once."""
    users = subprocess.run(
        _server_command("admin", "users", TENANT), capture_output=True, text=True, check=False
    )
    if users.returncode == 0:
        return
    if "no tenant" not in users.stderr:
        raise SystemExit(users.stderr.strip() or "fleetgate admin users failed")
    print(f"creating the demo tenant {TENANT!r} in {DATA_DIR}", flush=True)
    subprocess.run(
        _server_command("admin", "create-tenant", TENANT, "--admin", ADMIN),
        input=PASSWORD + "\n", text=True, check=True,
    )  # fmt: skip
    subprocess.run(_server_command("admin", "import", TENANT, str(DEMO)), check=True)


def start_server() -> subprocess.Popen[str]:
    """The sync server on PORT; returns once it listens."""
    server = subprocess.Popen(
        _server_command("server", "--port", str(PORT)), stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    line = server.stdout.readline()
    if "listening" not in line:
        server.wait(30)
        raise SystemExit(f"the sync server did not start (exit status {server.returncode})")
    print(line.strip(), flush=True)
    return server


def _has_display() -> bool:
    if sys.platform != "linux":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


REPLICAS = DATA_DIR / "replicas"
DEMO_PASSPHRASE = "fleetgate-demo-replica"  # noqa: S105 - used only where no keyring works


def open_desktop() -> None:
    """Sync the demo admin's replica, then open the desktop app on it."""
    env = os.environ | {"FLEETGATE_PASSPHRASE": os.environ.get("FLEETGATE_PASSPHRASE",
                                                                DEMO_PASSPHRASE)}  # fmt: skip
    who = ["--tenant", TENANT, "--replica-dir", str(REPLICAS)]
    synced = subprocess.run(
        [sys.executable, "-m", "app.cli", "sync", "--server", f"ws://127.0.0.1:{PORT}/sync",
         *who, "--user", ADMIN, "--password-stdin"],
        input=f"{PASSWORD}\n", text=True, env=env, check=False,
    )  # fmt: skip
    if synced.returncode != 0:
        print(f"The demo replica did not sync (exit {synced.returncode}).", flush=True)
        return
    subprocess.run([sys.executable, "-m", "app.desktop", *who, "--user", ADMIN],
                   env=env, check=False)  # fmt: skip


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve() -> int:
    """The whole product: server, demo tenant, command line, desktop app."""
    DATA_DIR.mkdir(mode=0o700, exist_ok=True)
    signal.signal(signal.SIGTERM, _interrupted)  # stop the server on SIGTERM too
    ensure_demo_tenant()
    server = start_server()
    try:
        if (code := main()) != 0:
            return code
        print(
            f"\nSync server: ws://127.0.0.1:{PORT}/sync (health: http://127.0.0.1:{PORT}/healthz)"
            f"\nDemo tenant {TENANT!r}: sign in as {ADMIN!r} with password {PASSWORD!r}.",
            flush=True,
        )
        if _has_display():
            open_desktop()
        else:
            print(
                "No display here: the desktop app is not opened. To see it, look at the "
                "screenshots the tests save in screenshots/, or run: fleetgate-admin --self-test",
                flush=True,
            )
        print("The server keeps running; Ctrl-C stops it.", flush=True)
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(serve() if "--serve" in sys.argv[1:] else main())
