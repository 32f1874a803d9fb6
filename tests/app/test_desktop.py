"""The placeholder window: it opens headless and names itself for screen readers."""

from __future__ import annotations

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
