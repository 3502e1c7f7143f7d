"""The record-store contract (`textual.record_store`), run on both implementations: LMDB files in tmp_path and a real
PostgreSQL database (the session's throwaway server). Same calls, same answers."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from textual import lmdb_store, pg_memories
from textual.history import Change, ChangeKind, Version
from textual.memory import KnowledgeBase, LifecycleTier, Memory, MemoryType, Space
from textual.record_store import EntryKind, LogEntry, net_changes

VECTOR = np.arange(4, dtype=np.float32)


@pytest.fixture(params=["lmdb", "postgresql"])
def records(request, tmp_path):
    if request.param == "lmdb":
        opened = lmdb_store.LmdbStore.open(tmp_path / "lmdb")
    else:
        from textual.pg_store import PgStore

        opened = PgStore.open(request.getfixturevalue("postgres_url"))
    yield opened
    opened.close()


def memory(number: int, tenant: str = "t1", user: str = "u", created_at: float = 100.0, content: str = "",
           tier: LifecycleTier = LifecycleTier.HOT) -> Memory:
    return Memory(id=f"m{number:03d}", tenant=tenant, user=user, type=MemoryType.FACT,
                  content=content or f"fact number {number}", created_at=created_at, updated_at=created_at + 1,
                  last_access_at=created_at, tier=tier)


def created(at: float = 5.0) -> Change:
    return Change("t1", ChangeKind.CREATE, at)


def test_records_and_vectors_read_back_per_tenant_in_id_order(records):
    records.put_many([(memory(2), VECTOR), (memory(1), VECTOR + 1), (memory(1, tenant="t2"), VECTOR)])
    assert [m.id for m in records.memories("t1")] == ["m001", "m002"]
    assert [m.id for m in records.each_memory("t1", batch=1)] == ["m001", "m002"]
    assert records.get("t1", "m002") == memory(2) and records.get("t1", "absent") is None
    assert np.array_equal(records.get_vector("t1", "m001"), VECTOR + 1)
    assert [m.id for m, _ in records.get_many("t1", ["m002", "absent", "m001"])] == ["m002", "m001"]
    assert sorted(records.vectors("t1")) == ["m001", "m002"]
    assert records.tenants() == ["t1", "t2"]
    records.delete_many("t2", ["m001"])
    assert records.memories("t2") == [] and records.get("t1", "m001") is not None


def test_a_record_only_write_keeps_the_stored_vector(records):
    records.put_many([(memory(1), VECTOR)])
    records.put_many([(memory(1, content="changed"), None)])
    assert records.get("t1", "m001").content == "changed"
    assert np.array_equal(records.get_vector("t1", "m001"), VECTOR)


def test_a_memory_written_twice_in_one_batch_is_stored_as_the_last_write_leaves_it(records):
    records.put_many([(memory(2), VECTOR)])
    records.put_many([(memory(1), VECTOR + 1), (memory(1, content="then changed"), None), (memory(2), VECTOR + 2),
                      (memory(2, content="also changed"), None)], [created(), created(6.0), created(), created(6.0)])
    assert [(m.id, m.content) for m in records.memories("t1")] == [("m001", "then changed"), ("m002", "also changed")]
    assert np.array_equal(records.get_vector("t1", "m001"), VECTOR + 1)
    assert np.array_equal(records.get_vector("t1", "m002"), VECTOR + 2)
    assert [(e.memory_id, e.kind) for e in records.changes("t1", 1)] == [
        ("m001", EntryKind.UPSERT), ("m001", EntryKind.RECORD), ("m002", EntryKind.UPSERT), ("m002", EntryKind.RECORD)]
    assert [v.seq for v in records.history("t1", "m001")] == [1, 2] and records.usage("t1")[0] == 2


def test_the_change_log_numbers_every_stored_and_deleted_memory_without_gaps(records):
    assert records.version("t1") == 0 and records.changes("t1", 0) == []
    records.put_many([(memory(1), VECTOR), (memory(2), VECTOR)])
    records.put_many([(memory(1, content="new words"), None)])
    assert records.delete_many("t1", ["m002", "absent"]) == ["m002"]
    records.delete_many("t1", ["absent"])
    assert records.version("t1") == 4
    assert records.changes("t1", 0) == [LogEntry(1, "m001", EntryKind.UPSERT), LogEntry(2, "m002", EntryKind.UPSERT),
                                        LogEntry(3, "m001", EntryKind.RECORD), LogEntry(4, "m002", EntryKind.DELETE)]
    assert [entry.seq for entry in records.changes("t1", 1, limit=2)] == [2, 3]
    assert records.changes("t1", 4) == [] and records.version("t2") == 0


def test_a_trimmed_log_says_so_instead_of_skipping_entries(records, monkeypatch):
    monkeypatch.setattr(lmdb_store, "LOG_KEEP", 3)
    monkeypatch.setattr(pg_memories, "LOG_KEEP", 3)
    for number in range(1, 6):
        records.put_many([(memory(number), VECTOR)])
    assert records.changes("t1", 1) is None
    assert [entry.seq for entry in records.changes("t1", 2)] == [3, 4, 5]


def test_concurrent_writers_of_one_tenant_get_distinct_consecutive_seqs(records):
    def write(start: int) -> None:
        for number in range(start, start + 10):
            records.put_many([(memory(number), VECTOR)])

    threads = [threading.Thread(target=write, args=(start,)) for start in (0, 100, 200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entries = records.changes("t1", 0)
    assert [entry.seq for entry in entries] == list(range(1, 31)) and records.version("t1") == 30
    assert len({entry.memory_id for entry in entries}) == 30


def test_net_changes_keep_the_last_touch_and_whether_the_vector_moved():
    entries = [LogEntry(1, "a", EntryKind.RECORD), LogEntry(2, "b", EntryKind.UPSERT),
               LogEntry(3, "a", EntryKind.RECORD), LogEntry(4, "b", EntryKind.RECORD)]
    assert list(net_changes(entries).items()) == [("a", False), ("b", True)]


def test_usage_and_user_stats_follow_writes_and_deletes(records):
    records.put_many([(memory(1, user="ann"), VECTOR), (memory(2, user="bob"), VECTOR)])
    count, size = records.usage("t1")
    assert count == 2 and size > 2 * VECTOR.nbytes
    records.put_many([(memory(2, user="bob", tier=LifecycleTier.COLD), None)])
    assert records.users("t1") == [("ann", 1, {"hot": 1}, 101.0), ("bob", 1, {"cold": 1}, 101.0)]
    records.delete_many("t1", ["m001"])
    assert records.usage("t1")[0] == 1 and [user for user, *_ in records.users("t1")] == ["bob"]
    assert records.usage("nobody") == (0, 0)


def test_histories_are_written_with_their_change_replaced_by_imports_and_dropped_with_the_memory(records):
    records.put_many([(memory(1), VECTOR)], [created()])
    records.put_many([(memory(1, content="edited"), None)], [Change("t1", ChangeKind.UPDATE, 6.0)])
    versions = records.history("t1", "m001")
    assert [(v.seq, v.why, v.changed) for v in versions] == [(1, ChangeKind.CREATE, ()),
                                                              (2, ChangeKind.UPDATE, ("content",))]
    assert versions[1].before == {"content": "fact number 1"}
    assert [v.seq for v in records.history("t1", "m001", after=1)] == [2]
    imported = [Version(7, 1.0, "other", ChangeKind.CREATE), Version(9, 2.0, "other", ChangeKind.FEEDBACK)]
    records.put_many([(memory(1), None)], [Change("t1", ChangeKind.IMPORT, 7.0)], {"m001": imported})
    assert [(v.seq, v.why) for v in records.history("t1", "m001")] == [
        (1, ChangeKind.CREATE), (2, ChangeKind.FEEDBACK), (3, ChangeKind.IMPORT)]
    records.delete_many("t1", ["m001"])
    assert records.history("t1", "m001") == []


def test_usage_counts_history_versions_and_a_refused_growth_writes_nothing(records):
    records.put_many([(memory(1), VECTOR)])
    plain = records.usage("t1")[1]
    for n in range(3):
        records.put_many([(memory(1, content=f"edit {n}"), None)], [Change("t1", ChangeKind.UPDATE, 6.0 + n)])
    versions = records.usage("t1")[1] - plain
    assert versions > 0, "each version's bytes count in the tenant's usage"

    def refuse(tenant: str, stored: tuple[int, int], adding: int) -> None:
        assert tenant == "t1" and stored == records.usage("t1") and adding > 0
        raise PermissionError("over quota")

    with pytest.raises(PermissionError):
        records.put_many([(memory(1, content="one edit too many"), None)], [Change("t1", ChangeKind.UPDATE, 9.0)],
                         check_growth=refuse)
    assert records.get("t1", "m001").content == "edit 2" and len(records.history("t1", "m001")) == 3
    records.delete_many("t1", ["m001"])
    assert records.usage("t1") == (0, 0), "the versions' bytes leave with their memory"


def test_memories_come_in_time_order_from_since(records):
    records.put_many([(memory(1, created_at=30.0), VECTOR), (memory(2, created_at=10.0), VECTOR),
                      (memory(3, created_at=20.0), VECTOR), (memory(4, tenant="t2", created_at=15.0), VECTOR)])
    assert [m.id for m in records.memories_by_time("t1", batch=2)] == ["m002", "m003", "m001"]
    assert [m.id for m in records.memories_by_time("t1", since=15.0)] == ["m003", "m001"]


def test_knowledge_bases_spaces_and_the_embedding_model(records):
    kb = KnowledgeBase(id="hr", tenant="t1", name="HR", description="", created_at=1.0, metadata={"pinned": True})
    space = Space(id="team", tenant="t1", name="Team", created_at=1.0, members={"user:ann": "write"})
    records.put_kb(kb)
    records.put_space(space)
    assert records.get_kb("t1", "hr") == kb and records.kbs("t1") == [kb] and records.kbs("t2") == []
    assert records.get_space("t1", "team") == space and records.spaces("t1") == [space]
    records.put_many([(memory(1), VECTOR)])
    # a container goes with its memories in one transaction
    assert records.delete_many("t1", ["m001"], container=("kb", "hr")) == ["m001"]
    assert records.get_kb("t1", "hr") is None and records.get("t1", "m001") is None
    assert records.delete_many("t1", [], container=("space", "team")) == []
    assert records.get_space("t1", "team") is None
    assert records.embedding_model() is None
    records.set_embedding_model("minilm@abc")
    assert records.embedding_model() == "minilm@abc"


def test_a_store_that_opened_is_reachable_and_reports_no_outage(records):
    assert records.outage() is None
    assert records.disk_bytes() >= 0


def test_a_periodic_pass_is_claimed_by_the_first_node_that_asks(records):
    assert records.claim_pass("lifecycle", 3600)  # one node alone always claims (LMDB: there is only one)
