"""A tenant's FAISS index: derived from LMDB, never the source of truth.

Exact inner product (`IndexFlatIP`) below `hnsw_threshold` vectors, HNSW above it. Rows are positions 0..n-1 and
`ids[position]` is the memory id. FAISS indexes cannot cheaply forget a row, so a removal marks the index stale
and the owner rebuilds it from LMDB. On disk: `<name>.faiss` plus `<name>.json` holding the ids and the tenant
version the index was built at; a file whose version differs from LMDB's is stale and is rebuilt.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np

DEFAULT_HNSW_THRESHOLD = 20_000
HNSW_NEIGHBORS = 32
HNSW_EF_SEARCH = 128


class VectorIndex:
    """Nearest neighbours by inner product over one tenant's embeddings."""

    def __init__(self, dim: int, hnsw_threshold: int = DEFAULT_HNSW_THRESHOLD) -> None:
        self.dim = dim
        self.hnsw_threshold = hnsw_threshold
        self.ids: list[str] = []
        self._rows: dict[str, int] = {}  # memory id -> its newest row
        self._index = faiss.IndexFlatIP(dim)

    @classmethod
    def build(cls, ids: Sequence[str], vectors: np.ndarray, dim: int,
              hnsw_threshold: int = DEFAULT_HNSW_THRESHOLD) -> "VectorIndex":
        index = cls(dim, hnsw_threshold)
        if len(ids) >= hnsw_threshold:
            index._index = _new_hnsw(dim)
        index.add(ids, vectors)
        return index

    @property
    def is_hnsw(self) -> bool:
        return isinstance(self._index, faiss.IndexHNSWFlat)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Append rows; switches to HNSW (rebuilding in place) when the size crosses the threshold."""
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        if not self.is_hnsw and len(self.ids) + len(ids) >= self.hnsw_threshold:
            old = self._index.reconstruct_n(0, len(self.ids)) if self.ids else np.zeros((0, self.dim), np.float32)
            self._index = _new_hnsw(self.dim)
            if len(old):
                self._index.add(old)
        self._index.add(vectors)
        self._rows.update((memory_id, len(self.ids) + i) for i, memory_id in enumerate(ids))
        self.ids.extend(ids)

    def vectors_of(self, ids: Sequence[str]) -> np.ndarray:
        """The stored vectors of `ids` that are in the index, one row each, in order (unknown ids are skipped)."""
        rows = [self._rows[memory_id] for memory_id in ids if memory_id in self._rows]
        if not rows:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._index.reconstruct(row) for row in rows])

    def search(self, query: np.ndarray, k: int, allowed: Sequence[int] | None = None) -> list[tuple[str, float]]:
        """Up to `k` (id, score) pairs, best first; `allowed` restricts the search to those positions."""
        if not self.ids or k <= 0 or (allowed is not None and len(allowed) == 0):
            return []
        params = None
        if allowed is not None:
            selector = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
            params = (faiss.SearchParametersHNSW(sel=selector, efSearch=max(HNSW_EF_SEARCH, k)) if self.is_hnsw
                      else faiss.SearchParameters(sel=selector))
        elif self.is_hnsw:
            params = faiss.SearchParametersHNSW(efSearch=max(HNSW_EF_SEARCH, k))
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        scores, rows = self._index.search(query, min(k, len(self.ids)), params=params)
        return [(self.ids[row], float(score)) for row, score in zip(rows[0], scores[0]) if row >= 0]

    def save(self, path: Path, version: int) -> None:
        """Write `<path>.faiss` and `<path>.json` atomically (each via a temporary file and rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._index, str(_file(path, ".faiss.tmp")))
        os.replace(_file(path, ".faiss.tmp"), _file(path, ".faiss"))
        meta = {"version": version, "ids": self.ids, "dim": self.dim}
        _file(path, ".json.tmp").write_text(json.dumps(meta))
        os.replace(_file(path, ".json.tmp"), _file(path, ".json"))

    @classmethod
    def load(cls, path: Path, version: int, hnsw_threshold: int = DEFAULT_HNSW_THRESHOLD) -> "VectorIndex | None":
        """The saved index if it exists, is consistent and was built at `version`; else None (rebuild it)."""
        try:
            meta = json.loads(_file(path, ".json").read_text())
            raw = faiss.read_index(str(_file(path, ".faiss")))
        except (OSError, ValueError, RuntimeError):
            return None
        if meta.get("version") != version or raw.ntotal != len(meta["ids"]) or raw.d != meta["dim"]:
            return None
        index = cls(meta["dim"], hnsw_threshold)
        index._index, index.ids = raw, list(meta["ids"])
        index._rows = {memory_id: row for row, memory_id in enumerate(index.ids)}
        return index


def _new_hnsw(dim: int) -> faiss.Index:
    index = faiss.IndexHNSWFlat(dim, HNSW_NEIGHBORS, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    return index


def _file(path: Path, suffix: str) -> Path:
    """`path` with `suffix` appended (not replacing a dotted tail: tenant names may contain dots)."""
    return path.with_name(path.name + suffix)
