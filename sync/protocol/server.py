"""The server side of one sync connection, as a sans-I/O state machine.

Rules of this module (PROTOCOL.md):

- The server feeds each frame it reads to `receive(frame, now)`; what the
  client asked for comes out of `events()`, frames to write out of
  `outgoing()`. When `close_code` is set the server closes the socket with it
  after writing what is outgoing. Nothing here reads a clock or a socket:
  `now` is handed in (monotonic seconds, for the rate limit).
- What each message may do in each state is one table, `_ALLOWED`; a message
  outside it is answered with `wrong_state` and changes nothing.
- A peer's mistake is answered with an `error` frame; an oversized frame, a
  flood, or `MAX_VIOLATIONS` mistakes close the connection. A server that
  calls a method in the wrong state has a bug: `ProtocolBug`.
- Authentication is the server's business: the connection only says a
  `hello` arrived and waits for `welcome` or `refuse`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from sync.protocol.codec import decode, encode
from sync.protocol.errors import CloseCode, ErrorCode, ProtocolBug, ProtocolViolation
from sync.protocol.messages import (
    PROTOCOL_VERSION,
    Changes,
    DecisionsRecorded,
    Direction,
    Error,
    Hello,
    Message,
    Mutation,
    Ping,
    Pong,
    Push,
    PushResult,
    RecordDecisions,
    Refresh,
    Resync,
    SignedIn,
    SignIn,
    Snapshot,
    SnapshotResume,
    Welcome,
    Wipe,
)

MAX_VIOLATIONS = 3
"""Mistakes a connection may make before it is closed."""
RATE_PER_SECOND = 50.0
RATE_BURST = 200.0


class State(Enum):
    OPEN = "open"
    """Connected; may sign in, refresh, or say hello."""
    AUTHENTICATING = "authenticating"
    """A hello arrived; the server is checking its token."""
    SYNCING = "syncing"
    """Welcomed; the server is sending the changes or snapshot the client missed."""
    LIVE = "live"
    """Caught up; pushes are decided and committed changes are broadcast."""
    CLOSED = "closed"


# --- events (what the client asked for) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignInRequested:
    message: SignIn


@dataclass(frozen=True, slots=True)
class RefreshRequested:
    message: Refresh


@dataclass(frozen=True, slots=True)
class HelloReceived:
    message: Hello


@dataclass(frozen=True, slots=True)
class PushReceived:
    ref: str
    mutations: tuple[Mutation, ...]


@dataclass(frozen=True, slots=True)
class SnapshotResumeRequested:
    message: SnapshotResume


@dataclass(frozen=True, slots=True)
class DecisionsReceived:
    message: RecordDecisions


Event = (
    SignInRequested | RefreshRequested | HelloReceived | PushReceived | SnapshotResumeRequested
    | DecisionsReceived
)  # fmt: skip

_ALLOWED: dict[State, frozenset[type]] = {
    State.OPEN: frozenset({SignIn, Refresh, Hello, Ping}),
    State.AUTHENTICATING: frozenset({Ping}),
    State.SYNCING: frozenset({Push, SnapshotResume, RecordDecisions, Ping, Refresh}),
    State.LIVE: frozenset({Push, SnapshotResume, RecordDecisions, Ping, Refresh}),
    State.CLOSED: frozenset(),
}


class ServerConnection:
    """One client's connection, from the server's side."""

    def __init__(self, now: float) -> None:
        self.state = State.OPEN
        self.close_code: int | None = None
        self._events: list[Event] = []
        self._outgoing: list[bytes] = []
        self._violations = 0
        self._tokens = RATE_BURST
        self._last = now

    # --- input ---------------------------------------------------------------------------

    def receive(self, frame: bytes | str, now: float) -> None:
        """Take one frame the client sent at `now`."""
        if not self._admitted(now):
            return
        try:
            message = decode(frame, Direction.TO_SERVER)
        except ProtocolViolation as violation:
            self._violation(violation)
            return
        self._dispatch(message)

    def receive_binary(self, now: float) -> None:
        """The client sent a binary frame: not part of the protocol (text frames only)."""
        if self._admitted(now):
            self._violation(
                ProtocolViolation(ErrorCode.MALFORMED, "binary frames are not part of the protocol")
            )

    def _admitted(self, now: float) -> bool:
        """False when closed, or when the frame is over the rate (which closes)."""
        if self.state is State.CLOSED:
            return False
        if not self._within_rate(now):
            self._fail(
                Error(ErrorCode.RATE_LIMITED, "too many messages", fatal=True),
                CloseCode.RATE_LIMITED,
            )
            return False
        return True

    def _within_rate(self, now: float) -> bool:
        elapsed = max(0.0, now - self._last)
        self._last = now
        self._tokens = min(RATE_BURST, self._tokens + elapsed * RATE_PER_SECOND)
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _dispatch(self, message: Message) -> None:
        if type(message) not in _ALLOWED[self.state]:
            ref = getattr(message, "ref", None)
            self._violation(
                ProtocolViolation(
                    ErrorCode.WRONG_STATE,
                    f"{type(message).__name__} is not allowed while {self.state.value}",
                    ref,
                )
            )
            return
        if isinstance(message, Ping):
            self._send(Pong(message.ref))
        elif isinstance(message, SignIn):
            self._events.append(SignInRequested(message))
        elif isinstance(message, Refresh):
            self._events.append(RefreshRequested(message))
        elif isinstance(message, Hello):
            if message.protocol != PROTOCOL_VERSION:
                self._fail(
                    Error(
                        ErrorCode.UNSUPPORTED_PROTOCOL,
                        f"this server speaks protocol {PROTOCOL_VERSION}",
                        fatal=True,
                    ),
                    CloseCode.PROTOCOL_ERROR,
                )
                return
            self.state = State.AUTHENTICATING
            self._events.append(HelloReceived(message))
        elif isinstance(message, Push):
            self._events.append(PushReceived(message.ref, message.mutations))
        elif isinstance(message, SnapshotResume):
            self._events.append(SnapshotResumeRequested(message))
        elif isinstance(message, RecordDecisions):
            self._events.append(DecisionsReceived(message))

    def _violation(self, violation: ProtocolViolation) -> None:
        self._violations += 1
        fatal = (
            violation.code in (ErrorCode.TOO_LARGE, ErrorCode.TOO_DEEP)
            or self._violations >= MAX_VIOLATIONS
        )
        error = Error(violation.code, violation.message, fatal, violation.ref)
        if fatal:
            code = (
                CloseCode.TOO_LARGE
                if violation.code is ErrorCode.TOO_LARGE
                else CloseCode.PROTOCOL_ERROR
            )
            self._fail(error, code)
        else:
            self._send(error)

    # --- output --------------------------------------------------------------------------

    def events(self) -> list[Event]:
        """What the client asked for since the last call, in order."""
        events, self._events = self._events, []
        return events

    def outgoing(self) -> list[bytes]:
        """Frames to write, in order, since the last call."""
        frames, self._outgoing = self._outgoing, []
        return frames

    def _send(self, message: Message) -> None:
        self._outgoing.append(encode(message))

    def _fail(self, error: Error, close_code: int) -> None:
        self._send(error)
        self.state = State.CLOSED
        self.close_code = close_code

    def _expect(self, *states: State) -> None:
        if self.state not in states:
            raise ProtocolBug(f"not allowed while {self.state.value}")

    # --- the server's answers ------------------------------------------------------------

    def signed_in(self, answer: SignedIn) -> None:
        self._expect(State.OPEN, State.SYNCING, State.LIVE)
        self._send(answer)

    def welcome(self, answer: Welcome) -> None:
        """The hello's token was good: catching up starts."""
        self._expect(State.AUTHENTICATING)
        self.state = State.SYNCING
        self._send(answer)

    def refuse(
        self, code: ErrorCode, message: str, *, ref: str | None = None, close: int | None = None
    ) -> None:
        """Answer a request with an error; with `close`, end the connection with that code."""
        self._expect(State.OPEN, State.AUTHENTICATING, State.SYNCING, State.LIVE)
        error = Error(code, message, close is not None, ref)
        if close is not None:
            self._fail(error, close)
        else:
            self._send(error)

    def changes(self, batch: Changes, encoded: bytes | None = None) -> None:
        """Changes the client has not seen; the last catch-up batch (more=false) makes it live.

        `encoded` is `encode(batch)` when the server already made it: one
        batch fanned out to many sessions is encoded once.
        """
        self._expect(State.SYNCING, State.LIVE)
        self._outgoing.append(encoded if encoded is not None else encode(batch))
        if not batch.more:
            self.state = State.LIVE

    def snapshot(self, chunk: Snapshot, encoded: bytes | None = None) -> None:
        """One chunk of a snapshot (`encoded` as for `changes`)."""
        self._expect(State.SYNCING, State.LIVE)
        self._outgoing.append(encoded if encoded is not None else encode(chunk))

    def push_result(self, result: PushResult) -> None:
        self._expect(State.SYNCING, State.LIVE)
        self._send(result)

    def decisions_recorded(self, answer: DecisionsRecorded) -> None:
        self._expect(State.SYNCING, State.LIVE)
        self._send(answer)

    def resync(self, reason: str) -> None:
        """The client fell too far behind: tell it, and close so it reconnects."""
        self._expect(State.SYNCING, State.LIVE)
        self._send(Resync(reason))
        self.state = State.CLOSED
        self.close_code = CloseCode.NORMAL

    def wipe(self, reason: str) -> None:
        """The device was revoked: tell it to wipe its replica, and close."""
        if self.state is State.CLOSED:
            return
        self._send(Wipe(reason))
        self.state = State.CLOSED
        self.close_code = CloseCode.REVOKED

    def going_away(self) -> None:
        """The server is shutting down."""
        if self.state is not State.CLOSED:
            self.state = State.CLOSED
            self.close_code = CloseCode.GOING_AWAY
