"""sync.protocol.server: exact frames in, exact events and frames out."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sync.protocol.errors import CloseCode, ErrorCode, ProtocolBug
from sync.protocol.messages import (
    MAX_MESSAGE_BYTES,
    CatchUp,
    Changes,
    Hello,
    Mutation,
    Outcome,
    Pong,
    PushResult,
    Result,
    SignedIn,
    SignIn,
    StaleDecisions,
    Welcome,
    WipeCode,
)
from sync.protocol.server import (
    MAX_VIOLATIONS,
    RATE_BURST,
    EnrollRequested,
    HelloReceived,
    InviteRequested,
    PingReceived,
    PushReceived,
    RefreshRequested,
    ServerConnection,
    SetPasswordRequested,
    SignInRequested,
)
from sync.protocol.states import ALLOWED, TRANSITIONS, State, Trigger

EDIT = {"op": "unassign_role", "user_id": "bob", "role_id": "r-1"}
HELLO = {
    "type": "hello",
    "protocol": 2,
    "access_token": "tok",
    "device": "dev-1",
    "client": "c-1",
    "cursor": 40,
}
PUSH = {
    "type": "push",
    "ref": "p1",
    "mutations": [{"client": "c-1", "seq": 1, "base_version": 40, "edit": EDIT}],
}


def frame(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def sent(connection: ServerConnection) -> list[dict[str, Any]]:
    return [json.loads(f) for f in connection.outgoing()]


def welcome(version: int = 42) -> Welcome:
    return Welcome("acme", "alice", version, CatchUp.CHANGES, "2026-11-22T10:00:00Z", 0,
                   604800, StaleDecisions.ANSWER, ("assign_role",), 0)  # fmt: skip


def live(now: float = 0.0) -> ServerConnection:
    connection = ServerConnection(now)
    connection.receive(frame(HELLO), now)
    connection.events()
    connection.welcome(welcome())
    connection.changes(Changes(40, 42, (), more=False))
    connection.outgoing()
    return connection


def test_ping_is_an_event_answered_with_the_servers_time() -> None:
    connection = ServerConnection(0.0)
    connection.receive(frame({"type": "ping", "ref": "x"}), 0.0)
    assert connection.events() == [PingReceived("x")]
    connection.pong(Pong("x", "2026-11-22T10:00:00Z"))
    assert sent(connection) == [{"type": "pong", "ref": "x", "server_time": "2026-11-22T10:00:00Z"}]


def test_hello_then_welcome_then_catch_up_makes_the_connection_live() -> None:
    connection = ServerConnection(0.0)
    connection.receive(frame(HELLO), 0.0)
    assert connection.events() == [HelloReceived(Hello(2, "tok", "dev-1", "c-1", 40))]
    assert connection.state is State.AUTHENTICATING
    connection.welcome(welcome())
    assert connection.state is State.SYNCING
    connection.changes(Changes(40, 41, (), more=True))
    assert connection.state is State.SYNCING
    connection.changes(Changes(41, 42, (), more=False))
    assert connection.state is State.LIVE
    assert [m["type"] for m in sent(connection)] == ["welcome", "changes", "changes"]


def test_push_when_live_becomes_an_event_and_its_result_a_frame() -> None:
    connection = live()
    connection.receive(frame(PUSH), 1.0)
    (event,) = connection.events()
    assert isinstance(event, PushReceived)
    assert event.ref == "p1"
    assert event.mutations == (Mutation("c-1", 1, 40, EDIT),)
    connection.push_result([PushResult("p1", (Result("c-1", 1, Outcome.APPLIED, version=43),))])
    assert sent(connection) == [
        {
            "type": "push_result",
            "ref": "p1",
            "results": [{"client": "c-1", "seq": 1, "outcome": "applied", "version": 43}],
            "more": False,
        }
    ]


def test_push_before_hello_is_refused_with_its_ref_and_changes_nothing() -> None:
    connection = ServerConnection(0.0)
    connection.receive(frame(PUSH), 0.0)
    assert connection.events() == []
    assert sent(connection) == [
        {
            "type": "error",
            "code": "wrong_state",
            "message": "Push is not allowed while open",
            "fatal": False,
            "ref": "p1",
        }
    ]
    assert connection.state is State.OPEN


def test_push_while_the_token_is_being_checked_is_refused() -> None:
    connection = ServerConnection(0.0)
    connection.receive(frame(HELLO), 0.0)
    connection.receive(frame(PUSH), 0.0)
    assert [type(e) for e in connection.events()] == [HelloReceived]
    assert sent(connection)[0]["code"] == "wrong_state"


def test_a_second_hello_is_refused() -> None:
    connection = live()
    connection.receive(frame(HELLO), 1.0)
    assert connection.events() == []
    assert sent(connection)[0]["code"] == "wrong_state"


def test_sign_in_and_refresh_are_events_answered_by_signed_in() -> None:
    connection = ServerConnection(0.0)
    sign_in = {"type": "sign_in", "ref": "s", "tenant": "acme", "user": "alice",
               "password": "pw", "device": "dev-1"}  # fmt: skip
    connection.receive(frame(sign_in), 0.0)
    assert connection.events() == [SignInRequested(SignIn("s", "acme", "alice", "pw", "dev-1"))]
    connection.signed_in(SignedIn("s", "a", "2026-11-22T10:00:00Z", "r", "alice", "acme"))
    assert sent(connection)[0]["type"] == "signed_in"
    connection.receive(
        frame({"type": "refresh", "ref": "f", "refresh_token": "r", "device": "dev-1"}), 0.0
    )
    assert [type(e) for e in connection.events()] == [RefreshRequested]


def test_repeated_mistakes_close_the_connection() -> None:
    connection = ServerConnection(0.0)
    for _ in range(MAX_VIOLATIONS):
        connection.receive(b"{not json", 0.0)
    errors = sent(connection)
    assert [e["fatal"] for e in errors] == [False] * (MAX_VIOLATIONS - 1) + [True]
    assert connection.state is State.CLOSED
    assert connection.close_code == CloseCode.PROTOCOL_ERROR


def test_an_oversized_frame_closes_at_once_with_1009() -> None:
    connection = live()
    connection.receive(b"x" * (MAX_MESSAGE_BYTES + 1), 1.0)
    assert sent(connection)[0]["code"] == "too_large"
    assert connection.close_code == CloseCode.TOO_LARGE


def test_a_flood_is_cut_off_and_a_steady_rate_is_not() -> None:
    steady = live()
    for i in range(1000):
        steady.receive(frame({"type": "ping", "ref": "p"}), i * 0.05)  # 20 per second
    assert steady.state is State.LIVE
    flood = ServerConnection(0.0)
    for _ in range(int(RATE_BURST) + 1):
        flood.receive(frame({"type": "ping", "ref": "p"}), 0.0)
    assert flood.close_code == CloseCode.RATE_LIMITED
    assert sent(flood)[-1]["code"] == "rate_limited"


@pytest.mark.parametrize("version", [1, 3])
def test_another_protocol_version_gets_upgrade_required_and_closes(version: int) -> None:
    connection = ServerConnection(0.0)
    connection.receive(frame({**HELLO, "protocol": version, "new_field": True}), 0.0)
    assert connection.events() == []
    (error,) = sent(connection)
    assert (error["code"], error["fatal"]) == ("upgrade_required", True)
    assert "pending edits are kept" in error["message"]
    assert connection.close_code == CloseCode.UPGRADE_REQUIRED


def test_refusing_a_token_closes_with_the_given_code() -> None:
    connection = ServerConnection(0.0)
    connection.receive(frame(HELLO), 0.0)
    connection.events()
    connection.refuse(ErrorCode.EXPIRED_TOKEN, "sign in again", close=CloseCode.UNAUTHENTICATED)
    assert sent(connection) == [
        {"type": "error", "code": "expired_token", "message": "sign in again", "fatal": True}
    ]
    assert connection.close_code == CloseCode.UNAUTHENTICATED


def test_wipe_tells_the_device_and_closes_and_later_frames_are_ignored() -> None:
    connection = live()
    connection.wipe(WipeCode.DEVICE_REVOKED, "device revoked by an admin")
    assert sent(connection) == [
        {"type": "wipe", "code": "device_revoked", "reason": "device revoked by an admin"}
    ]
    assert connection.close_code == CloseCode.REVOKED
    connection.receive(frame(PUSH), 2.0)
    assert connection.events() == []
    assert connection.outgoing() == []


def test_resync_closes_normally_so_the_client_reconnects() -> None:
    connection = live()
    connection.resync("fell 10000 changes behind")
    assert sent(connection) == [{"type": "resync", "reason": "fell 10000 changes behind"}]
    assert connection.close_code == CloseCode.NORMAL


def test_server_answers_out_of_turn_are_our_bugs() -> None:
    connection = ServerConnection(0.0)
    with pytest.raises(ProtocolBug):
        connection.welcome(welcome(1))
    with pytest.raises(ProtocolBug):
        connection.push_result([PushResult("p", ())])
    connection.going_away()
    assert connection.close_code == CloseCode.GOING_AWAY


def test_a_connection_that_never_says_hello_is_closed_at_its_deadline() -> None:
    """Defect 14: 2,000 idle unauthenticated sockets held 2,012 descriptors."""
    connection = ServerConnection(100.0, auth_timeout=10.0)
    assert connection.deadline() == 110.0
    connection.expire(109.9)
    assert connection.state is State.OPEN
    connection.expire(110.0)
    assert connection.state is State.CLOSED
    assert connection.close_code == CloseCode.AUTH_TIMEOUT
    assert sent(connection)[0]["code"] == "unauthenticated"


def test_signing_in_does_not_extend_the_deadline_but_hello_ends_it() -> None:
    connection = ServerConnection(0.0, auth_timeout=10.0)
    connection.receive(frame({"type": "ping", "ref": "p"}), 5.0)
    assert connection.deadline() == 10.0
    connection.receive(frame(HELLO), 6.0)
    assert connection.deadline() is None
    connection.expire(60.0)
    assert connection.state is State.AUTHENTICATING


def test_a_frame_arriving_after_the_deadline_is_not_read() -> None:
    connection = ServerConnection(0.0, auth_timeout=10.0)
    connection.receive(frame(HELLO), 11.0)
    assert connection.events() == []
    assert connection.close_code == CloseCode.AUTH_TIMEOUT


def test_a_suspended_user_is_closed_with_its_own_code() -> None:
    connection = live()
    connection.suspended("user 'alice' was suspended")
    assert sent(connection) == [
        {"type": "error", "code": "suspended", "message": "user 'alice' was suspended",
         "fatal": True}
    ]  # fmt: skip
    assert connection.close_code == CloseCode.SUSPENDED


def test_enroll_invite_and_set_password_are_events_in_their_states() -> None:
    connection = ServerConnection(0.0)
    enroll = {"type": "enroll", "ref": "e", "tenant": "acme", "user": "bob", "code": "ABCD",
              "password": "a long password", "device": "dev-1"}  # fmt: skip
    connection.receive(frame(enroll), 0.0)
    assert [type(e) for e in connection.events()] == [EnrollRequested]
    connection.receive(frame({"type": "invite", "ref": "i", "user": "bob", "hours": 4}), 0.0)
    assert sent(connection)[0]["code"] == "wrong_state"
    session = live()
    session.receive(frame({"type": "invite", "ref": "i", "user": "bob", "hours": 4}), 1.0)
    session.receive(
        frame({"type": "set_password", "ref": "s", "user": "bob", "password": "x" * 12}), 1.0
    )
    assert [type(e) for e in session.events()] == [InviteRequested, SetPasswordRequested]


def test_a_long_push_answer_goes_out_as_every_message_given() -> None:
    connection = live()
    results = [PushResult("p", (Result("c", 1, Outcome.APPLIED, 1),), more=True),
               PushResult("p", (Result("c", 2, Outcome.APPLIED, 2),), more=False)]  # fmt: skip
    connection.push_result(results)
    assert [m["more"] for m in sent(connection)] == [True, False]


def test_every_state_has_a_row_in_the_tables() -> None:
    assert set(ALLOWED) == set(State)
    assert {(state, Trigger.CLOSE) for state in State} <= set(TRANSITIONS)
    assert ALLOWED[State.CLOSED] == frozenset()
