"""MCP tools over textual memory, for agents: the `memos_*` tools of MemOS, each confined to one tenant.

Rules: a tool reaches memory only through `store.for_tenant(tenant_of_request())`, so another tenant's ids read as
"not found", never as someone else's memory. Over stdio the tenant is fixed when the server starts. Over streamable
HTTP every request is authenticated by `Access` (401/429 before MCP sees it) and its tenant is put in a context
variable that the tools read; the HTTP server is stateless (a fresh MCP transport per request, JSON responses), so
no session outlives the request whose key authorised it. Memory calls embed text and write LMDB synchronously, so
they run in a worker thread, never on the event loop.
"""

from __future__ import annotations

import inspect
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, Callable, Literal, TypeVar

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import Field
from starlette.types import ASGIApp, Receive, Scope, Send

from sidecar.http.access import Access
from sidecar.http.errors import APIError, error_response
from sidecar.http.memory_admin_schema import history_json
from sidecar.http.memory_schema import (ID_REGEX, MAX_TOKEN_BUDGET, MAX_TOP_K, MemoryTypeName, kb_json, memory_json,
                                        search_json)
from sidecar.http.space_mcp import SpaceTools
from sidecar.http.tool_mcp import ToolMemoryTools
from sidecar.tenants.quotas import QuotaExceeded
from textual.errors import CALLER_ERRORS
from textual.memory import MAX_TTL_S
from textual.memory_patch import KEEP, SCOPES
from textual.store import MemoryStore
from textual.tenant_memory import MAX_HISTORY_PAGE, TenantMemory

SERVER_NAME = "memsidecar"
INSTRUCTIONS = ("Long-term memory for agents. Store facts, preferences and events about a user with "
                "memos_add_memory, recall them with memos_search_memory before answering, and correct or retract "
                "them with memos_feedback_memory and memos_delete_memory. Knowledge bases hold chunked documents; "
                "shared spaces (memos_list_spaces) hold memories several users or agents read.")

Id = Annotated[str, Field(pattern=ID_REGEX, description="1-128 characters of letters, digits and _.:@-")]
UserId = Annotated[str | None, Field(pattern=ID_REGEX, description="The user the memory is about (may be left out "
                                                                   "for an agent's own memory, with agent_id).")]
Metadata = Annotated[dict[str, Any] | None, Field(description="Free-form JSON object stored with the memory.")]
T = TypeVar("T")
AgentId = Annotated[str | None, Field(pattern=ID_REGEX, description="The agent that made the memory or that it is "
                                                                   "for; searches see only this agent's memories.")]
RunId = Annotated[str | None, Field(pattern=ID_REGEX, description="The run (task or session) the memory belongs to.")]
SpaceId = Annotated[str | None, Field(pattern=ID_REGEX, description="A shared memory space: to write to (needs a "
                                                                   "write grant) or to look in (needs read).")]
Filter = Annotated[dict[str, Any] | None, Field(description=(
    'A filter on built-in fields and metadata keys, e.g. {"and": [{"metadata.topic": {"eq": "work"}}, '
    '{"created_at": {"gte": 1700000000}}]}; operators eq, ne, in, gt, gte, lt, lte, contains; and, or, not.'))]
MEMORY_ERRORS = (*CALLER_ERRORS, QuotaExceeded)


class MemoryTools:
    """The tool functions, bound to a store and to how the current call's tenant is found.

    Each public `memos_*` coroutine is one MCP tool: its name, signature and docstring are the tool's name, input
    schema and description. A user mistake or an unknown id raises `ToolError` with textual's message, which names
    the field; the client sees an error result, not a protocol failure.
    """

    def __init__(self, store: MemoryStore, tenant_of_request: Callable[[], str]) -> None:
        self._store = store
        self._tenant_of_request = tenant_of_request

    def functions(self) -> list[Callable[..., Any]]:
        """The tool functions, in the order `tools/list` shows them."""
        return [self.memos_add_memory, self.memos_search_memory, self.memos_get_memory, self.memos_list_memories,
                self.memos_delete_memory, self.memos_feedback_memory, self.memos_create_kb, self.memos_list_kbs,
                self.memos_delete_kb, self.memos_add_document, self.memos_update_memory, self.memos_get_history]

    async def _call(self, work: Callable[[TenantMemory], T]) -> T:
        """`work` on the calling tenant's memory, in a worker thread; textual's refusals become `ToolError`s."""
        memory = self._store.for_tenant(self._tenant_of_request())
        try:
            return await anyio.to_thread.run_sync(work, memory)
        except MEMORY_ERRORS as exc:
            raise ToolError(str(exc)) from exc

    async def memos_add_memory(
        self, content: Annotated[str, Field(min_length=1, description="The memory, in plain text.")],
        user_id: UserId = None,
        type: Annotated[MemoryTypeName, Field(description="What kind of memory this is.")] = "fact",
        kb_id: Annotated[str | None, Field(pattern=ID_REGEX, description="Knowledge base to file it under.")] = None,
        metadata: Metadata = None, agent_id: AgentId = None, run_id: RunId = None, space_id: SpaceId = None,
        ttl_s: Annotated[float | None, Field(ge=1, le=MAX_TTL_S, description="Forget it after this many seconds "
                                                                            "(unset: kept until deleted).")] = None,
    ) -> dict[str, Any]:
        """Remember something about a user, or an agent's own memory (agent_id and no user_id; one of them is
        needed). A near-duplicate of a stored memory of the same scope is merged into it,
        and a changed fact supersedes the old one. Returns the stored memory, with the `id` later calls refer to."""
        memory = await self._call(lambda memory: memory.add(content, user=user_id, type=type, kb_id=kb_id,
                                                            metadata=metadata, ttl_s=ttl_s, agent=agent_id, run=run_id,
                                                            space=space_id))
        return memory_json(memory)

    async def memos_search_memory(
        self, query: Annotated[str, Field(min_length=1, max_length=4000, description="What to recall.")],
        user_id: Annotated[str | None, Field(pattern=ID_REGEX, description="Only this user's memories.")] = None,
        top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K, description="At most this many results.")] = 10,
        token_budget: Annotated[int | None, Field(ge=1, le=MAX_TOKEN_BUDGET,
                                                  description="Fit `context` into this many tokens.")] = None,
        kb_ids: Annotated[list[Id] | None, Field(min_length=1, max_length=100,
                                                 description="Only memories of these knowledge bases.")] = None,
        types: Annotated[list[MemoryTypeName] | None, Field(min_length=1,
                                                            description="Only memories of these types.")] = None,
        agent_id: AgentId = None, run_id: RunId = None, space_id: SpaceId = None, filter: Filter = None,
    ) -> dict[str, Any]:
        """Recall the memories most relevant to a query, best first. A user or agent also recalls the shared spaces
        it may read. Returns `results` (memories with a `score`) and `context`, the results as one text ready to put
        in a prompt (`context_tokens` long)."""
        result = await self._call(lambda memory: memory.search(query, k=top_k, budget_tokens=token_budget, user=user_id,
                                                               kb_id=kb_ids, types=types, agent=agent_id, run=run_id,
                                                               space=space_id, where=filter))
        return search_json(result)

    async def memos_get_memory(self, memory_id: Id) -> dict[str, Any]:
        """Read one memory by its id."""
        return memory_json(await self._call(lambda memory: memory.get(memory_id)))

    async def memos_list_memories(
        self, user_id: Annotated[str | None, Field(pattern=ID_REGEX, description="Only this user's memories.")] = None,
        type: Annotated[MemoryTypeName | None, Field(description="Only memories of this type.")] = None,
        limit: Annotated[int, Field(ge=1, le=1000, description="At most this many memories.")] = 50,
        offset: Annotated[int, Field(ge=0, le=10**9, description="Skip this many first.")] = 0,
        agent_id: AgentId = None, run_id: RunId = None, space_id: SpaceId = None, filter: Filter = None,
    ) -> dict[str, Any]:
        """List memories in time order, oldest first, a page at a time; `has_more` says whether another page
        follows."""
        memories = await self._call(lambda memory: memory.list(user=user_id, types=None if type is None else [type],
                                                               limit=limit + 1, offset=offset, agent=agent_id,
                                                               run=run_id, space=space_id, where=filter))
        return {"data": [memory_json(m) for m in memories[:limit]], "limit": limit, "offset": offset,
                "has_more": len(memories) > limit}

    async def memos_delete_memory(self, memory_id: Id) -> dict[str, Any]:
        """Forget one memory for good."""
        await self._call(lambda memory: memory.delete(memory_id))
        return {"id": memory_id, "deleted": True}

    async def memos_feedback_memory(
        self, memory_id: Id,
        kind: Annotated[Literal["positive", "negative", "correction"],
                        Field(description="positive: it helped; negative: it was wrong or useless; correction: "
                                          "replace its content with `text`.")],
        text: Annotated[str | None, Field(min_length=1, description="The corrected content.")] = None,
    ) -> dict[str, Any]:
        """Tell memory whether a recalled memory was right. Positive feedback strengthens it, negative weakens it,
        and a correction rewrites it. Returns the memory as it now is."""
        return memory_json(await self._call(lambda memory: memory.feedback(memory_id, kind, text)))

    async def memos_create_kb(
        self, kb_id: Id, name: Annotated[str | None, Field(min_length=1, max_length=200)] = None,
        description: Annotated[str, Field(max_length=2000)] = "",
    ) -> dict[str, Any]:
        """Create an empty knowledge base, to add documents to with memos_add_document."""
        return kb_json(await self._call(lambda memory: memory.create_kb(kb_id, name, description)))

    async def memos_list_kbs(self) -> dict[str, Any]:
        """List the knowledge bases, in id order."""
        return {"data": [kb_json(kb) for kb in await self._call(lambda memory: memory.list_kbs())]}

    async def memos_delete_kb(self, kb_id: Id) -> dict[str, Any]:
        """Delete a knowledge base and every document memory in it."""
        removed = await self._call(lambda memory: memory.delete_kb(kb_id))
        return {"id": kb_id, "deleted": True, "memories_removed": removed}

    async def memos_add_document(
        self, kb_id: Id, text: Annotated[str, Field(min_length=1, description="The document's text.")],
        title: Annotated[str | None, Field(max_length=500)] = None,
    ) -> dict[str, Any]:
        """Add a document to a knowledge base. It is split into chunks that memos_search_memory finds; returns the
        chunks' ids."""
        options = {} if title is None else {"title": title}
        chunks = await self._call(lambda memory: memory.add_document(kb_id, text, **options))
        return {"kb_id": kb_id, "ids": [chunk.id for chunk in chunks], "chunks": len(chunks)}


    async def memos_update_memory(
        self, memory_id: Id,
        content: Annotated[str | None, Field(min_length=1, description="New content (re-embedded).")] = None,
        metadata: Annotated[dict[str, Any] | None, Field(
            description="A JSON merge patch of the metadata: keys set to null are removed, others set; the keys "
                        "memory writes itself (history, feedback, supersedes, superseded_by) are kept.")] = None,
        importance: Annotated[float | None, Field(ge=0, le=1, description="How much it matters, 0 to 1.")] = None,
        ttl_s: Annotated[float | None, Field(ge=1, le=MAX_TTL_S, description="Expire this many seconds from now.")]
        = None,
        clear_expiry: Annotated[bool, Field(description="Keep it until deleted: remove its expiry.")] = False,
        user_id: Annotated[str | None, Field(pattern=ID_REGEX, description="Move it to this user.")] = None,
        agent_id: Annotated[str | None, Field(pattern=ID_REGEX, description="Move it to this agent.")] = None,
        run_id: Annotated[str | None, Field(pattern=ID_REGEX, description="Move it to this run.")] = None,
        space_id: Annotated[str | None, Field(pattern=ID_REGEX, description="Move it into this shared space (its "
                                                                           "user or agent needs a write grant).")]
        = None,
        clear_scopes: Annotated[list[Literal["user_id", "agent_id", "run_id", "space_id"]] | None, Field(
            max_length=4, description="Remove these scopes (out of its space, off its run, ...); a memory keeps a "
                                      "user or an agent.")] = None,
    ) -> dict[str, Any]:
        """Change a memory's content, metadata, importance, expiry or scopes; the change is kept in its history (see
        memos_get_history). Returns the memory as it now is."""
        given = {"user": user_id, "agent": agent_id, "run": run_id, "space": space_id}
        cleared = {field for field, api in SCOPES.items() if api in (clear_scopes or ())}
        if both := sorted(SCOPES[field] for field in cleared if given[field] is not None):
            raise ToolError(f"clear_scopes: {', '.join(both)} both set and cleared; send one of them")
        scopes = {field: None if field in cleared else KEEP if value is None else value
                  for field, value in given.items()}
        return memory_json(await self._call(lambda memory: memory.update(
            memory_id, content=content, metadata=metadata, importance=importance, ttl_s=ttl_s,
            expires_at=None if clear_expiry else KEEP, **scopes)))

    async def memos_get_history(
        self, memory_id: Id,
        after: Annotated[int, Field(ge=0, le=2**62, description="Only versions with a seq above this.")] = 0,
        limit: Annotated[int, Field(ge=1, le=MAX_HISTORY_PAGE - 1, description="At most this many.")] = 50,
    ) -> dict[str, Any]:
        """How a memory changed, oldest first: each version says who changed it, when, why (create, update,
        merge, supersede, feedback, restore, tier, import) and the previous values of the fields that changed."""
        versions = await self._call(lambda memory: memory.history(memory_id, after=after, limit=limit + 1))
        return history_json(memory_id, versions, limit)


def build_mcp(store: MemoryStore, tenant_of_request: Callable[[], str]) -> MCPServer:
    """An MCP server with the memory tools; every call acts on the tenant `tenant_of_request()` returns then."""
    server = MCPServer(SERVER_NAME, instructions=INSTRUCTIONS)
    tools = MemoryTools(store, tenant_of_request)
    for function in (tools.functions() + ToolMemoryTools(tools._call).functions()  # one tenant rule for all
                     + SpaceTools(tools._call).functions()):
        server.add_tool(function, description=inspect.cleandoc(function.__doc__ or ""))
    return server


async def run_stdio(store: MemoryStore, tenant: str) -> None:
    """Serve the tools over stdin/stdout, all calls acting on `tenant`, until the client closes the pipe.

    Raises InvalidMemoryError at once for an unusable tenant name. Nothing else may write to stdout meanwhile.
    """
    store.for_tenant(tenant)
    await build_mcp(store, lambda: tenant).run_stdio_async()


@dataclass(frozen=True)
class McpHttpApp:
    """The streamable-HTTP MCP endpoint: route `endpoint` at exactly `/mcp` and enter `running()` in the lifespan.

    `endpoint` is a plain ASGI app that answers on whatever path it is routed at; it needs `running()` entered
    (once: a session manager cannot be restarted) before the first request.
    """

    endpoint: ASGIApp
    server: MCPServer

    def running(self) -> AbstractAsyncContextManager[None]:
        return self.server.session_manager.run()


def mcp_http_app(store: MemoryStore, access: Access) -> McpHttpApp:
    """The MCP tools over streamable HTTP, each request authenticated by its `Authorization: Bearer <key>`."""
    tenant: ContextVar[str] = ContextVar("memsidecar_mcp_tenant")
    server = build_mcp(store, partial(_current_tenant, tenant))
    # Stateless with JSON responses: each POST is authenticated and answered on its own. The bearer key, checked on
    # every request, guards the endpoint, as it does the REST API, so no Host allow-list is imposed.
    server.streamable_http_app(stateless_http=True, json_response=True,
                               transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
    return McpHttpApp(_Authenticated(server.session_manager.handle_request, access, tenant), server)


def _current_tenant(tenant: ContextVar[str]) -> str:
    try:
        return tenant.get()
    except LookupError:  # a call outside an authenticated request: refuse rather than guess a tenant
        raise ToolError("no authenticated tenant for this call") from None


class _Authenticated:
    """ASGI wrapper: authenticate the request, then run `app` with the caller's tenant in `tenant`."""

    def __init__(self, app: ASGIApp, access: Access, tenant: ContextVar[str]) -> None:
        self.app = app
        self.access = access
        self.tenant = tenant

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        try:
            caller = self.access.caller_of(scope)
        except APIError as error:
            return await error_response(error)(scope, receive, send)
        token = self.tenant.set(caller.tenant)
        try:
            await self.app(scope, receive, send)
        finally:
            self.tenant.reset(token)
