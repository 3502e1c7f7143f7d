"""Integration: tiers, the forgetting curve and the lifecycle executor on real LMDB + FAISS + MiniLM."""

from __future__ import annotations

import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from textual.errors import InvalidMemoryError
from textual.lifecycle import DAY_S, LifecyclePolicy
from textual.store import MemoryStore

FACTS = ["Alice adopted a golden retriever named Max", "Bob plays the violin in an orchestra",
         "Carol is training for the Berlin marathon", "Dan collects vintage typewriters"]


def ids(result):
    return [hit.memory.id for hit in result.hits]


def test_cold_memories_live_on_disk_and_are_searched_when_asked_or_as_fallback(store):
    handle = store.for_tenant("t1")
    hot = handle.add(FACTS[0], user="u1")
    cold = handle.add(FACTS[1], user="u1", tier="cold")
    index = store.index("t1")
    assert cold.id not in index.memories and cold.id not in index.vectors.ids and set(index.cold) == {cold.id}
    assert ids(handle.search("golden retriever dog", k=5)) == [hot.id]  # strong hot match: cold not consulted
    assert ids(handle.search("which instrument does Bob play", k=5, tiers=["cold"])) == [cold.id]
    assert cold.id in ids(handle.search("violin orchestra", k=5))  # weak hot match: cold fallback
    assert handle.stats().by_tier == {"hot": 1, "cold": 1}


def test_access_reinforces_strength(clocked_store, clock):
    handle = clocked_store.for_tenant("t1")
    memory = handle.add(FACTS[2], user="u1")
    clock.advance(10 * DAY_S)
    handle.search("marathon", k=1)
    touched = handle.get(memory.id)
    assert touched.access_count == 1 and touched.last_access_at == clock.now
    assert touched.strength == pytest.approx(1.0 + 2 ** (-10 / (10 * (0.5 + memory.importance))))


def test_lifecycle_demotes_archives_restores_and_deletes_after_retention(clocked_store, clock):
    handle = clocked_store.for_tenant("t1")
    added = [handle.add(text, user="u1", importance=0.5) for text in FACTS]
    clock.advance(15 * DAY_S)  # strength 0.35: warm
    report = handle.run_lifecycle()
    assert report.counts == {"demote": 4} and handle.stats().by_tier == {"warm": 4}
    clock.advance(50 * DAY_S)  # strength ~0.01: archived
    assert handle.run_lifecycle().counts == {"archive": 4}
    assert handle.search("golden retriever", k=10, tiers=["hot", "warm", "cold"]).hits == ()
    assert store_ids(clocked_store) == set()
    restored = handle.restore(added[0].id)
    assert restored.tier.value == "hot" and ids(handle.search("golden retriever", k=1)) == [added[0].id]
    clock.advance(31 * DAY_S)  # past the retention for the three still archived (the restored one decays)
    report = handle.run_lifecycle()
    assert report.counts.get("delete") == 3
    assert [m.id for m in handle.list(tiers=["hot", "warm", "cold", "archived"])] == [added[0].id]


def store_ids(store):
    return set(store.index("t1").memories)


def test_store_runs_every_tenants_lifecycle(clocked_store, clock):
    for tenant in ("a", "b"):
        clocked_store.for_tenant(tenant).add(FACTS[3], user="u1", importance=0.5)
    clock.advance(15 * DAY_S)
    reports = clocked_store.run_lifecycle()
    assert {tenant: report.counts for tenant, report in reports.items()} == {"a": {"demote": 1}, "b": {"demote": 1}}


def test_tiers_survive_reopen(tmp_path, embedder):
    path = tmp_path / "s"
    with MemoryStore.open(path, embedder=embedder) as first:
        handle = first.for_tenant("t1")
        keep, cold = handle.add(FACTS[0], user="u1"), handle.add(FACTS[1], user="u1")
        handle.update(cold.id, tier="cold")
    with MemoryStore.open(path, embedder=embedder) as second:
        handle = second.for_tenant("t1")
        assert set(second.index("t1").memories) == {keep.id} and set(second.index("t1").cold) == {cold.id}
        assert ids(handle.search("violin", k=1, tiers=["cold"])) == [cold.id]


def test_archived_tier_is_refused_by_search(store):
    with pytest.raises(InvalidMemoryError) as error:
        store.for_tenant("t1").search("x", tiers=["hot", "archived"])
    assert error.value.field == "tiers"


operations = st.lists(st.tuples(st.sampled_from(["archive", "restore", "cold", "lifecycle"]), st.integers(0, 3),
                                st.floats(0, 100)), max_size=8)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations)
def test_archived_memories_are_never_returned_unless_restored(embedder, ops):
    clock = [1_700_000_000.0]
    with tempfile.TemporaryDirectory() as directory, MemoryStore.open(
            directory, embedder=embedder, clock=lambda: clock[0],
            lifecycle=LifecyclePolicy(half_life_s=DAY_S)) as store:
        handle = store.for_tenant("t1")
        added = [handle.add(text, user="u1", importance=0.5) for text in FACTS]
        for op, which, days in ops:
            clock[0] += days * DAY_S
            if op == "archive":
                handle.update(added[which].id, tier="archived")
            elif op == "restore":
                handle.restore(added[which].id)
            elif op == "cold":
                handle.update(added[which].id, tier="cold")
            else:
                handle.run_lifecycle()
            archived = {m.id for m in handle.list(tiers=["archived"])}
            for query in ("dog", "violin music", "running", "typewriter"):
                returned = set(ids(handle.search(query, k=10))) | set(ids(handle.search(query, k=10,
                                                                                         tiers=["cold"])))
                assert not returned & archived


def test_an_imported_history_is_fresh_when_stored_not_archived_for_its_age(clocked_store, clock):
    handle = clocked_store.for_tenant("t1")
    two_years_ago = clock.now - 730 * DAY_S
    [turn] = handle.add_messages([{"speaker": "Alice", "text": FACTS[0], "time": two_years_ago}], user="u1")
    assert turn.created_at == two_years_ago and turn.last_access_at == clock.now
    assert handle.run_lifecycle().counts == {}
    assert ids(handle.search("golden retriever", k=1)) == [turn.id]
