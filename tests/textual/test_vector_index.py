"""The vector index's search replica (a GPU flat index in production): exact answers, filters included.

FAISS GPU indexes ignore ID selectors, so the replica is only ever asked for its top rows; these tests give it a CPU
flat index that counts its searches, which exercises the same code as the GPU one short of the device copy.
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from textual import vector_index
from textual.vector_index import VectorIndex, gpu_count, replica_for


class CountingFlat(faiss.IndexFlatIP):
    searches = 0

    def search(self, x, k, **kwargs):
        assert "params" not in kwargs  # a GPU index would ignore a selector
        CountingFlat.searches += 1
        return super().search(x, k)


def vectors(seed: int, count: int, dim: int = 8) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), count=st.integers(1, 300), k=st.integers(1, 20), data=st.data())
def test_replica_answers_exactly_as_the_cpu_index(seed, count, k, data):
    ids = [f"m{i}" for i in range(count)]
    rows = vectors(seed, count)
    plain = VectorIndex.build(ids, rows, 8)
    replicated = VectorIndex.build(ids, rows, 8, replica=CountingFlat)
    allowed = data.draw(st.none() | st.lists(st.integers(0, count - 1), unique=True))
    query = vectors(seed + 1, 1)[0]
    assert replicated.on_replica and not plain.on_replica
    assert replicated.search(query, k, allowed) == plain.search(query, k, allowed)


def test_selective_filters_fall_back_to_the_cpu_index(monkeypatch):
    monkeypatch.setattr(vector_index, "REPLICA_MAX_K", 16)
    ids = [f"m{i}" for i in range(200)]
    index = VectorIndex.build(ids, vectors(1, 200), 8, replica=CountingFlat)
    query = vectors(2, 1)[0]
    before = CountingFlat.searches
    assert len(index.search(query, 5)) == 5 and CountingFlat.searches == before + 1
    few = [3, 7, 11]  # 2 * 5 * 200 / 3 rows would be needed from the replica: the CPU index answers
    assert {memory_id for memory_id, _ in index.search(query, 5, few)} == {"m3", "m7", "m11"}
    assert CountingFlat.searches == before + 1


def test_a_loaded_index_fills_its_replica(tmp_path):
    ids = [f"m{i}" for i in range(50)]
    VectorIndex.build(ids, vectors(3, 50), 8).save(tmp_path / "t1", version=4)
    loaded = VectorIndex.load(tmp_path / "t1", 4, replica=CountingFlat)
    query = vectors(4, 1)[0]
    assert loaded.on_replica and loaded.search(query, 3) == VectorIndex.build(ids, vectors(3, 50), 8).search(query, 3)


def test_device_choice():
    assert replica_for("cpu") is None
    with pytest.raises(ValueError, match="one of auto, cpu, gpu"):
        replica_for("tpu")
    if gpu_count() == 0:
        assert replica_for("auto") is None
        with pytest.raises(ValueError, match="FAISS sees no GPU"):
            replica_for("gpu")


@pytest.mark.gpu
@pytest.mark.skipif(gpu_count() == 0, reason="FAISS sees no GPU (faiss-gpu-cu12 on a CUDA machine)")
def test_the_gpu_replica_answers_exactly_as_the_cpu_index_with_and_without_filters():
    ids, rows = [f"m{i}" for i in range(5000)], vectors(11, 5000, dim=64)
    on_gpu = VectorIndex.build(ids, rows, 64, replica=replica_for("gpu"))
    plain = VectorIndex.build(ids, rows, 64)
    assert on_gpu.on_replica and replica_for("auto") is not None
    for seed in range(5):
        query = vectors(100 + seed, 1, dim=64)[0]
        allowed = list(range(seed, 5000, 3))
        for k, filt in ((10, None), (50, allowed)):
            got, expected = on_gpu.search(query, k, filt), plain.search(query, k, filt)
            assert [i for i, _ in got] == [i for i, _ in expected]
            assert np.allclose([s for _, s in got], [s for _, s in expected], atol=1e-4)
