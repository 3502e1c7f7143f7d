"""`memsidecar make-model`: seeded, complete, loadable model directories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from sidecar.engine.model_builder import MANIFEST_NAME, ModelBuildError, build_model, directory_digest

MEMSIDECAR = str(Path(sys.executable).parent / "memsidecar")


def make_model(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MEMSIDECAR, "make-model", *args], capture_output=True, text=True, timeout=600)


def test_make_model_writes_the_same_bytes_twice(tmp_path, tiny_model):
    result = make_model("--preset", "tiny", "--out", str(tmp_path / "again"))
    assert result.returncode == 0, result.stderr
    assert directory_digest(tmp_path / "again") == directory_digest(tiny_model)
    assert directory_digest(tiny_model) in " ".join(result.stderr.split()).replace(" ", "")  # printed for the user


def test_another_seed_gives_other_weights_and_the_same_tokenizer(tmp_path, tiny_model):
    other = build_model("tiny", tmp_path / "seed1", seed=1)
    assert (other / "tokenizer.json").read_bytes() == (tiny_model / "tokenizer.json").read_bytes()
    assert (other / "model.safetensors").read_bytes() != (tiny_model / "model.safetensors").read_bytes()


def test_tiny_model_loads_in_transformers_and_generates(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hello"}], add_generation_prompt=True,
                                           tokenize=False)
    assert prompt == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    assert tokenizer.decode(ids[0]) == prompt  # byte-level BPE round-trips exactly
    output = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert output.shape[1] == ids.shape[1] + 4
    assert len(tokenizer) <= model.config.vocab_size
    manifest = json.loads((tiny_model / MANIFEST_NAME).read_text())
    assert manifest["preset"]["name"] == "tiny" and manifest["seed"] == 0


def test_refuses_to_overwrite_without_force(tmp_path, tiny_model):
    result = make_model("--out", str(tiny_model))
    assert result.returncode == 2
    assert "--force" in result.stderr


def test_unknown_preset_names_the_choices(tmp_path):
    with pytest.raises(ModelBuildError, match="tiny, qwen2-0.5b-shape"):
        build_model("gpt-5", tmp_path / "x")


def test_missing_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(ModelBuildError, match="--corpus"):
        build_model("tiny", tmp_path / "x", corpus=tmp_path / "nowhere")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_qwen2_shape_preset_has_the_qwen2_0_5b_transformer_shape(tmp_path):
    out = build_model("qwen2-0.5b-shape", tmp_path / "qwen")
    config = AutoConfig.from_pretrained(out)
    assert (config.model_type, config.hidden_size, config.num_hidden_layers) == ("qwen2", 896, 24)
    assert (config.num_attention_heads, config.num_key_value_heads, config.intermediate_size) == (14, 2, 4864)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.bfloat16
    assert 340e6 < sum(p.numel() for p in model.parameters()) < 380e6
