"""The RAM tier: encoded blocks in an LRU bounded by bytes.

Invariants: `used_bytes` is the sum of the stored blocks' lengths; after every `put_many` it is within
`budget_bytes` unless what is left is pinned; a pinned key is never evicted (pinning a key that is not stored yet
pins it for when it arrives). Not thread-safe: `TieredStore` calls it under its lock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from kvcache.policy import Entry, choose_victims
from kvcache.tier import TierUsage

T = TypeVar("T")


class RamTier:
    """Least-recently-used blocks are evicted first; pinned ones never. Evictions are returned for demotion."""

    name = "ram"

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self._blocks: OrderedDict[bytes, bytes] = OrderedDict()
        self._pinned: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._blocks)

    def contains(self, key: bytes) -> bool:
        return key in self._blocks

    def get(self, key: bytes) -> bytes | None:
        """The stored bytes (immutable, so safe to use after the store's lock is released); marks them used."""
        data = self._blocks.get(key)
        if data is not None:
            self._blocks.move_to_end(key)
        return data

    def read(self, key: bytes, consume: Callable[[memoryview], T]) -> T | None:
        data = self.get(key)
        return None if data is None else consume(memoryview(data))

    def put_many(self, items: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """Insert (or refresh) blocks; return the (key, data) pairs evicted to stay within budget."""
        evicted = []
        for key, data in items:
            evicted += self.put(key, data)
        return evicted

    def put(self, key: bytes, data: bytes) -> list[tuple[bytes, bytes]]:
        self._remove(key)
        if len(data) > self.budget_bytes and key not in self._pinned:
            return [(key, data)]
        self._blocks[key] = data
        self.used_bytes += len(data)
        victims = choose_victims(self._oldest_first(), self.used_bytes, self.budget_bytes)
        return [(victim, self._remove(victim)) for victim in victims]

    def _oldest_first(self) -> Iterator[Entry]:
        for position, (key, data) in enumerate(self._blocks.items()):
            yield Entry(key, len(data), position, pinned=key in self._pinned)

    def entries(self) -> list[Entry]:
        return list(self._oldest_first())

    def evict(self, keys: Iterable[bytes]) -> int:
        return sum(self._remove(key) is not None for key in keys)

    def _remove(self, key: bytes) -> bytes | None:
        data = self._blocks.pop(key, None)
        if data is not None:
            self.used_bytes -= len(data)
        return data

    def pin(self, keys: Iterable[bytes]) -> None:
        self._pinned.update(keys)

    def unpin(self, keys: Iterable[bytes]) -> None:
        self._pinned.difference_update(keys)

    def is_pinned(self, key: bytes) -> bool:
        return key in self._pinned

    def keys(self, prefix: bytes = b"") -> list[bytes]:
        return [key for key in self._blocks if key.startswith(prefix)]

    def usage(self) -> TierUsage:
        return TierUsage(len(self._blocks), self.used_bytes, self.budget_bytes)
