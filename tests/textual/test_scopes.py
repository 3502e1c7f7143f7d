"""Agent, run and shared-space scopes, and filter expressions, on a real store (LMDB + FAISS + MiniLM)."""

import pytest

from textual.errors import InvalidMemoryError, SpaceAccessDenied, SpaceNotFoundError
from textual.spaces import check_members, readable
from textual.memory import Space


def contents(result) -> set[str]:
    return {hit.memory.content for hit in result.hits}


def test_search_narrows_by_agent_and_run(store):
    memory = store.for_tenant("t1")
    memory.add("Alice prefers window seats", user="alice", agent="travel", run="trip-1")
    memory.add("Alice is allergic to peanuts", user="alice", agent="chef", run="dinner-1")
    memory.add("Alice booked a hotel in Rome", user="alice", agent="travel", run="trip-2")
    assert contents(memory.search("what does alice like", user="alice", agent="travel")) == {
        "Alice prefers window seats", "Alice booked a hotel in Rome"}
    assert contents(memory.search("what does alice like", agent="travel", run="trip-2")) == {
        "Alice booked a hotel in Rome"}
    assert contents(memory.search("alice", user="alice", run="dinner-1")) == {"Alice is allergic to peanuts"}
    assert [m.content for m in memory.list(user="alice", agent="chef")] == ["Alice is allergic to peanuts"]
    scoped = memory.get(memory.list(run="trip-1")[0].id)
    assert (scoped.agent, scoped.run, scoped.space) == ("travel", "trip-1", None)


def test_the_same_fact_in_two_runs_is_never_merged(store):
    memory = store.for_tenant("t1")
    first = memory.add("The build uses Python 3.12", user="alice", run="r1")
    second = memory.add("The build uses Python 3.12", user="alice", run="r2")
    assert first.id != second.id and memory.get(first.id).run == "r1"
    assert memory.add("The build uses Python 3.12", user="alice", run="r1").id == first.id  # same scope: merged


def test_a_filter_is_applied_before_top_k_is_cut(store):
    memory = store.for_tenant("t1")
    for i in range(30):
        memory.add(f"Tea note {i}: green tea is best brewed at 80 degrees", user="u", metadata={"topic": "tea"},
                   consolidate=False)
    for i in range(5):
        memory.add(f"Unrelated chore {i}: water the plants", user="u", metadata={"topic": "home", "n": i},
                   consolidate=False)
    result = memory.search("how hot should green tea be brewed", user="u", k=5,
                           where={"metadata.topic": {"eq": "home"}})
    assert len(result.hits) == 5 and all(hit.memory.metadata["topic"] == "home" for hit in result.hits)
    result = memory.search("green tea", k=10, where={"and": [{"metadata.topic": "home"}, {"metadata.n": {"gte": 3}}]})
    assert sorted(hit.memory.metadata["n"] for hit in result.hits) == [3, 4]
    listed = memory.list(where={"or": [{"metadata.n": {"in": [0, 4]}}, {"content": {"contains": "NOTE 7:"}}]})
    assert sorted(m.content[:15] for m in listed) == ["Tea note 7: gre", "Unrelated chore", "Unrelated chore"]
    with pytest.raises(InvalidMemoryError) as caught:
        memory.search("tea", where={"metadata.topic": {"regex": "t.*"}})
    assert caught.value.field == "filter.metadata.topic.regex"


def test_space_members_read_and_writers_write(store):
    memory = store.for_tenant("t1")
    memory.create_space("family", "Family", [{"user_id": "alice", "write": True}, {"user_id": "bob"},
                                             {"agent_id": "butler", "write": True}])
    memory.add("The family car is parked in garage B", user="alice", space="family")
    memory.add("The wifi password is kept by the butler", user="house", agent="butler", space="family")
    memory.add("Carol keeps her car in garage C", user="carol")
    assert contents(memory.search("where is the car parked", user="bob")) == {
        "The family car is parked in garage B", "The wifi password is kept by the butler"}
    assert contents(memory.search("where is the car parked", user="carol")) == {"Carol keeps her car in garage C"}
    assert contents(memory.search("wifi password", agent="butler", space="family", k=1)) == {
        "The wifi password is kept by the butler"}
    assert {m.content for m in memory.list(user="bob")} == {"The family car is parked in garage B",
                                                             "The wifi password is kept by the butler"}
    assert memory.list(user="carol", space=None, where={"space_id": "family"}) == []
    with pytest.raises(SpaceAccessDenied, match="may not write"):
        memory.add("Bob was here", user="bob", space="family")  # a reader only
    with pytest.raises(SpaceAccessDenied, match="may not read"):
        memory.search("car", user="carol", space="family")
    memory.set_space_members("family", [{"user_id": "alice", "write": True}])
    assert contents(memory.search("where is the car parked", user="bob")) == set()
    assert memory.delete_space("family") == 2
    with pytest.raises(SpaceNotFoundError):
        memory.get_space("family")


def test_another_tenants_space_is_unknown(store):
    store.for_tenant("t1").create_space("team", members=[{"user_id": "alice", "write": True}])
    other = store.for_tenant("t2")
    with pytest.raises(SpaceNotFoundError):
        other.get_space("team")
    with pytest.raises(SpaceNotFoundError):
        other.add("sneaky", user="alice", space="team")
    with pytest.raises(SpaceNotFoundError):
        other.search("anything", user="alice", space="team")
    assert other.list_spaces() == []
    with pytest.raises(InvalidMemoryError, match="already exists"):
        store.for_tenant("t1").create_space("team")


def test_members_are_checked_and_grants_read():
    assert check_members([{"user_id": "a"}, {"agent_id": "b", "write": True}, {"user_id": "a", "write": True}]) == {
        "user:a": "write", "agent:b": "write"}
    for bad, field in [([{"user_id": "a", "agent_id": "b"}], "members[0]"), ([{"role": "x"}], "members[0]"),
                       ([{"user_id": "a b"}], "members[0].user_id"), ([{"user_id": "a", "write": 1}],
                                                                       "members[0].write"), ("a", "members")]:
        with pytest.raises(InvalidMemoryError) as caught:
            check_members(bad)
        assert caught.value.field == field
    spaces = [Space("s1", "t", "s1", 0.0, {"user:a": "read"}), Space("s2", "t", "s2", 0.0, {"agent:x": "write"})]
    assert readable(spaces, "a", None) == {"s1"} and readable(spaces, "a", "x") == {"s1", "s2"}
    assert readable(spaces, "b", None) == frozenset()
