"""REST routes of tool memory: register a tool's schema, record one of its calls (a trajectory), find tools.

Tool memory belongs to the caller's tenant (`textual.tool_memory`): another tenant's tools are never listed, found
or counted, and recording a call of a tool only another tenant registered is a 400 naming `tool_name`, exactly as
for a tool nobody registered. Every call embeds text and writes LMDB, so it runs in a worker thread (holding one of
the tenant's memory slots when a quota book is given), never on the event loop.
"""

from __future__ import annotations

from typing import Any, Callable

from fastapi import APIRouter, Body, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from sidecar.http.access import Caller
from sidecar.http.memory_routes import tenant_worker
from sidecar.http.memory_schema import memory_json
from sidecar.tenants.quota_book import QuotaBook
from textual.store import MemoryStore
from textual.tool_memory import MAX_TOOLS_K
from textual.tools import MAX_SUMMARY_CHARS, TOOL_NAME, ToolMatch

Number = StrictFloat | StrictInt


class RecordTrajectory(BaseModel):
    """One call of a registered tool: what it was given, what came back, whether it worked and how long it took."""

    model_config = ConfigDict(extra="forbid")

    tool_name: StrictStr = Field(pattern=TOOL_NAME.pattern)
    arguments: dict[StrictStr, Any] = Field(default_factory=dict, max_length=100)
    result_summary: StrictStr = Field("", max_length=MAX_SUMMARY_CHARS)
    success: StrictBool
    latency_ms: Number = Field(0.0, ge=0, le=86_400_000)
    created_at: Number | None = None


class SearchTools(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: StrictStr = Field(min_length=1, max_length=4000)
    top_k: StrictInt = Field(5, ge=1, le=MAX_TOOLS_K)


def tool_json(match: ToolMatch) -> dict[str, Any]:
    """A found tool as the API returns it: name, schema, score, outcome counts and its newest calls."""
    return {"id": match.memory.id, "name": match.name, "schema": match.schema, "score": match.score,
            "successes": match.successes, "failures": match.failures,
            "recent": [memory_json(trajectory) for trajectory in match.recent]}


def tool_router(store: MemoryStore, caller: Callable[..., Any], book: QuotaBook | None = None) -> APIRouter:
    """`/v1/tools` (register, list), `/v1/tools/trajectories` (record a call), `/v1/tools/search` over `store`, each
    scoped to the tenant `caller` resolves."""
    router = APIRouter(prefix="/v1/tools", tags=["tools"])
    call = tenant_worker(store, book)

    @router.post("")
    async def register_tool(schema: dict[str, Any] = Body(...),
                            who: Caller = Depends(caller)) -> dict:
        """Register (or replace) a tool: an OpenAI tool object or its bare `function` object."""
        return memory_json(await call(who, lambda memory: memory.register_tool(schema)))

    @router.get("")
    async def list_tools(limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=10**9),
                         who: Caller = Depends(caller)) -> dict:
        tools = await call(who, lambda memory: memory.list(types=["tool_schema"], limit=limit + 1, offset=offset))
        return {"data": [memory_json(m) for m in tools[:limit]], "limit": limit, "offset": offset,
                "has_more": len(tools) > limit}

    @router.post("/trajectories")
    async def record_trajectory(body: RecordTrajectory, who: Caller = Depends(caller)) -> dict:
        return memory_json(await call(who, lambda memory: memory.record_trajectory(
            body.tool_name, body.arguments, body.result_summary, body.success, float(body.latency_ms),
            None if body.created_at is None else float(body.created_at))))

    @router.post("/search")
    async def search_tools(body: SearchTools, who: Caller = Depends(caller)) -> dict:
        matches = await call(who, lambda memory: memory.search_tools(body.query, k=body.top_k))
        return {"results": [tool_json(match) for match in matches]}

    return router
