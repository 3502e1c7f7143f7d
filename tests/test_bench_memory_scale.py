"""`bench.scale_corpus` derives distinct memories from cached base vectors; `bench.memory_scale` measures a store."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from bench import memory_scale, scale_corpus, scale_search
from textual.store import MemoryStore


class CountingEmbed:
    """Deterministic unit vectors per text, near for one sentence under two entry numbers; counts the texts."""

    def __init__(self, dim: int = 16) -> None:
        self.dim, self.texts = dim, 0

    def __call__(self, texts):
        self.texts += len(texts)
        rows = np.asarray([self._vector(t.split(" (entry")[0]) + 0.3 * self._vector(t) for t in texts], np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    def _vector(self, text: str) -> np.ndarray:
        return np.random.default_rng(zlib.crc32(text.encode())).standard_normal(self.dim)


def test_the_cache_files_are_named_by_model_and_corpus_and_hold_the_base_vectors(tmp_path: Path):
    embed = CountingEmbed()
    corpus = scale_corpus.load_or_build(tmp_path, "model-a/16/0123", embed, count=40, seed=3)
    key = scale_corpus.cache_key("model-a/16/0123", 40, 3)
    assert key == "b8b40eee1a40df06", "the key pins the corpus settings: a changed corpus must bump CORPUS_VERSION"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"scale-{key}.json", f"scale-{key}.npy"]
    meta = json.loads((tmp_path / f"scale-{key}.json").read_text())
    assert set(meta) == {"model", "base_count", "seed", "corpus", "dim", "pair_cosine", "sigma"}
    assert (meta["model"], meta["base_count"], meta["seed"], meta["dim"]) == ("model-a/16/0123", 40, 3, 16)
    stored = np.load(tmp_path / f"scale-{key}.npy")
    assert stored.dtype == np.float32 and stored.shape == (40, 16)
    np.testing.assert_array_equal(stored, corpus.vectors)
    assert embed.texts == 40 + 40, "the base turns and one variant each to calibrate the jitter"


def test_a_second_run_reuses_the_cache_and_another_model_rebuilds_it(tmp_path: Path):
    first = scale_corpus.load_or_build(tmp_path, "model-a", CountingEmbed(), count=40)
    again = CountingEmbed()
    reused = scale_corpus.load_or_build(tmp_path, "model-a", again, count=40)
    assert again.texts == 0
    np.testing.assert_array_equal(reused.vectors, first.vectors)
    other = CountingEmbed()
    scale_corpus.load_or_build(tmp_path, "model-b", other, count=40)
    assert other.texts == 80


def test_derived_memories_are_distinct_reproducible_and_unit_vectors(tmp_path: Path):
    corpus = scale_corpus.load_or_build(tmp_path, "m", CountingEmbed(), count=40)
    texts = [corpus.turn(i)[1] for i in range(200)]
    assert len(set(texts)) == 200
    assert corpus.turn(5)[0] == corpus.turn(45)[0] and texts[45] == texts[5].replace("entry 5", "entry 45")
    whole = corpus.vectors_for(0, 100)
    np.testing.assert_array_equal(whole[37:41], corpus.vectors_for(37, 4))  # a row depends only on its index
    np.testing.assert_allclose(np.linalg.norm(whole, axis=1), 1.0, rtol=1e-5)
    assert len({row.tobytes() for row in whole}) == 100


def test_the_jitter_gives_two_copies_of_a_vector_the_calibrated_cosine():
    rng = np.random.default_rng(0)
    dim, cosine = 384, 0.93
    base = rng.standard_normal(dim).astype(np.float32)
    base /= np.linalg.norm(base)
    sigma = scale_corpus.jitter_sigma(cosine, dim)
    copies = base + sigma * rng.standard_normal((500, dim))
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    pairs = np.sum(copies[:250] * copies[250:], axis=1)
    assert abs(float(np.mean(pairs)) - cosine) < 0.01


@pytest.mark.slow
def test_a_small_run_on_postgresql_measures_cross_node_visibility(tmp_path: Path, embedder, postgres_url):
    corpus = scale_corpus.load_or_build(tmp_path / "cache", embedder.identity, embedder.embed, count=64)
    args = memory_scale.parse(["--store", postgres_url, "--sizes", "300", "--queries", "3", "--batch", "150",
                               "--dir", str(tmp_path / "stores")])
    row = memory_scale.run_size(args, corpus, embedder, 300)
    assert row["store"] == "postgresql" and row["memories"] == 300 and row["add_per_s"] > 0
    assert 0 < row["visibility_ms_p50"] <= row["visibility_ms_p95"] < memory_scale.VISIBILITY_TIMEOUT_S * 1000


def test_the_settings_hide_the_store_password(tmp_path: Path):
    args = memory_scale.parse(["--store", "postgresql://bench:secret@db:5432/scale", "--sizes", "10,20"])
    corpus = scale_corpus.load_or_build(tmp_path, "m", CountingEmbed(), count=8)
    recorded = memory_scale.settings(args, corpus)
    assert recorded["store"] == "postgresql://bench:***@db:5432/scale" and recorded["sizes"] == [10, 20]
    assert "secret" not in json.dumps(recorded)
    with pytest.raises(SystemExit):
        memory_scale.parse(["--store", "mysql://x@y/z"])


@pytest.mark.slow
def test_a_small_run_measures_every_figure_and_finds_what_it_wrote(tmp_path: Path, embedder):
    corpus = scale_corpus.load_or_build(tmp_path / "cache", embedder.identity, embedder.embed, count=64)
    args = memory_scale.parse(["--sizes", "600", "--queries", "5", "--batch", "250", "--hnsw-threshold", "300",
                               "--dir", str(tmp_path / "stores")])
    row = memory_scale.run_size(args, corpus, embedder, 600)
    assert row["store"] == "lmdb" and row["memories"] == 600 and row["vector_index"] == "hnsw"
    for figure in ("add_per_s", "first_search_ms", "search_ms_p50", "search_ms_p95", "search_cpu_ms_p50",
                   "search_cpu_ms_p95", "embed_ms_p50", "embed_cpu_ms_p50", "search_after_add_ms_p50", "index_load_s",
                   "index_build_s"):
        assert row[figure] > 0, figure
    with MemoryStore.open(tmp_path / "stores" / "600" / "node-a", embedder=embedder) as store:
        [tenant] = store.db.tenants()
        assert store.usage(tenant)[0] == 600 + memory_scale.AFTER_ADD_SEARCHES
        seen = memory_scale.visibility_ms(store, store, corpus, tenant, 700, 2)
        assert len(seen) == 2 and max(seen) < memory_scale.VISIBILITY_TIMEOUT_S * 1000, \
            "a store sees its own write at once"
    # the kept store is searched again by bench.scale_search, without adding its memories again
    again = scale_search.measure(tmp_path / "stores" / "600", "lmdb", 3, embedder, corpus)
    assert again["memories"] == 600 + memory_scale.AFTER_ADD_SEARCHES + 2 and again["index_load_s"] >= 0
    assert again["search_ms_p50"] > 0 and again["search_after_add_ms_p50"] > 0
