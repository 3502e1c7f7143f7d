"""The one format of a stored KV block, in RAM, on disk and on the wire.

    offset  size      field
    0       4         magic b"MSKV"
    4       1         version (1)
    5       1         dtype code (DTYPE_CODES)
    6       1         ndim
    7       1         reserved (0)
    8       8         layout, ASCII, NUL-padded (e.g. b"LBHNC\\0\\0\\0")
    16      8         payload length in bytes, little-endian
    24      8         XXH3-64 of the payload, little-endian
    32      4 * ndim  shape, little-endian uint32
    ...               payload: the raw C-order bytes of the tensor

numpy has no bfloat16, so callers pass arrays of the right byte width (e.g. a uint16 view of bfloat16 data) and
name the dtype separately. `decode_into` checks the header against what the caller expects, checks the checksum,
and copies the payload straight into the caller's preallocated array, or scatters it row by row (first axis) into
separate places (`Scatter`, e.g. each layer's slot of the block in a paged KV cache, by address: see `SlotMap`):
no pickle, one copy. Nothing is written to the destination unless the whole block is sound. Any mismatch raises
`CorruptBlock`, which the store treats as a miss.
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import xxhash

MAGIC = b"MSKV"
VERSION = 1
_FIXED = struct.Struct("<4sBBBB8sQQ")
DTYPE_CODES = {"float32": 1, "float16": 2, "bfloat16": 3, "float8_e4m3fn": 4, "float8_e5m2": 5, "uint8": 6}
DTYPE_NAMES = {code: name for name, code in DTYPE_CODES.items()}
DTYPE_WIDTHS = {"float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1, "uint8": 1}


@dataclass(frozen=True)
class Scatter:
    """Where a block of `shape` goes when its rows (along the first axis) live in separate places: row i into the
    `row_bytes` bytes at address `addresses[i]`. Build one with `Scatter.into` (from arrays) or `SlotMap.scatter`;
    `owner` keeps the memory the addresses point into alive for as long as the Scatter is."""

    shape: tuple[int, ...]
    addresses: tuple[int, ...]
    row_bytes: int
    owner: object = None

    def __post_init__(self) -> None:
        if len(self.addresses) != self.shape[0]:
            raise ValueError(f"a block of shape {self.shape} has {self.shape[0]} rows, not {len(self.addresses)} parts")

    @classmethod
    def into(cls, shape: tuple[int, ...], parts: Sequence[np.ndarray]) -> Scatter:
        """Row i of the block into `parts[i]`: each C-contiguous and one row's bytes."""
        if not all(part.flags.c_contiguous and part.flags.writeable for part in parts):
            raise ValueError("every part of a Scatter must be C-contiguous and writeable")
        if len({part.nbytes for part in parts}) > 1:
            raise ValueError("every part of a Scatter must have the same size")
        return cls(tuple(shape), tuple(part.ctypes.data for part in parts), parts[0].nbytes if parts else 0, parts)

    @property
    def nbytes(self) -> int:
        return self.row_bytes * len(self.addresses)


class SlotMap:
    """Same-shaped arrays of `num_slots` equal slots each (a paged KV cache: one array per layer, one slot per
    block): `scatter(shape, slot)` sends a block's row i into slot `slot` of array i, by address, with no per-row
    array indexing (a 4096-token load is thousands of rows)."""

    def __init__(self, arrays: Sequence[np.ndarray]) -> None:
        if not arrays or not all(a.flags.c_contiguous and a.flags.writeable for a in arrays):
            raise ValueError("a SlotMap needs at least one array, each C-contiguous and writeable")
        if len({(a.shape, a.dtype) for a in arrays}) != 1:
            raise ValueError("the arrays of a SlotMap must share shape and dtype")
        self.arrays = list(arrays)
        self.num_slots = arrays[0].shape[0]
        self.slot_bytes = arrays[0].strides[0]
        self._bases = [a.ctypes.data for a in arrays]

    def scatter(self, shape: tuple[int, ...], slot: int) -> Scatter:
        if not 0 <= slot < self.num_slots:
            raise IndexError(f"slot {slot} is outside 0..{self.num_slots - 1}")
        offset = slot * self.slot_bytes
        return Scatter(shape, tuple(base + offset for base in self._bases), self.slot_bytes, self.arrays)


class CorruptBlock(ValueError):
    """A stored block whose header or checksum does not match: treat as a miss and drop it."""


def header_size(ndim: int) -> int:
    return _FIXED.size + 4 * ndim


def encode(array: np.ndarray, dtype: str, layout: str) -> bytes:
    """Header + payload of `array` (made C-contiguous), labelled with `dtype` and `layout`; the payload is copied
    once, into the result."""
    if dtype not in DTYPE_CODES:
        raise ValueError(f"dtype {dtype!r} has no block code; allowed: {', '.join(DTYPE_CODES)}")
    if array.itemsize != DTYPE_WIDTHS[dtype]:
        raise ValueError(f"a {dtype} block needs {DTYPE_WIDTHS[dtype]}-byte elements, got {array.dtype}")
    payload = np.ascontiguousarray(array)
    view = memoryview(payload).cast("B")
    fixed = _FIXED.pack(MAGIC, VERSION, DTYPE_CODES[dtype], payload.ndim, 0, _layout_bytes(layout), view.nbytes,
                        xxhash.xxh3_64_intdigest(view))
    return b"".join((fixed, struct.pack(f"<{payload.ndim}I", *payload.shape), view))


def decode_into(data: bytes | memoryview, out: np.ndarray | Scatter, dtype: str, layout: str) -> None:
    """Validate `data` against the expected dtype, layout and `out`'s shape, then copy its payload into `out`."""
    if isinstance(out, np.ndarray) and not out.flags.c_contiguous:
        raise ValueError("decode_into needs a C-contiguous output array")
    data = memoryview(data).cast("B")
    if len(data) < _FIXED.size:
        raise CorruptBlock(f"block of {len(data)} bytes is shorter than its header")
    magic, version, code, ndim, _, layout_raw, length, checksum = _FIXED.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise CorruptBlock(f"not a memsidecar block (magic {magic!r}, version {version})")
    if DTYPE_NAMES.get(code) != dtype or layout_raw != _layout_bytes(layout):
        raise CorruptBlock(f"block is {DTYPE_NAMES.get(code)}/{layout_raw!r}, expected {dtype}/{layout}")
    shape = struct.unpack_from(f"<{ndim}I", data, _FIXED.size) if len(data) >= header_size(ndim) else None
    if shape != out.shape or length != out.nbytes or len(data) != header_size(ndim) + length:
        raise CorruptBlock(f"block shape {shape} / {length} bytes does not match {out.shape} / {out.nbytes}")
    payload = data[header_size(ndim):]
    if xxhash.xxh3_64_intdigest(payload) != checksum:
        raise CorruptBlock("block checksum mismatch")
    if isinstance(out, Scatter):
        if length:  # nbytes and the row count are checked above, so row == out.row_bytes
            row, source = length // shape[0], np.frombuffer(payload, np.uint8).ctypes.data
            for index, address in enumerate(out.addresses):
                ctypes.memmove(address, source + index * row, row)
    else:
        np.copyto(out.reshape(-1).view(np.uint8), np.frombuffer(payload, dtype=np.uint8))


def _layout_bytes(layout: str) -> bytes:
    raw = layout.encode("ascii")
    if len(raw) > 8:
        raise ValueError(f"layout name {layout!r} is longer than 8 characters")
    return raw.ljust(8, b"\0")
