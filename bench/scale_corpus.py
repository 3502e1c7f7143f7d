"""The synthetic corpus of `bench.memory_scale` and the cache file of its base vectors.

Embedding a million turns with MiniLM takes hours on 2 CPU cores, and the benchmark measures the store and the
index, not the model. So `BASE_COUNT` base turns are embedded once and cached; memory `i` (any `i`, a million or
more) is derived from base turn `j = i mod BASE_COUNT`, reproducibly:

- speaker and sentence: base `j`'s, with its entry number replaced by `i` (so every text is distinct);
- vector: base `j`'s vector plus Gaussian jitter seeded by `i`, renormalised. The jitter is calibrated when the cache
  is built: MiniLM's vectors of one sentence under two entry numbers (`entry j` and `entry j + BASE_COUNT`) have a
  median cosine similarity `pair_cosine`, and two derived memories of one base get that same similarity on average.

Cache format (this module is its only reader and writer): `<dir>/scale-<key>.npy`, a float32 (BASE_COUNT, dim)
array of unit vectors in base order (numpy's `.npy`), beside `<dir>/scale-<key>.json` with `model`, `base_count`,
`seed`, `corpus`, `dim`, `pair_cosine` and `sigma`. `key` is a digest of the model identity and the corpus settings,
so a changed model or corpus never reuses stale vectors. Both files are written via a temporary file and a rename.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

CORPUS_VERSION = 1  # bump when the sentences change: it is part of the cache key
BASE_COUNT = 20_000
SEED = 0
CALIBRATION_PAIRS = 256
NAMES = ["Alice", "Bob", "Carol", "Dan", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory", "Oscar"]
VERBS = ["visited", "talked about", "bought", "painted", "wrote about", "cooked", "studied", "photographed"]
THINGS = ["Kyoto", "a red bicycle", "the violin", "Lisbon", "sourdough bread", "a chess opening", "jazz records",
          "the garden", "a pottery class", "Oslo", "tennis shoes", "a sailing trip", "an old map", "ramen"]
WHEN = ["last spring", "on Sunday", "in May", "yesterday", "before the holidays", "at the festival", "in 2021"]


@dataclass(frozen=True)
class BaseTurn:
    """One embedded turn: who says it and the sentence without its entry number."""

    speaker: str
    sentence: str


def base_turns(count: int = BASE_COUNT, seed: int = SEED) -> list[BaseTurn]:
    """The base turns, the same for the same arguments on every machine."""
    rng = random.Random(seed)
    return [BaseTurn(rng.choice(NAMES), f"{rng.choice(NAMES)} {rng.choice(VERBS)} {rng.choice(THINGS)} "
                                        f"{rng.choice(WHEN)}") for _ in range(count)]


def text(turn: BaseTurn, entry: int) -> str:
    """The stored text of a memory made from `turn` with entry number `entry`."""
    return f"{turn.sentence} (entry {entry})"


def embedded_text(turn: BaseTurn, entry: int) -> str:
    """What a base turn's vector is computed from (a turn without the one before it, as `embedding_text` writes)."""
    return f"{turn.speaker}: {text(turn, entry)}"


def question(rng: random.Random) -> str:
    return f"When did {rng.choice(NAMES)} last see {rng.choice(THINGS)}?"


@dataclass(frozen=True)
class ScaleCorpus:
    """Cached base vectors and the rule deriving any number of distinct memories from them (see the module doc)."""

    turns: tuple[BaseTurn, ...]
    vectors: np.ndarray
    meta: dict

    def __len__(self) -> int:
        return len(self.turns)

    def turn(self, i: int) -> tuple[str, str]:
        """(speaker, text) of memory `i`."""
        base = self.turns[i % len(self.turns)]
        return base.speaker, text(base, i)

    def vectors_for(self, start: int, count: int) -> np.ndarray:
        """The (count, dim) unit vectors of memories start..start+count-1; each row depends only on its index."""
        bases = self.vectors[np.arange(start, start + count) % len(self.turns)]
        noise = np.stack([np.random.default_rng((self.meta["seed"], i)).standard_normal(bases.shape[1],
                                                                                       dtype=np.float32)
                          for i in range(start, start + count)]) if count else bases
        jittered = bases + np.float32(self.meta["sigma"]) * noise
        return (jittered / np.linalg.norm(jittered, axis=1, keepdims=True)).astype(np.float32)

    def describe(self) -> dict:
        """What a result line records about where the vectors came from."""
        return {"source": "cached MiniLM base vectors, derived memories", "base_count": len(self.turns),
                "model": self.meta["model"], "pair_cosine": self.meta["pair_cosine"], "sigma": self.meta["sigma"],
                "rule": "memory i = base turn i mod base_count with entry number i; vector = base vector + "
                        "Gaussian jitter seeded by i, renormalised"}


def cache_key(model: str, count: int, seed: int) -> str:
    settings = json.dumps({"model": model, "base_count": count, "seed": seed, "corpus": CORPUS_VERSION})
    return hashlib.sha256(settings.encode()).hexdigest()[:16]


def load_or_build(directory: Path, model: str, embed: Callable[[Sequence[str]], np.ndarray],
                  count: int = BASE_COUNT, seed: int = SEED,
                  on_build: Callable[[int], None] | None = None) -> ScaleCorpus:
    """The corpus of `count` base turns with vectors from the cache in `directory`, embedding them with `embed`
    (and `CALIBRATION_PAIRS` variants to calibrate the jitter) only when no cache file matches. `on_build` is told
    how many texts are about to be embedded."""
    turns = base_turns(count, seed)
    path = directory / f"scale-{cache_key(model, count, seed)}"
    loaded = _load(path, model, count, seed)
    if loaded is not None:
        return ScaleCorpus(tuple(turns), *loaded)
    pairs = min(CALIBRATION_PAIRS, count)
    if on_build is not None:
        on_build(count + pairs)
    vectors = np.ascontiguousarray(embed([embedded_text(turn, j) for j, turn in enumerate(turns)]), np.float32)
    variants = embed([embedded_text(turn, j + count) for j, turn in enumerate(turns[:pairs])])
    pair_cosine = float(np.median(np.sum(vectors[:pairs] * variants, axis=1)))
    meta = {"model": model, "base_count": count, "seed": seed, "corpus": CORPUS_VERSION, "dim": vectors.shape[1],
            "pair_cosine": round(pair_cosine, 6), "sigma": jitter_sigma(pair_cosine, vectors.shape[1])}
    _save(path, vectors, meta)
    return ScaleCorpus(tuple(turns), vectors, meta)


def jitter_sigma(pair_cosine: float, dim: int) -> float:
    """The per-component jitter that gives two jittered copies of one unit vector cosine `pair_cosine` on average:
    each copy is v + s*g with |g|^2 ~ dim, so their cosine is about 1 / (1 + dim * s^2)."""
    pair_cosine = min(max(pair_cosine, 1e-3), 1.0)
    return round(math.sqrt((1 / pair_cosine - 1) / dim), 6)


def _load(path: Path, model: str, count: int, seed: int) -> tuple[np.ndarray, dict] | None:
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
        vectors = np.load(path.with_suffix(".npy"))
    except (OSError, ValueError):
        return None
    expected = {"model": model, "base_count": count, "seed": seed, "corpus": CORPUS_VERSION}
    if any(meta.get(key) != value for key, value in expected.items()) or vectors.shape != (count, meta.get("dim")):
        return None
    return vectors.astype(np.float32, copy=False), meta


def _save(path: Path, vectors: np.ndarray, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".npy.tmp"), "wb") as file:
        np.save(file, vectors)
    os.replace(path.with_suffix(".npy.tmp"), path.with_suffix(".npy"))
    path.with_suffix(".json.tmp").write_text(json.dumps(meta, sort_keys=True))
    os.replace(path.with_suffix(".json.tmp"), path.with_suffix(".json"))
