"""The encrypted file under the client's local replica (issue 8).

Rules of this module:

- One SQLCipher database per tenant and user, `<slot>.db` in a directory of mode 0700;
  the slot is a hash of the two, so no tenant or user id is in a file name. Beside it:
  `<slot>.header` (app/replica_keys.py), `<slot>.lock`, and after damage
  `<slot>.rescue-<stamp>` and `<slot>.db*.damaged-<stamp>`. Every file of a slot starts
  with `<slot>.`, which is how a wipe finds them all. Its keyring entries are named by
  the header's keyring id, not by the directory (app/replica_keys.py), so the directory
  may be moved or renamed; a wipe deletes them under that id.
- The key is a raw 256-bit key (`PRAGMA key = "x'…'"`): SQLCipher runs no KDF on open.
  Before the database is touched the key is checked against the header's key check
  value, so a wrong key never opens, writes or checkpoints the file.
- The database is only ever created complete: it is made as `<slot>.creating.db` and
  renamed into place, so an empty or schema-less `<slot>.db` is damage, never "new".
- One writer at a time across processes: `write()` holds an exclusive lock on
  `<slot>.lock` (flock; msvcrt on Windows) and then runs BEGIN IMMEDIATE … COMMIT.
  The holder writes its pid and command (never a tenant or user id) into the lock
  file, for the ReplicaBusy message of whoever waits. Readers take no lock: WAL lets
  them read a consistent snapshot while a writer writes.
- The sqlite errors that are about the file (corrupt, not a database, full, I/O) become
  ReplicaError here, where the database is called (`_translate`); the errors of the
  caller's own SQL (a constraint, a typo) pass through unchanged. After SQLCipher has
  refused a page (a failed HMAC) it refuses every later page on that connection, so a
  damaged replica stays ReplicaDamaged until it is opened again.
- A rekey cannot leave the file unopenable. Under the writer lock: (1) the new header
  is written as `<slot>.header.new`, the new keyring key as the entry `<slot>.new`;
  (2) rescue files are re-sealed as `….new` copies; (3) PRAGMA rekey, one transaction:
  the point of no return; (4) the copies replace the originals, the keyring entry
  `<slot>` takes the new key, the new header is renamed over the old; (5) the keyring
  keys it replaced are deleted, then the header's mark of them (`stale_keyring_keys`);
  (6) secrets move to where the new mode keeps them. An open that finds a
  `.header.new` (a crash between 1 and 4) takes the lock, finds which key opens the
  database and rolls the rekey forward (4 to 6) or back (deletes what 1 and 2 wrote);
  one that finds the mark or misplaced secrets (a crash in 5 or 6) finishes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import sqlcipher3.dbapi2 as sqlcipher

from app import replica_keys
from app.replica_keys import (
    KEY_SERVICE,
    SECRET_NAME,
    SECRET_SERVICE,
    Header,
    KeyMode,
    KeyUnavailable,
    MigrationFailed,
    PassphraseSource,
    ReplicaBusy,
    ReplicaDamaged,
    ReplicaError,
    ReplicaFull,
    ReplicaMissing,
    ReplicaRekeyed,
    ReplicaTooNew,
    WrongKey,
    derive_key,
    fsync_directory,
    key_check,
    key_for_header,
    keyring_available,
    keyring_delete,
    keyring_get,
    keyring_id_in_damaged,
    keyring_set,
    legacy_keyring_id,
    new_kdf,
    new_keyring_id,
    passphrase_from_environment,
    read_header,
    write_atomically,
    write_header,
)
from app.replica_paths import default_replica_dir
from sync.policy.document import UNSTORABLE_TEXT, holds_unstorable

if TYPE_CHECKING:
    import sqlite_utils

if sys.platform == "win32":
    import msvcrt
else:
    import fcntl

__all__ = [
    "KeyMode",
    "KeyUnavailable",
    "Migration",
    "MigrationFailed",
    "ReplicaBusy",
    "ReplicaDamaged",
    "ReplicaError",
    "ReplicaFile",
    "ReplicaFull",
    "ReplicaMissing",
    "ReplicaRekeyed",
    "ReplicaTooNew",
    "WrongKey",
    "default_replica_dir",
    "discard_rescued",
    "keyring_available",
    "passphrase_from_environment",
    "replica_files",
    "rescued_rows",
    "salvage",
    "slot_name",
    "wipe_replica",
]

# sqlcipher3.dbapi2.Connection: the driver has no type hints.
Connection: TypeAlias = Any


@dataclass(frozen=True)
class Migration:
    """One step of the replica's schema; `apply` runs inside the migration's transaction."""

    version: int
    name: str
    apply: str | Callable[[sqlite_utils.Database], None]


def slot_name(tenant: str, user: str) -> str:
    """File stem of the replica of (tenant, user): a hash, so no tenant or user id appears in
    any file name."""
    digest = hashlib.sha256(f"fleetgate replica\0{tenant}\0{user}".encode()).hexdigest()
    return digest[:32]


@dataclass(frozen=True, slots=True)
class _Slot:
    """The files of one replica."""

    directory: Path
    name: str

    def file(self, suffix: str) -> Path:
        return self.directory / f"{self.name}{suffix}"

    @property
    def db(self) -> Path:
        return self.file(".db")

    @property
    def header(self) -> Path:
        return self.file(".header")

    @property
    def header_new(self) -> Path:
        return self.file(".header.new")

    @property
    def lock(self) -> Path:
        return self.file(".lock")

    @property
    def creating(self) -> Path:
        return self.file(".creating.db")

    def files(self) -> list[Path]:
        """Every file of this slot that exists."""
        try:
            return sorted(p for p in self.directory.iterdir() if p.name.startswith(self.name + "."))
        except FileNotFoundError:
            return []

    def rescue_files(self) -> list[Path]:
        """Rescue files, oldest first (their names sort by time)."""
        pattern = re.compile(re.escape(self.name) + r"\.rescue-\d{8}T\d{12}Z")
        return [p for p in self.files() if pattern.fullmatch(p.name)]


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def _now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- the writer lock -----------------------------------------------------------------------


def _holder_command() -> str:
    """What this process is, for the lock file: the program and its subcommand word, nothing
    that could be an id (options and their values are left out)."""
    argv = sys.argv or [""]
    path = argv[0] or "python"
    name = os.path.basename(path)
    if name == "__main__.py":  # python -m package
        name = os.path.basename(os.path.dirname(path))
    elif name in {"-c", "-m", ""}:
        name = "python"
    name = name.removesuffix(".py")
    if len(argv) > 1 and re.fullmatch(r"[a-z][a-z0-9-]{0,31}", argv[1]):
        name = f"{name} {argv[1]}"
    return name


def _try_lock(fd: int) -> bool:
    try:
        if sys.platform == "win32":
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _unlock(fd: int) -> None:
    if sys.platform == "win32":
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)


class _WriterLock:
    """The cross-process writer lock of one slot; re-entrant within its owner."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._depth = 0

    @property
    def held(self) -> bool:
        return self._depth > 0

    @contextlib.contextmanager
    def hold(self, wait: float) -> Iterator[None]:
        """Hold the lock, waiting up to `wait` seconds; ReplicaBusy names the holder."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        if self._fd is None:
            self._fd = os.open(
                self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o600
            )
        fd = self._fd
        deadline = time.monotonic() + wait
        pause = 0.005
        while not _try_lock(fd):
            left = deadline - time.monotonic()
            if left <= 0:
                raise ReplicaBusy(self._busy_message(wait))
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.05)
        try:
            # Byte 0 is the one msvcrt locks (and others cannot read); the holder follows it.
            holder = json.dumps({"pid": os.getpid(), "command": _holder_command()})
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, b"\n" + holder.encode() + b"\n")
            self._depth = 1
            yield
        finally:
            self._depth = 0
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 1)
            _unlock(fd)

    def _busy_message(self, wait: float) -> str:
        where = self.path.parent
        try:
            with open(self.path, "rb") as file:
                file.seek(1)
                holder = json.loads(file.read(4096).strip() or b"{}")
            pid, command = holder.get("pid"), holder.get("command")
            if type(pid) is int and isinstance(command, str) and command.isprintable():
                return (
                    f"the replica in {where} is being written by {command[:80]}, pid {pid}; "
                    f"gave up after waiting {wait:g} s"
                )
        except (OSError, ValueError, AttributeError):
            pass
        return (
            f"the replica in {where} is being written by another process; gave up after {wait:g} s"
        )

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# --- connections ---------------------------------------------------------------------------

_SCHEMA_MIGRATIONS = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
)
_SECRETS = "CREATE TABLE IF NOT EXISTS _secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL)"
_DAMAGE_CODES = {sqlcipher.SQLITE_CORRUPT, sqlcipher.SQLITE_NOTADB}
_IO_CODES = {
    sqlcipher.SQLITE_IOERR,
    sqlcipher.SQLITE_CANTOPEN,
    sqlcipher.SQLITE_PERM,
    sqlcipher.SQLITE_READONLY,
}


def _primary_code(error: BaseException) -> int | None:
    code = getattr(error, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def _connect(
    path: Path, key: bytes, *, busy_ms: int = 10_000, salvaging: bool = False
) -> Connection:
    """A connection to the database at `path` under `key`, its first page read.

    Raises sqlcipher errors (NOTADB for a wrong key or a damaged first page).
    """
    conn = sqlcipher.connect(str(path), isolation_level=None)
    try:
        # SQLCipher logs a failed page to stderr; the error is reported to our caller instead.
        conn.execute("PRAGMA cipher_log_level = NONE")
        conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
        conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
        if salvaging:
            # A truncated file fails SQLite's page-count check before any row is read;
            # writable_schema lifts it. query_only: salvage never writes to the damaged file.
            conn.execute("PRAGMA writable_schema = ON")
            conn.execute("PRAGMA query_only = ON")
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def _opens(path: Path, key: bytes) -> bool:
    """Whether `key` reads the first page of the database at `path` (nothing is written)."""
    try:
        _connect(path, key).close()
    except (sqlcipher.Error, MemoryError):
        return False
    return True


def _sqlcipher_rekey(conn: Connection, key: bytes) -> None:
    conn.execute(f"PRAGMA rekey = \"x'{key.hex()}'\"")


def _create_database(slot: _Slot, key: bytes) -> None:
    """Make the database complete under a temporary name, then rename it into place."""
    for leftover in (slot.creating, slot.file(".creating.db-wal"), slot.file(".creating.db-shm")):
        leftover.unlink(missing_ok=True)
    # An empty file of mode 0600 first: SQLite keeps its mode, and gives it to -wal and -shm.
    os.close(os.open(slot.creating, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    conn = sqlcipher.connect(str(slot.creating), isolation_level=None)
    try:
        conn.execute("PRAGMA cipher_log_level = NONE")
        conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(_SCHEMA_MIGRATIONS)
        conn.execute(_SECRETS)
        conn.execute("COMMIT")
    finally:
        conn.close()
    # A -wal left by a database that was moved aside would be replayed onto the new one.
    for stale in (slot.file(".db-wal"), slot.file(".db-shm")):
        stale.unlink(missing_ok=True)
    os.replace(slot.creating, slot.db)
    fsync_directory(slot.directory)


def _header_signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class _Retry(Exception):
    """The header changed while we opened: another process rekeyed or created. Start over."""


# --- rekey steps (shared by rekey() and by the recovery of an interrupted one) ------------


def _rescue_copy(path: Path) -> Path:
    return path.with_name(path.name + ".new")


def _write_rescue_copies(slot: _Slot, old_key: bytes, new_key: bytes) -> None:
    for path in slot.rescue_files():
        try:
            document = replica_keys.unseal(old_key, path.read_bytes())
        except (OSError, ValueError):
            continue  # unreadable already: it stays as it is
        write_atomically(_rescue_copy(path), replica_keys.seal(new_key, document))


def _finish_rekey(slot: _Slot, new: Header, new_key: bytes) -> Header:
    """Step 4 of the rekey, after the database took the new key; the header in force after
    it. Idempotent."""
    for path in slot.rescue_files():
        if _rescue_copy(path).exists():
            os.replace(_rescue_copy(path), path)
    if new.mode is KeyMode.KEYRING:
        keyring_set(
            KEY_SERVICE, slot.name, new_key.hex(), new.keyring_id_for(slot.directory),
            slot.directory,
        )  # fmt: skip
    os.replace(slot.header_new, slot.header)
    fsync_directory(slot.directory)
    return _drop_stale_keys(slot, new)


def _drop_stale_keys(slot: _Slot, header: Header) -> Header:
    """Delete the keyring keys that a rekey replaced, then the header's mark of them. When
    the keyring fails the mark stays, and a later open tries again."""
    if not header.stale_keyring_keys:
        return header
    stale = [slot.name + ".new"]
    if header.mode is KeyMode.PASSPHRASE:
        stale.append(slot.name)
    keyring_id = header.keyring_id_for(slot.directory)
    try:
        for username in stale:
            keyring_delete(KEY_SERVICE, username, keyring_id, slot.directory)
    except KeyUnavailable:
        return header
    settled = replace(header, stale_keyring_keys=False)
    write_header(slot.header, settled)
    return settled


def _abandon_rekey(slot: _Slot, new: Header | None) -> None:
    """Undo steps 1 and 2 of a rekey whose database kept the old key."""
    for path in slot.rescue_files():
        _rescue_copy(path).unlink(missing_ok=True)
    if new is not None and new.mode is KeyMode.KEYRING:
        # A key that never opened anything: left behind if the keyring fails, it harms none.
        with contextlib.suppress(KeyUnavailable):
            keyring_delete(
                KEY_SERVICE, slot.name + ".new", new.keyring_id_for(slot.directory), slot.directory
            )
    slot.header_new.unlink(missing_ok=True)
    fsync_directory(slot.directory)


def _recover_rekey(slot: _Slot, passphrase: PassphraseSource) -> tuple[Header, bytes]:
    """Finish or undo the rekey that left `<slot>.header.new`; the header and key after it.

    Call with the writer lock held. Raises WrongKey / KeyUnavailable when the key that
    opens the database cannot be had, ReplicaDamaged when no key opens it.
    """
    old = read_header(slot.header)
    try:
        new: Header | None = read_header(slot.header_new)
    except ReplicaDamaged:
        new = None  # a damaged leftover: only the old header can be right
    keys: dict[str, bytes] = {}
    refusals: list[ReplicaError] = []
    for label, header in (("new", new), ("old", old)):
        if header is None:
            continue
        try:
            keys[label] = key_for_header(header, slot.name, slot.directory, passphrase)
        except (WrongKey, KeyUnavailable) as error:
            refusals.append(error)
    if "new" in keys and new is not None and _opens(slot.db, keys["new"]):
        return _finish_rekey(slot, new, keys["new"]), keys["new"]
    if "old" in keys and _opens(slot.db, keys["old"]):
        _abandon_rekey(slot, new)
        return old, keys["old"]
    where = slot.directory
    if not keys:
        raise refusals[0]
    if "new" not in keys and new is not None:
        how = "the new passphrase" if new.mode is KeyMode.PASSPHRASE else "the keyring's new key"
        raise WrongKey(
            f"a change of key of the replica in {where} was interrupted after the database "
            f"took the new key: open it with {how}"
        )
    if "old" not in keys and old.mode is KeyMode.PASSPHRASE:
        raise WrongKey(
            f"a change of key of the replica in {where} was interrupted before the database "
            "took the new key: open it with the old passphrase"
        )
    raise ReplicaDamaged(f"the replica {slot.db} does not open with its key", path=slot.db)


# --- the file ------------------------------------------------------------------------------


def _check_migrations(migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if any(type(v) is not int or v < 1 for v in versions) or versions != sorted(set(versions)):
        raise ValueError("migration versions must be positive integers in increasing order")


class _LazyDatabase:
    """What `read()` and `write()` hand out: the replica's sqlite-utils Database,
    made only when the block uses it (most blocks use the connection)."""

    def __init__(self, file: ReplicaFile) -> None:
        self._file = file

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file.db, name)

    def __getitem__(self, name: str) -> Any:
        return self._file.db[name]


class ReplicaFile:
    """An open replica: its SQLCipher connection, transactions, secrets and key.

    Use one per thread (the connection stays in the thread that opened it). Errors of the
    caller's SQL inside `read()`/`write()` pass through; errors of the file become
    ReplicaError. Rows must be fetched inside the block that read them.
    """

    path: Path
    header_path: Path
    mode: KeyMode
    client_id: str
    conn: Connection

    def __init__(
        self,
        slot: _Slot,
        header: Header,
        key: bytes,
        conn: Connection,
        lock: _WriterLock,
        wait: float,
    ) -> None:
        self._slot = slot
        self._header = header
        self._header_seen = _header_signature(slot.header)
        self._key = key
        self._lock = lock
        self._wait = wait
        self._damaged = False
        self._rekeyed = False
        self._closed = False
        self._writing = 0
        self._reading = 0
        self.path = slot.db
        self.header_path = slot.header
        self.directory = slot.directory
        self.mode = header.mode
        self.client_id = header.client_id
        self.conn = conn
        self._db: sqlite_utils.Database | None = None

        self._lazy = cast("sqlite_utils.Database", _LazyDatabase(self))

    @property
    def db(self) -> sqlite_utils.Database:
        """sqlite-utils over the connection, made on first use: importing it takes
        longer than a replica takes to answer one decision."""
        if self._db is None:
            import sqlite_utils  # noqa: PLC0415 - see above

            self._db = sqlite_utils.Database(self.conn, execute_plugins=False)
        return self._db

    def __repr__(self) -> str:
        return f"ReplicaFile({str(self.path)!r}, mode={self.mode.value})"

    def __enter__(self) -> ReplicaFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: Path,
        tenant: str,
        user: str,
        *,
        migrations: Sequence[Migration],
        create: bool = False,
        passphrase: Callable[[], str] | None = None,
        mode: KeyMode | None = None,
        wait: float = 10.0,
        migrate: bool = True,
    ) -> ReplicaFile:
        """Open the replica of (tenant, user) in `directory`, applying missing migrations.

        `create`: make it (and the directory, mode 0700) when there is none; `mode` is
        then its key mode (default: the keyring when one works, else a passphrase); an
        existing replica keeps its mode (see `rekey`). `passphrase` is called only when a
        passphrase is needed. `wait`: seconds to wait for the writer lock. `migrate=False`
        neither applies nor checks migrations (for tools that only look at the file).

        Raises ReplicaMissing, WrongKey, KeyUnavailable, ReplicaDamaged, ReplicaTooNew,
        MigrationFailed, ReplicaBusy (all ReplicaError).
        """
        _check_migrations(migrations)
        for name, value in (("tenant", tenant), ("user", user)):
            if holds_unstorable(value):
                # Bytes that are not UTF-8, from a command line: no server names one so.
                raise ReplicaError(f"{name} {value!r}: {UNSTORABLE_TEXT}; no server holds it")
        slot = _Slot(Path(directory), slot_name(tenant, user))
        asker = PassphraseSource(passphrase, slot.directory)
        for _attempt in range(3):
            try:
                replica = cls._open_once(slot, asker, create=create, mode=mode, wait=wait)
                break
            except _Retry:
                continue
        else:
            raise ReplicaDamaged(f"the replica {slot.db} does not open with its key", path=slot.db)
        try:
            replica._drop_stale_keys()
            replica._settle_secrets()
            replica._pin_keyring_id()
            if migrate:
                replica._migrate(migrations)
        except BaseException:
            replica.close()
            raise
        return replica

    @classmethod
    def _open_once(
        cls,
        slot: _Slot,
        asker: PassphraseSource,
        *,
        create: bool,
        mode: KeyMode | None,
        wait: float,
    ) -> ReplicaFile:
        if not slot.db.exists():
            if not create:
                raise ReplicaMissing(
                    f"there is no replica in {slot.directory} for this tenant and user"
                )
            return cls._create(slot, asker, mode=mode, wait=wait)
        if not slot.header.exists():
            raise ReplicaDamaged(
                f"the replica header {slot.header} is missing, and without it the key of "
                f"{slot.db} cannot be found",
                path=slot.header,
            )
        lock = _WriterLock(slot.lock)
        try:
            seen = (_header_signature(slot.header), _header_signature(slot.header_new))
            if seen[1] is not None:
                with lock.hold(wait):
                    if not slot.header_new.exists():
                        raise _Retry
                    header, key = _recover_rekey(slot, asker)
            else:
                header = read_header(slot.header)
                key = key_for_header(header, slot.name, slot.directory, asker)
            conn = cls._connect_checked(slot, key, wait, seen)
        except BaseException:
            lock.close()
            raise
        return cls(slot, header, key, conn, lock, wait)

    @classmethod
    def _connect_checked(
        cls, slot: _Slot, key: bytes, wait: float, seen: tuple[object, object]
    ) -> Connection:
        """Connect with a key the header recognised; a refusal now is damage (or a rekey by
        another process since we read the header: _Retry)."""
        if slot.db.stat().st_size == 0:
            raise ReplicaDamaged(f"the replica {slot.db} is empty", path=slot.db)
        try:
            conn = _connect(slot.db, key, busy_ms=max(1000, int(wait * 1000)))
        except (sqlcipher.Error, MemoryError) as error:
            if (_header_signature(slot.header), _header_signature(slot.header_new)) != seen:
                raise _Retry from None
            raise _error_of(error, slot.db) or ReplicaDamaged(
                f"the replica {slot.db} cannot be opened: {error}", path=slot.db
            ) from None
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_schema")}
            if not {"schema_migrations", "_secrets"} <= tables:
                raise ReplicaDamaged(
                    f"the replica {slot.db} has lost its schema (no schema_migrations table)",
                    path=slot.db,
                )
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
        except (sqlcipher.Error, MemoryError) as error:
            conn.close()
            raise _error_of(error, slot.db) or ReplicaDamaged(
                f"the replica {slot.db} cannot be read: {error}", path=slot.db
            ) from None
        except BaseException:
            conn.close()
            raise
        return conn

    @classmethod
    def _create(
        cls, slot: _Slot, asker: PassphraseSource, *, mode: KeyMode | None, wait: float
    ) -> ReplicaFile:
        if not slot.directory.exists():
            slot.directory.mkdir(parents=True, mode=0o700)
            slot.directory.chmod(0o700)  # mkdir's mode is filtered by the umask
        lock = _WriterLock(slot.lock)
        try:
            with lock.hold(wait):
                if slot.db.exists():
                    raise _Retry  # another process made it meanwhile
                if slot.header.exists():
                    # The database was moved aside (salvage) or never finished: a fresh one
                    # under the same header keeps the client id and the key.
                    if slot.header_new.exists():
                        try:
                            leftover: Header | None = read_header(slot.header_new)
                        except ReplicaError:
                            leftover = None
                        _abandon_rekey(slot, leftover)
                    header = read_header(slot.header)
                    key = key_for_header(header, slot.name, slot.directory, asker)
                else:
                    header, key = cls._new_header(slot, asker, mode)
                    write_header(slot.header, header)
                _create_database(slot, key)
            conn = cls._connect_checked(slot, key, wait, (None, None))
        except BaseException:
            lock.close()
            raise
        return cls(slot, header, key, conn, lock, wait)

    @staticmethod
    def _new_header(
        slot: _Slot, asker: PassphraseSource, mode: KeyMode | None
    ) -> tuple[Header, bytes]:
        chosen = KeyMode(mode) if mode is not None else None
        if chosen is None:
            chosen = KeyMode.KEYRING if keyring_available() else KeyMode.PASSPHRASE
        keyring_id = new_keyring_id()
        if chosen is KeyMode.KEYRING:
            key = secrets.token_bytes(replica_keys.KEY_BYTES)
            keyring_set(KEY_SERVICE, slot.name, key.hex(), keyring_id, slot.directory)
            kdf = None
        else:
            kdf = new_kdf()
            key = derive_key(asker.get(), kdf)
        header = Header(
            mode=chosen,
            kdf=kdf,
            key_check=key_check(key),
            client_id="c-" + secrets.token_hex(12),
            created=_now_text(),
            keyring_id=keyring_id,
        )
        return header, key

    # --- errors ----------------------------------------------------------------------------

    def _translate(self, error: BaseException) -> ReplicaError | None:
        """The ReplicaError that `error` means, or None when it is the caller's own."""
        if isinstance(error, MemoryError) and self._damaged:
            return self._damage()
        code = _primary_code(error) if isinstance(error, sqlcipher.Error) else None
        if code in _DAMAGE_CODES:
            self._damaged = True
            if self._rekeyed_elsewhere():
                return self._rekey_error()
            return ReplicaDamaged(f"the replica {self.path} is damaged: {error}", path=self.path)
        if code == sqlcipher.SQLITE_READONLY and self._reading:
            return None  # a write inside read(): the caller's mistake
        return _error_of(error, self.path)

    def _damage(self) -> ReplicaDamaged:
        return ReplicaDamaged(
            f"the replica {self.path} is damaged (a page failed its check earlier): open it "
            "again, or salvage it",
            path=self.path,
        )

    def _rekey_error(self) -> ReplicaRekeyed:
        self._rekeyed = True
        return ReplicaRekeyed(
            f"the replica in {self.directory} was given a new key by another process: open it "
            "again",
            path=self.path,
        )

    def _rekeyed_elsewhere(self) -> bool:
        for path in (self._slot.header, self._slot.header_new):
            try:
                if read_header(path).key_check != self._header.key_check:
                    return True
            except ReplicaError:
                continue
        return False

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except (sqlcipher.Error, MemoryError) as error:
            translated = self._translate(error)
            if translated is None:
                raise
            raise translated from error

    def _check_usable(self) -> None:
        if self._closed:
            raise RuntimeError("the replica file is closed")
        if self._rekeyed:
            raise self._rekey_error()
        if self._damaged:
            raise self._damage()

    # --- transactions ----------------------------------------------------------------------

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite_utils.Database]:
        """A write transaction: the writer lock, BEGIN IMMEDIATE … COMMIT; rolled back when the
        block raises. Nested, a savepoint.

        Raises ReplicaBusy (lock not had within `wait`), ReplicaFull (rolled back),
        ReplicaDamaged, ReplicaRekeyed, ReplicaError (I/O).
        """
        self._check_usable()
        if self._reading and not self._writing:
            raise RuntimeError("write() inside read(): a read transaction cannot become a write")
        if self._writing:
            self._writing += 1
            try:
                with self.db.atomic():
                    yield self._lazy
            finally:
                self._writing -= 1
            return
        with self._lock.hold(self._wait):
            self._check_header()
            with self._translated():
                self.conn.execute("BEGIN IMMEDIATE")
            self._writing = 1
            try:
                yield self._lazy
            except BaseException as error:
                self._rollback()
                translated = self._translate(error)
                if translated is None:
                    raise
                raise translated from error
            else:
                if not self.conn.in_transaction:
                    raise RuntimeError(
                        "the write transaction ended inside write() (an error was swallowed, "
                        "or COMMIT/ROLLBACK was issued): its changes may be partly saved"
                    )
                try:
                    with self._translated():
                        self.conn.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
            finally:
                self._writing = 0

    def select(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        """The rows of one SELECT. A single statement reads one consistent snapshot by
        itself: it needs no transaction of its own, and costs one statement instead of
        `read`'s five (each a wait for the GIL while a worker thread computes, which the
        UI thread felt as a stall). Raises ReplicaDamaged, ReplicaRekeyed; ValueError for
        a statement that is not a SELECT (use `read` or `write`)."""
        if not sql.lstrip()[:6].upper() == "SELECT":
            raise ValueError("select() runs a SELECT only")
        self._check_usable()
        if self._reading or self._writing:
            return self.conn.execute(sql, parameters).fetchall()
        with self._translated():
            return self.conn.execute(sql, parameters).fetchall()

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite_utils.Database]:
        """A read transaction: one consistent snapshot, no lock (WAL readers do not block the
        writer). Writing inside it fails. Raises ReplicaDamaged, ReplicaRekeyed."""
        self._check_usable()
        if self._reading or self._writing:
            self._reading += 1
            try:
                yield self._lazy
            finally:
                self._reading -= 1
            return
        with self._translated():
            self.conn.execute("BEGIN")
            # A deferred BEGIN takes its snapshot at the first read: take it now.
            self.conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
            self.conn.execute("PRAGMA query_only = ON")
        self._reading = 1
        try:
            yield self._lazy
        except BaseException as error:
            translated = self._translate(error)
            if translated is None:
                raise
            raise translated from error
        finally:
            self._reading = 0
            with contextlib.suppress(sqlcipher.Error, MemoryError):
                self.conn.execute("PRAGMA query_only = OFF")
            self._rollback()

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            with contextlib.suppress(sqlcipher.Error, MemoryError):
                self.conn.execute("ROLLBACK")

    def _check_header(self) -> None:
        """Under the writer lock: notice a rekey by another process before writing."""
        seen = _header_signature(self._slot.header)
        if seen == self._header_seen:
            return
        header = read_header(self._slot.header)
        if header.key_check != self._header.key_check:
            raise self._rekey_error()
        self._header, self._header_seen = header, seen

    # --- schema ----------------------------------------------------------------------------

    def schema_version(self) -> int:
        """The highest migration applied (0 for none)."""
        self._check_usable()
        with self._translated():
            row = self.conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
            return int(row.fetchone()[0])

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        latest = max((m.version for m in migrations), default=0)
        current = self.schema_version()
        if current > latest:
            raise ReplicaTooNew(
                f"the replica {self.path} is at schema version {current}, newer than this "
                f"client's {latest}: use a Fleetgate at least as new as the one that last "
                "opened it",
                path=self.path,
            )
        for migration in migrations:
            if migration.version <= current:
                continue
            try:
                with self.write() as db:
                    if self.schema_version() >= migration.version:
                        continue  # another process applied it while we waited for the lock
                    if isinstance(migration.apply, str):
                        db.executescript(migration.apply)
                    else:
                        migration.apply(db)
                    self.conn.execute(
                        "INSERT INTO schema_migrations (version, name, applied_at)"
                        " VALUES (?, ?, ?)",
                        (migration.version, migration.name, _now_text()),
                    )
            except ReplicaError:
                raise
            except Exception as error:
                raise MigrationFailed(
                    f"migration {migration.version} ({migration.name}) failed on the replica "
                    f"{self.path}: {error}",
                    path=self.path,
                    version=migration.version,
                    name=migration.name,
                ) from error

    # --- secrets ---------------------------------------------------------------------------

    @property
    def _keyring_id(self) -> str:
        """What names this replica's keyring entries (app/replica_keys.py rules)."""
        return self._header.keyring_id_for(self.directory)

    def _secret_entry(self, name: str) -> str:
        if not SECRET_NAME.fullmatch(name):
            raise ValueError("a secret's name is 1 to 64 letters, digits, '_', '.' or '-'")
        return f"{self._slot.name}:{name}"

    def secret_get(self, name: str) -> str | None:
        """The secret `name`, or None. Raises KeyUnavailable (keyring fails), ReplicaDamaged."""
        entry = self._secret_entry(name)
        if self.mode is KeyMode.KEYRING:
            self._check_usable()
            return keyring_get(SECRET_SERVICE, entry, self._keyring_id, self.directory)
        with self.read():
            row = self.conn.execute("SELECT value FROM _secrets WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def secret_set(self, name: str, value: str) -> None:
        """Keep `value` as the secret `name`: in the keyring, or inside the encrypted file."""
        entry = self._secret_entry(name)
        if self.mode is KeyMode.KEYRING:
            self._check_usable()
            with self._lock.hold(self._wait):
                self._check_header()
                self._remember_keyring_secret(name, keep=True)
                keyring_set(SECRET_SERVICE, entry, value, self._keyring_id, self.directory)
            return
        with self.write():
            self.conn.execute(
                "INSERT INTO _secrets (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, value),
            )

    def secret_delete(self, name: str) -> None:
        """Forget the secret `name` (nothing happens when there is none)."""
        entry = self._secret_entry(name)
        if self.mode is KeyMode.KEYRING:
            self._check_usable()
            with self._lock.hold(self._wait):
                self._check_header()
                keyring_delete(SECRET_SERVICE, entry, self._keyring_id, self.directory)
                self._remember_keyring_secret(name, keep=False)
            return
        with self.write():
            self.conn.execute("DELETE FROM _secrets WHERE name = ?", (name,))

    def _remember_keyring_secret(self, name: str, *, keep: bool) -> None:
        """Record (or drop) `name` in the header's list of keyring secrets (lock held)."""
        names = self._header.keyring_secrets
        if keep and name not in names:
            names += (name,)
        elif not keep:
            names = tuple(n for n in names if n != name)
        if names != self._header.keyring_secrets:
            self._replace_header(replace(self._header, keyring_secrets=names))

    def _replace_header(self, header: Header) -> None:
        write_header(self._slot.header, header)
        self._header, self._header_seen = header, _header_signature(self._slot.header)

    def _drop_stale_keys(self) -> None:
        if self._header.stale_keyring_keys:
            with self._lock.hold(self._wait):
                self._check_header()
                settled = _drop_stale_keys(self._slot, self._header)
                self._header, self._header_seen = settled, _header_signature(self._slot.header)

    def _pin_keyring_id(self) -> None:
        """Write into a format-1 header the keyring id its entries already have (the hash of
        this directory), so that the replica keeps them when it is moved (app/replica_keys.py
        rules). Nothing moves in the keyring, so a crash cannot lose an entry. Not done
        now when a writer holds the lock or the header cannot be written (a read-only
        directory): the replica opens all the same, and a later open does it."""
        if self._header.keyring_id is not None:
            return
        with contextlib.suppress(ReplicaBusy, OSError), self._lock.hold(min(self._wait, 1.0)):
            self._check_header()
            if self._header.keyring_id is None and not self._slot.header_new.exists():
                pinned = replace(self._header, keyring_id=legacy_keyring_id(self.directory))
                self._replace_header(pinned)

    def _settle_secrets(self) -> None:
        """Put the secrets where the mode keeps them (an interrupted rekey can leave them in
        the other place)."""
        with self._translated():
            in_file = self.conn.execute("SELECT count(*) FROM _secrets").fetchone()[0]
        if self.mode is KeyMode.KEYRING and in_file:
            with self.write():
                rows = self.conn.execute("SELECT name, value FROM _secrets").fetchall()
                names = tuple(dict.fromkeys([*self._header.keyring_secrets, *(r[0] for r in rows)]))
                self._replace_header(replace(self._header, keyring_secrets=names))
                for name, value in rows:
                    keyring_set(
                        SECRET_SERVICE, self._secret_entry(name), value, self._keyring_id,
                        self.directory,
                    )  # fmt: skip
                self.conn.execute("DELETE FROM _secrets")
        elif self.mode is KeyMode.PASSPHRASE and self._header.keyring_secrets:
            try:
                with self.write():
                    for name in self._header.keyring_secrets:
                        entry = self._secret_entry(name)
                        value = keyring_get(SECRET_SERVICE, entry, self._keyring_id, self.directory)
                        if value is not None:
                            self.conn.execute(
                                "INSERT OR IGNORE INTO _secrets (name, value) VALUES (?, ?)",
                                (name, value),
                            )
                        keyring_delete(SECRET_SERVICE, entry, self._keyring_id, self.directory)
                    self._replace_header(replace(self._header, keyring_secrets=()))
            except KeyUnavailable:
                # The keyring that failed may be why the mode changed; the secrets wait in
                # it, listed in the header, for a later open.
                pass

    # --- key -------------------------------------------------------------------------------

    def rekey(self, *, passphrase: str | None = None, mode: KeyMode | None = None) -> None:
        """Give the replica a new key: a new random one (keyring mode), or the key of a new
        `passphrase`; `mode` switches between the two, moving the secrets along.

        Crash-safe (module rules). Raises ValueError (a passphrase missing or not wanted),
        KeyUnavailable (the keyring does not keep the new key: nothing changed), ReplicaBusy,
        ReplicaFull, ReplicaDamaged.
        """
        target = KeyMode(mode) if mode is not None else self.mode
        if target is KeyMode.PASSPHRASE and not passphrase:
            raise ValueError("a new passphrase is needed")
        if target is KeyMode.KEYRING and passphrase is not None:
            raise ValueError("a replica kept in the keyring has no passphrase")
        self._check_usable()
        if self._writing or self._reading:
            raise RuntimeError("rekey() inside a transaction")
        slot = self._slot
        with self._lock.hold(self._wait):
            self._check_header()
            old = self._header
            if target is KeyMode.KEYRING:
                new_key = secrets.token_bytes(replica_keys.KEY_BYTES)
                kdf = None
                keyring_set(
                    KEY_SERVICE, slot.name + ".new", new_key.hex(), self._keyring_id,
                    self.directory,
                )  # fmt: skip
            else:
                assert passphrase is not None
                kdf = new_kdf()
                new_key = derive_key(passphrase, kdf)
            new = replace(
                old,
                mode=target,
                kdf=kdf,
                key_check=key_check(new_key),
                stale_keyring_keys=old.stale_keyring_keys or KeyMode.KEYRING in (old.mode, target),
            )
            write_header(slot.header_new, new)
            _write_rescue_copies(slot, self._key, new_key)
            try:
                with self._translated():
                    _sqlcipher_rekey(self.conn, new_key)
            except BaseException:
                if _opens(slot.db, self._key):
                    _abandon_rekey(slot, new)
                raise
            if not _opens(slot.db, new_key):
                # The connection's state is unknown now; the file still has its old key.
                self._damaged = True
                if _opens(slot.db, self._key):
                    _abandon_rekey(slot, new)
                raise ReplicaError(
                    f"the replica in {self.directory} did not take its new key and keeps the old "
                    "one: open it again",
                    path=self.path,
                )
            settled = _finish_rekey(slot, new, new_key)
            self._key = new_key
            self._header, self._header_seen = settled, _header_signature(slot.header)
            self.mode = target
            self._settle_secrets()

    # --- looking at the file ---------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """What the file is: path, size, key mode and KDF parameters (no salt, no key), schema
        version, cipher version, pages, client id, the keyring id that names its keyring
        entries, creation time, rescue files."""
        self._check_usable()
        with self._translated():

            def pragma(name: str) -> Any:
                return self.conn.execute(f"PRAGMA {name}").fetchone()[0]

            page_size, page_count = int(pragma("page_size")), int(pragma("page_count"))
            cipher_version = str(pragma("cipher_version"))
            journal_mode = str(pragma("journal_mode"))
        wal = self._slot.file(".db-wal")
        return {
            "path": str(self.path),
            "header_path": str(self.header_path),
            "size": self.path.stat().st_size,
            "wal_size": wal.stat().st_size if wal.exists() else 0,
            "mode": self.mode.value,
            "kdf": self._header.kdf.parameters() if self._header.kdf is not None else None,
            "schema_version": self.schema_version(),
            "cipher_version": cipher_version,
            "journal_mode": journal_mode,
            "page_size": page_size,
            "page_count": page_count,
            "client_id": self.client_id,
            "keyring_id": self._header.keyring_id,
            "created": self._header.created,
            "rescue_files": [str(p) for p in self._slot.rescue_files()],
        }

    def describe_key(self) -> str:
        """One line on where the key is, e.g. for `fleetgate replica info`."""
        if self._header.kdf is None:
            return "key: in the OS keyring"
        return f"key: derived from a passphrase ({self._header.kdf.describe()})"

    def check_integrity(self) -> list[str]:
        """Problems found by PRAGMA cipher_integrity_check and quick_check; [] when sound.

        Each check runs on a connection of its own, which leaves this one usable.
        """
        if self._closed:
            raise RuntimeError("the replica file is closed")
        problems: list[str] = []
        for pragma in ("cipher_integrity_check", "quick_check"):
            try:
                conn = _connect(self.path, self._key)
            except (sqlcipher.Error, MemoryError) as error:
                return [f"cannot be opened: {error}"]
            try:
                rows = conn.execute(f"PRAGMA {pragma}").fetchall()
            except (sqlcipher.Error, MemoryError) as error:
                rows = [(f"{pragma}: {error}",)]
            finally:
                conn.close()
            lines = [line for (text,) in rows for line in str(text).splitlines()]
            problems += [line for line in lines if line not in {"ok", "*** in database main ***"}]
            if problems:
                # After a page fails its HMAC SQLCipher refuses every later page, so what
                # quick_check would add is only the consequence.
                break
        return problems[:100]

    # --- ending ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection and the lock file (a second close does nothing)."""
        if self._closed:
            return
        self._closed = True
        self._close_connection()
        self._lock.close()

    def wipe(self) -> None:
        """Close, then delete every file of the replica and its keyring entries (key, secrets).

        Raises ReplicaBusy, and KeyUnavailable when the files are gone but the keyring could
        not delete its entries.
        """
        if self._writing or self._reading:
            raise RuntimeError("wipe() inside a transaction")

        def close_first() -> None:
            self._closed = True
            self._close_connection()

        _wipe(self._slot, self._lock, self._wait, close_first)

    def _close_connection(self) -> None:
        with contextlib.suppress(sqlcipher.Error, MemoryError):
            self.conn.close()


def _error_of(error: BaseException, path: Path) -> ReplicaError | None:
    """The ReplicaError of a sqlite error about the file, or None."""
    code = _primary_code(error) if isinstance(error, sqlcipher.Error) else None
    if code in _DAMAGE_CODES:
        return ReplicaDamaged(f"the replica {path} is damaged: {error}", path=path)
    if code == sqlcipher.SQLITE_FULL:
        return ReplicaFull(
            f"the replica {path} cannot grow (the disk is full, or the file is at its size "
            "limit): the change was rolled back",
            path=path,
        )
    if code in _IO_CODES:
        return ReplicaError(f"the replica {path} cannot be read or written: {error}", path=path)
    if code in {sqlcipher.SQLITE_BUSY, sqlcipher.SQLITE_LOCKED}:
        return ReplicaBusy(
            f"the replica {path} is locked by another connection: {error}", path=path
        )
    return None


# --- wiping --------------------------------------------------------------------------------


def replica_files(directory: Path, tenant: str, user: str) -> list[Path]:
    """Every file of the replica of (tenant, user) in `directory` (empty when there is none)."""
    return _Slot(Path(directory), slot_name(tenant, user)).files()


def _keyring_entries(slot: _Slot) -> tuple[bool, list[tuple[str, str, str]]]:
    """(whether the keyring must be reachable, the entries of `slot` in it as (service,
    name, keyring id)): under the keyring id of each header, or of what is left of a
    damaged one, and under the directory's hash (a format-1 header's)."""
    names: list[str] = []
    ids = [legacy_keyring_id(slot.directory)]
    must = False
    for path in (slot.header, slot.header_new):
        try:
            header = read_header(path)
        except ReplicaError:  # damaged, or of a newer format: what id does it still show?
            leftover = keyring_id_in_damaged(path)
            ids += [leftover] if leftover is not None else []
            continue
        ids.append(header.keyring_id_for(slot.directory))
        names += header.keyring_secrets
        must = must or header.mode is KeyMode.KEYRING or bool(header.keyring_secrets)
    usernames = [slot.name, slot.name + ".new"]
    entries = [(KEY_SERVICE, username, i) for i in dict.fromkeys(ids) for username in usernames]
    entries += [
        (SECRET_SERVICE, f"{slot.name}:{name}", i)
        for i in dict.fromkeys(ids)
        for name in dict.fromkeys(names)
    ]
    return must, entries


def _wipe(slot: _Slot, lock: _WriterLock, wait: float, first: Callable[[], None]) -> None:
    """Delete the files of `slot`, then its keyring entries, then its header and lock file.

    The header goes last: it lists the keyring's secrets, so when the keyring fails a
    later wipe can still find them.
    """
    try:
        with lock.hold(wait):
            first()
            must, entries = _keyring_entries(slot)
            kept = {slot.lock, slot.header, slot.header_new}
            for path in slot.files():
                if path not in kept:
                    path.unlink(missing_ok=True)
            try:
                for service, username, keyring_id in entries:
                    keyring_delete(service, username, keyring_id, slot.directory)
            except KeyUnavailable:
                if must:
                    raise KeyUnavailable(
                        f"the replica in {slot.directory} was deleted, but the OS keyring could "
                        "not delete its key and secrets: unlock the keyring and wipe again"
                    ) from None
            slot.header_new.unlink(missing_ok=True)
            slot.header.unlink(missing_ok=True)
            fsync_directory(slot.directory)
    finally:
        lock.close()
    # Deleted last and outside the lock: on Windows an open file cannot be deleted.
    slot.lock.unlink(missing_ok=True)


def wipe_replica(directory: Path, tenant: str, user: str, *, wait: float = 10.0) -> None:
    """Delete every file of the replica of (tenant, user) and its keyring entries, without
    opening it (so also when it is damaged or its key is lost).

    Raises ReplicaBusy (a writer holds it), KeyUnavailable (the keyring failed: the header
    is kept, so that a wipe once the keyring works again finds the entries).
    """
    slot = _Slot(Path(directory), slot_name(tenant, user))
    if slot.files():
        _wipe(slot, _WriterLock(slot.lock), wait, lambda: None)


# --- salvage -------------------------------------------------------------------------------

_MIN_ROWID = -(2**63)
_MAX_ROWID = 2**63 - 1


class _Unreadable(Exception):
    pass


class _SalvageReader:
    """Reads a damaged database, starting a fresh connection after each failure (SQLCipher
    refuses every page on a connection once one has failed)."""

    def __init__(self, path: Path, key: bytes) -> None:
        self._path = path
        self._key = key
        self._conn: Connection | None = None

    def _connection(self) -> Connection:
        if self._conn is None:
            try:
                self._conn = _connect(self._path, self._key, salvaging=True)
            except (sqlcipher.Error, MemoryError):
                raise _Unreadable from None
        return self._conn

    def _reset(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlcipher.Error, MemoryError):
                self._conn.close()
            self._conn = None

    def query(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return list(self._connection().execute(sql, parameters).fetchall())
        except (sqlcipher.Error, MemoryError):
            self._reset()
            raise _Unreadable from None

    def stream(self, sql: str, parameters: tuple[Any, ...]) -> tuple[list[tuple[Any, ...]], bool]:
        """The rows read before the first failure, and whether one happened."""
        rows: list[tuple[Any, ...]] = []
        try:
            for row in self._connection().execute(sql, parameters):
                rows.append(row)
        except (sqlcipher.Error, MemoryError, _Unreadable):
            self._reset()
            return rows, True
        return rows, False

    def close(self) -> None:
        self._reset()


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _salvage_table(reader: _SalvageReader, table: str) -> list[dict[str, Any]]:
    """Every row of `table` that can still be read, in rowid order.

    Rows are read in rowid order until a page fails; then the first readable rowid after
    the failure is found by probing forward in growing steps and bisecting back, and
    reading goes on from there.
    """
    try:
        columns = [row[1] for row in reader.query(f"PRAGMA table_info({_quoted(table)})")]
    except _Unreadable:
        return []
    if not columns:
        return []
    # The table name is quoted as an identifier; the rowid is a parameter.
    select = f"SELECT rowid, * FROM {_quoted(table)} WHERE rowid >= ? ORDER BY rowid"  # noqa: S608
    probe = select + " LIMIT 1"

    def readable(start: int) -> bool:
        try:
            reader.query(probe, (start,))
        except _Unreadable:
            return False
        return True

    rows: list[tuple[Any, ...]] = []
    start: int | None = _MIN_ROWID
    while start is not None:
        got, failed = reader.stream(select, (start,))
        rows += got
        if not failed:
            break
        start = _next_readable(readable, got[-1][0] + 1 if got else start)
    return [dict(zip(columns, row[1:], strict=False)) for row in rows]


def _next_readable(readable: Callable[[int], bool], failing: int) -> int | None:
    """The smallest rowid above `failing` from which reading works (None: none is), found by
    probing in growing steps, then bisecting between the last failure and the success."""
    known_bad, step = failing, 1
    while True:
        if known_bad >= _MAX_ROWID:
            return None
        candidate = min(failing + step, _MAX_ROWID)
        if readable(candidate):
            break
        known_bad, step = candidate, step * 2
    while candidate - known_bad > 1:
        middle = (known_bad + candidate) // 2
        if readable(middle):
            candidate = middle
        else:
            known_bad = middle
    return candidate


def _open_key(slot: _Slot, passphrase: Callable[[], str] | None) -> tuple[Header, bytes]:
    header = read_header(slot.header)
    return header, key_for_header(
        header, slot.name, slot.directory, PassphraseSource(passphrase, slot.directory)
    )


def salvage(
    directory: Path,
    tenant: str,
    user: str,
    *,
    tables: Sequence[str],
    passphrase: Callable[[], str] | None = None,
    wait: float = 10.0,
) -> Path | None:
    """For a damaged replica: read every row that can still be read from `tables`, write them
    sealed (AES-256-GCM under a key derived by HKDF from the replica key) to a rescue file
    beside it, and move the damaged database aside (renamed `….damaged-<UTC stamp>`, still
    encrypted), so that the next open(create=True) makes a fresh one with the same client id.

    Returns the rescue file, or None when nothing could be read. Raises ReplicaMissing,
    WrongKey, KeyUnavailable, ReplicaDamaged (the header), ReplicaBusy.
    """
    slot = _Slot(Path(directory), slot_name(tenant, user))
    if not slot.db.exists():
        raise ReplicaMissing(f"there is no replica in {slot.directory} for this tenant and user")
    lock = _WriterLock(slot.lock)
    try:
        with lock.hold(wait):
            if slot.header_new.exists():  # an interrupted rekey: which key is the file's?
                header, key = _recover_rekey(slot, PassphraseSource(passphrase, slot.directory))
            else:
                header, key = _open_key(slot, passphrase)
            reader = _SalvageReader(slot.db, key)
            try:
                found = {table: _salvage_table(reader, table) for table in tables}
            finally:
                reader.close()
            stamp = _stamp()
            rescue: Path | None = None
            if any(found.values()):
                rescue = slot.file(f".rescue-{stamp}")
                document = {
                    "format": 1,
                    "client_id": header.client_id,
                    "salvaged": _now_text(),
                    "tables": found,
                }
                write_atomically(rescue, replica_keys.seal(key, document))
            for suffix in (".db", ".db-wal", ".db-shm"):
                if slot.file(suffix).exists():
                    os.replace(slot.file(suffix), slot.file(f"{suffix}.damaged-{stamp}"))
            fsync_directory(slot.directory)
    finally:
        lock.close()
    return rescue


def rescued_rows(
    directory: Path, tenant: str, user: str, *, passphrase: Callable[[], str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """The rows of every rescue file of the replica, per table, oldest file first.

    Raises WrongKey, KeyUnavailable, ReplicaDamaged (the header, or a rescue file that
    does not open).
    """
    slot = _Slot(Path(directory), slot_name(tenant, user))
    files = slot.rescue_files()
    if not files:
        return {}
    _header, key = _open_key(slot, passphrase)
    rows: dict[str, list[dict[str, Any]]] = {}
    for path in files:
        try:
            document = replica_keys.unseal(key, path.read_bytes())
            tables = document["tables"]
            for table, found in tables.items():
                rows.setdefault(table, []).extend(found)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ReplicaDamaged(
                f"the rescue file {path} does not open: {error}", path=path
            ) from None
    return rows


def discard_rescued(directory: Path, tenant: str, user: str) -> None:
    """Delete the rescue files of the replica (once their rows are back where they belong)."""
    slot = _Slot(Path(directory), slot_name(tenant, user))
    for path in slot.rescue_files():
        _rescue_copy(path).unlink(missing_ok=True)
        path.unlink(missing_ok=True)
