"""A tenant's FAISS index: derived from the record store, never the source of truth.

Exact inner product (`IndexFlatIP`) below `hnsw_threshold` vectors, HNSW above it. Rows are positions 0..n-1 and
`ids[position]` is the memory id. FAISS indexes cannot cheaply forget a row, so a removal marks the index stale
and the owner rebuilds it from the record store. On disk: `<name>.faiss` plus `<name>.json` holding the ids and the
tenant version (change seq) the index was built at; the owner catches a file up from that version, or rebuilds it.

GPU: with a `replica` factory (`gpu_replica()` where FAISS sees a GPU) the rows are also kept in an exact flat
index on the GPU, which answers the searches; the CPU index stays the one saved, reconstructed from and rebuilt.
FAISS GPU indexes ignore `IDSelector`s (faiss issues #3114, #3924), so a filtered search asks the replica for more
rows than `k` and filters them: the first `k` allowed rows of an exact ranking are the exact answer. When too few of
them are allowed (a very selective filter), the CPU index answers with its selector instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Sequence

import faiss
import numpy as np

DEFAULT_HNSW_THRESHOLD = 20_000
HNSW_NEIGHBORS = 32
HNSW_EF_SEARCH = 128
REPLICA_MAX_K = 2048  # the most rows one FAISS GPU search returns
DEVICES = ("auto", "cpu", "gpu")

ReplicaFactory = Callable[[int], faiss.Index]  # dim -> an empty exact inner-product index that searches fast


def gpu_count() -> int:
    """GPUs FAISS can use (0 with the faiss-cpu build, which has no GPU functions)."""
    get = getattr(faiss, "get_num_gpus", None)
    return get() if get is not None else 0


def gpu_replica(device: int = 0) -> ReplicaFactory:
    """Flat inner-product indexes on GPU `device`, sharing one set of FAISS GPU resources."""
    resources = faiss.StandardGpuResources()
    config = faiss.GpuIndexFlatConfig()
    config.device = device
    return lambda dim: faiss.GpuIndexFlatIP(resources, dim, config)


def replica_for(device: str) -> ReplicaFactory | None:
    """The replica factory for a `--memory-index-device` choice: "cpu" none, "gpu" a GPU one (an error without a
    GPU FAISS can use), "auto" a GPU one when there is such a GPU."""
    if device not in DEVICES:
        raise ValueError(f"memory index device: one of {', '.join(DEVICES)}, not {device!r}")
    gpus = gpu_count()
    if device == "gpu" and gpus == 0:
        raise ValueError("memory index device 'gpu': FAISS sees no GPU (install the `gpu` extra, faiss-gpu-cu12, "
                         "on a machine with CUDA) or choose 'cpu'")
    return gpu_replica() if device == "gpu" or (device == "auto" and gpus > 0) else None


class VectorIndex:
    """Nearest neighbours by inner product over one tenant's embeddings."""

    def __init__(self, dim: int, hnsw_threshold: int = DEFAULT_HNSW_THRESHOLD,
                 replica: ReplicaFactory | None = None) -> None:
        self.dim = dim
        self.hnsw_threshold = hnsw_threshold
        self.ids: list[str] = []
        self._rows: dict[str, int] = {}  # memory id -> its newest row
        self._index = faiss.IndexFlatIP(dim)
        self._replica = replica(dim) if replica is not None else None

    @classmethod
    def build(cls, ids: Sequence[str], vectors: np.ndarray, dim: int,
              hnsw_threshold: int = DEFAULT_HNSW_THRESHOLD, replica: ReplicaFactory | None = None) -> "VectorIndex":
        index = cls(dim, hnsw_threshold, replica)
        if len(ids) >= hnsw_threshold:
            index._index = _new_hnsw(dim)
        index.add(ids, vectors)
        return index

    @property
    def on_replica(self) -> bool:
        """Whether searches run on the replica (the GPU one in production)."""
        return self._replica is not None

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
        if self._replica is not None:
            self._replica.add(vectors)
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
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        if self._replica is not None:
            found = self._replica_search(query, k, allowed)
            if found is not None:
                return found
        params = None
        if allowed is not None:
            selector = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
            params = (faiss.SearchParametersHNSW(sel=selector, efSearch=max(HNSW_EF_SEARCH, k)) if self.is_hnsw
                      else faiss.SearchParameters(sel=selector))
        elif self.is_hnsw:
            params = faiss.SearchParametersHNSW(efSearch=max(HNSW_EF_SEARCH, k))
        scores, rows = self._index.search(query, min(k, len(self.ids)), params=params)
        return [(self.ids[row], float(score)) for row, score in zip(rows[0], scores[0]) if row >= 0]

    def _replica_search(self, query: np.ndarray, k: int,
                        allowed: Sequence[int] | None) -> list[tuple[str, float]] | None:
        """The exact answer from the replica, or None when a filter is too selective for it (see the module doc)."""
        wanted = min(k, len(self.ids) if allowed is None else len(allowed))
        fetch = min(len(self.ids), k if allowed is None else -(-2 * k * len(self.ids) // len(allowed)))
        if fetch > REPLICA_MAX_K:
            return None
        scores, rows = self._replica.search(query, fetch)
        keep = None if allowed is None else set(allowed)
        found = [(self.ids[row], float(score)) for row, score in zip(rows[0], scores[0])
                 if row >= 0 and (keep is None or row in keep)][:k]
        return found if len(found) >= wanted else None

    def save(self, path: Path, version: int) -> None:
        """Write `<path>.faiss` and `<path>.json` atomically (each via a temporary file and rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._index, str(_file(path, ".faiss.tmp")))
        os.replace(_file(path, ".faiss.tmp"), _file(path, ".faiss"))
        meta = {"version": version, "ids": self.ids, "dim": self.dim}
        _file(path, ".json.tmp").write_text(json.dumps(meta))
        os.replace(_file(path, ".json.tmp"), _file(path, ".json"))

    @classmethod
    def load(cls, path: Path, version: int, hnsw_threshold: int = DEFAULT_HNSW_THRESHOLD,
             replica: ReplicaFactory | None = None) -> "VectorIndex | None":
        """The saved index if it exists, is consistent and was built at `version`; else None (rebuild it)."""
        saved = cls.load_saved(path, hnsw_threshold, replica)
        return saved[0] if saved is not None and saved[1] == version else None

    @classmethod
    def load_saved(cls, path: Path, hnsw_threshold: int = DEFAULT_HNSW_THRESHOLD,
                   replica: ReplicaFactory | None = None) -> "tuple[VectorIndex, int] | None":
        """The saved index and the version it was built at, if it exists and is consistent; else None."""
        try:
            meta = json.loads(_file(path, ".json").read_text())
            raw = faiss.read_index(str(_file(path, ".faiss")))
        except (OSError, ValueError, RuntimeError):
            return None
        if not isinstance(meta.get("version"), int) or raw.ntotal != len(meta["ids"]) or raw.d != meta["dim"]:
            return None
        index = cls(meta["dim"], hnsw_threshold, replica)
        index._index, index.ids = raw, list(meta["ids"])
        index._rows = {memory_id: row for row, memory_id in enumerate(index.ids)}
        if index._replica is not None and index.ids:
            index._replica.add(raw.reconstruct_n(0, raw.ntotal))
        return index, meta["version"]


def _new_hnsw(dim: int) -> faiss.Index:
    index = faiss.IndexHNSWFlat(dim, HNSW_NEIGHBORS, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    return index


def _file(path: Path, suffix: str) -> Path:
    """`path` with `suffix` appended (not replacing a dotted tail: tenant names may contain dots)."""
    return path.with_name(path.name + suffix)
