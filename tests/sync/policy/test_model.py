"""sync.policy.model: a rule's type-strict identity, and assignments that are
eligibilities (policy-format.md § Additions)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sync.policy.instant import parse_instant
from sync.policy.model import (
    Assignment,
    Effect,
    Policy,
    Role,
    Rule,
    User,
    canonical_rule,
    condition_key,
    rule_key,
    rule_key_of,
)

ROOT = Path(__file__).resolve().parents[3]
NOW = parse_instant("2026-11-22T09:30:00Z")


def rule(when: Any = None, actions: tuple[str, ...] = ("read",), resource: str = "doc") -> Rule:
    return Rule.build(resource, actions, when)


# --- rule identity -----------------------------------------------------------------------


def test_a_condition_on_true_is_not_the_rule_with_a_condition_on_1() -> None:
    # Python says True == 1; policy-format.md says booleans are not numbers.
    on_true = rule({"context.x": True})
    on_one = rule({"context.x": 1})
    assert on_true != on_one
    assert len({on_true, on_one}) == 2
    assert rule_key(on_true) != rule_key(on_one)


def test_false_and_0_and_null_are_three_conditions() -> None:
    rules = [rule({"context.x": {"ne": value}}) for value in (False, 0, None)]
    assert len(set(rules)) == 3
    assert len({rule_key(r) for r in rules}) == 3


def test_5_and_5_point_0_are_the_same_condition() -> None:
    # policy-format.md: numbers are one type, 5 equals 5.0.
    assert rule({"context.hour": {"gte": 5}}) == rule({"context.hour": {"gte": 5.0}})
    assert rule_key(rule({"context.hour": 5})) == rule_key(rule({"context.hour": 5.0}))
    assert hash(rule({"context.hour": 5})) == hash(rule({"context.hour": 5.0}))


def test_a_fraction_is_not_its_integer_part() -> None:
    assert rule({"context.hour": 5.5}) != rule({"context.hour": 5})
    assert rule({"context.hour": 9007199254740993}) != rule({"context.hour": 9007199254740992.0})


def test_the_order_and_repetition_of_actions_do_not_matter() -> None:
    first = rule(actions=("read", "write"))
    assert first == rule(actions=("write", "read"))
    assert first == rule(actions=("write", "read", "write"))
    assert rule_key(first) == rule_key(rule(actions=("write", "read")))
    assert first != rule(actions=("read",))


def test_resource_and_presence_of_a_condition_are_part_of_the_identity() -> None:
    assert rule() != rule(resource="*")
    assert rule() != rule({})  # written differently: `{}` holds, but it is what was written
    assert rule({}) == rule({})


def test_keys_of_nested_objects_may_come_in_any_order() -> None:
    first = rule({"any": [{"resource.a": 1, "resource.b": {"in": [1, {"k": True, "j": 2.0}]}}]})
    second = rule({"any": [{"resource.b": {"in": [1.0, {"j": 2, "k": True}]}, "resource.a": 1}]})
    assert first == second
    assert rule_key(first) == rule_key(second)


def test_lists_in_a_condition_keep_their_order() -> None:
    ab, ba = ["a", "b"], ["b", "a"]
    assert rule({"resource.tags": {"eq": ab}}) != rule({"resource.tags": {"eq": ba}})
    assert rule({"any": [{"resource.a": 1}, {"resource.b": 2}]}) != rule(
        {"any": [{"resource.b": 2}, {"resource.a": 1}]}
    )


def test_a_bool_nested_in_lists_and_objects_stays_a_bool() -> None:
    assert rule({"resource.a": {"in": [[True]]}}) != rule({"resource.a": {"in": [[1]]}})
    assert rule({"resource.a": {"eq": {"k": [False]}}}) != rule({"resource.a": {"eq": {"k": [0]}}})


def test_the_canonical_form_is_compact_sorted_json_with_text_kept_as_written() -> None:
    built = rule({"resource.b": 2.0, "resource.a": "\u00e9\U0001f600"}, ("write", "read"))
    assert built.identity == (
        '["doc",["read","write"],{"resource.a":"\u00e9\U0001f600","resource.b":2}]'
    )
    assert canonical_rule("doc", ("read",), None) == '["doc",["read"],null]'


def test_rule_key_is_16_hex_digits_of_the_sha256_of_the_canonical_form() -> None:
    built = rule({"resource.region": "$user.region"}, ("update", "assign"), "route")
    canonical = '["route",["assign","update"],{"resource.region":"$user.region"}]'
    assert built.identity == canonical
    assert rule_key(built) == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    # Pinned: stored stamps name rules by this key, so it may never change.
    assert rule_key(built) == "0ab9436c2a2eb2b8"


def test_rule_key_is_the_same_in_another_process() -> None:
    # Stored merge stamps name rules by key: no per-process hash seed may enter it.
    built = rule({"any": [{"context.x": True}, {"resource.n": {"gt": 2.5}}]}, ("write", "read"))
    code = (
        "from sync.policy.model import Rule, rule_key;"
        "print(rule_key(Rule.build('doc', ('read', 'write'),"
        " {'any': [{'context.x': True}, {'resource.n': {'gt': 2.5}}]})))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONHASHSEED": "12345"},
        check=True,
    )
    assert other.stdout.strip() == rule_key(built)


def test_rule_key_of_document_parts_equals_the_built_rules_key() -> None:
    when = {"resource.n": {"in": [1.0, True]}}
    assert rule_key_of("doc", ["write", "read"], when) == rule_key(rule(when, ("read", "write")))


def test_rule_key_of_malformed_parts_is_a_key_not_a_crash() -> None:
    keys = {
        rule_key_of("doc", None, None),
        rule_key_of("doc", "read", None),
        rule_key_of("doc", ["read"], None),
        rule_key_of("doc", [1, ["x"], "read"], None),
    }
    assert len(keys) == 4


def test_a_rule_with_junk_actions_still_gets_an_identity() -> None:
    # An edit document may carry them; check_rule refuses the rule later.
    odd = Rule.build("doc", (1, ["x"], "read", 1), None)  # type: ignore[arg-type]
    assert odd.identity == '["doc",["read",1,["x"]],null]'


def test_a_surrogate_in_a_condition_still_has_a_key() -> None:
    assert len(rule_key(rule({"resource.a": "\ud800"}))) == 16


def test_condition_key_is_none_without_a_condition_and_type_strict_with_one() -> None:
    assert condition_key(None) is None
    assert condition_key({"context.x": True}) != condition_key({"context.x": 1})
    assert condition_key({"context.x": 1.0}) == condition_key({"context.x": 1}) == '{"context.x":1}'


def test_a_rule_stays_frozen_and_slotted() -> None:
    built = rule()
    with pytest.raises(AttributeError):
        built.resource = "other"  # type: ignore[misc]
    assert not hasattr(built, "__dict__")
    assert rule() != "doc read"


def test_add_rule_and_remove_rule_tell_true_from_1() -> None:
    # The defect: with Python's ==, adding the rule on 1 beside the rule on true
    # "changed nothing", and removing the rule on 1 removed the rule on true.
    from sync.policy.edits import AddRule, RemoveRule, apply_edit

    on_true, on_one = rule({"context.x": True}), rule({"context.x": 1})
    policy = Policy("t", {"doc": ("read",)}, {"r": Role("r", "r", grants=(on_true,))})
    apply_edit(policy, AddRule("role:r", Effect.GRANT, on_one), NOW)
    assert [g.when for g in policy.roles["r"].grants] == [{"context.x": True}, {"context.x": 1}]
    apply_edit(policy, RemoveRule("role:r", Effect.GRANT, rule({"context.x": 1.0})), NOW)
    assert [g.when for g in policy.roles["r"].grants] == [{"context.x": True}]
    apply_edit(policy, AddRule("role:r", Effect.GRANT, rule({"context.x": True})), NOW)
    assert policy.roles["r"].grants == (on_true,)


# --- assignments and users ---------------------------------------------------------------


def test_an_ordinary_assignment_counts_until_its_expiry() -> None:
    assignment = Assignment.build("r", "2026-11-22T10:00:00Z")
    assert assignment.active_at(NOW)
    assert not assignment.active_at(parse_instant("2026-11-22T10:00:00Z"))
    assert not assignment.eligible_at(NOW)


def test_an_eligible_entry_never_counts_by_itself() -> None:
    assert not Assignment.build("r", eligible=8).active_at(NOW)
    assert not Assignment.build("r", "2027-01-01T00:00:00Z", 8).active_at(NOW)


def test_an_eligibility_with_expires_ends_then() -> None:
    lasting = Assignment.build("r", eligible=8)
    ending = Assignment.build("r", "2026-11-22T10:00:00Z", 8)
    assert lasting.eligible_at(NOW) and lasting.eligible_at(parse_instant("2100-01-01T00:00:00Z"))
    assert ending.eligible_at(NOW)
    assert not ending.eligible_at(parse_instant("2026-11-22T10:00:00Z"))


def test_build_keeps_role_expires_and_instant_first_and_eligible_last() -> None:
    built = Assignment.build("r", "2026-11-22T10:00:00Z", 8)
    assert (built.role_id, built.expires, built.eligible) == ("r", "2026-11-22T10:00:00Z", 8)
    assert built.expires_at == parse_instant("2026-11-22T10:00:00Z")
    assert Assignment("r") == Assignment.build("r")
    assert Assignment.build("r", eligible=8) != Assignment.build("r")


@pytest.mark.parametrize("hours", [0, 721, -1, True, False, 8.0, 7.5, "8"])
def test_build_refuses_max_hours_that_are_not_an_integer_from_1_to_720(hours: Any) -> None:
    with pytest.raises(ValueError, match="max_hours must be an integer from 1 to 720"):
        Assignment.build("r", eligible=hours)


@pytest.mark.parametrize("hours", [1, 8, 720])
def test_build_accepts_max_hours_from_1_to_720(hours: int) -> None:
    assert Assignment.build("r", eligible=hours).eligible == hours


def test_a_user_is_active_unless_suspended_and_suspended_comes_last() -> None:
    assert User("u").suspended is False
    # Positional constructions elsewhere rely on the order of the other fields.
    assert User("u", None, {}, (), (), (), True).suspended is True
