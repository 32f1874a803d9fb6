"""sync.instant: RFC 3339 date-times compared as instants (policy-format.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from sync.policy.instant import format_instant, instant_from_datetime, parse_instant


def test_parses_utc_time_to_epoch_seconds_and_empty_fraction() -> None:
    assert parse_instant("1970-01-01T00:00:00Z") == (0, "")
    assert parse_instant("2026-11-22T09:30:00Z") == (1795339800, "")


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-22T11:30:00+02:00",
        "2026-11-22T04:00:00-05:30",
        "2026-11-22T09:30:00-00:00",
        "2026-11-22T09:30:00+00:00",
        "2026-11-22t09:30:00z",
        "2026-11-22 09:30:00Z",
    ],
)
def test_offsets_and_spellings_of_one_instant_compare_equal(text: str) -> None:
    assert parse_instant(text) == parse_instant("2026-11-22T09:30:00Z")


def test_offset_crossing_midnight_and_year_is_the_same_instant() -> None:
    assert parse_instant("2027-01-01T01:00:00+02:00") == parse_instant("2026-12-31T23:00:00Z")


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        ("2026-12-31T00:00:00Z", "2026-12-31T00:00:00.000000001Z"),
        ("2026-12-30T23:59:59.999999999Z", "2026-12-31T00:00:00Z"),
        ("2026-12-31T00:00:00.09Z", "2026-12-31T00:00:00.1Z"),
        ("2026-12-31T00:00:00.1Z", "2026-12-31T00:00:00.12Z"),
        ("2026-12-31T00:00:00.05Z", "2026-12-31T00:00:00.5Z"),
        ("2026-12-31T01:59:59.999999999+02:00", "2026-12-31T00:00:00Z"),
        ("2026-12-31T00:00:00Z", "2026-12-30T19:00:00.000000001-05:00"),
    ],
)
def test_instants_order_exactly_whatever_the_fraction_digits(earlier: str, later: str) -> None:
    assert parse_instant(earlier) < parse_instant(later)
    assert parse_instant(later) > parse_instant(earlier)


def test_trailing_zeros_in_a_fraction_do_not_change_the_instant() -> None:
    assert parse_instant("2026-12-31T00:00:00.500Z") == parse_instant("2026-12-31T00:00:00.5Z")
    assert parse_instant("2026-12-31T00:00:00.000Z") == parse_instant("2026-12-31T00:00:00Z")


def test_leap_day_parses_in_leap_years_only() -> None:
    day = 86400
    assert (
        parse_instant("2028-02-29T00:00:00Z")[0] - parse_instant("2028-02-28T00:00:00Z")[0] == day
    )
    assert (
        parse_instant("2000-02-29T00:00:00Z")[0] - parse_instant("2000-02-28T00:00:00Z")[0] == day
    )


def test_leap_second_counts_as_the_start_of_the_next_minute() -> None:
    assert parse_instant("2016-12-31T23:59:60Z") == parse_instant("2017-01-01T00:00:00Z")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2026-11-22",
        "2026-11-22T09:30:00",
        "2026-11-22T09:30Z",
        "2026-11-22T09:30:00+0200",
        "2026-11-22T09:30:00+02",
        "2026-13-01T00:00:00Z",
        "2026-00-01T00:00:00Z",
        "2026-02-29T00:00:00Z",
        "1900-02-29T00:00:00Z",
        "2026-04-31T00:00:00Z",
        "2026-11-00T00:00:00Z",
        "2026-11-22T24:00:00Z",
        "2026-11-22T09:60:00Z",
        "2026-11-22T09:30:61Z",
        "2026-11-22T09:30:00+24:00",
        "2026-11-22T09:30:00+02:60",
        "2026-11-22T09:30:00.Z",
        "2026-11-22T09:30:00Z\n",
        " 2026-11-22T09:30:00Z",
        "26-11-22T09:30:00Z",
    ],
)
def test_rejects_text_that_is_not_an_rfc3339_date_time(text: str) -> None:
    with pytest.raises(ValueError, match=r"RFC 3339|month|day|out of range"):
        parse_instant(text)


@pytest.mark.parametrize(
    "text", ["\u0662\u0660\u0662\u0666-11-22T09:30:00Z", "2026-11-22T09:30:0\uff10Z"]
)
def test_rejects_digits_outside_ascii(text: str) -> None:
    with pytest.raises(ValueError):
        parse_instant(text)


def test_format_instant_writes_utc_with_the_fraction_kept() -> None:
    assert format_instant(parse_instant("2026-11-22T11:30:00+02:00")) == "2026-11-22T09:30:00Z"
    assert (
        format_instant(parse_instant("2026-11-22T09:30:00.000000001Z"))
        == "2026-11-22T09:30:00.000000001Z"
    )


def test_format_then_parse_gives_the_same_instant() -> None:
    for text in ("1999-12-31T23:59:59.25-08:00", "2026-02-28T00:00:00Z", "1960-06-01T12:00:00Z"):
        instant = parse_instant(text)
        assert parse_instant(format_instant(instant)) == instant


def test_instant_from_aware_datetime_matches_parsing_its_text() -> None:
    moment = datetime(2026, 11, 22, 11, 30, 0, 250000, tzinfo=timezone(timedelta(hours=2)))
    assert instant_from_datetime(moment) == parse_instant("2026-11-22T09:30:00.25Z")
    assert instant_from_datetime(datetime(2026, 11, 22, 9, 30, tzinfo=UTC)) == parse_instant(
        "2026-11-22T09:30:00Z"
    )


def test_instant_from_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        instant_from_datetime(datetime(2026, 11, 22, 9, 30))


def test_a_date_and_a_time_seen_apart_combine_into_the_right_instant() -> None:
    # Parsing may remember valid dates and times of day; the combination of two
    # remembered halves must still be exact, and must not make bad text valid.
    parse_instant("2026-11-22T00:00:00Z")
    parse_instant("2020-01-01T09:30:00Z")
    assert parse_instant("2026-11-22T09:30:00Z") == (1795339800, "")
    assert parse_instant("2026-11-22t09:30:00z") == (1795339800, "")
    assert parse_instant("2026-11-22 09:30:00Z") == (1795339800, "")
    for bad in ("2026-11-22T09:30:00+", "2026-11-22X09:30:00Z", "2026-11-22T09:30:00Q"):
        with pytest.raises(ValueError):
            parse_instant(bad)


def test_remembered_halves_do_not_validate_an_impossible_combination() -> None:
    parse_instant("2028-02-29T09:30:00Z")
    parse_instant("2026-02-28T09:30:00Z")
    with pytest.raises(ValueError):
        parse_instant("2026-02-29T09:30:00Z")
    parse_instant("2016-12-31T23:59:60Z")
    assert parse_instant("2016-12-31T23:59:60Z") == parse_instant("2017-01-01T00:00:00Z")
