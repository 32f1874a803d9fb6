"""The decision engine: a policy compiled into indexes, updated change by change.

Layout (why it is fast, and why one change is cheap):

- Each owner of rules (a role, or a user's direct rules) has an index
  `(resource type, action) -> (denies, grants)` built from its own rules only.
  A rule with `*` is expanded into the pairs it covers when indexed.
- A user's roles resolve to a *closure*: the roles held through inheritance,
  each once, with the path it was reached by. Users with the same set of
  non-expiring roles share one closure (`_Combo`).
- A decision is: look up the pair in each index of the user's closure (a
  few dictionary lookups), evaluate the denies' conditions, then the grants'.
  Deny overrides; the first matching rule decides, and its `Decision` object
  is built once and handed out again.
- A change to a role's rules rebuilds that role's index in place; a change to
  a user rebuilds that user's entry; only a change to inheritance recomputes
  closures. Nothing recompiles the tenant.
- A suspended user's entry carries its denial (policy-format.md § Additions):
  `decide` checks one slot and hands it out. Eligible entries of a user's
  roles are not holdings and never reach the entry's closure.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sync.policy.decision import Decision, Match
from sync.policy.edits import Edit, Touched, Undo, apply_edit
from sync.policy.instant import Instant, format_instant
from sync.policy.model import WILDCARD, Assignment, Effect, Policy, Role, Rule, User
from sync.policy.request import Request

Key = tuple[str, str]
_UNDECIDED = Decision(False, "not decided yet")


class _Hit:
    """One rule as indexed under a (type, action) pair."""

    __slots__ = ("decision", "effect", "epoch", "index", "owner", "owner_kind", "predicate", "rule")

    def __init__(self, effect: Effect, owner_kind: str, owner: str, index: int, rule: Rule):
        self.effect = effect
        self.owner_kind = owner_kind
        self.owner = owner
        self.index = index
        self.rule = rule
        self.predicate = rule.predicate
        # The Decision this rule gives, valid while `epoch` is the engine's epoch.
        self.decision = _UNDECIDED
        self.epoch = -1


Entry = tuple[tuple[_Hit, ...], tuple[_Hit, ...]]
Index = dict[Key, Entry]


class _Link:
    """An owner's index as reached by a user: `via` is the role-id path to it."""

    __slots__ = ("index", "owner", "via")

    def __init__(self, owner: str, index: Index, via: tuple[str, ...]) -> None:
        self.owner = owner
        self.index = index
        self.via = via


class _Combo:
    """The closure of one set of roles (and maybe one user's direct rules), shared by
    the users holding it; `merged` caches, per pair, the denies and grants of all
    its links in order."""

    __slots__ = ("links", "merged", "role_ids", "roles")

    def __init__(self, role_ids: tuple[str, ...]) -> None:
        self.role_ids = role_ids
        self.links: tuple[_Link, ...] = ()
        self.roles: frozenset[str] = frozenset()
        self.merged: dict[Key, Entry] = {}


class _UserEntry:
    __slots__ = ("attrs", "combo", "expiring", "merged", "private", "suspended", "timed", "user")

    def __init__(
        self,
        user: User,
        combo: _Combo,
        expiring: tuple[tuple[Instant, tuple[_Link, ...]], ...],
        private: bool,
    ) -> None:
        self.user = user
        self.attrs = _interned(user.attributes)
        self.combo = combo
        self.merged = combo.merged
        """The combo's cache, one hop nearer: a decision is bound by memory latency."""
        self.expiring = expiring
        """Per expiring assignment: when it ends, and the links it adds to `combo`."""
        self.private = private
        """The combo holds this user's direct rules and is nobody else's."""
        self.timed: dict[tuple[Key, int], Entry] = {}
        """Merged rules per (pair, bit mask of the expiring assignments in force)."""
        self.suspended: Decision | None = None
        """The denial of every request, for a suspended user; None for an active one."""


_NOTHING: Entry = ((), ())


def _interned(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes with names and string values interned.

    A decision is bound by memory latency, not by instructions: with interned
    strings, a condition's `u.get(name)` and `== "north"` compare object
    identities instead of reading 50,000 users' own copies of the same text.
    """
    return {sys.intern(k): sys.intern(v) if type(v) is str else v for k, v in attributes.items()}


@dataclass(frozen=True, slots=True)
class Permission:
    """One rule that applies to a user: what it covers, how the user holds it."""

    resource_type: str
    action: str
    effect: Effect
    source: str
    rule: int
    path: tuple[str, ...]
    """From the user to the rule's owner: `("alice", "dispatcher", "viewer")`."""
    condition: str | None
    until: str | None = None
    """When the assignment that gives it expires, if it does."""

    def __str__(self) -> str:
        text = (
            f"{self.effect.value} {self.resource_type} {self.action} via {' -> '.join(self.path)}"
        )
        if self.condition:
            text += f" when {self.condition}"
        if self.until:
            text += f" (until {self.until})"
        return text


def describe_eligibility(assignment: Assignment, role_name: str, instant: Instant) -> str:
    """An eligible entry in words, as at `instant`: `eligible for role fleet-manager
    (up to 8 h), not active`, with `until <expires>` or `(eligibility ended
    <expires>)` when it has an end."""
    text = f"eligible for role {role_name} (up to {assignment.eligible} h)"
    if assignment.expires is None:
        return f"{text}, not active"
    if assignment.eligible_at(instant):
        return f"{text} until {assignment.expires}, not active"
    return f"{text}, not active (eligibility ended {assignment.expires})"


@dataclass(frozen=True, slots=True)
class Explanation:
    decision: Decision
    trace: tuple[str, ...]


class Engine:
    """A compiled policy. Not thread-safe for writers: one thread applies changes.

    `version` is the stored policy version decisions report (None for a file).

    `load_user`, for a batch that decides from stored users: `policy` then holds
    the users loaded so far, and `decide` asks `load_user(id)` for one it does not
    hold (None: there is no such user), adds it and compiles its entry then. Only
    `decide` loads users: the questions below see those loaded so far. Such an
    engine only decides: no edit applies to it (`refresh` refuses).
    """

    def __init__(
        self,
        policy: Policy,
        version: int | None = None,
        load_user: Callable[[str], User | None] | None = None,
    ) -> None:
        self.policy = policy
        self.version = version
        self._load_user = load_user
        self._keys: dict[Key, Key] = {}
        self._indexes: dict[str, Index] = {}
        self._links: dict[tuple[str, ...], _Link] = {}
        self._ancestry: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {}
        self._combos: dict[tuple[str, ...], _Combo] = {}
        self._combos_by_role: dict[str, set[_Combo]] = {}
        self._timed_by_role: dict[str, set[_UserEntry]] = {}
        self._users: dict[str, _UserEntry] = {}
        self._epoch = 0
        self._no_grant: dict[Key, Decision] = {}
        self._unknowns: dict[tuple[str, str, str], Decision] = {}
        """Denials of unknown users, types and actions, a bounded number kept."""
        self._rebuild_keys()
        # A large policy is millions of objects: callers compile it with the
        # cyclic collector paused (app/policy_files.py, server/tenants.py).
        for role_id in policy.roles:
            self._indexes[role_id] = self._index_rules("role", role_id, policy.roles[role_id])
        for user in policy.users.values():
            self._users[user.id] = self._user_entry(user)

    # --- building ----------------------------------------------------------------------

    def _rebuild_keys(self) -> None:
        # One tuple object per pair, used as the key everywhere: a lookup with an
        # equal tuple then compares by identity, touching no cold memory.
        self._keys = {
            (t, a): (t, a) for t, actions in self.policy.resource_types.items() for a in actions
        }

    def _covered(self, rule: Rule) -> Iterator[Key]:
        types = self.policy.resource_types
        names = types if rule.resource == WILDCARD else (rule.resource,)
        for type_name in names:
            listed = types.get(type_name, ())
            keys = self._keys
            if WILDCARD in rule.actions:
                yield from (keys[type_name, a] for a in listed)
            else:
                yield from (keys[type_name, a] for a in rule.actions if a in listed)

    def _index_rules(self, kind: str, owner: str, holder: Role | User) -> Index:
        lists: dict[Key, tuple[list[_Hit], list[_Hit]]] = {}
        for slot, effect in ((0, Effect.DENY), (1, Effect.GRANT)):
            for i, rule in enumerate(holder.rules(effect)):
                hit = _Hit(effect, kind, owner, i, rule)
                for key in self._covered(rule):
                    lists.setdefault(key, ([], []))[slot].append(hit)
        return {key: (tuple(d), tuple(g)) for key, (d, g) in lists.items()}

    def _link(self, via: tuple[str, ...]) -> _Link:
        link = self._links.get(via)
        if link is None:
            owner = via[-1]
            index = self._indexes.get(owner)
            if index is None:  # a role that came back (an undone deletion)
                index = self._indexes[owner] = self._index_rules(
                    "role", owner, self.policy.roles[owner]
                )
            link = self._links[via] = _Link(owner, index, via)
        return link

    def _ancestors(self, role_id: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
        found = self._ancestry.get(role_id)
        if found is None:
            found = self._ancestry[role_id] = tuple(self.policy.ancestors(role_id))
        return found

    def _closure(self, role_ids: Iterable[str]) -> list[_Link]:
        links: list[_Link] = []
        seen: set[str] = set()
        for held in role_ids:
            for role_id, path in self._ancestors(held):
                if role_id not in seen:
                    seen.add(role_id)
                    links.append(self._link(path))
        return links

    def _combo(self, role_ids: tuple[str, ...]) -> _Combo:
        combo = self._combos.get(role_ids)
        if combo is None:
            combo = self._combos[role_ids] = _Combo(role_ids)
            self._fill_combo(combo)
        return combo

    def _fill_combo(self, combo: _Combo, direct: _Link | None = None) -> None:
        tracked = self._load_user is None  # an engine no edit applies to tracks nothing
        if tracked:
            for role_id in combo.roles:
                self._combos_by_role.get(role_id, set()).discard(combo)
        links = self._closure(combo.role_ids)
        if direct is not None:
            links.insert(0, direct)
        combo.links = tuple(links)
        combo.roles = frozenset(link.owner for link in links if link.via)
        combo.merged.clear()  # in place: user entries hold this dict
        if tracked:
            for role_id in combo.roles:
                self._combos_by_role.setdefault(role_id, set()).add(combo)

    def _drop_combo(self, combo: _Combo) -> None:
        for role_id in combo.roles:
            self._combos_by_role.get(role_id, set()).discard(combo)

    def _user_entry(self, user: User) -> _UserEntry:
        roles = self.policy.roles
        static: list[str] = []
        expiring: list[tuple[Instant, str]] = []
        for assignment in user.roles:
            # An eligible entry holds nothing until an activation (an ordinary
            # entry) is written beside it; its `expires` ends the eligibility.
            role_id = assignment.role_id
            if assignment.eligible is not None or role_id not in roles:
                continue
            if assignment.expires_at is None:
                if role_id not in static:
                    static.append(role_id)
            else:
                expiring.append((assignment.expires_at, role_id))
        held = tuple(static)
        private = bool(user.grants or user.denies)
        if private:
            combo = _Combo(held)
            direct = _Link(user.id, self._index_rules("user", user.id, user), ())
            self._fill_combo(combo, direct)
        else:
            combo = self._combos.get(held) or self._combo(held)
        extra = tuple(
            (expires, tuple(k for k in self._closure([role_id]) if k.owner not in combo.roles))
            for expires, role_id in expiring
        ) if expiring else ()  # fmt: skip
        entry = _UserEntry(user, combo, extra, private)
        if user.suspended:
            entry.suspended = self._suspension(user.id)
        if self._load_user is None:  # changes to these roles clear the entry's cache
            for role_id in self._timed_roles(entry):
                self._timed_by_role.setdefault(role_id, set()).add(entry)
        return entry

    @staticmethod
    def _timed_roles(entry: _UserEntry) -> set[str]:
        if not entry.expiring:
            return set()
        return set(entry.combo.roles) | {k.owner for _, links in entry.expiring for k in links}

    def _drop_entry(self, entry: _UserEntry) -> None:
        if entry.private:
            self._drop_combo(entry.combo)
        for role_id in self._timed_roles(entry):
            self._timed_by_role.get(role_id, set()).discard(entry)

    # --- deciding ----------------------------------------------------------------------

    def decide(self, request: Request, now: Instant) -> Decision:
        """Decide `request`; `now` stands in for a missing `context.time`."""
        key = self._keys.get((request.resource_type, request.action))
        entry = self._users.get(request.user)
        if entry is None and self._load_user is not None:
            entry = self._loaded(request.user)
        if entry is None or key is None or entry.suspended is not None:
            return self._refused(request, entry)
        rules = entry.merged.get(key)
        if rules is None:
            rules = self._merge(entry.combo, key)
        if entry.expiring:
            rules = self._with_expiring(entry, rules, request.time or now, key)
        attrs = entry.attrs
        for hit in rules[0]:
            predicate = hit.predicate
            if predicate is None or predicate(request, attrs):
                return hit.decision if hit.epoch == self._epoch else self._describe(hit)
        for hit in rules[1]:
            predicate = hit.predicate
            if predicate is None or predicate(request, attrs):
                return hit.decision if hit.epoch == self._epoch else self._describe(hit)
        decision = self._no_grant.get(key)
        if decision is None:
            reason = f"no grant matches {key[0]} {key[1]}"
            decision = self._no_grant[key] = Decision(False, reason, (), self.version)
        return decision

    def _loaded(self, user_id: str) -> _UserEntry | None:
        """The entry of a user `load_user` gives (module docs), compiled and kept."""
        assert self._load_user is not None
        user = self._load_user(user_id)
        if user is None:
            return None
        self.policy.users[user_id] = user
        entry = self._users[user_id] = self._user_entry(user)
        return entry

    def decide_many(self, requests: Iterable[Request], now: Instant) -> list[Decision]:
        """Decide each request, in order."""
        decide = self.decide
        return [decide(r, now) for r in requests]

    @staticmethod
    def _merge(combo: _Combo, key: Key) -> Entry:
        found = [rules for link in combo.links if (rules := link.index.get(key)) is not None]
        if len(found) == 1:
            merged = found[0]  # one role covers the pair: its own entry is the merge
        elif found:
            denies: list[_Hit] = []
            grants: list[_Hit] = []
            for rules in found:
                denies.extend(rules[0])
                grants.extend(rules[1])
            merged = (tuple(denies), tuple(grants))
        else:
            merged = _NOTHING
        combo.merged[key] = merged
        return merged

    @staticmethod
    def _with_expiring(entry: _UserEntry, rules: Entry, instant: Instant, key: Key) -> Entry:
        mask = 0
        bit = 1
        for expires, _links in entry.expiring:
            if instant < expires:
                mask |= bit
            bit <<= 1
        if not mask:
            return rules
        cached = entry.timed.get((key, mask))
        if cached is not None:
            return cached
        denies = list(rules[0])
        grants = list(rules[1])
        bit = 1
        for _expires, links in entry.expiring:
            if mask & bit:
                for link in links:
                    extra = link.index.get(key)
                    if extra is not None:
                        denies.extend(extra[0])
                        grants.extend(extra[1])
            bit <<= 1
        merged = (tuple(denies), tuple(grants))
        entry.timed[key, mask] = merged
        return merged

    def _refused(self, request: Request, entry: _UserEntry | None) -> Decision:
        """The denial of a suspended user (whatever was asked) or of an unknown one."""
        if entry is not None and entry.suspended is not None:
            decision = entry.suspended
            if decision.policy_version != self.version:  # made before a new version
                decision = entry.suspended = self._suspension(request.user)
            return decision
        return self._unknown(request)

    def _suspension(self, user_id: str) -> Decision:
        # policy-format.md § Additions: this reason, whatever the rules.
        return Decision(False, f"user {user_id} is suspended", (), self.version)

    def _unknown(self, request: Request) -> Decision:
        # Made once per pair and kept (a bounded number): a batch with many
        # unknown users or misspelt actions should not build a Decision each.
        type_name, action = request.resource_type, request.action
        if (type_name, action) in self._keys:
            key = ("user", request.user, "")
            reason = f"unknown user {request.user!r}"
        elif type_name not in self.policy.resource_types:
            key = ("type", type_name, "")
            reason = f"unknown resource type {type_name!r}"
        else:
            key = ("action", type_name, action)
            reason = f"action {action!r} is not listed for resource type {type_name!r}"
        decision = self._unknowns.get(key)
        if decision is None:
            if len(self._unknowns) >= 4096:
                self._unknowns.clear()
            decision = self._unknowns[key] = Decision(False, reason, (), self.version)
        return decision

    def _describe(self, hit: _Hit) -> Decision:
        verb = "granted" if hit.effect is Effect.GRANT else "denied"
        if hit.owner_kind == "user":
            source = f"user:{hit.owner}"
            reason = f"{verb} by a direct rule of user {hit.owner}: {hit.rule.describe()}"
        else:
            name = self.policy.role_name(hit.owner)
            source = f"role:{name}"
            reason = f"{verb} by role {name}: {hit.rule.describe()}"
        match = Match(hit.effect, source, hit.index)
        decision = Decision(hit.effect is Effect.GRANT, reason, (match,), self.version)
        hit.decision = decision
        hit.epoch = self._epoch
        return decision

    # --- questions about the policy ----------------------------------------------------

    def _held_links(self, entry: _UserEntry, instant: Instant) -> list[tuple[_Link, str | None]]:
        """Every link a user holds at `instant`, with the expiry that limits it."""
        result: list[tuple[_Link, str | None]] = [(link, None) for link in entry.combo.links]
        seen = set(entry.combo.roles)
        for assignment in entry.user.roles:
            if (
                assignment.eligible is not None  # not a holding
                or assignment.expires_at is None  # in the combo already
                or not assignment.active_at(instant)
            ):
                continue
            for link in self._closure([assignment.role_id]):
                if link.owner not in seen:
                    seen.add(link.owner)
                    result.append((link, assignment.expires))
        return result

    def effective_permissions(self, user_id: str, now: Instant) -> list[Permission]:
        """Every grant and deny that applies to the user at `now`, with its role path.

        Conditions are listed, not evaluated: they depend on the resource. A
        suspended user has none; eligible roles not activated give none.
        Raises KeyError for an unknown user.
        """
        entry = self._users[user_id]
        if entry.suspended is not None:
            return []
        permissions: list[Permission] = []
        for link, until in self._held_links(entry, now):
            path = (user_id, *(self.policy.role_name(r) for r in link.via))
            for (type_name, action), (denies, grants) in link.index.items():
                for hit in (*denies, *grants):
                    source = (
                        f"user:{user_id}"
                        if hit.owner_kind == "user"
                        else f"role:{self.policy.role_name(hit.owner)}"
                    )
                    condition = hit.rule.condition_text
                    permissions.append(
                        Permission(
                            type_name, action, hit.effect, source, hit.index, path, condition, until
                        )
                    )
        permissions.sort(key=lambda p: (p.resource_type, p.action, p.effect != Effect.DENY))
        return permissions

    def who_can(
        self,
        action: str,
        resource_type: str,
        resource_id: Any = None,
        resource_attrs: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        *,
        now: Instant,
        time: Instant | None = None,
    ) -> list[tuple[str, Decision]]:
        """The users allowed `action` on the resource, each with the deciding grant.

        A suspended user is never listed; an eligible role counts only once activated.
        """
        allowed: list[tuple[str, Decision]] = []
        attrs = resource_attrs or {}
        ctx = context or {}
        users = self._users
        for user_id in self.policy.users:  # the policy's order, however entries were refreshed
            entry = users.get(user_id)
            if entry is not None and entry.suspended is not None:
                continue
            request = Request(user_id, action, resource_type, resource_id, attrs, ctx, time)
            decision = self.decide(request, now)
            if decision.allowed:
                allowed.append((user_id, decision))
        return allowed

    def explain(self, request: Request, now: Instant) -> Explanation:
        """The decision and every step that led to it, in words.

        A suspended user's trace says so first, then lists the roles held
        (suspended or not, the user holds them) but evaluates no rule.
        """
        decision = self.decide(request, now)
        instant = request.time or now
        key = (request.resource_type, request.action)
        when = "context.time" if request.time else "now"
        lines = [
            f"request: user {request.user!r} {request.action} {request.resource_type}"
            f"{':' + str(request.resource_id) if request.resource_id is not None else ''}"
            f" at {format_instant(instant)} ({when})"
        ]
        entry = self._users.get(request.user)
        suspended = entry is not None and entry.suspended is not None
        if suspended:
            lines.append(f"user {request.user!r} is suspended: every request is denied")
        if key not in self._keys or entry is None:
            lines.append(f"decision: denied: {decision.reason}")
            return Explanation(decision, tuple(lines))
        lines.extend(self._trace_roles(entry, instant))
        if suspended:
            lines.append("  (no rule evaluated: the user is suspended)")
            lines.append(f"decision: denied: {decision.reason}")
            return Explanation(decision, tuple(lines))
        held = self._held_links(entry, instant)
        considered = 0
        for effect in (Effect.DENY, Effect.GRANT):
            lines.append(f"{effect.value} rules covering {key[0]} {key[1]}:")
            for link, _until in held:
                rules = link.index.get(key)
                for hit in (rules[0] if effect is Effect.DENY else rules[1]) if rules else ():
                    considered += 1
                    lines.extend(self._trace_hit(link, hit, request, entry))
        if considered == 0:
            lines.append("  (no rule of the user's roles covers this request)")
        verdict = "allowed" if decision.allowed else "denied"
        lines.append(f"decision: {verdict}: {decision.reason}")
        return Explanation(decision, tuple(lines))

    def _trace_roles(self, entry: _UserEntry, instant: Instant) -> list[str]:
        user = entry.user
        label = f" ({user.name})" if user.name else ""
        attributes = json.dumps(dict(user.attributes), ensure_ascii=False)
        lines = [f"user {user.id!r}{label}, attributes {attributes}"]
        if all(a.eligible is not None for a in user.roles):
            lines.append("  holds no roles")
        for assignment in user.roles:
            name = self.policy.role_name(assignment.role_id)
            if assignment.eligible is not None:
                lines.append(f"  {describe_eligibility(assignment, name, instant)}")
                continue
            if assignment.expires is None:
                lines.append(f"  holds role {name}")
            elif assignment.active_at(instant):
                lines.append(f"  holds role {name} until {assignment.expires}")
            else:
                lines.append(f"  held role {name} until {assignment.expires} (expired, ignored)")
            for role_id, path in self.policy.ancestors(assignment.role_id):
                if len(path) > 1:
                    names = " -> ".join(self.policy.role_name(r) for r in path)
                    lines.append(f"    inherits {self.policy.role_name(role_id)} ({names})")
        return lines

    def _trace_hit(self, link: _Link, hit: _Hit, request: Request, entry: _UserEntry) -> list[str]:
        owner = (
            f"user {hit.owner} direct"
            if hit.owner_kind == "user"
            else f"role {self.policy.role_name(hit.owner)}"
        )
        field = "grants" if hit.effect is Effect.GRANT else "denies"
        label = f"  {owner} {field}[{hit.index}]: {hit.rule.describe()}"
        if hit.rule.condition is None:
            return [f"{label} -> matches (no condition)"]
        held = hit.rule.condition.evaluate(request, entry.attrs)
        lines = [f"{label} -> {'matches' if held else 'does not match'}"]
        lines.extend(f"      {line}" for line in hit.rule.condition.trace(request, entry.attrs))
        return lines

    def holders(self, role_ids: set[str]) -> list[str]:
        """Ids of users holding any of `role_ids` (directly or through inheritance).

        Suspended users are listed: they hold their roles, suspended or not,
        and get the role's rules back when resumed. Eligible entries not
        activated are not holdings and make no one a holder.
        """
        found: list[str] = []
        for user_id in self.policy.users:
            entry = self._users.get(user_id)
            if entry is None:
                continue
            if entry.combo.roles & role_ids or any(
                link.owner in role_ids for _, links in entry.expiring for link in links
            ):
                found.append(user_id)
        return found

    # --- changes -----------------------------------------------------------------------

    @contextmanager
    def proposed(self, edits: Iterable[Edit], now: Instant) -> Iterator[Touched]:
        """Decide as if `edits` were applied; on exit the policy and indexes are as before.

        What-if without a second compile: the edits are applied and refreshed
        like any change, then undone. Raises EditRefused for an edit that
        cannot apply (the ones before it are undone too). Not for an engine
        other threads decide with meanwhile.
        """
        undo = Undo(self.policy)
        touched = Touched()
        try:
            for edit in edits:
                touched = touched | self.apply(edit, now, undo=undo)
            yield touched
        finally:
            self.revert(undo, touched)

    def revert(self, undo: Undo, touched: Touched, version: int | None = None) -> None:
        """Take back the edits `undo` recorded (which touched `touched`), e.g. when
        the transaction that was to store them failed; `version` is the one to return to."""
        undo.revert()
        self._refresh_touched(touched, version)

    def apply(
        self, edit: Edit, now: Instant, version: int | None = None, undo: Undo | None = None
    ) -> Touched:
        """Apply `edit` to the policy and update the indexes for what it touched.

        `now` is the time of the edit (for separation-of-duty constraints);
        `version` the policy version it makes, if versions are kept; `undo`
        records what it replaced (see `apply_edit`). Raises EditRefused,
        changing nothing.
        """
        touched = apply_edit(self.policy, edit, now, undo)
        self._refresh_touched(touched, version)
        return touched

    def _refresh_touched(self, touched: Touched, version: int | None = None) -> None:
        self.refresh(
            roles=touched.roles,
            users=touched.users,
            inheritance=touched.inheritance,
            version=version,
        )

    def refresh(
        self,
        *,
        roles: Iterable[str] = (),
        users: Iterable[str] = (),
        inheritance: bool = False,
        resource_types: bool = False,
        version: int | None = None,
    ) -> None:
        """Bring the indexes up to date after the policy changed.

        `roles`/`users`: ids whose own rules or assignments changed (added,
        changed or removed); `inheritance`: role inheritance changed or roles
        were added or removed; `resource_types`: the types or their actions
        changed (re-expands every rule). Work done is proportional to what is
        named, except `resource_types`, which rebuilds everything.
        """
        if self._load_user is not None:
            # A stored user loaded after an edit would not show it.
            raise RuntimeError("an engine that loads stored users only decides: no edit applies")
        if version is not None:
            self.version = version
        self._epoch += 1
        self._no_grant.clear()
        self._unknowns.clear()
        if resource_types:
            self.__init__(self.policy, self.version)  # type: ignore[misc]
            return
        policy = self.policy
        for role_id in roles:
            role = policy.roles.get(role_id)
            index = self._indexes.get(role_id)
            if role is None:
                continue
            fresh = self._index_rules("role", role_id, role)
            if index is None:
                self._indexes[role_id] = fresh
            else:
                # In place: links hold this dict.
                index.clear()
                index.update(fresh)
            for combo in self._combos_by_role.get(role_id, ()):
                combo.merged.clear()
            for timed in self._timed_by_role.get(role_id, ()):
                timed.timed.clear()
        if inheritance:
            self._refresh_inheritance()
        for user_id in users:
            old = self._users.pop(user_id, None)
            if old is not None:
                self._drop_entry(old)
            user = policy.users.get(user_id)
            if user is not None:
                self._users[user_id] = self._user_entry(user)

    def _refresh_inheritance(self) -> None:
        policy = self.policy
        for role_id in [r for r in self._indexes if r not in policy.roles]:
            del self._indexes[role_id]
            self._combos_by_role.pop(role_id, None)
        # Paths may have changed: links are made anew where needed.
        self._links.clear()
        self._ancestry.clear()
        for combo in self._combos.values():
            self._fill_combo(combo)
        for user_id, entry in list(self._users.items()):
            if entry.private or entry.expiring:
                self._drop_entry(entry)
                self._users[user_id] = self._user_entry(entry.user)
