"""The tiered store on real LMDB files: promotion, persistence, corruption, a full disk, pins and namespaces."""

from __future__ import annotations

import os

import lmdb
import numpy as np
import pytest

from kvcache.store import StoreConfig, TieredStore

SHAPE = (2, 4, 64)  # 1 KiB of int16 per block


def key(namespace: int, index: int) -> bytes:
    return bytes([namespace]) * 16 + index.to_bytes(32, "big")


def block(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 1000, SHAPE, dtype=np.int16)


def open_store(tmp_path, ram=1 << 20, disk=1 << 22, with_ram=True) -> TieredStore:
    return TieredStore.open(StoreConfig(tmp_path / "kv", ram, disk), with_ram=with_ram)


def read(store: TieredStore, k: bytes) -> np.ndarray | None:
    out = np.empty(SHAPE, dtype=np.int16)
    return out if store.get_into(k, out, "bfloat16", "LBHNC") else None


def test_blocks_survive_a_restart_and_are_promoted_to_ram(tmp_path):
    store = open_store(tmp_path)
    store.put_many([(key(1, i), block(i)) for i in range(5)], "bfloat16", "LBHNC")
    store.close()
    store = open_store(tmp_path)
    assert store.lookup([key(1, i) for i in range(7)]) == 5
    assert np.array_equal(read(store, key(1, 3)), block(3))
    assert read(store, key(1, 3)) is not None
    stats = store.stats()
    assert stats["disk"]["hits"] == 1 and stats["ram"]["hits"] == 1 and stats["ram"]["entries"] == 1


def test_a_corrupt_disk_block_is_a_counted_miss_and_is_dropped(tmp_path):
    store = open_store(tmp_path, with_ram=False)
    store.put_many([(key(1, 0), block(0))], "bfloat16", "LBHNC")
    store.close()
    env = lmdb.open(str(tmp_path / "kv"), max_dbs=4)
    with env.begin(write=True, db=env.open_db(b"blocks")) as txn:
        data = bytearray(txn.get(key(1, 0)))
        data[-1] ^= 0xFF
        txn.put(key(1, 0), bytes(data))
    env.close()
    store = open_store(tmp_path, with_ram=False)
    assert read(store, key(1, 0)) is None
    assert store.stats()["disk"]["corrupt"] == 1
    assert not store.contains(key(1, 0))


def test_a_full_disk_evicts_the_oldest_and_keeps_accepting(tmp_path):
    store = open_store(tmp_path, ram=0, disk=2 << 20, with_ram=False)
    store.pin([key(9, 0)])
    store.put_many([(key(9, 0), block(0))], "bfloat16", "LBHNC")
    for i in range(1, 4000):  # about 4 MiB of blocks into a 2 MiB map
        store.put_many([(key(1, i), block(i))], "bfloat16", "LBHNC")
        assert store.contains(key(1, i))
    assert not store.contains(key(1, 1))
    assert store.stats()["disk"]["bytes"] <= 2 << 20
    assert store.contains(key(9, 0)), "a pinned block is never evicted"


def test_drop_and_prefetch_a_namespace(tmp_path):
    store = open_store(tmp_path)
    store.put_many([(key(1, i), block(i)) for i in range(3)] + [(key(2, 0), block(9))], "bfloat16", "LBHNC")
    assert store.drop_namespace(bytes([1]) * 16) == 3
    assert store.lookup([key(1, 0)]) == 0 and store.contains(key(2, 0))
    store.close()
    store = open_store(tmp_path)
    assert store.prefetch(bytes([2]) * 16) == 1
    assert store.stats()["ram"]["entries"] == 1


def test_an_unwritable_directory_is_a_clear_error(tmp_path):
    if os.geteuid() == 0:
        target = tmp_path / "file"
        target.write_text("not a directory")
    else:
        target = tmp_path / "ro"
        target.mkdir(mode=0o500)
    with pytest.raises(ValueError, match="cannot open the KV store"):
        TieredStore.open(StoreConfig(target / "kv", 1 << 20, 1 << 20))
