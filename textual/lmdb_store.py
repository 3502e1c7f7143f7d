"""LMDB as the source of truth for memories and their embeddings.

Rules, as py-lmdb states them and this module keeps them:
- Open the environment in the process that uses it, after any fork; one `LmdbStore` per path per process.
- Every write is one transaction, committed with sync: once `put`/`delete` returns, the change survives kill -9.
- Buffers read inside a transaction are copied (decoded) before it ends.
- LMDB allows one writer at a time; writers here are short and never wait on anything else.
Databases: `memories` (key -> record JSON), `vectors` (key -> float32 bytes), `kbs` (key -> knowledge base
JSON), `versions` (tenant -> write count, as 8-byte little-endian), `meta` (`embedding_model` -> the identity of
the model every stored vector came from). A tenant's version changes on every write, so derived indexes know when
they are stale.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Iterable, Iterator

import lmdb
import numpy as np

from textual.memory import KnowledgeBase, Memory
from textual.record import (decode_kb, decode_key, decode_memory, decode_vector, encode_kb, encode_key, encode_memory,
                            encode_vector)

DEFAULT_MAP_SIZE = 1 << 36


class LmdbStore:
    """Memories and embeddings of all tenants in one LMDB environment; every method names its tenant."""

    def __init__(self, env: lmdb.Environment) -> None:
        self._env = env
        self._memories = env.open_db(b"memories")
        self._vectors = env.open_db(b"vectors")
        self._versions = env.open_db(b"versions")
        self._kbs = env.open_db(b"kbs")
        self._meta = env.open_db(b"meta")

    @classmethod
    def open(cls, path: str | Path, map_size: int = DEFAULT_MAP_SIZE) -> "LmdbStore":
        """Open (creating if needed) the environment in directory `path`, synced on every commit."""
        Path(path).mkdir(parents=True, exist_ok=True)
        env = lmdb.open(str(path), map_size=map_size, max_dbs=8, sync=True, metasync=True, writemap=False)
        return cls(env)

    def disk_bytes(self) -> int:
        """Bytes of the LMDB data file (its pages in use grow into it; freed pages are reused, not returned)."""
        return self._env.info()["last_pgno"] * self._env.stat()["psize"]

    def close(self) -> None:
        self._env.close()

    def embedding_model(self) -> str | None:
        """The identity of the model the stored vectors came from; None for a store that never recorded one."""
        with self._env.begin(db=self._meta) as txn:
            found = txn.get(b"embedding_model")
        return None if found is None else found.decode()

    def set_embedding_model(self, identity: str) -> None:
        with self._env.begin(write=True, db=self._meta) as txn:
            txn.put(b"embedding_model", identity.encode())

    def put_many(self, items: Iterable[tuple[Memory, np.ndarray | None]]) -> None:
        """Write memories (and embeddings, where given) of any tenants in one durable transaction."""
        with self._env.begin(write=True) as txn:
            tenants = set()
            for memory, vector in items:
                key = encode_key(memory.tenant, memory.id)
                txn.put(key, encode_memory(memory), db=self._memories)
                if vector is not None:
                    txn.put(key, encode_vector(vector), db=self._vectors)
                tenants.add(memory.tenant)
            for tenant in tenants:
                self._bump_version(txn, tenant)

    def delete(self, tenant: str, memory_id: str) -> bool:
        """Remove one memory and its embedding; False if it was not there."""
        key = encode_key(tenant, memory_id)
        with self._env.begin(write=True) as txn:
            found = txn.delete(key, db=self._memories)
            txn.delete(key, db=self._vectors)
            if found:
                self._bump_version(txn, tenant)
        return found

    def delete_many(self, tenant: str, memory_ids: Iterable[str]) -> list[str]:
        """Remove memories and their embeddings in one transaction; returns the ids that were there."""
        removed = []
        with self._env.begin(write=True) as txn:
            for memory_id in memory_ids:
                key = encode_key(tenant, memory_id)
                if txn.delete(key, db=self._memories):
                    removed.append(memory_id)
                txn.delete(key, db=self._vectors)
            if removed:
                self._bump_version(txn, tenant)
        return removed

    def put_kb(self, kb: KnowledgeBase) -> None:
        with self._env.begin(write=True) as txn:
            txn.put(encode_key(kb.tenant, kb.id), encode_kb(kb), db=self._kbs)

    def delete_kb(self, tenant: str, kb_id: str) -> bool:
        with self._env.begin(write=True) as txn:
            return txn.delete(encode_key(tenant, kb_id), db=self._kbs)

    def get_kb(self, tenant: str, kb_id: str) -> KnowledgeBase | None:
        with self._env.begin() as txn:
            data = txn.get(encode_key(tenant, kb_id), db=self._kbs)
            return None if data is None else decode_kb(data)

    def kbs(self, tenant: str) -> list[KnowledgeBase]:
        """All of `tenant`'s knowledge bases, in id order."""
        with self._env.begin() as txn:
            return [decode_kb(value) for _key, value in self._scan(txn, tenant, self._kbs)]

    def get(self, tenant: str, memory_id: str) -> Memory | None:
        with self._env.begin() as txn:
            data = txn.get(encode_key(tenant, memory_id), db=self._memories)
            return None if data is None else decode_memory(data)

    def get_vector(self, tenant: str, memory_id: str) -> np.ndarray | None:
        with self._env.begin() as txn:
            data = txn.get(encode_key(tenant, memory_id), db=self._vectors)
            return None if data is None else decode_vector(data)

    def get_many(self, tenant: str, memory_ids: Iterable[str]) -> list[tuple[Memory, np.ndarray]]:
        """(memory, embedding) for each id that has both, read in one transaction."""
        found = []
        with self._env.begin() as txn:
            for memory_id in memory_ids:
                key = encode_key(tenant, memory_id)
                data, vector = txn.get(key, db=self._memories), txn.get(key, db=self._vectors)
                if data is not None and vector is not None:
                    found.append((decode_memory(data), decode_vector(vector)))
        return found

    def memories(self, tenant: str) -> list[Memory]:
        """All of `tenant`'s memories, in key order."""
        with self._env.begin() as txn:
            return [decode_memory(value) for _key, value in self._scan(txn, tenant, self._memories)]

    def vectors(self, tenant: str) -> dict[str, np.ndarray]:
        """All of `tenant`'s embeddings by memory id."""
        with self._env.begin() as txn:
            return {decode_key(key)[1]: decode_vector(value) for key, value in self._scan(txn, tenant, self._vectors)}

    def version(self, tenant: str) -> int:
        """How many writes `tenant` has had; 0 for a tenant never written."""
        with self._env.begin() as txn:
            data = txn.get(tenant.encode(), db=self._versions)
            return 0 if data is None else struct.unpack("<Q", data)[0]

    def tenants(self) -> list[str]:
        with self._env.begin() as txn:
            return [bytes(key).decode() for key, _ in txn.cursor(db=self._versions)]

    def _bump_version(self, txn: lmdb.Transaction, tenant: str) -> None:
        data = txn.get(tenant.encode(), db=self._versions)
        count = 0 if data is None else struct.unpack("<Q", data)[0]
        txn.put(tenant.encode(), struct.pack("<Q", count + 1), db=self._versions)

    @staticmethod
    def _scan(txn: lmdb.Transaction, tenant: str, db) -> Iterator[tuple[bytes, bytes]]:
        prefix = encode_key(tenant)
        cursor = txn.cursor(db=db)
        if not cursor.set_range(prefix):
            return
        for key, value in cursor:
            if not key.startswith(prefix):
                return
            yield key, value
