"""The placeholder window: it opens headless and names itself for screen readers."""

from __future__ import annotations

import sys

from PySide6.QtWidgets import QLabel

from app.desktop import build_window


def test_placeholder_window_is_named_for_assistive_technology(qtbot) -> None:
    window = build_window()
    qtbot.addWidget(window)
    window.show()
    label = window.findChild(QLabel, "status")
    assert window.accessibleName() == "Fleetgate administration"
    assert label is not None
    assert label.accessibleName() == "Fleetgate status"
    assert "command line" in label.text()
    assert not window.grab().isNull()


def test_installed_qt_keeps_the_reference_count_of_none(qapp) -> None:  # type: ignore[no-untyped-def]
    # PySide6 6.12.0 leaked a decref of None per processEvents() call, which
    # pytest-qt makes after every test: the interpreter aborted at exit.
    before = sys.getrefcount(None)
    for _ in range(1000):
        qapp.processEvents()
    assert sys.getrefcount(None) - before >= -10
