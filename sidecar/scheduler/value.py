"""What holding an object in a tier is worth: the expected rebuild seconds it saves, per byte it holds.

    frequency(now) = uses * 0.5 ** ((now - last_used_s) / half_life_s)
    saved_s(now)   = frequency(now) * rebuild_s
    density(now)   = saved_s(now) / max(1, bytes held in the tier under contention)

- frequency is LRFU's combined recency and frequency: the use count, decayed by the time since the last use, so a
  burst of uses long ago weighs as little as one recent use (a short half-life behaves like LRU, a long one like
  LFU). Reporters give `uses` as of `last_used_s`; where they keep a plain count, older uses decay from the last
  one, an over-estimate for objects used in bursts.
- rebuild_s is the price of losing the place: recompute time for KV, load time for an adapter, index rebuild
  time for a tenant's memories. Above the disk an object's `reload_s` is used where set: a KV namespace that
  leaves RAM is read back from disk, not recomputed.
- dividing by bytes ranks objects for a byte budget the way a fractional knapsack would: the planner keeps the
  objects that save the most seconds per byte. For adapter slots (counted, not bytes) `saved_s` ranks them.
"""

from __future__ import annotations

from dataclasses import dataclass

from memcore.tiers import Tier
from sidecar.scheduler.objects import MemoryObject, SchedulerError


@dataclass(frozen=True)
class ValueModel:
    """`half_life_s` of the use decay; objects saving at most `min_prefetch_s` are never moved up unasked, and
    moves up fill at most `prefetch_fill` of a tier's budget (headroom, so usage drifting up between passes does
    not bounce an object up and down)."""

    half_life_s: float = 600.0
    min_prefetch_s: float = 0.0
    prefetch_fill: float = 0.9

    def __post_init__(self) -> None:
        if not self.half_life_s > 0:
            raise SchedulerError(f"half_life_s must be > 0, not {self.half_life_s}")
        if not 0 <= self.prefetch_fill <= 1:
            raise SchedulerError(f"prefetch_fill must be in [0, 1], not {self.prefetch_fill}")

    def frequency(self, obj: MemoryObject, now: float) -> float:
        age = max(0.0, now - obj.last_used_s)
        return obj.uses * 0.5 ** (age / self.half_life_s)

    def saved_s(self, obj: MemoryObject, now: float, tier: Tier = Tier.DISK) -> float:
        """Seconds holding `obj` in `tier` saves (the default, DISK: holding it at all)."""
        seconds = obj.reload_s if tier is not Tier.DISK and obj.reload_s is not None else obj.rebuild_s
        return self.frequency(obj, now) * seconds

    def density(self, obj: MemoryObject, now: float, tier: Tier) -> float:
        """Seconds saved per byte of `tier` (ENGINE and CPU: `size_bytes`; the disk: `disk_bytes`)."""
        held = obj.disk_bytes if tier is Tier.DISK else obj.size_bytes
        return self.saved_s(obj, now, tier) / max(1, held)
