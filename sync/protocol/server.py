"""The server side of one sync connection, as a sans-I/O state machine.

Rules of this module (PROTOCOL.md):

- The server feeds each frame it reads to `receive(frame, now)`; what the
  client asked for comes out of `events()`, frames to write out of
  `outgoing()`. When `close_code` is set the server closes the socket with it
  after writing what is outgoing. Nothing here reads a clock or a socket:
  `now` is handed in (monotonic seconds, for the rate limit and deadlines).
- States and transitions are the tables of `sync.protocol.states`; a message
  the table does not allow is answered with `wrong_state` and changes nothing.
- A connection must say hello within `auth_timeout` seconds of opening
  (`deadline()`, then `expire(now)`), so an idle socket cannot be held open.
- A peer's mistake is answered with an `error` frame; an oversized frame, a
  flood, an unknown protocol version or `MAX_VIOLATIONS` mistakes close the
  connection. A server that calls a method in the wrong state has a bug:
  `ProtocolBug`.
- Authentication is the server's business: the connection only says a
  `hello` arrived and waits for `welcome` or `refuse`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sync.protocol.codec import decode, encode
from sync.protocol.errors import CloseCode, ErrorCode, ProtocolBug, ProtocolViolation
from sync.protocol.messages import (
    Changes,
    DecisionsRecorded,
    Direction,
    Enroll,
    Error,
    Hello,
    Invite,
    Invited,
    Message,
    Mutation,
    PasswordSet,
    Ping,
    Pong,
    Push,
    PushResult,
    RecordDecisions,
    Refresh,
    Resync,
    SetPassword,
    SignedIn,
    SignIn,
    Snapshot,
    SnapshotResume,
    Welcome,
    Wipe,
    WipeCode,
)
from sync.protocol.states import ALLOWED, TRANSITIONS, State, Trigger

MAX_VIOLATIONS = 3
"""Mistakes a connection may make before it is closed."""
RATE_PER_SECOND = 50.0
RATE_BURST = 200.0
AUTH_TIMEOUT = 10.0
"""Seconds a connection may stay open without saying hello."""


# --- events (what the client asked for) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignInRequested:
    message: SignIn


@dataclass(frozen=True, slots=True)
class EnrollRequested:
    message: Enroll


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


@dataclass(frozen=True, slots=True)
class InviteRequested:
    message: Invite


@dataclass(frozen=True, slots=True)
class SetPasswordRequested:
    message: SetPassword


@dataclass(frozen=True, slots=True)
class PingReceived:
    ref: str


Event = (
    SignInRequested | EnrollRequested | RefreshRequested | HelloReceived | PushReceived
    | SnapshotResumeRequested | DecisionsReceived | InviteRequested | SetPasswordRequested
    | PingReceived
)  # fmt: skip


class ServerConnection:
    """One client's connection, from the server's side."""

    def __init__(self, now: float, *, auth_timeout: float = AUTH_TIMEOUT) -> None:
        self.state = State.OPEN
        self.close_code: int | None = None
        self._events: list[Event] = []
        self._outgoing: list[bytes] = []
        self._violations = 0
        self._tokens = RATE_BURST
        self._last = now
        self._hello_by: float | None = now + auth_timeout

    def _move(self, trigger: Trigger) -> None:
        target = TRANSITIONS.get((self.state, trigger))
        if target is None:
            raise ProtocolBug(f"{trigger.value} is not allowed while {self.state.value}")
        self.state = target

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

    def deadline(self) -> float | None:
        """When `expire` must be called if nothing arrives before (None: no deadline)."""
        return self._hello_by if self.state is State.OPEN else None

    def expire(self, now: float) -> None:
        """Time has passed to `now`: a connection that has not said hello in time closes
        (nothing happens in any other state)."""
        if self.state is State.OPEN and self._hello_by is not None and now >= self._hello_by:
            self._fail(
                Error(ErrorCode.UNAUTHENTICATED, "no hello in time: sign in, then say hello",
                      fatal=True),
                CloseCode.AUTH_TIMEOUT,
            )  # fmt: skip

    def _admitted(self, now: float) -> bool:
        """False when closed, or when the frame is over the rate (which closes)."""
        self.expire(now)
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
        if type(message) not in ALLOWED[self.state]:
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
            self._events.append(PingReceived(message.ref))
        elif isinstance(message, SignIn):
            self._events.append(SignInRequested(message))
        elif isinstance(message, Enroll):
            self._events.append(EnrollRequested(message))
        elif isinstance(message, Refresh):
            self._events.append(RefreshRequested(message))
        elif isinstance(message, Hello):
            self._move(Trigger.HELLO)
            self._events.append(HelloReceived(message))
        elif isinstance(message, Push):
            self._events.append(PushReceived(message.ref, message.mutations))
        elif isinstance(message, SnapshotResume):
            self._events.append(SnapshotResumeRequested(message))
        elif isinstance(message, RecordDecisions):
            self._events.append(DecisionsReceived(message))
        elif isinstance(message, Invite):
            self._events.append(InviteRequested(message))
        elif isinstance(message, SetPassword):
            self._events.append(SetPasswordRequested(message))

    def _violation(self, violation: ProtocolViolation) -> None:
        self._violations += 1
        closing = {
            ErrorCode.TOO_LARGE: CloseCode.TOO_LARGE,
            ErrorCode.TOO_DEEP: CloseCode.PROTOCOL_ERROR,
            ErrorCode.UPGRADE_REQUIRED: CloseCode.UPGRADE_REQUIRED,
        }
        close = closing.get(violation.code)
        if close is None and self._violations >= MAX_VIOLATIONS:
            close = CloseCode.PROTOCOL_ERROR
        error = Error(violation.code, violation.message, close is not None, violation.ref)
        if close is not None:
            self._fail(error, close)
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
        self._close(close_code)

    def _close(self, close_code: int) -> None:
        self._move(Trigger.CLOSE)
        self.close_code = close_code

    def _expect(self, *states: State) -> None:
        if self.state not in states:
            raise ProtocolBug(f"not allowed while {self.state.value}")

    # --- the server's answers ------------------------------------------------------------

    def signed_in(self, answer: SignedIn) -> None:
        self._expect(State.OPEN, State.SYNCING, State.LIVE)
        self._send(answer)

    def pong(self, answer: Pong) -> None:
        """Answer a ping (`answer.server_time` is the server's wall clock)."""
        if self.state is not State.CLOSED:
            self._send(answer)

    def welcome(self, answer: Welcome) -> None:
        """The hello's token was good: catching up starts."""
        self._expect(State.AUTHENTICATING)
        self._move(Trigger.WELCOME)
        self._send(answer)

    def refuse(
        self,
        code: ErrorCode,
        message: str,
        *,
        ref: str | None = None,
        close: int | None = None,
        expected_seq: int | None = None,
    ) -> None:
        """Answer a request with an error; with `close`, end the connection with that code."""
        self._expect(State.OPEN, State.AUTHENTICATING, State.SYNCING, State.LIVE)
        error = Error(code, message, close is not None, ref, expected_seq)
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
            self._move(Trigger.CAUGHT_UP)

    def snapshot(self, chunk: Snapshot, encoded: bytes | None = None) -> None:
        """One chunk of a snapshot (`encoded` as for `changes`)."""
        self._expect(State.SYNCING, State.LIVE)
        self._outgoing.append(encoded if encoded is not None else encode(chunk))

    def push_result(self, results: Sequence[PushResult]) -> None:
        """The answer to a push: one message, or several of the same ref (`more`)."""
        self._expect(State.SYNCING, State.LIVE)
        for result in results:
            self._send(result)

    def decisions_recorded(self, answer: DecisionsRecorded) -> None:
        self._expect(State.SYNCING, State.LIVE)
        self._send(answer)

    def invited(self, answer: Invited) -> None:
        self._expect(State.SYNCING, State.LIVE)
        self._send(answer)

    def password_set(self, answer: PasswordSet) -> None:
        self._expect(State.SYNCING, State.LIVE)
        self._send(answer)

    def resync(self, reason: str) -> None:
        """The client fell too far behind: tell it, and close so it reconnects."""
        self._expect(State.SYNCING, State.LIVE)
        self._send(Resync(reason))
        self._close(CloseCode.NORMAL)

    def wipe(self, code: WipeCode, reason: str) -> None:
        """The device was revoked or the user removed: wipe the replica, and close."""
        if self.state is State.CLOSED:
            return
        self._send(Wipe(code, reason))
        self._close(CloseCode.REVOKED)

    def suspended(self, reason: str) -> None:
        """The user was suspended: end the session (the client keeps its replica)."""
        if self.state is State.CLOSED:
            return
        self._fail(Error(ErrorCode.SUSPENDED, reason, fatal=True), CloseCode.SUSPENDED)

    def going_away(self) -> None:
        """The server is shutting down."""
        if self.state is not State.CLOSED:
            self._close(CloseCode.GOING_AWAY)
