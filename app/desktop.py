"""`fleetgate-admin`: the desktop app's entry point.

The administration windows arrive with the desktop issue; until then this
opens one accessible window that says so.
"""

from __future__ import annotations

import sys

from PySide6.QtWidgets import QApplication, QLabel, QMainWindow


def build_window() -> QMainWindow:
    """The placeholder main window, every control named for screen readers."""
    window = QMainWindow()
    window.setWindowTitle("Fleetgate")
    window.setAccessibleName("Fleetgate administration")
    label = QLabel(
        "Fleetgate administration is not built yet.\n"
        "Use the fleetgate command line: fleetgate --help"
    )
    label.setObjectName("status")
    label.setAccessibleName("Fleetgate status")
    label.setAccessibleDescription("The desktop administration windows are not built yet.")
    label.setWordWrap(True)
    window.setCentralWidget(label)
    window.resize(480, 160)
    return window


def main() -> int:
    app = QApplication.instance() or QApplication(sys.argv)
    window = build_window()
    window.show()
    return int(app.exec())


if __name__ == "__main__":
    sys.exit(main())
