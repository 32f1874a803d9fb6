"""A seeded, deterministic generator of a large fleet tenant and of requests against it.

The tenant follows /work/shared/policy-format.md ("fleetgate.policy/1"): about twenty
hand-written base roles of a fleet company, the rest derived from them per region, depot
or function (a DAG of depth at most five), users with region/depot/clearance/shifts
attributes, time-limited assignments, a few direct grants and denies, and two
separation-of-duty constraints that the generated assignments never break.

Everything random comes from one ``random.Random(seed)``, so a seed names a tenant.

    python -m bench.tenant --out DIR    writes DIR/policy.json and DIR/requests.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from app.policy_files import gc_paused

FORMAT = "fleetgate.policy/1"
TENANT = "bench-fleet"

# The instant the benchmark is set at: expiries fall on both sides of it, and request
# times are spread over the days around it.
REFERENCE_TIME = datetime(2026, 11, 22, tzinfo=UTC)
REQUEST_WINDOW_DAYS = 3

RESOURCE_TYPES: dict[str, list[str]] = {
    "vehicle": ["read", "create", "update", "delete", "dispatch"],
    "driver": ["read", "create", "update", "delete", "assign"],
    "route": ["read", "create", "update", "delete", "assign"],
    "depot": ["read", "create", "update", "delete"],
    "report": ["read", "create", "export", "approve"],
    "user": ["read", "create", "update", "delete"],
    "role": ["read", "create", "update", "delete", "assign"],
    "shift": ["read", "create", "update", "assign", "approve"],
    "maintenance": ["read", "create", "update", "delete", "approve"],
    "fuel-card": ["read", "create", "update", "delete", "approve"],
}

REGION_NAMES = ["north", "south", "east", "west", "central", "coast", "highlands", "metro"]
DEPOTS_PER_REGION = 6
CLASSIFICATIONS = ["public", "internal", "confidential"]
CLASSIFICATION_WEIGHTS = [50, 35, 15]
SHIFTS = ["early", "day", "late", "night", "weekend"]
FUNCTIONS = ["hazmat", "cold-chain", "express", "airport", "port", "night-ops", "intl"]
MAX_DEPTH = 5

FIRST_NAMES = [
    "Aisha", "Alex", "Amara", "Ana", "Arjun", "Ben", "Carla", "Chen", "Daniel", "Dmitri",
    "Elena", "Emeka", "Fatima", "Felix", "Grace", "Hannah", "Hiro", "Ines", "Ivan", "Jamal",
    "Jana", "Jonas", "Kai", "Karin", "Leila", "Liam", "Lucia", "Malik", "Maria", "Mateo",
    "Mei", "Nadia", "Noah", "Olga", "Omar", "Paula", "Priya", "Rafael", "Rosa", "Sam",
    "Sara", "Sofia", "Tariq", "Tomas", "Uma", "Victor", "Wei", "Yara", "Yusuf", "Zoe",
]  # fmt: skip
LAST_NAMES = [
    "Adeyemi", "Andersen", "Baker", "Bauer", "Costa", "Dubois", "Evans", "Fischer", "Garcia",
    "Gupta", "Hansen", "Ivanova", "Jensen", "Kaur", "Kim", "Kowalski", "Larsen", "Lopez",
    "Martin", "Meyer", "Moreau", "Murphy", "Nakamura", "Ng", "Novak", "Okafor", "Olsen",
    "Patel", "Petrov", "Quinn", "Rossi", "Santos", "Schmidt", "Silva", "Singh", "Smith",
    "Sousa", "Tanaka", "Torres", "Varga", "Wagner", "Walsh", "Weber", "Wong", "Yilmaz",
]  # fmt: skip

NOT_CONFIDENTIAL: dict[str, Any] = {"not": {"resource.classification": "confidential"}}
SAME_REGION: dict[str, Any] = {"resource.region": "$user.region"}
SAME_DEPOT: dict[str, Any] = {"resource.depot": "$user.depot"}
OFF_HOURS: dict[str, Any] = {"any": [{"context.hour": {"lt": 6}}, {"context.hour": {"gte": 22}}]}


def _rule(resource: str, actions: list[str], when: dict[str, Any] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"resource": resource, "actions": actions}
    if when is not None:
        rule["when"] = when
    return rule


# Base roles: (name, inherits, description, grants, denies). Inheritance only points to
# earlier entries, so the list is already in topological order.
BASE_ROLES: list[tuple[str, list[str], str, list[dict[str, Any]], list[dict[str, Any]]]] = [
    (
        "viewer",
        [],
        "Read-only access to non-confidential fleet data",
        [_rule("*", ["read"], NOT_CONFIDENTIAL)],
        [],
    ),
    (
        "driver",
        ["viewer"],
        "Drives assigned routes; updates route status at their depot",
        [
            _rule("route", ["update"], SAME_DEPOT),
            _rule("maintenance", ["create"], SAME_DEPOT),
            _rule("shift", ["read"]),
        ],
        [_rule("vehicle", ["dispatch"])],
    ),
    (
        "dispatcher",
        ["viewer"],
        "Plans and dispatches routes and vehicles in their region",
        [
            _rule("route", ["create", "update", "assign"], SAME_REGION),
            _rule("vehicle", ["dispatch"], {**SAME_REGION, "context.hour": {"gte": 5}}),
            _rule("driver", ["read", "assign"], SAME_REGION),
        ],
        [],
    ),
    (
        "route-planner",
        ["viewer"],
        "Designs routes for a region",
        [_rule("route", ["*"], SAME_REGION)],
        [_rule("route", ["delete"], OFF_HOURS)],
    ),
    (
        "shift-lead",
        ["driver"],
        "Runs a shift at a depot",
        [_rule("shift", ["create", "update", "assign"], SAME_DEPOT)],
        [],
    ),
    (
        "depot-supervisor",
        ["dispatcher", "shift-lead"],
        "Supervises one depot: shifts, maintenance sign-off",
        [
            _rule("depot", ["read", "update"], SAME_DEPOT),
            _rule("shift", ["approve"], SAME_DEPOT),
            _rule("maintenance", ["approve"], SAME_DEPOT),
        ],
        [],
    ),
    (
        "fleet-manager",
        ["depot-supervisor"],
        "Manages vehicles and drivers of a region",
        [
            _rule("vehicle", ["*"], SAME_REGION),
            _rule("driver", ["*"], SAME_REGION),
            _rule(
                "report", ["read", "export"], {"resource.classification": {"ne": "confidential"}}
            ),
        ],
        [],
    ),
    (
        "maintenance-tech",
        ["viewer"],
        "Services vehicles at their depot",
        [
            _rule("maintenance", ["read", "create", "update"], SAME_DEPOT),
            _rule("vehicle", ["update"], SAME_DEPOT),
        ],
        [],
    ),
    (
        "maintenance-lead",
        ["maintenance-tech"],
        "Leads maintenance for a region",
        [_rule("maintenance", ["*"], SAME_REGION)],
        [],
    ),
    (
        "fuel-manager",
        ["viewer"],
        "Issues and manages fuel cards",
        [
            _rule("fuel-card", ["*"]),
            _rule(
                "report", ["export"], {"resource.classification": {"in": ["public", "internal"]}}
            ),
        ],
        [],
    ),
    (
        "safety-auditor",
        ["viewer"],
        "Audits safety records, including confidential reports",
        [
            _rule("report", ["read", "export"]),
            _rule("maintenance", ["read"]),
            _rule("driver", ["read"]),
        ],
        [_rule("report", ["approve"])],
    ),
    (
        "compliance-officer",
        ["viewer"],
        "Signs off compliance reports",
        [_rule("report", ["read", "approve"], {"user.clearance": {"gte": 3}})],
        [],
    ),
    (
        "finance-clerk",
        ["viewer"],
        "Bookkeeping for fuel cards",
        [
            _rule("fuel-card", ["read", "update"]),
            _rule("report", ["read"], {"resource.classification": {"in": ["public", "internal"]}}),
        ],
        [],
    ),
    (
        "payment-creator",
        ["finance-clerk"],
        "Raises fuel-card payments",
        [_rule("fuel-card", ["create"]), _rule("report", ["create"])],
        [],
    ),
    (
        "payment-approver",
        ["finance-clerk"],
        "Approves fuel-card payments",
        [
            _rule("fuel-card", ["approve"]),
            _rule("report", ["approve"], {"user.clearance": {"gte": 2}}),
        ],
        [],
    ),
    (
        "hr-admin",
        ["viewer"],
        "Hires and manages drivers and staff accounts",
        [
            _rule("driver", ["*"]),
            _rule("user", ["read", "create", "update"]),
            _rule("shift", ["read"]),
        ],
        [],
    ),
    (
        "it-admin",
        ["viewer"],
        "Administers user accounts and assigns non-admin roles",
        [
            _rule("user", ["*"]),
            _rule(
                "role",
                ["read", "assign"],
                {"not": {"resource.id": {"in": ["tenant-admin", "it-admin"]}}},
            ),
        ],
        [],
    ),
    (
        "tenant-admin",
        ["it-admin"],
        "Full administration of the tenant's roles and users",
        [_rule("role", ["*"]), _rule("user", ["*"])],
        [],
    ),
    (
        "reporting-analyst",
        ["viewer"],
        "Builds and exports reports",
        [
            _rule(
                "report",
                ["read", "export"],
                {
                    "any": [
                        {"resource.classification": {"ne": "confidential"}},
                        {"user.clearance": {"gte": 3}},
                    ]
                },
            ),
        ],
        [],
    ),
    (
        "night-dispatcher",
        ["dispatcher"],
        "Dispatches overnight",
        [_rule("vehicle", ["dispatch"], {**SAME_REGION, "user.shifts": {"contains": "night"}})],
        [],
    ),
    (
        "contractor",
        ["driver"],
        "External driver; no confidential data, no personnel records",
        [],
        [
            _rule("report", ["*"], {"resource.classification": "confidential"}),
            _rule("driver", ["read"]),
        ],
    ),
]

CONSTRAINTS: list[dict[str, Any]] = [
    {"name": "payments-sod", "exclusive": ["payment-creator", "payment-approver"]},
    {"name": "audit-independence", "exclusive": ["safety-auditor", "fleet-manager"]},
]


def region_names(count: int) -> list[str]:
    """Return ``count`` region names: the eight familiar ones, then ``region-9``, ..."""
    return [REGION_NAMES[i] if i < len(REGION_NAMES) else f"region-{i + 1}" for i in range(count)]


def depot_names(region: str) -> list[str]:
    """Return the depot codes of ``region`` (``north-01`` ... ``north-06``)."""
    return [f"{region}-{k:02d}" for k in range(1, DEPOTS_PER_REGION + 1)]


def rfc3339(instant: datetime) -> str:
    """Format an aware datetime as RFC 3339 in UTC with a ``Z`` suffix."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _RoleFactory:
    """Makes derived roles' rules; all randomness comes from the injected generator."""

    def __init__(self, rng: random.Random, regions: list[str]) -> None:
        self.rng = rng
        self.regions = regions
        self.types = list(RESOURCE_TYPES)

    def condition(self, region: str | None, depot: str | None) -> dict[str, Any]:
        """Pick a realistic ``when`` condition, scoped to a region or depot when given."""
        rng = self.rng
        scope_region = region or rng.choice(self.regions)
        depots = depot_names(scope_region)
        choices: list[Callable[[], dict[str, Any]]] = [
            lambda: dict(SAME_REGION),
            lambda: dict(SAME_DEPOT),
            lambda: {"resource.region": scope_region},
            lambda: {"resource.depot": {"in": [depot] if depot else rng.sample(depots, 2)}},
            lambda: {"resource.depot": {"not_in": rng.sample(depots, 2)}},
            lambda: {"context.hour": {"gte": rng.choice([5, 6, 7])}},
            lambda: {"context.hour": {"lt": rng.choice([20, 21, 22])}},
            lambda: {"resource.classification": {"ne": "confidential"}},
            lambda: dict(NOT_CONFIDENTIAL),
            lambda: {"resource.classification": {"in": ["public", "internal"]}},
            lambda: {"user.clearance": {"gte": rng.choice([1, 2, 3])}},
            lambda: {"user.shifts": {"contains": rng.choice(SHIFTS)}},
            lambda: {"any": [dict(SAME_REGION), {"user.clearance": {"gte": 3}}]},
            lambda: {**SAME_REGION, "context.hour": {"gte": 6}},
            lambda: {
                "all": [
                    dict(SAME_DEPOT),
                    {"not": {"resource.classification": {"in": ["confidential"]}}},
                ]
            },
        ]
        return rng.choice(choices)()

    def deny_condition(self) -> dict[str, Any] | None:
        """Pick what a deny usually says: confidential data, off hours, or nothing."""
        return self.rng.choice(
            [
                {"resource.classification": "confidential"},
                dict(OFF_HOURS),
                {"user.clearance": {"lt": 1}},
                None,
            ]
        )

    def rule(self, region: str | None, depot: str | None, deny: bool) -> dict[str, Any]:
        """Make one rule covering a type (or ``*``) and some of its listed actions."""
        rng = self.rng
        if rng.random() < 0.1:
            resource = "*"
            actions = ["read"] if rng.random() < 0.6 else ["*"]
        else:
            resource = rng.choice(self.types)
            listed = RESOURCE_TYPES[resource]
            roll = rng.random()
            if roll < 0.3:
                actions = ["read"]
            elif roll < 0.4:
                actions = ["*"]
            else:
                actions = sorted(rng.sample(listed, rng.randint(1, 3)), key=listed.index)
        if deny:
            when = self.deny_condition()
            if when is None and (resource == "*" or actions == ["*"]):
                # A blanket deny would switch off every role inheriting this one.
                when = {"resource.classification": "confidential"}
        else:
            # An unconditional grant of everything would make most requests allowed.
            p_when = 0.9 if actions == ["*"] and resource == "*" else 0.3
            when = self.condition(region, depot) if rng.random() < p_when else None
        return _rule(resource, actions, when)


def _closures(roles: list[dict[str, Any]]) -> dict[str, frozenset[str]]:
    """Map each role name to the set of roles held by holding it (itself included)."""
    closure: dict[str, frozenset[str]] = {}
    for role in roles:  # topological order: parents come first
        held = {role["name"]}
        for parent in role.get("inherits", []):
            held |= closure[parent]
        closure[role["name"]] = frozenset(held)
    return closure


def _breaks_constraint(held: frozenset[str], constraints: list[dict[str, Any]]) -> bool:
    return any(len(held.intersection(c["exclusive"])) > 1 for c in constraints)


def generate_tenant(
    seed: int = 1, roles: int = 1000, users: int = 50_000, regions: int = 8
) -> dict[str, Any]:
    """Generate a fleet tenant policy document (format ``fleetgate.policy/1``).

    Args:
        seed: seeds the single ``random.Random`` all choices come from.
        roles: total number of roles, at least the number of base roles (21).
        users: number of users, with ids ``u00001``, ``u00002``, ...
        regions: number of regions users and derived roles are spread over.

    Raises:
        ValueError: if ``roles`` is smaller than the number of base roles or
            ``regions`` is not positive.
    """
    if roles < len(BASE_ROLES):
        raise ValueError(f"roles must be at least {len(BASE_ROLES)}")
    if regions < 1:
        raise ValueError("regions must be positive")
    with gc_paused():
        return _generate_tenant(seed, roles, users, regions)


def _generate_tenant(seed: int, roles: int, users: int, regions: int) -> dict[str, Any]:
    rng = random.Random(seed)
    region_list = region_names(regions)
    factory = _RoleFactory(rng, region_list)

    role_docs: list[dict[str, Any]] = []
    family: dict[str, str] = {}
    depth: dict[str, int] = {}
    scope_region: dict[str, str | None] = {}
    for name, inherits, description, base_grants, base_denies in BASE_ROLES:
        role_docs.append(
            {
                "name": name,
                "description": description,
                "inherits": list(inherits),
                "grants": [dict(g) for g in base_grants],
                "denies": [dict(d) for d in base_denies],
            }
        )
        family[name] = name
        depth[name] = 1 + max((depth[p] for p in inherits), default=0)
        scope_region[name] = None
    closure = _closures(role_docs)
    base_names = [r["name"] for r in role_docs]

    names_taken = set(base_names)
    while len(role_docs) < roles:
        eligible_base = [n for n in base_names if depth[n] < MAX_DEPTH]
        parent = rng.choice(eligible_base)
        if len(role_docs) > len(BASE_ROLES) and rng.random() < 0.4:
            candidate = role_docs[rng.randrange(len(BASE_ROLES), len(role_docs))]["name"]
            if depth[candidate] < MAX_DEPTH:
                parent = candidate
        parents = [parent]
        if rng.random() < 0.3:
            other = rng.choice(eligible_base)
            combined = closure[parent] | closure[other]
            if other not in parents and not _breaks_constraint(combined, CONSTRAINTS):
                parents.append(other)
        if _breaks_constraint(frozenset().union(*(closure[p] for p in parents)), CONSTRAINTS):
            continue

        kind = rng.random()
        region: str | None = scope_region[parent]
        depot: str | None = None
        if kind < 0.4:
            region = region or rng.choice(region_list)
            scope = region
            what = f"{region} region"
        elif kind < 0.8:
            region = region or rng.choice(region_list)
            depot = rng.choice(depot_names(region))
            scope = depot
            what = f"depot {depot}"
        else:
            scope = rng.choice(FUNCTIONS)
            what = f"{scope} operations"
        stem = f"{family[parent]}-{scope}"
        name, k = stem, 2
        while name in names_taken:
            name, k = f"{stem}-{k}", k + 1
        names_taken.add(name)

        rule_count = rng.randint(1, 6)
        grants: list[dict[str, Any]] = []
        denies: list[dict[str, Any]] = []
        for _ in range(rule_count):
            deny = rng.random() < 0.05
            (denies if deny else grants).append(factory.rule(region, depot, deny))
        title = family[parent].replace("-", " ").capitalize()
        role_docs.append(
            {
                "name": name,
                "description": f"{title}, {what}",
                "inherits": parents,
                "grants": grants,
                "denies": denies,
            }
        )
        family[name] = family[parent]
        depth[name] = 1 + max(depth[p] for p in parents)
        scope_region[name] = region
        closure[name] = frozenset({name}).union(*(closure[p] for p in parents))

    role_names = [r["name"] for r in role_docs]
    derived_by_region: dict[str, list[str]] = {r: [] for r in region_list}
    for name in role_names[len(BASE_ROLES) :]:
        scoped = scope_region[name]
        if scoped is not None:
            derived_by_region[scoped].append(name)

    width = max(5, len(str(users)))
    user_docs: list[dict[str, Any]] = []
    for i in range(1, users + 1):
        region = rng.choice(region_list)
        attributes: dict[str, Any] = {
            "region": region,
            "depot": rng.choice(depot_names(region)),
            "clearance": rng.choices([0, 1, 2, 3, 4], weights=[30, 35, 20, 10, 5])[0],
            "shifts": sorted(rng.sample(SHIFTS, rng.randint(1, 2)), key=SHIFTS.index),
        }
        wanted = rng.choices([1, 2, 3], weights=[50, 35, 15])[0]
        held: frozenset[str] = frozenset()
        assignments: list[dict[str, Any]] = []
        for _attempt in range(wanted * 4):
            if len(assignments) == wanted:
                break
            roll = rng.random()
            local = derived_by_region[region]
            if roll < 0.45 and local:
                role = rng.choice(local)
            elif roll < 0.75:
                role = rng.choice(base_names)
            else:
                role = rng.choice(role_names)
            if any(a["role"] == role for a in assignments):
                continue
            # Separation of duty: count every assignment, expired or not, which is
            # stricter than policy-format.md asks and so never breaks a constraint.
            if _breaks_constraint(held | closure[role], CONSTRAINTS):
                continue
            held |= closure[role]
            assignment: dict[str, Any] = {"role": role}
            if rng.random() < 0.1:
                offset = timedelta(days=rng.randint(-60, 90), hours=rng.choice([0, 0, 12]))
                assignment["expires"] = rfc3339(REFERENCE_TIME + offset)
            assignments.append(assignment)
        user: dict[str, Any] = {
            "id": f"u{i:0{width}d}",
            "name": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
            "attributes": attributes,
            "roles": assignments,
        }
        if rng.random() < 0.02:
            if rng.random() < 0.6:
                user["grants"] = [factory.rule(region, attributes["depot"], deny=False)]
            else:
                user["denies"] = [factory.rule(region, attributes["depot"], deny=True)]
        user_docs.append(user)

    return {
        "format": FORMAT,
        "tenant": TENANT,
        "resource_types": {t: list(a) for t, a in RESOURCE_TYPES.items()},
        "roles": role_docs,
        "users": user_docs,
        "constraints": [dict(c) for c in CONSTRAINTS],
    }


def generate_requests(
    policy: dict[str, Any], count: int = 200_000, seed: int = 2
) -> list[dict[str, Any]]:
    """Generate ``count`` requests against ``policy`` (request format of policy-format.md).

    Mostly known users and listed actions, with about 2% unknown users, 0.5% unknown
    resource types and 1.5% unlisted actions (all of which must be denied). Resources
    are usually in the user's region or depot, so conditions go both ways. Times lie
    within three days either side of 2026-11-22 (UTC) and ``context.hour`` matches them.
    """
    with gc_paused():
        return _generate_requests(policy, count, seed)


def _generate_requests(policy: dict[str, Any], count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    # rng.random() with arithmetic instead of choice()/choices()/randrange(): 200,000
    # requests must take about a second, and this is the loop that decides that.
    rand = rng.random
    types = policy["resource_types"]
    type_names = list(types)
    users = [(u["id"], u.get("attributes", {})) for u in policy.get("users", [])]
    regions = sorted({a["region"] for _, a in users if "region" in a}) or REGION_NAMES[:1]
    depots = {r: depot_names(r) for r in regions}
    role_names = [r["name"] for r in policy.get("roles", [])] or ["r-1"]
    prefixes = {t: t.split("-")[0][:3] for t in type_names}
    classification_pool = [
        c for c, w in zip(CLASSIFICATIONS, CLASSIFICATION_WEIGHTS, strict=True) for _ in range(w)
    ]
    first_day = REFERENCE_TIME - timedelta(days=REQUEST_WINDOW_DAYS)
    days = [
        (first_day + timedelta(days=d)).strftime("%Y-%m-%d") for d in range(2 * REQUEST_WINDOW_DAYS)
    ]

    def pick(items: list[Any]) -> Any:
        return items[int(rand() * len(items))]

    requests: list[dict[str, Any]] = []
    for _ in range(count):
        if rand() < 0.02 or not users:
            user_id, attrs = f"x{int(rand() * 10**6):06d}", {}
        else:
            user_id, attrs = pick(users)
        if rand() < 0.005:
            rtype = pick(["trailer", "warehouse", "*"])
            action = pick(["read", "update"])
        else:
            rtype = pick(type_names)
            listed = types[rtype]
            roll = rand()
            if roll < 0.015:
                action = pick(["purge", "approve", "dispatch", "*"])
            elif roll < 0.5 and "read" in listed:
                action = "read"
            else:
                action = pick(listed)
        region = attrs.get("region")
        if region is None or rand() < 0.35:
            region = pick(regions)
        if region == attrs.get("region") and rand() < 0.5:
            depot = attrs["depot"]
        else:
            depot = pick(depots[region])
        if rtype == "role":
            resource_id = pick(role_names)
        else:
            resource_id = f"{prefixes.get(rtype, 'x')}-{1 + int(rand() * 99_999)}"
        second = int(rand() * 86_400)
        hour = second // 3600
        time = f"{pick(days)}T{hour:02d}:{second // 60 % 60:02d}:{second % 60:02d}Z"
        requests.append(
            {
                "user": user_id,
                "action": action,
                "resource": {
                    "type": rtype,
                    "id": resource_id,
                    "attributes": {
                        "region": region,
                        "depot": depot,
                        "classification": pick(classification_pool),
                    },
                },
                "context": {"time": time, "hour": hour},
            }
        )
    return requests


def _dumps(value: Any) -> bytes:
    try:
        import orjson
    except ImportError:
        return json.dumps(value, separators=(",", ":")).encode()
    return orjson.dumps(value)


def write_benchmark(out: Path, policy: dict[str, Any], requests: list[dict[str, Any]]) -> None:
    """Write ``out/policy.json`` and ``out/requests.jsonl`` (one request per line)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "policy.json").write_bytes(_dumps(policy) + b"\n")
    with (out / "requests.jsonl").open("wb") as stream:
        stream.writelines(_dumps(request) + b"\n" for request in requests)


def benchmark_folder(out: Path, roles: int, users: int, requests: int, seed: int) -> Path:
    """`out/tenant-<sizes>-s<seed>`, holding that tenant and its requests (generated
    the first time they are asked for; the benchmarks share them)."""
    folder = out / f"tenant-{roles}r-{users}u-{requests}q-s{seed}"
    if not (folder / "requests.jsonl").exists():
        print(f"generating {folder.name} ...", flush=True)
        policy = generate_tenant(seed, roles, users, 8)
        write_benchmark(folder, policy, generate_requests(policy, requests, seed + 1))
    return folder


def main(argv: list[str] | None = None) -> int:
    """Command line: write a generated tenant and its requests to a directory."""
    parser = argparse.ArgumentParser(prog="python -m bench.tenant", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    parser.add_argument("--seed", type=int, default=1, help="tenant seed (default 1)")
    parser.add_argument("--roles", type=int, default=1000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--regions", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--request-seed", type=int, default=2)
    args = parser.parse_args(argv)
    policy = generate_tenant(args.seed, args.roles, args.users, args.regions)
    requests = generate_requests(policy, args.requests, args.request_seed)
    write_benchmark(args.out, policy, requests)
    print(
        f"wrote {args.out / 'policy.json'} ({len(policy['roles'])} roles, "
        f"{len(policy['users'])} users) and {args.out / 'requests.jsonl'} "
        f"({len(requests)} requests)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
