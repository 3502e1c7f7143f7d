"""The forgetting curve, importance heuristics and the tier planner: pure, no I/O."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from textual.lifecycle import (DAY_S, LifecyclePolicy, Move, MoveKind, decayed_strength, heuristic_importance,
                               plan_lifecycle, reinforced_strength, target_tier)
from textual.memory import LifecycleTier, Memory, MemoryType

POLICY = LifecyclePolicy(half_life_s=10 * DAY_S)


def memory(key="m", strength=1.0, importance=0.5, accessed=0.0, tier=LifecycleTier.HOT, type=MemoryType.FACT,
           updated=0.0):
    return Memory(id=key, tenant="t", user="u", type=type, content="x", created_at=0.0, updated_at=updated,
                  last_access_at=accessed, strength=strength, importance=importance, tier=tier)


def test_strength_halves_every_half_life_at_default_importance():
    assert decayed_strength(memory(), 10 * DAY_S, POLICY) == pytest.approx(0.5)
    assert decayed_strength(memory(), 20 * DAY_S, POLICY) == pytest.approx(0.25)
    assert decayed_strength(memory(accessed=5 * DAY_S), 5 * DAY_S, POLICY) == 1.0


def test_importance_stretches_the_half_life():
    assert decayed_strength(memory(importance=1.0), 15 * DAY_S, POLICY) == pytest.approx(0.5)
    assert decayed_strength(memory(importance=0.0), 5 * DAY_S, POLICY) == pytest.approx(0.5)


def test_access_reinforces_up_to_the_cap():
    assert reinforced_strength(memory(), 10 * DAY_S, POLICY) == pytest.approx(1.5)
    assert reinforced_strength(memory(strength=9.9), 0.0, POLICY) == POLICY.max_strength


def test_heuristic_importance_by_type_and_salient_words():
    assert heuristic_importance(MemoryType.EPISODE, "we went out") == 0.5
    assert heuristic_importance(MemoryType.PREFERENCE, "tea please") == 0.6
    assert heuristic_importance(MemoryType.FACT, "Remember: Alice is allergic to nuts") == pytest.approx(0.75)


def test_tiers_follow_decayed_strength():
    assert [target_tier(s, POLICY) for s in (0.9, 0.3, 0.05, 0.001)] == [
        LifecycleTier.HOT, LifecycleTier.WARM, LifecycleTier.COLD, LifecycleTier.ARCHIVED]


def test_planner_demotes_promotes_archives_and_deletes_after_retention():
    policy = LifecyclePolicy(half_life_s=10 * DAY_S, retention_s=15 * DAY_S)
    now = 20 * DAY_S  # strength 0.25 for a memory last accessed at 0
    memories = [memory("a"), memory("b", accessed=now, tier=LifecycleTier.COLD), memory("c", strength=0.001),
                memory("d", tier=LifecycleTier.ARCHIVED, updated=0.0),
                memory("e", tier=LifecycleTier.ARCHIVED, updated=now),
                memory("f", type=MemoryType.DOCUMENT_CHUNK, strength=0.0)]
    assert plan_lifecycle(memories, now, policy) == [
        Move("a", MoveKind.DEMOTE, LifecycleTier.WARM), Move("b", MoveKind.PROMOTE, LifecycleTier.HOT),
        Move("c", MoveKind.ARCHIVE, LifecycleTier.ARCHIVED), Move("d", MoveKind.DELETE, None)]


def test_policy_rejects_inconsistent_thresholds():
    with pytest.raises(ValueError, match="half_life_s"):
        LifecyclePolicy(half_life_s=0)
    with pytest.raises(ValueError, match="hot_above"):
        LifecyclePolicy(hot_above=0.1, warm_above=0.2)


memories = st.lists(st.builds(
    memory, key=st.text("abcdef", min_size=1, max_size=4), strength=st.floats(0, 10),
    importance=st.floats(0, 1), accessed=st.floats(0, 1e8), tier=st.sampled_from(list(LifecycleTier)),
    type=st.sampled_from(list(MemoryType)), updated=st.floats(0, 1e8)), max_size=30, unique_by=lambda m: m.id)


@given(memories, st.floats(0, 2e8), st.one_of(st.none(), st.floats(0, 1e8)))
def test_planner_invariants(items, now, retention):
    policy = LifecyclePolicy(retention_s=retention)
    by_id = {m.id: m for m in items}
    for move in plan_lifecycle(items, now, policy):
        old = by_id[move.memory_id]
        assert old.type not in policy.exempt_types
        if move.kind is MoveKind.DELETE:  # deletes need a retention, and only ever hit archived memories
            assert retention is not None and old.tier is LifecycleTier.ARCHIVED and now - old.updated_at > retention
        else:  # nothing leaves the archive except through restore
            assert old.tier is not LifecycleTier.ARCHIVED and move.tier is not old.tier


@given(memories, st.floats(0, 2e8))
def test_planner_never_deletes_without_a_retention(items, now):
    assert all(move.kind is not MoveKind.DELETE for move in plan_lifecycle(items, now, LifecyclePolicy()))


def test_strength_curve_follows_the_forgetting_curve_from_the_last_access():
    from textual.lifecycle import strength_curve
    remembered = memory(strength=2.0, accessed=100.0)
    curve = strength_curve(remembered, POLICY, until=100.0 + 20 * DAY_S, points=3)
    assert [p.time for p in curve] == [100.0, 100.0 + 10 * DAY_S, 100.0 + 20 * DAY_S]
    assert [round(p.strength, 6) for p in curve] == [2.0, 1.0, 0.5]
    with pytest.raises(ValueError, match="points"):
        strength_curve(remembered, POLICY, until=200.0, points=1)
