"""app.ui.background: work off the UI thread, and freeing a replaced view a piece at a time
(`retire`) without touching what someone still holds."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from PySide6.QtCore import QObject

from app.ui import background


class _Policy:
    __slots__ = ("name", "users")

    def __init__(self, size: int) -> None:
        self.users = {i: [i] for i in range(size)}
        self.name = "policy"


class _Engine:
    def __init__(self, policy: _Policy, size: int) -> None:
        self.policy = policy
        self.entries = {i: (i,) for i in range(size)}
        self.small = {1: 2}


def test_what_only_the_retired_object_holds_is_emptied_in_pieces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    yielded: list[int] = []
    monkeypatch.setattr(background.time, "sleep", lambda _s: yielded.append(1))
    size = background.RETIRE_CHUNK * 3 + 5
    engine = _Engine(_Policy(size), size)
    background._empty(engine)
    assert engine.entries == {} and engine.policy.users == {}
    assert engine.small == {1: 2}  # small ones are freed as they are, in one go
    assert len(yielded) == 2 * 4  # the GIL given up after each piece of each dictionary


def test_a_policy_someone_else_holds_is_left_whole() -> None:
    size = background.RETIRE_CHUNK + 1
    held = _Policy(size)
    engine = _Engine(held, size)
    background._empty(engine)
    assert engine.entries == {}
    assert len(held.users) == size  # a view still showing it reads it whole


def test_retire_runs_on_a_worker_and_skips_an_object_still_held(qtbot: Any) -> None:
    owner = QObject()
    size = background.RETIRE_CHUNK + 1
    still_shown = _Engine(_Policy(size), size)
    threads: list[str] = []
    original = background._empty

    def spy(item: object, depth: int = 0) -> None:
        threads.append(threading.current_thread().name)
        original(item, depth)

    background._empty = spy  # type: ignore[assignment]
    try:
        background.retire(owner, still_shown, _Engine(_Policy(size), size))
        qtbot.waitUntil(lambda: bool(threads), timeout=5_000)
        qtbot.wait(50)
    finally:
        background._empty = original  # type: ignore[assignment]
    assert set(threads) == {"fleetgate-retire"}  # on the worker: the unheld one and its policy
    assert len(threads) == 2
    assert len(still_shown.entries) == size
