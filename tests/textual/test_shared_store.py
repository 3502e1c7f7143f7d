"""Two `MemoryStore`s on one PostgreSQL database, as two nodes: each node's indexes follow the other's writes through
the change log and LISTEN/NOTIFY, a saved FAISS index is caught up instead of rebuilt, and a store whose server went
away answers from its cached index and works again when the server is back."""

from __future__ import annotations

import time

import pytest

from textual import pg_memories
from textual.errors import StoreUnavailableError
from textual.store import MemoryStore


@pytest.fixture
def nodes(tmp_path, embedder, postgres_url):
    opened = [MemoryStore.open(tmp_path / name, embedder=embedder, store_url=postgres_url) for name in ("a", "b")]
    yield opened
    for store in opened:
        store.close()


def found_ids(store: MemoryStore, query: str) -> set[str]:
    return {hit.memory.id for hit in store.for_tenant("t1").search(query, k=5, user="u").hits}


def until(condition, timeout_s: float = 1.0) -> float:
    """Seconds until `condition()` held, polling; fails after `timeout_s`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, "not within the time allowed"
        time.sleep(0.02)
    return time.monotonic() - started


def test_an_add_on_one_node_is_found_on_the_other_within_a_second_and_a_delete_disappears(nodes):
    a, b = nodes
    a.for_tenant("t1").add("The office plant is a fern named Gerald", user="u")
    assert found_ids(b, "fern") != set()  # b loads its index now
    added = a.for_tenant("t1").add("Lunch on Fridays is at the noodle bar", user="u")
    until(lambda: added.id in found_ids(b, "noodle bar lunch"))
    b.for_tenant("t1").delete(added.id)
    until(lambda: added.id not in found_ids(a, "noodle bar lunch"))


def test_new_content_written_on_one_node_is_searched_with_its_new_vector_on_the_other(nodes):
    a, b = nodes
    memory = a.for_tenant("t1").add("My favourite colour is green", user="u")
    assert memory.id in found_ids(b, "favourite colour")
    a.for_tenant("t1").update(memory.id, content="I keep bees on the roof")
    until(lambda: b.for_tenant("t1").search("bees roof", k=1, user="u").hits[0].memory.content ==
          "I keep bees on the roof")


def test_a_saved_index_is_caught_up_from_the_log_instead_of_rebuilt(nodes, monkeypatch):
    a, b = nodes
    first = [a.for_tenant("t1").add(f"note {n} about the garden shed", user="u", consolidate=False).id
             for n in range(3)]
    assert found_ids(b, "garden shed")
    b.release("t1")  # saves b's FAISS file at the seq it reflects
    later = a.for_tenant("t1").add("The boiler service is due in March", user="u")
    rebuilt = []
    monkeypatch.setattr(b, "_rebuild_vectors", lambda *args: rebuilt.append(args))
    assert later.id in found_ids(b, "boiler service")
    assert set(first) <= set(b.index("t1").memories) and rebuilt == []


def test_an_index_behind_a_trimmed_log_is_rebuilt_and_right(nodes, monkeypatch):
    a, b = nodes
    a.for_tenant("t1").add("Keys are under the blue mat", user="u")
    assert found_ids(b, "keys mat")
    b.release("t1")
    monkeypatch.setattr(pg_memories, "LOG_KEEP", 1)
    added = [a.for_tenant("t1").add(f"parcel {n} went to the neighbour", user="u", consolidate=False).id
             for n in range(3)]
    assert set(added) <= found_ids(b, "parcel neighbour") | set(b.index("t1").memories)


def test_a_node_whose_server_is_gone_searches_its_cache_refuses_writes_and_recovers(tmp_path, embedder,
                                                                                   postgres_server):
    url = postgres_server.create_database(f"t_outage_{int(time.time() * 1000)}")
    store = MemoryStore.open(tmp_path / "node", embedder=embedder, store_url=url)
    try:
        kept = store.for_tenant("t1").add("The wifi password is on the fridge", user="u")
        postgres_server.stop()  # a fast shutdown: a kill's crash recovery can outlast the fixture's start wait
        until(lambda: store.db.outage() is not None, timeout_s=10)
        assert kept.id in found_ids(store, "wifi password")  # from the loaded index; the access is not recorded
        with pytest.raises(StoreUnavailableError, match="cannot be reached"):
            store.for_tenant("t1").add("written while the server is away", user="u")
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            store.index("t2")  # not loaded: needs the server
        assert time.monotonic() - started < 0.5  # refused at once, not after the pool's timeout
    finally:
        postgres_server.start()
    try:
        until(lambda: store.db.outage() is None, timeout_s=15)
        again = store.for_tenant("t1").add("The spare bulbs are in the garage", user="u")
        assert again.id in found_ids(store, "spare bulbs garage")
    finally:
        store.close()


def test_one_node_of_several_claims_each_lifecycle_pass(nodes):
    a, b = nodes
    assert a.claim_lifecycle(3600)  # a runs this hour's pass
    assert not b.claim_lifecycle(3600) and not a.claim_lifecycle(3600)  # nobody runs it again within the hour
    assert b.claim_lifecycle(0)  # the interval is over (a zero interval ends at once): b claims the next one
