"""Model fingerprints follow content, not location."""

from __future__ import annotations

import re
import shutil

from kvcache.fingerprint import adapter_id, model_fingerprint
from sidecar.engine.model_builder import build_model


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


def make_adapter(directory, value: float):
    import numpy as np
    from safetensors.numpy import save_file

    directory.mkdir(parents=True)
    (directory / "adapter_config.json").write_text('{"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]}')
    save_file({"lora_A": np.full((8, 4), value, dtype=np.float32)}, str(directory / "adapter_model.safetensors"))
    return directory


def test_adapter_ids_follow_content_and_fit_the_namespace(tmp_path):
    from kvcache.keys import Namespace

    first = adapter_id("support", make_adapter(tmp_path / "a", 0.5))
    assert first == adapter_id("support", make_adapter(tmp_path / "elsewhere" / "a", 0.5))
    assert re.fullmatch(r"support@[0-9a-f]{64}", first)
    assert adapter_id("support", make_adapter(tmp_path / "retrained", 0.25)) != first  # same shapes and header
    Namespace("f" * 32, "lora=True;quant=none", "bfloat16", "NHD", 16, adapter=first)
