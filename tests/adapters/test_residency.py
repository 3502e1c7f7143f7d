"""The residency planner: capacity, pins and waiting adapters are respected, plans are deterministic fixed points."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.residency import (AdapterState, Capacity, Move, ResidencyError, ResidencyState, adapter_value, apply,
                                can_pin, pin, plan, record_use, unpin)
from memcore.tiers import Tier
from memcore.value import ValueModel

NOW = 10_000.0
MODEL = ValueModel(half_life_s=100.0)


@st.composite
def scenarios(draw):
    """A state within capacity (pins included), a capacity, and waiting counts for some of its adapters."""
    max_loras = draw(st.integers(1, 3))
    capacity = Capacity(max_loras, draw(st.integers(max_loras, 5)))
    keys = draw(st.lists(st.sampled_from("abcdefghij"), unique=True, max_size=10))
    num_loaded = draw(st.integers(0, min(len(keys), capacity.max_cpu_loras)))
    num_pinned = draw(st.integers(0, min(len(keys), capacity.max_cpu_loras)))
    pinned = set(draw(st.permutations(keys))[:num_pinned])
    adapters = [AdapterState(key, tier=draw(st.sampled_from([Tier.ENGINE, Tier.CPU])) if i < num_loaded else Tier.DISK,
                             is_pinned=key in pinned, last_used=draw(st.floats(NOW - 1000, NOW)),
                             frequency=draw(st.sampled_from([0.0, 0.5, 1.0, 3.0, 10.0])),
                             size_bytes=draw(st.sampled_from([0, 1 << 20, 1 << 30])))
                for i, key in enumerate(keys)]
    waiting = {key: draw(st.integers(0, 4)) for key in draw(st.lists(st.sampled_from(keys), unique=True))} if keys \
        else {}
    return ResidencyState.of(adapters), capacity, waiting


def loaded_keys(state: ResidencyState) -> set[str]:
    return {a.key for a in state.loaded()}


@settings(deadline=None)  # pure and fast, but the test machine is shared
@given(scenarios())
def test_every_prefix_of_a_plan_fits_capacity_and_no_move_is_a_no_op(scenario):
    state, capacity, waiting = scenario
    moves = plan(state, capacity, waiting, NOW, MODEL)
    for i in range(len(moves) + 1):
        assert len(apply(state, moves[:i]).loaded()) <= capacity.max_cpu_loras  # apply raises on a no-op move
    assert len({m.adapter for m in moves}) == len(moves)


@settings(deadline=None)  # pure and fast, but the test machine is shared
@given(scenarios())
def test_pinned_and_busy_loaded_adapters_are_never_unloaded(scenario):
    state, capacity, waiting = scenario
    unloaded = {m.adapter for m in plan(state, capacity, waiting, NOW, MODEL) if m.kind == "unload"}
    assert not any(state.load(key).is_pinned for key in unloaded)
    assert not any(waiting.get(key, 0) > 0 for key in unloaded)


@settings(deadline=None)  # pure and fast, but the test machine is shared
@given(scenarios())
def test_only_waiting_or_pinned_adapters_are_loaded(scenario):
    state, capacity, waiting = scenario
    moves = plan(state, capacity, waiting, NOW, MODEL)  # prefetching into free slots is the tier scheduler's
    assert all(waiting.get(m.adapter, 0) > 0 or state.load(m.adapter).is_pinned for m in moves if m.kind == "load")


@settings(deadline=None)  # pure and fast, but the test machine is shared
@given(scenarios())
def test_plans_are_work_conserving(scenario):
    state, capacity, waiting = scenario
    after = apply(state, plan(state, capacity, waiting, NOW, MODEL))
    left_waiting = [a for a in after.adapters if waiting.get(a.key, 0) > 0 and not a.tier.is_loaded]
    if left_waiting:
        assert len(after.loaded()) == capacity.max_cpu_loras
        assert all(a.is_pinned or waiting.get(a.key, 0) > 0 for a in after.loaded())


@settings(deadline=None)  # pure and fast, but the test machine is shared
@given(scenarios(), st.randoms(use_true_random=False))
def test_plans_are_deterministic_and_fixed_points(scenario, rng):
    state, capacity, waiting = scenario
    moves = plan(state, capacity, waiting, NOW, MODEL)
    shuffled = list(state.adapters)
    rng.shuffle(shuffled)
    assert plan(ResidencyState.of(shuffled), capacity, dict(reversed(waiting.items())), NOW, MODEL) == moves
    assert plan(apply(state, moves), capacity, waiting, NOW, MODEL) == ()


@settings(deadline=None)  # pure and fast, but the test machine is shared
@given(scenarios(), st.integers(1, 3))
def test_a_state_over_capacity_is_trimmed_without_touching_pins(scenario, shrink):
    state, capacity, waiting = scenario
    smaller = Capacity(1, max(1, capacity.max_cpu_loras - shrink))
    if state.num_pinned() > smaller.max_cpu_loras:
        with pytest.raises(ResidencyError, match="pinned"):
            plan(state, smaller, waiting, NOW, MODEL)
        return
    moves = plan(state, smaller, waiting, NOW, MODEL)
    assert len(apply(state, moves).loaded()) <= smaller.max_cpu_loras
    assert not any(state.load(m.adapter).is_pinned for m in moves if m.kind == "unload")
    if any(waiting.get(m.adapter, 0) > 0 for m in moves if m.kind == "unload"):
        assert not any(waiting.get(m.adapter, 0) == 0 for m in moves if m.kind == "load")


def test_round_robin_over_six_adapters_through_two_slots_loads_the_waiting_ones():
    keys = [f"a{i}" for i in range(6)]
    capacity = Capacity(max_loras=2, max_cpu_loras=2)
    state = ResidencyState.of(AdapterState(key) for key in keys)
    now = NOW
    for turn in range(12):
        busy = {keys[turn % 6]: 1, keys[(turn + 1) % 6]: 1}
        moves = plan(state, capacity, busy, now, MODEL)
        state = apply(state, moves)
        assert loaded_keys(state) == set(busy)
        for key in busy:
            state = record_use(state, key, now, MODEL)
        now += 1
        # From the second turn, one adapter stays and the other replaces the one that is no longer waited for.
        if turn > 0:
            assert [m.kind for m in moves] == ["unload", "load"]
            assert moves[1] == Move("load", keys[(turn + 1) % 6], "waiting")


def test_most_waited_for_adapter_is_loaded_first_and_lowest_value_evicted():
    capacity = Capacity(1, 2)
    state = ResidencyState.of([
        AdapterState("hot", Tier.CPU, last_used=NOW, frequency=5.0),
        AdapterState("cold", Tier.ENGINE, last_used=NOW - 1000, frequency=5.0),
        AdapterState("few", Tier.DISK), AdapterState("many", Tier.DISK),
    ])
    moves = plan(state, capacity, {"few": 1, "many": 3}, NOW, MODEL)
    assert moves == (Move("unload", "cold", "make-room"), Move("load", "many", "waiting"),
                     Move("unload", "hot", "make-room"), Move("load", "few", "waiting"))
    moves = plan(state, capacity, {"few": 1, "many": 3, "hot": 1}, NOW, MODEL)
    assert moves == (Move("unload", "cold", "make-room"), Move("load", "many", "waiting"))


def test_size_raises_value_through_reload_cost():
    small = AdapterState("small", Tier.CPU, last_used=NOW, frequency=1.0, size_bytes=1 << 20)
    large = AdapterState("large", Tier.CPU, last_used=NOW, frequency=1.0, size_bytes=1 << 30)
    assert adapter_value(large, NOW, MODEL) > adapter_value(small, NOW, MODEL)
    state = ResidencyState.of([small, large, AdapterState("new")])
    assert plan(state, Capacity(1, 2), {"new": 1}, NOW, MODEL) == (Move("unload", "small", "make-room"),
                                                                   Move("load", "new", "waiting"))


def test_frequency_decays_with_the_half_life():
    state = record_use(ResidencyState.of([AdapterState("a")]), "a", 0.0, MODEL)
    state = record_use(state, "a", 0.0, MODEL)
    a = state.load("a")
    assert MODEL.frequency(a.frequency, a.last_used, 100.0) == pytest.approx(1.0)
    assert MODEL.frequency(a.frequency, a.last_used, 200.0) == pytest.approx(0.5)
    state = record_use(state, "a", 100.0, MODEL)
    assert state.load("a").frequency == pytest.approx(2.0)


def test_pinned_adapters_are_loaded_kept_and_bounded():
    capacity = Capacity(1, 2)
    state = ResidencyState.of([AdapterState("p", Tier.DISK), AdapterState("q", Tier.CPU),
                               AdapterState("r", Tier.CPU), AdapterState("s")])
    state = pin(state, "p", capacity)
    assert plan(state, capacity, {}, NOW, MODEL) == (Move("unload", "q", "make-room"), Move("load", "p", "pinned"))
    state = pin(state, "q", capacity)
    assert not can_pin(state, "r", capacity)
    assert can_pin(state, "p", capacity)
    with pytest.raises(ResidencyError, match="cannot pin 'r'.*max_cpu_loras=2"):
        pin(state, "r", capacity)
    state = apply(state, plan(state, capacity, {}, NOW, MODEL))
    assert loaded_keys(state) == {"p", "q"}
    assert plan(state, capacity, {"s": 9}, NOW, MODEL) == ()
    assert plan(unpin(state, "q"), capacity, {"s": 9}, NOW, MODEL) == (Move("unload", "q", "make-room"),
                                                                         Move("load", "s", "waiting"))


def test_free_slots_stay_free_however_valuable_the_unloaded_adapters():
    state = ResidencyState.of([
        AdapterState("used-once", last_used=NOW - 50, frequency=1.0),
        AdapterState("used-often", last_used=NOW - 50, frequency=4.0),
        AdapterState("never"),
        AdapterState("loaded", Tier.CPU),
    ])
    assert plan(state, Capacity(1, 2), {}, NOW, MODEL) == ()  # prefetching is the tier scheduler's fill step
    assert plan(state, Capacity(1, 5), {}, NOW, MODEL) == ()
    assert plan(state, Capacity(1, 1), {}, NOW, MODEL) == ()


def test_bad_inputs_are_named():
    state = ResidencyState.of([AdapterState("a")])
    with pytest.raises(ResidencyError, match="unknown adapter 'zz'"):
        plan(state, Capacity(1, 1), {"zz": 1}, NOW)
    with pytest.raises(ResidencyError, match="waiting count of 'a'"):
        plan(state, Capacity(1, 1), {"a": -1}, NOW)
    with pytest.raises(ResidencyError, match=r"max_cpu_loras \(1\) must be >= max_loras \(2\)"):
        Capacity(2, 1)
    with pytest.raises(ResidencyError, match="unique"):
        ResidencyState.of([AdapterState("a"), AdapterState("a")])
    with pytest.raises(ResidencyError, match="no-op"):
        apply(state, [Move("unload", "a", "make-room")])
    with pytest.raises(ValueError, match="half_life_s"):
        ValueModel(half_life_s=0)


def test_state_order_does_not_matter():
    adapters = [AdapterState(k, frequency=float(i)) for i, k in enumerate("fedcba")]
    shuffled = adapters[:]
    random.Random(1).shuffle(shuffled)
    assert ResidencyState.of(adapters) == ResidencyState.of(shuffled)
    assert [a.key for a in ResidencyState.of(shuffled).adapters] == list("abcdef")
