"""The client side of sync connections, as a sans-I/O state machine.

Rules of this module (PROTOCOL.md):

- One `ClientConnection` spans the client's whole run, across sockets (the
  server's spans one socket). The app's transport calls `start(now)`; opens a
  socket on `ConnectWanted` and says `connected(now, cursor, resume)`; feeds
  every text frame to `receive(frame, now)` and a binary one to
  `receive_binary(now)`; writes `outgoing()`; closes the socket with
  `close_code` once that is set, and then calls nothing more for that socket
  (`close_code` is None again from the next `connected`); says
  `disconnected(now, code, reason)` when the socket ended by itself, or could
  not be opened; calls `expire(now)` when `deadline()` is reached; and acts on
  `events()`. Nothing here reads a clock, a socket or a random source: `now`
  (monotonic seconds) and `rng` are handed in.
- States and transitions are the tables below, `ClientState` and
  `TRANSITIONS`; a state change the table lacks is our bug (`ProtocolBug`).
  `EXPECTED[state]` is every message the server may send in a state with a
  socket. A frame that does not decode, a binary frame, a message the state
  does not expect, or an answer to nothing asked means the server misbehaved:
  the socket is given up (1008) and the client backs off.
- The app asking for something the state does not allow (`push` while a push
  is in flight, `connected` when no socket was wanted) raises `ProtocolBug`
  before anything changes. The transport's inputs (`connected`, `receive`,
  `receive_binary`, `disconnected`) first apply
  `expire(now)`; the app's requests (`start`, `stop`, `sign_in`, `push`, ...)
  do not, so a request the app checked (`can_push`) is never refused because
  of a timer it did not see.
- A socket is open from `connected` until it ends or is given up. Frames and
  `disconnected` calls when none is open or being opened (for one given up
  here) are ignored. While CONNECTING, `disconnected` means the attempt
  failed, whatever its code: the transport must not report there a socket it
  was told to close (`close_code`), since a new one may already be asked for.
- Liveness: from `connected` on, a `ping` goes out every `ping_every` seconds;
  no `pong` within `pong_within` of a ping, no answer to a push within
  `answer_within` of sending it (or of its last partial answer), or no answer
  to an upload of decisions within `answer_within` of sending it, gives the
  socket up. The answers of a socket's other requests are then lost: an
  in-flight push or upload is forgotten (the app pushes again from its lowest
  unanswered seq, and the server answers a seq it has seen with its earlier
  outcome), an invite or password reset is reported failed with code None.
- Backoff is full jitter, at least `backoff_base`: a reconnect waits
  `max(base, rng() * min(cap, base * 2**attempt))`, where `attempt` counts
  failed connections in a row, this one included, and is reset when a session
  reaches LIVE; a refused push waits likewise, counting refused pushes in a row
  (reset by an answer). A resync, a refused access token and `resnapshot`
  reconnect at once, without backoff.
- WIPED, UPGRADE_REQUIRED and SIGN_IN_NEEDED are terminal: the connection does
  not go on by itself; only `sign_in` leaves SIGN_IN_NEEDED. Only a wipe drops
  the replica and its outbox; every other end keeps the pending edits.
- Every state change is also the event `StateChanged(old, new)`. A received
  message's own event comes first, then the `StateChanged`, then what the new
  state asks of the app (`ConnectWanted`, `Disconnected`, `SignInNeeded`,
  `CaughtUp`, `ReadyToPush`, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from sync.policy.document import holds_unstorable
from sync.protocol.codec import decode, encode
from sync.protocol.errors import CloseCode, ErrorCode, ProtocolBug, ProtocolViolation
from sync.protocol.messages import (
    MAX_BATCH,
    MAX_INT,
    PROTOCOL_VERSION,
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
    OfflineDecision,
    PasswordSet,
    Ping,
    Pong,
    Push,
    PushResult,
    RecordDecisions,
    Refresh,
    Result,
    Resume,
    Resync,
    SetPassword,
    SignedIn,
    SignIn,
    Snapshot,
    Welcome,
    Wipe,
    WipeCode,
)

PING_EVERY = 15.0
PONG_WITHIN = 10.0
ANSWER_WITHIN = 30.0
"""Seconds a push or an upload of decisions may go unanswered before its socket is
given up."""
BACKOFF_BASE = 0.5
BACKOFF_CAP = 60.0
INVITE_HOURS = 720
"""The longest an invitation may run (PROTOCOL.md § Messages, client to server)."""


# --- states and transitions ------------------------------------------------------------


class ClientState(Enum):
    IDLE = "idle"
    """Not started, or stopped by the app."""
    WAITING = "waiting"
    """No socket; a reconnect timer runs."""
    CONNECTING = "connecting"
    """A socket was asked for (`ConnectWanted`)."""
    SIGNING_IN = "signing_in"
    """`sign_in`, `enroll` or `refresh` went out on this socket; waiting for `signed_in`."""
    AUTHENTICATING = "authenticating"
    """`hello` went out; waiting for `welcome`."""
    SYNCING = "syncing"
    """Welcomed; the snapshot or changes missed are arriving."""
    LIVE = "live"
    """Caught up (a `changes` with `more: false`); pushes may go out."""
    WIPED = "wiped"
    """Terminal: the device was revoked or the user removed."""
    UPGRADE_REQUIRED = "upgrade_required"
    """Terminal: the server speaks another protocol version."""
    SIGN_IN_NEEDED = "sign_in_needed"
    """Terminal until the app calls `sign_in` with a person's credentials."""


class Trigger(Enum):
    START = "start"
    """The app started a connection that has something to sign in with."""
    NO_CREDENTIALS = "no_credentials"
    """Nothing left to sign in with: no tokens, or refused ones, and no good credentials;
    or the user is suspended, or the client id is another's."""
    SIGN_IN = "sign_in"
    """The app handed in a person's credentials."""
    RETRY = "retry"
    """The reconnect timer ran out."""
    SIGN_IN_SENT = "sign_in_sent"
    """`sign_in`, `enroll` or `refresh` went out."""
    HELLO_SENT = "hello_sent"
    WELCOME = "welcome"
    CAUGHT_UP = "caught_up"
    """The first `changes` with `more: false` of the session arrived."""
    SOCKET_LOST = "socket_lost"
    """The socket ended, was given up or could not be opened: back off."""
    RECONNECT_NOW = "reconnect_now"
    """A resync, a refused access token, or `resnapshot`: a new socket at once."""
    STOP = "stop"
    WIPE = "wipe"
    UPGRADE = "upgrade"


_ON_A_SOCKET = frozenset(
    {ClientState.SIGNING_IN, ClientState.AUTHENTICATING, ClientState.SYNCING, ClientState.LIVE}
)
TERMINAL = frozenset({ClientState.WIPED, ClientState.UPGRADE_REQUIRED, ClientState.SIGN_IN_NEEDED})
_ENDS: dict[Trigger, ClientState] = {
    Trigger.SOCKET_LOST: ClientState.WAITING,
    Trigger.RECONNECT_NOW: ClientState.CONNECTING,
    Trigger.STOP: ClientState.IDLE,
    Trigger.WIPE: ClientState.WIPED,
    Trigger.UPGRADE: ClientState.UPGRADE_REQUIRED,
    Trigger.NO_CREDENTIALS: ClientState.SIGN_IN_NEEDED,
}
"""How an open socket may end."""

TRANSITIONS: dict[tuple[ClientState, Trigger], ClientState] = {
    (ClientState.IDLE, Trigger.START): ClientState.CONNECTING,
    (ClientState.IDLE, Trigger.NO_CREDENTIALS): ClientState.SIGN_IN_NEEDED,
    (ClientState.SIGN_IN_NEEDED, Trigger.SIGN_IN): ClientState.CONNECTING,
    (ClientState.WAITING, Trigger.RETRY): ClientState.CONNECTING,
    (ClientState.WAITING, Trigger.RECONNECT_NOW): ClientState.CONNECTING,
    (ClientState.WAITING, Trigger.STOP): ClientState.IDLE,
    (ClientState.CONNECTING, Trigger.SIGN_IN_SENT): ClientState.SIGNING_IN,
    (ClientState.CONNECTING, Trigger.HELLO_SENT): ClientState.AUTHENTICATING,
    (ClientState.CONNECTING, Trigger.SOCKET_LOST): ClientState.WAITING,  # could not connect
    (ClientState.CONNECTING, Trigger.STOP): ClientState.IDLE,
    # Connected with nothing left to sign in with (a refused refresh, then the socket lost).
    (ClientState.CONNECTING, Trigger.NO_CREDENTIALS): ClientState.SIGN_IN_NEEDED,
    # A refused refresh: sign in with the credentials on the same socket.
    (ClientState.SIGNING_IN, Trigger.SIGN_IN_SENT): ClientState.SIGNING_IN,
    (ClientState.SIGNING_IN, Trigger.HELLO_SENT): ClientState.AUTHENTICATING,
    (ClientState.AUTHENTICATING, Trigger.WELCOME): ClientState.SYNCING,
    (ClientState.SYNCING, Trigger.CAUGHT_UP): ClientState.LIVE,
    **{(state, trigger): end for state in _ON_A_SOCKET for trigger, end in _ENDS.items()},
}

_SESSION = frozenset(
    {Snapshot, Changes, PushResult, DecisionsRecorded, Invited, PasswordSet, Resync, Wipe, Pong,
     Error}
)  # fmt: skip
EXPECTED: dict[ClientState, frozenset[type]] = {
    # A refused sign-in or refresh may be followed by a wipe (device revoked, user removed).
    ClientState.SIGNING_IN: frozenset({SignedIn, Wipe, Pong, Error}),
    ClientState.AUTHENTICATING: frozenset({Welcome, Wipe, Pong, Error}),
    ClientState.SYNCING: _SESSION,
    ClientState.LIVE: _SESSION,
}
"""What the server may send in each state with a socket."""


# --- what the client signs in with -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tokens:
    """What `signed_in` gave: the app keeps `refresh_token` (it outlives the process)."""

    access_token: str | None
    refresh_token: str

    def __repr__(self) -> str:  # never a token in a log line
        access = "None" if self.access_token is None else "..."
        return f"Tokens(access_token={access}, refresh_token=...)"


@dataclass(frozen=True, slots=True)
class Password:
    tenant: str
    user: str
    password: str

    def __repr__(self) -> str:
        return f"Password(tenant={self.tenant!r}, user={self.user!r}, ...)"

    def problem(self) -> str | None:
        """Why no server could take these credentials (a field holding what no store
        can: the server refuses the message unread), or None. Names no secret."""
        for name in ("tenant", "user", "password"):
            if holds_unstorable(getattr(self, name)):
                return f"the {name} holds a NUL character or an unpaired surrogate"
        return None


@dataclass(frozen=True, slots=True)
class Invitation:
    """A first sign-in with a one-time code from `invite`, setting the user's password."""

    tenant: str
    user: str
    code: str
    password: str

    def __repr__(self) -> str:
        return f"Invitation(tenant={self.tenant!r}, user={self.user!r}, ...)"


Credentials = Password | Invitation


# --- events (what the app must act on) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class StateChanged:
    old: ClientState
    new: ClientState


@dataclass(frozen=True, slots=True)
class ConnectWanted:
    """Open a socket, then call `connected` (with cursor 0 after `resnapshot`)."""


@dataclass(frozen=True, slots=True)
class SignInNeeded:
    """Ask the person to sign in, then call `sign_in`; the replica is kept."""

    reason: str


@dataclass(frozen=True, slots=True)
class SignedInReceived:
    """New tokens (also in `ClientConnection.tokens`): store the refresh token."""

    message: SignedIn


@dataclass(frozen=True, slots=True)
class Welcomed:
    message: Welcome


@dataclass(frozen=True, slots=True)
class SnapshotReceived:
    message: Snapshot


@dataclass(frozen=True, slots=True)
class ChangesReceived:
    message: Changes


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """The session is live: every change committed from now on arrives as it is made."""


@dataclass(frozen=True, slots=True)
class ReadyToPush:
    """`push` may be called (`can_push`): push the outbox from its lowest unanswered seq."""


@dataclass(frozen=True, slots=True)
class ReadyToUpload:
    """`record_decisions` may be called: upload the offline decisions not yet recorded."""


@dataclass(frozen=True, slots=True)
class PushAnswered:
    """Every outcome of push `ref`, in order, joined from its `push_result` messages."""

    ref: str
    results: tuple[Result, ...]


@dataclass(frozen=True, slots=True)
class PushRefused:
    """The whole push `ref` was refused and nothing of it recorded. `seq_gap`: push
    again from `expected_seq` (`ReadyToPush` follows at once); `unsupported_op`: hold
    the edit back for a server that accepts its op; otherwise `ReadyToPush` follows
    after a backoff."""

    ref: str
    code: ErrorCode
    message: str
    expected_seq: int | None


@dataclass(frozen=True, slots=True)
class DecisionsAcknowledged:
    """The chain may be pruned through `message.through`."""

    message: DecisionsRecorded


@dataclass(frozen=True, slots=True)
class DecisionsRefused:
    ref: str
    code: ErrorCode
    message: str


@dataclass(frozen=True, slots=True)
class RequestAnswered:
    """An `invite` or `set_password` succeeded."""

    message: Invited | PasswordSet


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """An `invite` or `set_password` was refused; `code` None: the socket ended before
    an answer, so whether it was carried out is not known."""

    ref: str
    code: ErrorCode | None
    message: str


@dataclass(frozen=True, slots=True)
class PongReceived:
    """The server's wall clock (`server_time`) as of `now` on the client's monotonic clock."""

    server_time: str
    now: float


@dataclass(frozen=True, slots=True)
class Disconnected:
    """No socket until `retry_at` (monotonic seconds), when a new one is asked for.
    `code` is the close code the socket ended with (None: it was given up here, or
    never opened)."""

    code: int | None
    reason: str
    retry_at: float


@dataclass(frozen=True, slots=True)
class ResyncRequested:
    """The server asked for a new session (too far behind, or an import): one follows."""

    reason: str


@dataclass(frozen=True, slots=True)
class UpgradeRequired:
    """The server speaks another protocol version: upgrade the client (the outbox is kept)."""

    message: str


@dataclass(frozen=True, slots=True)
class Wiped:
    """The device was revoked or the user removed: wipe the replica, its outbox of
    unpushed edits included (the only end that drops the outbox), and sign out.
    `code` is None when only the close code (4409) said so."""

    code: WipeCode | None
    reason: str


@dataclass(frozen=True, slots=True)
class ServerMisbehaved:
    """The server sent something the protocol does not allow; the socket was given up."""

    message: str


@dataclass(frozen=True, slots=True)
class ServerError:
    """An `error` answering nothing the client is waiting for."""

    error: Error


Event = (
    StateChanged | ConnectWanted | SignInNeeded | SignedInReceived | Welcomed | SnapshotReceived
    | ChangesReceived | CaughtUp | ReadyToPush | ReadyToUpload | PushAnswered | PushRefused
    | DecisionsAcknowledged | DecisionsRefused | RequestAnswered | RequestFailed | PongReceived
    | Disconnected | ResyncRequested | UpgradeRequired | Wiped | ServerMisbehaved | ServerError
)  # fmt: skip


@dataclass(slots=True)
class _PushInFlight:
    ref: str
    count: int
    due: float
    results: list[Result] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _UploadInFlight:
    ref: str
    due: float


_REFUSED_TOKEN = frozenset({ErrorCode.EXPIRED_TOKEN, ErrorCode.UNAUTHENTICATED})
_REFUSED_REFRESH = frozenset({ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN})
_REFUSED_CREDENTIALS = frozenset(
    {ErrorCode.UNAUTHENTICATED, ErrorCode.WEAK_PASSWORD, ErrorCode.RATE_LIMITED}
)
_NOTHING_TO_SIGN_IN_WITH = "no tokens and no credentials: sign in"


class ClientConnection:
    """The client's sync connection, across its sockets."""

    def __init__(
        self,
        *,
        device: str,
        client: str,
        rng: Callable[[], float],
        tokens: Tokens | None = None,
        credentials: Credentials | None = None,
        ping_every: float = PING_EVERY,
        pong_within: float = PONG_WITHIN,
        answer_within: float = ANSWER_WITHIN,
        backoff_base: float = BACKOFF_BASE,
        backoff_cap: float = BACKOFF_CAP,
    ) -> None:
        """`rng` returns a float in [0, 1) (e.g. `random.Random(seed).random`), for the
        jitter of backoffs; `tokens` and `credentials` are what the client signs in with
        (tokens first, the refresh token before the credentials)."""
        self.device = device
        self.client = client
        self.state = ClientState.IDLE
        self.close_code: int | None = None
        """Close the current socket with this code (None again from the next `connected`)."""
        self.tokens = tokens
        self._credentials = credentials
        self._rng = rng
        self._ping_every = ping_every
        self._pong_within = pong_within
        self._answer_within = answer_within
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._events: list[Event] = []
        self._outgoing: list[bytes] = []
        self._refs = 0
        # Across sockets.
        self._attempt = 0
        self._retry_at: float | None = None
        self._push_failures = 0
        # The current socket (see _socket_ended).
        self._cursor = 0
        self._resume: Resume | None = None
        self._auth_ref: str | None = None
        self._auth_kind: type[SignIn | Enroll | Refresh] | None = None
        self._hello_token_fresh: bool | None = None
        self._barrier: tuple[str, str] | None = None
        """A ping after a refused refresh, and the refusal: a wipe may come before its pong."""
        self._ping_at: float | None = None
        self._pings: dict[str, float] = {}
        self._push: _PushInFlight | None = None
        self._push_retry_at: float | None = None
        self._upload: _UploadInFlight | None = None
        self._requests: dict[str, type[Invited | PasswordSet]] = {}

    @property
    def credentials(self) -> Credentials | None:
        """The credentials not yet used up (dropped after a sign-in with them, good or refused)."""
        return self._credentials

    @property
    def can_push(self) -> bool:
        return self.state is ClientState.LIVE and self._push is None

    @property
    def can_upload(self) -> bool:
        return self.state in (ClientState.SYNCING, ClientState.LIVE) and self._upload is None

    def _move(self, trigger: Trigger) -> None:
        target = TRANSITIONS.get((self.state, trigger))
        if target is None:
            raise ProtocolBug(f"{trigger.value} is not allowed while {self.state.value}")
        if target is not self.state:
            self._events.append(StateChanged(self.state, target))
            self.state = target

    def _expect(self, *states: ClientState) -> None:
        if self.state not in states:
            raise ProtocolBug(f"not allowed while {self.state.value}")

    # --- the app's requests ----------------------------------------------------------------

    def start(self, now: float) -> None:
        """Begin: ask for a socket, or for a sign-in when there is nothing to sign in with.

        Raises ProtocolBug unless IDLE.
        """
        self._expect(ClientState.IDLE)
        if self.tokens is None and self._credentials is None:
            self._sign_in_needed(_NOTHING_TO_SIGN_IN_WITH)
        else:
            self._reconnect(Trigger.START)

    def stop(self, now: float) -> None:
        """Give the socket up (or the wait for one) and go IDLE; nothing in a terminal state."""
        if self.state is ClientState.IDLE or self.state in TERMINAL:
            return
        if self.state is not ClientState.WAITING:
            self._give_up(CloseCode.NORMAL)
        self._retry_at = None
        self._move(Trigger.STOP)

    def sign_in(self, credentials: Credentials, now: float) -> None:
        """A person's credentials after `SignInNeeded`: the next socket signs in with them
        (the old tokens are forgotten). Raises ProtocolBug unless SIGN_IN_NEEDED."""
        self._expect(ClientState.SIGN_IN_NEEDED)
        self._credentials = credentials
        self.tokens = None
        self._reconnect(Trigger.SIGN_IN)

    def resnapshot(self, now: float) -> None:
        """The replica's digest differs from the server's: a new socket at once, which the
        app opens with cursor 0. Nothing happens while CONNECTING (the socket being opened
        will do), IDLE or in a terminal state (no session to redo: the app may be acting
        on events read before it stopped)."""
        if self.state is ClientState.CONNECTING or self.state is ClientState.IDLE:
            return
        if self.state in TERMINAL:
            return
        if self.state is not ClientState.WAITING:
            self._give_up(CloseCode.NORMAL)
        self._retry_at = None
        self._reconnect(Trigger.RECONNECT_NOW)

    def push(self, mutations: Sequence[Mutation], now: float) -> str:
        """Send 1 to MAX_BATCH mutations; the answer is `PushAnswered` or `PushRefused`
        with the ref returned. Raises ProtocolBug unless `can_push`."""
        if not self.can_push:
            raise ProtocolBug(
                f"push not allowed while {self.state.value}"
                + (" with a push in flight" if self._push is not None else "")
            )
        if not 1 <= len(mutations) <= MAX_BATCH:
            raise ProtocolBug(f"a push carries 1 to {MAX_BATCH} mutations, not {len(mutations)}")
        ref = self._ref()
        self._send(Push(ref, tuple(mutations)))
        self._push = _PushInFlight(ref, len(mutations), now + self._answer_within)
        self._push_retry_at = None
        return ref

    def record_decisions(self, decisions: Sequence[OfflineDecision], now: float) -> str:
        """Upload 1 to MAX_BATCH links of the offline decision chain; the answer is
        `DecisionsAcknowledged` or `DecisionsRefused` (none within `answer_within`: the
        socket is given up). Raises ProtocolBug unless `can_upload`."""
        if not self.can_upload:
            raise ProtocolBug(
                f"record_decisions not allowed while {self.state.value}"
                + (" with an upload in flight" if self._upload is not None else "")
            )
        if not 1 <= len(decisions) <= MAX_BATCH:
            raise ProtocolBug(f"an upload carries 1 to {MAX_BATCH} decisions, not {len(decisions)}")
        ref = self._ref()
        self._send(RecordDecisions(ref, tuple(decisions)))
        self._upload = _UploadInFlight(ref, now + self._answer_within)
        return ref

    def invite(self, user: str, hours: int, now: float) -> str:
        """Ask for a one-time enrollment code for `user`, valid `hours` (1 to 720); the
        answer is `RequestAnswered` or `RequestFailed`. Raises ProtocolBug unless SYNCING
        or LIVE."""
        self._expect(ClientState.SYNCING, ClientState.LIVE)
        if not 1 <= hours <= INVITE_HOURS:
            raise ProtocolBug(f"an invitation runs 1 to {INVITE_HOURS} hours, not {hours}")
        ref = self._ref()
        self._send(Invite(ref, user, hours))
        self._requests[ref] = Invited
        return ref

    def set_password(self, user: str, password: str, now: float) -> str:
        """Reset `user`'s password; answered as `invite`. Raises ProtocolBug unless SYNCING
        or LIVE."""
        self._expect(ClientState.SYNCING, ClientState.LIVE)
        ref = self._ref()
        self._send(SetPassword(ref, user, password))
        self._requests[ref] = PasswordSet
        return ref

    # --- the transport's input -------------------------------------------------------------

    def connected(self, now: float, cursor: int, resume: Resume | None = None) -> None:
        """The socket asked for is open: sign in or say hello. `cursor` is the last version
        the replica applied (0 for none, or after `resnapshot`), `resume` an interrupted
        snapshot. Raises ProtocolBug unless CONNECTING."""
        self._expect(ClientState.CONNECTING)
        if not 0 <= cursor <= MAX_INT:
            raise ProtocolBug(f"a cursor is 0 to {MAX_INT}, not {cursor}")
        self.expire(now)
        self.close_code = None
        self._cursor, self._resume = cursor, resume
        self._ping_at = now + self._ping_every
        if self.tokens is not None and self.tokens.access_token is not None:
            self._hello(fresh=False)
        elif self.tokens is not None:
            self._auth(Refresh(self._ref(), self.tokens.refresh_token, self.device))
        elif self._credentials is not None:
            self._sign_in_with(self._credentials)
        else:
            self._give_up(CloseCode.NORMAL)
            self._sign_in_needed(_NOTHING_TO_SIGN_IN_WITH)

    def receive(self, frame: bytes | str, now: float) -> None:
        """Take one text frame the server sent (ignored once its socket was given up)."""
        self.expire(now)
        if self.state not in _ON_A_SOCKET:
            return
        try:
            message = decode(frame, Direction.TO_CLIENT)
        except ProtocolViolation as violation:
            self._misbehaved(f"{violation.code.value}: {violation.message}", now)
            return
        if type(message) not in EXPECTED[self.state]:
            self._misbehaved(
                f"{type(message).__name__} is not expected while {self.state.value}", now
            )
            return
        self._dispatch(message, now)

    def receive_binary(self, now: float) -> None:
        """The server sent a binary frame: not part of the protocol (text frames only)."""
        self.expire(now)
        if self.state in _ON_A_SOCKET:
            self._misbehaved("binary frames are not part of the protocol", now)

    def disconnected(self, now: float, code: int | None, reason: str) -> None:
        """The socket ended by itself, or could not be opened (CONNECTING): `code` is its
        close code (None: it ended without a close frame). Ignored when no socket is open
        or being opened (one given up here)."""
        self.expire(now)
        if self.state is ClientState.CONNECTING:
            self._back_off(now, code, reason)  # no socket was open: no code can mean more
            return
        if self.state not in _ON_A_SOCKET:
            return
        hello_token_fresh = self._hello_token_fresh
        self._socket_ended()
        if code == CloseCode.REVOKED:
            self._wiped(None, reason)
        elif code == CloseCode.SUSPENDED:
            self._sign_in_needed(f"suspended: {reason}" if reason else "suspended")
        elif code == CloseCode.UPGRADE_REQUIRED:
            self._upgrade(reason or f"upgrade required (close {code})")
        elif code == CloseCode.FORBIDDEN:
            self._sign_in_needed(reason or f"refused (close {code})")
        elif code == CloseCode.UNAUTHENTICATED:
            self._token_refused(now, hello_token_fresh, code, reason)
        else:
            self._back_off(now, code, reason)

    def deadline(self) -> float | None:
        """When `expire` must be called if nothing arrives before (None: no timer runs)."""
        timers = [self._retry_at, self._ping_at, self._push_retry_at, *self._pings.values()]
        if self._push is not None:
            timers.append(self._push.due)
        if self._upload is not None:
            timers.append(self._upload.due)
        due = [t for t in timers if t is not None]
        return min(due) if due else None

    def expire(self, now: float) -> None:
        """Time has passed to `now`: fire every timer that is due (none: nothing happens)."""
        if self.state is ClientState.WAITING:
            if self._retry_at is not None and now >= self._retry_at:
                self._retry_at = None
                self._reconnect(Trigger.RETRY)
            return
        if self.state not in _ON_A_SOCKET:
            return
        if self._pings and now >= min(self._pings.values()):
            self._give_up(CloseCode.NORMAL)
            self._back_off(now, None, f"no pong in {self._pong_within:g} s")
            return
        if self._push is not None and now >= self._push.due:
            self._give_up(CloseCode.NORMAL)
            self._back_off(now, None, f"no answer to a push in {self._answer_within:g} s")
            return
        if self._upload is not None and now >= self._upload.due:
            # A lost `decisions_recorded` would hold the upload on this socket for good; a
            # retried upload adds nothing the server has (PROTOCOL.md § Offline decisions).
            self._give_up(CloseCode.NORMAL)
            self._back_off(now, None, f"no answer to an upload in {self._answer_within:g} s")
            return
        if self._ping_at is not None and now >= self._ping_at:
            self._ping(now)
        if self._push_retry_at is not None and now >= self._push_retry_at:
            self._push_retry_at = None
            self._events.append(ReadyToPush())

    # --- output ----------------------------------------------------------------------------

    def events(self) -> list[Event]:
        """What the app must act on since the last call, in order."""
        events, self._events = self._events, []
        return events

    def outgoing(self) -> list[bytes]:
        """Frames to write, in order, since the last call."""
        frames, self._outgoing = self._outgoing, []
        return frames

    def _send(self, message: Message) -> None:
        self._outgoing.append(encode(message))

    def _ref(self) -> str:
        self._refs += 1
        return f"r{self._refs}"

    # --- signing in ------------------------------------------------------------------------

    def _auth(self, request: SignIn | Enroll | Refresh) -> None:
        self._send(request)
        self._auth_ref, self._auth_kind = request.ref, type(request)
        self._move(Trigger.SIGN_IN_SENT)

    def _sign_in_with(self, credentials: Credentials) -> None:
        if isinstance(credentials, Password):
            tenant, user, password = credentials.tenant, credentials.user, credentials.password
            self._auth(SignIn(self._ref(), tenant, user, password, self.device))
        else:
            tenant, user, code = credentials.tenant, credentials.user, credentials.code
            self._auth(Enroll(self._ref(), tenant, user, code, credentials.password, self.device))

    def _hello(self, *, fresh: bool) -> None:
        assert self.tokens is not None and self.tokens.access_token is not None
        token = self.tokens.access_token
        self._send(Hello(PROTOCOL_VERSION, token, self.device, self.client, self._cursor,
                         self._resume))  # fmt: skip
        self._hello_token_fresh = fresh
        self._move(Trigger.HELLO_SENT)

    def _signed_in(self, message: SignedIn, now: float) -> None:
        if message.ref != self._auth_ref:
            self._misbehaved(f"signed_in answers {message.ref!r}, not the sign-in asked", now)
            return
        if self._auth_kind is not Refresh:
            self._credentials = None  # used up: a password is not kept longer than needed
        self._auth_ref = self._auth_kind = None
        self.tokens = Tokens(message.access_token, message.refresh_token)
        self._events.append(SignedInReceived(message))
        # Hello on the same socket: the server's open state allows it (PROTOCOL.md § Sessions).
        self._hello(fresh=True)

    def _auth_refused(self, error: Error, now: float) -> None:
        kind = self._auth_kind
        self._auth_ref = self._auth_kind = None
        if kind is Refresh and error.code in _REFUSED_REFRESH:
            self.tokens = None
            if self._credentials is not None:
                self._sign_in_with(self._credentials)
            else:
                # A wipe follows when the user was removed (server: refuse, then wipe): read
                # up to the pong of this ping before deciding, so it is not missed.
                self._barrier = (self._ping(now), error.message)
            return
        if kind is not Refresh and error.code in _REFUSED_CREDENTIALS:
            self._credentials = None
            self._give_up(CloseCode.NORMAL)
            self._sign_in_needed(error.message)
            return
        # internal, a refresh rate_limited, ...: try again later with the same tokens.
        self._give_up(CloseCode.NORMAL)
        self._back_off(now, None, f"sign-in refused: {error.code.value}: {error.message}")

    def _hello_refused(self, error: Error, now: float) -> None:
        if error.code in _REFUSED_TOKEN:
            hello_token_fresh = self._hello_token_fresh
            self._give_up(CloseCode.NORMAL)
            self._token_refused(now, hello_token_fresh, None, error.message)
        elif error.code is ErrorCode.FORBIDDEN:  # the client id is another device's or user's
            self._give_up(CloseCode.NORMAL)
            self._sign_in_needed(error.message)
        else:
            self._events.append(ServerError(error))

    def _token_refused(
        self, now: float, hello_token_fresh: bool | None, code: int | None, reason: str
    ) -> None:
        """The access token was refused (4401): the next socket refreshes. At once, unless
        the token was the one just issued on this socket (a server that refuses its own
        tokens must not make the client spin)."""
        if self.tokens is not None and self.tokens.access_token is not None:
            self.tokens = Tokens(None, self.tokens.refresh_token)
        if hello_token_fresh is False:
            self._reconnect(Trigger.RECONNECT_NOW)
        else:
            self._back_off(now, code, reason)

    # --- messages --------------------------------------------------------------------------

    def _dispatch(self, message: Message, now: float) -> None:
        if isinstance(message, SignedIn):
            self._signed_in(message, now)
        elif isinstance(message, Welcome):
            self._events.append(Welcomed(message))
            self._move(Trigger.WELCOME)
        elif isinstance(message, Snapshot):
            self._events.append(SnapshotReceived(message))
        elif isinstance(message, Changes):
            self._changes(message)
        elif isinstance(message, PushResult):
            self._push_result(message, now)
        elif isinstance(message, DecisionsRecorded):
            if self._upload is None or message.ref != self._upload.ref:
                self._misbehaved(f"decisions_recorded answers no upload ({message.ref!r})", now)
                return
            self._upload = None
            self._events += [DecisionsAcknowledged(message), ReadyToUpload()]
        elif isinstance(message, Invited | PasswordSet):
            if self._requests.get(message.ref) is not type(message):
                kind = type(message).__name__
                self._misbehaved(f"{kind} answers no request ({message.ref!r})", now)
                return
            del self._requests[message.ref]
            self._events.append(RequestAnswered(message))
        elif isinstance(message, Pong):
            self._pong(message, now)
        elif isinstance(message, Resync):
            self._events.append(ResyncRequested(message.reason))
            self._give_up(CloseCode.NORMAL)
            self._reconnect(Trigger.RECONNECT_NOW)
        elif isinstance(message, Wipe):
            self._give_up(CloseCode.NORMAL)
            self._wiped(message.code, message.reason)
        elif isinstance(message, Error):
            self._error(message, now)

    def _changes(self, message: Changes) -> None:
        self._events.append(ChangesReceived(message))
        if self.state is ClientState.SYNCING and not message.more:
            self._move(Trigger.CAUGHT_UP)
            self._attempt = 0
            self._events += [CaughtUp(), ReadyToPush()]
            if self._upload is None:
                self._events.append(ReadyToUpload())

    def _push_result(self, message: PushResult, now: float) -> None:
        push = self._push
        if push is None or message.ref != push.ref:
            self._misbehaved(f"push_result answers no push in flight ({message.ref!r})", now)
            return
        push.results += message.results
        if len(push.results) > push.count or (not message.more and len(push.results) < push.count):
            self._misbehaved(
                f"push_result has {len(push.results)} outcomes for {push.count} mutations", now
            )
            return
        if message.more:
            push.due = now + self._answer_within  # the answer is coming
            return
        self._push = None
        self._push_failures = 0
        self._events += [PushAnswered(push.ref, tuple(push.results)), ReadyToPush()]

    def _pong(self, message: Pong, now: float) -> None:
        if message.ref not in self._pings:
            self._misbehaved(f"pong answers no ping ({message.ref!r})", now)
            return
        # Answers come in order: this pong also vouches for the pings before it.
        for ref in list(self._pings):
            del self._pings[ref]
            if ref == message.ref:
                break
        self._events.append(PongReceived(message.server_time, now))
        if self._barrier is not None and message.ref == self._barrier[0]:
            reason = self._barrier[1]
            self._give_up(CloseCode.NORMAL)
            self._sign_in_needed(reason)

    def _error(self, error: Error, now: float) -> None:
        ref, code = error.ref, error.code
        signing_in = ref is not None and ref == self._auth_ref and self._auth_kind is not Refresh
        if code is ErrorCode.SUSPENDED:  # any request, or a session ended (the replica stays)
            if signing_in:
                self._credentials = None
            self._give_up(CloseCode.NORMAL)
            self._sign_in_needed(f"suspended: {error.message}")
        elif code is ErrorCode.UPGRADE_REQUIRED:
            self._give_up(CloseCode.NORMAL)
            self._upgrade(error.message)
        elif code is ErrorCode.REVOKED:
            pass  # a wipe follows (the server refuses, then wipes)
        elif ref is not None and ref == self._auth_ref:
            self._auth_refused(error, now)
        elif self._push is not None and ref == self._push.ref:
            self._push_refused(error, now)
        elif self._upload is not None and ref == self._upload.ref:
            self._upload = None
            self._events.append(DecisionsRefused(ref, code, error.message))
        elif ref is not None and ref in self._requests:
            del self._requests[ref]
            self._events.append(RequestFailed(ref, code, error.message))
        elif ref is None and self.state is ClientState.AUTHENTICATING:
            self._hello_refused(error, now)  # a hello has no ref: its answer has none
        else:
            self._events.append(ServerError(error))

    def _push_refused(self, error: Error, now: float) -> None:
        assert self._push is not None
        ref = self._push.ref
        self._push = None
        self._events.append(PushRefused(ref, error.code, error.message, error.expected_seq))
        if error.code is ErrorCode.SEQ_GAP:
            self._events.append(ReadyToPush())
        elif error.code is not ErrorCode.UNSUPPORTED_OP:
            self._push_failures += 1
            self._push_retry_at = now + self._backoff(self._push_failures)

    # --- timers, sockets and ends ----------------------------------------------------------

    def _ping(self, now: float) -> str:
        ref = self._ref()
        self._send(Ping(ref))
        self._pings[ref] = now + self._pong_within
        self._ping_at = now + self._ping_every
        return ref

    def _backoff(self, failures: int) -> float:
        # The exponent is capped so that a long outage cannot overflow the float.
        ceiling = min(self._backoff_cap, self._backoff_base * 2.0 ** min(failures, 64))
        return max(self._backoff_base, self._rng() * ceiling)

    def _reconnect(self, trigger: Trigger) -> None:
        self._move(trigger)
        self._events.append(ConnectWanted())

    def _give_up(self, close_code: int) -> None:
        """Close the current socket (or drop the one being opened) from this side."""
        self.close_code = close_code
        self._socket_ended()

    def _socket_ended(self) -> None:
        """Forget everything of the socket: its timers and the answers it owed."""
        self._auth_ref = self._auth_kind = None
        self._hello_token_fresh = None
        self._barrier = None
        self._ping_at = None
        self._pings.clear()
        self._push = None
        self._push_retry_at = None
        self._upload = None
        for ref in self._requests:
            self._events.append(RequestFailed(ref, None, "the connection ended before an answer"))
        self._requests.clear()

    def _back_off(self, now: float, code: int | None, reason: str) -> None:
        self._attempt += 1
        self._retry_at = now + self._backoff(self._attempt)
        self._move(Trigger.SOCKET_LOST)
        self._events.append(Disconnected(code, reason, self._retry_at))

    def _misbehaved(self, message: str, now: float) -> None:
        self._events.append(ServerMisbehaved(message))
        self._give_up(CloseCode.PROTOCOL_ERROR)
        self._back_off(now, None, message)

    def _sign_in_needed(self, reason: str) -> None:
        self._retry_at = None
        self._move(Trigger.NO_CREDENTIALS)
        self._events.append(SignInNeeded(reason))

    def _upgrade(self, message: str) -> None:
        self._retry_at = None
        self._move(Trigger.UPGRADE)
        self._events.append(UpgradeRequired(message))

    def _wiped(self, code: WipeCode | None, reason: str) -> None:
        self.tokens = None
        self._credentials = None
        self._retry_at = None
        self._move(Trigger.WIPE)
        self._events.append(Wiped(code, reason))
