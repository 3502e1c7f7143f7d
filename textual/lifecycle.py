"""The memory lifecycle as pure functions: importance heuristics, the forgetting curve, and the tier planner.

Forgetting curve: a memory's stored `strength` is its strength at `last_access_at`; at time `now` it has decayed to
`strength * 2 ** (-age / (half_life_s * (0.5 + importance)))`, so importance 0.5 decays with the policy's
half-life, importance 1 half as fast again, importance 0 twice as fast. An access reinforces: the decayed strength
plus `reinforcement`, capped at `max_strength`, becomes the new stored strength.

Planner invariants (`plan_lifecycle`): an expired memory (`expires_at` passed, whatever its tier or type) is deleted
(`EXPIRE`); otherwise it never moves a memory of an exempt type; it deletes only archived memories, and only when the
policy sets a retention; it never brings an archived memory back (only `restore` does).
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from typing import Iterable

from textual.memory import LifecycleTier, Memory, MemoryType, is_expired

DAY_S = 86_400.0
# Words that mark a memory a person would want kept: each found raises the heuristic importance.
SALIENT_WORDS = frozenset({"always", "never", "must", "important", "remember", "allergic", "allergy", "birthday",
                           "password", "deadline", "name", "prefer", "prefers", "hate", "hates", "love", "loves"})
BASE_IMPORTANCE = {MemoryType.PREFERENCE: 0.6, MemoryType.FACT: 0.55, MemoryType.TOOL_SCHEMA: 0.7,
                   MemoryType.EPISODE: 0.5, MemoryType.EVENT: 0.5}


@dataclass(frozen=True)
class LifecyclePolicy:
    """When memories move between tiers. A memory's tier follows its decayed strength:
    `>= hot_above` hot, `>= warm_above` warm, `>= archive_below` cold, below that archived.
    `retention_s`: archived memories whose last update (the archival) is older than this are deleted;
    None keeps them forever. `exempt_types` never move (knowledge-base chunks and tool schemas by default)."""

    half_life_s: float = 30 * DAY_S
    reinforcement: float = 1.0
    max_strength: float = 10.0
    hot_above: float = 0.5
    warm_above: float = 0.2
    archive_below: float = 0.02
    retention_s: float | None = None
    exempt_types: frozenset[MemoryType] = frozenset({MemoryType.DOCUMENT_CHUNK, MemoryType.TOOL_SCHEMA})

    def __post_init__(self) -> None:
        if not self.half_life_s > 0:
            raise ValueError(f"half_life_s: must be positive, got {self.half_life_s}")
        if not self.hot_above >= self.warm_above >= self.archive_below >= 0:
            raise ValueError("hot_above >= warm_above >= archive_below >= 0 must hold")
        if self.retention_s is not None and self.retention_s < 0:
            raise ValueError(f"retention_s: must be >= 0 or None, got {self.retention_s}")


class MoveKind(str, enum.Enum):
    """What a move does: change tier up (promote) or down (demote), archive, delete for good when retention ran out
    (delete) or when the memory expired (expire)."""

    PROMOTE = "promote"
    DEMOTE = "demote"
    ARCHIVE = "archive"
    DELETE = "delete"
    EXPIRE = "expire"

    @property
    def is_removal(self) -> bool:
        return self in (MoveKind.DELETE, MoveKind.EXPIRE)


@dataclass(frozen=True)
class Move:
    """One planned change: move `memory_id` to `tier`, or delete it (`tier` is None, `kind.is_removal`)."""

    memory_id: str
    kind: MoveKind
    tier: LifecycleTier | None


TIER_RANK = {LifecycleTier.HOT: 0, LifecycleTier.WARM: 1, LifecycleTier.COLD: 2, LifecycleTier.ARCHIVED: 3}


def heuristic_importance(type: MemoryType, content: str) -> float:
    """Importance of a new memory nobody rated: a base per type, +0.1 per salient word (at most +0.3)."""
    words = set(re.findall(r"\w+", content.lower()))
    return min(1.0, BASE_IMPORTANCE.get(type, 0.5) + 0.1 * min(3, len(words & SALIENT_WORDS)))


def decayed_strength(memory: Memory, now: float, policy: LifecyclePolicy) -> float:
    """The memory's strength at `now` on the forgetting curve (never above its stored strength)."""
    age = max(0.0, now - memory.last_access_at)
    return memory.strength * math.exp2(-age / (policy.half_life_s * (0.5 + memory.importance)))


def reinforced_strength(memory: Memory, now: float, policy: LifecyclePolicy) -> float:
    """The strength to store when the memory is accessed at `now`."""
    return min(policy.max_strength, decayed_strength(memory, now, policy) + policy.reinforcement)


def target_tier(strength: float, policy: LifecyclePolicy) -> LifecycleTier:
    """The tier a live memory of this decayed strength belongs in."""
    if strength >= policy.hot_above:
        return LifecycleTier.HOT
    if strength >= policy.warm_above:
        return LifecycleTier.WARM
    if strength >= policy.archive_below:
        return LifecycleTier.COLD
    return LifecycleTier.ARCHIVED


def plan_lifecycle(memories: Iterable[Memory], now: float, policy: LifecyclePolicy) -> list[Move]:
    """The moves that put every memory in the tier its decayed strength calls for, in id order."""
    moves = []
    for memory in sorted(memories, key=lambda m: m.id):
        move = _move(memory, now, policy)
        if move is not None:
            moves.append(move)
    return moves


def _move(memory: Memory, now: float, policy: LifecyclePolicy) -> Move | None:
    if is_expired(memory, now):
        return Move(memory.id, MoveKind.EXPIRE, None)
    if memory.type in policy.exempt_types:
        return None
    if memory.tier is LifecycleTier.ARCHIVED:
        expired = policy.retention_s is not None and now - memory.updated_at > policy.retention_s
        return Move(memory.id, MoveKind.DELETE, None) if expired else None
    tier = target_tier(decayed_strength(memory, now, policy), policy)
    if tier is memory.tier:
        return None
    if tier is LifecycleTier.ARCHIVED:
        return Move(memory.id, MoveKind.ARCHIVE, tier)
    kind = MoveKind.PROMOTE if TIER_RANK[tier] < TIER_RANK[memory.tier] else MoveKind.DEMOTE
    return Move(memory.id, kind, tier)


@dataclass(frozen=True)
class StrengthPoint:
    time: float
    strength: float


def strength_curve(memory: Memory, policy: LifecyclePolicy, until: float, points: int = 48) -> list[StrengthPoint]:
    """The forgetting curve from the memory's last reinforcement (`last_access_at`, where its stored strength is
    exact) to `until`, sampled at `points` evenly spaced times. Earlier accesses are in `memory.accesses`."""
    if points < 2:
        raise ValueError(f"points: must be >= 2, got {points}")
    start = memory.last_access_at
    end = max(until, start)
    step = (end - start) / (points - 1)
    return [StrengthPoint(start + i * step, decayed_strength(memory, start + i * step, policy)) for i in range(points)]
