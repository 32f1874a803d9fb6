"""Sizes in text units: windows and panes that grow with the system's text size.

A pixel size that fits at 100 % text clips at 200 % (the desktop issue, §
Accessibility): every size the app sets is a number of average characters or
lines of the widget's own font.
"""

from __future__ import annotations

from PySide6.QtWidgets import QWidget


def characters(widget: QWidget, count: float) -> int:
    """The width of `count` average characters in `widget`'s font, in pixels."""
    return int(widget.fontMetrics().averageCharWidth() * count)


def lines(widget: QWidget, count: float) -> int:
    """The height of `count` lines of `widget`'s font, in pixels."""
    return int(widget.fontMetrics().lineSpacing() * count)


def resize_in_text_units(window: QWidget, width_characters: int, height_lines: int) -> None:
    """Size `window` to `width_characters` by `height_lines` of its font, and at least as
    high as its wrapped labels need at that width (a window's minimum size does not
    count them)."""
    width = max(window.minimumSizeHint().width(), characters(window, width_characters))
    window.resize(width, max(window.heightForWidth(width), lines(window, height_lines)))
