"""`TenantMemory`: the public API of textual memory, bound to one tenant.

Invariant: every method reads and writes only keys under its tenant's prefix, so a memory id of another tenant
is indistinguishable from an unknown one (MemoryNotFoundError), in get, update, delete and search alike.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from textual import context
from textual.errors import InvalidMemoryError, MemoryNotFoundError
from textual.filters import Filters
from textual.memory import (Memory, check_content, check_identifier, check_importance, check_metadata,
                            check_source, check_strength, check_time, parse_tier, parse_type)
from textual.messages import ChatMessage, embedding_text, episode_content, episode_metadata
from textual.query import plan_query
from textual.retriever import SearchResult, retrieve

MAX_K = 1000


@dataclass(frozen=True)
class TenantStats:
    """Counts over one tenant's memories and the kind of vector index serving them."""

    count: int
    by_type: Mapping[str, int]
    by_tier: Mapping[str, int]
    vector_index: str


class TenantMemory:
    """Add, search, read, update and delete the memories of one tenant. Get one from `MemoryStore.for_tenant`."""

    def __init__(self, store, tenant: str) -> None:
        self._store = store
        self.tenant = tenant

    def add(self, content: str, *, user: str, type: str = "fact", kb_id: str | None = None,
            metadata: Mapping[str, Any] | None = None, source: Sequence[str] = (), importance: float = 0.5,
            tier: str = "hot", created_at: float | None = None) -> Memory:
        """Store one memory durably and return it with its new id."""
        now = self._store.clock()
        created = now if created_at is None else check_time("created_at", created_at)
        memory = Memory(
            id=uuid.uuid4().hex, tenant=self.tenant, user=check_identifier("user", user), type=parse_type(type),
            content=check_content(content, self._store.max_content_chars),
            kb_id=None if kb_id is None else check_identifier("kb_id", kb_id),
            metadata=check_metadata(metadata or {}), source=check_source(source),
            importance=check_importance(importance), tier=parse_tier(tier),
            created_at=created, updated_at=max(created, now), last_access_at=created)
        text = embedding_text(str(memory.metadata.get("speaker", "")), memory.content, None) \
            if memory.metadata.get("speaker") else memory.content
        self._store.write(self.tenant, [memory], self._store.embedder.embed([text]))
        return memory

    def add_messages(self, messages: Iterable[ChatMessage | Mapping[str, Any]], *, user: str,
                     kb_id: str | None = None) -> list[Memory]:
        """Store every turn as an `episode` memory (one durable write for the batch); returns them in order."""
        user = check_identifier("user", user)
        kb_id = None if kb_id is None else check_identifier("kb_id", kb_id)
        checked = [ChatMessage.of(message, i) for i, message in enumerate(messages)]
        for i, message in enumerate(checked):
            check_content(episode_content(message), self._store.max_content_chars)
        with self._store.lock:
            memories, texts = self._episodes(checked, user, kb_id)
            self._store.write(self.tenant, memories, self._store.embedder.embed(texts))
        return memories

    def search(self, query: str, *, k: int = 10, budget_tokens: int | None = None, user: str | None = None,
               kb_id: str | None = None, types: Iterable[str] | None = None, tiers: Iterable[str] | None = None,
               since: float | None = None, until: float | None = None) -> SearchResult:
        """The best memories for `query`: at most `k`, and with `budget_tokens`, an injected text that fits it."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidMemoryError("query", "must be a non-empty string")
        _check_count("k", k, 1, MAX_K)
        if budget_tokens is not None:
            _check_count("budget_tokens", budget_tokens, 1, 10_000_000)
        filters = Filters.of(user=user, kb_id=kb_id, types=types, tiers=tiers, since=since, until=until)
        vector = self._store.embedder.embed([query])[0]
        with self._store.lock:
            index = self._store.index(self.tenant)
            plan = plan_query(query, index.speakers())
            result = retrieve(index, self._store.analyzer, vector, plan, filters, k, budget_tokens,
                              self._store.clock(), self._store.settings)
            if self._store.track_access and result.hits:
                self._touch([hit.memory for hit in result.hits])
        return result

    def get(self, memory_id: str) -> Memory:
        """The memory with this id; MemoryNotFoundError if this tenant has none."""
        memory = self._store.db.get(self.tenant, memory_id) if isinstance(memory_id, str) else None
        if memory is None:
            raise MemoryNotFoundError(str(memory_id))
        return memory

    def list(self, *, user: str | None = None, kb_id: str | None = None, types: Iterable[str] | None = None,
             tiers: Iterable[str] | None = None, since: float | None = None, until: float | None = None,
             limit: int = 100, offset: int = 0) -> list[Memory]:
        """Memories passing the filters in time order, `limit` of them from `offset`."""
        _check_count("limit", limit, 1, 100_000)
        _check_count("offset", offset, 0, 1 << 62)
        filters = Filters.of(user=user, kb_id=kb_id, types=types, tiers=tiers, since=since, until=until)
        with self._store.lock:
            memories = [m for m in self._store.index(self.tenant).memories.values() if filters.matches(m)]
        return sorted(memories, key=context.time_order)[offset:offset + limit]

    def update(self, memory_id: str, *, content: str | None = None, metadata: Mapping[str, Any] | None = None,
               importance: float | None = None, strength: float | None = None, tier: str | None = None) -> Memory:
        """Change the given fields (a new content is re-embedded); returns the updated memory."""
        with self._store.lock:
            old = self.get(memory_id)
            changes: dict[str, Any] = {"updated_at": max(self._store.clock(), old.created_at)}
            if content is not None:
                changes["content"] = check_content(content, self._store.max_content_chars)
            if metadata is not None:
                changes["metadata"] = check_metadata(metadata)
            if importance is not None:
                changes["importance"] = check_importance(importance)
            if strength is not None:
                changes["strength"] = check_strength(strength)
            if tier is not None:
                changes["tier"] = parse_tier(tier)
            new = dataclasses.replace(old, **changes)
            vectors = self._store.embedder.embed([new.content]) if content is not None else None
            self._store.write(self.tenant, [new], vectors, replaces=True)
        return new

    def delete(self, memory_id: str) -> None:
        """Remove the memory for good; MemoryNotFoundError if this tenant has none with this id."""
        if not isinstance(memory_id, str) or not self._store.remove(self.tenant, memory_id):
            raise MemoryNotFoundError(str(memory_id))

    def stats(self) -> TenantStats:
        with self._store.lock:
            index = self._store.index(self.tenant)
            memories = list(index.memories.values())
            kind = "hnsw" if index.vectors.is_hnsw else "flat"
        return TenantStats(count=len(memories), by_type=dict(Counter(m.type.value for m in memories)),
                           by_tier=dict(Counter(m.tier.value for m in memories)), vector_index=kind)

    def _episodes(self, messages: Sequence[ChatMessage], user: str,
                  kb_id: str | None) -> tuple[list[Memory], list[str]]:
        index = self._store.index(self.tenant)
        now = self._store.clock()
        memories: list[Memory] = []
        texts: list[str] = []
        last: dict[str, tuple[int, tuple[str, str] | None]] = {}
        for message in messages:
            if message.session not in last:
                length = index.session_length(user, message.session)
                previous = index.turn_at(user, message.session, length - 1)
                last[message.session] = (length, None if previous is None else
                                         (str(previous.metadata["speaker"]), previous.content))
            position, previous_turn = last[message.session]
            content = episode_content(message)
            memories.append(Memory(
                id=uuid.uuid4().hex, tenant=self.tenant, user=user, kb_id=kb_id, type=parse_type("episode"),
                content=content, metadata=episode_metadata(message, position),
                source=(message.turn_id,) if message.turn_id else (), created_at=float(message.time),
                updated_at=max(float(message.time), now), last_access_at=float(message.time)))
            texts.append(embedding_text(message.speaker, content, previous_turn))
            last[message.session] = (position + 1, (message.speaker, content))
        return memories, texts

    def _touch(self, memories: Sequence[Memory]) -> None:
        now = self._store.clock()
        touched = [dataclasses.replace(m, last_access_at=max(now, m.created_at), access_count=m.access_count + 1)
                   for m in memories]
        self._store.write(self.tenant, touched, None, replaces=True)


def _check_count(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidMemoryError(name, f"must be an integer in [{low}, {high}], got {value!r}")
