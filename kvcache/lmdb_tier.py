"""The disk tier: encoded blocks in an LMDB environment whose map size is the disk budget.

py-lmdb rules this module keeps:
- one `lmdb.Environment` per directory per process, opened after any fork (the connector opens it in the engine's
  scheduler and worker processes; LMDB coordinates them through its lock file);
- a transaction is used only by the thread that began it; buffers from `buffers=True` reads are consumed (decoded
  into the caller's array or copied) before the transaction ends;
- one writer at a time (LMDB serialises writers); writes are batched, one synced transaction per batch, so a crash
  loses at most the batch in flight and never corrupts what was committed.

Databases: `blocks` (key -> encoded block), `order` (8-byte big-endian write sequence -> key) and `seq`
(key -> sequence) for oldest-first eviction when the map is full, `pins` (key -> b"") for blocks never evicted.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import lmdb

log = logging.getLogger("memsidecar.kvcache")
T = TypeVar("T")
# LMDB needs free pages even to delete (copy-on-write), so eviction starts well before the map is full.
HIGH_WATER = 0.8
LOW_WATER = 0.6


class LmdbTier:
    """Blocks on disk; when the map is full the oldest unpinned blocks are evicted and the write retried."""

    def __init__(self, env: lmdb.Environment, budget_bytes: int) -> None:
        self._env = env
        self.budget_bytes = budget_bytes
        self._blocks = env.open_db(b"blocks")
        self._order = env.open_db(b"order")
        self._seq = env.open_db(b"seq")
        self._pins = env.open_db(b"pins")

    @classmethod
    def open(cls, directory: Path, budget_bytes: int) -> "LmdbTier":
        try:
            directory.mkdir(parents=True, exist_ok=True)
            env = lmdb.open(str(directory), map_size=budget_bytes, max_dbs=4, sync=True, metasync=True,
                            readahead=False, max_readers=256)
        except (OSError, lmdb.Error) as exc:
            raise ValueError(f"cannot open the KV store in {directory}: {exc}") from None
        return cls(env, budget_bytes)

    def close(self) -> None:
        self._env.close()

    def contains(self, key: bytes) -> bool:
        with self._env.begin(db=self._blocks) as txn:
            return txn.get(key) is not None

    def read(self, key: bytes, consume: Callable[[memoryview], T]) -> T | None:
        """Call `consume` on the stored bytes (valid only during the call); None when absent."""
        with self._env.begin(db=self._blocks, buffers=True) as txn:
            data = txn.get(key)
            return None if data is None else consume(data)

    def put_many(self, items: list[tuple[bytes, bytes]]) -> None:
        """Store blocks in one transaction, first evicting the oldest if that would pass the high-water mark."""
        needed = sum(len(data) for _, data in items)
        used = self.used_bytes()
        if used + needed > HIGH_WATER * self.budget_bytes:
            self.evict_oldest(used + needed - int(LOW_WATER * self.budget_bytes))
        try:
            self._write(items)
        except lmdb.MapFullError:
            log.warning("KV disk tier full even after eviction; %d blocks not stored", len(items))

    def _write(self, items: list[tuple[bytes, bytes]]) -> None:
        with self._env.begin(write=True) as txn:
            cursor = txn.cursor(db=self._order)
            sequence = struct.unpack(">Q", cursor.key())[0] + 1 if cursor.last() else 0
            for key, data in items:
                old = txn.get(key, db=self._seq)
                if old is not None:
                    txn.delete(old, db=self._order)
                packed = struct.pack(">Q", sequence)
                txn.put(key, data, db=self._blocks)
                txn.put(packed, key, db=self._order)
                txn.put(key, packed, db=self._seq)
                sequence += 1

    def evict(self, keys: Iterable[bytes]) -> int:
        with self._env.begin(write=True) as txn:
            return sum(self._delete(txn, key) for key in keys)

    def _delete(self, txn: lmdb.Transaction, key: bytes) -> bool:
        sequence = txn.pop(key, db=self._seq)
        if sequence is not None:
            txn.delete(sequence, db=self._order)
        return txn.delete(key, db=self._blocks)

    def evict_oldest(self, bytes_to_free: int) -> int:
        """Delete the oldest unpinned blocks until about `bytes_to_free` bytes are released."""
        freed = evicted = 0
        with self._env.begin(write=True) as txn:
            for _, key in list(txn.cursor(db=self._order)):
                if freed >= bytes_to_free:
                    break
                if txn.get(key, db=self._pins) is not None:
                    continue
                freed += len(txn.get(key, db=self._blocks) or b"")
                evicted += self._delete(txn, key)
        log.info("KV disk tier full: evicted %d blocks (%d bytes)", evicted, freed)
        return evicted

    def pin(self, keys: Iterable[bytes], pinned: bool = True) -> None:
        with self._env.begin(write=True, db=self._pins) as txn:
            for key in keys:
                txn.put(key, b"") if pinned else txn.delete(key)

    def keys_with_prefix(self, prefix: bytes) -> list[bytes]:
        with self._env.begin(db=self._blocks) as txn:
            cursor = txn.cursor()
            keys: list[bytes] = []
            if not cursor.set_range(prefix):
                return keys
            for raw in cursor.iternext(values=False):
                if not bytes(raw).startswith(prefix):
                    break
                keys.append(bytes(raw))
            return keys

    def used_bytes(self) -> int:
        """Bytes in pages used by all databases (free pages excluded)."""
        with self._env.begin() as txn:
            stats = [txn.stat(db) for db in (self._blocks, self._order, self._seq, self._pins)]
        return sum((s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"]) * s["psize"] for s in stats)

    def stats(self) -> dict[str, int]:
        with self._env.begin() as txn:
            entries = txn.stat(self._blocks)["entries"]
        return {"entries": entries, "bytes": self.used_bytes(), "budget_bytes": self.budget_bytes}
