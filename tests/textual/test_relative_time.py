"""Relative time resolved against the day a turn was said (Monday 8 May 2023, 13:56 UTC). Pure."""

from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from textual.relative_time import mentioned_period

SAID = datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc).timestamp()


def day(d: int, month: int = 5, year: int = 2023) -> float:
    return datetime(year, month, d, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize("text, start, end", [
    ("I went to a support group yesterday!", day(7), day(8)),
    ("Tonight I'm painting", day(8), day(9)),
    ("We hike tomorrow", day(9), day(10)),
    ("Last Saturday we ran a charity race", day(6), day(7)),
    ("last Monday was rough", day(1), day(2)),
    ("See you next Friday", day(12), day(13)),
    ("On Sunday I baked", day(7), day(8)),
    ("two days ago", day(6), day(7)),
    ("I adopted a dog 3 weeks ago", day(17, 4), day(24, 4)),
    ("last week I signed up", day(1), day(8)),
    ("we camped last weekend", day(6), day(8)),
    ("next weekend", day(20), day(22)),
    ("Last month I started a pottery class", day(1, 4), day(1, 5)),
    ("a few months ago", day(1, 2), day(1, 3)),
    ("next month", day(1, 6), day(1, 7)),
    ("I moved here last year", day(1, 1, 2022), day(1, 1, 2023)),
])
def test_relative_time_is_resolved_against_the_day_it_was_said(text, start, end):
    assert mentioned_period(text, SAID) == (start, end)


def test_text_without_relative_time_has_no_period():
    assert mentioned_period("I love painting sunsets by the lake", SAID) is None
    assert mentioned_period("This yesterdayish word is no date", SAID) is None


def test_december_and_january_roll_over_the_year():
    new_year = datetime(2024, 1, 3, tzinfo=timezone.utc).timestamp()
    assert mentioned_period("last month", new_year) == (day(1, 12), day(1, 1, 2024))
    assert mentioned_period("next month", day(20, 12)) == (day(1, 1, 2024), day(1, 2, 2024))


@given(st.floats(0, 4e9), st.sampled_from(["yesterday", "last friday", "next week", "5 months ago", "last weekend",
                                           "this year", "on tuesday", "a couple of weeks ago"]))
def test_a_period_is_a_nonempty_span_of_whole_utc_days(said_at, text):
    start, end = mentioned_period(text, said_at)
    assert start < end and start % 86_400 == 0 and end % 86_400 == 0


@pytest.mark.parametrize("said_at", [253754047055.0, -1e13, -62135596800.0, 1e20])
def test_a_time_outside_the_calendar_has_no_period_rather_than_an_error(said_at):
    """Turns may carry any epoch time (the fuzz test sent the year 10011): no span, no exception."""
    assert mentioned_period("I saw her yesterday, and next month too", said_at) is None
