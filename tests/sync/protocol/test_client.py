"""sync.protocol.client: exact frames in, exact events and frames out."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.protocol.client import (
    EXPECTED,
    TERMINAL,
    TRANSITIONS,
    CaughtUp,
    ChangesReceived,
    ClientConnection,
    ClientState,
    ConnectWanted,
    DecisionsAcknowledged,
    DecisionsRefused,
    Disconnected,
    Invitation,
    Password,
    PongReceived,
    PushAnswered,
    PushRefused,
    ReadyToPush,
    ReadyToUpload,
    RequestAnswered,
    RequestFailed,
    ResyncRequested,
    ServerError,
    ServerMisbehaved,
    SignedInReceived,
    SignInNeeded,
    SnapshotReceived,
    StateChanged,
    Tokens,
    Trigger,
    UpgradeRequired,
    Welcomed,
    Wiped,
)
from sync.protocol.codec import decode, encode
from sync.protocol.errors import CloseCode, ErrorCode, ProtocolBug
from sync.protocol.messages import (
    MAX_BATCH,
    PROTOCOL_VERSION,
    CatchUp,
    Changes,
    Clock,
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
    Outcome,
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
    StaleDecisions,
    Welcome,
    Wipe,
    WipeCode,
)
from sync.protocol.server import (
    HelloReceived,
    PushReceived,
    ServerConnection,
    SignInRequested,
)

S = ClientState
DEVICE, CLIENT = "dev-1", "c-1"
AT = "2026-11-22T10:00:00Z"
EDIT = {"op": "unassign_role", "user_id": "bob", "role_id": "r-1"}
M1 = Mutation(CLIENT, 1, 40, EDIT)
M2 = Mutation(CLIENT, 2, 40, EDIT)
R1 = Result(CLIENT, 1, Outcome.APPLIED, version=43)
R2 = Result(CLIENT, 2, Outcome.MERGED, version=44)
PASSWORD = Password("acme", "alice", "correct horse battery")
INVITATION = Invitation("acme", "bob", "ABCD-EFGH", "a long new password")
TOKENS = Tokens("access-1", "refresh-1")
DECISION = OfflineDecision(
    1, "0" * 64, "a" * 64, {"user": "alice", "action": "read", "resource": {"type": "doc"}},
    True, "granted by viewer", AT, Clock.WALL, True, (), 42,
)  # fmt: skip
WELCOME = Welcome("acme", "alice", 42, CatchUp.CHANGES, AT, 0, 604800, StaleDecisions.ANSWER,
                  ("assign_role", "unassign_role"), 0)  # fmt: skip
SNAPSHOT = Snapshot("snap-1", 42, 0, 1, {"format": "fleetgate.policy/1"}, "b" * 64)
CAUGHT_UP = Changes(40, 42, (), more=False)


def connection(**kwargs: Any) -> ClientConnection:
    """A client with `TOKENS`, seeded jitter and the default timers, unless told otherwise."""
    options: dict[str, Any] = {"tokens": TOKENS, "rng": random.Random(1).random}
    options.update(kwargs)
    return ClientConnection(device=DEVICE, client=CLIENT, **options)


def sent(client: ClientConnection) -> list[Message]:
    return [decode(frame, Direction.TO_SERVER) for frame in client.outgoing()]


def feed(client: ClientConnection, message: Message, now: float = 0.0) -> None:
    client.receive(encode(message), now)


def opened(**kwargs: Any) -> ClientConnection:
    """Started and connected at 0.0 with cursor 40: hello sent (AUTHENTICATING), or
    without an access token the refresh or sign-in as "r1" (SIGNING_IN)."""
    client = connection(**kwargs)
    client.start(0.0)
    client.connected(0.0, 40)
    client.events()
    client.outgoing()
    return client


def live(**kwargs: Any) -> ClientConnection:
    client = opened(**kwargs)
    feed(client, WELCOME)
    feed(client, CAUGHT_UP)
    client.events()
    return client


def refusal(code: ErrorCode, ref: str | None = None, **kwargs: Any) -> Error:
    return Error(code, f"refused: {code.value}", ref=ref, **kwargs)


# --- a client against the real server connection ----------------------------------------


class Pair:
    """A ClientConnection wired to a ServerConnection; the test plays the server's app."""

    def __init__(self, client: ClientConnection) -> None:
        self.client = client
        self.server = ServerConnection(0.0)
        self.now = 0.0

    def connect(self, cursor: int) -> None:
        self.server = ServerConnection(self.now)
        self.client.connected(self.now, cursor)

    def pump(self) -> list[Any]:
        """Move frames both ways until both are quiet; what the server's app must handle."""
        while True:
            to_server, to_client = self.client.outgoing(), self.server.outgoing()
            if not to_server and not to_client:
                return self.server.events()
            for frame in to_server:
                self.server.receive(frame, self.now)
            for frame in to_client:
                self.client.receive(frame, self.now)


def test_signing_in_catching_up_and_a_split_push_answer_against_the_server() -> None:
    pair = Pair(connection(tokens=None, credentials=PASSWORD))
    client = pair.client
    client.start(0.0)
    assert client.events() == [StateChanged(S.IDLE, S.CONNECTING), ConnectWanted()]
    pair.connect(cursor=40)
    (asked,) = pair.pump()
    assert asked == SignInRequested(SignIn("r1", "acme", "alice", PASSWORD.password, DEVICE))
    signed_in = SignedIn("r1", "access-1", AT, "refresh-1", "alice", "acme")
    pair.server.signed_in(signed_in)
    assert pair.pump() == [HelloReceived(Hello(PROTOCOL_VERSION, "access-1", DEVICE, CLIENT, 40))]
    assert client.tokens == TOKENS
    assert client.credentials is None
    pair.server.welcome(WELCOME)
    pair.server.snapshot(SNAPSHOT)
    pair.server.changes(CAUGHT_UP)
    assert pair.pump() == []
    assert client.events() == [
        StateChanged(S.CONNECTING, S.SIGNING_IN),
        SignedInReceived(signed_in),
        StateChanged(S.SIGNING_IN, S.AUTHENTICATING),
        Welcomed(WELCOME),
        StateChanged(S.AUTHENTICATING, S.SYNCING),
        SnapshotReceived(SNAPSHOT),
        ChangesReceived(CAUGHT_UP),
        StateChanged(S.SYNCING, S.LIVE),
        CaughtUp(),
        ReadyToPush(),
        ReadyToUpload(),
    ]
    ref = client.push([M1, M2], pair.now)
    assert pair.pump() == [PushReceived(ref, (M1, M2))]
    pair.server.push_result([PushResult(ref, (R1,), more=True), PushResult(ref, (R2,))])
    assert pair.pump() == []
    assert client.events() == [PushAnswered(ref, (R1, R2)), ReadyToPush()]
    assert client.can_push


# --- starting and signing in ------------------------------------------------------------


def test_start_with_nothing_to_sign_in_with_asks_for_a_sign_in() -> None:
    client = connection(tokens=None)
    client.start(0.0)
    assert client.state is S.SIGN_IN_NEEDED
    assert client.events() == [
        StateChanged(S.IDLE, S.SIGN_IN_NEEDED),
        SignInNeeded("no tokens and no credentials: sign in"),
    ]
    assert client.deadline() is None


def test_connected_with_an_access_token_says_hello_with_the_cursor_and_resume() -> None:
    client = connection()
    client.start(0.0)
    client.events()
    client.connected(1.0, 40, Resume("snap-1", 3))
    assert sent(client) == [Hello(2, "access-1", DEVICE, CLIENT, 40, Resume("snap-1", 3))]
    assert client.state is S.AUTHENTICATING
    assert client.events() == [StateChanged(S.CONNECTING, S.AUTHENTICATING)]


def test_a_refresh_token_alone_refreshes_then_says_hello_on_the_same_socket() -> None:
    client = connection(tokens=Tokens(None, "refresh-0"), credentials=PASSWORD)
    client.start(0.0)
    client.connected(0.0, 7)
    assert sent(client) == [Refresh("r1", "refresh-0", DEVICE)]
    assert client.state is S.SIGNING_IN
    client.events()
    answer = SignedIn("r1", "access-2", AT, "refresh-2", "alice", "acme")
    feed(client, answer)
    assert client.tokens == Tokens("access-2", "refresh-2")
    assert client.credentials == PASSWORD  # kept: a refresh used no credentials
    assert sent(client) == [Hello(2, "access-2", DEVICE, CLIENT, 7)]
    assert client.events() == [
        SignedInReceived(answer),
        StateChanged(S.SIGNING_IN, S.AUTHENTICATING),
    ]


def test_an_invitation_enrolls_and_is_dropped_once_signed_in() -> None:
    client = connection(tokens=None, credentials=INVITATION)
    client.start(0.0)
    client.connected(0.0, 0)
    assert sent(client) == [Enroll("r1", "acme", "bob", "ABCD-EFGH", "a long new password", DEVICE)]
    feed(client, SignedIn("r1", "access-1", AT, "refresh-1", "bob", "acme"))
    assert client.credentials is None
    assert [type(m) for m in sent(client)] == [Hello]


def test_a_signed_in_answering_another_ref_is_misbehaviour() -> None:
    client = connection(tokens=None, credentials=PASSWORD)
    client.start(0.0)
    client.connected(0.0, 0)
    client.events()
    feed(client, SignedIn("r9", "access-1", AT, "refresh-1", "alice", "acme"))
    assert client.state is S.WAITING
    assert client.close_code == CloseCode.PROTOCOL_ERROR
    assert isinstance(client.events()[0], ServerMisbehaved)


def test_sign_in_after_sign_in_needed_forgets_old_tokens_and_uses_the_credentials() -> None:
    client = opened()
    feed(client, refusal(ErrorCode.FORBIDDEN, fatal=True))
    assert client.state is S.SIGN_IN_NEEDED
    client.events()
    client.sign_in(PASSWORD, 5.0)
    assert client.tokens is None
    assert client.events() == [StateChanged(S.SIGN_IN_NEEDED, S.CONNECTING), ConnectWanted()]
    client.connected(5.0, 40)
    assert client.close_code is None
    assert sent(client) == [SignIn("r1", "acme", "alice", PASSWORD.password, DEVICE)]


# --- catching up, pushes and the other requests ------------------------------------------


def test_welcome_snapshot_and_changes_are_events_and_only_the_last_page_makes_it_live() -> None:
    client = opened()
    feed(client, WELCOME)
    feed(client, SNAPSHOT)
    page = Changes(40, 41, (), more=True)
    feed(client, page)
    assert client.state is S.SYNCING
    assert client.events() == [
        Welcomed(WELCOME),
        StateChanged(S.AUTHENTICATING, S.SYNCING),
        SnapshotReceived(SNAPSHOT),
        ChangesReceived(page),
    ]
    feed(client, CAUGHT_UP)
    later = Changes(42, 43, (), more=False)
    feed(client, later)
    assert client.state is S.LIVE
    assert client.events() == [
        ChangesReceived(CAUGHT_UP),
        StateChanged(S.SYNCING, S.LIVE),
        CaughtUp(),
        ReadyToPush(),
        ReadyToUpload(),
        ChangesReceived(later),
    ]


def test_a_push_answer_in_several_messages_is_joined_in_order() -> None:
    client = live()
    ref = client.push([M1, M2], 1.0)
    assert sent(client) == [Push(ref, (M1, M2))]
    assert not client.can_push
    feed(client, PushResult(ref, (R1,), more=True), 2.0)
    assert client.events() == []
    feed(client, PushResult(ref, (R2,), more=False), 3.0)
    assert client.events() == [PushAnswered(ref, (R1, R2)), ReadyToPush()]
    assert client.can_push


@pytest.mark.parametrize(
    "answer",
    [
        PushResult("r99", (R1, R2)),
        PushResult("r1", (R1,)),  # too few outcomes
        PushResult("r1", (R1, R2, R2)),  # too many
    ],
)
def test_a_push_result_for_no_push_or_of_the_wrong_size_is_misbehaviour(
    answer: PushResult,
) -> None:
    client = live()
    assert client.push([M1, M2], 1.0) == "r1"
    feed(client, answer, 2.0)
    events = client.events()
    assert isinstance(events[0], ServerMisbehaved)
    assert client.close_code == CloseCode.PROTOCOL_ERROR
    assert client.state is S.WAITING


def test_a_seq_gap_is_refused_and_the_app_may_push_again_at_once() -> None:
    client = live()
    ref = client.push([M2], 1.0)
    feed(client, refusal(ErrorCode.SEQ_GAP, ref, expected_seq=1), 2.0)
    assert client.events() == [
        PushRefused(ref, ErrorCode.SEQ_GAP, "refused: seq_gap", 1),
        ReadyToPush(),
    ]
    assert client.can_push


def test_an_unsupported_op_is_refused_and_nothing_more_is_said() -> None:
    client = live()
    ref = client.push([M1], 1.0)
    feed(client, refusal(ErrorCode.UNSUPPORTED_OP, ref), 2.0)
    assert client.events() == [
        PushRefused(ref, ErrorCode.UNSUPPORTED_OP, "refused: unsupported_op", None)
    ]
    assert client.deadline() == 15.0  # the next ping only: no retry timer


def test_a_refused_push_is_retried_after_a_growing_jittered_backoff_reset_by_an_answer() -> None:
    # rng values 0.0, 0.5, 0.75: delays max(0.5, 0.0*1), 0.5*2, 0.75*4.
    values = iter([0.0, 0.5, 0.75, 0.5])
    client = live(rng=lambda: next(values), ping_every=1000.0)
    now = 1.0
    for code, delay in [(ErrorCode.RATE_LIMITED, 0.5), (ErrorCode.INTERNAL, 1.0),
                        (ErrorCode.WRONG_STATE, 3.0)]:  # fmt: skip
        ref = client.push([M1], now)
        feed(client, refusal(code, ref), now)
        assert client.events() == [PushRefused(ref, code, f"refused: {code.value}", None)]
        assert client.deadline() == now + delay
        client.expire(now + delay - 0.01)
        assert client.events() == []
        now += delay
        client.expire(now)
        assert client.events() == [ReadyToPush()]
    ref = client.push([M1], now)
    feed(client, PushResult(ref, (R1,)), now)
    client.events()
    ref = client.push([M1], now)
    feed(client, refusal(ErrorCode.INTERNAL, ref), now)
    assert client.deadline() == now + 0.5  # n was reset: 0.5 * min(60, 0.5 * 2)


def test_a_push_unanswered_for_answer_within_gives_the_socket_up() -> None:
    client = live(ping_every=1000.0)
    client.push([M1, M2], 10.0)
    assert client.deadline() == 40.0
    feed(client, PushResult("r1", (R1,), more=True), 20.0)
    assert client.deadline() == 50.0  # a partial answer: the rest is coming
    client.expire(49.9)
    assert client.state is S.LIVE
    client.expire(50.0)
    assert client.close_code == CloseCode.NORMAL
    assert client.state is S.WAITING
    assert client.events() == [
        StateChanged(S.LIVE, S.WAITING),
        Disconnected(None, "no answer to a push in 30 s", 50.5),
    ]
    assert client.can_push is False


def test_an_upload_unanswered_for_answer_within_gives_the_socket_up() -> None:
    # Defect: a lost `decisions_recorded` held the upload on that socket for good (no
    # timer ran for it), so the decisions behind it never went out.
    client = live(ping_every=1000.0)
    ref = client.record_decisions([DECISION], 10.0)
    assert sent(client) == [RecordDecisions(ref, (DECISION,))]
    assert client.deadline() == 40.0
    client.expire(39.9)
    assert (client.state, client.events(), client.outgoing()) == (S.LIVE, [], [])
    client.expire(40.0)
    assert client.close_code == CloseCode.NORMAL
    assert client.state is S.WAITING
    assert client.events() == [
        StateChanged(S.LIVE, S.WAITING),
        Disconnected(None, "no answer to an upload in 30 s", 40.5),
    ]
    assert client.deadline() == 40.5
    client.expire(40.5)
    assert client.events() == [StateChanged(S.WAITING, S.CONNECTING), ConnectWanted()]
    client.connected(41.0, 42)
    assert sent(client) == [Hello(PROTOCOL_VERSION, "access-1", DEVICE, CLIENT, 42)]
    feed(client, WELCOME, 41.0)
    feed(client, Changes(42, 42, (), more=False), 41.0)
    assert client.events()[-1] == ReadyToUpload()
    again = client.record_decisions([DECISION], 41.0)
    assert sent(client) == [RecordDecisions(again, (DECISION,))]
    feed(client, DecisionsRecorded(ref, 1, 1, "a" * 64), 42.0)  # the first socket's answer
    assert isinstance(client.events()[0], ServerMisbehaved)


def test_an_answered_upload_stops_its_timer_and_a_refused_one_too() -> None:
    client = live(ping_every=1000.0)
    ref = client.record_decisions([DECISION], 10.0)
    assert client.deadline() == 40.0
    feed(client, DecisionsRecorded(ref, 1, 1, "a" * 64), 11.0)
    assert client.deadline() == 1000.0  # the ping
    ref = client.record_decisions([DECISION], 12.0)
    assert client.deadline() == 42.0
    feed(client, refusal(ErrorCode.RATE_LIMITED, ref), 13.0)
    assert client.events()[-1] == DecisionsRefused(ref, ErrorCode.RATE_LIMITED,
                                                   "refused: rate_limited")  # fmt: skip
    assert client.deadline() == 1000.0
    client.expire(50.0)
    assert (client.state, client.events()) == (S.LIVE, [])


def test_an_upload_while_syncing_has_the_same_timer() -> None:
    client = opened(ping_every=1000.0)
    feed(client, WELCOME, 1.0)
    client.events()
    ref = client.record_decisions([DECISION], 2.0)
    assert sent(client) == [RecordDecisions(ref, (DECISION,))]
    assert client.deadline() == 32.0
    client.expire(32.0)
    assert client.events() == [
        StateChanged(S.SYNCING, S.WAITING),
        Disconnected(None, "no answer to an upload in 30 s", 32.5),
    ]


def test_decisions_are_uploaded_one_batch_at_a_time() -> None:
    client = live()
    ref = client.record_decisions([DECISION], 1.0)
    assert sent(client) == [RecordDecisions(ref, (DECISION,))]
    assert not client.can_upload
    with pytest.raises(ProtocolBug):
        client.record_decisions([DECISION], 1.0)
    answer = DecisionsRecorded(ref, 1, 1, "a" * 64)
    feed(client, answer, 2.0)
    assert client.events() == [DecisionsAcknowledged(answer), ReadyToUpload()]
    ref = client.record_decisions([DECISION], 3.0)
    feed(client, refusal(ErrorCode.CHAIN_BROKEN, ref), 4.0)
    assert client.events() == [
        DecisionsRefused(ref, ErrorCode.CHAIN_BROKEN, "refused: chain_broken")
    ]
    assert client.can_upload


def test_invites_and_password_resets_are_answered_or_failed_by_their_ref() -> None:
    client = opened()
    feed(client, WELCOME)  # SYNCING is enough
    client.events()
    invite = client.invite("bob", 24, 1.0)
    reset = client.set_password("carol", "another long password", 1.0)
    assert sent(client) == [
        Invite(invite, "bob", 24),
        SetPassword(reset, "carol", "another long password"),
    ]
    invited = Invited(invite, "bob", "CODE-1", AT)
    feed(client, invited, 2.0)
    feed(client, refusal(ErrorCode.WEAK_PASSWORD, reset), 2.0)
    assert client.events() == [
        RequestAnswered(invited),
        RequestFailed(reset, ErrorCode.WEAK_PASSWORD, "refused: weak_password"),
    ]
    again = client.set_password("carol", "a better long password", 3.0)
    feed(client, PasswordSet(again, "carol"), 3.0)
    assert client.events() == [RequestAnswered(PasswordSet(again, "carol"))]
    client.invite("dave", 1, 4.0)
    feed(client, PasswordSet("r4", "dave"), 4.0)  # an answer of the wrong kind
    assert isinstance(client.events()[0], ServerMisbehaved)


def test_a_request_still_unanswered_when_the_socket_ends_is_reported_unknown() -> None:
    client = live()
    ref = client.invite("bob", 24, 1.0)
    client.push([M1], 1.0)
    client.record_decisions([DECISION], 1.0)
    client.disconnected(2.0, CloseCode.GOING_AWAY, "shutting down")
    events = client.events()
    assert events[0] == RequestFailed(ref, None, "the connection ended before an answer")
    assert events[1:] == [
        StateChanged(S.LIVE, S.WAITING),
        Disconnected(CloseCode.GOING_AWAY, "shutting down", 2.5),
    ]
    assert not client.can_upload


# --- liveness ------------------------------------------------------------------------------


def test_pings_go_out_every_ping_every_seconds_from_connected_on() -> None:
    client = connection()
    client.start(0.0)
    assert client.deadline() is None  # CONNECTING: no ping yet
    client.connected(100.0, 40)
    client.outgoing()
    assert client.deadline() == 115.0
    client.expire(114.9)
    assert client.outgoing() == []
    client.expire(115.0)
    assert sent(client) == [Ping("r1")]
    assert client.deadline() == 125.0  # the pong is due
    feed(client, Pong("r1", AT), 116.0)
    assert client.events()[-1] == PongReceived(AT, 116.0)
    assert client.deadline() == 130.0
    client.expire(130.0)
    assert sent(client) == [Ping("r2")]


def test_no_pong_within_pong_within_gives_the_socket_up_and_backs_off() -> None:
    client = live()
    client.expire(15.0)
    assert sent(client) == [Ping("r1")]
    client.expire(24.9)
    assert client.state is S.LIVE
    client.expire(25.0)
    assert client.close_code == CloseCode.NORMAL
    assert client.events() == [
        StateChanged(S.LIVE, S.WAITING),
        Disconnected(None, "no pong in 10 s", 25.5),
    ]
    assert client.deadline() == 25.5


def test_a_frame_read_after_the_pong_was_due_is_not_taken() -> None:
    client = live()
    client.expire(15.0)
    client.outgoing()
    feed(client, Pong("r1", AT), 26.0)
    assert client.state is S.WAITING
    assert [type(e) for e in client.events()] == [StateChanged, Disconnected]


def test_a_pong_answering_no_ping_is_misbehaviour() -> None:
    client = live()
    feed(client, Pong("r7", AT), 1.0)
    assert client.events()[0] == ServerMisbehaved("pong answers no ping ('r7')")
    assert client.close_code == CloseCode.PROTOCOL_ERROR


def test_a_disconnected_for_a_socket_already_given_up_is_ignored() -> None:
    client = live()
    client.expire(15.0)
    client.expire(25.0)  # no pong: given up
    client.events()
    retry_at = client.deadline()
    client.disconnected(25.1, CloseCode.NORMAL, "")
    assert client.events() == []
    assert client.state is S.WAITING
    assert client.deadline() == retry_at
    client.stop(26.0)
    client.disconnected(26.1, CloseCode.SUSPENDED, "")
    assert client.state is S.IDLE


# --- reconnects -------------------------------------------------------------------------


def test_failed_connections_back_off_with_full_jitter_from_a_seeded_rng() -> None:
    client = connection()  # rng: random.Random(1).random
    client.start(0.0)
    delays = []
    now = 0.0
    for _ in range(10):
        client.disconnected(now, None, "connection refused")
        retry_at = client.deadline()
        assert retry_at is not None
        delays.append(retry_at - now)
        client.expire(retry_at - 0.001)
        assert client.state is S.WAITING
        now = retry_at
        client.expire(now)
        assert client.state is S.CONNECTING
    expected = [0.5, 1.6948674738744653, 3.055098475906456, 2.0405522059153736,
                7.926961393471055, 14.38371407323962, 39.095578363365775, 47.32340106813079,
                5.631575206454094, 1.7008485913203786]  # fmt: skip
    assert delays == pytest.approx(expected)


@pytest.mark.parametrize("value", [0.0, 0.999999])
def test_backoff_stays_between_base_and_cap(value: float) -> None:
    client = connection(rng=lambda: value)
    client.start(0.0)
    now = 0.0
    for attempt in range(1, 80):
        client.disconnected(now, None, "refused")
        retry_at = client.deadline()
        assert retry_at is not None
        assert retry_at - now == pytest.approx(max(0.5, value * min(60.0, 0.5 * 2**attempt)))
        assert 0.5 <= retry_at - now <= 60.0
        now = retry_at
        client.expire(now)


def test_reaching_live_resets_the_backoff() -> None:
    client = connection(rng=lambda: 0.999)
    client.start(0.0)
    for _ in range(7):
        client.disconnected(0.0, None, "refused")
        client.expire(100.0)
    client.connected(100.0, 40)
    feed(client, WELCOME, 100.0)
    client.disconnected(100.0, CloseCode.GOING_AWAY, "")  # welcomed, not live: still failing
    assert client.deadline() == pytest.approx(100.0 + 0.999 * 60.0)
    client.expire(200.0)
    client.connected(200.0, 40)
    feed(client, WELCOME, 200.0)
    feed(client, CAUGHT_UP, 200.0)
    client.disconnected(201.0, CloseCode.GOING_AWAY, "")
    assert client.deadline() == pytest.approx(201.0 + 0.999)


def test_resync_reconnects_at_once() -> None:
    client = live()
    feed(client, Resync("too far behind"), 5.0)
    assert client.close_code == CloseCode.NORMAL
    assert client.events() == [
        ResyncRequested("too far behind"),
        StateChanged(S.LIVE, S.CONNECTING),
        ConnectWanted(),
    ]
    assert client.deadline() is None
    client.connected(5.1, 42)
    assert client.close_code is None
    assert [type(m) for m in sent(client)] == [Hello]


def test_resnapshot_gives_the_socket_up_and_reconnects_at_once() -> None:
    client = live()
    client.resnapshot(3.0)
    assert client.close_code == CloseCode.NORMAL
    assert client.events() == [StateChanged(S.LIVE, S.CONNECTING), ConnectWanted()]
    client.resnapshot(3.0)  # the socket being opened will do
    assert client.events() == []
    client.connected(3.5, 0)
    assert sent(client) == [Hello(2, "access-1", DEVICE, CLIENT, 0)]
    waiting = connection()
    waiting.start(0.0)
    waiting.disconnected(0.0, None, "refused")
    waiting.events()
    waiting.resnapshot(0.1)
    assert waiting.events() == [StateChanged(S.WAITING, S.CONNECTING), ConnectWanted()]
    assert waiting.deadline() is None

    idle, signed_out = connection(), connection(tokens=None)
    signed_out.start(0.0)
    signed_out.events()
    idle.resnapshot(1.0)  # no session to redo: the app acted on events read before
    signed_out.resnapshot(1.0)
    assert (idle.events(), signed_out.events()) == ([], [])
    assert (idle.state, signed_out.state) == (S.IDLE, S.SIGN_IN_NEEDED)


def test_stop_gives_the_socket_up_and_start_begins_again() -> None:
    client = live()
    client.stop(1.0)
    assert client.close_code == CloseCode.NORMAL
    assert client.state is S.IDLE
    assert client.deadline() is None
    assert client.events() == [StateChanged(S.LIVE, S.IDLE)]
    client.stop(1.0)
    assert client.events() == []
    client.start(2.0)
    assert client.events() == [StateChanged(S.IDLE, S.CONNECTING), ConnectWanted()]


@pytest.mark.parametrize(
    "code",
    [None, CloseCode.NORMAL, CloseCode.GOING_AWAY, CloseCode.PROTOCOL_ERROR, CloseCode.TOO_LARGE,
     CloseCode.INTERNAL_ERROR, CloseCode.AUTH_TIMEOUT, CloseCode.RATE_LIMITED],
)  # fmt: skip
def test_any_other_close_backs_off(code: int | None) -> None:
    client = live()
    client.disconnected(3.0, code, "bye")
    assert client.state is S.WAITING
    assert client.close_code is None  # the socket is already gone
    assert client.events() == [StateChanged(S.LIVE, S.WAITING), Disconnected(code, "bye", 3.5)]


# --- errors and closes that end or redirect the session ---------------------------------


@pytest.mark.parametrize("code", [ErrorCode.EXPIRED_TOKEN, ErrorCode.UNAUTHENTICATED])
def test_a_refused_access_token_is_dropped_and_the_next_socket_refreshes_at_once(
    code: ErrorCode,
) -> None:
    client = opened()
    feed(client, refusal(code, fatal=True), 1.0)
    assert client.tokens == Tokens(None, "refresh-1")
    assert client.close_code == CloseCode.NORMAL
    assert client.events() == [StateChanged(S.AUTHENTICATING, S.CONNECTING), ConnectWanted()]
    client.connected(1.2, 40)
    assert sent(client) == [Refresh("r1", "refresh-1", DEVICE)]


def test_a_close_4401_alone_also_drops_the_access_token() -> None:
    client = opened()
    client.disconnected(1.0, CloseCode.UNAUTHENTICATED, "unauthenticated")
    assert client.tokens == Tokens(None, "refresh-1")
    assert client.events() == [StateChanged(S.AUTHENTICATING, S.CONNECTING), ConnectWanted()]


def test_a_token_refused_right_after_it_was_issued_backs_off_instead_of_spinning() -> None:
    client = opened(tokens=Tokens(None, "refresh-0"))
    feed(client, SignedIn("r1", "access-2", AT, "refresh-2", "alice", "acme"), 1.0)
    client.events()
    feed(client, refusal(ErrorCode.EXPIRED_TOKEN, fatal=True), 1.0)
    assert client.tokens == Tokens(None, "refresh-2")
    assert client.events() == [
        StateChanged(S.AUTHENTICATING, S.WAITING),
        Disconnected(None, "refused: expired_token", 1.5),
    ]


@pytest.mark.parametrize("code", [ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN])
def test_a_refused_refresh_signs_in_with_the_credentials_on_the_same_socket(
    code: ErrorCode,
) -> None:
    client = opened(tokens=Tokens(None, "refresh-0"), credentials=PASSWORD)
    feed(client, refusal(code, "r1"), 1.0)
    assert client.tokens is None
    assert client.state is S.SIGNING_IN
    assert client.close_code is None
    assert sent(client) == [SignIn("r2", "acme", "alice", PASSWORD.password, DEVICE)]
    assert client.events() == []


def test_a_refused_refresh_without_credentials_asks_for_a_sign_in_after_a_ping() -> None:
    client = opened(tokens=Tokens(None, "refresh-0"))
    feed(client, refusal(ErrorCode.UNAUTHENTICATED, "r1"), 1.0)
    # A wipe may follow (the user was removed): read up to the pong first.
    assert sent(client) == [Ping("r2")]
    assert client.state is S.SIGNING_IN
    feed(client, Pong("r2", AT), 1.1)
    assert client.close_code == CloseCode.NORMAL
    assert client.events() == [
        PongReceived(AT, 1.1),
        StateChanged(S.SIGNING_IN, S.SIGN_IN_NEEDED),
        SignInNeeded("refused: unauthenticated"),
    ]


def test_a_refused_refresh_followed_by_a_wipe_wipes() -> None:
    client = opened(tokens=Tokens(None, "refresh-0"))
    feed(client, refusal(ErrorCode.UNAUTHENTICATED, "r1"), 1.0)
    feed(client, Wipe(WipeCode.USER_REMOVED, "user 'alice' was removed"), 1.0)
    assert client.state is S.WIPED


def test_a_refresh_answered_revoked_waits_for_the_wipe() -> None:
    client = opened(tokens=Tokens(None, "refresh-0"), credentials=PASSWORD)
    feed(client, refusal(ErrorCode.REVOKED, "r1"), 1.0)
    assert client.state is S.SIGNING_IN
    assert client.outgoing() == []
    assert client.events() == []
    feed(client, Wipe(WipeCode.DEVICE_REVOKED, "this device was revoked"), 1.0)
    assert client.events() == [
        StateChanged(S.SIGNING_IN, S.WIPED),
        Wiped(WipeCode.DEVICE_REVOKED, "this device was revoked"),
    ]
    assert client.tokens is None
    assert client.credentials is None


def test_a_refresh_answered_rate_limited_backs_off_and_keeps_the_token() -> None:
    client = opened(tokens=Tokens(None, "refresh-0"))
    feed(client, refusal(ErrorCode.RATE_LIMITED, "r1"), 1.0)
    assert client.tokens == Tokens(None, "refresh-0")
    assert client.state is S.WAITING


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (ErrorCode.UNAUTHENTICATED, "refused: unauthenticated"),
        (ErrorCode.WEAK_PASSWORD, "refused: weak_password"),
        (ErrorCode.RATE_LIMITED, "refused: rate_limited"),
        (ErrorCode.SUSPENDED, "suspended: refused: suspended"),
    ],
)
def test_a_refused_sign_in_drops_the_credentials_and_asks_for_a_sign_in(
    code: ErrorCode, reason: str
) -> None:
    client = opened(tokens=None, credentials=PASSWORD)
    feed(client, refusal(code, "r1"), 1.0)
    assert client.credentials is None
    assert client.close_code == CloseCode.NORMAL
    assert client.events() == [
        StateChanged(S.SIGNING_IN, S.SIGN_IN_NEEDED),
        SignInNeeded(reason),
    ]


def test_a_sign_in_failing_on_the_server_side_backs_off_and_keeps_the_credentials() -> None:
    client = opened(tokens=None, credentials=PASSWORD)
    feed(client, refusal(ErrorCode.INTERNAL, "r1"), 1.0)
    assert client.credentials == PASSWORD
    assert client.events() == [
        StateChanged(S.SIGNING_IN, S.WAITING),
        Disconnected(None, "sign-in refused: internal: refused: internal", 1.5),
    ]


def test_a_suspension_ends_the_session_and_keeps_the_replica() -> None:
    client = live()
    client.push([M1], 1.0)
    feed(client, Error(ErrorCode.SUSPENDED, "user 'alice' was suspended", fatal=True), 2.0)
    assert client.close_code == CloseCode.NORMAL
    assert client.events() == [
        StateChanged(S.LIVE, S.SIGN_IN_NEEDED),
        SignInNeeded("suspended: user 'alice' was suspended"),
    ]
    assert client.tokens == TOKENS
    closed = live()
    closed.disconnected(2.0, CloseCode.SUSPENDED, "")
    assert closed.events() == [StateChanged(S.LIVE, S.SIGN_IN_NEEDED), SignInNeeded("suspended")]


def test_upgrade_required_by_an_error_or_a_close_is_terminal() -> None:
    client = opened()
    feed(client, Error(ErrorCode.UPGRADE_REQUIRED, "speak protocol 3", fatal=True), 1.0)
    assert client.events() == [
        StateChanged(S.AUTHENTICATING, S.UPGRADE_REQUIRED),
        UpgradeRequired("speak protocol 3"),
    ]
    closed = opened()
    closed.disconnected(0.5, CloseCode.UPGRADE_REQUIRED, "")
    assert closed.state is S.UPGRADE_REQUIRED
    assert closed.events()[-1] == UpgradeRequired("upgrade required (close 4426)")


def test_a_wipe_by_message_or_close_is_terminal_and_forgets_the_tokens() -> None:
    client = live()
    feed(client, Wipe(WipeCode.USER_REMOVED, "user 'alice' was removed"), 1.0)
    assert client.close_code == CloseCode.NORMAL
    assert client.tokens is None
    assert client.events() == [
        StateChanged(S.LIVE, S.WIPED),
        Wiped(WipeCode.USER_REMOVED, "user 'alice' was removed"),
    ]
    closed = live()
    closed.disconnected(1.0, CloseCode.REVOKED, "wiped")
    assert closed.events() == [StateChanged(S.LIVE, S.WIPED), Wiped(None, "wiped")]


def test_a_hello_refused_forbidden_asks_for_a_sign_in_with_the_servers_message() -> None:
    client = opened()
    feed(client, Error(ErrorCode.FORBIDDEN, "client c-1 belongs to another device", True), 1.0)
    assert client.events() == [
        StateChanged(S.AUTHENTICATING, S.SIGN_IN_NEEDED),
        SignInNeeded("client c-1 belongs to another device"),
    ]
    closed = opened()
    closed.disconnected(1.0, CloseCode.FORBIDDEN, "")
    assert closed.state is S.SIGN_IN_NEEDED


def test_an_error_answering_nothing_waited_for_is_a_server_error() -> None:
    client = live()
    error = Error(ErrorCode.WRONG_STATE, "Ping is not allowed while closed", ref="zz")
    feed(client, error, 1.0)
    rate = Error(ErrorCode.RATE_LIMITED, "too many messages", fatal=True)
    hello = opened()
    feed(hello, rate, 1.0)  # no ref while authenticating, but not about the token
    assert client.events() == [ServerError(error)]
    assert hello.events() == [ServerError(rate)]
    assert (client.state, hello.state) == (S.LIVE, S.AUTHENTICATING)


@pytest.mark.parametrize(
    "frame",
    [
        b"{not json",
        b"[]",
        encode(Hello(2, "t", DEVICE, CLIENT, 0)),  # a client's message
        encode(CAUGHT_UP),  # before welcome
        encode(WELCOME)[:-1] + b',"extra":1}',
    ],
)
def test_a_frame_the_client_cannot_take_is_misbehaviour_closed_with_1008(frame: bytes) -> None:
    client = opened()
    client.receive(frame, 1.0)
    events = client.events()
    assert isinstance(events[0], ServerMisbehaved)
    assert events[1:] == [
        StateChanged(S.AUTHENTICATING, S.WAITING),
        Disconnected(None, events[0].message, 1.5),
    ]
    assert client.close_code == CloseCode.PROTOCOL_ERROR


def test_a_binary_frame_or_a_second_welcome_is_misbehaviour() -> None:
    client = live()
    client.receive_binary(1.0)
    assert client.events()[0] == ServerMisbehaved("binary frames are not part of the protocol")
    again = live()
    feed(again, WELCOME, 1.0)
    assert again.events()[0] == ServerMisbehaved("Welcome is not expected while live")


# --- misuse ------------------------------------------------------------------------------


def test_asking_for_what_the_state_does_not_allow_is_our_bug() -> None:
    client = connection()
    with pytest.raises(ProtocolBug):
        client.connected(0.0, 0)  # no socket was wanted
    with pytest.raises(ProtocolBug):
        client.sign_in(PASSWORD, 0.0)
    client = opened()
    with pytest.raises(ProtocolBug):
        client.push([M1], 1.0)  # not live
    with pytest.raises(ProtocolBug):
        client.invite("bob", 24, 1.0)
    with pytest.raises(ProtocolBug):
        client.start(1.0)
    client = live()
    client.push([M1], 1.0)
    with pytest.raises(ProtocolBug):
        client.push([M2], 1.0)  # one push in flight
    with pytest.raises(ProtocolBug):
        client.connected(1.0, 0)
    fresh = live()
    with pytest.raises(ProtocolBug):
        fresh.push([], 1.0)
    with pytest.raises(ProtocolBug):
        fresh.push([M1] * (MAX_BATCH + 1), 1.0)
    with pytest.raises(ProtocolBug):
        fresh.invite("bob", 721, 1.0)
    assert fresh.outgoing() == []
    assert fresh.state is S.LIVE


def test_secrets_never_show_in_reprs() -> None:
    signed_in = SignedInReceived(SignedIn("r", "access-1", AT, "refresh-1", "a", "t"))
    shown = repr([TOKENS, PASSWORD, INVITATION, connection(credentials=PASSWORD), signed_in])
    for secret in ("access-1", "refresh-1", PASSWORD.password, INVITATION.code):
        assert secret not in shown


# --- the table ---------------------------------------------------------------------------


def _reach(state: ClientState, **kwargs: Any) -> ClientConnection:
    """A client brought to `state` through its inputs, its events not yet read."""
    if state is S.IDLE:
        return connection(**kwargs)
    if state is S.SIGN_IN_NEEDED:
        client = connection(tokens=None)
        client.start(0.0)
        return client
    if state is S.SIGNING_IN:
        kwargs = {"tokens": Tokens(None, "refresh-0"), "credentials": PASSWORD, **kwargs}
    client = connection(**kwargs)
    client.start(0.0)
    if state is S.WAITING:
        client.disconnected(0.0, None, "refused")
    if state in (S.SIGNING_IN, S.AUTHENTICATING, S.SYNCING, S.LIVE):
        client.connected(0.0, 40)
    if state in (S.SYNCING, S.LIVE):
        feed(client, WELCOME)
    if state is S.LIVE:
        feed(client, CAUGHT_UP)
    assert client.state is state
    return client


def _then(state: ClientState, act: Callable[[ClientConnection], object], **kwargs: Any) -> Any:
    def recipe() -> ClientConnection:
        client = _reach(state, **kwargs)
        act(client)
        return client

    return recipe


def _connect_with_nothing_left() -> ClientConnection:
    """A refused refresh without credentials, its socket lost before the pong: the next
    socket has nothing to sign in with."""
    client = _reach(S.SIGNING_IN, credentials=None)
    feed(client, refusal(ErrorCode.UNAUTHENTICATED, "r1"))
    client.disconnected(0.0, CloseCode.GOING_AWAY, "")
    client.expire(60.0)
    assert client.state is S.CONNECTING
    client.connected(60.0, 40)
    return client


_ENDING: dict[Trigger, Callable[[ClientConnection], object]] = {
    Trigger.SOCKET_LOST: lambda c: c.disconnected(1.0, CloseCode.GOING_AWAY, ""),
    Trigger.STOP: lambda c: c.stop(1.0),
    Trigger.WIPE: lambda c: c.disconnected(1.0, CloseCode.REVOKED, ""),
    Trigger.UPGRADE: lambda c: c.disconnected(1.0, CloseCode.UPGRADE_REQUIRED, ""),
    Trigger.NO_CREDENTIALS: lambda c: c.disconnected(1.0, CloseCode.SUSPENDED, ""),
    Trigger.RECONNECT_NOW: lambda c: c.resnapshot(1.0),
}
RECIPES: dict[tuple[ClientState, Trigger], Callable[[], ClientConnection]] = {
    (S.IDLE, Trigger.START): _then(S.IDLE, lambda c: c.start(0.0)),
    (S.IDLE, Trigger.NO_CREDENTIALS): _then(S.IDLE, lambda c: c.start(0.0), tokens=None),
    (S.SIGN_IN_NEEDED, Trigger.SIGN_IN): _then(S.SIGN_IN_NEEDED, lambda c: c.sign_in(PASSWORD, 1)),
    (S.WAITING, Trigger.RETRY): _then(S.WAITING, lambda c: c.expire(c.deadline())),
    (S.WAITING, Trigger.RECONNECT_NOW): _then(S.WAITING, lambda c: c.resnapshot(0.1)),
    (S.WAITING, Trigger.STOP): _then(S.WAITING, lambda c: c.stop(0.1)),
    (S.CONNECTING, Trigger.SIGN_IN_SENT): _then(
        S.CONNECTING, lambda c: c.connected(0.0, 0), tokens=Tokens(None, "refresh-0")
    ),
    (S.CONNECTING, Trigger.HELLO_SENT): _then(S.CONNECTING, lambda c: c.connected(0.0, 0)),
    (S.CONNECTING, Trigger.SOCKET_LOST): _then(S.CONNECTING, lambda c: c.disconnected(0, None, "")),
    (S.CONNECTING, Trigger.STOP): _then(S.CONNECTING, lambda c: c.stop(0.0)),
    (S.CONNECTING, Trigger.NO_CREDENTIALS): _connect_with_nothing_left,
    (S.SIGNING_IN, Trigger.SIGN_IN_SENT): _then(
        S.SIGNING_IN, lambda c: feed(c, refusal(ErrorCode.UNAUTHENTICATED, "r1"))
    ),
    (S.SIGNING_IN, Trigger.HELLO_SENT): _then(
        S.SIGNING_IN, lambda c: feed(c, SignedIn("r1", "a", AT, "r", "alice", "acme"))
    ),
    (S.AUTHENTICATING, Trigger.WELCOME): _then(S.AUTHENTICATING, lambda c: feed(c, WELCOME)),
    (S.SYNCING, Trigger.CAUGHT_UP): _then(S.SYNCING, lambda c: feed(c, CAUGHT_UP)),
    **{
        (state, trigger): _then(state, act)
        for state in (S.SIGNING_IN, S.AUTHENTICATING, S.SYNCING, S.LIVE)
        for trigger, act in _ENDING.items()
    },
}


def _legal(change: StateChanged) -> bool:
    return any(
        old is change.old and new is change.new and old is not new
        for (old, _trigger), new in TRANSITIONS.items()
    )


@pytest.mark.parametrize(("state", "trigger"), sorted(TRANSITIONS, key=str))
def test_every_transition_of_the_table_is_reachable_and_only_table_changes_happen(
    state: ClientState, trigger: Trigger
) -> None:
    assert set(RECIPES) == set(TRANSITIONS)
    client = RECIPES[(state, trigger)]()
    assert client.state is TRANSITIONS[(state, trigger)]
    changes = [e for e in client.events() if isinstance(e, StateChanged)]
    assert all(_legal(change) for change in changes)
    assert [c.old for c in changes[1:]] == [c.new for c in changes[:-1]]
    if changes:
        assert changes[-1].new is client.state


def test_only_sign_in_leaves_a_terminal_state_and_every_other_state_has_a_way_on() -> None:
    leaving = {(state, trigger) for state, trigger in TRANSITIONS if state in TERMINAL}
    assert leaving == {(S.SIGN_IN_NEEDED, Trigger.SIGN_IN)}
    assert {state for state, _trigger in TRANSITIONS} == set(S) - {S.WIPED, S.UPGRADE_REQUIRED}
    assert set(EXPECTED) == {S.SIGNING_IN, S.AUTHENTICATING, S.SYNCING, S.LIVE}


# --- any sequence of inputs ----------------------------------------------------------------

_CODES = [None, CloseCode.NORMAL, CloseCode.GOING_AWAY, CloseCode.PROTOCOL_ERROR,
          CloseCode.INTERNAL_ERROR, CloseCode.UNAUTHENTICATED, CloseCode.FORBIDDEN,
          CloseCode.AUTH_TIMEOUT, CloseCode.REVOKED, CloseCode.SUSPENDED,
          CloseCode.UPGRADE_REQUIRED, CloseCode.RATE_LIMITED]  # fmt: skip
_BAD_FRAMES = [b"{", b"[]", b"\xff", encode(Ping("r1")), b'{"type":"pong","ref":"r1"}']


_GENTLE_CODES = [ErrorCode.SEQ_GAP, ErrorCode.UNSUPPORTED_OP, ErrorCode.RATE_LIMITED,
                 ErrorCode.INTERNAL, ErrorCode.WRONG_STATE, ErrorCode.CHAIN_BROKEN]  # fmt: skip


def _server_message(data: st.DataObject, ref: str, state: ClientState) -> Message:
    """Mostly a message the state expects (else the session rarely goes far), sometimes any."""
    gentle = data.draw(st.integers(0, 3)) > 0
    kinds: dict[type, Callable[[], Message]] = {
        SignedIn: lambda: SignedIn(ref, "access-9", AT, "refresh-9", "alice", "acme"),
        Welcome: lambda: WELCOME,
        Snapshot: lambda: SNAPSHOT,
        Changes: lambda: Changes(40, 42, (), more=data.draw(st.booleans())),
        PushResult: lambda: PushResult(ref, (R1,), more=data.draw(st.booleans())),
        DecisionsRecorded: lambda: DecisionsRecorded(ref, 1, 1, "a" * 64),
        Invited: lambda: Invited(ref, "bob", "CODE", AT),
        PasswordSet: lambda: PasswordSet(ref, "bob"),
        Resync: lambda: Resync("behind"),
        Wipe: lambda: Wipe(WipeCode.DEVICE_REVOKED, "revoked"),
        Pong: lambda: Pong(ref, AT),
        Error: lambda: Error(
            data.draw(st.sampled_from(_GENTLE_CODES if gentle else list(ErrorCode))),
            "no",
            data.draw(st.booleans()),
            data.draw(st.sampled_from([ref, None])),
            data.draw(st.sampled_from([None, 3])),
        ),
    }
    if gentle and state in EXPECTED:
        kinds = {kind: make for kind, make in kinds.items() if kind in EXPECTED[state]}
        kinds.pop(Wipe, None)
    return kinds[data.draw(st.sampled_from(sorted(kinds, key=str)))]()


_ACTIONS = ["frame"] * 10 + ["connect"] * 3 + ["expire"] * 2 + [
    "bad", "binary", "disconnect", "deadline", "push", "push", "push",
    "upload", "invite", "resnapshot", "stop", "start",
]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_any_sequence_of_inputs_keeps_the_rules(data: st.DataObject) -> None:
    start_tokens = data.draw(st.sampled_from([TOKENS, Tokens(None, "refresh-0"), None]))
    credentials = data.draw(st.sampled_from([PASSWORD, INVITATION, None]))
    client = connection(tokens=start_tokens, credentials=credentials,
                        rng=random.Random(data.draw(st.integers(0, 9))).random)  # fmt: skip
    client.start(0.0)
    if start_tokens == TOKENS and data.draw(st.booleans()):  # begin live half the time
        client.connected(0.0, 40)
        feed(client, WELCOME)
        feed(client, CAUGHT_UP)
    now = 0.0
    refs = ["zz"]
    asked = "zz"  # the last sign-in or refresh
    in_flight: str | None = None
    state = S.IDLE  # the start's events are read in the first step
    ended: ClientState | None = None
    for _ in range(data.draw(st.integers(5, 30))):
        action = data.draw(st.sampled_from(_ACTIONS))
        if action == "frame":
            ref = data.draw(st.sampled_from(refs[-3:]))
            message = _server_message(data, ref, client.state)
            if data.draw(st.booleans()):  # what a well-behaved server would send next
                message = {
                    S.SIGNING_IN: SignedIn(asked, "access-9", AT, "refresh-9", "alice", "acme"),
                    S.AUTHENTICATING: WELCOME,
                    S.SYNCING: CAUGHT_UP,
                    S.LIVE: PushResult(in_flight or ref, (R1,)),
                }.get(client.state, message)
            client.receive(encode(message), now)
        elif action == "bad":
            client.receive(data.draw(st.sampled_from(_BAD_FRAMES)), now)
        elif action == "binary":
            client.receive_binary(now)
        elif action == "connect" and client.state is S.CONNECTING:
            client.connected(now, data.draw(st.integers(0, 50)))
        elif action == "disconnect":
            client.disconnected(now, data.draw(st.sampled_from(_CODES)), "bye")
        elif action == "expire":
            now += data.draw(st.sampled_from([0.0, 0.5, 5.0, 14.9, 15.0, 25.0, 70.0]))
            client.expire(now)
        elif action == "deadline" and client.deadline() is not None:
            now = max(now, client.deadline() or now)
            client.expire(now)
        elif action == "push" and client.can_push:
            client.push([M1], now)
        elif action == "upload" and client.can_upload:
            client.record_decisions([DECISION], now)
        elif action == "invite" and client.state in (S.SYNCING, S.LIVE):
            client.invite("bob", 1, now)
        elif action == "resnapshot":
            client.resnapshot(now)
        elif action == "stop":
            client.stop(now)
        elif action == "start" and client.state is S.IDLE:
            client.start(now)

        for message in (decode(f, Direction.TO_SERVER) for f in client.outgoing()):
            ref = getattr(message, "ref", None)
            if ref is not None:
                refs.append(ref)
            if isinstance(message, SignIn | Enroll | Refresh):
                asked = message.ref
            if isinstance(message, Push):
                assert in_flight is None, "two pushes in flight"
                in_flight = message.ref
        for event in client.events():
            if isinstance(event, PushAnswered | PushRefused):
                assert event.ref == in_flight
                in_flight = None
            if isinstance(event, StateChanged):
                assert event.old is state
                assert _legal(event)
                state = event.new
        assert state is client.state
        if client.state is not S.LIVE:
            in_flight = None  # a push is forgotten with its socket
        assert client.can_push == (client.state is S.LIVE and in_flight is None)
        deadline = client.deadline()
        assert deadline is None or isinstance(deadline, float)
        assert client.close_code in (None, CloseCode.NORMAL, CloseCode.PROTOCOL_ERROR)
        if ended is not None:
            assert client.state is ended, "a terminal state was left"
        if client.state in TERMINAL:
            assert deadline is None
            ended = client.state
