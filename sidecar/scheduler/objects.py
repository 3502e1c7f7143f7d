"""What the tier scheduler plans over: memory objects, budgets and moves (in the tiers of `memcore.tiers`), plus
the one accounting rule.

Accounting rule (where an object's bytes count), used by the planner, its tests and the report alike:
- an object in ENGINE or CPU holds `size_bytes` of that tier;
- every object that exists holds `disk_bytes` of the disk, whatever its tier: the disk copy stays while a copy is
  held higher up (an inclusive hierarchy). Adapters and memory indexes have `disk_bytes` 0: their durable copy lives
  in a store (adapter registry, memory LMDB) reported as one pinned object of its own;
- loaded adapters (in ENGINE or CPU) each take one of `Budgets.adapter_slots`.
An object in DISK holds no ENGINE or CPU bytes. Eviction deletes an object outright; only `evictable` ones (caches
whose source of truth is elsewhere, i.e. KV blocks) may be evicted.

Value (`MemoryObject.saved_s`, `density`): the LRFU model of `memcore.value`, with `rebuild_s` as the cost, or
above the disk `reload_s` where set (a KV namespace that leaves RAM is read back from disk, not recomputed).
Density divides the seconds saved by the bytes held in the tier in question, which ranks objects for a byte budget
the way a fractional knapsack would: the planner keeps the objects that save the most seconds per byte. For
adapter slots (counted, not bytes) `saved_s` ranks them.
"""

from __future__ import annotations

import enum
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from memcore.tiers import Tier
from memcore.value import ValueModel

CPU_SHARE = 0.5  # default CPU RAM budget: half the machine's RAM (the rest: the engine, its weights, the system)
DISK_SHARE = 0.5  # default disk budget: half the file system holding the data directory


class SchedulerError(ValueError):
    """An input the scheduler cannot plan with (duplicate keys, a move that does not match the state)."""


class Kind(str, enum.Enum):
    """Which memory package an object belongs to (and so which reporter carries out its moves)."""

    KV = "kv"
    ADAPTER = "adapter"
    MEMORY_INDEX = "memory_index"


@dataclass(frozen=True)
class MemoryObject:
    """One thing the scheduler may move, or a fixed reservation it only accounts for (`pinned`).

    `uses` is the use count as of `last_used_s` (a time on the scheduler's clock); `rebuild_s` is what losing the
    object's place costs: the seconds to load it back or recompute it. `reload_s`, where set, is what losing only
    its place in memory (ENGINE or CPU) costs while its disk copy stays, e.g. reading a KV namespace back from disk
    rather than recomputing it; unset, it is `rebuild_s`. `ceiling` is the highest tier the scheduler
    may move it to (the engine chooses GPU slots itself, and the sidecar cannot copy KV into the worker's RAM).
    A pinned object never moves down.
    """

    kind: Kind
    key: str
    tier: Tier
    size_bytes: int
    last_used_s: float = 0.0
    uses: float = 0.0
    rebuild_s: float = 0.0
    pinned: bool = False
    disk_bytes: int = 0
    ceiling: Tier = Tier.CPU
    evictable: bool = False
    reload_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("size_bytes", "disk_bytes", "uses", "rebuild_s"):
            if getattr(self, name) < 0:
                raise SchedulerError(f"{self.key}: {name} must be >= 0, not {getattr(self, name)}")

    def held_bytes(self, tier: Tier) -> int:
        """Bytes this object takes of `tier` where it is now (see the accounting rule)."""
        if tier is Tier.DISK:
            return self.disk_bytes
        return self.size_bytes if self.tier is tier else 0

    def saved_s(self, model: ValueModel, now: float, tier: Tier = Tier.DISK) -> float:
        """Seconds holding this object in `tier` saves (the default, DISK: holding it at all)."""
        cost_s = self.reload_s if tier is not Tier.DISK and self.reload_s is not None else self.rebuild_s
        return model.saved_s(self.uses, self.last_used_s, cost_s, now)

    def density(self, model: ValueModel, now: float, tier: Tier) -> float:
        """Seconds saved per byte of `tier` (ENGINE and CPU: `size_bytes`; the disk: `disk_bytes`)."""
        held = self.disk_bytes if tier is Tier.DISK else self.size_bytes
        return self.saved_s(model, now, tier) / max(1, held)

    @property
    def is_loaded_adapter(self) -> bool:
        return self.kind is Kind.ADAPTER and self.tier.is_loaded


@dataclass(frozen=True)
class Budgets:
    """Bytes per tier, and how many adapters may be loaded in the engine at once (its `max_cpu_loras`)."""

    engine_bytes: int
    cpu_bytes: int
    disk_bytes: int
    adapter_slots: int

    def __post_init__(self) -> None:
        for name in ("engine_bytes", "cpu_bytes", "disk_bytes", "adapter_slots"):
            if getattr(self, name) < 0:
                raise SchedulerError(f"budget {name} must be >= 0, not {getattr(self, name)}")

    def of(self, tier: Tier) -> int:
        return (self.engine_bytes, self.cpu_bytes, self.disk_bytes)[tier]

    @classmethod
    def from_machine(cls, data_dir: Path, engine_bytes: int, adapter_slots: int, cpu_bytes: int | None = None,
                     disk_bytes: int | None = None) -> Budgets:
        """Explicit budgets where given, else shares of this machine: `CPU_SHARE` of its RAM and `DISK_SHARE` of
        the file system holding `data_dir`. The engine's figure is passed in: the sidecar does not probe GPUs."""
        if cpu_bytes is None:
            cpu_bytes = int(CPU_SHARE * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        if disk_bytes is None:
            disk_bytes = int(DISK_SHARE * shutil.disk_usage(_existing(data_dir)).total)
        return cls(engine_bytes, cpu_bytes, disk_bytes, adapter_slots)


class Action(str, enum.Enum):
    """promote: up between memory tiers; prefetch: up out of the disk; demote: down a tier; evict: deleted."""

    PROMOTE = "promote"
    DEMOTE = "demote"
    EVICT = "evict"
    PREFETCH = "prefetch"


@dataclass(frozen=True)
class Move:
    """One object's change of tier (`dst` None: evicted). `reason`: "over-budget" (its tier's bytes),
    "over-slots" (adapter slots) or "free-space" (an upward move into room that was free)."""

    action: Action
    key: str
    kind: Kind
    src: Tier
    dst: Tier | None
    reason: str


@dataclass(frozen=True)
class Usage:
    """Bytes held per tier and loaded adapters, under the accounting rule."""

    engine_bytes: int
    cpu_bytes: int
    disk_bytes: int
    loaded_adapters: int

    def of(self, tier: Tier) -> int:
        return (self.engine_bytes, self.cpu_bytes, self.disk_bytes)[tier]


def usage(objects: Iterable[MemoryObject]) -> Usage:
    objects = list(objects)
    held = [sum(o.held_bytes(tier) for o in objects) for tier in Tier]
    return Usage(*held, loaded_adapters=sum(o.is_loaded_adapter for o in objects))


def _existing(path: Path) -> Path:
    """`path` or its nearest existing parent (the data directory may not exist yet)."""
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
