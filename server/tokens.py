"""Sign-in credentials for the sync server: password hashes, access tokens,
refresh tokens, signing keys and failed sign-in limiting.

Rules of this module:

- No database, no clock, no logging. Every function that needs the time takes
  `now` (seconds since the epoch) from its caller; storing and looking things
  up is the store's job.
- Passwords are stored only as argon2id hashes. `Passwords.verify` never
  raises for bad input, and for an unknown user (`None` hash) it still runs a
  full verification against a dummy hash made at start, so an unknown user
  name costs the same time as a wrong password and timing does not tell an
  attacker which user names exist.
- An access token is `fg1.<payload>.<mac>`: the payload is the claims as JSON,
  the MAC is HMAC-SHA256 over the ASCII bytes `fg1.<payload>`, both parts
  unpadded base64url. The MAC is checked (in constant time) before the payload
  is decoded or parsed, so nothing an outsider wrote reaches the JSON parser.
  Tokens are not encrypted: the claims are readable by whoever holds one.
- Refresh tokens are random strings handed to the client once; the database
  stores only their SHA-256 (`refresh_token_hash`), so a leaked database
  cannot be replayed as sign-ins.
- Nothing secret (passwords, tokens, keys, hashes) ever appears in an error
  message or a repr: errors say what is wrong, never what was given.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections import OrderedDict, deque
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

REFRESH_LIFETIME = 30 * 24 * 3600
"""How long a refresh token may be used, in seconds."""

MIN_KEY_BYTES = 32
MAX_TOKEN_LENGTH = 4096

_PREFIX = "fg1"
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")


def _utf8(text: str) -> bytes:
    # surrogatepass: a peer's JSON may carry a lone surrogate ("\ud800"); it
    # must hash or fail to match, not raise. Any other text encodes as plain UTF-8.
    return text.encode("utf-8", "surrogatepass")


# -- passwords -----------------------------------------------------------------


class Passwords:
    """argon2id password hashing with the given cost parameters."""

    def __init__(
        self, *, time_cost: int = 3, memory_cost: int = 65536, parallelism: int = 4
    ) -> None:
        """`memory_cost` is in KiB. Hashes a dummy password at once (see
        `verify`), which raises argon2.exceptions.HashingError for parameters
        argon2 refuses."""
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism, type=Type.ID
        )
        self._dummy_hash = self._hasher.hash(secrets.token_bytes(16))

    def hash(self, password: str) -> str:
        """A new salted argon2id hash of `password`, to store."""
        return self._hasher.hash(_utf8(password))

    def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether `password` matches `password_hash`.

        `password_hash` is None for a user that does not exist: the answer is
        False, after the same work as a wrong password. A malformed or
        unknown hash is False too; this never raises.
        """
        if password_hash is None:
            self._matches(self._dummy_hash, password)
            return False
        return self._matches(password_hash, password)

    def _matches(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, _utf8(password))
        except (VerificationError, InvalidHashError, UnicodeEncodeError):
            # UnicodeEncodeError: a hash with non-ASCII characters is malformed.
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether `password_hash` was made with other parameters than this
        instance's (rehash the password after the next successful sign-in).
        True also for a hash this class cannot read."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True


# -- access tokens -------------------------------------------------------------


class TokenError(Exception):
    """An access token was refused. The message never contains the token."""


class TokenInvalid(TokenError):
    """The token is malformed, not signed by one of our keys, or its claims are wrong."""


class TokenExpired(TokenError):
    """The token was genuine but its lifetime is over: refresh it."""


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """What an access token asserts. Times are whole seconds since the epoch."""

    tenant_id: int
    tenant: str
    user: str
    device: str
    issued_at: int
    expires_at: int
    token_id: str


_CLAIM_TYPES: dict[str, type] = {
    "tenant_id": int,
    "tenant": str,
    "user": str,
    "device": str,
    "issued_at": int,
    "expires_at": int,
    "token_id": str,
}


class TokenSigner:
    """Issues and verifies access tokens with HMAC-SHA256."""

    def __init__(
        self, key: bytes, *, lifetime: int = 900, previous_keys: Sequence[bytes] = ()
    ) -> None:
        """`key` signs and verifies; `previous_keys` (from before a key
        rotation) only verify, until the tokens they signed have expired.
        `lifetime` is in seconds. Raises ValueError for a key shorter than 32
        bytes or a lifetime below one second."""
        for candidate in (key, *previous_keys):
            if len(candidate) < MIN_KEY_BYTES:
                raise ValueError(f"token signing keys must be at least {MIN_KEY_BYTES} bytes")
        if lifetime < 1:
            raise ValueError("the access token lifetime must be at least one second")
        self._key = key
        self._keys = (key, *previous_keys)
        self.lifetime = lifetime

    def __repr__(self) -> str:
        return f"TokenSigner(lifetime={self.lifetime}, keys={len(self._keys)})"

    def issue(
        self, *, tenant_id: int, tenant: str, user: str, device: str, now: float
    ) -> tuple[str, AccessClaims]:
        """A new access token for `user` on `device`, valid from `now` for
        the signer's lifetime, and the claims it carries."""
        issued_at = int(now)
        claims = AccessClaims(
            tenant_id=tenant_id,
            tenant=tenant,
            user=user,
            device=device,
            issued_at=issued_at,
            expires_at=issued_at + self.lifetime,
            token_id=secrets.token_urlsafe(12),
        )
        payload = json.dumps(asdict(claims), sort_keys=True, separators=(",", ":"))
        payload_b64 = _b64encode(payload.encode("utf-8"))
        mac = _mac(self._key, payload_b64)
        return f"{_PREFIX}.{payload_b64}.{_b64encode(mac)}", claims

    def verify(self, token: str, now: float) -> AccessClaims:
        """The claims of `token` if it was signed by one of our keys and has
        not expired at `now`.

        Raises TokenInvalid (with a message saying what is wrong) or
        TokenExpired when `now` has reached the token's `expires_at`.
        """
        if len(token) > MAX_TOKEN_LENGTH:
            raise TokenInvalid(f"token is longer than {MAX_TOKEN_LENGTH} characters")
        if not token.isascii():
            raise TokenInvalid("token contains non-ASCII characters")
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenInvalid("token is malformed: not three dot-separated parts")
        prefix, payload_b64, mac_b64 = parts
        if prefix != _PREFIX:
            raise TokenInvalid("token has an unknown version prefix")
        if not (_BASE64URL.fullmatch(payload_b64) and _BASE64URL.fullmatch(mac_b64)):
            raise TokenInvalid("token is not valid base64url")
        try:
            mac = _b64decode(mac_b64)
        except ValueError:
            raise TokenInvalid("token signature is not valid base64url") from None
        if not any(hmac.compare_digest(_mac(key, payload_b64), mac) for key in self._keys):
            raise TokenInvalid("token signature does not match")
        # From here on the payload is one we signed; the strict checks guard
        # against our own mistakes (another format signed with the same key).
        claims = _parse_claims(payload_b64)
        if now >= claims.expires_at:
            raise TokenExpired("token has expired")
        return claims


def _mac(key: bytes, payload_b64: str) -> bytes:
    return hmac.new(key, f"{_PREFIX}.{payload_b64}".encode("ascii"), hashlib.sha256).digest()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    """Decode unpadded base64url; ValueError unless `text` is exactly how
    `_b64encode` spells the result (no padding, no stray bits, so one
    token has one spelling)."""
    if not _BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        raise ValueError("not unpadded base64url") from None
    if _b64encode(data) != text:
        raise ValueError("not canonical base64url")
    return data


def _parse_claims(payload_b64: str) -> AccessClaims:
    try:
        payload = json.loads(
            _b64decode(payload_b64).decode("utf-8"),
            object_pairs_hook=_object_without_duplicates,
            parse_constant=_reject_constant,
        )
    except ValueError:
        raise TokenInvalid("token payload is not valid JSON") from None
    if not isinstance(payload, dict) or set(payload) != set(_CLAIM_TYPES):
        raise TokenInvalid("token payload does not have exactly the expected claims")
    for name, expected in _CLAIM_TYPES.items():
        # type() rather than isinstance(): True is an int to isinstance.
        if type(payload[name]) is not expected:
            raise TokenInvalid(f"token claim {name!r} is not of type {expected.__name__}")
    return AccessClaims(**payload)


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# -- refresh tokens and keys ---------------------------------------------------


def new_refresh_token() -> str:
    """A new random refresh token (256 bits), to hand to the client once."""
    return secrets.token_urlsafe(32)


def refresh_token_hash(token: str) -> bytes:
    """The SHA-256 digest of `token`: the only form of it the database keeps."""
    return hashlib.sha256(_utf8(token)).digest()


def new_signing_key() -> bytes:
    """A new random access-token signing key (32 bytes)."""
    return secrets.token_bytes(MIN_KEY_BYTES)


def signing_key_from_env(value: str) -> bytes:
    """The signing key written in `value` (the FLEETGATE_TOKEN_KEY
    environment variable): hex or base64url (padding optional) of at least 32
    bytes; surrounding whitespace is ignored.

    An even-length string of hex digits is read as hex: hex digits are also
    base64url characters, and a hex key is the likelier intent.
    Raises ValueError, without repeating the value, for anything else.
    """
    text = value.strip()
    key: bytes | None = None
    if _HEX.fullmatch(text):
        key = bytes.fromhex(text)
    else:
        try:
            key = _b64decode(text.rstrip("="))
        except ValueError:
            key = None
    if key is None:
        raise ValueError(
            "FLEETGATE_TOKEN_KEY is neither hex nor base64url; generate a key with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"FLEETGATE_TOKEN_KEY holds {len(key)} bytes, at least {MIN_KEY_BYTES} are needed; "
            "generate a key with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    return key


# -- failed sign-in limiting ---------------------------------------------------

_Key = TypeVar("_Key", bound=Hashable)


class _FailureWindow(Generic[_Key]):
    """Recent failure times per key, at most `max_keys` keys.

    Keys are kept in the order of their newest failure (a failure moves its
    key to the end), so when the table is full the key dropped is the one
    whose newest failure is oldest. That order assumes `now` does not run
    backwards between calls, which holds for one server process.
    """

    def __init__(self, *, limit: int, window: float, max_keys: int) -> None:
        self._limit = limit
        self._window = window
        self._max_keys = max_keys
        self._failures: OrderedDict[_Key, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def wait(self, key: _Key, now: float) -> float:
        failures = self._failures.get(key)
        if failures is None:
            return 0.0
        self._drop_old(failures, now)
        if not failures:
            del self._failures[key]
            return 0.0
        if len(failures) < self._limit:
            return 0.0
        # The deque holds at most `limit` entries: the oldest leaving the window frees a try.
        return failures[0] + self._window - now

    def record(self, key: _Key, now: float) -> None:
        failures = self._failures.get(key)
        if failures is None:
            failures = self._failures[key] = deque(maxlen=self._limit)
        else:
            self._failures.move_to_end(key)
        failures.append(now)
        self._evict(now)

    def forget(self, key: _Key) -> None:
        self._failures.pop(key, None)

    def forgive_latest(self, key: _Key) -> None:
        """Take back the key's newest failure."""
        failures = self._failures.get(key)
        if failures:
            failures.pop()

    def forgive(self, key: _Key, at: float) -> None:
        """Take back the failure recorded at `at` (a reserved attempt that was good)."""
        failures = self._failures.get(key)
        if failures is not None and at in failures:
            failures.remove(at)

    def _drop_old(self, failures: deque[float], now: float) -> None:
        while failures and failures[0] <= now - self._window:
            failures.popleft()

    def _evict(self, now: float) -> None:
        # The first key has the oldest newest failure: once that one is past
        # the window, the key holds nothing, so drop it even under the bound.
        while self._failures:
            first = next(iter(self._failures.values()))
            if len(self._failures) <= self._max_keys and first[-1] > now - self._window:
                break
            self._failures.popitem(last=False)


class FailureLimiter:
    """Limits failed sign-ins per user and per network address over a sliding window.

    A user is identified by (tenant, user name), whether or not it exists, so
    guessing a password is slowed the same for real and unknown users. Each
    of the two tables holds at most `max_keys` keys; past that, the key whose
    newest failure is oldest is forgotten, so a flood of distinct names or
    addresses costs bounded memory (and may reset the oldest counts: size
    `max_keys` above the distinct failing users and addresses of one window).
    """

    def __init__(
        self,
        *,
        per_user: int = 5,
        per_address: int = 20,
        window: float = 300.0,
        max_keys: int = 100_000,
    ) -> None:
        """`per_user` and `per_address` failures within `window` seconds
        block further attempts. Raises ValueError for non-positive values."""
        if min(per_user, per_address, max_keys) < 1 or window <= 0:
            raise ValueError("limits, window and max_keys must be positive")
        self.per_user = per_user
        self.per_address = per_address
        self.window = window
        self._users: _FailureWindow[tuple[str, str]] = _FailureWindow(
            limit=per_user, window=window, max_keys=max_keys
        )
        self._addresses: _FailureWindow[str] = _FailureWindow(
            limit=per_address, window=window, max_keys=max_keys
        )

    @property
    def tracked_keys(self) -> int:
        """How many users and addresses currently have failures remembered."""
        return len(self._users) + len(self._addresses)

    def blocked(self, *, tenant: str, user: str, address: str, now: float) -> float:
        """0.0 if a sign-in attempt may proceed at `now`, else the seconds
        until it may."""
        return max(
            self._users.wait((tenant, user), now),
            self._addresses.wait(address, now),
        )

    def failed(self, *, tenant: str, user: str, address: str, now: float) -> None:
        """Record one failed sign-in against the user and the address."""
        self._users.record((tenant, user), now)
        self._addresses.record(address, now)

    def address_blocked(self, address: str, now: float) -> float:
        """Like `blocked`, for attempts that name no user (a refresh token)."""
        return self._addresses.wait(address, now)

    def address_failed(self, address: str, now: float) -> None:
        """Record one failure that names no user against the address only."""
        self._addresses.record(address, now)

    def forgive(self, *, tenant: str, user: str, address: str, at: float) -> None:
        """Take back the failure `failed` recorded at `at`: attempts are counted as
        failures before their password is checked (so simultaneous attempts cannot
        get past the limit), and given back when they turn out good or never ran."""
        self._users.forgive((tenant, user), at)
        self._addresses.forgive(address, at)

    def succeeded(self, *, tenant: str, user: str, address: str | None = None) -> None:
        """Forget the user's failures (the address's remain, but for the attempt's
        own reservation when `address` is given)."""
        self._users.forget((tenant, user))
        if address is not None:
            self._addresses.forgive_latest(address)
