"""app.ui.condition_editor: a `when` condition built by keyboard from groups and
comparisons, read back in the engine's words, validated by the engine's parser."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeAlias

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QAbstractButton, QApplication, QTreeWidgetItem, QWidget

from app.ui.condition_editor import (
    ConditionEditor,
    attribute_paths,
    comparison_problem,
    value_from_text,
    value_text,
)
from app.ui.theme import apply_theme
from app.ui.workspace import Workspace
from sync.policy.conditions import parse_condition
from tests.app import ui_fixtures
from tests.app.ui_fixtures import cheap_argon2, memory_keyring, ui_replica, workspace  # noqa: F401

NIGHT = {"all": [{"resource.region": "$user.region"}, {"context.hour": {"gte": 20}}]}

QtBot: TypeAlias = Any
"""pytest-qt's bot (pytestqt.qtbot.QtBot, whose methods carry no types)."""


@pytest.fixture
def editor(workspace: Workspace, qtbot: QtBot) -> Iterator[ConditionEditor]:  # noqa: F811
    shown = ConditionEditor(workspace)
    qtbot.addWidget(shown)
    shown.resize(640, 460)
    shown.show()
    qtbot.waitExposed(shown)
    yield shown


def _child(item: QTreeWidgetItem, number: int) -> QTreeWidgetItem:
    child = item.child(number)
    assert child is not None
    return child


def _press_mnemonic(qtbot: QtBot, widget: QWidget, key: Qt.Key, button: QAbstractButton) -> None:
    """Alt+key on `widget`; a button's mnemonic clicks it after its press animation."""
    with qtbot.waitSignal(button.clicked, timeout=1000):
        qtbot.keyClick(widget, key, Qt.KeyboardModifier.AltModifier)


def _type_comparison(
    qtbot: QtBot, editor: ConditionEditor, path: str, downs: int, value: str
) -> None:
    """Fill the chosen comparison by keyboard: attribute, Tab, operator (Down `downs`
    times from eq), Tab, value."""
    focused = QApplication.focusWidget()
    assert focused in (editor.attribute, editor.attribute.lineEdit())
    qtbot.keyClicks(focused, path)
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_Tab)
    assert QApplication.focusWidget() is editor.operator
    for _ in range(downs):
        qtbot.keyClick(editor.operator, Qt.Key.Key_Down)
    qtbot.keyClick(editor.operator, Qt.Key.Key_Tab)
    assert QApplication.focusWidget() is editor.value
    qtbot.keyClicks(editor.value, value)
    popup = editor.value.completer().popup()
    assert popup is not None
    if popup.isVisible():  # offering the $paths that match; Escape closes only it
        qtbot.keyClick(popup, Qt.Key.Key_Escape)
        assert not popup.isVisible() and editor.isVisible()
        # The offscreen platform has no window manager to give the window back its
        # activation when the popup closes; a desktop does that itself.
        editor.window().activateWindow()
        qtbot.waitUntil(lambda: QApplication.activeWindow() is editor.window(), timeout=1000)


def test_the_night_condition_is_built_by_keyboard_and_reads_as_the_engine_says(
    editor: ConditionEditor, qtbot: QtBot
) -> None:
    seen: list[str] = []
    editor.changed.connect(lambda: seen.append("changed"))
    editor.tree.setFocus()
    qtbot.keyClick(editor.tree, Qt.Key.Key_Insert)
    _type_comparison(qtbot, editor, "resource.region", 0, "$user.region")
    assert editor.value_kind.text() == "reference to user.region"
    assert editor.condition() == {"resource.region": "$user.region"}
    _press_mnemonic(qtbot, editor.value, Qt.Key.Key_C, editor.add_comparison_button)
    _type_comparison(qtbot, editor, "context.hour", 5, "20")  # eq ne in not_in gt gte
    assert editor.value_kind.text() == "number"
    assert editor.valid()
    assert editor.condition() == NIGHT
    engine_words = str(parse_condition(NIGHT))
    assert editor.reading.text() == f"Reads as: when {engine_words}"
    assert "resource.region = $user.region and context.hour >= 20" in engine_words
    texts = [_child(editor.root, i).text(0) for i in range(editor.root.childCount())]
    assert texts == ["resource.region = $user.region", "context.hour >= 20"]
    assert seen  # every edit said so


def test_a_lone_dollar_is_refused_inline_with_the_parsers_message(
    editor: ConditionEditor, qtbot: QtBot
) -> None:
    qtbot.mouseClick(editor.add_comparison_button, Qt.MouseButton.LeftButton)
    _type_comparison(qtbot, editor, "resource.region", 0, "$")
    assert not editor.valid()
    assert editor.condition() is None
    assert "bad reference '$'" in editor.problem.text()
    assert editor.problem.text().startswith("Value:")
    assert "problem: bad reference" in _child(editor.root, 0).text(0)
    assert "Problem: bad reference" in editor.value.accessibleDescription()
    assert editor.status.text().startswith("Not valid")
    qtbot.keyClicks(editor.value, "user.region")
    assert editor.valid() and editor.problem.text() == ""
    assert editor.condition() == {"resource.region": "$user.region"}


def test_gt_on_a_list_and_in_without_one_are_refused(editor: ConditionEditor, qtbot: QtBot) -> None:
    editor.add_comparison()
    _type_comparison(qtbot, editor, "context.hour", 4, "[1, 2]")  # gt
    assert not editor.valid()
    assert "gt compares numbers or text; a list never matches" in editor.problem.text()
    editor.operator.setCurrentIndex(editor.operator.findData("in"))
    assert editor.valid()
    editor.value.setText("20")
    assert not editor.valid() and "in takes a list" in editor.problem.text()


def test_an_unknown_attribute_root_gets_the_parsers_words_beside_the_attribute(
    editor: ConditionEditor, qtbot: QtBot
) -> None:
    editor.add_comparison()
    _type_comparison(qtbot, editor, "region", 0, "north")
    assert editor.problem.text().startswith("Attribute: 'region' is not an attribute path")
    assert not editor.valid()


def test_groups_change_kind_nest_and_are_removed_with_delete(
    editor: ConditionEditor, qtbot: QtBot
) -> None:
    editor.set_condition({"user.region": "north"})
    editor.tree.setCurrentItem(editor.root)
    qtbot.mouseClick(editor.add_group_button, Qt.MouseButton.LeftButton)
    assert QApplication.focusWidget() is editor.kind
    qtbot.keyClick(editor.kind, Qt.Key.Key_Down)  # any -> not
    assert editor.kind.currentData() == "not"
    _press_mnemonic(qtbot, editor.kind, Qt.Key.Key_C, editor.add_comparison_button)
    _type_comparison(qtbot, editor, "user.depot", 0, "d1")
    assert editor.condition() == {"all": [{"user.region": "north"}, {"not": {"user.depot": "d1"}}]}
    assert (
        editor.reading.text() == 'Reads as: when (user.region = "north" and not user.depot = "d1")'
    )
    editor.tree.setCurrentItem(_child(editor.root, 1))
    editor.tree.setFocus()
    qtbot.keyClick(editor.tree, Qt.Key.Key_Delete)
    assert editor.condition() == {"user.region": "north"}
    editor.tree.setCurrentItem(editor.root)
    editor.kind.setCurrentIndex(editor.kind.findData("any"))
    assert editor.condition() == {"any": [{"user.region": "north"}]}


def test_removing_every_part_leaves_no_condition(editor: ConditionEditor) -> None:
    editor.set_condition(NIGHT)
    editor.tree.setCurrentItem(_child(editor.root, 0))
    editor.remove_current()
    editor.remove_current()
    assert editor.valid() and editor.condition() is None
    assert "always applies" in editor.reading.text()
    editor.tree.setCurrentItem(editor.root)
    assert not editor.remove_button.isEnabled()  # the top group is the condition


@pytest.mark.parametrize(
    "document",
    [
        NIGHT,
        {"resource.region": "north", "user.depot": {"in": ["d1", "d2"]}},
        {"any": [{"not": {"user.id": "vic"}}, {"resource.tags": {"contains": "x"}}]},
        {"context.label": "$$literal", "resource.code": "20", "resource.flag": True},
        {"resource.shape": {"eq": {"w": 1}}},
    ],
)
def test_a_condition_set_is_given_back_as_it_was_and_means_the_same_once_touched(
    editor: ConditionEditor, document: dict[str, Any]
) -> None:
    editor.set_condition(document)
    assert editor.valid() and editor.condition() == document
    editor.tree.setCurrentItem(editor.root)
    kind = editor.kind.currentData()
    editor.kind.setCurrentIndex(editor.kind.findData("not"))
    editor.kind.setCurrentIndex(editor.kind.findData(kind))  # touched, same meaning
    rebuilt = editor.condition()
    assert rebuilt is not None
    assert str(parse_condition(rebuilt)).strip("()") == str(parse_condition(document)).strip("()")


@pytest.mark.parametrize(
    ("text", "value"),
    [("north", "north"), ("20", 20), ('"20"', "20"), ("true", True), ('["a", 1]', ["a", 1]),
     ("$user.region", "$user.region"), ("$$x", "$$x"), ('""', "")],
)  # fmt: skip
def test_values_are_typed_as_the_document_holds_them(text: str, value: Any) -> None:
    assert value_from_text(text) == value and type(value_from_text(text)) is type(value)
    assert value_from_text(value_text(value)) == value


def test_problems_not_found_are_none_and_group_words_are_not_paths() -> None:
    assert comparison_problem("resource.region", "eq", "$user.region") is None
    assert comparison_problem("any", "eq", "x") == (
        "attribute", "any is a group kind: add a group for it, or choose a path"
    )  # fmt: skip
    assert comparison_problem("user.region", "eq", "null")[1].startswith("null never matches")  # type: ignore[index]


def test_the_attribute_combo_offers_the_names_seen_in_the_policy(
    editor: ConditionEditor,
    workspace: Workspace,  # noqa: F811
) -> None:
    paths = attribute_paths(workspace.policy())
    assert paths[:3] == ["user.id", "resource.id", "resource.type"]
    assert {"user.region", "user.depot", "resource.region", "context.hour"} <= set(paths)
    offered = [editor.attribute.itemText(i) for i in range(editor.attribute.count())]
    assert offered == paths


def _focusable(root: QWidget) -> list[QWidget]:
    return [w for w in root.findChildren(QWidget)
            if w.isVisibleTo(root) and w.focusPolicy() & Qt.FocusPolicy.TabFocus]  # fmt: skip


def test_every_focusable_control_has_an_accessible_name(editor: ConditionEditor) -> None:
    editor.add_comparison()
    unnamed = [w.objectName() or type(w).__name__ for w in _focusable(editor)
               if not w.accessibleName()]  # fmt: skip
    assert unnamed == []
    editor.tree.setCurrentItem(editor.root)
    unnamed = [w.objectName() or type(w).__name__ for w in _focusable(editor)
               if not w.accessibleName()]  # fmt: skip
    assert unnamed == []


@pytest.mark.parametrize("theme", ["standard", "high-contrast"])
def test_a_screenshot_in_each_theme(editor: ConditionEditor, qtbot: QtBot, theme: str) -> None:
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    apply_theme(app, theme)
    try:
        editor.set_condition(NIGHT)
        editor.add_comparison()
        editor.attribute.setEditText("user.depot")
        editor.operator.setCurrentIndex(editor.operator.findData("in"))
        editor.value.setText("$")
        qtbot.wait(10)
        ui_fixtures.SCREENSHOTS.mkdir(exist_ok=True)
        image = editor.grab()
        assert not image.isNull()
        assert image.save(str(ui_fixtures.SCREENSHOTS / f"condition-editor-{theme}.png"))
    finally:
        apply_theme(app, "standard")
