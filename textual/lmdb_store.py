"""LMDB as the source of truth for memories and their embeddings.

Rules, as py-lmdb states them and this module keeps them:
- Open the environment in the process that uses it, after any fork; one `LmdbStore` per path per process.
- Every write is one transaction, committed with sync: once `put`/`delete` returns, the change survives kill -9.
- Buffers read inside a transaction are copied (decoded) before it ends.
- LMDB allows one writer at a time; writers here are short and never wait on anything else.
- The map grows when full (`MapFullError`): the writer's transaction is aborted, the map doubles up to
  `max_map_size` while no transaction is open (`map_growth.GrowthGate`), and the write is retried; at the ceiling
  the write raises `StoreFullError` and nothing is changed.
Databases: `memories` (key -> record JSON), `vectors` (key -> float32 bytes), `kbs` (key -> knowledge base
JSON), `versions` (tenant -> write count, as 8-byte little-endian), `usage` (tenant -> memories and their bytes,
two 8-byte little-endian counts), `meta` (`embedding_model` -> the identity of the model every stored vector came
from; `usage` -> b"1" once every tenant's usage was counted). A tenant's version changes on every write, so
derived indexes know when they are stale. Invariant of `usage`: it equals the tenant's number of records in
`memories` and the summed lengths of its `memories` and `vectors` values, updated in the same transaction as they.
"""

from __future__ import annotations

import struct
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import lmdb
import numpy as np

from textual.errors import StoreFullError
from textual.map_growth import GrowthGate, next_map_size
from textual.memory import KnowledgeBase, Memory
from textual.record import (decode_kb, decode_key, decode_memory, decode_vector, encode_kb, encode_key, encode_memory,
                            encode_vector)

DEFAULT_MAP_SIZE = 1 << 30
DEFAULT_MAX_MAP_SIZE = 1 << 36
_USAGE = struct.Struct("<QQ")
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
        self._usage = env.open_db(b"usage")
        self._meta = env.open_db(b"meta")

    @classmethod
    def open(cls, path: str | Path, map_size: int = DEFAULT_MAP_SIZE,
             max_map_size: int = DEFAULT_MAX_MAP_SIZE) -> "LmdbStore":
        """Open (creating if needed) the environment in directory `path`, synced on every commit. The map starts at
        `map_size` (or the size the file already needs) and may grow to `max_map_size`."""
        Path(path).mkdir(parents=True, exist_ok=True)
        env = lmdb.open(str(path), map_size=map_size, max_dbs=8, sync=True, metasync=True, writemap=False)
        store = cls(env, max_map_size)
        store._count_usage_once()
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

    def set_embedding_model(self, identity: str) -> None:
        self._write(lambda txn: txn.put(b"embedding_model", identity.encode(), db=self._meta))

    def put_many(self, items: Iterable[tuple[Memory, np.ndarray | None]]) -> None:
        """Write memories (and embeddings, where given) of any tenants in one durable transaction."""
        rows = [(memory, encode_key(memory.tenant, memory.id), encode_memory(memory),
                 None if vector is None else encode_vector(vector)) for memory, vector in items]

        def put(txn: lmdb.Transaction) -> None:
            changes: dict[str, list[int]] = {}
            for memory, key, record, vector in rows:
                change = changes.setdefault(memory.tenant, [0, 0])
                old = txn.get(key, db=self._memories)
                change[0] += old is None
                change[1] += len(record) - (0 if old is None else len(old))
                txn.put(key, record, db=self._memories)
                if vector is not None:
                    old_vector = txn.get(key, db=self._vectors)
                    change[1] += len(vector) - (0 if old_vector is None else len(old_vector))
                    txn.put(key, vector, db=self._vectors)
            for tenant, (count, size) in changes.items():
                self._bump_version(txn, tenant)
                self._add_usage(txn, tenant, count, size)

        self._write(put)

    def delete(self, tenant: str, memory_id: str) -> bool:
        """Remove one memory and its embedding; False if it was not there."""
        return bool(self.delete_many(tenant, [memory_id]))

    def delete_many(self, tenant: str, memory_ids: Iterable[str]) -> list[str]:
        """Remove memories and their embeddings in one transaction; returns the ids that were there."""
        memory_ids = list(memory_ids)

        def delete(txn: lmdb.Transaction) -> list[str]:
            removed, freed = [], 0
            for memory_id in memory_ids:
                key = encode_key(tenant, memory_id)
                record, vector = txn.pop(key, db=self._memories), txn.pop(key, db=self._vectors)
                freed += (0 if record is None else len(record)) + (0 if vector is None else len(vector))
                if record is not None:
                    removed.append(memory_id)
            if removed:
                self._bump_version(txn, tenant)
            if freed:
                self._add_usage(txn, tenant, -len(removed), -freed)
            return removed

        return self._write(delete)

    def put_kb(self, kb: KnowledgeBase) -> None:
        self._write(lambda txn: txn.put(encode_key(kb.tenant, kb.id), encode_kb(kb), db=self._kbs))

    def delete_kb(self, tenant: str, kb_id: str) -> bool:
        return self._write(lambda txn: txn.delete(encode_key(tenant, kb_id), db=self._kbs))

    def get_kb(self, tenant: str, kb_id: str) -> KnowledgeBase | None:
        with self._read() as txn:
            data = txn.get(encode_key(tenant, kb_id), db=self._kbs)
            return None if data is None else decode_kb(data)

    def kbs(self, tenant: str) -> list[KnowledgeBase]:
        """All of `tenant`'s knowledge bases, in id order."""
        with self._read() as txn:
            return [decode_kb(value) for _key, value in self._scan(txn, tenant, self._kbs)]

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

    def version(self, tenant: str) -> int:
        """How many writes `tenant` has had; 0 for a tenant never written."""
        with self._read() as txn:
            data = txn.get(tenant.encode(), db=self._versions)
            return 0 if data is None else struct.unpack("<Q", data)[0]

    def usage(self, tenant: str) -> tuple[int, int]:
        """(memories, bytes) `tenant` holds: records of every tier, and their records' and embeddings' bytes."""
        with self._read() as txn:
            data = txn.get(tenant.encode(), db=self._usage)
            return (0, 0) if data is None else _USAGE.unpack(data)

    def tenants(self) -> list[str]:
        with self._read() as txn:
            return [bytes(key).decode() for key, _ in txn.cursor(db=self._versions)]

    @contextmanager
    def _read(self) -> Iterator[lmdb.Transaction]:
        with self._gate.shared(), self._env.begin() as txn:
            yield txn

    def _write(self, change: Callable[[lmdb.Transaction], T]) -> T:
        """Run `change` in one write transaction, growing the map and retrying when it is full."""
        while True:
            try:
                with self._gate.shared(), self._env.begin(write=True) as txn:
                    return change(txn)
            except lmdb.MapFullError:
                self._grow()

    def _grow(self) -> None:
        with self._gate.exclusive():
            current = self.map_size
            grown = next_map_size(current, self.max_map_size)
            if grown is None:
                raise StoreFullError(current, self.max_map_size)
            self._env.set_mapsize(grown)

    def _bump_version(self, txn: lmdb.Transaction, tenant: str) -> None:
        data = txn.get(tenant.encode(), db=self._versions)
        count = 0 if data is None else struct.unpack("<Q", data)[0]
        txn.put(tenant.encode(), struct.pack("<Q", count + 1), db=self._versions)

    def _add_usage(self, txn: lmdb.Transaction, tenant: str, count: int, size: int) -> None:
        data = txn.get(tenant.encode(), db=self._usage)
        old_count, old_size = (0, 0) if data is None else _USAGE.unpack(data)
        txn.put(tenant.encode(), _USAGE.pack(max(0, old_count + count), max(0, old_size + size)), db=self._usage)

    def _count_usage_once(self) -> None:
        """Count every tenant's usage in a store written before `usage` existed (once; later writes keep it)."""
        with self._read() as txn:
            if txn.get(b"usage", db=self._meta) is not None:
                return

        def count(txn: lmdb.Transaction) -> None:
            totals: dict[bytes, list[int]] = {}
            for db, counted in ((self._memories, True), (self._vectors, False)):
                for key, value in txn.cursor(db=db):
                    total = totals.setdefault(bytes(key).split(b"\0", 1)[0], [0, 0])
                    total[0] += counted
                    total[1] += len(value)
            for tenant, (memories, size) in totals.items():
                txn.put(tenant, _USAGE.pack(memories, size), db=self._usage)
            txn.put(b"usage", b"1", db=self._meta)

        self._write(count)

    @staticmethod
    def _scan(txn: lmdb.Transaction, tenant: str, db, after: bytes | None = None,
              limit: int | None = None) -> Iterator[tuple[bytes, bytes]]:
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
