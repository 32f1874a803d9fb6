"""app.ui.theme: every colour pair the app paints with reads at WCAG AAA (text) or AA (non-text)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
from PySide6.QtGui import QColor, QPalette

from app.ui.theme import (
    GROUPS,
    PAIRS,
    contrast_problems,
    contrast_ratio,
    high_contrast_palette,
    palette_for,
    standard_palette,
)


def test_contrast_is_computed_as_wcag_defines_it() -> None:
    assert contrast_ratio(QColor("#000000"), QColor("#ffffff")) == pytest.approx(21.0)
    assert contrast_ratio(QColor("#777777"), QColor("#ffffff")) == pytest.approx(4.48, abs=0.01)
    assert contrast_ratio(QColor("#123456"), QColor("#123456")) == pytest.approx(1.0)


@pytest.mark.parametrize("palette", [high_contrast_palette, standard_palette],
                         ids=["high contrast", "standard"])  # fmt: skip
def test_every_pair_in_active_and_disabled_meets_its_ratio(palette: object) -> None:
    assert contrast_problems(palette()) == []  # type: ignore[operator]


def test_the_pairs_cover_selection_placeholders_and_both_groups() -> None:
    roles = {(p.foreground, p.background) for p in PAIRS}
    assert (QPalette.ColorRole.HighlightedText, QPalette.ColorRole.Highlight) in roles
    assert (QPalette.ColorRole.PlaceholderText, QPalette.ColorRole.Base) in roles
    assert set(GROUPS) == {QPalette.ColorGroup.Active, QPalette.ColorGroup.Disabled}


def test_a_palette_that_fails_is_named_pair_by_pair() -> None:
    palette = standard_palette()
    palette.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text, QColor("#bbbbbb"))
    problems = contrast_problems(palette)
    assert any(p.startswith("Disabled Text on Base") and "needs 7:1" in p for p in problems)


def test_the_theme_setting_picks_the_palette() -> None:
    assert palette_for("high-contrast").color(QPalette.ColorRole.Window) == QColor("#000000")
    assert palette_for("standard").color(QPalette.ColorRole.Window) == QColor("#f5f5f5")
