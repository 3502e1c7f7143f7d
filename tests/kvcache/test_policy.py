"""Eviction never leaves a tier over budget (unless all that is left is pinned) and never evicts a pinned block."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kvcache.policy import choose_victims
from kvcache.ram_tier import RamTier

entries = st.lists(st.tuples(st.binary(min_size=4, max_size=4), st.integers(1, 100)), unique_by=lambda e: e[0],
                   max_size=30)


@given(entries, st.integers(0, 1000), st.data())
def test_victims_respect_budget_and_pins(items, budget, data):
    pinned = set(data.draw(st.lists(st.sampled_from([k for k, _ in items]), unique=True))) if items else set()
    used = sum(size for _, size in items)
    victims = choose_victims(items, pinned, used, budget)
    assert not set(victims) & pinned
    remaining = used - sum(size for key, size in items if key in victims)
    assert remaining <= budget or all(key in pinned or key in victims for key, _ in items)


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(1, 50)), max_size=60), st.integers(10, 200))
def test_ram_tier_stays_within_budget_and_keeps_pins(puts, budget):
    tier = RamTier(budget)
    tier.pinned.add(b"k0")
    for key, size in puts:
        tier.put(f"k{key}".encode(), b"x" * size)
        pinned_bytes = len(tier.get(b"k0") or b"")
        assert tier.used_bytes <= max(budget, pinned_bytes)
    assert tier.used_bytes == sum(len(tier.get(k) or b"") for k in [f"k{i}".encode() for i in range(21)])


def test_least_recently_used_goes_first():
    tier = RamTier(30)
    tier.put(b"a", b"x" * 10)
    tier.put(b"b", b"x" * 10)
    tier.put(b"c", b"x" * 10)
    tier.get(b"a")
    evicted = tier.put(b"d", b"x" * 10)
    assert [key for key, _ in evicted] == [b"b"]
