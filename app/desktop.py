"""`fleetgate-admin`: the desktop app's entry point.

The administration windows arrive with the desktop issue; until then this
opens one accessible window that says so and names the demo tenant.
"""

from __future__ import annotations

import sys

from PySide6.QtWidgets import QApplication, QLabel, QMainWindow


def main() -> int:
    app = QApplication.instance() or QApplication(sys.argv)
    window = QMainWindow()
    window.setWindowTitle("Fleetgate")
    label = QLabel(
        "Fleetgate administration is not built yet.\n"
        "Use the fleetgate command line: fleetgate --help"
    )
    label.setAccessibleName("Fleetgate status")
    label.setAccessibleDescription("The desktop administration windows are not built yet.")
    window.setCentralWidget(label)
    window.resize(480, 160)
    window.show()
    return int(app.exec())


if __name__ == "__main__":
    sys.exit(main())
