"""Expiry and retention: the planner's part (pure, no I/O) and end to end on a real store (LMDB, FAISS, MiniLM)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from textual.errors import InvalidMemoryError, MemoryNotFoundError
from textual.lifecycle import DAY_S, LifecyclePolicy, Move, MoveKind, plan_lifecycle
from textual.memory import Memory, MemoryType, LifecycleTier

POLICY = LifecyclePolicy(half_life_s=10 * DAY_S, retention_s=30 * DAY_S)


def memory(key: str, expires_at: float | None = None, tier: LifecycleTier = LifecycleTier.HOT,
           type: MemoryType = MemoryType.FACT, updated: float = 0.0) -> Memory:
    return Memory(id=key, tenant="t", user="u", type=type, content="x", created_at=0.0, updated_at=updated,
                  last_access_at=0.0, tier=tier, expires_at=expires_at)


def test_planner_expires_memories_of_every_tier_and_type_once_their_time_has_come():
    now = 5.0
    memories = [memory("a", expires_at=5.0), memory("b", expires_at=6.0), memory("c", expires_at=1.0,
                tier=LifecycleTier.ARCHIVED, updated=now), memory("d", expires_at=1.0, type=MemoryType.DOCUMENT_CHUNK),
                memory("e")]
    assert plan_lifecycle(memories, now, POLICY) == [
        Move("a", MoveKind.EXPIRE, None), Move("c", MoveKind.EXPIRE, None), Move("d", MoveKind.EXPIRE, None)]


def test_retention_deletes_archived_memories_only_after_it_ran_out():
    archived = memory("a", tier=LifecycleTier.ARCHIVED, updated=0.0)
    assert plan_lifecycle([archived], 30 * DAY_S, POLICY) == []
    assert plan_lifecycle([archived], 30 * DAY_S + 1, POLICY) == [Move("a", MoveKind.DELETE, None)]


@given(st.lists(st.tuples(st.floats(0, 100), st.sampled_from(list(LifecycleTier))), max_size=20), st.floats(0, 100))
def test_an_expired_memory_is_always_planned_out_and_a_live_one_never_by_expiry(rows, now):
    items = [memory(f"m{i}", expires_at=at, tier=tier) for i, (at, tier) in enumerate(rows)]
    expired = {move.memory_id for move in plan_lifecycle(items, now, POLICY) if move.kind is MoveKind.EXPIRE}
    assert expired == {m.id for m in items if m.expires_at <= now}


def test_an_expired_memory_is_gone_for_every_read_then_deleted_with_its_history(clocked_store, clock):
    handle = clocked_store.for_tenant("t1")
    brief = handle.add("The door code this week is 4417", user="ann", ttl_s=3600)
    kept = handle.add("The door code of the shed is 9921", user="ann")
    assert brief.expires_at == clock.now + 3600 and kept.expires_at is None
    assert brief.id in [hit.memory.id for hit in handle.search("door code", user="ann").hits]
    clock.advance(3600)
    assert [hit.memory.id for hit in handle.search("door code", user="ann").hits] == [kept.id]
    assert [m.id for m in handle.list(user="ann")] == [kept.id]
    with pytest.raises(MemoryNotFoundError):
        handle.get(brief.id)
    assert clocked_store.db.get("t1", brief.id) is not None  # still stored until the lifecycle pass
    report = handle.run_lifecycle()
    assert report.counts == {"expire": 1}
    assert clocked_store.db.get("t1", brief.id) is None and clocked_store.db.history("t1", brief.id) == []


def test_a_new_memory_never_merges_into_an_expired_one(clocked_store, clock):
    handle = clocked_store.for_tenant("t1")
    brief = handle.add("Ann parks on level three", user="ann", ttl_s=60)
    clock.advance(61)
    again = handle.add("Ann parks on level three", user="ann")
    assert again.id != brief.id and handle.get(again.id).expires_at is None


def test_ttl_is_validated_and_an_update_sets_a_new_expiry(clocked_store, clock):
    handle = clocked_store.for_tenant("t1")
    for bad in (0, -5, 1e12, "soon", True):
        with pytest.raises(InvalidMemoryError, match="ttl_s"):
            handle.add("Ann likes tea", user="ann", ttl_s=bad)
    memory = handle.add("Ann likes tea", user="ann")
    updated = handle.update(memory.id, ttl_s=10)
    assert updated.expires_at == clock.now + 10
    assert handle.history(memory.id)[-1].before == {"expires_at": None}


def test_records_without_an_expiry_keep_their_bytes():
    from textual.record import decode_memory, encode_memory
    plain = memory("a")
    assert b"expires_at" not in encode_memory(plain)
    expiring = dataclasses.replace(plain, expires_at=12.5)
    assert b'"expires_at":12.5' in encode_memory(expiring) and decode_memory(encode_memory(expiring)) == expiring
