"""The tier planner without I/O: budgets hold, pins stay, value order, and no thrashing, on random states."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memcore.tiers import Tier
from memcore.value import ValueModel
from sidecar.scheduler.objects import Action, Budgets, Kind, MemoryObject, Move, SchedulerError, usage
from sidecar.scheduler.planner import OVER_BUDGET, OVER_SLOTS, apply, plan

NOW = 10_000.0
MODEL = ValueModel(half_life_s=600.0)


@st.composite
def objects(draw) -> list[MemoryObject]:
    count = draw(st.integers(0, 14))
    result = []
    for i in range(count):
        kind = draw(st.sampled_from(Kind))
        tier = draw(st.sampled_from(Tier))
        result.append(MemoryObject(
            kind=kind, key=f"{kind.value}:{i}", tier=tier, size_bytes=draw(st.integers(0, 500)),
            last_used_s=draw(st.floats(NOW - 5000, NOW)), uses=draw(st.integers(0, 20)),
            rebuild_s=draw(st.floats(0, 30)), pinned=draw(st.booleans() if draw(st.integers(0, 4)) == 0 else
                                                           st.just(False)),
            disk_bytes=draw(st.integers(0, 500)), ceiling=draw(st.sampled_from(Tier)),
            evictable=draw(st.booleans())))
    return result


budgets = st.builds(Budgets, engine_bytes=st.integers(0, 1500), cpu_bytes=st.integers(0, 2500),
                    disk_bytes=st.integers(0, 4000), adapter_slots=st.integers(0, 5))


def density(obj: MemoryObject, tier: Tier) -> float:
    return obj.density(MODEL, NOW, tier)


@settings(max_examples=400, deadline=None)
@given(objects(), budgets)
def test_no_tier_is_left_over_its_budget_unless_only_unmovable_objects_hold_it(state, limits):
    after = apply(state, plan(state, limits, NOW, MODEL))
    figures = usage(after)
    for tier in (Tier.ENGINE, Tier.CPU):
        if figures.of(tier) > limits.of(tier):
            assert all(o.pinned or not o.size_bytes for o in after if o.tier is tier), tier
    if figures.disk_bytes > limits.disk_bytes:
        assert all(o.pinned or not o.evictable or not o.disk_bytes for o in after)
    if figures.loaded_adapters > limits.adapter_slots:
        assert all(o.pinned for o in after if o.is_loaded_adapter)


@settings(max_examples=400, deadline=None)
@given(objects(), budgets)
def test_pinned_objects_stay_where_they_are(state, limits):
    moves = plan(state, limits, NOW, MODEL)
    pinned = {o.key for o in state if o.pinned}
    assert not [m for m in moves if m.key in pinned]
    assert {o.key: o.tier for o in apply(state, moves) if o.pinned} == {o.key: o.tier for o in state if o.pinned}


@settings(max_examples=400, deadline=None)
@given(objects(), budgets)
def test_a_higher_value_object_is_never_moved_out_for_a_lower_one(state, limits):
    moves = plan(state, limits, NOW, MODEL)
    after = apply(state, moves)
    by_key = {o.key: o for o in state}
    for move in moves:
        x = by_key[move.key]
        if move.reason == OVER_BUDGET and move.action is Action.DEMOTE:
            for tier in (t for t in Tier if move.src <= t < move.dst):  # every tier it left
                stayed = [y for y in after if y.tier is tier and not y.pinned and density(y, tier) < density(x, tier)]
                assert not stayed, (move, tier, stayed)
        if move.action is Action.EVICT:
            stayed = [y for y in after if not y.pinned and y.evictable and y.disk_bytes
                      and density(y, Tier.DISK) < density(x, Tier.DISK)]
            assert not stayed, (move, stayed)
        if move.reason == OVER_SLOTS:
            stayed = [y for y in after if y.is_loaded_adapter and not y.pinned
                      and y.saved_s(MODEL, NOW) < x.saved_s(MODEL, NOW)]
            assert not stayed, (move, stayed)


@settings(max_examples=400, deadline=None)
@given(objects(), budgets)
def test_moves_up_never_take_the_place_of_a_denser_object_moved_out(state, limits):
    moves = plan(state, limits, NOW, MODEL)
    by_key = {o.key: o for o in state}
    ups = [m for m in moves if m.action in (Action.PROMOTE, Action.PREFETCH)]
    downs = [m for m in moves if m.action is Action.DEMOTE and m.reason == OVER_BUDGET]
    for up in ups:
        assert up.dst >= by_key[up.key].ceiling  # within the object's ceiling
        for down in downs:
            if down.src is up.dst:
                assert density(by_key[up.key], up.dst) > density(by_key[down.key], up.dst)


@settings(max_examples=300, deadline=None)
@given(objects(), budgets)
def test_plans_are_deterministic_one_move_per_object_down_first_and_do_not_thrash(state, limits):
    moves = plan(state, limits, NOW, MODEL)
    assert plan(list(reversed(state)), limits, NOW, MODEL) == moves
    assert len({m.key for m in moves}) == len(moves)
    directions = [m.action in (Action.DEMOTE, Action.EVICT) for m in moves]
    assert directions == sorted(directions, reverse=True)  # every move down comes before every move up
    after = apply(state, moves)
    again = plan(after, limits, NOW, MODEL)
    assert not [m for m in again if m.action in (Action.DEMOTE, Action.EVICT)]  # what was planned stays within


def obj(key: str, tier: Tier, size: int, uses: float, kind: Kind = Kind.MEMORY_INDEX, **fields) -> MemoryObject:
    return MemoryObject(kind, key, tier, size, last_used_s=NOW, uses=uses, rebuild_s=1.0, **fields)


def test_the_least_valuable_index_is_released_first_and_reservations_stay():
    state = [obj("kv-ram", Tier.CPU, 600, 0, Kind.KV, pinned=True),
             obj("memory:busy", Tier.CPU, 200, 10), obj("memory:idle", Tier.CPU, 200, 1),
             obj("adapter:a", Tier.CPU, 100, 5, Kind.ADAPTER)]
    moves = plan(state, Budgets(0, 950, 10_000, 4), NOW, MODEL)
    assert moves == [Move(Action.DEMOTE, "memory:idle", Kind.MEMORY_INDEX, Tier.CPU, Tier.DISK, OVER_BUDGET)]


def test_density_not_total_value_decides_so_many_small_objects_can_beat_one_large_one():
    state = [obj("memory:large", Tier.CPU, 800, 4), obj("memory:small", Tier.CPU, 100, 1)]
    moves = plan(state, Budgets(0, 500, 10_000, 0), NOW, MODEL)
    assert [m.key for m in moves] == ["memory:large"]  # 4 uses / 800 bytes is less than 1 use / 100 bytes


def test_disk_over_budget_evicts_the_coldest_kv_namespace_never_a_store():
    def namespace(key: str, last_used_s: float, pinned: bool = False) -> MemoryObject:
        return MemoryObject(Kind.KV, key, Tier.DISK, 300, last_used_s=last_used_s, uses=1, rebuild_s=1.0,
                            disk_bytes=300, ceiling=Tier.DISK, evictable=True, pinned=pinned)

    state = [MemoryObject(Kind.MEMORY_INDEX, "memory-store:lmdb", Tier.DISK, 0, pinned=True, disk_bytes=500),
             namespace("kv:old", NOW - 3000), namespace("kv:new", NOW), namespace("kv:pinned", 0, pinned=True)]
    moves = plan(state, Budgets(0, 0, 1200, 0), NOW, MODEL)
    assert moves == [Move(Action.EVICT, "kv:old", Kind.KV, Tier.DISK, None, OVER_BUDGET)]


def test_adapters_over_their_slots_are_unloaded_least_valuable_first_but_not_pinned_ones():
    state = [obj("adapter:pinned", Tier.CPU, 10, 0, Kind.ADAPTER, pinned=True),
             obj("adapter:hot", Tier.CPU, 10, 9, Kind.ADAPTER), obj("adapter:cold", Tier.CPU, 10, 1, Kind.ADAPTER)]
    moves = plan(state, Budgets(0, 10_000, 10_000, 2), NOW, MODEL)
    assert moves == [Move(Action.DEMOTE, "adapter:cold", Kind.ADAPTER, Tier.CPU, Tier.DISK, OVER_SLOTS)]


def test_free_room_is_filled_densest_first_up_to_the_fill_factor_and_a_free_slot():
    state = [obj("memory:a", Tier.DISK, 400, 5), obj("memory:b", Tier.DISK, 460, 3),
             obj("memory:never-used", Tier.DISK, 10, 0), obj("adapter:x", Tier.DISK, 50, 9, Kind.ADAPTER),
             obj("adapter:y", Tier.DISK, 50, 8, Kind.ADAPTER)]
    moves = plan(state, Budgets(0, 1000, 10_000, 1), NOW, MODEL)
    assert [(m.action, m.key) for m in moves] == [(Action.PREFETCH, "adapter:x"), (Action.PREFETCH, "memory:a")]
    # b would fit the budget (910 bytes) but not 90 % of it; y has no slot; the never-used index is worth nothing


def test_objects_move_up_only_to_their_ceiling_and_between_memory_tiers_it_is_a_promotion():
    state = [obj("kv:ns", Tier.DISK, 10, 5, Kind.KV, ceiling=Tier.DISK, disk_bytes=10),
             obj("memory:t", Tier.CPU, 10, 5, ceiling=Tier.ENGINE)]
    assert plan(state, Budgets(1000, 1000, 1000, 0), NOW, MODEL) == [
        Move(Action.PROMOTE, "memory:t", Kind.MEMORY_INDEX, Tier.CPU, Tier.ENGINE, "free-space")]


def test_value_halves_with_each_half_life_and_grows_with_rebuild_cost():
    fresh = obj("memory:t", Tier.CPU, 100, 4)
    assert fresh.saved_s(MODEL, NOW) == 4.0
    assert fresh.saved_s(MODEL, NOW + 600) == pytest.approx(2.0)
    assert fresh.density(MODEL, NOW, Tier.CPU) == pytest.approx(0.04)
    assert MemoryObject(Kind.KV, "k", Tier.DISK, 1, NOW, 4, rebuild_s=3.0).saved_s(MODEL, NOW) == 12.0


def test_apply_refuses_moves_that_do_not_match_the_state_and_plan_refuses_duplicate_keys():
    state = [obj("memory:t", Tier.CPU, 10, 1)]
    with pytest.raises(SchedulerError, match="does not match"):
        apply(state, [Move(Action.DEMOTE, "memory:t", Kind.MEMORY_INDEX, Tier.ENGINE, Tier.CPU, OVER_BUDGET)])
    with pytest.raises(SchedulerError, match="share the key"):
        plan(state + state, Budgets(0, 0, 0, 0), NOW, MODEL)
    with pytest.raises(SchedulerError, match="size_bytes"):
        obj("memory:t", Tier.CPU, -1, 1)


def test_budgets_default_to_shares_of_the_machine_and_explicit_figures_win(tmp_path):
    machine = Budgets.from_machine(tmp_path / "not-yet", engine_bytes=7, adapter_slots=3)
    assert 0 < machine.cpu_bytes < 2**50 and 0 < machine.disk_bytes < 2**60
    assert (machine.engine_bytes, machine.adapter_slots) == (7, 3)
    assert Budgets.from_machine(tmp_path, 7, 3, cpu_bytes=11, disk_bytes=13) == Budgets(7, 11, 13, 3)
    with pytest.raises(SchedulerError, match="cpu_bytes"):
        Budgets(0, -1, 0, 0)
