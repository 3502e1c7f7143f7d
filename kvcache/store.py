"""The tiered store of activation memory: RAM (LRU) in front of LMDB on disk.

- `put_many` writes to RAM and through to disk in one batch (the worker calls it from its background writer), so a
  restarted engine finds every block that was acknowledged; RAM evictions need no demotion since disk has them.
- `get_into` reads from the fastest tier holding the key, decodes straight into the caller's array, and promotes a
  disk hit to RAM. A block that fails its header or checksum is a miss: it is counted and deleted from its tier.
- `lookup` / `contains` are what the scheduler asks; the scheduler opens the store without a RAM tier.

Locking: one lock guards the RAM tier and the counters; LMDB reads and writes run outside it (LMDB's own locks
serialise writers across threads and processes).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kvcache.block_format import CorruptBlock, decode_into, encode
from kvcache.lmdb_tier import LmdbTier
from kvcache.ram_tier import RamTier

log = logging.getLogger("memsidecar.kvcache")


@dataclass(frozen=True)
class StoreConfig:
    directory: Path
    ram_bytes: int
    disk_bytes: int


@dataclass
class TierCounters:
    hits: int = 0
    misses: int = 0
    corrupt: int = 0
    bytes_read: int = 0
    read_seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        rate = self.bytes_read / self.read_seconds if self.read_seconds else 0.0
        return {"hits": self.hits, "misses": self.misses, "corrupt": self.corrupt, "bytes_read": self.bytes_read,
                "read_bytes_per_s": round(rate)}


@dataclass
class _Counters:
    ram: TierCounters = field(default_factory=TierCounters)
    disk: TierCounters = field(default_factory=TierCounters)
    puts: int = 0


class TieredStore:
    """Blocks by 48-byte key across RAM and disk; see the module docstring for the rules."""

    def __init__(self, ram: RamTier | None, disk: LmdbTier) -> None:
        self.ram = ram
        self.disk = disk
        self._lock = threading.Lock()
        self._counters = _Counters()

    @classmethod
    def open(cls, config: StoreConfig, with_ram: bool = True) -> "TieredStore":
        ram = RamTier(config.ram_bytes) if with_ram else None
        return cls(ram, LmdbTier.open(config.directory, config.disk_bytes))

    def close(self) -> None:
        self.disk.close()

    def contains(self, key: bytes) -> bool:
        if self.ram is not None:
            with self._lock:
                if self.ram.contains(key):
                    return True
        return self.disk.contains(key)

    def lookup(self, keys: list[bytes]) -> int:
        """How many leading `keys` the store holds."""
        count = 0
        while count < len(keys) and self.contains(keys[count]):
            count += 1
        return count

    def get_into(self, key: bytes, out: np.ndarray, dtype: str, layout: str) -> bool:
        """Decode the block `key` into `out`; False on a miss (absent or corrupt)."""
        if self.ram is not None and self._get_from_ram(key, out, dtype, layout):
            return True
        started = time.perf_counter()
        try:
            data = self.disk.read(key, lambda view: _decode_and_copy(view, out, dtype, layout, self.ram is not None))
        except CorruptBlock as exc:
            self._drop_corrupt(key, "disk", exc)
            return False
        with self._lock:
            counters = self._counters.disk
            if data is None:
                counters.misses += 1
                return False
            counters.hits += 1
            counters.bytes_read += out.nbytes
            counters.read_seconds += time.perf_counter() - started
            if self.ram is not None and isinstance(data, bytes):
                self.ram.put(key, data)
        return True

    def _get_from_ram(self, key: bytes, out: np.ndarray, dtype: str, layout: str) -> bool:
        started = time.perf_counter()
        with self._lock:
            data = self.ram.get(key)
        if data is None:
            with self._lock:
                self._counters.ram.misses += 1
            return False
        try:
            decode_into(data, out, dtype, layout)
        except CorruptBlock as exc:
            self._drop_corrupt(key, "ram", exc)
            return False
        with self._lock:
            counters = self._counters.ram
            counters.hits += 1
            counters.bytes_read += out.nbytes
            counters.read_seconds += time.perf_counter() - started
        return True

    def _drop_corrupt(self, key: bytes, tier: str, error: CorruptBlock) -> None:
        log.warning("dropping a corrupt KV block from the %s tier: %s", tier, error)
        with self._lock:
            getattr(self._counters, tier).corrupt += 1
            if tier == "ram":
                self.ram.evict(key)
        if tier == "disk":
            self.disk.evict([key])

    def put_many(self, items: list[tuple[bytes, np.ndarray]], dtype: str, layout: str) -> None:
        """Encode and store blocks in RAM and on disk (one disk transaction)."""
        encoded = [(key, encode(array, dtype, layout)) for key, array in items]
        if self.ram is not None:
            with self._lock:
                for key, data in encoded:
                    self.ram.put(key, data)
        self.disk.put_many(encoded)
        with self._lock:
            self._counters.puts += len(encoded)

    def pin(self, keys: list[bytes], pinned: bool = True) -> None:
        """Pinned blocks are never evicted from either tier."""
        if self.ram is not None:
            with self._lock:
                (self.ram.pinned.update if pinned else self.ram.pinned.difference_update)(keys)
        self.disk.pin(keys, pinned)

    def drop_namespace(self, namespace_id: bytes) -> int:
        """Delete every block of a namespace from every tier; returns how many disk blocks went."""
        if self.ram is not None:
            with self._lock:
                for key in self.ram.keys_with_prefix(namespace_id):
                    self.ram.evict(key)
        return self.disk.evict(self.disk.keys_with_prefix(namespace_id))

    def prefetch(self, namespace_id: bytes) -> int:
        """Copy a namespace's disk blocks into RAM, up to the RAM budget; returns how many were loaded."""
        if self.ram is None:
            return 0
        loaded = 0
        for key in self.disk.keys_with_prefix(namespace_id):
            data = self.disk.read(key, bytes)
            with self._lock:
                if data is None or self.ram.used_bytes + len(data) > self.ram.budget_bytes:
                    break
                self.ram.put(key, data)
            loaded += 1
        return loaded

    def stats(self) -> dict[str, dict]:
        with self._lock:
            ram = {"entries": len(self.ram), "bytes": self.ram.used_bytes, "budget_bytes": self.ram.budget_bytes} \
                if self.ram is not None else {}
            ram.update(self._counters.ram.as_dict())
            disk = self._counters.disk.as_dict()
            puts = self._counters.puts
        return {"ram": ram, "disk": {**self.disk.stats(), **disk}, "puts": puts}


def _decode_and_copy(view: memoryview, out: np.ndarray, dtype: str, layout: str, keep: bool) -> bytes | bool:
    """Decode inside the LMDB transaction; also return a copy of the bytes when they will be promoted to RAM."""
    decode_into(view, out, dtype, layout)
    return bytes(view) if keep else True
