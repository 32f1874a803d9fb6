"""The client's commands on a replica, offline: `check --replica-dir`, `edit`, `outbox`,
`activate`, and what a damaged or wrongly keyed replica says.

The replica is filled as a snapshot would fill it (`Replica.replace_all`); the
commands run in this process through `app.cli.main`, against the in-memory
keyring (keyring mode) or the null one (passphrase mode).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keyring
import pytest
from keyring.backends.null import Keyring as NullKeyring

from app import offline, replica_keys
from app.cli import main
from app.replica import Replica
from app.replica_file import slot_name
from sync.policy.document import parse_policy
from sync.policy.instant import format_instant, parse_instant
from sync.replication.decisions import ChainHead, continue_chain
from sync.replication.digest import digest_of
from sync.replication.entities import policy_entities
from sync.replication.offline import instant_seconds, seconds_instant
from tests.app.memory_keyring import MemoryKeyring

SYNCED = "2026-12-01T08:00:00Z"

POLICY: dict[str, Any] = {
    "format": "fleetgate.policy/1",
    "tenant": "acme",
    "resource_types": {
        "role": ["read", "create", "update", "delete", "assign", "escalate"],
        "user": ["read", "create", "update", "delete"],
        "vehicle": ["read", "drive"],
    },
    "roles": [
        {
            "id": "r-admin",
            "name": "tenant-admin",
            "grants": [
                {"resource": "role", "actions": ["*"]},
                {"resource": "user", "actions": ["*"]},
            ],
        },
        {
            "id": "r-driver",
            "name": "driver",
            "grants": [{"resource": "vehicle", "actions": ["drive"]}],
        },
        {
            "id": "r-viewer",
            "name": "viewer",
            "grants": [{"resource": "vehicle", "actions": ["read"]}],
        },
        {"id": "r-clerk", "name": "clerk", "grants": [{"resource": "user", "actions": ["read"]}]},
    ],
    "users": [
        {"id": "boss", "roles": [{"role": "tenant-admin"}]},
        {
            "id": "sam",
            "roles": [{"role": "clerk"}, {"role": "driver", "eligible": {"max_hours": 8}}],
        },
        {"id": "vic", "roles": [{"role": "viewer"}]},
    ],
}


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replica_keys, "ARGON2_DEFAULTS", replica_keys.Argon2Parameters(1, 8, 1))


@pytest.fixture(autouse=True)
def memory_keyring() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


def fill(
    directory: Path,
    owner: str,
    *,
    synced_at: str | None = SYNCED,
    passphrase: str | None = None,
    **meta: Any,
) -> None:
    """A replica of `owner` holding POLICY at version 7, as after a sync at `synced_at`."""
    policy = parse_policy(copy.deepcopy(POLICY), now=parse_instant(SYNCED))
    entities = list(policy_entities(policy))
    source = (lambda: passphrase) if passphrase is not None else None
    replica = Replica.open(directory, "acme", owner, create=True, passphrase=source)
    try:
        replica.replace_all(7, entities, digest_of(entities))
        replica.set_meta(synced_at=synced_at, **meta)
    finally:
        replica.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def replica_args(directory: Path, owner: str) -> list[str]:
    return ["--replica-dir", str(directory), "--tenant", "acme", "--as", owner]


@pytest.fixture
def boss(tmp_path: Path) -> Path:
    """The directory of boss's replica (files of the test go beside it, not in it)."""
    directory = tmp_path / "replicas"
    fill(directory, "boss")
    return directory


def opened(directory: Path, owner: str = "boss") -> Replica:
    return Replica.open(directory, "acme", owner)


# --- check --replica-dir ---------------------------------------------------------------


def test_check_from_a_replica_answers_with_the_lease_and_logs_the_decision(
    boss: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys,
        "check",
        *replica_args(boss, "boss"),
        "--user",
        "vic",
        "--action",
        "read",
        "--resource",
        "vehicle:v-1",
    )
    assert code == 0, err
    decision = json.loads(out)
    assert decision["allowed"] and decision["lease"] == "fresh"
    assert decision["policy_version"] == 7
    assert "1 decision logged for upload" in err
    replica = opened(boss)
    links = replica.unsent_decisions(10)
    replica.close()
    assert [link.seq for link in links] == [1]
    assert links[0].request == {
        "user": "vic",
        "action": "read",
        "resource": {"type": "vehicle", "id": "v-1"},
    }
    # The chain is one the server accepts.
    assert continue_chain(slot_client(boss), ChainHead(), links)[0] == links


def slot_client(directory: Path) -> str:
    replica = opened(directory)
    try:
        return replica.client
    finally:
        replica.close()


def test_no_log_decides_without_logging_and_says_so(
    boss: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys,
        "check",
        *replica_args(boss, "boss"),
        "--no-log",
        "--user",
        "vic",
        "--action",
        "read",
        "--resource",
        "vehicle",
    )
    assert code == 0 and "not logged (--no-log" in err
    replica = opened(boss)
    assert replica.unsent_decisions(10) == []
    replica.close()


@pytest.mark.parametrize(
    ("synced_at", "stale", "lease", "allowed", "says"),
    [
        (None, "answer", "none", True, "stale: the replica has never synced"),
        ("2026-01-01T00:00:00Z", "answer", "stale", True, "stale: the replica's lease ran out"),
        ("2026-01-01T00:00:00Z", "deny", "stale", False, "denied offline: the replica's lease"),
    ],
)
def test_past_the_lease_decisions_say_they_are_stale_or_are_denied(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    synced_at: str | None,
    stale: str,
    lease: str,
    allowed: bool,
    says: str,
) -> None:
    fill(tmp_path, "boss", synced_at=synced_at, stale_decisions=stale)
    code, out, err = run(
        capsys,
        "check",
        *replica_args(tmp_path, "boss"),
        "--user",
        "vic",
        "--action",
        "read",
        "--resource",
        "vehicle",
    )
    assert code == 0, err
    decision = json.loads(out)
    assert (decision["lease"], decision["allowed"]) == (lease, allowed)
    assert says in decision["reason"]


def test_a_batch_from_a_replica_logs_every_decision_and_stops_at_a_malformed_line(
    boss: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = json.dumps({"user": "vic", "action": "read", "resource": {"type": "vehicle"}})
    requests = tmp_path / "requests.jsonl"
    requests.write_text(f'{good}\n{good}\n{{"user": 3}}\n{good}\n')
    code, out, err = run(capsys, "check", *replica_args(boss, "boss"), "--requests", str(requests))
    assert code == 2
    assert len(out.splitlines()) == 2 and "line 3" in err
    replica = opened(boss)
    assert len(replica.unsent_decisions(10)) == 2
    replica.close()


# An escaped NUL, an escaped lone surrogate, and a raw one (UTF-8-like bytes, which only
# the standard library's reader takes): the server refuses an upload holding any.
UNLOGGABLE_LINES = [
    b'{"user": "vic", "action": "read", "resource": {"type": "vehicle", "id": "a\\u0000b"}}',
    b'{"user": "vic", "action": "read", "resource": {"type": "vehicle", "id": "\\ud800"}}',
    b'{"user": "vic", "action": "read", "resource": {"type": "vehicle", "id": "\xed\xa0\x80"}}',
    b'{"user": "vic", "action": "read", "resource": {"type": "vehicle", "\\udfff": 1}}',
]


@pytest.mark.parametrize("line", UNLOGGABLE_LINES, ids=["nul", "surrogate", "raw", "key"])
def test_a_request_holding_a_nul_or_a_lone_surrogate_is_not_logged_and_says_why(
    boss: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], line: bytes
) -> None:
    # Logged, it would be in the chain for good: the server refuses the upload holding it
    # whole, so no decision after it could be uploaded either.
    good = json.dumps({"user": "vic", "action": "read", "resource": {"type": "vehicle"}})
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(good.encode() + b"\n" + line + b"\n" + good.encode() + b"\n")
    code, out, err = run(capsys, "check", *replica_args(boss, "boss"), "--requests", str(requests))
    assert code == 2 and len(out.splitlines()) == 1
    assert "line 2: malformed request: a string contains a NUL character or an unpaired " in err
    assert "--no-log decides it" in err and "internal error" not in err
    replica = opened(boss)
    assert [link.request["resource"] for link in replica.unsent_decisions(10)] == [
        {"type": "vehicle"}
    ]
    replica.close()
    # Not logged, it is decided, as from the policy file.
    code, out, err = run(capsys, "check", *replica_args(boss, "boss"), "--requests",
                         str(requests), "--no-log")  # fmt: skip
    assert code == 0, err
    assert [json.loads(answer)["allowed"] for answer in out.splitlines()] == [True] * 3


@pytest.mark.parametrize(
    "attributes",
    [b'{"n": 1e400}', b'{"n": -1e400, "m": 1180591620717411303424}'],
    ids=["infinity", "infinity and an integer beyond 64 bits"],
)
def test_a_logged_request_holding_a_number_beyond_a_double_is_malformed_not_an_internal_error(
    boss: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], attributes: bytes
) -> None:
    # orjson refuses such a number, the standard library reads it as infinity: logged,
    # the chain said null (what JSON writes for it), or with an integer beyond 64 bits
    # beside it, the batch stopped with 'internal error: TypeError'.
    line = b'{"user": "vic", "action": "read", "resource": {"type": "vehicle", "attributes": '
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(line + attributes + b"}}\n")
    code, out, err = run(capsys, "check", *replica_args(boss, "boss"), "--requests", str(requests))
    assert code == 2 and out == "" and "internal error" not in err
    assert "line 1: malformed request: a number is beyond the range of a double" in err
    replica = opened(boss)
    assert replica.unsent_decisions(10) == []
    replica.close()
    code, out, err = run(capsys, "check", *replica_args(boss, "boss"), "--requests",
                         str(requests), "--no-log")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["allowed"] is True


def test_a_single_decision_for_a_user_that_is_not_utf8_is_refused_logged_and_decided_unlogged(
    boss: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A command-line argument of bytes that are not UTF-8 arrives holding lone
    # surrogates (Python's surrogateescape): it was an internal error either way.
    user = b"\xed\xa0\x80".decode("utf-8", "surrogateescape")
    request = ["--user", user, "--action", "read", "--resource", "vehicle"]
    code, out, err = run(capsys, "check", *replica_args(boss, "boss"), *request)
    assert code == 2 and out == ""
    assert "malformed request: a string contains a NUL character or an unpaired" in err
    replica = opened(boss)
    assert replica.unsent_decisions(10) == []
    replica.close()
    code, out, err = run(capsys, "check", *replica_args(boss, "boss"), *request, "--no-log")
    assert code == 0, err
    assert json.loads(out)["reason"].startswith("unknown user")


@pytest.mark.parametrize("value", ["a\x00b", "\ud800", "\udc00x"], ids=["nul", "high", "low"])
def test_an_edit_holding_a_nul_or_a_lone_surrogate_is_refused_before_it_is_queued(
    boss: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    # Queued, it would block every edit behind it: the server refuses the push unread,
    # and a push always starts from the lowest edit without an outcome.
    edits = tmp_path / "edits.json"
    for document in (
        {"op": "set_user_attribute", "user_id": "vic", "key": "note", "value": value},
        {"op": "set_user_attribute", "user_id": "vic", "key": "note", "value": {value: 1}},
        {"op": "create_role", "role_id": "r-x", "name": f"role {value}"},
    ):
        edits.write_text(json.dumps([document]))  # ensure_ascii: escapes, as a person's file
        code, out, err = run(capsys, "edit", *replica_args(boss, "boss"), "--edits", str(edits))
        assert code == 2, out
        assert "a string contains a NUL character or an unpaired surrogate" in err
        assert "which the server cannot store" in err and "internal error" not in err
    replica = opened(boss)
    assert replica.view_edits() == []
    replica.close()


def test_a_decision_that_relies_on_a_pending_edit_says_so(
    boss: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edits = tmp_path / "edits.json"
    edits.write_text(json.dumps([{"op": "assign_role", "user_id": "vic", "role_id": "driver"}]))
    code, out, err = run(capsys, "edit", *replica_args(boss, "boss"), "--edits", str(edits))
    assert code == 0, err
    assert "queued edit 1: assign_role" in out
    code, out, err = run(
        capsys,
        "check",
        *replica_args(boss, "boss"),
        "--user",
        "vic",
        "--action",
        "drive",
        "--resource",
        "vehicle",
    )
    decision = json.loads(out)
    assert decision["allowed"] and decision["pending"] == [1]
    assert "relies on pending edit 1, not yet confirmed by the server" in decision["reason"]
    # Someone the edit did not touch is decided as before, relying on nothing.
    code, out, _ = run(
        capsys,
        "check",
        *replica_args(boss, "boss"),
        "--user",
        "sam",
        "--action",
        "read",
        "--resource",
        "user:vic",
    )
    assert "pending" not in json.loads(out)


# --- edit, outbox, activate ----------------------------------------------------------------


def test_an_edit_its_author_may_not_make_is_refused_before_it_is_queued(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(tmp_path, "sam")
    edits = tmp_path / "edits.json"
    edits.write_text(json.dumps([{"op": "assign_role", "user_id": "vic", "role_id": "driver"}]))
    code, _, err = run(capsys, "edit", *replica_args(tmp_path, "sam"), "--edits", str(edits))
    assert code == 2
    assert "sam may not make it: needs role:assign" in err and "nothing was queued" in err
    replica = opened(tmp_path, "sam")
    assert replica.pending() == []
    replica.close()


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ({"op": "create_role", "role_id": "r-x", "name": 5}, "create_role.name: must be a string"),
        ({"op": "assign_role", "user_id": "vic"}, "assign_role.role_id: is missing"),
        ({"op": "assign_role", "user_id": "vic", "role_id": "driver", "why": "x"}, "unknown field"),
        ({"op": "launch_rockets"}, "unknown edit op"),
        (["not", "an", "object"], "an edit is an object"),
        ({"op": "delete_role", "role_id": "r-nope"}, "r-nope"),
    ],
)
def test_malformed_edit_documents_are_refused_naming_the_field(
    boss: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], document: Any, says: str
) -> None:
    edits = tmp_path / "edits.json"
    edits.write_text(json.dumps([document]))
    code, _, err = run(capsys, "edit", *replica_args(boss, "boss"), "--edits", str(edits))
    assert code == 2 and says in err and "edit [0]" in err


def test_the_outbox_lists_pending_edits_and_cancel_queues_the_edit_that_takes_one_back(
    boss: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edits = tmp_path / "edits.json"
    edits.write_text(
        json.dumps(
            [
                {"op": "assign_role", "user_id": "vic", "role_id": "driver"},
                {"op": "rename_role", "role_id": "r-viewer", "name": "watcher"},
            ]
        )
    )
    assert run(capsys, "edit", *replica_args(boss, "boss"), "--edits", str(edits))[0] == 0
    code, out, _ = run(capsys, "outbox", *replica_args(boss, "boss"), "--json")
    listed = json.loads(out)
    assert [(r["seq"], r["state"]) for r in listed["pending"]] == [(1, "pending"), (2, "pending")]
    code, out, err = run(capsys, "outbox", *replica_args(boss, "boss"), "--cancel", "1")
    assert code == 0, err
    assert "queued edit 3 (takes back 1): unassign_role" in out
    code, out, _ = run(capsys, "outbox", *replica_args(boss, "boss"), "--json")
    rows = json.loads(out)["pending"]
    assert rows[-1]["cancels"] == 1 and len(rows) == 3  # nothing left without an outcome
    code, out, _ = run(
        capsys,
        "check",
        *replica_args(boss, "boss"),
        "--user",
        "vic",
        "--action",
        "drive",
        "--resource",
        "vehicle",
    )
    assert json.loads(out)["allowed"] is False
    code, _, err = run(capsys, "outbox", *replica_args(boss, "boss"), "--cancel", "99")
    assert code == 2 and "no edit 99" in err


def test_a_user_activates_an_eligible_role_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(tmp_path, "sam")
    args = replica_args(tmp_path, "sam")
    code, out, err = run(
        capsys,
        "activate",
        *args,
        "--role",
        "driver",
        "--hours",
        "4",
        "--why",
        "cover for the night shift",
    )
    assert code == 0, err
    assert "queued edit 1: sam holds driver for 4 h" in out
    code, out, _ = run(
        capsys, "check", *args, "--user", "sam", "--action", "drive", "--resource", "vehicle"
    )
    decision = json.loads(out)
    assert decision["allowed"] and decision["pending"] == [1]
    code, _, err = run(capsys, "activate", *args, "--role", "driver", "--hours", "9", "--why", "x")
    assert code == 2 and "8" in err  # at most max_hours


def test_apply_policy_queues_one_edit_per_change(
    boss: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = copy.deepcopy(POLICY)
    target["roles"][2]["name"] = "watcher"
    target["users"][2]["roles"] = [{"role": "watcher"}]
    target["users"][2]["roles"].append({"role": "driver", "expires": "2027-01-01T00:00:00Z"})
    path = tmp_path / "target.json"
    path.write_text(json.dumps(target))
    code, out, err = run(capsys, "edit", *replica_args(boss, "boss"), "--apply-policy", str(path))
    assert code == 0, err
    assert out.count("queued edit") == 2
    assert "rename_role" in out and "assign_role" in out
    code, out, _ = run(capsys, "edit", *replica_args(boss, "boss"), "--apply-policy", str(path))
    assert "nothing to queue" in out


# --- keys, damage, files ------------------------------------------------------------------


def test_a_wrong_passphrase_gives_one_message_and_leaves_the_file_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    keyring.set_keyring(NullKeyring())
    fill(tmp_path, "boss", passphrase="the right one")
    database = tmp_path / f"{slot_name('acme', 'boss')}.db"
    before = (database.read_bytes(), database.stat().st_mtime_ns)
    monkeypatch.setenv("FLEETGATE_PASSPHRASE", "the wrong one")
    code, out, err = run(
        capsys,
        "check",
        *replica_args(tmp_path, "boss"),
        "--user",
        "vic",
        "--action",
        "read",
        "--resource",
        "vehicle",
    )
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "wrong passphrase" in err
    assert (database.read_bytes(), database.stat().st_mtime_ns) == before


def test_a_damaged_replica_is_named_and_never_answers(
    boss: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = boss / f"{slot_name('acme', 'boss')}.db"
    data = bytearray(database.read_bytes())
    for offset in range(4096, len(data), 4096):
        data[offset + 100] ^= 0xFF  # every page after the first fails its HMAC
    database.write_bytes(bytes(data))
    code, out, err = run(
        capsys,
        "check",
        *replica_args(boss, "boss"),
        "--user",
        "vic",
        "--action",
        "read",
        "--resource",
        "vehicle",
    )
    assert code == 2 and out == ""
    assert "damaged" in err and "`fleetgate sync` rebuilds it" in err


def test_rebuilding_a_damaged_replica_keeps_its_outbox_and_its_ids(
    boss: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edits = tmp_path / "edits.json"
    edits.write_text(json.dumps([{"op": "assign_role", "user_id": "vic", "role_id": "driver"}]))
    assert run(capsys, "edit", *replica_args(boss, "boss"), "--edits", str(edits))[0] == 0
    replica = opened(boss)
    client, device = replica.client, replica.meta().device
    replica.close()
    # Damage the end of the file: the policy's pages, not the outbox written after them
    # (a replica whose outbox pages are gone loses those edits, and says how many it kept).
    database = boss / f"{slot_name('acme', 'boss')}.db"
    with database.open("r+b") as handle:
        handle.truncate(database.stat().st_size - 4096 * 3 - 1000)
    rebuilt, kept = Replica.rebuild(boss, "acme", "boss")
    try:
        assert rebuilt.client == client and rebuilt.meta().device == device
        assert kept == len(rebuilt.pending())
        assert rebuilt.meta().last_seq >= kept
        assert not rebuilt.has_policy() and rebuilt.meta().cursor == 0
    finally:
        rebuilt.close()


def test_no_role_name_user_id_or_tenant_appears_in_any_file_the_client_writes(
    boss: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edits = tmp_path / "edits.json"
    edits.write_text(
        json.dumps([{"op": "create_role", "role_id": "r-yard", "name": "yard-marshal-unique"}])
    )
    assert run(capsys, "edit", *replica_args(boss, "boss"), "--edits", str(edits))[0] == 0
    run(
        capsys,
        "check",
        *replica_args(boss, "boss"),
        "--user",
        "vic",
        "--action",
        "read",
        "--resource",
        "vehicle:v-secret-77",
    )
    secrets = [
        b"tenant-admin",
        b"yard-marshal-unique",
        b"v-secret-77",
        b"vic",
        b"acme",
        b"r-viewer",
        b"assign_role",
        b"outbox",
        b"entities",
    ]
    files = [p for p in boss.iterdir() if p.is_file()]
    assert any(p.name.endswith("-wal") for p in files) or files
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret not in data, f"{secret!r} readable in {path.name}"


def test_a_clock_moved_back_freezes_time_and_the_decision_says_so(boss: Path) -> None:
    replica = opened(boss)
    try:
        wall = [instant_seconds(parse_instant("2026-12-01T12:00:00Z"))]
        mono = [1000.0]
        clocks = offline.Clocks(lambda: seconds_instant(wall[0]), lambda: mono[0])
        request = offline.parse_line(
            b'{"user":"vic","action":"read","resource":{"type":"vehicle"}}'
        )
        document = {"user": "vic", "action": "read", "resource": {"type": "vehicle"}}
        offline.decide_one(replica, request, document, log=True, clocks=clocks)
        wall[0] -= 6 * 3600  # the clock is set six hours back
        mono[0] += 30
        line = json.loads(offline.decide_one(replica, request, document, log=True, clocks=clocks))
        assert line["clock"] == "frozen"
        assert "the wall clock is behind the replica's last known time" in line["reason"]
        links = replica.unsent_decisions(10)
        # A new reading (a new process) starts from the stored mark: time is held there.
        assert links[1].at == format_instant(parse_instant("2026-12-01T12:00:00Z"))
    finally:
        replica.close()


def test_a_batch_without_logging_decides_as_the_logged_one_and_names_a_bad_line(
    boss: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        json.dumps({"user": user, "action": action, "resource": {"type": "vehicle"}})
        for user in ("vic", "sam", "boss", "nobody")
        for action in ("read", "drive")
    ]
    requests = tmp_path / "requests.jsonl"
    requests.write_text("\n".join(lines) + "\n")
    args = ["check", *replica_args(boss, "boss"), "--requests", str(requests)]
    code, logged, _ = run(capsys, *args)
    code_fast, fast, err = run(capsys, *args, "--no-log")
    assert code == code_fast == 0, err
    assert fast == logged and len(fast.splitlines()) == 8
    assert all(json.loads(line)["lease"] == "fresh" for line in fast.splitlines())
    requests.write_text(lines[0] + "\n" + "{oops\n")
    code, out, err = run(capsys, *args, "--no-log")
    assert code == 2 and "line 2" in err and len(out.splitlines()) == 1


def test_a_full_disk_fails_the_edit_visibly_with_nothing_half_written(
    boss: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = Replica.open.__func__  # type: ignore[attr-defined]

    def nearly_full(cls: type[Replica], *args: Any, **kwargs: Any) -> Replica:
        replica = real_open(cls, *args, **kwargs)
        pages = replica.file.conn.execute("PRAGMA page_count").fetchone()[0]
        replica.file.conn.execute(f"PRAGMA max_page_count = {pages}")
        return replica

    monkeypatch.setattr(Replica, "open", classmethod(nearly_full))
    big = [{"op": "create_role", "role_id": f"r-{i}", "name": f"role {i}",
            "description": "x" * 3000} for i in range(40)]  # fmt: skip
    edits = tmp_path / "edits.json"
    edits.write_text(json.dumps(big))
    code, out, err = run(capsys, "edit", *replica_args(boss, "boss"), "--edits", str(edits))
    assert code == 2 and out == ""
    assert "full" in err
    monkeypatch.undo()
    replica = opened(boss)
    try:
        assert replica.pending() == [] and replica.meta().last_seq == 0
    finally:
        replica.close()


def test_search_finds_roles_users_and_pending_edits(
    boss: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edits = tmp_path / "edits.json"
    edits.write_text(json.dumps([{"op": "describe_role", "role_id": "r-driver",
                                  "description": "drives the yard tractors"}]))  # fmt: skip
    assert run(capsys, "edit", *replica_args(boss, "boss"), "--edits", str(edits))[0] == 0
    replica = opened(boss)
    try:
        assert ("role", "r-viewer") in replica.search("view")  # a prefix of a role's name
        assert ("user", "sam") in replica.search("sam")
        assert ("edit", "1") in replica.search("tractor")  # the pending edit
        assert replica.search('"); DROP TABLE entities; --') == []  # FTS syntax means nothing
    finally:
        replica.close()


# --- sync --watch -------------------------------------------------------------------------


def test_a_watching_sync_builds_the_policy_once_caught_up_and_idle_not_at_the_first_change(
    boss: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Built at the first change, reading the tenant held that change back: the first
    # change reached a watching replica 1.6 s after it was pushed, on the bench tenant.
    # A one-shot sync that brings no change still reads nothing.
    from app.sync_client import SyncSession
    from sync.protocol import client as protocol

    replica = opened(boss)
    loads: list[int] = []
    real = replica.load_policy
    monkeypatch.setattr(replica, "load_policy", lambda now: loads.append(1) or real(now))
    try:
        for watch in (False, True):
            connection = protocol.ClientConnection(
                device="d-1", client=replica.client, rng=lambda: 0.5, tokens=None,
                credentials=protocol.Password("acme", "boss", "pw"),
            )  # fmt: skip
            session = SyncSession(replica, connection, report=lambda _: None, watch=watch)
            session._caught_up(protocol.CaughtUp())
            assert loads == []  # not before the transport is idle: the app says caught up
            session.idle()
            if not watch:
                assert loads == [] and session.follower is None
        assert loads == [1]
        assert session.follower is not None and session.follower.policy is not None
        assert loads == [1]  # built once, kept for the changes to come
    finally:
        replica.close()
