"""The MCP tools through the official `mcp` client: over real streamable HTTP (a FastAPI app wired as the sidecar
wires it, on uvicorn, with two tenants' API keys) and over stdio (a subprocess running `run_stdio`)."""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import httpx2
import pytest
import uvicorn
from fastapi import FastAPI
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from sidecar.engine.process import free_port
from sidecar.http.access import Access
from sidecar.http.mcp import mcp_http_app
from sidecar.tenants.keys import KeyTable
from sidecar.tenants.rate_limit import RateLimiter
from textual.store import MemoryStore

REPO = Path(__file__).resolve().parents[3]
TOOLS = {"memos_add_memory", "memos_search_memory", "memos_delete_memory", "memos_feedback_memory",
         "memos_list_memories", "memos_get_memory", "memos_create_kb", "memos_list_kbs", "memos_delete_kb",
         "memos_add_document", "memos_update_memory", "memos_get_history", "memos_register_tool",
         "memos_record_tool_call", "memos_search_tools", "memos_list_spaces", "memos_add_space_memory",
         "memos_search_space"}
FACT = "Rosalind keeps three green parrots named Pip, Mango and Kiwi in her greenhouse"
OTHER_FACT = "Rosalind's neighbour keeps two grey parrots named Ash and Smoke on his balcony"
STDIO_ENTRY = ("import sys, anyio; from textual.store import MemoryStore; from sidecar.http.mcp import run_stdio; "
               "store = MemoryStore.open(sys.argv[1])\n"
               "try: anyio.run(run_stdio, store, sys.argv[2])\n"
               "finally: store.close()")


def sidecar_like_app(store: MemoryStore, access: Access) -> FastAPI:
    """A FastAPI app with the MCP endpoint wired exactly as `sidecar.http.app.create_app` wires it."""
    mcp = mcp_http_app(store, access)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with mcp.running():
            yield

    app = FastAPI(lifespan=lifespan)
    app.add_route("/mcp", mcp.endpoint, include_in_schema=False)
    return app


@pytest.fixture(scope="module")
def mcp_server(tmp_path_factory, embedder):
    """(the MCP endpoint's URL, the store behind it)."""
    store = MemoryStore.open(tmp_path_factory.mktemp("mcp") / "store", embedder=embedder)
    access = Access(KeyTable.load("key-a:tenant-a,key-b:tenant-b", None), RateLimiter(100_000))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(sidecar_like_app(store, access), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/mcp", store
    server.should_exit = True
    thread.join(timeout=30)
    store.close()


@pytest.fixture(scope="module")
def mcp_url(mcp_server) -> str:
    return mcp_server[0]


@asynccontextmanager
async def http_session(url: str, key: str):
    async with (httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http,
                streamable_http_client(url, http_client=http) as (read, write),
                ClientSession(read, write) as session):
        await session.initialize()
        yield session


async def call(session: ClientSession, tool: str, **arguments) -> dict:
    """The tool's JSON result; fails the test on an error result."""
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    return json.loads(result.content[0].text)


async def call_error(session: ClientSession, tool: str, **arguments) -> str:
    """The message of the error result the tool must return."""
    result = await session.call_tool(tool, arguments)
    assert result.is_error, result.content[0].text
    return result.content[0].text


def run(scenario, *args) -> None:
    async def bounded():
        with anyio.fail_after(60):
            await scenario(*args)

    anyio.run(bounded)


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def test_every_memos_tool_is_listed_with_a_description(mcp_url):
    async def scenario():
        async with http_session(mcp_url, "key-a") as session:
            tools = {tool.name: tool for tool in (await session.list_tools()).tools}
            assert set(tools) == TOOLS
            assert all(tool.description for tool in tools.values())
            search = tools["memos_search_memory"].input_schema["properties"]
            assert (search["top_k"]["minimum"], search["top_k"]["maximum"]) == (1, 100)

    run(scenario)


def test_a_tenant_adds_finds_corrects_lists_and_deletes_a_memory(mcp_url):
    user = new_user()

    async def scenario():
        async with http_session(mcp_url, "key-a") as session:
            memory = await call(session, "memos_add_memory", user_id=user, content=FACT)
            found = await call(session, "memos_search_memory", query="what are the parrots called?", user_id=user)
            assert memory["id"] in [hit["id"] for hit in found["results"]]
            assert "Mango" in found["context"]
            corrected = await call(session, "memos_feedback_memory", memory_id=memory["id"], kind="correction",
                                   text="Rosalind keeps four green parrots")
            assert corrected["content"] == "Rosalind keeps four green parrots"
            listed = await call(session, "memos_list_memories", user_id=user)
            assert [m["id"] for m in listed["data"]] == [memory["id"]] and not listed["has_more"]
            assert (await call(session, "memos_delete_memory", memory_id=memory["id"]))["deleted"]
            assert (await call(session, "memos_list_memories", user_id=user))["data"] == []
            assert memory["id"] in await call_error(session, "memos_get_memory", memory_id=memory["id"])

    run(scenario)


def test_an_update_merges_metadata_and_is_kept_in_the_history(mcp_url):
    user = new_user()

    async def scenario():
        async with http_session(mcp_url, "key-a") as tenant_a, http_session(mcp_url, "key-b") as tenant_b:
            memory = await call(tenant_a, "memos_add_memory", user_id=user, content=FACT, metadata={"a": 1, "b": 2})
            updated = await call(tenant_a, "memos_update_memory", memory_id=memory["id"],
                                 content="Rosalind keeps four green parrots", metadata={"a": None, "c": 3})
            assert updated["content"] == "Rosalind keeps four green parrots"
            assert updated["metadata"] == {"b": 2, "c": 3}
            history = await call(tenant_a, "memos_get_history", memory_id=memory["id"])
            assert [v["why"] for v in history["data"]] == ["create", "update"]
            assert history["data"][1]["before"] == {"content": FACT, "metadata": {"a": 1, "b": 2}}
            assert history["data"][1]["who"] == "tenant-a" and not history["has_more"]
            for tool in ("memos_get_history", "memos_update_memory"):
                extra = {} if tool == "memos_get_history" else {"importance": 0.1}
                refused = await call_error(tenant_b, tool, memory_id=memory["id"], **extra)
                assert f"no memory {memory['id']!r} in this tenant" in refused

    run(scenario)


def test_another_tenant_can_neither_find_nor_delete_a_memory(mcp_url):
    user = new_user()

    async def scenario():
        async with http_session(mcp_url, "key-a") as tenant_a, http_session(mcp_url, "key-b") as tenant_b:
            memory = await call(tenant_a, "memos_add_memory", user_id=user, content=FACT)
            found = await call(tenant_b, "memos_search_memory", query="parrots in the greenhouse", user_id=user)
            assert found["results"] == [] and found["context"] == ""
            refused = await call_error(tenant_b, "memos_delete_memory", memory_id=memory["id"])
            assert f"no memory {memory['id']!r} in this tenant" in refused
            assert (await call(tenant_a, "memos_get_memory", memory_id=memory["id"]))["content"] == FACT

    run(scenario)


def test_concurrent_calls_of_two_tenants_each_see_only_their_own_memories(mcp_url):
    user = new_user()
    seen: dict[str, set[str]] = {"key-a": set(), "key-b": set()}

    async def search_repeatedly(key: str, session: ClientSession) -> None:
        for _ in range(8):
            found = await call(session, "memos_search_memory", query="parrots", user_id=user, top_k=5)
            seen[key] |= {hit["id"] for hit in found["results"]}

    async def scenario():
        async with http_session(mcp_url, "key-a") as tenant_a, http_session(mcp_url, "key-b") as tenant_b:
            mine = {"key-a": (await call(tenant_a, "memos_add_memory", user_id=user, content=FACT))["id"],
                    "key-b": (await call(tenant_b, "memos_add_memory", user_id=user, content=OTHER_FACT))["id"]}
            async with anyio.create_task_group() as group:
                group.start_soon(search_repeatedly, "key-a", tenant_a)
                group.start_soon(search_repeatedly, "key-b", tenant_b)
            assert seen == {key: {memory_id} for key, memory_id in mine.items()}

    run(scenario)


def test_tools_are_registered_called_and_found_within_one_tenant(mcp_url):
    schema = {"type": "function", "function": {
        "name": f"send_fax_{uuid.uuid4().hex[:6]}", "description": "Send a fax to a phone number",
        "parameters": {"type": "object", "properties": {"number": {"type": "string"}}, "required": ["number"]}}}
    name = schema["function"]["name"]

    async def scenario():
        async with http_session(mcp_url, "key-a") as tenant_a, http_session(mcp_url, "key-b") as tenant_b:
            tool = await call(tenant_a, "memos_register_tool", schema=schema)
            called = await call(tenant_a, "memos_record_tool_call", tool_name=name, success=False,
                                arguments={"number": "555"}, result_summary="line busy")
            assert called["metadata"]["tool_id"] == tool["id"]
            found = await call(tenant_a, "memos_search_tools", query="fax this page to my lawyer", top_k=3)
            mine = next(match for match in found["results"] if match["name"] == name)
            assert (mine["successes"], mine["failures"]) == (0, 1) and mine["schema"] == schema
            elsewhere = await call(tenant_b, "memos_search_tools", query="fax this page to my lawyer")
            assert name not in [match["name"] for match in elsewhere["results"]]
            assert "tool_name" in await call_error(tenant_b, "memos_record_tool_call", tool_name=name, success=True)
            assert "schema.function.name" in await call_error(tenant_a, "memos_register_tool",
                                                              schema={"name": "no spaces allowed"})

    run(scenario)


def test_bad_arguments_are_error_results_naming_the_field(mcp_url):
    async def scenario():
        async with http_session(mcp_url, "key-a") as session:
            assert "top_k" in await call_error(session, "memos_search_memory", query="parrots", top_k=101)
            assert "token_budget" in await call_error(session, "memos_search_memory", query="parrots",
                                                      token_budget=0)
            assert "user_id" in await call_error(session, "memos_add_memory", user_id="no spaces", content=FACT)
            assert "content:" in await call_error(session, "memos_add_memory", user_id=new_user(), content="   ")
            assert "kind" in await call_error(session, "memos_feedback_memory", memory_id="abc", kind="great")
            assert "kb_id: no knowledge base 'nope'" in await call_error(session, "memos_add_document",
                                                                        kb_id="nope", text="some text")

    run(scenario)


def test_knowledge_base_documents_are_searchable_then_deleted_with_it(mcp_url):
    kb = f"kb-{uuid.uuid4().hex[:8]}"

    async def scenario():
        async with http_session(mcp_url, "key-a") as session:
            created = await call(session, "memos_create_kb", kb_id=kb, name="Birds")
            assert (created["id"], created["name"]) == (kb, "Birds")
            document = await call(session, "memos_add_document", kb_id=kb, text=FACT, title="Greenhouse")
            assert document["chunks"] == len(document["ids"]) >= 1
            found = await call(session, "memos_search_memory", query="parrot names", kb_ids=[kb])
            assert set(document["ids"]) & {hit["id"] for hit in found["results"]}
            assert kb in [k["id"] for k in (await call(session, "memos_list_kbs"))["data"]]
            assert (await call(session, "memos_delete_kb", kb_id=kb))["memories_removed"] == len(document["ids"])
            assert kb not in [k["id"] for k in (await call(session, "memos_list_kbs"))["data"]]

    run(scenario)


def test_a_missing_or_unknown_key_is_refused_with_401(mcp_url):
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                             "clientInfo": {"name": "test", "version": "0"}}}
    headers = {"Accept": "application/json, text/event-stream"}
    for extra in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": "Basic key-a"}):
        response = httpx.post(mcp_url, json=initialize, headers={**headers, **extra}, timeout=30)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
    accepted = httpx.post(mcp_url, json=initialize, headers={**headers, "Authorization": "Bearer key-b"}, timeout=30)
    assert accepted.status_code == 200 and accepted.json()["result"]["serverInfo"]["name"] == "memsidecar"

    async def scenario():
        # the session's task group wraps the refused initialize in exception groups
        with pytest.RaisesGroup(MCPError, flatten_subgroups=True):
            async with http_session(mcp_url, "wrong-key"):
                pass

    run(scenario)


def test_stdio_serves_one_fixed_tenant(tmp_path, embedder):
    server = StdioServerParameters(command=sys.executable, args=["-c", STDIO_ENTRY, str(tmp_path / "store"),
                                                                 "tenant-s"], cwd=REPO)
    user = new_user()

    async def scenario():
        async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            memory = await call(session, "memos_add_memory", user_id=user, content=FACT, type="event")
            found = await call(session, "memos_search_memory", query="who lives in the greenhouse?", top_k=3)
            assert [hit["id"] for hit in found["results"]] == [memory["id"]]
            assert found["results"][0]["type"] == "event"

    run(scenario)
    store = MemoryStore.open(tmp_path / "store", embedder=embedder)
    try:
        assert [m.user for m in store.for_tenant("tenant-s").list()] == [user]
    finally:
        store.close()


def test_search_and_list_take_scopes_and_filters(mcp_url, tmp_path):
    user = new_user()

    async def scenario():
        async with http_session(mcp_url, "key-a") as session:
            mine = await call(session, "memos_add_memory", user_id=user, content=FACT, agent_id="gardener",
                              run_id="spring", metadata={"room": "greenhouse", "count": 3})
            await call(session, "memos_add_memory", user_id=user, content=OTHER_FACT, agent_id="neighbour",
                       metadata={"room": "balcony", "count": 2})
            assert (mine["agent_id"], mine["run_id"]) == ("gardener", "spring")
            for arguments in ({"agent_id": "gardener"}, {"run_id": "spring"},
                              {"filter": {"and": [{"metadata.room": {"in": ["greenhouse"]}},
                                                  {"metadata.count": {"gt": 2}}]}}):
                found = await call(session, "memos_search_memory", query="parrots", user_id=user, **arguments)
                assert [hit["id"] for hit in found["results"]] == [mine["id"]], arguments
                listed = await call(session, "memos_list_memories", user_id=user, **arguments)
                assert [m["id"] for m in listed["data"]] == [mine["id"]], arguments
            refused = await call_error(session, "memos_search_memory", query="parrots",
                                       filter={"metadata.room": {"like": "green%"}})
            assert "filter.metadata.room.like: unknown operator" in refused
            assert "no memory space 'nope'" in await call_error(session, "memos_add_memory", user_id=user,
                                                                content=FACT, space_id="nope")

    run(scenario)


def test_an_agents_own_memory_and_an_update_of_its_expiry_and_scopes(mcp_url):
    agent = f"agent-{uuid.uuid4().hex[:8]}"

    async def scenario():
        async with http_session(mcp_url, "key-a") as session:
            note = await call(session, "memos_add_memory", agent_id=agent, content=FACT, ttl_s=600)
            assert note["user_id"] is None and note["agent_id"] == agent and note["expires_at"] is not None
            found = await call(session, "memos_search_memory", query="parrots", agent_id=agent)
            assert [hit["id"] for hit in found["results"]] == [note["id"]]
            assert "user_id" in await call_error(session, "memos_add_memory", content=FACT, run_id="r")
            changed = await call(session, "memos_update_memory", memory_id=note["id"], clear_expiry=True,
                                 run_id="r2", user_id="rosalind")
            assert (changed["expires_at"], changed["run_id"], changed["user_id"]) == (None, "r2", "rosalind")
            history = await call(session, "memos_get_history", memory_id=note["id"])
            assert history["data"][-1]["before"] == {"expires_at": note["expires_at"], "user": None, "run": None}
            unscoped = await call(session, "memos_update_memory", memory_id=note["id"], clear_scopes=["run_id"])
            assert (unscoped["run_id"], unscoped["user_id"], unscoped["agent_id"]) == (None, "rosalind", agent)
            assert "run_id both set and cleared" in await call_error(
                session, "memos_update_memory", memory_id=note["id"], run_id="r3", clear_scopes=["run_id"])
            assert "user" in await call_error(session, "memos_update_memory", memory_id=note["id"],
                                              clear_scopes=["user_id", "agent_id"])  # a memory keeps an owner
        async with http_session(mcp_url, "key-b") as session:
            assert (await call(session, "memos_search_memory", query="parrots", agent_id=agent))["results"] == []

    run(scenario)


def test_space_tools_list_write_and_search_with_the_rest_grants(mcp_server):
    url, store = mcp_server
    space = f"crew-{uuid.uuid4().hex[:8]}"
    store.for_tenant("tenant-a").create_space(space, "Crew", [{"user_id": "cap", "write": True},
                                                              {"agent_id": "navigator"}])

    async def scenario():
        async with http_session(url, "key-a") as session:
            listed = await call(session, "memos_list_spaces")
            assert {"id": space, "name": "Crew"}.items() <= next(
                s for s in listed["data"] if s["id"] == space).items()
            added = await call(session, "memos_add_space_memory", space_id=space, user_id="cap",
                               content="The ship's spare sails are stored in the forward hold")
            assert added["space_id"] == space
            refused = await call_error(session, "memos_add_space_memory", space_id=space, agent_id="navigator",
                                       content="The compass is broken")
            assert "may not write" in refused
            found = await call(session, "memos_search_space", space_id=space, agent_id="navigator",
                               query="where are the spare sails")
            assert [hit["id"] for hit in found["results"]] == [added["id"]]
            assert "may not read" in await call_error(session, "memos_search_space", space_id=space,
                                                      user_id="stowaway", query="sails")
        async with http_session(url, "key-b") as session:
            assert space not in [s["id"] for s in (await call(session, "memos_list_spaces"))["data"]]
            assert "no memory space" in await call_error(session, "memos_search_space", space_id=space,
                                                         query="sails")
            assert "no memory space" in await call_error(session, "memos_add_space_memory", space_id=space,
                                                         user_id="cap", content="x")

    run(scenario)
