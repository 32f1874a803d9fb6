"""Write acme-logistics.json, the demo tenant Fleetgate shows on first start.

The roles and their rules are written out by hand below; the ~220 staff are generated
from a fixed seed (a supervisor, drivers and technicians per depot, a regional team per
region, and the head-office functions), so running this again gives the same file:

    python resources/demo/make_demo.py            writes acme-logistics.json beside it

The script checks its output against policy-format.md before writing (references,
listed actions, ``$`` paths, the separation-of-duty constraint) and stops on a mistake.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

SEED = 2026
OUT = Path(__file__).with_name("acme-logistics.json")

RESOURCE_TYPES: dict[str, list[str]] = {
    "vehicle": ["read", "create", "update", "delete", "dispatch"],
    "driver": ["read", "create", "update", "delete", "assign"],
    "route": ["read", "create", "update", "delete", "assign"],
    "depot": ["read", "create", "update", "delete"],
    "shift": ["read", "create", "update", "assign", "approve"],
    "maintenance": ["read", "create", "update", "approve"],
    "fuel-card": ["read", "create", "update", "block"],
    "payment": ["read", "create", "approve", "export"],
    "report": ["read", "create", "export"],
    "audit-log": ["read", "export"],
    "user": ["read", "create", "update", "delete"],
    # escalate: conferring permissions one does not hold oneself (only tenant-admin).
    "role": ["read", "create", "update", "delete", "assign", "escalate"],
}

DEPOTS: dict[str, list[str]] = {
    "northeast": ["boston", "newark", "albany"],
    "southeast": ["atlanta", "charlotte", "jacksonville"],
    "midwest": ["chicago", "columbus", "st-louis"],
    "southwest": ["dallas", "houston", "phoenix"],
    "west": ["oakland", "portland", "denver"],
}
HEAD_OFFICE = ("midwest", "chicago")

SAME_REGION = {"resource.region": "$user.region"}
SAME_DEPOT = {"resource.depot": "$user.depot"}
BUSINESS_HOURS = {"all": [{"context.hour": {"gte": 7}}, {"context.hour": {"lt": 19}}]}
OUTSIDE_BUSINESS_HOURS = {"any": [{"context.hour": {"lt": 7}}, {"context.hour": {"gte": 19}}]}


def rule(resource: str, actions: list[str], when: dict[str, Any] | None = None) -> dict[str, Any]:
    """One grant or deny; ``when`` omitted means it always holds."""
    out: dict[str, Any] = {"resource": resource, "actions": actions}
    if when is not None:
        out["when"] = when
    return out


def role(
    name: str,
    description: str,
    inherits: list[str],
    grants: list[dict[str, Any]],
    denies: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One role of the tenant."""
    return {
        # The id is the name it was created with: a rule about a role names it by
        # id (`resource.id`), which stays when the role is renamed.
        "id": name,
        "name": name,
        "description": description,
        "inherits": inherits,
        "grants": grants,
        "denies": denies or [],
    }


ROLES = [
    role(
        "viewer",
        "Read-only view of day-to-day operations: vehicles, routes, depots, shifts and "
        "non-confidential reports.",
        [],
        [
            rule("vehicle", ["read"]),
            rule("route", ["read"]),
            rule("depot", ["read"]),
            rule("shift", ["read"]),
            rule("report", ["read"], {"resource.classification": {"in": ["public", "internal"]}}),
        ],
    ),
    role(
        "driver",
        "Drives assigned routes: reports progress on their own routes, raises vehicle "
        "defects at their home depot and sees their own fuel card.",
        ["viewer"],
        [
            rule("route", ["update"], {"resource.assigned_driver": "$user.id"}),
            rule("maintenance", ["create"], SAME_DEPOT),
            rule("fuel-card", ["read"], {"resource.holder": "$user.id"}),
        ],
        [
            # No one dispatches the vehicle they drive themselves, even on dispatch cover.
            rule("vehicle", ["dispatch"], {"resource.assigned_driver": "$user.id"}),
            rule("report", ["export"]),
        ],
    ),
    role(
        "contract-driver",
        "External contract driver: driver access limited to their own region and to "
        "public reports. Assignments carry the contract end date.",
        ["driver"],
        [],
        [
            rule("report", ["read"], {"not": {"resource.classification": "public"}}),
            rule("route", ["read"], {"not": SAME_REGION}),
        ],
    ),
    role(
        "dispatcher",
        "Dispatch desk: creates and assigns routes and dispatches vehicles in their region "
        "between 05:00 and 22:00.",
        ["viewer"],
        [
            rule("route", ["create", "update", "assign"], SAME_REGION),
            rule(
                "vehicle",
                ["dispatch"],
                {"all": [SAME_REGION, {"context.hour": {"gte": 5}}, {"context.hour": {"lt": 22}}]},
            ),
            rule("driver", ["read", "assign"], SAME_REGION),
        ],
        [
            # A vehicle flagged out of service stays in the yard, whoever asks.
            rule("vehicle", ["dispatch"], {"resource.status": "out-of-service"}),
        ],
    ),
    role(
        "night-dispatcher",
        "Overnight dispatch desk: dispatches vehicles in their region from 22:00 to 05:00.",
        ["dispatcher"],
        [
            rule(
                "vehicle",
                ["dispatch"],
                {
                    "all": [
                        SAME_REGION,
                        {"any": [{"context.hour": {"gte": 22}}, {"context.hour": {"lt": 5}}]},
                    ]
                },
            ),
        ],
    ),
    role(
        "depot-supervisor",
        "Runs one depot: rosters and approves shifts, signs off maintenance, manages the "
        "depot record, its drivers and its fuel cards.",
        ["dispatcher"],
        [
            rule("shift", ["create", "update", "assign", "approve"], SAME_DEPOT),
            rule("maintenance", ["read", "approve"], SAME_DEPOT),
            rule("depot", ["update"], {"resource.id": "$user.depot"}),
            rule("driver", ["update"], SAME_DEPOT),
            rule("fuel-card", ["read", "block"], SAME_DEPOT),
        ],
    ),
    role(
        "fleet-manager",
        "Owns the fleet of a region: acquisitions and disposals, driver staffing, route "
        "retirement and regional reporting.",
        ["depot-supervisor"],
        [
            rule("vehicle", ["create", "update", "delete"], SAME_REGION),
            rule("driver", ["create", "update", "delete"], SAME_REGION),
            rule("route", ["delete"], SAME_REGION),
            rule(
                "report",
                ["create", "export"],
                {**SAME_REGION, "resource.classification": {"ne": "confidential"}},
            ),
            rule("fuel-card", ["create", "update"], SAME_REGION),
        ],
        [
            # Disposals are signed off in office hours only.
            rule("vehicle", ["delete"], OUTSIDE_BUSINESS_HOURS),
        ],
    ),
    role(
        "operations-director",
        "Runs operations across every region, including confidential incident reports.",
        ["fleet-manager"],
        [
            rule("vehicle", ["*"]),
            rule("route", ["*"]),
            rule("driver", ["*"]),
            rule("report", ["read", "create", "export"]),
            rule("audit-log", ["read"]),
        ],
    ),
    role(
        "maintenance-tech",
        "Workshop technician: inspects and repairs vehicles at their depot.",
        ["viewer"],
        [
            rule("maintenance", ["read", "create", "update"], SAME_DEPOT),
            rule("vehicle", ["update"], SAME_DEPOT),
        ],
    ),
    role(
        "maintenance-lead",
        "Leads the workshops of a region and approves work orders, except their own.",
        ["maintenance-tech"],
        [rule("maintenance", ["read", "approve"], SAME_REGION)],
        [rule("maintenance", ["approve"], {"resource.assigned_tech": "$user.id"})],
    ),
    role(
        "safety-auditor",
        "Independent safety and compliance audits: reads safety records and confidential "
        "reports, exports evidence, changes nothing.",
        ["viewer"],
        [
            rule("report", ["read", "export"]),
            rule("maintenance", ["read"]),
            rule("driver", ["read"]),
            rule("audit-log", ["read", "export"]),
        ],
    ),
    role(
        "finance-clerk",
        "Bookkeeping: reconciles fuel cards and payments.",
        ["viewer"],
        [
            rule("fuel-card", ["read", "update"]),
            rule("payment", ["read", "export"]),
        ],
        [rule("payment", ["export"], {"resource.classification": "confidential"})],
    ),
    role(
        "payment-creator",
        "Raises supplier and fuel payments of up to 25,000.",
        ["finance-clerk"],
        [rule("payment", ["create"], {"resource.amount": {"lte": 25000}})],
    ),
    role(
        "payment-approver",
        "Approves payments raised by others, up to their personal approval limit, in office hours.",
        ["finance-clerk"],
        [
            rule(
                "payment",
                ["approve"],
                {"resource.amount": {"lte": "$user.approval_limit"}, **BUSINESS_HOURS},
            ),
        ],
        [rule("payment", ["approve"], {"resource.created_by": "$user.id"})],
    ),
    role(
        "hr-admin",
        "People team: hires drivers and staff and keeps their records; cannot change their "
        "own account.",
        ["viewer"],
        [
            rule("driver", ["read", "create", "update", "delete"]),
            rule("user", ["read", "create", "update"]),
        ],
        [rule("user", ["update"], {"resource.id": "$user.id"})],
    ),
    role(
        "it-admin",
        "IT service desk: manages user accounts and assigns operational roles; cannot hand "
        "out administrator or payment-approval roles.",
        ["viewer"],
        [
            rule("user", ["read", "create", "update", "delete"]),
            rule("role", ["read"]),
            rule(
                "role",
                ["assign"],
                {"resource.id": {"not_in": ["tenant-admin", "it-admin", "payment-approver"]}},
            ),
            rule("audit-log", ["read"]),
        ],
    ),
    role(
        "tenant-admin",
        "Administers Fleetgate for Acme Logistics: defines and changes roles, assigns any "
        "role, manages every account.",
        ["it-admin"],
        [
            rule("role", ["read", "create", "update", "delete", "assign", "escalate"]),
            rule("user", ["*"]),
            rule("audit-log", ["read", "export"]),
        ],
        [
            # Deleting the administrator role would lock everyone out of administration.
            rule("role", ["delete"], {"resource.id": "tenant-admin"}),
        ],
    ),
]

CONSTRAINTS = [{"name": "payments-sod", "exclusive": ["payment-creator", "payment-approver"]}]

FIRST_NAMES = [
    "Aaliyah", "Adam", "Adrian", "Aisha", "Alejandro", "Alicia", "Amanda", "Andre", "Angela",
    "Anthony", "Ashley", "Benjamin", "Brandon", "Brianna", "Carlos", "Carmen", "Chloe",
    "Christopher", "Daniel", "Darnell", "David", "Deborah", "Destiny", "Diego", "Dmitri",
    "Elena", "Emily", "Eric", "Fatima", "Gabriel", "Grace", "Hannah", "Hector", "Imani",
    "Isaac", "Jacob", "Jamal", "Jasmine", "Jennifer", "Jessica", "Jorge", "Joseph", "Juan",
    "Julia", "Kayla", "Kenji", "Kevin", "Keisha", "Laura", "Lauren", "Linh", "Luis",
    "Malik", "Marcus", "Maria", "Mark", "Megan", "Michael", "Michelle", "Miguel", "Minh",
    "Nadia", "Natalie", "Nicole", "Omar", "Patrick", "Priya", "Rachel", "Rafael", "Raj",
    "Rebecca", "Ricardo", "Robert", "Rosa", "Samantha", "Samuel", "Sarah", "Sean", "Sofia",
    "Stephanie", "Tamika", "Terrence", "Thomas", "Tyler", "Valentina", "Victor", "Wei",
    "William", "Xavier", "Yolanda", "Zachary",
]  # fmt: skip
LAST_NAMES = [
    "Adams", "Alvarez", "Anderson", "Baker", "Bennett", "Brooks", "Brown", "Campbell",
    "Carter", "Castillo", "Chen", "Clark", "Collins", "Cooper", "Cruz", "Davis", "Diaz",
    "Edwards", "Evans", "Flores", "Foster", "Garcia", "Gomez", "Gonzalez", "Green",
    "Gutierrez", "Hall", "Harris", "Hernandez", "Hill", "Howard", "Hughes", "Jackson",
    "James", "Jenkins", "Johnson", "Jones", "Kelly", "Kim", "King", "Lee", "Lewis",
    "Lopez", "Martin", "Martinez", "Mendoza", "Miller", "Mitchell", "Moore", "Morales",
    "Morgan", "Murphy", "Nguyen", "Nelson", "Okafor", "Ortiz", "Patel", "Perez", "Peterson",
    "Phillips", "Price", "Ramirez", "Reed", "Reyes", "Richardson", "Rivera", "Roberts",
    "Robinson", "Rodriguez", "Ross", "Russell", "Sanchez", "Scott", "Shah", "Singh",
    "Smith", "Stewart", "Sullivan", "Taylor", "Thomas", "Thompson", "Torres", "Tran",
    "Turner", "Walker", "Ward", "Washington", "Watson", "White", "Williams", "Wilson",
    "Wright", "Young",
]  # fmt: skip

TITLES = {
    "driver": "Driver",
    "contract-driver": "Contract driver",
    "dispatcher": "Dispatcher",
    "night-dispatcher": "Night dispatcher",
    "depot-supervisor": "Depot supervisor",
    "fleet-manager": "Regional fleet manager",
    "operations-director": "Director of operations",
    "maintenance-tech": "Maintenance technician",
    "maintenance-lead": "Maintenance lead",
    "safety-auditor": "Safety auditor",
    "finance-clerk": "Finance clerk",
    "payment-creator": "Accounts payable specialist",
    "payment-approver": "Finance controller",
    "hr-admin": "HR administrator",
    "it-admin": "IT administrator",
    "tenant-admin": "Fleetgate administrator",
    "viewer": "Customer service agent",
}


class _Staff:
    """Makes users with unique login ids; all randomness from the injected generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.users: list[dict[str, Any]] = []
        self.taken: set[str] = set()

    def hire(
        self,
        main_role: str,
        region: str,
        depot: str,
        *,
        extra: list[dict[str, Any]] | None = None,
        expires: str | None = None,
        **attributes: Any,
    ) -> dict[str, Any]:
        first, last = self.rng.choice(FIRST_NAMES), self.rng.choice(LAST_NAMES)
        stem = (first[0] + last).lower()
        login, n = stem, 2
        while login in self.taken:
            login, n = f"{stem}{n}", n + 1
        self.taken.add(login)
        assignment: dict[str, Any] = {"role": main_role}
        if expires:
            assignment["expires"] = expires
        user = {
            "id": login,
            "name": f"{first} {last}",
            "attributes": {
                "region": region,
                "depot": depot,
                "title": TITLES[main_role],
                "employment": "contractor" if main_role == "contract-driver" else "staff",
                **attributes,
            },
            "roles": [assignment, *(extra or [])],
        }
        self.users.append(user)
        return user


def build() -> dict[str, Any]:
    """Build the demo tenant document."""
    rng = random.Random(SEED)  # noqa: S311 -- reproducible demo data, not a secret
    staff = _Staff(rng)
    contract_ends = ["2026-10-31T23:59:59Z", "2026-12-31T23:59:59Z", "2027-03-31T23:59:59Z"]

    for region, depots in DEPOTS.items():
        for depot in depots:
            staff.hire("depot-supervisor", region, depot)
            for _ in range(9):
                staff.hire("driver", region, depot)
            for _ in range(rng.choice([1, 2])):
                staff.hire("maintenance-tech", region, depot)
            if rng.random() < 0.6:
                staff.hire("contract-driver", region, depot, expires=rng.choice(contract_ends))
        home = depots[0]
        staff.hire("fleet-manager", region, home)
        staff.hire("dispatcher", region, home)
        staff.hire("dispatcher", region, depots[1])
        staff.hire("night-dispatcher", region, home)
        staff.hire("maintenance-lead", region, home)
        staff.hire("viewer", region, home)

    region, depot = HEAD_OFFICE
    staff.hire("operations-director", region, depot)
    for _ in range(2):
        staff.hire("safety-auditor", region, depot)
    for _ in range(3):
        staff.hire("finance-clerk", region, depot)
    for _ in range(2):
        staff.hire("payment-creator", region, depot)
    staff.hire("payment-approver", region, depot, approval_limit=50_000)
    staff.hire("payment-approver", region, depot, approval_limit=250_000)
    for _ in range(2):
        staff.hire("hr-admin", region, depot)
    it_admins = [staff.hire("it-admin", region, depot) for _ in range(2)]
    for _ in range(2):
        staff.hire("tenant-admin", region, depot)

    by_role: dict[str, list[dict[str, Any]]] = {}
    for user in staff.users:
        by_role.setdefault(user["roles"][0]["role"], []).append(user)

    # Temporary cover, each with an end date: holiday cover on the dispatch desk, an
    # acting workshop lead, break-glass administration, a seasonal audit.
    drivers = by_role["driver"]
    for driver in rng.sample(drivers, 4):
        driver["roles"].append({"role": "dispatcher", "expires": "2026-12-24T00:00:00Z"})
    rng.choice(by_role["maintenance-tech"])["roles"].append(
        {"role": "maintenance-lead", "expires": "2027-01-15T00:00:00Z"}
    )
    # The demo's admin (app/demo.py signs in as the first IT admin) holds tenant-admin for
    # good; the second's break-glass activation is over (it stays eligible, below).
    it_admins[0]["roles"].append({"role": "tenant-admin"})
    it_admins[1]["roles"].append({"role": "tenant-admin", "expires": "2026-11-30T18:00:00Z"})
    rng.choice(by_role["finance-clerk"])["roles"].append(
        {"role": "safety-auditor", "expires": "2026-09-30T23:59:59Z"}
    )
    rng.choice(by_role["dispatcher"])["roles"].append(
        {"role": "night-dispatcher", "expires": "2027-02-01T00:00:00Z"}
    )

    # Direct grants and denies: the exceptions every real tenant has.
    rng.choice(by_role["dispatcher"])["denies"] = [
        rule("vehicle", ["dispatch"])  # suspended from dispatch pending retraining
    ]
    rng.choice(by_role["fleet-manager"])["grants"] = [
        rule("report", ["read"], {"resource.id": {"in": ["inc-2026-0412", "inc-2026-0419"]}})
    ]
    supervisor = next(
        u for u in by_role["depot-supervisor"] if u["attributes"]["depot"] == "boston"
    )
    supervisor["grants"] = [
        rule("vehicle", ["dispatch"], {"resource.depot": {"in": ["newark", "albany"]}})
    ]
    rng.choice(by_role["hr-admin"])["denies"] = [rule("driver", ["delete"])]
    rng.choice(by_role["finance-clerk"])["grants"] = [
        rule("payment", ["create"], {"resource.category": "fuel", "resource.amount": {"lte": 2000}})
    ]

    # Just-in-time elevation: every dispatcher may take the night desk for a shift,
    # and the second IT administrator may break glass for up to four hours.
    for dispatcher in by_role["dispatcher"]:
        dispatcher["roles"].append({"role": "night-dispatcher", "eligible": {"max_hours": 8}})
    it_admins[1]["roles"].append({"role": "tenant-admin", "eligible": {"max_hours": 4}})
    # A driver on long-term leave: suspended, every request denied, roles kept.
    drivers[-1]["suspended"] = True

    return {
        "format": "fleetgate.policy/1",
        "tenant": "acme-logistics",
        "resource_types": RESOURCE_TYPES,
        "roles": ROLES,
        "users": staff.users,
        "constraints": CONSTRAINTS,
    }


_OPERATORS = {"eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "contains"}


def _check_path(path: str, where: str) -> None:
    root, dot, name = path.partition(".")
    if root not in ("user", "resource", "context") or not dot or not name:
        raise ValueError(f"{where}: bad attribute path {path!r}")


def _check_condition(condition: Any, where: str) -> None:
    if not isinstance(condition, dict):
        raise ValueError(f"{where}: a condition is an object")
    for key, value in condition.items():
        if key in ("any", "all"):
            for i, part in enumerate(value):
                _check_condition(part, f"{where}.{key}[{i}]")
        elif key == "not":
            _check_condition(value, f"{where}.not")
        else:
            _check_path(key, where)
            operand = value
            if isinstance(value, dict):
                if len(value) != 1 or next(iter(value)) not in _OPERATORS:
                    raise ValueError(f"{where}: bad operator in {value!r}")
                operand = next(iter(value.values()))
            if isinstance(operand, str) and operand.startswith("$") and operand[1:2] != "$":
                _check_path(operand[1:], where)


def check(doc: dict[str, Any]) -> None:
    """Check ``doc`` against policy-format.md.

    Raises:
        ValueError: naming the place of the first mistake found.
    """
    types = doc["resource_types"]
    every_action = {a for actions in types.values() for a in actions}

    def check_rule(r: dict[str, Any], where: str) -> None:
        listed = every_action if r["resource"] == "*" else types.get(r["resource"])
        if listed is None:
            raise ValueError(f"{where}: unknown resource type {r['resource']!r}")
        for action in r["actions"]:
            if action != "*" and action not in listed:
                raise ValueError(f"{where}: {action!r} is not listed for {r['resource']!r}")
        if "when" in r:
            _check_condition(r["when"], f"{where}.when")

    closure: dict[str, set[str]] = {}
    for i, r in enumerate(doc["roles"]):
        if r["name"] in closure:
            raise ValueError(f"roles[{i}]: duplicate role {r['name']!r}")
        held = {r["name"]}
        for parent in r["inherits"]:  # earlier roles only, hence no cycle
            if parent not in closure:
                raise ValueError(f"roles[{i}].inherits: {parent!r} is not an earlier role")
            held |= closure[parent]
        closure[r["name"]] = held
        for kind in ("grants", "denies"):
            for j, x in enumerate(r[kind]):
                check_rule(x, f"roles[{i}].{kind}[{j}]")
    ids: set[str] = set()
    for i, u in enumerate(doc["users"]):
        if u["id"] in ids:
            raise ValueError(f"users[{i}]: duplicate user {u['id']!r}")
        ids.add(u["id"])
        held = set()
        for j, a in enumerate(u["roles"]):
            if a["role"] not in closure:
                raise ValueError(f"users[{i}].roles[{j}]: unknown role {a['role']!r}")
            held |= closure[a["role"]]  # expired or not: stricter than the format asks
        for kind in ("grants", "denies"):
            for j, x in enumerate(u.get(kind, [])):
                check_rule(x, f"users[{i}].{kind}[{j}]")
        for c in doc["constraints"]:
            if len(held.intersection(c["exclusive"])) > 1:
                raise ValueError(f"users[{i}] ({u['id']}) breaks constraint {c['name']}")


def to_json(value: Any, indent: str = "") -> str:
    """Write JSON that reads well: anything whose one-line form fits in 96 columns
    stays on one line, everything else opens one member per line, indented by two."""
    flat = json.dumps(value, ensure_ascii=False)
    if len(indent) + len(flat) <= 96 or not isinstance(value, dict | list) or not value:
        return flat
    inner = indent + "  "
    if isinstance(value, dict):
        members = [
            f"{inner}{json.dumps(k, ensure_ascii=False)}: {to_json(v, inner).lstrip()}"
            for k, v in value.items()
        ]
        return "{\n" + ",\n".join(members) + f"\n{indent}}}"
    items = [f"{inner}{to_json(v, inner).lstrip()}" for v in value]
    return "[\n" + ",\n".join(items) + f"\n{indent}]"


def main() -> int:
    """Build, check and write the demo tenant."""
    doc = build()
    check(doc)
    OUT.write_text(to_json(doc) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(doc['roles'])} roles, {len(doc['users'])} users)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
