"""The layer copier on CUDA (skipped without it): GPU -> pinned staging -> stored bytes -> GPU bit for bit for every
dtype and layout, every host copy from or into pinned memory (no pageable temporaries), loads that return before
their copies are done, and loads hidden behind compute, measured with CUDA events (through `bench.gpu_check`)."""

from __future__ import annotations

import pytest
import torch

from bench.gpu_check import Settings, run
from kvcache.block_format import decode_into, encode
from kvcache.copy_engine import CudaStreams, LayerCopier, bits
from tests.kvcache.test_copy_engine import DTYPES, LAYERS, NUM_BLOCKS, kv_layers

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def on_gpu(layers: list[torch.Tensor]) -> list[torch.Tensor]:
    """The same logical tensors (same strides pattern) on the GPU."""
    return [layer.cuda() if layer.is_contiguous() else layer.transpose(1, 2).contiguous().cuda().transpose(1, 2)
            for layer in layers]


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_blocks_round_trip_through_pinned_staging_bit_for_bit(dtype, layout):
    streams = CudaStreams(torch.device("cuda"))
    source_layers = on_gpu(kv_layers(dtype, layout, seed=1))
    source = LayerCopier(source_layers, streams, capacity=4)
    assert all(slot.rows.is_pinned() and slot.index.is_pinned() for slot in source.save_ring._free)
    for layer_index in range(LAYERS):
        source.save_layer(layer_index, [3, 7, 0])
    saved = source.finish_saves()
    saved.wait()
    stored = [encode(saved.block(j).numpy(), dtype, "NHD") for j in range(saved.count)]
    saved.release()
    target_layers = [torch.zeros_like(layer) for layer in source_layers]
    target = LayerCopier(target_layers, streams, capacity=4)
    assert target.load([5, 1, 10], lambda i, out: decode_into(stored[i], out, dtype, "NHD") is None) == []
    for layer_index in range(LAYERS):
        target.wait_layer(layer_index)
    target.finish_step()
    torch.cuda.current_stream().synchronize()  # the test reads the result on the host
    for source_layer, target_layer in zip(source_layers, target_layers):
        assert torch.equal(bits(target_layer[[5, 1, 10]]), bits(source_layer[[3, 7, 0]]))
        untouched = [b for b in range(NUM_BLOCKS) if b not in (5, 1, 10)]
        assert not bits(target_layer[untouched]).any()


def test_no_copy_touches_pageable_memory_and_loads_return_before_their_copies():
    settings = Settings(tokens=4096, layers=8)
    layers = [torch.zeros((2 * settings.num_blocks, *settings.layer_block_shape()), dtype=torch.bfloat16,
                          device="cuda") for _ in range(settings.layers)]
    copier = LayerCopier(layers, CudaStreams(torch.device("cuda")), capacity=settings.num_blocks)
    block_ids = list(range(settings.num_blocks))
    copier.load(block_ids, lambda i, out: True)  # warm-up
    copier.finish_step()
    torch.cuda.current_stream().synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA,
                                            torch.profiler.ProfilerActivity.CPU]) as profile:
        copier.load(block_ids, lambda i, out: True)
        pending = not copier.layer_events[-1].query()
        for layer_index in range(settings.layers):
            copier.save_layer(layer_index, block_ids)
        saved = copier.finish_saves()
        copier.finish_step()
        saved.wait()
        saved.release()
    torch.cuda.current_stream().synchronize()
    assert pending  # 128 MiB of copies were queued, not done, when load returned
    memcpys = [event.name for event in profile.events() if "Memcpy" in event.name]
    assert any("HtoD" in name for name in memcpys) and any("DtoH" in name for name in memcpys)
    assert not [name for name in memcpys if "Pageable" in name], memcpys
    assert not [e.name for e in profile.events() if e.name in ("cudaDeviceSynchronize", "cudaStreamSynchronize")]


def test_loads_hide_behind_compute_for_a_4k_token_prompt():
    result = run(Settings(tokens=4096, layers=8, repeats=3))
    assert result["staging_pinned"] and result["host_pinned"]
    assert result["load_ms_per_layer"] < result["compute_ms_per_layer"]
    assert result["overlapped_ms"] < result["serial_ms"]
    assert result["exposed_load_ms"] <= 2 * result["load_ms_per_layer"], result
    assert result["load_fraction_of_h2d"] >= 0.8, result
