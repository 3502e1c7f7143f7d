"""`GET /v1/tiers`: budgets and usage of engine memory (GPU, or CPU RAM on a CPU build), CPU RAM and disk, across
KV blocks, LoRA adapters and memory indexes: each memory package's own figures and limits (KV tiers by bytes,
adapters by slots, memory indexes by tier moves), and under `scheduler` the tier scheduler's budgets, the usage its
last pass left and its recent moves (`sidecar.scheduler`).

Figures cover the whole sidecar, not one tenant, and name no tenant's objects.
"""

from __future__ import annotations

from typing import Any

from kvcache.store import TieredStore
from memcore.units import gib_to_bytes
from sidecar.config import Settings
from sidecar.engine.adapters import AdapterService
from textual.store import MemoryStore



def tier_report(settings: Settings, kv_store: TieredStore | None, adapters: AdapterService | None,
                memory: MemoryStore, scheduler: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report; `scheduler` is `Scheduler.report()`, taken on the event loop (the scheduler's own thread)."""
    kv = kv_store.stats() if kv_store is not None else {}
    disk = kv.get("disk", {})
    loaded = [a for a in adapters.state.adapters if a.tier.is_loaded] if adapters else []
    resident = memory.resident_usage()
    return {
        "engine": {
            "kv_cache": {"budget_bytes": gib_to_bytes(settings.kv_cache_gib)},
            "adapter_slots": {"budget": settings.max_loras, "loaded": len(loaded),
                              "loaded_bytes": sum(a.size_bytes for a in loaded),
                              "auto": adapters.sizing if adapters else None,
                              "admission": adapters.admission_report() if adapters else None},
        },
        "cpu_ram": {
            "kv_ram_tier": {"budget_bytes": gib_to_bytes(settings.kv_ram_gib) if settings.kv_store else 0,
                            "note": "held by the engine's worker; its usage is in the engine's process"},
            "adapter_cpu_cache": {"budget": settings.max_cpu_loras if settings.max_loras else 0,
                                  "loaded": len(loaded)},
            "memory_indexes": resident,
        },
        "disk": {
            "kv_lmdb": {"budget_bytes": disk.get("budget_bytes"), "bytes": disk.get("bytes"),
                        "entries": disk.get("entries"), "pinned": disk.get("pinned")},
            "adapters": adapters.registry.usage() if adapters else {"versions": 0, "blob_bytes": 0},
            "memory_lmdb": {"bytes": memory.db.disk_bytes()},
        },
        "shared": {"kv_remote": kv.get("remote")} if settings.kv_remote_url else {},
        "scheduler": scheduler,
    }
