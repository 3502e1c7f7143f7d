"""`BlockTier`, the one interface of a KV block store (RAM, LMDB, Redis), so the store can walk them fastest first.

These are stores, not placements: where memory is held (engine, CPU RAM, disk) is `memcore.tiers.Tier`.

A tier stores encoded blocks (`block_format`) by 48-byte key and knows nothing of dtypes or shapes.

Reads hand the stored bytes to a `consume` callback instead of returning them or taking an output array: the bytes
are valid only during the call (for LMDB they are the memory map inside a read transaction), so the caller decodes
straight from them into its own array with a single copy, and copies them only when it means to keep them (to
promote a block into RAM).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class TierUsage:
    """What a tier holds. `None` where the tier cannot know cheaply (a shared Redis holds other clients' keys)."""

    entries: int | None
    bytes: int | None
    budget_bytes: int | None


class BlockTier(Protocol):
    """A byte-bounded map from key to encoded block: one tier of the KV store."""

    name: str

    def contains(self, key: bytes) -> bool:
        """Whether the tier holds `key`, without reading the block."""

    def read(self, key: bytes, consume: Callable[[memoryview], T]) -> T | None:
        """`consume(stored bytes)`, or None when absent. The view is valid only during the call."""

    def put_many(self, items: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """Store blocks (one batch, one commit where that applies); return blocks pushed out to make room that the
        caller may demote to a slower tier (tiers that simply drop them return [])."""

    def evict(self, keys: Iterable[bytes]) -> int:
        """Delete `keys`; return how many were present."""

    def keys(self, prefix: bytes = b"") -> list[bytes]:
        """Keys starting with `prefix` (a 16-byte namespace id selects one namespace)."""

    def usage(self) -> TierUsage:
        ...
