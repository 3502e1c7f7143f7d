"""Tool memory over REST (`sidecar.http.tool_routes`) on a FastAPI app with the sidecar's error handlers and two
tenants' API keys, a real MemoryStore (LMDB, FAISS, MiniLM) underneath: register, record calls, search, tenancy and
bad input."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sidecar.http.access import Access
from sidecar.http.errors import install_error_handlers
from sidecar.http.tool_routes import tool_router
from sidecar.tenants.keys import KeyTable
from sidecar.tenants.rate_limit import RateLimiter
from textual.embedder import Embedder
from textual.store import MemoryStore

A, B = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather and rain forecast for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
STOCKS = {"name": "get_quote", "description": "Latest stock price for a ticker symbol",
          "parameters": {"type": "object", "properties": {"ticker": {"type": "string"}}}}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    store = MemoryStore.open(tmp_path_factory.mktemp("tools") / "store", embedder=Embedder.open())
    access = Access(KeyTable.load("key-a:tenant-a,key-b:tenant-b", None), RateLimiter(100_000))
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(tool_router(store, access.caller))
    with TestClient(app) as test_client:
        yield test_client
    store.close()


def test_a_registered_tool_is_found_with_the_outcomes_of_its_calls(client):
    registered = client.post("/v1/tools", json=WEATHER, headers=A)
    assert registered.status_code == 200, registered.text
    assert registered.json()["type"] == "tool_schema"
    assert client.post("/v1/tools", json=STOCKS, headers=A).status_code == 200
    for success in (True, True, False):
        recorded = client.post("/v1/tools/trajectories", headers=A, json={
            "tool_name": "get_weather", "arguments": {"city": "Oslo"}, "result_summary": "4 C, rain",
            "success": success, "latency_ms": 120})
        assert recorded.status_code == 200, recorded.text
        assert recorded.json()["metadata"]["tool_id"] == registered.json()["id"]
    found = client.post("/v1/tools/search", json={"query": "will it rain in Lisbon tomorrow?", "top_k": 2},
                        headers=A).json()["results"]
    assert found[0]["name"] == "get_weather" and found[0]["schema"] == WEATHER
    assert (found[0]["successes"], found[0]["failures"]) == (2, 1)
    assert len(found[0]["recent"]) == 3 and found[0]["recent"][0]["metadata"]["arguments"] == {"city": "Oslo"}
    listed = client.get("/v1/tools", headers=A).json()["data"]
    assert {tool["metadata"]["tool_name"] for tool in listed} == {"get_weather", "get_quote"}


def test_another_tenant_neither_finds_nor_records_calls_of_the_tools(client):
    assert client.post("/v1/tools", json=WEATHER, headers=A).status_code == 200
    assert client.post("/v1/tools/search", json={"query": "weather"}, headers=B).json() == {"results": []}
    assert client.get("/v1/tools", headers=B).json()["data"] == []
    refused = client.post("/v1/tools/trajectories", headers=B,
                          json={"tool_name": "get_weather", "success": True})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "tool_name"
    assert client.post("/v1/tools/search", json={"query": "weather"}).status_code == 401


@pytest.mark.parametrize("path, body, param", [
    ("/v1/tools", {"type": "function", "function": {"name": "bad name", "parameters": {"type": "object"}}},
     "schema.function.name"),
    ("/v1/tools", {"name": "no_params"}, "schema.function.parameters"),
    ("/v1/tools", {"name": "t", "parameters": {"type": "object", "properties": {}, "required": ["x"]}},
     "schema.function.parameters.required"),
    ("/v1/tools/trajectories", {"tool_name": "get_weather", "success": "yes"}, "success"),
    ("/v1/tools/trajectories", {"tool_name": "get_weather", "success": True, "latency_ms": -1}, "latency_ms"),
    ("/v1/tools/trajectories", {"tool_name": "get_weather", "success": True, "result_summary": "x" * 2001},
     "result_summary"),
    ("/v1/tools/trajectories", {"tool_name": "never_registered", "success": True}, "tool_name"),
    ("/v1/tools/search", {"query": "weather", "top_k": 101}, "top_k"),
    ("/v1/tools/search", {"query": ""}, "query"),
])
def test_bad_input_is_a_400_naming_the_field(client, path, body, param):
    response = client.post(path, json=body, headers=A)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
