"""What to do with a new memory that resembles stored ones: merge, supersede, or add. Pure.

The rule, checked against the most similar stored memory of the same user, type and knowledge base:
- cosine >= `merge_similarity` and the same numbers (words holding a digit): the same memory said again. The
  stored one is reinforced and takes the newer wording (the old wording goes to its history); no second copy.
- for fact and preference memories, cosine >= `supersede_similarity`, the same subject (the first word that is
  not a stopword, e.g. "alice" in "Alice lives in Paris") and mostly the same words (Jaccard similarity of the
  lower-cased word sets >= `supersede_overlap`): a changed value of the same thing, as in "Alice lives in
  Berlin" or a new phone number. The new memory is stored and the old one archived, linked both ways.
- otherwise: a new memory.
Merged and superseded pairs always share user, type and kb_id. The subject check is lexical so that "Bob is
allergic to peanuts" never supersedes "Alice is allergic to peanuts" however close their vectors are.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

from textual.memory import RESIDENT_TIERS, LifecycleTier, Memory, MemoryType, peer_key

MAX_HISTORY = 20
STOPWORDS = frozenset({"the", "a", "an", "my", "our", "his", "her", "their", "its", "this", "that", "user", "i"})


@dataclass(frozen=True)
class ConsolidationPolicy:
    """Thresholds of the merge/supersede rule and the memory types each applies to."""

    merge_similarity: float = 0.95
    supersede_similarity: float = 0.75
    supersede_overlap: float = 0.5
    merge_types: frozenset[MemoryType] = frozenset({MemoryType.FACT, MemoryType.PREFERENCE, MemoryType.EVENT})
    supersede_types: frozenset[MemoryType] = frozenset({MemoryType.FACT, MemoryType.PREFERENCE})

    def __post_init__(self) -> None:
        if not 0 < self.supersede_similarity <= self.merge_similarity <= 1:
            raise ValueError("0 < supersede_similarity <= merge_similarity <= 1 must hold")


class Action(str, enum.Enum):
    """What happens to a new memory: stored as is, merged into a stored one, or stored superseding one."""

    ADD = "add"
    MERGE = "merge"
    SUPERSEDE = "supersede"


@dataclass(frozen=True)
class Decision:
    """The action for a new memory and the stored memory it merges into or supersedes (None for ADD)."""

    action: Action
    target: Memory | None = None
    similarity: float = 0.0


def subject(text: str) -> str:
    """The first lower-cased word of `text` that is not a stopword; possessive 's dropped ("carol's" -> "carol")."""
    for word in re.findall(r"[\w']+", text.lower()):
        word = word.removesuffix("'s").strip("'")
        if word and word not in STOPWORDS:
            return word
    return ""


def numbers(text: str) -> frozenset[str]:
    """The words of `text` that hold a digit ("555-1234" gives "555" and "1234")."""
    return frozenset(word for word in re.findall(r"\w+", text.lower()) if any(c.isdigit() for c in word))


def word_overlap(left: str, right: str) -> float:
    """Jaccard similarity of the lower-cased word sets of two texts (1.0 for two texts without words)."""
    a, b = set(re.findall(r"\w+", left.lower())), set(re.findall(r"\w+", right.lower()))
    return len(a & b) / len(a | b) if a | b else 1.0


def decide(new: Memory, similar: Sequence[tuple[Memory, float]], policy: ConsolidationPolicy) -> Decision:
    """The decision for `new` given stored memories with their cosine similarity to it (any order)."""
    peers = [(m, s) for m, s in similar if m.id != new.id and peer_key(m) == peer_key(new)]
    if not peers:
        return Decision(Action.ADD)
    best, score = max(peers, key=lambda pair: (pair[1], pair[0].id))
    if new.type in policy.merge_types and score >= policy.merge_similarity and \
            numbers(best.content) == numbers(new.content):
        return Decision(Action.MERGE, best, score)
    for memory, similarity in sorted(peers, key=lambda pair: -pair[1]):
        if (new.type in policy.supersede_types and similarity >= policy.supersede_similarity
                and subject(memory.content) == subject(new.content)
                and word_overlap(memory.content, new.content) >= policy.supersede_overlap):
            return Decision(Action.SUPERSEDE, memory, similarity)
    return Decision(Action.ADD)


def merged(existing: Memory, new: Memory, now: float, strength: float) -> Memory:
    """`existing` after `new` was said again: newer wording (old one kept in history), sources and metadata
    united, the higher importance, reinforced to `strength`, counted as an access; a cold memory said again comes
    back in `new`'s tier."""
    metadata = {**existing.metadata, **new.metadata}
    if "history" in existing.metadata:
        metadata["history"] = existing.metadata["history"]
    if new.content != existing.content:
        metadata = with_history(metadata, existing.content, now, "merge")
    return replace(existing, content=new.content, metadata=metadata,
                   source=tuple(dict.fromkeys(existing.source + new.source)),
                   importance=max(existing.importance, new.importance), strength=strength,
                   tier=existing.tier if existing.tier in RESIDENT_TIERS else new.tier,
                   access_count=existing.access_count + 1, last_access_at=now, updated_at=max(now, existing.created_at))


def superseding(old: Memory, new: Memory, now: float) -> tuple[Memory, Memory]:
    """(`old` archived with `superseded_by`, `new` with `supersedes`): the link both ways."""
    archived = replace(old, tier=LifecycleTier.ARCHIVED, metadata={**old.metadata, "superseded_by": new.id},
                       updated_at=max(now, old.created_at))
    return archived, replace(new, metadata={**new.metadata, "supersedes": old.id})


def with_history(metadata: Mapping[str, Any], content: str, now: float, reason: str) -> dict[str, Any]:
    """`metadata` with (`content`, `now`, `reason`) appended to its `history` list, the newest `MAX_HISTORY` kept."""
    history = list(metadata.get("history", []))[-(MAX_HISTORY - 1):]
    return {**metadata, "history": history + [{"content": content, "at": now, "reason": reason}]}
