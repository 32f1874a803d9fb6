"""`fleetgate` as a user runs it: a real subprocess, real files, exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "resources" / "demo" / "acme-logistics.json"

# The example of policy-format.md, verbatim, and a second user.
POLICY: dict[str, Any] = json.loads((ROOT / "tests/data/policy-format-example.json").read_text())
POLICY["users"].append(
    {"id": "bob", "attributes": {"region": "south"}, "roles": [{"role": "dispatcher"}]}
)

ROUTE_NORTH = {
    "user": "alice",
    "action": "update",
    "resource": {"type": "route", "id": "r-17", "attributes": {"region": "north"}},
    "context": {"time": "2026-11-22T09:30:00Z"},
}


def fleetgate(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        input=stdin,
        capture_output=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def write_json(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    return write_json(tmp_path / "policy.json", POLICY)


def decisions(result: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def assert_clean_error(result: subprocess.CompletedProcess[bytes], *fragments: str) -> None:
    """Exit 2, one clear message, never a traceback."""
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in stderr, stderr


# --- check -------------------------------------------------------------------------------


def test_check_batch_writes_one_decision_per_line_in_order(policy: Path, tmp_path: Path) -> None:
    requests = [
        ROUTE_NORTH,
        {**ROUTE_NORTH, "resource": {"type": "route", "attributes": {"region": "south"}}},
        {"user": "nobody", "action": "read", "resource": {"type": "route"}},
        {
            "user": "alice",
            "action": "read",
            "resource": {"type": "report", "attributes": {"classification": "confidential"}},
        },
    ]
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in requests))
    result = fleetgate("check", "--policy", str(policy), "--requests", str(path))
    assert result.returncode == 0, result.stderr
    out = decisions(result)
    assert [d["allowed"] for d in out] == [True, False, False, False]
    assert out[0] == {
        "allowed": True,
        "reason": "granted by role dispatcher: route update, assign "
        "when resource.region = $user.region",
        "matched": [{"effect": "grant", "source": "role:dispatcher", "rule": 0}],
        "policy_version": None,
    }
    assert out[1]["reason"] == "no grant matches route update"
    assert "unknown user" in out[2]["reason"]
    assert out[3]["reason"].startswith("denied by role viewer: report read")


def test_check_reads_requests_from_standard_input(policy: Path) -> None:
    result = fleetgate(
        "check", "--policy", str(policy), "--requests", "-", stdin=json.dumps(ROUTE_NORTH).encode()
    )
    assert result.returncode == 0
    assert decisions(result)[0]["allowed"] is True


def test_check_single_request_with_attr_values_parsed_as_json(policy: Path) -> None:
    base = ["check", "--policy", str(policy), "--user", "alice", "--action", "update"]
    allowed = fleetgate(*base, "--resource", "route:r-17", "--attr", "resource.region=north")
    assert allowed.returncode == 0
    assert decisions(allowed) == [decisions(allowed)[0]]
    assert decisions(allowed)[0]["allowed"] is True
    # "5" parses as the number 5, which is not the string "north".
    numeric = fleetgate(*base, "--resource", "route:r-17", "--attr", "resource.region=5")
    assert decisions(numeric)[0]["allowed"] is False


def test_check_expiry_follows_context_time(policy: Path) -> None:
    base = ["check", "--policy", str(policy), "--user", "alice", "--action", "dispatch"]
    before = fleetgate(
        *base, "--resource", "vehicle:v1", "--attr", "context.time=2026-12-30T23:59:59Z"
    )
    at = fleetgate(*base, "--resource", "vehicle:v1", "--attr", "context.time=2026-12-31T00:00:00Z")
    assert decisions(before)[0]["allowed"] is True
    assert decisions(at)[0]["allowed"] is False


def test_malformed_request_line_writes_earlier_decisions_then_exits_2(
    policy: Path, tmp_path: Path
) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_text(
        json.dumps(ROUTE_NORTH) + "\n" + json.dumps(ROUTE_NORTH) + "\n"
        '{"user": 5, "action": "read", "resource": {"type": "route"}}\n'
        + json.dumps(ROUTE_NORTH)
        + "\n"
    )
    result = fleetgate("check", "--policy", str(policy), "--requests", str(path))
    assert_clean_error(result, "line 3", '"user" must be a string')
    assert len(decisions(result)) == 2


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "a request must be a JSON object"),
        (b'{"user": "alice", "action": "read"}', '"resource" must be an object'),
        (b'{"user": "alice", "action": "read", "resource": {"id": "x"}}', '"resource.type"'),
        (b'{"user": "alice", "resource": {"type": "route"}}', '"action" must be a string'),
        (
            b'{"user": "alice", "action": "read", "resource": {"type": "route"},'
            b' "context": {"time": "yesterday"}}',
            "context.time",
        ),
        (
            b'{"user": "alice", "action": "read", "resource": {"type": "route"},'
            b' "context": {"time": 5}}',
            "context.time",
        ),
        (b"", "empty line"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b'{"user": "alice", "action": "read", "resource": {"type": "route"}, "x": NaN}', "JSON"),
    ],
)
def test_each_kind_of_malformed_line_is_named(
    policy: Path, tmp_path: Path, line: bytes, message: str
) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_bytes(json.dumps(ROUTE_NORTH).encode() + b"\n" + line + b"\n")
    result = fleetgate("check", "--policy", str(policy), "--requests", str(path))
    assert_clean_error(result, "line 2", message)
    assert len(decisions(result)) == 1


def test_decidable_oddities_are_decided_not_rejected(policy: Path, tmp_path: Path) -> None:
    lines = [
        # CRLF line ending, a huge integer, attributes and context that are not objects.
        json.dumps(ROUTE_NORTH).encode() + b"\r",
        b'{"user": "alice", "action": "read", "resource": {"type": "route", "id": '
        + str(10**30).encode()
        + b"}}",
        b'{"user": "alice", "action": "read", "resource": {"type": "route", "attributes": 3},'
        b' "context": "now"}',
        b'{"user": "alice", "action": "*", "resource": {"type": "route"}}',
        b'{"user": "alice", "action": "read", "resource": {"type": "*"}}',
    ]
    path = tmp_path / "requests.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = fleetgate("check", "--policy", str(policy), "--requests", str(path))
    assert result.returncode == 0, result.stderr
    assert [d["allowed"] for d in decisions(result)] == [True, True, True, False, False]


# --- malformed policies ------------------------------------------------------------------


def _broken(**changes: Any) -> dict[str, Any]:
    document = json.loads(json.dumps(POLICY))
    for key, value in changes.items():
        document[key] = value
    return document


@pytest.mark.parametrize(
    ("document", "fragments"),
    [
        (_broken(format="fleetgate.policy/2"), ["format:"]),
        (
            _broken(roles=[{"name": "a", "inherits": ["b"]}, {"name": "b", "inherits": ["a"]}]),
            ["inheritance cycle"],
        ),
        (
            _broken(
                roles=[
                    {
                        "name": "a",
                        "grants": [
                            {
                                "resource": "route",
                                "actions": ["read"],
                                "when": {"resource.x": {"between": 1}},
                            }
                        ],
                    }
                ]
            ),
            ["roles[0].grants[0].when.resource.x.between", "unknown operator"],
        ),
        (
            _broken(roles=[{"name": "a", "grants": [{"resource": "boat", "actions": ["read"]}]}]),
            ["roles[0].grants[0].resource", "unknown resource type"],
        ),
        (_broken(roles="viewer"), ["roles: must be a list"]),
    ],
)
def test_malformed_policy_exits_2_naming_the_place_and_decides_nothing(
    tmp_path: Path, document: dict[str, Any], fragments: list[str]
) -> None:
    path = write_json(tmp_path / "bad.json", document)
    result = fleetgate(
        "check", "--policy", str(path), "--requests", "-", stdin=json.dumps(ROUTE_NORTH).encode()
    )
    assert_clean_error(result, *fragments)
    assert result.stdout == b""


def test_policy_that_is_not_json_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"format": "fleetgate.policy/1",\n  "tenant": }')
    assert_clean_error(fleetgate("policy", "validate", str(path)), "line 2 column")


def test_policy_nested_too_deeply_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    assert_clean_error(fleetgate("policy", "validate", str(path)), "deep")


def test_huge_policy_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.json"
    with path.open("wb") as stream:
        stream.truncate(200 * 1024 * 1024)  # sparse: 200 MB without writing them
    assert_clean_error(fleetgate("policy", "validate", str(path)), "over the", "limit")


def test_missing_policy_file_is_a_clear_error(tmp_path: Path) -> None:
    result = fleetgate("policy", "validate", str(tmp_path / "nope.json"))
    assert_clean_error(result, "cannot read")


def test_validate_lists_every_problem(tmp_path: Path) -> None:
    document = _broken(format=1, tenant="")
    document["roles"].append({"name": "viewer"})
    result = fleetgate("policy", "validate", str(write_json(tmp_path / "p.json", document)))
    assert_clean_error(result, "format:", "tenant:", "duplicate role name 'viewer'")


def test_wrong_arguments_exit_2_without_traceback(policy: Path) -> None:
    assert_clean_error(fleetgate("check", "--policy", str(policy)), "missing --user")
    assert_clean_error(fleetgate("nonsense"))
    assert_clean_error(
        fleetgate(
            "check",
            "--policy",
            str(policy),
            "--user",
            "a",
            "--action",
            "read",
            "--resource",
            "route",
            "--attr",
            "user.region=north",
        ),
        "user attributes come from the policy",
    )


# --- the other commands ------------------------------------------------------------------


def test_validate_summarises_a_valid_policy(policy: Path) -> None:
    result = fleetgate("policy", "validate", str(policy))
    assert result.returncode == 0
    assert "valid: tenant acme-logistics" in result.stdout.decode()
    assert "5 roles, 2 users" in result.stdout.decode()


def test_explain_shows_roles_rules_and_condition_values(policy: Path) -> None:
    result = fleetgate(
        "explain",
        "--policy",
        str(policy),
        "--user",
        "alice",
        "--action",
        "update",
        "--resource",
        "route:r-17",
        "--attr",
        "resource.region=south",
    )
    text = result.stdout.decode()
    assert result.returncode == 0
    assert "holds role dispatcher" in text
    assert 'resource.region is "south", user.region is "north" -> fails' in text
    assert text.rstrip().endswith("decision: denied: no grant matches route update")


def test_explain_json_carries_decision_and_trace(policy: Path) -> None:
    result = fleetgate(
        "explain",
        "--policy",
        str(policy),
        "--user",
        "alice",
        "--action",
        "read",
        "--resource",
        "vehicle:v1",
        "--json",
    )
    document = json.loads(result.stdout)
    assert document["decision"]["allowed"] is True
    assert any("grants[0]" in line for line in document["trace"])


def test_who_can_lists_allowed_users_with_reasons(policy: Path) -> None:
    result = fleetgate(
        "who-can",
        "--policy",
        str(policy),
        "--action",
        "update",
        "--resource",
        "route:r-1",
        "--attr",
        "resource.region=south",
    )
    assert result.returncode == 0
    rows = result.stdout.decode().splitlines()
    assert [row.split("\t")[0] for row in rows] == ["bob"]
    assert "granted by role dispatcher" in rows[0]


def test_permissions_show_role_paths(policy: Path) -> None:
    result = fleetgate("permissions", "--policy", str(policy), "--user", "alice", "--json")
    rows = json.loads(result.stdout)
    read_vehicle = [r for r in rows if (r["resource"], r["action"]) == ("vehicle", "read")]
    assert ["alice", "dispatcher", "viewer"] in [r["path"] for r in read_vehicle]
    assert all(r["until"] == "2026-12-31T00:00:00Z" for r in rows if "fleet-manager" in r["path"])


def test_diff_reports_rename_as_one_line_when_ids_are_kept(policy: Path, tmp_path: Path) -> None:
    exported = fleetgate("policy", "export", str(policy))
    assert exported.returncode == 0
    document = json.loads(exported.stdout)
    old = write_json(tmp_path / "old.json", document)
    document["roles"][1]["name"] = "route-dispatcher"
    for role in document["roles"]:
        role["inherits"] = [
            "route-dispatcher" if r == "dispatcher" else r for r in role.get("inherits", [])
        ]
    for user in document["users"]:
        for assignment in user.get("roles", []):
            if assignment["role"] == "dispatcher":
                assignment["role"] = "route-dispatcher"
    document["users"][1]["attributes"]["region"] = "east"
    new = write_json(tmp_path / "new.json", document)
    result = fleetgate("policy", "diff", str(old), str(new), "--exit-code")
    assert result.returncode == 1
    assert result.stdout.decode().splitlines() == [
        "~ role dispatcher renamed to route-dispatcher",
        '~ user bob attribute region "south" -> "east"',
    ]
    same = fleetgate("policy", "diff", str(old), str(old), "--exit-code")
    assert (same.returncode, same.stdout) == (0, b"")


def test_export_round_trips_through_yaml(policy: Path, tmp_path: Path) -> None:
    as_yaml = fleetgate("policy", "export", str(policy), "--yaml")
    path = tmp_path / "policy.yaml"
    path.write_bytes(as_yaml.stdout)
    again = fleetgate("policy", "export", str(path))
    assert json.loads(again.stdout) == json.loads(fleetgate("policy", "export", str(policy)).stdout)


def test_what_if_lists_decisions_that_change(policy: Path, tmp_path: Path) -> None:
    edits = write_json(
        tmp_path / "edits.json",
        [
            {
                "op": "add_rule",
                "owner": "role:viewer",
                "effect": "deny",
                "rule": {"resource": "vehicle", "actions": ["read"]},
            },
        ],
    )
    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        json.dumps({"user": "bob", "action": "read", "resource": {"type": "vehicle"}})
        + "\n"
        + json.dumps({"user": "bob", "action": "read", "resource": {"type": "route"}})
        + "\n"
    )
    result = fleetgate(
        "what-if", "--policy", str(policy), "--edits", str(edits), "--requests", str(requests)
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [(r["line"], r["before"]["allowed"], r["after"]["allowed"]) for r in rows] == [
        (1, True, False)
    ]


def test_what_if_refuses_an_edit_that_breaks_separation_of_duty(
    policy: Path, tmp_path: Path
) -> None:
    edits = write_json(
        tmp_path / "edits.json",
        [
            {"op": "assign_role", "user_id": "bob", "role_id": "payment-creator"},
            {"op": "assign_role", "user_id": "bob", "role_id": "payment-approver"},
        ],
    )
    requests = tmp_path / "r.jsonl"
    requests.write_text("")
    result = fleetgate(
        "what-if", "--policy", str(policy), "--edits", str(edits), "--requests", str(requests)
    )
    assert_clean_error(result, "edit [1]", "payments-sod", "'bob'")


def test_demo_tenant_is_valid_and_large_enough() -> None:
    result = fleetgate("policy", "validate", str(DEMO))
    assert result.returncode == 0, result.stderr
    document = json.loads(DEMO.read_text())
    assert len(document["roles"]) >= 12
    assert len(document["users"]) >= 200
    assert any(role.get("inherits") for role in document["roles"])


def test_every_command_is_documented_in_the_readme() -> None:
    from app.cli import build_parser

    readme = (ROOT / "README.md").read_text()
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, sub in commands.items():
        nested = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
        names = [f"{name} {n}" for n in nested[0].choices] if nested else [name]
        for full in names:
            assert re.search(rf"`fleetgate {full}\b", readme), f"README lacks fleetgate {full}"


def test_batch_across_workers_exits_without_leaving_them_behind(
    policy: Path, tmp_path: Path
) -> None:
    # Over one block (1 MiB) of input, so workers are forked. Workers that
    # outlived fleetgate would hold its stderr open: run() would time out.
    line = json.dumps(ROUTE_NORTH) + "\n"
    path = tmp_path / "requests.jsonl"
    path.write_text(line * (3 * (1 << 20) // len(line)))
    result = fleetgate("check", "--jobs", "2", "--policy", str(policy), "--requests", str(path))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 3 * (1 << 20) // len(line)


def test_start_command_walks_the_demo_tenant() -> None:
    # What `python3 dev.py start` runs once the virtualenv is ready.
    result = subprocess.run(
        [sys.executable, "-m", "app.demo"], capture_output=True, cwd=ROOT, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    for command in ("policy validate", "check", "explain", "who-can", "permissions"):
        assert f"$ fleetgate {command}" in text
    assert "Traceback" not in result.stderr.decode()


# --- suspended users and eligible roles (policy-format.md § Additions) -------------------


@pytest.fixture
def additions_policy(tmp_path: Path) -> Path:
    document = json.loads(json.dumps(POLICY))
    document["users"] += [
        {
            "id": "sam",
            "suspended": True,
            "attributes": {"region": "north"},
            "roles": [{"role": "fleet-manager"}],
        },
        {
            "id": "eve",
            "attributes": {"region": "north"},
            "roles": [{"role": "viewer"}, {"role": "fleet-manager", "eligible": {"max_hours": 8}}],
        },
    ]
    return write_json(tmp_path / "additions.json", document)


def test_check_denies_a_suspended_user_naming_the_suspension(additions_policy: Path) -> None:
    result = fleetgate(
        "check",
        "--policy",
        str(additions_policy),
        "--user",
        "sam",
        "--action",
        "read",
        "--resource",
        "vehicle:v1",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == (
        '{"allowed":false,"reason":"user sam is suspended","matched":[],"policy_version":null}\n'
    )


def test_check_batch_denies_every_request_of_a_suspended_user(
    additions_policy: Path, tmp_path: Path
) -> None:
    requests = [
        {"user": "sam", "action": "delete", "resource": {"type": "vehicle"}},
        {"user": "sam", "action": "fly", "resource": {"type": "vehicle"}},
        {"user": "alice", "action": "read", "resource": {"type": "vehicle"}},
    ]
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in requests))
    result = fleetgate("check", "--policy", str(additions_policy), "--requests", str(path))
    assert result.returncode == 0, result.stderr
    out = decisions(result)
    assert [(d["allowed"], d["reason"]) for d in out[:2]] == [
        (False, "user sam is suspended"),
        (False, "user sam is suspended"),
    ]
    assert out[2]["allowed"] is True


def test_check_denies_an_eligible_role_that_is_not_activated(additions_policy: Path) -> None:
    base = ["check", "--policy", str(additions_policy), "--user", "eve", "--resource", "vehicle:v1"]
    assert decisions(fleetgate(*base, "--action", "read"))[0]["allowed"] is True  # viewer
    denied = decisions(fleetgate(*base, "--action", "delete"))
    assert denied == [
        {
            "allowed": False,
            "reason": "no grant matches vehicle delete",
            "matched": [],
            "policy_version": None,
        }
    ]


def test_explain_says_first_that_a_user_is_suspended(additions_policy: Path) -> None:
    result = fleetgate(
        "explain",
        "--policy",
        str(additions_policy),
        "--user",
        "sam",
        "--action",
        "read",
        "--resource",
        "vehicle:v1",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0].startswith("request: user 'sam' read vehicle:v1 at ")
    assert lines[1] == "user 'sam' is suspended: every request is denied"
    assert lines[-1] == "decision: denied: user sam is suspended"


def test_explain_lists_an_eligible_role_as_not_active(additions_policy: Path) -> None:
    result = fleetgate(
        "explain",
        "--policy",
        str(additions_policy),
        "--user",
        "eve",
        "--action",
        "delete",
        "--resource",
        "vehicle:v1",
    )
    lines = result.stdout.decode().splitlines()
    assert "  eligible for role fleet-manager (up to 8 h), not active" in lines
    assert lines[-1] == "decision: denied: no grant matches vehicle delete"


def test_who_can_leaves_out_suspended_users_and_eligible_roles(additions_policy: Path) -> None:
    result = fleetgate(
        "who-can",
        "--policy",
        str(additions_policy),
        "--action",
        "delete",
        "--resource",
        "vehicle:v1",
        "--attr",
        "context.time=2026-11-22T09:30:00Z",
    )
    assert result.returncode == 0, result.stderr
    assert [row.split("\t")[0] for row in result.stdout.decode().splitlines()] == ["alice"]


def test_permissions_of_a_suspended_user_are_none_and_say_why(additions_policy: Path) -> None:
    base = ["permissions", "--policy", str(additions_policy), "--user", "sam"]
    text = fleetgate(*base)
    assert text.returncode == 0, text.stderr
    assert text.stdout == b""
    assert text.stderr.decode() == "user sam is suspended: every request is denied\n"
    assert json.loads(fleetgate(*base, "--json").stdout) == []


def test_permissions_leave_out_an_eligible_role_and_say_so(additions_policy: Path) -> None:
    base = ["permissions", "--policy", str(additions_policy), "--user", "eve"]
    text = fleetgate(*base)
    assert text.returncode == 0, text.stderr
    assert "fleet-manager" not in text.stdout.decode()
    assert text.stderr.decode() == (
        "eligible for role fleet-manager (up to 8 h), not active: not listed\n"
    )
    rows = json.loads(fleetgate(*base, "--json").stdout)
    assert rows and all(r["path"] == ["eve", "viewer"] for r in rows)


def test_diff_reports_suspension_and_eligibility(additions_policy: Path, tmp_path: Path) -> None:
    document = json.loads(additions_policy.read_text())
    document["users"][-2]["suspended"] = False  # sam resumed
    document["users"][-1]["roles"][1]["eligible"]["max_hours"] = 4
    new = write_json(tmp_path / "new.json", document)
    result = fleetgate("policy", "diff", str(additions_policy), str(new))
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == [
        "~ user sam resumed",
        "~ user eve eligible for fleet-manager: up to 8 h -> 4 h",
    ]
