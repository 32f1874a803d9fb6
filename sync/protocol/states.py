"""The states of a sync connection and what moves it between them, as tables.

Rules of this module (PROTOCOL.md § Sessions):

- A connection is in one `State`. `ALLOWED[state]` is every message the peer
  may send in it; anything else is answered `wrong_state` and changes nothing.
- `TRANSITIONS[(state, trigger)]` is the only way a state changes; a side
  that asks for a transition the table lacks has a bug (`ProtocolBug`).
- The tables are the server's side; the client's side mirrors them (the
  client issue), from the same states.
"""

from __future__ import annotations

from enum import Enum

from sync.protocol.messages import (
    Enroll,
    Hello,
    Invite,
    Ping,
    Push,
    RecordDecisions,
    Refresh,
    SetPassword,
    SignIn,
    SnapshotResume,
)


class State(Enum):
    OPEN = "open"
    """Connected; may sign in, enroll, refresh, or say hello. Must say hello in time."""
    AUTHENTICATING = "authenticating"
    """A hello arrived; the server is checking its token."""
    SYNCING = "syncing"
    """Welcomed; the server is sending the changes or snapshot the client missed."""
    LIVE = "live"
    """Caught up; pushes are decided and committed changes are broadcast."""
    CLOSED = "closed"


class Trigger(Enum):
    HELLO = "hello"
    """The peer said hello (its token is being checked)."""
    WELCOME = "welcome"
    """The token was good: catching up starts."""
    CAUGHT_UP = "caught_up"
    """The last catch-up page (`changes` with `more: false`) went out."""
    CLOSE = "close"
    """A fatal error, a wipe, a resync, a timeout or shutdown."""


_SESSION = frozenset({Push, SnapshotResume, RecordDecisions, Invite, SetPassword, Ping, Refresh})

ALLOWED: dict[State, frozenset[type]] = {
    State.OPEN: frozenset({SignIn, Enroll, Refresh, Hello, Ping}),
    State.AUTHENTICATING: frozenset({Ping}),
    State.SYNCING: _SESSION,
    State.LIVE: _SESSION,
    State.CLOSED: frozenset(),
}

TRANSITIONS: dict[tuple[State, Trigger], State] = {
    (State.OPEN, Trigger.HELLO): State.AUTHENTICATING,
    (State.AUTHENTICATING, Trigger.WELCOME): State.SYNCING,
    (State.SYNCING, Trigger.CAUGHT_UP): State.LIVE,
    (State.LIVE, Trigger.CAUGHT_UP): State.LIVE,
    **{(state, Trigger.CLOSE): State.CLOSED for state in State},
}
