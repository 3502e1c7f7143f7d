"""Managing memories as records over HTTP, at the ASGI level (no engine needed): history, metadata merge patch,
expiry, batch changes, delete-all and export / import. The app is wired as `create_app` wires these routes: API-key
authentication, the body limit, the error handlers, over a real store (LMDB files, FAISS, the MiniLM model)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sidecar.http.access import Access
from sidecar.http.errors import install_error_handlers
from sidecar.http.memory_admin_routes import memory_admin_router
from sidecar.http.memory_routes import memory_router
from sidecar.http.middleware import AuthenticateMiddleware, BodyLimitMiddleware
from sidecar.tenants.keys import KeyTable
from sidecar.tenants.rate_limit import RateLimiter
from textual.embedder import Embedder
from textual.store import MemoryStore

A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}
BODY_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder.open()


def sidecar_like_app(store: MemoryStore) -> FastAPI:
    access = Access(KeyTable.load("key-a:tenant-a,key-b:tenant-b", None), RateLimiter(100_000))
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=BODY_LIMIT)
    app.add_middleware(AuthenticateMiddleware, access=access)
    app.include_router(memory_router(store, access.caller))
    app.include_router(memory_admin_router(store, access.caller))
    return app


@pytest.fixture
def store(tmp_path, embedder):
    opened = MemoryStore.open(tmp_path / "store", embedder=embedder)
    yield opened
    opened.close()


@pytest.fixture
def client(store):
    with TestClient(sidecar_like_app(store)) as test_client:
        yield test_client


def add(client, content: str, user: str = "u1", headers=A, **fields) -> dict:
    response = client.post("/v1/memories", json={"user_id": user, "content": content, **fields}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_patch_merges_metadata_and_every_change_is_in_the_history(client):
    memory = add(client, "Rosalind keeps three green parrots", metadata={"a": 1, "b": {"x": 1, "y": 2}})
    client.post(f"/v1/memories/{memory['id']}/feedback", json={"kind": "positive"}, headers=A)
    patched = client.patch(f"/v1/memories/{memory['id']}", headers=A, json={
        "content": "Rosalind keeps four green parrots", "metadata": {"a": None, "b": {"y": None}, "feedback": None}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["metadata"] == {"b": {"x": 1}, "feedback": {"positive": 1}}
    history = client.get(f"/v1/memories/{memory['id']}/history", headers=A).json()
    assert [v["why"] for v in history["data"]] == ["create", "feedback", "update"]
    assert history["data"][2]["before"]["content"] == "Rosalind keeps three green parrots"
    page = client.get(f"/v1/memories/{memory['id']}/history", params={"limit": 1, "after": 1}, headers=A).json()
    assert [v["seq"] for v in page["data"]] == [2] and page["has_more"] and page["next_after"] == 2
    assert client.get(f"/v1/memories/{memory['id']}/history", headers=B).status_code == 404
    bad = client.get(f"/v1/memories/{memory['id']}/history", params={"limit": 10**6}, headers=A)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "query.limit"


def test_a_memory_added_with_a_ttl_is_gone_once_it_expired(client, store):
    memory = add(client, "The door code this week is 4417", ttl_s=1)
    assert memory["expires_at"] == pytest.approx(memory["created_at"] + 1, abs=1)
    store.clock = lambda: memory["expires_at"] + 1  # time passes
    assert client.get(f"/v1/memories/{memory['id']}", headers=A).status_code == 404
    found = client.post("/v1/memories/search", json={"query": "door code", "user_id": "u1"}, headers=A).json()
    assert found["results"] == []
    bad = client.post("/v1/memories", json={"user_id": "u1", "content": "x", "ttl_s": 0}, headers=A)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "ttl_s"


def test_patch_with_a_null_expires_at_clears_the_expiry_and_is_a_version(client, store):
    memory = add(client, "The door code this week is 4417", ttl_s=60)
    cleared = client.patch(f"/v1/memories/{memory['id']}", json={"expires_at": None}, headers=A)
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["expires_at"] is None
    last = client.get(f"/v1/memories/{memory['id']}/history", headers=A).json()["data"][-1]
    assert last["why"] == "update" and last["before"] == {"expires_at": memory["expires_at"]}
    store.clock = lambda: memory["expires_at"] + 1  # past the expiry it had
    assert client.get(f"/v1/memories/{memory['id']}", headers=A).status_code == 200
    both = client.patch(f"/v1/memories/{memory['id']}", json={"expires_at": None, "ttl_s": 5}, headers=A)
    assert both.status_code == 400 and both.json()["error"]["param"] == "expires_at"
    untouched = client.patch(f"/v1/memories/{memory['id']}", json={"importance": 0.9}, headers=A)
    assert untouched.json()["expires_at"] is None and untouched.json()["importance"] == 0.9


def test_a_batch_reports_each_operation_and_stays_in_the_tenant(client):
    mine, other = add(client, "Ann likes tea"), add(client, "Bo likes coffee", headers=B)
    gone = add(client, "Ann likes cake")
    response = client.post("/v1/memories/batch", headers=A, json={"operations": [
        {"op": "update", "id": mine["id"], "metadata": {"k": 1}, "importance": 0.9},
        {"op": "delete", "id": gone["id"]},
        {"op": "delete", "id": other["id"]},
        {"op": "update", "id": mine["id"], "content": "   "},
    ]})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [200, 200, 404, 400]
    assert results[0]["memory"]["metadata"] == {"k": 1} and results[3]["error"]["param"] == "content"
    assert client.get(f"/v1/memories/{other['id']}", headers=B).status_code == 200
    assert client.get(f"/v1/memories/{gone['id']}", headers=A).status_code == 404
    too_many = client.post("/v1/memories/batch", headers=A,
                           json={"operations": [{"op": "delete", "id": mine["id"]}] * 101})
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "operations"


def test_delete_all_of_a_user_needs_confirmation_and_spares_other_users_and_tenants(client):
    for content in ("Ann likes tea", "Ann lives in Oslo"):
        add(client, content, user="ann")
    kept, other_tenant = add(client, "Bo likes coffee", user="bo"), add(client, "Ann is a pilot", user="ann",
                                                                        headers=B)
    refused = client.delete("/v1/memories", params={"user_id": "ann"}, headers=A)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "confirm"
    done = client.delete("/v1/memories", params={"user_id": "ann", "confirm": "true"}, headers=A).json()
    assert done == {"user_id": "ann", "deleted": 2}
    assert client.get("/v1/memories", params={"user_id": "ann"}, headers=A).json()["data"] == []
    assert client.get(f"/v1/memories/{kept['id']}", headers=A).status_code == 200
    assert client.get(f"/v1/memories/{other_tenant['id']}", headers=B).status_code == 200


def test_export_streams_only_the_callers_memories_and_import_round_trips(client):
    mine = add(client, "Rosalind keeps three green parrots", user="ros")
    add(client, "Bob works at the harbour", user="bob")
    add(client, "Tenant B's secret", user="ros", headers=B)
    exported = client.get("/v1/export", params={"user_id": "ros"}, headers=A)
    assert exported.status_code == 200 and exported.headers["content-type"] == "application/x-ndjson"
    lines = exported.content.splitlines()
    assert len(lines) == 2 and b"secret" not in exported.content and b"harbour" not in exported.content
    imported = client.post("/v1/import", content=exported.content, headers=B)
    assert imported.status_code == 200, imported.text
    assert imported.json()["imported"] == 1 and imported.json()["remapped"] == {}
    found = client.post("/v1/memories/search", json={"query": "parrots", "user_id": "ros"}, headers=B).json()
    assert mine["id"] in [hit["id"] for hit in found["results"]]
    again = client.post("/v1/import", content=exported.content, headers=B).json()
    assert list(again["remapped"]) == [mine["id"]]
    bad = client.post("/v1/import", content=lines[0] + b"\n{not json\n", headers=A)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "line 2"
    huge = client.post("/v1/import", content=b"x" * (BODY_LIMIT + 1), headers=A)
    assert huge.status_code == 413
