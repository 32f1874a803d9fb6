"""Both ends of tests/app/test_atspi.py, each run as a subprocess of the test.

    .venv/bin/python tests/app/atspi_app.py serve DIR [--window auto|admin|main]
    /usr/bin/python3 tests/app/atspi_app.py read [--timeout SECONDS]

`serve` fills a real encrypted replica of the small tenant of ui_fixtures.py in
DIR (the in-memory keyring, cheap argon2 parameters), opens the administration
window on it (app.ui.admin's `AdminWindow` when it imports and builds, else the
`MainWindow`) as a Qt application named APP_NAME, prints `ready {JSON}` (the
window's class and the texts it shows, `_on_screen`) and runs the event loop
until it is killed, or for at most LIFETIME_S.

`read` is what a screen reader does: it finds APP_NAME among the applications
on the AT-SPI bus, walks its accessible tree and prints it as JSON, one object
per node: role, name, description, states, depth, the text interface's text and
the labels it is labelled by, and for tables the row count and the column
headers that the table interface reports (cells: only the first rows). It needs
the system's python3 with pyatspi (Debian's python3-pyatspi), so this file
imports nothing else at the top.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
APP_NAME = "fleetgate-atspi-test"
"""The application's name on the AT-SPI bus, which the reader looks for."""
LIFETIME_S = 90
"""`serve` quits by itself after this long, in case nobody stops it."""
MAX_NODES = 4000
"""The reader walks no more nodes than this (a tree of tables can be huge)."""
CELLS_PER_TABLE = 2
"""How many rows of cells (after the headers) the reader visits in each table."""


def serve(directory: Path, window: str) -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")
    os.environ.setdefault("QT_LINUX_ACCESSIBILITY_ALWAYS_ON", "1")
    sys.path.insert(0, str(ROOT))
    import keyring
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QMainWindow

    from app import replica_keys
    from app.ui.main_window import MainWindow
    from app.ui.workspace import Workspace
    from tests.app.memory_keyring import MemoryKeyring
    from tests.app.ui_fixtures import fill_replica, ui_policy

    replica_keys.ARGON2_DEFAULTS = replica_keys.Argon2Parameters(1, 8, 1)
    keyring.set_keyring(MemoryKeyring())
    app = QApplication([APP_NAME])
    app.setApplicationName(APP_NAME)
    replica = fill_replica(directory, ui_policy())
    workspace = Workspace(replica, "boss")
    shown: QMainWindow | None = None
    if window in ("auto", "admin"):
        try:
            from app.ui.admin import AdminWindow

            shown = AdminWindow(workspace, "acme")
        except Exception as error:
            if window == "admin":
                raise
            print(f"AdminWindow unavailable ({type(error).__name__}: {error}); "
                  "showing MainWindow", file=sys.stderr)  # fmt: skip
    if shown is None:
        shown = MainWindow(replica, "acme", status=replica, now=workspace.now)
    shown.show()
    QTimer.singleShot(0, lambda: print(f"ready {json.dumps(_on_screen(shown))}", flush=True))
    QTimer.singleShot(LIFETIME_S * 1000, app.quit)
    code = app.exec()
    replica.close()
    return code


def _on_screen(window: Any) -> dict[str, Any]:
    """What the window shows a sighted person: its class, the status bar's parts and
    each list's count, by accessible name."""
    return {
        "window": type(window).__name__,
        "status": {b.accessibleName(): b.text() for b in window.status_labels.values()},
        "counts": {v.count.accessibleName(): v.count.text() for v in window.views.values()},
    }


def read(timeout: float) -> int:
    import pyatspi  # type: ignore[import-not-found]

    deadline = time.monotonic() + timeout
    frame = None
    while frame is None:
        frame = _find_frame(pyatspi)
        if frame is None:
            if time.monotonic() > deadline:
                print(f"no application {APP_NAME!r} with a shown frame on the AT-SPI bus "
                      f"within {timeout:.0f} s", file=sys.stderr)  # fmt: skip
                return 1
            time.sleep(0.2)
    nodes: list[dict[str, Any]] = []
    _walk(pyatspi, frame, 0, nodes)
    json.dump({"application": APP_NAME, "nodes": nodes}, sys.stdout)
    print()
    return 0


def _find_frame(pyatspi: Any) -> Any:
    """The application's shown frame, once it has children; else None."""
    desktop = pyatspi.Registry.getDesktop(0)
    for index in range(desktop.childCount):
        application = desktop.getChildAtIndex(index)
        if application is None or application.name != APP_NAME:
            continue
        for child in range(application.childCount):
            frame = application.getChildAtIndex(child)
            if (frame is not None and frame.getRoleName() == "frame" and frame.childCount
                    and frame.getState().contains(pyatspi.STATE_SHOWING)):  # fmt: skip
                return frame
    return None


def _walk(pyatspi: Any, node: Any, depth: int, nodes: list[dict[str, Any]]) -> None:
    if len(nodes) >= MAX_NODES:
        return
    states = node.getState()
    entry: dict[str, Any] = {
        "role": node.getRoleName(),
        "name": node.name or "",
        "description": node.description or "",
        "depth": depth,
        "focusable": states.contains(pyatspi.STATE_FOCUSABLE),
        "showing": states.contains(pyatspi.STATE_SHOWING),
        "visible": states.contains(pyatspi.STATE_VISIBLE),
    }
    if entry["role"] != "table cell":
        entry["labelled_by"] = _targets(pyatspi, node, pyatspi.RELATION_LABELLED_BY)
        entry["text"] = _text(node)
    count = node.childCount
    if entry["role"] == "table":
        table = node.queryTable()
        columns = table.nColumns
        entry["rows"] = table.nRows
        entry["columns"] = [_column_name(table, column) for column in range(columns)]
        count = min(count, columns * (1 + CELLS_PER_TABLE) + 2)
    nodes.append(entry)
    for index in range(count):
        child = node.getChildAtIndex(index)
        if child is not None:
            _walk(pyatspi, child, depth + 1, nodes)


def _targets(pyatspi: Any, node: Any, kind: Any) -> list[str]:
    """The names of the objects `node` is in a relation of `kind` with."""
    names: list[str] = []
    for relation in node.getRelationSet():
        if relation.getRelationType() == kind:
            names += [str(relation.getTarget(i).name or "") for i in range(relation.getNTargets())]
    return names


def _text(node: Any) -> str | None:
    """What the text interface says `node` shows (None: it has none)."""
    try:
        text = node.queryText()
    except NotImplementedError:
        return None
    return str(text.getText(0, text.characterCount))


def _column_name(table: Any, column: int) -> str:
    header = table.getColumnHeader(column)
    if header is not None and header.name:
        return str(header.name)
    return str(table.getColumnDescription(column) or "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serving = commands.add_parser("serve")
    serving.add_argument("directory", type=Path)
    serving.add_argument("--window", choices=["auto", "admin", "main"], default="auto")
    reading = commands.add_parser("read")
    reading.add_argument("--timeout", type=float, default=20.0)
    arguments = parser.parse_args(argv)
    if arguments.command == "serve":
        return serve(arguments.directory, arguments.window)
    return read(arguments.timeout)


if __name__ == "__main__":
    sys.exit(main())
