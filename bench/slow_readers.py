"""Sessions that stop reading: the server's memory, and whether it lets them go.

    .venv/bin/python -m bench.slow_readers [--sessions 100] [--users 2000] [--wait 15]

Starts a throwaway embedded Postgres, the bench tenant and `python -m server
server` in a process of its own (as bench/sync_server.py does), then opens
`--sessions` sessions, each after a change of its own, so that each is sent a
snapshot of its own version; each reads through a socket with a 4 KiB receive
buffer and stops reading after its `welcome`. A writer then pushes changes
that every session is sent. Prints the server's resident memory before, at its
peak and `--wait` seconds later, and how many sessions it still holds
(`fleetgate_connections` from /metrics); the server's send deadline is 10 s.
Figures also go to bench/out/slow_readers.json.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import secrets
import socket
import time
from typing import Any

import httpx
import psutil
from websockets.asyncio.client import connect

from bench.harness import websocket_options
from bench.sync_server import (
    ADMIN,
    OUT,
    TENANT,
    _database,
    _start_server,
    _user,
)


def _rss_mib(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / (1 << 20)


async def _connections(port: int) -> int:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    for line in text.splitlines():
        if line.startswith("fleetgate_connections "):
            return int(float(line.split()[1]))
    return -1


async def _stuck_session(port: int, token: str, device: str, client: str) -> Any:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    websocket = await connect(f"ws://127.0.0.1:{port}/sync", sock=sock, **websocket_options())
    await websocket.send(json.dumps({"type": "hello", "protocol": 2, "access_token": token,
                                     "device": device, "client": client, "cursor": 0}))  # fmt: skip
    json.loads(await websocket.recv())  # the welcome; nothing is read after it
    return websocket


async def measure(args: argparse.Namespace, database: Any, server: Any, key: str) -> dict[str, Any]:
    from server.tokens import TokenSigner

    signer = TokenSigner(bytes.fromhex(key))

    def token(user: str, device: str) -> str:
        issued, _ = signer.issue(tenant_id=database.tenant_id, tenant=TENANT, user=user,
                                 device=device, now=time.time())  # fmt: skip
        return str(issued)

    stuck = []
    try:
        writer = await connect(f"ws://127.0.0.1:{server.port}/sync", **websocket_options())
        hello = {"type": "hello", "protocol": 2, "access_token": token(ADMIN, "writer"),
                 "device": "writer", "client": "writer", "cursor": 0}  # fmt: skip
        await writer.send(json.dumps(hello))
        while True:
            message = json.loads(await writer.recv())
            if message["type"] == "welcome":
                version = message["version"]
            if message["type"] == "changes" and not message["more"]:
                break
        seq = 0
        outcomes: collections.Counter[str] = collections.Counter()

        async def push(*values: Any) -> None:
            nonlocal seq, version
            mutations = []
            for value in values:
                seq += 1
                edit = {"op": "set_user_attribute", "user_id": _user(seq % args.users),
                        "key": "k", "value": value}  # fmt: skip
                mutations.append(
                    {"client": "writer", "seq": seq, "base_version": version, "edit": edit}
                )
            await writer.send(json.dumps({"type": "push", "ref": f"r{seq}",
                                          "mutations": mutations}))  # fmt: skip
            while (answer := json.loads(await writer.recv()))["type"] != "push_result":
                pass
            outcomes.update(r["outcome"] for r in answer["results"])
            version = max([version] + [r.get("version") or 0 for r in answer["results"]])
            await asyncio.sleep(0.03)  # under the server's 50 messages/s per connection

        before = _rss_mib(server.process.pid)
        peak = before
        for number in range(args.sessions):
            await push(number)  # a new version: the next session gets a snapshot of its own
            stuck.append(await _stuck_session(server.port, token(_user(number), f"d{number}"),
                                              f"d{number}", f"c{number}"))  # fmt: skip
            peak = max(peak, _rss_mib(server.process.pid))
        for number in range(60):  # every stuck session is sent these too: 12 MB each
            await push(*("x" * 20_000 + str(number * 10 + i) for i in range(10)))
            peak = max(peak, _rss_mib(server.process.pid))
        held_after_pushes = await _connections(server.port)
        started = time.monotonic()
        while time.monotonic() - started < args.wait:
            peak = max(peak, _rss_mib(server.process.pid))
            await asyncio.sleep(0.5)
        after = _rss_mib(server.process.pid)
        held = await _connections(server.port)
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"http://127.0.0.1:{server.port}/metrics")).text
        dropped = [line for line in metrics.splitlines()
                   if line.startswith(("fleetgate_dropped", "fleetgate_resyncs"))]  # fmt: skip
        await writer.close()
    finally:
        for websocket in stuck:
            with contextlib.suppress(Exception):
                websocket.transport.abort()
    return {
        "sessions": args.sessions,
        "rss_before_mib": before,
        "rss_peak_mib": peak,
        "rss_after_mib": after,
        "connections_after_pushes": held_after_pushes,
        "connections_after_wait": held,
        "wait_s": args.wait,
        "metrics": dropped,
        "outcomes": dict(outcomes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.slow_readers", description=__doc__)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--wait", type=float, default=15.0)
    args = parser.parse_args()
    database = _database(args.users, 1)
    key = secrets.token_hex(32)
    try:
        server = _start_server(database.url, key, None)
        try:
            result = asyncio.run(measure(args, database, server, key))
        finally:
            server.stop()
    finally:
        database.close()
    print(f"Sessions that stop reading ({result['sessions']}, each sent its own snapshot)")
    print(f"  server memory: {result['rss_before_mib']:.0f} MiB before, "
          f"{result['rss_peak_mib']:.0f} MiB at the peak, {result['rss_after_mib']:.0f} MiB "
          f"{result['wait_s']:.0f} s after the last push")  # fmt: skip
    print(f"  connections held: {result['connections_after_pushes']} right after the pushes, "
          f"{result['connections_after_wait']} after the wait (1 is the writer)")  # fmt: skip
    print("  " + ", ".join(result["metrics"]) + f"; pushes: {result['outcomes']}")
    OUT.mkdir(exist_ok=True)
    (OUT / "slow_readers.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
