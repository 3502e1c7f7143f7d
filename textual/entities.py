"""Entities of a text: the names, places, titles and numbers that link one memory to others. Pure.

An entity word is a capitalised word that does not open a sentence (a name, a place, a title: "Rome", "Harry
Potter"), any word inside double quotes (a title: "Inception"), or a number ("2077", "5K"); stopwords never are.
Words are returned lower-cased, in order of first appearance, without repeats. No model and no word list beyond the
caller's stopwords, so the same rule holds in any conversation.
"""

from __future__ import annotations

import re
from typing import Collection

WORD = re.compile(r"\w+(?:['’]\w+)?")
QUOTED = re.compile(r"[\"“]([^\"“”]{1,80})[\"”]")
SENTENCE_END = re.compile(r"[.!?]['\"”’)]*$")


def entity_words(text: str, stopwords: Collection[str]) -> list[str]:
    """The entity words of `text`, lower-cased, first appearance first (see the module doc for the rule)."""
    found: dict[str, None] = {}
    for quoted in QUOTED.findall(text):
        for word in WORD.findall(quoted):
            _keep(word, stopwords, found)
    opening = True
    for piece in text.split():
        for word in WORD.findall(piece):
            if word[0].isdigit() or (word[0].isupper() and not opening):
                _keep(word, stopwords, found)
            opening = False
        opening = opening or bool(SENTENCE_END.search(piece))
    return list(found)


def _keep(word: str, stopwords: Collection[str], found: dict[str, None]) -> None:
    lowered = word.lower().replace("’", "'").split("'")[0]
    if lowered and lowered not in stopwords and len(lowered) > 1:
        found.setdefault(lowered, None)
