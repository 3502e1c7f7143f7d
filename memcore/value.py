"""What keeping a piece of memory where it is is worth: the one value model of the project (LRFU).

    frequency(now) = uses * 0.5 ** ((now - last_used_s) / half_life_s)
    saved_s(now)   = frequency(now) * cost_s

- frequency is LRFU's combined recency and frequency: the use count, decayed by the time since the last use, so a
  burst of uses long ago weighs as little as one recent use (a short half-life behaves like LRU, a long one like
  LFU). Callers keep `uses` as of `last_used_s` and add 1 per use to the decayed figure (`adapters.residency`), or
  keep a plain count whose older uses then decay from the last one, an over-estimate for bursts.
- cost_s is the price of losing the place, in seconds, which each memory package knows for its own objects:
  load time for an adapter (`adapters.residency.LoadCost`), recompute or reload time for KV, index rebuild time
  for a tenant's memories (`sidecar.scheduler.reporters`).

Used by the adapter residency planner (adapter slots) and by the tier scheduler (byte budgets, which divide
`saved_s` by bytes held); both take the same defaults.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ValueModel:
    """`half_life_s` of the use decay; objects saving at most `min_prefetch_s` are never moved up unasked, and
    moves up fill at most `prefetch_fill` of a byte budget (headroom, so usage drifting up between passes does not
    bounce an object up and down; a planner of counted slots has no use for it)."""

    half_life_s: float = 600.0
    min_prefetch_s: float = 0.0
    prefetch_fill: float = 0.9

    def __post_init__(self) -> None:
        if not self.half_life_s > 0:
            raise ValueError(f"half_life_s must be > 0, not {self.half_life_s}")
        if not 0 <= self.prefetch_fill <= 1:
            raise ValueError(f"prefetch_fill must be in [0, 1], not {self.prefetch_fill}")

    def frequency(self, uses: float, last_used_s: float, now: float) -> float:
        """`uses` as of `last_used_s`, decayed to `now`."""
        age = max(0.0, now - last_used_s)
        return uses * 0.5 ** (age / self.half_life_s)

    def saved_s(self, uses: float, last_used_s: float, cost_s: float, now: float) -> float:
        """The seconds keeping the object is expected to save: its decayed use count times what losing it costs."""
        return self.frequency(uses, last_used_s, now) * cost_s

    def is_worth_prefetching(self, saved_s: float) -> bool:
        return saved_s > self.min_prefetch_s
