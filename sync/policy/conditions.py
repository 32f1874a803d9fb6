"""Conditions (`when`), per policy-format.md § Conditions.

A condition document is parsed once (`parse_condition`) into an immutable
tree. The tree describes itself in words (for decision reasons), compiles to
a closure that evaluates it without `eval` (`compile_condition`), and
evaluates with a trace of every comparison (`Condition.trace`, for explain).

Rules of this module, from the format:

- An object is the AND of its entries; `any`, `all`, `not` combine; any other
  key is an attribute path. A value is a literal (equality) or an object with
  exactly one operator.
- A whole operand that is a string starting with `$` is a reference to
  another path; `$$x` is the literal `$x`. Strings inside lists never are.
- Fail closed: a comparison where either side is missing (absent or null) or
  the two sides have different JSON types is false, for `ne` and `not_in`
  too. Numbers are one type; booleans are not numbers.

Closures take `(request, user_attributes)`: the request supplies `user`,
`resource_type`, `resource_id`, `resource_attrs` and `context`; the user's
attributes come from the policy.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sync.policy.request import Request

MAX_DEPTH = 32
"""Deepest nesting of `any`/`all`/`not` accepted; deeper is a malformed condition."""


class ConditionError(ValueError):
    """A malformed condition; `path` is where, relative to the condition."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


class Operator(StrEnum):
    EQ = "eq"
    NE = "ne"
    IN = "in"
    NOT_IN = "not_in"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    CONTAINS = "contains"


_SYMBOL = {
    Operator.EQ: "=",
    Operator.NE: "!=",
    Operator.IN: "in",
    Operator.NOT_IN: "not in",
    Operator.GT: ">",
    Operator.GTE: ">=",
    Operator.LT: "<",
    Operator.LTE: "<=",
    Operator.CONTAINS: "contains",
}

Getter = Callable[["Request", Mapping[str, Any]], Any]
Predicate = Callable[["Request", Mapping[str, Any]], bool]


# --- JSON values -----------------------------------------------------------------------

_NUMBER = "number"
_KIND: dict[type, str] = {
    str: "string",
    int: _NUMBER,
    float: _NUMBER,
    bool: "boolean",
    list: "array",
    dict: "object",
    type(None): "null",
}


def json_kind(value: object) -> str:
    """The JSON type of a parsed value: string, number, boolean, array, object, null."""
    return _KIND.get(type(value), "other")


def json_equal(left: object, right: object) -> bool:
    """Equality of two JSON values of the same type; booleans are not numbers."""
    kind = _KIND.get(type(left))
    if kind is None or kind != _KIND.get(type(right)):
        return False
    if kind == "array":
        assert isinstance(left, list) and isinstance(right, list)
        return len(left) == len(right) and all(map(json_equal, left, right))
    if kind == "object":
        assert isinstance(left, dict) and isinstance(right, dict)
        return left.keys() == right.keys() and all(json_equal(v, right[k]) for k, v in left.items())
    return left == right


def _ordered(left: Any, right: Any, op: Operator) -> bool:
    kind = _KIND.get(type(left))
    if kind not in (_NUMBER, "string") or kind != _KIND.get(type(right)):
        return False
    if op is Operator.GT:
        return bool(left > right)
    if op is Operator.GTE:
        return bool(left >= right)
    if op is Operator.LT:
        return bool(left < right)
    return bool(left <= right)


def _member(value: object, items: object) -> bool:
    kind = _KIND.get(type(value))
    return (
        isinstance(items, list)
        and kind != "null"
        and any(_KIND.get(type(item)) == kind and json_equal(value, item) for item in items)
    )


def _not_member(value: object, items: object) -> bool:
    kind = _KIND.get(type(value))
    return (
        isinstance(items, list)
        and kind is not None
        and kind != "null"
        and all(_KIND.get(type(item)) == kind and not json_equal(value, item) for item in items)
    )


def compare(op: Operator, attribute: object, operand: object) -> bool:
    """The reference semantics of one comparison, missing sides included."""
    if attribute is None or operand is None:
        return False
    if op is Operator.EQ:
        return json_equal(attribute, operand)
    if op is Operator.NE:
        return json_kind(attribute) == json_kind(operand) and not json_equal(attribute, operand)
    if op is Operator.IN:
        return _member(attribute, operand)
    if op is Operator.NOT_IN:
        return _not_member(attribute, operand)
    if op is Operator.CONTAINS:
        return isinstance(attribute, list) and any(json_equal(operand, e) for e in attribute)
    return _ordered(attribute, operand, op)


# --- paths -----------------------------------------------------------------------------

_ROOTS = ("user", "resource", "context")


@dataclass(frozen=True, slots=True)
class Path:
    """An attribute path: `user.id`, `user.<name>`, `resource.id`, `resource.type`,
    `resource.<name>` or `context.<name>`; `<name>` is one key, taken verbatim."""

    root: str
    name: str

    def __str__(self) -> str:
        return f"{self.root}.{self.name}"

    @property
    def is_field(self) -> bool:
        """True for `user.id`, `resource.id`, `resource.type`: own fields, not attributes."""
        return (self.root, self.name) in (("user", "id"), ("resource", "id"), ("resource", "type"))

    def getter(self) -> Getter:
        """A closure reading this path from `(request, user_attributes)`; None when missing."""
        name = self.name
        if self.root == "user":
            if name == "id":
                return lambda q, u: q.user
            return lambda q, u: u.get(name)
        if self.root == "resource":
            if name == "id":
                return lambda q, u: q.resource_id
            if name == "type":
                return lambda q, u: q.resource_type
            return lambda q, u: q.resource_attrs.get(name)
        return lambda q, u: q.context.get(name)

    def read(self, request: Request, user_attrs: Mapping[str, Any]) -> Any:
        return self.getter()(request, user_attrs)


def parse_path(text: str) -> Path:
    """Parse `user.region` and the like; raise ValueError when it is not a path."""
    root, dot, name = text.partition(".")
    if not dot or root not in _ROOTS or not name:
        raise ValueError(
            f"{text!r} is not an attribute path "
            "(expected user.<name>, resource.<name> or context.<name>)"
        )
    # Interned, like the attribute names and values the engine holds, so that
    # lookups and comparisons meet the same string object (see engine.py).
    return Path(root, sys.intern(name))


# --- the tree --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Literal:
    value: Any

    def __str__(self) -> str:
        return _json_text(self.value)


@dataclass(frozen=True, slots=True)
class Reference:
    path: Path

    def __str__(self) -> str:
        return f"${self.path}"


Operand = Literal | Reference


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


@dataclass(frozen=True, slots=True)
class Compare:
    """`path op operand`: one comparison."""

    path: Path
    op: Operator
    operand: Operand

    def __str__(self) -> str:
        return f"{self.path} {_SYMBOL[self.op]} {self.operand}"

    def evaluate(self, request: Request, user_attrs: Mapping[str, Any]) -> bool:
        return compare(
            self.op, self.path.read(request, user_attrs), self._operand(request, user_attrs)
        )

    def _operand(self, request: Request, user_attrs: Mapping[str, Any]) -> Any:
        if isinstance(self.operand, Reference):
            return self.operand.path.read(request, user_attrs)
        return self.operand.value

    def trace(self, request: Request, user_attrs: Mapping[str, Any], depth: int = 0) -> list[str]:
        value = self.path.read(request, user_attrs)
        operand = self._operand(request, user_attrs)
        held = compare(self.op, value, operand)
        seen = f"{self.path} is {_described(value)}"
        if isinstance(self.operand, Reference):
            seen += f", {self.operand.path} is {_described(operand)}"
        return [f"{'  ' * depth}{self}: {seen} -> {'holds' if held else 'fails'}"]


def _described(value: Any) -> str:
    return "missing" if value is None else _json_text(value)


@dataclass(frozen=True, slots=True)
class AllOf:
    """Every part holds (an object's entries, or `all`). No parts: holds."""

    parts: tuple[Condition, ...]

    def __str__(self) -> str:
        if not self.parts:
            return "always"
        return " and ".join(_grouped(p) for p in self.parts)

    def evaluate(self, request: Request, user_attrs: Mapping[str, Any]) -> bool:
        return all(p.evaluate(request, user_attrs) for p in self.parts)

    def trace(self, request: Request, user_attrs: Mapping[str, Any], depth: int = 0) -> list[str]:
        return _trace_group(self, "all of", request, user_attrs, depth)


@dataclass(frozen=True, slots=True)
class AnyOf:
    """At least one part holds. No parts: does not hold."""

    parts: tuple[Condition, ...]

    def __str__(self) -> str:
        if not self.parts:
            return "never"
        return " or ".join(_grouped(p) for p in self.parts)

    def evaluate(self, request: Request, user_attrs: Mapping[str, Any]) -> bool:
        return any(p.evaluate(request, user_attrs) for p in self.parts)

    def trace(self, request: Request, user_attrs: Mapping[str, Any], depth: int = 0) -> list[str]:
        return _trace_group(self, "any of", request, user_attrs, depth)


@dataclass(frozen=True, slots=True)
class Not:
    part: Condition

    def __str__(self) -> str:
        return f"not {_grouped(self.part)}"

    def evaluate(self, request: Request, user_attrs: Mapping[str, Any]) -> bool:
        return not self.part.evaluate(request, user_attrs)

    def trace(self, request: Request, user_attrs: Mapping[str, Any], depth: int = 0) -> list[str]:
        held = self.evaluate(request, user_attrs)
        head = f"{'  ' * depth}not: -> {'holds' if held else 'fails'}"
        return [head, *self.part.trace(request, user_attrs, depth + 1)]


Condition = Compare | AllOf | AnyOf | Not


def _grouped(part: Condition) -> str:
    if isinstance(part, (AllOf, AnyOf)) and len(part.parts) > 1:
        return f"({part})"
    return str(part)


def _trace_group(
    node: AllOf | AnyOf, label: str, request: Request, user_attrs: Mapping[str, Any], depth: int
) -> list[str]:
    held = node.evaluate(request, user_attrs)
    if len(node.parts) == 1:
        return node.parts[0].trace(request, user_attrs, depth)
    lines = [f"{'  ' * depth}{label}: -> {'holds' if held else 'fails'}"]
    for part in node.parts:
        lines.extend(part.trace(request, user_attrs, depth + 1))
    return lines


# --- parsing ---------------------------------------------------------------------------


def parse_condition(document: object) -> Condition:
    """Parse a `when` document into a tree.

    Raises ConditionError with the path (relative to the condition, e.g.
    `any[1].resource.region.in`) of the first problem found.
    """
    return _parse_object(document, "", 0)


def _join(base: str, key: str) -> str:
    return f"{base}.{key}" if base else key


def _parse_object(document: object, where: str, depth: int) -> AllOf:
    if depth > MAX_DEPTH:
        raise ConditionError(where, f"conditions nest deeper than {MAX_DEPTH} levels")
    if not isinstance(document, dict):
        raise ConditionError(where, f"a condition must be an object, not {json_kind(document)}")
    parts: list[Condition] = []
    for key, value in document.items():
        here = _join(where, key)
        if key in ("any", "all"):
            if not isinstance(value, list):
                raise ConditionError(here, f"{key!r} takes a list of conditions")
            items = tuple(
                _parse_object(item, f"{here}[{i}]", depth + 1) for i, item in enumerate(value)
            )
            parts.append(AnyOf(items) if key == "any" else AllOf(items))
        elif key == "not":
            parts.append(Not(_parse_object(value, here, depth + 1)))
        else:
            try:
                path = parse_path(key)
            except ValueError as error:
                raise ConditionError(
                    here, f"{error}; or one of the combinators any, all, not"
                ) from None
            parts.append(_parse_comparison(path, value, here))
    return AllOf(tuple(parts))


def _parse_comparison(path: Path, value: object, where: str) -> Compare:
    if not isinstance(value, dict):
        return Compare(path, Operator.EQ, _parse_operand(value, where))
    if len(value) != 1:
        raise ConditionError(
            where,
            f"an operator object takes exactly one operator, found {len(value)} "
            f"({', '.join(map(repr, value)) or 'none'})",
        )
    ((name, operand),) = value.items()
    try:
        op = Operator(name)
    except ValueError:
        known = ", ".join(o.value for o in Operator)
        raise ConditionError(
            _join(where, name), f"unknown operator {name!r} (known: {known})"
        ) from None
    return Compare(path, op, _parse_operand(operand, _join(where, name)))


def _parse_operand(value: object, where: str) -> Operand:
    if isinstance(value, str) and value.startswith("$"):
        if value.startswith("$$"):
            return Literal(value[1:])
        try:
            return Reference(parse_path(value[1:]))
        except ValueError as error:
            raise ConditionError(where, f"bad reference {value!r}: {error}") from None
    _check_literal(value, where)
    return Literal(sys.intern(value) if type(value) is str else value)


def is_json_value(value: object, depth: int = 0) -> bool:
    """True for what a JSON document can hold: no NaN or infinity, string keys."""
    if depth > MAX_DEPTH * 4:
        return False
    kind = json_kind(value)
    if kind == "other" or (isinstance(value, float) and not math.isfinite(value)):
        return False
    if isinstance(value, list):
        return all(is_json_value(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_json_value(v, depth + 1) for k, v in value.items())
    return True


def _check_literal(value: object, where: str) -> None:
    kind = json_kind(value)
    if kind == "other" or (isinstance(value, float) and not math.isfinite(value)):
        raise ConditionError(where, f"{value!r} is not a JSON value")
    if isinstance(value, list):
        for item in value:
            _check_literal(item, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConditionError(where, f"object key {key!r} is not a string")
            _check_literal(item, where)


# --- compiling -------------------------------------------------------------------------


def compile_condition(condition: Condition) -> Predicate:
    """A closure equivalent to `condition.evaluate`, specialised per operand type."""
    if isinstance(condition, Compare):
        return _compile_compare(condition)
    if isinstance(condition, Not):
        inner = compile_condition(condition.part)
        return lambda q, u: not inner(q, u)
    parts = [compile_condition(p) for p in condition.parts]
    if isinstance(condition, AnyOf):
        if not parts:
            return lambda q, u: False
        if len(parts) == 1:
            return parts[0]
        if len(parts) == 2:
            a, b = parts
            return lambda q, u: a(q, u) or b(q, u)
        return lambda q, u: any(p(q, u) for p in parts)
    if not parts:
        return lambda q, u: True
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        a, b = parts
        return lambda q, u: a(q, u) and b(q, u)
    return lambda q, u: all(p(q, u) for p in parts)


def _compile_compare(node: Compare) -> Predicate:
    get = node.path.getter()
    op = node.op
    if isinstance(node.operand, Reference):
        other = node.operand.path.getter()
        return lambda q, u: compare(op, get(q, u), other(q, u))
    value = node.operand.value
    if value is None:
        return lambda q, u: False
    kind = json_kind(value)
    if op is Operator.EQ:
        return _compile_equal(get, value, kind)
    if op is Operator.NE:
        positive = _compile_equal(get, value, kind)
        kind_of = _KIND.get
        return lambda q, u: kind_of(type(get(q, u))) == kind and not positive(q, u)
    if op in (Operator.IN, Operator.NOT_IN):
        if not isinstance(value, list):
            return lambda q, u: False
        return _compile_membership(get, value, negate=op is Operator.NOT_IN)
    if op is Operator.CONTAINS:
        return _compile_contains(get, value, kind)
    if kind not in (_NUMBER, "string"):
        return lambda q, u: False
    return _compile_ordered(get, value, op, kind)


def _compile_equal(get: Getter, value: Any, kind: str) -> Predicate:
    if kind == "string":
        # Only a str compares equal to a str.
        return lambda q, u: get(q, u) == value
    if kind == _NUMBER:

        def number_equal(q: Request, u: Mapping[str, Any]) -> bool:
            x = get(q, u)
            t = type(x)
            return (t is int or t is float) and x == value

        return number_equal
    if kind == "boolean":
        return lambda q, u: get(q, u) is value
    return lambda q, u: json_equal(get(q, u), value)


def _compile_membership(get: Getter, items: Sequence[Any], *, negate: bool) -> Predicate:
    strings = frozenset(i for i in items if type(i) is str)
    numbers = frozenset(i for i in items if type(i) in (int, float))
    booleans = frozenset(i for i in items if type(i) is bool)
    compound = [i for i in items if type(i) in (list, dict)]
    kinds = {json_kind(i) for i in items}

    def member(x: Any) -> bool:
        t = type(x)
        if t is str:
            return x in strings
        if t is int or t is float:
            return x in numbers
        if t is bool:
            return x in booleans
        return any(json_equal(x, c) for c in compound)

    if not negate:

        def is_in(q: Request, u: Mapping[str, Any]) -> bool:
            x = get(q, u)
            return x is not None and member(x)

        return is_in
    only_kind = next(iter(kinds)) if len(kinds) == 1 else None
    empty = not items

    def is_not_in(q: Request, u: Mapping[str, Any]) -> bool:
        x = get(q, u)
        if x is None:
            return False
        if not empty and _KIND.get(type(x)) != only_kind:
            return False
        return not member(x)

    return is_not_in


def _compile_contains(get: Getter, value: Any, kind: str) -> Predicate:
    if kind == "string":
        return lambda q, u: type(x := get(q, u)) is list and value in x
    return lambda q, u: type(x := get(q, u)) is list and any(json_equal(value, e) for e in x)


def _compile_ordered(get: Getter, value: Any, op: Operator, kind: str) -> Predicate:
    types: tuple[type, ...] = (int, float) if kind == _NUMBER else (str,)
    if op is Operator.GT:
        return lambda q, u: type(x := get(q, u)) in types and x > value
    if op is Operator.GTE:
        return lambda q, u: type(x := get(q, u)) in types and x >= value
    if op is Operator.LT:
        return lambda q, u: type(x := get(q, u)) in types and x < value
    return lambda q, u: type(x := get(q, u)) in types and x <= value
