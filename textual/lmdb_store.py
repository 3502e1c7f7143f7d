"""LMDB as the source of truth for memories and their embeddings.

Rules, as py-lmdb states them and this module keeps them:
- Open the environment in the process that uses it, after any fork; one `LmdbStore` per path per process.
- Every write is one transaction, committed with sync: once `put`/`delete` returns, the change survives kill -9.
- Buffers read inside a transaction are copied (decoded) before it ends.
- LMDB allows one writer at a time; writers here are short and never wait on anything else.
- The map grows when full (`MapFullError`): the writer's transaction is aborted, the map doubles while no
  transaction is open (`map_growth.GrowthGate`), and the write is retried. Writes that add data grow it up to
  `max_map_size` less a reserve (`map_growth.delete_reserve`), then raise `StoreFullError` with nothing changed;
  deletes may grow into the reserve (a copy-on-write B-tree needs free pages even to delete), after which the map
  shrinks back to the adding ceiling, or to the pages in use if more, so the reserve is there for the next deletes.
It keeps the `textual.record_store` contract for one node (`watch` never reports: only this process writes).
Databases: `memories` (key -> record JSON), `vectors` (key -> float32 bytes), `kbs` (key -> knowledge base
JSON), `spaces` (key -> shared memory space JSON), `versions` (tenant -> its newest change seq, as 8-byte
little-endian), `changes` (the change log: `encode_log_key` -> the entry kind's value, NUL, the memory id),
`meta` (`embedding_model` -> the identity of the model every stored vector came from; `derived` -> b"2" once the
derived databases were built with history versions counted, b"1" from before they counted), the derived `usage`,
`by_time` and `users` (`textual.lmdb_ledger` owns them and their invariant), and `history` (the versions of each
memory, `textual.history` owns their format; written in the transaction of the change they record, deleted with
their memory; their bytes count in the tenant's usage). A tenant's version grows by one per memory each write
stores or deletes, so derived indexes know when they are stale and what changed since.
"""

from __future__ import annotations

import struct
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import lmdb
import numpy as np

from memcore.units import GIB
from textual import lmdb_history
from textual.errors import StoreFullError
from textual.history import Change, Version
from textual.lmdb_ledger import USAGE, DerivedDbs, Ledger, count_all, count_history
from textual.map_growth import GrowthGate, delete_reserve, next_map_size
from textual.memory import KnowledgeBase, Memory, Space
from textual.record_store import LOG_KEEP, ChangeListener, Container, EntryKind, GrowthCheck, LogEntry
from textual.record import (decode_kb, decode_key, decode_memory, decode_space, decode_user_stats, decode_vector,
                            encode_kb, encode_key, encode_memory, encode_space, encode_vector, sortable_time)

DEFAULT_MAP_SIZE = GIB
DEFAULT_MAX_MAP_SIZE = 1 << 36
DERIVED = b"2"  # the version of the derived databases: 2 counts history versions in `usage`
T = TypeVar("T")


class LmdbStore:
    """Memories and embeddings of all tenants in one LMDB environment; every method names its tenant."""

    def __init__(self, env: lmdb.Environment, max_map_size: int = DEFAULT_MAX_MAP_SIZE) -> None:
        self._env = env
        self.max_map_size = max(max_map_size, env.info()["map_size"])
        self._gate = GrowthGate()
        self._memories = env.open_db(b"memories")
        self._vectors = env.open_db(b"vectors")
        self._versions = env.open_db(b"versions")
        self._kbs = env.open_db(b"kbs")
        self._spaces = env.open_db(b"spaces")
        self._meta = env.open_db(b"meta")
        self._derived = DerivedDbs(env.open_db(b"usage"), env.open_db(b"by_time"), env.open_db(b"users"))
        self._history = env.open_db(b"history")
        self._changes = env.open_db(b"changes")

    @classmethod
    def open(cls, path: str | Path, map_size: int = DEFAULT_MAP_SIZE,
             max_map_size: int = DEFAULT_MAX_MAP_SIZE) -> "LmdbStore":
        """Open (creating if needed) the environment in directory `path`, synced on every commit. The map starts at
        `map_size` (or the size the file already needs) and may grow to `max_map_size`."""
        Path(path).mkdir(parents=True, exist_ok=True)
        env = lmdb.open(str(path), map_size=map_size, max_dbs=16, sync=True, metasync=True, writemap=False)
        store = cls(env, max_map_size)
        store._derive_once()
        return store

    @property
    def map_size(self) -> int:
        return self._env.info()["map_size"]

    def disk_bytes(self) -> int:
        """Bytes of the LMDB data file (its pages in use grow into it; freed pages are reused, not returned)."""
        return self._env.info()["last_pgno"] * self._env.stat()["psize"]

    def close(self) -> None:
        self._env.close()

    def embedding_model(self) -> str | None:
        """The identity of the model the stored vectors came from; None for a store that never recorded one."""
        with self._read() as txn:
            found = txn.get(b"embedding_model", db=self._meta)
            return None if found is None else bytes(found).decode()

    @property
    def adding_ceiling(self) -> int:
        """The map size writes that add data may grow it to; the rest up to `max_map_size` is for deletes."""
        return self.max_map_size - delete_reserve(self.max_map_size)

    def set_embedding_model(self, identity: str) -> None:
        self._write(lambda txn: txn.put(b"embedding_model", identity.encode(), db=self._meta))

    def put_many(self, items: Iterable[tuple[Memory, np.ndarray | None]],
                 changes: Sequence[Change | None] | None = None,
                 histories: Mapping[str, Sequence[Version]] | None = None,
                 check_growth: GrowthCheck | None = None) -> None:
        """Write memories (and embeddings, where given) of any tenants in one durable transaction. For each memory
        whose `changes` entry is set, a version recording the change is appended in that transaction; `histories`
        (memory id -> versions, an import's) replaces those memories' histories before their change is recorded.
        A tenant whose stored bytes (records, vectors, versions) the write grows is asked of `check_growth` first;
        if it raises, nothing is written."""
        rows = [(memory, encode_key(memory.tenant, memory.id), encode_memory(memory),
                 None if vector is None else encode_vector(vector)) for memory, vector in items]
        changes = list(changes) if changes is not None else [None] * len(rows)

        def put(txn: lmdb.Transaction) -> None:
            ledger, tenants = Ledger(self._derived, txn), {}
            for (memory, key, record, vector), change in zip(rows, changes):
                old, old_vector = txn.get(key, db=self._memories), txn.get(key, db=self._vectors)
                old_vector_size = 0 if old_vector is None else len(old_vector)
                if old is not None:
                    ledger.removed(old, len(old) + old_vector_size)
                if histories and memory.id in histories:
                    ledger.resized(memory.tenant, lmdb_history.put_all(txn, self._history, memory.tenant, memory.id,
                                                                       histories[memory.id]))
                if change is not None:
                    ledger.resized(memory.tenant, lmdb_history.append(
                        txn, self._history, None if old is None else decode_memory(old), memory, change))
                txn.put(key, record, db=self._memories)
                if vector is not None:
                    txn.put(key, vector, db=self._vectors)
                ledger.added(memory, len(record) + (old_vector_size if vector is None else len(vector)))
                kind = EntryKind.UPSERT if vector is not None or old is None else EntryKind.RECORD
                tenants.setdefault(memory.tenant, []).append((memory.id, kind))
            for tenant, entries in tenants.items():
                self._log(txn, tenant, entries)
            ledger.flush(check_growth)

        self._write(put)

    def delete(self, tenant: str, memory_id: str) -> bool:
        """Remove one memory and its embedding; False if it was not there."""
        return bool(self.delete_many(tenant, [memory_id]))

    def delete_many(self, tenant: str, memory_ids: Iterable[str], container: Container | None = None) -> list[str]:
        """Remove memories, their embeddings and their histories (and `container`'s record) in one transaction;
        returns the ids that were there."""
        memory_ids = list(memory_ids)

        def delete(txn: lmdb.Transaction) -> list[str]:
            ledger, removed = Ledger(self._derived, txn), []
            for memory_id in memory_ids:
                key = encode_key(tenant, memory_id)
                record, vector = txn.pop(key, db=self._memories), txn.pop(key, db=self._vectors)
                if record is not None:
                    ledger.removed(record, len(record) + (0 if vector is None else len(vector)))
                    ledger.resized(tenant, -lmdb_history.drop(txn, self._history, tenant, memory_id))
                    removed.append(memory_id)
            self._log(txn, tenant, [(memory_id, EntryKind.DELETE) for memory_id in removed])
            ledger.flush()
            if container is not None:
                kind, container_id = container
                txn.delete(encode_key(tenant, container_id), db={"kb": self._kbs, "space": self._spaces}[kind])
            return removed

        return self._write(delete, deleting=True)

    def put_kb(self, kb: KnowledgeBase) -> None:
        self._put_named(self._kbs, kb.tenant, kb.id, encode_kb(kb))

    def get_kb(self, tenant: str, kb_id: str) -> KnowledgeBase | None:
        return self._get_named(self._kbs, tenant, kb_id, decode_kb)

    def kbs(self, tenant: str) -> list[KnowledgeBase]:
        """All of `tenant`'s knowledge bases, in id order."""
        return self._all_named(self._kbs, tenant, decode_kb)

    def put_space(self, space: Space) -> None:
        self._put_named(self._spaces, space.tenant, space.id, encode_space(space))

    def get_space(self, tenant: str, space_id: str) -> Space | None:
        return self._get_named(self._spaces, tenant, space_id, decode_space)

    def spaces(self, tenant: str) -> list[Space]:
        """All of `tenant`'s shared memory spaces, in id order."""
        return self._all_named(self._spaces, tenant, decode_space)

    # Knowledge bases and spaces: small records of a tenant under `encode_key(tenant, id)` in a database of their own.

    def _put_named(self, db, tenant: str, key: str, value: bytes) -> None:
        self._write(lambda txn: txn.put(encode_key(tenant, key), value, db=db))

    def _get_named(self, db, tenant: str, key: str, decode: Callable[[bytes], T]) -> T | None:
        with self._read() as txn:
            data = txn.get(encode_key(tenant, key), db=db)
            return None if data is None else decode(data)

    def _all_named(self, db, tenant: str, decode: Callable[[bytes], T]) -> list[T]:
        with self._read() as txn:
            return [decode(value) for _key, value in self._scan(txn, tenant, db)]

    def get(self, tenant: str, memory_id: str) -> Memory | None:
        with self._read() as txn:
            data = txn.get(encode_key(tenant, memory_id), db=self._memories)
            return None if data is None else decode_memory(data)

    def get_vector(self, tenant: str, memory_id: str) -> np.ndarray | None:
        with self._read() as txn:
            data = txn.get(encode_key(tenant, memory_id), db=self._vectors)
            return None if data is None else decode_vector(data)

    def get_many(self, tenant: str, memory_ids: Iterable[str]) -> list[tuple[Memory, np.ndarray]]:
        """(memory, embedding) for each id that has both, read in one transaction."""
        found = []
        with self._read() as txn:
            for memory_id in memory_ids:
                key = encode_key(tenant, memory_id)
                data, vector = txn.get(key, db=self._memories), txn.get(key, db=self._vectors)
                if data is not None and vector is not None:
                    found.append((decode_memory(data), decode_vector(vector)))
        return found

    def memories(self, tenant: str) -> list[Memory]:
        """All of `tenant`'s memories, in key order."""
        with self._read() as txn:
            return [decode_memory(value) for _key, value in self._scan(txn, tenant, self._memories)]

    def each_memory(self, tenant: str, batch: int = 512) -> Iterator[Memory]:
        """All of `tenant`'s memories in key order, read `batch` at a time in short transactions (a long scan never
        holds one transaction open: other writers and a map resize go ahead between batches)."""
        after: bytes | None = None
        while True:
            with self._read() as txn:
                chunk = list(self._scan(txn, tenant, self._memories, after, batch))
                decoded = [decode_memory(value) for _key, value in chunk]
            yield from decoded
            if len(chunk) < batch:
                return
            after = chunk[-1][0]

    def vectors(self, tenant: str) -> dict[str, np.ndarray]:
        """All of `tenant`'s embeddings by memory id."""
        with self._read() as txn:
            return {decode_key(key)[1]: decode_vector(value) for key, value in self._scan(txn, tenant, self._vectors)}

    def history(self, tenant: str, memory_id: str, after: int = 0, limit: int = 100) -> list[Version]:
        """At most `limit` versions of the memory with a seq above `after`, oldest first (none for an unknown id)."""
        with self._read() as txn:
            return lmdb_history.read(txn, self._history, tenant, memory_id, after, limit)

    def version(self, tenant: str) -> int:
        """The tenant's newest change seq; 0 for a tenant never written."""
        with self._read() as txn:
            return self._version(txn, tenant)

    def changes(self, tenant: str, after: int, limit: int = 1000) -> list[LogEntry] | None:
        """At most `limit` log entries above seq `after`, oldest first; None when the log no longer holds the one
        right after it."""
        with self._read() as txn:
            if after >= self._version(txn, tenant):
                return []
            cursor = txn.cursor(db=self._changes)
            if not cursor.set_key(encode_log_key(tenant, after + 1)):
                return None
            found = []
            for key, value in cursor.iternext():
                if not bytes(key).startswith(encode_key(tenant)) or len(found) >= limit:
                    break
                kind, memory_id = bytes(value).split(b"\x00", 1)
                found.append(LogEntry(struct.unpack(">Q", bytes(key)[-8:])[0], memory_id.decode(),
                                      EntryKind(kind.decode())))
            return found

    def watch(self, listener: ChangeListener) -> None:
        """Nothing to report: only this process writes an LMDB store."""

    def outage(self) -> str | None:
        return None

    def claim_pass(self, name: str, interval_s: float) -> bool:
        return True  # one process opens an LMDB store: its own loop is the only one

    def usage(self, tenant: str) -> tuple[int, int]:
        """(memories, bytes) `tenant` holds: records of every tier, and the bytes of their records, embeddings and
        history versions."""
        with self._read() as txn:
            data = txn.get(tenant.encode(), db=self._derived.usage)
            return (0, 0) if data is None else USAGE.unpack(data)

    def users(self, tenant: str) -> list[tuple[str, int, dict[str, int], float]]:
        """(user, count, count by tier, newest updated_at) of each of `tenant`'s users, by user id; reads one row
        per user, not the memories."""
        with self._read() as txn:
            return [(decode_key(key)[1], *decode_user_stats(value))
                    for key, value in self._scan(txn, tenant, self._derived.users)]

    def memories_by_time(self, tenant: str, since: float | None = None, batch: int = 256) -> Iterator[Memory]:
        """`tenant`'s memories in time order (`context.time_order`), from `since` on, read `batch` at a time in
        short transactions; stop iterating to stop reading."""
        after = None if since is None else encode_key(tenant) + sortable_time(since)
        while True:
            with self._read() as txn:
                chunk = list(self._scan(txn, tenant, self._derived.by_time, after, batch))
                found = [txn.get(encode_key(tenant, bytes(memory_id).decode()), db=self._memories)
                         for _key, memory_id in chunk]
                decoded = [decode_memory(data) for data in found if data is not None]
            yield from decoded
            if len(chunk) < batch:
                return
            after = chunk[-1][0]

    def tenants(self) -> list[str]:
        with self._read() as txn:
            return [bytes(key).decode() for key, _ in txn.cursor(db=self._versions)]

    @contextmanager
    def _read(self) -> Iterator[lmdb.Transaction]:
        with self._gate.shared(), self._env.begin() as txn:
            yield txn

    def _write(self, change: Callable[[lmdb.Transaction], T], deleting: bool = False) -> T:
        """Run `change` in one write transaction, growing the map and retrying when it is full (see the rules)."""
        grew = False
        while True:
            try:
                with self._gate.shared(), self._env.begin(write=True) as txn:
                    result = change(txn)
                break
            except lmdb.MapFullError:
                self._grow(self.max_map_size if deleting else self.adding_ceiling)
                grew = True
        if deleting and grew:
            self._shrink_to_adding_ceiling()
        return result

    def _grow(self, ceiling: int) -> None:
        with self._gate.exclusive():
            current = self.map_size
            grown = next_map_size(current, ceiling)
            if grown is None:
                raise StoreFullError(current, ceiling)
            self._env.set_mapsize(grown)

    def _shrink_to_adding_ceiling(self) -> None:
        with self._gate.exclusive():
            in_use = (self._env.info()["last_pgno"] + 1) * self._env.stat()["psize"]
            self._env.set_mapsize(max(self.adding_ceiling, in_use))

    def _version(self, txn: lmdb.Transaction, tenant: str) -> int:
        data = txn.get(tenant.encode(), db=self._versions)
        return 0 if data is None else struct.unpack("<Q", data)[0]

    def _log(self, txn: lmdb.Transaction, tenant: str, entries: Sequence[tuple[str, EntryKind]]) -> None:
        """Append the entries to the tenant's change log with its next seqs; drop those beyond `LOG_KEEP`."""
        if not entries:
            return
        first = self._version(txn, tenant) + 1
        for seq, (memory_id, kind) in enumerate(entries, first):
            txn.put(encode_log_key(tenant, seq), kind.value.encode() + b"\x00" + memory_id.encode(), db=self._changes)
        last = first + len(entries) - 1
        for seq in range(max(1, first - LOG_KEEP), last - LOG_KEEP + 1):
            txn.delete(encode_log_key(tenant, seq), db=self._changes)
        txn.put(tenant.encode(), struct.pack("<Q", last), db=self._versions)

    def _derive_once(self) -> None:
        """Build the derived databases of a store written before they existed, or add the history versions to the
        usage of a store derived before they counted (once; writes keep them after)."""
        with self._read() as txn:
            found = txn.get(b"derived", db=self._meta)
        if found == DERIVED:
            return

        def build(txn: lmdb.Transaction) -> None:
            history_bytes = lmdb_history.tenant_bytes(txn, self._history)
            if found is None:
                count_all(self._derived, txn, self._memories, self._vectors, history_bytes)
            else:
                count_history(self._derived, txn, history_bytes)
            txn.put(b"derived", DERIVED, db=self._meta)

        self._write(build)

    @staticmethod
    def _scan(txn: lmdb.Transaction, tenant: str, db, after: bytes | None = None,
              limit: int | None = None) -> Iterator[tuple[bytes, bytes]]:
        """The tenant's (key, value) pairs of `db` in key order: all, or those after `after` (a key, or a lower
        bound no key equals), at most `limit`."""
        prefix = encode_key(tenant)
        cursor = txn.cursor(db=db)
        if not cursor.set_range(after or prefix):
            return
        if after is not None and cursor.key() == after and not cursor.next():
            return
        for taken, (key, value) in enumerate(cursor.iternext()):
            if not key.startswith(prefix) or (limit is not None and taken >= limit):
                return
            yield bytes(key), bytes(value)


def encode_log_key(tenant: str, seq: int) -> bytes:
    """The `changes` key of one log entry: `tenant` + NUL + `seq` as 8 big-endian bytes (one tenant's entries are
    one key range, in seq order)."""
    return encode_key(tenant) + struct.pack(">Q", seq)
