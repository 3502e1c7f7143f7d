"""The RAM tier: encoded blocks in an LRU bounded by bytes. Not thread-safe: `TieredStore` holds the lock."""

from __future__ import annotations

from collections import OrderedDict

from kvcache.policy import choose_victims


class RamTier:
    """Least-recently-used blocks are evicted first; pinned ones never. Evictions are returned for demotion."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self._blocks: OrderedDict[bytes, bytes] = OrderedDict()
        self.pinned: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._blocks)

    def contains(self, key: bytes) -> bool:
        return key in self._blocks

    def get(self, key: bytes) -> bytes | None:
        data = self._blocks.get(key)
        if data is not None:
            self._blocks.move_to_end(key)
        return data

    def put(self, key: bytes, data: bytes) -> list[tuple[bytes, bytes]]:
        """Insert (or refresh) a block; return the (key, data) pairs evicted to stay within budget."""
        if len(data) > self.budget_bytes:
            return [(key, data)]
        self.evict(key)
        self._blocks[key] = data
        self.used_bytes += len(data)
        sizes = ((k, len(v)) for k, v in self._blocks.items())
        victims = choose_victims(sizes, self.pinned, self.used_bytes, self.budget_bytes)
        return [(victim, self._remove(victim)) for victim in victims]

    def evict(self, key: bytes) -> bool:
        return self._remove(key) is not None

    def _remove(self, key: bytes) -> bytes | None:
        data = self._blocks.pop(key, None)
        if data is not None:
            self.used_bytes -= len(data)
        return data

    def keys_with_prefix(self, prefix: bytes) -> list[bytes]:
        return [key for key in self._blocks if key.startswith(prefix)]
