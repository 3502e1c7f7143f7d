"""One tenant's in-memory derived state: its memories, FAISS and BM25 indexes, and conversation order.

Invariants: `memories` mirrors LMDB for this tenant's resident (hot and warm) memories and `cold` maps the ids of
its cold ones to their `peer_key` (their content and vectors stay on disk); archived memories appear in neither;
every id in `vectors` is in `memories` unless `vectors_stale` is set (a removal happened and the owner must rebuild from
LMDB); the lexical index follows every add and removal (see `LayeredLexicalIndex` for how it avoids full rebuilds).
"""

from __future__ import annotations

from collections import Counter
from typing import AbstractSet, Iterable, Sequence

import numpy as np

from textual.filters import Filters
from textual.lexical_index import Analyzer, LayeredLexicalIndex
from textual.memory import Memory, MemoryType, PeerKey, peer_key
from textual.vector_index import VectorIndex


class TenantIndex:
    """Search structures over one tenant's memories; mutated only by its owning store."""

    def __init__(self, vectors: VectorIndex, analyzer: Analyzer) -> None:
        self.memories: dict[str, Memory] = {}
        self.vectors = vectors
        self.vectors_stale = False
        self.seq = 0  # the record store's change seq this index reflects (`MemoryStore` keeps it)
        self.cold: dict[str, PeerKey] = {}
        self._analyzer = analyzer
        self._lexical = LayeredLexicalIndex()
        self._sessions: dict[tuple[str, str], dict[int, str]] = {}
        self._by_user: dict[str, set[str]] = {}
        self._by_space: dict[str, set[str]] = {}
        self._speakers: Counter[str] = Counter()
        self._expiring: dict[str, float] = {}  # id -> expires_at of the memories that have one

    def add(self, memories: Sequence[Memory], vectors: np.ndarray | None) -> None:
        """Record memories (new or updated); `vectors` rows are appended to the vector index when given."""
        for memory in memories:
            old = self.memories.get(memory.id)
            if old is None or old.content != memory.content:
                self._lexical.upsert(memory.id, self._analyzer.terms(memory.content))
            self._forget_order(memory.id)
            self._forget_owner(memory.id)
            self.memories[memory.id] = memory
            self._remember_order(memory)
            self._by_user.setdefault(memory.user, set()).add(memory.id)
            if memory.expires_at is not None:
                self._expiring[memory.id] = memory.expires_at
            if memory.space is not None:
                self._by_space.setdefault(memory.space, set()).add(memory.id)
            if memory.metadata.get("speaker"):
                self._speakers[str(memory.metadata["speaker"])] += 1
        if vectors is not None:
            self.vectors.add([memory.id for memory in memories], vectors)

    def remove(self, memory_id: str) -> None:
        self._forget_order(memory_id)
        self._forget_owner(memory_id)
        self.memories.pop(memory_id, None)
        self.vectors_stale = True
        self._lexical.remove(memory_id)

    def expired(self, now: float) -> set[str]:
        """Ids of the memories expired at `now` (reads only the memories that have an expiry)."""
        return {key for key, expires_at in self._expiring.items() if expires_at <= now}

    def lexical(self) -> LayeredLexicalIndex:
        return self._lexical

    def speakers(self) -> set[str]:
        return set(self._speakers)

    def passing(self, filters: Filters) -> AbstractSet[str]:
        """Ids of the memories that pass `filters`; only the user's memories, and those of the spaces it shares, are
        looked at when one is named. With no filter at all, a live view of every id (valid until the index changes),
        not a copy: copying a million ids would cost a search ~50 ms."""
        if filters.user is None and filters.is_user_only():
            return self.memories.keys()
        pool = self.memories.keys() if filters.user is None else self._by_user.get(filters.user, set()).union(
            *(self._by_space.get(space, ()) for space in filters.shared))
        if filters.is_user_only():
            return set(pool)
        return {key for key in pool if filters.matches(self.memories[key])}

    def session_length(self, owner: str, session: str) -> int:
        """Turns stored so far in `owner`'s (`session_owner`) `session`."""
        turns = self._sessions.get((owner, session), {})
        return max(turns) + 1 if turns else 0

    def turn_at(self, owner: str, session: str, position: int) -> Memory | None:
        memory_id = self._sessions.get((owner, session), {}).get(position)
        return None if memory_id is None else self.memories.get(memory_id)

    def neighbours(self, keys: Iterable[str]) -> dict[str, tuple[str, ...]]:
        """For each episode among `keys`, the ids of the turns just before and after it in its session."""
        result = {}
        for key in keys:
            memory = self.memories[key]
            session = _session_key(memory)
            if session is None:
                continue
            turns, position = self._sessions[session], memory.metadata["position"]
            result[key] = tuple(turns[p] for p in (position - 1, position + 1) if p in turns)
        return result

    def positions(self, ids: Sequence[str], allowed: set[str]) -> list[int]:
        """Rows of `ids` (an index's id list) whose memory id is in `allowed`."""
        return [row for row, memory_id in enumerate(ids) if memory_id in allowed]

    def _forget_owner(self, memory_id: str) -> None:
        old = self.memories.get(memory_id)
        if old is None:
            return
        self._by_user.get(old.user, set()).discard(memory_id)
        self._expiring.pop(memory_id, None)
        if old.space is not None:
            self._by_space.get(old.space, set()).discard(memory_id)
        if old.metadata.get("speaker"):
            speaker = str(old.metadata["speaker"])
            self._speakers[speaker] -= 1
            if self._speakers[speaker] <= 0:
                del self._speakers[speaker]

    def _remember_order(self, memory: Memory) -> None:
        key = _session_key(memory)
        if key is not None:
            self._sessions.setdefault(key, {})[memory.metadata["position"]] = memory.id

    def _forget_order(self, memory_id: str) -> None:
        old = self.memories.get(memory_id)
        key = None if old is None else _session_key(old)
        if key is not None and self._sessions[key].get(old.metadata["position"]) == memory_id:
            del self._sessions[key][old.metadata["position"]]


def session_owner(user: str | None, agent: str | None) -> str:
    """Whose conversation an episode is in: its user's, or for an agent's own episodes (no user) the agent's. The
    prefix cannot clash with a user id (identifiers have no ':')."""
    return user if user is not None else f"agent:{agent}"


def _session_key(memory: Memory) -> tuple[str, str] | None:
    if memory.type is not MemoryType.EPISODE or not isinstance(memory.metadata.get("position"), int):
        return None
    return session_owner(memory.user, memory.agent), str(memory.metadata.get("session", ""))


def build_tenant_index(memories: Iterable[Memory], vector_index: VectorIndex, analyzer: Analyzer,
                       cold: Iterable[Memory] = ()) -> TenantIndex:
    """A tenant index over `memories`; `vector_index` must already hold their vectors (fresh or loaded)."""
    index = TenantIndex(vector_index, analyzer)
    index.add(list(memories), None)
    index.cold = {memory.id: peer_key(memory) for memory in cold}
    return index
