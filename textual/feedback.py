"""What user feedback does to a memory. Pure: the caller stores the result (and re-embeds a correction).

- positive: importance +0.1 (at most 1) and the memory is reinforced as if accessed;
- negative: importance -0.2 (at least 0); its strength is halved, so it fades sooner;
- correction: `text` replaces the content, the old content goes to `metadata["history"]`, importance +0.1.
Every kind is counted in `metadata["feedback"]` (kind -> count).
"""

from __future__ import annotations

from dataclasses import replace

from textual.consolidation import with_history
from textual.errors import InvalidMemoryError
from textual.memory import Memory

KINDS = ("positive", "negative", "correction")
POSITIVE_STEP = 0.1
NEGATIVE_STEP = 0.2


def check_kind(kind: object, text: object) -> str:
    """`kind` if it is a feedback kind and `text` fits it (a correction needs text, the others take none)."""
    if kind not in KINDS:
        raise InvalidMemoryError("kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    if kind == "correction" and (not isinstance(text, str) or not text.strip()):
        raise InvalidMemoryError("text", "a correction needs the corrected content as a non-empty string")
    if kind != "correction" and text is not None:
        raise InvalidMemoryError("text", f"only a correction takes text, not {kind!r} feedback")
    return kind


def apply_feedback(memory: Memory, kind: str, text: str | None, now: float, reinforced: float) -> Memory:
    """`memory` after feedback of `kind` at `now`; `reinforced` is its strength if accessed now."""
    counts = dict(memory.metadata.get("feedback", {}))
    counts[kind] = counts.get(kind, 0) + 1
    metadata = {**memory.metadata, "feedback": counts}
    updated = max(now, memory.created_at)
    if kind == "positive":
        return replace(memory, metadata=metadata, importance=min(1.0, memory.importance + POSITIVE_STEP),
                       strength=reinforced, last_access_at=updated, updated_at=updated)
    if kind == "negative":
        return replace(memory, metadata=metadata, importance=max(0.0, memory.importance - NEGATIVE_STEP),
                       strength=memory.strength / 2, updated_at=updated)
    return replace(memory, content=text, metadata=with_history(metadata, memory.content, now, "correction"),
                   importance=min(1.0, memory.importance + POSITIVE_STEP), updated_at=updated)
