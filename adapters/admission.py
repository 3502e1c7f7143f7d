"""Which adapter requests go to the engine now, when more distinct adapters are asked for than it has slots: pure
bookkeeping (no asyncio, no engine), driven by the request path (`sidecar.engine.adapters.AdapterService`).

vLLM runs at most `max_loras` (K) distinct adapters per batch and skips waiting requests of any other adapter; an
adapter whose requests keep arriving keeps its slot, so another can wait without bound. The sidecar therefore sends
requests of at most K distinct adapters to the engine at once and queues the rest by adapter:

- an adapter *holds a slot* while it has admitted requests that have not finished; at most K adapters hold slots;
- a request is admitted at once when its adapter holds a slot, or a slot is free, and no adapter is waiting (so with
  N <= K adapters nothing ever waits: no added latency);
- otherwise it joins its adapter's *group* in the rotation, a FIFO of adapters in the order they started waiting
  (a request of an adapter already waiting joins that group, keeping its place);
- when slots free up, groups are admitted from the head of the rotation, a whole group at once (same-adapter
  requests run in one batch); the head waits for a slot unless its adapter still holds one;
- while any adapter waits, a slot holder's new requests queue too, so it drains and gives up its slot: no adapter
  keeps a slot while others wait (never starves).

Invariants (property-tested): at most K adapters hold slots; a waiting queue implies every slot is held; a group is
admitted whole; with at most K distinct adapters every request is admitted on arrival; a waiting request is admitted
after at most as many group admissions as there were groups ahead of its adapter when it joined (bounded wait), as
long as admitted requests finish.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Hashable


class AdmissionError(ValueError):
    """A misuse of the queue: finishing a request that was never admitted, a ticket used twice, slots < 1."""


@dataclass(frozen=True)
class Admitted:
    """A group admitted together: `tickets` of `adapter`, in arrival order."""

    adapter: str
    tickets: tuple[Hashable, ...]


class AdmissionQueue:
    """Admission of adapter requests into K engine slots (see the module docstring). `ticket`s are the caller's
    unique handles of waiting requests; `arrive` says whether a request runs now, `finish` and `withdraw` return the
    groups that run because of them."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise AdmissionError(f"slots must be >= 1, not {slots}")
        self.slots = slots
        self.in_flight: Counter[str] = Counter()  # adapter -> admitted requests not finished: the slot holders
        self.groups: OrderedDict[str, list[Hashable]] = OrderedDict()  # the rotation: adapter -> waiting tickets
        self._tickets: dict[Hashable, str] = {}
        self.admitted_at_once = 0
        self.admitted_after_wait = 0

    @property
    def waiting(self) -> int:
        return len(self._tickets)

    def holds_slot(self, adapter: str) -> bool:
        return self.in_flight[adapter] > 0

    def arrive(self, ticket: Hashable, adapter: str) -> bool:
        """A request of `adapter`: True when admitted now (the caller must `finish` it), else it waits as `ticket`."""
        if ticket in self._tickets:
            raise AdmissionError(f"ticket {ticket!r} is already waiting")
        if not self.groups and (self.holds_slot(adapter) or len(self.in_flight) < self.slots):
            self.in_flight[adapter] += 1
            self.admitted_at_once += 1
            return True
        self.groups.setdefault(adapter, []).append(ticket)
        self._tickets[ticket] = adapter
        return False

    def finish(self, adapter: str) -> list[Admitted]:
        """An admitted request of `adapter` ended; the groups admitted into the slots that frees."""
        if not self.holds_slot(adapter):
            raise AdmissionError(f"adapter {adapter!r} has no admitted request to finish")
        self.in_flight[adapter] -= 1
        if not self.in_flight[adapter]:
            del self.in_flight[adapter]
        return self._fill()

    def withdraw(self, ticket: Hashable) -> list[Admitted]:
        """A waiting request gave up (timeout, disconnect); the groups that may run now. Unknown tickets: none."""
        adapter = self._tickets.pop(ticket, None)
        if adapter is None:
            return []
        group = self.groups[adapter]
        group.remove(ticket)
        if not group:
            del self.groups[adapter]
        return self._fill()

    def _fill(self) -> list[Admitted]:
        admitted = []
        while self.groups:
            adapter = next(iter(self.groups))
            if not self.holds_slot(adapter) and len(self.in_flight) >= self.slots:
                break
            tickets = tuple(self.groups.pop(adapter))
            for ticket in tickets:
                del self._tickets[ticket]
            self.in_flight[adapter] += len(tickets)
            self.admitted_after_wait += len(tickets)
            admitted.append(Admitted(adapter, tickets))
        return admitted

    def stats(self) -> dict:
        return {"slots": self.slots, "adapters_in_flight": len(self.in_flight), "waiting": self.waiting,
                "adapters_waiting": len(self.groups), "admitted_at_once": self.admitted_at_once,
                "admitted_after_wait": self.admitted_after_wait}
