"""Filters, agent/run scopes (agents' own memories, scopes moved by PATCH) and shared spaces over HTTP: the memory,
space and history routers as the sidecar installs them (its error handlers, two tenants' API keys), on a real store
(LMDB, FAISS, MiniLM), through httpx. No engine."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi import FastAPI

from sidecar.http.access import Access
from sidecar.http.errors import install_error_handlers
from sidecar.http.memory_admin_routes import memory_admin_router
from sidecar.http.memory_routes import memory_router
from sidecar.http.space_routes import space_router
from sidecar.tenants.keys import KeyTable
from sidecar.tenants.rate_limit import RateLimiter
from textual.embedder import Embedder
from textual.store import MemoryStore

A, B = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    opened = MemoryStore.open(tmp_path_factory.mktemp("scopes") / "store", embedder=Embedder.open())
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def client(store):
    access = Access(KeyTable.load("key-a:tenant-a,key-b:tenant-b", None), RateLimiter(100_000))
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(memory_router(store, access.caller))
    app.include_router(space_router(store, access.caller))
    app.include_router(memory_admin_router(store, access.caller))

    async def run(method: str, path: str, headers=A, **kwargs) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            return await http.request(method, path, headers=headers, **kwargs)

    return run


@pytest.fixture(scope="module")
def seeded(client):
    async def seed():
        notes = [("tea", 5, "Uma thinks jasmine tea from Fujian is perfect"),
                 ("tea", 2, "Uma found the hotel breakfast tea bags stale and bitter"),
                 ("coffee", 4, "Uma enjoys a flat white about coffee time at eleven"),
                 ("travel", 3, "Uma's train trip to Bergen was pleasant but long")]
        for i, (topic, rating, content) in enumerate(notes):
            response = await client("POST", "/v1/memories", json={
                "user_id": "uma", "content": content,
                "metadata": {"topic": topic, "rating": rating, "tags": [topic, "note"]},
                "agent_id": "scribe" if i % 2 else "critic", "run_id": f"run-{i % 2}"})
            assert response.status_code == 200, response.text
    import anyio
    anyio.run(seed)
    return client


def search(client, **body):
    import anyio
    return anyio.run(lambda: client("POST", "/v1/memories/search", json={"query": "What does Uma think?", **body}))


def listing(client, headers=A, **params):
    import anyio
    return anyio.run(lambda: client("GET", "/v1/memories", headers=headers, params=params))


def ratings(response) -> list[int]:
    assert response.status_code == 200, response.text
    body = response.json()
    return sorted(m["metadata"]["rating"] for m in body.get("results", body.get("data", [])))


@pytest.mark.parametrize("where, expected", [
    ({"metadata.topic": {"eq": "tea"}}, [2, 5]),
    ({"metadata.topic": {"ne": "tea"}}, [3, 4]),
    ({"metadata.topic": {"in": ["coffee", "travel"]}}, [3, 4]),
    ({"metadata.rating": {"gt": 4}}, [5]),
    ({"metadata.rating": {"gte": 4}}, [4, 5]),
    ({"metadata.rating": {"lt": 3}}, [2]),
    ({"metadata.rating": {"lte": 3}}, [2, 3]),
    ({"content": {"contains": "ABOUT COFFEE time"}}, [4]),
    ({"metadata.tags": {"contains": "travel"}}, [3]),
    ({"and": [{"metadata.topic": "tea"}, {"agent_id": "critic"}]}, [5]),
    ({"or": [{"metadata.rating": 2}, {"run_id": "run-1"}]}, [2, 3]),  # run-1: notes 1 and 3
    ({"not": {"metadata.topic": "tea"}}, [3, 4]),
    ({"created_at": {"gte": 0}, "type": "fact"}, [2, 3, 4, 5]),
])
def test_each_operator_in_search_and_list(seeded, where, expected):
    assert ratings(search(seeded, user_id="uma", filter=where, top_k=10)) == expected
    assert ratings(listing(seeded, user_id="uma", filter=json.dumps(where))) == expected


def test_search_and_list_narrow_by_agent_and_run(seeded):
    assert ratings(search(seeded, user_id="uma", agent_id="scribe")) == [2, 3]
    assert ratings(search(seeded, agent_id="critic", run_id="run-0")) == [4, 5]
    assert ratings(listing(seeded, run_id="run-1")) == [2, 3]
    memory = listing(seeded, agent_id="scribe", run_id="run-1").json()["data"][0]
    assert (memory["agent_id"], memory["run_id"], memory["space_id"]) == ("scribe", "run-1", None)


@pytest.mark.parametrize("body, param", [
    ({"filter": {"metadata.topic": {"regex": "t.*"}}}, "filter.metadata.topic.regex"),
    ({"filter": {"and": [{"topic": "tea"}]}}, "filter.and[0].topic"),
    ({"filter": {"created_at": {"gte": "last week"}}}, "filter.created_at.gte"),
    ({"filter": {"or": [{"user_id": str(i)} for i in range(200)]}}, "filter.or[31]"),
    ({"agent_id": "bad agent"}, "agent_id"),
])
def test_bad_filters_and_scopes_are_a_400_naming_the_node(seeded, body, param):
    response = search(seeded, **body)
    assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text
    if param.startswith("filter"):
        listed = listing(seeded, filter=json.dumps(body["filter"]))
        assert listed.status_code == 400 and listed.json()["error"]["param"] == param
    for text in ("{not json", "[" * 4000 + "]" * 4000, "NaN"):
        assert listing(seeded, filter=text).json()["error"]["param"] == "filter"


def test_a_shared_space_is_read_by_members_only_and_written_by_writers(client):
    import anyio

    async def scenario():
        created = await client("POST", "/v1/spaces", json={"id": "lab", "name": "Lab", "members": [
            {"user_id": "ivy", "write": True}, {"agent_id": "robot"}, {"user_id": "jon"}]})
        assert created.status_code == 200, created.text
        assert created.json()["members"] == [{"agent_id": "robot", "write": False},
                                             {"user_id": "ivy", "write": True}, {"user_id": "jon", "write": False}]
        fact = "The centrifuge in the lab is booked on Fridays"
        added = await client("POST", "/v1/memories", json={"user_id": "ivy", "space_id": "lab", "content": fact})
        assert added.status_code == 200 and added.json()["space_id"] == "lab"
        query = {"query": "when is the centrifuge booked"}
        seen = [[m["content"] for m in (await client("POST", "/v1/memories/search", json={**query, **who})
                                        ).json()["results"]]
                for who in ({"user_id": "jon"}, {"agent_id": "robot"}, {"user_id": "kim"})]
        assert seen == [[fact], [fact], []]  # two members read it; kim, no member, does not
        denied = await client("POST", "/v1/memories", json={"user_id": "jon", "space_id": "lab", "content": "x"})
        assert denied.status_code == 403 and denied.json()["error"]["param"] == "space_id"
        denied = await client("POST", "/v1/memories/search", json={**query, "user_id": "kim", "space_id": "lab"})
        assert denied.status_code == 403
        # another tenant: the space and the memory do not exist for it
        for method, path, body in [("GET", "/v1/spaces/lab", None), ("DELETE", "/v1/spaces/lab", None),
                                   ("PUT", "/v1/spaces/lab/members", {"members": []}),
                                   ("GET", f"/v1/memories/{added.json()['id']}", None),
                                   ("POST", "/v1/memories", {"user_id": "ivy", "space_id": "lab", "content": "x"}),
                                   ("POST", "/v1/memories/search", {**query, "user_id": "ivy", "space_id": "lab"})]:
            response = await client(method, path, headers=B, json=body)
            assert response.status_code == 404, (method, path, response.text)
        other = await client("POST", "/v1/memories/search", headers=B, json={**query, "user_id": "ivy"})
        assert other.json()["results"] == []
        assert (await client("GET", "/v1/spaces", headers=B)).json() == {"data": []}
        revoked = await client("PUT", "/v1/spaces/lab/members", json={"members": [{"user_id": "ivy", "write": True}]})
        assert revoked.status_code == 200
        after = await client("POST", "/v1/memories/search", json={**query, "user_id": "jon"})
        assert after.json()["results"] == []
        bad = await client("POST", "/v1/spaces", json={"id": "lab2", "members": [{"user_id": "a", "agent_id": "b"}]})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "members[0]"
        deleted = await client("DELETE", "/v1/spaces/lab")
        assert deleted.json() == {"id": "lab", "deleted": True, "memories_removed": 1}

    anyio.run(scenario)


def test_an_agents_own_memory_names_no_user_and_stays_in_its_tenant(client):
    import anyio

    async def scenario():
        fact = "The nightly backup job writes to the eu-west bucket"
        added = await client("POST", "/v1/memories", json={"agent_id": "ops-bot", "run_id": "r1", "content": fact})
        assert added.status_code == 200, added.text
        memory = added.json()
        assert (memory["user_id"], memory["agent_id"], memory["run_id"]) == (None, "ops-bot", "r1")
        found = await client("POST", "/v1/memories/search", json={"query": "where do backups go",
                                                                   "agent_id": "ops-bot"})
        assert [m["id"] for m in found.json()["results"]] == [memory["id"]]
        listed = await client("GET", "/v1/memories", params={"agent_id": "ops-bot", "run_id": "r1"})
        assert [m["id"] for m in listed.json()["data"]] == [memory["id"]]
        by_user = await client("POST", "/v1/memories/search", json={"query": "backups", "user_id": "uma"})
        assert memory["id"] not in [m["id"] for m in by_user.json()["results"]]
        ownerless = await client("POST", "/v1/memories", json={"run_id": "r1", "content": "nobody's"})
        assert ownerless.status_code == 400 and ownerless.json()["error"]["param"] == "user_id"
        assert "agent_id" in ownerless.json()["error"]["message"]
        for method, path in [("GET", f"/v1/memories/{memory['id']}"), ("DELETE", f"/v1/memories/{memory['id']}")]:
            assert (await client(method, path, headers=B)).status_code == 404
        other = await client("POST", "/v1/memories/search", headers=B, json={"query": "backups",
                                                                            "agent_id": "ops-bot"})
        assert other.json()["results"] == []

    anyio.run(scenario)


def test_patch_moves_a_memory_between_scopes_checked_as_on_add_and_kept_in_history(client):
    import anyio

    async def scenario():
        await client("POST", "/v1/spaces", json={"id": "desk", "members": [
            {"user_id": "pia", "write": True}, {"user_id": "rex"}]})
        added = await client("POST", "/v1/memories", json={"user_id": "pia", "content": "Pia's desk is by the window"})
        memory_id = added.json()["id"]
        moved = await client("PATCH", f"/v1/memories/{memory_id}", json={
            "space_id": "desk", "agent_id": "helper", "run_id": "move-1"})
        assert moved.status_code == 200, moved.text
        assert (moved.json()["space_id"], moved.json()["agent_id"], moved.json()["run_id"]) == (
            "desk", "helper", "move-1")
        seen = await client("POST", "/v1/memories/search", json={"query": "where is the desk", "user_id": "rex"})
        assert memory_id in [m["id"] for m in seen.json()["results"]]  # rex reads the space it is in now
        out = await client("PATCH", f"/v1/memories/{memory_id}", json={"space_id": None, "run_id": None})
        assert (out.json()["space_id"], out.json()["run_id"], out.json()["user_id"]) == (None, None, "pia")
        refused = [await client("PATCH", f"/v1/memories/{memory_id}", json=body) for body in (
            {"user_id": "rex", "space_id": "desk", "agent_id": None},  # rex may only read the space
            {"user_id": None, "agent_id": None},  # no owner left
            {"agent_id": "bad agent"})]
        assert [(r.status_code, r.json()["error"]["param"]) for r in refused] == [
            (403, "space_id"), (400, "user_id"), (400, "agent_id")]
        history = (await client("GET", f"/v1/memories/{memory_id}/history")).json()
        assert [(v["why"], v["before"]) for v in history["data"][1:]] == [
            ("update", {"agent": None, "run": None, "space": None}),
            ("update", {"run": "move-1", "space": "desk"})]
        foreign = await client("PATCH", f"/v1/memories/{memory_id}", headers=B, json={"space_id": None})
        assert foreign.status_code == 404

    anyio.run(scenario)
