"""Edits, values and times in words: how every view says what an edit does.

Rules of this module (the desktop issue, § Pending edits and their impact, § Conflicts and
refused edits, § Audit and decision log):

- One line a person reads says what an edit document does, with role names
  where the view has them ("assign role driver to vic"), the words the
  pending edits, the outcomes and the log all use. An op it does not know is
  shown as its op and fields, never dropped.
- A member's value is text as it is, "(absent)" for none, "(present)" for a
  flag that is set, JSON otherwise.
- A stored time is shown to the second without the T and Z; the headers of
  the tables that show it say UTC.
- Nothing here reads the replica or touches a widget.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from sync.policy.conditions import ConditionError
from sync.policy.model import Rule

SUPERSEDED = "superseded"
"""The code of a rejection because someone else changed what the edit names."""


def _quoted(value: Any) -> str:
    return f"\u201c{value}\u201d"


def _rule_text(rule: Any) -> str:
    if not isinstance(rule, dict):
        return orjson.dumps(rule).decode()
    actions = rule.get("actions")
    try:
        return Rule.build(
            str(rule.get("resource")),
            tuple(map(str, actions)) if isinstance(actions, list) else (),
            rule.get("when"),
        ).describe()
    except (ConditionError, TypeError, ValueError):
        return orjson.dumps(rule).decode()


def _owner_text(owner: Any, role: Callable[[str], str]) -> str:
    kind, _, owner_id = str(owner).partition(":")
    if kind == "role":
        return f"role {role(owner_id)}"
    return f"user {owner_id}" if kind == "user" else str(owner)


def describe_edit(document: dict[str, Any], role_name: Callable[[str], str] | None = None) -> str:
    """One line for a person: what the edit document does ("assign role driver to vic").

    `role_name`: the name to show for a role id (the view's policy); ids without it.
    A document of an op this module does not know is shown as its op and fields.
    """
    role = role_name or (lambda role_id: role_id)
    d = document
    op = d.get("op")
    user = d.get("user_id")
    role_id = str(d.get("role_id"))
    until = f" until {d['expires']}" if d.get("expires") else ""
    match op:
        case "create_role":
            inherits = ", ".join(role(str(p)) for p in d.get("inherits") or ())
            return f"create role {_quoted(d.get('name'))} ({role_id})" + (
                f" inheriting {inherits}" if inherits else ""
            )
        case "rename_role":
            return f"rename role {role_id} to {_quoted(d.get('name'))}"
        case "describe_role":
            return f"describe role {role(role_id)}: {_quoted(d.get('description'))}"
        case "delete_role":
            return f"delete role {role(role_id)}"
        case "add_inheritance":
            return f"make role {role(role_id)} inherit {role(str(d.get('parent_id')))}"
        case "remove_inheritance":
            return f"stop role {role(role_id)} inheriting {role(str(d.get('parent_id')))}"
        case "add_rule" | "remove_rule":
            verb, word = ("add", "to") if op == "add_rule" else ("remove", "from")
            owner = _owner_text(d.get("owner"), role)
            return f"{verb} {d.get('effect')} {_rule_text(d.get('rule'))} {word} {owner}"
        case "assign_role":
            return f"assign role {role(role_id)} to {user}{until}"
        case "unassign_role":
            return f"unassign role {role(role_id)} from {user}"
        case "make_eligible":
            return (
                f"make {user} eligible for role {role(role_id)}, "
                f"up to {d.get('max_hours')} h at a time{until}"
            )
        case "remove_eligible":
            return f"end {user}'s eligibility for role {role(role_id)}"
        case "activate_role":
            return (
                f"activate role {role(role_id)} for {user} for {d.get('hours')} h: "
                f"{_quoted(d.get('justification'))}"
            )
        case "deactivate_role":
            return f"deactivate role {role(role_id)} for {user}"
        case "create_user":
            name = f" {_quoted(d['name'])}" if d.get("name") else ""
            return f"create user {user}{name}"
        case "delete_user":
            return f"delete user {user}"
        case "set_user_attribute":
            if d.get("value") is None:
                return f"remove {user}'s attribute {d.get('key')}"
            return f"set {user}'s attribute {d.get('key')} to {value_text(d.get('value'))}"
        case "suspend_user":
            return f"suspend user {user}"
        case "resume_user":
            return f"resume user {user}"
    fields = {k: v for k, v in d.items() if k != "op"}
    return f"{op} {orjson.dumps(fields).decode()}"


def value_text(value: Any) -> str:
    """A member's value for a person: text as it is, absent as "(absent)", else JSON."""
    if value is None:
        return "(absent)"
    if isinstance(value, str):
        return value
    if value is True:
        return "(present)"
    return orjson.dumps(value).decode()


def time_text(stored: str | None) -> str:
    """A stored RFC 3339 UTC time as a table shows it: to the second, without the T and Z
    (headers say UTC); the stored text whole where it is not one."""
    if not stored:
        return ""
    if len(stored) >= 20 and stored[10] == "T" and stored.endswith("Z"):
        return f"{stored[:10]} {stored[11:19]}"
    return stored
