"""The connector worker's staged path (the GPU's) run on the CPU, without an engine: blocks saved layer by layer
through the writer thread into a real store, then loaded into other blocks, bit for bit; misses are reported.

A KV cache whose block slabs are not contiguous cannot take the CPU's one-copy decode, so the worker uses the
`LayerCopier` there exactly as it does on a GPU (with host streams).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kvcache.connector import _Worker
from kvcache.copy_engine import bits
from kvcache.store import StoreConfig, TieredStore
from kvcache.transfer_plan import BlockTransfer
from kvcache.worker_stats import StatsPublisher

NUM_BLOCKS = 16


@pytest.fixture
def worker(tmp_path):
    store = TieredStore.open(StoreConfig(tmp_path / "kv", 2**24, 2**26), with_ram=True)
    opened = _Worker(store, "NHD", StatsPublisher(tmp_path / "stats.json"), step_limits=(64, 2, 4))
    yield opened
    opened.close()
    store.close()


def strided_caches(seed: int) -> dict[str, torch.Tensor]:
    """Two layers of `[NUM_BLOCKS, block_size, heads, head_dim]` bfloat16, heads-major in memory; a third layer
    name shares the first layer's cache."""
    generator = torch.Generator().manual_seed(seed)
    layers = [torch.randn((NUM_BLOCKS, 2, 4, 8), generator=generator).to(torch.bfloat16).transpose(1, 2)
              for _ in range(2)]
    return {"layers.0.attn": layers[0], "layers.1.attn": layers[1], "layers.2.attn": layers[0]}


def test_saved_blocks_load_bit_for_bit_through_the_store(worker):
    caches = strided_caches(seed=3)
    reference = {name: tensor.clone() for name, tensor in caches.items()}
    worker.register(caches, NUM_BLOCKS)
    assert worker._slots is None and worker._copier is not None  # the staged path
    saves = tuple(BlockTransfer(f"key-{b}".encode(), b) for b in (2, 5, 9))
    for name in caches:  # as each attention layer ends
        worker.save_layer(name, saves)
    worker.step_finished()
    worker.save(saves)
    worker._queue.join()
    for tensor in caches.values():
        tensor.zero_()
    loads = (BlockTransfer(b"key-9", 0), BlockTransfer(b"missing", 1), BlockTransfer(b"key-2", 7))
    worker.load(loads)
    for name in caches:
        worker.wait_layer(name)
    worker.step_finished()
    assert worker.take_load_errors() == {1}
    for name, tensor in caches.items():
        for source, target in ((9, 0), (2, 7)):
            assert np.array_equal(bits(tensor[target]).numpy(), bits(reference[name][source]).numpy())
        assert not bits(tensor[[b for b in range(NUM_BLOCKS) if b not in (0, 7)]]).numpy().any()
    assert worker._stats()["load_path"] == "staged" and worker.loads.blocks == 2


def test_a_step_whose_attention_saved_no_layer_still_saves_every_layer(worker):
    caches = strided_caches(seed=4)
    worker.register(caches, NUM_BLOCKS)
    saves = (BlockTransfer(b"key-a", 3),)
    worker.save(saves)
    worker._queue.join()
    out = np.zeros((2, 4, 2, 8), dtype=np.int16)
    assert worker.store.get_into(b"key-a", out, "bfloat16", "NHD")
    assert np.array_equal(out[1], bits(caches["layers.1.attn"][3]).contiguous().numpy())
