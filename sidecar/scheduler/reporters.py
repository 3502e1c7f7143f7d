"""Reporters: each memory package's objects as the tier scheduler sees them, and its moves carried out.

What each package lets the scheduler control, and what it only accounts for:
- memory indexes (`textual.store.MemoryStore`): each tenant's in-RAM index is an object in CPU; demote = `release`
  (rebuilt from LMDB and its FAISS file on the next use), prefetch = load it now. The memory LMDB is a pinned disk
  reservation: it is the source of truth and is never evicted.
- adapters (`sidecar.adapter_service.AdapterService`): every adapter this sidecar has served is an object; loaded
  ones are in CPU, since the engine's CPU LoRA cache holds every loaded adapter (also those the engine copied into
  its GPU slots, which it picks itself). Demote = `unload`, prefetch = `load` (which counts as a use in the
  service's own residency model). Adapters serving requests are pinned. The registry's blobs are a disk reservation.
- KV (`kvcache.store.TieredStore`, opened here without RAM): the engine's KV cache (ENGINE) and the worker's RAM
  tier (CPU) are fixed reservations set when the engine starts, so pinned objects: the RAM tier lives in the
  engine's worker process and only its own LRU moves blocks in and out of it. What the scheduler controls is the
  disk: each KV namespace (model, adapter, tenant scope) on disk is an evictable object, evicted by deleting its
  unpinned blocks from the local LMDB only (`TieredStore.drop_namespace` would also empty the tier shared with
  other nodes, and pinned blocks). It cannot move KV up: that needs the engine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from kvcache.keys import NAMESPACE_BYTES
from kvcache.store import TieredStore
from sidecar.adapter_service import AdapterService
from sidecar.scheduler.objects import Action, Kind, MemoryObject, Move, Tier
from textual.store import MemoryStore, TenantResidency

# Recompute cost of a KV token: 24.031 s to prefill 4096 tokens of a Qwen2-0.5B-shaped model in bf16 on this
# project's 2-core CPU machine (README, `bench.ttft`), i.e. ~5.9 ms per token. Only KV namespaces compete for the
# disk, so this constant ranks them against each other, where it cancels out; it matters only in absolute reports.
PREFILL_S_PER_TOKEN = 24.031 / 4096
# Loading a tenant's index (LMDB read, FAISS file, lexical structures): 17-21 us per memory, measured for 2,000
# episodes on this project's 2-core machine.
INDEX_LOAD_S_PER_MEMORY = 20e-6
# The BM25 index is built on the first search after a load, about 14 us per memory (README: 141 ms at 10k).
BM25_BUILD_S_PER_MEMORY = 14e-6

MEMORY_PREFIX, ADAPTER_PREFIX, KV_PREFIX = "memory:", "adapter:", "kv:"


def reservation(kind: Kind, key: str, tier: Tier, size_bytes: int = 0, disk_bytes: int = 0) -> MemoryObject:
    """A fixed amount the scheduler accounts for but never moves."""
    return MemoryObject(kind, key, tier, size_bytes, pinned=True, disk_bytes=disk_bytes, ceiling=tier)


def _unsupported(move: Move) -> ValueError:
    return ValueError(f"the {move.kind.value} reporter cannot {move.action.value} {move.key!r} "
                      f"from {move.src.label} to {move.dst.label if move.dst else 'gone'}")


class MemoryIndexReporter:
    """Tenants' in-memory indexes of one `MemoryStore`."""

    kind = Kind.MEMORY_INDEX

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    async def objects(self, now: float) -> list[MemoryObject]:
        return await asyncio.to_thread(self._objects, now)

    def _objects(self, now: float) -> list[MemoryObject]:
        offset = now - self.store.clock()  # the store's clock onto the scheduler's
        found = [MemoryObject(Kind.MEMORY_INDEX, MEMORY_PREFIX + r.tenant, Tier.CPU if r.is_loaded else Tier.DISK,
                              r.resident_bytes, r.last_used_at + offset, float(r.uses), _index_rebuild_s(r))
                 for r in self.store.residency()]
        return found + [reservation(Kind.MEMORY_INDEX, "memory-store:lmdb", Tier.DISK,
                                    disk_bytes=self.store.db.disk_bytes())]

    async def apply(self, move: Move) -> None:
        tenant = move.key.removeprefix(MEMORY_PREFIX)
        if move.action is Action.DEMOTE and move.dst is Tier.DISK:
            await asyncio.to_thread(self.store.release, tenant)
        elif move.action is Action.PREFETCH and move.dst is Tier.CPU:
            await asyncio.to_thread(self.store.index, tenant)
        else:
            raise _unsupported(move)


def _index_rebuild_s(residency: TenantResidency) -> float:
    """The larger of the last measured load and the per-memory estimate (a load measured while the tenant was
    small, or empty at its first write, says little about it now), plus the BM25 build of the first search."""
    load_s = max(residency.build_s or 0.0, INDEX_LOAD_S_PER_MEMORY * residency.memories)
    return load_s + BM25_BUILD_S_PER_MEMORY * residency.memories


class AdapterReporter:
    """The adapters one `AdapterService` has served, loaded in the engine or not."""

    kind = Kind.ADAPTER

    def __init__(self, service: AdapterService) -> None:
        self.service = service

    async def objects(self, now: float) -> list[MemoryObject]:
        service = self.service
        offset = now - service.clock()
        found = [MemoryObject(Kind.ADAPTER, ADAPTER_PREFIX + a.key, Tier.CPU if a.tier.is_loaded else Tier.DISK,
                              a.size_bytes, a.last_used + offset, a.frequency, service.model.reload_seconds(a),
                              pinned=a.is_pinned or service.leases[a.key] > 0)
                 for a in service.state.adapters]
        blobs = await asyncio.to_thread(service.registry.usage)
        return found + [reservation(Kind.ADAPTER, "adapter-store:blobs", Tier.DISK, disk_bytes=blobs["blob_bytes"])]

    async def apply(self, move: Move) -> None:
        record = self.service.records[move.key.removeprefix(ADAPTER_PREFIX)]
        if move.action is Action.DEMOTE and move.dst is Tier.DISK:
            await self.service.unload(record)
        elif move.action is Action.PREFETCH and move.dst is Tier.CPU:
            await self.service.load(record)
        else:
            raise _unsupported(move)


@dataclass
class _Seen:
    """What the reporter has observed of one namespace: its newest access sequence, and when that changed."""

    sequence: int
    uses: int
    last_used_s: float


@dataclass(frozen=True)
class _Namespace:
    bytes: int
    blocks: int
    sequence: int
    pinned: bool


class KvReporter:
    """Activation memory: the engine's reservations, and KV namespaces on this node's disk.

    Recency comes from LMDB's access sequence, which is an order, not a time: a namespace counts one use at the
    pass that first sees it and at each pass that sees its newest sequence grow (reads reach the sequence at the
    worker's next write). Each pass walks the disk tier's index once (key, sequence, size and pin of every block),
    in a thread."""

    kind = Kind.KV

    def __init__(self, store: TieredStore | None, engine_cache_bytes: int, ram_tier_bytes: int, block_tokens: int,
                 prefill_s_per_token: float = PREFILL_S_PER_TOKEN,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.engine_cache_bytes = engine_cache_bytes
        self.ram_tier_bytes = ram_tier_bytes
        self.block_tokens = block_tokens
        self.prefill_s_per_token = prefill_s_per_token
        self._seen: dict[bytes, _Seen] = {}

    async def objects(self, now: float) -> list[MemoryObject]:
        return await asyncio.to_thread(self._objects, now)

    def _objects(self, now: float) -> list[MemoryObject]:
        found = []
        if self.engine_cache_bytes:
            found.append(reservation(Kind.KV, "kv-reserved:engine-cache", Tier.ENGINE, self.engine_cache_bytes))
        if self.store is None:
            return found
        found.append(reservation(Kind.KV, "kv-reserved:ram-tier", Tier.CPU, self.ram_tier_bytes))
        namespaces = self._namespaces()
        overhead = self.store.disk.used_bytes() - sum(ns.bytes for ns in namespaces.values())
        found.append(reservation(Kind.KV, "kv-reserved:lmdb-pages", Tier.DISK, disk_bytes=max(0, overhead)))
        self._seen = {nsid: self._observe(nsid, ns, now) for nsid, ns in namespaces.items()}
        return found + [self._object(nsid, ns) for nsid, ns in sorted(namespaces.items())]

    def _namespaces(self) -> dict[bytes, _Namespace]:
        grouped: dict[bytes, _Namespace] = {}
        for entry in self.store.disk.entries():
            nsid = entry.key[:NAMESPACE_BYTES]
            old = grouped.get(nsid, _Namespace(0, 0, 0, False))
            grouped[nsid] = _Namespace(old.bytes + entry.size, old.blocks + 1,
                                       max(old.sequence, int(entry.last_access)), old.pinned or entry.pinned)
        return grouped

    def _observe(self, nsid: bytes, namespace: _Namespace, now: float) -> _Seen:
        seen = self._seen.get(nsid)
        if seen is None:
            return _Seen(namespace.sequence, 1, now)
        if namespace.sequence > seen.sequence:
            return _Seen(namespace.sequence, seen.uses + 1, now)
        return seen

    def _object(self, nsid: bytes, namespace: _Namespace) -> MemoryObject:
        seen = self._seen[nsid]
        rebuild_s = namespace.blocks * self.block_tokens * self.prefill_s_per_token
        return MemoryObject(Kind.KV, KV_PREFIX + nsid.hex(), Tier.DISK, namespace.bytes, seen.last_used_s,
                            float(seen.uses), rebuild_s, pinned=namespace.pinned, disk_bytes=namespace.bytes,
                            ceiling=Tier.DISK, evictable=True)

    async def apply(self, move: Move) -> None:
        if move.action is not Action.EVICT or self.store is None:
            raise _unsupported(move)
        await asyncio.to_thread(self._evict, bytes.fromhex(move.key.removeprefix(KV_PREFIX)))

    def _evict(self, nsid: bytes) -> int:
        keys = [entry.key for entry in self.store.disk.entries(nsid) if not entry.pinned]
        return self.store.disk.evict(keys)
