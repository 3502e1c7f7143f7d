"""Serving registered LoRA adapters: resolve a request's adapter for its tenant, and keep the engine's loaded set
right by carrying out `adapters.residency` plans through vLLM's runtime LoRA API.

Invariants:
- an adapter is loaded in the engine under its `engine_name` (unique per owner, name, version and content) from its
  content-addressed blob, so KV blocks and vLLM's prefix cache never mix adapters or versions;
- a request holds a lease on its adapter from `acquire` to `release` (for a stream, to its last byte); the planner
  never unloads an adapter with leases, so no request loses its adapter mid-flight;
- residency changes happen under one asyncio lock, in plan order, and the state is updated move by move, only
  after the engine confirmed the move; the plan is `adapters.residency.plan`, computed inline on the request (the
  tier scheduler's adapter moves come back here as `load` and `unload`, and it unloads by the same rule);
- with an `admission` queue (`adapters.admission`), a request is admitted before it takes its lease: at most
  `max_loras` distinct adapters have requests in the engine, the others wait in groups, tenants served in rotation
  and none holding more than its share of the slots while another holding less waits; an admitted request is
  finished exactly once (on `release`, or at once if it gave up while being admitted);
- an engine restart forgets every loaded adapter; the next request loads its adapter again;
- an unload goes through the engine's `sidecar.engine.lora_release` route, which also removes the adapter from the
  engine worker's LoRA cache and checks it is gone (vLLM's own unload forgets the name only); `releases` counts the
  outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from adapters.admission import AdmissionQueue, Admitted
from adapters.errors import AdapterError, AdapterNotFoundError
from adapters.record import AdapterRecord
from adapters.registry import AdapterRegistry
from adapters.residency import (AdapterState, Capacity, LoadCost, Move, ResidencyError, ResidencyState, apply, pin,
                                plan, record_use, unpin)
from memcore.tiers import Tier
from memcore.value import ValueModel
from sidecar.engine.client import EngineClient
from sidecar.engine.errors import EngineError, EngineFailure
from sidecar.engine.lora_release import RELEASE_PATH
from sidecar.engine.process import Engine

log = logging.getLogger("memsidecar.adapters")


@dataclass(frozen=True)
class AdapterLease:
    """One request's hold on an adapter, from `acquire` to `release`: the adapter's engine model name (`key`) and the
    tenant the request is for (whose share of the slots it counts against)."""

    key: str
    tenant: str


class AdapterService:
    """The registry as the chat path and the adapter routes see it, plus the engine's loaded set."""

    def __init__(self, registry: AdapterRegistry, client: EngineClient, engine: Engine, capacity: Capacity,
                 model: ValueModel | None = None, clock: Callable[[], float] = time.monotonic,
                 wait_s: float = 60.0, cost: LoadCost = LoadCost(), admission: AdmissionQueue | None = None,
                 sizing: dict | None = None) -> None:
        self.registry = registry
        self.client = client
        self.engine = engine
        self.capacity = capacity
        self.model = model or ValueModel()
        self.cost = cost
        self.clock = clock
        self.state = ResidencyState()
        self.records: dict[str, AdapterRecord] = {}
        self.leases: Counter[str] = Counter()
        self.wait_s = wait_s
        self._lock = asyncio.Lock()
        self._released = asyncio.Event()
        self._restarts = engine.restart_count
        self.releases: Counter[str] = Counter()  # unloads whose memory the engine did ("released") or did not free
        self.pinners: dict[str, str] = {}  # engine name of a pinned adapter -> the tenant that pinned it
        self.admission = admission
        self.sizing = sizing  # how `max_loras auto` sized the engine's slots (`adapters.sizing.SlotSizing.as_json`)
        self._admissions: dict[object, asyncio.Future] = {}  # ticket of a waiting request -> its admission

    def resolve(self, name: str, tenant: str) -> AdapterRecord:
        """The adapter `name` (or `name@vN`) as `tenant` sees it; a 404 otherwise."""
        record = self.registry_lookup(name, tenant)
        if record is None:
            raise AdapterNotFoundError("adapter", f"no adapter `{name}`")
        return record

    def registry_lookup(self, name: str, tenant: str) -> AdapterRecord | None:
        """The adapter `name` (or `name@vN`) as `tenant` sees it, or None."""
        try:
            return self.registry.resolve(name, tenant)
        except AdapterError:  # not found, or not even a valid adapter name
            return None

    def tier_of(self, record: AdapterRecord) -> str:
        adapter = self.state.get(record.engine_name)
        return "loaded" if adapter is not None and adapter.tier.is_loaded else "disk"

    def is_pinned(self, record: AdapterRecord) -> bool:
        adapter = self.state.get(record.engine_name)
        return adapter is not None and adapter.is_pinned

    async def acquire(self, record: AdapterRecord, tenant: str) -> AdapterLease:
        """Admit and lease `record` for one request of `tenant`: loaded in the engine when this returns; the lease
        names its engine model name.

        With more distinct adapters asked for than the engine has slots, the request waits for its turn
        (`adapters.admission`: fair across tenants); while every loaded adapter is pinned or busy, it waits for a
        lease to end. Both waits together last at most `wait_s`. `release` ends both."""
        key = self._track(record)
        deadline = self.clock() + self.wait_s
        await self._admit(key, tenant, deadline)
        try:
            await self._lease(record, key, deadline)
        except BaseException:
            self._finish(key, tenant)
            raise
        return AdapterLease(key, tenant)

    def release(self, lease: AdapterLease) -> None:
        """The request holding `lease` ended: its lease, and its admission."""
        self._unlease(lease.key)
        self._finish(lease.key, lease.tenant)

    async def load(self, record: AdapterRecord) -> None:
        """Load now (an operator's or the tier scheduler's prefetch): a lease that ends at once, outside admission."""
        key = self._track(record)
        await self._lease(record, key, self.clock() + self.wait_s)
        self._unlease(key)

    def admission_report(self) -> dict | None:
        """The admission queue's figures (slots, adapters in flight and waiting, requests admitted at once or after
        waiting); None without admission. Names no adapter."""
        return self.admission.stats() if self.admission is not None else None

    async def _admit(self, key: str, tenant: str, deadline: float) -> None:
        if self.admission is None or self.admission.arrive(ticket := object(), key, tenant):
            return
        future = asyncio.get_running_loop().create_future()
        self._admissions[ticket] = future
        try:
            await asyncio.wait_for(future, max(0.01, deadline - self.clock()))
        except asyncio.TimeoutError:
            self._wake(self.admission.withdraw(ticket))
            raise EngineError(EngineFailure.ADAPTER_SLOTS_BUSY,
                              f"requests of {self.admission.slots} other adapters held the engine's adapter slots "
                              f"for {self.wait_s:.0f} s; retry shortly") from None
        except BaseException:  # cancelled: admitted meanwhile (finish it) or still waiting (withdraw it)
            if future.done() and not future.cancelled():
                self._finish(key, tenant)
            else:
                self._wake(self.admission.withdraw(ticket))
            raise
        finally:
            self._admissions.pop(ticket, None)

    def _finish(self, key: str, tenant: str) -> None:
        if self.admission is not None:
            self._wake(self.admission.finish(key, tenant))

    def _wake(self, groups: list[Admitted]) -> None:
        """Let the admitted groups' requests run; one whose request already gave up is finished at once."""
        for group in groups:
            for ticket in group.tickets:
                future = self._admissions.get(ticket)
                if future is not None and not future.done():
                    future.set_result(None)
                else:
                    self._finish(group.adapter, group.tenant)

    async def _lease(self, record: AdapterRecord, key: str, deadline: float) -> None:
        """Hold a lease on `key` with it loaded in the engine, waiting up to `deadline` for a free adapter slot."""
        self.leases[key] += 1
        try:
            self.state = record_use(self.state, key, self.clock(), self.model)
            while True:
                released = self._released
                await self._settle()
                if self.state.load(key).tier.is_loaded:
                    break
                if self.clock() >= deadline:
                    raise EngineError(EngineFailure.ADAPTER_SLOTS_BUSY,
                                      f"every loaded adapter ({self.capacity.max_cpu_loras}) stayed pinned or busy "
                                      f"for {self.wait_s:.0f} s; retry shortly")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(released.wait(), max(0.01, deadline - self.clock()))
        except BaseException:
            self._unlease(key)
            raise
        await asyncio.to_thread(self.registry.touch, record)  # with a shared store: a round trip

    def _unlease(self, key: str) -> None:
        self.leases[key] -= 1
        if self.leases[key] <= 0:
            del self.leases[key]
        self._released.set()  # wake the requests waiting for a slot
        self._released = asyncio.Event()

    async def unload(self, record: AdapterRecord) -> None:
        """Unload from the engine unless requests are using it (409 then)."""
        key = self._track(record)
        async with self._lock:
            self._forget_if_restarted()
            if self.leases[key]:
                raise EngineError(EngineFailure.ADAPTER_BUSY,
                                  f"adapter {record.reference} is serving requests; unload it when they end")
            if self.state.load(key).tier.is_loaded:
                await self._execute(Move("unload", key, "operator"))

    def pinned_by(self, tenant: str) -> int:
        """How many adapters `tenant` pinned that are pinned now (its share of the engine's adapter slots)."""
        return sum(1 for key, pinner in self.pinners.items() if pinner == tenant and self.state.get(key) is not None
                   and self.state.load(key).is_pinned)

    async def set_pinned(self, record: AdapterRecord, pinned: bool, tenant: str | None = None) -> None:
        """Pin (keep loaded) or unpin; a pin is counted against `tenant`, the caller, until unpinned."""
        key = self._track(record)
        try:
            self.state = pin(self.state, key, self.capacity) if pinned else unpin(self.state, key)
        except ResidencyError as error:
            raise EngineError(EngineFailure.TOO_MANY_PINNED, str(error)) from None
        if pinned and tenant is not None:
            self.pinners[key] = tenant
        elif not pinned:
            self.pinners.pop(key, None)
        if pinned:
            async with self._lock:
                await self._apply_plan()

    async def forget(self, records: list[AdapterRecord]) -> None:
        """Unload deleted adapters and drop them from the residency state."""
        for record in records:
            key = record.engine_name
            if self.state.get(key) is None:
                continue
            await self.unload(record)
            self.state = ResidencyState(tuple(a for a in self.state.adapters if a.key != key))
            self.records.pop(key, None)
            self.pinners.pop(key, None)

    def _track(self, record: AdapterRecord) -> str:
        key = record.engine_name
        if self.state.get(key) is None:
            self.state = self.state.with_adapter(AdapterState(key, size_bytes=record.bytes))
            self.records[key] = record
        return key

    async def _settle(self) -> None:
        async with self._lock:
            self._forget_if_restarted()
            await self._apply_plan()

    async def _apply_plan(self) -> None:
        for move in plan(self.state, self.capacity, dict(self.leases), self.clock(), self.model, self.cost):
            await self._execute(move)

    async def _execute(self, move: Move) -> None:
        record = self.records[move.adapter]
        if move.kind == "load":
            path = await asyncio.to_thread(self.registry.path_of, record)  # with a shared store: a fetch, maybe large
            status, text = await self.client.post_command("/v1/load_lora_adapter", {
                "lora_name": move.adapter, "lora_path": str(path)})
            if status != 200 and "already been loaded" not in text:
                raise EngineError(EngineFailure.ADAPTER_LOAD_FAILED,
                                  f"the engine could not load adapter {record.reference}: {text[:300]}")
        else:
            await self._unload(record, move.adapter)
        self.state = apply(self.state, [move])
        log.info("adapter %s %sed (%s)", record.reference, move.kind, move.reason)

    async def _unload(self, record: AdapterRecord, engine_name: str) -> None:
        """Unload through the engine middleware that also frees the weights (`sidecar.engine.lora_release`); an attached
        engine without it gets vLLM's plain unload. A 404 means the engine did not have the adapter (it restarted)."""
        status, text = await self.client.post_command(RELEASE_PATH, {"lora_name": engine_name})
        if status == 404 and '"lora_name"' not in text:  # no middleware on this engine
            status, text = await self.client.post_command("/v1/unload_lora_adapter", {"lora_name": engine_name})
            outcome = "unverified"
        else:
            outcome = "released" if status == 200 and json.loads(text).get("released") is True else "unreleased"
        if status not in (200, 404):
            raise EngineError(EngineFailure.ADAPTER_UNLOAD_FAILED,
                              f"the engine could not unload adapter {record.reference}: {text[:300]}")
        if status == 404:
            return
        self.releases[outcome] += 1
        if outcome == "unreleased":
            log.warning("adapter %s was unloaded but the engine still holds its weights", record.reference)

    def _forget_if_restarted(self) -> None:
        if self.engine.restart_count != self._restarts:
            self._restarts = self.engine.restart_count
            self.state = ResidencyState(tuple(
                AdapterState(a.key, Tier.DISK, a.is_pinned, a.last_used, a.frequency, a.size_bytes)
                for a in self.state.adapters))
            log.info("the engine restarted: every adapter will be loaded again on its next use")
