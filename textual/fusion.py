"""Rank fusion of candidate lists from several retrievers (dense, lexical). Pure functions over ids."""

from __future__ import annotations

import heapq
from typing import Hashable, Mapping, Sequence, TypeVar

Key = TypeVar("Key", bound=Hashable)


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Key]], k: float = 10.0,
                           weights: Sequence[float] | None = None,
                           base: Mapping[Key, float] | None = None) -> dict[Key, float]:
    """Sum over lists of weight / (k + rank), rank counted from 1; an id absent from a list gets nothing from it.
    With `base` (the fusion of earlier lists), the sums start from it: fusing lists A then B on that base equals
    fusing A + B at once, bit for bit, as each id's terms are added in the same order.

    Invariant: the result holds exactly the union of ids in `rankings` (and `base`), each with a positive score.
    """
    if k <= 0:
        raise ValueError(f"k: must be positive, got {k}")
    weights = weights if weights is not None else [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError(f"weights: need {len(rankings)} weights, got {len(weights)}")
    scores: dict[Key, float] = dict(base or {})
    for ranking, weight in zip(rankings, weights):
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + weight / (k + rank)
    return scores


def normalized_score_sum(score_maps: Sequence[Mapping[Key, float]],
                         weights: Sequence[float] | None = None) -> dict[Key, float]:
    """Min-max normalise each map to [0, 1] (a constant map becomes all 1.0), then sum the weighted maps."""
    weights = weights if weights is not None else [1.0] * len(score_maps)
    fused: dict[Key, float] = {}
    for scores, weight in zip(score_maps, weights):
        if not scores:
            continue
        low, high = min(scores.values()), max(scores.values())
        span = high - low
        for key, value in scores.items():
            norm = (value - low) / span if span > 0 else 1.0
            fused[key] = fused.get(key, 0.0) + weight * norm
    return fused


def ranked(scores: Mapping[Key, float], limit: int | None = None) -> list[Key]:
    """Ids by descending score, ties broken by id so the order is deterministic; with `limit`, only the first that
    many (without sorting the rest)."""
    def order(key: Key) -> tuple[float, str]:
        return -scores[key], str(key)

    return sorted(scores, key=order) if limit is None else heapq.nsmallest(limit, scores, key=order)
