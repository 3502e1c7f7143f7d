"""The tiered store on real LMDB files: promotion, persistence, corruption, a full disk, demotion, pins,
namespaces, statistics and concurrent use."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import lmdb
import numpy as np
import pytest

from kvcache.block_format import encode
from kvcache.store import StoreConfig, TieredStore

SHAPE = (2, 4, 64)  # 1 KiB of int16 per block
BLOCK_BYTES = 1024 + 44  # payload + header of a 3-d block


def key(namespace: int, index: int) -> bytes:
    return bytes([namespace]) * 16 + index.to_bytes(32, "big")


def block(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 1000, SHAPE, dtype=np.int16)


def open_store(tmp_path, ram=1 << 20, disk=1 << 22, with_ram=True) -> TieredStore:
    return TieredStore.open(StoreConfig(tmp_path / "kv", ram, disk), with_ram=with_ram)


def read(store: TieredStore, k: bytes) -> np.ndarray | None:
    out = np.empty(SHAPE, dtype=np.int16)
    return out if store.get_into(k, out, "bfloat16", "LBHNC") else None


def corrupt_on_disk(directory, k: bytes) -> None:
    env = lmdb.open(str(directory), max_dbs=5)
    with env.begin(write=True, db=env.open_db(b"blocks")) as txn:
        data = bytearray(txn.get(k))
        data[-1] ^= 0xFF
        txn.put(k, bytes(data))
    env.close()


def test_blocks_survive_a_restart_and_are_promoted_to_ram(tmp_path):
    store = open_store(tmp_path)
    store.put_many([(key(1, i), block(i)) for i in range(5)], "bfloat16", "LBHNC")
    store.close()
    store = open_store(tmp_path)
    assert store.lookup_prefix([key(1, i) for i in range(7)]) == 5
    assert np.array_equal(read(store, key(1, 3)), block(3))
    assert np.array_equal(read(store, key(1, 3)), block(3))
    stats = store.stats()
    assert stats["disk"]["hits"] == 1 and stats["ram"]["hits"] == 1 and stats["ram"]["entries"] == 1
    assert stats["ram"]["misses"] == 1 and stats["ram"]["bytes"] == BLOCK_BYTES


def test_a_deferred_promotion_copies_the_block_up_only_when_asked(tmp_path):
    store = open_store(tmp_path)
    store.put_many([(key(1, i), block(i)) for i in range(3)], "bfloat16", "LBHNC")
    store.close()
    store = open_store(tmp_path)
    out = np.empty(SHAPE, dtype=np.int16)
    assert store.get_into(key(1, 0), out, "bfloat16", "LBHNC", defer_promotion=True)
    assert np.array_equal(out, block(0)) and store.has_deferred()
    assert store.stats()["ram"]["entries"] == 0  # the load did not copy it up
    for i in (1, 2):
        assert store.get_into(key(1, i), out, "bfloat16", "LBHNC", defer_promotion=True)
    store.disk.evict([key(1, 1)])  # gone before its promotion: skipped
    assert store.promote_deferred(limit=2) == 2 and store.has_deferred()  # a chunk at a time, oldest first
    assert store.stats()["ram"]["entries"] == 1
    assert store.promote_deferred() == 1 and not store.has_deferred()
    assert store.stats()["ram"]["entries"] == 2
    assert np.array_equal(read(store, key(1, 0)), block(0)) and store.stats()["ram"]["hits"] == 1


def test_a_namespace_released_from_ram_stays_on_disk_and_can_be_prefetched_back(tmp_path):
    store = open_store(tmp_path)
    store.put_many([(key(1, i), block(i)) for i in range(3)] + [(key(2, 0), block(9))], "bfloat16", "LBHNC")
    assert store.ram_namespaces() == {(b"\x01" * 16).hex(): 3 * BLOCK_BYTES, (b"\x02" * 16).hex(): BLOCK_BYTES}
    store.disk.evict([key(1, 2)])  # only RAM holds this one now: releasing it writes it back to disk
    assert store.release_ram(b"\x01" * 16) == 3
    assert list(store.ram_namespaces()) == [(b"\x02" * 16).hex()]
    assert all(store.disk.contains(key(1, i)) for i in range(3))
    assert store.prefetch(b"\x01" * 16) == 3 and store.ram_namespaces()[(b"\x01" * 16).hex()] == 3 * BLOCK_BYTES


WRITER = """
import sys
from pathlib import Path
from kvcache.store import StoreConfig, TieredStore
from tests.kvcache.test_store import block, key
store = TieredStore.open(StoreConfig(Path(sys.argv[1]), 1 << 20, 1 << 24))
for i in range(100000):
    store.put_many([(key(1, i), block(i % 50))], "bfloat16", "LBHNC")
    print(i, flush=True)
"""


def test_a_killed_writer_loses_no_acknowledged_block(tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "kv")], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).parents[2])
    acknowledged = [int(writer.stdout.readline()) for _ in range(30)]
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    store = open_store(tmp_path)
    assert store.lookup_prefix([key(1, i) for i in acknowledged]) == 30
    assert all(np.array_equal(read(store, key(1, i)), block(i % 50)) for i in acknowledged)


def test_lookup_stops_at_the_first_missing_block(tmp_path):
    store = open_store(tmp_path)
    store.put_many([(key(1, i), block(i)) for i in (0, 1, 3)], "bfloat16", "LBHNC")
    assert store.lookup_prefix([key(1, i) for i in range(4)]) == 2
    assert store.lookup_prefix([]) == 0


def test_a_corrupt_disk_block_is_a_counted_miss_and_is_dropped(tmp_path):
    store = open_store(tmp_path)
    store.put(key(1, 0), block(0), "bfloat16", "LBHNC")
    store.close()
    corrupt_on_disk(tmp_path / "kv", key(1, 0))
    store = open_store(tmp_path)
    assert read(store, key(1, 0)) is None
    stats = store.stats()
    assert stats["disk"]["corrupt"] == 1 and stats["disk"]["hits"] == 0 and stats["disk"]["entries"] == 0
    assert not store.contains(key(1, 0)) and store.lookup_prefix([key(1, 0)]) == 0


def test_a_mislabelled_block_is_a_miss_not_data(tmp_path):
    store = open_store(tmp_path)
    store.put(key(1, 0), block(0), "bfloat16", "LBHNC")
    out = np.zeros(SHAPE, dtype=np.int16)
    assert not store.get_into(key(1, 0), out, "float16", "LBHNC")
    assert not out.any() and store.stats()["ram"]["corrupt"] == 1


def test_a_full_disk_evicts_the_oldest_and_keeps_accepting(tmp_path):
    store = open_store(tmp_path, disk=2 << 20, with_ram=False)
    store.pin([key(9, 0)])
    store.put(key(9, 0), block(0), "bfloat16", "LBHNC")
    for i in range(1, 4000):  # about 4 MiB of blocks into a 2 MiB map
        store.put(key(1, i), block(i % 50), "bfloat16", "LBHNC")
        assert store.contains(key(1, i))
    assert not store.contains(key(1, 1))
    assert np.array_equal(read(store, key(1, 3999)), block(3999 % 50))
    assert store.stats()["disk"]["bytes"] <= 2 << 20
    assert store.contains(key(9, 0)), "a pinned block is never evicted"


def test_ram_evictions_are_demoted_to_disk_when_disk_lost_them(tmp_path):
    store = open_store(tmp_path, ram=2 * BLOCK_BYTES)
    store.put(key(1, 0), block(0), "bfloat16", "LBHNC")
    store.disk.evict([key(1, 0)])  # as if disk had evicted it while RAM kept it
    store.put_many([(key(1, 1), block(1)), (key(1, 2), block(2))], "bfloat16", "LBHNC")
    assert store.stats()["demoted"] == 1 and store.disk.contains(key(1, 0))
    assert store.stats()["ram"]["entries"] == 2
    assert np.array_equal(read(store, key(1, 0)), block(0))


def test_pinned_blocks_stay_in_ram_until_unpinned(tmp_path):
    store = open_store(tmp_path, ram=2 * BLOCK_BYTES)
    store.pin([key(1, 0)])
    store.put_many([(key(1, i), block(i)) for i in range(4)], "bfloat16", "LBHNC")
    assert store.ram.contains(key(1, 0)) and store.ram.contains(key(1, 3)) and len(store.ram) == 2
    store.unpin([key(1, 0)])
    store.put(key(1, 4), block(4), "bfloat16", "LBHNC")
    assert not store.ram.contains(key(1, 0)) and store.disk.contains(key(1, 0))


def test_drop_a_namespace_from_every_tier(tmp_path):
    store = open_store(tmp_path)
    store.put_many([(key(1, i), block(i)) for i in range(3)] + [(key(2, 0), block(9))], "bfloat16", "LBHNC")
    assert store.drop_namespace(bytes([1]) * 16) == 3
    assert store.lookup_prefix([key(1, 0)]) == 0 and store.contains(key(2, 0))
    assert store.stats()["ram"]["entries"] == 1 and store.stats()["disk"]["entries"] == 1


def test_prefetch_fills_free_ram_with_the_most_recently_used_blocks(tmp_path):
    store = open_store(tmp_path)
    store.put_many([(key(2, i), block(i)) for i in range(4)] + [(key(3, 0), block(9))], "bfloat16", "LBHNC")
    store.close()
    store = open_store(tmp_path, ram=2 * BLOCK_BYTES)
    assert store.prefetch(bytes([2]) * 16) == 2
    assert sorted(store.ram.keys()) == [key(2, 2), key(2, 3)]
    assert store.prefetch(bytes([2]) * 16) == 0, "a full RAM tier is not churned by prefetching"
    assert np.array_equal(read(store, key(2, 3)), block(3)) and store.stats()["ram"]["hits"] == 1


def test_stats_report_every_tier(tmp_path):
    store = open_store(tmp_path)
    store.put(key(1, 0), block(0), "bfloat16", "LBHNC")
    read(store, key(1, 0))
    read(store, key(1, 1))
    stats = store.stats()
    for tier in ("ram", "disk"):
        assert {"entries", "bytes", "budget_bytes", "hits", "misses", "corrupt", "read_bytes_per_s"} <= set(stats[tier])
    assert stats["ram"]["hits"] == 1 and stats["ram"]["misses"] == 1 and stats["disk"]["misses"] == 1
    assert stats["ram"]["read_bytes_per_s"] > 0 and stats["puts"] == 1


def test_concurrent_readers_and_a_writer_see_only_whole_blocks(tmp_path):
    store = open_store(tmp_path, ram=40 * BLOCK_BYTES)
    store.put_many([(key(1, i), block(i)) for i in range(100)], "bfloat16", "LBHNC")
    errors: list[str] = []

    def reader(offset: int) -> None:
        for n in range(300):
            i = (n * 7 + offset) % 100
            got = read(store, key(1, i))
            if got is None or not np.array_equal(got, block(i)):
                errors.append(f"block {i}")

    def writer() -> None:
        for n in range(100, 200):
            store.put_many([(key(1, n), block(n))], "bfloat16", "LBHNC")

    threads = [threading.Thread(target=reader, args=(o,)) for o in range(3)] + [threading.Thread(target=writer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and store.lookup_prefix([key(1, i) for i in range(200)]) == 200
    assert store.stats()["ram"]["bytes"] <= 40 * BLOCK_BYTES


def test_an_unwritable_directory_is_a_clear_error(tmp_path):
    target = tmp_path / "file"
    target.write_text("not a directory")
    with pytest.raises(ValueError, match=f"cannot open the KV store in {target / 'kv'}"):
        TieredStore.open(StoreConfig(target / "kv", 1 << 20, 1 << 20))


def test_header_size_assumed_by_these_tests():
    assert len(encode(block(0), "bfloat16", "LBHNC")) == BLOCK_BYTES
