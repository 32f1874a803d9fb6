"""The app's two palettes, and the contrast every pair of colours it paints with must have.

Rules of this module (the desktop issue, § Accessibility):

- `PAIRS` lists every (foreground, background) palette role pair the app's
  widgets paint with, each either text (WCAG 2.1 AAA: at least 7:1) or
  non-text (borders, focus frames, the selection against the window: at
  least 3:1). `contrast_problems` checks a palette against all of them in
  the Active and the Disabled group; the high-contrast palette has none, and
  a test says so.
- Meaning is never carried by colour alone (allowed and denied have words and
  icons); the palettes only make what is there readable.
- `Theme.SYSTEM` follows the operating system's contrast preference
  (`QStyleHints.accessibility().contrastPreference()`), and changes with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette

from app.settings import Theme

Role = QPalette.ColorRole
Group = QPalette.ColorGroup

TEXT_RATIO = 7.0
NON_TEXT_RATIO = 3.0


@dataclass(frozen=True, slots=True)
class Pair:
    foreground: QPalette.ColorRole
    background: QPalette.ColorRole
    text: bool
    """Text (7:1) or a non-text element such as a border or focus frame (3:1)."""


PAIRS: tuple[Pair, ...] = (
    Pair(Role.WindowText, Role.Window, True),
    Pair(Role.Text, Role.Base, True),
    Pair(Role.Text, Role.AlternateBase, True),
    Pair(Role.ButtonText, Role.Button, True),
    Pair(Role.HighlightedText, Role.Highlight, True),
    Pair(Role.PlaceholderText, Role.Base, True),
    Pair(Role.ToolTipText, Role.ToolTipBase, True),
    Pair(Role.Link, Role.Base, True),
    Pair(Role.LinkVisited, Role.Base, True),
    Pair(Role.BrightText, Role.Window, True),
    Pair(Role.Highlight, Role.Base, False),
    Pair(Role.Highlight, Role.Window, False),
    Pair(Role.Mid, Role.Window, False),
    Pair(Role.Dark, Role.Base, False),
    Pair(Role.Accent, Role.Window, False),
)
GROUPS = (Group.Active, Group.Disabled)


def relative_luminance(color: QColor) -> float:
    """WCAG 2.1 relative luminance of an sRGB colour."""

    def channel(value: float) -> float:
        return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4

    return (
        0.2126 * channel(color.redF())
        + 0.7152 * channel(color.greenF())
        + 0.0722 * channel(color.blueF())
    )


def contrast_ratio(first: QColor, second: QColor) -> float:
    """WCAG 2.1 contrast ratio, from 1 (the same) to 21 (black on white)."""
    light, dark = sorted((relative_luminance(first), relative_luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def contrast_problems(palette: QPalette) -> list[str]:
    """Each pair of `PAIRS`, in each of `GROUPS`, whose contrast is below its minimum."""
    problems = []
    for group in GROUPS:
        for pair in PAIRS:
            ratio = contrast_ratio(
                palette.color(group, pair.foreground), palette.color(group, pair.background)
            )
            needed = TEXT_RATIO if pair.text else NON_TEXT_RATIO
            if ratio < needed:
                problems.append(
                    f"{group.name} {pair.foreground.name} on {pair.background.name}: "
                    f"{ratio:.2f}:1, needs {needed:g}:1"
                )
    return problems


def _palette(
    colors: dict[QPalette.ColorRole, str], disabled: dict[QPalette.ColorRole, str]
) -> QPalette:
    palette = QPalette()
    for role, value in colors.items():
        for group in (Group.Active, Group.Inactive, Group.Disabled):
            palette.setColor(group, role, QColor(value))
    for role, value in disabled.items():
        palette.setColor(Group.Disabled, role, QColor(value))
    return palette


def high_contrast_palette() -> QPalette:
    """White and yellow on black; disabled controls in a light grey that still reads at 7:1."""
    return _palette(
        {
            Role.Window: "#000000", Role.WindowText: "#ffffff", Role.Base: "#000000",
            Role.AlternateBase: "#1a1a1a", Role.Text: "#ffffff", Role.Button: "#000000",
            Role.ButtonText: "#ffffff", Role.BrightText: "#ffff00", Role.Highlight: "#ffff00",
            Role.HighlightedText: "#000000", Role.PlaceholderText: "#c8c8c8",
            Role.ToolTipBase: "#000000", Role.ToolTipText: "#ffffff", Role.Link: "#66ccff",
            Role.LinkVisited: "#ff99ff", Role.Light: "#ffffff", Role.Midlight: "#c8c8c8",
            Role.Mid: "#a0a0a0", Role.Dark: "#c8c8c8", Role.Shadow: "#ffffff",
            Role.Accent: "#ffff00",
        },
        {Role.WindowText: "#b4b4b4", Role.Text: "#b4b4b4", Role.ButtonText: "#b4b4b4",
         Role.PlaceholderText: "#b4b4b4"},
    )  # fmt: skip


def standard_palette() -> QPalette:
    """Dark text on light backgrounds, chosen to meet the same ratios as high contrast."""
    return _palette(
        {
            Role.Window: "#f5f5f5", Role.WindowText: "#111111", Role.Base: "#ffffff",
            Role.AlternateBase: "#f0f0f0", Role.Text: "#111111", Role.Button: "#e8e8e8",
            Role.ButtonText: "#111111", Role.BrightText: "#000000", Role.Highlight: "#0b4f9c",
            Role.HighlightedText: "#ffffff", Role.PlaceholderText: "#4a4a4a",
            Role.ToolTipBase: "#ffffdc", Role.ToolTipText: "#111111", Role.Link: "#0a3f80",
            Role.LinkVisited: "#5a2a82", Role.Light: "#ffffff", Role.Midlight: "#d0d0d0",
            Role.Mid: "#767676", Role.Dark: "#595959", Role.Shadow: "#333333",
            Role.Accent: "#0b4f9c",
        },
        {Role.WindowText: "#4a4a4a", Role.Text: "#4a4a4a", Role.ButtonText: "#4a4a4a",
         Role.PlaceholderText: "#4a4a4a", Role.HighlightedText: "#ffffff"},
    )  # fmt: skip


def system_wants_high_contrast() -> bool:
    """Whether the operating system asks for high contrast (False where Qt cannot tell)."""
    hints = QGuiApplication.styleHints()
    accessibility = getattr(hints, "accessibility", None)
    if accessibility is None:
        return False
    return bool(accessibility().contrastPreference() == Qt.ContrastPreference.HighContrast)


def palette_for(theme: Theme | str) -> QPalette:
    """The palette of `theme` (SYSTEM: high contrast when the OS asks for it)."""
    theme = Theme(theme)
    if theme is Theme.HIGH_CONTRAST or (theme is Theme.SYSTEM and system_wants_high_contrast()):
        return high_contrast_palette()
    return standard_palette()


HIGH_CONTRAST_FRAMES = """
QLineEdit, QPlainTextEdit, QTextEdit, QAbstractSpinBox, QAbstractItemView {
    border: 1px solid #ffffff;
}
QLineEdit:focus, QPlainTextEdit:focus, QTextEdit:focus, QAbstractSpinBox:focus,
QAbstractItemView:focus {
    border: 2px solid #ffff00;
}
QLineEdit:disabled, QAbstractSpinBox:disabled, QAbstractItemView:disabled {
    border: 1px dashed #b4b4b4;
}
QComboBox {
    border: 1px solid #ffffff;
    padding: 2px 4px;
}
QComboBox:focus {
    border: 2px solid #ffff00;
}
QCheckBox::indicator, QAbstractItemView::indicator {
    width: 13px;
    height: 13px;
    border: 2px solid #ffffff;
    background: #000000;
}
QCheckBox::indicator:checked, QAbstractItemView::indicator:checked {
    background: #ffff00;
}
QCheckBox::indicator:indeterminate, QAbstractItemView::indicator:indeterminate {
    background: #a0a0a0;
}
QCheckBox::indicator:disabled {
    border: 2px dashed #b4b4b4;
}
"""
"""Fields, lists, combo boxes and check boxes framed in white, the focused one in yellow
(a checked box filled yellow): the style draws those frames in a shade of the window
colour, which on black is black (non-text needs 3:1)."""


def apply_theme(app: QGuiApplication, theme: Theme | str) -> QPalette:
    """Give `app` the palette of `theme` (and follow the OS when it is SYSTEM)."""
    palette = palette_for(theme)
    app.setPalette(palette)
    high = palette.color(Group.Active, Role.Window).lightness() < 128
    if hasattr(app, "setStyleSheet"):
        app.setStyleSheet(HIGH_CONTRAST_FRAMES if high else "")
    return palette
