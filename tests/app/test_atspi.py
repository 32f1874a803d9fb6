"""The running desktop app as a screen reader meets it: over AT-SPI, on a virtual display.

The module's fixture starts, in a temporary folder, Xvfb on a free display, a
D-Bus session bus (the accessibility bus and its registry are started by it on
demand, as on a desktop), the app (tests/app/atspi_app.py `serve`: a real
encrypted replica, the administration window over xcb with
QT_LINUX_ACCESSIBILITY_ALWAYS_ON=1), and then the reader (the same script's
`read`, under the system's python3 with pyatspi), which prints every accessible
object of the window. The tests check the names, roles, relations and states
the reader saw. Every process is stopped afterwards, with its process group.

Needs Debian's xvfb, dbus, at-spi2-core and python3-pyatspi (and the xcb
libraries Qt's platform plugin loads): where one is missing the tests skip,
saying which. `.ci/run` installs them first, so CI always runs them.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SCRIPT = HERE / "atspi_app.py"
SYSTEM_PYTHON = Path("/usr/bin/python3")
"""Debian's python3-pyatspi installs pyatspi for this interpreter, not for .venv's."""
LAUNCHERS = (
    Path("/usr/libexec/at-spi-bus-launcher"),
    Path("/usr/lib/at-spi2-core/at-spi-bus-launcher"),
)
BUS_SERVICE = Path("/usr/share/dbus-1/services/org.a11y.Bus.service")
BUDGET_S = 45.0
"""Everything, from the first process started to the tree read, within this."""
READER_WAIT_S = 20
"""How long the reader looks for the app's window on the bus (it is shown by then)."""

FIELD_ROLES = {"text", "entry", "password text"}
LIST_ROLES = {"list", "list box"}
TABLE_ROLES = {"table", "tree table"}
HEADER_ROLES = {"table column header", "column header"}
STATUS_ROLES = {"push button", "label", "status bar", "toggle button"}
DATA_ROLES = {"table cell"}
"""Cells are the data the table shows, not controls: their names are their values."""


def missing_pieces() -> list[str]:
    """What this machine lacks for the tests, each with the Debian package bringing it."""
    if not sys.platform.startswith("linux"):
        return ["Linux (AT-SPI is the Linux desktop's accessibility bus)"]
    missing = []
    if shutil.which("Xvfb") is None:
        missing.append("Xvfb (Debian package xvfb)")
    if shutil.which("dbus-daemon") is None:
        missing.append("dbus-daemon (Debian package dbus)")
    if not (any(path.exists() for path in LAUNCHERS) and BUS_SERVICE.exists()):
        missing.append("at-spi-bus-launcher and its D-Bus service (Debian package at-spi2-core)")
    if not _system_pyatspi():
        missing.append(f"{SYSTEM_PYTHON} with pyatspi (Debian package python3-pyatspi)")
    missing += _xcb_libraries_missing()
    return missing


def _system_pyatspi() -> bool:
    if not SYSTEM_PYTHON.exists():
        return False
    try:
        found = subprocess.run([str(SYSTEM_PYTHON), "-c", "import pyatspi"],
                               env=_system_env(dict(os.environ)), capture_output=True,
                               timeout=20, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        return False
    return found.returncode == 0


def _xcb_libraries_missing() -> list[str]:
    """The shared libraries Qt's xcb platform plugin needs and cannot find (ldd)."""
    import PySide6

    plugin = Path(PySide6.__file__).parent / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    if not plugin.exists():
        return [f"Qt's xcb platform plugin ({plugin})"]
    ldd = shutil.which("ldd")
    if ldd is None:
        return []  # cannot tell: the app will say so if it fails to start
    linked = subprocess.run([ldd, str(plugin)], capture_output=True, text=True, timeout=20,
                            check=False)  # fmt: skip
    return [
        f"{line.split()[0]} for Qt's xcb platform plugin"
        for line in linked.stdout.splitlines()
        if "not found" in line
    ]


def _system_env(env: dict[str, str]) -> dict[str, str]:
    """`env` for the system's python3: nothing of .venv's interpreter leaks in."""
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(name, None)
    return env


@dataclass(frozen=True)
class ScreenReaderView:
    nodes: list[dict[str, Any]]
    """Every object the reader saw, depth first (atspi_app.py `read`)."""
    on_screen: dict[str, Any]
    """What the window showed a sighted person (atspi_app.py `_on_screen`)."""
    seconds: float
    """From the first process started to the tree read."""

    def named(self, name: str) -> list[dict[str, Any]]:
        return [node for node in self.nodes if node["name"] == name]

    def one(self, name: str, roles: set[str]) -> dict[str, Any]:
        found = self.named(name)
        assert found, f"no accessible object named {name!r}"
        fitting = [node for node in found if node["role"] in roles]
        assert fitting, f"{name!r} has role {found[0]['role']!r}, expected one of {sorted(roles)}"
        return fitting[0]

    def children(self, parent: dict[str, Any]) -> list[dict[str, Any]]:
        start = self.nodes.index(parent)
        below = []
        for node in self.nodes[start + 1 :]:
            if node["depth"] <= parent["depth"]:
                break
            if node["depth"] == parent["depth"] + 1:
                below.append(node)
        return below


class Processes:
    """The processes a test started, each the leader of its own process group."""

    def __init__(self, folder: Path, env: dict[str, str], deadline: float) -> None:
        self.folder = folder
        self.env = env
        self.deadline = deadline
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], **options: Any) -> subprocess.Popen[bytes]:
        errors = (self.folder / f"{name}.err").open("wb")
        try:
            process = subprocess.Popen(args, env=options.pop("env", self.env), cwd=ROOT,
                                       stdin=subprocess.DEVNULL, stderr=errors,
                                       start_new_session=True, **options)  # fmt: skip
        finally:
            errors.close()
        self.started.append((name, process))
        return process

    def errors(self, name: str) -> str:
        path = self.folder / f"{name}.err"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the AT-SPI session took over {BUDGET_S:.0f} s to set up")
        return left

    def read_line(self, name: str, stream: IO[bytes], process: subprocess.Popen[bytes]) -> str:
        """The next line `process` writes to `stream`, within the budget."""
        line = b""
        while not line.endswith(b"\n"):
            ready, _, _ = select.select([stream], [], [], min(self.remaining(), 1.0))
            if ready:
                chunk = os.read(stream.fileno(), 4096)
                if not chunk:
                    break
                line += chunk
            elif process.poll() is not None:
                break
        if not line.endswith(b"\n"):
            raise AssertionError(f"{name} ended without saying it was ready "
                                 f"(exit {process.poll()}): {self.errors(name)}")  # fmt: skip
        return line.decode().strip()

    def stop_all(self) -> None:
        for _name, process in reversed(self.started):
            _stop_group(process)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process's group, up to 5 s for the leader to end, then SIGKILL to
    whatever is left of the group (what it started: a bus's activated services)."""
    _signal_group(process, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    _signal_group(process, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def _signal_group(process: subprocess.Popen[bytes], sent: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sent)


@pytest.fixture(scope="module")
def screen_reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScreenReaderView]:
    missing = missing_pieces()
    if missing:
        pytest.skip("the AT-SPI test needs " + "; ".join(missing))
    folder = tmp_path_factory.mktemp("atspi")
    runtime = folder / "runtime"
    runtime.mkdir(mode=0o700)
    replica = folder / "replica"
    replica.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DBUS_SESSION_BUS_ADDRESS", "AT_SPI_BUS_ADDRESS", "WAYLAND_DISPLAY",
                        "DISPLAY", "NO_AT_BRIDGE")}  # fmt: skip
    env |= {
        "XDG_RUNTIME_DIR": str(runtime),  # the accessibility bus's socket goes here
        "GSETTINGS_BACKEND": "memory",  # no dconf service for the launcher to wake
    }
    begun = time.monotonic()
    processes = Processes(folder, env, begun + BUDGET_S)
    try:
        display_r, display_w = os.pipe()  # Xvfb picks a free display and writes it here
        with os.fdopen(display_r, "rb") as display_pipe:
            try:
                xvfb = processes.start("xvfb", ["Xvfb", "-displayfd", str(display_w), "-screen",
                                                "0", "1280x1024x24", "-nolisten", "tcp"],
                                       pass_fds=(display_w,))  # fmt: skip
            finally:
                os.close(display_w)
            display = processes.read_line("xvfb", display_pipe, xvfb)
        env["DISPLAY"] = f":{display}"

        bus = processes.start("dbus", ["dbus-daemon", "--session", "--nofork",
                                       "--print-address=1"], stdout=subprocess.PIPE)  # fmt: skip
        assert bus.stdout is not None
        env["DBUS_SESSION_BUS_ADDRESS"] = processes.read_line("dbus", bus.stdout, bus)

        app_env = env | {"QT_QPA_PLATFORM": "xcb", "QT_LINUX_ACCESSIBILITY_ALWAYS_ON": "1",
                         "PYTHONPATH": str(ROOT)}  # fmt: skip
        app = processes.start("app", [sys.executable, str(SCRIPT), "serve", str(replica)],
                              env=app_env, stdout=subprocess.PIPE)  # fmt: skip
        assert app.stdout is not None
        ready = processes.read_line("app", app.stdout, app)
        assert ready.startswith("ready "), ready
        on_screen = json.loads(ready.removeprefix("ready "))

        left = processes.remaining()
        wait = min(max(left - 5, 1), READER_WAIT_S)
        try:
            read = subprocess.run(
                [str(SYSTEM_PYTHON), str(SCRIPT), "read", "--timeout", f"{wait:.0f}"],
                env=_system_env(dict(env)), cwd=ROOT, capture_output=True, text=True,
                timeout=left, check=False, stdin=subprocess.DEVNULL)  # fmt: skip
        except subprocess.TimeoutExpired as error:
            raise AssertionError(f"the AT-SPI reader hung: {error.stderr!r}; "
                                 f"app: {processes.errors('app')}") from None  # fmt: skip
        assert read.returncode == 0, (f"the reader failed: {read.stderr}\n"
                                      f"app: {processes.errors('app')}")  # fmt: skip
        tree = json.loads(read.stdout)
        seconds = time.monotonic() - begun
    finally:
        processes.stop_all()
    yield ScreenReaderView(tree["nodes"], on_screen, seconds)


def _window(view: ScreenReaderView) -> str:
    return f"window: {view.on_screen['window']}"


def test_the_window_is_a_frame_named_fleetgate_administration(
    screen_reader: ScreenReaderView,
) -> None:
    frame = screen_reader.nodes[0]
    assert (frame["role"], frame["name"]) == ("frame", "Fleetgate administration")
    assert frame["showing"]


def test_the_navigation_is_a_list_named_views_with_one_item_per_view(
    screen_reader: ScreenReaderView,
) -> None:
    views = screen_reader.one("Views", LIST_ROLES)
    assert views["focusable"] and views["showing"]
    assert views["description"] == "Choose what the window shows"
    items = [(n["role"], n["name"]) for n in screen_reader.children(views)]
    assert items[:2] == [("list item", "Roles"), ("list item", "Users")]


def test_each_search_field_is_a_text_field_labelled_by_its_label(
    screen_reader: ScreenReaderView,
) -> None:
    for plural in ("roles", "users"):
        field = screen_reader.one(f"Search {plural}", FIELD_ROLES)
        assert field["focusable"]
        assert field["labelled_by"] == [f"Search {plural}:"]
        assert field["description"].startswith(f"Type to find {plural}")
    shown = screen_reader.one("Search roles", FIELD_ROLES)["showing"]  # the first view's
    assert shown, f"the roles view's search field is not shown ({_window(screen_reader)})"


def test_the_roles_table_has_its_column_headers_and_a_row_per_role(
    screen_reader: ScreenReaderView,
) -> None:
    table = screen_reader.one("Roles list", TABLE_ROLES)
    assert table["focusable"]
    assert table["showing"], f"the roles list is not shown ({_window(screen_reader)})"
    assert table["columns"] == ["Role", "Id", "Inherits", "Description"]
    headers = [n["name"] for n in screen_reader.children(table) if n["role"] in HEADER_ROLES]
    assert headers == ["Role", "Id", "Inherits", "Description"]
    assert table["rows"] == 6  # tenant-admin, driver, viewer, clerk, night-, senior-dispatcher
    cells = [n["name"] for n in screen_reader.children(table) if n["role"] in DATA_ROLES]
    assert "tenant-admin" in cells
    users = screen_reader.one("Users list", TABLE_ROLES)
    assert users["columns"] == ["User", "Name", "Status", "Roles", "Attributes"]
    assert users["rows"] == 43  # boss, sam, vic and u000..u039


def test_the_status_bar_names_each_of_its_parts(screen_reader: ScreenReaderView) -> None:
    bar = screen_reader.one("Status", {"status bar"})
    # By its part's name, and what it says after a colon if the name carries that too.
    parts = {n["name"].partition(":")[0]: n for n in screen_reader.children(bar)}
    for name in ("Connection", "Last synced", "Pending edits", "Outcomes to review",
                 "Offline lease"):  # fmt: skip
        assert name in parts, f"the status bar has no part named {name!r}: {sorted(parts)}"
        assert parts[name]["role"] in STATUS_ROLES, parts[name]
        assert parts[name]["showing"]
        if parts[name]["role"] == "push button":
            assert parts[name]["focusable"], f"{name!r} is a button Tab does not reach"


def test_no_shown_focusable_control_has_an_empty_name(screen_reader: ScreenReaderView) -> None:
    unnamed = [(n["role"], n["description"]) for n in screen_reader.nodes
               if n["focusable"] and n["showing"] and n["role"] not in DATA_ROLES
               and not n["name"].strip()]  # fmt: skip
    assert unnamed == []
    assert len([n for n in screen_reader.nodes if n["focusable"] and n["showing"]]) >= 8


def test_a_screen_reader_can_read_what_the_status_bar_and_counts_say(
    screen_reader: ScreenReaderView,
) -> None:
    shown = screen_reader.on_screen["status"] | screen_reader.on_screen["counts"]
    unread = {}
    for name, text in shown.items():
        if not text:
            continue
        node = screen_reader.named(name)[0]
        spoken = " ".join(filter(None, (node["name"], node["description"], node.get("text"))))
        if text not in spoken:
            unread[name] = text
    assert unread == {}
