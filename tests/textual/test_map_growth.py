"""The LMDB map growth policy and gate (pure, threads only), and the store growing or refusing on real LMDB files."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from textual.errors import StoreFullError
from textual.lmdb_store import LmdbStore
from textual.map_growth import GrowthGate, delete_reserve, next_map_size
from textual.memory import Memory, MemoryType

MIB = 1 << 20


def test_the_delete_reserve_is_an_eighth_of_the_ceiling_at_least_256_kib():
    assert delete_reserve(64 * MIB) == 8 * MIB
    assert delete_reserve(1 * MIB) == 256 * 1024
    assert delete_reserve(256 * 1024) == 128 * 1024


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
    assert db.adding_ceiling == 2 * MIB - 256 * 1024
    with pytest.raises(StoreFullError, match=f"may not grow past {2 * MIB - 256 * 1024} bytes for new data"):
        fill(db, "t", 2000)
    stored = len(db.memories("t"))
    assert 0 < stored < 2000
    assert db.usage("t")[0] == stored
    db.delete_many("t", [f"m{n:06d}" for n in range(stored)])  # deleting still works in a full store
    fill(db, "t", 10, start=5000)
    assert db.usage("t")[0] == 10
    db.close()
