"""server.passwords: the rules for a new password (NIST SP 800-63B 5.1.1.2)."""

from __future__ import annotations

import gzip
import tomllib
import unicodedata
from fnmatch import fnmatch
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app import demo
from server.passwords import (
    MAX_LENGTH,
    MIN_LENGTH,
    PasswordRejected,
    PasswordRule,
    check_new_password,
    common_passwords,
)
from tests.server.conftest import PASSWORD as TESTS_PASSWORD

ROOT = Path(__file__).resolve().parents[2]
USER = "alice"
TENANT = "acme-logistics"


def _accepts(password: str, *, user: str = USER, tenant: str = TENANT) -> None:
    check_new_password(password, user=user, tenant=tenant)


def _refusal(password: str, *, user: str = USER, tenant: str = TENANT) -> PasswordRejected:
    with pytest.raises(PasswordRejected) as refused:
        check_new_password(password, user=user, tenant=tenant)
    return refused.value


# -- length ----------------------------------------------------------------------


def test_twelve_characters_are_enough() -> None:
    _accepts("tangerine ox")


def test_eleven_characters_are_too_short_and_the_message_says_how_many() -> None:
    refused = _refusal("tangerine o")
    assert refused.rule == PasswordRule.TOO_SHORT == "too_short"
    assert str(refused) == "a password needs at least 12 characters (this one has 11)"


def test_an_empty_password_is_too_short() -> None:
    assert _refusal("").rule == "too_short"


def test_combining_characters_are_counted_after_nfc_composition() -> None:
    # "Crème brûlée" typed with combining accents is 15 code points, 12 characters.
    decomposed = unicodedata.normalize("NFD", "Crème brûlée")
    assert len(decomposed) == 15
    _accepts(decomposed)
    refused = _refusal(unicodedata.normalize("NFD", "Crème brûlé"))
    assert refused.rule == "too_short"
    assert str(refused).endswith("(this one has 11)")


def test_a_combining_mark_with_no_composed_form_counts_as_a_character() -> None:
    # q + U+0307 has no precomposed character: NFC leaves two code points.
    _accepts("quiet q\u0307uill")


def test_1024_characters_are_allowed_and_1025_are_too_long() -> None:
    text = "correct horse battery staple " * 40
    _accepts(text[:MAX_LENGTH])
    refused = _refusal(text[: MAX_LENGTH + 1])
    assert refused.rule == PasswordRule.TOO_LONG == "too_long"
    assert str(refused) == "a password may have at most 1,024 characters (this one has 1,025)"


def test_the_upper_bound_is_counted_after_nfc_composition() -> None:
    composed = ("é correct horse battery staple " * 40)[:MAX_LENGTH]
    decomposed = unicodedata.normalize("NFD", composed)
    assert len(decomposed) > MAX_LENGTH
    _accepts(decomposed)


# -- the list of common passwords -----------------------------------------------------


def test_the_list_loads_from_the_package_data() -> None:
    data = resources.files("server") / "common-passwords.txt.gz"
    assert data.is_file()
    entries = gzip.decompress(data.read_bytes()).decode("utf-8").splitlines()
    assert common_passwords() == frozenset(entries)
    assert len(entries) == 190
    assert "justinbieber" in common_passwords()


def test_the_list_holds_only_folded_entries_that_could_pass_the_length_rule() -> None:
    for entry in common_passwords():
        assert len(entry) >= MIN_LENGTH
        assert unicodedata.normalize("NFC", entry).casefold() == entry


def test_the_data_file_is_declared_as_package_data_so_it_ships() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["server"]
    assert any(fnmatch("common-passwords.txt.gz", pattern) for pattern in patterns)


def test_a_listed_password_is_refused_whatever_its_case() -> None:
    assert "qwerty123456" in common_passwords()
    for typed in ("qwerty123456", "QWERTY123456", "Qwerty123456", "qWeRtY123456"):
        refused = _refusal(typed)
        assert refused.rule == PasswordRule.COMMON == "common"
        assert str(refused) == (
            "this password is in a list of commonly used passwords; choose another"
        )


def test_list_membership_casefolds_beyond_ascii() -> None:
    # A (mojibake) Cyrillic entry of the list, typed in capitals.
    entry = "пїѕпїѕпїѕпїѕпїѕпїѕ"
    assert entry in common_passwords()
    assert _refusal(entry.upper()).rule == "common"


def test_a_listed_password_with_something_added_is_accepted() -> None:
    _accepts("justinbieber fan")


# -- context words ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "user", "tenant"),
    [
        ("alicealicealice", "alice", "acme"),
        ("ALICEalicealice", "alice", "acme"),
        ("alicealice2026", "alice", "acme"),
        ("acme-logistics", "alice", "acme-logistics"),
        ("Acme-Logistics2026!", "alice", "acme-logistics"),
        ("fleetgate2026!!", "alice", "acme"),
        ("FleetGateFleetGate", "alice", "acme"),
        ("fleetgate 2026-01-01", "alice", "acme"),
        ("acmefleetgate1", "alice", "acme"),
        ("dispatcher-7", "dispatcher-7", "acme"),
        # The user id itself is compared after NFC and casefold too.
        ("StraßeStraße", "STRASSE", "acme"),
        ("crème brûlée", unicodedata.normalize("NFD", "Crème Brûlée"), "acme"),
    ],
)
def test_a_password_built_from_context_words_is_refused(
    password: str, user: str, tenant: str
) -> None:
    refused = _refusal(password, user=user, tenant=tenant)
    assert refused.rule == PasswordRule.CONTEXT == "context"
    assert str(refused) == (
        "a password must not be built from the user name, the tenant name or 'fleetgate'"
    )


@pytest.mark.parametrize(
    "password",
    [
        "fleetgate-demo",
        "fleetgate is fine",
        "alice in wonderland",
        "my acme-logistics pass",
        "correct horse battery",
    ],
)
def test_a_password_that_goes_on_with_other_letters_is_accepted(password: str) -> None:
    _accepts(password, user="alice", tenant="acme-logistics")


def test_an_empty_user_or_tenant_is_not_a_context_word() -> None:
    _accepts("2026-01-01 12:00", user="", tenant="")


def test_overlapping_context_words_are_checked_without_backtracking() -> None:
    # "a" and "aa" tile a run of a's in exponentially many ways; a backtracking
    # match would not finish on this password.
    password = "a" * 1000 + "b!"
    _accepts(password, user="a", tenant="aa")
    assert _refusal("a" * 1000 + "1!", user="a", tenant="aa").rule == "context"


# -- repetition and sequences ---------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [
        "aaaaaaaaaaaa",
        "AaAaAaAaAaAa",
        "            ",
        "éééééééééééé",
        "123456789012",
        "789012345678",
        "210987654321",
        "abcdefghijkl",
        "ABCDEFGHIJKLMNOP",
        "zyxwvutsrqpo",
        "wxyzabcdefgh",
    ],
)
def test_one_character_repeated_or_a_run_is_refused(password: str) -> None:
    refused = _refusal(password)
    assert refused.rule == PasswordRule.REPETITIVE == "repetitive"
    assert str(refused) == (
        "a password must not be one character repeated or a run of consecutive letters or digits"
    )


@pytest.mark.parametrize(
    "password",
    [
        "aaaaaaaaaaab",
        "123456789013",
        "135791357913",
        "abcdefghijk1",
        "abcdef123456",
        "acegikmoqsuw",
    ],
)
def test_almost_a_run_is_accepted(password: str) -> None:
    _accepts(password)


def test_a_single_character_wins_over_a_context_word_made_of_it() -> None:
    assert _refusal("aaaaaaaaaaaa", user="a").rule == "repetitive"


# -- messages ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "user", "tenant"),
    [
        ("Hunter2x", "alice", "acme"),
        ("Hunter2xHunter2x" * 100, "alice", "acme"),
        ("QWERTY123456", "alice", "acme"),
        ("Zebulon.Zebulon.", "zebulon.", "acme"),
        ("Mmmmmmmmmmmmmmmm", "alice", "acme"),
    ],
)
def test_no_message_or_repr_contains_the_password(password: str, user: str, tenant: str) -> None:
    refused = _refusal(password, user=user, tenant=tenant)
    for shown in (str(refused), repr(refused), repr(refused.args)):
        assert password not in shown
        assert password.casefold() not in shown.casefold()


@given(st.text(max_size=40), st.text(max_size=8), st.text(max_size=8))
def test_a_message_depends_only_on_the_rule_and_the_length(
    password: str, user: str, tenant: str
) -> None:
    # So nothing of the password's text can appear in it.
    try:
        check_new_password(password, user=user, tenant=tenant)
    except PasswordRejected as refused:
        length = len(unicodedata.normalize("NFC", password))
        expected = {
            "too_short": f"a password needs at least 12 characters (this one has {length})",
            "repetitive": "a password must not be one character repeated"
            " or a run of consecutive letters or digits",
            "context": "a password must not be built from the user name,"
            " the tenant name or 'fleetgate'",
            "common": "this password is in a list of commonly used passwords; choose another",
        }
        assert str(refused) == expected[refused.rule]
        assert refused.args == (str(refused),)


def test_a_lone_surrogate_is_checked_not_raised_on() -> None:
    _accepts("correct \ud800 horse")


# -- the passwords the suite and the demo use ---------------------------------------


def test_the_server_tests_password_passes() -> None:
    _accepts(TESTS_PASSWORD, user="admin", tenant="acme")


def test_the_demo_password_passes() -> None:
    _accepts(demo.PASSWORD, user=demo.ADMIN, tenant=demo.TENANT)
