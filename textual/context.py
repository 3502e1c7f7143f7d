"""The injected text: the exact words a model will see for a set of memories. Owns the rendering format.

Format: memories in time order, grouped under an `On 8 May 2023:` header per UTC day of `created_at`, one line each:
`- Speaker said: "content"` for an episode with a speaker, `- content` otherwise; lines joined by newlines.
Why this shape: a small chat model given `Speaker: text` lines continues the dialogue instead of answering; quoted,
attributed notes are read as reference (measured with `bench.answers`: LoCoMo F1 0.109 -> 0.141 at the same retrieval).
Invariant: `count_tokens(render(ms)) == sum(line_cost) + sum(header_cost of each distinct header)`, which is what
lets budget selection count tokens before rendering.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Sequence

from textual.memory import Memory, MemoryType
from textual.tokens import count_tokens


def header(memory: Memory) -> str:
    """The group header of `memory`: its UTC day."""
    day = datetime.fromtimestamp(memory.created_at, tz=timezone.utc)
    return f"On {day.day} {day:%B %Y}:"


def line(memory: Memory) -> str:
    """The one line `memory` renders to (newlines inside content become spaces)."""
    content = " ".join(memory.content.split())
    speaker = memory.metadata.get("speaker")
    if memory.type is MemoryType.EPISODE and speaker:
        return f'- {speaker} said: "{content}"'
    return f"- {content}"


def line_cost(memory: Memory) -> int:
    return count_tokens(line(memory))


def header_cost(memory: Memory) -> int:
    return count_tokens(header(memory))


def render(memories: Sequence[Memory]) -> str:
    """The injected text for `memories`, in time order under day headers."""
    parts: list[str] = []
    current = None
    for memory in sorted(memories, key=time_order):
        if header(memory) != current:
            current = header(memory)
            parts.append(current)
        parts.append(line(memory))
    return "\n".join(parts)


def time_order(memory: Memory) -> tuple:
    """Sort key: time, then conversation session and turn position (turns of one session share a time)."""
    return (memory.created_at, str(memory.metadata.get("session", "")), memory.metadata.get("position", 0), memory.id)
