"""Where a piece of memory is physically held: the one tier vocabulary of the project.

Fastest first, and ordered: a smaller tier is a higher one (ENGINE < CPU < DISK), so planners compare tiers and
step down with `below()`.
- ENGINE: the engine's own memory (GPU memory, or on a CPU build the RAM the engine reserved for itself): its KV
  cache, and the LoRA adapters in its GPU slots;
- CPU: this machine's RAM outside the engine's reservation: the KV RAM tier, the engine's CPU LoRA cache, tenants'
  in-memory indexes;
- DISK: this node's files: the KV LMDB, adapter blobs, the memory LMDB.

The KV store's shared remote tier is not here: it is no node's to budget or place into (`kvcache.store` names its
block tiers "ram", "disk" and "remote" in its statistics). A textual memory's hot/warm/cold/archived is its
lifecycle stage, not a placement: `textual.memory.LifecycleTier`.
"""

from __future__ import annotations

import enum


class Tier(enum.IntEnum):
    """Where an object is held, fastest first (see the module docstring)."""

    ENGINE = 0
    CPU = 1
    DISK = 2

    @property
    def label(self) -> str:
        """The lower-case name, as reports and logs spell it: "engine", "cpu", "disk"."""
        return self.name.lower()

    @property
    def is_loaded(self) -> bool:
        """Held in memory (ENGINE or CPU), not only on disk."""
        return self is not Tier.DISK

    def below(self) -> Tier | None:
        """The next slower tier; None below the disk (the object is gone)."""
        return None if self is Tier.DISK else Tier(self + 1)
