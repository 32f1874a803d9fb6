"""A small test client for the sync server: real websockets on loopback.

Tests talk to a running server through this, with exact protocol messages;
it adds nothing the protocol does not have.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sync.protocol.messages import Clock, OfflineDecision
from sync.replication.decisions import GENESIS, decision_hash

TIMEOUT = 10.0


class Client:
    def __init__(self, websocket: ClientConnection) -> None:
        self.websocket = websocket
        self.refs = 0

    @classmethod
    async def connect(cls, port: int, **kwargs: Any) -> Client:
        websocket = await connect(f"ws://127.0.0.1:{port}/sync", **kwargs)
        return cls(websocket)

    async def close(self) -> None:
        await self.websocket.close()

    def ref(self) -> str:
        self.refs += 1
        return f"r{self.refs}"

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        await self.websocket.send(
            message if isinstance(message, str | bytes) else json.dumps(message)
        )

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        frame = await asyncio.wait_for(self.websocket.recv(), timeout)
        return json.loads(frame)

    async def recv_type(self, kind: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next message of type `kind`, skipping others (e.g. live changes)."""
        while True:
            message = await self.recv(timeout)
            if message["type"] == kind:
                return message

    async def closed(self, timeout: float = TIMEOUT) -> int | None:
        """Read until the server closes; its close code."""
        try:
            while True:
                await asyncio.wait_for(self.websocket.recv(), timeout)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None

    async def call(self, message: dict[str, Any]) -> dict[str, Any]:
        message = {"ref": self.ref()} | message
        await self.send(message)
        while True:
            answer = await self.recv()
            if answer.get("ref") == message["ref"]:
                return answer

    async def sign_in(self, tenant: str, user: str, password: str, device: str) -> dict[str, Any]:
        return await self.call(
            {
                "type": "sign_in",
                "tenant": tenant,
                "user": user,
                "password": password,
                "device": device,
            }
        )

    async def hello(
        self, token: str, device: str, client: str, cursor: int = 0
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Say hello and read until caught up: (welcome, every message after it)."""
        await self.send(
            {"type": "hello", "protocol": 2, "access_token": token, "device": device,
             "client": client, "cursor": cursor}
        )  # fmt: skip
        welcome = await self.recv()
        if welcome["type"] != "welcome":
            return welcome, []
        after = []
        while True:
            message = await self.recv()
            after.append(message)
            if message["type"] == "changes" and not message["more"]:
                return welcome, after

    async def push(self, *mutations: dict[str, Any]) -> dict[str, Any]:
        """Push and read the whole answer: a `push_result` in several parts (`more`)
        comes back as one, with `parts` saying how many there were."""
        answer = await self.call({"type": "push", "mutations": list(mutations)})
        if answer["type"] != "push_result":
            return answer
        results, parts = list(answer["results"]), 1
        while answer["more"]:
            answer = await self.recv_type("push_result")
            results += answer["results"]
            parts += 1
        return answer | {"results": results, "parts": parts}


def mutation(client: str, seq: int, base: int, **edit: Any) -> dict[str, Any]:
    return {"client": client, "seq": seq, "base_version": base, "edit": edit}


def decisions(
    client: str, count: int, *, start: int = 1, prev: str = GENESIS, **fields: Any
) -> list[dict[str, Any]]:
    """`count` offline decisions of `client`'s chain from seq `start` (after `prev`),
    hashed as a replica hashes them (sync/replication/decisions.py)."""
    chain = []
    for seq in range(start, start + count):
        values: dict[str, Any] = {
            "request": {"user": "dora", "action": "read", "resource": {"type": "vehicle"}},
            "allowed": False, "reason": "no grant matches vehicle read",
            "at": "2026-11-20T06:00:00Z", "clock": "wall", "lease_fresh": True, "pending": [],
            "policy_version": 1,
        } | fields  # fmt: skip
        decision = OfflineDecision(
            seq, prev, "0" * 64, values["request"], values["allowed"], values["reason"],
            values["at"], Clock(values["clock"]), values["lease_fresh"],
            tuple(values["pending"]), values["policy_version"],
        )  # fmt: skip
        digest = decision_hash(client, decision)
        chain.append({"seq": seq, "prev_hash": prev, "hash": digest} | values)
        prev = digest
    return chain
