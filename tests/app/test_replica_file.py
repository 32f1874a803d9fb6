"""The encrypted file under the local replica: real SQLCipher files, real second processes,
an in-memory OS keyring (or none), cheap Argon2 parameters except where said."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keyring
import keyring.backends.null
import pytest
import sqlcipher3.dbapi2 as sqlcipher
import sqlite_utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import replica_file, replica_keys
from app.replica_commands import add_replica_parser
from app.replica_file import (
    KeyMode,
    KeyUnavailable,
    Migration,
    MigrationFailed,
    ReplicaBusy,
    ReplicaDamaged,
    ReplicaError,
    ReplicaFile,
    ReplicaFull,
    ReplicaMissing,
    ReplicaRekeyed,
    ReplicaTooNew,
    WrongKey,
    default_replica_dir,
    discard_rescued,
    passphrase_from_environment,
    replica_files,
    rescued_rows,
    salvage,
    slot_name,
    wipe_replica,
)
from app.replica_keys import keyring_entry
from tests.app.memory_keyring import MemoryKeyring

ROOT = Path(__file__).resolve().parents[2]
PAGE = 4096

# Strings that must never be readable in any file of the replica's directory.
TENANT = "tenant-zanzibar-freight"
USER = "user-quokka-7741"
ROLE = "role-nightshift-dispatcher"
TABLE = "roles_marmoset"
SECRET = "refresh-token-wombat-9137"
PASSPHRASE = "passphrase-kestrel-2208"

MIGRATIONS = [
    Migration(1, "outbox", "CREATE TABLE outbox (id INTEGER PRIMARY KEY, body TEXT NOT NULL);"),
    Migration(
        2,
        "roles and search",
        f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, name TEXT NOT NULL, tenant TEXT, "
        "member TEXT);"
        "CREATE VIRTUAL TABLE search USING fts5(name);",
    ),
]


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replica_keys, "ARGON2_DEFAULTS", replica_keys.Argon2Parameters(1, 8, 1))


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture
def no_keyring() -> Iterator[None]:
    previous = keyring.get_keyring()
    keyring.set_keyring(keyring.backends.null.Keyring())
    yield
    keyring.set_keyring(previous)


def pw(value: str = PASSPHRASE) -> Any:
    return lambda: value


def open_replica(directory: Path, user: str = USER, **options: Any) -> ReplicaFile:
    options.setdefault("migrations", MIGRATIONS)
    return ReplicaFile.open(directory, TENANT, user, **options)


def create(directory: Path, **options: Any) -> ReplicaFile:
    return open_replica(directory, create=True, **options)


def fill(replica: ReplicaFile, outbox: int = 300, roles: int = 300) -> None:
    """`outbox` rows, then `roles` rows, so the roles' pages follow the outbox's."""
    with replica.write() as db:
        db["outbox"].insert_all(
            {"id": i, "body": f"edit {i} of {ROLE} " + "x" * 150} for i in range(1, outbox + 1)
        )
    with replica.write() as db:
        db[TABLE].insert_all(
            {"name": f"{ROLE}-{i}", "tenant": TENANT, "member": USER, "id": i}
            for i in range(1, roles + 1)
        )


def outbox_count(replica: ReplicaFile) -> int:
    with replica.read() as db:
        return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])


def file_state(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def slot_path(directory: Path, suffix: str, user: str = USER) -> Path:
    return directory / f"{slot_name(TENANT, user)}{suffix}"


# --- 1. the whole file is encrypted --------------------------------------------------------


def assert_nothing_readable(directory: Path, *extra: str) -> list[str]:
    needles = [TENANT, USER, ROLE, TABLE, SECRET, PASSPHRASE, "marmoset", *extra]
    names = []
    for path in sorted(directory.rglob("*")):
        names.append(path.name)
        for needle in needles:
            assert needle not in path.name
            if path.is_file():
                assert needle.encode() not in path.read_bytes(), f"{needle!r} in {path.name}"
    return names


@pytest.mark.parametrize("mode", [KeyMode.KEYRING, KeyMode.PASSPHRASE])
def test_no_id_name_or_secret_is_readable_in_any_file(
    tmp_path: Path, memory_keyring: MemoryKeyring, mode: KeyMode
) -> None:
    directory = tmp_path / "replicas"
    replica = create(directory, mode=mode, passphrase=pw())
    replica.secret_set("refresh_token", SECRET)
    fill(replica)
    with replica.write() as db:
        db.execute("INSERT INTO search (name) VALUES (?)", (ROLE,))
    key_hex = replica._key.hex()
    # Written through the WAL, before any checkpoint: the pages are in the -wal file.
    assert slot_path(directory, ".db-wal").stat().st_size > 0
    names = assert_nothing_readable(directory, key_hex)
    assert {n.rsplit(".", 1)[-1] for n in names} >= {"db", "db-wal", "db-shm", "header", "lock"}
    replica.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with replica.write() as db:  # and after the checkpoint, into a fresh WAL
        db[TABLE].insert({"name": ROLE + "-after", "tenant": TENANT, "member": USER})
    assert_nothing_readable(directory, key_hex)
    with replica.read() as db:
        found = db.execute("SELECT name FROM search WHERE search MATCH 'nightshift'").fetchall()
    assert found == [(ROLE,)]
    replica.close()
    assert_nothing_readable(directory, key_hex)
    # A rescue file and the damaged files moved aside are no more readable.
    assert salvage(directory, TENANT, USER, tables=["outbox", TABLE], passphrase=pw()) is not None
    names = assert_nothing_readable(directory, key_hex)
    assert any(".rescue-" in n for n in names) and any(".damaged-" in n for n in names)
    rows = rescued_rows(directory, TENANT, USER, passphrase=pw())
    assert rows[TABLE][0] == {"id": 1, "name": f"{ROLE}-1", "tenant": TENANT, "member": USER}


def test_plain_sqlite_cannot_read_the_file(tmp_path: Path, memory_keyring: MemoryKeyring) -> None:
    import sqlite3

    replica = create(tmp_path)
    fill(replica, 5, 5)
    replica.close()
    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        sqlite3.connect(slot_path(tmp_path, ".db")).execute("SELECT * FROM sqlite_schema")


def test_directory_is_made_private_and_files_are_the_owners(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    directory = tmp_path / "a" / "replicas"
    replica = create(directory)
    fill(replica, 3, 3)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    replica.close()


def test_connection_is_wal_full_sync_memory_temp_and_foreign_keys(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    replica = create(tmp_path)

    def pragma(name: str) -> Any:
        return replica.conn.execute(f"PRAGMA {name}").fetchone()[0]

    assert pragma("journal_mode") == "wal"
    assert pragma("synchronous") == 2  # FULL
    assert pragma("temp_store") == 2  # MEMORY
    assert pragma("foreign_keys") == 1
    assert pragma("busy_timeout") >= 1000
    assert pragma("cipher_version").startswith("4.")
    replica.close()


def test_opening_gives_sqlcipher_a_raw_key_so_it_runs_no_kdf(
    tmp_path: Path, memory_keyring: MemoryKeyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(tmp_path).close()
    statements: list[str] = []
    connect = sqlcipher.connect

    def traced(*args: Any, **kwargs: Any) -> Any:
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(replica_file.sqlcipher, "connect", traced)
    open_replica(tmp_path).close()
    keyed = [s for s in statements if s.upper().startswith("PRAGMA KEY")]
    # A raw 256-bit key (x'64 hex digits'): a passphrase would cost SQLCipher's
    # PBKDF2 (256,000 iterations) on every open. How long opening takes is a benchmark's.
    assert len(keyed) == 1 and re.fullmatch(r"""PRAGMA key = "x'[0-9a-f]{64}'\"""", keyed[0])


def test_file_names_are_a_hash_of_tenant_and_user() -> None:
    name = slot_name(TENANT, USER)
    assert len(name) == 32 and int(name, 16) >= 0
    assert name != slot_name(TENANT, "someone-else") != slot_name("other", USER)
    assert slot_name(TENANT, USER) == name
    assert default_replica_dir().parts[-2:] == ("Fleetgate", "replicas")


# --- 2. keys -------------------------------------------------------------------------------


def keyring_id(directory: Path, user: str = USER) -> str:
    """The keyring id in the header of the test replica in `directory`."""
    return str(json.loads(slot_path(directory, ".header", user).read_text())["keyring_id"])


def kname(directory: Path, user: str = USER) -> str:
    """The keyring name of the test replica's key in `directory`."""
    return keyring_entry(slot_name(TENANT, user), keyring_id(directory, user))


def test_keyring_mode_when_a_keyring_works(tmp_path: Path, memory_keyring: MemoryKeyring) -> None:
    asked = []
    replica = create(tmp_path, passphrase=lambda: asked.append(1) or "x")
    assert replica.mode is KeyMode.KEYRING and asked == []
    slot = kname(tmp_path)
    stored = memory_keyring.entries[("fleetgate-replica", slot)]
    assert bytes.fromhex(stored) == replica._key and len(replica._key) == 32
    header = json.loads(replica.header_path.read_text())
    assert header["mode"] == "keyring" and header["kdf"] is None
    expected = hmac.new(replica._key, b"fleetgate replica key check", hashlib.sha256).hexdigest()
    assert header["key_check"] == expected
    assert header["format"] == 2 and header["keyring_id"] == keyring_id(tmp_path)
    assert len(header["keyring_id"]) == 16
    assert header["client_id"] == replica.client_id and replica.client_id.startswith("c-")
    assert len(replica.client_id) == 26
    assert header["created"].endswith("Z")
    # the probe entry of the keyring check is gone
    assert list(memory_keyring.entries) == [("fleetgate-replica", slot)]
    replica.close()


def test_passphrase_mode_when_there_is_no_keyring(tmp_path: Path, no_keyring: None) -> None:
    replica = create(tmp_path, passphrase=pw())
    assert replica.mode is KeyMode.PASSPHRASE
    header = json.loads(replica.header_path.read_text())
    kdf = header["kdf"]
    assert kdf["name"] == "argon2id" and kdf["version"] == 19
    assert (kdf["time_cost"], kdf["memory_cost"], kdf["parallelism"]) == (1, 8, 1)
    salt = bytes.fromhex(kdf["salt"])
    assert len(salt) == 16
    parameters = replica_keys.Kdf(1, 8, 1, salt)
    assert replica._key == replica_keys.derive_key(PASSPHRASE, parameters)
    assert header["key_check"] == replica_keys.key_check(replica._key)
    replica.close()
    assert open_replica(tmp_path, passphrase=pw()).mode is KeyMode.PASSPHRASE


def test_a_passphrase_of_bytes_that_are_not_utf8_makes_and_opens_a_replica(
    tmp_path: Path, no_keyring: None
) -> None:
    # FLEETGATE_PASSPHRASE of such bytes arrives holding lone surrogates: deriving the
    # key was an internal error (UnicodeEncodeError).
    odd = b"caf\xe9 \xff".decode("utf-8", "surrogateescape")
    replica = create(tmp_path, passphrase=lambda: odd)
    assert replica.mode is KeyMode.PASSPHRASE
    replica.close()
    open_replica(tmp_path, passphrase=lambda: odd).close()
    with pytest.raises(WrongKey):
        open_replica(tmp_path, passphrase=lambda: "caf\xe9 \xff")  # the characters, not bytes


def test_real_argon2_defaults(
    tmp_path: Path, no_keyring: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.undo()  # the real ARGON2_DEFAULTS
    assert replica_keys.Argon2Parameters(3, 65536, 1) == replica_keys.ARGON2_DEFAULTS
    replica = create(tmp_path, passphrase=pw())
    assert replica.info()["kdf"] == {
        "name": "argon2id", "version": 19, "time_cost": 3, "memory_cost": 65536, "parallelism": 1,
    }  # fmt: skip
    assert (
        replica.describe_key() == "key: derived from a passphrase (Argon2id, t=3, m=65536 KiB, p=1)"
    )
    replica.close()
    open_replica(tmp_path, passphrase=pw()).close()
    with pytest.raises(WrongKey):
        open_replica(tmp_path, passphrase=pw("not it"))


def test_wrong_passphrase_leaves_the_file_untouched(tmp_path: Path, no_keyring: None) -> None:
    replica = create(tmp_path, passphrase=pw())
    fill(replica, 20, 20)
    replica.close()
    db = slot_path(tmp_path, ".db")
    before = {p.name: file_state(p) for p in tmp_path.iterdir()}
    with pytest.raises(WrongKey) as caught:
        open_replica(tmp_path, passphrase=pw("hunter-2-typo"))
    assert str(caught.value) == f"wrong passphrase for the replica in {tmp_path}"
    assert {p.name: file_state(p) for p in tmp_path.iterdir()} == before
    assert not slot_path(tmp_path, ".db-wal").exists() and db.exists()


def test_a_keyring_key_that_does_not_open_leaves_the_file_untouched(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    create(tmp_path).close()
    entry = ("fleetgate-replica", kname(tmp_path))
    memory_keyring.entries[entry] = os.urandom(32).hex()
    before = file_state(slot_path(tmp_path, ".db"))
    with pytest.raises(WrongKey, match="the keyring's key does not open the replica in"):
        open_replica(tmp_path)
    assert file_state(slot_path(tmp_path, ".db")) == before


def test_no_key_in_the_keyring_says_what_to_do(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    create(tmp_path).close()
    memory_keyring.entries.clear()
    with pytest.raises(KeyUnavailable) as caught:
        open_replica(tmp_path)
    assert "has no key for the replica in" in str(caught.value)
    assert "fleetgate replica wipe" in str(caught.value)
    memory_keyring.locked = True
    with pytest.raises(KeyUnavailable, match=r"could not be read .*\(KeyringLocked\)"):
        open_replica(tmp_path)


def test_keyring_mode_without_a_working_keyring_is_key_unavailable(
    tmp_path: Path, no_keyring: None
) -> None:
    with pytest.raises(KeyUnavailable, match="did not keep the key"):
        create(tmp_path, mode=KeyMode.KEYRING)
    assert not slot_path(tmp_path, ".header").exists()


def test_passphrase_mode_without_a_passphrase_is_key_unavailable(
    tmp_path: Path, no_keyring: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(tmp_path, passphrase=pw()).close()
    with pytest.raises(KeyUnavailable, match="protected by a passphrase and none was given"):
        open_replica(tmp_path)
    monkeypatch.delenv("FLEETGATE_PASSPHRASE", raising=False)
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # noqa: SIM115 - not a terminal
    with pytest.raises(KeyUnavailable) as caught:
        open_replica(tmp_path, passphrase=passphrase_from_environment())
    assert "set FLEETGATE_PASSPHRASE" in str(caught.value) and str(tmp_path) in str(caught.value)
    with pytest.raises(KeyUnavailable, match="empty passphrase"):
        open_replica(tmp_path, passphrase=pw(""))


def test_passphrase_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETGATE_PASSPHRASE", "from-env")
    assert passphrase_from_environment()() == "from-env"
    monkeypatch.delenv("FLEETGATE_PASSPHRASE")

    class Terminal:
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal())
    prompts: list[str] = []
    monkeypatch.setattr("getpass.getpass", lambda prompt: prompts.append(prompt) or "typed")
    assert passphrase_from_environment("Say it: ")() == "typed" and prompts == ["Say it: "]


def test_the_passphrase_is_asked_once_and_only_when_needed(
    tmp_path: Path, no_keyring: None
) -> None:
    asked: list[int] = []

    def source() -> str:
        asked.append(1)
        return PASSPHRASE

    create(tmp_path, passphrase=source).close()
    open_replica(tmp_path, passphrase=source).close()
    assert asked == [1, 1]


def test_a_matching_key_on_an_unreadable_database_is_damage(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    create(tmp_path).close()
    db = slot_path(tmp_path, ".db")
    db.write_bytes(os.urandom(db.stat().st_size))
    with pytest.raises(ReplicaDamaged) as caught:
        open_replica(tmp_path)
    assert caught.value.path == db and str(db) in str(caught.value)


def test_secrets_are_keyring_entries_in_keyring_mode(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    replica = create(tmp_path)
    assert replica.secret_get("refresh_token") is None
    replica.secret_set("refresh_token", SECRET)
    replica.secret_set("refresh_token", SECRET + "-2")
    slot = slot_name(TENANT, USER)
    assert (
        memory_keyring.entries[
            ("fleetgate-secret", keyring_entry(f"{slot}:refresh_token", keyring_id(tmp_path)))
        ]
        == SECRET + "-2"
    )
    assert json.loads(replica.header_path.read_text())["keyring_secrets"] == ["refresh_token"]
    with replica.read() as db:
        assert db.execute("SELECT count(*) FROM _secrets").fetchone()[0] == 0
    assert replica.secret_get("refresh_token") == SECRET + "-2"
    replica.secret_delete("refresh_token")
    replica.secret_delete("refresh_token")
    assert replica.secret_get("refresh_token") is None
    assert (
        "fleetgate-secret",
        keyring_entry(f"{slot}:refresh_token", keyring_id(tmp_path)),
    ) not in memory_keyring.entries
    with pytest.raises(ValueError, match="name"):
        replica.secret_set("no:colons", "x")
    replica.close()


def test_secrets_live_inside_the_file_in_passphrase_mode(tmp_path: Path, no_keyring: None) -> None:
    replica = create(tmp_path, passphrase=pw())
    replica.secret_set("refresh_token", SECRET)
    replica.close()
    replica = open_replica(tmp_path, passphrase=pw())
    assert replica.secret_get("refresh_token") == SECRET
    with replica.read() as db:
        assert db.execute("SELECT name, value FROM _secrets").fetchall() == [
            ("refresh_token", SECRET)
        ]
    replica.secret_delete("refresh_token")
    assert replica.secret_get("refresh_token") is None
    replica.close()


def directory_hash(directory: Path) -> str:
    """How a format-1 replica's keyring entries were named: a hash of its directory."""
    return hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16]


def make_format_1(directory: Path, memory_keyring: MemoryKeyring) -> None:
    """Turn the closed test replica in `directory` into one an older client made: a format-1
    header without a keyring id, and keyring entries named by the directory."""
    path = slot_path(directory, ".header")
    header = json.loads(path.read_text())
    made_with = header.pop("keyring_id")
    path.write_text(json.dumps({**header, "format": 1}))
    for (service, name), value in list(memory_keyring.entries.items()):
        if name.endswith("@" + made_with):
            del memory_keyring.entries[(service, name)]
            old_name = name.removesuffix(made_with) + directory_hash(directory)
            memory_keyring.entries[(service, old_name)] = value


def test_a_moved_replica_keeps_its_key_and_secrets_in_the_keyring(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    # Defect: entries were named by the directory, so a renamed one lost its key.
    here, there = tmp_path / "replicas", tmp_path / "moved" / "elsewhere"
    replica = create(here)
    replica.secret_set("refresh_token", SECRET)
    fill(replica, 10, 10)
    replica.close()
    entries = dict(memory_keyring.entries)
    there.parent.mkdir()
    here.rename(there)
    replica = open_replica(there)
    assert outbox_count(replica) == 10 and replica.secret_get("refresh_token") == SECRET
    replica.secret_set("refresh_token", SECRET + "-2")
    assert replica.info()["keyring_id"] == keyring_id(there)
    replica.close()
    assert set(memory_keyring.entries) == set(entries)
    assert all(name.endswith("@" + keyring_id(there)) for _, name in entries)


def test_two_replicas_of_one_user_in_two_directories_have_entries_of_their_own(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    first, second = create(tmp_path / "a"), create(tmp_path / "b")
    first.secret_set("refresh_token", "first's")
    second.secret_set("refresh_token", "second's")
    assert first._key != second._key and first.client_id != second.client_id
    assert keyring_id(tmp_path / "a") != keyring_id(tmp_path / "b")
    assert len(memory_keyring.entries) == 4
    first.close()
    second.wipe()
    assert len(memory_keyring.entries) == 2
    (tmp_path / "a").rename(tmp_path / "b")  # into the place of the one wiped
    replica = open_replica(tmp_path / "b")
    assert replica.secret_get("refresh_token") == "first's"
    replica.wipe()
    assert memory_keyring.entries == {}


def test_a_moved_replica_is_rekeyed_and_wiped_under_its_keyring_id(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    create(tmp_path / "a").close()
    (tmp_path / "a").rename(tmp_path / "b")
    replica = open_replica(tmp_path / "b")
    fill(replica, 10, 10)
    replica.secret_set("refresh_token", SECRET)
    old_key = replica._key
    replica.rekey()
    entry = ("fleetgate-replica", kname(tmp_path / "b"))
    assert bytes.fromhex(memory_keyring.entries[entry]) == replica._key != old_key
    replica.rekey(mode=KeyMode.PASSPHRASE, passphrase="pass")
    assert memory_keyring.entries == {}
    replica.rekey(mode=KeyMode.KEYRING)
    replica.close()
    (tmp_path / "b").rename(tmp_path / "c")
    replica = open_replica(tmp_path / "c")
    assert outbox_count(replica) == 10 and replica.secret_get("refresh_token") == SECRET
    replica.close()
    wipe_replica(tmp_path / "c", TENANT, USER)
    assert memory_keyring.entries == {} and replica_files(tmp_path / "c", TENANT, USER) == []


def test_a_format_1_replica_is_found_by_its_directory_then_given_its_keyring_id(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    here, there = tmp_path / "a", tmp_path / "b"
    replica = create(here)
    replica.secret_set("refresh_token", SECRET)
    fill(replica, 10, 10)
    replica.close()
    make_format_1(here, memory_keyring)
    entries = dict(memory_keyring.entries)
    here.rename(there)  # moved before a client that names entries by id opened it
    with pytest.raises(KeyUnavailable, match="move it back and open it once"):
        open_replica(there)
    there.rename(here)
    replica = open_replica(here)
    assert outbox_count(replica) == 10 and replica.secret_get("refresh_token") == SECRET
    replica.close()
    header = json.loads(slot_path(here, ".header").read_text())
    assert (header["format"], header["keyring_id"]) == (2, directory_hash(here))
    assert memory_keyring.entries == entries  # nothing moved in the keyring
    here.rename(there)
    replica = open_replica(there)
    assert outbox_count(replica) == 10 and replica.secret_get("refresh_token") == SECRET
    replica.wipe()
    assert memory_keyring.entries == {}


def test_a_format_1_replica_opens_while_a_writer_holds_the_lock_and_is_pinned_later(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    create(tmp_path).close()
    make_format_1(tmp_path, memory_keyring)
    writer = replica_file._WriterLock(slot_path(tmp_path, ".lock"))
    with writer.hold(1.0):
        replica = open_replica(tmp_path, migrations=(), migrate=False, wait=0.1)
        replica.close()
    writer.close()
    assert json.loads(slot_path(tmp_path, ".header").read_text())["format"] == 1
    open_replica(tmp_path).close()
    assert json.loads(slot_path(tmp_path, ".header").read_text())["format"] == 2


def test_a_format_1_replica_is_wiped_by_its_directory_without_being_opened(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    replica = create(tmp_path)
    replica.secret_set("refresh_token", SECRET)
    replica.close()
    make_format_1(tmp_path, memory_keyring)
    wipe_replica(tmp_path, TENANT, USER)
    assert memory_keyring.entries == {} and replica_files(tmp_path, TENANT, USER) == []


# --- 3. rekey ------------------------------------------------------------------------------


def test_rekey_in_the_keyring_makes_a_new_random_key(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    replica = create(tmp_path)
    fill(replica, 10, 10)
    old_key = replica._key
    replica.rekey()
    entry = ("fleetgate-replica", kname(tmp_path))
    assert bytes.fromhex(memory_keyring.entries[entry]) == replica._key != old_key
    assert outbox_count(replica) == 10
    replica.close()
    assert outbox_count(open_replica(tmp_path)) == 10
    assert sorted(memory_keyring.entries) == [entry]
    assert not slot_path(tmp_path, ".header.new").exists()
    memory_keyring.entries[entry] = old_key.hex()
    with pytest.raises(WrongKey):
        open_replica(tmp_path)


def test_rekey_to_a_new_passphrase(tmp_path: Path, no_keyring: None) -> None:
    replica = create(tmp_path, passphrase=pw())
    fill(replica, 10, 10)
    old_salt = json.loads(replica.header_path.read_text())["kdf"]["salt"]
    replica.rekey(passphrase="the new one")
    assert json.loads(replica.header_path.read_text())["kdf"]["salt"] != old_salt
    replica.close()
    with pytest.raises(WrongKey):
        open_replica(tmp_path, passphrase=pw())
    assert outbox_count(open_replica(tmp_path, passphrase=pw("the new one"))) == 10


def test_rekey_from_keyring_to_passphrase_moves_the_secrets_into_the_file(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    replica = create(tmp_path)
    replica.secret_set("refresh_token", SECRET)
    fill(replica, 10, 10)
    replica.rekey(mode=KeyMode.PASSPHRASE, passphrase="pass")
    assert replica.mode is KeyMode.PASSPHRASE
    assert memory_keyring.entries == {}
    assert replica.secret_get("refresh_token") == SECRET
    replica.close()
    replica = open_replica(tmp_path, passphrase=pw("pass"))
    assert replica.secret_get("refresh_token") == SECRET and outbox_count(replica) == 10
    header = json.loads(replica.header_path.read_text())
    assert header["mode"] == "passphrase" and header["keyring_secrets"] == []
    # and back
    replica.rekey(mode=KeyMode.KEYRING)
    slot = slot_name(TENANT, USER)
    assert (
        memory_keyring.entries[
            ("fleetgate-secret", keyring_entry(f"{slot}:refresh_token", keyring_id(tmp_path)))
        ]
        == SECRET
    )
    with replica.read() as db:
        assert db.execute("SELECT count(*) FROM _secrets").fetchone()[0] == 0
    replica.close()
    replica = open_replica(tmp_path, passphrase=lambda: pytest.fail("asked for a passphrase"))
    assert replica.mode is KeyMode.KEYRING and replica.secret_get("refresh_token") == SECRET
    replica.close()


def test_rekey_arguments_are_checked(tmp_path: Path, memory_keyring: MemoryKeyring) -> None:
    replica = create(tmp_path)
    with pytest.raises(ValueError, match="new passphrase"):
        replica.rekey(mode=KeyMode.PASSPHRASE)
    with pytest.raises(ValueError, match="no passphrase"):
        replica.rekey(passphrase="x")
    with replica.write(), pytest.raises(RuntimeError):
        replica.rekey()
    replica.close()


class Crash(BaseException):
    """The process dies here: nothing after it runs, no cleanup."""


def crash_at(monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    """Make the rekey stop dead at `point`."""
    if point == "before the database takes the new key":
        monkeypatch.setattr(replica_file, "_write_rescue_copies", _raise_crash)
    elif point == "after the database took the new key":
        monkeypatch.setattr(replica_file, "_finish_rekey", _raise_crash)
    elif point == "after the keyring took the new key":
        real = replica_file.keyring_set

        def keyring_set(service: str, username: str, value: str, *where: Any) -> None:
            real(service, username, value, *where)
            if not username.endswith(".new"):
                raise Crash

        monkeypatch.setattr(replica_file, "keyring_set", keyring_set)
    elif point == "after the new header was renamed":
        monkeypatch.setattr(replica_file, "fsync_directory", _raise_crash)
    else:
        raise AssertionError(point)


def _raise_crash(*args: object) -> None:
    raise Crash


CRASH_POINTS = [
    "before the database takes the new key",
    "after the database took the new key",
    "after the keyring took the new key",
    "after the new header was renamed",
]


MODE_CHANGES = [
    (KeyMode.KEYRING, KeyMode.KEYRING),
    (KeyMode.KEYRING, KeyMode.PASSPHRASE),
    (KeyMode.PASSPHRASE, KeyMode.PASSPHRASE),
    (KeyMode.PASSPHRASE, KeyMode.KEYRING),
]


@pytest.mark.parametrize(
    ("before", "after", "point"),
    [
        (before, after, point)
        for before, after in MODE_CHANGES
        for point in CRASH_POINTS
        # a passphrase rekey stores no new key in the keyring
        if not (point == "after the keyring took the new key" and after is KeyMode.PASSPHRASE)
    ],
)
def test_a_crash_during_rekey_never_leaves_the_file_unopenable(
    tmp_path: Path,
    memory_keyring: MemoryKeyring,
    monkeypatch: pytest.MonkeyPatch,
    point: str,
    before: KeyMode,
    after: KeyMode,
) -> None:
    replica = create(tmp_path, mode=before, passphrase=pw("old"))
    replica.secret_set("refresh_token", SECRET)
    fill(replica, 30, 30)
    assert salvage_copy_of_outbox(tmp_path, replica)
    client_id = replica.client_id
    with monkeypatch.context() as patch:
        crash_at(patch, point)
        with pytest.raises(Crash):
            replica.rekey(mode=after, passphrase="new" if after is KeyMode.PASSPHRASE else None)
    replica.close()  # the process is gone: its connection and lock with it
    rolled_forward = point != "before the database takes the new key"
    expected = after if rolled_forward else before
    right = "new" if rolled_forward and after is KeyMode.PASSPHRASE else "old"
    if expected is KeyMode.PASSPHRASE and slot_path(tmp_path, ".header.new").exists():
        wrong = {"new": "old", "old": "new"}[right]
        with pytest.raises(WrongKey, match=r"interrupted|wrong passphrase"):
            open_replica(tmp_path, passphrase=pw(wrong))
    replica = open_replica(tmp_path, passphrase=pw(right))
    assert replica.mode is expected and replica.client_id == client_id
    assert outbox_count(replica) == 30 and replica.check_integrity() == []
    assert replica.secret_get("refresh_token") == SECRET
    assert not slot_path(tmp_path, ".header.new").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".new")] == []
    assert rescued_rows(tmp_path, TENANT, USER, passphrase=pw(right))["outbox"][0]["id"] == 1
    slot = kname(tmp_path)
    key_entries = {u for (s, u) in memory_keyring.entries if s == "fleetgate-replica"}
    assert key_entries == ({slot} if expected is KeyMode.KEYRING else set())
    replica.close()
    replica = open_replica(tmp_path, passphrase=pw(right))  # and again, settled
    assert replica.mode is expected and outbox_count(replica) == 30
    replica.close()


def salvage_copy_of_outbox(directory: Path, replica: ReplicaFile) -> bool:
    """Put a rescue file beside `replica` (sealed with its key), as a salvage would."""
    with replica.read() as db:
        rows = list(db["outbox"].rows)
    sealed = replica_keys.seal(replica._key, {"format": 1, "tables": {"outbox": rows}})
    slot_path(directory, ".rescue-20261201T000000000000Z").write_bytes(sealed)
    return True


def test_a_rekey_by_another_process_is_noticed(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    first = create(tmp_path)
    fill(first, 10, 10)
    second = open_replica(tmp_path)
    second.rekey()
    with pytest.raises(ReplicaRekeyed, match="given a new key by another process"):
        outbox_count(first)
    with pytest.raises(ReplicaRekeyed):
        first.write().__enter__()
    third = open_replica(tmp_path)
    third.rekey()
    with pytest.raises(ReplicaRekeyed), second.write() as db:
        db["outbox"].insert({"body": "lost?"})
    assert outbox_count(third) == 10
    for replica in (first, second, third):
        replica.close()


# --- 4. damage and salvage -----------------------------------------------------------------


def damaged_replica(directory: Path, damage: str) -> Path:
    """A closed replica (outbox pages first, roles after), damaged as said; its db path."""
    replica = create(directory)
    fill(replica)
    replica.close()
    db = slot_path(directory, ".db")
    data = bytearray(db.read_bytes())
    assert len(data) % PAGE == 0 and len(data) // PAGE > 20
    if damage == "a flipped byte in the last page":
        data[-PAGE + 200] ^= 0x40
    elif damage == "a flipped byte in the first page":
        data[300] ^= 0x01
    elif damage == "cut in the middle of the last page":
        del data[-PAGE // 2 :]
    elif damage == "the last pages missing":
        del data[-3 * PAGE :]
    elif damage == "garbage":
        data = bytearray(os.urandom(len(data)))
    elif damage == "emptied":
        data = bytearray()
    else:
        raise AssertionError(damage)
    db.write_bytes(bytes(data))
    return db


@pytest.mark.parametrize(
    "damage",
    [
        "a flipped byte in the last page",
        "cut in the middle of the last page",
        "the last pages missing",
        "a flipped byte in the first page",
        "garbage",
        "emptied",
    ],
)
def test_damage_is_replica_damaged_naming_the_file(
    tmp_path: Path, memory_keyring: MemoryKeyring, damage: str, capfd: pytest.CaptureFixture[str]
) -> None:
    db = damaged_replica(tmp_path, damage)
    try:
        replica = open_replica(tmp_path)
    except ReplicaDamaged as error:
        assert error.path == db and str(db) in str(error)
        assert damage not in {
            "a flipped byte in the last page",
            "cut in the middle of the last page",
        }
    else:
        # Opened: the outbox's pages are sound, the roles' are not.
        assert outbox_count(replica) == 300
        with pytest.raises(ReplicaDamaged) as caught, replica.read() as db_:
            db_.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
        assert caught.value.path == db and str(db) in str(caught.value)
        # Once a page failed, every later use says so, never a raw error.
        with pytest.raises(ReplicaDamaged):
            outbox_count(replica)
        with pytest.raises(ReplicaDamaged), replica.write() as db_:
            db_["outbox"].insert({"body": "x"})
        problems = replica.check_integrity()
        assert problems and all(isinstance(p, str) for p in problems)
        replica.close()
    assert "hmac" not in capfd.readouterr().err.lower()  # SQLCipher's own log stays quiet


def test_a_damaged_page_read_through_write_is_damage(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    db = damaged_replica(tmp_path, "a flipped byte in the last page")
    replica = open_replica(tmp_path)
    with pytest.raises(ReplicaDamaged) as caught, replica.write() as handle:
        handle.execute(f"UPDATE {TABLE} SET name = 'x'")
    assert caught.value.path == db
    replica.close()


def test_a_damaged_page_read_through_select_is_damage(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    db = damaged_replica(tmp_path, "a flipped byte in the last page")
    replica = open_replica(tmp_path)
    assert replica.select("SELECT count(*) FROM outbox") == [(300,)]
    with pytest.raises(ReplicaDamaged) as caught:
        replica.select(f"SELECT count(*) FROM {TABLE}")
    assert caught.value.path == db
    replica.close()


def test_select_runs_only_a_select_and_sees_the_write_it_is_inside(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    replica = create(tmp_path)
    fill(replica, outbox=3, roles=0)
    for statement in ("DELETE FROM outbox", "  insert into outbox (body) values ('x')",
                      "WITH x AS (SELECT 1) DELETE FROM outbox"):  # fmt: skip
        with pytest.raises(ValueError, match="SELECT only"):
            replica.select(statement)
    assert outbox_count(replica) == 3
    with replica.write() as db:
        db["outbox"].insert({"id": 9, "body": "new"})
        assert replica.select("SELECT count(*) FROM outbox") == [(4,)]
    replica.close()


def test_check_integrity_of_a_sound_and_a_damaged_file(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    replica = create(tmp_path)
    fill(replica)
    assert replica.check_integrity() == []
    replica.close()
    db = slot_path(tmp_path, ".db")
    data = bytearray(db.read_bytes())
    data[-PAGE + 10] ^= 0xFF
    db.write_bytes(bytes(data))
    replica = open_replica(tmp_path)
    problems = replica.check_integrity()
    assert any("HMAC" in p for p in problems)
    assert outbox_count(replica) == 300  # the checks ran on connections of their own
    replica.close()


@pytest.mark.parametrize(
    "damage",
    [
        "a flipped byte in the last page",
        "the last pages missing",
        "cut in the middle of the last page",
    ],
)
def test_salvage_keeps_the_outbox_when_a_later_page_is_damaged(
    tmp_path: Path, memory_keyring: MemoryKeyring, damage: str
) -> None:
    db = damaged_replica(tmp_path, damage)
    client_id = json.loads(slot_path(tmp_path, ".header").read_text())["client_id"]
    damaged_bytes = db.read_bytes()
    rescue = salvage(tmp_path, TENANT, USER, tables=["outbox", TABLE, "no_such_table"])
    assert rescue is not None and rescue.parent == tmp_path
    rows = rescued_rows(tmp_path, TENANT, USER)
    assert [row["id"] for row in rows["outbox"]] == list(range(1, 301))
    assert rows["outbox"][0]["body"].startswith(f"edit 1 of {ROLE}")
    assert 0 < len(rows[TABLE]) < 300  # what was readable of the damaged table
    assert rows["no_such_table"] == []
    # moved aside, still encrypted, byte for byte
    assert not db.exists()
    aside = [p for p in tmp_path.iterdir() if ".db.damaged-" in p.name]
    assert len(aside) == 1 and aside[0].read_bytes() == damaged_bytes
    with pytest.raises(ReplicaMissing):
        open_replica(tmp_path)
    fresh = create(tmp_path)
    assert fresh.client_id == client_id and outbox_count(fresh) == 0
    assert fresh.check_integrity() == []
    fresh.close()
    assert rescued_rows(tmp_path, TENANT, USER)["outbox"][-1]["id"] == 300
    discard_rescued(tmp_path, TENANT, USER)
    assert rescued_rows(tmp_path, TENANT, USER) == {}


def test_salvage_skips_a_damaged_page_in_the_middle_of_a_table(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    replica = create(tmp_path)
    fill(replica, outbox=600, roles=0)
    replica.close()
    db = slot_path(tmp_path, ".db")
    data = bytearray(db.read_bytes())
    middle = len(data) // PAGE // 2
    data[middle * PAGE + 500] ^= 0x10
    db.write_bytes(bytes(data))
    salvage(tmp_path, TENANT, USER, tables=["outbox"])
    ids = [row["id"] for row in rescued_rows(tmp_path, TENANT, USER)["outbox"]]
    assert 500 < len(ids) < 600 and ids == sorted(ids)
    assert ids[0] == 1 and ids[-1] == 600  # reading went on after the damaged page
    lost = sorted(set(range(1, 601)) - set(ids))
    assert lost == list(range(lost[0], lost[-1] + 1))  # one page's worth, contiguous


def test_salvage_of_garbage_reads_nothing_and_moves_it_aside(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    damaged_replica(tmp_path, "garbage")
    assert salvage(tmp_path, TENANT, USER, tables=["outbox"]) is None
    assert rescued_rows(tmp_path, TENANT, USER) == {}
    fresh = create(tmp_path)
    assert outbox_count(fresh) == 0
    fresh.close()


def test_salvage_needs_the_key(tmp_path: Path, no_keyring: None) -> None:
    create(tmp_path, passphrase=pw()).close()
    with pytest.raises(WrongKey):
        salvage(tmp_path, TENANT, USER, tables=["outbox"], passphrase=pw("wrong"))
    with pytest.raises(ReplicaMissing):
        salvage(tmp_path, TENANT, "nobody", tables=["outbox"])
    assert slot_path(tmp_path, ".db").exists()


def test_a_rescue_file_that_was_altered_is_damage(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    damaged_replica(tmp_path, "a flipped byte in the last page")
    rescue = salvage(tmp_path, TENANT, USER, tables=["outbox"])
    assert rescue is not None
    data = bytearray(rescue.read_bytes())
    data[-1] ^= 1
    rescue.write_bytes(bytes(data))
    with pytest.raises(ReplicaDamaged) as caught:
        rescued_rows(tmp_path, TENANT, USER)
    assert caught.value.path == rescue


# --- 5. full disk --------------------------------------------------------------------------


def test_a_full_disk_rolls_the_write_back(tmp_path: Path, memory_keyring: MemoryKeyring) -> None:
    replica = create(tmp_path)
    fill(replica, 10, 0)
    pages = replica.conn.execute("PRAGMA page_count").fetchone()[0]
    replica.conn.execute(f"PRAGMA max_page_count = {pages + 2}")
    with pytest.raises(ReplicaFull) as caught, replica.write() as db:
        db["outbox"].insert({"id": 1000, "body": "first of many"})
        db["outbox"].insert_all({"body": "y" * 500} for _ in range(200))
    assert str(replica.path) in str(caught.value) and "rolled back" in str(caught.value)
    assert not replica.conn.in_transaction
    with replica.read() as db:
        assert db.execute("SELECT count(*), max(id) FROM outbox").fetchone() == (10, 10)
    replica.conn.execute("PRAGMA max_page_count = 1073741823")
    with replica.write() as db:
        db["outbox"].insert({"body": "room again"})
    assert outbox_count(replica) == 11 and replica.check_integrity() == []
    replica.close()


# --- 6. two processes ----------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from app.replica_file import ReplicaFile, passphrase_from_environment
    role, directory, tenant, user = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    replica = ReplicaFile.open(directory, tenant, user, migrations=(), migrate=False,
                               passphrase=passphrase_from_environment(), wait=60)
    if role == "holder":
        with replica.write() as db:
            db.execute("INSERT INTO outbox (body) VALUES ('held')")
            print("holding", flush=True)
            time.sleep(float(sys.argv[5]))
    else:
        for i in range(int(sys.argv[5])):
            with replica.write() as db:
                db.execute("INSERT INTO outbox (body) VALUES (?)", (f"{role} {i}",))
    replica.close()
    """
)


def child(role: str, directory: Path, *extra: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
        "FLEETGATE_PASSPHRASE": PASSPHRASE,
    }
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, role, str(directory), TENANT, USER, *extra],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def test_a_writer_waits_for_another_process_or_is_told_who_holds_the_lock(
    tmp_path: Path, no_keyring: None
) -> None:
    replica = create(tmp_path, passphrase=pw())
    holder = child("holder", tmp_path, "1.5")
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        # Readers take no lock: reading goes on while the other process writes.
        assert outbox_count(replica) == 0
        replica._wait = 0.2
        started = time.monotonic()
        with pytest.raises(ReplicaBusy) as caught, replica.write():
            pass
        assert time.monotonic() - started < 1.2
        assert f"python holder, pid {holder.pid}" in str(caught.value)
        assert str(tmp_path) in str(caught.value)
        replica._wait = 30
        with replica.write() as db:  # waits for the holder to finish
            db.execute("INSERT INTO outbox (body) VALUES ('after')")
        assert time.monotonic() - started > 1.0
    finally:
        assert holder.wait(timeout=60) == 0
    with replica.read() as db:
        assert [r[0] for r in db.execute("SELECT body FROM outbox ORDER BY id")] == [
            "held",
            "after",
        ]
    replica.close()


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path, no_keyring: None) -> None:
    replica = create(tmp_path, passphrase=pw())
    writers = [child(name, tmp_path, "200") for name in ("left", "right")]
    for writer in writers:
        assert writer.wait(timeout=120) == 0
    with replica.read() as db:
        rows = db.execute("SELECT body FROM outbox").fetchall()
    assert len(rows) == 400
    assert {r[0] for r in rows} == {f"{side} {i}" for side in ("left", "right") for i in range(200)}
    assert replica.check_integrity() == []
    replica.close()


def test_the_lock_file_names_the_holder_while_held_and_is_cleared_after(
    tmp_path: Path, memory_keyring: MemoryKeyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["/usr/bin/fleetgate", "sync", "--tenant", TENANT])
    replica = create(tmp_path)
    lock = slot_path(tmp_path, ".lock")
    with replica.write():
        holder = json.loads(lock.read_bytes().strip())
        assert holder == {"pid": os.getpid(), "command": "fleetgate sync"}
    assert lock.read_bytes().strip() == b""
    replica.close()


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["/usr/local/bin/fleetgate", "sync", "--watch"], "fleetgate sync"),
        (["/usr/local/bin/fleetgate", "--tenant", TENANT, "sync"], "fleetgate"),
        (["/usr/local/bin/fleetgate", f"--as={USER}"], "fleetgate"),
        (["/venv/lib/python3.11/site-packages/pytest/__main__.py", "-q"], "pytest"),
        (["-c", "worker"], "python worker"),
        (["/srv/app/cli.py", "/tmp/some/path"], "cli"),
        ([], "python"),
    ],
)
def test_the_lock_holder_is_named_by_program_and_subcommand_only(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], command: str
) -> None:
    monkeypatch.setattr(sys, "argv", argv)
    assert replica_file._holder_command() == command


# --- transactions --------------------------------------------------------------------------


def test_write_rolls_back_when_the_block_raises(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    replica = create(tmp_path)
    with pytest.raises(ZeroDivisionError), replica.write() as db:
        db["outbox"].insert({"body": "gone"})
        1 / 0  # noqa: B018
    assert outbox_count(replica) == 0
    with replica.write() as db:
        db["outbox"].insert({"body": "kept"})
        with pytest.raises(KeyError), replica.write() as inner:  # a savepoint
            inner["outbox"].insert({"body": "inner, gone"})
            raise KeyError
    assert outbox_count(replica) == 1
    # The caller's own errors pass through.
    with pytest.raises(sqlcipher.IntegrityError), replica.write() as db:
        db.execute("INSERT INTO outbox (id, body) VALUES (1, NULL)")
    replica.close()


def test_read_is_one_snapshot_and_refuses_writes(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    replica = create(tmp_path)
    other = open_replica(tmp_path)
    with replica.read() as db:
        assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
        with other.write() as db2:  # a writer is not blocked by the reader
            db2["outbox"].insert({"body": "meanwhile"})
        assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
        with pytest.raises(RuntimeError, match="inside read"):
            replica.write().__enter__()
        with pytest.raises(sqlcipher.OperationalError, match="readonly"):
            db.execute("INSERT INTO outbox (body) VALUES ('no')")
    assert outbox_count(replica) == 1
    with replica.write() as db:
        db["outbox"].insert({"body": "writable again"})
    replica.close()
    other.close()


def test_a_database_without_its_schema_is_damage(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    replica = create(tmp_path)
    with replica.write() as db:
        db.execute("DROP TABLE schema_migrations")
    replica.close()
    with pytest.raises(ReplicaDamaged, match="lost its schema"):
        open_replica(tmp_path)


def test_a_header_without_a_database_is_missing_until_created(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    replica = create(tmp_path)
    client_id = replica.client_id
    replica.close()
    slot_path(tmp_path, ".db").unlink()
    with pytest.raises(ReplicaMissing, match="there is no replica in"):
        open_replica(tmp_path)
    assert create(tmp_path).client_id == client_id
    slot_path(tmp_path, ".header").unlink()
    with pytest.raises(ReplicaDamaged, match=r"header .* is missing"):
        open_replica(tmp_path)


def test_open_without_create_and_no_replica(tmp_path: Path, memory_keyring: MemoryKeyring) -> None:
    with pytest.raises(ReplicaMissing):
        open_replica(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


# --- 7. migrations -------------------------------------------------------------------------


def test_migrations_are_recorded_and_only_new_ones_applied(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    replica = create(tmp_path, migrations=MIGRATIONS[:1])
    assert replica.schema_version() == 1
    replica.close()
    calls: list[int] = []

    def third(db: sqlite_utils.Database) -> None:
        calls.append(1)
        db["notes"].create({"id": int, "text": str}, pk="id")

    migrations = [*MIGRATIONS, Migration(3, "notes", third)]
    for _ in range(2):
        replica = open_replica(tmp_path, migrations=migrations)
        assert replica.schema_version() == 3
        replica.close()
    assert calls == [1]
    replica = open_replica(tmp_path, migrations=migrations)
    with replica.read() as db:
        recorded = db.execute("SELECT version, name, applied_at FROM schema_migrations").fetchall()
        assert "notes" in db.table_names()
    assert [(v, n) for v, n, _ in recorded] == [
        (1, "outbox"),
        (2, "roles and search"),
        (3, "notes"),
    ]
    assert all(at.endswith("Z") for _, _, at in recorded)
    replica.close()


@pytest.mark.parametrize(
    "broken",
    [
        "CREATE TABLE half (x); INSERT INTO nowhere VALUES (1);",
        "callable",
    ],
)
def test_a_failing_migration_rolls_back_and_keeps_the_version(
    tmp_path: Path, memory_keyring: MemoryKeyring, broken: str
) -> None:
    create(tmp_path).close()

    def apply(db: sqlite_utils.Database) -> None:
        db["half"].create({"x": int})
        raise ValueError("no good")

    step = Migration(3, "broken", apply if broken == "callable" else broken)
    with pytest.raises(MigrationFailed) as caught:
        open_replica(tmp_path, migrations=[*MIGRATIONS, step])
    assert isinstance(caught.value, ReplicaError)
    assert "migration 3 (broken) failed" in str(caught.value) and caught.value.version == 3
    replica = open_replica(tmp_path)
    assert replica.schema_version() == 2
    with replica.read() as db:
        assert "half" not in db.table_names()
    replica.close()


def test_a_replica_from_a_newer_client_is_too_new_and_untouched(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    create(tmp_path).close()
    db = slot_path(tmp_path, ".db")
    before = file_state(db)
    with pytest.raises(ReplicaTooNew, match="schema version 2, newer than this client's 1"):
        open_replica(tmp_path, migrations=MIGRATIONS[:1])
    assert file_state(db) == before
    with pytest.raises(ValueError, match="increasing"):
        open_replica(tmp_path, migrations=[MIGRATIONS[1], MIGRATIONS[0]])


# --- 8. wipe -------------------------------------------------------------------------------


def test_wipe_removes_every_file_and_keyring_entry_of_the_slot(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    neighbour = create(tmp_path, user="neighbour")
    neighbour.secret_set("refresh_token", "theirs")
    neighbour.close()
    damaged_replica(tmp_path, "a flipped byte in the last page")
    salvage(tmp_path, TENANT, USER, tables=["outbox"])
    replica = create(tmp_path)
    replica.secret_set("refresh_token", SECRET)
    replica.secret_set("access_token", SECRET)
    fill(replica, 5, 5)
    mine = replica_files(tmp_path, TENANT, USER)
    suffixes = {p.name.split(".", 1)[1].split("-2")[0] for p in mine}
    assert {"db", "db-wal", "db-shm", "header", "lock", "rescue", "db.damaged"} <= suffixes
    theirs = replica_files(tmp_path, TENANT, "neighbour")
    replica.wipe()
    assert replica_files(tmp_path, TENANT, USER) == []
    assert replica_files(tmp_path, TENANT, "neighbour") == theirs
    slot = slot_name(TENANT, USER)
    assert [entry for entry in memory_keyring.entries if slot in entry[1]] == []
    assert len(memory_keyring.entries) == 2  # the neighbour's key and secret
    with pytest.raises(ReplicaMissing):
        open_replica(tmp_path)


@pytest.mark.parametrize("header", ["cut short", "not json"])
def test_wipe_replica_works_on_a_replica_that_does_not_open(
    tmp_path: Path, memory_keyring: MemoryKeyring, header: str
) -> None:
    damaged_replica(tmp_path, "garbage")
    key_entry = ("fleetgate-replica", kname(tmp_path))
    path = slot_path(tmp_path, ".header")
    path.write_bytes(path.read_bytes()[:100] if header == "cut short" else b"not json")
    wipe_replica(tmp_path, TENANT, USER)
    assert replica_files(tmp_path, TENANT, USER) == []
    # Keyrings cannot be listed: a header that no longer shows its keyring id leaves the
    # key behind, which opens nothing once the files are gone.
    assert list(memory_keyring.entries) == ([] if header == "cut short" else [key_entry])
    wipe_replica(tmp_path, TENANT, USER)  # nothing there: nothing to do


def test_a_wipe_the_keyring_refuses_keeps_the_header_to_try_again(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    replica = create(tmp_path)
    replica.secret_set("refresh_token", SECRET)
    replica.close()
    memory_keyring.locked = True
    with pytest.raises(KeyUnavailable, match="unlock the keyring and wipe again"):
        wipe_replica(tmp_path, TENANT, USER)
    assert [p.suffix for p in replica_files(tmp_path, TENANT, USER)] == [".header", ".lock"]
    memory_keyring.locked = False
    wipe_replica(tmp_path, TENANT, USER)
    assert replica_files(tmp_path, TENANT, USER) == [] and memory_keyring.entries == {}


# --- 10. the header is outside input -------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda h: b"{not json", "it is not JSON"),
        (lambda h: b"\xff\xfe", "it is not JSON"),
        (lambda h: b"[1, 2]", "not a JSON object"),
        (lambda h: {**h, "format": "1"}, "format is not an integer"),
        (lambda h: {**h, "mode": 3}, "mode is not text"),
        (lambda h: {**h, "mode": "vault"}, "unknown key mode 'vault'"),
        (lambda h: {**h, "kdf": {**h["kdf"], "name": "scrypt"}}, "unknown kdf 'scrypt'"),
        (lambda h: {**h, "kdf": {**h["kdf"], "salt": "00" * 8}}, "salt has 8 bytes instead of 16"),
        (lambda h: {**h, "kdf": {**h["kdf"], "salt": "zz" * 16}}, "salt is not hexadecimal"),
        (lambda h: {**h, "kdf": {**h["kdf"], "memory_cost": 2**40}}, "memory_cost 1099511627776"),
        (lambda h: {**h, "kdf": {**h["kdf"], "time_cost": True}}, "time_cost is not an integer"),
        (lambda h: {**h, "kdf": None}, "kdf is not an object"),
        (lambda h: {**h, "key_check": "abc"}, "key_check is malformed"),
        (lambda h: {**h, "client_id": None}, "client_id is not text"),
        (lambda h: {**h, "created": "yesterday"}, "created is not a time"),
        (lambda h: {**h, "keyring_secrets": ["a:b"]}, "keyring_secrets is not a list"),
    ],
)
def test_a_damaged_header_is_named_with_its_problem(
    tmp_path: Path, no_keyring: None, change: Any, problem: str
) -> None:
    create(tmp_path, passphrase=pw()).close()
    header = slot_path(tmp_path, ".header")
    changed = change(json.loads(header.read_text()))
    header.write_bytes(changed if isinstance(changed, bytes) else json.dumps(changed).encode())
    with pytest.raises(ReplicaDamaged) as caught:
        open_replica(tmp_path, passphrase=pw())
    assert caught.value.path == header
    assert str(caught.value).startswith(f"the replica header {header} is damaged: ")
    assert problem in str(caught.value)


def test_a_header_of_a_newer_format_is_too_new(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    create(tmp_path).close()
    header = slot_path(tmp_path, ".header")
    header.write_text(json.dumps({**json.loads(header.read_text()), "format": 3}))
    with pytest.raises(ReplicaTooNew, match="format 3"):
        open_replica(tmp_path)


_DELETE = object()
_SMALL = st.none() | st.booleans() | st.integers(-5, 300) | st.floats() | st.text(max_size=40)
_VALUES = st.recursive(
    _SMALL,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
_FIELDS = [
    "format", "mode", "kdf", "key_check", "client_id", "created", "keyring_secrets",
    "keyring_id", "x",
]  # fmt: skip
_KDF_FIELDS = ["name", "version", "time_cost", "memory_cost", "parallelism", "salt", "x"]
_MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(_FIELDS + [f"kdf.{name}" for name in _KDF_FIELDS]),
        st.just(_DELETE) | _VALUES,
    ),
    min_size=1,
    max_size=3,
)


def _mutated(header: dict[str, Any], mutations: list[tuple[str, Any]]) -> dict[str, Any]:
    changed = json.loads(json.dumps(header))
    for path, value in mutations:
        target, name = changed, path
        if path.startswith("kdf."):
            if not isinstance(changed.get("kdf"), dict):
                continue
            target, name = changed["kdf"], path[4:]
        if value is _DELETE:
            target.pop(name, None)
        else:
            target[name] = value
    return changed


@pytest.mark.parametrize("mode", [KeyMode.KEYRING, KeyMode.PASSPHRASE])
def test_fuzzed_headers_give_replica_errors_never_tracebacks(
    tmp_path: Path, memory_keyring: MemoryKeyring, mode: KeyMode
) -> None:
    create(tmp_path, mode=mode, passphrase=pw()).close()
    header_path = slot_path(tmp_path, ".header")
    original = json.loads(header_path.read_text())

    # The fixtures hold for every example: each one writes the whole header afresh.
    @settings(
        max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(_MUTATIONS)
    def check(mutations: list[tuple[str, Any]]) -> None:
        header_path.write_text(json.dumps(_mutated(original, mutations)))
        try:
            open_replica(tmp_path, passphrase=pw()).close()
        except ReplicaDamaged as error:
            assert error.path == header_path and str(header_path) in str(error)
        except ReplicaError:
            pass

    check()

    @settings(
        max_examples=50, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(st.binary(max_size=300))
    def check_bytes(raw: bytes) -> None:
        header_path.write_bytes(raw)
        with pytest.raises(ReplicaError):
            open_replica(tmp_path, passphrase=pw()).close()

    check_bytes()
    header_path.write_text(json.dumps(original))
    open_replica(tmp_path, passphrase=pw()).close()


# --- commands ------------------------------------------------------------------------------


def run_replica_command(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="fleetgate")
    commands = parser.add_subparsers(dest="command", required=True)
    add_replica_parser(commands)
    args = parser.parse_args(["replica", *argv])
    return int(args.run(args))


def where(directory: Path) -> list[str]:
    return ["--replica-dir", str(directory), "--tenant", TENANT, "--as", USER]


def test_replica_info_in_keyring_mode(
    tmp_path: Path, memory_keyring: MemoryKeyring, capsys: pytest.CaptureFixture[str]
) -> None:
    replica = create(tmp_path)
    fill(replica, 5, 5)
    client_id = replica.client_id
    replica.close()
    assert run_replica_command("info", *where(tmp_path)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "key: in the OS keyring"
    assert f"client id: {client_id}" in lines and "schema version: 2" in lines
    assert f"keyring id: {keyring_id(tmp_path)}" in lines
    assert any(line.startswith("cipher: SQLCipher 4.") for line in lines)
    assert run_replica_command("info", *where(tmp_path), "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["mode"] == "keyring" and info["client_id"] == client_id and info["kdf"] is None
    assert info["keyring_id"] == keyring_id(tmp_path)
    assert info["page_size"] == 4096 and info["schema_version"] == 2


def test_replica_info_in_passphrase_mode(
    tmp_path: Path,
    no_keyring: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    create(tmp_path, passphrase=pw()).close()
    monkeypatch.setenv("FLEETGATE_PASSPHRASE", PASSPHRASE)
    assert run_replica_command("info", *where(tmp_path)) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "key: derived from a passphrase (Argon2id, t=1, m=8 KiB, p=1)"
    monkeypatch.setenv("FLEETGATE_PASSPHRASE", "wrong")
    assert run_replica_command("info", *where(tmp_path)) == 2
    assert (
        capsys.readouterr().err
        == f"fleetgate replica: wrong passphrase for the replica in {tmp_path}\n"
    )


def test_replica_rekey_command(
    tmp_path: Path,
    memory_keyring: MemoryKeyring,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    replica = create(tmp_path)
    fill(replica, 5, 5)
    old_key = replica._key
    replica.close()
    assert run_replica_command("rekey", *where(tmp_path)) == 0
    assert "key: in the OS keyring" in capsys.readouterr().out
    replica = open_replica(tmp_path)
    assert replica._key != old_key
    replica.close()
    monkeypatch.setenv("FLEETGATE_NEW_PASSPHRASE", "brand new")
    assert run_replica_command("rekey", *where(tmp_path), "--to", "passphrase") == 0
    assert "derived from a passphrase" in capsys.readouterr().out
    assert outbox_count(open_replica(tmp_path, passphrase=pw("brand new"))) == 5
    monkeypatch.delenv("FLEETGATE_NEW_PASSPHRASE")
    monkeypatch.setenv("FLEETGATE_PASSPHRASE", "brand new")
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # noqa: SIM115 - not a terminal
    assert run_replica_command("rekey", *where(tmp_path)) == 2
    assert "set FLEETGATE_NEW_PASSPHRASE" in capsys.readouterr().err
    assert run_replica_command("rekey", *where(tmp_path), "--to", "keyring") == 0
    assert open_replica(tmp_path).mode is KeyMode.KEYRING


def test_replica_rekey_command_asks_twice_at_a_terminal(
    tmp_path: Path,
    no_keyring: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    create(tmp_path, passphrase=pw()).close()

    class Terminal:
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal())
    monkeypatch.setenv("FLEETGATE_PASSPHRASE", PASSPHRASE)
    monkeypatch.delenv("FLEETGATE_NEW_PASSPHRASE", raising=False)
    answers = iter(["one", "two"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    assert run_replica_command("rekey", *where(tmp_path)) == 2
    assert "differ" in capsys.readouterr().err
    answers = iter(["same", "same"])
    assert run_replica_command("rekey", *where(tmp_path)) == 0
    monkeypatch.setenv("FLEETGATE_PASSPHRASE", "same")
    open_replica(tmp_path, passphrase=pw("same")).close()
    assert run_replica_command("rekey", *where(tmp_path), "--to", "keyring") == 2
    assert "no working OS keyring" in capsys.readouterr().err


def test_replica_wipe_command(
    tmp_path: Path,
    memory_keyring: MemoryKeyring,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    create(tmp_path).close()
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # noqa: SIM115 - not a terminal
    assert run_replica_command("wipe", *where(tmp_path)) == 2
    assert "give --yes" in capsys.readouterr().err

    class Terminal:
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal())
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert run_replica_command("wipe", *where(tmp_path)) == 1
    assert replica_files(tmp_path, TENANT, USER)
    monkeypatch.setattr("builtins.input", lambda prompt: "yes")
    assert run_replica_command("wipe", *where(tmp_path)) == 0
    assert replica_files(tmp_path, TENANT, USER) == [] and memory_keyring.entries == {}
    capsys.readouterr()
    assert run_replica_command("wipe", *where(tmp_path), "--yes") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fleetgate replica: there is no replica in")


def test_two_replicas_of_one_user_in_two_directories_keep_keys_of_their_own(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    # Found by the convergence simulation and the client benchmark: the keyring entry was
    # named by tenant and user only, so the second replica replaced the first's key.
    first, second = tmp_path / "laptop", tmp_path / "usb-stick"
    one = create(first)
    one.secret_set("refresh_token", "first's token")
    one.close()
    two = create(second)
    assert two.secret_get("refresh_token") is None
    two.close()
    again = open_replica(first)
    assert again.secret_get("refresh_token") == "first's token"
    again.close()
