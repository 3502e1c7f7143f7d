"""`bench.gpu_check`: a clear refusal without CUDA, and its CPU dry run exercising the same code to its JSON line."""

from __future__ import annotations

import json

import pytest
import torch

from bench.gpu_check import main

SMALL = ["--tokens", "128", "--layers", "3", "--kv-heads", "2", "--head-dim", "16", "--hidden", "64", "--ffn", "128",
         "--repeats", "1"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_says_so_and_fails(capsys):
    assert main([]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_the_cpu_dry_run_measures_every_figure_and_records_its_settings(capsys):
    assert main(["--device", "cpu", "--json", *SMALL]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "dry run" in lines[0]
    result = json.loads(lines[-1])
    assert result["bench"] == "gpu_check"
    assert result["settings"] == {"device": "cpu", "tokens": 128, "layers": 3, "kv_heads": 2, "head_dim": 16,
                                  "block_size": 16, "hidden": 64, "ffn": 128, "dtype": "bfloat16", "repeats": 1}
    assert result["blocks_loaded"] == 8 and result["staging_pinned"] is False
    for figure in ("h2d_gbps", "d2h_gbps", "copier_load_gbps", "copier_save_gbps", "host_decode_gbps",
                   "load_ms_per_layer", "compute_ms_per_layer", "compute_only_ms", "overlapped_ms"):
        assert result[figure] > 0, figure
    assert 0 <= result["hidden_fraction"] <= 1 and isinstance(result["meets_load_bandwidth"], bool)
