"""KV tier figures over time: a ring of samples taken every few seconds, served at `GET /v1/tiers/history`.

Each sample holds, per tier (ram, disk, remote): entries, bytes, budget, and over the interval since the previous
sample the hit rate (hits / lookups in that tier) and the load bandwidth (bytes read / seconds reading). The
figures come from the engine worker's published stats (`kvcache.worker_stats`), which see every tier the engine
loads from; without an engine worker yet, from the sidecar's own view of the disk and shared tiers (no RAM tier).
Figures cover the whole sidecar and name no tenant's objects.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from pathlib import Path
from typing import Any, Callable

from fastapi.concurrency import run_in_threadpool

from kvcache.worker_stats import read_stats

log = logging.getLogger("memsidecar")
TIER_NAMES = ("ram", "disk", "remote")
_USAGE = ("entries", "bytes", "budget_bytes")


class TierHistory:
    """The last `max_samples` samples, oldest first."""

    def __init__(self, max_samples: int = 360) -> None:
        self._samples: collections.deque[dict[str, Any]] = collections.deque(maxlen=max_samples)
        self._previous: dict[str, dict[str, float]] = {}

    def record(self, now: float, stats: dict[str, Any], source: str) -> dict[str, Any]:
        tiers = {name: self._tier_sample(name, stats[name]) for name in TIER_NAMES if isinstance(stats.get(name), dict)}
        sample = {"time": now, "source": source, "tiers": tiers}
        self._samples.append(sample)
        return sample

    def samples(self) -> list[dict[str, Any]]:
        return list(self._samples)

    def _tier_sample(self, name: str, figures: dict[str, Any]) -> dict[str, Any]:
        hits, misses, read = (float(figures.get(k) or 0) for k in ("hits", "misses", "bytes_read"))
        rate = float(figures.get("read_bytes_per_s") or 0)
        seconds = read / rate if rate else 0.0
        before = self._previous.get(name, {"hits": 0.0, "misses": 0.0, "bytes_read": 0.0, "seconds": 0.0})
        now = {"hits": hits, "misses": misses, "bytes_read": read, "seconds": seconds}
        self._previous[name] = now
        delta = {key: now[key] - before[key] for key in now}
        if min(delta.values()) < 0:  # the engine restarted: its counters began again
            delta = now
        lookups = delta["hits"] + delta["misses"]
        return {**{key: figures.get(key) for key in _USAGE},
                "hits": int(delta["hits"]), "misses": int(delta["misses"]),
                "hit_rate": round(delta["hits"] / lookups, 4) if lookups else None,
                "load_bytes_per_s": round(delta["bytes_read"] / delta["seconds"]) if delta["seconds"] > 0 else None}


def current_stats(sidecar_stats: Callable[[], dict[str, Any]], worker_stats_path: Path) -> tuple[dict, str]:
    """The engine worker's published stats when there are any, else the sidecar's own store's."""
    worker = read_stats(worker_stats_path)
    if worker is not None:
        return worker, "engine_worker"
    return sidecar_stats(), "sidecar"


async def sample_loop(history: TierHistory, sidecar_stats: Callable[[], dict[str, Any]], worker_stats_path: Path,
                      interval_s: float) -> None:
    """Record a sample every `interval_s` seconds until cancelled."""
    while True:
        try:
            stats, source = await run_in_threadpool(current_stats, sidecar_stats, worker_stats_path)
            history.record(time.time(), stats, source)
        except Exception:  # a missed sample is a gap in a chart; logged, and the next interval tries again
            log.exception("sampling KV tier figures failed")
        await asyncio.sleep(interval_s)


