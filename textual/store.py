"""`MemoryStore`: LMDB plus per-tenant derived indexes, and the only way to get a tenant handle.

Rules: open a store once per path per process (LMDB's rule) and after any fork; all writes go through it, so its
in-memory indexes mirror LMDB. A write returns only after LMDB has synced it. FAISS indexes are saved beside the
LMDB files on `close()`; at the next open each is used only if it was built at the tenant's current LMDB version,
else rebuilt from the stored embeddings.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from textual.embedder import Embedder
from textual.lexical_index import Analyzer
from textual.memory import DEFAULT_MAX_CONTENT_CHARS, Memory, check_identifier
from textual.lmdb_store import DEFAULT_MAP_SIZE, LmdbStore
from textual.retriever import SearchSettings
from textual.tenant_index import TenantIndex, build_tenant_index
from textual.vector_index import DEFAULT_HNSW_THRESHOLD, VectorIndex


class MemoryStore:
    """All tenants' memories under one directory. Use `for_tenant` to read or write any of them."""

    def __init__(self, db: LmdbStore, embedder: Embedder, index_dir: Path, hnsw_threshold: int,
                 max_content_chars: int, settings: SearchSettings, clock: Callable[[], float],
                 track_access: bool) -> None:
        self.db = db
        self.embedder = embedder
        self.analyzer = Analyzer()
        self.index_dir = index_dir
        self.hnsw_threshold = hnsw_threshold
        self.max_content_chars = max_content_chars
        self.settings = settings
        self.clock = clock
        self.track_access = track_access
        self.lock = threading.RLock()
        self._indexes: dict[str, TenantIndex] = {}

    @classmethod
    def open(cls, path: str | Path, *, embedder: Embedder | None = None, model_path: str | Path | None = None,
             hnsw_threshold: int = DEFAULT_HNSW_THRESHOLD, max_content_chars: int = DEFAULT_MAX_CONTENT_CHARS,
             settings: SearchSettings | None = None, clock: Callable[[], float] = time.time,
             track_access: bool = True, map_size: int = DEFAULT_MAP_SIZE) -> "MemoryStore":
        """Open or create the store in directory `path`; loads the embedding model unless `embedder` is given."""
        path = Path(path)
        db = LmdbStore.open(path / "lmdb", map_size=map_size)
        embedder = embedder if embedder is not None else Embedder.open(model_path)
        return cls(db, embedder, path / "faiss", hnsw_threshold, max_content_chars, settings or SearchSettings(),
                   clock, track_access)

    def for_tenant(self, tenant: str):
        """A handle whose every read and write is confined to `tenant`."""
        from textual.tenant_memory import TenantMemory

        return TenantMemory(self, check_identifier("tenant", tenant))

    def close(self) -> None:
        """Save fresh FAISS indexes for the next open, then close LMDB."""
        with self.lock:
            for tenant, index in self._indexes.items():
                if not index.vectors_stale:
                    index.vectors.save(self._index_path(tenant), self.db.version(tenant))
            self._indexes.clear()
            self.db.close()

    def __enter__(self) -> "MemoryStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def index(self, tenant: str) -> TenantIndex:
        """The tenant's up-to-date index, loaded or rebuilt on first use and after removals."""
        with self.lock:
            index = self._indexes.get(tenant)
            if index is None:
                vectors = self._load_vectors(tenant)
                index = self._indexes[tenant] = build_tenant_index(self.db.memories(tenant), vectors, self.analyzer)
            elif index.vectors_stale:
                index.vectors = self._rebuild_vectors(tenant)
                index.vectors_stale = False
            return index

    def write(self, tenant: str, memories: Sequence[Memory], vectors: np.ndarray | None, *,
              replaces: bool = False) -> None:
        """Durably store memories (with their vectors, if given), then update the index.

        `replaces` says the memories already exist: a new vector for one makes the FAISS index stale.
        """
        with self.lock:
            index = self.index(tenant)
            rows = [None] * len(memories) if vectors is None else list(vectors)
            self.db.put_many(zip(memories, rows))
            index.add(memories, None if replaces else vectors)
            if replaces and vectors is not None:
                index.vectors_stale = True

    def remove(self, tenant: str, memory_id: str) -> bool:
        with self.lock:
            index = self.index(tenant)
            found = self.db.delete(tenant, memory_id)
            if found:
                index.remove(memory_id)
            return found

    def _load_vectors(self, tenant: str) -> VectorIndex:
        loaded = VectorIndex.load(self._index_path(tenant), self.db.version(tenant), self.hnsw_threshold)
        return loaded if loaded is not None else self._rebuild_vectors(tenant)

    def _rebuild_vectors(self, tenant: str) -> VectorIndex:
        stored = self.db.vectors(tenant)
        ids = list(stored)
        matrix = np.stack([stored[i] for i in ids]) if ids else np.zeros((0, self.embedder.dim), np.float32)
        return VectorIndex.build(ids, matrix, self.embedder.dim, self.hnsw_threshold)

    def _index_path(self, tenant: str) -> Path:
        return self.index_dir / tenant
