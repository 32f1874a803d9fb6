"""The key of a replica and where it comes from: the header, the OS keyring, a passphrase.

Rules of this module:

- A replica's key is 256 bits. In keyring mode they are random and kept in the OS keyring
  (service `fleetgate-replica`, username `<slot>@<keyring id>`); in passphrase mode they
  are Argon2id(passphrase, salt), with the parameters and the salt in the header, so that
  both can change later.
- Every keyring entry of a replica is named `<name>@<keyring id>`. The keyring id is 16
  random hex digits made with the replica and kept in its header (format 2), so the
  replica keeps its entries when its directory is moved or renamed, and two replicas of
  one user in two directories (same slot name) have entries of their own. A format-1
  header has no keyring id: its entries are named by a hash of the replica's directory
  (`legacy_keyring_id`), which the first open in that directory writes into the header
  as its keyring id (format 2), leaving the entries where they are.
- The header (`<slot>.header`) is small JSON in the clear: it holds nothing that opens
  the replica, only what is needed to find or derive its key, a key check value to
  recognise the right key before the database is touched, and the client id, which must
  survive damage to the database. It is written atomically (temporary file, fsync,
  rename). It is outside input: a person or a disk may have changed it, so every field
  is checked here and a bad one is a ReplicaDamaged naming the header.
- Secrets (the refresh token) follow the key: keyring entries in keyring mode (service
  `fleetgate-secret`, username `<slot>:<name>`), a table inside the encrypted database
  in passphrase mode. The header lists the names of the secrets kept in the keyring, as
  keyrings cannot be listed and a wipe must find them; and, after a rekey, marks that the
  keyring still holds keys the rekey replaced, until they are deleted.
- Rescue files (rows salvaged from a damaged replica) are sealed with AES-256-GCM under
  a key derived by HKDF-SHA256 from the replica key and a random salt kept in the file.
- No message here carries a key, a passphrase or a secret; keyring failures are named
  by their type only.

The errors of the replica are defined here, the lower of the two modules;
`app.replica_file` re-exports them and is where callers import them from.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
import unicodedata
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# keyring, argon2 and cryptography are imported where they are used: together they
# cost 80 ms of a cold decision's 300, and each mode needs one of them at most.

# --- errors --------------------------------------------------------------------------------


class ReplicaError(Exception):
    """A replica cannot be used; str() is one sentence for a person naming the file and the
    problem, never a key, passphrase or secret."""

    def __init__(self, message: str, *, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


class WrongKey(ReplicaError):
    """The passphrase, or the keyring's key, does not open the replica; the file is untouched."""


class KeyUnavailable(ReplicaError):
    """The key cannot be had: not in the keyring, the keyring fails, or no passphrase given."""


class ReplicaDamaged(ReplicaError):
    """The database or its header is truncated, altered or not a replica; `.path` is the file."""

    path: Path

    def __init__(self, message: str, *, path: Path) -> None:
        super().__init__(message, path=path)


class ReplicaBusy(ReplicaError):
    """Another process held the writer lock for longer than we were willing to wait."""


class ReplicaFull(ReplicaError):
    """The disk, or the file's size limit, is full; the transaction was rolled back."""


class ReplicaMissing(ReplicaError):
    """There is no replica (and it was not to be created)."""


class ReplicaTooNew(ReplicaError):
    """A newer client migrated the replica (or wrote its header) past what we know."""


class ReplicaRekeyed(ReplicaError):
    """Another process changed the replica's key since it was opened here: open it again."""


class MigrationFailed(ReplicaError):
    """A migration raised; its transaction was rolled back and the version is unchanged."""

    def __init__(self, message: str, *, path: Path, version: int, name: str) -> None:
        super().__init__(message, path=path)
        self.version = version
        self.name = name


# --- key mode and derivation -------------------------------------------------------------


class KeyMode(StrEnum):
    KEYRING = "keyring"
    PASSPHRASE = "passphrase"  # noqa: S105 - a mode's name


@dataclass(frozen=True, slots=True)
class Argon2Parameters:
    time_cost: int
    memory_cost: int  # KiB
    parallelism: int


ARGON2_DEFAULTS = Argon2Parameters(time_cost=3, memory_cost=64 * 1024, parallelism=1)
"""Parameters for new passphrase keys (existing replicas keep theirs, from the header).
Tests replace it with cheap ones."""

ARGON2_VERSION = 19
SALT_BYTES = 16
KEY_BYTES = 32
# Bounds on what a header may ask for: beyond them it is damage, not a setting, and a
# damaged header must not make opening allocate gigabytes or run for minutes.
_TIME_COST_RANGE = range(1, 17)
_MEMORY_COST_MAX = 1024 * 1024
_PARALLELISM_RANGE = range(1, 17)


@dataclass(frozen=True, slots=True)
class Kdf:
    """How a passphrase becomes the key: Argon2id with these parameters and salt."""

    time_cost: int
    memory_cost: int
    parallelism: int
    salt: bytes
    name: str = "argon2id"
    version: int = ARGON2_VERSION

    def describe(self) -> str:
        return f"Argon2id, t={self.time_cost}, m={self.memory_cost} KiB, p={self.parallelism}"

    def parameters(self) -> dict[str, Any]:
        """The parameters without the salt (for `info`)."""
        return {
            "name": self.name,
            "version": self.version,
            "time_cost": self.time_cost,
            "memory_cost": self.memory_cost,
            "parallelism": self.parallelism,
        }


def new_kdf(parameters: Argon2Parameters | None = None) -> Kdf:
    """A KDF with a fresh random salt and `parameters` (default: ARGON2_DEFAULTS, read now)."""
    chosen = parameters if parameters is not None else ARGON2_DEFAULTS
    return Kdf(chosen.time_cost, chosen.memory_cost, chosen.parallelism, secrets.token_bytes(16))


def derive_key(passphrase: str, kdf: Kdf) -> bytes:
    """The 256-bit key of `passphrase` under `kdf`.

    The passphrase is NFC-normalised first, so that the same characters typed on
    different systems give the same key. A lone surrogate (FLEETGATE_PASSPHRASE of
    bytes that are not UTF-8 arrives holding some) is encoded as itself, not refused.
    """
    from argon2.low_level import Type, hash_secret_raw  # noqa: PLC0415 - module comment

    return hash_secret_raw(
        secret=unicodedata.normalize("NFC", passphrase).encode("utf-8", "surrogatepass"),
        salt=kdf.salt,
        time_cost=kdf.time_cost,
        memory_cost=kdf.memory_cost,
        parallelism=kdf.parallelism,
        hash_len=KEY_BYTES,
        type=Type.ID,
        version=kdf.version,
    )


def key_check(key: bytes) -> str:
    """The key check value kept in the header: it recognises the key, and does not give it."""
    return hmac.new(key, b"fleetgate replica key check", hashlib.sha256).hexdigest()


def key_matches(key: bytes, check: str) -> bool:
    return hmac.compare_digest(key_check(key), check)


# --- the header ----------------------------------------------------------------------------

HEADER_FORMAT = 2
"""1: keyring entries named by the replica's directory; 2: by the header's `keyring_id`."""
_HEADER_MAX_BYTES = 64 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEYRING_ID = re.compile(r"[0-9a-f]{16}")
_CLIENT_ID = re.compile(r"c-[0-9a-f]{24}")
SECRET_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True, slots=True)
class Header:
    """The clear header of a replica (module rules)."""

    mode: KeyMode
    kdf: Kdf | None
    key_check: str
    client_id: str
    created: str
    keyring_secrets: tuple[str, ...] = field(default=())
    # Set by a rekey until the keys it replaced are deleted from the keyring.
    stale_keyring_keys: bool = False
    keyring_id: str | None = None
    """What names the replica's keyring entries; None in a format-1 header."""

    def keyring_id_for(self, where: Path) -> str:
        """The keyring id of the replica in `where`: the header's, or for a format-1 header
        the hash of the directory."""
        return self.keyring_id if self.keyring_id is not None else legacy_keyring_id(where)

    def to_bytes(self) -> bytes:
        document: dict[str, Any] = {
            "format": HEADER_FORMAT if self.keyring_id is not None else 1,
            "mode": self.mode.value,
        }
        if self.keyring_id is not None:
            # Near the top: a wipe still finds it in a header cut short (keyring_id_in_damaged).
            document["keyring_id"] = self.keyring_id
        document |= {
            "kdf": None,
            "key_check": self.key_check,
            "client_id": self.client_id,
            "created": self.created,
            "keyring_secrets": list(self.keyring_secrets),
            "stale_keyring_keys": self.stale_keyring_keys,
        }
        if self.kdf is not None:
            document["kdf"] = {**self.kdf.parameters(), "salt": self.kdf.salt.hex()}
        return (json.dumps(document, indent=2) + "\n").encode("utf-8")


class _Problem(Exception):
    """What is wrong with a header field (turned into ReplicaDamaged by parse_header)."""


def _integer(document: dict[str, Any], name: str, allowed: range | None = None) -> int:
    value = document.get(name)
    if type(value) is not int:
        raise _Problem(f"{name} is not an integer")
    if allowed is not None and value not in allowed:
        raise _Problem(f"{name} {value} is out of range")
    return value


def _text(document: dict[str, Any], name: str, pattern: re.Pattern[str] | None = None) -> str:
    value = document.get(name)
    if not isinstance(value, str):
        raise _Problem(f"{name} is not text")
    if pattern is not None and not pattern.fullmatch(value):
        raise _Problem(f"{name} is malformed")
    return value


def _kdf(value: Any) -> Kdf:
    if not isinstance(value, dict):
        raise _Problem("kdf is not an object")
    name = value.get("name")
    if name != "argon2id":
        raise _Problem(f"unknown kdf {name!r}" if isinstance(name, str) else "kdf has no name")
    if _integer(value, "version") != ARGON2_VERSION:
        raise _Problem(f"unknown Argon2 version {value['version']}")
    parallelism = _integer(value, "parallelism", _PARALLELISM_RANGE)
    time_cost = _integer(value, "time_cost", _TIME_COST_RANGE)
    memory_cost = _integer(value, "memory_cost", range(8 * parallelism, _MEMORY_COST_MAX + 1))
    salt_text = _text(value, "salt")
    if not re.fullmatch(r"[0-9a-f]*", salt_text):
        raise _Problem("salt is not hexadecimal")
    if len(salt_text) != 2 * SALT_BYTES:
        raise _Problem(f"salt has {len(salt_text) // 2} bytes instead of {SALT_BYTES}")
    return Kdf(time_cost, memory_cost, parallelism, bytes.fromhex(salt_text))


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_header(raw: bytes, path: Path) -> Header:
    """The header in `raw` (read from `path`).

    Raises ReplicaDamaged naming `path` and the problem for anything that is not a
    header this client wrote, and ReplicaTooNew for a header of a newer format.
    """
    try:
        if len(raw) > _HEADER_MAX_BYTES:
            raise _Problem("it is too large to be a header")
        try:
            document = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise _Problem("it is not JSON") from None
        if not isinstance(document, dict):
            raise _Problem("it is not a JSON object")
        version = _integer(document, "format")
        if version > HEADER_FORMAT:
            raise ReplicaTooNew(
                f"the replica header {path} has format {version}, newer than this client's "
                f"{HEADER_FORMAT}: use a Fleetgate at least as new as the one that wrote it",
                path=path,
            )
        if version not in (1, HEADER_FORMAT):
            raise _Problem(f"format {version} is unknown")
        mode_text = _text(document, "mode")
        if mode_text not in {m.value for m in KeyMode}:
            raise _Problem(f"unknown key mode {mode_text!r}")
        mode = KeyMode(mode_text)
        if mode is KeyMode.PASSPHRASE:
            kdf: Kdf | None = _kdf(document.get("kdf"))
        elif document.get("kdf") is not None:
            raise _Problem("a keyring replica has no kdf")
        else:
            kdf = None
        check = _text(document, "key_check", _HEX64)
        client_id = _text(document, "client_id", _CLIENT_ID)
        created = _text(document, "created")
        try:
            datetime.fromisoformat(created)
        except ValueError:
            raise _Problem("created is not a time") from None
        names = document.get("keyring_secrets", [])
        if not isinstance(names, list) or not all(
            isinstance(n, str) and SECRET_NAME.fullmatch(n) for n in names
        ):
            raise _Problem("keyring_secrets is not a list of secret names")
        stale = document.get("stale_keyring_keys", False)
        if not isinstance(stale, bool):
            raise _Problem("stale_keyring_keys is not true or false")
        if version == 1:
            if "keyring_id" in document:
                raise _Problem("a format 1 header has no keyring_id")
            keyring_id = None
        else:
            keyring_id = _text(document, "keyring_id", _KEYRING_ID)
        names = tuple(dict.fromkeys(names))
        return Header(mode, kdf, check, client_id, created, names, stale, keyring_id)
    except _Problem as problem:
        raise ReplicaDamaged(
            f"the replica header {path} is damaged: {problem}", path=path
        ) from None


def read_header(path: Path) -> Header:
    """The header at `path`; ReplicaDamaged when it cannot be read or is not a header."""
    try:
        with open(path, "rb") as file:
            raw = file.read(_HEADER_MAX_BYTES + 1)
    except FileNotFoundError:
        raise ReplicaDamaged(f"the replica header {path} is missing", path=path) from None
    except OSError as error:
        raise ReplicaDamaged(
            f"the replica header {path} cannot be read: {error.strerror}", path=path
        ) from None
    return parse_header(raw, path)


def fsync_directory(directory: Path) -> None:
    """Make renames in `directory` durable (POSIX; Windows has no directory handles)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` by `data` (mode 0600) so that a crash leaves the old or the new file."""
    temporary = path.with_name(f"{path.name}.tmp-{secrets.token_hex(4)}")
    fd = os.open(
        temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600
    )
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def write_header(path: Path, header: Header) -> None:
    write_atomically(path, header.to_bytes())


# --- the keyring ---------------------------------------------------------------------------

KEY_SERVICE = "fleetgate-replica"
SECRET_SERVICE = "fleetgate-secret"  # noqa: S105 - the keyring service's name


def keyring_available() -> bool:
    """Whether the OS keyring works here: a backend of priority > 0 that stores, returns and
    deletes a probe entry without raising."""
    probe = f"probe-{secrets.token_hex(8)}"
    try:
        import keyring  # noqa: PLC0415 - module comment

        if not keyring.get_keyring().priority > 0:
            return False
        keyring.set_password(KEY_SERVICE, probe, "probe")
        works = keyring.get_password(KEY_SERVICE, probe) == "probe"
        keyring.delete_password(KEY_SERVICE, probe)
    except Exception:  # noqa: BLE001 - backends raise anything; any failure means "not usable"
        return False
    return works


def _keyring_failed(error: Exception, where: Path, doing: str) -> KeyUnavailable:
    return KeyUnavailable(
        f"the OS keyring could not {doing} for the replica in {where} "
        f"({type(error).__name__}): unlock the keyring and try again"
    )


def new_keyring_id() -> str:
    """A new replica's keyring id (module rules)."""
    return secrets.token_hex(8)


def legacy_keyring_id(where: Path) -> str:
    """The keyring id of a replica with a format-1 header: a hash of its directory."""
    place = hashlib.sha256(str(Path(where).resolve()).encode("utf-8", "surrogateescape"))
    return place.hexdigest()[:16]


def keyring_id_in_damaged(path: Path) -> str | None:
    """The keyring id a header that does not parse still shows (None: none), so that a wipe
    can find the entries of a replica whose header was damaged."""
    try:
        with open(path, "rb") as file:
            raw = file.read(_HEADER_MAX_BYTES)
    except OSError:
        return None
    found = re.search(rb'"keyring_id"\s*:\s*"([0-9a-f]{16})"', raw)
    return found.group(1).decode("ascii") if found else None


def keyring_entry(username: str, keyring_id: str) -> str:
    """The keyring name of a replica's entry `username` (module rules)."""
    return f"{username}@{keyring_id}"


def keyring_get(service: str, username: str, keyring_id: str, where: Path) -> str | None:
    """The keyring entry `username` of the replica in `where` whose keyring id is
    `keyring_id`, or None; KeyUnavailable when the keyring fails."""
    username = keyring_entry(username, keyring_id)
    try:
        import keyring  # noqa: PLC0415 - module comment

        return keyring.get_password(service, username)
    except Exception as error:  # noqa: BLE001 - backends raise anything
        raise _keyring_failed(error, where, "be read") from None


def keyring_set(service: str, username: str, value: str, keyring_id: str, where: Path) -> None:
    """Store the entry and read it back; KeyUnavailable when the keyring does not keep it."""
    username = keyring_entry(username, keyring_id)
    try:
        import keyring  # noqa: PLC0415 - module comment

        keyring.set_password(service, username, value)
        kept = keyring.get_password(service, username) == value
    except Exception as error:  # noqa: BLE001 - backends raise anything
        raise _keyring_failed(error, where, "store a key") from None
    if not kept:
        raise KeyUnavailable(
            f"the OS keyring did not keep the key of the replica in {where} (there is no "
            "working keyring here): use a passphrase instead"
        )


def keyring_delete(service: str, username: str, keyring_id: str, where: Path) -> None:
    """Delete the entry if it is there; KeyUnavailable when the keyring fails."""
    username = keyring_entry(username, keyring_id)
    import keyring.errors  # noqa: PLC0415 - module comment

    try:
        keyring.delete_password(service, username)
    except keyring.errors.PasswordDeleteError:
        pass  # not there: nothing to delete
    except Exception as error:  # noqa: BLE001 - backends raise anything
        raise _keyring_failed(error, where, "delete an entry") from None


def key_from_hex(text: str | None) -> bytes | None:
    """A keyring entry as a key, or None when it is not 64 hex digits."""
    if text is None or not _HEX64.fullmatch(text):
        return None
    return bytes.fromhex(text)


# --- passphrases ---------------------------------------------------------------------------

PASSPHRASE_VARIABLE = "FLEETGATE_PASSPHRASE"  # noqa: S105 - a variable's name


def passphrase_from_environment(
    prompt_text: str = "Passphrase of the Fleetgate replica: ",
) -> Callable[[], str]:
    """A passphrase source: FLEETGATE_PASSPHRASE if set; else a getpass prompt when standard
    input is a terminal; else it raises KeyUnavailable saying to set FLEETGATE_PASSPHRASE."""

    def ask() -> str:
        value = os.environ.get(PASSPHRASE_VARIABLE)
        if value:
            return value
        stdin = sys.stdin
        if stdin is not None and stdin.isatty():
            try:
                return getpass.getpass(prompt_text)
            except EOFError:
                raise KeyUnavailable("no passphrase was typed") from None
        raise KeyUnavailable(f"there is no terminal to ask for it: set {PASSPHRASE_VARIABLE}")

    return ask


class PassphraseSource:
    """The caller's passphrase source (or None: there is none), asked at most once."""

    def __init__(self, source: Callable[[], str] | None, where: Path) -> None:
        self._source = source
        self._where = where
        self._value: str | None = None

    def get(self) -> str:
        """The passphrase; KeyUnavailable when there is no source or it gives none."""
        if self._value is None:
            if self._source is None:
                raise KeyUnavailable(
                    f"the replica in {self._where} is protected by a passphrase and none was "
                    f"given: set {PASSPHRASE_VARIABLE} or run in a terminal"
                )
            try:
                value = self._source()
            except KeyUnavailable as error:
                raise KeyUnavailable(
                    f"the replica in {self._where} is protected by a passphrase, and {error}"
                ) from None
            if not value:
                raise KeyUnavailable(
                    f"an empty passphrase cannot open the replica in {self._where}"
                )
            self._value = value
        return self._value


def key_for_header(header: Header, slot: str, where: Path, passphrase: PassphraseSource) -> bytes:
    """The key that `header`'s check value recognises, from the keyring entry `slot` (or the
    `<slot>.new` entry of a rekey under way) or from the passphrase.

    Raises WrongKey when the keyring's key or the passphrase is not it, KeyUnavailable
    when there is no key to try.
    """
    if header.mode is KeyMode.KEYRING:
        found = False
        keyring_id = header.keyring_id_for(where)
        for username in (slot, slot + ".new"):
            key = key_from_hex(keyring_get(KEY_SERVICE, username, keyring_id, where))
            if key is None:
                continue
            found = True
            if key_matches(key, header.key_check):
                return key
        if not found:
            moved = ""
            if header.keyring_id is None:  # its entries are named by the directory it was in
                moved = (
                    "; an older replica finds its key only in the directory it was made in: "
                    "if it was moved, move it back and open it once, then it may move"
                )
            raise KeyUnavailable(
                f"the OS keyring has no key for the replica in {where} (another OS account, "
                "or was the keyring reset?): unlock or restore the keyring, or run "
                f"`fleetgate replica wipe` and sync again{moved}"
            )
        raise WrongKey(f"the keyring's key does not open the replica in {where}")
    assert header.kdf is not None  # parse_header guarantees it in passphrase mode
    key = derive_key(passphrase.get(), header.kdf)
    if not key_matches(key, header.key_check):
        raise WrongKey(f"wrong passphrase for the replica in {where}")
    return key


# --- sealed rescue files -------------------------------------------------------------------

_RESCUE_MAGIC = b"FGRESCUE1\n"
_NONCE_BYTES = 12


def _rescue_cipher(key: bytes, salt: bytes) -> AESGCM:
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415 - module comment
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # noqa: PLC0415

    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=salt, info=b"fleetgate/replica-rescue/v1"
    ).derive(key)
    return AESGCM(derived)


def seal(key: bytes, document: Any) -> bytes:
    """`document` (JSON; bytes values allowed) compressed and sealed with AES-256-GCM under a
    key derived by HKDF from the replica key and a random salt kept in the output."""
    salt = secrets.token_bytes(SALT_BYTES)
    nonce = secrets.token_bytes(_NONCE_BYTES)
    plain = zlib.compress(json.dumps(document, default=_encode_bytes).encode("utf-8"))
    aad = _RESCUE_MAGIC + salt
    return aad + nonce + _rescue_cipher(key, salt).encrypt(nonce, plain, aad)


def unseal(key: bytes, sealed: bytes) -> Any:
    """The document sealed by `seal`; ValueError when it is not one, or not under this key."""
    head = len(_RESCUE_MAGIC) + SALT_BYTES
    if not sealed.startswith(_RESCUE_MAGIC) or len(sealed) < head + _NONCE_BYTES + 16:
        raise ValueError("not a sealed rescue file")
    from cryptography.exceptions import InvalidTag  # noqa: PLC0415 - module comment

    salt = sealed[len(_RESCUE_MAGIC) : head]
    nonce = sealed[head : head + _NONCE_BYTES]
    try:
        plain = _rescue_cipher(key, salt).decrypt(
            nonce, sealed[head + _NONCE_BYTES :], sealed[:head]
        )
    except InvalidTag:
        raise ValueError("altered, or sealed under another key") from None
    return json.loads(zlib.decompress(plain), object_hook=_decode_bytes)


def _encode_bytes(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"cannot seal a {type(value).__name__}")


def _decode_bytes(document: dict[str, Any]) -> Any:
    if set(document) == {"$bytes"} and isinstance(document["$bytes"], str):
        return base64.b64decode(document["$bytes"])
    return document
