"""The LMDB map growth policy and gate (pure, threads only), and the store growing or refusing on real LMDB files."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from textual.errors import StoreFullError
from textual.lmdb_store import LmdbStore
from textual.map_growth import GrowthGate, next_map_size
from textual.memory import Memory, MemoryType
from textual.record import encode_memory, encode_vector

MIB = 1 << 20


def test_next_map_size_doubles_up_to_the_ceiling_then_stops():
    assert next_map_size(1 * MIB, 8 * MIB) == 2 * MIB
    assert next_map_size(5 * MIB, 8 * MIB) == 8 * MIB
    assert next_map_size(8 * MIB, 8 * MIB) is None


def test_a_resize_waits_for_open_transactions_and_blocks_new_ones():
    gate, events = GrowthGate(), []
    reader_in, resize_started = threading.Event(), threading.Event()

    def reader():
        with gate.shared():
            reader_in.set()
            resize_started.wait()
            time.sleep(0.05)
            events.append("read done")

    def resizer():
        reader_in.wait()
        resize_started.set()
        with gate.exclusive():
            events.append("resized")

    threads = [threading.Thread(target=reader), threading.Thread(target=resizer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert events == ["read done", "resized"]


def memory(tenant: str, number: int, size: int = 2000) -> Memory:
    return Memory(id=f"m{number:06d}", tenant=tenant, user="u", type=MemoryType.FACT, content="x" * size,
                  created_at=1.0, updated_at=1.0, last_access_at=1.0)


def fill(db: LmdbStore, tenant: str, count: int, start: int = 0) -> None:
    vector = np.ones(384, np.float32)
    for number in range(start, start + count):
        db.put_many([(memory(tenant, number), vector)])


def test_a_full_map_grows_and_the_write_goes_through(tmp_path):
    db = LmdbStore.open(tmp_path / "db", map_size=1 * MIB, max_map_size=16 * MIB)
    fill(db, "t", 800)  # ~3 MB of records and vectors: more than the first map holds
    assert db.map_size > 1 * MIB
    assert len(db.memories("t")) == 800
    db.close()


def test_a_full_map_at_its_ceiling_refuses_with_store_full_and_changes_nothing(tmp_path):
    db = LmdbStore.open(tmp_path / "db", map_size=1 * MIB, max_map_size=2 * MIB)
    with pytest.raises(StoreFullError, match="may not grow past 2097152 bytes"):
        fill(db, "t", 2000)
    stored = len(db.memories("t"))
    assert 0 < stored < 2000
    assert db.usage("t")[0] == stored
    db.delete_many("t", [f"m{n:06d}" for n in range(stored)])  # deleting still works in a full store
    fill(db, "t", 10, start=5000)
    assert db.usage("t")[0] == 10
    db.close()


def test_usage_counts_records_and_bytes_through_updates_and_deletes(tmp_path):
    db = LmdbStore.open(tmp_path / "db")
    vector = np.ones(384, np.float32)
    db.put_many([(memory("a", 1, 100), vector), (memory("a", 2, 100), vector), (memory("b", 1, 10), vector)])
    count, size = db.usage("a")
    assert count == 2 and size > 2 * (100 + 384 * 4)
    db.put_many([(memory("a", 1, 300), None)])  # an update: no new record, 200 more bytes of content
    assert db.usage("a") == (2, size + 200)
    db.delete_many("a", ["m000001", "absent"])
    freed = len(encode_memory(memory("a", 1, 300))) + len(encode_vector(vector))
    assert db.usage("a") == (1, size + 200 - freed)
    assert db.usage("b")[0] == 1 and db.usage("nobody") == (0, 0)
    db.close()


def test_usage_equals_a_full_count_and_is_counted_once_for_an_older_store(tmp_path):
    db = LmdbStore.open(tmp_path / "db")
    fill(db, "a", 7)
    db.delete_many("a", ["m000003"])
    kept = db.usage("a")
    with db._env.begin(write=True) as txn:  # as a store written before usage counting existed
        txn.drop(db._usage, delete=False)
        txn.delete(b"usage", db=db._meta)
    db.close()
    again = LmdbStore.open(tmp_path / "db")
    assert again.usage("a") == kept
    assert kept[0] == 6 and kept[1] == sum(len(v) for v in _values(again, "a"))
    again.close()


def test_each_memory_reads_in_batches_in_key_order(tmp_path):
    db = LmdbStore.open(tmp_path / "db")
    fill(db, "a", 11)
    fill(db, "b", 3)
    assert [m.id for m in db.each_memory("a", batch=4)] == [f"m{n:06d}" for n in range(11)]
    db.close()


def _values(db: LmdbStore, tenant: str) -> list[bytes]:
    with db._env.begin() as txn:
        return [value for _key, value in db._scan(txn, tenant, db._memories)] + \
               [value for _key, value in db._scan(txn, tenant, db._vectors)]
