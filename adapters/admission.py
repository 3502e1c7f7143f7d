"""Which adapter requests go to the engine now, when more distinct adapters are asked for than it has slots: pure
bookkeeping (no asyncio, no engine), driven by the request path (`sidecar.engine.adapters.AdapterService`).

vLLM runs at most `max_loras` (K) distinct adapters per batch and skips waiting requests of any other adapter; an
adapter whose requests keep arriving keeps its slot, so another can wait without bound. The sidecar therefore sends
requests of at most K distinct adapters to the engine at once and queues the rest, fairly across tenants:

- an adapter *holds a slot* while it has admitted requests that have not finished; at most K adapters hold slots.
  A tenant *holds* the slots of the adapters its admitted requests use (an adapter two tenants use counts for both);
- a request is admitted at once when its adapter holds a slot, or a slot is free, and nobody waits (so with
  N <= K adapters nothing ever waits: no added latency);
- otherwise it joins the *group* of its (tenant, adapter); a tenant's groups wait in the order they started waiting,
  and the tenants with waiting groups take turns (a rotation, in the order they started waiting);
- when slots free up, groups are admitted one at a time, a whole group at once (same-adapter requests run in one
  batch), each time from the first tenant in the rotation holding fewer than its *share* of the slots
  (ceil(K / tenants holding slots or waiting)), or if none does, from the first tenant in the rotation; that tenant
  then goes to the end of the rotation. The chosen group waits for a slot unless its adapter still holds one;
- while anyone waits, a slot holder's new requests queue too, so it drains and gives up its slot: no adapter keeps
  a slot while others wait (never starves), and a tenant with many adapters or many requests gets one turn per
  round, and no turn at all while it holds its share and another tenant holding less waits.

Invariants (property-tested): at most K adapters hold slots; a waiting queue implies every slot is held; a group is
admitted whole; with at most K distinct adapters every request is admitted on arrival; a group admitted after
waiting belongs to a tenant below its share, or no waiting tenant is; while a waiting tenant holds less than its
share, no other tenant has two groups admitted before one of its own; with one tenant, a waiting request is admitted
after at most as many group admissions as there were groups ahead of its adapter when it joined (bounded wait), as
long as admitted requests finish.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Hashable


class AdmissionError(ValueError):
    """A misuse of the queue: finishing a request that was never admitted, a ticket used twice, slots < 1."""


@dataclass(frozen=True)
class Admitted:
    """A group admitted together: `tickets` of `tenant`'s requests of `adapter`, in arrival order."""

    adapter: str
    tickets: tuple[Hashable, ...]
    tenant: str = ""


class AdmissionQueue:
    """Admission of adapter requests into K engine slots (see the module docstring). `ticket`s are the caller's
    unique handles of waiting requests; `arrive` says whether a request runs now, `finish` and `withdraw` return the
    groups that run because of them."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise AdmissionError(f"slots must be >= 1, not {slots}")
        self.slots = slots
        self.in_flight: Counter[tuple[str, str]] = Counter()  # (tenant, adapter) -> admitted requests not finished
        self.adapters: Counter[str] = Counter()  # adapter -> admitted requests not finished: the slot holders
        # the rotation: tenant -> its groups (adapter -> waiting tickets), both in the order they started waiting
        self.groups: OrderedDict[str, OrderedDict[str, list[Hashable]]] = OrderedDict()
        self._tickets: dict[Hashable, tuple[str, str]] = {}
        self.admitted_at_once = 0
        self.admitted_after_wait = 0

    @property
    def waiting(self) -> int:
        return len(self._tickets)

    def holds_slot(self, adapter: str) -> bool:
        return self.adapters[adapter] > 0

    def held_by(self, tenant: str) -> int:
        """How many slots `tenant` holds: the adapters its admitted requests use."""
        return sum(1 for (owner, _), count in self.in_flight.items() if owner == tenant and count > 0)

    def share(self) -> int:
        """The slots a tenant may hold while others wait: K over the tenants holding slots or waiting, rounded up."""
        active = {tenant for tenant, _ in self.in_flight} | set(self.groups)
        return math.ceil(self.slots / max(1, len(active)))

    def arrive(self, ticket: Hashable, adapter: str, tenant: str = "") -> bool:
        """A request of `tenant` for `adapter`: True when admitted now (the caller must `finish` it), else it waits
        as `ticket`."""
        if ticket in self._tickets:
            raise AdmissionError(f"ticket {ticket!r} is already waiting")
        if not self.groups and (self.holds_slot(adapter) or len(self.adapters) < self.slots):
            self._admit(tenant, adapter, 1)
            self.admitted_at_once += 1
            return True
        self.groups.setdefault(tenant, OrderedDict()).setdefault(adapter, []).append(ticket)
        self._tickets[ticket] = (tenant, adapter)
        return False

    def finish(self, adapter: str, tenant: str = "") -> list[Admitted]:
        """An admitted request of `tenant` for `adapter` ended; the groups admitted into the slots that frees."""
        if self.in_flight[(tenant, adapter)] <= 0:
            raise AdmissionError(f"adapter {adapter!r} has no admitted request of tenant {tenant!r} to finish")
        self._admit(tenant, adapter, -1)
        return self._fill()

    def withdraw(self, ticket: Hashable) -> list[Admitted]:
        """A waiting request gave up (timeout, disconnect); the groups that may run now. Unknown tickets: none."""
        found = self._tickets.pop(ticket, None)
        if found is None:
            return []
        tenant, adapter = found
        groups = self.groups[tenant]
        groups[adapter].remove(ticket)
        if not groups[adapter]:
            del groups[adapter]
        if not groups:
            del self.groups[tenant]
        return self._fill()

    def next_tenant(self) -> str | None:
        """The tenant whose oldest group goes next: the first in the rotation below its share, else the first."""
        if not self.groups:
            return None
        share = self.share()
        return next((tenant for tenant in self.groups if self.held_by(tenant) < share), next(iter(self.groups)))

    def _fill(self) -> list[Admitted]:
        admitted = []
        while (tenant := self.next_tenant()) is not None:
            groups = self.groups[tenant]
            adapter = next(iter(groups))
            if not self.holds_slot(adapter) and len(self.adapters) >= self.slots:
                break
            tickets = tuple(groups.pop(adapter))
            del self.groups[tenant]
            if groups:
                self.groups[tenant] = groups  # its turn is over: to the end of the rotation
            for ticket in tickets:
                del self._tickets[ticket]
            self._admit(tenant, adapter, len(tickets))
            self.admitted_after_wait += len(tickets)
            admitted.append(Admitted(adapter, tickets, tenant))
        return admitted

    def _admit(self, tenant: str, adapter: str, count: int) -> None:
        """Count `count` more admitted requests (fewer, if negative) of `tenant` for `adapter`."""
        for counter, key in ((self.in_flight, (tenant, adapter)), (self.adapters, adapter)):
            counter[key] += count
            if counter[key] <= 0:
                del counter[key]

    def stats(self) -> dict:
        waiting_adapters = {adapter for groups in self.groups.values() for adapter in groups}
        return {"slots": self.slots, "adapters_in_flight": len(self.adapters), "waiting": self.waiting,
                "adapters_waiting": len(waiting_adapters), "tenants_waiting": len(self.groups),
                "admitted_at_once": self.admitted_at_once, "admitted_after_wait": self.admitted_after_wait}
