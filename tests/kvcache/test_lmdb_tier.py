"""The LMDB tier on real files: pinned on-disk layout, LRU eviction when full, MapFullError retried, clear errors,
and each tenant's scope held to its budget by evicting its own blocks only."""

from __future__ import annotations

import tempfile
from pathlib import Path

import lmdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcache import lmdb_tier
from kvcache.keys import tenant_scope
from kvcache.lmdb_tier import LmdbTier


def key(index: int, namespace: int = 1) -> bytes:
    return bytes([namespace]) * 16 + index.to_bytes(32, "big")


def raw_items(directory, name: bytes) -> dict[bytes, bytes]:
    env = lmdb.open(str(directory), max_dbs=lmdb_tier.MAX_DBS, readonly=True)
    with env.begin(db=env.open_db(name, create=False)) as txn:
        items = {bytes(k): bytes(v) for k, v in txn.cursor()}
    env.close()
    return items


def test_golden_on_disk_layout(tmp_path):
    tier = LmdbTier.open(tmp_path, 1 << 20)
    tier.register_namespace(bytes([1]) * 16, "tenant:a")
    tier.put_many([(key(7), b"block-7"), (key(3), b"block-3"), (key(0, namespace=2), b"x")])
    tier.close()
    assert raw_items(tmp_path, b"meta") == {b"format": b"msc-kv-lmdb-2"}
    assert raw_items(tmp_path, b"blocks") == {key(3): b"block-3", key(7): b"block-7", key(0, 2): b"x"}
    assert raw_items(tmp_path, b"order") == {bytes.fromhex("0000000000000000"): key(7),
                                             bytes.fromhex("0000000000000001"): key(3),
                                             bytes.fromhex("0000000000000002"): key(0, 2)}
    assert raw_items(tmp_path, b"seq") == {key(7): bytes(8), key(3): (1).to_bytes(8, "big"),
                                           key(0, 2): (2).to_bytes(8, "big")}
    assert raw_items(tmp_path, b"scopes") == {bytes([1]) * 16: b"tenant:a"}  # namespace 2 was never registered
    assert raw_items(tmp_path, b"scope_bytes") == {b"tenant:a": (14).to_bytes(8, "big")}


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


def scoped(tmp_path, tenant_budget: int, budget: int = 16 << 20) -> LmdbTier:
    """A tier whose namespace 1 is tenant a's, 2 tenant b's and 3 public."""
    tier = LmdbTier.open(tmp_path, budget, tenant_budget_bytes=tenant_budget)
    for namespace, scope in ((1, tenant_scope("a")), (2, tenant_scope("b")), (3, "public")):
        tier.register_namespace(bytes([namespace]) * 16, scope)
    return tier


def test_a_tenant_over_its_budget_loses_its_own_oldest_blocks_never_another_scopes(tmp_path):
    tier = scoped(tmp_path, tenant_budget=10_000)
    tier.put_many([(key(i, 2), b"b" * 1000) for i in range(5)] + [(key(i, 3), b"p" * 1000) for i in range(20)])
    for i in range(40):  # tenant a writes 40 kB through a 10 kB budget, a block at a time
        tier.put_many([(key(i, 1), bytes([i]) * 1000)])
        assert tier.scope_bytes(tenant_scope("a")) <= 10_000
    kept = tier.keys(bytes([1]) * 16)
    assert key(39, 1) in kept and key(0, 1) not in kept and 8 <= len(kept) <= 10  # the newest stay
    assert len(tier.keys(bytes([2]) * 16)) == 5 and len(tier.keys(bytes([3]) * 16)) == 20
    assert tier.scope_bytes(tenant_scope("b")) == 5000 and tier.scope_bytes("public") == 20_000
    assert tier.scope_bytes(tenant_scope("a")) == 1000 * len(kept)


def test_reads_keep_a_tenants_hot_blocks_and_pinned_ones_are_never_evicted(tmp_path, caplog):
    tier = scoped(tmp_path, tenant_budget=10_000)  # over it, a scope is evicted down to 8,000 bytes
    tier.pin([key(0, 1), key(1, 1), key(2, 1)])
    tier.put_many([(key(i, 1), b"a" * 1000) for i in range(10)])
    tier.read(key(3, 1), bytes)  # 3 was used since: 4, 5 and 6 are now the least recently used unpinned blocks
    tier.put_many([(key(10, 1), b"a" * 1000)])
    assert set(tier.keys(bytes([1]) * 16)) == {key(i, 1) for i in (0, 1, 2, 3, 7, 8, 9, 10)}
    tier.put_many([(key(i, 1), b"a" * 1000) for i in range(11, 21)])  # 10 kB more: all unpinned blocks go, and
    assert set(tier.keys(bytes([1]) * 16)) == {key(i, 1) for i in (0, 1, 2, *range(11, 18))}  # 7 new ones fit
    assert tier.scope_bytes(tenant_scope("a")) == 10_000 and "3 of its blocks not stored" in caplog.text


def test_without_a_tenant_budget_or_a_registered_scope_nothing_is_limited(tmp_path):
    tier = scoped(tmp_path, tenant_budget=0)
    tier.put_many([(key(i, 1), b"a" * 1000) for i in range(20)] + [(key(i, 9), b"n" * 1000) for i in range(20)])
    assert len(tier.keys()) == 40 and tier.scope_bytes(tenant_scope("a")) == 20_000
    limited = LmdbTier.open(tmp_path / "limited", 16 << 20, tenant_budget_bytes=1000)
    limited.put_many([(key(i, 9), b"n" * 1000) for i in range(20)])  # namespace 9: no scope registered
    assert len(limited.keys()) == 20


def test_an_older_store_is_upgraded_and_counts_blocks_once_their_namespace_registers(tmp_path):
    tier = LmdbTier.open(tmp_path, 1 << 20)
    tier.put_many([(key(i, 1), b"a" * 100) for i in range(3)])
    tier.close()
    env = lmdb.open(str(tmp_path), max_dbs=lmdb_tier.MAX_DBS)  # as format 1 left it: no scope databases
    with env.begin(write=True) as txn:
        for name in (b"scopes", b"scope_bytes"):
            txn.drop(env.open_db(name, txn=txn), delete=True)
        txn.put(b"format", b"msc-kv-lmdb-1", db=env.open_db(b"meta", txn=txn))
    env.close()
    tier = LmdbTier.open(tmp_path, 1 << 20, tenant_budget_bytes=250)
    assert tier.scope_bytes(tenant_scope("a")) == 0
    tier.register_namespace(bytes([1]) * 16, tenant_scope("a"))
    tier.register_namespace(bytes([1]) * 16, tenant_scope("a"))  # again: counted once
    assert tier.scope_bytes(tenant_scope("a")) == 300
    tier.put_many([(key(3, 1), b"a" * 100)])
    assert tier.scope_bytes(tenant_scope("a")) <= 250 and key(3, 1) in tier.keys()
    with pytest.raises(ValueError, match="registered to scope 'tenant:a'"):
        tier.register_namespace(bytes([1]) * 16, tenant_scope("b"))
    tier.close()
    assert raw_items(tmp_path, b"meta") == {b"format": b"msc-kv-lmdb-2"}


operations = st.lists(st.tuples(st.sampled_from(["put", "evict", "pin", "read"]), st.integers(1, 4),
                                st.lists(st.integers(0, 15), min_size=1, max_size=6), st.integers(1, 3000)),
                      max_size=30)


@settings(max_examples=40, deadline=None)
@given(operations)
def test_scope_bytes_always_equal_a_full_count_and_tenants_stay_within_budget(operations):
    """Random puts (of re-stored keys too), evictions, pins and reads over two tenants, the public scope and an
    unregistered namespace (4): every scope's count equals its stored blocks' bytes after every step, a tenant ends
    every write within its budget unless its pinned blocks alone pass it, and a write never removes another scope's
    blocks."""
    budget = 8000
    with tempfile.TemporaryDirectory() as directory:
        tier = scoped(Path(directory), tenant_budget=budget)
        scopes = {1: tenant_scope("a"), 2: tenant_scope("b"), 3: "public"}
        pinned: set[bytes] = set()
        for kind, namespace, indexes, size in operations:
            keys = [key(i, namespace) for i in indexes]
            before = {n: set(tier.keys(bytes([n]) * 16)) for n in (1, 2, 3, 4) if n != namespace}
            if kind == "put":
                tier.put_many([(k, bytes([namespace]) * size) for k in keys])
                assert {n: set(tier.keys(bytes([n]) * 16)) for n in before} == before
            elif kind == "evict":
                tier.evict(keys)
            elif kind == "pin":
                tier.pin(keys)
                pinned.update(keys)
            else:
                tier.read(keys[0], bytes)
            for n, scope in scopes.items():
                stored = [len(tier.read(k, bytes)) for k in tier.keys(bytes([n]) * 16)]
                assert tier.scope_bytes(scope) == sum(stored)
                pinned_bytes = sum(len(tier.read(k, bytes)) for k in tier.keys(bytes([n]) * 16) if k in pinned)
                if n in (1, 2) and kind == "put":
                    assert sum(stored) <= max(budget, pinned_bytes)
        tier.close()
