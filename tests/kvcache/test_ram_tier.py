"""The RAM tier: LRU by bytes within its budget, pins kept, evictions handed back for demotion."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kvcache.ram_tier import RamTier


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(1, 50)), max_size=60), st.integers(10, 200))
def test_stays_within_budget_keeps_pins_and_hands_back_every_eviction(puts, budget):
    tier = RamTier(budget)
    tier.pin([b"k0"])
    stored: dict[bytes, bytes] = {}
    for index, size in puts:
        key, data = f"k{index}".encode(), bytes([index]) * size
        stored[key] = data
        for evicted_key, evicted_data in tier.put(key, data):
            assert evicted_key != b"k0" and evicted_data == stored.pop(evicted_key)
        pinned_bytes = len(tier.get(b"k0") or b"")
        assert tier.used_bytes <= max(budget, pinned_bytes)
    assert set(tier.keys()) == set(stored)
    assert tier.used_bytes == sum(len(d) for d in stored.values()) == tier.usage().bytes


def test_least_recently_used_goes_first():
    tier = RamTier(30)
    tier.put_many([(b"a", b"x" * 10), (b"b", b"x" * 10), (b"c", b"x" * 10)])
    tier.get(b"a")
    assert tier.put(b"d", b"y" * 10) == [(b"b", b"x" * 10)]


def test_a_block_larger_than_the_budget_is_handed_straight_back():
    tier = RamTier(10)
    assert tier.put(b"big", b"x" * 11) == [(b"big", b"x" * 11)]
    assert len(tier) == 0


def test_unpinned_blocks_become_evictable_and_prefix_selects_a_namespace():
    tier = RamTier(20)
    tier.pin([b"n1-a"])
    tier.put_many([(b"n1-a", b"x" * 10), (b"n2-b", b"x" * 10)])
    assert tier.put(b"n1-c", b"x" * 10) == [(b"n2-b", b"x" * 10)]
    tier.unpin([b"n1-a"])
    assert [k for k, _ in tier.put(b"n2-d", b"x" * 10)] == [b"n1-a"]
    assert tier.keys(b"n1") == [b"n1-c"] and tier.read(b"n1-c", bytes) == b"x" * 10
