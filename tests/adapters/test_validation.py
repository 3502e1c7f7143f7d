"""Adapters are accepted only as plain safetensors LoRA that fits the base model; each refusal names its field."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from adapters.base_model import BaseModelShape
from adapters.errors import InvalidAdapterError
from adapters.names import NAME_PATTERN, check_name, check_user, parse_reference
from adapters.validation import adapter_digest, validate_adapter
from kvcache.fingerprint import adapter_id
from tests.adapters.conftest import MAX_RANK

Q0 = "base_model.model.model.layers.0.self_attn.q_proj"


def refusal(directory: Path, base_shape: BaseModelShape) -> InvalidAdapterError:
    with pytest.raises(InvalidAdapterError) as caught:
        validate_adapter(directory, base_shape, MAX_RANK)
    return caught.value


def edit_config(directory: Path, **changes) -> None:
    path = directory / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def edit_tensors(directory: Path, edit) -> None:
    path = directory / "adapter_model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path)


def test_the_base_shape_lists_every_linear_layer(base_shape):
    assert base_shape.num_layers == 2
    assert base_shape.leaf_names == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert base_shape.linear["model.layers.1.self_attn.k_proj"] == (64, 128)
    assert base_shape.linear["model.layers.0.mlp.down_proj"] == (128, 512)
    assert len(base_shape.linear) == 14 and not any("embed" in m or "lm_head" in m for m in base_shape.linear)


@pytest.mark.parametrize("kind, rank, alpha, targets", [
    ("qv", 8, 16, ("q_proj", "v_proj")),
    ("mlp", 4, 8, ("down_proj", "gate_proj", "up_proj")),
    ("regex", 2, 4, ("k_proj", "o_proj")),
])
def test_real_peft_adapters_are_described(peft_adapters, base_shape, kind, rank, alpha, targets):
    info = validate_adapter(peft_adapters[kind], base_shape, MAX_RANK)
    assert (info.rank, info.alpha, info.target_modules) == (rank, alpha, targets)
    directory = peft_adapters[kind]
    assert info.bytes == sum((directory / f).stat().st_size
                             for f in ("adapter_config.json", "adapter_model.safetensors"))


def test_the_digest_is_the_kv_cache_adapter_id(peft_adapters, adapter_copy):
    for directory in peft_adapters.values():
        assert f"x@{adapter_digest(directory)}" == adapter_id("x", directory)
    reformatted = adapter_copy()
    config = json.loads((reformatted / "adapter_config.json").read_text())
    (reformatted / "adapter_config.json").write_text(json.dumps(config, indent=7))  # canonical JSON: same id
    assert adapter_digest(reformatted) == adapter_digest(peft_adapters["qv"])
    edit_tensors(reformatted, lambda t: t.update({f"{Q0}.lora_A.weight": t[f"{Q0}.lora_A.weight"] * 2}))
    assert adapter_digest(reformatted) != adapter_digest(peft_adapters["qv"])


@pytest.mark.parametrize("extra, message", [
    ("adapter_model.bin", "pickle weights are not accepted; save with safetensors"),
    ("optimizer.pt", "pickle weights are not accepted; save with safetensors"),
    ("state.PKL", "pickle weights are not accepted; save with safetensors"),
    ("notes.txt", "unexpected file"),
])
def test_extra_files_are_refused(adapter_copy, base_shape, extra, message):
    directory = adapter_copy()
    (directory / extra).write_bytes(b"\x80\x04")
    error = refusal(directory, base_shape)
    assert error.field == extra and message in error.message and error.status == 400


def test_pickle_only_adapters_are_told_to_use_safetensors(adapter_copy, base_shape):
    directory = adapter_copy()
    (directory / "adapter_model.safetensors").rename(directory / "adapter_model.bin")
    assert "save with safetensors" in refusal(directory, base_shape).message


@pytest.mark.parametrize("missing", ["adapter_config.json", "adapter_model.safetensors"])
def test_missing_files_are_named(adapter_copy, base_shape, missing):
    directory = adapter_copy()
    (directory / missing).unlink()
    error = refusal(directory, base_shape)
    assert error.field == missing and error.message.startswith("missing")


def test_the_readme_is_optional(adapter_copy, base_shape):
    directory = adapter_copy()
    (directory / "README.md").unlink()
    assert validate_adapter(directory, base_shape, MAX_RANK).rank == 8


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\xff"])
def test_a_config_that_is_not_a_json_object_is_refused(adapter_copy, base_shape, text):
    directory = adapter_copy()
    (directory / "adapter_config.json").write_bytes(text.encode("latin-1"))
    error = refusal(directory, base_shape)
    assert error.field == "adapter_config.json" and error.status == 400


@pytest.mark.parametrize("changes, field, status", [
    ({"peft_type": "IA3"}, "peft_type", 422),
    ({"r": 0}, "r", 422),
    ({"r": "8"}, "r", 422),
    ({"lora_alpha": 0}, "lora_alpha", 422),
    ({"lora_alpha": True}, "lora_alpha", 422),
    ({"target_modules": ["q_proj", "wq"]}, "target_modules", 422),
    ({"target_modules": []}, "target_modules", 422),
    ({"target_modules": None}, "target_modules", 422),
    ({"target_modules": r".*\.nothing"}, "target_modules", 422),
    ({"target_modules": "(unclosed"}, "target_modules", 422),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save", 422),
    ({"use_dora": True}, "use_dora", 422),
    ({"bias": "all"}, "bias", 422),
    ({"rank_pattern": {"q_proj": 4}}, "rank_pattern", 422),
    ({"fan_in_fan_out": True}, "fan_in_fan_out", 422),
])
def test_bad_config_fields_are_named(adapter_copy, base_shape, changes, field, status):
    directory = adapter_copy()
    edit_config(directory, **changes)
    error = refusal(directory, base_shape)
    assert (error.field, error.status) == (field, status)


def test_unknown_target_modules_list_the_known_ones(adapter_copy, base_shape):
    directory = adapter_copy()
    edit_config(directory, target_modules=["wq"])
    assert "'wq' is not a linear layer" in refusal(directory, base_shape).message
    assert "down_proj, gate_proj, k_proj" in refusal(directory, base_shape).message


def test_a_rank_over_the_engine_maximum_is_refused(peft_adapters, base_shape):
    error = refusal(peft_adapters["rank16"], base_shape)
    assert error.field == "r" and error.status == 422 and "1 to 8" in error.message


def test_a_config_rank_that_disagrees_with_the_weights_is_refused(adapter_copy, base_shape):
    directory = adapter_copy()
    edit_config(directory, r=4)
    error = refusal(directory, base_shape)
    assert error.field.endswith("lora_A.weight") and "expected [4, 128]" in error.message


@pytest.mark.parametrize("edit, field, words", [
    (lambda t: t.update({f"{Q0}.lora_B.weight": torch.zeros(64, 8)}), f"{Q0}.lora_B.weight", "expected [128, 8]"),
    (lambda t: t.update({f"{Q0}.lora_A.weight": torch.zeros(8, 64)}), f"{Q0}.lora_A.weight", "expected [8, 128]"),
    (lambda t: t.pop(f"{Q0}.lora_B.weight"), f"{Q0[len('base_model.model.'):]}.lora_B", "missing"),
    (lambda t: t.update({"base_model.model.lm_head.weight": torch.zeros(4, 4)}), "base_model.model.lm_head.weight",
     "not a lora_A or lora_B"),
    (lambda t: t.update({"base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector": torch.zeros(4)}),
     f"{Q0}.lora_magnitude_vector", "not a lora_A or lora_B"),
    (lambda t: t.update({"base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight": torch.zeros(8, 128)}),
     "base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight", "not a lora_A or lora_B"),
    (lambda t: t.update({f"{Q0}.lora_A.weight": torch.zeros(8, 128, dtype=torch.int32)}), f"{Q0}.lora_A.weight",
     "dtype I32"),
    (lambda t: t.update({f"{Q0}.lora_A.weight": torch.full((8, 128), float("nan"))}), f"{Q0}.lora_A.weight", "NaN"),
    (lambda t: t.update({f"{Q0}.lora_B.weight": torch.full((128, 8), float("-inf"), dtype=torch.bfloat16)}),
     f"{Q0}.lora_B.weight", "infinite"),
    (lambda t: t.clear(), "adapter_model.safetensors", "no LoRA weights"),
])
def test_bad_tensors_are_named(adapter_copy, base_shape, edit, field, words):
    directory = adapter_copy()
    edit_tensors(directory, edit)
    error = refusal(directory, base_shape)
    assert error.field == field and words in error.message and error.status == 422


def test_weights_of_modules_outside_target_modules_are_refused(adapter_copy, base_shape):
    directory = adapter_copy()
    edit_config(directory, target_modules=["q_proj"])
    error = refusal(directory, base_shape)
    assert "v_proj.lora_" in error.field and "not among target_modules" in error.message


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_are_accepted(adapter_copy, base_shape, dtype):
    directory = adapter_copy()
    edit_tensors(directory, lambda t: t.update({k: v.to(dtype) for k, v in t.items()}))
    assert validate_adapter(directory, base_shape, MAX_RANK).rank == 8


@pytest.mark.parametrize("damage", [b"", b"\x00" * 7, (1 << 40).to_bytes(8, "little") + b"{}",
                                    (2).to_bytes(8, "little") + b"[]", (4).to_bytes(8, "little") + b'{"a"'])
def test_a_malformed_safetensors_header_is_refused(adapter_copy, base_shape, damage):
    directory = adapter_copy()
    (directory / "adapter_model.safetensors").write_bytes(damage)
    error = refusal(directory, base_shape)
    assert error.field == "adapter_model.safetensors" and error.status == 400


def test_a_tensor_range_beyond_the_file_is_refused(adapter_copy, base_shape):
    directory = adapter_copy()
    path = directory / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:-4])
    assert "byte range" in refusal(directory, base_shape).message


@given(st.text(max_size=80))
def test_names_are_accepted_exactly_when_they_match_the_rule(name):
    valid = NAME_PATTERN.fullmatch(name) is not None and ".." not in name
    if valid:
        assert check_name(name) == name and parse_reference(name) == (name, None)
        assert parse_reference(f"{name}@v12") == (name, 12)
    else:
        with pytest.raises(InvalidAdapterError) as caught:
            check_name(name)
        assert caught.value.field == "name" and caught.value.status == 400


@pytest.mark.parametrize("name", ["a\n", "-a", ".a", "a..b", "a/b", "a@b", "x" * 65, "", "ä"])
def test_names_that_could_mislead_are_refused(name):
    with pytest.raises(InvalidAdapterError):
        check_name(name)


def test_user_ids_allow_at_and_128_characters():
    assert check_user("alice@example.com") == "alice@example.com"
    assert check_user("u" * 128)
    for bad in ("u" * 129, "@alice", "a b", "a\n"):
        with pytest.raises(InvalidAdapterError) as caught:
            check_user(bad)
        assert caught.value.field == "user"


@pytest.mark.parametrize("name", ["jobs", "Distill"])
def test_route_words_cannot_name_an_adapter(name):
    with pytest.raises(InvalidAdapterError, match="reserved"):
        check_name(name)


@pytest.mark.parametrize("change", [lambda s, e: [float(s), float(e)], lambda s, e: [s - 2 ** 40, e - 2 ** 40],
                                    lambda s, e: [s + 2 ** 64, e + 2 ** 64], lambda s, e: [s, e, e]])
def test_hostile_data_offsets_are_a_400_not_a_type_error(adapter_copy, base_shape, change):
    directory = adapter_copy()
    path = directory / "adapter_model.safetensors"
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + length])
    first = next(key for key in header if key != "__metadata__")
    header[first]["data_offsets"] = change(*header[first]["data_offsets"])
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + length:])
    error = refusal(directory, base_shape)
    assert error.field == "adapter_model.safetensors" and error.status == 400 and first in error.message


@pytest.mark.parametrize("pattern", ["(.*.*)*Z", "(a|a)*(a|a)*(a|a)*(a|a)*X", "(x+x+)+y"])
def test_a_backtracking_target_modules_regex_is_decided_in_linear_time(adapter_copy, base_shape, pattern):
    directory = adapter_copy()
    edit_config(directory, target_modules=pattern)
    started = time.monotonic()
    error = refusal(directory, base_shape)
    assert (error.field, error.status) == ("target_modules", 422) and "matches no linear layer" in error.message
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("targets, words", [
    ("q_proj|" * 100, "too long: at most 512"),
    (r"(?!.*vision).*\.q_proj", "lookarounds and backreferences"),
    (r"(q)\1", "lookarounds and backreferences"),
    (["q_proj"] * 300, "at most 256 module names"),
    ({"q_proj": True}, "non-empty list"),
])
def test_target_modules_outside_peft_forms_or_bounds_are_named(adapter_copy, base_shape, targets, words):
    directory = adapter_copy()
    edit_config(directory, target_modules=targets)
    error = refusal(directory, base_shape)
    assert (error.field, error.status) == ("target_modules", 422) and words in error.message


@pytest.mark.parametrize("targets", [r".*\.(q_proj|v_proj)", "all-linear", r"model\.layers\.\d+\.self_attn\.[qv]_proj"])
def test_peft_pattern_forms_select_the_targeted_layers(adapter_copy, base_shape, targets):
    directory = adapter_copy()
    edit_config(directory, target_modules=targets)
    assert set(validate_adapter(directory, base_shape, MAX_RANK).target_modules) == {"q_proj", "v_proj"}


def test_a_config_nested_too_deeply_is_a_400(adapter_copy, base_shape):
    directory = adapter_copy()
    (directory / "adapter_config.json").write_text("[" * 100_000 + "]" * 100_000)
    error = refusal(directory, base_shape)
    assert error.field == "adapter_config.json" and error.status == 400
