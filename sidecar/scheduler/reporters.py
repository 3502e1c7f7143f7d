"""Reporters: each memory package's objects as the tier scheduler sees them, and its moves carried out.

What each package lets the scheduler control, and what it only accounts for:
- memory indexes (`textual.store.MemoryStore`): each tenant's in-RAM index is an object in CPU; demote = `release`
  (rebuilt from LMDB and its FAISS file on the next use), prefetch = load it now. The memory LMDB is a pinned disk
  reservation: it is the source of truth and is never evicted.
- adapters (`sidecar.engine.adapters.AdapterService`): every adapter this sidecar has served is an object; loaded
  ones are in CPU, since the engine's CPU LoRA cache holds every loaded adapter (also those the engine copied into
  its GPU slots, which it picks itself). Demote = `unload`, prefetch = `load` (which counts as a use in the
  service's own residency model). Adapters serving requests are pinned. The registry's blobs are a disk reservation.
- KV (`kvcache.store.TieredStore`, opened here without RAM): the engine's KV cache (ENGINE) is a fixed
  reservation. Each KV namespace (model, adapter, tenant scope) is an evictable object: in CPU while the engine
  worker's RAM tier holds blocks of it (as the worker publishes, `kvcache.worker_stats`), else in DISK. The RAM
  tier lives in the worker process, so demote and prefetch are commands to it (`kvcache.worker_control`:
  `release` its blocks from RAM, `prefetch` them from disk into free RAM), carried out on its next poll; evict
  deletes the namespace's unpinned blocks from the local LMDB (not from the tier shared with other nodes) and
  releases them from RAM. Until the worker has published its figures (no engine, or an attached one), the RAM tier
  is a fixed reservation of its configured size and namespaces stay on disk.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kvcache.keys import NAMESPACE_BYTES
from kvcache.store import TieredStore
from kvcache.worker_control import ControlWriter
from kvcache.worker_stats import read_stats
from memcore.tiers import Tier
from sidecar.engine.adapters import AdapterService
from sidecar.scheduler.objects import Action, Kind, MemoryObject, Move
from textual.store import MemoryStore, TenantResidency

# Recompute cost of a KV token: 24.031 s to prefill 4096 tokens of a Qwen2-0.5B-shaped model in bf16 on this
# project's 2-core CPU machine (docs/measurement-history.md, `bench.ttft`), i.e. ~5.9 ms per token. Only KV
# namespaces compete for the disk, so this constant ranks them against each other, where it cancels out; it matters
# only in absolute reports.
PREFILL_S_PER_TOKEN = 24.031 / 4096
# Reading KV back from LMDB into the engine: 2.0 GB/s, measured by the engine worker at 4096 tokens after a restart
# (`bench.ttft`, this project's 2-core machine). What a namespace leaving the worker's RAM tier costs per byte.
DISK_LOAD_BYTES_PER_S = 2.0e9
# Loading a tenant's index (LMDB read, FAISS file, lexical structures): 17-21 us per memory, measured for 2,000
# episodes on this project's 2-core machine.
INDEX_LOAD_S_PER_MEMORY = 20e-6
# The BM25 index is built on the first search after a load, about 14 us per memory (bench.memory_scale: 141 ms at 10k).
BM25_BUILD_S_PER_MEMORY = 14e-6

MEMORY_PREFIX, ADAPTER_PREFIX, KV_PREFIX = "memory:", "adapter:", "kv:"
WORKER_STATS_MAX_AGE_S = 30.0  # older worker figures are from an engine that is gone: RAM placement unknown
REPEAT_COMMAND_AFTER_S = 60.0  # the same command for the same namespace is not resent sooner (the worker may lack room)


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
                              a.size_bytes, a.last_used + offset, a.frequency, service.cost.seconds(a.size_bytes),
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
                 clock: Callable[[], float] = time.time, worker_stats: Path | None = None,
                 control: ControlWriter | None = None) -> None:
        self.store = store
        self.engine_cache_bytes = engine_cache_bytes
        self.ram_tier_bytes = ram_tier_bytes
        self.block_tokens = block_tokens
        self.prefill_s_per_token = prefill_s_per_token
        self.clock = clock
        self.worker_stats = worker_stats
        self.control = control
        self._seen: dict[bytes, _Seen] = {}
        self._sent: dict[tuple[str, bytes], float] = {}

    async def objects(self, now: float) -> list[MemoryObject]:
        return await asyncio.to_thread(self._objects, now)

    def _objects(self, now: float) -> list[MemoryObject]:
        found = []
        if self.engine_cache_bytes:
            found.append(reservation(Kind.KV, "kv-reserved:engine-cache", Tier.ENGINE, self.engine_cache_bytes))
        if self.store is None:
            return found
        in_ram = self._worker_ram()
        if in_ram is None:
            found.append(reservation(Kind.KV, "kv-reserved:ram-tier", Tier.CPU, self.ram_tier_bytes))
        namespaces = self._namespaces()
        overhead = self.store.disk.used_bytes() - sum(ns.bytes for ns in namespaces.values())
        found.append(reservation(Kind.KV, "kv-reserved:lmdb-pages", Tier.DISK, disk_bytes=max(0, overhead)))
        for nsid in (in_ram or {}).keys() - namespaces.keys():  # in RAM only (disk evicted them): still RAM used
            namespaces[nsid] = _Namespace(0, 0, 0, False)
        self._seen = {nsid: self._observe(nsid, ns, now) for nsid, ns in namespaces.items()}
        return found + [self._object(nsid, ns, in_ram) for nsid, ns in sorted(namespaces.items())]

    def _worker_ram(self) -> dict[bytes, int] | None:
        """Bytes per namespace in the worker's RAM tier, or None when unknown (no fresh figures, no control)."""
        if self.worker_stats is None or self.control is None:
            return None
        stats = read_stats(self.worker_stats)
        if stats is None or not isinstance(stats.get("ram_namespaces"), dict) or \
                self.clock() - float(stats.get("written_at", 0)) > WORKER_STATS_MAX_AGE_S:
            return None
        return {bytes.fromhex(nsid): int(size) for nsid, size in stats["ram_namespaces"].items()}

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

    def _object(self, nsid: bytes, namespace: _Namespace, in_ram: dict[bytes, int] | None) -> MemoryObject:
        """In CPU with its RAM bytes when the worker holds some of it; else in DISK with the bytes a prefetch
        would take. A namespace with no disk blocks cannot be prefetched."""
        seen = self._seen[nsid]
        rebuild_s = namespace.blocks * self.block_tokens * self.prefill_s_per_token
        ram_bytes = (in_ram or {}).get(nsid, 0)
        ceiling = Tier.CPU if in_ram is not None and (ram_bytes or namespace.bytes) else Tier.DISK
        return MemoryObject(Kind.KV, KV_PREFIX + nsid.hex(), Tier.CPU if ram_bytes else Tier.DISK,
                            ram_bytes or namespace.bytes, seen.last_used_s, float(seen.uses), rebuild_s,
                            pinned=namespace.pinned, disk_bytes=namespace.bytes, ceiling=ceiling, evictable=True,
                            reload_s=namespace.bytes / DISK_LOAD_BYTES_PER_S)

    async def apply(self, move: Move) -> None:
        nsid = bytes.fromhex(move.key.removeprefix(KV_PREFIX))
        if move.action is Action.EVICT and self.store is not None:
            await asyncio.to_thread(self._evict, nsid)
            if move.src is Tier.CPU:
                self._command("release", nsid)
        elif move.action is Action.DEMOTE and move.dst is Tier.DISK and self.control is not None:
            self._command("release", nsid)
        elif move.action in (Action.PREFETCH, Action.PROMOTE) and move.dst is Tier.CPU and self.control is not None:
            self._command("prefetch", nsid)
        else:
            raise _unsupported(move)

    def _command(self, action: str, nsid: bytes) -> None:
        """Send a command to the worker unless the same one went out within `REPEAT_COMMAND_AFTER_S`."""
        now = self.clock()
        self._sent = {sent: at for sent, at in self._sent.items() if now - at < REPEAT_COMMAND_AFTER_S}
        if (action, nsid) in self._sent:
            return
        self._sent[action, nsid] = now
        self.control.send(action, nsid)

    def _evict(self, nsid: bytes) -> int:
        keys = [entry.key for entry in self.store.disk.entries(nsid) if not entry.pinned]
        return self.store.disk.evict(keys)
