"""`adapters.admission`: at most K adapters in the engine, the others queued in adapter groups served in rotation."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.admission import AdmissionError, AdmissionQueue, Admitted


def test_up_to_k_adapters_are_admitted_at_once_and_the_next_waits():
    queue = AdmissionQueue(2)
    assert queue.arrive(1, "a") and queue.arrive(2, "b") and queue.arrive(3, "a")
    assert not queue.arrive(4, "c")
    assert queue.stats()["adapters_in_flight"] == 2 and queue.waiting == 1


def test_waiting_requests_of_one_adapter_are_admitted_as_one_group_when_a_slot_frees():
    queue = AdmissionQueue(1)
    assert queue.arrive("t0", "a")
    assert not queue.arrive("t1", "b") and not queue.arrive("t2", "c") and not queue.arrive("t3", "b")
    assert queue.finish("a") == [Admitted("b", ("t1", "t3"))]  # b waited first; its two requests go together
    assert queue.finish("b") == [] and queue.finish("b") == [Admitted("c", ("t2",))]


def test_a_slot_holder_stops_taking_new_requests_while_another_adapter_waits():
    queue = AdmissionQueue(1)
    assert queue.arrive(0, "hot")
    assert not queue.arrive(1, "cold")
    assert not queue.arrive(2, "hot")  # would keep the slot forever: it queues behind cold
    assert queue.finish("hot") == [Admitted("cold", (1,))]
    assert queue.finish("cold") == [Admitted("hot", (2,))]


def test_a_holder_at_the_head_of_the_rotation_needs_no_new_slot():
    queue = AdmissionQueue(2)
    assert queue.arrive(0, "a") and queue.arrive(1, "b")
    assert not queue.arrive(2, "c")
    assert not queue.arrive(3, "a")
    # b's slot goes to c; then a's group is at the head and a still holds a slot: it goes too
    assert queue.finish("b") == [Admitted("c", (2,)), Admitted("a", (3,))]
    assert queue.stats()["adapters_in_flight"] == 2 and queue.waiting == 0


def test_a_withdrawn_request_leaves_the_rotation():
    queue = AdmissionQueue(1)
    assert queue.arrive(0, "a")
    assert not queue.arrive(1, "b") and not queue.arrive(2, "c")
    assert queue.withdraw(1) == [] and queue.withdraw(99) == []
    assert queue.finish("a") == [Admitted("c", (2,))]


def test_misuse_is_refused():
    with pytest.raises(AdmissionError, match="slots"):
        AdmissionQueue(0)
    queue = AdmissionQueue(1)
    with pytest.raises(AdmissionError, match="no admitted request"):
        queue.finish("a")
    queue.arrive(0, "a")
    queue.arrive(1, "b")
    with pytest.raises(AdmissionError, match="already waiting"):
        queue.arrive(1, "b")


events = st.lists(st.tuples(st.sampled_from(["arrive", "finish", "withdraw"]), st.integers(0, 7)), max_size=120)


@settings(max_examples=300)
@given(slots=st.integers(1, 4), events=events)
def test_admission_invariants(slots, events):
    """Random arrivals, finishes and withdrawals: K bounds the adapters in flight, a queue means every slot is
    held by an adapter other than the head, groups go whole, and nobody is overtaken by more groups than were
    ahead of it when it joined."""
    queue = AdmissionQueue(slots)
    tickets = itertools.count()
    running: list[str] = []  # adapters of admitted, unfinished requests
    ahead: dict[int, int] = {}  # waiting ticket -> group admissions it may still see before its own
    waiting: dict[int, str] = {}
    for kind, number in events:
        adapter = f"a{number}"
        if kind == "arrive":
            ticket = next(tickets)
            groups_before = list(queue.groups)
            if queue.arrive(ticket, adapter):
                running.append(adapter)
                continue
            waiting[ticket] = adapter
            ahead[ticket] = groups_before.index(adapter) if adapter in groups_before else len(groups_before)
            continue
        if kind == "finish" and running:
            admitted = queue.finish(running.pop(number % len(running)))
        elif kind == "withdraw" and waiting:
            ticket = sorted(waiting)[number % len(waiting)]
            del waiting[ticket], ahead[ticket]
            admitted = queue.withdraw(ticket)
        else:
            continue
        for group in admitted:
            assert set(group.tickets) == {t for t, a in waiting.items() if a == group.adapter}  # the whole group
            for ticket in group.tickets:
                assert ahead.pop(ticket) >= 0
                del waiting[ticket]
                running.append(group.adapter)
            for ticket in ahead:
                ahead[ticket] -= 1
        assert len(queue.in_flight) <= slots and sorted(queue.in_flight.elements()) == sorted(running)
        if queue.groups:
            head = next(iter(queue.groups))
            assert len(queue.in_flight) == slots and not queue.holds_slot(head)
    assert queue.waiting == len(waiting)


@given(slots=st.integers(1, 4), order=st.lists(st.integers(0, 3), max_size=60), finishes=st.lists(st.booleans()))
def test_with_at_most_k_adapters_no_request_ever_waits(slots, order, finishes):
    queue = AdmissionQueue(slots)
    running = []
    for i, number in enumerate(order):
        adapter = f"a{number % slots}"
        assert queue.arrive(i, adapter)
        running.append(adapter)
        if i < len(finishes) and finishes[i]:
            assert queue.finish(running.pop(0)) == []
    assert queue.waiting == 0
