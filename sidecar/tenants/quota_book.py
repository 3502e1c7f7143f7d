"""What each tenant uses of its quotas, read at the moment from the component that owns each resource, and the
quota refusals so far. The limits and the decisions are `sidecar.tenants.quotas`'; this module only gathers the figures
and counts refusals (every refusal of a quota passes through `refusing`, so the counts are complete).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from sidecar.tenants.quotas import (QuotaExceeded, QuotaLimits, Resource, TenantSlots, check, check_adapter_upload,
                                    check_memory_write)


class QuotaBook:
    """The quotas of every tenant of one sidecar: the concurrency slots it holds itself, and `readers` giving the
    current usage of the other resources (resource -> tenant -> amount), supplied by the server's components.
    `engine_fair_slots` (0: off) are the engine requests that active tenants split evenly (`TenantSlots`)."""

    def __init__(self, limits: QuotaLimits, readers: Mapping[Resource, Callable[[str], int]] | None = None,
                 engine_fair_slots: int = 0) -> None:
        self.limits = limits
        self.engine_slots = TenantSlots(Resource.ENGINE_REQUESTS, limits.engine_requests, engine_fair_slots)
        self.memory_slots = TenantSlots(Resource.MEMORY_REQUESTS, limits.memory_requests)
        self.readers: dict[Resource, Callable[[str], int]] = {
            **(readers or {}),
            Resource.ENGINE_REQUESTS: self.engine_slots.in_flight,
            Resource.MEMORY_REQUESTS: self.memory_slots.in_flight,
        }
        self.refusals: Counter[tuple[str, str]] = Counter()  # (tenant, resource) -> refusals
        self._lock = threading.Lock()

    @contextmanager
    def refusing(self, tenant: str) -> Iterator[None]:
        """Count a QuotaExceeded raised inside against `tenant`, and let it go on."""
        try:
            yield
        except QuotaExceeded as error:
            with self._lock:
                self.refusals[(tenant, error.resource.value)] += 1
            raise

    def check(self, tenant: str, resource: Resource, adding: int = 1) -> None:
        """Refuse `adding` more of `resource` for `tenant` when its current usage leaves no room."""
        with self.refusing(tenant):
            check(resource, self.limits.of(resource), self.used(tenant, resource), adding)

    def admit_memory_write(self, tenant: str, stored: tuple[int, int], contents: Sequence[str], dim: int) -> None:
        """`textual.store.WriteAdmission`: refuse new memories that would pass the tenant's count or bytes."""
        with self.refusing(tenant):
            check_memory_write(self.limits, stored, list(contents), dim)

    def import_room(self, stored: tuple[int, int]) -> tuple[int | None, int | None]:
        """(memories, bytes) an import into a tenant holding `stored` (count, bytes) may bring, None where unlimited:
        the memories its quota has room for, and twice its room in bytes (an export line spells a vector in base64
        and its record in JSON: under 1.5 times what the store keeps of it)."""
        count, size = stored
        memories = None if self.limits.memories <= 0 else max(0, self.limits.memories - count)
        return memories, None if self.limits.memory_bytes <= 0 else 2 * max(0, self.limits.memory_bytes - size)

    def admit_memory_growth(self, tenant: str, stored: tuple[int, int], adding: int) -> None:
        """`textual.store.GrowthAdmission`: refuse a change that would take the tenant's stored bytes (records,
        embeddings, history versions) past its limit; checked exactly, inside the write's transaction."""
        with self.refusing(tenant):
            check(Resource.MEMORY_BYTES, self.limits.memory_bytes, stored[1], adding)

    def check_adapter_upload(self, tenant: str, upload_bytes: int) -> None:
        """Refuse one more adapter version of about `upload_bytes` when the tenant owns as many as it may."""
        owned = (self.used(tenant, Resource.ADAPTERS), self.used(tenant, Resource.ADAPTER_BYTES))
        with self.refusing(tenant):
            check_adapter_upload(self.limits, owned, upload_bytes)

    @contextmanager
    def holding(self, slots: TenantSlots, tenant: str) -> Iterator[None]:
        """One of `tenant`'s slots for the duration of the block (429 when it holds all of them)."""
        with self.refusing(tenant):
            slots.acquire(tenant)
        try:
            yield
        finally:
            slots.release(tenant)

    def used(self, tenant: str, resource: Resource) -> int:
        reader = self.readers.get(resource)
        return 0 if reader is None else reader(tenant)

    def report(self, tenant: str) -> dict:
        """The tenant's usage and limits per resource, as `/v1/whoami` shows them (0: unlimited)."""
        return {"usage": {resource.value: self.used(tenant, resource) for resource in Resource},
                "limits": self.limits.as_json()}
