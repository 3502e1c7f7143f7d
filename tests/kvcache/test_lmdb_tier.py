"""The LMDB tier on real files: pinned on-disk layout, LRU eviction when full, MapFullError retried, clear errors."""

from __future__ import annotations

import lmdb
import pytest

from kvcache import lmdb_tier
from kvcache.lmdb_tier import LmdbTier


def key(index: int, namespace: int = 1) -> bytes:
    return bytes([namespace]) * 16 + index.to_bytes(32, "big")


def raw_items(directory, name: bytes) -> dict[bytes, bytes]:
    env = lmdb.open(str(directory), max_dbs=5, readonly=True)
    with env.begin(db=env.open_db(name, create=False)) as txn:
        items = {bytes(k): bytes(v) for k, v in txn.cursor()}
    env.close()
    return items


def test_golden_on_disk_layout(tmp_path):
    tier = LmdbTier.open(tmp_path, 1 << 20)
    tier.put_many([(key(7), b"block-7"), (key(3), b"block-3")])
    tier.close()
    assert raw_items(tmp_path, b"meta") == {b"format": b"msc-kv-lmdb-1"}
    assert raw_items(tmp_path, b"blocks") == {key(3): b"block-3", key(7): b"block-7"}
    assert raw_items(tmp_path, b"order") == {bytes.fromhex("0000000000000000"): key(7),
                                             bytes.fromhex("0000000000000001"): key(3)}
    assert raw_items(tmp_path, b"seq") == {key(7): bytes(8), key(3): (1).to_bytes(8, "big")}


def test_reads_refresh_recency_so_the_least_recently_used_goes_first(tmp_path):
    tier = LmdbTier.open(tmp_path, 1 << 20)
    tier.put_many([(key(i), b"x" * 100) for i in range(3)])
    assert tier.read(key(0), bytes) == b"x" * 100
    assert tier.evict_oldest(150) == 2
    assert tier.keys() == [key(0)]


def test_a_full_map_evicts_and_keeps_accepting(tmp_path, monkeypatch):
    monkeypatch.setattr(lmdb_tier, "HIGH_WATER", 100.0)  # no early eviction: every write runs into MapFullError
    tier = LmdbTier.open(tmp_path, 256 << 10)
    tier.pin([key(0, namespace=9)])
    tier.put_many([(key(0, namespace=9), b"p" * 3000)])
    for i in range(400):  # about 1.2 MiB into a 256 KiB map
        tier.put_many([(key(i), bytes([i % 256]) * 3000)])
        assert tier.read(key(i), bytes) == bytes([i % 256]) * 3000
    usage = tier.usage()
    assert 10 < usage.entries < 85 and usage.bytes <= 256 << 10
    assert not tier.contains(key(0)) and tier.contains(key(0, namespace=9))


def test_lookups_read_an_index_that_always_names_exactly_the_stored_blocks(tmp_path, monkeypatch):
    """`contains` and `keys` answer from the `seq` database (never a block's pages): it must name what `blocks` holds
    after writes, rewrites, eviction by a full map and explicit eviction."""
    monkeypatch.setattr(lmdb_tier, "HIGH_WATER", 100.0)
    tier = LmdbTier.open(tmp_path, 256 << 10)
    for i in range(150):
        tier.put_many([(key(i % 97), bytes([i % 256]) * 3000)])
        if i % 10 == 9:
            tier.evict([key(i - 3)])
    tier.close()
    stored = set(raw_items(tmp_path, b"blocks"))
    assert set(raw_items(tmp_path, b"seq")) == stored and 10 < len(stored) < 97
    tier = LmdbTier.open(tmp_path, 256 << 10)
    assert set(tier.keys()) == stored and all(tier.contains(key(i)) == (key(i) in stored) for i in range(97))


def test_a_map_full_of_pinned_blocks_drops_the_write_without_raising(tmp_path, caplog):
    tier = LmdbTier.open(tmp_path, 256 << 10)
    tier.pin([key(i) for i in range(100)])
    for i in range(100):
        tier.put_many([(key(i), b"p" * 3000)])
    stored = tier.keys()
    assert 0 < len(stored) == tier.usage().entries < 100
    assert all(tier.read(k, bytes) == b"p" * 3000 for k in stored)
    assert "not stored" in caplog.text


def test_entries_describe_a_namespace_for_the_planner(tmp_path):
    tier = LmdbTier.open(tmp_path, 1 << 20)
    tier.put_many([(key(0, 1), b"a" * 10), (key(1, 1), b"b" * 20), (key(0, 2), b"c" * 30)])
    tier.pin([key(1, 1)])
    entries = tier.entries(bytes([1]) * 16)
    assert [(e.key, e.size, e.last_access, e.pinned) for e in entries] == [
        (key(0, 1), 10, 0, False), (key(1, 1), 20, 1, True)]
    assert tier.evict(tier.keys(bytes([1]) * 16)) == 2 and tier.keys() == [key(0, 2)]


def test_an_unusable_directory_is_a_clear_error_naming_it(tmp_path):
    parent = tmp_path / "file"
    parent.write_text("not a directory")
    with pytest.raises(ValueError, match=f"cannot open the KV store in {parent / 'kv'}"):
        LmdbTier.open(parent / "kv", 1 << 20)


def test_a_store_of_another_format_is_refused(tmp_path):
    env = lmdb.open(str(tmp_path), max_dbs=5)
    with env.begin(write=True, db=env.open_db(b"meta")) as txn:
        txn.put(b"format", b"msc-kv-lmdb-0")
    env.close()
    with pytest.raises(ValueError, match="has format b'msc-kv-lmdb-0'"):
        LmdbTier.open(tmp_path, 1 << 20)


def test_unsynced_commits_are_still_read_back_after_reopening(tmp_path):
    tier = LmdbTier.open(tmp_path, 1 << 20, sync=False)
    tier.put_many([(key(1), b"data")])
    tier.close()
    assert LmdbTier.open(tmp_path, 1 << 20).read(key(1), bytes) == b"data"


def test_warming_reads_the_newest_blocks_up_to_the_budget_and_leaves_recency_alone(tmp_path):
    sizes = {i: 100_000 + 1000 * i for i in range(8)}
    tier = LmdbTier.open(tmp_path, 16 << 20)
    for i, size in sizes.items():  # one write each: block 7 is the newest
        tier.put_many([(key(i), bytes([i]) * size)])
    tier.close()
    order_before = raw_items(tmp_path, b"order")
    tier = LmdbTier.open(tmp_path, 16 << 20)

    assert tier.warm(1) == sizes[7]
    assert tier.warm(sizes[7] + 1) == sizes[7] + sizes[6]
    assert tier.warm(1 << 30, chunk=3) == sum(sizes.values()), "chunks continue past each other"
    assert tier.warm(1 << 30, should_stop=lambda: True) == 0
    assert tier.warm(0) == 0
    tier.put_many([(key(8), b"new")])  # a write re-sequences what reads touched; warming touched nothing
    assert tier.evict_oldest(1) == 1 and key(0) not in tier.keys()
    tier.close()
    assert {k: v for k, v in raw_items(tmp_path, b"order").items() if v != key(8)} == {
        k: v for k, v in order_before.items() if v != key(0)}


def test_warming_an_empty_store_reads_nothing(tmp_path):
    tier = LmdbTier.open(tmp_path, 1 << 20)
    assert tier.warm(1 << 20) == 0
    tier.close()
