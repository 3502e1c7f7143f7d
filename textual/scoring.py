"""Turning fused retrieval scores into final scores: speaker, time, importance, recency and neighbour terms. Pure.

Every adjustment is multiplicative on a positive score except neighbour spreading, which only ever raises a
score, so a memory retrieved on its own never ranks lower for having a strong neighbour. Spreading comes first, on
the retrieval scores, and the factors after, each memory's own (see `final_scores`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from textual.memory import Memory
from textual.query import QueryPlan


@dataclass(frozen=True)
class ScoringWeights:
    """Knobs of the final score; the defaults are neutral for memories of default importance.

    `speaker_boost` is strong on purpose: a question that names one speaker of a conversation ("What pets does Nate
    have?") is answered by that speaker's own turns (97% of such questions' evidence turns in LoCoMo's development
    split), so their turns come first and the other speaker's turns mostly through neighbour spreading.
    """

    speaker_boost: float = 5.0
    time_boost: float = 1.2
    importance_weight: float = 0.2
    recency_weight: float = 0.1
    recency_half_life_s: float = 30 * 86_400.0
    neighbour_share: float = 0.3


def adjust_scores(scores: Mapping[str, float], memories: Mapping[str, Memory], plan: QueryPlan, now: float,
                  weights: ScoringWeights) -> dict[str, float]:
    """Each score times its speaker, time-window, importance and recency factors."""
    return {key: score * _factor(memories[key], plan, now, weights) for key, score in scores.items()}


def final_scores(scores: Mapping[str, float], neighbours: Mapping[str, Sequence[str]],
                 memories: Mapping[str, Memory], plan: QueryPlan, now: float,
                 weights: ScoringWeights) -> dict[str, float]:
    """Retrieval `scores` spread to neighbours, then times each memory's own factors (`adjust_scores`).

    Invariant: a neighbour inherits a share of a hit's retrieval score, never the hit's speaker or time factor; so
    for a question naming one speaker, the other speaker's replies next to that speaker's hits do not outrank the
    speaker's own further turns (22% of the budget went to such replies, 3 of 767 of them evidence, on LoCoMo's
    development split when spreading came after the factors).
    """
    spread = spread_to_neighbours(scores, neighbours, weights.neighbour_share)
    return adjust_scores(spread, memories, plan, now, weights)


def spread_to_neighbours(scores: Mapping[str, float], neighbours: Mapping[str, Sequence[str]],
                         share: float) -> dict[str, float]:
    """Give each neighbour of a scored memory its own score plus `share` of that memory's score (the best such).

    Conversation turns answer the turn before them, so the turn next to a hit is often the one that matters.
    """
    spread = dict(scores)
    for key, score in scores.items():
        for other in neighbours.get(key, ()):
            spread[other] = max(spread.get(other, 0.0), scores.get(other, 0.0) + share * score)
    return spread


def _factor(memory: Memory, plan: QueryPlan, now: float, weights: ScoringWeights) -> float:
    factor = 1.0 + weights.importance_weight * (memory.importance - 0.5)
    age = max(0.0, now - memory.updated_at)
    factor *= 1.0 + weights.recency_weight * math.exp2(-age / weights.recency_half_life_s)
    if len(plan.names) == 1 and str(memory.metadata.get("speaker", "")).lower() in plan.names:
        factor *= weights.speaker_boost
    if plan.window is not None and _within(memory, plan.window):
        factor *= weights.time_boost
    return factor


def _within(memory: Memory, window: tuple[float, float]) -> bool:
    """Whether `memory` was said in `window`, or speaks of a time (`mentioned_time`) that overlaps it."""
    if window[0] <= memory.created_at < window[1]:
        return True
    mentioned = memory.metadata.get("mentioned_time")
    return isinstance(mentioned, list) and len(mentioned) == 2 and mentioned[0] < window[1] and window[0] < mentioned[1]
