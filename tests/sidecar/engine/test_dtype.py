"""What dtype `auto` runs the engine in: float32 for a bf16 model on a CPU-only machine without bf16 instructions."""

from __future__ import annotations

import json

import pytest

from sidecar.engine.dtype import cpu_flags, explicit_dtype, model_dtype, resolve_dtype

AVX2 = frozenset({"avx", "avx2", "fma"})
SAPPHIRE_RAPIDS = AVX2 | {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}


@pytest.mark.parametrize("requested, declared, cuda, flags, expected", [
    ("auto", "bfloat16", False, AVX2, "float32"),  # oneDNN refuses bf16 matmuls: ~10x slower prefill
    ("auto", "float32", False, AVX2, "float32"),  # vLLM would downcast it to bf16 on a CPU
    ("auto", None, False, AVX2, "float32"),  # no declared dtype: float32, likewise
    ("auto", "float16", False, AVX2, "auto"),  # not bf16: vLLM's rule
    ("auto", "bfloat16", False, SAPPHIRE_RAPIDS, "auto"),
    ("auto", "float32", False, frozenset({"avx512_bf16"}), "auto"),
    ("auto", "bfloat16", False, frozenset({"asimd", "bf16"}), "auto"),  # Arm's flag
    ("auto", "bfloat16", True, AVX2, "auto"),  # the GPU runs it
    ("auto", "float32", True, AVX2, "auto"),
    ("bfloat16", "bfloat16", False, AVX2, "bfloat16"),  # asked for explicitly: kept
    ("float32", "bfloat16", True, SAPPHIRE_RAPIDS, "float32"),
])
def test_auto_avoids_bf16_only_where_the_cpu_cannot_run_it(requested, declared, cuda, flags, expected):
    assert resolve_dtype(requested, declared, cuda, flags) == expected


def test_benchmarks_pass_an_explicit_dtype(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"dtype": "bfloat16"}))
    assert explicit_dtype("float16", tmp_path) == "float16"
    assert explicit_dtype("auto", tmp_path) in ("bfloat16", "float32")  # float32 only on a CPU without bf16


def test_cpu_flags_are_read_from_the_first_processor():
    cpuinfo = "processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\nflags\t: fpu\n"
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags("processor\t: 0\nFeatures\t: fp asimd bf16\n") == {"fp", "asimd", "bf16"}
    assert cpu_flags("") == frozenset()


def test_the_models_dtype_comes_from_its_config(tmp_path):
    assert model_dtype(tmp_path) is None  # no config.json
    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "bfloat16"}))
    assert model_dtype(tmp_path) == "bfloat16"
    (tmp_path / "config.json").write_text(json.dumps({"dtype": "float16", "torch_dtype": "bfloat16"}))
    assert model_dtype(tmp_path) == "float16"
    (tmp_path / "config.json").write_text("{not json")
    assert model_dtype(tmp_path) is None
