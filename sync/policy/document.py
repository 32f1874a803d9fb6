"""The policy document (policy-format.md): load, validate, export.

Validation collects every problem it can find, each naming its place
(`roles[3].grants[1].when.resource.region`), so an admin fixes a file in one
pass. A document that validates becomes a `Policy`; `export_policy` writes it
back, role ids included, so an export/import round trip keeps ids.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from sync.policy.conditions import ConditionError, is_json_value, json_kind
from sync.policy.constraints import violations
from sync.policy.instant import Instant
from sync.policy.model import (
    FORMAT,
    MAX_ELIGIBLE_HOURS,
    WILDCARD,
    Assignment,
    Constraint,
    Policy,
    Role,
    Rule,
    User,
)

Document = dict[str, Any]

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
"""Largest policy file read; a 50,000-user tenant is about 15 MB."""

_TOP_KEYS = ("format", "tenant", "resource_types", "roles", "users", "constraints")
_ROLE_KEYS = ("name", "id", "description", "inherits", "grants", "denies")
_RULE_KEYS = ("resource", "actions", "when")
_USER_KEYS = ("id", "name", "suspended", "attributes", "roles", "grants", "denies")
_ASSIGNMENT_KEYS = ("role", "eligible", "expires")
_ELIGIBLE_KEYS = ("max_hours",)
_CONSTRAINT_KEYS = ("name", "exclusive")
_KNOWN: dict[tuple[str, ...], frozenset[str]] = {
    keys: frozenset(keys)
    for keys in (
        _TOP_KEYS,
        _ROLE_KEYS,
        _RULE_KEYS,
        _USER_KEYS,
        _ASSIGNMENT_KEYS,
        _ELIGIBLE_KEYS,
        _CONSTRAINT_KEYS,
    )
}
_SCALARS = (str, int, bool)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a document, and where."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class PolicyInvalid(ValueError):
    """The document is not a valid policy; `problems` lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        count = len(problems)
        head = "; ".join(str(p) for p in problems[:3])
        more = f" (and {count - 3} more)" if count > 3 else ""
        super().__init__(f"invalid policy: {head}{more}")


# --- reading text ----------------------------------------------------------------------


UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
"""What no store of the product can hold in a string: NUL (Postgres text and jsonb
cannot) and a lone surrogate (a \\ud800 escape without its pair: it has no UTF-8)."""
UNSTORABLE_TEXT = "a string contains a NUL character or an unpaired surrogate"


def holds_unstorable(value: Any) -> bool:
    """Whether a string or key anywhere in the JSON value `value` matches `UNSTORABLE`:
    the server refuses such a message whole, so nothing holding one may be queued or
    logged for it (it would block the queue behind it)."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str:
            if UNSTORABLE.search(item):
                return True
        elif kind is dict:
            for key, child in item.items():
                if type(key) is str and UNSTORABLE.search(key):
                    return True
                stack.append(child)
        elif kind is list or kind is tuple:
            stack.extend(item)
    return False


def reject_json_constant(name: str) -> NoReturn:
    """`parse_constant` hook for json.loads: NaN and infinities are not JSON."""
    raise ValueError(f"{name} is not a JSON number")


def unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A key given twice is refused: a reviewer would read one value and the
    # engine use the other (a `when` written twice, say).
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return result


@functools.cache
def _yaml_loader() -> type[Any]:
    """Safe YAML without timestamp conversion: times stay RFC 3339 strings.

    Made on first use: PyYAML takes longer to import than a replica takes to
    answer one decision, and most documents are JSON.
    """
    import yaml  # noqa: PLC0415 - see above

    class YamlLoader(safe_loader_class()):  # type: ignore[misc]
        pass

    YamlLoader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    return YamlLoader


def safe_loader_class() -> type[Any]:
    """PyYAML's safe loader, with its C parser (LibYAML) where the wheel has it: a
    50,000-user YAML policy then reads in 5 s instead of 33."""
    import yaml  # noqa: PLC0415 - see _yaml_loader

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_dumper_class() -> type[Any]:
    """PyYAML's safe dumper, with its C emitter where the wheel has it (the same text,
    four times as fast: 4.1 s instead of 16 for 50,000 users)."""
    import yaml  # noqa: PLC0415 - see _yaml_loader

    return getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def parse_text(text: str | bytes, *, yaml_syntax: bool = False) -> Any:
    """Parse a JSON (or YAML) document; raise PolicyInvalid naming line and column."""
    if yaml_syntax:
        import yaml  # noqa: PLC0415 - see _yaml_loader

        try:
            return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as error:
            raise PolicyInvalid([Problem("", f"not valid YAML: {error}")]) from None
        except (ValueError, UnicodeDecodeError) as error:
            raise PolicyInvalid([Problem("", f"not a valid document: {error}")]) from None
        except RecursionError:
            raise PolicyInvalid([Problem("", "the document nests too deeply")]) from None
    try:
        return json.loads(text, object_pairs_hook=unique_pairs, parse_constant=reject_json_constant)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno} column {error.colno}"
        raise PolicyInvalid([Problem("", f"not valid JSON at {where}: {error.msg}")]) from None
    except (ValueError, UnicodeDecodeError) as error:
        raise PolicyInvalid([Problem("", f"not a valid document: {error}")]) from None
    except RecursionError:
        raise PolicyInvalid([Problem("", "the document nests too deeply")]) from None


def parse_policy_text(text: str | bytes, *, yaml_syntax: bool, now: Instant) -> Policy:
    """Parse and validate a policy document's text (JSON, or YAML with `yaml_syntax`).

    Raises PolicyInvalid with problems naming the place. Reading the file is
    the caller's (sync reads no files): see app/policy_files.py.
    """
    return parse_policy(parse_text(text, yaml_syntax=yaml_syntax), now=now)


# --- validating ------------------------------------------------------------------------


def role_id_for(tenant: str, name: str) -> str:
    """The id given to a role that has none: stable for the same tenant and name."""
    return "r-" + hashlib.sha256(f"{tenant}\0{name}".encode()).hexdigest()[:12]


class _Validator:
    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.types: dict[str, tuple[str, ...]] = {}
        self.all_actions: set[str] = set()

    def problem(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def mapping(self, value: object, path: str, allowed: tuple[str, ...]) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.problem(path, f"must be an object, not {json_kind(value)}")
            return None
        if value.keys() <= _KNOWN.get(allowed, frozenset()):
            return value
        for key in value:
            if key not in allowed:
                known = ", ".join(allowed)
                self.problem(
                    f"{path}.{key}" if path else str(key), f"unknown field (known: {known})"
                )
        return value

    def items(self, value: object, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(path, f"must be a list, not {json_kind(value)}")
            return []
        return value

    def name(self, value: object, path: str, what: str) -> str | None:
        if not isinstance(value, str) or not value:
            self.problem(path, f"{what} must be a non-empty string")
            return None
        return value

    def resource_types(self, value: object) -> None:
        if not isinstance(value, dict):
            self.problem("resource_types", "must be an object mapping each type to its actions")
            return
        for type_name, actions in value.items():
            here = f"resource_types.{type_name}"
            if not isinstance(type_name, str) or not type_name or type_name == WILDCARD:
                self.problem(here, 'a resource type is named, and is not "*"')
                continue
            listed: list[str] = []
            for i, action in enumerate(self.items(actions, here)):
                if not isinstance(action, str) or not action or action == WILDCARD:
                    self.problem(f"{here}[{i}]", 'an action is a non-empty string other than "*"')
                elif action in listed:
                    self.problem(f"{here}[{i}]", f"action {action!r} is listed twice")
                else:
                    listed.append(action)
            self.types[type_name] = tuple(listed)
            self.all_actions.update(listed)

    def rule(self, value: object, path: str) -> Rule | None:
        document = self.mapping(value, path, _RULE_KEYS)
        if document is None:
            return None
        ok = True
        resource = document.get("resource")
        if not isinstance(resource, str):
            self.problem(f"{path}.resource", 'must be a resource type name or "*"')
            ok = False
        elif resource != WILDCARD and resource not in self.types:
            self.problem(f"{path}.resource", f"unknown resource type {resource!r}")
            ok = False
        actions = document.get("actions")
        if not isinstance(actions, list) or not actions:
            self.problem(f"{path}.actions", "must be a non-empty list of actions")
            ok = False
            actions = []
        for i, action in enumerate(actions):
            here = f"{path}.actions[{i}]"
            if not isinstance(action, str):
                self.problem(here, "an action is a string")
                ok = False
            elif action == WILDCARD or not isinstance(resource, str):
                continue
            elif resource == WILDCARD and action not in self.all_actions:
                self.problem(here, f"action {action!r} is not listed for any resource type")
                ok = False
            elif resource in self.types and action not in self.types[resource]:
                self.problem(
                    here, f"action {action!r} is not listed for resource type {resource!r}"
                )
                ok = False
        when = document.get("when")
        if when is not None and not isinstance(when, dict):
            self.problem(f"{path}.when", f"a condition must be an object, not {json_kind(when)}")
            return None
        try:
            rule = Rule.build(str(resource), tuple(actions), when)
        except ConditionError as error:
            self.problem(
                f"{path}.when.{error.path}" if error.path else f"{path}.when", error.message
            )
            return None
        return rule if ok else None

    def rules(self, value: object, path: str) -> tuple[Rule, ...]:
        if value is None or value == []:
            return ()
        built = [self.rule(item, f"{path}[{i}]") for i, item in enumerate(self.items(value, path))]
        return tuple(r for r in built if r is not None)


def parse_policy(document: object, *, now: Instant) -> Policy:
    """Validate a parsed policy document and build the `Policy`.

    `now` is the time of import, against which separation-of-duty constraints
    are checked. Raises PolicyInvalid listing every problem found.
    """
    check = _Validator()
    top = check.mapping(document, "", _TOP_KEYS)
    if top is None:
        raise PolicyInvalid(check.problems)
    if top.get("format") != FORMAT:
        check.problem("format", f"must be {FORMAT!r}, found {top.get('format')!r}")
    tenant = check.name(top.get("tenant"), "tenant", "the tenant") or ""
    check.resource_types(top.get("resource_types"))

    roles, ids_by_name = _parse_roles(check, tenant, top.get("roles"))
    users = _parse_users(check, top.get("users"), ids_by_name)
    constraints = _parse_constraints(check, top.get("constraints"), ids_by_name)
    _check_cycles(check, roles, _role_positions(top.get("roles"), ids_by_name))
    if check.problems:
        raise PolicyInvalid(check.problems)
    policy = Policy(tenant, check.types, roles, users, constraints)
    user_index = {user_id: i for i, user_id in enumerate(users)}
    problems = [
        Problem(f"users[{user_index[v.user]}].roles", f"breaks constraint: {v}")
        for v in violations(policy, now)
    ]
    if problems:
        raise PolicyInvalid(problems)
    return policy


def _parse_roles(
    check: _Validator, tenant: str, value: object
) -> tuple[dict[str, Role], dict[str, str]]:
    documents = check.items(value, "roles")
    names: set[str] = set()
    given_ids: set[str] = set()
    for i, item in enumerate(documents):
        if not isinstance(item, dict):
            continue
        name, role_id = item.get("name"), item.get("id")
        if isinstance(name, str) and name:
            if name in names:
                check.problem(f"roles[{i}].name", f"duplicate role name {name!r}")
            names.add(name)
        if role_id is not None and check.name(role_id, f"roles[{i}].id", "a role id"):
            if role_id in given_ids:
                check.problem(f"roles[{i}].id", f"duplicate role id {role_id!r}")
            given_ids.add(role_id)
    # Ids: the document's where given, else derived from the name (stable across imports).
    ids_by_name: dict[str, str] = {}
    taken = set(given_ids)
    for item in documents:
        if not isinstance(item, dict):
            continue
        name, role_id = item.get("name"), item.get("id")
        if not isinstance(name, str) or not name or name in ids_by_name:
            continue
        if not isinstance(role_id, str) or not role_id:
            role_id = role_id_for(tenant, name)
            while role_id in taken:
                role_id += "-"
            taken.add(role_id)
        ids_by_name[name] = role_id

    roles: dict[str, Role] = {}
    for i, item in enumerate(documents):
        here = f"roles[{i}]"
        role = check.mapping(item, here, _ROLE_KEYS)
        if role is None:
            continue
        name = check.name(role.get("name"), f"{here}.name", "a role's name")
        description = role.get("description", "")
        if not isinstance(description, str):
            check.problem(f"{here}.description", "must be a string")
            description = ""
        inherits: list[str] = []
        for j, parent in enumerate(check.items(role.get("inherits"), f"{here}.inherits")):
            if not isinstance(parent, str) or parent not in ids_by_name:
                check.problem(f"{here}.inherits[{j}]", f"unknown role {parent!r}")
            elif parent == name:
                check.problem(f"{here}.inherits[{j}]", f"role {name!r} inherits itself")
            else:
                inherits.append(ids_by_name[parent])
        grants = check.rules(role.get("grants"), f"{here}.grants")
        denies = check.rules(role.get("denies"), f"{here}.denies")
        if name is not None and ids_by_name[name] not in roles:
            role_id = ids_by_name[name]
            roles[role_id] = Role(role_id, name, description, tuple(inherits), grants, denies)
    return roles, ids_by_name


def _parse_users(
    check: _Validator, value: object, ids_by_name: Mapping[str, str]
) -> dict[str, User]:
    users: dict[str, User] = {}
    for i, item in enumerate(check.items(value, "users")):
        here = f"users[{i}]"
        user = check.mapping(item, here, _USER_KEYS)
        if user is None:
            continue
        user_id = check.name(user.get("id"), f"{here}.id", "a user's id")
        name = user.get("name")
        if name is not None and not isinstance(name, str):
            check.problem(f"{here}.name", "must be a string")
            name = None
        # policy-format.md § Additions: a boolean; absent means active. null is
        # refused too: a reviewer could read it either way.
        suspended = user.get("suspended", False)
        if suspended is not False and suspended is not True:
            check.problem(f"{here}.suspended", "must be true or false")
            suspended = False
        attributes = user.get("attributes", {})
        if attributes is None:
            attributes = {}
        if not isinstance(attributes, dict):
            check.problem(f"{here}.attributes", "must be an object")
            attributes = {}
        for key, attribute in attributes.items():
            # YAML can hold what JSON cannot; such a policy could not be exported.
            if type(attribute) in _SCALARS and type(key) is str:
                continue
            if not is_json_value(attribute) or not isinstance(key, str):
                check.problem(f"{here}.attributes.{key}", f"{attribute!r} is not a JSON value")
        assignments: list[Assignment] = []
        for j, entry in enumerate(check.items(user.get("roles"), f"{here}.roles")):
            assignment = _parse_assignment(check, entry, f"{here}.roles[{j}]", ids_by_name)
            if assignment is None:
                continue
            # "A role may be eligible at most once per user": with two, which
            # max_hours an activation may use would be left to chance.
            if assignment.eligible is not None and any(
                a.role_id == assignment.role_id and a.eligible is not None for a in assignments
            ):
                check.problem(
                    f"{here}.roles[{j}]",
                    f"role {entry['role']!r} is already eligible for this user",
                )
                continue
            assignments.append(assignment)
        grants = check.rules(user.get("grants"), f"{here}.grants")
        denies = check.rules(user.get("denies"), f"{here}.denies")
        if user_id is None:
            continue
        if user_id in users:
            check.problem(f"{here}.id", f"duplicate user id {user_id!r}")
            continue
        users[user_id] = User(
            user_id, name, attributes, tuple(assignments), grants, denies, suspended=suspended
        )
    return users


def _parse_assignment(
    check: _Validator, value: object, path: str, ids_by_name: Mapping[str, str]
) -> Assignment | None:
    entry = check.mapping(value, path, _ASSIGNMENT_KEYS)
    if entry is None:
        return None
    role = entry.get("role")
    if not isinstance(role, str) or role not in ids_by_name:
        check.problem(f"{path}.role", f"unknown role {role!r}")
        return None
    max_hours = None
    if "eligible" in entry:
        max_hours = _parse_eligible(check, entry["eligible"], f"{path}.eligible")
        if max_hours is None:
            return None
    expires = entry.get("expires")
    if expires is not None and not isinstance(expires, str):
        check.problem(f"{path}.expires", "must be an RFC 3339 date-time string")
        return None
    try:
        return Assignment.build(ids_by_name[role], expires, max_hours)
    except ValueError as error:
        check.problem(f"{path}.expires", str(error))
        return None


def _parse_eligible(check: _Validator, value: object, path: str) -> int | None:
    """An eligible entry's `max_hours` (policy-format.md § Additions), or None after
    reporting the problem: `eligible` is exactly `{"max_hours": N}`, N in 1..720."""
    if not isinstance(value, dict):
        check.problem(path, f'must be an object {{"max_hours": N}}, not {json_kind(value)}')
        return None
    check.mapping(value, path, _ELIGIBLE_KEYS)  # names each unknown field
    if not value.keys() <= {"max_hours"}:
        return None
    if "max_hours" not in value:
        check.problem(f"{path}.max_hours", f"missing: an integer from 1 to {MAX_ELIGIBLE_HOURS}")
        return None
    max_hours = value["max_hours"]
    # Exact type: a bool is an int to Python, and 8.0 is not an integer in the format.
    if type(max_hours) is not int or not 1 <= max_hours <= MAX_ELIGIBLE_HOURS:
        shown = json.dumps(max_hours) if is_json_value(max_hours) else repr(max_hours)
        check.problem(
            f"{path}.max_hours", f"must be an integer from 1 to {MAX_ELIGIBLE_HOURS}, not {shown}"
        )
        return None
    return max_hours


def _parse_constraints(
    check: _Validator, value: object, ids_by_name: Mapping[str, str]
) -> tuple[Constraint, ...]:
    constraints: list[Constraint] = []
    names: set[str] = set()
    for i, item in enumerate(check.items(value, "constraints")):
        here = f"constraints[{i}]"
        entry = check.mapping(item, here, _CONSTRAINT_KEYS)
        if entry is None:
            continue
        name = check.name(entry.get("name"), f"{here}.name", "a constraint's name")
        if name in names:
            check.problem(f"{here}.name", f"duplicate constraint name {name!r}")
        exclusive: list[str] = []
        members = check.items(entry.get("exclusive"), f"{here}.exclusive")
        if len(members) < 2:
            check.problem(f"{here}.exclusive", "must list at least two roles")
        for j, role in enumerate(members):
            if not isinstance(role, str) or role not in ids_by_name:
                check.problem(f"{here}.exclusive[{j}]", f"unknown role {role!r}")
            else:
                exclusive.append(ids_by_name[role])
        if name is not None:
            names.add(name)
            constraints.append(Constraint(name, tuple(exclusive)))
    return tuple(constraints)


def _role_positions(value: object, ids_by_name: Mapping[str, str]) -> dict[str, int]:
    """Role id -> index of the role in the document's `roles` (its first, if named twice)."""
    positions: dict[str, int] = {}
    for i, item in enumerate(value if isinstance(value, list) else []):
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str) and name in ids_by_name:
            positions.setdefault(ids_by_name[name], i)
    return positions


def _check_cycles(check: _Validator, roles: Mapping[str, Role], index: Mapping[str, int]) -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in roles:
        if state.get(start):
            continue
        path: list[str] = []
        stack: list[tuple[str, int]] = [(start, 0)]
        while stack:
            role_id, next_parent = stack.pop()
            if next_parent == 0:
                state[role_id] = 1
                path.append(role_id)
            parents = [p for p in roles[role_id].inherits if p in roles]
            if next_parent < len(parents):
                stack.append((role_id, next_parent + 1))
                parent = parents[next_parent]
                if state.get(parent) == 1:
                    cycle = [*path[path.index(parent) :], parent]
                    names = " -> ".join(roles[r].name for r in cycle)
                    check.problem(f"roles[{index[role_id]}].inherits", f"inheritance cycle {names}")
                elif not state.get(parent):
                    stack.append((parent, 0))
            else:
                state[role_id] = 2
                path.pop()


# --- writing ---------------------------------------------------------------------------


def _rules(rules: tuple[Rule, ...]) -> list[Document]:
    return [rule.to_document() for rule in rules]


def role_document(role: Role, name: Callable[[str], str] | None = None) -> Document:
    """A role's entity document (roles it inherits by id, or by `name(id)` when given)."""
    document: Document = {"id": role.id, "name": role.name}
    if role.description:
        document["description"] = role.description
    if role.inherits:
        document["inherits"] = [name(r) for r in role.inherits] if name else list(role.inherits)
    if role.grants:
        document["grants"] = _rules(role.grants)
    if role.denies:
        document["denies"] = _rules(role.denies)
    return document


def user_document(user: User, name: Callable[[str], str] | None = None) -> Document:
    """A user's entity document: `suspended` (only when true), attributes,
    assignments (role ids, or `{"role": name(id)}` as the format writes them
    when `name` is given; eligible entries with `eligible: {max_hours}`) and
    own rules."""
    document: Document = {"id": user.id}
    if user.name is not None:
        document["name"] = user.name
    if user.suspended:
        document["suspended"] = True
    if user.attributes:
        document["attributes"] = dict(user.attributes)
    if user.roles:
        document["roles"] = [_assignment_document(a, name) for a in user.roles]
    if user.grants:
        document["grants"] = _rules(user.grants)
    if user.denies:
        document["denies"] = _rules(user.denies)
    return document


def _assignment_document(assignment: Assignment, name: Callable[[str], str] | None) -> Document:
    role_id = assignment.role_id
    document: Document = {"role": name(role_id)} if name else {"role_id": role_id}
    if assignment.eligible is not None:
        document["eligible"] = {"max_hours": assignment.eligible}
    if assignment.expires:
        document["expires"] = assignment.expires
    return document


def constraints_document(
    constraints: tuple[Constraint, ...], name: Callable[[str], str] | None = None
) -> list[Document]:
    """The constraints as documents (roles by id, or by `name(id)` when given)."""
    return [
        {"name": c.name, "exclusive": [name(r) for r in c.exclusive] if name else list(c.exclusive)}
        for c in constraints
    ]


def export_policy(policy: Policy) -> dict[str, Any]:
    """The policy as a format-1 document, role ids included; empty lists left out.

    Roles and users are written by `role_document` and `user_document`, the
    same writers as the entities a store keeps (sync/replication/entities.py),
    so what a store keeps and what an export writes cannot drift apart.
    """
    name = policy.role_name
    document: Document = {
        "format": FORMAT,
        "tenant": policy.tenant,
        "resource_types": {t: list(actions) for t, actions in policy.resource_types.items()},
        "roles": [role_document(role, name) for role in policy.roles.values()],
        "users": [user_document(user, name) for user in policy.users.values()],
    }
    if policy.constraints:
        document["constraints"] = constraints_document(policy.constraints, name)
    return document


def dump_policy(policy: Policy, *, yaml_syntax: bool = False) -> str:
    """The exported document as JSON (2-space indent) or YAML text."""
    document = export_policy(policy)
    if yaml_syntax:
        import yaml  # noqa: PLC0415 - see _yaml_loader

        return str(
            yaml.dump(document, Dumper=safe_dumper_class(), sort_keys=False, allow_unicode=True)
        )
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
