"""The tiered store of activation memory: RAM (LRU) in front of LMDB on disk, with an optional shared remote tier.

Rules:
- `put_many` encodes blocks once, writes them to RAM and through to disk in one LMDB transaction, then to the
  remote tier. Write-through, not write-behind: the connector already calls `put_many` from a background thread,
  so the disk write costs decoding nothing, and every acknowledged block survives a crash or restart. Write-behind
  would save no disk bandwidth (blocks are immutable and content-addressed, so each is written once either way) and
  would lose every un-flushed block in a crash.
- RAM evictions are demoted to disk when disk no longer holds them (disk may have evicted a block that RAM kept
  hot); usually it does, and a demotion costs one key lookup.
- `get_into` walks the tiers fastest first and decodes straight into the caller's array. A hit below RAM is
  promoted to RAM (a remote hit also to disk). A block that fails its header or checksum is a miss in that tier:
  it is counted, deleted from that tier, and the next tier is tried. A caller on the critical path (the engine's
  load, which the forward pass waits for) passes `defer_promotion=True`: the hit is only noted, and
  `promote_deferred` later copies it up from another thread, so a load from disk costs one copy, not two.
- the remote tier degrades to misses and dropped writes when its server is away, and refuses (as a miss) a block
  whose MAC is not the nodes' (see `remote_tier`); blocks are sealed only on the wire, local tiers hold them plain.
- the scheduler opens the store without a RAM tier: it only asks `lookup_prefix` / `contains_locally`, and registers
  each namespace's isolation scope (`register_namespace`), by which the disk tier holds each tenant to
  `tenant_disk_bytes` (see `lmdb_tier`).

Locking rule: `_lock` guards the RAM tier and the counters and is held only for in-memory work, never across LMDB
or Redis I/O or a decode (RAM blocks are immutable `bytes`, safe to decode after the lock is released even if they
are evicted meanwhile). The disk tier may be called from any thread: each call is its own LMDB transaction and
LMDB serialises writers. The remote tier's client has a thread-safe connection pool. So `get_into` (the loading
thread) and `put_many` (the writer thread) run concurrently.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from kvcache.block_format import CorruptBlock, Scatter, decode_into, encode
from kvcache.keys import NAMESPACE_BYTES
from kvcache.lmdb_tier import LmdbTier
from kvcache.policy import plan
from kvcache.ram_tier import RamTier
from kvcache.remote_tier import RemoteTier
from kvcache.tier import BlockTier

log = logging.getLogger("memsidecar.kvcache")
MAX_DEFERRED_PROMOTIONS = 8192  # beyond this the oldest noted hits are not promoted (a later miss of RAM, no more)


@dataclass(frozen=True)
class StoreConfig:
    """Where and how big. `sync=False` makes disk commits unsynced (faster; a crash may lose recent blocks).
    A `remote_url` needs `remote_secret`, the MAC secret the nodes sharing that tier hold (see `block_mac`); neither
    appears in the repr, since the URL may carry a password. `tenant_disk_bytes`: what one tenant's blocks may take
    of the disk tier (0: no limit)."""

    directory: Path
    ram_bytes: int
    disk_bytes: int
    remote_url: str | None = field(default=None, repr=False)
    sync: bool = True
    remote_timeout_s: float = 0.5
    remote_cooldown_s: float = 5.0
    remote_secret: bytes | None = field(default=None, repr=False)
    tenant_disk_bytes: int = 0


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
    tiers: dict[str, TierCounters] = field(default_factory=dict)
    puts: int = 0
    demoted: int = 0


class TieredStore:
    """Blocks by 48-byte key across RAM, disk and an optional remote tier; see the module docstring for the rules."""

    def __init__(self, ram: RamTier | None, disk: LmdbTier, remote: RemoteTier | None = None) -> None:
        self.ram = ram
        self.disk = disk
        self.remote = remote
        self._tiers: list[BlockTier] = [tier for tier in (ram, disk, remote) if tier is not None]
        self._lock = threading.Lock()
        self._counters = _Counters({tier.name: TierCounters() for tier in self._tiers})
        # hits below RAM to promote later: (key, source tier, the bytes when the source is remote, else None)
        self._deferred: deque[tuple[bytes, BlockTier, bytes | None]] = deque(maxlen=MAX_DEFERRED_PROMOTIONS)

    @classmethod
    def open(cls, config: StoreConfig, with_ram: bool = True) -> TieredStore:
        remote = None
        if config.remote_url:
            if not config.remote_secret:
                raise ValueError("the shared KV tier (kv_remote_url) needs the nodes' MAC secret: set "
                                 "kv_remote_secret (MEMSIDECAR_KV_REMOTE_SECRET)")
            remote = RemoteTier.open(config.remote_url, config.remote_secret, timeout_s=config.remote_timeout_s,
                                     cooldown_s=config.remote_cooldown_s)
        ram = RamTier(config.ram_bytes) if with_ram else None
        disk = LmdbTier.open(config.directory, config.disk_bytes, sync=config.sync,
                             tenant_budget_bytes=config.tenant_disk_bytes)
        return cls(ram, disk, remote)

    def close(self) -> None:
        self.disk.close()
        if self.remote is not None:
            self.remote.close()

    # ------------------------------------------------------------------ lookups

    def contains_locally(self, key: bytes) -> bool:
        if self.ram is not None:
            with self._lock:
                if self.ram.contains(key):
                    return True
        return self.disk.contains(key)

    def contains(self, key: bytes) -> bool:
        return self.contains_locally(key) or (self.remote is not None and self.remote.contains(key))

    def lookup_prefix(self, keys: list[bytes]) -> int:
        """How many leading `keys` any tier holds: local tiers first, then one remote round trip for the rest."""
        count = 0
        while count < len(keys) and self.contains_locally(keys[count]):
            count += 1
        if self.remote is not None and count < len(keys):
            count += self.remote.count_prefix(keys[count:])
        return count

    # ------------------------------------------------------------------ reads

    def get_into(self, key: bytes, out: np.ndarray | Scatter, dtype: str, layout: str,
                 defer_promotion: bool = False) -> bool:
        """Decode block `key` into `out` from the fastest tier holding a sound copy; False on a miss everywhere.

        `out` is C-contiguous with the block's shape, or a `Scatter` of its rows; for bfloat16 pass uint16/int16
        views and dtype "bfloat16". Disk and shared tiers decode straight from their buffers (one copy). With
        `defer_promotion` a hit below RAM is promoted by the next `promote_deferred` call instead of now.
        """
        for tier in self._tiers:
            found = self._read(tier, key, out, dtype, layout, copy=not defer_promotion or tier is self.remote)
            if found is not None:
                if tier is self.ram:
                    return True
                if defer_promotion:
                    with self._lock:
                        self._deferred.append((key, tier, found if tier is self.remote else None))
                else:
                    self._promote(key, found, tier)
                return True
        return False

    def promote_deferred(self, limit: int | None = None) -> int:
        """Promote up to `limit` (default all) of the hits noted by `get_into(defer_promotion=True)`, oldest first;
        returns how many were taken off the list (a block evicted meanwhile is taken off, not promoted)."""
        taken = 0
        while limit is None or taken < limit:
            with self._lock:
                if not self._deferred:
                    break
                key, tier, data = self._deferred.popleft()
            taken += 1
            data = data if data is not None else tier.read(key, bytes)
            if data is not None:
                self._promote(key, data, tier)
        return taken

    def has_deferred(self) -> bool:
        with self._lock:
            return bool(self._deferred)

    def _read(self, tier: BlockTier, key: bytes, out: np.ndarray | Scatter, dtype: str, layout: str,
              copy: bool = True) -> bytes | None:
        """The block's bytes when `tier` had a sound copy (now decoded into `out`); None when absent or corrupt.

        Bytes are copied out only where `_promote` will store them (`copy`, below RAM); else b"" stands for a hit.
        """
        keep = copy and (tier is self.remote or (self.ram is not None and tier is not self.ram))

        def consume(view: memoryview) -> bytes:
            decode_into(view, out, dtype, layout)
            return bytes(view) if keep else b""

        started = time.perf_counter()
        try:
            if tier is self.ram:
                with self._lock:
                    data = self.ram.get(key)
                found = None if data is None else consume(memoryview(data))
            else:
                found = tier.read(key, consume)
        except CorruptBlock as exc:
            self._drop_corrupt(tier, key, exc)
            return None
        with self._lock:
            counters = self._counters.tiers[tier.name]
            if found is None:
                counters.misses += 1
                return None
            counters.hits += 1
            counters.bytes_read += out.nbytes
            counters.read_seconds += time.perf_counter() - started
        return found

    def _drop_corrupt(self, tier: BlockTier, key: bytes, error: CorruptBlock) -> None:
        log.warning("dropping a corrupt KV block %s from the %s tier: %s", key.hex(), tier.name, error)
        with self._lock:
            self._counters.tiers[tier.name].corrupt += 1
            if tier is self.ram:
                self.ram.evict([key])
        if tier is not self.ram:
            tier.evict([key])

    def _promote(self, key: bytes, data: bytes, source: BlockTier) -> None:
        if source is self.remote:
            self.disk.put_many([(key, data)])
        if self.ram is not None:
            with self._lock:
                evicted = self.ram.put(key, data)
            self._demote(evicted)

    def _demote(self, evicted: list[tuple[bytes, bytes]]) -> None:
        """Write RAM's evictions to disk where disk no longer holds them."""
        missing = [(key, data) for key, data in evicted if not self.disk.contains(key)]
        if missing:
            self.disk.put_many(missing)
            with self._lock:
                self._counters.demoted += len(missing)

    # ------------------------------------------------------------------ writes

    def put(self, key: bytes, array: np.ndarray, dtype: str, layout: str) -> None:
        self.put_many([(key, array)], dtype, layout)

    def put_many(self, items: list[tuple[bytes, np.ndarray]], dtype: str, layout: str) -> None:
        """Encode and store blocks: RAM, then disk (one transaction), then remote. See the module rules."""
        encoded = [(key, encode(array, dtype, layout)) for key, array in items]
        evicted: list[tuple[bytes, bytes]] = []
        if self.ram is not None:
            with self._lock:
                evicted = self.ram.put_many(encoded)
        self.disk.put_many(encoded)
        self._demote(evicted)
        if self.remote is not None:
            self.remote.put_many(encoded)
        with self._lock:
            self._counters.puts += len(encoded)

    def pin(self, keys: Iterable[bytes]) -> None:
        """Pinned blocks are never evicted from RAM or disk (a key may be pinned before it is stored)."""
        keys = list(keys)
        if self.ram is not None:
            with self._lock:
                self.ram.pin(keys)
        self.disk.pin(keys)

    def unpin(self, keys: Iterable[bytes]) -> None:
        keys = list(keys)
        if self.ram is not None:
            with self._lock:
                self.ram.unpin(keys)
        self.disk.unpin(keys)

    def register_namespace(self, namespace_id: bytes, scope: str) -> None:
        """Tell the disk tier whose blocks `namespace_id` holds (its isolation scope), before any is saved."""
        self.disk.register_namespace(namespace_id, scope)

    def scope_disk_bytes(self, scope: str) -> int:
        """Bytes of `scope`'s blocks on disk (a tenant's: `keys.tenant_scope`)."""
        return self.disk.scope_bytes(scope)

    def drop_namespace(self, namespace_id: bytes) -> int:
        """Delete every block of a namespace from every tier; returns how many distinct blocks went."""
        dropped: set[bytes] = set()
        if self.ram is not None:
            with self._lock:
                keys = self.ram.keys(namespace_id)
                self.ram.evict(keys)
            dropped.update(keys)
        for tier in self._tiers:
            if tier is not self.ram:
                keys = tier.keys(namespace_id)
                tier.evict(keys)
                dropped.update(keys)
        return len(dropped)

    def release_ram(self, namespace_id: bytes) -> int:
        """Take a namespace's unpinned blocks out of RAM (to disk where disk lacks them); returns how many left RAM."""
        if self.ram is None:
            return 0
        with self._lock:
            keys = [key for key in self.ram.keys(namespace_id) if not self.ram.is_pinned(key)]
            evicted = [(key, data) for key in keys if (data := self.ram.get(key)) is not None]
            self.ram.evict(keys)
        self._demote(evicted)
        return len(evicted)

    def ram_namespaces(self) -> dict[str, int]:
        """Bytes in RAM per namespace (hex id)."""
        if self.ram is None:
            return {}
        held: dict[str, int] = {}
        with self._lock:
            for entry in self.ram.entries():
                namespace = entry.key[:NAMESPACE_BYTES].hex()
                held[namespace] = held.get(namespace, 0) + entry.size
        return held

    def warm_disk(self, should_stop: Callable[[], bool] = lambda: False) -> int:
        """Read the newest disk blocks, as many bytes as the RAM tier's budget (the memory this store may use for
        blocks), into the OS page cache and this process's map: not into the RAM tier. Returns the bytes read.
        For the start of a worker, in a background thread: loads after a restart then find their pages in memory."""
        return self.disk.warm(self.ram.budget_bytes, should_stop) if self.ram is not None else 0

    def prefetch(self, namespace_id: bytes) -> int:
        """Copy a namespace's disk blocks into free RAM, most recently used first; returns how many were loaded."""
        if self.ram is None:
            return 0
        candidates = self.disk.entries(namespace_id)
        with self._lock:
            moves = plan(self.ram.entries(), self.ram.budget_bytes, candidates)
        loaded = 0
        for key in moves.promote:
            data = self.disk.read(key, bytes)
            if data is not None:
                with self._lock:
                    evicted = self.ram.put(key, data)
                self._demote(evicted)
                loaded += 1
        return loaded

    # ------------------------------------------------------------------ stats

    def stats(self) -> dict[str, object]:
        """Per tier: entries, bytes, budget_bytes (None where unknown), hits, misses, corrupt, read_bytes_per_s."""
        usages = {tier.name: asdict(tier.usage()) for tier in self._tiers if tier is not self.ram}
        with self._lock:
            if self.ram is not None:
                usages[self.ram.name] = asdict(self.ram.usage())
            result: dict[str, object] = {name: {**usages[name], **counters.as_dict()}
                                         for name, counters in self._counters.tiers.items()}
            result["puts"] = self._counters.puts
            result["demoted"] = self._counters.demoted
        result[self.disk.name]["pinned"] = self.disk.num_pinned()
        if self.remote is not None:
            result["remote"].update(self.remote.stats())
        return result
