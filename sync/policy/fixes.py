"""Check and explain: the smallest changes that would allow a denied request, ranked.

The desktop app's check view asks "why was this denied, and what would it
take?" (the desktop issue, § Check and explain). `fixes_for` answers with a
ranked list of `Fix`es, each one click from becoming a pending edit;
`grants_relied_on` says, for an allowed request, which grants it stands on.

Rules of this module:

- A fix is one coherent set of changes: edit documents (the ops
  `Workspace.queue` takes, role fields by id) and/or a change to the request
  itself (`request_change`: attribute path -> the value it would need, None
  for absent). A fix that changes only the request has no edits: it says what
  about the resource or the context would have to differ, not what to change
  in the policy.
- Every fix returned is **verified**: its edits are applied with
  `Engine.proposed`, its request change to a copy of the request, and
  `Engine.decide` must then allow. A candidate that does not (a deny
  overrides, a constraint refuses the edit, a condition still fails) is
  dropped, never shown.
- Candidates, with their cost (the rank key; smaller is better, a fix costs
  the sum of its parts):
  - resume a suspended user (COST_RESUME), then whatever else is needed
    (every other candidate of a suspended user starts with it);
  - activate an eligible role whose closure has a grant covering the request
    (COST_ACTIVATE; for 1 hour, or until the request's `context.time`,
    at most `max_hours`; the justification is JUSTIFICATION, for the person
    to replace: `with_justification`);
  - change what the request says (COST_REQUEST per attribute path): a
    `resource.<name>`, `resource.id` or `context.<name>` that a grant's
    condition needs, or that makes a matching deny's condition fail;
  - set a user attribute a condition reads (COST_ATTRIBUTE per attribute);
  - assign a role whose closure has a covering grant (COST_ASSIGN): the
    grant's own role and every role inheriting it;
  - remove a deny that matches, when the user already holds a grant that
    would then allow (COST_REMOVE_DENY: ranked last, it lifts the deny for
    every holder).
  `user.id`, `resource.type` and `context.time` are never changed (the
  request's user, type and time are the question itself); `ne`, `not_in`
  and ordered comparisons of strings suggest no value (any value would be a
  guess), nor does a reference whose both sides are missing.
- Ranking: by cost, then by how much else the change confers (`widens`,
  fewer first: of two roles that would do, the one that gives less), then
  by label.
- An unknown user, an unknown resource type or an action not listed for the
  type gets **no fix** (an empty list): no edit op adds a type or an action,
  and a user created now would hold nothing; the decision's reason already
  says what is unknown. An allowed request has no fixes either.
- Pure: no clock but the `now` handed in, no I/O; the engine is left as it
  was (`Engine.proposed` undoes each trial).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sync.policy.conditions import AllOf, Compare, Condition, Not, Operator, Reference
from sync.policy.decision import Decision
from sync.policy.edits import EditRefused, edit_from_document
from sync.policy.engine import Engine, Permission
from sync.policy.instant import Instant
from sync.policy.model import WILDCARD, Assignment, Effect, Policy, Role, Rule, User
from sync.policy.request import Request

COST_RESUME = 1
COST_ACTIVATE = 1
COST_REQUEST = 2
COST_ATTRIBUTE = 2
COST_ASSIGN = 3
COST_REMOVE_DENY = 8

JUSTIFICATION = "Needed for the request checked in Check and explain"
"""The activation justification a fix carries until the person writes their own."""

MAX_CANDIDATES = 80
"""Candidates tried (each one a what-if of its edits); the cheapest first."""
_MAX_OPTIONS = 6
"""Ways of making one condition hold (or fail) kept while combining its parts."""
_MAX_ASSIGNABLE = 12
"""Roles inheriting a grant's role offered for assignment, fewest grants first."""
_UNCHANGEABLE = {("user", "id"), ("resource", "type"), ("context", "time")}


@dataclass(frozen=True, slots=True)
class Fix:
    """One ranked change that would allow a denied request (module rules)."""

    label: str
    """What the change is, in a sentence: `assign role driver to vic`."""
    edits: tuple[dict[str, Any], ...]
    """Edit documents that make it so, in order; empty for a change to the request only."""
    cost: int
    """The rank key: smaller is better."""
    kind: str
    """resume, activate, assign, user_attribute, attribute (the resource's),
    request (the context's, or the request's id), or deny (removing one)."""
    widens: tuple[str, ...] = ()
    """What else the change gives, briefly (`vehicle read`, `lifts the deny for 12 holders`)."""
    request_change: dict[str, Any] | None = None
    """Attribute path -> value the request would need (None: absent), or None."""


# --- changes to attribute values ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Value:
    """A value an attribute path would need, and how to say it (`at least 20`)."""

    value: Any
    wording: str


Changes = dict[str, _Value]
"""Attribute path text (`resource.region`, `user.depot`) -> the value it would need."""
Step = tuple[str, dict[str, Any], str, int]
"""One edit of a candidate: (kind, edit document, wording, cost)."""


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _is_number(value: object) -> bool:
    return type(value) in (int, float)


def _changeable(root: str, name: str) -> bool:
    return (root, name) not in _UNCHANGEABLE


def apply_request_change(request: Request, change: Mapping[str, Any]) -> Request:
    """`request` with the attribute paths of `change` set (None: removed).

    Paths are `resource.id`, `resource.<name>` and `context.<name>`; raises
    ValueError for any other.
    """
    attributes = dict(request.resource_attrs)
    context = dict(request.context)
    resource_id = request.resource_id
    for path, value in change.items():
        root, _, name = path.partition(".")
        if root == "resource" and name == "id":
            resource_id = value
        elif root in ("resource", "context") and name and _changeable(root, name):
            table = attributes if root == "resource" else context
            if value is None:
                table.pop(name, None)
            else:
                table[name] = value
        else:
            raise ValueError(f"{path!r} is not a request attribute a fix can change")
    return Request(
        request.user,
        request.action,
        request.resource_type,
        resource_id,
        attributes,
        context,
        request.time,
    )


def _with_changes(
    request: Request, attrs: Mapping[str, Any], changes: Changes
) -> tuple[Request, Mapping[str, Any]]:
    requested = {p: v.value for p, v in changes.items() if not p.startswith("user.")}
    users = {p[5:]: v.value for p, v in changes.items() if p.startswith("user.")}
    if users:
        merged = dict(attrs)
        for name, value in users.items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = value
        attrs = merged
    return (apply_request_change(request, requested) if requested else request), attrs


def _merge(first: Changes, second: Changes) -> Changes | None:
    merged = dict(first)
    for path, value in second.items():
        kept = merged.get(path)
        if kept is not None and _json(kept.value) != _json(value.value):
            return None
        merged[path] = value
    return merged


def _smallest(options: Iterable[Changes]) -> list[Changes]:
    unique: dict[str, Changes] = {}
    for option in options:
        key = _json(sorted((p, v.value) for p, v in option.items()))
        unique.setdefault(key, option)
    return sorted(unique.values(), key=len)[:_MAX_OPTIONS]


def repairs(
    condition: Condition, want: bool, request: Request, attrs: Mapping[str, Any]
) -> list[Changes]:
    """Ways of changing attribute values so that `condition` evaluates to `want`
    for `request` and a user with `attrs`: each a set of path -> value changes,
    smallest first ([{}] when it already does; [] when nothing this module
    would suggest makes it so). Parts are repaired one by one against the
    request as it is, so a combination is a candidate, to be verified."""
    if condition.evaluate(request, attrs) == want:
        return [{}]
    if isinstance(condition, Compare):
        return _compare_repairs(condition, want, request, attrs)
    if isinstance(condition, Not):
        return repairs(condition.part, not want, request, attrs)
    every = isinstance(condition, AllOf) == want  # all parts must come out `want`
    if not every:
        found: list[Changes] = []
        for part in condition.parts:
            found.extend(repairs(part, want, request, attrs))
        return _smallest(found)
    options: list[Changes] = [{}]
    for part in condition.parts:
        ways = repairs(part, want, request, attrs)
        combined = (_merge(a, b) for a in options for b in ways)
        options = _smallest(c for c in combined if c is not None)
        if not options:
            return []
    return options


def _compare_repairs(
    node: Compare, want: bool, request: Request, attrs: Mapping[str, Any]
) -> list[Changes]:
    path = node.path
    value = path.read(request, attrs)
    reference = node.operand.path if isinstance(node.operand, Reference) else None
    operand = reference.read(request, attrs) if reference else getattr(node.operand, "value", None)
    options: list[Changes] = []
    if want:
        if _changeable(path.root, path.name):
            options += [{str(path): v} for v in _left_values(node.op, operand, value)]
        if reference is not None and _changeable(reference.root, reference.name):
            options += [{str(reference): v} for v in _right_values(node.op, value)]
    else:
        # Fail closed: a comparison with a missing side is false, whatever the operator.
        if _changeable(path.root, path.name) and value is not None:
            options.append({str(path): _Value(None, "absent")})
        other = reference is not None and _changeable(reference.root, reference.name)
        if reference is not None and other and operand is not None:
            options.append({str(reference): _Value(None, "absent")})
    kept = []
    for option in options:
        changed, changed_attrs = _with_changes(request, attrs, option)
        if node.evaluate(changed, changed_attrs) == want:
            kept.append(option)
    return kept


def _left_values(op: Operator, operand: Any, current: Any) -> list[_Value]:
    """Values of the compared path that make `path op operand` hold."""
    if operand is None:
        return []
    if op is Operator.EQ:
        return [_Value(operand, _json(operand))]
    if op is Operator.NE:
        return [_Value(not operand, _json(not operand))] if type(operand) is bool else []
    if op is Operator.IN:
        items = [i for i in operand if i is not None] if isinstance(operand, list) else []
        choices = ", ".join(_json(i) for i in items)
        return [_Value(i, f"{_json(i)} (one of {choices})") for i in items[:3]]
    if op is Operator.CONTAINS:
        listed = list(current) if isinstance(current, list) else []
        return [_Value([*listed, operand], f"a list containing {_json(operand)}")]
    if op in (Operator.GTE, Operator.LTE) and (_is_number(operand) or type(operand) is str):
        bound = "at least" if op is Operator.GTE else "at most"
        return [_Value(operand, f"{bound} {_json(operand)}")]
    if op in (Operator.GT, Operator.LT) and _is_number(operand):
        step = 1 if op is Operator.GT else -1
        bound = "more than" if op is Operator.GT else "less than"
        return [_Value(operand + step, f"{bound} {_json(operand)}")]
    return []  # ne, not_in, a string strictly above or below: any value would be a guess


def _right_values(op: Operator, value: Any) -> list[_Value]:
    """Values of a referenced path that make `value op $reference` hold."""
    if value is None:
        return []
    if op in (Operator.EQ, Operator.GTE, Operator.LTE):
        return [_Value(value, _json(value))]
    if op is Operator.CONTAINS and isinstance(value, list) and value:
        return [_Value(value[0], _json(value[0]))]
    return []


# --- candidates -------------------------------------------------------------------------


@dataclass(slots=True)
class _Candidate:
    """A fix before it is verified: its parts, in the order they are applied."""

    steps: list[Step] = field(default_factory=list)
    changes: Changes = field(default_factory=dict)
    """Attribute changes (user ones become edits; request ones the request change)."""
    widens: list[str] = field(default_factory=list)
    """What the steps are known to confer beyond the grants (a lifted deny)."""

    def cost(self) -> int:
        requested = sum(1 for p in self.changes if not p.startswith("user."))
        users = len(self.changes) - requested
        return (
            sum(step[3] for step in self.steps) + requested * COST_REQUEST + users * COST_ATTRIBUTE
        )

    def extended(self, changes: Changes) -> _Candidate | None:
        merged = _merge(self.changes, changes)
        if merged is None:
            return None
        return _Candidate(list(self.steps), merged, list(self.widens))


def _covers(rule: Rule, key: tuple[str, str]) -> bool:
    return rule.resource in (WILDCARD, key[0]) and (
        WILDCARD in rule.actions or key[1] in rule.actions
    )


def _covering_grants(
    policy: Policy, user: User, key: tuple[str, str]
) -> Iterator[tuple[str | None, Rule]]:
    """(role id, grant) for each role's covering grant; (None, grant) for the user's own."""
    for rule in user.grants:
        if _covers(rule, key):
            yield None, rule
    for role in policy.roles.values():
        for rule in role.grants:
            if _covers(rule, key):
                yield role.id, rule


def _activation_hours(entry: Assignment, now: Instant, instant: Instant) -> int:
    """1 hour, or long enough to reach the request's time, at most the entry's max_hours."""
    assert entry.eligible is not None
    needed = (instant[0] - now[0]) // 3600 + 1 if instant > now else 1
    return max(1, min(needed, entry.eligible))


def _holdings(
    policy: Policy,
    user: User,
    role_id: str,
    held: Mapping[str, tuple[str, ...]],
    now: Instant,
    instant: Instant,
    children: Mapping[str, list[str]],
) -> list[Step]:
    """Ways for `user`, who does not hold `role_id`, to come to hold it: activating
    an eligible role that inherits it, or assigning it or a role inheriting it.
    `children`: `policy.children()`, made once for every grant looked at."""
    ways: list[Step] = []
    for entry in user.roles:
        if not entry.eligible_at(now) or entry.role_id in held:
            continue
        if all(r != role_id for r, _ in policy.ancestors(entry.role_id)):
            continue
        assert entry.eligible is not None
        hours = _activation_hours(entry, now, instant)
        name = policy.role_name(entry.role_id)
        document = {"op": "activate_role", "user_id": user.id, "role_id": entry.role_id,
                    "hours": hours, "justification": JUSTIFICATION}  # fmt: skip
        wording = (
            f"activate eligible role {name} for {user.id} ({hours} h, up to {entry.eligible} h)"
        )
        ways.append(("activate", document, wording, COST_ACTIVATE))
    below = sorted(
        policy.descendants(role_id, children),
        key=lambda r: (r != role_id, _grant_count(policy, r), policy.role_name(r)),
    )
    for candidate in below[:_MAX_ASSIGNABLE]:
        document = {"op": "assign_role", "user_id": user.id, "role_id": candidate}
        wording = f"assign role {policy.role_name(candidate)} to {user.id}"
        ways.append(("assign", document, wording, COST_ASSIGN))
    return ways


def _grant_count(policy: Policy, role_id: str) -> int:
    return sum(len(policy.roles[r].grants) for r, _ in policy.ancestors(role_id))


def _candidates(policy: Policy, user: User, request: Request, now: Instant) -> list[_Candidate]:
    instant = request.time or now
    key = (request.resource_type, request.action)
    held = policy.held_roles(user, instant)
    prefix: list[Step] = []
    if user.suspended:
        prefix.append(("resume", {"op": "resume_user", "user_id": user.id},
                       f"resume user {user.id} (suspended)", COST_RESUME))  # fmt: skip
    found: list[_Candidate] = [_Candidate(list(prefix))] if prefix else []
    children = policy.children()
    for role_id, rule in _covering_grants(policy, user, key):
        if rule.condition is None:
            ways: list[Changes] = [{}]
        else:
            ways = repairs(rule.condition, True, request, user.attributes)
        if not ways:
            continue
        holdings = (
            [None]
            if role_id is None or role_id in held
            else _holdings(policy, user, role_id, held, now, instant, children)
        )
        for holding in holdings:
            steps = list(prefix) if holding is None else [*prefix, holding]
            found.extend(_Candidate(list(steps), dict(way)) for way in ways)
    return found


# --- verifying --------------------------------------------------------------------------


def _edit_documents(candidate: _Candidate, user_id: str) -> list[dict[str, Any]]:
    documents = [step[1] for step in candidate.steps if step[0] != "deny"]
    for path, value in candidate.changes.items():
        if path.startswith("user."):
            document: dict[str, Any] = {"op": "set_user_attribute", "user_id": user_id,
                                        "key": path[5:]}  # fmt: skip
            if value.value is not None:
                document["value"] = value.value
            documents.append(document)
    documents += [step[1] for step in candidate.steps if step[0] == "deny"]
    return documents


def _request_change(candidate: _Candidate) -> dict[str, Any]:
    return {p: v.value for p, v in candidate.changes.items() if not p.startswith("user.")}


def _label(candidate: _Candidate, user_id: str) -> str:
    parts = [step[2] for step in candidate.steps if step[0] != "deny"]
    for path, value in candidate.changes.items():
        if path.startswith("user."):
            name = path[5:]
            if value.value is None:
                parts.append(f"remove attribute {name} of user {user_id}")
            else:
                parts.append(f"set attribute {name} of user {user_id} to {value.wording}")
    parts += [step[2] for step in candidate.steps if step[0] == "deny"]
    for path, value in candidate.changes.items():
        if not path.startswith("user."):
            parts.append(f"{path} would have to be {value.wording}")
    return ", and ".join(parts)


_KIND_ORDER = ("resume", "deny", "assign", "activate", "user_attribute", "request", "attribute")


def _kind(candidate: _Candidate) -> str:
    kinds = {step[0] for step in candidate.steps}
    for path in candidate.changes:
        root, _, name = path.partition(".")
        if root == "user":
            kinds.add("user_attribute")
        elif root == "resource" and name != "id":
            kinds.add("attribute")
        else:
            kinds.add("request")
    return next(k for k in _KIND_ORDER if k in kinds)


def _grant_pairs(permissions: Iterable[Permission]) -> set[tuple[str, str, str | None]]:
    return {
        (p.resource_type, p.action, p.condition) for p in permissions if p.effect is Effect.GRANT
    }


class _Trial:
    """Tries candidates against one engine and request; keeps what it learnt."""

    def __init__(self, engine: Engine, request: Request, now: Instant, user: User) -> None:
        self.engine = engine
        self.request = request
        self.now = now
        self.user = user
        self.instant = request.time or now
        self.key = (request.resource_type, request.action)
        self.before = _grant_pairs(engine.effective_permissions(user.id, self.instant))
        self.seen: set[str] = set()

    def run(self, candidate: _Candidate) -> tuple[Decision, tuple[str, ...]] | None:
        """The decision with the candidate applied and what else it confers, or None
        when one of its edits cannot apply."""
        engine = self.engine
        try:
            edits = [edit_from_document(d, engine.policy)
                     for d in _edit_documents(candidate, self.user.id)]  # fmt: skip
            request = apply_request_change(self.request, _request_change(candidate))
            with engine.proposed(edits, self.now):
                decision = engine.decide(request, self.now)
                if not decision.allowed:
                    return decision, ()
                widens = self._widens(candidate)
        except EditRefused:
            return None
        return decision, widens

    def _widens(self, candidate: _Candidate) -> tuple[str, ...]:
        """Inside the trial: grants the user holds now that they did not, and the
        grants reading a user attribute the candidate sets."""
        after = self.engine.effective_permissions(self.user.id, self.instant)
        gained = sorted(
            {f"{t} {a}" for t, a, c in _grant_pairs(after) - self.before if (t, a) != self.key}
        )
        reading = sorted(
            {f"{p.resource_type} {p.action} (reads {path})"
             for path in candidate.changes if path.startswith("user.")
             for p in after
             if p.effect is Effect.GRANT and p.condition and path in p.condition
             and (p.resource_type, p.action) != self.key}
        )  # fmt: skip
        return tuple([*gained, *reading, *candidate.widens])

    def deny_of(self, decision: Decision) -> tuple[str, Rule] | None:
        """The deny that decided a denial, as (owner, rule), if one did."""
        if not decision.matched or decision.matched[0].effect is not Effect.DENY:
            return None
        match = decision.matched[0]
        kind, _, name = match.source.partition(":")
        policy = self.engine.policy
        holder: Role | User | None
        if kind == "user":
            holder = policy.users.get(name)
            owner = f"user:{name}"
        else:
            holder = policy.role_by_name(name)
            owner = f"role:{holder.id}" if holder is not None else ""
        if holder is None or match.rule >= len(holder.denies):
            return None
        return owner, holder.denies[match.rule]


def _without_deny(trial: _Trial, candidate: _Candidate, owner: str, rule: Rule) -> _Candidate:
    """The candidate with the deny removed: only offered when nothing else is assigned."""
    policy = trial.engine.policy
    kind, _, owner_id = owner.partition(":")
    if kind == "role":
        name = policy.role_name(owner_id)
        holders = len(trial.engine.holders({owner_id}))
        wording = f"remove the deny of role {name}: {rule.describe()}"
        lifted = f"lifts the deny for every holder of role {name} ({holders})"
    else:
        wording = f"remove the direct deny of user {owner_id}: {rule.describe()}"
        lifted = f"lifts the deny for user {owner_id} everywhere it matches"
    document = {"op": "remove_rule", "owner": owner, "effect": "deny", "rule": rule.to_document()}
    step = ("deny", document, wording, COST_REMOVE_DENY)
    return _Candidate(
        [*candidate.steps, step], dict(candidate.changes), [*candidate.widens, lifted]
    )


def fixes_for(engine: Engine, request: Request, now: Instant, *, limit: int = 10) -> list[Fix]:
    """The smallest changes that would allow the denied `request`, ranked (module
    rules), at most `limit`; every one verified. `now` is the time edits are
    made at and stands in for a missing `context.time`.

    Empty for an allowed request, and for an unknown user, resource type or
    action (module rules say why).
    """
    policy = engine.policy
    user = policy.users.get(request.user)
    listed = policy.resource_types.get(request.resource_type, ())
    if (
        user is None
        or request.action not in listed
        or WILDCARD in (request.action, request.resource_type)
    ):
        return []
    if engine.decide(request, now).allowed:
        return []
    trial = _Trial(engine, request, now, user)
    queue = sorted(_candidates(policy, user, request, now), key=_Candidate.cost)
    fixes: dict[str, Fix] = {}
    tried = 0
    while queue and tried < MAX_CANDIDATES:
        candidate = queue.pop(0)
        label = _label(candidate, user.id)
        if label in trial.seen:
            continue
        trial.seen.add(label)
        tried += 1
        outcome = trial.run(candidate)
        if outcome is None:
            continue
        decision, widens = outcome
        if decision.allowed:
            fixes[label] = Fix(
                label=label,
                edits=tuple(_edit_documents(candidate, user.id)),
                cost=candidate.cost(),
                kind=_kind(candidate),
                widens=widens,
                request_change=_request_change(candidate) or None,
            )
            continue
        queue.extend(_around_deny(trial, candidate, decision))
        queue.sort(key=_Candidate.cost)
    ranked = sorted(fixes.values(), key=lambda f: (f.cost, len(f.widens), f.label))
    return ranked[:limit]


def _around_deny(trial: _Trial, candidate: _Candidate, decision: Decision) -> list[_Candidate]:
    """A candidate denied by a deny: the same with that deny's condition made to
    fail, and (when it assigns nothing) with the deny removed."""
    denied = trial.deny_of(decision)
    if denied is None:
        return []
    owner, rule = denied
    found: list[_Candidate] = []
    if rule.condition is not None:
        request, attrs = _with_changes(trial.request, trial.user.attributes, candidate.changes)
        for way in repairs(rule.condition, False, request, attrs):
            extended = candidate.extended(way) if way else None
            if extended is not None:
                found.append(extended)
    if not any(step[0] in ("assign", "activate", "deny") for step in candidate.steps):
        found.append(_without_deny(trial, candidate, owner, rule))
    return found


def with_justification(fix: Fix, text: str) -> tuple[dict[str, Any], ...]:
    """The fix's edits with each activation's justification replaced by `text`."""
    return tuple(
        {**edit, "justification": text} if edit.get("op") == "activate_role" else edit
        for edit in fix.edits
    )


# --- what an allowed request stands on ----------------------------------------------------


def _rule_of(policy: Policy, permission: Permission) -> Rule | None:
    kind, _, name = permission.source.partition(":")
    holder: Role | User | None
    holder = policy.users.get(name) if kind == "user" else policy.role_by_name(name)
    if holder is None:
        return None
    rules: Sequence[Rule] = holder.rules(permission.effect)
    return rules[permission.rule] if permission.rule < len(rules) else None


def grants_relied_on(engine: Engine, request: Request, now: Instant) -> list[str]:
    """For an allowed `request`, each grant that matches it, with the path by which
    the user holds it, as a line; the one that decided first and marked so.
    Empty for a denied request."""
    decision = engine.decide(request, now)
    if not decision.allowed:
        return []
    policy = engine.policy
    user = policy.users[request.user]
    instant = request.time or now
    key = (request.resource_type, request.action)
    deciding = decision.matched[0] if decision.matched else None
    first: list[str] = []
    others: list[str] = []
    for permission in engine.effective_permissions(user.id, instant):
        if (
            permission.effect is not Effect.GRANT
            or (permission.resource_type, permission.action) != key
        ):
            continue
        rule = _rule_of(policy, permission)
        if rule is None or (
            rule.condition is not None and not rule.condition.evaluate(request, user.attributes)
        ):
            continue
        where = f"{permission.source.replace(':', ' ', 1)} grants[{permission.rule}]"
        decides = deciding is not None and (deciding.source, deciding.rule) == (
            permission.source,
            permission.rule,
        )
        if decides:
            first.append(f"{permission} ({where}, decides)")
        else:
            others.append(f"{permission} ({where})")
    return first + others
