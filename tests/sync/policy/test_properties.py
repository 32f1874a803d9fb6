"""Property tests for the decision core, on random small policies.

A deliberately plain reference evaluator, written here from policy-format.md
alone (its own condition evaluator, role closure and instant comparison; no
sync code), reads the policy *document* and the request *document*. The
properties:

1. the compiled Engine agrees with the reference on `allowed`;
2. adding a deny never turns a denial into an allow;
3. adding a grant never turns an allow into a denial;
4. an Engine updated edit by edit (apply_edit + refresh) decides exactly like
   an Engine compiled afresh from the edited policy, and like the reference
   reading the exported document; a refused edit changes nothing;
5. a rule's identity (== and hash, `rule_key`) is equality of meaning: same
   resource, same set of actions, conditions equal as policy-format.md says
   values are equal (numbers by value, booleans apart), and an export/import
   round trip keeps every rule's key.

The policies hold suspended users and eligible entries (policy-format.md §
Additions), which the reference reads as the spec says: a suspended user is
denied everything, an eligible entry holds nothing.
"""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from fractions import Fraction
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync.policy.conditions import compile_condition, parse_condition
from sync.policy.constraints import violations
from sync.policy.document import PolicyInvalid, dump_policy, export_policy, parse_policy, parse_text
from sync.policy.edits import (
    AddInheritance,
    AddRule,
    AssignRole,
    CreateRole,
    CreateUser,
    DeleteRole,
    DeleteUser,
    DescribeRole,
    Edit,
    EditRefused,
    RemoveInheritance,
    RemoveRule,
    RenameRole,
    SetUserAttribute,
    UnassignRole,
    apply_edit,
)
from sync.policy.engine import Engine
from sync.policy.instant import parse_instant
from sync.policy.model import Assignment, Effect, Policy, Rule, rule_key
from sync.policy.request import parse_request

Doc = dict[str, Any]

NOW_TEXT = "2026-01-01T12:00:00Z"
NOW = parse_instant(NOW_TEXT)
LATER = parse_instant("2026-03-01T00:00:00Z")
FORMAT = "fleetgate.policy/1"

# --- the reference evaluator (policy-format.md, nothing else) ----------------------------

_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]+))?(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ref_instant(text: str) -> Fraction:
    """Seconds since the epoch, exactly (fractions of any length kept)."""
    match = _TIME.fullmatch(text)
    assert match is not None, text
    y, mo, d, h, mi, s = (int(match.group(i)) for i in range(1, 7))
    offset = timedelta(0)
    if match.group(8):
        offset = timedelta(hours=int(match.group(9)), minutes=int(match.group(10)))
        if match.group(8) == "-":
            offset = -offset
    moment = datetime(y, mo, d, h, mi, s, tzinfo=timezone(offset))
    whole = (moment - _EPOCH) // timedelta(seconds=1)
    digits = match.group(7) or ""
    return Fraction(whole) + (Fraction(int(digits), 10 ** len(digits)) if digits else 0)


def ref_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    assert isinstance(value, dict)
    return "object"


def ref_same(a: Any, b: Any) -> bool:
    """eq: same JSON type; lists element by element in order; objects key by key."""
    if ref_kind(a) != ref_kind(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(ref_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return set(a) == set(b) and all(ref_same(a[k], b[k]) for k in a)
    return bool(a == b)


def ref_compare(op: str, x: Any, y: Any) -> bool:
    if x is None or y is None:  # fail closed: missing (absent or null)
        return False
    if op == "eq":
        return ref_same(x, y)
    if op == "ne":
        return ref_kind(x) == ref_kind(y) and not ref_same(x, y)
    if op == "in":
        return isinstance(y, list) and any(ref_kind(e) == ref_kind(x) and ref_same(e, x) for e in y)
    if op == "not_in":
        return isinstance(y, list) and all(
            ref_kind(e) == ref_kind(x) and not ref_same(e, x) for e in y
        )
    if op == "contains":
        return isinstance(x, list) and any(ref_same(e, y) for e in x)
    if ref_kind(x) == ref_kind(y) == "number":
        a, b = Fraction(x), Fraction(y)
    elif ref_kind(x) == ref_kind(y) == "string":
        a, b = [ord(c) for c in x], [ord(c) for c in y]  # type: ignore[assignment]
    else:
        return False
    return {"gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b}[op]


class RefEnv:
    """What a condition can see: the request, and the user's own attributes."""

    def __init__(self, request: Doc, user: Doc) -> None:
        resource = request["resource"]
        self.user_id = request["user"]
        self.user_attrs = user.get("attributes") or {}
        self.resource_id = resource.get("id")
        self.resource_type = resource["type"]
        attrs = resource.get("attributes")
        self.resource_attrs = attrs if isinstance(attrs, dict) else {}
        context = request.get("context")
        self.context = context if isinstance(context, dict) else {}

    def read(self, path: str) -> Any:
        root, _, name = path.partition(".")
        if root == "user":
            return self.user_id if name == "id" else self.user_attrs.get(name)
        if root == "resource":
            if name == "id":
                return self.resource_id
            if name == "type":
                return self.resource_type
            return self.resource_attrs.get(name)
        assert root == "context"
        return self.context.get(name)

    def operand(self, value: Any) -> Any:
        if isinstance(value, str) and value.startswith("$"):
            return value[1:] if value.startswith("$$") else self.read(value[1:])
        return value


def ref_holds(condition: Doc, env: RefEnv) -> bool:
    for key, value in condition.items():
        if key == "any":
            held = any(ref_holds(c, env) for c in value)
        elif key == "all":
            held = all(ref_holds(c, env) for c in value)
        elif key == "not":
            held = not ref_holds(value, env)
        else:
            ((op, operand),) = value.items() if isinstance(value, dict) else (("eq", value),)
            held = ref_compare(op, env.read(key), env.operand(operand))
        if not held:
            return False
    return True


def ref_allowed(policy: Doc, request: Doc, now_text: str = NOW_TEXT) -> bool:
    types = policy["resource_types"]
    type_name, action = request["resource"]["type"], request["action"]
    if type_name == "*" or action == "*":
        return False
    if type_name not in types or action not in (types[type_name] or []):
        return False
    users = [u for u in policy.get("users") or [] if u["id"] == request["user"]]
    if not users:
        return False
    (user,) = users
    if user.get("suspended") is True:  # § Additions: whatever the rules
        return False
    context = request.get("context")
    time = context.get("time") if isinstance(context, dict) else None
    at = ref_instant(time if time is not None else now_text)
    roles = {r["name"]: r for r in policy.get("roles") or []}
    held: set[str] = set()
    stack = [
        a["role"]
        for a in user.get("roles") or []
        # An eligible entry holds nothing; only its activations (ordinary entries) do.
        if "eligible" not in a and (a.get("expires") is None or at < ref_instant(a["expires"]))
    ]
    while stack:
        name = stack.pop()
        if name not in held:
            held.add(name)
            stack.extend(roles[name].get("inherits") or [])
    owners = [user, *(roles[name] for name in held)]
    env = RefEnv(request, user)

    def applies(rule: Doc) -> bool:
        if rule["resource"] not in ("*", type_name):
            return False
        if "*" not in rule["actions"] and action not in rule["actions"]:
            return False
        when = rule.get("when")
        return when is None or ref_holds(when, env)

    if any(applies(r) for owner in owners for r in owner.get("denies") or []):
        return False
    return any(applies(r) for owner in owners for r in owner.get("grants") or [])


# --- strategies --------------------------------------------------------------------------

TYPES: dict[str, list[str]] = {"doc": ["read", "write"], "car": ["read", "drive"], "log": []}
ALL_ACTIONS = ["read", "write", "drive"]
PATHS = [
    "user.id",
    "user.region",
    "user.level",
    "user.tags",
    "resource.id",
    "resource.type",
    "resource.region",
    "resource.level",
    "resource.tags",
    "context.hour",
    "context.flag",
    "context.time",
]
ATTRIBUTE_KEYS = ["region", "level", "tags"]
OPERATORS = ["eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "contains"]
EXPIRIES = [
    "2026-01-01T12:00:00Z",
    "2026-01-01T14:00:00+02:00",
    "2026-01-01T12:00:00.000000001Z",
    "2026-01-01T11:59:59.999999999Z",
    "2026-06-01T00:00:00Z",
]
TIMES = [
    "2026-01-01T12:00:00Z",
    "2026-01-01T11:59:59.9999999999Z",
    "2026-01-01T13:00:00+01:00",
    "2026-01-01T12:00:00.5Z",
    "2025-12-31T00:00:00Z",
    "2026-06-01T00:00:00Z",
    "2026-05-31T20:00:00-04:00",
]

# A small vocabulary, common values repeated, so that equalities and references
# hit often; the rarer values pin code-point order and exact number comparison.
COMMON = [None, True, False, 0, 1, 1.0, 5, 2.5, "north", "south", "", "$x", "u0"]
RARE = ["N", "\u00e9", "\U0001f600", "1", "$user.id", -1, 9007199254740993, 9007199254740992.0]
scalars = st.sampled_from(COMMON * 3 + RARE)
SHAPES = ["scalar", "scalar", "scalar", "scalar", "list", "object", "nested"]
flat_lists = st.lists(scalars, max_size=3)
flat_objects = st.dictionaries(st.sampled_from(["k", "j"]), scalars, max_size=2)
nested = st.lists(
    st.lists(scalars, max_size=2) | st.dictionaries(st.just("k"), scalars), max_size=2
)


@st.composite
def json_value(draw: st.DrawFn) -> Any:
    """Any JSON value, mostly scalars; lists and objects are small."""
    shape = draw(st.sampled_from(SHAPES))
    if shape == "scalar":
        return draw(scalars)
    return draw({"list": flat_lists, "object": flat_objects, "nested": nested}[shape])


json_values = json_value()


def as_literal(value: Any) -> Any:
    """A value written as a condition literal: a leading `$` is escaped as `$$`."""
    if isinstance(value, str) and value.startswith("$"):
        return "$" + value
    return value


references = st.sampled_from(["$" + p for p in PATHS])
operands = st.one_of(json_values.map(as_literal), references, st.lists(scalars, max_size=4))
FORMS = ["operator", "operator", "operator", "literal", "reference"]
shorthand_literals = json_values.filter(lambda v: not isinstance(v, dict)).map(as_literal)


@st.composite
def comparisons(draw: st.DrawFn) -> Any:
    """The value of one attribute entry: `{op: operand}`, a literal, or a reference."""
    form = draw(st.sampled_from(FORMS))
    if form == "operator":
        return {draw(st.sampled_from(OPERATORS)): draw(operands)}
    return draw(shorthand_literals if form == "literal" else references)


leaves = st.dictionaries(st.sampled_from(PATHS), comparisons(), min_size=1, max_size=2)
conditions = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda parts: {"any": parts}),
        st.lists(inner, max_size=3).map(lambda parts: {"all": parts}),
        inner.map(lambda part: {"not": part}),
        st.tuples(inner, leaves).map(lambda pair: {**pair[1], **pair[0]}),
    ),
    max_leaves=4,
)


RESOURCES = [*TYPES, "*"]
ACTION_LISTS = {
    resource: st.lists(
        st.sampled_from([*(ALL_ACTIONS if resource == "*" else TYPES[resource]), "*"]),
        min_size=1,
        max_size=3,
        unique=True,
    )
    for resource in RESOURCES
}


@st.composite
def rules(draw: st.DrawFn, *, conditional: int = 5) -> Doc:
    """A rule valid for TYPES; it has a `when` in `conditional` cases out of ten."""
    resource = draw(st.sampled_from(RESOURCES))
    rule: Doc = {"resource": resource, "actions": draw(ACTION_LISTS[resource])}
    if draw(st.integers(0, 9)) < conditional:
        rule["when"] = draw(conditions)
    return rule


attributes = st.dictionaries(st.sampled_from(ATTRIBUTE_KEYS), json_values, max_size=3)
# Strategies are built once: building them inside a composite costs validation on every draw.
# Denies are mostly conditional: an unconditional deny hides everything else its pair has.
some_grants = st.lists(rules(), max_size=3)
some_denies = st.lists(rules(conditional=9), max_size=1)
one_grant_or_none = st.lists(rules(), max_size=1)
one_deny_or_none = st.lists(rules(conditional=9), max_size=1)
ROLE_NAMES = [f"r{i}" for i in range(4)]
PARENTS = [st.just([])] + [
    st.lists(st.sampled_from(ROLE_NAMES[:i]), unique=True, max_size=2) for i in range(1, 4)
]


def _entry(role: str, expires: str | None, max_hours: int | None) -> Doc:
    entry: Doc = {"role": role}
    if max_hours is not None:
        entry["eligible"] = {"max_hours": max_hours}
    if expires is not None:
        entry["expires"] = expires
    return entry


# One entry in four is eligible: the engine must ignore it and the reference does.
assignments = st.lists(
    st.builds(
        _entry,
        st.sampled_from(ROLE_NAMES),
        st.none() | st.sampled_from(EXPIRIES),
        st.sampled_from([None, None, None, 1, 720]),
    ),
    min_size=1,
    max_size=3,
)
suspensions = st.sampled_from([None, None, None, None, False, True])


def _one_eligible_per_role(entries: list[Doc]) -> list[Doc]:
    """policy-format.md: a role may be eligible at most once per user."""
    seen: set[str] = set()
    kept: list[Doc] = []
    for entry in entries:
        if "eligible" in entry:
            if entry["role"] in seen:
                continue
            seen.add(entry["role"])
        kept.append(entry)
    return kept


@st.composite
def policies(draw: st.DrawFn, *, constraint: bool = False) -> Doc:
    count = draw(st.integers(1, len(ROLE_NAMES)))
    roles: list[Doc] = []
    for i, name in enumerate(ROLE_NAMES[:count]):
        # Inheriting only earlier roles makes a DAG; the document order is shuffled below.
        roles.append(
            {
                "name": name,
                "inherits": draw(PARENTS[i]),
                "grants": draw(some_grants),
                "denies": draw(some_denies),
            }
        )
    roles = draw(st.permutations(roles))
    users: list[Doc] = []
    for user_id in ["u0", "u1", "u2"]:
        held = [a for a in draw(assignments) if int(a["role"][1:]) < count]
        user: Doc = {
            "id": user_id,
            "attributes": draw(attributes),
            "roles": _one_eligible_per_role(held),
            "grants": draw(one_grant_or_none),
            "denies": draw(one_deny_or_none),
        }
        suspended = draw(suspensions)
        if suspended is not None:
            user["suspended"] = suspended
        users.append(user)
    document: Doc = {
        "format": FORMAT,
        "tenant": "t",
        "resource_types": copy.deepcopy(TYPES),
        "roles": roles,
        "users": users,
    }
    if constraint and count >= 2 and draw(st.booleans()):
        document["constraints"] = [{"name": "sod", "exclusive": ["r0", "r1"]}]
    return document


PAIRS = [(t, a) for t, actions in TYPES.items() for a in actions]
GRID_USERS = ("u0", "u1", "u2", "ghost")
ODD_PAIRS = [
    ("*", "read"),
    ("doc", "*"),
    ("*", "*"),
    ("boat", "read"),
    ("car", "write"),
    ("log", "read"),
]
resources = st.tuples(attributes, st.none() | st.sampled_from(["d1", "u0", "north", 5]))
contexts = st.tuples(
    st.dictionaries(st.sampled_from(["hour", "flag"]), json_values, max_size=2),
    st.none() | st.sampled_from(TIMES),
)


@st.composite
def request_grids(draw: st.DrawFn, *, odd: bool = True, most: int = 3) -> list[Doc]:
    """Every user (and an unknown one) times every pair times a few resources and contexts.

    A grid costs a handful of draws and gives hundreds of decisions: far more
    checking per generated policy than random requests would.
    """
    drawn_resources = draw(st.lists(resources, min_size=1, max_size=most))
    drawn_contexts = draw(st.lists(contexts, min_size=1, max_size=2))
    grid: list[Doc] = []
    for user in GRID_USERS:
        for type_name, action in PAIRS + (ODD_PAIRS if odd else []):
            for attrs, resource_id in drawn_resources:
                for context, time in drawn_contexts:
                    resource: Doc = {"type": type_name, "attributes": attrs}
                    if resource_id is not None:
                        resource["id"] = resource_id
                    timed = context if time is None else {**context, "time": time}
                    grid.append(
                        {"user": user, "action": action, "resource": resource, "context": timed}
                    )
    return grid


def compile_engine(document: Doc) -> Engine:
    return Engine(parse_policy(copy.deepcopy(document), now=NOW))


FAST = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- 1. the engine agrees with the reference ---------------------------------------------


@FAST
@given(document=policies(), asked=request_grids())
def test_engine_agrees_with_the_reference_evaluator(document: Doc, asked: list[Doc]) -> None:
    engine = compile_engine(document)
    for request in asked:
        decision = engine.decide(parse_request(request), NOW)
        assert decision.allowed is ref_allowed(document, request), (request, decision.reason)


ABSENT = object()


@st.composite
def comparison_cases(draw: st.DrawFn) -> tuple[str, Any, Any]:
    """(operator, operand, attribute value or ABSENT)."""
    op = draw(st.sampled_from(OPERATORS))
    operand = draw(json_values)
    present = draw(st.sampled_from([True] * 9 + [False]))
    return op, operand, draw(json_values) if present else ABSENT


@FAST
@given(st.lists(comparison_cases(), min_size=5, max_size=30))
def test_every_comparison_agrees_with_the_reference(
    cases: list[tuple[str, Any, Any]],
) -> None:
    # One comparison at a time, as a literal (the compiled closure specialised for
    # the literal's type) and through a reference (the generic path).
    for op, operand, value in cases:
        attrs = {} if value is ABSENT else {"v": value}
        request = parse_request(
            {
                "user": "u",
                "action": "read",
                "resource": {"type": "doc", "attributes": attrs},
                "context": {"v": operand},
            }
        )
        want = ref_compare(op, None if value is ABSENT else value, operand)
        by_literal = compile_condition(parse_condition({"resource.v": {op: as_literal(operand)}}))
        by_reference = compile_condition(parse_condition({"resource.v": {op: "$context.v"}}))
        assert by_literal(request, {}) is want, (op, operand, value)
        assert by_reference(request, {}) is want, (op, operand, value)


dense_attributes = st.fixed_dictionaries({k: json_values for k in ATTRIBUTE_KEYS})
dense_contexts = st.fixed_dictionaries(
    {"hour": json_values, "flag": json_values}, optional={"time": st.sampled_from(TIMES)}
)


@FAST
@given(
    condition=conditions,
    user_attrs=dense_attributes,
    asked=st.lists(
        st.tuples(dense_attributes, st.none() | st.sampled_from(["d1", "u0", 5]), dense_contexts),
        min_size=4,
        max_size=12,
    ),
)
def test_compiled_conditions_agree_with_the_reference(
    condition: Doc, user_attrs: Doc, asked: list[tuple[Doc, Any, Doc]]
) -> None:
    # The decision-level property reaches a condition only through a rule that
    # covers the request; this one checks each condition, and its tree's own
    # evaluation, on many inputs where every attribute is present.
    tree = parse_condition(condition)
    compiled = compile_condition(tree)
    for attrs, resource_id, context in asked:
        resource: Doc = {"type": "doc", "attributes": attrs}
        if resource_id is not None:
            resource["id"] = resource_id
        document = {"user": "u0", "action": "read", "resource": resource, "context": context}
        want = ref_holds(condition, RefEnv(document, {"attributes": user_attrs}))
        request = parse_request(document)
        assert compiled(request, user_attrs) is want, document
        assert tree.evaluate(request, user_attrs) is want, document


# --- 2 and 3. monotonicity -----------------------------------------------------------------


def _add_rule(document: Doc, effect: str, rule: Doc, owner: int) -> Doc:
    changed = copy.deepcopy(document)
    owners = [*changed["roles"], *changed["users"]]
    owners[owner % len(owners)].setdefault(effect, []).append(rule)
    return changed


@FAST
@given(
    document=policies(),
    deny=rules(),
    owner=st.integers(0, 10),
    asked=request_grids(most=2),
)
def test_adding_a_deny_never_turns_a_denial_into_an_allow(
    document: Doc, deny: Doc, owner: int, asked: list[Doc]
) -> None:
    before = compile_engine(document)
    after = compile_engine(_add_rule(document, "denies", deny, owner))
    for request in asked:
        parsed = parse_request(request)
        if after.decide(parsed, NOW).allowed:
            assert before.decide(parsed, NOW).allowed, request


@FAST
@given(
    document=policies(),
    grant=rules(),
    owner=st.integers(0, 10),
    asked=request_grids(most=2),
)
def test_adding_a_grant_never_turns_an_allow_into_a_denial(
    document: Doc, grant: Doc, owner: int, asked: list[Doc]
) -> None:
    before = compile_engine(document)
    after = compile_engine(_add_rule(document, "grants", grant, owner))
    for request in asked:
        parsed = parse_request(request)
        if before.decide(parsed, NOW).allowed:
            assert after.decide(parsed, NOW).allowed, request


# --- 4. incremental update agrees with recompilation -------------------------------------


def _rule_of(document: Doc) -> Rule:
    return Rule.build(document["resource"], tuple(document["actions"]), document.get("when"))


EDIT_KINDS = [
    "add_inheritance",
    "add_inheritance",
    "remove_inheritance",
    "create_role",
    "rename_role",
    "describe_role",
    "delete_role",
    "add_rule",
    "add_rule",
    "remove_rule",
    "assign_role",
    "assign_role",
    "unassign_role",
    "create_user",
    "delete_user",
    "set_user_attribute",
]


def pick(data: st.DataObject, good: list[Any], bad: Any) -> Any:
    """One of `good` seven times in eight (or when there is no good one, `bad`)."""
    if not good or data.draw(st.sampled_from([False] * 7 + [True])):
        return bad
    return data.draw(st.sampled_from(good))


def draw_edit(data: st.DataObject, engine: Engine, step: int) -> Edit:
    """An edit of any kind, mostly applicable, sometimes one that must be refused."""
    policy = engine.policy
    role_ids = sorted(policy.roles)
    user_ids = sorted(policy.users)
    names = [r.name for r in policy.roles.values()]
    role = pick(data, role_ids, "missing-role")
    user = pick(data, user_ids, "ghost")
    kind = data.draw(st.sampled_from(EDIT_KINDS))
    if kind == "create_role":
        inherits = data.draw(st.lists(st.sampled_from([*role_ids, "missing-role"]), max_size=2))
        name = pick(data, [f"new{step}"], data.draw(st.sampled_from([f"new{step}", *names])))
        new_id = pick(data, [f"id-new{step}"], role)
        return CreateRole(new_id, name, "", tuple(dict.fromkeys(inherits)))
    if kind == "rename_role":
        return RenameRole(role, pick(data, [f"renamed{step}"], pick(data, names, "")))
    if kind == "describe_role":
        return DescribeRole(role, f"description {step}")
    if kind == "delete_role":
        return DeleteRole(role)
    if kind == "add_inheritance":
        # Another role, or the role itself (a cycle of one) now and then.
        return AddInheritance(role, pick(data, [r for r in role_ids if r != role], role))
    if kind == "remove_inheritance":
        held = list(policy.roles[role].inherits) if role in policy.roles else []
        return RemoveInheritance(role, pick(data, held, pick(data, role_ids, "missing-role")))
    effect = data.draw(st.sampled_from([Effect.GRANT, Effect.DENY]))
    owner = data.draw(st.sampled_from([f"role:{role}", f"user:{user}"]))
    if kind == "add_rule":
        return AddRule(owner, effect, _rule_of(data.draw(rules())))
    if kind == "remove_rule":
        owner_kind, _, owner_id = owner.partition(":")
        holder = (policy.roles if owner_kind == "role" else policy.users).get(owner_id)
        present = list(holder.rules(effect)) if holder is not None else []
        return RemoveRule(owner, effect, pick(data, present, _rule_of(data.draw(rules()))))
    if kind == "assign_role":
        return AssignRole(user, role, data.draw(st.none() | st.sampled_from(EXPIRIES)))
    if kind == "unassign_role":
        return UnassignRole(user, role)
    if kind == "create_user":
        return CreateUser(pick(data, [f"v{step}"], user), None, data.draw(attributes))
    if kind == "delete_user":
        return DeleteUser(user)
    key = data.draw(st.sampled_from(ATTRIBUTE_KEYS))
    return SetUserAttribute(user, key, data.draw(json_values))


def _check_current(engine: Engine, asked: list[Doc]) -> None:
    fresh = Engine(engine.policy.copy())
    document = export_policy(engine.policy)
    # Users created by edits are asked what u0 is asked.
    created = [u for u in engine.policy.users if u not in GRID_USERS]
    asked = asked + [{**r, "user": u} for r in asked if r["user"] == "u0" for u in created]
    for request in asked:
        parsed = parse_request(request)
        got = engine.decide(parsed, NOW)
        want = fresh.decide(parsed, NOW)
        assert got.to_dict() == want.to_dict(), request
        assert got.allowed is ref_allowed(document, request), (request, got.reason)
    for user_id in engine.policy.users:
        for at in (NOW, LATER):
            got_permissions = [str(p) for p in engine.effective_permissions(user_id, at)]
            want_permissions = [str(p) for p in fresh.effective_permissions(user_id, at)]
            assert sorted(got_permissions) == sorted(want_permissions), user_id
    for type_name, action in PAIRS:
        # Who comes first is not specified; who is in, and by which grant, is.
        got_users = engine.who_can(action, type_name, "d1", {}, now=NOW)
        want_users = fresh.who_can(action, type_name, "d1", {}, now=NOW)
        assert sorted((u, d.reason) for u, d in got_users) == sorted(
            (u, d.reason) for u, d in want_users
        )
        assert not any(engine.policy.users[u].suspended for u, _ in got_users)
    for role_id in engine.policy.roles:
        assert engine.holders({role_id}) == fresh.holders({role_id}), role_id


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    document=policies(constraint=True),
    asked=request_grids(odd=False, most=2),
    data=st.data(),
)
def test_incremental_update_agrees_with_recompilation(
    document: Doc, asked: list[Doc], data: st.DataObject
) -> None:
    try:
        policy = parse_policy(copy.deepcopy(document), now=NOW)
    except PolicyInvalid as error:
        assert all(p.path.startswith("users[") for p in error.problems), error.problems
        document.pop("constraints")
        policy = parse_policy(copy.deepcopy(document), now=NOW)
    engine = Engine(policy)
    for step in range(data.draw(st.integers(1, 8))):
        for request in asked:  # fill whatever the engine caches before it can go stale
            engine.decide(parse_request(request), NOW)
        if policy.users and data.draw(st.integers(0, 3)) == 0:
            engine.refresh(users={change_user(data, policy)})
            _check_current(engine, asked)
            continue
        edit = draw_edit(data, engine, step)
        before = export_policy(policy)
        try:
            touched = apply_edit(policy, edit, NOW)
        except EditRefused:
            assert export_policy(policy) == before, edit
        else:
            engine.refresh(
                roles=touched.roles, users=touched.users, inheritance=touched.inheritance
            )
        _check_current(engine, asked)


def change_user(data: st.DataObject, policy: Policy) -> str:
    """Suspend or resume a user, add or drop an eligible entry, or add an ordinary
    entry (an activation, when it expires), as a store replaces a user entity;
    returns the user's id, for `refresh(users=...)`.

    An entry that would break a constraint is not added (edits refuse it).
    """
    user_id = data.draw(st.sampled_from(sorted(policy.users)))
    user = policy.users[user_id]
    kind = data.draw(st.sampled_from(["suspend", "eligible", "activate"]))
    if kind == "suspend" or not policy.roles:
        policy.users[user_id] = replace(user, suspended=not user.suspended)
        return user_id
    role_id = data.draw(st.sampled_from(sorted(policy.roles)))
    expires = data.draw(st.none() | st.sampled_from(EXPIRIES))
    if kind == "eligible":
        others = tuple(
            a for a in user.roles if not (a.role_id == role_id and a.eligible is not None)
        )
        if len(others) == len(user.roles):
            hours = data.draw(st.sampled_from([1, 8, 720]))
            others += (Assignment.build(role_id, expires, hours),)
        policy.users[user_id] = replace(user, roles=others)
        return user_id
    policy.users[user_id] = replace(user, roles=(*user.roles, Assignment.build(role_id, expires)))
    if violations(policy, NOW, [user_id]):
        policy.users[user_id] = user
    return user_id


# --- 5. rule identity ---------------------------------------------------------------------


def mutate(data: st.DataObject, value: Any) -> Any:
    """`value` rewritten at random: keys reordered (same meaning), integral numbers
    as int or float (same meaning), booleans as 0/1 and lists reversed (maybe not)."""
    if isinstance(value, bool):
        return int(value) if data.draw(st.integers(0, 3)) == 0 else value
    if isinstance(value, int) and abs(value) < 2**53 and data.draw(st.booleans()):
        return float(value)
    if isinstance(value, float) and value.is_integer() and data.draw(st.booleans()):
        return int(value)
    if isinstance(value, list):
        items = [mutate(data, item) for item in value]
        return items[::-1] if data.draw(st.integers(0, 3)) == 0 else items
    if isinstance(value, dict):
        keys = data.draw(st.permutations(list(value)))
        return {key: mutate(data, value[key]) for key in keys}
    return value


@FAST
@given(first=rules(conditional=9), data=st.data())
def test_rules_are_equal_exactly_when_they_mean_the_same(first: Doc, data: st.DataObject) -> None:
    actions = first["actions"]
    second: Doc = {
        "resource": first["resource"],
        "actions": data.draw(
            st.permutations(actions + data.draw(st.lists(st.sampled_from(actions))))
        ),
    }
    if "when" in first:
        second["when"] = mutate(data, first["when"])
    a, b = _rule_of(first), _rule_of(second)
    same = "when" not in first or ref_same(first["when"], second["when"])
    assert (a == b) is same, (first, second)
    assert (rule_key(a) == rule_key(b)) is same
    if same:
        assert hash(a) == hash(b)
        assert len({a, b}) == 1


@FAST
@given(document=policies())
def test_an_export_and_import_round_trip_keeps_every_rule_key(document: Doc) -> None:
    policy = parse_policy(copy.deepcopy(document), now=NOW)
    again = parse_policy(parse_text(dump_policy(policy)), now=NOW)
    for before, after in zip(
        [*policy.roles.values(), *policy.users.values()],
        [*again.roles.values(), *again.users.values()],
        strict=True,
    ):
        for effect in (Effect.GRANT, Effect.DENY):
            assert [rule_key(r) for r in before.rules(effect)] == [
                rule_key(r) for r in after.rules(effect)
            ]


# --- the reference itself, pinned to a few spec sentences --------------------------------


def test_reference_follows_the_spec_on_its_own_examples() -> None:
    # If the reference drifted, the properties above would prove nothing.
    env = RefEnv(
        {"user": "u", "action": "read", "resource": {"type": "doc", "attributes": {"n": 5}}},
        {"attributes": {"region": "north"}},
    )
    assert ref_holds({}, env)
    assert not ref_holds({"any": []}, env)
    assert ref_holds({"all": []}, env)
    assert ref_holds({"resource.n": 5.0}, env)
    assert not ref_holds({"resource.n": {"ne": "x"}}, env)
    assert ref_holds({"not": {"resource.missing": {"ne": 1}}}, env)
    assert not ref_holds({"resource.n": {"in": [True, "5"]}}, env)
    assert not ref_holds({"resource.n": {"not_in": ["x", 6]}}, env)
    assert ref_holds({"user.region": "$$user.region"}, env) is False
    assert ref_holds({"user.region": "north", "user.id": "u"}, env)
    assert ref_instant("2026-01-01T14:00:00+02:00") == ref_instant(NOW_TEXT)
    assert ref_instant("2026-01-01T11:59:59.9999999999Z") < ref_instant(NOW_TEXT)
    assert ref_same(5, 5.0) and not ref_same(True, 1) and not ref_same([1, 2], [2, 1])
    # § Additions: a suspended user gets nothing; an eligible entry holds nothing.
    granted: Doc = {
        "format": FORMAT,
        "tenant": "t",
        "resource_types": {"doc": ["read"]},
        "roles": [{"name": "r0", "grants": [{"resource": "doc", "actions": ["read"]}]}],
        "users": [
            {"id": "u0", "suspended": True, "grants": [{"resource": "*", "actions": ["*"]}]},
            {"id": "u1", "roles": [{"role": "r0", "eligible": {"max_hours": 1}}]},
            {"id": "u2", "roles": [{"role": "r0", "eligible": {"max_hours": 1}}, {"role": "r0"}]},
        ],
    }
    read = {"action": "read", "resource": {"type": "doc"}}
    assert [ref_allowed(granted, {**read, "user": u}) for u in ("u0", "u1", "u2")] == [
        False,
        False,
        True,
    ]


# --- an engine that loads its users as it decides decides as one compiled whole ----------


@FAST
@given(document=policies(), asked=request_grids())
def test_an_engine_loading_users_one_at_a_time_decides_as_the_whole_engine(
    document: Doc, asked: list[Doc]
) -> None:
    whole = compile_engine(document)
    policy = whole.policy
    loaded: list[str] = []

    def load_user(user_id: str) -> Any:
        loaded.append(user_id)
        return policy.users.get(user_id)

    bare = Policy(policy.tenant, policy.resource_types, policy.roles, {}, policy.constraints)
    lazy = Engine(bare, load_user=load_user)
    for request in asked:
        parsed = parse_request(request)
        assert lazy.decide(parsed, NOW) == whole.decide(parsed, NOW), request
    # Each user is loaded once, when first asked for; unknown ones each time.
    known = [u for u in loaded if u in policy.users]
    assert len(known) == len(set(known))
    assert set(bare.users) == set(known)
