"""MCP tools over shared memory spaces (`textual.spaces`), for agents: list the spaces, write to one, search one.

They run through the memory tools' `call` (`sidecar.http.mcp.MemoryTools`), so the same rules hold: each acts on
the calling tenant's memory only, in a worker thread, and a refusal is an error result naming the field. The grants
are the REST routes' (they are `TenantMemory.add` / `search` with a space): writing needs the user's or the agent's
"write" grant, searching needs "read" when a user or agent is named.
"""

from __future__ import annotations

from typing import Annotated, Any, Awaitable, Callable, TypeVar

from pydantic import Field

from sidecar.http.memory_schema import memory_json, search_json
from sidecar.http.space_routes import space_json
from sidecar.limits import ID_REGEX, MAX_TOKEN_BUDGET, MAX_TOP_K, MemoryTypeName
from textual.memory import MAX_TTL_S
from textual.tenant_memory import TenantMemory

T = TypeVar("T")
Call = Callable[[Callable[[TenantMemory], T]], Awaitable[T]]
SpaceId = Annotated[str, Field(pattern=ID_REGEX, description="The shared memory space.")]
UserId = Annotated[str | None, Field(pattern=ID_REGEX, description="The user acting (a member of the space).")]
AgentId = Annotated[str | None, Field(pattern=ID_REGEX, description="The agent acting (a member of the space).")]


class SpaceTools:
    """The `memos_*` space functions, each one MCP tool (name, signature and docstring as for `MemoryTools`),
    running their work through `call`."""

    def __init__(self, call: Call) -> None:
        self._call = call

    def functions(self) -> list[Callable[..., Any]]:
        return [self.memos_list_spaces, self.memos_add_space_memory, self.memos_search_space]

    async def memos_list_spaces(self) -> dict[str, Any]:
        """List the shared memory spaces, in id order, with their members and whether each may write."""
        return {"data": [space_json(space) for space in await self._call(lambda memory: memory.list_spaces())]}

    async def memos_add_space_memory(
        self, space_id: SpaceId, content: Annotated[str, Field(min_length=1, description="The memory, in plain text.")],
        user_id: UserId = None, agent_id: AgentId = None,
        type: Annotated[MemoryTypeName, Field(description="What kind of memory this is.")] = "fact",
        metadata: Annotated[dict[str, Any] | None, Field(description="Free-form JSON object.")] = None,
        run_id: Annotated[str | None, Field(pattern=ID_REGEX, description="The run it belongs to.")] = None,
        ttl_s: Annotated[float | None, Field(ge=1, le=MAX_TTL_S, description="Forget it after this many seconds.")]
        = None,
    ) -> dict[str, Any]:
        """Write a memory into a shared space, for every member to recall. The user or agent named must hold the
        space's write grant (at least one of them is needed). Returns the stored memory."""
        return memory_json(await self._call(lambda memory: memory.add(
            content, user=user_id, agent=agent_id, run=run_id, type=type, metadata=metadata, ttl_s=ttl_s,
            space=space_id)))

    async def memos_search_space(
        self, space_id: SpaceId,
        query: Annotated[str, Field(min_length=1, max_length=4000, description="What to recall.")],
        user_id: UserId = None, agent_id: AgentId = None,
        top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K, description="At most this many results.")] = 10,
        token_budget: Annotated[int | None, Field(ge=1, le=MAX_TOKEN_BUDGET,
                                                  description="Fit `context` into this many tokens.")] = None,
        filter: Annotated[dict[str, Any] | None, Field(description="A filter, as for memos_search_memory.")] = None,
    ) -> dict[str, Any]:
        """Recall the memories of one shared space most relevant to a query, best first. The user or agent named
        must be able to read the space. Returns `results` and `context`, as memos_search_memory does."""
        return search_json(await self._call(lambda memory: memory.search(
            query, k=top_k, budget_tokens=token_budget, user=user_id, agent=agent_id, space=space_id, where=filter)))
