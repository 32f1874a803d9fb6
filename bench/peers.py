"""Run a Fleetgate policy document and its requests through the two peer engines.

``CasbinPeer`` (pycasbin) and ``CedarPeer`` (cedarpy) each translate one policy document
(policy-format.md, format 1) once, at construction, into their engine's own terms, and
then decide requests with ``decide_batch(requests) -> list[bool]``. The benchmark times
them next to Fleetgate's engine on the same tenant and requests.

Both translations aim at the same decisions as policy-format.md; where an engine cannot
say something, the simplification is written at the place it is made, and the list is
repeated in ``SIMPLIFICATIONS`` so the benchmark report can print it.

Shared choices:

- A request whose resource type is unknown, whose action is not listed for its type,
  or either of which is ``"*"``, is denied by the adapter before the engine sees it
  (policy-format.md "Request and decision"): neither engine knows the type/action
  listing, and a rule on ``"*"`` or ``["*"]`` must not reach unlisted actions.
- Time-limited assignments are exact in both engines: a user holds a role through an
  assignment with ``expires`` while ``context.time`` is before it. Each user carries, per
  role reachable through such assignments, the latest expiry (the inheritance closure of
  the assigned role is computed once at translation); permanent assignments are ordinary
  role links. A request without ``context.time`` is decided at the current time.
- Malformed requests (policy-format.md) are not checked; the benchmark only feeds
  well-formed ones.

    python -m bench.peers --sample 2000    self-check on a small generated tenant
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

SIMPLIFICATIONS = [
    "both: requests with an unknown type, an unlisted action or '*' are denied by the "
    "adapter, before the engine",
    "cedar: resource attributes, resource id/type and request context travel in the Cedar "
    "context record, not as resource entities",
    "cedar: numbers must be integers (Cedar Long); floats and nulls in attributes are "
    "dropped, i.e. treated as missing",
    "cedar: ordering comparisons (gt/gte/lt/lte) against a string literal become false; "
    "against a reference they hold for numbers only",
    "cedar: ne/not_in of two values of different JSON types is true (policy-format.md: "
    "false); lists compare as sets",
    "cedar: an operator applied to a value of the wrong type (contains on a non-list, an "
    "ordering on a string reference) is an evaluation error, which skips the whole "
    "policy; policy-format.md makes only that comparison false (which differs under not)",
]

CHUNK = 1_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


# --------------------------------------------------------------------------------------
# Shared reading of the policy document
# --------------------------------------------------------------------------------------


def instant_us(text: str) -> int:
    """Return an RFC 3339 date-time as whole microseconds since the epoch (exact order).

    Raises:
        ValueError: if ``text`` is not an ISO 8601 / RFC 3339 date-time.
    """
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MICROSECOND


def _now_us() -> int:
    return (datetime.now(UTC) - _EPOCH) // _MICROSECOND


def _request_time_us(request: dict[str, Any]) -> int:
    context = request.get("context") or {}
    stamp = context.get("time")
    return instant_us(stamp) if isinstance(stamp, str) else _now_us()


def role_closures(policy: dict[str, Any]) -> dict[str, frozenset[str]]:
    """Map each role name to every role held by holding it, itself included.

    Raises:
        ValueError: on an unknown role in ``inherits`` or an inheritance cycle.
    """
    inherits = {r["name"]: list(r.get("inherits") or []) for r in policy.get("roles") or []}
    closure: dict[str, frozenset[str]] = {}
    visiting: set[str] = set()

    def visit(name: str) -> frozenset[str]:
        if name in closure:
            return closure[name]
        if name not in inherits:
            raise ValueError(f"unknown role {name!r}")
        if name in visiting:
            raise ValueError(f"inheritance cycle through {name!r}")
        visiting.add(name)
        held = frozenset({name}).union(*(visit(p) for p in inherits[name]))
        visiting.discard(name)
        closure[name] = held
        return held

    for name in inherits:
        visit(name)
    return closure


def user_leases(
    user: dict[str, Any], closures: dict[str, frozenset[str]]
) -> tuple[list[str], dict[str, int]]:
    """Split a user's assignments into permanent roles and leased roles.

    Returns the names of the roles assigned without ``expires`` and, for every role held
    only through assignments with ``expires``, the latest such expiry in microseconds.
    """
    permanent = [a["role"] for a in user.get("roles") or [] if "expires" not in a]
    always = frozenset().union(*(closures[r] for r in permanent))
    leases: dict[str, int] = {}
    for assignment in user.get("roles") or []:
        if "expires" not in assignment:
            continue
        until = instant_us(assignment["expires"])
        for role in closures[assignment["role"]] - always:
            leases[role] = max(until, leases.get(role, until))
    return permanent, leases


def listed_actions(policy: dict[str, Any]) -> dict[str, frozenset[str]]:
    """Map each resource type to its listed actions, ``"*"`` never among them."""
    return {t: frozenset(a) - {"*"} for t, a in (policy.get("resource_types") or {}).items()}


def _rules(policy: dict[str, Any]) -> Iterable[tuple[str, str, bool, dict[str, Any]]]:
    """Yield (kind, name, is_deny, rule) for every role rule and every direct user rule."""
    for role in policy.get("roles") or []:
        for deny, key in ((False, "grants"), (True, "denies")):
            for rule in role.get(key) or []:
                yield "role", role["name"], deny, rule
    for user in policy.get("users") or []:
        for deny, key in ((False, "grants"), (True, "denies")):
            for rule in user.get(key) or []:
                yield "user", user["id"], deny, rule


_OPERATORS = frozenset({"eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "contains"})


def _entry(value: Any) -> tuple[str, Any, bool]:
    """Split a condition entry into (operator, operand, operand_is_reference).

    A ``$path`` operand is a reference; ``$$x`` is the literal ``$x`` (policy-format.md).
    """
    operator, operand = "eq", value
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _OPERATORS:
        operator, operand = next(iter(value.items()))
    if isinstance(operand, str) and operand.startswith("$"):
        if operand.startswith("$$"):
            return operator, operand[1:], False
        return operator, operand[1:], True
    return operator, operand, False


# --------------------------------------------------------------------------------------
# pycasbin
# --------------------------------------------------------------------------------------

CASBIN_MODEL = """
[request_definition]
r = sub, obj, act, req

[policy_definition]
p = sub, obj, act, cond, eft

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))

[matchers]
m = (p.obj == "*" || p.obj == r.obj) && (p.act == "*" || p.act == r.act) \
&& (g(r.sub, p.sub) || leased(r.sub, p.sub, r.req)) && holds(p.cond, r.req)
"""


class _CasbinRequest:
    """What the matcher's custom functions see of one request."""

    __slots__ = ("ctx", "now", "res", "rid", "rtype", "user", "user_id")

    def __init__(self, request: dict[str, Any], user: dict[str, Any] | None) -> None:
        resource = request["resource"]
        self.user_id: str = request["user"]
        self.user: dict[str, Any] = (user or {}).get("attributes") or {}
        self.rtype: str = resource["type"]
        self.rid: Any = resource.get("id")
        self.res: dict[str, Any] = resource.get("attributes") or {}
        self.ctx: dict[str, Any] = request.get("context") or {}
        self.now = _request_time_us(request)

    def __str__(self) -> str:
        # casbin formats every request argument into a log line, enabled or not; a
        # short string keeps that cost at what a plain string argument would cost.
        return self.user_id


_Getter = Callable[[_CasbinRequest], Any]
_Test = Callable[[_CasbinRequest], bool]


def _casbin_getter(path: str) -> _Getter:
    root, _, name = path.partition(".")
    if root == "user":
        if name == "id":
            return lambda r: r.user_id
        return lambda r: r.user.get(name)
    if root == "resource":
        if name == "id":
            return lambda r: r.rid
        if name == "type":
            return lambda r: r.rtype
        return lambda r: r.res.get(name)
    if root == "context":
        return lambda r: r.ctx.get(name)
    raise ValueError(f"bad attribute path {path!r}")


def _kind(value: Any) -> str | None:
    """JSON type of a value per policy-format.md (booleans are not numbers)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return None


def _json_equal(a: Any, b: Any) -> bool:
    kind = _kind(a)
    if kind is None or kind != _kind(b):
        return False
    if kind == "list":
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if kind == "object":
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _compare(operator: str, left: Any, right: Any) -> bool:
    """Apply one operator of policy-format.md; a missing side makes it false."""
    if left is None or right is None:
        return False
    if operator == "eq":
        return _json_equal(left, right)
    if operator == "ne":
        return _kind(left) == _kind(right) and not _json_equal(left, right)
    if operator == "in":
        return isinstance(right, list) and any(_json_equal(e, left) for e in right)
    if operator == "not_in":
        kind = _kind(left)
        return isinstance(right, list) and all(
            _kind(e) == kind and not _json_equal(e, left) for e in right
        )
    if operator == "contains":
        return isinstance(left, list) and any(_json_equal(e, right) for e in left)
    kinds = (_kind(left), _kind(right))
    if kinds not in (("number", "number"), ("string", "string")):
        return False
    if operator == "gt":
        return bool(left > right)
    if operator == "gte":
        return bool(left >= right)
    if operator == "lt":
        return bool(left < right)
    return bool(left <= right)


def _all_of(tests: list[_Test]) -> _Test:
    def test(request: _CasbinRequest) -> bool:
        return all(t(request) for t in tests)

    return test


def _any_of(tests: list[_Test]) -> _Test:
    def test(request: _CasbinRequest) -> bool:
        return any(t(request) for t in tests)

    return test


def _negation(inner: _Test) -> _Test:
    def test(request: _CasbinRequest) -> bool:
        return not inner(request)

    return test


def _comparison(operator: str, left: _Getter, right: _Getter) -> _Test:
    def test(request: _CasbinRequest) -> bool:
        return _compare(operator, left(request), right(request))

    return test


def _constant(value: Any) -> _Getter:
    def get(_request: _CasbinRequest) -> Any:
        return value

    return get


def compile_condition(condition: dict[str, Any]) -> _Test:
    """Compile a ``when`` condition into a test of a request, per policy-format.md.

    Raises:
        ValueError: on an attribute path that is not ``user.``/``resource.``/``context.``.
    """
    tests: list[_Test] = []
    for key, value in condition.items():
        if key == "any":
            tests.append(_any_of([compile_condition(c) for c in value]))
        elif key == "all":
            tests.append(_all_of([compile_condition(c) for c in value]))
        elif key == "not":
            tests.append(_negation(compile_condition(value)))
        else:
            operator, operand, is_reference = _entry(value)
            right = _casbin_getter(operand) if is_reference else _constant(operand)
            tests.append(_comparison(operator, _casbin_getter(key), right))
    return tests[0] if len(tests) == 1 else _all_of(tests)


class CasbinPeer:
    """pycasbin Enforcer holding one policy document.

    Model: RBAC with ``g`` for user→role and role→role links, a policy line per rule and
    action (``p, sub, obj, act, cond, eft``) and deny-override effect
    ``some(where (p.eft == allow)) && !some(where (p.eft == deny))``. The matcher calls
    two registered functions: ``leased`` (roles held through an unexpired time-limited
    assignment) and ``holds`` (the rule's ``when`` condition, compiled from the
    document). Subjects are ``user:<id>`` and ``role:<name>`` so ids cannot collide.
    """

    def __init__(self, policy: dict[str, Any]) -> None:
        """Translate ``policy`` into an Enforcer.

        Raises:
            ValueError: on an unknown role, an inheritance cycle or a bad attribute path.
        """
        import casbin

        self.listed = listed_actions(policy)
        closures = role_closures(policy)
        self.users: dict[str, dict[str, Any]] = {u["id"]: u for u in policy.get("users") or []}
        self.conditions: dict[str, _Test] = {}
        self.leases: dict[str, dict[str, int]] = {}

        links: list[list[str]] = []
        for role in policy.get("roles") or []:
            links += [[f"role:{role['name']}", f"role:{p}"] for p in role.get("inherits") or []]
        for user in self.users.values():
            permanent, leases = user_leases(user, closures)
            links += [[f"user:{user['id']}", f"role:{r}"] for r in dict.fromkeys(permanent)]
            if leases:
                self.leases[f"user:{user['id']}"] = {f"role:{r}": t for r, t in leases.items()}

        lines: list[list[str]] = []
        for kind, name, deny, rule in _rules(policy):
            condition_id = ""
            if rule.get("when"):
                condition_id = f"c{len(self.conditions)}"
                self.conditions[condition_id] = compile_condition(rule["when"])
            for action in dict.fromkeys(rule["actions"]):
                lines.append(
                    [
                        f"{kind}:{name}",
                        rule["resource"],
                        action,
                        condition_id,
                        "deny" if deny else "allow",
                    ]
                )

        model = casbin.Enforcer.new_model(text=CASBIN_MODEL)
        self.enforcer = casbin.Enforcer(model)
        self.enforcer.add_function("leased", self._leased)
        self.enforcer.add_function("holds", self._holds)
        self.enforcer.add_policies(lines)
        self.enforcer.add_grouping_policies(links)
        self.enforcer.build_role_links()

    def _leased(self, subject: str, role: str, request: _CasbinRequest) -> bool:
        until = self.leases.get(subject, {}).get(role)
        return until is not None and request.now < until

    def _holds(self, condition_id: str, request: _CasbinRequest) -> bool:
        return not condition_id or self.conditions[condition_id](request)

    def decide_batch(self, requests: list[dict[str, Any]]) -> list[bool]:
        """Decide each request (policy-format.md); True means allowed."""
        decisions = []
        for request in requests:
            rtype, action = request["resource"]["type"], request["action"]
            if action not in self.listed.get(rtype, ()):
                decisions.append(False)
                continue
            prepared = _CasbinRequest(request, self.users.get(request["user"]))
            decisions.append(
                bool(self.enforcer.enforce(f"user:{request['user']}", rtype, action, prepared))
            )
        return decisions


# --------------------------------------------------------------------------------------
# cedarpy
# --------------------------------------------------------------------------------------


def cedar_string(text: str) -> str:
    """Quote a string as a Cedar string literal."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char.isprintable():
            out.append(char)
        else:
            out.append(f"\\u{{{ord(char):x}}}")
    return '"' + "".join(out) + '"'


class _Untranslatable(Exception):
    """A comparison that Cedar cannot express; it is translated as false."""


def cedar_literal(value: Any) -> str:
    """Write a JSON value as a Cedar literal (lists become sets, objects records).

    Raises:
        _Untranslatable: for null and non-integral numbers.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return cedar_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(cedar_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"{cedar_string(k)}: {cedar_literal(v)}" for k, v in value.items())
            + "}"
        )
    raise _Untranslatable(repr(value))


def cedar_value(value: Any) -> Any:
    """Make a JSON value acceptable as a Cedar entity attribute or context value.

    Nulls and non-integral numbers are dropped (Cedar has neither), so they read as
    missing, which is what policy-format.md makes of null.
    """
    if isinstance(value, dict):
        return {k: v for k, v in ((k, cedar_value(v)) for k, v in value.items()) if v is not None}
    if isinstance(value, list):
        return [v for v in (cedar_value(v) for v in value) if v is not None]
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    return value


def _cedar_path(path: str) -> tuple[str, str]:
    """Return (guard, expression) reading an attribute path in the Cedar translation.

    Requests carry the resource and context in Cedar's context record: ``rid``, ``rtype``,
    ``res`` (resource attributes) and ``ctx`` (the request's context); users carry
    ``id`` and ``attrs``. The guard makes a missing attribute false instead of an error.
    """
    root, _, name = path.partition(".")
    key = cedar_string(name)
    if root == "user":
        if name == "id":
            return "", "principal.id"
        return f"principal.attrs has {key}", f"principal.attrs[{key}]"
    if root == "resource":
        if name == "id":
            return "context has rid", "context.rid"
        if name == "type":
            return "", "context.rtype"
        return f"context.res has {key}", f"context.res[{key}]"
    if root == "context":
        return f"context.ctx has {key}", f"context.ctx[{key}]"
    raise ValueError(f"bad attribute path {path!r}")


def _cedar_comparison(path: str, value: Any, untranslated: list[str]) -> str:
    try:
        return _cedar_comparison_or_raise(path, value)
    except _Untranslatable:
        untranslated.append(f"{path}: {json.dumps(value)}")
        return "false"


def _cedar_comparison_or_raise(path: str, value: Any) -> str:
    left_guard, left = _cedar_path(path)
    operator, operand, is_reference = _entry(value)
    guards = [left_guard]
    if is_reference:
        right_guard, right = _cedar_path(operand)
        guards.append(right_guard)
    elif operand is None:
        return "false"  # a comparison with null is false (fail closed)
    else:
        if operator in ("in", "not_in") and not isinstance(operand, list):
            return "false"
        if operator in ("gt", "gte", "lt", "lte") and (
            isinstance(operand, bool) or not isinstance(operand, int | float)
        ):
            raise _Untranslatable(f"{path} {operator} {operand!r}")
        right = cedar_literal(operand)
    symbol = {"eq": "==", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
    if operator in symbol:
        test = f"{left} {symbol[operator]} {right}"
    elif operator == "in":
        test = f"{right}.contains({left})"
    elif operator == "not_in":
        test = f"!({right}.contains({left}))"
    else:  # contains
        test = f"{left}.contains({right})"
    return "(" + " && ".join([g for g in guards if g] + [test]) + ")"


def cedar_condition(condition: dict[str, Any], untranslated: list[str] | None = None) -> str:
    """Translate a ``when`` condition into a Cedar boolean expression.

    A comparison Cedar cannot express (an ordering against a string literal, a null or
    fractional literal) is translated as ``false`` and described in ``untranslated``.
    """
    notes = untranslated if untranslated is not None else []
    parts: list[str] = []
    for key, value in condition.items():
        if key == "any":
            alternatives = [cedar_condition(c, notes) for c in value]
            parts.append("(" + (" || ".join(alternatives) or "false") + ")")
        elif key == "all":
            conjuncts = [cedar_condition(c, notes) for c in value]
            parts.append("(" + (" && ".join(conjuncts) or "true") + ")")
        elif key == "not":
            parts.append(f"!({cedar_condition(value, notes)})")
        else:
            parts.append(_cedar_comparison(key, value, notes))
    return " && ".join(parts) or "true"


class CedarPeer:
    """cedarpy policies and entities for one policy document.

    Each rule becomes a ``permit`` (grant) or ``forbid`` (deny) per covered resource type
    and action, and the policies are grouped into one ``PolicySet`` per (type, action),
    so each request is evaluated only against the rules that could apply to it. Roles
    are ``Role`` entities whose parents are the roles they inherit; users are ``User``
    entities whose parents are their permanently assigned roles, with ``attrs`` (their
    attributes), ``id`` and ``leases`` (role name → expiry in µs) as attributes.
    """

    def __init__(self, policy: dict[str, Any]) -> None:
        """Translate ``policy`` into Cedar policy sets and entities.

        Raises:
            ValueError: on an unknown role or an inheritance cycle.
        """
        import cedarpy

        self._cedarpy = cedarpy
        self.listed = listed_actions(policy)
        closures = role_closures(policy)
        self.untranslated: list[str] = []

        entities: list[dict[str, Any]] = [
            {
                "uid": {"type": "Role", "id": role["name"]},
                "attrs": {},
                "parents": [{"type": "Role", "id": p} for p in role.get("inherits") or []],
            }
            for role in policy.get("roles") or []
        ]
        leased_roles: set[str] = set()
        for user in policy.get("users") or []:
            permanent, leases = user_leases(user, closures)
            leased_roles.update(leases)
            entities.append(
                {
                    "uid": {"type": "User", "id": user["id"]},
                    "attrs": {
                        "id": user["id"],
                        "attrs": cedar_value(user.get("attributes") or {}),
                        "leases": leases,
                    },
                    "parents": [{"type": "Role", "id": r} for r in dict.fromkeys(permanent)],
                }
            )
        self.entities = cedarpy.Entities.from_json_str(json.dumps(entities))

        texts: dict[tuple[str, str], list[str]] = {}
        for kind, name, deny, rule in _rules(policy):
            condition = cedar_condition(rule["when"], self.untranslated) if rule.get("when") else ""
            for rtype, action in self._covered(rule):
                text = self._policy_text(
                    kind, name, deny=deny, action=action, condition=condition, leased=leased_roles
                )
                texts.setdefault((rtype, action), []).append(text)
        self.policy_sets = {
            key: cedarpy.PolicySet.from_str("\n".join(group)) for key, group in texts.items()
        }
        self.policy_count = sum(len(group) for group in texts.values())

    def _covered(self, rule: dict[str, Any]) -> list[tuple[str, str]]:
        """The (type, action) pairs a rule covers (policy-format.md "Policy document")."""
        types = list(self.listed) if rule["resource"] == "*" else [rule["resource"]]
        pairs = []
        for rtype in types:
            listed = self.listed.get(rtype, frozenset())
            actions = listed if "*" in rule["actions"] else listed.intersection(rule["actions"])
            pairs += [(rtype, a) for a in sorted(actions)]
        return pairs

    @staticmethod
    def _policy_text(
        kind: str, name: str, *, deny: bool, action: str, condition: str, leased: set[str]
    ) -> str:
        effect = "forbid" if deny else "permit"
        quoted = cedar_string(name)
        scope_action = f"action == Action::{cedar_string(action)}"
        clauses = []
        if kind == "user":
            principal = f"principal == User::{quoted}"
        elif name in leased:
            # Held permanently (entity parents) or through an unexpired lease.
            principal = "principal"
            clauses.append(
                f"(principal in Role::{quoted} || (principal.leases has {quoted}"
                f" && principal.leases[{quoted}] > context.now))"
            )
        else:
            principal = f"principal in Role::{quoted}"
        if condition:
            clauses.append(f"({condition})")
        when = f" when {{ {' && '.join(clauses)} }}" if clauses else ""
        return f"{effect} ({principal}, {scope_action}, resource){when};"

    def _cedar_request(self, request: dict[str, Any]) -> dict[str, Any]:
        resource = request["resource"]
        context: dict[str, Any] = {
            "now": _request_time_us(request),
            "rtype": resource["type"],
            "res": cedar_value(resource.get("attributes") or {}),
            "ctx": cedar_value(request.get("context") or {}),
        }
        if resource.get("id") is not None:
            context["rid"] = cedar_value(resource["id"])
        return {
            "principal": {"type": "User", "id": request["user"]},
            "action": {"type": "Action", "id": request["action"]},
            "resource": {"type": "Resource", "id": f"{resource['type']}/{resource.get('id')}"},
            "context": context,
        }

    def decide_batch(self, requests: list[dict[str, Any]]) -> list[bool]:
        """Decide each request (policy-format.md) with ``cedarpy.is_authorized_batch``.

        Requests are grouped by (type, action) and sent in batches of 1,000 against that
        group's policy set; True means allowed.
        """
        decisions = [False] * len(requests)
        groups: dict[tuple[str, str], list[int]] = {}
        for index, request in enumerate(requests):
            key = (request["resource"]["type"], request["action"])
            if key[1] in self.listed.get(key[0], ()):
                groups.setdefault(key, []).append(index)
        for key, indices in groups.items():
            policy_set = self.policy_sets.get(key)
            if policy_set is None:
                continue  # no rule covers this type and action: nothing is granted
            for start in range(0, len(indices), CHUNK):
                chunk = indices[start : start + CHUNK]
                batch = [self._cedar_request(requests[i]) for i in chunk]
                results = self._cedarpy.is_authorized_batch(batch, policy_set, self.entities)
                for i, result in zip(chunk, results, strict=True):
                    decisions[i] = result.allowed
        return decisions


# --------------------------------------------------------------------------------------
# Self-check
# --------------------------------------------------------------------------------------


def _timed(
    decide: Callable[[list[dict[str, Any]]], list[bool]], requests: list[Any]
) -> tuple[list[bool], float]:
    start = time.perf_counter()
    decisions = decide(requests)
    return decisions, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    """Command line: decide a sample with both peers and print agreement and speed."""
    from bench.tenant import generate_requests, generate_tenant

    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    parser.add_argument("--sample", type=int, default=2000, help="requests to decide")
    parser.add_argument("--roles", type=int, default=50)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--show", type=int, default=5, help="disagreements to print")
    args = parser.parse_args(argv)

    policy = generate_tenant(args.seed, roles=args.roles, users=args.users)
    requests = generate_requests(policy, args.sample, seed=args.seed + 1)
    start = time.perf_counter()
    casbin_peer = CasbinPeer(policy)
    casbin_build = time.perf_counter() - start
    start = time.perf_counter()
    cedar_peer = CedarPeer(policy)
    cedar_build = time.perf_counter() - start

    by_casbin, casbin_time = _timed(casbin_peer.decide_batch, requests)
    by_cedar, cedar_time = _timed(cedar_peer.decide_batch, requests)
    agree = sum(a == b for a, b in zip(by_casbin, by_cedar, strict=True))
    count = max(len(requests), 1)

    print(f"tenant: {args.roles} roles, {args.users} users; {len(requests)} requests")
    for name, decisions, build, elapsed in (
        ("pycasbin", by_casbin, casbin_build, casbin_time),
        ("cedarpy", by_cedar, cedar_build, cedar_time),
    ):
        rate = len(requests) / elapsed if elapsed else math.inf
        print(
            f"{name:9} build {build:6.2f} s  decide {elapsed:6.2f} s  {rate:10,.0f} decisions/s"
            f"  allowed {sum(decisions) / count:6.1%}"
        )
    print(
        f"cedar policies: {cedar_peer.policy_count} in {len(cedar_peer.policy_sets)} sets;"
        f" untranslated comparisons: {len(cedar_peer.untranslated)}"
    )
    print(f"agreement: {agree}/{len(requests)} = {agree / count:.2%}")
    shown = 0
    for request, a, b in zip(requests, by_casbin, by_cedar, strict=True):
        if a != b and shown < args.show:
            print(f"  casbin={a} cedar={b} {json.dumps(request)}")
            shown += 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
