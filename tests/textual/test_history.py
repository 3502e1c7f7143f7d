"""The version record format (pinned bytes) and the history every kind of change leaves, on real LMDB files."""

from __future__ import annotations

import dataclasses

import pytest

from textual.errors import MemoryNotFoundError
from textual.history import (MAX_VERSIONS, Change, ChangeKind, Version, decode_version, encode_history_key,
                             encode_version, version_of)
from textual.memory import Memory, MemoryType, LifecycleTier

OLD = Memory(id="m1", tenant="t1", user="u1", type=MemoryType.FACT, content="Ann lives in Oslo", created_at=1.0,
             updated_at=1.0, last_access_at=1.0, metadata={"k": 1})
GOLDEN = (b'{"at":5.0,"before":{"content":"Ann lives in Oslo","tier":"hot"},"changed":["content","tier"],'
          b'"seq":3,"v":1,"who":"t1","why":"update"}')


def test_version_record_bytes_are_pinned():
    new = dataclasses.replace(OLD, content="Ann lives in Rome", tier=LifecycleTier.WARM, updated_at=5.0)
    version = version_of(OLD, new, Change("t1", ChangeKind.UPDATE, 5.0), 3)
    assert encode_version(version) == GOLDEN
    assert decode_version(GOLDEN) == version
    assert encode_history_key("t1", "m1", 3) == b"t1\x00m1\x00" + (3).to_bytes(8, "big")


def test_a_creation_has_no_previous_values_and_unknown_format_is_refused():
    assert version_of(None, OLD, Change("t1", ChangeKind.CREATE, 1.0), 1) == Version(1, 1.0, "t1", ChangeKind.CREATE)
    with pytest.raises(ValueError, match="format version"):
        decode_version(GOLDEN.replace(b'"v":1', b'"v":2'))


def test_every_kind_of_change_appends_a_version(clocked_store, clock):
    handle = clocked_store.for_tenant("t1")
    first = handle.add("Alice lives in Paris", user="alice")
    clock.advance(10)
    merged = handle.add("Alice lives in Paris", user="alice")  # said again: merged into the first
    assert merged.id == first.id
    handle.update(first.id, content="Alice lives in Paris, France", metadata={"mood": "ok"})
    handle.feedback(first.id, "positive")
    handle.update(first.id, tier="cold")
    handle.restore(first.id)
    newer = handle.add("Alice lives in Berlin", user="alice")  # supersedes the first
    clock.advance(15 * 86_400)  # the newer memory decays a tier; the archived one is kept (retention 30 days)
    handle.run_lifecycle()
    whys = [v.why.value for v in handle.history(first.id)]
    assert whys == ["create", "merge", "update", "feedback", "update", "restore", "supersede"]
    versions = handle.history(first.id)
    assert versions[2].changed == ("content", "metadata")
    assert versions[2].before["content"] == "Alice lives in Paris"
    assert versions[4].before == {"tier": "hot"} and versions[5].before["tier"] == "cold"
    assert versions[6].before["tier"] == "hot" and all(v.who == "t1" for v in versions)
    moved = handle.history(newer.id)
    assert [v.why.value for v in moved][0] == "supersede"
    assert moved[-1].why is ChangeKind.TIER and moved[-1].who == "lifecycle"
    assert [v.seq for v in handle.history(first.id, after=5, limit=1)] == [6]


def test_history_is_tenant_scoped_and_deleted_with_its_memory(store):
    mine = store.for_tenant("t1").add("Bob likes tea", user="bob")
    with pytest.raises(MemoryNotFoundError):
        store.for_tenant("t2").history(mine.id)
    store.for_tenant("t1").delete(mine.id)
    assert store.db.history("t1", mine.id) == []


def test_history_keeps_the_newest_versions_only(store):
    handle = store.for_tenant("t1")
    memory = handle.add("Carl counts", user="carl")
    for i in range(MAX_VERSIONS + 5):
        handle.update(memory.id, importance=(i % 10) / 10)
    versions = store.db.history("t1", memory.id, limit=10_000)
    assert len(versions) == MAX_VERSIONS
    assert versions[-1].seq == MAX_VERSIONS + 6 and versions[0].seq == 7
