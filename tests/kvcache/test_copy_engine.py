"""The layer copier on the CPU: bit-exact round trips for every dtype and layout, staging allocated once, and the
stream/event protocol (who waits for what, in which order) recorded through a fake stream API."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kvcache.block_format import decode_into, encode
from kvcache.copy_engine import HostStreams, LayerCopier, StagingRing, bits, staging_capacity

DTYPES = ("float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2", "uint8")
NUM_BLOCKS, LAYERS = 12, 3


def kv_layers(dtype: str, layout: str, seed: int = 0) -> list[torch.Tensor]:
    """`LAYERS` paged caches `[NUM_BLOCKS, heads, block_size, 2 * head_dim]` of random bits; "strided": each a
    view whose block slabs are not contiguous (heads and block size swapped in memory)."""
    generator = torch.Generator().manual_seed(seed)
    layers = []
    for _ in range(LAYERS):
        shape = (NUM_BLOCKS, 4, 2, 6) if layout == "contiguous" else (NUM_BLOCKS, 2, 4, 6)
        width = torch.empty(0, dtype=getattr(torch, dtype)).element_size()
        raw = torch.randint(0, 2 ** min(8 * width, 62), shape, dtype=torch.int64, generator=generator)
        tensor = raw.to({1: torch.uint8, 2: torch.int16, 4: torch.int32}[width]).view(getattr(torch, dtype))
        layers.append(tensor if layout == "contiguous" else tensor.transpose(1, 2))
    return layers


def numpy_bits(tensor: torch.Tensor) -> np.ndarray:
    return bits(tensor).numpy()


def save_blocks(copier: LayerCopier, block_ids: list[int], dtype: str) -> list[bytes]:
    """One step's saves, layer by layer as attention finishes, encoded as the writer thread does."""
    for layer_index in range(LAYERS):
        copier.save_layer(layer_index, block_ids)
    saved = copier.finish_saves()
    saved.wait()
    encoded = [encode(saved.block(j).numpy(), dtype, "NHD") for j in range(saved.count)]
    saved.release()
    return encoded


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_blocks_round_trip_bit_for_bit(dtype, layout):
    source = LayerCopier(kv_layers(dtype, layout, seed=1), HostStreams(), capacity=4)
    stored = save_blocks(source, [3, 7, 0], dtype)
    target_layers = [torch.zeros_like(layer) for layer in kv_layers(dtype, layout)]
    target = LayerCopier(target_layers, HostStreams(), capacity=4)
    into = [5, 1, 10]
    missed = target.load(into, lambda i, out: decode_into(stored[i], out, dtype, "NHD") is None)
    target.finish_step()
    assert missed == []
    for source_layer, target_layer in zip(kv_layers(dtype, layout, seed=1), target_layers):
        for saved_id, loaded_id in zip([3, 7, 0], into):
            assert np.array_equal(numpy_bits(target_layer[loaded_id]), numpy_bits(source_layer[saved_id]))
        untouched = [b for b in range(NUM_BLOCKS) if b not in into]
        assert not numpy_bits(target_layer[untouched]).any()


def test_a_load_larger_than_a_slot_is_split_and_misses_write_nothing():
    source_layers = kv_layers("bfloat16", "contiguous", seed=2)
    stored = save_blocks(LayerCopier(source_layers, HostStreams(), capacity=12), list(range(10)), "bfloat16")
    target_layers = [torch.zeros_like(layer) for layer in source_layers]
    target = LayerCopier(target_layers, HostStreams(), capacity=3)
    missing = {2, 6}

    def decode(i, out):
        return i not in missing and decode_into(stored[i], out, "bfloat16", "NHD") is None

    assert target.load(list(range(10)), decode) == [2, 6]
    for layer, source in zip(target_layers, source_layers):
        for block in range(10):
            expected = np.zeros_like(numpy_bits(source[block])) if block in missing else numpy_bits(source[block])
            assert np.array_equal(numpy_bits(layer[block]), expected)


def test_staging_is_allocated_once_and_reused():
    copier = LayerCopier(kv_layers("float16", "contiguous"), HostStreams(), capacity=4)
    addresses = {slot.rows.data_ptr() for slot in copier.load_ring._free} | \
        {slot.rows.data_ptr() for slot in copier.save_ring._free}
    for step in range(5):
        stored = save_blocks(copier, [step, step + 1], "float16")
        copier.load([step + 2, step + 3], lambda i, out: decode_into(stored[i], out, "float16", "NHD") is None)
        copier.finish_step()
    after = {slot.rows.data_ptr() for slot in copier.load_ring._free} | \
        {slot.rows.data_ptr() for slot in copier.save_ring._free}
    assert after == addresses and len(addresses) == copier.load_ring.num_slots + copier.save_ring.num_slots


def test_saves_are_dropped_not_waited_for_when_the_writer_holds_every_slot():
    copier = LayerCopier(kv_layers("float32", "contiguous"), HostStreams(), capacity=2, save_slots=2)
    held = []
    for _ in range(2):
        copier.save_layer(0, [1, 2, 3])  # one more block than a slot holds: dropped
        held.append(copier.finish_saves())
    assert [saved.count for saved in held] == [2, 2] and copier.dropped_saves == 2
    copier.save_layer(0, [4, 5])
    assert copier.finish_saves() is None and copier.dropped_saves == 4
    held[0].release()
    copier.save_layer(0, [6])
    assert copier.finish_saves().count == 1


def test_the_ring_hands_out_each_slot_once():
    ring = StagingRing.allocate(2, 1, 1, (2,), torch.int16, False, HostStreams())
    first, second = ring.acquire(), ring.acquire()
    assert first is not second and ring.acquire() is None
    ring.release(first)
    assert ring.acquire() is first


def test_staging_capacity_covers_a_step_within_the_byte_budget():
    assert staging_capacity(8192, 4, 16, block_bytes=2**19) == 512 + 8
    assert staging_capacity(8192, 4, 16, block_bytes=2**21) == 256  # 512 MiB / 2 MiB
    assert staging_capacity(10, 1, 16, block_bytes=2**40) == 1


class _Event:
    def __init__(self, log: list, name: str) -> None:
        self.log, self.name = log, name

    def record(self, stream) -> None:
        self.log.append(("record", self.name, stream))

    def synchronize(self) -> None:
        self.log.append(("synchronize", self.name))


class RecordingStreams(HostStreams):
    """Host copies, with every record / wait / synchronize written to `log` by event name."""

    def __init__(self) -> None:
        self.log: list[tuple] = []
        self._streams = iter(("load", "save"))
        self._events = 0

    def current(self):
        return "compute"

    def new_stream(self):
        return next(self._streams)

    def new_event(self):
        self._events += 1
        return _Event(self.log, f"e{self._events}")

    def wait(self, stream, event) -> None:
        self.log.append(("wait", stream, event.name))


def names(copier: LayerCopier) -> dict[str, str]:
    """Event name -> role."""
    roles = {event.name: f"layer{i}" for i, event in enumerate(copier.layer_events)}
    roles |= {event.name: f"computed{i}" for i, event in enumerate(copier._computed)}
    roles[copier._begun.name] = "begun"
    for ring, kind in ((copier.load_ring, "load"), (copier.save_ring, "save")):
        roles |= {slot.done.name: f"{kind}_slot{i}" for i, slot in enumerate(ring._free)}
    return roles


def readable(streams: RecordingStreams, roles: dict[str, str]) -> list[tuple]:
    return [tuple(roles.get(part, part) for part in entry) for entry in streams.log]


def test_loads_run_a_layer_ahead_of_attention_on_the_load_stream():
    streams = RecordingStreams()
    copier = LayerCopier(kv_layers("float16", "contiguous"), streams, capacity=4)
    roles = names(copier)
    streams.log.clear()
    copier.load([1, 2], lambda i, out: True)
    assert readable(streams, roles) == [
        ("record", "begun", "compute"), ("wait", "load", "begun"),  # earlier steps' use of the blocks first
        ("synchronize", "load_slot0"),  # reusing a slot: its own earlier copies only
        ("record", "layer0", "load"), ("record", "layer1", "load"), ("record", "layer2", "load"),
        ("record", "load_slot0", "load"),
        ("wait", "compute", "layer0"),  # layer 0's new KV is written before its attention waits
    ]
    streams.log.clear()
    for layer in range(LAYERS):
        copier.wait_layer(layer)
    copier.finish_step()
    assert readable(streams, roles) == [("wait", "compute", "layer1"), ("wait", "compute", "layer2")]


def test_a_step_whose_layers_never_waited_waits_for_the_last_load_at_its_end():
    streams = RecordingStreams()
    copier = LayerCopier(kv_layers("float16", "contiguous"), streams, capacity=4)
    roles = names(copier)
    copier.load([1], lambda i, out: True)
    streams.log.clear()
    copier.finish_step()
    copier.wait_layer(0)  # next step, nothing loaded: no wait
    assert readable(streams, roles) == [("wait", "compute", "layer2")]


def test_saves_copy_each_layer_after_the_compute_stream_and_fence_the_slot():
    streams = RecordingStreams()
    copier = LayerCopier(kv_layers("float16", "contiguous"), streams, capacity=4)
    roles = names(copier)
    streams.log.clear()
    copier.save_layer(0, [1, 2])
    copier.save_layer(0, [1, 2])  # a second layer sharing the cache: copied once
    copier.save_layer(2, [1, 2])
    saved = copier.finish_saves()
    assert readable(streams, roles) == [
        ("synchronize", "save_slot0"),
        ("record", "computed0", "compute"), ("wait", "save", "computed0"),
        ("record", "computed2", "compute"), ("wait", "save", "computed2"),
        ("record", "computed1", "compute"), ("wait", "save", "computed1"),  # never saved by attention: at the end
        ("record", "save_slot0", "save"), ("wait", "compute", "save_slot0"),
    ]
    streams.log.clear()
    saved.wait()
    assert readable(streams, roles) == [("synchronize", "save_slot0")]
    assert copier.finish_saves() is None  # the next step saved nothing
