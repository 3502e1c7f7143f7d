"""REST routes that manage memories as records: a memory's history, batch updates and deletes, deleting all of a
user's memories, export and import. Each is one call on the caller's `TenantMemory` (see
`memory_routes.tenant_worker`), so every read and write stays inside the caller's tenant and another tenant's id
answers 404. An import's body is streamed (`BodyLimitMiddleware` passes it through unread): it is spooled to a
temporary file line by line (`sidecar.http.spool`), each line, the number of memories and the bytes bounded (by the
room left in the tenant's memory quotas; while spooling it holds one of the tenant's memory-request slots, so a
tenant spools at most that many at once), then imported in two passes (`textual.transfer`)."""

from __future__ import annotations

import tempfile
from contextlib import nullcontext
from typing import Any, Callable

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from sidecar.http.access import Caller
from sidecar.http.errors import APIError
from sidecar.http.memory_admin_schema import Batch, history_json, import_json, outcome_json
from sidecar.http.memory_routes import MemoryId, tenant_worker
from sidecar.http.spool import Bounds, spool_lines
from sidecar.limits import ID_REGEX
from sidecar.tenants.quota_book import QuotaBook
from textual.export_format import MAX_LINE_BYTES
from textual.store import MemoryStore
from textual.tenant_memory import MAX_HISTORY_PAGE
from textual.transfer import file_source

JSON_LINES = "application/x-ndjson"
STREAMED_BODIES = frozenset({"/v1/import"})  # read by their route as they arrive, not buffered by the body limit


def memory_admin_router(store: MemoryStore, caller: Callable[..., Any], book: QuotaBook | None = None) -> APIRouter:
    """The record-management routes over `store`, each scoped to the tenant `caller` resolves."""
    router = APIRouter(prefix="/v1", tags=["memories"])
    call = tenant_worker(store, book)

    @router.get("/memories/{memory_id}/history")
    async def memory_history(memory_id: MemoryId, who: Caller = Depends(caller),
                             after: int = Query(0, ge=0, le=2**62, description="Only versions with a seq above this."),
                             limit: int = Query(100, ge=1, le=MAX_HISTORY_PAGE - 1)) -> dict:
        versions = await call(who, lambda memory: memory.history(memory_id, after=after, limit=limit + 1))
        return history_json(memory_id, versions, limit)

    @router.post("/memories/batch")
    async def batch(body: Batch, who: Caller = Depends(caller)) -> dict:
        operations = [operation.model_dump(exclude_unset=True) for operation in body.operations]  # a null clears
        outcomes = await call(who, lambda memory: memory.apply_batch(operations))
        return {"results": [outcome_json(outcome) for outcome in outcomes]}

    @router.delete("/memories")
    async def delete_user_memories(
        who: Caller = Depends(caller), user_id: str = Query(pattern=ID_REGEX),
        confirm: bool = Query(False, description="Must be true: nothing is undone."),
    ) -> dict:
        if not confirm:
            raise APIError(400, "confirm: deleting every memory of a user cannot be undone; send confirm=true",
                           "confirmation_required", param="confirm")
        deleted = await call(who, lambda memory: memory.delete_user(user_id))
        return {"user_id": user_id, "deleted": deleted}

    @router.get("/export")
    async def export(who: Caller = Depends(caller), user_id: str | None = Query(None, pattern=ID_REGEX),
                     vectors: bool = Query(True, description="Include each memory's embedding.")) -> StreamingResponse:
        lines = store.for_tenant(who.tenant).export_memories(user_id, vectors)
        first = await call(who, lambda memory: next(lines))  # checks the arguments before the response starts
        return StreamingResponse(_chain(first, lines), media_type=JSON_LINES)

    @router.post("/import")
    async def import_memories(request: Request, who: Caller = Depends(caller)) -> dict:
        stored = await run_in_threadpool(store.usage, who.tenant)
        records, size = (None, None) if book is None else book.import_room(stored)
        with tempfile.TemporaryFile() as spooled:
            with nullcontext() if book is None else book.holding(book.memory_slots, who.tenant):  # spools per tenant
                await spool_lines(request.stream(), spooled, Bounds(MAX_LINE_BYTES, records, size))
            report = await call(who, lambda memory: memory.import_memories(file_source(spooled), max_records=records))
        return import_json(report)

    return router


def _chain(first: bytes, rest):
    yield first
    yield from rest
