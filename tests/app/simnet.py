"""A simulated network between real sync clients and a `MemoryServer`, on a virtual clock.

Rules of this module:

- Time is virtual: `VirtualClock.now` (monotonic seconds) only moves when the
  `Scheduler` runs the next event, so a run is a pure function of its seed
  and never sleeps. Wall clocks are the epoch plus `now`, with a per-client
  skew that may also jump.
- A `SimSocket` carries text frames both ways in order (a websocket does
  not reorder), each after a seeded delay. `Faults` may drop a frame, and
  with it everything after it both ways, telling nobody (a connection that
  died half-open: only the client's timers can find out); deliver a frame
  twice; or cut the socket right after a frame (what was in flight is lost,
  both sides see it end). `lose` loses one frame and lets the socket go on,
  which no real transport does (TCP retransmits or the connection dies): it
  is off unless asked for, to explore what the protocol cannot recover from.
  A closed side's frames still arrive in order before its close; `blocks`
  drops the frames a predicate picks (for a test that needs one lost).
- `SimTransport` is `app.sync_client.Transport` without asyncio, step for
  step: it connects on `ConnectWanted` and then says `connected` with the
  cursor `SyncSession.hello_cursor` gave before the connect, feeds frames,
  closes on `close_code`, calls `expire` at `deadline()` and after every
  input, dispatches events to the session in the same two rounds, pushes and
  uploads on `wake` and whenever it waited `OUTBOX_POLL` seconds for nothing,
  and stops (closing its socket) when `until()` says so or its deadline passes.
  While it is connecting it does nothing else, as the real one awaits the
  connect.
- A client that is offline (`Network.offline`) cannot connect; its open
  socket is cut or goes silent when the partition starts.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from app.sync_client import OUTBOX_POLL, SyncSession
from sync.policy.instant import Instant
from sync.protocol import client as protocol
from sync.protocol.errors import CloseCode
from sync.replication.offline import seconds_instant
from tests.app.memory_server import MemoryServer, MemorySession

EPOCH = 1_790_000_000.0
"""The wall clock's start (late 2026), in seconds since the Unix epoch."""
ABNORMAL = 1006
"""The close code a client library reports for a connection that ended without a close."""
REAP_AFTER = 30.0
"""Seconds after which the server notices a silent socket the client gave up."""


class VirtualClock:
    """Monotonic seconds from 0, and wall clocks from `epoch`."""

    def __init__(self, epoch: float = EPOCH) -> None:
        self.now = 0.0
        self.epoch = epoch

    def mono(self) -> float:
        return self.now

    def wall_seconds(self, skew: float = 0.0) -> float:
        return self.epoch + self.now + skew

    def wall(self, skew: float = 0.0) -> Instant:
        return seconds_instant(self.wall_seconds(skew))


class Scheduler:
    """Events at virtual times, run in time order (ties in the order they were made)."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self.ran = 0

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (max(when, self.clock.now), next(self._order), action))

    def after(self, delay: float, action: Callable[[], None]) -> None:
        self.at(self.clock.now + delay, action)

    def next_time(self) -> float | None:
        return self._queue[0][0] if self._queue else None

    def run_until(self, end: float, stop: Callable[[], bool] = lambda: False) -> None:
        """Run every event due up to `end` (the clock then reads `end`), or until `stop()`."""
        while self._queue and self._queue[0][0] <= end:
            when, _, action = heapq.heappop(self._queue)
            self.clock.now = when
            self.ran += 1
            action()
            if stop():
                return
        self.clock.now = max(self.clock.now, end)


@dataclass(frozen=True, slots=True)
class Faults:
    """What the network does to frames (probabilities are per frame)."""

    latency: tuple[float, float] = (0.002, 0.05)
    slow: float = 0.0
    """A frame that takes 1 to 8 seconds (and holds up the ones after it)."""
    drop: float = 0.0
    """The frame and everything after it on its socket is lost, and nobody is told."""
    duplicate: float = 0.0
    cut: float = 0.0
    lose: float = 0.0
    """One frame is lost, and the socket goes on (beyond what a real transport does)."""
    connect_latency: tuple[float, float] = (0.005, 0.1)
    connect_fail: float = 0.0

    @property
    def calm(self) -> Faults:
        """The same latencies, and nothing else goes wrong."""
        return replace(self, slow=0.0, drop=0.0, duplicate=0.0, cut=0.0, lose=0.0,
                       connect_fail=0.0)  # fmt: skip


@dataclass(slots=True)
class NetworkStats:
    frames: int = 0
    dropped: int = 0
    lost: int = 0
    duplicated: int = 0
    cuts: int = 0
    connects: int = 0
    failed_connects: int = 0


class Network:
    """Sockets between clients' transports and the server (module rules)."""

    def __init__(
        self, scheduler: Scheduler, server: MemoryServer, rng: random.Random, faults: Faults
    ) -> None:
        self.scheduler = scheduler
        self.server = server
        self.rng = rng
        self.faults = faults
        self.offline: set[str] = set()
        self.sockets: list[SimSocket] = []
        self.blocks: list[Callable[[bool, bytes], bool]] = []
        """Predicates of (to the server, frame): a frame one picks is lost."""
        self.stats = NetworkStats()

    def delay(self) -> float:
        low, high = self.faults.latency
        extra = self.rng.uniform(1.0, 8.0) if self.rng.random() < self.faults.slow else 0.0
        return self.rng.uniform(low, high) + extra

    def connect(
        self,
        transport: SimTransport,
        opened: Callable[[SimSocket], None],
        failed: Callable[[str], None],
    ) -> None:
        """Open a socket for `transport` after the connect latency, or fail."""
        self.stats.connects += 1
        low, high = self.faults.connect_latency

        def done() -> None:
            if transport.name in self.offline or self.rng.random() < self.faults.connect_fail:
                self.stats.failed_connects += 1
                failed(f"cannot reach the server ({transport.name} is offline)")
                return
            socket = SimSocket(self, transport)
            self.sockets.append(socket)
            opened(socket)

        self.scheduler.after(self.rng.uniform(low, high), done)

    def partition(self, name: str) -> None:
        """`name` goes offline: its sockets are cut or go silent."""
        self.offline.add(name)
        for socket in list(self.sockets):
            if socket.transport.name == name and not socket.dead:
                if self.rng.random() < 0.5:
                    socket.cut()
                else:
                    socket.silence()

    def reconnect(self, name: str) -> None:
        self.offline.discard(name)

    def in_flight(self) -> int:
        return sum(s.pending for s in self.sockets)


class SimSocket:
    """One websocket between a transport and a server session (module rules)."""

    def __init__(self, network: Network, transport: SimTransport) -> None:
        self.network = network
        self.transport = transport
        self.session: MemorySession = network.server.accept(self._from_server, self._server_closed)
        now = network.scheduler.clock.now
        self._to_server_at = now
        self._to_client_at = now
        self.client_closed = False
        self.server_closed = False
        self.dead = False
        """Cut, or both sides closed: nothing more moves."""
        self.silent = False
        self.client_told = False
        """The client has been told the socket ended (or closed it itself)."""
        self.pending = 0
        self._schedule_server_deadline()

    # --- moving frames ---------------------------------------------------------------------

    def _arrival(self, to_server: bool) -> float:
        now = self.network.scheduler.clock.now
        if to_server:
            self._to_server_at = max(self._to_server_at, now + self.network.delay())
            return self._to_server_at
        self._to_client_at = max(self._to_client_at, now + self.network.delay())
        return self._to_client_at

    def _carry(self, to_server: bool, frame: bytes | None, deliver: Callable[[], None]) -> None:
        """Carry one frame (None: a close) with the faults of the network."""
        network, faults = self.network, self.network.faults
        if self.dead or self.silent:
            return
        network.stats.frames += 1
        rng = network.rng
        if frame is not None and any(block(to_server, frame) for block in network.blocks):
            network.stats.lost += 1
            return
        if rng.random() < faults.drop:
            network.stats.dropped += 1
            self.silence()
            return
        if rng.random() < faults.lose:
            network.stats.lost += 1
            return
        copies = 2 if frame is not None and rng.random() < faults.duplicate else 1
        network.stats.duplicated += copies - 1
        for _ in range(copies):
            self._schedule(self._arrival(to_server), deliver)
        if rng.random() < faults.cut:
            network.stats.cuts += 1
            self.network.scheduler.after(rng.uniform(0.0, 0.05), self.cut)

    def _schedule(self, when: float, deliver: Callable[[], None]) -> None:
        self.pending += 1

        def arrive() -> None:
            self.pending -= 1
            if not self.dead and not self.silent:
                deliver()

        self.network.scheduler.at(when, arrive)

    def send_to_server(self, frame: bytes) -> None:
        """The client writes a frame."""
        if self.client_closed:
            return
        self._carry(True, frame, lambda: self._to_server(frame))

    def _to_server(self, frame: bytes) -> None:
        if self.server_closed:
            return
        self.session.receive(frame.decode("utf-8"))
        self._schedule_server_deadline()

    def _from_server(self, frame: bytes) -> None:
        self._carry(False, frame, lambda: self._to_client(frame))

    def _to_client(self, frame: bytes) -> None:
        if self.client_closed:
            return
        self.transport.frame_arrived(self, frame)

    def _schedule_server_deadline(self) -> None:
        deadline = self.session.deadline()
        if deadline is not None:
            self.network.scheduler.at(deadline, self._server_expire)

    def _server_expire(self) -> None:
        if not self.server_closed and not self.dead:
            self.session.expire()

    # --- ends ------------------------------------------------------------------------------

    def close_from_client(self, code: int) -> None:
        """The client closes (its transport forgets the socket at once)."""
        if self.client_closed:
            return
        self.client_closed = self.client_told = True
        if self.dead or self.silent:
            # Nobody hears the close: the server notices later (TCP, its watchdog).
            self.network.scheduler.after(REAP_AFTER, self._server_end)
            return
        self._carry(True, None, self._server_end)
        if self.server_closed:
            self.dead = True

    def _server_end(self) -> None:
        if not self.server_closed:
            self.server_closed = True
            self.session.ended()

    def _server_closed(self, code: int) -> None:
        """The server closes after what it wrote; the client hears it after those frames."""
        self.server_closed = True
        self._carry(False, None, lambda: self._tell_client(code, ""))

    def _tell_client(self, code: int | None, reason: str) -> None:
        if self.client_told:
            return
        self.client_told = True
        self.transport.socket_ended(self, code, reason)
        if self.server_closed:
            self.dead = True

    def cut(self) -> None:
        """The connection breaks: what was in flight is lost; both sides see it end."""
        if self.dead:
            return
        self.dead = True
        self.silent = False
        rng, scheduler = self.network.rng, self.network.scheduler
        if not self.client_told:
            self.client_told = True

            def tell() -> None:
                self.transport.socket_ended(self, ABNORMAL, "")

            scheduler.after(rng.uniform(0.001, 0.05), tell)
        if not self.server_closed:
            scheduler.after(rng.uniform(0.001, 0.05), self._server_end)

    def silence(self) -> None:
        """Nothing more arrives either way, and nobody is told."""
        if not self.dead:
            self.silent = True
            if self.client_closed:
                self.network.scheduler.after(REAP_AFTER, self._server_end)


@dataclass(slots=True)
class TransportStats:
    steps: int = 0
    events: int = 0


class SimTransport:
    """`app.sync_client.Transport`, stepped by the scheduler (module rules).

    `until` and `deadline` are those of `Transport.run`; `step` is called after
    every step with the transport (for the checks of a simulation).
    """

    def __init__(
        self,
        network: Network,
        name: str,
        session: SyncSession,
        *,
        mono: Callable[[], float],
        until: Callable[[], bool],
        deadline: float | None = None,
        step: Callable[[SimTransport], None] = lambda transport: None,
        stopped: Callable[[SimTransport], None] = lambda transport: None,
    ) -> None:
        self.network = network
        self.name = name
        self.session = session
        self.connection = session.connection
        self.mono = mono
        self.until = until
        self.deadline = deadline
        self.step = step
        self.stopped = stopped
        self.socket: SimSocket | None = None
        self.running = False
        self.connecting = False
        self._connect = False
        self._wake = False
        self._timer = 0
        self.stats = TransportStats()
        self.events: list[protocol.Event] = []
        """Every event the connection gave, in order (for the checks)."""
        self.trace: list[str] | None = None
        """With a list: what went in and out, one line each (for reading a failed run)."""

    def note(self, what: str) -> None:
        if self.trace is not None:
            self.trace.append(f"{self.mono():9.3f} {what}")

    # --- the loop --------------------------------------------------------------------------

    def start(self) -> None:
        """`Transport.run` begins."""
        self.running = True
        self.connection.start(self.mono())
        if self.deadline is not None:
            self.network.scheduler.at(self.deadline, self._deadline_passed)
        self._loop()

    def _loop(self) -> None:
        """One pass of `Transport.run`'s loop, up to where it would wait."""
        while self.running:
            self.stats.steps += 1
            self._dispatch()
            self._flush()
            self.step(self)
            if self.until():
                self.stop()
                return
            if self._connect:
                self._connect = False
                self._open()
                return
            if self.deadline is not None and self.mono() >= self.deadline:
                self.stop()
                return
            self.session.idle()
            if self._wake:  # `_wait` returns at once: the wake was set meanwhile
                self._wake = False
                self.session.push()
                self.session.upload()
                self.connection.expire(self.mono())
                continue
            self._arm_timer()
            return

    def stop(self) -> None:
        """`Transport.run`'s `finally`: stop, dispatch, flush, drop the socket."""
        if not self.running:
            return
        self.running = False
        self.connection.stop(self.mono())
        self._dispatch()
        self._flush()
        self._drop()
        self.step(self)
        self.stopped(self)

    def wake(self) -> None:
        """Something changed outside (a local edit or decision): look at the outbox again."""
        if not self.running:
            return
        self._wake = True
        if not self.connecting:
            self._loop()

    def _dispatch(self) -> None:
        events = self.connection.events()
        if not events:
            return
        self._handle(events)
        more = self.connection.events()
        if more:
            self._handle(more)

    def _handle(self, events: list[protocol.Event]) -> None:
        self.stats.events += len(events)
        self.events += events
        for event in events:
            if isinstance(event, protocol.ConnectWanted):
                self._connect = True
        self.session.handle(events)

    def _flush(self) -> None:
        frames = self.connection.outgoing()
        socket = self.socket
        if socket is not None:
            for frame in frames:
                self.note(f"-> {frame[:150].decode(errors='replace')}")
                socket.send_to_server(frame)
        if self.connection.close_code is not None and socket is not None:
            code = self.connection.close_code
            self.connection.close_code = None
            self.socket = None
            self.note(f"closes the socket ({code})")
            socket.close_from_client(code)

    def _drop(self) -> None:
        socket, self.socket = self.socket, None
        if socket is not None:
            socket.close_from_client(CloseCode.NORMAL)

    def _open(self) -> None:
        cursor, resume = self.session.hello_cursor()
        self.connecting = True

        def opened(socket: SimSocket) -> None:
            self.connecting = False
            if not self.running:
                socket.close_from_client(CloseCode.NORMAL)
                return
            self.socket = socket
            self.note(f"connected (cursor {cursor}, resume {resume})")
            self.connection.connected(self.mono(), cursor, resume)
            self._loop()

        def failed(reason: str) -> None:
            self.connecting = False
            if not self.running:
                return
            self.note(f"could not connect: {reason}")
            self.connection.disconnected(self.mono(), None, reason)
            self._loop()

        self.network.connect(self, opened, failed)

    def _arm_timer(self) -> None:
        """`Transport.run`'s wait: until the connection's deadline or the run's, and at
        most `OUTBOX_POLL` seconds (the outbox is looked at again then)."""
        now = self.mono()
        limits = [t for t in (self.connection.deadline(), self.deadline) if t is not None]
        timeout = max(0.0, min(limits) - now) if limits else OUTBOX_POLL
        self._timer += 1
        token = self._timer
        self.network.scheduler.at(now + min(timeout, OUTBOX_POLL),
                                  lambda: self._timer_fired(token))  # fmt: skip

    def _timer_fired(self, token: int) -> None:
        """The wait timed out: the outbox and the chain are looked at, timers fire."""
        if token != self._timer or not self.running or self.connecting:
            return
        self.session.push()
        self.session.upload()
        self.connection.expire(self.mono())
        self._loop()

    def _deadline_passed(self) -> None:
        if self.running and not self.connecting:
            self._loop()  # it stops there (or once the connect is done)

    # --- input -----------------------------------------------------------------------------

    def frame_arrived(self, socket: SimSocket, frame: bytes) -> None:
        if not self.running or self.connecting or socket is not self.socket:
            return  # from a socket given up already
        now = self.mono()
        self.note(f"<- {frame[:150].decode(errors='replace')}")
        self.connection.receive(frame.decode("utf-8"), now)
        self.connection.expire(now)
        self._loop()

    def socket_ended(self, socket: SimSocket, code: int | None, reason: str) -> None:
        if not self.running or self.connecting or socket is not self.socket:
            return
        now = self.mono()
        self.note(f"socket ended {code}")
        self.socket = None
        self.connection.disconnected(now, code, reason)
        self.connection.expire(now)
        self._loop()
