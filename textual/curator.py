"""Carrying out the pure policies on a store: consolidating a new memory (merge / supersede / add) and applying a
lifecycle plan. Callers hold the store's lock; every change goes through `MemoryStore.write` / `remove`, so LMDB
and the in-memory index stay mirrors of each other.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np

from textual.consolidation import Action, decide, merged, superseding
from textual.history import LIFECYCLE, ChangeKind
from textual.lifecycle import Move, reinforced_strength
from textual.memory import RESIDENT_TIERS, LifecycleTier, Memory, is_expired, peer_key

SIMILAR_NEIGHBOURS = 8


@dataclass(frozen=True)
class LifecycleReport:
    """What one lifecycle run did: the moves applied, and how many of each kind."""

    moves: tuple[Move, ...]
    counts: Mapping[str, int]


def store_new(store, memory: Memory, vector: np.ndarray, consolidate: bool) -> Memory:
    """Store `memory`, or merge it into a near-duplicate, or store it superseding an older value; returns the
    memory that now holds its content (the existing one after a merge)."""
    policy = store.consolidation
    if not consolidate or memory.tier not in RESIDENT_TIERS or \
            memory.type not in policy.merge_types | policy.supersede_types:
        store.write(memory.tenant, [memory], vector[None], ChangeKind.CREATE)
        return memory
    now = store.clock()
    similar = [(peer, score) for peer, score in _similar(store, memory, vector) if not is_expired(peer, now)]
    decision = decide(memory, similar, policy)
    if decision.action is Action.MERGE:
        target = decision.target
        kept = merged(target, memory, now, reinforced_strength(target, now, store.lifecycle))
        store.write(memory.tenant, [kept], None if kept.content == target.content else vector[None], ChangeKind.MERGE)
        return kept
    if decision.action is Action.SUPERSEDE:
        old, new = superseding(decision.target, memory, now)
        store.write(memory.tenant, [old, new], [None, vector], ChangeKind.SUPERSEDE)
        return new
    store.write(memory.tenant, [memory], vector[None], ChangeKind.CREATE)
    return memory


def _similar(store, memory: Memory, vector: np.ndarray) -> list[tuple[Memory, float]]:
    """The memories of the same user, type and kb nearest to `vector`, with their cosine similarity: resident ones
    from the index, cold ones read from LMDB (a new value must supersede an old one however long it went unused; the
    cost grows with the user's cold memories of that type; only facts, preferences and events are consolidated)."""
    index = store.index(memory.tenant)
    key = peer_key(memory)
    peers = {memory_id for memory_id, m in index.memories.items() if peer_key(m) == key}
    found = index.vectors.search(vector, SIMILAR_NEIGHBOURS, index.positions(index.vectors.ids, peers)) if peers else []
    similar = [(index.memories[memory_id], score) for memory_id, score in found]
    cold = [memory_id for memory_id, cold_key in index.cold.items() if cold_key == key]
    stored = store.db.get_many(memory.tenant, cold) if cold else []
    if stored:
        scores = np.stack([row for _, row in stored]) @ vector
        nearest = np.argsort(-scores)[:SIMILAR_NEIGHBOURS]
        similar += [(stored[i][0], float(scores[i])) for i in nearest]
    return similar


def apply_moves(store, tenant: str, moves: Sequence[Move], now: float) -> LifecycleReport:
    """Carry out planned moves in one write and one delete (retention and expiry alike); an archived memory's
    `updated_at` becomes `now`."""
    memories = {m.id: m for m in store.db.memories(tenant)}
    valid = [move for move in moves if move.memory_id in memories]
    changed = [_moved(memories[move.memory_id], move, now) for move in valid if not move.kind.is_removal]
    if changed:
        store.write(tenant, changed, None, ChangeKind.TIER, LIFECYCLE)
    deleted = [move.memory_id for move in valid if move.kind.is_removal]
    if deleted:
        store.remove(tenant, deleted)
    return LifecycleReport(tuple(valid), dict(Counter(move.kind.value for move in valid)))


def _moved(memory: Memory, move: Move, now: float) -> Memory:
    updated = max(now, memory.created_at) if move.tier is LifecycleTier.ARCHIVED else memory.updated_at
    return replace(memory, tier=move.tier, updated_at=updated)
