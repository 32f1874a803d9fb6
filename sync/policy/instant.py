"""RFC 3339 instants, compared exactly.

policy-format.md: `expires` and `context.time` are RFC 3339 date-times (with
`Z` or an offset, fractions allowed), compared as instants. An `Instant` is
`(whole seconds since the Unix epoch, fraction digits without trailing zeros)`;
comparing two such tuples compares the instants exactly, whatever the number
of fraction digits (a float would merge instants a nanosecond apart).
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime

Instant = tuple[int, str]

_RFC3339 = re.compile(
    # [0-9], not \d: RFC 3339's DIGIT is ASCII, and \d matches every script's digits.
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


_DAYS_SEEN: dict[str, int] = {}
_DAYS_LIMIT = 10_000


def parse_instant(text: str) -> Instant:
    """Parse an RFC 3339 date-time into an `Instant`.

    Raises ValueError naming what is wrong when `text` is not one.
    """
    # Requests carry mostly `YYYY-MM-DDTHH:MM:SSZ`, and a batch few distinct
    # dates: the date's validity and midnight are remembered once seen, the
    # time of day is checked and added here. Everything else takes `_parse`.
    if len(text) == 20 and text[19] in "Zz" and text[10] in "Tt ":
        midnight = _DAYS_SEEN.get(text[:10])
        if midnight is not None and text[13] == ":" and text[16] == ":":
            hours, minutes, seconds = text[11:13], text[14:16], text[17:19]
            if hours.isdigit() and minutes.isdigit() and seconds.isdigit() and text.isascii():
                h, m, s = int(hours), int(minutes), int(seconds)
                if h < 24 and m < 60 and s <= 60:
                    return (midnight + h * 3600 + m * 60 + s, "")
        instant = _parse(text)
        if len(_DAYS_SEEN) >= _DAYS_LIMIT:
            _DAYS_SEEN.clear()
        _DAYS_SEEN[text[:10]] = calendar.timegm(
            (int(text[:4]), int(text[5:7]), int(text[8:10]), 0, 0, 0, 0, 0, 0)
        )
        return instant
    return _parse(text)


_SHAPE = re.compile(
    # The common shapes with every field in range, but the day of the month.
    r"([0-9]{4}-(?:0[1-9]|1[0-2])-[0-3][0-9])[Tt ](?:[01][0-9]|2[0-3]):[0-5][0-9]:(?:[0-5][0-9]|60)"
    r"(?:\.[0-9]+)?(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)


def check_instant(text: str) -> None:
    """Raise ValueError unless `text` is an RFC 3339 date-time; cheaper than parsing.

    A request's time must be valid to be decided, but is only read when the
    user holds an expiring role: `fleetgate check` checks every time and
    parses few.
    """
    match = _SHAPE.fullmatch(text)
    if match is None or match.group(1) not in _DAYS_SEEN:
        parse_instant(text)


def _parse(text: str) -> Instant:
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not an RFC 3339 date-time (like 2026-11-22T09:30:00Z)")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    if not 1 <= month <= 12:
        raise ValueError(f"{text!r} has month {month}")
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not 1 <= day <= (_DAYS[month - 1] if month != 2 or leap else 28):
        raise ValueError(f"{text!r} has no day {day} in that month")
    # Second 60 is RFC 3339's leap second; it counts as the next instant's start.
    if hour > 23 or minute > 59 or second > 60:
        raise ValueError(f"{text!r} has a time of day out of range")
    offset = 0
    if match.group(8) is None:
        off_hours, off_minutes = int(match.group(10)), int(match.group(11))
        if off_hours > 23 or off_minutes > 59:
            raise ValueError(f"{text!r} has an offset out of range")
        offset = (off_hours * 60 + off_minutes) * 60
        if match.group(9) == "-":
            offset = -offset
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) - offset
    return (seconds, (match.group(7) or "").rstrip("0"))


def format_instant(instant: Instant) -> str:
    """The RFC 3339 text of `instant` in UTC (`2026-11-22T09:30:00Z`)."""
    seconds, fraction = instant
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{fraction}Z" if fraction else f"{text}Z"


def instant_from_datetime(moment: datetime) -> Instant:
    """The instant of an aware `datetime` (the caller's clock, handed in)."""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no instant; give it a time zone")
    seconds = calendar.timegm(moment.astimezone(UTC).timetuple())
    return (seconds, f"{moment.microsecond:06d}".rstrip("0") if moment.microsecond else "")
