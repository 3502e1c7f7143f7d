"""The planner: evictions never leave a tier over budget (unless all that is left is pinned), never touch a pinned
entry, and promotions only fill free space."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kvcache.policy import Entry, Plan, bytes_to_free, choose_victims, fitting_prefix, plan

entries = st.lists(
    st.builds(Entry, key=st.binary(min_size=2, max_size=2), size=st.integers(1, 100),
              last_access=st.integers(0, 50), hits=st.integers(0, 5), pinned=st.booleans()),
    unique_by=lambda e: e.key, max_size=30)


def size_of(items: list[Entry], keys) -> int:
    keys = set(keys)
    return sum(e.size for e in items if e.key in keys)


@given(entries, st.integers(0, 1500), st.integers(0, 200))
def test_evictions_respect_budget_and_pins(resident, budget, incoming):
    moves = plan(resident, budget, incoming_bytes=incoming)
    evicted = set(moves.evict)
    assert not any(e.pinned for e in resident if e.key in evicted)
    left = [e for e in resident if e.key not in evicted]
    assert sum(e.size for e in left) + incoming <= budget or all(e.pinned for e in left)


@given(entries, st.integers(0, 1500))
def test_nothing_is_evicted_from_a_tier_within_budget(resident, budget):
    if sum(e.size for e in resident) <= budget:
        assert plan(resident, budget).evict == ()


@given(entries, entries, st.integers(0, 1500))
def test_promotions_fit_the_space_left_and_skip_resident_blocks(resident, candidates, budget):
    moves = plan(resident, budget, candidates)
    resident_keys = {e.key for e in resident}
    assert not set(moves.promote) & resident_keys
    assert len(set(moves.promote)) == len(moves.promote)
    kept = sum(e.size for e in resident if e.key not in set(moves.evict))
    assert kept + size_of(candidates, moves.promote) <= max(budget, kept)


def test_least_recently_used_goes_first_then_fewest_hits():
    resident = [Entry(b"new", 10, 3), Entry(b"old-hot", 10, 1, hits=5), Entry(b"old-cold", 10, 1, hits=0),
                Entry(b"oldest-pinned", 10, 0, pinned=True)]
    assert plan(resident, 25).evict == (b"old-cold", b"old-hot")


def test_hottest_candidates_are_promoted_first():
    candidates = [Entry(b"cold", 10, 9, hits=0), Entry(b"hot", 10, 1, hits=7), Entry(b"warm", 10, 5, hits=2)]
    assert plan([Entry(b"r", 10, 0)], 30, candidates) == Plan(evict=(), promote=(b"hot", b"warm"))


def test_choose_victims_stops_as_soon_as_the_budget_fits():
    def oldest_first():
        yield Entry(b"a", 10, 0)
        yield Entry(b"b", 10, 1)
        raise AssertionError("read past what was needed")

    assert choose_victims(oldest_first(), used_bytes=25, budget_bytes=15) == [b"a"]


@given(st.integers(0, 10_000), st.lists(st.integers(1, 3000), max_size=10), st.integers(1, 10_000),
       st.floats(0.1, 1.0))
def test_an_owner_over_its_budget_frees_to_its_low_water_and_keeps_what_then_fits(used, sizes, budget, low_water):
    """`bytes_to_free` is 0 exactly when everything fits; freeing it (when there is that much to free) leaves room for
    every incoming block; `fitting_prefix` never passes the budget and stops only at a block that would."""
    to_free = bytes_to_free(used, sum(sizes), budget, low_water)
    assert (to_free == 0) == (used + sum(sizes) <= budget)
    if to_free and to_free <= used:
        assert used - to_free + sum(sizes) <= budget
        assert fitting_prefix(sizes, used - to_free, budget) == len(sizes)
    kept = fitting_prefix(sizes, used, budget)
    assert used + sum(sizes[:kept]) <= budget or kept == 0
    assert kept == len(sizes) or used + sum(sizes[:kept + 1]) > budget
