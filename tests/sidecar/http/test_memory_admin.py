"""Managing memories as records over HTTP, at the ASGI level (no engine needed): history, metadata merge patch,
expiry, batch changes, delete-all and export / import (streamed: an import may pass the body limit). The app is
wired as `create_app` wires these routes: API-key authentication, the body limit, the error handlers, over a real
store (LMDB files, FAISS, the MiniLM model)."""

from __future__ import annotations

import anyio
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sidecar.http.access import Access
from sidecar.http.errors import install_error_handlers
from sidecar.http.memory_admin_routes import STREAMED_BODIES, memory_admin_router
from sidecar.http.memory_routes import memory_router
from sidecar.http.middleware import AuthenticateMiddleware, BodyLimitMiddleware
from sidecar.http.spool import Bounds, spool_lines
from sidecar.tenants.keys import KeyTable
from sidecar.tenants.quota_book import QuotaBook
from sidecar.tenants.quotas import QuotaLimits
from sidecar.tenants.rate_limit import RateLimiter
from textual.embedder import Embedder
from textual.errors import InvalidMemoryError
from textual.export_format import ExportedMemory, Header, encode_header, encode_record
from textual.memory import Memory, MemoryType
from textual.store import MemoryStore
from textual.transfer import file_source

A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}
BODY_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder.open()


def sidecar_like_app(store: MemoryStore, book: QuotaBook | None = None) -> FastAPI:
    access = Access(KeyTable.load("key-a:tenant-a,key-b:tenant-b", None), RateLimiter(100_000))
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=BODY_LIMIT, streamed=STREAMED_BODIES)
    app.add_middleware(AuthenticateMiddleware, access=access)
    app.include_router(memory_router(store, access.caller, book=book))
    app.include_router(memory_admin_router(store, access.caller, book))
    app.state.store = store
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
    huge = client.post("/v1/memories", content=b"x" * (BODY_LIMIT + 1), headers=A)
    assert huge.status_code == 413  # the body limit holds for every other route


def an_export(store, count: int, content_chars: int = 1500) -> list[bytes]:
    """The lines of an export of `count` memories with vectors of the store's own model (so none is re-embedded)."""
    header = Header(store.embedder.identity, store.embedder.dim, True)
    rng = np.random.default_rng(0)
    lines = [encode_header(header)]
    for i in range(count):
        memory = Memory(id=f"imported-{i}", tenant="-", user="big", type=MemoryType.FACT, created_at=1.0,
                        updated_at=1.0, last_access_at=1.0, content=f"Fact number {i}: " + "lorem ipsum " *
                        (content_chars // 12))
        vector = rng.normal(size=store.embedder.dim).astype(np.float32)
        lines.append(encode_record(ExportedMemory(memory, (), vector / np.linalg.norm(vector))))
    return lines


def chunked(data: bytes, size: int = 7_919):
    """`data` as a streamed body, in chunks that split lines anywhere."""
    for start in range(0, len(data), size):
        yield data[start:start + size]


def test_an_import_larger_than_the_body_limit_is_streamed_in(client):
    body = b"".join(an_export(client.app.state.store, 60))
    assert len(body) > 2 * BODY_LIMIT
    imported = client.post("/v1/import", content=chunked(body), headers=A)
    assert imported.status_code == 200, imported.text
    assert imported.json()["imported"] == 60 and imported.json()["reembedded"] == 0
    listed = client.get("/v1/memories", params={"user_id": "big", "limit": 1000}, headers=A).json()["data"]
    assert sorted(m["id"] for m in listed) == sorted(f"imported-{i}" for i in range(60))


def test_an_import_past_the_tenants_memory_quota_is_refused_naming_the_line(store):
    book = QuotaBook(QuotaLimits(memories=5))
    store.admission = book.admit_memory_write
    with TestClient(sidecar_like_app(store, book)) as client:
        add(client, "Ann likes tea")
        lines = an_export(store, 6, content_chars=40)
        refused = client.post("/v1/import", content=chunked(b"".join(lines), 100), headers=A)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "line 6", refused.text
        assert "more than 4 memories" in refused.json()["error"]["message"]
        assert client.get("/v1/memories", params={"user_id": "big"}, headers=A).json()["data"] == []
        fits = client.post("/v1/import", content=b"".join(lines[:5]), headers=A)
        assert fits.status_code == 200 and fits.json()["imported"] == 4


def test_the_spool_refuses_a_line_over_its_limit_naming_it(tmp_path):
    async def body():
        for chunk in (b'{"header": 1}\n{"a"', b": 1}\n", b"x" * 50, b"y" * 51):
            yield chunk

    with open(tmp_path / "spool", "w+b") as file, pytest.raises(InvalidMemoryError) as refused:
        anyio.run(spool_lines, body(), file, Bounds(100))
    assert refused.value.field == "line 3"


def test_the_spool_keeps_a_body_whole_across_chunks(tmp_path):
    data = b'{"h": 1}\n\n{"a": 1}\n  \n{"b": 2}'

    async def body():
        for chunk in chunked(data, 3):
            yield chunk

    with open(tmp_path / "spool", "w+b") as file:
        anyio.run(spool_lines, body(), file, Bounds(100, 2, len(data)))
        assert file_source(file)() is file and file.read() == data
    for bounds, line in ((Bounds(100, 1), "line 5"), (Bounds(100, 2, len(data) - 1), "line 5"),
                         (Bounds(100, 2, 10), "line 3")):
        with open(tmp_path / "spool2", "w+b") as file, pytest.raises(InvalidMemoryError) as refused:
            anyio.run(spool_lines, body(), file, bounds)
        assert refused.value.field == line, bounds
