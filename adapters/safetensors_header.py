"""The safetensors file header, read and checked whole without torch: the one place this format is parsed.

The format: an 8-byte little-endian header length N, N bytes of JSON, then the data buffer. The JSON is an object
mapping tensor names to `{"dtype": str, "shape": [int, ...], "data_offsets": [begin, end]}` (offsets relative to
the data buffer), plus an optional `"__metadata__"` object of strings. A header from an upload is hostile, so
every rule the safetensors library enforces is checked here before any offset is used:
- the header length lies inside the file and within the format's 100 MB; the JSON is an object, without duplicate
  keys, and no deeper than the format needs;
- dtype is a known code; shape is a list of at most `MAX_DIMS` non-negative integers (JSON booleans and floats are
  not integers); data_offsets is a list of exactly two integers, begin <= end;
- end - begin is exactly the byte size of shape x dtype;
- the tensors tile the data buffer: sorted by offset, each begins where the previous ended, the first at 0, the
  last at the end of the file. So no two tensors overlap and no byte of the file is unaccounted for.
Every refusal is a ValueError naming the file, the tensor and the field.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

MAX_HEADER_BYTES = 100 << 20  # the limit the safetensors format itself sets
MAX_DIMS = 8
METADATA = "__metadata__"
DTYPE_WIDTHS = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
_FIELDS = {"dtype", "shape", "data_offsets"}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor in a safetensors file: dtype code (e.g. "BF16"), shape, and absolute byte range in the file."""

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


def read_safetensors_header(path: Path) -> dict[str, TensorEntry]:
    """Tensor name -> entry of the safetensors file at `path`; ValueError naming the fault if the header breaks a
    rule of the format."""
    size = path.stat().st_size
    with open(path, "rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path.name} is too short to be a safetensors file")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise ValueError(f"{path.name} has a header length of {length} bytes, beyond the file or the format")
        header = _json_object(path.name, file.read(length))
    _check_metadata(path.name, header.pop(METADATA, {}))
    data_bytes = size - 8 - length
    entries = {key: _entry(f"{path.name}: tensor {key[:200]!r}", value, data_bytes) for key, value in header.items()}
    _check_tiling(path.name, entries, data_bytes)
    return {key: TensorEntry(e.dtype, e.shape, 8 + length + e.start, 8 + length + e.end) for key, e in entries.items()}


def _json_object(file_name: str, raw: bytes) -> dict:
    try:
        value = json.loads(raw, object_pairs_hook=_without_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, _DuplicateKey) as exc:
        raise ValueError(f"{file_name} has a header that is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{file_name} has a header that is not a JSON object")
    return value


class _DuplicateKey(ValueError):
    pass


def _without_duplicates(pairs: list[tuple[str, object]]) -> dict:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _DuplicateKey("a key appears twice")
    return result


def _check_metadata(file_name: str, metadata: object) -> None:
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError(f"{file_name}: {METADATA} must be an object of strings")


def _entry(where: str, value: object, data_bytes: int) -> TensorEntry:
    """The entry with offsets relative to the data buffer; every field checked for type and range."""
    if not isinstance(value, dict) or set(value) != _FIELDS:
        raise ValueError(f"{where} must be an object with exactly dtype, shape and data_offsets")
    dtype, shape, offsets = value["dtype"], value["shape"], value["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_WIDTHS:
        raise ValueError(f"{where}: dtype {str(dtype)[:40]!r} is not one of {', '.join(DTYPE_WIDTHS)}")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(_is_count(d) for d in shape):
        raise ValueError(f"{where}: shape must be a list of at most {MAX_DIMS} non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
        raise ValueError(f"{where}: data_offsets must be a list of two non-negative integers")
    start, end = offsets
    if end > data_bytes:
        raise ValueError(f"{where} has a byte range (data_offsets {offsets}) beyond the {data_bytes}-byte data buffer")
    expected = DTYPE_WIDTHS[dtype]
    for dim in shape:
        expected *= dim
    if end - start != expected:
        raise ValueError(f"{where}: data_offsets {offsets} span {end - start} bytes, but shape {shape} of {dtype} "
                         f"needs {expected}")
    return TensorEntry(dtype, tuple(shape), start, end)


def _is_count(value: object) -> bool:
    return type(value) is int and value >= 0


def _check_tiling(file_name: str, entries: dict[str, TensorEntry], data_bytes: int) -> None:
    """The tensors' byte ranges, in order, cover the data buffer exactly: no gap, no overlap, nothing past it."""
    position = 0
    for key, entry in sorted(entries.items(), key=lambda item: (item[1].start, item[1].end)):
        if entry.start != position:
            problem = "overlaps the tensor before it" if entry.start < position else "leaves a gap before it"
            raise ValueError(f"{file_name}: tensor {key[:200]!r} has a byte range (data_offsets "
                             f"{[entry.start, entry.end]}) that {problem}")
        position = entry.end
    if position != data_bytes:
        raise ValueError(f"{file_name}: the tensors' byte ranges cover {position} bytes of a {data_bytes}-byte data "
                         "buffer: they must cover it exactly")
