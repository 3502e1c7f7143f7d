"""MCP tools over tool memory, for agents: register a tool, record a call of it, find tools for a task.

They run through the memory tools' `call` (`sidecar.http.mcp.MemoryTools`), so the same rules hold: each acts on
the calling tenant's memory only, in a worker thread, and a refused value is an error result naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Awaitable, Callable, TypeVar

from pydantic import Field

from sidecar.http.memory_schema import memory_json
from sidecar.http.tool_routes import tool_json
from textual.tenant_memory import TenantMemory
from textual.tool_memory import MAX_TOOLS_K
from textual.tools import MAX_SUMMARY_CHARS, TOOL_NAME

T = TypeVar("T")
Call = Callable[[Callable[[TenantMemory], T]], Awaitable[T]]
ToolName = Annotated[str, Field(pattern=TOOL_NAME.pattern, description="The tool's function name.")]


class ToolMemoryTools:
    """The `memos_*` tool-memory functions, each one MCP tool (name, signature and docstring as for
    `MemoryTools`), running their work through `call`."""

    def __init__(self, call: Call) -> None:
        self._call = call

    def functions(self) -> list[Callable[..., Any]]:
        return [self.memos_register_tool, self.memos_record_tool_call, self.memos_search_tools]

    async def memos_register_tool(
        self, schema: Annotated[dict[str, Any], Field(description='An OpenAI tool object ({"type": "function", '
                                                                  '"function": {...}}) or its function object.')],
    ) -> dict[str, Any]:
        """Remember a tool's schema so it can be found later by what it does; registering a name again replaces
        its schema. Returns the tool's memory."""
        return memory_json(await self._call(lambda memory: memory.register_tool(schema)))

    async def memos_record_tool_call(
        self, tool_name: ToolName, success: Annotated[bool, Field(description="Whether the call worked.")],
        arguments: Annotated[dict[str, Any] | None, Field(description="The arguments it was called with.")] = None,
        result_summary: Annotated[str, Field(max_length=MAX_SUMMARY_CHARS,
                                             description="What came back, in short.")] = "",
        latency_ms: Annotated[float, Field(ge=0, le=86_400_000, description="How long it took.")] = 0.0,
    ) -> dict[str, Any]:
        """Record one call of a registered tool and whether it worked; the tool's success and failure counts grow
        with it. Returns the call's memory (a tool trajectory)."""
        return memory_json(await self._call(lambda memory: memory.record_trajectory(
            tool_name, arguments or {}, result_summary, success, latency_ms)))

    async def memos_search_tools(
        self, query: Annotated[str, Field(min_length=1, max_length=4000, description="The task at hand.")],
        top_k: Annotated[int, Field(ge=1, le=MAX_TOOLS_K, description="At most this many tools.")] = 5,
    ) -> dict[str, Any]:
        """Find the registered tools most useful for a task, by their schemas and past calls, best first, each
        with its schema, how often it succeeded and failed, and its newest calls."""
        matches = await self._call(lambda memory: memory.search_tools(query, k=top_k))
        return {"results": [tool_json(match) for match in matches]}
