"""`python3 dev.py start`: the product on the demo tenant.

Until the server and desktop issues land, "the product" is the command line:
this validates the demo tenant and walks through the questions an admin asks
of it (decide, explain, who can, effective permissions), printing each command
as it runs so it can be repeated by hand.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from app.cli import main as fleetgate

DEMO = Path(__file__).resolve().parent.parent / "resources" / "demo" / "acme-logistics.json"


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
    print("\nThe desktop app and the sync server arrive in later releases; see README.md.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
