"""server.tokens: password hashes, access and refresh tokens, keys, failure limiting."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json

import pytest

from server.tokens import (
    MAX_TOKEN_LENGTH,
    REFRESH_LIFETIME,
    AccessClaims,
    FailureLimiter,
    Passwords,
    TokenError,
    TokenExpired,
    TokenInvalid,
    TokenSigner,
    new_refresh_token,
    new_signing_key,
    refresh_token_hash,
    signing_key_from_env,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
NOW = 1_700_000_000.5


@pytest.fixture(scope="module")
def passwords() -> Passwords:
    return Passwords(time_cost=1, memory_cost=1024, parallelism=1)


def _issue(signer: TokenSigner, now: float = NOW) -> tuple[str, AccessClaims]:
    return signer.issue(tenant_id=7, tenant="acme", user="ada", device="laptop-1", now=now)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _forge(key: bytes, payload: str) -> str:
    """A token in the documented format around any payload, signed with `key`."""
    payload_b64 = _b64(payload.encode("utf-8"))
    mac = hmac.new(key, f"fg1.{payload_b64}".encode("ascii"), hashlib.sha256).digest()
    return f"fg1.{payload_b64}.{_b64(mac)}"


def _claims_payload(**changes: object) -> dict[str, object]:
    payload: dict[str, object] = {
        "tenant_id": 7,
        "tenant": "acme",
        "user": "ada",
        "device": "laptop-1",
        "issued_at": int(NOW),
        "expires_at": int(NOW) + 900,
        "token_id": "abc",
    }
    payload.update(changes)
    return payload


def _flip(text: str, index: int) -> str:
    replacement = "B" if text[index] == "A" else "A"
    return text[:index] + replacement + text[index + 1 :]


# -- passwords -----------------------------------------------------------------


def test_a_password_verifies_against_its_hash(passwords: Passwords) -> None:
    stored = passwords.hash("correct horse")
    assert stored.startswith("$argon2id$")
    assert passwords.verify(stored, "correct horse") is True


def test_a_wrong_password_does_not_verify(passwords: Passwords) -> None:
    assert passwords.verify(passwords.hash("correct horse"), "Correct horse") is False


def test_the_same_password_hashes_differently_each_time(passwords: Passwords) -> None:
    assert passwords.hash("pw") != passwords.hash("pw")


def test_an_unknown_user_does_not_verify(passwords: Passwords) -> None:
    assert passwords.verify(None, "anything") is False


@pytest.mark.parametrize(
    "stored",
    ["", "not a hash", "$argon2id$v=19$m=1024,t=1,p=1", "$argon2id$v=19$m=1024,t=1,p=1$é$é"],
)
def test_a_malformed_hash_does_not_verify(passwords: Passwords, stored: str) -> None:
    assert passwords.verify(stored, "pw") is False


def test_a_password_with_a_lone_surrogate_hashes_and_verifies(passwords: Passwords) -> None:
    stored = passwords.hash("pw\ud800")
    assert passwords.verify(stored, "pw\ud800") is True
    assert passwords.verify(stored, "pw") is False


def test_a_hash_with_other_parameters_needs_rehash(passwords: Passwords) -> None:
    stronger = Passwords(time_cost=2, memory_cost=1024, parallelism=1)
    assert passwords.needs_rehash(passwords.hash("pw")) is False
    assert stronger.needs_rehash(passwords.hash("pw")) is True
    assert passwords.needs_rehash("not a hash") is True


# -- access tokens -------------------------------------------------------------


def test_an_issued_token_verifies_to_the_same_claims() -> None:
    signer = TokenSigner(KEY, lifetime=900)
    token, claims = _issue(signer)
    assert token.startswith("fg1.")
    assert claims.issued_at == int(NOW)
    assert claims.expires_at == int(NOW) + 900
    assert (claims.tenant_id, claims.tenant, claims.user, claims.device) == (
        7,
        "acme",
        "ada",
        "laptop-1",
    )
    assert signer.verify(token, NOW + 899) == claims


def test_each_token_gets_its_own_token_id() -> None:
    signer = TokenSigner(KEY)
    assert _issue(signer)[1].token_id != _issue(signer)[1].token_id


def test_a_token_expires_at_exactly_expires_at() -> None:
    signer = TokenSigner(KEY, lifetime=60)
    token, claims = _issue(signer)
    assert signer.verify(token, claims.expires_at - 0.001) == claims
    with pytest.raises(TokenExpired, match="expired"):
        signer.verify(token, claims.expires_at)


def test_expired_and_invalid_are_distinct_token_errors() -> None:
    assert issubclass(TokenExpired, TokenError)
    assert issubclass(TokenInvalid, TokenError)
    assert not issubclass(TokenExpired, TokenInvalid)


def test_a_tampered_payload_is_invalid() -> None:
    signer = TokenSigner(KEY)
    token, _ = _issue(signer)
    prefix, payload, mac = token.split(".")
    for index in (0, len(payload) // 2, len(payload) - 2):
        with pytest.raises(TokenInvalid, match="signature does not match"):
            signer.verify(f"{prefix}.{_flip(payload, index)}.{mac}", NOW)


def test_a_tampered_signature_is_invalid() -> None:
    signer = TokenSigner(KEY)
    token, _ = _issue(signer)
    prefix, payload, mac = token.split(".")
    with pytest.raises(TokenInvalid, match="signature does not match"):
        signer.verify(f"{prefix}.{payload}.{_flip(mac, 0)}", NOW)


def test_a_signature_spelled_with_stray_bits_is_invalid() -> None:
    # 32 bytes take 43 base64 characters whose last carries 2 unused bits;
    # setting them spells the same bytes another way.
    signer = TokenSigner(KEY)
    token, _ = _issue(signer)
    prefix, payload, mac = token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    other_spelling = mac[:-1] + alphabet[alphabet.index(mac[-1]) | 1]
    assert base64.urlsafe_b64decode(other_spelling + "=") == base64.urlsafe_b64decode(mac + "=")
    with pytest.raises(TokenInvalid, match="signature is not valid base64url"):
        signer.verify(f"{prefix}.{payload}.{other_spelling}", NOW)


def test_a_token_from_a_different_key_is_invalid() -> None:
    token, _ = _issue(TokenSigner(OTHER_KEY))
    with pytest.raises(TokenInvalid, match="signature does not match"):
        TokenSigner(KEY).verify(token, NOW)


def test_a_token_signed_with_a_previous_key_still_verifies() -> None:
    old_token, old_claims = _issue(TokenSigner(OTHER_KEY))
    rotated = TokenSigner(KEY, previous_keys=[OTHER_KEY])
    assert rotated.verify(old_token, NOW) == old_claims
    new_token, _ = _issue(rotated)
    with pytest.raises(TokenInvalid, match="signature does not match"):
        TokenSigner(OTHER_KEY).verify(new_token, NOW)  # new tokens use the new key


def test_a_wrong_prefix_is_invalid() -> None:
    signer = TokenSigner(KEY)
    token, _ = _issue(signer)
    with pytest.raises(TokenInvalid, match="unknown version prefix"):
        signer.verify("fg2." + token.removeprefix("fg1."), NOW)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "not three dot-separated parts"),
        ("fg1.", "not three dot-separated parts"),
        ("fg1.a.b.c", "not three dot-separated parts"),
        ("fg1.a.b", "signature is not valid base64url"),
        ("fg1.a+b.AAAA", "not valid base64url"),
        ("fg1.abc.ab=", "not valid base64url"),
        ("fg1.é.abc", "non-ASCII"),
        ("fg1.abc.\x00", "not valid base64url"),
        ("a" * 5000, f"longer than {MAX_TOKEN_LENGTH}"),
        ("fg1." + "A" * 5000 + ".AAAA", f"longer than {MAX_TOKEN_LENGTH}"),
        ("fg1.eyJ9." + "A" * 43, "signature does not match"),
    ],
)
def test_garbage_is_invalid_without_echoing_the_token(token: str, reason: str) -> None:
    with pytest.raises(TokenInvalid, match=reason) as raised:
        TokenSigner(KEY).verify(token, NOW)
    message = str(raised.value)
    if token:
        assert token not in message
    assert len(message) < 100


def test_a_signed_payload_with_an_extra_claim_is_invalid() -> None:
    token = _forge(KEY, json.dumps(_claims_payload(admin=True)))
    with pytest.raises(TokenInvalid, match="exactly the expected claims"):
        TokenSigner(KEY).verify(token, NOW)


def test_a_signed_payload_with_a_missing_claim_is_invalid() -> None:
    payload = _claims_payload()
    del payload["device"]
    with pytest.raises(TokenInvalid, match="exactly the expected claims"):
        TokenSigner(KEY).verify(_forge(KEY, json.dumps(payload)), NOW)


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("tenant_id", True),
        ("expires_at", False),
        ("issued_at", 1.5),
        ("expires_at", "9999999999"),
        ("user", 5),
        ("token_id", None),
    ],
)
def test_a_signed_payload_with_a_claim_of_the_wrong_type_is_invalid(
    claim: str, value: object
) -> None:
    token = _forge(KEY, json.dumps(_claims_payload(**{claim: value})))
    with pytest.raises(TokenInvalid, match=f"claim '{claim}' is not of type"):
        TokenSigner(KEY).verify(token, NOW)


@pytest.mark.parametrize(
    "payload",
    [
        "not json",
        "[1, 2]",
        json.dumps(_claims_payload(expires_at=0)).replace('"expires_at": 0', '"expires_at": NaN'),
        json.dumps(_claims_payload()).replace("{", '{"user": "root", ', 1),
    ],
)
def test_a_signed_payload_that_is_not_strict_claims_json_is_invalid(payload: str) -> None:
    with pytest.raises(TokenInvalid, match="payload"):
        TokenSigner(KEY).verify(_forge(KEY, payload), NOW)


def test_a_hand_made_token_in_the_documented_format_verifies() -> None:
    token = _forge(KEY, json.dumps(_claims_payload()))
    claims = TokenSigner(KEY).verify(token, NOW)
    assert dataclasses.asdict(claims) == _claims_payload()


def test_claims_are_frozen() -> None:
    _, claims = _issue(TokenSigner(KEY))
    with pytest.raises(dataclasses.FrozenInstanceError):
        claims.user = "root"  # type: ignore[misc]


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        TokenSigner(KEY[:31])
    with pytest.raises(ValueError, match="at least 32 bytes"):
        TokenSigner(KEY, previous_keys=[b"short"])


def test_the_signer_repr_does_not_show_keys() -> None:
    assert KEY.hex() not in repr(TokenSigner(KEY))
    assert repr(KEY) not in repr(TokenSigner(KEY))


# -- refresh tokens and keys ---------------------------------------------------


def test_refresh_tokens_are_random_and_their_hashes_are_32_distinct_bytes() -> None:
    first, second = new_refresh_token(), new_refresh_token()
    assert first != second
    assert len(first) >= 43
    assert len(refresh_token_hash(first)) == 32
    assert refresh_token_hash(first) != refresh_token_hash(second)
    assert refresh_token_hash(first) == refresh_token_hash(first)
    assert refresh_token_hash(first) == hashlib.sha256(first.encode()).digest()
    assert REFRESH_LIFETIME == 30 * 24 * 3600


def test_a_refresh_token_with_a_lone_surrogate_hashes_without_raising() -> None:
    assert len(refresh_token_hash("\ud800")) == 32


def test_new_signing_keys_are_32_random_bytes() -> None:
    assert len(new_signing_key()) == 32
    assert new_signing_key() != new_signing_key()


def test_a_signing_key_is_read_from_hex_or_base64url() -> None:
    key = bytes(range(200, 232))
    assert signing_key_from_env(key.hex()) == key
    assert signing_key_from_env(key.hex().upper()) == key
    assert signing_key_from_env(_b64(key)) == key
    assert signing_key_from_env(base64.urlsafe_b64encode(key).decode() + "\n") == key
    longer = bytes(range(100, 148))
    assert signing_key_from_env(_b64(longer)) == longer


def test_a_signing_key_of_even_length_hex_digits_is_read_as_hex() -> None:
    # "AAAA…" is base64url too; an even-length run of hex digits means hex.
    assert signing_key_from_env("ab" * 32) == b"\xab" * 32
    assert signing_key_from_env("A" * 64) == b"\xaa" * 32


@pytest.mark.parametrize("value", [bytes(range(16)).hex(), _b64(bytes(range(16))), ""])
def test_a_signing_key_shorter_than_32_bytes_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="at least 32 are needed") as raised:
        signing_key_from_env(value)
    if value:
        assert value not in str(raised.value)


@pytest.mark.parametrize("value", ["not a key!", "a" * 41 + "+/", "é" * 43, "abcde"])
def test_a_signing_key_that_is_neither_hex_nor_base64url_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="neither hex nor base64url") as raised:
        signing_key_from_env(value)
    assert value not in str(raised.value)


# -- failed sign-in limiting ---------------------------------------------------


def _fail(
    limiter: FailureLimiter, now: float, user: str = "ada", address: str = "10.0.0.1"
) -> None:
    limiter.failed(tenant="acme", user=user, address=address, now=now)


def _blocked(
    limiter: FailureLimiter, now: float, user: str = "ada", address: str = "10.0.0.1"
) -> float:
    return limiter.blocked(tenant="acme", user=user, address=address, now=now)


def test_the_sixth_attempt_of_a_user_within_the_window_is_blocked() -> None:
    limiter = FailureLimiter()
    for second in range(5):
        assert _blocked(limiter, 1000.0 + second) == 0.0
        _fail(limiter, 1000.0 + second)
    assert _blocked(limiter, 1010.0) == 290.0  # until the first failure leaves the window


def test_a_blocked_user_may_try_again_once_the_window_has_passed() -> None:
    limiter = FailureLimiter(window=300.0)
    for _ in range(5):
        _fail(limiter, 1000.0)
    assert _blocked(limiter, 1299.5) == 0.5
    assert _blocked(limiter, 1300.0) == 0.0


def test_failures_slide_out_of_the_window_one_by_one() -> None:
    limiter = FailureLimiter(per_user=2, window=10.0)
    _fail(limiter, 0.0)
    _fail(limiter, 5.0)
    assert _blocked(limiter, 6.0) == 4.0
    assert _blocked(limiter, 10.0) == 0.0
    _fail(limiter, 10.0)
    assert _blocked(limiter, 11.0) == 4.0  # 5.0 and 10.0 are still in the window


def test_users_are_limited_per_tenant() -> None:
    limiter = FailureLimiter(per_user=1)
    _fail(limiter, 0.0)
    assert limiter.blocked(tenant="acme", user="ada", address="10.0.0.2", now=1.0) > 0
    assert limiter.blocked(tenant="other", user="ada", address="10.0.0.2", now=1.0) == 0.0


def test_the_address_limit_blocks_across_different_users() -> None:
    limiter = FailureLimiter(per_user=5, per_address=20)
    for number in range(20):
        _fail(limiter, 1000.0, user=f"user{number}")
    assert _blocked(limiter, 1001.0, user="someone-new") == 299.0
    assert _blocked(limiter, 1001.0, user="someone-new", address="10.0.0.2") == 0.0


def test_success_clears_the_user_but_not_the_address() -> None:
    limiter = FailureLimiter(per_user=2, per_address=3)
    _fail(limiter, 0.0)
    _fail(limiter, 0.0)
    assert _blocked(limiter, 1.0) > 0
    limiter.succeeded(tenant="acme", user="ada")
    assert _blocked(limiter, 1.0) == 0.0
    _fail(limiter, 1.0, user="bob")  # the address's third failure
    assert _blocked(limiter, 2.0, user="carol") > 0


def test_a_flood_of_distinct_users_and_addresses_keeps_memory_bounded() -> None:
    limiter = FailureLimiter(per_user=1, per_address=1000, max_keys=10)
    for number in range(1000):
        _fail(limiter, 1000.0 + number * 0.01, user=f"u{number}", address=f"a{number}")
    assert limiter.tracked_keys <= 20  # ten users, ten addresses
    now = 1000.0 + 1000 * 0.01
    assert _blocked(limiter, now, user="u999", address="fresh") > 0  # newest kept
    assert _blocked(limiter, now, user="u0", address="fresh") == 0.0  # oldest dropped


def test_keys_whose_failures_left_the_window_are_dropped() -> None:
    limiter = FailureLimiter(window=10.0)
    _fail(limiter, 0.0, user="ada", address="a")
    _fail(limiter, 20.0, user="bob", address="b")
    assert limiter.tracked_keys == 2  # bob and b; ada and a were past the window
    assert _blocked(limiter, 21.0, user="bob", address="b") == 0.0


def test_limiter_parameters_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        FailureLimiter(per_user=0)
    with pytest.raises(ValueError, match="positive"):
        FailureLimiter(window=0.0)
