"""`fleetgate server | admin | audit` as a person runs them: subprocesses
against a real database, exit status and messages exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.server.conftest import PASSWORD

PW = f"{PASSWORD}\n"

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "resources" / "demo" / "acme-logistics.json"


def fleetgate(
    database: str, *args: str, stdin: str = "", via_app: bool = False
) -> subprocess.CompletedProcess[str]:
    # The console script's entry point hands these commands to `python -m server`.
    entry = ["-c", "import sys; from app.cli import run; sys.argv[0] = 'fleetgate'; run()"]
    command = [sys.executable, *(entry if via_app else ["-m", "server"]), *args]
    return subprocess.run(
        [*command, "--database-url", database], input=stdin, capture_output=True, text=True,
        cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def acme(migrated: str) -> str:
    created = fleetgate(migrated, "admin", "create-tenant", "acme-logistics", "--admin", "dreed",
                        stdin=PW)  # fmt: skip
    assert created.returncode == 0, created.stderr
    imported = fleetgate(migrated, "admin", "import", "acme-logistics", str(DEMO))
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout == f"imported {DEMO} into 'acme-logistics': version 2\n"
    return migrated


def test_create_tenant_reads_the_password_from_stdin_and_refuses_a_second(migrated: str) -> None:
    first = fleetgate(migrated, "admin", "create-tenant", "t1", "--admin", "ann", stdin=PW,
                      via_app=True)  # fmt: skip
    assert (first.returncode, first.stdout) == (0, "created tenant 't1' (id 1) with admin 'ann'\n")
    again = fleetgate(migrated, "admin", "create-tenant", "t1", "--admin", "ann", stdin=PW)
    assert (again.returncode, again.stderr) == (2, "fleetgate: a tenant named 't1' exists\n")
    empty = fleetgate(migrated, "admin", "create-tenant", "t2", "--admin", "ann", stdin="\n")
    assert (empty.returncode, empty.stderr) == (
        2,
        "fleetgate: a password needs at least 12 characters (this one has 0)\n",
    )
    common = fleetgate(migrated, "admin", "create-tenant", "t2", "--admin", "ann",
                       stdin="password1234\n")  # fmt: skip
    assert (common.returncode, common.stderr) == (
        2,
        "fleetgate: this password is in a list of commonly used passwords; choose another\n",
    )


def test_import_refuses_another_tenants_policy_and_invalid_documents(
    acme: str, tmp_path: Path
) -> None:
    other = fleetgate(acme, "admin", "create-tenant", "beta", "--admin", "b", stdin=PW)
    assert other.returncode == 0
    wrong = fleetgate(acme, "admin", "import", "beta", str(DEMO))
    assert wrong.returncode == 2
    assert (
        wrong.stderr == f"fleetgate: {DEMO} is the policy of tenant 'acme-logistics', not 'beta'\n"
    )
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "fleetgate.policy/1", "tenant": "beta", "roles": 3}')
    invalid = fleetgate(acme, "admin", "import", "beta", str(broken))
    assert invalid.returncode == 2
    assert f"{broken}: roles: must be a list" in invalid.stderr
    missing = fleetgate(acme, "admin", "import", "beta", str(tmp_path / "nope.json"))
    assert missing.returncode == 2
    assert "No such file" in missing.stderr


def test_import_warns_about_accounts_the_policy_no_longer_has(migrated: str) -> None:
    fleetgate(
        migrated,
        "admin",
        "create-tenant",
        "acme-logistics",
        "--admin",
        "ghost",
        stdin=PW,
    )
    imported = fleetgate(migrated, "admin", "import", "acme-logistics", str(DEMO))
    assert imported.returncode == 0
    assert imported.stderr == (
        "warning: account 'ghost' is not in the imported policy and cannot sign in\n"
    )


def test_export_gives_back_the_imported_policy(acme: str) -> None:
    exported = fleetgate(acme, "admin", "export", "acme-logistics")
    assert exported.returncode == 0
    document = json.loads(exported.stdout)
    original = json.loads(DEMO.read_text())
    assert [u["id"] for u in document["users"]] == [u["id"] for u in original["users"]]
    assert [r["name"] for r in document["roles"]] == [r["name"] for r in original["roles"]]


def test_users_and_revoke_device(acme: str) -> None:
    users = fleetgate(acme, "admin", "users", "acme-logistics")
    assert (users.returncode, users.stdout) == (0, "dreed\tdevices=0\trevoked=0\n")
    unknown = fleetgate(acme, "admin", "revoke-device", "acme-logistics", "dev-9")
    assert (unknown.returncode, unknown.stderr) == (
        2, "fleetgate: tenant 'acme-logistics' has no device 'dev-9'\n")  # fmt: skip
    with psycopg.connect(acme, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO devices (tenant_id, device, user_id) VALUES (1, 'dev-9', 'dreed')"
        )
    listed = fleetgate(acme, "admin", "devices", "acme-logistics")
    assert listed.returncode == 0
    assert listed.stdout.startswith("dev-9\tuser=dreed\tlast_seen=20")
    assert listed.stdout.endswith("\tactive\n")
    revoked = fleetgate(acme, "admin", "revoke-device", "acme-logistics", "dev-9")
    assert revoked.returncode == 0, revoked.stderr
    assert fleetgate(acme, "admin", "devices", "acme-logistics").stdout.endswith("Z\n")
    assert "\trevoked 20" in fleetgate(acme, "admin", "devices", "acme-logistics").stdout
    users = fleetgate(acme, "admin", "users", "acme-logistics")
    assert users.stdout == "dreed\tdevices=0\trevoked=1\n"


def test_audit_verify_finds_the_row_edited_with_sql(acme: str) -> None:
    intact = fleetgate(acme, "audit", "verify", "acme-logistics")
    assert (intact.returncode, intact.stdout) == (
        0, "audit chain of 'acme-logistics' is intact: 2 rows\n")  # fmt: skip
    with psycopg.connect(acme, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # past the append-only trigger
        conn.execute("UPDATE audit SET actor = 'someone-else' WHERE tenant_id = 1 AND seq = 1")
    broken = fleetgate(acme, "audit", "verify", "acme-logistics")
    assert broken.returncode == 1
    assert broken.stdout == (
        "audit chain of 'acme-logistics' is broken at row 1: "
        "row 1: its content does not match its hash\n"
    )


def test_webhooks_are_registered_listed_and_removed(acme: str) -> None:
    bad = fleetgate(acme, "admin", "add-webhook", "acme-logistics", "ftp://x", "--event", "*")
    assert bad.returncode == 2
    assert bad.stderr.startswith("fleetgate: ")
    added = fleetgate(acme, "admin", "add-webhook", "acme-logistics", "https://hooks.example/fg",
                      "--event", "change.committed")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("webhook 1: https://hooks.example/fg for change.committed\n")
    secret = added.stdout.rsplit("signing secret (shown once): ", 1)[1].strip()
    with psycopg.connect(acme) as conn:
        (stored,) = conn.execute("SELECT sealed_secret FROM webhooks").fetchone() or ("",)
    assert len(secret) >= 40
    assert secret not in stored  # sealed, never in clear
    listed = fleetgate(acme, "admin", "webhooks", "acme-logistics")
    assert listed.stdout == "1\thttps://hooks.example/fg\tchange.committed\n"
    removed = fleetgate(acme, "admin", "remove-webhook", "acme-logistics", "1")
    assert removed.returncode == 0
    assert fleetgate(acme, "admin", "webhooks", "acme-logistics").stdout == ""


def test_a_database_newer_than_the_server_refuses_to_start(migrated: str) -> None:
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (999, 'future')")
    result = fleetgate(migrated, "server", "--port", "0")
    assert result.returncode == 69
    assert "newer than this server's" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_database_is_named_without_a_traceback() -> None:
    result = fleetgate("postgresql://nobody@127.0.0.1:1/none", "admin", "users", "x")
    assert result.returncode == 69
    assert result.stderr.startswith("fleetgate: cannot reach the database: ")
    assert "Traceback" not in result.stderr


def test_unknown_tenant_and_bad_usage_exit_2(migrated: str) -> None:
    unknown = fleetgate(migrated, "audit", "verify", "nope")
    assert (unknown.returncode, unknown.stderr) == (2, "fleetgate: no tenant named 'nope'\n")
    usage = fleetgate(migrated, "admin", "frobnicate")
    assert usage.returncode == 2
    assert "invalid choice" in usage.stderr


def test_compact_moves_the_horizon_and_refuses_a_negative_keep(acme: str) -> None:
    compacted = fleetgate(acme, "admin", "compact", "acme-logistics", "--keep", "0")
    assert (compacted.returncode, compacted.stdout) == (0, (
        "the change log of 'acme-logistics' starts after version 2; "
        "clients behind it catch up by snapshot\n"
        "merge stamps are kept from version 0; an edit made against an older version merges "
        "as if everything it touches had changed\n"))  # fmt: skip
    negative = fleetgate(acme, "admin", "compact", "acme-logistics", "--keep", "-1")
    assert (negative.returncode, negative.stderr) == (
        2, "fleetgate: --keep is a number of changes, 0 or more\n")  # fmt: skip


def test_import_refuses_a_user_too_large_to_sync(migrated: str, tmp_path: Path) -> None:
    fleetgate(migrated, "admin", "create-tenant", "t", "--admin", "a", stdin=PW)
    big = tmp_path / "big.json"
    big.write_text(json.dumps({
        "format": "fleetgate.policy/1", "tenant": "t", "resource_types": {"doc": ["read"]},
        "roles": [], "users": [{"id": "a", "attributes": {"notes": "x" * 70_000}}],
    }))  # fmt: skip
    refused = fleetgate(migrated, "admin", "import", "t", str(big))
    assert (refused.returncode, refused.stderr) == (2, (
        f"fleetgate: {big}: user 'a' takes more than 64 KiB; "
        "every role and user must fit a sync message\n"))  # fmt: skip


def test_without_a_database_url_the_embedded_postgres_keeps_the_data(tmp_path: Path) -> None:
    data = tmp_path / "server-data"

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "server", *args, "--data-dir", str(data)], input=stdin,
            capture_output=True, text=True, cwd=ROOT, timeout=180, check=False,
        )  # fmt: skip

    created = run("admin", "create-tenant", "t", "--admin", "ann", stdin=PW)
    assert created.returncode == 0, created.stderr
    # Each command started the embedded server and stopped it on exit; the next finds the data.
    listed = run("admin", "users", "t")
    assert (listed.returncode, listed.stdout) == (0, "ann\tdevices=0\trevoked=0\n")
    assert listed.stderr == ""


def test_set_password_gives_any_user_of_the_policy_an_account(acme: str) -> None:
    done = fleetgate(acme, "admin", "set-password", "acme-logistics", "orivera", stdin=PW)
    assert (done.returncode, done.stdout) == (
        0, "set the password of 'orivera'; their refresh tokens no longer work\n")  # fmt: skip
    users = fleetgate(acme, "admin", "users", "acme-logistics")
    assert "orivera\t" in users.stdout
    weak = fleetgate(acme, "admin", "set-password", "acme-logistics", "orivera",
                     stdin="oriveraorivera\n")  # fmt: skip
    assert (weak.returncode, weak.stderr) == (2, (
        "fleetgate: a password must not be built from the user name, the tenant name or "
        "'fleetgate'\n"))  # fmt: skip
    ghost = fleetgate(acme, "admin", "set-password", "acme-logistics", "ghost", stdin=PW)
    assert (ghost.returncode, ghost.stderr) == (
        2, "fleetgate: tenant 'acme-logistics' has no user 'ghost' in its policy\n")  # fmt: skip


def test_invite_prints_a_one_time_code_stored_only_as_its_hash(acme: str) -> None:
    invited = fleetgate(acme, "admin", "invite", "acme-logistics", "orivera", "--hours", "2")
    assert invited.returncode == 0, invited.stderr
    head, code = invited.stdout.splitlines()
    assert head.startswith("enrollment code for 'orivera' (works once, until 20")
    assert len(code.replace("-", "")) == 24
    with psycopg.connect(acme) as conn:
        stored = conn.execute("SELECT code_hash, user_id FROM invitations").fetchall()
        dump = conn.execute("SELECT payload FROM audit WHERE kind = 'account.invited'").fetchall()
    assert len(stored) == 1 and stored[0][1] == "orivera"
    assert code not in str(stored) and code not in str(dump)
    too_long = fleetgate(acme, "admin", "invite", "acme-logistics", "orivera", "--hours", "721")
    assert too_long.returncode == 2
    assert "an invitation lasts 1 to 720 hours" in too_long.stderr


def test_set_lease_says_how_long_replicas_trust_their_decisions(acme: str) -> None:
    done = fleetgate(acme, "admin", "set-lease", "acme-logistics", "--hours", "48",
                     "--stale-decisions", "deny")  # fmt: skip
    assert (done.returncode, done.stdout) == (0, (
        "replicas of 'acme-logistics' trust their decisions for 48 h offline; "
        "after that they deny\n"))  # fmt: skip
    with psycopg.connect(acme) as conn:
        row = conn.execute("SELECT lease_seconds, stale_decisions FROM tenants").fetchone()
    assert row == (48 * 3600, "deny")
    bad = fleetgate(acme, "admin", "set-lease", "acme-logistics", "--hours", "0")
    assert bad.returncode == 2
