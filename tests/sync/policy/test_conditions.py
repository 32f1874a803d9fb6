"""sync.conditions against policy-format.md § Conditions.

Every comparison case runs through four evaluators that must agree with the
expected value written from the spec: the compiled closure for the literal
(specialised per literal type), the tree's own `evaluate`, and both again
with the operand read through a reference (`$context.v`), which takes the
generic path. `resource.v` is the attribute under test throughout.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest

from sync.policy.conditions import MAX_DEPTH, ConditionError, compile_condition, parse_condition
from sync.policy.request import Request

ABSENT = object()
"""An attribute the request does not carry at all."""


def _request(value: Any = ABSENT, operand: Any = ABSENT) -> Request:
    attrs = {} if value is ABSENT else {"v": value}
    context = {} if operand is ABSENT else {"v": operand}
    return Request("u1", "read", "doc", "d1", attrs, context)


def _all_evaluations(op: str, literal: Any, value: Any) -> dict[str, bool]:
    request = _request(value, literal)
    literal_form = parse_condition({"resource.v": {op: literal}})
    reference_form = parse_condition({"resource.v": {op: "$context.v"}})
    results = {
        "compiled": compile_condition(literal_form)(request, {}),
        "tree": literal_form.evaluate(request, {}),
        "compiled by reference": compile_condition(reference_form)(request, {}),
        "tree by reference": reference_form.evaluate(request, {}),
    }
    if op == "eq" and not isinstance(literal, dict):
        shorthand = parse_condition({"resource.v": literal})
        results["shorthand"] = compile_condition(shorthand)(request, {})
    return results


def _check(op: str, literal: Any, value: Any, expected: bool) -> None:
    results = _all_evaluations(op, literal, value)
    wrong = {how: got for how, got in results.items() if got is not expected}
    assert not wrong, f"{op} {literal!r} on {value!r}: expected {expected}, got {wrong}"
    assert all(type(got) is bool for got in results.values())


# (literal, attribute value, expected) per operator, one literal type at a time.
EQ_CASES = [
    # string
    ("north", "north", True),
    ("north", "south", False),
    ("north", "North", False),
    ("north", ["north"], False),
    ("5", 5, False),
    ("", "", True),
    # number: one type, 5 == 5.0
    (5, 5, True),
    (5, 5.0, True),
    (5.0, 5, True),
    (0.5, 0.5, True),
    (5, 6, False),
    (5, "5", False),
    (1, True, False),
    (0, False, False),
    (-0.0, 0, True),
    # boolean: not a number
    (True, True, True),
    (False, False, True),
    (True, False, False),
    (True, 1, False),
    (False, 0, False),
    (True, "true", False),
    # list: element by element, in order
    ([1, "a"], [1, "a"], True),
    ([1, "a"], [1.0, "a"], True),
    ([1, "a"], ["a", 1], False),
    ([1, "a"], [1], False),
    ([1, "a"], [1, "a", None], False),
    ([True], [1], False),
    ([[1]], [[1.0]], True),
    ([], [], True),
    ([], {}, False),
    (["a"], "a", False),
    # object: key by key, order irrelevant
    ({"a": 1, "b": 2}, {"b": 2.0, "a": 1}, True),
    ({"k": 1}, {"k": 1, "j": 2}, False),
    ({"k": 1}, {"k": True}, False),
    ({"k": [1]}, {"k": [1]}, True),
    ({}, {}, True),
    ({"k": 1}, [["k", 1]], False),
]

NE_CASES = [
    ("north", "south", True),
    ("north", "north", False),
    ("north", 5, False),
    ("north", ["south"], False),
    (5, 6, True),
    (5, 5.0, False),
    (5, "6", False),
    (5, True, False),
    (1, True, False),
    (True, False, True),
    (True, True, False),
    (True, 0, False),
    (False, "x", False),
    ([1], [2], True),
    ([1], [1.0], False),
    ([1], [1, 1], True),
    ([1], "x", False),
    ([1], {"k": 1}, False),
    ({"k": 1}, {"k": 2}, True),
    ({"k": 1}, {"k": 1.0}, False),
    ({"k": 1}, [1], False),
]

IN_CASES = [
    (["north", "south"], "north", True),
    (["north", "south"], "east", False),
    (["north", "south"], 5, False),
    (["north"], ["north"], False),
    ([1, 2], 1, True),
    ([1, 2], 1.0, True),
    ([1.0, 2.0], 2, True),
    ([1, 2], 3, False),
    ([1, 2], True, False),
    ([1, 2], "1", False),
    ([True], 1, False),
    ([True], True, True),
    ([False], 0, False),
    ([0], False, False),
    ([[1], [2]], [1], True),
    ([[1], [2]], [1.0], True),
    ([[1], [2]], [3], False),
    ([[1], [2]], 1, False),
    ([{"k": 1}], {"k": 1}, True),
    ([{"k": 1}], {"k": 2}, False),
    (["north", 5, True, [1], {"k": 1}], "north", True),
    (["north", 5, True, [1], {"k": 1}], 5, True),
    (["north", 5, True, [1], {"k": 1}], True, True),
    (["north", 5, True, [1], {"k": 1}], [1], True),
    (["north", 5, True, [1], {"k": 1}], {"k": 1}, True),
    (["north", 5, True], 1, False),
    (["north", None], "north", True),
    ([], "north", False),
    ([], [], False),
    # A non-list operand makes `in` false, whatever it is.
    ("north", "north", False),
    ("north", "n", False),
    (5, 5, False),
    (True, True, False),
    ({"k": 1}, {"k": 1}, False),
    ({"k": 1}, "k", False),
]

NOT_IN_CASES = [
    (["north", "south"], "east", True),
    (["north", "south"], "north", False),
    (["north", "south"], 5, False),
    (["north", "south"], ["east"], False),
    ([1, 2], 3, True),
    ([1, 2], 3.5, True),
    ([1, 2], 2.0, False),
    ([1, 2], True, False),
    ([1, 2], "3", False),
    ([True], False, True),
    ([True], True, False),
    ([True], 0, False),
    ([0], False, False),
    ([[1]], [2], True),
    ([[1]], [1.0], False),
    ([[1]], 2, False),
    ([{"k": 1}], {"k": 2}, True),
    ([{"k": 1}], {"k": 1}, False),
    # A mixed-type list: some element lacks the attribute's type, so false.
    (["north", 5], "east", False),
    (["north", 5], 7, False),
    (["north", 5], True, False),
    ([1, True], 2, False),
    (["north", None], "east", False),
    ([None], "east", False),
    # Every element of an empty list has the type and differs: holds.
    ([], "east", True),
    ([], 5, True),
    # A non-list operand makes `not_in` false, whatever it is.
    ("north", "east", False),
    (5, 6, False),
    (True, False, False),
    ({"k": 1}, {"k": 2}, False),
]

ORDER_CASES = [
    # (op, literal, value, expected)
    ("gt", 5, 6, True),
    ("gt", 5, 5, False),
    ("gt", 5, 5.0, False),
    ("gt", 5, 4, False),
    ("gt", 2.5, 3, True),
    ("gt", 5, "6", False),
    ("gt", 0, True, False),
    ("gt", 5, [6], False),
    ("gte", 5, 5.0, True),
    ("gte", 5, 6, True),
    ("gte", 5, 4.999, False),
    ("gte", 0, False, False),
    ("lt", 5, 4, True),
    ("lt", 5, 5, False),
    ("lt", 5, -1e300, True),
    ("lt", 5, "4", False),
    ("lte", 5, 5, True),
    ("lte", 5.0, 5, True),
    ("lte", 5, 6, False),
    ("lte", 1, True, False),
    # strings by Unicode code point
    ("gt", "m", "n", True),
    ("gt", "m", "m", False),
    ("gt", "m", "M", False),
    ("gt", "B", "a", True),
    ("gt", "z", "\u00e9", True),
    ("gt", "\uff61", "\U0001f600", True),
    ("gt", "ab", "abc", True),
    ("gte", "m", "m", True),
    ("gte", "m", "l", False),
    ("lt", "m", "", True),
    ("lt", "b", "abc", True),
    ("lt", "\U0001f600", "\uff61", True),
    ("lte", "m", "m", True),
    ("lte", "m", "n", False),
    ("gt", "5", 6, False),
    ("lt", "5", 4, False),
    # booleans, lists and objects are not ordered
    ("gt", False, True, False),
    ("gte", True, True, False),
    ("lt", True, False, False),
    ("lte", False, False, False),
    ("gt", [1], [2], False),
    ("lte", [1], [1], False),
    ("gte", {"k": 1}, {"k": 1}, False),
    ("lt", {"k": 2}, {"k": 1}, False),
]

CONTAINS_CASES = [
    ("a", ["a", "b"], True),
    ("a", ["b"], False),
    ("a", [], False),
    ("a", "abc", False),
    ("a", "a", False),
    ("a", {"a": 1}, False),
    (1, [1.0], True),
    (1, [2, 1], True),
    (1, [True], False),
    (1, ["1"], False),
    (1, 1, False),
    (True, [True], True),
    (True, [1], False),
    (False, [0, "false"], False),
    (["a"], [["a"]], True),
    (["a"], ["a"], False),
    ([1], [[1.0], 2], True),
    ({"k": 1}, [{"k": 1}], True),
    ({"k": 1}, [{"k": 2}], False),
    ({"k": 1}, {"k": 1}, False),
]


@pytest.mark.parametrize(("literal", "value", "expected"), EQ_CASES)
def test_eq_holds_for_equal_values_of_one_json_type(literal: Any, value: Any, expected: bool):
    _check("eq", literal, value, expected)


@pytest.mark.parametrize(("literal", "value", "expected"), NE_CASES)
def test_ne_holds_for_different_values_of_one_json_type(literal: Any, value: Any, expected: bool):
    _check("ne", literal, value, expected)


@pytest.mark.parametrize(("literal", "value", "expected"), IN_CASES)
def test_in_holds_when_a_list_operand_has_an_equal_element_of_the_same_type(
    literal: Any, value: Any, expected: bool
) -> None:
    _check("in", literal, value, expected)


@pytest.mark.parametrize(("literal", "value", "expected"), NOT_IN_CASES)
def test_not_in_holds_when_every_element_has_the_type_and_differs(
    literal: Any, value: Any, expected: bool
) -> None:
    _check("not_in", literal, value, expected)


@pytest.mark.parametrize(("op", "literal", "value", "expected"), ORDER_CASES)
def test_ordering_compares_two_numbers_or_two_strings_by_code_point(
    op: str, literal: Any, value: Any, expected: bool
) -> None:
    _check(op, literal, value, expected)


@pytest.mark.parametrize(("literal", "value", "expected"), CONTAINS_CASES)
def test_contains_holds_when_the_attribute_is_a_list_with_an_equal_element(
    literal: Any, value: Any, expected: bool
) -> None:
    _check("contains", literal, value, expected)


OPERATORS = ["eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "contains"]
ONE_OF_EACH_TYPE = {
    "string": "a",
    "number": 1,
    "boolean": True,
    "array": ["a"],
    "object": {"k": 1},
}
LITERALS_OF_EVERY_TYPE = [
    *ONE_OF_EACH_TYPE.values(),
    None,
    ["a", 1],
    [None],
    [],
    {},
    0,
    "",
    False,
]


@pytest.mark.parametrize("missing", [ABSENT, None], ids=["absent", "null"])
@pytest.mark.parametrize("literal", LITERALS_OF_EVERY_TYPE, ids=repr)
@pytest.mark.parametrize("op", OPERATORS)
def test_a_missing_attribute_fails_every_operator(op: str, literal: Any, missing: Any) -> None:
    _check(op, literal, missing, False)


@pytest.mark.parametrize("value", [*LITERALS_OF_EVERY_TYPE, ABSENT], ids=repr)
@pytest.mark.parametrize("op", OPERATORS)
def test_a_null_literal_operand_fails_every_operator(op: str, value: Any) -> None:
    _check(op, None, value, False)


@pytest.mark.parametrize("op", OPERATORS)
def test_a_reference_to_a_missing_attribute_fails_every_operator(op: str) -> None:
    for value in LITERALS_OF_EVERY_TYPE:
        request = _request(value)
        for reference in ("$context.v", "$user.nothing", "$resource.nothing"):
            condition = parse_condition({"resource.v": {op: reference}})
            assert compile_condition(condition)(request, {}) is False
            assert condition.evaluate(request, {}) is False


MISMATCHED = [
    (a, b)
    for (kind_a, a), (kind_b, b) in itertools.product(ONE_OF_EACH_TYPE.items(), repeat=2)
    if kind_a != kind_b
]


@pytest.mark.parametrize(("literal", "value"), MISMATCHED, ids=repr)
@pytest.mark.parametrize("op", ["eq", "ne", "gt", "gte", "lt", "lte"])
def test_sides_of_different_json_types_fail_comparison_ne_included(
    op: str, literal: Any, value: Any
) -> None:
    _check(op, literal, value, False)


@pytest.mark.parametrize(("element", "value"), MISMATCHED, ids=repr)
@pytest.mark.parametrize("op", ["in", "not_in"])
def test_a_list_whose_elements_have_another_type_fails_in_and_not_in(
    op: str, element: Any, value: Any
) -> None:
    _check(op, [element], value, False)
    _check(op, [element, element], value, False)


@pytest.mark.parametrize(("element", "operand"), MISMATCHED, ids=repr)
def test_contains_fails_when_the_list_holds_only_other_types(element: Any, operand: Any) -> None:
    _check("contains", operand, [element], False)


@pytest.mark.parametrize("value", ["a", 1, True, {"k": 1}], ids=repr)
def test_contains_fails_when_the_attribute_is_not_a_list(value: Any) -> None:
    for operand in ONE_OF_EACH_TYPE.values():
        _check("contains", operand, value, False)


def test_booleans_are_not_numbers_anywhere() -> None:
    _check("eq", True, 1, False)
    _check("eq", 1, True, False)
    _check("in", [True], 1, False)
    _check("in", [1], True, False)
    _check("not_in", [1], True, False)
    _check("contains", 1, [True], False)
    _check("gte", 1, True, False)


# --- combinators -------------------------------------------------------------------------


def _holds(document: dict[str, Any], request: Request, user_attrs: dict[str, Any] | None = None):
    condition = parse_condition(document)
    compiled = compile_condition(condition)(request, user_attrs or {})
    assert compiled is condition.evaluate(request, user_attrs or {})
    return compiled


def test_the_empty_condition_holds() -> None:
    assert _holds({}, _request()) is True


def test_any_of_nothing_does_not_hold() -> None:
    assert _holds({"any": []}, _request()) is False


def test_all_of_nothing_holds() -> None:
    assert _holds({"all": []}, _request()) is True


def test_not_of_any_of_nothing_holds() -> None:
    assert _holds({"not": {"any": []}}, _request()) is True


@pytest.mark.parametrize("missing", [ABSENT, None], ids=["absent", "null"])
@pytest.mark.parametrize("op", OPERATORS)
def test_not_over_a_comparison_with_a_missing_side_holds(op: str, missing: Any) -> None:
    assert _holds({"not": {"resource.v": {op: ["x"] if "in" in op else "x"}}}, _request(missing))


@pytest.mark.parametrize("op", ["ne", "not_in"])
def test_not_over_a_type_mismatch_holds(op: str) -> None:
    assert _holds({"not": {"resource.v": {op: ["x"] if op == "not_in" else "x"}}}, _request(5))


def test_every_entry_of_an_object_must_hold() -> None:
    request = Request("u1", "read", "doc", "d1", {"a": 1, "b": 2})
    assert _holds({"resource.a": 1, "resource.b": 2}, request) is True
    assert _holds({"resource.a": 1, "resource.b": 3}, request) is False
    assert _holds({"resource.a": 1, "all": [{"resource.b": 2}], "any": [{}]}, request) is True
    assert _holds({"resource.a": 1, "all": [{"resource.b": 2}], "any": []}, request) is False


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_any_holds_when_one_part_holds_and_all_when_every_part_does(count: int) -> None:
    request = Request("u1", "read", "doc", "d1", {"n": 0})
    for true_index in range(count):
        parts = [{"resource.n": 0 if i == true_index else 1} for i in range(count)]
        assert _holds({"any": parts}, request) is True
        assert _holds({"all": parts}, request) is (count == 1)
    falses = [{"resource.n": 1}] * count
    assert _holds({"any": falses}, request) is False
    trues = [{"resource.n": 0}] * count
    assert _holds({"all": trues}, request) is True


def test_nested_combinators_evaluate_inside_out() -> None:
    request = Request("u1", "read", "doc", "d1", {"region": "north", "level": 3})
    document = {
        "any": [
            {"all": [{"resource.region": "south"}, {"resource.level": {"gt": 1}}]},
            {"not": {"any": [{"resource.level": {"lt": 3}}, {"resource.region": "east"}]}},
        ]
    }
    assert _holds(document, request) is True
    assert _holds({"not": document}, request) is False


# --- paths and references ----------------------------------------------------------------


def test_user_id_is_the_requests_user_never_an_attribute() -> None:
    request = Request("alice", "read", "doc", "d1")
    assert _holds({"user.id": "alice"}, request, {"id": "mallory"}) is True
    assert _holds({"user.id": "mallory"}, request, {"id": "mallory"}) is False


def test_resource_id_and_type_are_the_requests_fields_never_attributes() -> None:
    request = Request("alice", "read", "doc", "d1", {"id": "d2", "type": "other"})
    assert _holds({"resource.id": "d1", "resource.type": "doc"}, request) is True
    assert _holds({"resource.id": "d2"}, request) is False
    assert _holds({"resource.type": "other"}, request) is False


def test_a_missing_resource_id_is_missing() -> None:
    request = Request("alice", "read", "doc")
    assert _holds({"resource.id": {"ne": "d1"}}, request) is False
    assert _holds({"not": {"resource.id": "d1"}}, request) is True


def test_an_attribute_name_is_one_key_taken_verbatim_without_descent() -> None:
    request = Request("u", "read", "doc", None, {"a.b": 1, "a": {"b": 2}}, {"x.y": "z"})
    assert _holds({"resource.a.b": 1}, request) is True
    assert _holds({"resource.a.b": 2}, request) is False
    assert _holds({"context.x.y": "z"}, request) is True
    assert _holds({"user.home.city": "Oslo"}, request, {"home.city": "Oslo"}) is True
    assert _holds({"user.home.city": "Oslo"}, request, {"home": {"city": "Oslo"}}) is False


def test_user_attributes_come_from_the_policy_not_the_request() -> None:
    request = Request("u", "read", "doc", None, {"region": "north"}, {"region": "north"})
    assert _holds({"user.region": "north"}, request, {}) is False
    assert _holds({"user.region": "north"}, request, {"region": "north"}) is True


def test_context_time_is_missing_when_the_request_has_none() -> None:
    request = Request("u", "read", "doc")
    assert _holds({"context.time": {"gte": "2000-01-01T00:00:00Z"}}, request) is False
    assert _holds({"not": {"context.time": {"gte": "2000-01-01T00:00:00Z"}}}, request) is True
    timed = Request("u", "read", "doc", context={"time": "2026-11-22T09:30:00Z"})
    assert _holds({"context.time": {"gte": "2000-01-01T00:00:00Z"}}, timed) is True


def test_reference_to_a_user_attribute() -> None:
    request = Request("u", "read", "doc", None, {"region": "north"})
    assert _holds({"resource.region": "$user.region"}, request, {"region": "north"}) is True
    assert _holds({"resource.region": "$user.region"}, request, {"region": "south"}) is False
    assert _holds({"resource.region": {"ne": "$user.region"}}, request, {"region": "south"})


def test_reference_to_the_resource_id_and_user_id() -> None:
    request = Request("alice", "read", "doc", "alice", {"owner": "alice"})
    assert _holds({"resource.owner": "$user.id"}, request) is True
    assert _holds({"user.id": "$resource.id"}, request) is True
    assert _holds({"resource.owner": {"ne": "$user.id"}}, request) is False


def test_reference_to_a_context_value() -> None:
    request = Request("u", "read", "doc", None, {"shift": 9}, {"hour": 9.0, "hours": [8, 9]})
    assert _holds({"resource.shift": "$context.hour"}, request) is True
    assert _holds({"resource.shift": {"in": "$context.hours"}}, request) is True
    assert _holds({"context.hours": {"contains": "$resource.shift"}}, request) is True
    assert _holds({"resource.shift": {"lt": "$context.hour"}}, request) is False


def test_reference_to_a_non_list_makes_in_and_not_in_false() -> None:
    request = Request("u", "read", "doc", None, {"region": "north"})
    user = {"regions": "north", "others": "south"}
    assert _holds({"resource.region": {"in": "$user.regions"}}, request, user) is False
    assert _holds({"resource.region": {"not_in": "$user.others"}}, request, user) is False


def test_a_double_dollar_is_the_literal_string_without_its_first_dollar() -> None:
    request = Request("u", "read", "doc", None, {"price": "$5", "tag": "$user.region", "d": "$"})
    user = {"region": "north"}
    assert _holds({"resource.price": "$$5"}, request, user) is True
    assert _holds({"resource.tag": "$$user.region"}, request, user) is True
    assert _holds({"resource.tag": {"eq": "$$user.region"}}, request, user) is True
    assert _holds({"resource.d": "$$"}, request, user) is True
    assert _holds({"resource.price": {"ne": "$$5"}}, request, user) is False


def test_a_value_read_from_an_attribute_is_never_a_reference() -> None:
    request = Request("u", "read", "doc", None, {"a": "$user.region"}, {"b": "$user.region"})
    assert _holds({"resource.a": "$context.b"}, request, {"region": "north"}) is True


def test_strings_inside_lists_are_never_references() -> None:
    request = Request("u", "read", "doc", None, {"region": "north", "tag": "$user.region"})
    user = {"region": "north"}
    assert _holds({"resource.region": {"in": ["$user.region"]}}, request, user) is False
    assert _holds({"resource.tag": {"in": ["$user.region"]}}, request, user) is True


def test_strings_inside_lists_are_taken_verbatim_double_dollar_included() -> None:
    request = Request("u", "read", "doc", None, {"kept": ["$$x"], "one": ["$x"], "s": "$$x"})
    assert _holds({"resource.kept": {"eq": ["$$x"]}}, request) is True
    assert _holds({"resource.one": {"eq": ["$$x"]}}, request) is False
    assert _holds({"resource.s": {"in": ["$$x"]}}, request) is True
    assert _holds({"resource.kept": {"contains": "$$$x"}}, request) is True


# --- what a condition says about itself --------------------------------------------------


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ({"resource.region": "$user.region"}, "resource.region = $user.region"),
        ({"resource.level": {"gte": 3}}, "resource.level >= 3"),
        ({"resource.tags": {"contains": "x"}}, 'resource.tags contains "x"'),
        ({"resource.region": {"not_in": ["a", "b"]}}, 'resource.region not in ["a", "b"]'),
        ({}, "always"),
        ({"any": []}, "never"),
        ({"not": {"context.hour": {"lt": 9}}}, "not context.hour < 9"),
        (
            {"any": [{"resource.a": 1}, {"resource.b": 2}], "resource.c": "$$x"},
            '(resource.a = 1 or resource.b = 2) and resource.c = "$x"',
        ),
    ],
)
def test_a_condition_describes_itself_in_words(document: dict[str, Any], words: str) -> None:
    assert str(parse_condition(document)) == words


def test_trace_says_which_side_was_missing_and_whether_it_held() -> None:
    condition = parse_condition({"resource.region": "$user.region"})
    request = Request("u", "read", "doc", None, {"region": "north"})
    (line,) = condition.trace(request, {})
    assert 'resource.region is "north"' in line
    assert "user.region is missing" in line
    assert line.endswith("fails")


# --- malformed conditions ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ("resource.region", ""),
        (["resource.region"], ""),
        ({"foo": 1}, "foo"),
        ({"region": 1}, "region"),
        ({"user.": 1}, "user."),
        ({"user": 1}, "user"),
        ({".region": 1}, ".region"),
        ({"tenant.region": 1}, "tenant.region"),
        ({"resource.region": {"between": [1, 2]}}, "resource.region.between"),
        ({"resource.region": {"EQ": 1}}, "resource.region.EQ"),
        ({"resource.region": {}}, "resource.region"),
        ({"resource.region": {"eq": 1, "ne": 2}}, "resource.region"),
        ({"resource.region": "$foo"}, "resource.region"),
        ({"resource.region": "$user."}, "resource.region"),
        ({"resource.region": "$"}, "resource.region"),
        ({"resource.region": "$ user.region"}, "resource.region"),
        ({"resource.region": {"eq": "$foo.bar"}}, "resource.region.eq"),
        ({"resource.region": {"in": "$resource"}}, "resource.region.in"),
        ({"any": {"resource.a": 1}}, "any"),
        ({"all": "x"}, "all"),
        ({"not": [{"resource.a": 1}]}, "not"),
        ({"any": [{"resource.a": 1}, 5]}, "any[1]"),
        ({"any": [{}, {"resource.region": {"in": "$x"}}]}, "any[1].resource.region.in"),
        ({"all": [{"not": {"resource.a": {"gt": "$user."}}}]}, "all[0].not.resource.a.gt"),
        ({"resource.a": {"eq": float("nan")}}, "resource.a.eq"),
        ({"resource.a": [1, float("nan")]}, "resource.a"),
        ({"resource.a": {"eq": {1: "x"}}}, "resource.a.eq"),
        ({"resource.a": {"eq": (1, 2)}}, "resource.a.eq"),
    ],
)
def test_a_malformed_condition_is_rejected_with_its_path(document: Any, path: str) -> None:
    with pytest.raises(ConditionError) as raised:
        parse_condition(document)
    assert raised.value.path == path
    assert raised.value.message


def test_conditions_nested_deeper_than_the_limit_are_rejected() -> None:
    document: dict[str, Any] = {"resource.a": 1}
    for _ in range(MAX_DEPTH + 1):
        document = {"not": document}
    with pytest.raises(ConditionError, match="deeper"):
        parse_condition(document)


def test_conditions_nested_to_the_limit_are_accepted() -> None:
    document: dict[str, Any] = {"resource.a": 1}
    for _ in range(MAX_DEPTH):
        document = {"not": document}
    condition = parse_condition(document)
    assert compile_condition(condition)(_request(), {}) is (MAX_DEPTH % 2 == 1)


def test_infinite_numbers_compare_like_numbers() -> None:
    # YAML can spell them; they are numbers, not malformed.
    _check("gt", 1, math.inf, True)
