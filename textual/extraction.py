"""Facts, preferences and events drawn from chat turns by a chat model: the prompt, the JSON schema of the answer,
and the parser that checks an answer against the turns it was asked about. Pure: no engine, no I/O.

The format: the model sees numbered turns, each with its turn id, date and speaker, and answers
`{"memories": [{"type": "fact" | "preference" | "event", "content": str, "source": [turn id, ...]}]}`.
Invariants of a parsed `Extraction`: at most `MAX_MEMORIES` memories, each of an extracted type, with stripped content
of 1 to `MAX_CONTENT_CHARS` characters and a non-empty `source` holding only ids of the turns given, no two with the
same type and content. Whatever else the answer holds is dropped and counted; parsing never raises.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from textual.memory import Memory, MemoryType

MAX_TURNS = 20  # the newest turns of a batch given to the model; older ones stay episodes only
MAX_TURN_CHARS = 1000  # each turn's text is cut to this in the prompt
MAX_MEMORIES = 8
MAX_CONTENT_CHARS = 200
MAX_SOURCES = 4
EXTRACTED_TYPES = (MemoryType.FACT, MemoryType.PREFERENCE, MemoryType.EVENT)
EXTRACTED_NAMES = frozenset(kind.value for kind in EXTRACTED_TYPES)

INSTRUCTION = (
    "You extract long-term memories from a conversation. Read the numbered turns and list what is worth "
    "remembering about the people in it:\n"
    "- fact: a lasting truth (\"Alice lives in Berlin\", \"Bob's sister is called Eve\");\n"
    "- preference: a like, dislike or wish (\"Alice prefers tea to coffee\");\n"
    "- event: something that happened or will happen, with its date if known "
    "(\"Alice ran a marathon on 2024-05-12\").\n"
    "Write each memory as one short self-contained sentence that names the person. Give in `source` the ids of the "
    "turns it comes from. Leave out greetings, small talk and what the assistant says about itself. "
    f"At most {MAX_MEMORIES} memories; an empty list if nothing is worth remembering. "
    'Answer with JSON only: {"memories": [{"type": "fact", "content": "...", "source": ["<turn id>"]}]}'
)


@dataclass(frozen=True)
class SourceTurn:
    """One turn as the model sees it; `turn_id` is what extracted memories name in their `source`."""

    turn_id: str
    speaker: str
    time: float
    text: str

    @classmethod
    def of_episode(cls, episode: Memory) -> SourceTurn:
        """The turn an episode memory holds: its turn id if the caller gave one, else the episode's own id."""
        turn_id = episode.source[0] if episode.source else episode.id
        return cls(turn_id, str(episode.metadata.get("speaker", "")), episode.created_at, episode.content)


@dataclass(frozen=True)
class Extracted:
    """One memory drawn from the turns, not yet stored."""

    type: MemoryType
    content: str
    source: tuple[str, ...]


@dataclass(frozen=True)
class Extraction:
    """The memories an answer held, and how many of its items (or the whole answer, if malformed) were dropped."""

    memories: tuple[Extracted, ...]
    dropped: int


def recent_turns(turns: Sequence[SourceTurn]) -> list[SourceTurn]:
    """The turns one extraction looks at: the newest `MAX_TURNS`, in order."""
    return list(turns[-MAX_TURNS:])


def prompt_messages(turns: Sequence[SourceTurn]) -> list[dict[str, str]]:
    """The chat messages asking for the memories of `turns`: the instruction, then the numbered turns."""
    lines = [f"{number}. [turn {turn.turn_id}] {_date(turn.time)} {_flat(turn.speaker)}: "
             f"{_clipped(turn.text)}"
             for number, turn in enumerate(turns, start=1)]
    return [{"role": "system", "content": INSTRUCTION},
            {"role": "user", "content": "Conversation:\n" + "\n".join(lines)}]


def answer_schema(turns: Sequence[SourceTurn]) -> dict[str, Any]:
    """The JSON schema of the answer; `source` items are restricted to the ids of `turns`."""
    ids = list(dict.fromkeys(turn.turn_id for turn in turns))
    item = {
        "type": "object",
        "properties": {
            "type": {"type": "string", "enum": [kind.value for kind in EXTRACTED_TYPES]},
            "content": {"type": "string", "minLength": 1, "maxLength": MAX_CONTENT_CHARS},
            "source": {"type": "array", "items": {"type": "string", "enum": ids}, "minItems": 1,
                       "maxItems": min(len(ids), MAX_SOURCES)},
        },
        "required": ["type", "content", "source"],
        "additionalProperties": False,
    }
    return {"type": "object", "properties": {"memories": {"type": "array", "items": item, "maxItems": MAX_MEMORIES}},
            "required": ["memories"], "additionalProperties": False}


def parse_answer(text: object, turns: Sequence[SourceTurn]) -> Extraction:
    """The valid memories of the model's answer `text` about `turns`; everything else dropped and counted."""
    items = _answer_items(text)
    if items is None:
        return Extraction((), 1)
    known = {turn.turn_id for turn in turns}
    kept: dict[tuple[MemoryType, str], Extracted] = {}
    for item in items[:MAX_MEMORIES]:
        memory = _checked_item(item, known)
        if memory is not None:
            kept.setdefault((memory.type, memory.content), memory)
    return Extraction(tuple(kept.values()), len(items) - len(kept))


def _answer_items(text: object) -> list[Any] | None:
    """The `memories` list of an answer, or None when the answer is not a JSON object holding one."""
    if not isinstance(text, str):
        return None
    try:
        answer = json.loads(_unfenced(text))
    except (ValueError, RecursionError):
        return None
    items = answer.get("memories") if isinstance(answer, dict) else None
    return items if isinstance(items, list) else None


def _checked_item(item: object, known: set[str]) -> Extracted | None:
    if not isinstance(item, dict):
        return None
    kind, content, source = item.get("type"), item.get("content"), item.get("source")
    if not isinstance(kind, str) or kind not in EXTRACTED_NAMES or not isinstance(content, str):
        return None
    content = content.strip()
    if not content or len(content) > MAX_CONTENT_CHARS:
        return None
    if not isinstance(source, list) or not source or not all(isinstance(s, str) and s in known for s in source):
        return None
    return Extracted(MemoryType(kind), content, tuple(dict.fromkeys(source)))


def _unfenced(text: str) -> str:
    """The answer without a Markdown code fence around it (models without structured outputs add one)."""
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```") and len(stripped) >= 6:
        body = stripped[3:-3]
        return body[body.find("\n") + 1:] if "\n" in body else body
    return stripped


def _date(seconds: float) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))
    except (OverflowError, OSError, ValueError):
        return "(date unknown)"


def _flat(text: str) -> str:
    return " ".join(text.split())


def _clipped(text: str) -> str:
    flat = _flat(text)
    return flat if len(flat) <= MAX_TURN_CHARS else flat[:MAX_TURN_CHARS - 1] + "…"
