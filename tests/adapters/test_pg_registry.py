"""Registries on several nodes sharing one PostgreSQL store: what one registers the others see and serve, from their
own disk caches, checked against the digest; a tampered chunk is refused; racing nodes keep versions and blobs."""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from adapters import pg_registry_store
from adapters.errors import AdapterNotFoundError, CorruptAdapterError
from adapters.registry import AdapterRegistry
from adapters.validation import CONFIG_FILE, WEIGHTS_FILE
from memcore.digest import adapter_digest
from memcore.postgres import schema_version
from tests.adapters.conftest import BASE, MAX_RANK, MAX_UPLOAD, archive_of, files_of


@pytest.fixture
def open_node(tmp_path, base_shape, clock, postgres_url):
    """Opens a registry as node `name`: its own data directory (staging, blob cache), the test's one database."""
    opened = []

    def open_(name: str) -> AdapterRegistry:
        registry = AdapterRegistry.open(tmp_path / name / "adapters", BASE, MAX_RANK, base_shape, MAX_UPLOAD,
                                        clock=clock, store_url=postgres_url)
        opened.append(registry)
        return registry

    yield open_
    for registry in opened:
        registry.close()


def cached(tmp_path, node: str) -> list[str]:
    return sorted(os.listdir(tmp_path / node / "adapters" / "cache"))


def execute(url: str, sql: str, *params):
    with psycopg.connect(url) as connection:
        cursor = connection.execute(sql, params)
        return cursor.fetchall() if sql.startswith("SELECT") else None


def test_an_adapter_registered_on_one_node_serves_from_another_nodes_cache(open_node, peft_adapters, tmp_path):
    a, b = open_node("a"), open_node("b")
    record = a.register_archive(archive_of(peft_adapters["qv"]), "support", "acme")
    a.bind("acme", "support", user="alice")
    assert b.resolve("support", "acme") == record and b.list("acme") == [record]
    assert b.binding_for("acme", "alice") == record and b.owned("acme") == (1, record.bytes)
    assert cached(tmp_path, "b") == []
    path = b.path_of(record)
    assert path == tmp_path / "b" / "adapters" / "cache" / record.sha256 and cached(tmp_path, "b") == [record.sha256]
    assert files_of(path) == {name: data for name, data in files_of(peft_adapters["qv"]).items()
                              if name in (CONFIG_FILE, WEIGHTS_FILE)}
    assert adapter_digest(path) == record.sha256 and b.path_of(record) == path
    b.delete("support", "acme")
    with pytest.raises(AdapterNotFoundError):
        a.resolve("support", "acme")
    assert cached(tmp_path, "b") == [] and a.usage() == {"versions": 0, "blob_bytes": 0}


@pytest.mark.parametrize("file_name", [WEIGHTS_FILE, CONFIG_FILE])
def test_a_tampered_chunk_is_refused_and_nothing_is_cached(open_node, peft_adapters, tmp_path, postgres_url,
                                                           file_name):
    a, b = open_node("a"), open_node("b")
    record = a.register_archive(archive_of(peft_adapters["qv"]), "support", "acme")
    execute(postgres_url, "UPDATE adapter_blob_chunks SET data = overlay(data placing '\\x7b7b'::bytea from 20) "
            "WHERE sha256 = %s AND file = %s AND seq = 0", record.sha256, file_name)
    with pytest.raises(CorruptAdapterError, match=record.sha256) as refused:
        b.path_of(record)
    assert refused.value.sha256 == record.sha256 and cached(tmp_path, "b") == []


def test_blobs_are_stored_as_chunks_and_put_back_together(open_node, peft_adapters, tmp_path, postgres_url,
                                                          monkeypatch):
    monkeypatch.setattr(pg_registry_store, "CHUNK_BYTES", 4096)
    record = open_node("a").register_archive(archive_of(peft_adapters["mlp"]), "support", "acme")
    rows = dict(execute(postgres_url, "SELECT file, count(*) FROM adapter_blob_chunks WHERE sha256 = %s GROUP BY "
                                      "file", record.sha256))
    weights = (peft_adapters["mlp"] / WEIGHTS_FILE).stat().st_size
    assert rows == {CONFIG_FILE: 1, WEIGHTS_FILE: math.ceil(weights / 4096)} and rows[WEIGHTS_FILE] > 1
    path = open_node("b").path_of(record)
    assert (path / WEIGHTS_FILE).read_bytes() == (peft_adapters["mlp"] / WEIGHTS_FILE).read_bytes()


def test_uploads_racing_on_two_nodes_get_distinct_versions(open_node, peft_adapters):
    nodes = [open_node("a"), open_node("b")]
    data = [archive_of(peft_adapters[kind]) for kind in ("qv", "mlp", "regex")] * 2
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = [pool.submit(nodes[i % 2].register_archive, payload, "support", "acme")
                   for i, payload in enumerate(data)]
        versions = sorted(future.result().version for future in futures)
    assert versions == list(range(1, 7)) and nodes[1].usage()["versions"] == 6


def test_nodes_racing_to_reuse_and_collect_one_blob_keep_every_records_blob(open_node, peft_adapters, postgres_url):
    """Node A registers and deletes content X under its names while node B does the same: each registration reuses
    or stores X's blob and each delete may collect it; no record is ever left without its blob."""
    nodes, data = [open_node("a"), open_node("b")], archive_of(peft_adapters["qv"])

    def churn(node: int) -> None:
        for round_ in range(6):
            record = nodes[node].register_archive(data, f"n{node}-{round_}", "acme")
            assert nodes[1 - node].resolve(record.name, "acme") == record
            nodes[node].delete(record.name, "acme")

    with ThreadPoolExecutor(max_workers=2) as pool:
        for future in [pool.submit(churn, node) for node in (0, 1)]:
            future.result()
    assert execute(postgres_url, "SELECT count(*) FROM adapter_blobs") == [(0,)]
    record = nodes[0].register_archive(data, "kept", "acme")
    assert adapter_digest(nodes[1].path_of(record)) == record.sha256


def test_a_blob_deleted_elsewhere_leaves_a_nodes_cache_when_it_reopens(open_node, peft_adapters, tmp_path):
    a, b = open_node("a"), open_node("b")
    record = a.register_archive(archive_of(peft_adapters["qv"]), "support", "acme")
    b.path_of(record)
    a.delete("support", "acme")
    assert cached(tmp_path, "b") == [record.sha256]  # a copy, harmless: content-addressed, never rewritten
    b.close()
    open_node("b")
    assert cached(tmp_path, "b") == []


def test_open_applies_the_schema_and_names_an_unreachable_store_without_its_password(open_node, postgres_url,
                                                                                     tmp_path, base_shape):
    open_node("a")
    with psycopg.connect(postgres_url) as connection:
        assert schema_version(connection, "adapters") == len(pg_registry_store.MIGRATIONS) == 1
    open_node("b")  # a second node finds the schema in place
    unreachable = f"postgresql://app:hunter2@127.0.0.1:1/{postgres_url.rsplit('/', 1)[1]}"
    with pytest.raises(ValueError, match=r"cannot open the adapter registry in postgresql://app:\*\*\*@") as refused:
        AdapterRegistry.open(tmp_path / "c", BASE, MAX_RANK, base_shape, MAX_UPLOAD, store_url=unreachable)
    assert "hunter2" not in str(refused.value)


def test_a_store_that_goes_down_is_a_clear_unavailable_error_and_works_again_when_back(tmp_path, base_shape, clock,
                                                                                       peft_adapters):
    from memcore.postgres import StoreUnavailableError
    from tests.conftest import PostgresServer

    server = PostgresServer()
    try:
        url = server.start().create_database("registry")
        registry = AdapterRegistry.open(tmp_path / "adapters", BASE, MAX_RANK, base_shape, MAX_UPLOAD, clock=clock,
                                        store_url=url)
        record = registry.register_archive(archive_of(peft_adapters["qv"]), "support", "acme")
        server.stop()
        with pytest.raises(StoreUnavailableError, match="cannot be reached") as down:
            registry.list("acme")
        assert "127.0.0.1" in str(down.value)
        server.start()
        assert registry.list("acme") == [record]
        registry.close()
    finally:
        server.remove()
