"""Reading a search question before retrieval: who it names, when it points at, which words to match. Pure."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable

MONTHS = {name.lower(): number for number, name in enumerate(calendar.month_name) if name}
MONTHS.update({name.lower(): number for number, name in enumerate(calendar.month_abbr) if name})
YEAR = re.compile(r"\b(1[89]\d\d|2[01]\d\d)\b")
MONTH_YEAR = re.compile(r"\b([A-Za-z]+)\.?,?\s+(1[89]\d\d|2[01]\d\d)\b")


@dataclass(frozen=True)
class QueryPlan:
    """What retrieval needs from a question.

    `names` are the known speakers the question mentions (lower-case); `lexical_text` is the question without
    them, since a name matches every turn addressed to that person; `dense_text` is the question without them
    (possessive included) for the query embedding, for the same reason: every stored turn is embedded after its
    speaker's name, so a named speaker made their short, content-free turns ("Hey Mel! Long time no talk.") the
    nearest to any question about them; who is asked about is the speaker factor's job (`scoring`). `window` is a
    [start, end) time range in epoch seconds when the question names a year or a month, else None.
    """

    text: str
    lexical_text: str
    names: frozenset[str]
    window: tuple[float, float] | None
    dense_text: str = ""


def plan_query(text: str, speakers: Iterable[str]) -> QueryPlan:
    """The plan for question `text`, given the speaker names known in the tenant."""
    words = re.findall(r"\w+", text.lower())
    known = {speaker.lower(): speaker for speaker in speakers if speaker}
    names = frozenset(word for word in words if word in known)
    lexical = " ".join(word for word in re.findall(r"\w+", text) if word.lower() not in names)
    return QueryPlan(text=text, lexical_text=lexical, names=names, window=time_window(text),
                     dense_text=without_names(text, names))


def without_names(text: str, names: Iterable[str]) -> str:
    """`text` without the words in `names` (lower-case), a possessive 's with them, spaces closed up; `text` itself
    when nothing else would be left."""
    if not names:
        return text
    pattern = re.compile(r"\s*\b(?:" + "|".join(re.escape(name) for name in sorted(names)) + r")\b(?:['’]s\b)?",
                         re.IGNORECASE)
    stripped = pattern.sub("", text).strip()
    return stripped if re.search(r"\w", stripped) else text


def time_window(text: str) -> tuple[float, float] | None:
    """[start, end) in epoch seconds of the first "Month YYYY" in `text`, else of the first year, else None."""
    for match in MONTH_YEAR.finditer(text):
        month = MONTHS.get(match.group(1).lower())
        if month:
            year = int(match.group(2))
            end = (year + 1, 1) if month == 12 else (year, month + 1)
            return _epoch(year, month), _epoch(*end)
    match = YEAR.search(text)
    if match:
        year = int(match.group(1))
        return _epoch(year, 1), _epoch(year + 1, 1)
    return None


def _epoch(year: int, month: int) -> float:
    return datetime(year, month, 1, tzinfo=timezone.utc).timestamp()


CONJUNCTION = re.compile(r"\b(\w+)((?:,\s*\w+)*),?\s+(?:and/or|and|or)\s+(\w+)\b")


def split_question(text: str, stopwords: Iterable[str]) -> list[str]:
    """The parts of a multi-part question, one per conjunct of its first "A and B" / "A, B or C" between content
    words, each with the other conjuncts removed ("months between adopting Toby and Buddy" gives "... adopting Toby"
    and "... adopting Buddy"); `[text]` when there is no such coordination. A coordination with a stopword among
    its conjuncts is skipped ("a park or a museum" and "fishing and have fun" are not split)."""
    stop = {word.lower() for word in stopwords}
    for match in CONJUNCTION.finditer(text):
        conjuncts = [match.group(1), *re.findall(r"\w+", match.group(2)), match.group(3)]
        if any(word.lower() in stop for word in conjuncts):
            continue
        head, tail = text[:match.start()], text[match.end():]
        return [f"{head}{conjunct}{tail}" for conjunct in conjuncts]
    return [text]
