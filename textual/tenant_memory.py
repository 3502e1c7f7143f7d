"""`TenantMemory`: the public API of textual memory, bound to one tenant.

Invariants: every method reads and writes only keys under its tenant's prefix, so a memory id of another tenant
is indistinguishable from an unknown one (MemoryNotFoundError), in get, update, delete and search alike. Search
never returns an archived memory (superseded ones included); only `restore` brings one back.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from textual import bulk, curator, knowledge_bases, spaces, tool_memory, transfer
from textual.errors import InvalidMemoryError, MemoryNotFoundError, StoreUnavailableError
from textual.feedback import apply_feedback, check_kind
from textual.filter_expr import as_predicate
from textual.filters import Filters
from textual.history import ChangeKind, Version
from textual.images import check_image_url
from textual.lifecycle import heuristic_importance, plan_lifecycle, reinforced_strength
from textual.memory import (MAX_ACCESSES, KnowledgeBase, LifecycleTier, Memory, MemoryType, Space, check_content,
                            check_identifier, check_importance, check_metadata, check_owner, check_source,
                            check_strength, check_time, check_ttl, is_expired, parse_tier, parse_type)
from textual.messages import ChatMessage, embedding_text, episode_content, episode_metadata
from textual.memory_patch import KEEP, SCOPES, Keep, expiry_change, scope_change
from textual.metadata_patch import patched_metadata
from textual.query import plan_query
from textual.retriever import SearchResult, finish, rank
from textual.tenant_index import session_owner
from textual.tools import ToolMatch

MAX_K = 1000
MAX_HISTORY_PAGE = 1000


@dataclass(frozen=True)
class TenantStats:
    """Counts over one tenant's memories and the kind of vector index serving them."""

    count: int
    by_type: Mapping[str, int]
    by_tier: Mapping[str, int]
    vector_index: str


@dataclass(frozen=True)
class UserStats:
    """One user's memories in a tenant: how many, by tier, and when the newest change was."""

    user: str
    count: int
    by_tier: Mapping[str, int]
    updated_at: float


class TenantMemory:
    """Add, search, read, update and delete the memories of one tenant. Get one from `MemoryStore.for_tenant`."""

    def __init__(self, store, tenant: str) -> None:
        self._store = store
        self.tenant = tenant

    def add(self, content: str, *, user: str | None = None, type: str = "fact", kb_id: str | None = None,
            metadata: Mapping[str, Any] | None = None, source: Sequence[str] = (), importance: float | None = None,
            tier: str = "hot", created_at: float | None = None, consolidate: bool = True,
            ttl_s: float | None = None, agent: str | None = None, run: str | None = None,
            space: str | None = None) -> Memory:
        """Store one memory durably and return the memory now holding it.

        `agent`, `run` and `space` scope it (see `Memory`); writing to a `space` needs the user's or the agent's
        "write" grant there (`textual.spaces`). An agent's own memory may name no `user` (`check_owner`).

        Without `importance`, a heuristic sets it (`lifecycle.heuristic_importance`). With `consolidate`, a near-
        duplicate is merged into the stored memory (which is returned, with its id) and a changed fact supersedes
        the old one (`consolidation` has the rule). An `image` memory needs `metadata["image_url"]`. With `ttl_s`,
        the memory expires that many seconds from now (see `textual.memory`).
        """
        now = self._store.clock()
        created = now if created_at is None else check_time("created_at", created_at)
        kind, content = parse_type(type), check_content(content, self._store.max_content_chars)
        metadata = self._checked_metadata(kind, metadata)
        user = None if user is None else check_identifier("user", user)
        check_owner(user, agent)
        memory = Memory(
            id=uuid.uuid4().hex, tenant=self.tenant, user=user, type=kind,
            content=content, kb_id=None if kb_id is None else check_identifier("kb_id", kb_id),
            metadata=metadata, source=check_source(source),
            importance=heuristic_importance(kind, content) if importance is None else check_importance(importance),
            tier=parse_tier(tier), created_at=created, updated_at=max(created, now), last_access_at=created,
            expires_at=None if ttl_s is None else now + check_ttl(ttl_s), **self._scopes(agent, run))
        if space is not None:
            memory = dataclasses.replace(memory, space=spaces.check_access(self, space, spaces.WRITE, memory.user,
                                                                           memory.agent).id)
        text = embedding_text(str(memory.metadata.get("speaker", "")), memory.content, None) \
            if memory.metadata.get("speaker") else memory.content
        self._store.admit(self.tenant, [memory.content])
        vector = self._store.embedder.embed([text])[0]
        with self._store.tenant_lock(self.tenant):
            return curator.store_new(self._store, memory, vector, consolidate)

    def add_image(self, caption: str, image_url: str, *, user: str, metadata: Mapping[str, Any] | None = None,
                  importance: float | None = None, created_at: float | None = None, agent: str | None = None,
                  run: str | None = None, space: str | None = None) -> Memory:
        """Store an image memory: found by its `caption`, pointing at `image_url` (http(s) or a data URL)."""
        extra = check_metadata(metadata or {})
        return self.add(caption, user=user, type="image", metadata={**extra, "image_url": image_url},
                        importance=importance, created_at=created_at, consolidate=False, agent=agent, run=run,
                        space=space)

    def add_messages(self, messages: Iterable[ChatMessage | Mapping[str, Any]], *, user: str | None = None,
                     kb_id: str | None = None, agent: str | None = None, run: str | None = None,
                     space: str | None = None) -> list[Memory]:
        """Store every turn as an `episode` memory (one durable write for the batch); returns them in order.
        A turn's `time` dates the episode (`created_at`); its forgetting curve starts when it is stored, so an
        imported history is as fresh as a conversation held now, not archived for its age. With `space`, the
        episodes go into that shared space (the user or agent needs its write grant, as for `add`). An agent's own
        conversation may name no `user` (`check_owner`); its sessions are then the agent's."""
        user = None if user is None else check_identifier("user", user)
        kb_id = None if kb_id is None else check_identifier("kb_id", kb_id)
        scopes = self._scopes(agent, run)
        check_owner(user, scopes["agent"])
        if space is not None:
            scopes["space"] = self.space_access(space, write=True, user=user, agent=scopes["agent"]).id
        checked = [ChatMessage.of(message, i) for i, message in enumerate(messages)]
        for i, message in enumerate(checked):
            check_content(episode_content(message), self._store.max_content_chars)
        self._store.admit(self.tenant, [episode_content(message) for message in checked])
        with self._store.tenant_lock(self.tenant):
            _, texts = self._episodes(checked, user, kb_id, scopes)
        # outside the lock: a bulk write never stalls this tenant's reads
        vectors = self._store.embedder.embed(texts, owner=self.tenant)
        with self._store.tenant_lock(self.tenant):
            memories, now_texts = self._episodes(checked, user, kb_id, scopes)
            if now_texts != texts:  # a concurrent write to one of these sessions moved the turns' positions
                vectors = self._store.embedder.embed(now_texts, owner=self.tenant)
            self._store.write(self.tenant, memories, vectors, ChangeKind.CREATE)
        return memories

    def search(self, query: str, *, k: int = 10, budget_tokens: int | None = None, user: str | None = None,
               kb_id: str | None = None, types: Iterable[str] | None = None, tiers: Iterable[str] | None = None,
               since: float | None = None, until: float | None = None, agent: str | None = None,
               run: str | None = None, space: str | None = None, where: object = None) -> SearchResult:
        """The best memories for `query`: at most `k`, and with `budget_tokens`, an injected text that fits it.

        Hot and warm memories are searched; cold ones too when `tiers` names them, or by default when the best
        hot/warm cosine similarity is below `SearchSettings.cold_fallback_similarity`. Archived ones never are.
        `user`, `agent`, `run` and `space` narrow the scope (`Filters`; a user or agent also sees the spaces it may
        read), and `where` is a filter expression (`textual.filter_expr`, a JSON tree or a parsed predicate): both
        restrict the candidates before ranking, so `k` still fills when enough memories pass.
        """
        if not isinstance(query, str) or not query.strip():
            raise InvalidMemoryError("query", "must be a non-empty string")
        _check_count("k", k, 1, MAX_K)
        if budget_tokens is not None:
            _check_count("budget_tokens", budget_tokens, 1, 10_000_000)
        filters = self._filters(user=user, kb_id=kb_id, types=types, tiers=tiers, since=since, until=until,
                                agent=agent, run=run, space=space, where=where)
        if LifecycleTier.ARCHIVED in filters.tiers:
            raise InvalidMemoryError("tiers", "archived memories are never searched; restore(id) one first")
        store = self._store
        with store.tenant_lock(self.tenant):
            plan = plan_query(query, store.index(self.tenant).speakers())
        vector = store.embedder.embed([plan.dense_text])[0]  # outside the lock, as a write's embedding
        with store.tenant_lock(self.tenant):
            index, now = store.index(self.tenant), store.clock()
            rankings = [rank(index, store.analyzer, vector, plan, filters, now, store.settings)]
            weak = rankings[0].best_similarity < store.settings.cold_fallback_similarity
            if LifecycleTier.COLD in filters.tiers and index.cold and (filters.tiers_given or weak):
                cold = store.cold_index(self.tenant)
                rankings.append(rank(cold, store.analyzer, vector, plan, filters, now, store.settings))
            result = finish(rankings, k, budget_tokens, store.settings)
            if store.track_access and result.hits:
                self._touch([hit.memory for hit in result.hits])
        return result

    def _touch(self, memories: Sequence[Memory]) -> None:
        """Count an access and reinforce each memory's strength on the forgetting curve. Best effort: while the
        record store cannot be reached, the search still answers (from the cached index) and the access is lost."""
        now = self._store.clock()
        touched = [dataclasses.replace(m, last_access_at=max(now, m.created_at), access_count=m.access_count + 1,
                                       strength=reinforced_strength(m, now, self._policy),
                                       accesses=(*m.accesses, now)[-MAX_ACCESSES:]) for m in memories]
        try:
            self._store.write(self.tenant, touched, None)
        except StoreUnavailableError:
            pass

    def get(self, memory_id: str) -> Memory:
        """The memory with this id; MemoryNotFoundError if this tenant has none (or it expired)."""
        memory = self._store.db.get(self.tenant, memory_id) if isinstance(memory_id, str) else None
        if memory is None or is_expired(memory, self._store.clock()):
            raise MemoryNotFoundError(str(memory_id))
        return memory

    def list(self, *, user: str | None = None, kb_id: str | None = None, types: Iterable[str] | None = None,
             tiers: Iterable[str] | None = None, since: float | None = None, until: float | None = None,
             contains: str | None = None, limit: int = 100, offset: int = 0, agent: str | None = None,
             run: str | None = None, space: str | None = None, where: object = None) -> list[Memory]:
        """Memories passing the filters in time order, `limit` of them from `offset`; `contains` keeps those whose
        content holds that text (case-insensitive); scopes and `where` as in `search`. Reads the tenant's time index
        from `since` and stops after the page: the cost grows with `offset + limit` and the memories the filters skip,
        not with the tenant's size."""
        _check_count("limit", limit, 1, 100_000)
        _check_count("offset", offset, 0, 1 << 62)
        filters = self._filters(user=user, kb_id=kb_id, types=types, tiers=tiers, since=since, until=until,
                                agent=agent, run=run, space=space, where=where)
        needle = contains.casefold() if contains else None
        page: list[Memory] = []
        now = self._store.clock()
        for memory in self._store.db.memories_by_time(self.tenant, filters.since):
            if filters.until is not None and memory.created_at > filters.until:
                break
            if filters.matches(memory) and not is_expired(memory, now) and \
                    (needle is None or needle in memory.content.casefold()):
                if offset:
                    offset -= 1
                    continue
                page.append(memory)
                if len(page) == limit:
                    break
        return page

    def update(self, memory_id: str, *, content: str | None = None, metadata: Mapping[str, Any] | None = None,
               importance: float | None = None, strength: float | None = None, tier: str | None = None,
               ttl_s: float | None = None, expires_at: float | None | Keep = KEEP, user: str | None | Keep = KEEP,
               agent: str | None | Keep = KEEP, run: str | None | Keep = KEEP,
               space: str | None | Keep = KEEP) -> Memory:
        """Change the given fields (a new content is re-embedded) and record a version; returns the updated memory.
        `metadata` is a JSON merge patch (`textual.metadata_patch`: null removes a key; provenance keys stay).
        `ttl_s` / `expires_at` set or (None) clear the expiry, and `user`, `agent`, `run`, `space` move the memory to
        other scopes, checked as on `add` (`textual.memory_patch`; a new space needs a write grant)."""
        if content is not None:
            content = check_content(content, self._store.max_content_chars)
        ttl_s = None if ttl_s is None else check_ttl(ttl_s)
        vectors = self._store.embedder.embed([content]) if content is not None else None
        with self._store.tenant_lock(self.tenant):
            old, now = self.get(memory_id), self._store.clock()
            changes: dict[str, Any] = {"updated_at": max(now, old.created_at), **expiry_change(now, ttl_s, expires_at),
                                       **scope_change(old, {"user": user, "agent": agent, "run": run, "space": space})}
            if content is not None:
                changes["content"] = content
            if metadata is not None:
                changes["metadata"] = self._checked_metadata(old.type, patched_metadata(old.metadata, metadata))
            if importance is not None:
                changes["importance"] = check_importance(importance)
            if strength is not None:
                changes["strength"] = check_strength(strength)
            if tier is not None:
                changes["tier"] = parse_tier(tier)
            new = dataclasses.replace(old, **changes)
            if new.space is not None and set(changes) & set(SCOPES):
                spaces.check_access(self, new.space, spaces.WRITE, new.user, new.agent)
            self._store.write(self.tenant, [new], vectors, ChangeKind.UPDATE)
        return new

    def history(self, memory_id: str, *, after: int = 0, limit: int = 100) -> list[Version]:
        """The memory's versions with a seq above `after`, oldest first, at most `limit` (see `textual.history`);
        MemoryNotFoundError if this tenant has no such memory."""
        _check_count("after", after, 0, 1 << 62)
        _check_count("limit", limit, 1, MAX_HISTORY_PAGE)
        self.get(memory_id)
        return self._store.db.history(self.tenant, memory_id, after, limit)

    def delete(self, memory_id: str) -> None:
        """Remove the memory for good; MemoryNotFoundError if this tenant has none with this id."""
        if not isinstance(memory_id, str) or not self._store.remove(self.tenant, [memory_id]):
            raise MemoryNotFoundError(str(memory_id))

    def restore(self, memory_id: str) -> Memory:
        """Bring a memory (archived, superseded or cold) back to the hot tier, reinforced as if just accessed."""
        with self._store.tenant_lock(self.tenant):
            old, now = self.get(memory_id), self._store.clock()
            new = dataclasses.replace(old, tier=LifecycleTier.HOT, strength=reinforced_strength(old, now, self._policy),
                                      last_access_at=max(now, old.created_at), updated_at=max(now, old.created_at))
            self._store.write(self.tenant, [new], None, ChangeKind.RESTORE)
        return new

    def feedback(self, memory_id: str, kind: str, text: str | None = None) -> Memory:
        """Apply "positive", "negative" or "correction" feedback (see `textual.feedback`); returns the memory."""
        check_kind(kind, text)
        if kind == "correction":
            check_content(text, self._store.max_content_chars)
        vectors = self._store.embedder.embed([text]) if kind == "correction" else None
        with self._store.tenant_lock(self.tenant):
            old, now = self.get(memory_id), self._store.clock()
            new = apply_feedback(old, kind, text, now, reinforced_strength(old, now, self._policy))
            self._store.write(self.tenant, [new], vectors, ChangeKind.FEEDBACK)
        return new

    def run_lifecycle(self, now: float | None = None) -> curator.LifecycleReport:
        """Plan and apply this tenant's tier moves at `now` (default: the store's clock)."""
        now = self._store.clock() if now is None else check_time("now", now)
        with self._store.tenant_lock(self.tenant):
            moves = plan_lifecycle(self._store.db.memories(self.tenant), now, self._policy)
            return curator.apply_moves(self._store, self.tenant, moves, now)

    def delete_user(self, user: str) -> int:
        """Delete every memory of `user` in this tenant, with their histories; returns how many (`textual.bulk`)."""
        return bulk.delete_user(self, user)

    def apply_batch(self, operations: Sequence[Mapping[str, Any]]) -> list[bulk.Outcome]:
        """Apply a batch of updates and deletes, each on its own; one outcome per operation (`textual.bulk`)."""
        return bulk.apply_batch(self, operations)

    def export_memories(self, user: str | None = None, vectors: bool = True) -> Iterator[bytes]:
        """This tenant's memories (or one user's) as export lines (`textual.transfer`, `textual.export_format`)."""
        return transfer.export_lines(self, user, vectors)

    def import_memories(self, lines: transfer.LineSource, progress: Callable[[int], None] | None = None,
                        max_records: int | None = None) -> transfer.ImportReport:
        """Import export lines (or a function that reads them afresh) into this tenant, at most `max_records`
        memories (`textual.transfer` has the rules: ids, quota, re-embedding, two passes)."""
        return transfer.import_lines(self, lines, progress, max_records)

    def create_kb(self, kb_id: str, name: str | None = None, description: str = "",
                  metadata: Mapping[str, Any] | None = None) -> KnowledgeBase:
        """A new empty knowledge base (see `textual.knowledge_bases`)."""
        return knowledge_bases.create_kb(self, kb_id, name, description, metadata)

    def list_kbs(self) -> list[KnowledgeBase]:
        """The tenant's knowledge bases, in id order."""
        return self._store.db.kbs(self.tenant)

    def delete_kb(self, kb_id: str) -> int:
        """Delete the knowledge base and its documents; returns how many memories were removed."""
        return knowledge_bases.delete_kb(self, kb_id)

    def add_document(self, kb_id: str, text: str, **options: Any) -> list[Memory]:
        """Chunk a document into the knowledge base; options: title, metadata, chunk_tokens, overlap_tokens."""
        return knowledge_bases.add_document(self, kb_id, text, **options)

    def register_tool(self, schema: Mapping[str, Any]) -> Memory:
        """Store or replace an OpenAI tool schema (see `textual.tool_memory`)."""
        return tool_memory.register_tool(self, schema)

    def record_trajectory(self, tool_name: str, arguments: Mapping[str, Any], result_summary: str, success: bool,
                          latency_ms: float, created_at: float | None = None) -> Memory:
        """Store one call of a registered tool and count its outcome."""
        return tool_memory.record_trajectory(self, tool_name, arguments, result_summary, success, latency_ms,
                                             created_at)

    def search_tools(self, query: str, k: int = 5) -> list[ToolMatch]:
        """Tools relevant to `query`, with their past successes, failures and newest trajectories."""
        return tool_memory.search_tools(self, query, k)

    def stats(self) -> TenantStats:
        memories = self._all()
        with self._store.tenant_lock(self.tenant):
            kind = "hnsw" if self._store.index(self.tenant).vectors.is_hnsw else "flat"
        return TenantStats(count=len(memories), by_type=dict(Counter(m.type.value for m in memories)),
                           by_tier=dict(Counter(m.tier.value for m in memories)), vector_index=kind)

    def create_space(self, space_id: str, name: str | None = None, members: object = ()) -> Space:
        """A new shared memory space with its members (see `textual.spaces`)."""
        return spaces.create_space(self, space_id, name, list(members) if isinstance(members, tuple) else members)

    def space_access(self, space_id: str, *, write: bool, user: str | None, agent: str | None) -> Space:
        """The space, if the user or the agent may read it (or, with `write`, write to it); SpaceNotFoundError or
        SpaceAccessDenied otherwise (`textual.spaces.check_access`)."""
        return spaces.check_access(self, space_id, spaces.WRITE if write else spaces.READ, user, agent)

    def get_space(self, space_id: str) -> Space:
        """The space with this id; SpaceNotFoundError if the tenant has none."""
        return spaces.load_space(self, space_id)

    def list_spaces(self) -> list[Space]:
        """The tenant's shared memory spaces, in id order."""
        return self._store.db.spaces(self.tenant)

    def set_space_members(self, space_id: str, members: object) -> Space:
        """Replace the space's members and grants."""
        return spaces.set_members(self, space_id, members)

    def delete_space(self, space_id: str) -> int:
        """Delete the space and its memories; returns how many memories were removed."""
        return spaces.delete_space(self, space_id)

    def users(self) -> list[UserStats]:
        """Each user with memories in this tenant: counts in all and by tier, and the latest change (the newest
        `updated_at` written; a delete does not lower it), by user id. Reads one stored row per user."""
        return [UserStats(user, count, by_tier, updated_at)
                for user, count, by_tier, updated_at in self._store.db.users(self.tenant)]

    def _episodes(self, messages: Sequence[ChatMessage], user: str | None, kb_id: str | None,
                  scopes: Mapping[str, str | None]) -> tuple[list[Memory], list[str]]:
        index = self._store.index(self.tenant)
        owner = session_owner(user, scopes["agent"])
        now = self._store.clock()
        memories: list[Memory] = []
        texts: list[str] = []
        last: dict[str, tuple[int, tuple[str, str] | None]] = {}
        for message in messages:
            if message.session not in last:
                length = index.session_length(owner, message.session)
                previous = index.turn_at(owner, message.session, length - 1)
                last[message.session] = (length, None if previous is None else
                                         (str(previous.metadata["speaker"]), previous.content))
            position, previous_turn = last[message.session]
            content = episode_content(message)
            memories.append(Memory(
                id=uuid.uuid4().hex, tenant=self.tenant, user=user, kb_id=kb_id, type=parse_type("episode"),
                content=content, metadata=episode_metadata(message, position),
                source=(message.turn_id,) if message.turn_id else (), created_at=float(message.time),
                updated_at=max(float(message.time), now), last_access_at=max(float(message.time), now), **scopes))
            texts.append(embedding_text(message.speaker, content, previous_turn))
            last[message.session] = (position + 1, (message.speaker, content))
        return memories, texts

    def _filters(self, *, user: str | None, agent: str | None, space: str | None, where: object,
                 **fixed: Any) -> Filters:
        """Checked filters with the scope resolved: the spaces the user or agent may read, or the named space if
        they may read it."""
        filters = Filters.of(user=user, agent=agent, space=space,
                             where=None if where is None else as_predicate(where), **fixed)
        if filters.space is not None:
            spaces.check_access(self, filters.space, spaces.READ, filters.user, filters.agent)
            return dataclasses.replace(filters, shared=frozenset({filters.space}))
        return dataclasses.replace(filters, shared=spaces.shared_with(self, filters.user, filters.agent))

    @staticmethod
    def _scopes(agent: str | None, run: str | None) -> dict[str, str | None]:
        return {"agent": None if agent is None else check_identifier("agent_id", agent),
                "run": None if run is None else check_identifier("run_id", run)}

    @property
    def _policy(self):
        return self._store.lifecycle

    def _all(self) -> list[Memory]:
        """Every memory of the tenant, whatever its tier, from LMDB."""
        return self._store.db.memories(self.tenant)

    def _checked_metadata(self, kind: MemoryType, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
        metadata = check_metadata(metadata or {})
        if kind is MemoryType.IMAGE or "image_url" in metadata:
            metadata["image_url"] = check_image_url(metadata.get("image_url"), self._store.max_image_bytes)
        return metadata


def _check_count(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidMemoryError(name, f"must be an integer in [{low}, {high}], got {value!r}")
