"""An asyncio TCP proxy that breaks connections on purpose, for fault injection.

Clients connect to the proxy's port; each connection (a `Link`) is forwarded to
the current upstream address (`Proxy.upstream`, which may change while the
proxy runs: a restarted server on another port). Two kinds of faults:

- A `Plan` per link, by byte offset: cut the connection after N bytes in one
  direction (an abort, which the peer sees as a reset, or a close), stall one
  direction for some seconds after N bytes, delay every chunk. `Plan.random`
  draws one from a seeded `random.Random`, so a failing run can be replayed.
- A `hook` that sees every websocket message once the HTTP upgrade is done
  (client frames unmasked, text frames decoded as JSON) and says what becomes
  of it: `PASS`, `DROP` (the frame is not forwarded) or `CUT` (not forwarded,
  and the link is aborted). The hook may be a coroutine: forwarding in that
  direction waits for it, which is how a test holds an answer back while it
  kills a process.

Nothing here knows the sync protocol beyond what a websocket frame looks like
(RFC 6455 § 5.2); the offsets count bytes on the wire, handshake included.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

CHUNK = 65536


class Side(Enum):
    UP = "up"
    """Client to server."""
    DOWN = "down"
    """Server to client."""


class Verdict(Enum):
    PASS = "pass"
    DROP = "drop"
    CUT = "cut"


@dataclass(frozen=True, slots=True)
class Plan:
    """What goes wrong on one link (the defaults: nothing)."""

    cut: tuple[Side, int] | None = None
    """Cut the link once this many bytes went that way (the rest of that chunk is lost)."""
    abort: bool = True
    """Cut with a reset (transport.abort) rather than an orderly close."""
    delay: float = 0.0
    """Seconds added before every chunk forwarded, both ways."""
    stall: tuple[Side, int, float] | None = None
    """After this many bytes that way, forward nothing more that way for so many seconds
    (math.inf: until the link is cut)."""

    @classmethod
    def random(cls, rng: random.Random, *, up: int = 3000, down: int = 12000) -> Plan:
        """A random fault: mostly a cut, sometimes a stall, sometimes only delays; at an
        offset below `up` bytes client to server, or `down` the other way (the sizes
        of a short session's traffic, so that most faults do fire)."""
        side = rng.choice((Side.UP, Side.DOWN))
        # Early offsets (the handshake, the sign-in, the hello) are drawn more often.
        offset = int(rng.random() ** 2 * (up if side is Side.UP else down))
        roll = rng.random()
        delay = rng.choice((0.0, 0.0, 0.001, 0.01, 0.03))
        if roll < 0.55:
            return cls(cut=(side, offset), abort=rng.random() < 0.7, delay=delay)
        if roll < 0.85:
            seconds = rng.choice((0.2, 0.5, 1.5, 3.0, math.inf))
            return cls(stall=(side, offset, seconds), delay=delay)
        return cls(delay=rng.choice((0.005, 0.02, 0.08)))


Hook = Callable[["Link", Side, Any], "Verdict | Awaitable[Verdict]"]
"""Called with (link, side, message): the decoded JSON of a text frame, or None for
a frame that is not one (binary, control, fragment, not JSON)."""


class _Frames:
    """Cuts a byte stream into websocket frames, after the HTTP upgrade."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.upgraded = False

    def feed(self, data: bytes) -> list[tuple[bytes, bool, Any]]:
        """Whole units now available: (bytes, is a frame, decoded message): the HTTP
        head first (not a frame), then each frame."""
        self.buffer += data
        units: list[tuple[bytes, bool, Any]] = []
        while True:
            if not self.upgraded:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return units
                head = bytes(self.buffer[: end + 4])
                del self.buffer[: end + 4]
                self.upgraded = True
                units.append((head, False, None))
                continue
            frame = self._frame()
            if frame is None:
                return units
            units.append((frame[0], True, frame[1]))

    def _frame(self) -> tuple[bytes, Any] | None:
        data = self.buffer
        if len(data) < 2:
            return None
        first, second = data[0], data[1]
        length = second & 0x7F
        at = 2
        if length == 126:
            if len(data) < 4:
                return None
            length, at = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            if len(data) < 10:
                return None
            length, at = int.from_bytes(data[2:10], "big"), 10
        mask = b""
        if second & 0x80:
            if len(data) < at + 4:
                return None
            mask, at = bytes(data[at : at + 4]), at + 4
        if len(data) < at + length:
            return None
        raw = bytes(data[: at + length])
        payload = bytes(data[at : at + length])
        del data[: at + length]
        fin, opcode = bool(first & 0x80), first & 0x0F
        message = None
        if fin and opcode == 1:
            if mask:
                payload = _unmask(payload, mask)
            with contextlib.suppress(ValueError):
                message = json.loads(payload)
        return raw, message


def _unmask(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return payload
    size = len(payload)
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")


@dataclass(eq=False)
class Link:
    """One proxied connection."""

    number: int
    plan: Plan
    sent: dict[Side, int] = field(default_factory=lambda: {Side.UP: 0, Side.DOWN: 0})
    """Bytes forwarded each way."""
    messages: dict[Side, int] = field(default_factory=lambda: {Side.UP: 0, Side.DOWN: 0})
    cut_reason: str | None = None
    fired: str | None = None
    """Which fault of the plan happened: "cut" or "stall" (None: none yet)."""
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    def cut(self, reason: str = "cut", *, abort: bool = True) -> None:
        """End the link at once, both ways (a reset with `abort`)."""
        if self.cut_reason is None:
            self.cut_reason = reason
        for writer in self._writers:
            with contextlib.suppress(Exception):
                if abort:
                    writer.transport.abort()
                else:
                    writer.close()
        self.closed.set()


class Proxy:
    """Listens on 127.0.0.1 (port 0: a free one) and forwards each connection to
    `upstream`, applying `plan(link_number)` and `hook` (module docstring)."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        plan: Callable[[int], Plan] | None = None,
        hook: Hook | None = None,
    ) -> None:
        self.upstream = upstream
        self.plan = plan
        self.hook = hook
        self.links: list[Link] = []
        self.refusing = False
        """While set, every new connection is closed at once (a server that is down)."""
        self._numbers = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/sync"

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut_all("proxy closed")
        # Cut links end their tasks by themselves (a cancelled one would be reported by
        # asyncio's start_server callback); only a straggler is cancelled.
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=3.0)
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    def cut_all(self, reason: str = "cut", *, abort: bool = True) -> None:
        for link in self.links:
            if not link.closed.is_set():
                link.cut(reason, abort=abort)

    @property
    def open_links(self) -> list[Link]:
        return [link for link in self.links if not link.closed.is_set()]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = next(self._numbers)
        link = Link(number, self.plan(number) if self.plan is not None else Plan())
        self.links.append(link)
        link._writers.append(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            if self.refusing:
                link.cut("refused", abort=False)
                return
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(*self.upstream), 5.0
                )
            except (OSError, TimeoutError):
                link.cut("upstream unreachable", abort=False)
                return
            link._writers.append(up_writer)
            if link.closed.is_set():  # cut while connecting
                link.cut(link.cut_reason or "cut")
                return
            pumps = [
                asyncio.create_task(self._pump(link, Side.UP, reader, up_writer)),
                asyncio.create_task(self._pump(link, Side.DOWN, up_reader, writer)),
            ]
            closed = asyncio.create_task(link.closed.wait())
            try:
                await asyncio.wait([*pumps, closed], return_when=asyncio.FIRST_COMPLETED)
                # One way ended by itself: let the other drain a moment (a close
                # handshake), then end the link.
                if not link.closed.is_set():
                    await asyncio.wait([*pumps, closed], timeout=2.0)
            finally:
                for pending in (*pumps, closed):
                    pending.cancel()
                for pending in pumps:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await pending
            if not link.closed.is_set():
                link.cut("ended", abort=False)
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _pump(
        self, link: Link, side: Side, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        frames = _Frames() if self.hook is not None else None
        try:
            while not link.closed.is_set():
                data = await reader.read(CHUNK)
                if not data:
                    with contextlib.suppress(Exception):
                        writer.write_eof()
                    return
                if frames is None:
                    await self._forward(link, side, data, writer)
                    continue
                for raw, is_frame, message in frames.feed(data):
                    verdict = Verdict.PASS
                    if is_frame:
                        link.messages[side] += 1
                        verdict = await self._judge(link, side, message)
                    if link.closed.is_set():
                        return
                    if verdict is Verdict.CUT:
                        link.cut(f"hook cut a {side.value} message")
                        return
                    if verdict is Verdict.PASS:
                        await self._forward(link, side, raw, writer)
        except (ConnectionError, OSError):
            return

    async def _judge(self, link: Link, side: Side, message: Any) -> Verdict:
        assert self.hook is not None
        verdict = self.hook(link, side, message)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        return verdict if isinstance(verdict, Verdict) else Verdict.PASS

    async def _forward(
        self, link: Link, side: Side, data: bytes, writer: asyncio.StreamWriter
    ) -> None:
        """Write `data` one way, applying the link's plan to the bytes' offsets."""
        plan = link.plan
        if plan.delay:
            await asyncio.sleep(plan.delay)
        start = link.sent[side]
        end = start + len(data)
        if plan.stall is not None and plan.stall[0] is side and start <= plan.stall[1] < end:
            before = plan.stall[1] - start
            await self._write(link, side, data[:before], writer)
            link.fired = "stall"
            data = data[before:]
            if math.isinf(plan.stall[2]):
                await link.closed.wait()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(link.closed.wait(), plan.stall[2])
            if link.closed.is_set():
                return
        start = link.sent[side]
        end = start + len(data)
        if plan.cut is not None and plan.cut[0] is side and plan.cut[1] < end:
            keep = max(0, plan.cut[1] - start)
            await self._write(link, side, data[:keep], writer)
            link.fired = "cut"
            link.cut(f"plan cut {side.value} at byte {plan.cut[1]}", abort=plan.abort)
            return
        await self._write(link, side, data, writer)

    async def _write(
        self, link: Link, side: Side, data: bytes, writer: asyncio.StreamWriter
    ) -> None:
        if not data or link.closed.is_set():
            return
        writer.write(data)
        link.sent[side] += len(data)
        await writer.drain()
