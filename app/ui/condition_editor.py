"""The condition editor: one rule's `when`, built from widgets instead of typed JSON.

Rules of this module (the desktop issue, § Roles; policy-format.md § Conditions):

- The condition is a tree: groups (`all`, `any`, `not`) and comparisons
  (attribute path, operator, value). The top item is the outermost group; an
  empty `all` at the top means no condition. Other documents are read into
  that shape (an object of several entries is an `all` of them), and written
  back in the shortest form that means the same: one comparison alone is
  written as itself, `{"resource.region": "$user.region"}`. A condition set
  and not touched since is handed back exactly as it was given.
- A value is typed as the policy document would hold it: `north` is text,
  `20` a number, `true` a boolean, `["a", "b"]` a list, `"20"` the text 20,
  `$user.region` a reference to another attribute and `$$x` the text `$x`.
  The kind it is read as is shown beside it, so nothing is guessed silently.
- Validation is the engine's own: each comparison is parsed with
  `sync.policy.conditions.parse_condition`, whose message is shown under the
  fields and on the tree item; a few comparisons the parser accepts but that
  can never hold (`gt` on a list, `in` without a list, `null`) are refused too,
  since a rule that never matches is a mistake the person should hear about.
- The readable text is the engine's (`str` of the parsed condition), the
  words decision reasons use.
- Everything works by keyboard: the tree, the buttons (with mnemonics; Delete
  removes the chosen part, Insert adds a comparison), and labelled fields.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from itertools import pairwise
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QCompleter,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QStackedWidget,
    QStyle,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.ui.controls import push_button, text_label
from app.ui.main_window import announce
from app.ui.workspace import Workspace
from sync.policy.conditions import (
    AllOf,
    AnyOf,
    Compare,
    Condition,
    ConditionError,
    Not,
    Operator,
    Reference,
    json_kind,
    parse_condition,
    parse_path,
)
from sync.policy.model import Policy

GROUP_KINDS = (
    ("all", "all of: every part must hold"),
    ("any", "any of: at least one part must hold"),
    ("not", "not: the part must not hold"),
)
OPERATORS = (
    ("eq", "= (equals)"),
    ("ne", "!= (differs from)"),
    ("in", "in (one of a list)"),
    ("not_in", "not in (none of a list)"),
    ("gt", "> (greater than)"),
    ("gte", ">= (at least)"),
    ("lt", "< (less than)"),
    ("lte", "<= (at most)"),
    ("contains", "contains (a list holding the value)"),
)
FIELD_PATHS = ("user.id", "resource.id", "resource.type")
"""The request's and user's own fields, always offered (policy-format.md § Conditions)."""
LEAF = "comparison"
_ORDERED = {"gt", "gte", "lt", "lte"}
_LISTS = {"in", "not_in"}

KIND_ROLE = Qt.ItemDataRole.UserRole + 1
PATH_ROLE = Qt.ItemDataRole.UserRole + 2
OP_ROLE = Qt.ItemDataRole.UserRole + 3
VALUE_ROLE = Qt.ItemDataRole.UserRole + 4


# --- values as typed -------------------------------------------------------------------


def value_from_text(text: str) -> Any:
    """The JSON value `text` stands for: JSON when it parses (`20`, `true`,
    `["a"]`, `"20"`), otherwise the text itself (`north`, `$user.region`)."""
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except ValueError:
        return stripped


def value_text(value: Any) -> str:
    """How `value` is typed in the value field (the inverse of `value_from_text`)."""
    if type(value) is str and value and _same(value_from_text(value), value):
        return value
    return json.dumps(value, ensure_ascii=False)


def _same(left: Any, right: Any) -> bool:
    return type(left) is type(right) and left == right


def value_kind(value: Any) -> str:
    """What a typed value is read as, in words: `text`, `number`, `reference to user.region`."""
    if type(value) is str and value.startswith("$") and not value.startswith("$$"):
        return f"reference to {value[1:]}" if len(value) > 1 else "reference (to what?)"
    kind = json_kind(value)
    if kind == "array":
        return f"list of {len(value)}"
    return {"string": "text", "boolean": "true/false"}.get(kind, kind)


def comparison_document(path: str, op: str, text: str) -> dict[str, Any]:
    """The `when` entry of one comparison: `{path: value}` for equality with a value
    that is not an object, `{path: {op: value}}` otherwise."""
    value = value_from_text(text)
    if op == "eq" and not isinstance(value, dict):
        return {path: value}
    return {path: {op: value}}


def comparison_problem(path: str, op: str, text: str) -> tuple[str, str] | None:
    """Why a comparison cannot be used, as (field, message), field being `attribute`
    or `value`; None when it is fine. The parser's own message where it has one."""
    if path.strip() in ("all", "any", "not"):
        return "attribute", f"{path.strip()} is a group kind: add a group for it, or choose a path"
    try:
        parse_path(path)
    except ValueError as error:
        return "attribute", str(error)
    if not text.strip():
        return "value", 'type a value: text, a number, true, a list like ["a"], or $user.region'
    try:
        condition = parse_condition(comparison_document(path, op, text))
    except ConditionError as error:
        return "value", error.message
    compare = condition.parts[0] if isinstance(condition, AllOf) else condition
    assert isinstance(compare, Compare)
    if isinstance(compare.operand, Reference):
        return None
    value = compare.operand.value
    kind = json_kind(value)
    if kind == "null":
        return "value", "null never matches: a missing value makes every comparison false"
    if op in _ORDERED and kind not in ("number", "string"):
        return "value", f"{op} compares numbers or text; {_a(kind)} never matches"
    if op in _LISTS and kind != "array":
        return "value", f'{op} takes a list, like ["north", "south"]; {_a(kind)} never matches'
    return None


def _a(kind: str) -> str:
    return {"array": "a list", "object": "an object", "boolean": "a boolean"}.get(kind, f"a {kind}")


def describe(document: dict[str, Any] | None) -> str:
    """A condition in the engine's words (as in decision reasons); `always` for none."""
    return "always" if document is None else str(parse_condition(document))


# --- attribute names offered -----------------------------------------------------------


def attribute_paths(policy: Policy) -> list[str]:
    """Paths worth offering: the own fields, every user attribute name in the policy,
    and every path its conditions mention (resource and context names live there)."""
    found: set[str] = set()
    names: set[str] = set()
    for user in policy.users.values():
        names.update(user.attributes)
        for rule in (*user.grants, *user.denies):
            if rule.condition is not None:
                found.update(_paths(rule.condition))
    found.update(f"user.{name}" for name in names)
    for role in policy.roles.values():
        for rule in (*role.grants, *role.denies):
            if rule.condition is not None:
                found.update(_paths(rule.condition))
    found.difference_update(FIELD_PATHS)
    order = {"user": 0, "resource": 1, "context": 2}
    return [*FIELD_PATHS, *sorted(found, key=lambda p: (order.get(p.partition(".")[0], 3), p))]


def _paths(condition: Condition) -> Iterable[str]:
    if isinstance(condition, Compare):
        yield str(condition.path)
        if isinstance(condition.operand, Reference):
            yield str(condition.operand.path)
    elif isinstance(condition, Not):
        yield from _paths(condition.part)
    elif isinstance(condition, AllOf | AnyOf):
        for part in condition.parts:
            yield from _paths(part)


# --- the widget ------------------------------------------------------------------------


class ConditionEditor(QWidget):
    """Edits one `when` condition (module rules)."""

    changed = Signal()
    """The condition, its validity or both changed (each edit the person makes)."""

    def __init__(self, workspace: Workspace | None = None, parent: QWidget | None = None):
        """`workspace`: where the attribute names offered come from (None: only the
        own fields)."""
        super().__init__(parent)
        self.setObjectName("condition-editor")
        self.setAccessibleName("Condition editor")
        self.setAccessibleDescription(
            "A tree of groups and comparisons; choose a part to edit it below the tree."
        )
        self._workspace = workspace
        self._original: dict[str, Any] | None = None
        self._touched = False
        self._valid = True
        self._loading = False

        tree_label = QLabel("Condition &parts:", self)
        self.tree = QTreeWidget(self)
        self.tree.setObjectName("condition-tree")
        self.tree.setAccessibleName("Condition parts")
        self.tree.setAccessibleDescription(
            "Groups and comparisons. Insert adds a comparison, Delete removes the chosen part."
        )
        self.tree.setHeaderHidden(True)
        self.tree.setColumnCount(1)
        self.tree.setMinimumHeight(self.fontMetrics().lineSpacing() * 7)  # a few parts, any font
        tree_label.setBuddy(self.tree)
        self.root = QTreeWidgetItem(self.tree)
        self.root.setData(0, KIND_ROLE, "all")
        self.root.setExpanded(True)

        self.add_comparison_button = self._button(
            "Add &comparison", "add-comparison", "Add a comparison to the chosen group"
        )
        self.add_group_button = self._button(
            "Add &group", "add-group", "Add an all, any or not group to the chosen group"
        )
        self.remove_button = self._button(
            "Remo&ve part", "remove-part", "Remove the chosen comparison or group"
        )
        self.add_comparison_button.clicked.connect(self.add_comparison)
        self.add_group_button.clicked.connect(lambda: self.add_group("any"))
        self.remove_button.clicked.connect(self.remove_current)
        for key, slot in ((QKeySequence.StandardKey.Delete, self.remove_current),
                          (Qt.Key.Key_Insert, self.add_comparison)):  # fmt: skip
            shortcut = QShortcut(QKeySequence(key), self.tree)
            shortcut.setContext(Qt.ShortcutContext.WidgetShortcut)
            shortcut.activated.connect(slot)

        # The chosen part's fields: nothing, a group's kind, or a comparison.
        self.details = QStackedWidget(self)
        self.details.setObjectName("condition-details")
        hint = QLabel("Choose a part in the tree to edit it.", self.details)
        self.details.addWidget(hint)

        group_page = QWidget(self.details)
        self.kind = QComboBox(group_page)
        self.kind.setObjectName("group-kind")
        self.kind.setAccessibleName("Group kind")
        self.kind.setAccessibleDescription("all: every part holds; any: one holds; not: negates")
        for kind, text in GROUP_KINDS:
            self.kind.addItem(text, kind)
        kind_label = QLabel("Group &kind:", group_page)
        kind_label.setBuddy(self.kind)
        group_form = QFormLayout(group_page)
        group_form.addRow(kind_label, self.kind)
        self.details.addWidget(group_page)

        leaf_page = QWidget(self.details)
        self.attribute = QComboBox(leaf_page)
        self.attribute.setObjectName("comparison-attribute")
        self.attribute.setEditable(True)
        self.attribute.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.attribute.setAccessibleName("Attribute")
        self.attribute.setAccessibleDescription(
            "user.<name>, resource.<name>, context.<name>, user.id, resource.id or resource.type"
        )
        self._name_line_edit(self.attribute, "Attribute", "user.region, resource.type ...")
        self.operator = QComboBox(leaf_page)
        self.operator.setObjectName("comparison-operator")
        self.operator.setAccessibleName("Operator")
        for op, text in OPERATORS:
            self.operator.addItem(text, op)
        self.value = QLineEdit(leaf_page)
        self.value.setObjectName("comparison-value")
        self.value.setAccessibleName("Value")
        self.value.setPlaceholderText('north, 20, true, ["a", "b"] or $user.region')
        self.value_kind = text_label(leaf_page, "comparison-value-kind", "Value is read as")
        self.problem = text_label(leaf_page, "comparison-problem", "Problem with this comparison",
                                  wrap=True, selectable=True)  # fmt: skip
        attribute_label = QLabel("Attri&bute:", leaf_page)
        attribute_label.setBuddy(self.attribute)
        operator_label = QLabel("&Operator:", leaf_page)
        operator_label.setBuddy(self.operator)
        value_label = QLabel("Va&lue:", leaf_page)
        value_label.setBuddy(self.value)
        value_row = QHBoxLayout()
        value_row.addWidget(self.value, 1)
        value_row.addWidget(self.value_kind)
        leaf_form = QFormLayout(leaf_page)
        leaf_form.addRow(attribute_label, self.attribute)
        leaf_form.addRow(operator_label, self.operator)
        leaf_form.addRow(value_label, value_row)
        leaf_form.addRow("", self.problem)
        self.details.addWidget(leaf_page)
        self._pages = {"none": hint, "group": group_page, "leaf": leaf_page}

        self.reading = text_label(self, "condition-reading", "Condition reads as", wrap=True,
                                  selectable=True)  # fmt: skip
        self.status = text_label(self, "condition-status", "Condition status", wrap=True)

        self.kind.currentIndexChanged.connect(self._kind_chosen)
        self.attribute.currentTextChanged.connect(lambda _t: self._field_edited())
        self.operator.currentIndexChanged.connect(lambda _i: self._field_edited())
        self.value.textChanged.connect(lambda _t: self._field_edited())
        self.tree.currentItemChanged.connect(lambda _now, _before: self._show_current())

        buttons = QVBoxLayout()
        for button in (self.add_comparison_button, self.add_group_button, self.remove_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        top = QHBoxLayout()
        top.addWidget(self.tree, 1)
        top.addLayout(buttons)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(tree_label)
        layout.addLayout(top, 1)
        chosen = QGroupBox("Chosen part", self)
        chosen_layout = QVBoxLayout(chosen)
        chosen_layout.setContentsMargins(6, 4, 6, 4)
        chosen_layout.addWidget(self.details)
        layout.addWidget(chosen)
        layout.addWidget(self.reading)
        layout.addWidget(self.status)
        chain = (self.tree, self.add_comparison_button, self.add_group_button, self.remove_button,
                 self.kind, self.attribute, self.operator, self.value)  # fmt: skip
        for first, second in pairwise(chain):
            self.setTabOrder(first, second)

        self.refresh()
        if workspace is not None:
            workspace.changed.connect(self.refresh)
        self.tree.setCurrentItem(self.root)
        self._render(announce_it=False)

    def _button(self, text: str, name: str, description: str) -> QPushButton:
        return push_button(self, text, name, description)

    @staticmethod
    def _name_line_edit(combo: QComboBox, name: str, placeholder: str) -> None:
        line = combo.lineEdit()
        if line is not None:
            line.setAccessibleName(name)
            line.setPlaceholderText(placeholder)

    # --- the API -----------------------------------------------------------------------

    def refresh(self) -> None:
        """Offer the attribute names the workspace's policy holds now."""
        paths = list(FIELD_PATHS)
        if self._workspace is not None:
            paths = attribute_paths(self._workspace.policy())
        text = self.attribute.currentText()
        self._loading = True
        self.attribute.clear()
        self.attribute.addItems(paths)
        self.attribute.setEditText(text)
        self._loading = False
        completer = QCompleter([f"${p}" for p in paths], self.value)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.value.setCompleter(completer)

    def set_condition(self, document: dict[str, Any] | None) -> None:
        """Show `document` (None: no condition). Raises ConditionError when it is not
        a condition the engine reads."""
        if document is not None:
            parse_condition(document)
        self._loading = True
        self.root.takeChildren()
        self._original = copy.deepcopy(document)
        self._touched = False
        kind, parts = "all", _entries(document or {})
        if len(parts) == 1 and parts[0][0] != LEAF:
            kind, parts = parts[0][0], parts[0][1]
        self.root.setData(0, KIND_ROLE, kind)
        for part in parts:
            self._add_part(self.root, part)
        self.tree.expandAll()
        self._loading = False
        self.tree.setCurrentItem(self.root)
        self._show_current()  # the root may have been current already: no signal then
        self._render(announce_it=False)

    def condition(self) -> dict[str, Any] | None:
        """The condition as a `when` document; None for no condition (or while it is
        not valid: see `valid`)."""
        if not self._valid:
            return None
        if not self._touched:
            return copy.deepcopy(self._original)
        return self._root_document()

    def valid(self) -> bool:
        """Whether every part is a comparison or group the engine accepts."""
        return self._valid

    def problems(self) -> list[str]:
        """What is wrong, one line per part (empty when valid)."""
        found = []
        for item in self._items():
            problem = self._problem(item)
            if problem is not None:
                found.append(f"{_leaf_label(item)}: {problem[1]}")
        return found

    # --- changing the tree ---------------------------------------------------------------

    def add_comparison(self) -> QTreeWidgetItem:
        """Add an empty comparison to the chosen group (or after the chosen comparison),
        choose it and put the focus in its attribute field."""
        group, at = self._target()
        item = self._new_item(LEAF)
        item.setData(0, PATH_ROLE, "")
        item.setData(0, OP_ROLE, "eq")
        item.setData(0, VALUE_ROLE, "")
        group.insertChild(at, item)
        self._edited(item)
        self.attribute.setFocus(Qt.FocusReason.OtherFocusReason)
        return item

    def add_group(self, kind: str = "any") -> QTreeWidgetItem:
        """Add an empty group of `kind` to the chosen group and choose it."""
        group, at = self._target()
        item = self._new_item(kind)
        group.insertChild(at, item)
        self._edited(item)
        self.kind.setFocus(Qt.FocusReason.OtherFocusReason)
        return item

    def remove_current(self) -> None:
        """Remove the chosen part (the top group cannot go: it is the condition)."""
        item = self.tree.currentItem()
        if item is None or item is self.root:
            return
        parent = item.parent() or self.root
        index = parent.indexOfChild(item)
        parent.takeChild(index)
        after = parent.child(min(index, parent.childCount() - 1)) if parent.childCount() else None
        self._edited(after or parent)
        self.tree.setFocus(Qt.FocusReason.OtherFocusReason)
        announce(self.tree, "Part removed")

    def _target(self) -> tuple[QTreeWidgetItem, int]:
        current = self.tree.currentItem() or self.root
        if current.data(0, KIND_ROLE) == LEAF:
            parent = current.parent() or self.root
            return parent, parent.indexOfChild(current) + 1
        current.setExpanded(True)
        return current, current.childCount()

    def _new_item(self, kind: str) -> QTreeWidgetItem:
        item = QTreeWidgetItem()
        item.setData(0, KIND_ROLE, kind)
        return item

    def _add_part(self, parent: QTreeWidgetItem, part: tuple[str, Any]) -> None:
        kind, content = part
        item = self._new_item(kind)
        parent.addChild(item)
        if kind == LEAF:
            path, op, value = content
            item.setData(0, PATH_ROLE, path)
            item.setData(0, OP_ROLE, op)
            item.setData(0, VALUE_ROLE, value_text(value))
        else:
            for child in content:
                self._add_part(item, child)

    def _edited(self, chosen: QTreeWidgetItem | None = None) -> None:
        self._touched = True
        if chosen is not None:
            self.tree.setCurrentItem(chosen)
        self._render(announce_it=True)
        self.changed.emit()

    def _kind_chosen(self, _index: int) -> None:
        item = self.tree.currentItem()
        if self._loading or item is None or item.data(0, KIND_ROLE) == LEAF:
            return
        kind = self.kind.currentData()
        if item.data(0, KIND_ROLE) != kind:
            item.setData(0, KIND_ROLE, kind)
            self._edited()

    def _field_edited(self) -> None:
        item = self.tree.currentItem()
        if self._loading or item is None or item.data(0, KIND_ROLE) != LEAF:
            return
        item.setData(0, PATH_ROLE, self.attribute.currentText().strip())
        item.setData(0, OP_ROLE, self.operator.currentData())
        item.setData(0, VALUE_ROLE, self.value.text())
        self._edited()

    def _show_current(self) -> None:
        item = self.tree.currentItem()
        self._loading = True
        if item is None:
            self.details.setCurrentWidget(self._pages["none"])
        elif item.data(0, KIND_ROLE) == LEAF:
            self.details.setCurrentWidget(self._pages["leaf"])
            self.attribute.setEditText(item.data(0, PATH_ROLE))
            self.operator.setCurrentIndex(self.operator.findData(item.data(0, OP_ROLE)))
            self.value.setText(item.data(0, VALUE_ROLE))
        else:
            self.details.setCurrentWidget(self._pages["group"])
            self.kind.setCurrentIndex(self.kind.findData(item.data(0, KIND_ROLE)))
        self._loading = False
        self.remove_button.setEnabled(item is not None and item is not self.root)
        self._show_problem()

    # --- reading the tree ----------------------------------------------------------------

    def _items(self) -> list[QTreeWidgetItem]:
        found: list[QTreeWidgetItem] = []
        stack = [self.root]
        while stack:
            item = stack.pop()
            found.append(item)
            stack.extend(reversed(_children(item)))
        return found

    @staticmethod
    def _problem(item: QTreeWidgetItem) -> tuple[str, str] | None:
        if item.data(0, KIND_ROLE) != LEAF:
            return None
        return comparison_problem(
            item.data(0, PATH_ROLE), item.data(0, OP_ROLE), item.data(0, VALUE_ROLE)
        )

    def _document(self, item: QTreeWidgetItem) -> dict[str, Any]:
        kind = item.data(0, KIND_ROLE)
        if kind == LEAF:
            return comparison_document(
                item.data(0, PATH_ROLE), item.data(0, OP_ROLE), item.data(0, VALUE_ROLE)
            )
        parts = [self._document(child) for child in _children(item)]
        if kind == "not":
            return {"not": parts[0] if len(parts) == 1 else {"all": parts}}
        return {kind: parts}

    def _root_document(self) -> dict[str, Any] | None:
        if self.root.data(0, KIND_ROLE) == "all":
            count = self.root.childCount()
            if count == 0:
                return None
            if count == 1:
                return self._document(_children(self.root)[0])
        return self._document(self.root)

    def _render(self, *, announce_it: bool) -> None:
        """Label every item, show the reading and the status (validity) again."""
        problems = 0
        style = self.style()
        warning = style.standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning)
        for item in self._items():
            problem = self._problem(item)
            text = _item_text(item) if item is not self.root else _root_text(self.root)
            if problem is not None:
                problems += 1
                text += f" \u2014 problem: {problem[1]}"
                item.setIcon(0, warning)
            else:
                item.setIcon(0, style.standardIcon(QStyle.StandardPixmap.SP_FileIcon)
                             if item.data(0, KIND_ROLE) == LEAF else
                             style.standardIcon(QStyle.StandardPixmap.SP_DirIcon))  # fmt: skip
            item.setText(0, text)
            item.setData(0, Qt.ItemDataRole.AccessibleTextRole, text)
        was_valid = self._valid
        status = "Valid" if problems == 0 else ""
        document: dict[str, Any] | None = None
        if problems == 0:
            try:
                document = self._root_document() if self._touched else self._original
                reading = describe(document)
            except ConditionError as error:
                problems, status = 1, f"Not valid: {error.message}"
        if problems:
            self._valid = False
            status = status or (
                f"Not valid: {problems} "
                f"{'comparison needs' if problems == 1 else 'comparisons need'} fixing"
            )
            self.reading.setText("Reads as: (fix the marked parts first)")
        else:
            self._valid = True
            self.reading.setText(
                "Reads as: no condition, the rule always applies"
                if document is None
                else f"Reads as: when {reading}"
            )
        self.status.setText(status)
        self._show_problem()
        if announce_it and was_valid != self._valid:
            announce(self.status, status)

    def _show_problem(self) -> None:
        item = self.tree.currentItem()
        problem = self._problem(item) if item is not None else None
        if problem is None:
            self.problem.setText("")
            self.value.setAccessibleDescription("")
            self.attribute.setAccessibleDescription("The attribute path compared")
            kind = value_kind(value_from_text(self.value.text())) if self.value.text() else ""
            self.value_kind.setText(kind)
            return
        field, message = problem
        self.problem.setText(f"{field.capitalize()}: {message}")
        target = self.value if field == "value" else self.attribute
        target.setAccessibleDescription(f"Problem: {message}")
        self.value_kind.setText(
            value_kind(value_from_text(self.value.text())) if self.value.text() else ""
        )


def _children(item: QTreeWidgetItem) -> list[QTreeWidgetItem]:
    children = (item.child(i) for i in range(item.childCount()))
    return [child for child in children if child is not None]


def _entries(document: dict[str, Any]) -> list[tuple[str, Any]]:
    """The parts of an object condition: each entry a (kind, content) pair."""
    parts: list[tuple[str, Any]] = []
    for key, value in document.items():
        if key in ("all", "any"):
            parts.append((key, [_object_part(item) for item in value]))
        elif key == "not":
            inner = _entries(value)
            if len(inner) == 1 and inner[0][0] == "all":
                inner = inner[0][1]
            parts.append(("not", inner))
        elif isinstance(value, dict):
            ((op, operand),) = value.items()
            parts.append((LEAF, (key, op, operand)))
        else:
            parts.append((LEAF, (key, Operator.EQ.value, value)))
    return parts


def _object_part(document: dict[str, Any]) -> tuple[str, Any]:
    parts = _entries(document)
    return parts[0] if len(parts) == 1 else ("all", parts)


def _leaf_label(item: QTreeWidgetItem) -> str:
    path = item.data(0, PATH_ROLE) or "(no attribute)"
    return f"{path} {item.data(0, OP_ROLE)} {item.data(0, VALUE_ROLE) or '(no value)'}"


def _item_text(item: QTreeWidgetItem) -> str:
    kind = item.data(0, KIND_ROLE)
    if kind == LEAF:
        if comparison_problem(
            item.data(0, PATH_ROLE), item.data(0, OP_ROLE), item.data(0, VALUE_ROLE)
        ):
            return _leaf_label(item)
        return describe(
            comparison_document(
                item.data(0, PATH_ROLE), item.data(0, OP_ROLE), item.data(0, VALUE_ROLE)
            )
        )
    count = item.childCount()
    label = dict(GROUP_KINDS)[kind].partition(":")[0]
    if count == 0:
        empty = {"all": "empty, always holds", "any": "empty, never holds",
                 "not": "empty, never holds"}[kind]  # fmt: skip
        return f"{label} ({empty})"
    return f"{label} ({count} {'part' if count == 1 else 'parts'})"


def _root_text(root: QTreeWidgetItem) -> str:
    if root.data(0, KIND_ROLE) == "all" and root.childCount() == 0:
        return "no condition (add a comparison to make one)"
    return _item_text(root)
