"""Per-tenant quotas: the one policy deciding whether a tenant may hold more, or do more at once. Pure: no I/O.

Resources and the answer a tenant gets when it would pass a limit (`QuotaExceeded.status`):
- concurrency, 429 (retry later): `engine_requests` (chat and completion requests in flight to the engine, so one
  tenant never holds every engine slot), `memory_requests` (memory REST calls in flight, so one tenant never holds
  every worker thread);
- storage, 413 (the write does not fit what is left): `memories`, `memory_bytes` (records, embeddings and history
  versions as LMDB stores them), `adapters` (registered versions the tenant owns), `adapter_bytes` (their weights);
- held slots, 409 (release one first): `distill_jobs` (queued or running), `pinned_adapters`, `pinned_kv`;
- cache, never refused: `kv_disk_bytes` (the tenant's KV blocks in the disk tier). The engine's KV connector holds
  each tenant to it by evicting that tenant's own least recently used blocks (`kvcache.lmdb_tier`), as a cache
  should; the limit reaches the engine in its connector configuration, and usage is read back from the store.

A limit of 0 means unlimited. Invariant of `check`: it refuses exactly when `used + adding > limit` (limit > 0),
so a tenant at its limit may still make writes that add nothing (deletes, access bookkeeping). `memory_bytes` counts
each memory's history versions too, so an update, which adds a version, adds bytes: a tenant cannot grow the shared
store without bound by changing one memory again and again.
`TenantSlots` keeps the concurrency counts; its invariant: `in_flight(t) <= limit` for every tenant t, and every
`acquire` that returned is matched by one `release`. With fair slots (engine requests: the batch the engine runs for
the tenants active together), while other tenants are active a new request of a tenant is also refused when it holds
its even share of them (`fair_share`); alone, only its limit applies, so a single tenant keeps its whole quota.
Requests already in flight when others become active run on, so a tenant's count falls to its share as they finish.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from memcore.units import GIB

# What one stored memory costs besides its content: the JSON record's fields and the LMDB key, measured on records
# of the chat path (about 500 bytes) and rounded up. Used to estimate a write's bytes before it is made.
RECORD_OVERHEAD_BYTES = 640
# A tenant stays active this long after its last request in flight ends: one that chats one request at a time (a
# person reading the answer and typing the next question) keeps its share through its whole conversation.
ACTIVE_WINDOW_S = 30.0


class Resource(str, enum.Enum):
    """A quota-limited resource of one tenant; the value is its name in settings, `/v1/whoami` and metrics."""

    ENGINE_REQUESTS = "engine_requests"
    MEMORY_REQUESTS = "memory_requests"
    MEMORIES = "memories"
    MEMORY_BYTES = "memory_bytes"
    ADAPTERS = "adapters"
    ADAPTER_BYTES = "adapter_bytes"
    DISTILL_JOBS = "distill_jobs"
    PINNED_ADAPTERS = "pinned_adapters"
    PINNED_KV = "pinned_kv"
    KV_DISK_BYTES = "kv_disk_bytes"

    @property
    def status(self) -> int:
        """The HTTP status of a refusal: 429 concurrency, 413 storage, 409 held slots (`kv_disk_bytes` is never
        refused: its blocks are evicted instead; 413 should a caller check it)."""
        if self in (Resource.ENGINE_REQUESTS, Resource.MEMORY_REQUESTS):
            return 429
        if self in (Resource.MEMORIES, Resource.MEMORY_BYTES, Resource.ADAPTERS, Resource.ADAPTER_BYTES,
                    Resource.KV_DISK_BYTES):
            return 413
        return 409

    @property
    def setting(self) -> str:
        """The settings field (and `--flag`) holding this resource's per-tenant limit."""
        return f"tenant_max_{self.value}"


_WHAT = {
    Resource.ENGINE_REQUESTS: "chat and completion requests in flight",
    Resource.MEMORY_REQUESTS: "memory requests in flight",
    Resource.MEMORIES: "stored memories",
    Resource.MEMORY_BYTES: "bytes of stored memories",
    Resource.ADAPTERS: "adapter versions",
    Resource.ADAPTER_BYTES: "bytes of adapter weights",
    Resource.DISTILL_JOBS: "queued or running distillation jobs",
    Resource.PINNED_ADAPTERS: "pinned adapters",
    Resource.PINNED_KV: "pinned activation prefixes",
    Resource.KV_DISK_BYTES: "bytes of cached activations (KV blocks) on disk",
}
_ADVICE = {429: "retry when some finish", 413: "delete some first", 409: "release one first"}


class QuotaExceeded(Exception):
    """A tenant would pass one of its limits. The message names the resource, the limit and the setting."""

    def __init__(self, resource: Resource, limit: int, used: int, adding: int,
                 others_active: int | None = None) -> None:
        self.resource = resource
        self.limit = limit
        self.used = used
        self.adding = adding
        self.others_active = others_active
        flag = "--" + resource.setting.replace("_", "-")
        source = f"limit set by {flag}" if others_active is None else \
            f"its even share of --engine-fair-slots with {others_active + 1} tenant(s) active"
        super().__init__(
            f"quota exceeded: {resource.value} (the {_WHAT[resource]} of this tenant): limit {limit}, in use {used}, "
            f"this request adds {adding}; {_ADVICE[resource.status]} ({source})")

    @property
    def status(self) -> int:
        return self.resource.status


def fair_share(fair_slots: int, active_tenants: int) -> int:
    """A tenant's share of `fair_slots` while `active_tenants` (itself included) are active: an even split, at least
    one each, so every tenant always gets a request in."""
    return max(1, fair_slots // max(1, active_tenants))


def check(resource: Resource, limit: int, used: int, adding: int) -> None:
    """Raise QuotaExceeded when `adding` more on top of `used` would pass `limit` (0: unlimited)."""
    if limit > 0 and adding > 0 and used + adding > limit:
        raise QuotaExceeded(resource, limit, used, adding)


@dataclass(frozen=True)
class QuotaLimits:
    """Every tenant's limits (the same for all tenants); 0 means unlimited."""

    engine_requests: int = 16
    memory_requests: int = 8
    memories: int = 100_000
    memory_bytes: int = GIB
    adapters: int = 32
    adapter_bytes: int = GIB
    distill_jobs: int = 2
    pinned_adapters: int = 1
    pinned_kv: int = 16
    kv_disk_bytes: int = 2 * GIB

    def of(self, resource: Resource) -> int:
        return getattr(self, resource.value)

    def as_json(self) -> dict[str, int]:
        return asdict(self)


def memory_write_bytes(contents: list[str], dim: int) -> int:
    """Estimated bytes `contents` take once stored as memories: content, record overhead and a float32 vector."""
    return sum(len(text.encode()) + RECORD_OVERHEAD_BYTES + 4 * dim for text in contents)


def check_memory_write(limits: QuotaLimits, stored: tuple[int, int], contents: list[str], dim: int) -> None:
    """Refuse a write of `contents` as new memories when the tenant's `stored` (count, bytes) leaves no room."""
    count, size = stored
    check(Resource.MEMORIES, limits.memories, count, len(contents))
    check(Resource.MEMORY_BYTES, limits.memory_bytes, size, memory_write_bytes(contents, dim))


def check_adapter_upload(limits: QuotaLimits, owned: tuple[int, int], upload_bytes: int) -> None:
    """Refuse one more adapter version of `upload_bytes` when the tenant's `owned` (versions, bytes) is at a limit."""
    versions, size = owned
    check(Resource.ADAPTERS, limits.adapters, versions, 1)
    check(Resource.ADAPTER_BYTES, limits.adapter_bytes, size, upload_bytes)


class TenantSlots:
    """Requests in flight per tenant for one resource, at most `limit` each (0: unlimited); with `fair_slots` (0: off),
    while other tenants are active also at most the tenant's `fair_share` of them. A tenant is active while it has
    requests in flight and for `active_window_s` after its last one ended. Thread-safe; `clock` is injected."""

    def __init__(self, resource: Resource, limit: int, fair_slots: int = 0, active_window_s: float = ACTIVE_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.resource = resource
        self.limit = limit
        self.fair_slots = fair_slots
        self.active_window_s = active_window_s
        self.clock = clock
        self._counts: dict[str, int] = {}
        self._ended: dict[str, float] = {}  # tenant without requests in flight -> when its last one ended
        self._lock = threading.Lock()

    def acquire(self, tenant: str) -> int:
        """Take one slot for `tenant`, or raise QuotaExceeded (429) when it holds its limit or its fair share already.
        Returns how many it held before this one: 0 for a tenant's only request (its rank, for engine priorities)."""
        with self._lock:
            used = self._counts.get(tenant, 0)
            check(self.resource, self.limit, used, 1)
            others = self._others_active(tenant) if self.fair_slots else 0
            share = fair_share(self.fair_slots, others + 1)
            if others and used + 1 > share:
                raise QuotaExceeded(self.resource, share, used, 1, others_active=others)
            self._counts[tenant] = used + 1
            self._ended.pop(tenant, None)
            return used

    def release(self, tenant: str) -> None:
        with self._lock:
            left = self._counts.get(tenant, 0) - 1
            if left > 0:
                self._counts[tenant] = left
            else:
                self._counts.pop(tenant, None)
                self._ended[tenant] = self.clock()

    def in_flight(self, tenant: str) -> int:
        with self._lock:
            return self._counts.get(tenant, 0)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def _others_active(self, tenant: str) -> int:
        """Tenants other than `tenant` with requests in flight or ended within the window (forgetting older ones)."""
        since = self.clock() - self.active_window_s
        self._ended = {other: at for other, at in self._ended.items() if at >= since}
        return len((self._counts.keys() | self._ended.keys()) - {tenant})
