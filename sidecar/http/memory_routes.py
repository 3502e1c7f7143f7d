"""REST routes of textual memory and knowledge bases. Each route is one call on the caller's `TenantMemory`.

Memory calls embed text and write LMDB synchronously, so they run in the thread pool, never on the event loop.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Awaitable, Callable, TypeVar

from fastapi import APIRouter, Depends, Path, Query
from fastapi.concurrency import run_in_threadpool

from sidecar.chat.extraction import MemoryExtractor
from sidecar.http.access import Caller
from sidecar.http.errors import APIError
from sidecar.http.memory_schema import (ID_REGEX, MAX_FILTER_QUERY_CHARS, AddDocument, AddMemory, AddMessages,
                                        CreateKnowledgeBase, Feedback, MemoryTypeName, SearchMemories, TierName, Turn,
                                        UpdateMemory, extraction_json, filter_query, kb_json, memory_json, search_json,
                                        strength_json)
from sidecar.tenants.quota_book import QuotaBook
from textual.messages import ChatMessage
from textual.store import MemoryStore
from textual.tenant_memory import TenantMemory

MemoryId = Annotated[str, Path(pattern=ID_REGEX, description="A memory's id.")]
KbId = Annotated[str, Path(pattern=ID_REGEX, description="A knowledge base's id.")]
T = TypeVar("T")


def turn_message(turn: Turn, user_id: str | None, now: float) -> ChatMessage:
    """A REST conversation turn as a textual chat message: the user speaks as `user_id` (with none, as "user")
    unless a speaker is given."""
    speaker = turn.speaker or (user_id or "user" if turn.role == "user" else turn.role)
    return ChatMessage(speaker=speaker, text=turn.content, time=now if turn.time is None else float(turn.time),
                       session=turn.session, turn_id=turn.turn_id)


def tenant_worker(store: MemoryStore, book: QuotaBook | None) -> Callable[[Caller, Callable[[TenantMemory], T]],
                                                                         Awaitable[T]]:
    """`call(who, work)`: `work` on the caller's tenant memory, in a worker thread (holding one of the tenant's memory
    slots when a quota book is given)."""
    async def call(who: Caller, work: Callable[[TenantMemory], T]) -> T:
        memory = store.for_tenant(who.tenant)
        if book is None:
            return await run_in_threadpool(work, memory)
        with book.holding(book.memory_slots, who.tenant):
            return await run_in_threadpool(work, memory)

    return call


def memory_router(store: MemoryStore, caller: Callable[..., Any],
                  extractor: MemoryExtractor | None = None, book: QuotaBook | None = None) -> APIRouter:
    """The `/v1/memories` and `/v1/kbs` routes over `store`, each scoped to the tenant `caller` resolves; with an
    `extractor`, added conversations are also mined for facts, preferences and events; with a `book`, a tenant has
    at most its quota of memory requests in flight (so it never holds every worker thread)."""
    router = APIRouter(prefix="/v1")
    call = tenant_worker(store, book)

    @router.post("/memories", tags=["memories"])
    async def add_memory(body: AddMemory, who: Caller = Depends(caller)) -> dict:
        memory = await call(who, lambda memory: memory.add(body.content, user=body.user_id, type=body.type,
                                                           kb_id=body.kb_id, metadata=body.metadata, source=body.source,
                                                           importance=body.importance, ttl_s=body.ttl_s,
                                                           agent=body.agent_id, run=body.run_id, space=body.space_id))
        return memory_json(memory)

    @router.post("/memories/search", tags=["memories"])
    async def search_memories(body: SearchMemories, who: Caller = Depends(caller)) -> dict:
        result = await call(who, lambda memory: memory.search(
            body.query, k=body.top_k, budget_tokens=body.token_budget, user=body.user_id, kb_id=body.kb_ids,
            types=body.types, tiers=body.tiers, since=body.since, until=body.until, agent=body.agent_id,
            run=body.run_id, space=body.space_id, where=body.filter))
        return search_json(result)

    @router.post("/memories/messages", tags=["memories"])
    async def add_messages(body: AddMessages, who: Caller = Depends(caller)) -> dict:
        if body.extract and extractor is None:
            raise APIError(400, "extract: memory extraction is off on this sidecar (see --memory-extraction)",
                           "extraction_off", param="extract")
        now = time.time()
        messages = [turn_message(turn, body.user_id, now) for turn in body.messages]
        memories = await call(who, lambda memory: memory.add_messages(messages, user=body.user_id, kb_id=body.kb_id,
                                                                      agent=body.agent_id, run=body.run_id))
        response = {"data": [memory_json(memory) for memory in memories]}
        if extractor is not None and body.extract:
            response["extraction"] = extraction_json(await extractor.extract(who.tenant, memories))
        elif extractor is not None and body.extract is None:
            extractor.schedule(who.tenant, memories)
        return response

    @router.get("/memories", tags=["memories"])
    async def list_memories(
        who: Caller = Depends(caller), user_id: str | None = Query(None, pattern=ID_REGEX),
        type: list[MemoryTypeName] | None = Query(None), tier: list[TierName] | None = Query(None),
        kb_id: str | None = Query(None, pattern=ID_REGEX), since: float | None = None, until: float | None = None,
        contains: str | None = Query(None, min_length=1, max_length=500),
        limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=10**9),
        agent_id: str | None = Query(None, pattern=ID_REGEX), run_id: str | None = Query(None, pattern=ID_REGEX),
        space_id: str | None = Query(None, pattern=ID_REGEX),
        filter: str | None = Query(None, max_length=MAX_FILTER_QUERY_CHARS, description="A filter, as JSON."),
    ) -> dict:
        where = filter_query(filter)
        memories = await call(who, lambda memory: memory.list(user=user_id, kb_id=kb_id, types=type, tiers=tier,
                                                              since=since, until=until, contains=contains, limit=limit +
                                                              1, offset=offset, agent=agent_id, run=run_id,
                                                              space=space_id, where=where))
        return {"data": [memory_json(m) for m in memories[:limit]], "limit": limit, "offset": offset,
                "has_more": len(memories) > limit}

    @router.get("/users", tags=["memories"])
    async def list_users(who: Caller = Depends(caller)) -> dict:
        return {"data": [{"user_id": u.user, "count": u.count, "by_tier": dict(u.by_tier), "updated_at": u.updated_at}
                         for u in await call(who, lambda memory: memory.users())]}

    @router.get("/memories/{memory_id}/strength", tags=["memories"])
    async def memory_strength(memory_id: MemoryId, points: int = Query(48, ge=2, le=500),
                              who: Caller = Depends(caller)) -> dict:
        memory = await call(who, lambda memory: memory.get(memory_id))
        return strength_json(memory, store.lifecycle, store.clock(), points)

    @router.get("/memories/{memory_id}", tags=["memories"])
    async def get_memory(memory_id: MemoryId, who: Caller = Depends(caller)) -> dict:
        return memory_json(await call(who, lambda memory: memory.get(memory_id)))

    @router.patch("/memories/{memory_id}", tags=["memories"])
    async def update_memory(memory_id: MemoryId, body: UpdateMemory, who: Caller = Depends(caller)) -> dict:
        changes = body.changes()
        return memory_json(await call(who, lambda memory: memory.update(memory_id, **changes)))

    @router.delete("/memories/{memory_id}", tags=["memories"])
    async def delete_memory(memory_id: MemoryId, who: Caller = Depends(caller)) -> dict:
        await call(who, lambda memory: memory.delete(memory_id))
        return {"id": memory_id, "deleted": True}

    @router.post("/memories/{memory_id}/feedback", tags=["memories"])
    async def feedback(memory_id: MemoryId, body: Feedback, who: Caller = Depends(caller)) -> dict:
        return memory_json(await call(who, lambda memory: memory.feedback(memory_id, body.kind, body.text)))

    @router.post("/memories/{memory_id}/restore", tags=["memories"])
    async def restore(memory_id: MemoryId, who: Caller = Depends(caller)) -> dict:
        return memory_json(await call(who, lambda memory: memory.restore(memory_id)))

    @router.post("/kbs", tags=["knowledge bases"])
    async def create_kb(body: CreateKnowledgeBase, who: Caller = Depends(caller)) -> dict:
        return kb_json(await call(who, lambda memory: memory.create_kb(body.id, body.name, body.description,
                                                                       body.metadata)))

    @router.get("/kbs", tags=["knowledge bases"])
    async def list_kbs(who: Caller = Depends(caller)) -> dict:
        return {"data": [kb_json(kb) for kb in await call(who, lambda memory: memory.list_kbs())]}

    @router.delete("/kbs/{kb_id}", tags=["knowledge bases"])
    async def delete_kb(kb_id: KbId, who: Caller = Depends(caller)) -> dict:
        removed = await call(who, lambda memory: memory.delete_kb(kb_id))
        return {"id": kb_id, "deleted": True, "memories_removed": removed}

    @router.post("/kbs/{kb_id}/documents", tags=["knowledge bases"])
    async def add_document(kb_id: KbId, body: AddDocument, who: Caller = Depends(caller)) -> dict:
        options = body.model_dump(exclude_none=True, exclude={"text"})
        chunks = await call(who, lambda memory: memory.add_document(kb_id, body.text, **options))
        return {"kb_id": kb_id, "ids": [chunk.id for chunk in chunks], "chunks": len(chunks)}

    return router
