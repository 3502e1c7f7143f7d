"""Resolving relative time ("yesterday", "last Saturday", "two weeks ago", "next month") against the time a turn
was said. Pure.

`mentioned_period(text, said_at)` is the [start, end) span, in epoch seconds (UTC days), of the first relative time
expression in `text`, or None. Spans: a day for yesterday/today/tonight/tomorrow, a named weekday ("last Friday" is
the latest Friday before the day said, "next Friday" the first after it, a bare "on Friday" the latest one up to that
day) and "N days ago"; a Monday-to-Sunday week for "last/this/next week" and "N weeks ago"; the Saturday and
Sunday of the week before, of, or after the day said for "last/this/next weekend"; a calendar month for
"last/this/next month" and "N months ago"; a calendar year likewise.
Invariant: start < end, and both are midnights UTC.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
           "eight": 8, "nine": 9, "ten": 10, "a couple of": 2, "a few": 3, "few": 3, "couple of": 2}
_COUNT = r"(\d{1,2}|a couple of|couple of|a few|few|an?|one|two|three|four|five|six|seven|eight|nine|ten)"
PATTERN = re.compile(
    r"\b(?:(yesterday|today|tonight|tomorrow|last night|this morning)"
    rf"|(last|this|next|past)\s+(week(?:end)?|month|year|{'|'.join(WEEKDAYS)})"
    rf"|{_COUNT}\s+(day|week|month|year)s?\s+ago"
    rf"|(?:on\s+)({'|'.join(WEEKDAYS)}))\b", re.IGNORECASE)


def mentioned_period(text: str, said_at: float) -> tuple[float, float] | None:
    """The span of the first relative time expression in `text`, said at epoch `said_at`; None without one, and None
    when the day said or the span lies outside the calendar's years 1 to 9999 (a caller may store any epoch time)."""
    try:
        day = datetime.fromtimestamp(said_at, tz=timezone.utc).date()
        for match in PATTERN.finditer(text):
            span = _span(match, day)
            if span is not None:
                return _epoch(span[0]), _epoch(span[1])
    except (ValueError, OverflowError, OSError):
        return None
    return None


def _span(match: re.Match, day: date) -> tuple[date, date] | None:
    single, which, unit, count, count_unit, weekday = (g.lower() if g else None for g in match.groups())
    if single:
        offset = {"yesterday": -1, "tomorrow": 1}.get(single, 0)
        return _days(day + timedelta(offset), 1)
    if count_unit:
        return _ago(day, NUMBERS.get(count) or int(count), count_unit)
    if weekday:
        return _days(day - timedelta((day.weekday() - WEEKDAYS.index(weekday)) % 7), 1)
    step = {"last": -1, "past": -1, "this": 0, "next": 1}[which]
    if unit in WEEKDAYS:
        return _weekday(day, WEEKDAYS.index(unit), step)
    if unit == "weekend":
        return _days(day - timedelta(day.weekday()) + timedelta(5 + 7 * step), 2)
    return _ago(day, -step, unit)


def _weekday(day: date, target: int, step: int) -> tuple[date, date]:
    if step < 0:
        back = (day.weekday() - target) % 7 or 7
        return _days(day - timedelta(back), 1)
    ahead = (target - day.weekday()) % 7
    return _days(day + timedelta(ahead or (7 if step > 0 else 0)), 1)


def _ago(day: date, count: int, unit: str) -> tuple[date, date]:
    """The `unit` (day, week, month, year) `count` units before `day`'s (after, for a negative count)."""
    if unit == "day":
        return _days(day - timedelta(count), 1)
    if unit == "week":
        monday = day - timedelta(day.weekday()) - timedelta(7 * count)
        return _days(monday, 7)
    if unit == "month":
        index = day.year * 12 + day.month - 1 - count
        start = date(index // 12, index % 12 + 1, 1)
        return start, date((index + 1) // 12, (index + 1) % 12 + 1, 1)
    return date(day.year - count, 1, 1), date(day.year - count + 1, 1, 1)


def _days(start: date, length: int) -> tuple[date, date]:
    return start, start + timedelta(length)


def _epoch(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp()
