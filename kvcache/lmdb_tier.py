"""The disk tier: encoded blocks in an LMDB environment whose map size is the disk budget.

py-lmdb rules this module keeps:
- open the environment after any fork, one `lmdb.Environment` per directory per process (the connector opens it
  in the engine's scheduler and worker processes; LMDB coordinates them through its lock file);
- a transaction is used only by the thread that began it, and buffers from `buffers=True` reads are consumed
  (decoded into the caller's array, or copied) before the transaction ends: they point into the memory map;
- one writer at a time (LMDB serialises writers across threads and processes). Writes are batched, one transaction
  per batch, synced on commit by default, so a crash loses at most the batch in flight and never corrupts what was
  committed (`sync=False` trades that for speed: a crash may then lose recent commits, still without corruption).

On-disk layout (format `msc-kv-lmdb-2`, in the `meta` database under `format`; pinned by a golden test):
- `blocks`: 48-byte key -> encoded block (`block_format`);
- `order`: 8-byte big-endian access sequence -> key, oldest first; `seq`: key -> its 8-byte sequence, written and
  deleted with the block: the index of what is stored. Lookups and key listings read it, not `blocks`, whose values
  live in overflow pages that a cursor positioned on the key would touch (in a fresh engine process each such touch
  is a page fault: 128 lookups took 60-150 ms in the scheduler instead of ~1 ms);
- `pins`: key -> b"" for blocks never evicted;
- `scopes` (namespace id -> isolation scope, registered by the connector when it first sees a namespace) and
  `scope_bytes` (scope -> bytes of its stored blocks): `kvcache.lmdb_scopes` owns them and their invariant.
A store of format `msc-kv-lmdb-1` (the same without `scopes` and `scope_bytes`) is upgraded when opened: its blocks
count for their scope once their namespace is registered.

Eviction is least recently used: reads are noted in memory and re-sequenced in the next write transaction (a read
never waits for a disk sync; a crash forgets only recency, not blocks). LMDB needs free pages even to delete
(copy-on-write), so eviction starts at a high-water mark; if a write still hits `MapFullError` the oldest blocks
are evicted and the write retried.

Tenants' budgets: with `tenant_budget_bytes` > 0, a tenant's scope (`keys.scope_tenant`) may hold at most that many
bytes of blocks, so no tenant fills the tier all share. A write that would take one past it first evicts that
scope's own least recently used unpinned blocks, down to `SCOPE_LOW_WATER` of the budget (a scan of the `order`
index, so not at every write), then stores only its leading blocks of that scope that fit; another scope's blocks
are never evicted for it. Sizes are read from write transactions opened with `buffers=True` (the length of a block
without touching its overflow pages); no buffer from them is used after the next write in the transaction.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import lmdb

from kvcache.keys import NAMESPACE_BYTES, scope_tenant
from kvcache.lmdb_scopes import ScopeBook
from kvcache.mapped_pages import file_mappings, map_resident
from kvcache.policy import Entry, bytes_to_free, choose_victims, fitting_prefix
from kvcache.tier import TierUsage

log = logging.getLogger("memsidecar.kvcache")
T = TypeVar("T")
FORMAT = b"msc-kv-lmdb-2"
UPGRADABLE = (b"msc-kv-lmdb-1",)  # older formats `_check_format` upgrades in place (see the module docstring)
HIGH_WATER = 0.8
LOW_WATER = 0.6
SCOPE_LOW_WATER = 0.8  # a tenant's scope over its budget is evicted down to this share of it
MAX_DBS = 7
WRITE_ATTEMPTS = 4
WARM_CHUNK = 16
_SEQ = struct.Struct(">Q")


class LmdbTier:
    """Blocks on disk; when the map fills, the least recently used unpinned blocks are evicted."""

    name = "disk"

    def __init__(self, env: lmdb.Environment, budget_bytes: int, tenant_budget_bytes: int = 0) -> None:
        self._env = env
        self.budget_bytes = budget_bytes
        self.tenant_budget_bytes = tenant_budget_bytes  # per tenant scope; 0: none (see the module docstring)
        self._blocks = env.open_db(b"blocks")
        self._order = env.open_db(b"order")
        self._seq = env.open_db(b"seq")
        self._pins = env.open_db(b"pins")
        self._meta = env.open_db(b"meta")
        self._scopes = ScopeBook(env)
        self._touched: dict[bytes, None] = {}
        self._touch_lock = threading.Lock()  # reads (loading thread) note keys the writer thread re-sequences

    @classmethod
    def open(cls, directory: Path, budget_bytes: int, sync: bool = True, tenant_budget_bytes: int = 0) -> LmdbTier:
        """Open (creating) the store in `directory`; a ValueError naming the directory if that is impossible."""
        try:
            directory.mkdir(parents=True, exist_ok=True)
            if not os.access(directory, os.W_OK | os.X_OK):
                raise PermissionError("directory is not writable")
            env = lmdb.open(str(directory), map_size=budget_bytes, max_dbs=MAX_DBS, sync=sync, metasync=sync,
                            readahead=True, max_readers=256)
        except (OSError, lmdb.Error) as exc:
            raise ValueError(f"cannot open the KV store in {directory}: {exc}") from None
        tier = cls(env, budget_bytes, tenant_budget_bytes)
        tier._check_format(directory)
        return tier

    def _check_format(self, directory: Path) -> None:
        with self._env.begin(write=True, db=self._meta) as txn:
            found = txn.get(b"format")
            if found is None or found in UPGRADABLE:
                txn.put(b"format", FORMAT)
            elif found != FORMAT:
                raise ValueError(f"the KV store in {directory} has format {found!r}, expected {FORMAT!r}; "
                                 "delete the directory (it is a cache) or point --kv-store-dir elsewhere")

    def close(self) -> None:
        self._env.close()

    def map_cached_pages(self, should_stop: Callable[[], bool] = lambda: False) -> int:
        """Map into this process the pages of the store that the OS page cache already holds (`mapped_pages`), so
        that loads after an engine restart do not fault them in one by one; returns the bytes mapped. Call it from
        a background thread, and stop it (`should_stop`) before `close`."""
        used = (self._env.info()["last_pgno"] + 1) * self._env.stat()["psize"]
        return sum(map_resident(address, min(used, length), should_stop)
                   for address, length in file_mappings(Path(self._env.path()) / "data.mdb"))

    def warm(self, budget_bytes: int, should_stop: Callable[[], bool] = lambda: False,
             chunk: int = WARM_CHUNK) -> int:
        """Read the most recently used blocks, up to `budget_bytes`, so that their pages are in the OS page cache and
        mapped into this process; returns the bytes read. Recency is not changed (a warm-up is not a use).

        After a restart the store's pages are wherever the page cache left them; a load that finds them on the
        device faults them in a few pages at a time while the forward pass waits (fp32, 4096 tokens: 60-120 ms for
        100 MB instead of ~30 ms). Reading them ahead, in a background thread while the engine starts, moves that
        wait off the requests. py-lmdb touches every page of a value it returns (outside the GIL), which is the read.
        Short read transactions (`chunk` blocks each) keep writers free to reuse pages meanwhile.
        """
        warmed, newest = 0, None
        while warmed < budget_bytes and not should_stop():
            with self._env.begin(buffers=True) as txn:
                cursor = txn.cursor(db=self._order)
                if newest is None or not cursor.set_range(newest):
                    found = cursor.last()  # the first chunk, or every block after `newest` was deleted meanwhile
                else:
                    found = cursor.prev()  # the newest block older than the last one warmed
                batch = []
                while found and len(batch) < chunk:
                    batch.append((bytes(cursor.key()), bytes(cursor.value())))
                    found = cursor.prev()
                for _, key in batch:
                    data = txn.get(key, db=self._blocks)
                    warmed += len(data) if data is not None else 0
                    if warmed >= budget_bytes:
                        break
            if len(batch) < chunk:
                break
            newest = batch[-1][0]
        return warmed

    def contains(self, key: bytes) -> bool:
        """Looks the key up in the `seq` index: never touches the block's own pages."""
        with self._env.begin(db=self._seq) as txn:
            return txn.get(key) is not None

    def read(self, key: bytes, consume: Callable[[memoryview], T]) -> T | None:
        """`consume` the stored bytes (valid only during the call); None when absent."""
        with self._env.begin(db=self._blocks, buffers=True) as txn:
            data = txn.get(key)
            result = None if data is None else consume(data)
        if data is not None:
            with self._touch_lock:
                self._touched[key] = None
        return result

    def put_many(self, items: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """Store blocks in one transaction, evicting the oldest as needed, within each tenant's budget (see the module
        docstring). Evicted blocks are dropped: returns []."""
        items = self._within_tenant_budgets(items)
        if not items:
            return []
        needed = sum(len(data) for _, data in items)
        used = self.used_bytes()
        if used + needed > HIGH_WATER * self.budget_bytes:
            self.evict_oldest(used + needed - int(LOW_WATER * self.budget_bytes))
        for _ in range(WRITE_ATTEMPTS):
            try:
                self._write(items)
                return []
            except lmdb.MapFullError:
                if not self.evict_oldest(max(needed, self.budget_bytes // 10)):
                    break
        log.warning("KV disk tier full of pinned blocks or too small; %d blocks (%d bytes) not stored",
                    len(items), needed)
        return []

    def _within_tenant_budgets(self, items: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """`items` less the blocks no room was made for: each tenant scope they would take past its budget first
        evicts its own oldest blocks; if its pinned blocks leave too little room, its trailing blocks are dropped."""
        if self.tenant_budget_bytes <= 0:
            return items
        dropped: set[int] = set()
        for scope, indexes in self._tenant_items(items).items():
            sizes = [len(items[i][1]) for i in indexes]
            used = self.scope_bytes(scope)
            to_free = bytes_to_free(used, sum(sizes), self.tenant_budget_bytes, SCOPE_LOW_WATER)
            if to_free:
                self.evict_oldest(to_free, self._namespaces_of(scope))
                used = self.scope_bytes(scope)
            kept = fitting_prefix(sizes, used, self.tenant_budget_bytes)
            if kept < len(indexes):
                dropped.update(indexes[kept:])
                log.warning("KV disk tier: scope %r is at its budget of %d bytes with pinned blocks; %d of its blocks "
                            "not stored", scope, self.tenant_budget_bytes, len(indexes) - kept)
        return [item for i, item in enumerate(items) if i not in dropped]

    def _tenant_items(self, items: list[tuple[bytes, bytes]]) -> dict[str, list[int]]:
        """Indexes of `items` by the tenant scope their namespace is registered to (items of no tenant left out)."""
        by_scope: dict[str, list[int]] = {}
        with self._env.begin() as txn:
            for i, (key, _) in enumerate(items):
                scope = self._scopes.scope_for(txn, key)
                if scope is not None and scope_tenant(scope) is not None:
                    by_scope.setdefault(scope, []).append(i)
        return by_scope

    def _write(self, items: list[tuple[bytes, bytes]]) -> None:
        with self._env.begin(write=True, buffers=True) as txn:
            sequence = self._resequence_touched(txn)
            added: dict[str, int] = {}
            for key, data in items:
                grown = len(data) - self._block_size(txn, key)
                txn.put(key, data, db=self._blocks)
                self._set_sequence(txn, key, sequence)
                sequence += 1
                scope = self._scopes.scope_for(txn, key)
                if scope is not None:
                    added[scope] = added.get(scope, 0) + grown
            for scope, delta in added.items():
                self._scopes.add(txn, scope, delta)

    def _block_size(self, txn: lmdb.Transaction, key: bytes) -> int:
        """The stored block's length, 0 when absent. In a `buffers=True` transaction this reads the length alone,
        never the block's overflow pages."""
        data = txn.get(key, db=self._blocks)
        return 0 if data is None else len(data)

    def _next_sequence(self, txn: lmdb.Transaction) -> int:
        cursor = txn.cursor(db=self._order)
        return _SEQ.unpack(cursor.key())[0] + 1 if cursor.last() else 0

    def _set_sequence(self, txn: lmdb.Transaction, key: bytes, sequence: int) -> None:
        old = txn.get(key, db=self._seq)
        if old is not None:
            txn.delete(bytes(old), db=self._order)  # a copy: the buffer is the map's, and this delete writes
        packed = _SEQ.pack(sequence)
        txn.put(packed, key, db=self._order)
        txn.put(key, packed, db=self._seq)

    def _resequence_touched(self, txn: lmdb.Transaction) -> int:
        """Move blocks read since the last write to the recent end; return the next free sequence number."""
        with self._touch_lock:
            touched, self._touched = list(self._touched), {}
        sequence = self._next_sequence(txn)
        for key in touched:
            if txn.get(key, db=self._seq) is not None:
                self._set_sequence(txn, key, sequence)
                sequence += 1
        return sequence

    def evict(self, keys: Iterable[bytes]) -> int:
        with self._env.begin(write=True, buffers=True) as txn:
            return sum(self._delete(txn, key) for key in keys)

    def _delete(self, txn: lmdb.Transaction, key: bytes) -> bool:
        """Delete one block and its index entries, and take its length off its scope's bytes (`buffers=True`)."""
        size = self._block_size(txn, key)
        sequence = txn.pop(key, db=self._seq)
        if sequence is not None:
            txn.delete(sequence, db=self._order)
        if not txn.delete(key, db=self._blocks):
            return False
        scope = self._scopes.scope_for(txn, key)
        if scope is not None:
            self._scopes.add(txn, scope, -size)
        return True

    def evict_oldest(self, bytes_to_free: int, namespaces: set[bytes] | None = None) -> int:
        """Delete the least recently used unpinned blocks (of `namespaces` only, if given) until about
        `bytes_to_free` bytes are released."""
        try:
            with self._env.begin(write=True, buffers=True) as txn:
                self._resequence_touched(txn)
                victims = choose_victims(self._oldest_first(txn, namespaces), bytes_to_free, 0)
                for key in victims:
                    self._delete(txn, key)
        except lmdb.MapFullError:
            log.error("KV disk tier is too full even to delete; raise the disk budget")
            return 0
        log.info("KV disk tier %s: evicted %d blocks to free %d bytes",
                 "full" if namespaces is None else "scope over its budget", len(victims), bytes_to_free)
        return len(victims)

    def _oldest_first(self, txn: lmdb.Transaction, namespaces: set[bytes] | None = None) -> Iterator[Entry]:
        """Entries oldest first (of `namespaces` only, if given); sizes are read as `_block_size` reads them."""
        for packed, key in txn.cursor(db=self._order):
            key = bytes(key)
            if namespaces is not None and key[:NAMESPACE_BYTES] not in namespaces:
                continue
            pinned = txn.get(key, db=self._pins) is not None
            yield Entry(key, self._block_size(txn, key), _SEQ.unpack(packed)[0], pinned=pinned)

    def entries(self, prefix: bytes = b"") -> list[Entry]:
        """Planner entries of the blocks under `prefix`; `last_access` is the access sequence."""
        with self._env.begin(buffers=True) as txn:
            result = []
            for key in self._keys(txn, prefix):
                packed = txn.get(key, db=self._seq)
                size = len(txn.get(key, db=self._blocks))
                last = _SEQ.unpack(packed)[0] if packed is not None else 0
                result.append(Entry(key, size, last, pinned=txn.get(key, db=self._pins) is not None))
            return result

    def pin(self, keys: Iterable[bytes]) -> None:
        with self._env.begin(write=True, db=self._pins) as txn:
            for key in keys:
                txn.put(key, b"")

    def unpin(self, keys: Iterable[bytes]) -> None:
        with self._env.begin(write=True, db=self._pins) as txn:
            for key in keys:
                txn.delete(key)

    def num_pinned(self) -> int:
        """How many keys are pinned (stored or not yet)."""
        with self._env.begin() as txn:
            return txn.stat(self._pins)["entries"]

    def keys(self, prefix: bytes = b"") -> list[bytes]:
        with self._env.begin() as txn:
            return list(self._keys(txn, prefix))

    def _keys(self, txn: lmdb.Transaction, prefix: bytes) -> Iterator[bytes]:
        cursor = txn.cursor(db=self._seq)
        if not cursor.set_range(prefix):
            return
        for raw in cursor.iternext(values=False):
            key = bytes(raw)
            if not key.startswith(prefix):
                return
            yield key

    def used_bytes(self) -> int:
        """Bytes in pages used by all databases (free pages excluded)."""
        with self._env.begin() as txn:
            dbs = (self._blocks, self._order, self._seq, self._pins, self._meta, self._scopes.scopes,
                   self._scopes.scope_bytes)
            stats = [txn.stat(db) for db in dbs]
        return sum((s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"]) * s["psize"] for s in stats)

    def register_namespace(self, namespace_id: bytes, scope: str) -> None:
        """Record that blocks under `namespace_id` belong to `scope`; blocks it already holds count for the scope from
        now on. Writes only the first time a namespace is seen (then reads once per process)."""
        if self._scopes.is_known(namespace_id, scope):
            return
        try:
            with self._env.begin(write=True, buffers=True) as txn:
                found = self._scopes.scope_for(txn, namespace_id)
                if found is None:
                    stored = sum(self._block_size(txn, key) for key in list(self._keys(txn, namespace_id)))
                    self._scopes.register(txn, namespace_id, scope, stored)
        except lmdb.MapFullError:  # tried again at the namespace's next request, once evictions freed pages
            log.warning("KV disk tier too full to register namespace %s; its blocks count for no scope yet",
                        namespace_id.hex())
            return
        if found is not None and found != scope:
            raise ValueError(f"namespace {namespace_id.hex()} is registered to scope {found!r}, not {scope!r}")
        self._scopes.remember(namespace_id, scope)

    def scope_bytes(self, scope: str) -> int:
        """Bytes of the stored blocks of the namespaces registered to `scope`."""
        with self._env.begin() as txn:
            return self._scopes.bytes_of(txn, scope)

    def _namespaces_of(self, scope: str) -> set[bytes]:
        with self._env.begin() as txn:
            return self._scopes.namespaces_of(txn, scope)

    def usage(self) -> TierUsage:
        with self._env.begin() as txn:
            entries = txn.stat(self._blocks)["entries"]
        return TierUsage(entries, self.used_bytes(), self.budget_bytes)
