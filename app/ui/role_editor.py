"""The role editor: one role's name, description, inheritance, rules and holders.

Rules of this module (the desktop issue, § Roles):

- Every change is an edit document queued through `Workspace.queue`; the
  editor shows the view again when the workspace says it changed. A refused
  edit's message is shown beside what was being changed and announced, and
  `message` carries it (or "Queued edit N: ...") to the status bar.
- The parent picker lists every role of the tenant (a filter over all of
  them, no cap), and refuses in place a parent that would close an
  inheritance cycle, naming the cycle: a role R may not inherit P when P
  already holds R (`Policy.ancestors`), the check `add_inheritance` makes.
- The permission matrix has one row per (resource type, action), since types
  have different actions: its "own" column is the role's own rules, checkable
  for an unconditional grant (Space toggles it), and its "inherited" column
  says which ancestor gives what. A rule covering several actions (or `*`)
  shows on each row it covers; unchecking one of them replaces the rule by
  rules for the rest, in one queued call (the rest added before the rule is
  removed, so an author editing their own role keeps the right to), so
  nothing else changes.
- Holders are the users holding the role at the workspace's time, directly or
  through inheritance (`Engine.holders`), each with the shortest path: worked
  out once per change from the few roles that inherit this one, then shown
  by a model that formats rows only when the view asks for them, page by page.
- Allowed and denied are words and icons, never colour alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QKeySequence, QShortcut, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListView,
    QPlainTextEdit,
    QPushButton,
    QStyle,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.offline import EditProblem
from app.ui.condition_editor import ConditionEditor
from app.ui.controls import accept_buttons, accept_or_explain, push_button, text_label
from app.ui.feedback import ask, say
from app.ui.icons import ALLOWED, DENIED, icon, verdict_pixmap
from app.ui.main_window import announce
from app.ui.models import TEXT_ROLES, RowsModel, ShownByPageModel
from app.ui.pickers import RoleListDialog, by_name
from app.ui.sizing import resize_in_text_units
from app.ui.tables import stretch_one_column, table_view
from app.ui.workspace import Workspace
from app.ui.workspace_view import WorkspaceView
from sync.policy.engine import Engine
from sync.policy.instant import Instant
from sync.policy.model import WILDCARD, Effect, Policy, Role, Rule

ARROW = " \u2192 "
HOLDERS_PAGE = 500
"""Rows the holders table adds each time the view scrolls to its end."""
MAX_SLUG = 60

Index = QModelIndex | QPersistentModelIndex
_DISPLAY = Qt.ItemDataRole.DisplayRole
_ACCESSIBLE = Qt.ItemDataRole.AccessibleTextRole
_TOOLTIP = Qt.ItemDataRole.ToolTipRole
_DECORATION = Qt.ItemDataRole.DecorationRole
_CHECK = Qt.ItemDataRole.CheckStateRole


# --- what the editor works out -----------------------------------------------------------


def fresh_role_id(policy: Policy, name: str) -> str:
    """An unused role id for a role named `name`: `r-<slug>`, then `r-<slug>-2` ..."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:MAX_SLUG] or "role"
    candidate, number = f"r-{slug}", 2
    while candidate in policy.roles:
        candidate, number = f"r-{slug}-{number}", number + 1
    return candidate


def parent_refusal(policy: Policy, role_id: str, parent_id: str) -> str | None:
    """Why `role_id` may not inherit `parent_id` (itself, a parent already, or a cycle
    it would close, named role by role); None when it may."""
    role, parent = policy.roles[role_id], policy.roles[parent_id]
    if parent_id == role_id:
        return f"{role.name} cannot inherit itself: {role.name}{ARROW}{role.name}"
    if parent_id in role.inherits:
        return f"{role.name} already inherits {parent.name}"
    for ancestor, path in policy.ancestors(parent_id):
        if ancestor == role_id:
            cycle = ARROW.join(policy.role_name(r) for r in (role_id, *path))
            return f"{role.name} cannot inherit {parent.name}: it would close the cycle {cycle}"
    return None


def covered_pairs(resource_types: dict[str, tuple[str, ...]], rule: Rule) -> list[tuple[str, str]]:
    """The (type, action) pairs a rule covers (policy-format.md: `*` as in the engine)."""
    names = resource_types if rule.resource == WILDCARD else (rule.resource,)
    pairs: list[tuple[str, str]] = []
    for type_name in names:
        listed = resource_types.get(type_name, ())
        actions = listed if WILDCARD in rule.actions else [a for a in rule.actions if a in listed]
        pairs.extend((type_name, a) for a in actions)
    return pairs


def rules_without(
    resource_types: dict[str, tuple[str, ...]], rule: Rule, type_name: str, action: str
) -> list[dict[str, Any]]:
    """Rule documents covering what `rule` covers except (type_name, action), with its
    condition: what replaces it when that one pair is taken away."""
    names = list(resource_types) if rule.resource == WILDCARD else [rule.resource]
    rest: list[dict[str, Any]] = []
    for name in names:
        listed = resource_types.get(name, ())
        if name == type_name:
            actions = [a for a in listed if a != action and (WILDCARD in rule.actions
                                                             or a in rule.actions)]  # fmt: skip
        elif WILDCARD in rule.actions:
            actions = [WILDCARD] if listed else []
        else:
            actions = [a for a in rule.actions if a in listed]
        if actions:
            document: dict[str, Any] = {"resource": name, "actions": actions}
            if rule.when is not None:
                document["when"] = rule.when
            rest.append(document)
    return rest


@dataclass(frozen=True, slots=True)
class Holding:
    """A user holding the role: `via` is the path of role ids from the role the user
    was assigned to the role's parent (empty: assigned directly)."""

    user_id: str
    via: tuple[str, ...]
    until: str | None


def holdings(engine: Engine, role_id: str, now: Instant) -> list[Holding]:
    """Every user holding `role_id` at `now`, directly or through inheritance, each with
    the shortest path (a direct assignment first). Cost: one pass over the users
    (`Engine.holders`) and over each holder's few assignments."""
    policy = engine.policy
    paths: dict[str, tuple[str, ...]] = {}
    for descendant in policy.descendants(role_id):
        for ancestor, path in policy.ancestors(descendant):
            if ancestor == role_id:
                paths[descendant] = path[:-1]
                break
    found: list[Holding] = []
    users = policy.users
    for user_id in engine.holders({role_id}):
        best: tuple[tuple[str, ...], str | None] | None = None
        for assignment in users[user_id].roles:
            via = paths.get(assignment.role_id)
            if via is None or not assignment.active_at(now):
                continue
            if best is None or len(via) < len(best[0]):
                best = (via, assignment.expires)
        if best is not None:
            found.append(Holding(user_id, best[0], best[1]))
    return found


HOLDERS_TAB = 2
"""The role sections' tab of holders (the third)."""


_OUTCOME_ICONS = {
    "allowed": ALLOWED,
    "allowed when conditions hold": QStyle.StandardPixmap.SP_MessageBoxQuestion,
}
"""Beside what holding a role gives; anything else (denied, not granted) is DENIED."""


def _effect_words(effect: Effect, rule: Rule) -> str:
    return f"{effect.value} when\u2026" if rule.condition is not None else effect.value


# --- the permission matrix ---------------------------------------------------------------


@dataclass(slots=True)
class PairRow:
    """One (type, action) of the matrix and the rules covering it."""

    resource_type: str
    action: str
    own: list[tuple[Effect, Rule]] = field(default_factory=list)
    inherited: list[tuple[Effect, Rule, tuple[str, ...]]] = field(default_factory=list)
    """Each with the path of role ids from this role to the rule's owner."""

    def granted(self) -> Qt.CheckState:
        grants = [r for e, r in self.own if e is Effect.GRANT]
        if any(r.condition is None for r in grants):
            return Qt.CheckState.Checked
        return Qt.CheckState.PartiallyChecked if grants else Qt.CheckState.Unchecked

    def outcome(self) -> str:
        rules = [(e, r) for e, r in self.own] + [(e, r) for e, r, _ in self.inherited]
        if any(e is Effect.DENY and r.condition is None for e, r in rules):
            return "denied"
        grants = [r for e, r in rules if e is Effect.GRANT]
        if not grants:
            return "not granted"
        sure = any(r.condition is None for r in grants)
        if sure and not any(e is Effect.DENY for e, _ in rules):
            return "allowed"
        return "allowed when conditions hold"


class PermissionModel(RowsModel[PairRow]):
    """The matrix of one role (module rules); `toggle(type, action, grant)` is called
    when the person checks or unchecks the own column and says whether it queued."""

    HEADERS = ("Resource type", "Action", "This role's own rules", "Inherited", "Holders get")
    OWN = 2

    def __init__(self, owner: QWidget, toggle: Callable[[str, str, bool], bool]) -> None:
        super().__init__(self.HEADERS, owner)
        self._toggle = toggle
        self._policy: Policy | None = None
        self._cells: dict[tuple[int, int, int], Any] = {}
        """What each cell is in each role, worked out once per role shown: its rows are
        sized to their wrapped words, so a layout asks every cell of a 100-pair matrix
        in eight roles, again and again (26,000 calls, 150 ms, when the views came)."""

    def data(self, index: Index, role: int = _DISPLAY) -> Any:
        key = (index.row(), index.column(), role)
        try:
            return self._cells[key]
        except KeyError:
            value = self._cells[key] = super().data(index, role)
            return value

    def set_role(self, policy: Policy, role: Role | None) -> None:
        rows: dict[tuple[str, str], PairRow] = {
            (t, a): PairRow(t, a) for t, actions in policy.resource_types.items() for a in actions
        }
        types = policy.resource_types
        if role is not None:
            for ancestor, path in policy.ancestors(role.id):
                owner = policy.roles[ancestor]
                for effect in (Effect.DENY, Effect.GRANT):
                    for rule in owner.rules(effect):
                        for pair in covered_pairs(types, rule):
                            if ancestor == role.id:
                                rows[pair].own.append((effect, rule))
                            else:
                                rows[pair].inherited.append((effect, rule, path))
        fresh = list(rows.values())
        self._policy = policy
        same = [(r.resource_type, r.action) for r in self._rows] == list(rows)
        self._rows = fresh
        self._cells.clear()
        if same and fresh:
            # In place: the person's place in the table (and keyboard focus) stays.
            self.dataChanged.emit(self.index(0, 0), self.index(len(fresh) - 1, 4))
        else:
            self.beginResetModel()
            self.endResetModel()

    def find(self, resource_type: str, action: str) -> int:
        for number, row in enumerate(self._rows):
            if (row.resource_type, row.action) == (resource_type, action):
                return number
        raise KeyError((resource_type, action))

    def flags(self, index: Index) -> Qt.ItemFlag:
        flags = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        if index.column() == self.OWN:
            flags |= Qt.ItemFlag.ItemIsUserCheckable
        return flags

    def cell(self, row: PairRow, column: int, role: int) -> Any:
        if column == 0:
            return row.resource_type if role in TEXT_ROLES else None
        if column == 1:
            return row.action if role in TEXT_ROLES else None
        if column == self.OWN:
            return self._own(row, role)
        if column == 3:
            return self._inherited(row, role)
        return self._outcome(row, role)

    def _own(self, row: PairRow, role: int) -> Any:
        words = list(dict.fromkeys(_effect_words(e, r) for e, r in row.own))
        if role == _DISPLAY:
            return "; ".join(words) or "\u2014"
        if role == _ACCESSIBLE:
            text = "; ".join(words) or "no rule of its own"
            return f"{row.resource_type} {row.action}: {text}"
        if role == _CHECK:
            return row.granted()
        if role == _TOOLTIP:
            lines = [f"{e.value} {r.describe()}" for e, r in row.own]
            lines.append("Space: grant or stop granting this action without a condition")
            return "\n".join(lines)
        return None

    def _inherited(self, row: PairRow, role: int) -> Any:
        policy = self._policy
        if policy is None:
            return None
        parts = []
        for effect, rule, path in row.inherited:
            text = f"{_effect_words(effect, rule)} from {policy.role_name(path[-1])}"
            if len(path) > 2:
                text += " via " + ARROW.join(policy.role_name(r) for r in path[1:-1])
            parts.append(text)
        parts = list(dict.fromkeys(parts))
        if role == _DISPLAY:
            return "; ".join(parts) or "\u2014"
        if role == _ACCESSIBLE:
            return "; ".join(parts) or "nothing inherited"
        if role == _TOOLTIP and row.inherited:
            return "\n".join(
                f"{e.value} {r.describe()} (role {policy.role_name(p[-1])})"
                for e, r, p in row.inherited
            )
        return None

    def _outcome(self, row: PairRow, role: int) -> Any:
        outcome = row.outcome()
        if role in TEXT_ROLES:
            return outcome
        if role == _DECORATION:
            return icon(_OUTCOME_ICONS.get(outcome, DENIED))
        if role == _TOOLTIP:
            return "What holding this role alone gives (deny overrides grant)"
        return None

    def setData(self, index: Index, value: Any, role: int = _DISPLAY) -> bool:
        if role != _CHECK or index.column() != self.OWN or not index.isValid():
            return False
        row = self._rows[index.row()]
        want = Qt.CheckState(value) == Qt.CheckState.Checked
        if want == (row.granted() == Qt.CheckState.Checked):
            return False
        queued = self._toggle(row.resource_type, row.action, want)
        if not queued:
            self._cells.clear()
            self.dataChanged.emit(index, index)
        return queued


# --- the rules list ----------------------------------------------------------------------


class RulesModel(RowsModel[tuple[Effect, Rule]]):
    """A role's own grants and denies, with their conditions in words."""

    HEADERS = ("Effect", "Resource", "Actions", "Condition")

    def __init__(self, owner: QWidget) -> None:
        super().__init__(self.HEADERS, owner)

    def set_role(self, role: Role | None) -> None:
        self.set_rows([] if role is None else [
            *((Effect.GRANT, r) for r in role.grants), *((Effect.DENY, r) for r in role.denies)
        ])  # fmt: skip

    def rule(self, number: int) -> tuple[Effect, Rule]:
        return self._rows[number]

    def cell(self, row: tuple[Effect, Rule], column: int, role: int) -> Any:
        effect, rule = row
        if role == _DECORATION and column == 0:
            return icon(verdict_pixmap(effect is Effect.GRANT))
        if role == _TOOLTIP:
            return f"{effect.value} {rule.describe()}"
        if role not in TEXT_ROLES:
            return None
        if column == 0:
            return effect.value
        if column == 1:
            return "any resource" if rule.resource == WILDCARD else rule.resource
        if column == 2:
            return "any action" if WILDCARD in rule.actions else ", ".join(rule.actions)
        return rule.condition_text or "always"


# --- holders ----------------------------------------------------------------------------


class HoldersModel(ShownByPageModel[Holding]):
    """The holders of a role (module rules): all worked out, shown a page at a time."""

    HEADERS = ("User", "Name", "Holds it", "Until")

    def __init__(self, owner: QWidget) -> None:
        super().__init__(self.HEADERS, HOLDERS_PAGE, owner)
        self._policy: Policy | None = None

    def set_holdings(self, policy: Policy, rows: list[Holding]) -> None:
        self._policy = policy
        self.set_rows(rows)

    def direct(self) -> int:
        return sum(1 for h in self._rows if not h.via)

    def sentence(self, number: int) -> str:
        """`u007 via senior-dispatcher → night-dispatcher` (or `vic directly`)."""
        holding = self._rows[number]
        return f"{holding.user_id} {self._how(holding)}"

    def _how(self, holding: Holding) -> str:
        if not holding.via:
            return "directly"
        assert self._policy is not None
        return "via " + ARROW.join(self._policy.role_name(r) for r in holding.via)

    def cell(self, holding: Holding, column: int, role: int) -> Any:
        if self._policy is None or role not in TEXT_ROLES:
            return None
        if column == 0:
            return holding.user_id
        if column == 1:
            user = self._policy.users.get(holding.user_id)
            return (user.name or "") if user is not None else ""
        if column == 2:
            return self._how(holding)
        return holding.until or ("no end" if role == _ACCESSIBLE else "")


# --- dialogs -----------------------------------------------------------------------------


NAME_ROLE = Qt.ItemDataRole.UserRole + 1
SEARCH_ROLE = Qt.ItemDataRole.UserRole + 2


class RolePicker(RoleListDialog):
    """Choose a parent among every role; a parent that cannot be is refused here, saying
    why (module rules). `submit(parent_id)` queues it and returns the problem, if any."""

    def __init__(
        self,
        policy: Policy,
        role_id: str,
        submit: Callable[[str], str | None],
        parent: QWidget | None = None,
    ) -> None:
        name = policy.role_name(role_id)
        roles = QStandardItemModel()
        for role in by_name(policy.roles.values()):
            refusal = parent_refusal(policy, role_id, role.id)
            text = role.name
            if role.description:
                text += f" \u2014 {role.description}"
            if refusal is not None:
                text += " (cannot be a parent: see below)"
            item = QStandardItem(text)
            item.setEditable(False)
            item.setData(role.id, NAME_ROLE)
            item.setData(f"{role.name} {role.id} {role.description}", SEARCH_ROLE)
            roles.appendRow(item)
        super().__init__("Add a parent role", roles, SEARCH_ROLE, names="role-picker-",
                         filter_text=f"&Find a role for {name} to inherit:",
                         filter_name="Find a role", parent=parent)  # fmt: skip
        self._policy = policy
        self._role_id = role_id
        self._submit = submit
        self.roles = roles
        self.reason = text_label(self, "role-picker-reason", "Why not", wrap=True)
        self.buttons, self.ok = accept_buttons(self, "&Add as parent", "role-picker-ok",
                                               self.choose)  # fmt: skip

        self.filter.textChanged.connect(self._filter)
        self.filter.returnPressed.connect(self.choose)
        self.list.activated.connect(lambda _index: self.choose())
        selection = self.list.selectionModel()
        selection.currentChanged.connect(lambda _now, _before: self._show_choice())

        self.rows.addWidget(self.reason)
        self.rows.addWidget(self.buttons)
        resize_in_text_units(self, 76, 30)
        self._filter("")

    def _filter(self, text: str) -> None:
        self.proxy.setFilterFixedString(text.strip())
        shown, total = self.proxy.rowCount(), self.roles.rowCount()
        words = f"{total} roles" if shown == total else f"{shown} of {total} roles match"
        self.count.setText(words)
        if shown and not self.list.currentIndex().isValid():
            self.list.setCurrentIndex(self.proxy.index(0, 0))
        self._show_choice()
        if text:
            announce(self.count, words)

    def chosen(self) -> str | None:
        """The id of the role the list's current row is, if any."""
        index = self.list.currentIndex()
        return index.data(NAME_ROLE) if index.isValid() else None

    def _show_choice(self) -> None:
        chosen = self.chosen()
        if chosen is None:
            self.reason.setText("No role matches." if self.filter.text() else "")
            self.ok.setEnabled(False)
            return
        refusal = parent_refusal(self._policy, self._role_id, chosen)
        name = self._policy.role_name(self._role_id)
        self.reason.setText(
            f"Cannot add: {refusal}"
            if refusal
            else f"{name} will hold {self._policy.role_name(chosen)} and what it inherits."
        )
        self.ok.setEnabled(refusal is None)

    def choose(self) -> None:
        """Add the current role as a parent, or say why it cannot be (and stay open)."""
        chosen = self.chosen()
        if chosen is None:
            return
        refusal = parent_refusal(self._policy, self._role_id, chosen)
        if refusal is None:
            refusal = self._submit(chosen)
        accept_or_explain(self, refusal, self.reason, "Cannot add")


class RuleDialog(QDialog):
    """A new grant or deny of a role: effect, resource type, actions and a condition built
    with a `ConditionEditor`. `submit(document)` queues it and returns the problem."""

    def __init__(
        self,
        workspace: Workspace,
        role: Role,
        submit: Callable[[dict[str, Any]], str | None],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("rule-dialog")
        self.setWindowTitle(f"Add a rule to {role.name}")
        self.setAccessibleName(f"Add a rule to {role.name}")
        self._role = role
        self._submit = submit
        self._types = dict(workspace.policy().resource_types)

        self.effect = QComboBox(self)
        self.effect.setObjectName("rule-effect")
        self.effect.setAccessibleName("Effect")
        self.effect.addItem("grant: allows the actions", Effect.GRANT.value)
        self.effect.addItem("deny: refuses them, overriding any grant", Effect.DENY.value)
        self.resource = QComboBox(self)
        self.resource.setObjectName("rule-resource")
        self.resource.setAccessibleName("Resource type")
        for name in self._types:
            self.resource.addItem(name, name)
        self.resource.addItem("any resource type (*)", WILDCARD)
        self.action_model = QStandardItemModel(self)
        self.action_list = QListView(self)
        self.action_list.setObjectName("rule-actions")
        self.action_list.setAccessibleName("Actions")
        self.action_list.setAccessibleDescription("Space checks or unchecks the current action")
        self.action_list.setModel(self.action_model)
        self.action_list.setMaximumHeight(self.fontMetrics().lineSpacing() * 8)
        self.condition = ConditionEditor(workspace, self)
        self.reading = text_label(self, "rule-reading", "The rule reads as", wrap=True)
        self.problem = text_label(self, "rule-problem", "Problem", wrap=True)
        self.buttons, self.ok = accept_buttons(self, "Add &rule", "rule-ok", self.choose)

        form = QFormLayout()
        for text, widget in (("&Effect:", self.effect), ("Resource &type:", self.resource),
                             ("&Actions:", self.action_list)):  # fmt: skip
            label = QLabel(text, self)
            label.setBuddy(widget)
            form.addRow(label, widget)
        box = QGroupBox("Condition (none: the rule always applies)", self)
        box_layout = QVBoxLayout(box)
        box_layout.addWidget(self.condition)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(box, 1)
        layout.addWidget(self.reading)
        layout.addWidget(self.problem)
        layout.addWidget(self.buttons)

        self.resource.currentIndexChanged.connect(lambda _i: self._fill_actions())
        self.effect.currentIndexChanged.connect(lambda _i: self._update())
        self.action_model.itemChanged.connect(lambda _item: self._update())
        self.condition.changed.connect(self._update)
        self._fill_actions()
        resize_in_text_units(self, 100, 40)

    def _fill_actions(self) -> None:
        resource = self.resource.currentData()
        if resource == WILDCARD:
            listed = list(dict.fromkeys(a for actions in self._types.values() for a in actions))
        else:
            listed = list(self._types.get(resource, ()))
        self.action_model.clear()
        for action in (WILDCARD, *listed):
            item = QStandardItem("every action (*)" if action == WILDCARD else action)
            item.setData(action, NAME_ROLE)
            item.setCheckable(True)
            item.setEditable(False)
            self.action_model.appendRow(item)
        self.action_list.setCurrentIndex(self.action_model.index(0, 0))
        self._update()

    def check_action(self, action: str) -> None:
        """Check `action` in the list (for the keyboard-less, and tests)."""
        for row in range(self.action_model.rowCount()):
            item = self.action_model.item(row)
            if item.data(NAME_ROLE) == action:
                item.setCheckState(Qt.CheckState.Checked)

    def chosen_actions(self) -> list[str]:
        items = (self.action_model.item(r) for r in range(self.action_model.rowCount()))
        chosen = [i.data(NAME_ROLE) for i in items if i.checkState() == Qt.CheckState.Checked]
        return [WILDCARD] if WILDCARD in chosen else chosen

    def document(self) -> dict[str, Any] | None:
        """The add_rule document, or None while the rule is not complete or not valid."""
        actions = self.chosen_actions()
        if not actions or not self.condition.valid():
            return None
        rule: dict[str, Any] = {"resource": self.resource.currentData(), "actions": actions}
        when = self.condition.condition()
        if when is not None:
            rule["when"] = when
        return {"op": "add_rule", "owner": f"role:{self._role.id}",
                "effect": self.effect.currentData(), "rule": rule}  # fmt: skip

    def _update(self) -> None:
        document = self.document()
        self.ok.setEnabled(document is not None)
        if document is None:
            missing = "Check at least one action." if not self.chosen_actions() else ""
            if not self.condition.valid():
                missing = (missing + " Fix the condition first.").strip()
            self.reading.setText(missing)
            return
        rule = document["rule"]
        text = Rule.build(rule["resource"], tuple(rule["actions"]), rule.get("when")).describe()
        self.reading.setText(f"Adds: {document['effect']} {text}")

    def choose(self) -> None:
        """Queue the rule; on a problem say it here and stay open."""
        document = self.document()
        if document is None:
            return
        accept_or_explain(self, self._submit(document), self.problem, "Not added")


# --- the editor ------------------------------------------------------------------------


class RoleEditor(WorkspaceView):
    """One role, or the form of a new one (module rules)."""

    def __init__(self, workspace: Workspace, parent: QWidget | None = None) -> None:
        super().__init__(workspace, "role-editor", "Role editor", parent)
        self.confirm: Callable[[str], bool] = self._ask
        """Asks the person to confirm `text` (a deletion); tests replace it."""
        self.picker: RolePicker | None = None
        self.rule_dialog: RuleDialog | None = None
        self._role_id: str | None = None
        self._loaded = ("", "")

        self.title = text_label(self, "role-title", "Role shown")
        font = self.title.font()
        font.setPointSizeF(font.pointSizeF() * 1.3)
        font.setBold(True)
        self.title.setFont(font)
        self.new_button = self._button("Ne&w role", "new-role", "Start a new role")
        self.delete_button = self._button("De&lete role\u2026", "delete-role",
                                          "Delete this role, after asking")  # fmt: skip
        self.new_button.clicked.connect(self.new_role)
        self.delete_button.clicked.connect(self.delete_role)

        # Details: name and description.
        details = QGroupBox("Details", self)
        self.name = QLineEdit(details)
        self.name.setObjectName("role-name")
        self.name.setAccessibleName("Role name")
        self.description = QPlainTextEdit(details)
        self.description.setObjectName("role-description")
        self.description.setAccessibleName("Description")
        self.description.setAccessibleDescription("What the role is for, in a sentence")
        self.description.setTabChangesFocus(True)
        self.description.setFixedHeight(self.fontMetrics().lineSpacing() * 4)
        name_label = QLabel("&Name:", details)
        name_label.setBuddy(self.name)
        description_label = QLabel("&Description:", details)
        description_label.setBuddy(self.description)
        self.save_button = self._button("&Save", "save-role", "Queue the name and description")
        self.revert_button = self._button("Re&vert", "revert-role",
                                          "Put back the name and description")  # fmt: skip
        self.save_button.clicked.connect(self.save)
        self.revert_button.clicked.connect(self.revert)
        self.details_feedback = self._feedback("details-feedback", "Details outcome", details)
        form = QFormLayout()
        form.addRow(name_label, self.name)
        form.addRow(description_label, self.description)
        save_row = QHBoxLayout()
        save_row.addStretch(1)
        save_row.addWidget(self.revert_button)
        save_row.addWidget(self.save_button)
        details_layout = QVBoxLayout(details)
        details_layout.addLayout(form)
        details_layout.addLayout(save_row)
        details_layout.addWidget(self.details_feedback)
        self.name.textChanged.connect(lambda _t: self._details_edited())
        self.description.textChanged.connect(self._details_edited)
        self.name.returnPressed.connect(self.save)

        # Inheritance.
        inherits = QGroupBox("Inheritance", self)
        self.inherits_box = inherits
        self.parents_model = QStandardItemModel(self)
        self.parents = QListView(inherits)
        self.parents.setObjectName("role-parents")
        self.parents.setAccessibleName("Inherited roles")
        self.parents.setAccessibleDescription("The roles this one inherits directly")
        self.parents.setModel(self.parents_model)
        self.parents.setMaximumHeight(self.fontMetrics().lineSpacing() * 6)
        parents_label = QLabel("&Inherits:", inherits)
        parents_label.setBuddy(self.parents)
        self.add_parent_button = self._button("Add &parent\u2026", "add-parent",
                                              "Choose a role for this one to inherit")  # fmt: skip
        self.remove_parent_button = self._button("Remove pa&rent", "remove-parent",
                                                 "Stop inheriting the chosen role")  # fmt: skip
        self.add_parent_button.clicked.connect(self.open_picker)
        self.remove_parent_button.clicked.connect(self.remove_parent)
        shortcut = QShortcut(QKeySequence(QKeySequence.StandardKey.Delete), self.parents)
        shortcut.setContext(Qt.ShortcutContext.WidgetShortcut)
        shortcut.activated.connect(self.remove_parent)
        self.ancestry = text_label(inherits, "role-ancestry", "Held through inheritance", wrap=True)
        self.inherit_feedback = self._feedback("inherit-feedback", "Inheritance outcome", inherits)
        parent_buttons = QHBoxLayout()
        parent_buttons.addWidget(self.add_parent_button)
        parent_buttons.addWidget(self.remove_parent_button)
        parent_buttons.addStretch(1)
        inherits_layout = QVBoxLayout(inherits)
        inherits_layout.addWidget(parents_label)
        inherits_layout.addWidget(self.parents)
        inherits_layout.addLayout(parent_buttons)
        inherits_layout.addWidget(self.ancestry)
        inherits_layout.addWidget(self.inherit_feedback)

        # Permissions, rules, holders.
        self.tabs = QTabWidget(self)
        self.tabs.setObjectName("role-sections")
        self.tabs.setAccessibleName("Role sections")
        self.tabs.tabBar().setObjectName("role-section-tabs")
        self.tabs.tabBar().setAccessibleName("Role sections")

        matrix_page = QWidget(self.tabs)
        self.matrix_model = PermissionModel(self, self._toggle)
        self.matrix = table_view(
            matrix_page,
            "permission-matrix",
            "Permission matrix",
            self.matrix_model,
            "One row per resource type and action. Space on the own column grants or stops "
            "granting it; the inherited column says which role gives what.",
        )
        self.matrix.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectItems)
        stretch_one_column(self.matrix, 3)
        header = self.matrix.horizontalHeader()
        # With no room to stretch into (large text, a narrow window) the stretched column
        # keeps its default size: its heading's, and the matrix scrolls sideways instead.
        header.setDefaultSectionSize(header.sectionSizeHint(3))
        # "grant from viewer via night-dispatcher" must be read whole, not elided.
        self.matrix.setWordWrap(True)
        self.matrix.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        matrix_label = QLabel("Permission &matrix (Space on the own column toggles a grant):",
                              matrix_page)  # fmt: skip
        matrix_label.setBuddy(self.matrix)
        self.matrix_feedback = self._feedback("matrix-feedback", "Permissions outcome", matrix_page)
        matrix_layout = QVBoxLayout(matrix_page)
        matrix_layout.addWidget(matrix_label)
        matrix_layout.addWidget(self.matrix, 1)
        matrix_layout.addWidget(self.matrix_feedback)
        self.tabs.addTab(matrix_page, "Permissi&ons")

        rules_page = QWidget(self.tabs)
        self.rules_model = RulesModel(self)
        self.rules = table_view(rules_page, "role-rules", "Own rules", self.rules_model)
        for column in (0, 1, 2):  # a role has few rules: sized to them, the condition stretches
            self.rules.horizontalHeader().setSectionResizeMode(
                column, QHeaderView.ResizeMode.ResizeToContents
            )
        rules_label = QLabel("Own grants and de&nies:", rules_page)
        rules_label.setBuddy(self.rules)
        self.add_rule_button = self._button("&Add rule\u2026", "add-rule",
                                            "Add a grant or deny, with a condition")  # fmt: skip
        self.remove_rule_button = self._button("Remove rul&e", "remove-rule",
                                               "Remove the chosen rule")  # fmt: skip
        self.add_rule_button.clicked.connect(self.open_rule_dialog)
        self.remove_rule_button.clicked.connect(self.remove_rule)
        self.rules_summary = text_label(rules_page, "rules-summary", "Own rules count", wrap=True)
        self.rules_feedback = self._feedback("rules-feedback", "Rules outcome", rules_page)
        rule_buttons = QHBoxLayout()
        rule_buttons.addWidget(self.add_rule_button)
        rule_buttons.addWidget(self.remove_rule_button)
        rule_buttons.addStretch(1)
        rules_layout = QVBoxLayout(rules_page)
        rules_layout.addWidget(rules_label)
        rules_layout.addWidget(self.rules_summary)
        rules_layout.addWidget(self.rules, 1)
        rules_layout.addLayout(rule_buttons)
        rules_layout.addWidget(self.rules_feedback)
        self.tabs.addTab(rules_page, "R&ules")

        holders_page = QWidget(self.tabs)
        self.holders_model = HoldersModel(self)
        self.holders = table_view(holders_page, "role-holders", "Holders", self.holders_model)
        self.holders.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 8)
        holders_header = self.holders.horizontalHeader()
        holders_header.setStretchLastSection(False)
        holders_header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        holders_header.resizeSection(3, self.fontMetrics().averageCharWidth() * 32)
        self.holders_count = text_label(holders_page, "holders-count", "Holders count")
        self.holders_count.setBuddy(self.holders)
        holders_layout = QVBoxLayout(holders_page)
        holders_layout.addWidget(self.holders_count)
        holders_layout.addWidget(self.holders, 1)
        self.tabs.addTab(holders_page, "&Holders")
        self.holders_busy = False
        """The holders are being worked out on a worker."""
        self.tabs.currentChanged.connect(
            lambda index: self._show_stale_holders() if index == HOLDERS_TAB else None
        )
        for number, page in enumerate((matrix_page, rules_page, holders_page)):
            page.setAccessibleName(self.tabs.tabText(number).replace("&", ""))

        head = QHBoxLayout()
        head.addWidget(self.title, 1)
        head.addWidget(self.new_button)
        head.addWidget(self.delete_button)
        left = QVBoxLayout()
        left.addWidget(details)
        left.addWidget(inherits)
        left.addStretch(1)
        left_panel = QWidget(self)
        left_panel.setLayout(left)
        # Narrow beside the matrix, in characters: it widens with the font.
        left_panel.setMaximumWidth(self.fontMetrics().averageCharWidth() * 64)
        left.setContentsMargins(0, 0, 0, 0)
        body = QHBoxLayout()
        body.addWidget(left_panel)
        body.addWidget(self.tabs, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(head)
        layout.addLayout(body, 1)

        self.follow_changes(self.refresh)
        self.show_role(None)

    # --- building helpers --------------------------------------------------------------

    def _button(self, text: str, name: str, description: str) -> QPushButton:
        return push_button(self, text, name, description)

    @staticmethod
    def _feedback(name: str, accessible: str, parent: QWidget) -> QLabel:
        return text_label(parent, name, accessible, wrap=True, selectable=True)

    def _ask(self, text: str) -> bool:
        # No by default: Enter must not delete a role.
        return ask(self, "Delete role", text)

    # --- the API -------------------------------------------------------------------------

    @property
    def role_id(self) -> str | None:
        """The role shown (None: the new-role form)."""
        return self._role_id

    def role(self) -> Role | None:
        return self.workspace.policy().roles.get(self._role_id) if self._role_id else None

    def show_role(self, role_id: str | None) -> None:
        """Show role `role_id` (an id, or a name), or the form of a new role for None."""
        policy = self.workspace.policy()
        if role_id is not None and role_id not in policy.roles:
            named = policy.role_by_name(role_id)
            role_id = named.id if named is not None else None
        self._role_id = role_id
        self._loaded = ("\0", "\0")  # nothing typed is kept from another role
        for label in (self.details_feedback, self.inherit_feedback, self.matrix_feedback,
                      self.rules_feedback):  # fmt: skip
            label.clear()
        self.refresh()

    def new_role(self) -> None:
        """Show the new-role form and put the focus in its name."""
        self.show_role(None)
        self.name.setFocus(Qt.FocusReason.OtherFocusReason)

    def refresh(self) -> None:
        """Show the role as the workspace's view has it now (after any change)."""
        policy = self.workspace.policy()
        role = policy.roles.get(self._role_id) if self._role_id else None
        if self._role_id is not None and role is None:
            self._role_id = None
            self.details_feedback.setText("The role shown is no longer in the view.")
        name, description = (role.name, role.description) if role else ("", "")
        typed = (self.name.text(), self.description.toPlainText())
        if self._loaded in (typed, ("\0", "\0")):
            self.name.setText(name)
            self.description.setPlainText(description)
        self._loaded = (name, description)
        self.title.setText(f"Role {role.name}" if role else "New role")
        self.setAccessibleName(f"Role editor: {role.name}" if role else "Role editor: new role")
        for widget in (self.inherits_box, self.tabs, self.delete_button):
            widget.setEnabled(role is not None)
        self._show_parents(policy, role)
        self.matrix_model.set_role(policy, role)
        self.rules_model.set_role(role)
        self._show_rules_summary(policy, role)
        # Holders are worked out when their tab is shown: a role held by 80,000 users
        # through inheritance takes 150 ms, and the other tabs do not need them.
        self._holders_for = role
        self._holders_stale = True
        if self.tabs.currentIndex() == HOLDERS_TAB:
            self._show_stale_holders()
        self._details_edited()
        self.remove_rule_button.setEnabled(role is not None and self.rules_model.rowCount() > 0)

    def _show_parents(self, policy: Policy, role: Role | None) -> None:
        self.parents_model.clear()
        for parent_id in role.inherits if role else ():
            item = QStandardItem(policy.role_name(parent_id))
            item.setEditable(False)
            item.setData(parent_id, NAME_ROLE)
            self.parents_model.appendRow(item)
        if self.parents_model.rowCount():
            self.parents.setCurrentIndex(self.parents_model.index(0, 0))
        self.remove_parent_button.setEnabled(self.parents_model.rowCount() > 0)
        if role is None:
            self.ancestry.setText("A new role inherits nothing until it is saved.")
            return
        held = [
            (r, path) for r, path in policy.ancestors(role.id) if r != role.id
        ]  # fmt: skip
        if not held:
            self.ancestry.setText(f"{role.name} inherits no other role.")
            return
        parts = []
        for ancestor, path in held:
            text = policy.role_name(ancestor)
            if len(path) > 2:
                text += " (via " + ARROW.join(policy.role_name(r) for r in path[1:-1]) + ")"
            parts.append(text)
        self.ancestry.setText("Holds through inheritance: " + ", ".join(parts))

    def _show_rules_summary(self, policy: Policy, role: Role | None) -> None:
        if role is None:
            self.rules_summary.setText("")
            return
        grants, denies = len(role.grants), len(role.denies)
        if grants + denies == 0:
            inherited = "; what it holds comes from the roles it inherits" if role.inherits else ""
            self.rules_summary.setText(f"{role.name} has no rules of its own{inherited}.")
            return
        self.rules_summary.setText(
            f"{role.name} has {grants} {'grant' if grants == 1 else 'grants'} and "
            f"{denies} {'deny' if denies == 1 else 'denies'} of its own."
        )

    def _show_stale_holders(self, *, wait: bool = False) -> None:
        """Work the holders out if the role or the view changed since; `wait`: here
        and now (a question that counts them), otherwise on a worker (`holders_busy`)."""
        if getattr(self, "_holders_stale", False):
            self._holders_stale = False
            self._show_holders(self._holders_for, wait=wait)

    def _show_holders(self, role: Role | None, *, wait: bool = False) -> None:
        if role is None:
            self.holders_model.set_holdings(self.workspace.policy(), [])
            self.holders_count.setText("A new role has no holders.")
            return
        now = self.workspace.now()
        if wait:
            self._holders_found(role, holdings(self.workspace.engine(), role.id, now))
            return
        # A role held through inheritance by 80,000 users takes 150 ms: on a worker.
        self.holders_busy = True
        self.holders_count.setText(f"Finding who holds {role.name} ...")
        self.workspace.read_later(
            lambda engine: holdings(engine, role.id, now),
            lambda rows: self._holders_found(role, rows),
            self,
        )

    def _holders_found(self, role: Role, rows: Any) -> None:
        self.holders_busy = False
        if isinstance(rows, Exception):
            self.holders_count.setText(f"The holders of {role.name} could not be found: {rows}")
            return
        if role.id != self._role_id:
            return  # another role is shown now
        self.holders_model.set_holdings(self.workspace.policy(), rows)
        total, direct = len(rows), self.holders_model.direct()
        users = "user holds" if total == 1 else "users hold"
        self.holders_count.setText(
            f"{total:,} {users} {role.name}: {direct:,} directly, "
            f"{total - direct:,} through inheritance"
        )

    # --- queueing ------------------------------------------------------------------------

    def _queue(
        self, documents: Sequence[dict[str, Any]], what: str, feedback: QLabel
    ) -> str | None:
        """Queue `documents`; say the outcome beside `feedback` and on `message`.
        Returns the problem, None when queued."""
        try:
            seqs = self.workspace.queue(documents)
        except EditProblem as problem:
            text = str(problem)
            say(feedback, f"Not queued: {text}")
            self.message.emit(text)
            return text
        if len(seqs) == 1:
            text = f"Queued edit {seqs[0]}: {what}"
        else:
            text = f"Queued edits {seqs[0]}\u2013{seqs[-1]}: {what}"
        say(feedback, text, self.message)
        return None

    # --- details -----------------------------------------------------------------------

    def _details_edited(self) -> None:
        typed = (self.name.text(), self.description.toPlainText())
        dirty = typed != self._loaded
        self.save_button.setEnabled(dirty and bool(typed[0].strip()))
        self.revert_button.setEnabled(dirty and self._role_id is not None)

    def save(self) -> None:
        """Queue the name and description (create the role, for the new-role form)."""
        name, description = self.name.text().strip(), self.description.toPlainText()
        policy = self.workspace.policy()
        role = self.role()
        if role is None:
            role_id = fresh_role_id(policy, name)
            document: dict[str, Any] = {"op": "create_role", "role_id": role_id, "name": name}
            if description:
                document["description"] = description
            if self._queue([document], f"create role {name} ({role_id})",
                           self.details_feedback) is None:  # fmt: skip
                kept = self.details_feedback.text()
                self.show_role(role_id)
                self.details_feedback.setText(kept)
            return
        documents: list[dict[str, Any]] = []
        said = []
        if name != role.name:
            documents.append({"op": "rename_role", "role_id": role.id, "name": name})
            said.append(f"rename role {role.name} to {name}")
        if description != role.description:
            documents.append({"op": "describe_role", "role_id": role.id,
                              "description": description})  # fmt: skip
            said.append(f"describe role {name}")
        if documents:
            self._queue(documents, "; ".join(said), self.details_feedback)

    def revert(self) -> None:
        """Put back the name and description the view has."""
        role = self.role()
        self.name.setText(role.name if role else "")
        self.description.setPlainText(role.description if role else "")

    def delete_role(self) -> None:
        """Delete the role, once `confirm` says so."""
        role = self.role()
        if role is None:
            return
        policy = self.workspace.policy()
        self._show_stale_holders(wait=True)  # the question counts them
        direct = self.holders_model.direct()
        children = sum(1 for r in policy.roles.values() if role.id in r.inherits)
        question = (
            f"Delete role {role.name}? {direct} {'user holds' if direct == 1 else 'users hold'} "
            f"it directly and {children} {'role inherits' if children == 1 else 'roles inherit'}"
            " it; they lose it and what it gives."
        )
        if not self.confirm(question):
            return
        document = {"op": "delete_role", "role_id": role.id}
        if self._queue([document], f"delete role {role.name}", self.details_feedback) is None:
            kept = self.details_feedback.text()
            self.show_role(None)
            self.details_feedback.setText(kept)

    # --- inheritance -------------------------------------------------------------------

    def open_picker(self) -> RolePicker | None:
        """Open the parent picker (not blocking: it queues when a role is chosen)."""
        role = self.role()
        if role is None:
            return None
        if self.picker is not None:
            self.picker.deleteLater()
        self.picker = RolePicker(self.workspace.policy(), role.id, self._add_parent, self)
        self.picker.open()
        self.picker.filter.setFocus(Qt.FocusReason.OtherFocusReason)
        return self.picker

    def _add_parent(self, parent_id: str) -> str | None:
        role = self.role()
        if role is None:
            return "the role is no longer in the view"
        parent = self.workspace.policy().role_name(parent_id)
        document = {"op": "add_inheritance", "role_id": role.id, "parent_id": parent_id}
        return self._queue([document], f"{role.name} inherits {parent}", self.inherit_feedback)

    def remove_parent(self) -> None:
        """Stop inheriting the parent chosen in the list."""
        role, index = self.role(), self.parents.currentIndex()
        if role is None or not index.isValid():
            return
        parent_id = index.data(NAME_ROLE)
        parent = self.workspace.policy().role_name(parent_id)
        document = {"op": "remove_inheritance", "role_id": role.id, "parent_id": parent_id}
        self._queue([document], f"{role.name} no longer inherits {parent}", self.inherit_feedback)

    # --- rules -------------------------------------------------------------------------

    def _toggle(self, type_name: str, action: str, grant: bool) -> bool:
        """Grant (type, action) without a condition, or stop granting it so (module rules)."""
        role = self.role()
        if role is None:
            return False
        owner = f"role:{role.id}"
        documents: list[dict[str, Any]] = []
        if grant:
            rule = {"resource": type_name, "actions": [action]}
            documents.append({"op": "add_rule", "owner": owner, "effect": "grant", "rule": rule})
            what = f"grant {type_name} {action} to {role.name}"
        else:
            types = self.workspace.policy().resource_types
            for held in role.grants:
                if held.condition is None and (type_name, action) in covered_pairs(types, held):
                    # The rest first: removing `role *` first would take away the
                    # author's own role:update before the rest is added back.
                    documents.extend(
                        {"op": "add_rule", "owner": owner, "effect": "grant", "rule": rest}
                        for rest in rules_without(types, held, type_name, action)
                    )
                    documents.append({"op": "remove_rule", "owner": owner, "effect": "grant",
                                      "rule": held.to_document()})  # fmt: skip
            what = f"{role.name} no longer grants {type_name} {action}"
        if not documents:
            return False
        return self._queue(documents, what, self.matrix_feedback) is None

    def open_rule_dialog(self) -> RuleDialog | None:
        """Open the dialog adding a rule (not blocking)."""
        role = self.role()
        if role is None:
            return None
        if self.rule_dialog is not None:
            self.rule_dialog.deleteLater()
        self.rule_dialog = RuleDialog(self.workspace, role, self._add_rule, self)
        self.rule_dialog.open()
        return self.rule_dialog

    def _add_rule(self, document: dict[str, Any]) -> str | None:
        role = self.role()
        if role is None:
            return "the role is no longer in the view"
        rule = document["rule"]
        text = Rule.build(rule["resource"], tuple(rule["actions"]), rule.get("when")).describe()
        return self._queue(
            [document], f"add {document['effect']} {text} to {role.name}", self.rules_feedback
        )

    def remove_rule(self) -> None:
        """Remove the rule chosen in the rules list."""
        role, index = self.role(), self.rules.currentIndex()
        if role is None or not index.isValid():
            return
        effect, rule = self.rules_model.rule(index.row())
        document = {"op": "remove_rule", "owner": f"role:{role.id}", "effect": effect.value,
                    "rule": rule.to_document()}  # fmt: skip
        what = f"remove {effect.value} {rule.describe()} from {role.name}"
        self._queue([document], what, self.rules_feedback)
