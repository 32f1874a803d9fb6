"""Suite-wide settings: Qt renders offscreen (CI has no display)."""

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"
