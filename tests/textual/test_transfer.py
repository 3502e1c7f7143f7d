"""The export format (pinned bytes) and export / import between real stores (LMDB, FAISS, MiniLM)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from textual import transfer
from textual.errors import InvalidMemoryError
from textual.export_format import ExportedMemory, Header, decode_header, decode_record, encode_header, encode_record
from textual.history import ChangeKind, Version
from textual.memory import Memory, MemoryType, LifecycleTier
from textual.store import MemoryStore

HEADER = Header("all-MiniLM-L6-v2/2/0123456789abcdef", 2, True)
MEMORY = Memory(id="m1", tenant="t1", user="u1", type=MemoryType.FACT, content="Hi é", created_at=1.0,
                updated_at=2.0, last_access_at=1.5, metadata={"k": 1}, tier=LifecycleTier.WARM, expires_at=9.0)
RECORD = ExportedMemory(MEMORY, (Version(1, 1.0, "t1", ChangeKind.CREATE),), np.array([1.0, -2.0], np.float32))
GOLDEN_HEADER = (b'{"dim":2,"embedding_model":"all-MiniLM-L6-v2/2/0123456789abcdef","format":"memsidecar.memories",'
                 b'"vectors":true,"version":1}\n')
GOLDEN_RECORD = ('{"history":[{"at":1.0,"before":{},"changed":[],"seq":1,"who":"t1","why":"create"}],"memory":'
                 '{"access_count":0,"content":"Hi é","created_at":1.0,"expires_at":9.0,"id":"m1","importance":0.5,'
                 '"kb_id":null,"last_access_at":1.5,"metadata":{"k":1},"source":[],"strength":1.0,"tier":"warm",'
                 '"type":"fact","updated_at":2.0,"user":"u1"},"vector":"AACAPwAAAMA="}\n').encode()
QUESTIONS = ["what pets does Rosalind keep?", "where does Bob work?", "favourite food", "door code"]


def test_export_lines_are_pinned():
    assert encode_header(HEADER) == GOLDEN_HEADER and decode_header(GOLDEN_HEADER) == HEADER
    assert encode_record(RECORD) == GOLDEN_RECORD
    decoded = decode_record(GOLDEN_RECORD, 2, "t1", HEADER)
    assert decoded.memory == MEMORY and decoded.history == RECORD.history
    assert decoded.vector.tolist() == [1.0, -2.0]


def fill(handle) -> None:
    handle.add("Rosalind keeps three green parrots named Pip, Mango and Kiwi", user="ros")
    handle.add("Bob works at the harbour office as a pilot", user="bob", metadata={"source": "chat"})
    handle.add("Bob's favourite food is grilled sardines", user="bob", type="preference")
    handle.add("Bob works at the airport office as a pilot", user="bob")  # supersedes the harbour
    handle.add_messages([{"speaker": "ros", "text": "I moved my parrots to the greenhouse", "time": 1e9}], user="ros")


def results(handle, user=None) -> list[list[tuple[str, float]]]:
    """Ids and scores (recency moves with the clock between two searches: scores to 3 places) of each question."""
    return [[(hit.memory.id, round(hit.score, 3)) for hit in handle.search(q, user=user, k=5).hits]
            for q in QUESTIONS]


def open_store(path, embedder) -> MemoryStore:
    return MemoryStore.open(path, embedder=embedder, track_access=False)


def test_export_then_import_into_an_empty_store_gives_the_same_search_results(tmp_path, embedder):
    with open_store(tmp_path / "a", embedder) as source, open_store(tmp_path / "b", embedder) as target:
        fill(source.for_tenant("t1"))
        lines = list(source.for_tenant("t1").export_memories())
        report = target.for_tenant("t2").import_memories(lines)
        assert (report.imported, report.reembedded, report.remapped) == (5, 0, {})
        assert results(target.for_tenant("t2")) == results(source.for_tenant("t1"))
        old = [m for m in source.for_tenant("t1").list(tiers=["archived"])][0]
        moved = target.for_tenant("t2").history(old.id)
        assert [v.why.value for v in moved] == ["create", "supersede", "import"]
        assert target.for_tenant("t2").get(old.id).metadata["superseded_by"] == old.metadata["superseded_by"]
        assert results(target.for_tenant("t1")) == [[], [], [], []]  # nothing reached another tenant


def test_an_export_of_one_user_without_vectors_is_embedded_again(tmp_path, embedder):
    with open_store(tmp_path / "a", embedder) as source, open_store(tmp_path / "b", embedder) as target:
        fill(source.for_tenant("t1"))
        lines = list(source.for_tenant("t1").export_memories(user="bob", vectors=False))
        assert {json.loads(line)["memory"]["user"] for line in lines[1:]} == {"bob"}
        report = target.for_tenant("t1").import_memories(lines)
        assert (report.imported, report.reembedded) == (3, 3)
        assert results(target.for_tenant("t1"), "bob") == results(source.for_tenant("t1"), "bob")


def test_another_embedding_model_in_the_header_means_embedding_again(tmp_path, embedder, store):
    header = encode_header(Header("another-model/2/0000000000000000", 2, True))
    live = dataclasses.replace(MEMORY, expires_at=None)
    record = encode_record(ExportedMemory(live, (), np.array([1.0, 0.0], np.float32)))
    report = store.for_tenant("t1").import_memories([header, record])
    assert report.reembedded == 1
    assert store.for_tenant("t1").search("Hi", k=1).hits[0].memory.id == "m1"


def test_an_id_taken_in_the_tenant_is_remapped_with_its_links(tmp_path, embedder):
    with open_store(tmp_path / "a", embedder) as source:
        fill(source.for_tenant("t1"))
        lines = list(source.for_tenant("t1").export_memories())
        report = source.for_tenant("t1").import_memories(lines)  # every id is taken
        assert len(report.remapped) == 5
        archived = [m for m in source.for_tenant("t1").list(tiers=["archived"]) if m.id in report.remapped.values()]
        old_link = [json.loads(line)["memory"] for line in lines[1:] if json.loads(line)["memory"]["tier"] ==
                    "archived"][0]["metadata"]["superseded_by"]
        assert archived[0].metadata["superseded_by"] == report.remapped[old_link]


@pytest.mark.parametrize("line,field", [
    (b"not json", "line 3"),
    (b'{"memory": {"id": "x"}}', "line 3"),
    (None, "line 3: content"),
])
def test_a_bad_line_refuses_the_whole_import_naming_it(store, line, field):
    if line is None:  # a well-formed record with a blank content
        line = GOLDEN_RECORD.replace("Hi é".encode(), b"   ")
    with pytest.raises(InvalidMemoryError) as refused:
        store.for_tenant("t1").import_memories([GOLDEN_HEADER, GOLDEN_RECORD.replace(b'"m1"', b'"m0"'), line,
                                                GOLDEN_RECORD])
    assert refused.value.field.startswith(field)
    assert store.for_tenant("t1").list() == []


def test_malformed_access_fields_are_refused(store):
    line = GOLDEN_RECORD.replace(b'"access_count":0', b'"access_count":-1')
    with pytest.raises(InvalidMemoryError, match="access_count"):
        store.for_tenant("t1").import_memories([GOLDEN_HEADER, line])


def test_a_tenant_moves_from_lmdb_to_postgresql_with_its_histories_and_search_results(tmp_path, embedder,
                                                                                      postgres_url):
    with open_store(tmp_path / "lmdb", embedder) as source, \
            MemoryStore.open(tmp_path / "pg", embedder=embedder, track_access=False, store_url=postgres_url) as target:
        fill(source.for_tenant("t1"))
        report = target.for_tenant("t1").import_memories(source.for_tenant("t1").export_memories())
        assert (report.imported, report.reembedded, report.remapped) == (5, 0, {})
        assert results(target.for_tenant("t1")) == results(source.for_tenant("t1"))
        old = source.for_tenant("t1").list(tiers=["archived"])[0]
        assert [v.why.value for v in target.for_tenant("t1").history(old.id)] == ["create", "supersede", "import"]
        assert target.usage("t1")[0] == 5 and target.for_tenant("t1").users() == source.for_tenant("t1").users()


def test_an_import_reads_a_file_twice_and_never_needs_it_whole(tmp_path, embedder):
    with open_store(tmp_path / "a", embedder) as source, open_store(tmp_path / "b", embedder) as target:
        fill(source.for_tenant("t1"))
        path = tmp_path / "export.jsonl"
        path.write_bytes(b"".join(source.for_tenant("t1").export_memories()))
        written: list[int] = []
        with path.open("rb") as file:
            report = target.for_tenant("t1").import_memories(transfer.file_source(file), written.append)
        assert report.imported == 5 and sum(written) == 5
        assert results(target.for_tenant("t1")) == results(source.for_tenant("t1"))


def test_an_overlong_line_or_one_past_the_record_cap_is_refused_naming_it(store, monkeypatch):
    two = GOLDEN_RECORD.replace(b'"m1"', b'"m2"')
    with pytest.raises(InvalidMemoryError) as capped:
        store.for_tenant("t1").import_memories([GOLDEN_HEADER, GOLDEN_RECORD, two], max_records=1)
    assert capped.value.field == "line 3"
    monkeypatch.setattr(transfer, "MAX_LINE_BYTES", len(GOLDEN_RECORD) - 1)
    with pytest.raises(InvalidMemoryError) as long_line:
        store.for_tenant("t1").import_memories([GOLDEN_HEADER, GOLDEN_RECORD])
    assert long_line.value.field == "line 2"
    assert store.for_tenant("t1").list() == []
