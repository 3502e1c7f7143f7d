"""Model fingerprints follow content, not location."""

from __future__ import annotations

import shutil

from kvcache.fingerprint import model_fingerprint
from sidecar.model_builder import build_model


def test_same_content_anywhere_same_fingerprint_other_weights_another(tmp_path, tiny_model):
    copy = tmp_path / "elsewhere"
    shutil.copytree(tiny_model, copy)
    assert model_fingerprint(copy) == model_fingerprint(tiny_model)
    other_seed = build_model("tiny", tmp_path / "seed1", seed=1)  # same shapes and headers, other values
    assert model_fingerprint(other_seed) != model_fingerprint(tiny_model)


def test_the_cache_is_used_and_follows_file_changes(tmp_path, tiny_model):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    cache = tmp_path / "fingerprints.json"
    first = model_fingerprint(model, cache)
    assert cache.is_file() and model_fingerprint(model, cache) == first
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert model_fingerprint(model, cache) != first
