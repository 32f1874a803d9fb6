"""Desktop app benchmark: startup, first paint, search as you type and UI stalls.

    python3 dev.py bench-app [--quick] [--runs N] [--stall-runs N] [--profile N]
    (.venv/bin/python -m bench.app ...)

The desktop issue, § Start and § Large tenants: figures, not assertions. Two
encrypted replicas are made in keyring mode, the file-backed keyring of
bench/file_keyring.py standing in for the OS's (a file of this benchmark's own,
bench/out/app-keyring.json, so bench-client's is left alone): the demo tenant
(resources/demo/acme-logistics.json, as its admin `dreed`) and the bench tenant
of bench/tenant.py (1,000 roles, 50,000 users, with bench/client.py's admin
`bench-admin`; `--quick`: 100 roles, 2,000 users). Each is filled directly, as a
snapshot fills it (`Replica.replace_all` of the entities of the parsed policy,
what tests/app/ui_fixtures.fill_replica does), not by a sync: bench-client
measures the sync. Then, each in a fresh process (QT_QPA_PLATFORM=offscreen)
that builds the window as the app does (app.desktop.admin_window over the
replica, working offline), it measures:

- startup to usable: from the top of the child (time.perf_counter) and, from
  the parent, from spawning it, to the administration window shown and painted
  (`grab()`), then to the views that need the compiled policy being in place
  (the same moment, unless the window compiles it after showing); the phases;
  median and max of N runs on each tenant. Goals: 1.5 s demo, 2 s bench;
- first paint of each view: `show_view(n)`, then `grab()` of its page;
- search as you type (bench tenant): queries typed into the roles and users
  search fields (ids, id prefixes, names, attribute values, regions, depots,
  description words, and every prefix of a few words typed slowly), each
  answered by `EntityListView.apply_search` (what the debounce timer calls:
  FTS5, model reset, count) timed end to end, then the table repainted;
  p50/p99/max. Goal: 50 ms;
- the longest UI stall (bench tenant): a 5 ms QTimer records the gaps between
  its ticks while a script drives typical actions through the widgets
  (switching every view, typing searches, scrolling, selecting roles and users,
  a check, who can, queueing an edit, the pending view, undo); the longest gap,
  the action it fell in, each action's time, and the runs of the cyclic
  collector in it (a full collection walks the whole compiled policy). Goal:
  100 ms. The worst actions are then run once more under cProfile
  (bench/out/app-stall-<n>.prof).

Figures go to standard output and to bench/out/app.json (app-quick.json with --quick).
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()
"""As early as a child process can see: its times run from here."""

import argparse  # noqa: E402 - after STARTED on purpose
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from bench.harness import print_rows, summary_ms  # noqa: E402 - the benchmarks' figures, alike

OUT = Path(__file__).resolve().parent / "out"
ROOT = OUT.parent.parent
KEYRING_FILE = OUT / "app-keyring.json"
PROFILE_FILE = OUT / "app-stall.prof"

GOAL_USABLE_DEMO_S = 1.5
GOAL_USABLE_BENCH_S = 2.0
GOAL_SEARCH_MS = 50.0
GOAL_STALL_MS = 100.0

TICK_MS = 5
"""The stall meter's timer interval: a gap longer than this is time the event loop was busy."""
TYPE_MS = 90
"""Between typed characters: shorter than the search debounce, as a person types."""
SETTLE_MS = 300
"""After each action, for what it set off (paints, debounced work) before the next."""
SEARCH_SETTLE_MS = 600
REFRESH_MS = 4000
"""After a sync's change: long enough for the view to compile again on its worker."""
"""After the last typed character: the debounce (150 ms) and the search it fires."""


# --- figures -----------------------------------------------------------------------------


def _spread(values: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": [round(v, 4) for v in values],
    }


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# === the child: one process, one window ==================================================


@dataclass
class _Step:
    call: Callable[[], object]
    """Returns True to be called again TICK_MS later (waiting for something)."""
    after_ms: int


@dataclass
class _Action:
    label: str
    steps: list[_Step]
    started: float = 0.0
    call_s: float = 0.0


@dataclass
class _Meter:
    """Records the gaps between the ticks of a TICK_MS timer: event-loop stalls."""

    ticks: list[tuple[float, float]] = field(default_factory=list)
    """(tick time, gap since the tick before)."""
    last: float = 0.0

    def tick(self) -> None:
        now = time.perf_counter()
        self.ticks.append((now, now - self.last))
        self.last = now


def _collections() -> list[tuple[float, float, int, str]]:
    """Every run of the cyclic collector from now on: (start, seconds, generation, thread).

    A collection of the oldest generation walks every object the process holds, and
    a compiled 50,000-user policy is millions: such a pause is a UI stall of its own.
    """
    import gc
    import threading

    records: list[tuple[float, float, int, str]] = []
    begun: dict[int, float] = {}

    def callback(phase: str, info: dict[str, int]) -> None:
        ident = threading.get_ident()
        if phase == "start":
            begun[ident] = time.perf_counter()
        elif ident in begun:
            start = begun.pop(ident)
            records.append((start, time.perf_counter() - start, info["generation"],
                            threading.current_thread().name))  # fmt: skip

    gc.callbacks.append(callback)
    return records


def _collection_summary(records: list[tuple[float, float, int, str]]) -> dict[str, Any]:
    oldest = [r for r in records if r[2] == 2]
    return {
        "count": len(records),
        "total_s": sum(r[1] for r in records),
        "gen2_count": len(oldest),
        "gen2_longest_ms": max((r[1] for r in oldest), default=0.0) * 1000,
        "gen2_threads": sorted({r[3] for r in oldest}),
    }


def _collected_between(records: list[tuple[float, float, int, str]], start: float,
                       end: float) -> float:  # fmt: skip
    """Seconds the collector ran (any generation) from `start` to `end`."""
    return sum(seconds for at, seconds, _g, _t in records if start <= at < end)


@contextmanager
def _timed_calls(times: dict[str, list[float]]) -> Iterator[None]:
    """Time what startup compiles and loads (whichever thread calls it), by name."""
    import app.offline
    import app.ui.workspace
    from app.replica import Replica

    targets: list[tuple[Any, str, str]] = [
        (app.offline, "view_policy", "offline.view_policy (load + replay the outbox)"),
        (Replica, "load_policy", "Replica.load_policy (the whole confirmed policy)"),
        (app.ui.workspace, "Engine", "Engine(...) (compile the view)"),
    ]
    saved = [(owner, name, label, getattr(owner, name)) for owner, name, label in targets
             if hasattr(owner, name)]  # fmt: skip

    def timed(label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            begun = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                times.setdefault(label, []).append(time.perf_counter() - begun)

        return call

    for owner, name, label, function in saved:
        setattr(owner, name, timed(label, function))
    try:
        yield
    finally:
        for owner, name, _label, function in saved:
            setattr(owner, name, function)


def _build_window(replica: Any, plan: dict[str, Any]) -> tuple[Any, str]:
    """The administration window as the app opens it on a replica signed in before."""
    from app.replica import Replica

    directory, tenant, user = Path(plan["directory"]), plan["tenant"], plan["user"]

    def reopen() -> Any:
        return Replica.open(directory, tenant, user)

    try:
        from app.desktop import admin_window
        from app.ui.sign_in import SignedIn
    except ImportError:
        from app.ui.admin import AdminWindow
        from app.ui.workspace import Workspace

        return AdminWindow(Workspace(replica, user), plan["title"]), "AdminWindow(Workspace(...))"
    done = SignedIn(replica=replica, tenant=tenant, user=user, sync=None, reopen=reopen)
    return admin_window(done), "app.desktop.admin_window"


def _views_ready(window: Any) -> bool:
    """Whether the views that need the compiled policy are in the window."""
    return bool(getattr(window, "views_built", getattr(window, "pending_view", None) is not None))


def _wait_views(app: Any, window: Any, timeout_s: float = 300.0) -> None:
    from PySide6.QtCore import QEventLoop, QTimer

    if _views_ready(window):
        return
    loop = QEventLoop()
    poll = QTimer()
    poll.setInterval(TICK_MS)
    deadline = time.perf_counter() + timeout_s

    def check() -> None:
        if _views_ready(window) or time.perf_counter() > deadline:
            loop.quit()

    poll.timeout.connect(check)
    poll.start()
    loop.exec()
    poll.stop()
    if not _views_ready(window):
        raise RuntimeError(f"the views were not built within {timeout_s:g} s")


def _child(kind: str, plan: dict[str, Any], profile_labels: list[str]) -> dict[str, Any]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    collections = _collections()
    marks: dict[str, float] = {}
    from PySide6.QtWidgets import QApplication

    marks["Qt imported"] = time.perf_counter()
    # What the entry point imports, and the window's modules it imports when it opens
    # one: the import phase is all the imports.
    import app.desktop
    import app.ui.admin  # noqa: F401
    from app.replica import Replica
    from app.ui.theme import apply_theme

    marks["app imported"] = time.perf_counter()
    qt_app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(qt_app, QApplication)
    apply_theme(qt_app, "standard")
    marks["QApplication, theme"] = time.perf_counter()
    calls: dict[str, list[float]] = {}
    with _timed_calls(calls):
        replica = Replica.open(Path(plan["directory"]), plan["tenant"], plan["user"])
        marks["replica open (keyring key)"] = time.perf_counter()
        window, built_by = _build_window(replica, plan)
        marks["window built"] = time.perf_counter()
        window.show()
        qt_app.processEvents()
        window.grab()
        marks["shown and painted (usable)"] = time.perf_counter()
        print("usable", flush=True)  # the parent's clock stops here
        result: dict[str, Any] = {"built_by": built_by}
        if kind == "stalls":
            result |= _stalls(qt_app, window, plan, profile_labels, collections)
        else:
            _wait_views(qt_app, window)
            marks["views built"] = time.perf_counter()
            window.grab()
            marks["painted again (ready)"] = time.perf_counter()
    result["marks_s"] = {name: at - STARTED for name, at in marks.items()}
    result["usable_s"] = marks["shown and painted (usable)"] - STARTED
    if "painted again (ready)" in marks:
        result["ready_s"] = marks["painted again (ready)"] - STARTED
    result["calls_s"] = {name: [round(v, 4) for v in values] for name, values in calls.items()}
    result["entities"] = {k: replica.entity_count(k) for k in ("role", "user")}
    if kind == "startup":
        result["first_paint_ms"] = _first_paints(qt_app, window)
    elif kind == "search":
        result["search"] = _search(qt_app, window, replica, plan, collections)
    result["collections"] = _collection_summary(collections)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _first_paints(qt_app: Any, window: Any) -> dict[str, float]:
    paints: dict[str, float] = {}
    for number, (key, page) in enumerate(window.pages.items()):
        begun = time.perf_counter()
        window.show_view(number)
        qt_app.processEvents()
        page.grab()
        paints[key] = (time.perf_counter() - begun) * 1000
    return paints


# --- search as you type --------------------------------------------------------------------


def _search(qt_app: Any, window: Any, replica: Any, plan: dict[str, Any],
            collections: list[tuple[float, float, int, str]]) -> dict[str, Any]:  # fmt: skip
    """Each query typed into its field, answered by apply_search; first pass, then rounds."""
    from app.ui.models import MATCHES

    samples: list[dict[str, Any]] = []
    by_field: dict[str, list[tuple[str, str]]] = {}
    for field_key, kind, text in plan["queries"]:
        by_field.setdefault(field_key, []).append((kind, text))
    for round_number in range(plan["search_rounds"] + 1):
        for field_key, queries in by_field.items():
            window.show_page(field_key)
            qt_app.processEvents()
            view = window.views[field_key]
            for kind, text in queries:
                view.search.setText(text)  # as typed: this starts the debounce timer
                begun = time.perf_counter()
                view.apply_search()  # what the timer calls when typing pauses
                answered = time.perf_counter()
                view.table.viewport().repaint()
                painted = time.perf_counter()
                fts_begun = time.perf_counter()
                replica.search(text, MATCHES)
                fts = time.perf_counter() - fts_begun
                samples.append({"round": round_number, "field": field_key, "kind": kind,
                                "text": text, "apply_s": answered - begun,
                                "painted_s": painted - begun, "fts_s": fts,
                                "gc_s": _collected_between(collections, begun, answered),
                                "hits": view.model.rowCount()})  # fmt: skip
            view.search.setText("")
            view.apply_search()
    return {"samples": samples}


# --- the stall script ----------------------------------------------------------------------


def _row_of(view: Any, entity_id: str) -> int:
    model = view.model
    while True:
        for row in range(model.rowCount()):
            if model.entity_id(row) == entity_id:
                return row
        if not model.canFetchMore():
            return -1
        model.fetchMore()


def _stall_script(window: Any, plan: dict[str, Any], notes: dict[str, Any]) -> list[_Action]:
    """The typical actions, through the widgets, each a list of steps (module docstring),
    once the views that need the policy are there."""
    from PySide6.QtTest import QTest

    actions: list[_Action] = []
    targets = plan["targets"]

    def act(label: str, *steps: _Step) -> None:
        actions.append(_Action(label, list(steps)))

    def typed(line_edit: Any, text: str, settle: int) -> list[_Step]:
        """Clear `line_edit`, then type `text` a key at a time, TYPE_MS apart."""
        steps = [_Step(line_edit.clear, TYPE_MS)]
        for number, char in enumerate(text):
            last = number == len(text) - 1
            steps.append(_Step(partial(QTest.keyClicks, line_edit, char),
                               settle if last else TYPE_MS))  # fmt: skip
        return steps

    def search_field(kind: str) -> Any:
        return window.views[kind].search

    def select(kind: str, entity_id: str) -> _Step:
        def run() -> None:
            view = window.views[kind]
            row = _row_of(view, entity_id)
            if row < 0:
                notes.setdefault("not found", []).append(
                    f"{entity_id} (typed {view.search.text()!r}, filtered by "
                    f"{view.model.filter_text!r}: {view.model.rowCount()} rows)"
                )
            view.table.selectRow(max(row, 0))

        return _Step(run, SETTLE_MS)

    for number, key in enumerate(window.pages):
        act(f"show the {key} view", _Step(partial(window.show_view, number), SETTLE_MS))
    act("show the role view again", _Step(lambda: window.show_page("role"), SETTLE_MS))
    word = targets["role_word"]
    act(f"type {word!r} in the role search", *typed(search_field("role"), word, SEARCH_SETTLE_MS))
    act("clear the role search", _Step(window.views["role"].search.clear, SEARCH_SETTLE_MS))
    heavy_role, typical_role = targets["heavy_role"], targets["typical_role"]
    act(f"type {heavy_role['name']!r} in the role search",
        *typed(search_field("role"), heavy_role["name"], SEARCH_SETTLE_MS))  # fmt: skip
    act(f"select role {heavy_role['name']} (~{heavy_role['holders']:,} holders)",
        select("role", heavy_role["id"]))  # fmt: skip
    act(f"type {typical_role['name']!r} in the role search",
        *typed(search_field("role"), typical_role["name"], SEARCH_SETTLE_MS))  # fmt: skip
    act(f"select role {typical_role['name']} (~{typical_role['holders']:,} holders)",
        select("role", typical_role["id"]))  # fmt: skip
    act("show the user view", _Step(lambda: window.show_page("user"), SETTLE_MS))
    users_table = window.views["user"].table
    act("scroll the user list down 10 times",
        *[_Step(users_table.scrollToBottom, 60) for _ in range(10)])  # fmt: skip
    region = targets["region"]
    act(f"type {region!r} in the user search",
        *typed(search_field("user"), region, SEARCH_SETTLE_MS))  # fmt: skip
    heavy_user, typical_user = targets["heavy_user"], targets["typical_user"]
    for user, what in ((heavy_user, "most roles"), (typical_user, "typical")):
        act(f"type {user['id']!r} in the user search",
            *typed(search_field("user"), user["id"], SEARCH_SETTLE_MS))  # fmt: skip
        act(f"select user {user['id']} ({what}: {user['roles']} roles)",
            select("user", user["id"]))  # fmt: skip
    act("clear the user search", _Step(window.views["user"].search.clear, SEARCH_SETTLE_MS))
    act("show the check view", _Step(lambda: window.show_page("check"), SETTLE_MS))
    for verdict in ("allowed", "denied"):
        request = notes.get(f"{verdict} request")
        if request is None:
            continue
        act(f"type user {request['user']!r} in the check form",
            *typed(window.check_view.user, request["user"], SETTLE_MS))  # fmt: skip
        act("fill in the rest of the check form",
            _Step(partial(_fill_check, window, request), SETTLE_MS))  # fmt: skip
        act(f"press Check ({verdict})", _Step(window.check_view.check_button.click, SETTLE_MS))
    request = notes.get("allowed request") or notes.get("denied request")
    if request is not None:
        act("fill in the who-can form", _Step(partial(_fill_who_can, window, request), SETTLE_MS))
        act(f"press Find who can ({request['action']} {request['resource']['type']})",
            _Step(window.check_view.who_button.click, SETTLE_MS))  # fmt: skip
    edit = plan["assign"]

    def queue() -> None:
        from app.offline import EditProblem

        try:
            notes["queued"] = window.workspace.queue([edit])
        except EditProblem as problem:
            notes["queue problem"] = str(problem)

    act(f"queue an edit: assign {edit['role_id']} to {edit['user_id']}", _Step(queue, SETTLE_MS))
    act("show the pending view (impact)", _Step(lambda: window.show_page("pending"), SETTLE_MS))

    def undo() -> None:
        window.pending_view.undo_action.trigger()
        notes["pending after undo"] = len(window.workspace.pending())

    act("undo (Ctrl+Z: take back the edit)", _Step(undo, SETTLE_MS))
    act("show the role view at the end", _Step(lambda: window.show_page("role"), SETTLE_MS))

    def sync_arrives() -> None:
        # What the live sync does when a page of changes moved the cursor: the replica
        # holds the change, and the window is told (LiveSync.moved).
        from sync.replication.entities import ROLE, Entity

        replica = window.workspace.replica
        role_id = typical_role["id"]
        ((document,),) = replica.query(
            "SELECT document FROM entities WHERE kind = ? AND id = ?", (ROLE, role_id)
        )
        changed = json.loads(document) | {"description": "changed by a sync"}
        replica.apply_changes(replica.meta().cursor + 1, [Entity(ROLE, role_id, changed)], 1)
        window._sync_moved()

    act("a sync brings a change (the view compiles again)", _Step(sync_arrives, REFRESH_MS))
    return actions


def _fill_check(window: Any, request: dict[str, Any]) -> None:
    view = window.check_view
    popup = view.completer.popup()
    if popup is not None:
        popup.hide()
    view.tabs.setCurrentIndex(0)
    _fill_request(request, view.type, view.action, view.resource_id, view.pairs, context=True)


def _fill_who_can(window: Any, request: dict[str, Any]) -> None:
    view = window.check_view
    view.tabs.setCurrentIndex(1)
    _fill_request(request, view.who_type, view.who_action, view.who_resource_id, view.who_pairs,
                  context=False)  # fmt: skip


def _fill_request(
    request: dict[str, Any], type_box: Any, action_box: Any, resource_id: Any, pairs: Any,
    *, context: bool,
) -> None:  # fmt: skip
    """One of the check view's forms filled in from a request document (its context but
    the time, when the form has one)."""
    resource_ = request["resource"]
    type_box.setCurrentText(resource_["type"])
    action_box.setCurrentText(request["action"])
    resource_id.setText(str(resource_.get("id") or ""))
    pairs.clear()
    for key, value in (resource_.get("attributes") or {}).items():
        pairs.set_value(f"resource.{key}", value)
    for key, value in (request.get("context") or {}).items() if context else ():
        if key != "time":
            pairs.set_value(f"context.{key}", value)


def _pick_requests(window: Any, plan: dict[str, Any], notes: dict[str, Any]) -> None:
    """An allowed and a denied request among the tenant's, as the check form sends them."""
    from sync.policy.request import Request

    engine = window.workspace.engine()
    now = window.workspace.now()
    for document in plan["requests"]:
        resource_ = document["resource"]
        context = {k: v for k, v in (document.get("context") or {}).items() if k != "time"}
        request = Request(
            document["user"], document["action"], resource_["type"], resource_.get("id"),
            resource_.get("attributes") or {}, context,
        )  # fmt: skip
        verdict = "allowed" if engine.decide(request, now).allowed else "denied"
        notes.setdefault(f"{verdict} request", document)
        if "allowed request" in notes and "denied request" in notes:
            return


def _stalls(qt_app: Any, window: Any, plan: dict[str, Any], profile_labels: list[str],
            collections: list[tuple[float, float, int, str]]) -> dict[str, Any]:  # fmt: skip
    """Run the script under the stall meter; per action, its time and its longest gap."""
    import cProfile

    from PySide6.QtCore import Qt, QTimer

    meter = _Meter()
    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    timer.setInterval(TICK_MS)
    timer.timeout.connect(meter.tick)
    notes: dict[str, Any] = {}
    script: list[_Action] = []
    done: list[_Action] = []
    profilers = {label: cProfile.Profile() for label in profile_labels}
    profiling: list[Any] = []

    def begin_next() -> None:
        while profiling:
            profiling.pop().disable()
        if not script:
            qt_app.quit()
            return
        action = script.pop(0)
        action.started = time.perf_counter()
        done.append(action)
        if action.label in profilers:
            profilers[action.label].enable()
            profiling.append(profilers[action.label])
        run_step(action)

    def run_step(action: _Action) -> None:
        step = action.steps[0]
        begun = time.perf_counter()
        again = step.call()
        action.call_s += time.perf_counter() - begun
        if again is True:
            QTimer.singleShot(TICK_MS, lambda: run_step(action))
            return
        action.steps.pop(0)
        if action.steps:
            QTimer.singleShot(step.after_ms, lambda: run_step(action))
        else:
            QTimer.singleShot(step.after_ms, begin_next)

    meter.last = time.perf_counter()
    timer.start()
    # The baseline and the wait for the views run first; the rest of the script is
    # written once the views are there (it refers to them), with the requests picked
    # then, untimed.
    script.append(_Action("just after usable (500 ms)", [_Step(lambda: None, 500)]))
    script.append(_Action("until the views needing the policy are built",
                          [_Step(lambda: not _views_ready(window), SETTLE_MS)]))  # fmt: skip

    def rest() -> None:
        picked = time.perf_counter()
        _pick_requests(window, plan, notes)
        notes["picking requests (untimed) s"] = round(time.perf_counter() - picked, 3)
        script.append(_Action("idle (baseline, 500 ms)", [_Step(lambda: None, 500)]))
        script.extend(_stall_script(window, plan, notes))
        meter.last = time.perf_counter()  # the picking is not an action's stall

    script.append(_Action("(writing the script)", [_Step(rest, 0)]))
    QTimer.singleShot(0, begin_next)
    qt_app.exec()
    timer.stop()
    return {
        "actions": _action_figures(done, meter, collections),
        "notes": notes,
        "profiles": [
            _profile_summary(profiler, label, number)
            for number, (label, profiler) in enumerate(profilers.items())
        ],
    }


def _action_figures(
    done: list[_Action], meter: _Meter, collections: list[tuple[float, float, int, str]]
) -> list[dict[str, Any]]:
    figures: list[dict[str, Any]] = []
    ends = [a.started for a in done[1:]] + [float("inf")]
    for action, end in zip(done, ends, strict=True):
        if action.label == "(writing the script)":
            continue
        gaps = [(at, gap) for at, gap in meter.ticks if action.started <= at < end]
        longest = max((gap for _, gap in gaps), default=0.0)
        busy = sum(gap - TICK_MS / 1000 for _, gap in gaps if gap > 2 * TICK_MS / 1000)
        oldest = [r for r in collections if action.started <= r[0] < end and r[2] == 2]
        figures.append({"label": action.label, "call_ms": action.call_s * 1000,
                        "longest_gap_ms": longest * 1000, "busy_ms": busy * 1000,
                        "ticks": len(gaps), "gen2_collections": len(oldest),
                        "gen2_longest_ms": max((r[1] for r in oldest), default=0.0) * 1000,
                        "gen2_threads": sorted({r[3] for r in oldest}),
                        # Where in the action the long gaps and collections were (ms from
                        # its start; a gap is timed at the tick that ended it).
                        "long_gaps_at_ms": [(round((at - action.started) * 1000),
                                             round(gap * 1000)) for at, gap in gaps if gap > 0.02],
                        "collections_at_ms": [
                            (round((r[0] - action.started) * 1000), round(r[1] * 1000), r[2], r[3])
                            for r in collections if action.started <= r[0] < end and r[1] > 0.005
                        ]})  # fmt: skip
    return figures


def _profile_summary(profiler: Any, label: str, number: int) -> dict[str, Any]:
    import pstats

    path = PROFILE_FILE.with_name(f"{PROFILE_FILE.stem}-{number + 1}.prof")
    profiler.dump_stats(str(path))
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, name), (_cc, calls, own, cumulative, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = filename
        for prefix in (str(ROOT) + os.sep, ""):
            if prefix and filename.startswith(prefix):
                where = filename[len(prefix) :]
        ours = filename.startswith((str(ROOT / "app"), str(ROOT / "sync")))
        rows.append((f"{where}:{line}({name})", calls, own, cumulative, ours))
    ours = sorted((r for r in rows if r[4]), key=lambda r: -r[3])[:15]
    own_time = sorted(rows, key=lambda r: -r[2])[:10]
    total = max((r[3] for r in rows), default=0.0)
    return {
        "label": label,
        "file": str(path.relative_to(ROOT)),
        "total_s": total,
        "top_cumulative_ours": [(n, c, round(o, 4), round(t, 4)) for n, c, o, t, _ in ours],
        "top_own_time": [(n, c, round(o, 4), round(t, 4)) for n, c, o, t, _ in own_time],
    }


# === the parent: replicas, plans, runs, figures ==========================================


def _environment() -> dict[str, str]:
    """Keyring mode across processes: the file-backed keyring (bench/file_keyring.py)."""
    return os.environ | {
        "QT_QPA_PLATFORM": "offscreen",
        "PYTHON_KEYRING_BACKEND": "bench.file_keyring.Keyring",
        "FLEETGATE_BENCH_KEYRING": str(KEYRING_FILE),
        "PYTHONPATH": str(ROOT),
    }


def _fill(directory: Path, tenant: str, user: str, policy: Any) -> float:
    """A keyring-mode replica of `user` holding `policy`, as a snapshot fills it; seconds."""
    from app.replica import Replica
    from app.replica_file import KeyMode
    from sync.replication.digest import digest_of
    from sync.replication.entities import policy_entities

    begun = time.perf_counter()
    entities = list(policy_entities(policy))
    replica = Replica.open(directory, tenant, user, create=True, mode=KeyMode.KEYRING)
    try:
        replica.replace_all(1, entities, digest_of(entities))
    finally:
        replica.close()
    return time.perf_counter() - begun


def _prepare(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Both replicas and the plans the children follow."""
    import keyring
    import orjson

    from app.clock import wall_now
    from app.demo import ADMIN as DEMO_ADMIN
    from app.demo import DEMO
    from app.policy_files import gc_paused
    from bench.client import ADMIN, _bench_document
    from bench.file_keyring import Keyring
    from bench.tenant import benchmark_folder
    from sync.policy.document import parse_policy

    KEYRING_FILE.unlink(missing_ok=True)
    os.environ.update({k: v for k, v in _environment().items()
                       if k in ("FLEETGATE_BENCH_KEYRING", "PYTHON_KEYRING_BACKEND")})  # fmt: skip
    keyring.set_keyring(Keyring())  # type: ignore[no-untyped-call]
    now = wall_now()
    prepared: dict[str, Any] = {}

    demo_document = orjson.loads(DEMO.read_bytes())
    with gc_paused():
        demo_policy = parse_policy(demo_document, now=now)
    demo_dir = work / "demo"
    prepared["demo_fill_s"] = _fill(demo_dir, demo_document["tenant"], DEMO_ADMIN, demo_policy)
    demo = {"directory": str(demo_dir), "tenant": demo_document["tenant"], "user": DEMO_ADMIN,
            "title": f"{demo_document['tenant']} \u2014 {DEMO_ADMIN}",
            "roles": len(demo_policy.roles), "users": len(demo_policy.users)}  # fmt: skip

    folder = benchmark_folder(OUT, args.roles, args.users, args.requests, args.seed)
    document = _bench_document(folder)
    with gc_paused():
        policy = parse_policy(document, now=now)
    bench_dir = work / "bench"
    prepared["bench_fill_s"] = _fill(bench_dir, document["tenant"], ADMIN, policy)
    with (folder / "requests.jsonl").open("rb") as lines:
        requests = [orjson.loads(line) for _, line in zip(range(400), lines, strict=False)]
    bench = {"directory": str(bench_dir), "tenant": document["tenant"], "user": ADMIN,
             "title": f"{document['tenant']} \u2014 {ADMIN}", "folder": folder.name,
             "roles": len(policy.roles), "users": len(policy.users),
             "queries": _queries(document, args.seed), "search_rounds": args.search_rounds,
             "targets": _targets(policy, document, ADMIN), "requests": requests}  # fmt: skip
    bench["assign"] = _assignment(policy, bench["targets"]["typical_user"]["id"], ADMIN)
    del policy, document
    prepared["demo"], prepared["bench"] = demo, bench
    return prepared


_FIELDS = {"user id": "user", "user id prefix": "user", "attribute value": "user",
           "person's name": "user", "role name": "role", "role name prefix": "role",
           "role id prefix": "role", "description word": "role"}  # fmt: skip


def _queries(document: dict[str, Any], seed: int) -> list[tuple[str, str, str]]:
    """(field, kind, text): bench-client's realistic queries, each in the field it is
    typed into, and every prefix of a few words as a slow typist's pauses send them."""
    from bench.client import _search_queries

    queries = [(_FIELDS[kind], kind, text) for kind, text in _search_queries(document, seed)
               if kind in _FIELDS]  # fmt: skip
    user = document["users"][len(document["users"]) // 3]
    attributes = user.get("attributes") or {}
    words = [("user", str(user.get("name") or user["id"]).split()[0]), ("user", user["id"]),
             ("user", str(attributes.get("region", "north"))),
             ("user", str(attributes.get("depot", "depot"))),
             ("role", document["roles"][len(document["roles"]) // 2]["name"])]  # fmt: skip
    for field_key, word in words:
        queries += [(field_key, "typed prefix", word[:n]) for n in range(1, len(word) + 1)]
    return queries


def _targets(policy: Any, document: dict[str, Any], admin: str) -> dict[str, Any]:
    """The roles and users the stall script opens: the heaviest and a typical one."""
    direct = Counter(a.role_id for u in policy.users.values() for a in u.roles)
    holders = {
        role_id: sum(direct[d] for d in policy.descendants(role_id))
        for role_id, role in policy.roles.items()
        if role.name != admin
    }
    by_holders = sorted(holders, key=lambda r: holders[r])
    ancestors: dict[str, int] = {}

    def held(user: Any) -> int:
        for assignment in user.roles:
            if assignment.role_id not in ancestors:
                ancestors[assignment.role_id] = len(list(policy.ancestors(assignment.role_id)))
        return sum(ancestors[a.role_id] for a in user.roles)

    users = [u for u in policy.users.values() if u.id != admin]
    heavy_user = max(users, key=held)
    typical_user = sorted(users, key=held)[len(users) // 2]

    def role(role_id: str) -> dict[str, Any]:
        return {"id": role_id, "name": policy.role_name(role_id), "holders": holders[role_id]}

    regions = Counter(str((u.attributes or {}).get("region", "")) for u in users)
    return {
        "heavy_role": role(by_holders[-1]),
        "typical_role": role(by_holders[len(by_holders) // 2]),
        "heavy_user": {"id": heavy_user.id, "roles": len(heavy_user.roles)},
        "typical_user": {"id": typical_user.id, "roles": len(typical_user.roles)},
        "region": regions.most_common(1)[0][0] or "north",
        "role_word": "dispatch",
    }


def _assignment(policy: Any, user_id: str, admin: str) -> dict[str, Any]:
    """An assignment the admin may queue: a role no constraint names (nor its ancestors)."""
    constrained = {r for c in policy.constraints for r in c.exclusive}
    held = {a.role_id for a in policy.users[user_id].roles}
    for role_id, role in policy.roles.items():
        if role_id in held or role.name == admin:
            continue
        if not any(r in constrained for r, _ in policy.ancestors(role_id)):
            return {"op": "assign_role", "user_id": user_id, "role_id": role_id,
                    "expires": "2027-06-30T00:00:00Z"}  # fmt: skip
    raise RuntimeError(f"no role can be assigned to {user_id} without a constraint")


class ChildFailed(RuntimeError):
    pass


def _spawn(kind: str, plan: dict[str, Any], work: Path, number: int,
           profile_labels: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """One child process; its figures, with the parent's clock of it."""
    plan_file = work / f"plan-{kind}-{number}.json"
    out_file = work / f"out-{kind}-{number}.json"
    error_file = work / f"stderr-{kind}-{number}.txt"
    plan_file.write_text(json.dumps(plan))
    command = [sys.executable, "-m", "bench.app", "--child", kind, "--plan", str(plan_file),
               "--out", str(out_file)]  # fmt: skip
    for label in profile_labels:
        command += ["--profile-action", label]
    load = _load()
    with error_file.open("wb") as errors:
        begun = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, cwd=ROOT,
                                   env=_environment())  # fmt: skip
        assert process.stdout is not None
        usable_at: float | None = None
        for line in process.stdout:
            if usable_at is None and line.startswith(b"usable"):
                usable_at = time.perf_counter()
        code = process.wait(timeout=900)
        ended = time.perf_counter()
    if code != 0 or not out_file.exists():
        tail = [line for line in error_file.read_text(errors="replace").splitlines()
                if "propagateSizeHints" not in line][-15:]  # fmt: skip
        raise ChildFailed(f"{kind} child {number} exited {code}:\n" + "\n".join(tail))
    figures: dict[str, Any] = json.loads(out_file.read_text())
    figures["parent_to_usable_s"] = (usable_at - begun) if usable_at is not None else None
    figures["parent_process_s"] = ended - begun
    figures["load_before"] = load
    return figures


def _child_copy(source: Path, target: Path) -> Path:
    """A copy of a replica for a run that queues edits (its keyring entry is the same)."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.lock"))
    return target


def _measure(args: argparse.Namespace, results: dict[str, Any], work: Path) -> None:
    print(f"load average {results['load_at_start']} on {os.cpu_count()} CPUs; "
          "making the replicas ...", flush=True)  # fmt: skip
    prepared = _prepare(args, work)
    demo, bench = prepared["demo"], prepared["bench"]
    results["replicas"] = {
        "demo": {"roles": demo["roles"], "users": demo["users"], "fill_s": prepared["demo_fill_s"]},
        "bench": {"roles": bench["roles"], "users": bench["users"], "folder": bench["folder"],
                  "fill_s": prepared["bench_fill_s"]},
        "how": "filled directly (Replica.replace_all of policy_entities(parse_policy(...))), "
               "keyring mode with bench/file_keyring.py",
    }  # fmt: skip
    print(f"demo {demo['roles']} roles, {demo['users']} users; bench {bench['roles']:,} roles, "
          f"{bench['users']:,} users (filled in {prepared['bench_fill_s']:.1f} s)",
          flush=True)  # fmt: skip

    for name, plan in (("demo", demo), ("bench", bench)):
        runs = []
        for number in range(args.runs):
            run = _spawn("startup", plan, work, number)
            runs.append(run)
            print(f"startup {name} {number + 1}/{args.runs}: usable {run['usable_s']:.2f} s "
                  f"(parent {run['parent_to_usable_s']:.2f} s), ready {run['ready_s']:.2f} s",
                  flush=True)  # fmt: skip
        results[f"startup_{name}"] = runs

    searches = []
    for number in range(args.search_runs):
        searches.append(_spawn("search", bench, work, number))
        print(f"search run {number + 1}/{args.search_runs}: "
              f"{len(searches[-1]['search']['samples'])} searches", flush=True)  # fmt: skip
    results["search_runs"] = searches

    stalls = []
    for number in range(args.stall_runs):
        plan = bench | {"directory": str(_child_copy(Path(bench["directory"]),
                                                     work / f"stalls-{number}"))}  # fmt: skip
        stalls.append(_spawn("stalls", plan, work, number))
        worst = max(stalls[-1]["actions"], key=lambda a: a["longest_gap_ms"])
        print(f"stall run {number + 1}/{args.stall_runs}: longest gap "
              f"{worst['longest_gap_ms']:.0f} ms in {worst['label']!r}", flush=True)  # fmt: skip
    results["stall_runs"] = stalls
    if stalls and args.profile:
        ranked = sorted(_stall_figures(stalls)["actions"],
                        key=lambda a: -a["median_longest_gap_ms"])  # fmt: skip
        labels = tuple(a["label"] for a in ranked[: args.profile])
        for stale in OUT.glob(f"{PROFILE_FILE.stem}-*.prof"):
            stale.unlink()
        print(f"profiling {', '.join(map(repr, labels))} (one more run) ...", flush=True)
        plan = bench | {"directory": str(_child_copy(Path(bench["directory"]),
                                                     work / "profiled"))}  # fmt: skip
        try:
            results["profiles"] = _spawn("stalls", plan, work, 99, labels)["profiles"]
        except ChildFailed as failure:  # the figures above stand without it
            print(f"the profiled run failed: {failure}", file=sys.stderr)
            results["profile_failure"] = str(failure)


# --- figures and output --------------------------------------------------------------------


def _startup_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    middle = sorted(runs, key=lambda r: r["usable_s"])[len(runs) // 2]
    phases, before = [], 0.0
    for name, at in middle["marks_s"].items():
        phases.append((name, at - before))
        before = at
    paints = {key: _spread([r["first_paint_ms"][key] for r in runs])
              for key in runs[0]["first_paint_ms"]}  # fmt: skip
    return {
        "usable_s": _spread([r["usable_s"] for r in runs]),
        "parent_to_usable_s": _spread([r["parent_to_usable_s"] for r in runs]),
        "ready_s": _spread([r["ready_s"] for r in runs]),
        "process_s": _spread([r["parent_process_s"] for r in runs]),
        "median_run_phases_s": phases,
        "median_run_calls_s": middle["calls_s"],
        "median_run_collections": middle["collections"],
        "first_paint_ms": paints,
        "built_by": middle["built_by"],
        "peak_rss_mib": middle["peak_rss_mib"],
    }


def _search_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    samples = [s for run in runs for s in run["search"]["samples"]]
    warm = [s for s in samples if s["round"] > 0] or samples
    first = [s for s in samples if s["round"] == 0]
    kinds: dict[str, list[float]] = {}
    for s in warm:
        kinds.setdefault(s["kind"], []).append(s["apply_s"])
    slowest = sorted(samples, key=lambda s: -s["apply_s"])[:5]
    over = [s for s in samples if s["apply_s"] * 1000 > GOAL_SEARCH_MS]
    return {
        "queries": len(first) // max(1, len(runs)),
        "apply_search": summary_ms([s["apply_s"] for s in warm]),
        "apply_search_first_pass": summary_ms([s["apply_s"] for s in first]),
        "apply_search_less_collections": summary_ms([s["apply_s"] - s["gc_s"] for s in samples]),
        "with_repaint": summary_ms([s["painted_s"] for s in warm]),
        "fts_alone": summary_ms([s["fts_s"] for s in warm]),
        "by_kind": {kind: summary_ms(values) for kind, values in kinds.items()},
        "slowest": [
            {
                "field": s["field"],
                "text": s["text"],
                "ms": round(s["apply_s"] * 1000, 1),
                "collector_ms": round(s["gc_s"] * 1000, 1),
                "rows": s["hits"],
            }
            for s in slowest
        ],
        "over_goal": len(over),
        "over_goal_mostly_collector": sum(1 for s in over if s["gc_s"] > s["apply_s"] / 2),
        "searches": len(samples),
        "median_hits": statistics.median(s["hits"] for s in warm),
        "collections": [run["collections"] for run in runs],
    }


def _stall_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    labels = [a["label"] for a in runs[0]["actions"]]
    per: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        for action in run["actions"]:
            entry = per.setdefault(action["label"], {})
            for key in ("call_ms", "longest_gap_ms", "busy_ms", "gen2_longest_ms",
                        "gen2_collections"):  # fmt: skip
                entry.setdefault(key, []).append(action[key])
    actions = [
        {"label": label, "runs": len(per[label]["call_ms"]),
         "longest_gap_ms": max(per[label]["longest_gap_ms"]),
         "median_longest_gap_ms": statistics.median(per[label]["longest_gap_ms"]),
         "median_call_ms": statistics.median(per[label]["call_ms"]),
         "median_busy_ms": statistics.median(per[label]["busy_ms"]),
         "gen2_collections": sum(per[label]["gen2_collections"]),
         "gen2_longest_ms": max(per[label]["gen2_longest_ms"])}
        for label in labels if label in per
    ]  # fmt: skip
    worst = max(actions, key=lambda a: a["median_longest_gap_ms"])
    return {"actions": actions, "worst": worst,
            "longest_ms": max(a["longest_gap_ms"] for a in actions),
            "notes": [run["notes"] for run in runs],
            "collections": [run["collections"] for run in runs]}  # fmt: skip


def _goal(value: float, goal: float, unit: str) -> str:
    verdict = "met" if value <= goal else "NOT met"
    return f"(goal <= {goal:g} {unit}: {verdict})"


def _collections_text(summary: dict[str, Any]) -> str:
    return (f"{summary['count']} collections, {summary['total_s']:.2f} s; "
            f"{summary['gen2_count']} of the oldest generation, longest "
            f"{summary['gen2_longest_ms']:.0f} ms")  # fmt: skip


def _print(results: dict[str, Any]) -> None:
    replicas = results["replicas"]
    print(f"\nFleetgate desktop app benchmark: bench tenant {replicas['bench']['roles']:,} roles, "
          f"{replicas['bench']['users']:,} users; demo {replicas['demo']['roles']} roles, "
          f"{replicas['demo']['users']} users; Python {results['python']}, {results['cpus']} "
          f"CPUs, load average {results['load_at_start']} at start, {results['load_at_end']} "
          "at the end (other work shares this machine)")  # fmt: skip
    print(
        f"  replicas: {replicas['how']}; windows from "
        f"{results['figures']['startup_bench']['built_by']}, QT_QPA_PLATFORM=offscreen"
    )
    rows: list[tuple[str, str]] = []
    for name, goal in (("demo", GOAL_USABLE_DEMO_S), ("bench", GOAL_USABLE_BENCH_S)):
        startup = results["figures"][f"startup_{name}"]
        usable, parent = startup["usable_s"], startup["parent_to_usable_s"]
        ready = startup["ready_s"]
        paints = startup["first_paint_ms"]
        rows += [
            (f"startup to usable, {name} tenant",
             f"{usable['median']:.2f} s median, max {usable['max']:.2f} of "
             f"{len(usable['runs'])} (from the child's first line)   "
             f"{_goal(usable['median'], goal, 's')}"),
            ("  from spawning the process (parent)",
             f"{parent['median']:.2f} s median, max {parent['max']:.2f}   "
             f"{_goal(parent['median'], goal, 's')}"),
            ("  to every view built (policy compiled)",
             f"{ready['median']:.2f} s median, max {ready['max']:.2f}"),
            ("  phases of the median run",
             ", ".join(f"{n} {s:.3f}" for n, s in startup["median_run_phases_s"]) + " s"),
            ("  of which (any thread)", "; ".join(
                f"{n}: {len(v)} x, {sum(v):.3f} s"
                for n, v in startup["median_run_calls_s"].items()) or "-"),
            ("  the collector, whole run", _collections_text(startup["median_run_collections"])),
            ("  first paint of each view",
             ", ".join(f"{k} {v['median']:.0f}" for k, v in paints.items()) + " ms (median; max "
             + ", ".join(f"{k} {v['max']:.0f}" for k, v in paints.items()) + ")"),
            ("  whole process (no teardown), peak RSS",
             f"{startup['process_s']['median']:.2f} s, {startup['peak_rss_mib']:.0f} MiB"),
        ]  # fmt: skip
    search = results["figures"]["search"]
    apply_, first = search["apply_search"], search["apply_search_first_pass"]
    repaint, fts = search["with_repaint"], search["fts_alone"]
    less = search["apply_search_less_collections"]
    rows += [
        ("search as you type (apply_search)",
         f"p50 {apply_['p50_ms']:.1f} ms, p99 {apply_['p99_ms']:.1f} ms, max "
         f"{apply_['max_ms']:.1f} ms over {apply_['n']} searches ({search['queries']} queries, "
         f"rounds after the first)   {_goal(apply_['p99_ms'], GOAL_SEARCH_MS, 'ms')} p99; max "
         f"{_goal(apply_['max_ms'], GOAL_SEARCH_MS, 'ms')}"),
        ("  first pass (fresh process)",
         f"p50 {first['p50_ms']:.1f} ms, p99 {first['p99_ms']:.1f} ms, "
         f"max {first['max_ms']:.1f} ms"),
        ("  with the table repainted",
         f"p50 {repaint['p50_ms']:.1f} ms, p99 {repaint['p99_ms']:.1f} ms, "
         f"max {repaint['max_ms']:.1f} ms"),
        ("  Replica.search alone (FTS5)",
         f"p50 {fts['p50_ms']:.1f} ms, p99 {fts['p99_ms']:.1f} ms, max {fts['max_ms']:.1f} ms"),
        ("  over the goal",
         f"{search['over_goal']} of {search['searches']}, {search['over_goal_mostly_collector']} "
         f"of them mostly the collector; less the collector's time: p99 {less['p99_ms']:.1f} "
         f"ms, max {less['max_ms']:.1f} ms"),
        ("  p99 by kind", ", ".join(f"{k} {v['p99_ms']:.1f}" for k, v in search["by_kind"].items())
         + " ms"),
        ("  slowest", "; ".join(
            f"{s['field']} {s['text']!r} {s['ms']} ms (collector {s['collector_ms']} ms, "
            f"{s['rows']} rows)" for s in search["slowest"])),
    ]  # fmt: skip
    stalls = results["figures"]["stalls"]
    worst = stalls["worst"]
    rows += [
        ("longest UI stall (5 ms timer gaps)",
         f"{stalls['longest_ms']:.0f} ms; worst action (median of runs) {worst['label']!r} "
         f"{worst['median_longest_gap_ms']:.0f} ms   "
         f"{_goal(stalls['longest_ms'], GOAL_STALL_MS, 'ms')}"),
        ("  the collector, first run", _collections_text(stalls["collections"][0])),
        ("  each action", "longest gap (max of runs) | its calls (median) | loop busy "
         "(median) | longest full collection"),
    ]  # fmt: skip
    for action in stalls["actions"]:
        flag = "  <-- over" if action["longest_gap_ms"] > GOAL_STALL_MS else ""
        collected = (
            f"{action['gen2_longest_ms']:5.0f} ms" if action["gen2_collections"] else "    -"
        )
        rows.append((f"    {action['label']}",
                     f"{action['longest_gap_ms']:6.0f} ms | {action['median_call_ms']:6.0f} ms | "
                     f"{action['median_busy_ms']:6.0f} ms | {collected}{flag}"))  # fmt: skip
    notes = stalls["notes"][0] if stalls["notes"] else {}
    if notes:
        shown = {k: v for k, v in notes.items() if not k.endswith("request")}
        rows.append(("  notes (first run)", json.dumps(shown, default=str)))
    for profile in results.get("profiles") or []:
        profiled = f"{profile['total_s'] * 1000:.0f} ms profiled, in {profile['file']}"
        rows.append((f"  cProfile of {profile['label']!r}", profiled))
        for name, calls, _own, cumulative in profile["top_cumulative_ours"][:6]:
            rows.append(("    cumulative", f"{cumulative * 1000:7.0f} ms  {calls:>7} x  {name}"))
        for name, calls, own, _cumulative in profile["top_own_time"][:3]:
            rows.append(("    own time", f"{own * 1000:7.0f} ms  {calls:>7} x  {name}"))
    print_rows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.app", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--roles", type=int, default=1000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=200_000,
                        help="the requests file of the tenant (bench-client's)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5, help="startups of each tenant")
    parser.add_argument("--search-runs", type=int, default=2)
    parser.add_argument("--search-rounds", type=int, default=2, help="after the first pass")
    parser.add_argument("--stall-runs", type=int, default=3)
    parser.add_argument("--profile", type=int, default=6, metavar="N",
                        help="cProfile the N worst actions in one more run (0: none)")  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help="100 roles, 2,000 users, fewer runs")  # fmt: skip
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--plan", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile-action", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        figures = _child(args.child, json.loads(args.plan.read_text()), args.profile_action)
        args.out.write_text(json.dumps(figures, default=str))
        sys.stdout.flush()
        os._exit(0)  # the collector's teardown of a 50,000-user policy is not a figure here
    if args.quick:
        args.roles, args.users, args.requests = 100, 2000, 10_000
        args.runs, args.search_runs, args.search_rounds, args.stall_runs = 2, 1, 1, 1
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "arguments": {k: v for k, v in vars(args).items() if k not in ("plan", "out")},
        "load_at_start": _load(),
        "goals": {
            "usable_demo_s": GOAL_USABLE_DEMO_S,
            "usable_bench_s": GOAL_USABLE_BENCH_S,
            "search_ms": GOAL_SEARCH_MS,
            "stall_ms": GOAL_STALL_MS,
        },
    }
    begun = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="fleetgate-bench-app-"))
    try:
        _measure(args, results, work)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except ChildFailed as failure:
        print(f"\n{failure}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
        KEYRING_FILE.unlink(missing_ok=True)  # its keys opened only the replicas just removed
    results["load_at_end"] = _load()
    results["seconds"] = time.perf_counter() - begun
    results["figures"] = {
        "startup_demo": _startup_figures(results["startup_demo"]),
        "startup_bench": _startup_figures(results["startup_bench"]),
        "search": _search_figures(results["search_runs"]),
        "stalls": _stall_figures(results["stall_runs"]),
    }
    for runs in results["search_runs"]:
        runs["search"]["samples"] = len(runs["search"]["samples"])  # the summary is kept
    name = "app-quick.json" if args.quick else "app.json"
    (OUT / name).write_text(json.dumps(results, indent=2, default=str) + "\n")
    _print(results)
    print(f"\nresults in {OUT / name} ({results['seconds']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
