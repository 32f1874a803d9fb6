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


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_once_the_ui_thread_collects_a_worker_never_does(qtbot: Any) -> None:
    import gc
    import weakref

    background.ui_thread_collects()
    assert not gc.isenabled()
    collected_in: list[str] = []

    def record(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            collected_in.append(threading.current_thread().name)

    refs: list[Any] = []

    def allocate() -> None:
        # Far over the threshold of the youngest generation: the automatic collector
        # would have run here, in this thread.
        cycles = [_Cycle() for _ in range(5 * gc.get_threshold()[0])]
        refs.extend(weakref.ref(c) for c in cycles[:10])

    gc.callbacks.append(record)
    try:
        worker = threading.Thread(target=allocate, name="busy-worker")
        worker.start()
        worker.join()
        assert collected_in == []
        qtbot.waitUntil(lambda: all(r() is None for r in refs), timeout=5_000)
    finally:
        gc.callbacks.remove(record)
    assert collected_in and set(collected_in) == {threading.main_thread().name}


def test_nothing_is_collected_while_a_pause_is_under_way() -> None:
    import gc

    from app.policy_files import gc_paused

    with gc_paused():
        _garbage = [_Cycle() for _ in range(2 * gc.get_threshold()[0])]
        assert background.collect_due() is None
    del _garbage
    assert background.collect_due() is not None


def test_overlapping_pauses_in_two_threads_turn_collection_back_on_after_the_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gc

    from app import policy_files

    monkeypatch.setattr(policy_files._Collection, "off_for_good", False)
    was = gc.isenabled()
    gc.enable()
    try:
        first_in, second_done, first_may_end = (threading.Event() for _ in range(3))

        def first() -> None:
            with policy_files.gc_paused():
                first_in.set()
                first_may_end.wait(5)

        thread = threading.Thread(target=first)
        thread.start()
        first_in.wait(5)
        with policy_files.gc_paused():
            assert not gc.isenabled()
        second_done.set()
        assert not gc.isenabled()  # the first thread's pause goes on
        first_may_end.set()
        thread.join()
        assert gc.isenabled()
    finally:
        if not was:
            gc.disable()
