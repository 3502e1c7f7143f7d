"""The tier scheduler of one sidecar, assembled from its Settings and its memory packages."""

from __future__ import annotations

from kvcache.store import TieredStore
from kvcache.worker_control import ControlWriter, control_path
from kvcache.worker_stats import stats_path
from memcore.units import gib_to_bytes
from sidecar.config import Settings
from sidecar.engine.adapters import AdapterService
from sidecar.scheduler.executor import Reporter, Scheduler
from sidecar.scheduler.objects import Budgets
from sidecar.scheduler.reporters import AdapterReporter, KvReporter, MemoryIndexReporter
from textual.store import MemoryStore

CPU_BLOCK_TOKENS = 128  # vLLM's KV block size on CPU when --block-size is unset


def _bytes(gib: float | None) -> int | None:
    return None if gib is None else gib_to_bytes(gib)


def budgets_for(settings: Settings) -> Budgets:
    """`tier_*_gib` where set; else the engine's KV cache for the engine, and shares of the machine (see
    `Budgets.from_machine`) for CPU RAM and disk. Adapter slots: the engine's `max_cpu_loras` (0: adapters off)."""
    engine = _bytes(settings.tier_engine_gib)
    return Budgets.from_machine(
        settings.data_dir, engine if engine is not None else gib_to_bytes(settings.kv_cache_gib),
        settings.max_cpu_loras if settings.max_loras else 0,
        cpu_bytes=_bytes(settings.tier_cpu_gib), disk_bytes=_bytes(settings.tier_disk_gib))


def build_scheduler(settings: Settings, store: MemoryStore, adapters: AdapterService | None,
                    kv_store: TieredStore | None) -> Scheduler:
    """A scheduler over this sidecar's memory indexes, adapters (when served) and KV. An attached engine's own
    memory is not ours to account for, so only a managed engine's KV cache is reported."""
    engine_cache = 0 if settings.engine_url else gib_to_bytes(settings.kv_cache_gib)
    ram_tier = gib_to_bytes(settings.kv_ram_gib) if kv_store is not None else 0
    store_dir = settings.resolved_kv_store_dir
    managed = kv_store is not None and not settings.engine_url  # a worker this sidecar started reads our commands
    kv = KvReporter(kv_store, engine_cache, ram_tier, settings.block_size or CPU_BLOCK_TOKENS,
                    worker_stats=stats_path(store_dir) if managed else None,
                    control=ControlWriter(control_path(store_dir)) if managed else None)
    reporters: list[Reporter] = [MemoryIndexReporter(store), kv]
    if adapters is not None:
        reporters.append(AdapterReporter(adapters))
    return Scheduler(reporters, budgets_for(settings))
