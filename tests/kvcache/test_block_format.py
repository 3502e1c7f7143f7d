"""The stored-block format: pinned header bytes, one-copy decode into a preallocated array, corruption detected."""

from __future__ import annotations

import numpy as np
import pytest

from kvcache.block_format import CorruptBlock, decode_into, encode, header_size


def block() -> np.ndarray:
    return np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)  # stands for bfloat16 data


def test_golden_header():
    data = encode(block(), "bfloat16", "LBHNC")
    assert len(data) == header_size(3) + 48
    assert data[:header_size(3)].hex() == (
        "4d534b5601030300" "4c42484e43000000" "3000000000000000" "5637d3bfc109f899" "020000000300000004000000"
    )


def test_round_trip_into_a_preallocated_array():
    out = np.zeros((2, 3, 4), dtype=np.int16)
    decode_into(encode(block(), "bfloat16", "LBHNC"), out, "bfloat16", "LBHNC")
    assert np.array_equal(out, block())


@pytest.mark.parametrize("damage", [
    lambda d: d[:-1],  # truncated
    lambda d: d[:40] + bytes([d[40] ^ 1]) + d[41:],  # a flipped payload bit
    lambda d: b"XXXX" + d[4:],  # not our magic
    lambda d: d[:5] + b"\x01" + d[6:],  # another dtype
])
def test_damaged_blocks_are_refused(damage):
    out = np.zeros((2, 3, 4), dtype=np.int16)
    with pytest.raises(CorruptBlock):
        decode_into(damage(encode(block(), "bfloat16", "LBHNC")), out, "bfloat16", "LBHNC")


def test_a_block_of_another_shape_or_layout_is_refused():
    data = encode(block(), "bfloat16", "LBHNC")
    with pytest.raises(CorruptBlock):
        decode_into(data, np.zeros((3, 2, 4), dtype=np.int16), "bfloat16", "LBHNC")
    with pytest.raises(CorruptBlock):
        decode_into(data, np.zeros((2, 3, 4), dtype=np.int16), "bfloat16", "LBNHC")


def test_bfloat16_round_trips_through_a_uint16_view():
    import torch

    source = torch.randn(2, 3, 4, dtype=torch.bfloat16)
    data = encode(source.view(torch.uint16).numpy(), "bfloat16", "NHD")
    target = torch.empty(2, 3, 4, dtype=torch.bfloat16)
    decode_into(data, target.view(torch.uint16).numpy(), "bfloat16", "NHD")
    assert torch.equal(source, target)


def test_a_failed_decode_leaves_the_output_untouched():
    data = bytearray(encode(block(), "bfloat16", "LBHNC"))
    data[-1] ^= 1
    out = np.full((2, 3, 4), 7, dtype=np.int16)
    with pytest.raises(CorruptBlock):
        decode_into(bytes(data), out, "bfloat16", "LBHNC")
    assert (out == 7).all()


def test_encoding_names_the_allowed_dtypes_and_checks_element_width():
    with pytest.raises(ValueError, match="allowed: float32, float16, bfloat16"):
        encode(block(), "bf16", "LBHNC")
    with pytest.raises(ValueError, match="float32 block needs 4-byte elements"):
        encode(block(), "float32", "LBHNC")


def test_a_block_scatters_row_by_row_into_separate_arrays():
    """The paged-KV-cache case: each layer's slot of the block is its own slab, filled in one copy."""
    from kvcache.block_format import Scatter

    layers = [np.zeros((5, 3, 4), dtype=np.int16) for _ in range(2)]  # 2 layers of 5 slots
    target = Scatter.into((2, 3, 4), [layers[0][3], layers[1][3]])
    decode_into(encode(block(), "bfloat16", "LBHNC"), target, "bfloat16", "LBHNC")
    assert np.array_equal(layers[0][3], block()[0]) and np.array_equal(layers[1][3], block()[1])
    assert not layers[0][[0, 1, 2, 4]].any() and not layers[1][[0, 1, 2, 4]].any()  # other slots untouched


def test_a_slot_map_scatters_a_block_into_one_slot_of_every_array():
    from kvcache.block_format import SlotMap

    layers = [np.zeros((5, 3, 4), dtype=np.int16) for _ in range(2)]
    slots = SlotMap(layers)
    decode_into(encode(block(), "bfloat16", "LBHNC"), slots.scatter((2, 3, 4), 4), "bfloat16", "LBHNC")
    assert np.array_equal(layers[0][4], block()[0]) and np.array_equal(layers[1][4], block()[1])
    assert not layers[0][:4].any() and not layers[1][:4].any()
    with pytest.raises(IndexError, match="outside 0..4"):
        slots.scatter((2, 3, 4), 5)
    with pytest.raises(CorruptBlock):  # a block of another shape never reaches the slots
        decode_into(encode(block()[:, :2], "bfloat16", "LBHNC"), slots.scatter((2, 3, 4), 0), "bfloat16", "LBHNC")
    with pytest.raises(ValueError, match="share shape"):
        SlotMap([layers[0], np.zeros((5, 3, 5), dtype=np.int16)])


def test_a_corrupt_block_scatters_nothing():
    from kvcache.block_format import Scatter

    data = bytearray(encode(block(), "bfloat16", "LBHNC"))
    data[-1] ^= 1
    parts = [np.full((3, 4), 7, dtype=np.int16) for _ in range(2)]
    with pytest.raises(CorruptBlock):
        decode_into(bytes(data), Scatter.into((2, 3, 4), parts), "bfloat16", "LBHNC")
    assert all((part == 7).all() for part in parts)
    with pytest.raises(ValueError, match="rows"):
        Scatter.into((3, 3, 4), parts)
    with pytest.raises(ValueError, match="C-contiguous"):
        Scatter.into((2, 3, 2), [part[:, ::2] for part in parts])
