"""Large text (the desktop issue: "fonts follow the system size and every window
survives 200 % text without clipped controls"): the administration window, every
page and every dialog, laid out with the application font at 200 % and at 100 %,
walked widget by widget for controls smaller than they need, text cut off, and
controls outside what their parent shows; the dialogs walked as an accessibility
checker would (names, roles, a focus chain with no trap); a screenshot of each at
200 %.

Window sizes: at 200 % the window is 1920x1200, a full-HD-class screen with the
window maximized, which is how a person who needs 200 % text works (and the
smallest common screen on which 200 % text is asked to fit); at 100 % it is the
window's own default size (1280x780).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QRect, QSize, Qt
from PySide6.QtGui import Qt as QtGui
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractScrollArea,
    QAbstractSpinBox,
    QApplication,
    QCheckBox,
    QComboBox,
    QDialog,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListView,
    QRadioButton,
    QSizePolicy,
    QStyle,
    QStyleOptionComboBox,
    QTabBar,
    QTabWidget,
    QWidget,
)

from app.settings import resolve
from app.ui.admin import AdminWindow
from app.ui.policy_io import export_policy_file
from app.ui.sign_in import SignInWindow
from app.ui.workspace import Workspace
from tests.app.accessibility import focusable, role_problem
from tests.app.ui_fixtures import (  # noqa: F401
    SCREENSHOTS,
    cheap_argon2,
    memory_keyring,
    ui_replica,
    workspace,
)

LARGE = 2.0
LARGE_WINDOW = QSize(1920, 1200)
"""A maximized window on a 1920x1200 screen (module docstring)."""
NORMAL_WINDOW = QSize(1280, 780)
"""AdminWindow's own default size."""
FIELD_CHARACTERS = 12
"""A line edit narrower than this many characters hides most of what is typed in it."""
CHECKED = (QLabel, QAbstractButton, QLineEdit, QComboBox, QAbstractSpinBox, QTabBar)


@pytest.fixture(params=[LARGE, 1.0], ids=["200%", "100%"])
def scale(request: pytest.FixtureRequest, qapp: QApplication) -> Iterator[float]:
    """The application font at `request.param` times its default size, as the system
    would set it before the app starts; put back afterwards."""
    default = qapp.font()
    font = qapp.font()
    font.setPointSizeF(default.pointSizeF() * request.param)
    QApplication.setFont(font)
    try:
        yield request.param
    finally:
        QApplication.setFont(default)


@pytest.fixture
def window(
    scale: float,
    workspace: Workspace,  # noqa: F811
    tmp_path: Path,
    qtbot: Any,
) -> AdminWindow:
    chosen = tmp_path / "acme.json"
    workspace.engine()  # compiled now: the window builds every view at once
    shown = AdminWindow(
        workspace,
        "acme \u2014 boss",
        settings=(resolve({}, {}, {}, {}), {}),
        file_chooser=lambda _parent, _caption, _saving: chosen,
    )
    qtbot.addWidget(shown)
    shown.resize(LARGE_WINDOW if scale == LARGE else NORMAL_WINDOW)
    shown.show()
    qtbot.waitExposed(shown)
    _settle()
    return shown


def _settle() -> None:
    # A layout request climbs one parent per round of events (each layout, activated,
    # posts one to the widget above): enough rounds for the deepest widget tree here.
    for _ in range(30):
        QApplication.processEvents()


# --- what "clipped" means ----------------------------------------------------------------


def _plain(text: str) -> str:
    """`text` as drawn: a single '&' is a mnemonic, '&&' is one '&'."""
    return text.replace("&&", "\0").replace("&", "").replace("\0", "&")


def _describe(widget: QWidget) -> str:
    """The widget as a problem names it: its class, objectName (or accessible name) and
    text; a table's header by its table."""
    text = ""
    if isinstance(widget, QLineEdit):
        text = widget.text() or widget.placeholderText()
    elif isinstance(widget, QLabel | QAbstractButton):
        text = widget.text()
    elif isinstance(widget, QComboBox):
        text = widget.currentText()
    parts = [type(widget).__name__]
    table = widget.parentWidget()
    if isinstance(widget, QHeaderView) and table is not None:
        parts.append(f"of '{table.objectName()}'")
    elif widget.objectName() or widget.accessibleName():
        parts.append(f"'{widget.objectName() or widget.accessibleName()}'")
    if text:
        parts.append(repr(_plain(text)[:50]))
    return " ".join(parts)


def _ignored(policy: QSizePolicy.Policy) -> bool:
    return policy == QSizePolicy.Policy.Ignored


def _inside_scrolled_area(widget: QWidget) -> bool:
    """Whether `widget` is in the viewport of a scroll area (a QScrollArea's form, an
    item view's editor): clipped there by design, the area scrolls."""
    child, parent = widget, widget.parentWidget()
    while parent is not None:
        if isinstance(parent, QAbstractScrollArea) and child is parent.viewport():
            return True
        child, parent = parent, parent.parentWidget()
    return False


def _part_of_another_control(widget: QWidget) -> bool:
    """A spin box's or combo box's line edit, a line edit's clear button, a tab bar's
    scroll arrows: laid out by their control, not by a layout."""
    parent = widget.parentWidget()
    return isinstance(parent, QAbstractSpinBox | QComboBox | QLineEdit | QTabBar)


def _size_problems(widget: QWidget) -> list[str]:
    problems: list[str] = []
    policy = widget.sizePolicy()
    hint = widget.minimumSizeHint().expandedTo(widget.minimumSize())
    size = widget.size()
    if not _ignored(policy.horizontalPolicy()) and size.width() < hint.width():
        problems.append(f"{size.width()} px wide, needs {hint.width()}")
    if isinstance(widget, QLabel) and widget.wordWrap() and widget.text():
        needed = widget.heightForWidth(widget.width())
        if size.height() < needed:
            problems.append(f"{size.height()} px high at its width, needs {needed}")
    elif not _ignored(policy.verticalPolicy()) and size.height() < hint.height():
        problems.append(f"{size.height()} px high, needs {hint.height()}")
    return problems


def _text_problems(widget: QWidget) -> list[str]:
    metrics = widget.fontMetrics()
    if isinstance(widget, QLabel):
        if not widget.text() or widget.wordWrap() or QtGui.mightBeRichText(widget.text()):
            return []
        room = widget.contentsRect().width() - 2 * widget.margin() - max(widget.indent(), 0)
        longest = max(metrics.horizontalAdvance(line) for line in _plain(widget.text()).split("\n"))
        return [f"text is {longest} px, {room} px shown"] if longest > room else []
    if isinstance(widget, QAbstractButton):
        if not widget.text():
            return []
        room = widget.contentsRect().width()
        if not widget.icon().isNull():
            room -= widget.iconSize().width()
        if isinstance(widget, QCheckBox | QRadioButton):
            style = widget.style()
            room -= style.pixelMetric(QStyle.PixelMetric.PM_IndicatorWidth, None, widget)
            room -= style.pixelMetric(QStyle.PixelMetric.PM_CheckBoxLabelSpacing, None, widget)
        needed = metrics.horizontalAdvance(_plain(widget.text()))
        return [f"text is {needed} px, {room} px shown"] if needed > room else []
    if isinstance(widget, QLineEdit):
        # Its minimum size hint is a few characters: a field should show a dozen of what
        # a person types, or its whole placeholder if that is shorter.
        margins = widget.sizeHint().width() - metrics.horizontalAdvance("x" * 17)
        wanted = metrics.horizontalAdvance("x" * FIELD_CHARACTERS)
        if widget.placeholderText():
            wanted = min(wanted, metrics.horizontalAdvance(widget.placeholderText()))
        wanted += margins
        if widget.width() < wanted:
            return [f"{widget.width()} px wide: too narrow for its text (wants {wanted})"]
        return []
    if isinstance(widget, QComboBox) and not widget.isEditable() and widget.currentText():
        option = QStyleOptionComboBox()
        widget.initStyleOption(option)
        field = widget.style().subControlRect(
            QStyle.ComplexControl.CC_ComboBox,
            option,
            QStyle.SubControl.SC_ComboBoxEditField,
            widget,
        )
        room = field.width()
        if not widget.itemIcon(widget.currentIndex()).isNull():
            room -= widget.iconSize().width() + 4
        needed = metrics.horizontalAdvance(widget.currentText())
        return [f"current text is {needed} px, {room} px shown"] if needed > room else []
    return []


def _tab_problems(bar: QTabBar) -> list[str]:
    problems: list[str] = []
    arrows = [b for b in bar.findChildren(QAbstractButton) if b.isVisible()]
    if arrows:
        problems.append("tabs do not fit: the bar shows scroll arrows")
    metrics = bar.fontMetrics()
    for number in range(bar.count()):
        rect, text = bar.tabRect(number), _plain(bar.tabText(number))
        if not bar.rect().contains(rect):
            problems.append(f"tab {text!r} is outside the bar")
        wanted = bar.tabSizeHint(number)
        if rect.width() < wanted.width() or rect.height() < wanted.height():
            problems.append(
                f"tab {text!r} is {rect.width()}x{rect.height()}, "
                f"needs {wanted.width()}x{wanted.height()}"
            )
        elif metrics.horizontalAdvance(text) > rect.width():
            problems.append(f"tab {text!r} text is cut off")
    return problems


def _header_problems(header: QHeaderView) -> list[str]:
    problems: list[str] = []
    model = header.model()
    if header.orientation() != Qt.Orientation.Horizontal or model is None:
        return []
    for logical in range(header.count()):
        if header.isSectionHidden(logical):
            continue
        text = str(model.headerData(logical, Qt.Orientation.Horizontal) or "")
        needed, width = header.sectionSizeHint(logical), header.sectionSize(logical)
        if text and width < needed:
            problems.append(f"column {text!r} is {width} px, its heading needs {needed}")
    return problems


def _list_problems(view: QListView) -> list[str]:
    # A list of one-line items whose text is wider than the list hides the end of it
    # behind a horizontal scroll bar (the navigation, a picker).
    if view.wordWrap() or not view.horizontalScrollBar().isVisible():
        return []
    return [f"items are wider than the list ({view.viewport().width()} px): they scroll"]


def clipped(root: QWidget, where: str) -> list[str]:
    """Every visible control of `root` that is smaller than it needs, shows its text cut
    off, or lies outside what its parent shows (outside scroll areas), in words."""
    problems: list[str] = []
    for widget in root.findChildren(QWidget):
        if not widget.isVisible() or widget.isWindow() or _inside_scrolled_area(widget):
            continue
        if _part_of_another_control(widget):
            continue
        found: list[str] = []
        parent = widget.parentWidget()
        if parent is not None:
            shown = QRect(0, 0, parent.width(), parent.height())
            if not shown.contains(widget.geometry()):
                geometry = widget.geometry()
                found.append(
                    f"at {geometry.x()},{geometry.y()} {geometry.width()}x{geometry.height()}, "
                    f"outside its parent {_describe(parent)} ({parent.width()}x{parent.height()})"
                )
        if isinstance(widget, CHECKED):
            found += _size_problems(widget) + _text_problems(widget)
        if isinstance(widget, QTabBar):
            found += _tab_problems(widget)
        if isinstance(widget, QHeaderView):
            found += _header_problems(widget)
        if isinstance(widget, QListView):
            found += _list_problems(widget)
        problems += [f"{where}: {_describe(widget)}: {problem}" for problem in found]
    return problems


def walk(
    root: QWidget,
    where: str,
    look: Callable[[QWidget, str], None] | None = None,
    walked: set[QTabWidget] | None = None,
) -> list[str]:
    """`clipped` for `root` with every tab of every tab widget shown in turn (tabs within
    tabs too); `look(root, where)` is called on each state, for screenshots."""
    walked = set() if walked is None else walked
    problems = clipped(root, where)
    if look is not None:
        look(root, where)
    for tabs in root.findChildren(QTabWidget):
        if not tabs.isVisible() or tabs in walked:
            continue
        walked.add(tabs)
        first = tabs.currentIndex()
        for number in range(tabs.count()):
            if number == first:
                continue
            tabs.setCurrentIndex(number)
            _settle()
            tab = _plain(tabs.tabText(number)).lower().replace(" ", "-")
            problems += walk(root, f"{where}/{tab}", look, walked)
        tabs.setCurrentIndex(first)
        _settle()
    return _once(problems)


def _once(problems: list[str]) -> list[str]:
    """`problems` with each widget's problem once (from the first state it shows in)."""
    seen: dict[str, str] = {}
    for problem in problems:
        seen.setdefault(problem.split(": ", 1)[1], problem)
    return list(seen.values())


def _fits_the_screen(dialog: QWidget, scale: float) -> list[str]:
    screen = LARGE_WINDOW if scale == LARGE else NORMAL_WINDOW
    size = dialog.size()
    if size.width() > screen.width() or size.height() > screen.height():
        return [f"{dialog.objectName()}: {size.width()}x{size.height()} does not fit "
                f"{screen.width()}x{screen.height()}"]  # fmt: skip
    return []


# --- the windows and dialogs -------------------------------------------------------------


PAGES = ("role", "user", "check", "pending", "outcomes", "log")


def _screenshot(scale: float) -> Callable[[QWidget, str], None]:
    def look(root: QWidget, where: str) -> None:
        if scale == LARGE:
            SCREENSHOTS.mkdir(exist_ok=True)
            name = where.replace("/", "-")
            root.grab().save(str(SCREENSHOTS / f"large-text-{name}.png"))

    return look


def _pages(window: AdminWindow, scale: float) -> list[str]:
    problems = _fits_the_screen(window, scale)
    look = _screenshot(scale)
    for number, key in enumerate(PAGES):
        window.show_view(number)
        _settle()
        problems += walk(window, key, look)
    # The new-role and new-user forms are other layouts of the same pages.
    window.new_role()
    _settle()
    problems += walk(window, "role-new", look)
    window.new_user()
    _settle()
    problems += walk(window, "user-new", look)
    return _once(problems)


def _role_picker(window: AdminWindow) -> QDialog:
    window.show_page("role")
    window.role_editor.show_role("r-night")
    dialog = window.role_editor.open_picker()
    assert dialog is not None
    return dialog


def _rule_dialog(window: AdminWindow) -> QDialog:
    window.show_page("role")
    window.role_editor.show_role("r-night")
    dialog = window.role_editor.open_rule_dialog()
    assert dialog is not None
    dialog.condition.add_comparison()  # the comparison's fields, not only the tree
    return dialog


def _assign_picker(window: AdminWindow) -> QDialog:
    window.show_page("user")
    window.user_editor.show_user("vic")
    window.user_editor.open_assign()
    assert window.user_editor.dialog is not None
    return window.user_editor.dialog


def _eligible_picker(window: AdminWindow) -> QDialog:
    window.show_page("user")
    window.user_editor.show_user("vic")
    window.user_editor.open_make_eligible()
    assert window.user_editor.dialog is not None
    return window.user_editor.dialog


def _activate_dialog(window: AdminWindow) -> QDialog:
    window.show_page("user")
    window.user_editor.show_user("sam")
    window.user_editor.select_assignment("driver", "eligible")
    window.user_editor.open_activate()
    assert window.user_editor.dialog is not None
    return window.user_editor.dialog


def _import_dialog(window: AdminWindow) -> QDialog:
    path = window.file_chooser(window, "", False)
    assert path is not None
    export_policy_file(window.workspace.policy(), path)
    document = json.loads(path.read_text())
    next(u for u in document["users"] if u["id"] == "vic")["roles"].append({"role": "driver"})
    path.write_text(json.dumps(document))
    dialog = window.import_policy()
    assert dialog is not None
    deadline = time.monotonic() + 20
    while dialog.plan is None and time.monotonic() < deadline:  # read on a worker thread
        QApplication.processEvents()
        time.sleep(0.005)
    assert dialog.plan is not None
    return dialog


def _settings(window: AdminWindow) -> QDialog:
    dialog = window.open_settings()
    assert dialog is not None
    return dialog


def _shortcuts(window: AdminWindow) -> QDialog:
    return window.show_shortcuts()


DIALOGS: dict[str, Callable[[AdminWindow], QDialog]] = {
    "role-picker": _role_picker,
    "rule-dialog": _rule_dialog,
    "assign-picker": _assign_picker,
    "eligible-picker": _eligible_picker,
    "activate-dialog": _activate_dialog,
    "import-dialog": _import_dialog,
    "settings-window": _settings,
    "shortcuts": _shortcuts,
}


def _sign_in(tmp_path: Path, qtbot: Any) -> QDialog:
    # No keyring: the replica passphrase field shows too.
    dialog = SignInWindow(tmp_path / "replicas", server="wss://fleetgate.example/sync",
                          tenant="acme", user="boss", keyring_works=lambda: False)  # fmt: skip
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    return dialog


def _each_dialog(window: AdminWindow, tmp_path: Path, qtbot: Any) -> Iterator[tuple[str, QDialog]]:
    for name, open_it in DIALOGS.items():
        dialog = open_it(window)
        qtbot.waitExposed(dialog)
        _settle()
        yield name, dialog
        dialog.reject()
        _settle()
    dialog = _sign_in(tmp_path, qtbot)
    _settle()
    yield "sign-in", dialog
    dialog.close()


# --- what is left to files this module's author could not change -------------------------

# --- accessibility of the dialogs (tests/app/test_admin_window.py does the pages) --------


def _tab_round(dialog: QDialog, qtbot: Any) -> tuple[list[QWidget], bool]:
    """The widgets Tab reaches from the dialog's focus widget, and whether it came back
    to where it started (no trap, no dead end)."""
    start = dialog.focusWidget() or focusable(dialog)[0]
    start.setFocus(Qt.FocusReason.TabFocusReason)
    seen: list[QWidget] = []
    widget: QWidget | None = start
    for _ in range(len(focusable(dialog)) * 3 + 5):
        assert widget is not None
        seen.append(widget)
        qtbot.keyClick(widget, Qt.Key.Key_Tab)
        widget = dialog.focusWidget()
        if widget is start:
            return seen, True
    return seen, False


# --- the tests ---------------------------------------------------------------------------


def _verdict(problems: list[str], scale: float) -> None:
    clipped = _once(problems)
    assert clipped == [], f"{len(clipped)} clipped at {scale:.0%}:\n" + "\n".join(clipped)


def test_every_page_shows_every_control_whole(window: AdminWindow, scale: float) -> None:
    _verdict(_pages(window, scale), scale)


def test_every_dialog_shows_every_control_whole(
    window: AdminWindow, scale: float, tmp_path: Path, qtbot: Any
) -> None:
    problems: list[str] = []
    for name, dialog in _each_dialog(window, tmp_path, qtbot):
        problems += _fits_the_screen(dialog, scale)
        problems += walk(dialog, name, _screenshot(scale))
    _verdict(problems, scale)


@pytest.mark.parametrize("scale", [LARGE], indirect=True, ids=["200%"])
def test_every_dialog_control_is_named_with_a_fitting_role_and_tab_goes_round_them_all(
    window: AdminWindow, tmp_path: Path, qtbot: Any
) -> None:
    problems: list[str] = []
    for name, dialog in _each_dialog(window, tmp_path, qtbot):
        reachable = focusable(dialog)
        for widget in reachable:
            if not widget.accessibleName().strip():
                problems.append(f"{name}: {_describe(widget)}: no accessible name")
            role = role_problem(widget)
            if role is not None:
                problems.append(f"{name}: {_describe(widget)}: {role}")
        seen, round_trip = _tab_round(dialog, qtbot)
        if not round_trip:
            stuck = _describe(seen[-1]) if seen else "nothing"
            problems.append(f"{name}: Tab does not come round (last at {stuck})")
        problems += [f"{name}: {_describe(w)}: Tab never reaches it"
                     for w in reachable if w not in seen]  # fmt: skip
    assert problems == [], "\n".join(problems)
