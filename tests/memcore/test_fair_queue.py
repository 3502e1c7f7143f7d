"""The fair queue's turn order: round-robin over owners, first in first out within one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from memcore.fair_queue import FairQueue


def drained(queue: FairQueue) -> list:
    items = []
    while (item := queue.pop()) is not None:
        items.append(item)
    return items


def test_a_thousand_items_of_one_owner_delay_another_owners_by_one_each():
    queue: FairQueue[tuple[str, int]] = FairQueue()
    for i in range(1000):
        queue.put("a", ("a", i))
    queue.put("b", ("b", 0))
    queue.put("b", ("b", 1))
    assert drained(queue)[:5] == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2)]
    assert queue.pop() is None and len(queue) == 0


def test_an_owner_arriving_late_gets_the_next_turn_after_the_current_round():
    queue: FairQueue[str] = FairQueue()
    for item in ("a1", "a2", "a3", "b1", "b2"):
        queue.put(item[0], item)
    assert queue.pop() == "a1"
    queue.put("c", "c1")
    assert queue.owners() == ["b", "a", "c"]
    assert drained(queue) == ["b1", "a2", "c1", "b2", "a3"]


@given(st.lists(st.tuples(st.sampled_from("abcd"), st.integers()), max_size=60))
def test_every_waiting_owner_gets_one_item_between_two_of_another(puts):
    queue: FairQueue[tuple[str, int]] = FairQueue()
    for position, (owner, _) in enumerate(puts):
        queue.put(owner, (owner, position))
    order = drained(queue)
    assert sorted(order) == sorted((owner, position) for position, (owner, _) in enumerate(puts))
    for owner in set(o for o, _ in order):  # first in, first out within an owner
        positions = [p for o, p in order if o == owner]
        assert positions == sorted(positions)
    taken: dict[str, int] = {}
    for index, (owner, _) in enumerate(order):  # all put before any pop: the turns cycle over the owners left
        if owner in taken:
            between = {o for o, _ in order[taken[owner] + 1:index]}
            left = {o for o, _ in order[index:]}
            assert left - {owner} <= between
        taken[owner] = index
