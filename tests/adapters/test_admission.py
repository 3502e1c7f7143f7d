"""`adapters.admission`: at most K adapters in the engine, the others queued in groups, tenants served in rotation,
none holding more than its share of the slots while another holding less waits."""

from __future__ import annotations

import itertools
from collections import Counter

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
    queue.arrive(2, "c", "t1")
    with pytest.raises(AdmissionError, match="of tenant 't2'"):
        queue.finish("c", "t2")
    queue.arrive(0, "a")
    queue.arrive(1, "b")
    with pytest.raises(AdmissionError, match="already waiting"):
        queue.arrive(1, "b")


events = st.lists(st.tuples(st.sampled_from(["arrive", "finish", "withdraw"]), st.integers(0, 7)), max_size=120)


@settings(max_examples=300)
@given(slots=st.integers(1, 4), events=events)
def test_admission_invariants_of_one_tenant(slots, events):
    """Random arrivals, finishes and withdrawals of one tenant: K bounds the adapters in flight, a queue means every
    slot is held by an adapter other than the head, groups go whole, and nobody is overtaken by more groups than
    were ahead of it when it joined."""
    queue = AdmissionQueue(slots)
    tickets = itertools.count()
    running: list[str] = []  # adapters of admitted, unfinished requests
    ahead: dict[int, int] = {}  # waiting ticket -> group admissions it may still see before its own
    waiting: dict[int, str] = {}
    for kind, number in events:
        adapter = f"a{number}"
        if kind == "arrive":
            ticket = next(tickets)
            groups_before = list(queue.groups.get("", {}))
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
        assert len(queue.adapters) <= slots and sorted(queue.adapters.elements()) == sorted(running)
        if queue.groups:
            head = next(iter(queue.groups[""]))
            assert len(queue.adapters) == slots and not queue.holds_slot(head)
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


def test_a_tenant_with_many_adapters_takes_no_second_turn_while_another_waits():
    """A fills both slots and queues 4 more adapters; B's one request goes at the first free slot (with per-adapter
    rotation it waited for A's 4 groups), then A and B alternate while both wait."""
    queue = AdmissionQueue(2)
    assert queue.arrive("a1", "x1", "A") and queue.arrive("a2", "x2", "A")
    for i in range(3, 7):
        assert not queue.arrive(f"a{i}", f"x{i}", "A")
    assert not queue.arrive("b1", "y1", "B") and not queue.arrive("b2", "y2", "B")
    assert queue.stats()["tenants_waiting"] == 2
    assert queue.finish("x1", "A") == [Admitted("y1", ("b1",), "B")]
    assert queue.finish("x2", "A") == [Admitted("x3", ("a3",), "A")]  # A below its share (1 of 2) again: its turn
    assert queue.finish("y1", "B") == [Admitted("y2", ("b2",), "B")]
    assert queue.finish("x3", "A") == [Admitted("x4", ("a4",), "A")]


def test_a_tenant_at_its_share_waits_while_tenants_below_it_are_served():
    """K = 4, A holds all 4 and waits for a fifth; B and C queue 2 adapters each. The freed slots go to B and C while
    A holds its share (ceil(4 / 3) = 2) or more, though A started waiting first; once all three hold one each, turns
    follow the rotation."""
    queue = AdmissionQueue(4)
    for i in range(4):
        assert queue.arrive(f"a{i}", f"x{i}", "A")
    assert not queue.arrive("a4", "x4", "A")
    for tenant in ("B", "C"):
        for i in range(2):
            assert not queue.arrive(f"{tenant}{i}", f"{tenant.lower()}{i}", tenant)
    admitted = [group.tenant for i in range(4) for group in queue.finish(f"x{i}", "A")]
    assert admitted == ["B", "C", "A", "B"]
    assert (queue.held_by("A"), queue.held_by("B"), queue.held_by("C"), queue.waiting) == (1, 2, 1, 1)
    assert queue.finish("b0", "B") == [Admitted("c1", ("C1",), "C")]


def test_requests_of_two_tenants_for_one_adapter_share_its_slot_but_queue_apart():
    queue = AdmissionQueue(1)
    assert queue.arrive(0, "public", "A") and queue.arrive(1, "public", "B")  # nobody waits: the slot is shared
    assert queue.held_by("A") == queue.held_by("B") == 1 and queue.stats()["adapters_in_flight"] == 1
    assert not queue.arrive(2, "own", "A") and not queue.arrive(3, "public", "B")
    assert queue.finish("public", "A") == []  # B's request still holds the slot: A's other adapter waits for it
    assert queue.finish("public", "B") == [Admitted("own", (2,), "A")]  # A started waiting first
    assert queue.finish("own", "A") == [Admitted("public", (3,), "B")]


tenant_events = st.lists(st.tuples(st.sampled_from(["arrive", "finish", "withdraw"]), st.integers(0, 3),
                                   st.integers(0, 5)), max_size=150)


@settings(max_examples=300)
@given(slots=st.integers(1, 4), events=tenant_events)
def test_admission_is_fair_across_tenants(slots, events):
    """Random arrivals, finishes and withdrawals of 4 tenants over 6 adapters: K bounds the adapters in flight, a
    queue means every slot is held, groups go whole; a group admitted after waiting belongs to a tenant below its
    share unless no tenant below its share is left waiting; while a tenant waits below its share, no other tenant is admitted twice
    before it; and once requests stop arriving, finishing them admits every waiting one."""
    queue = AdmissionQueue(slots)
    tickets = itertools.count()
    running: list[tuple[str, str]] = []  # (tenant, adapter) of admitted, unfinished requests
    waiting: dict[int, tuple[str, str]] = {}
    overtaken: dict[str, Counter] = {}  # waiting tenant below its share -> admissions of each other tenant since
    for kind, tenant_number, adapter_number in events:
        tenant, adapter = f"t{tenant_number}", f"a{adapter_number}"
        share = queue.share()
        below = {t for t in queue.groups if queue.held_by(t) < share}
        overtaken = {t: counts for t, counts in overtaken.items() if t in below}
        overtaken.update({t: Counter() for t in below if t not in overtaken})
        if kind == "arrive":
            ticket = next(tickets)
            if queue.arrive(ticket, adapter, tenant):
                running.append((tenant, adapter))
            else:
                waiting[ticket] = (tenant, adapter)
            continue
        if kind == "finish" and running:
            admitted = queue.finish(*reversed(running.pop(adapter_number % len(running))))
        elif kind == "withdraw" and waiting:
            ticket = sorted(waiting)[adapter_number % len(waiting)]
            del waiting[ticket]
            admitted = queue.withdraw(ticket)
        else:
            continue
        still_waiting = {t for t, _ in waiting.values()}
        admitted_tickets = {ticket for group in admitted for ticket in group.tickets}
        left_waiting = {t for ticket, (t, _) in waiting.items() if ticket not in admitted_tickets}
        for group in admitted:
            assert set(group.tickets) == {t for t, key in waiting.items() if key == (group.tenant, group.adapter)}
            # held now counts this group; over its share only when no tenant below its share is left waiting
            assert queue.held_by(group.tenant) <= share or not below & left_waiting
            for other, counts in overtaken.items():
                if other != group.tenant and other in still_waiting:
                    counts[group.tenant] += 1
                    assert counts[group.tenant] <= 1, f"{group.tenant} went twice while {other} waited below its share"
            overtaken.pop(group.tenant, None)
            for ticket in group.tickets:
                del waiting[ticket]
                running.append((group.tenant, group.adapter))
        assert len(queue.adapters) <= slots
        assert sorted(queue.in_flight.elements()) == sorted(running)
        assert not queue.groups or len(queue.adapters) == slots
    while running:
        for group in queue.finish(*reversed(running.pop(0))):
            running += [(group.tenant, group.adapter)] * len(group.tickets)
    assert queue.waiting == 0 and not queue.groups
