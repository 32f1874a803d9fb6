"""The icons that stand beside words: allowed, denied, a warning.

Rules of this module (the desktop issue, § Accessibility; app/ui/theme.py):

- Allowed and denied are always a word and an icon, never colour alone; the
  icon repeats what the word says and is never the only place it is said.
- Icons are the application style's standard pixmaps; no view paints one of
  its own.
"""

from __future__ import annotations

from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication, QStyle

ALLOWED = QStyle.StandardPixmap.SP_DialogApplyButton
"""Beside "allowed", "grant", "applies", "gain": access that is, or comes."""
DENIED = QStyle.StandardPixmap.SP_DialogCancelButton
"""Beside "denied", "deny", "lose": access that is not, or goes."""
WARNING = QStyle.StandardPixmap.SP_MessageBoxWarning
"""Beside a problem: an edit that does not apply, a stale lease, a conflict."""


def verdict_pixmap(allowed: bool) -> QStyle.StandardPixmap:
    """The pixmap beside an allowed (ALLOWED) or a denied (DENIED) verdict."""
    return ALLOWED if allowed else DENIED


def icon(pixmap: QStyle.StandardPixmap) -> QIcon:
    """The application style's icon for `pixmap`."""
    return QApplication.style().standardIcon(pixmap)
