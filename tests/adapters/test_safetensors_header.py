"""The safetensors header parser refuses every entry the format forbids, with a ValueError naming the field."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.safetensors_header import TensorEntry, read_safetensors_header

GOOD = {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
        "b": {"dtype": "F16", "shape": [4], "data_offsets": [16, 24]}}


def write(path: Path, header: object, data_bytes: int = 24, raw: bytes | None = None) -> Path:
    text = raw if raw is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + bytes(data_bytes))
    return path


def refused(tmp_path: Path, header: object, data_bytes: int = 24, raw: bytes | None = None) -> str:
    with pytest.raises(ValueError) as caught:
        read_safetensors_header(write(tmp_path / "w.safetensors", header, data_bytes, raw))
    return str(caught.value)


def with_entry(**changes) -> dict:
    return {**GOOD, "a": {**GOOD["a"], **changes}}


def test_a_good_header_gives_absolute_byte_ranges(tmp_path):
    header_bytes = len(json.dumps(GOOD))
    entries = read_safetensors_header(write(tmp_path / "w.safetensors", GOOD))
    assert entries["a"] == TensorEntry("F32", (2, 2), 8 + header_bytes, 8 + header_bytes + 16)
    assert entries["b"].end == (tmp_path / "w.safetensors").stat().st_size


@pytest.mark.parametrize("offsets", [[0.0, 16.0], [0, 16.0], [True, 16], [-16, 0], [0, 16, 24], [0], "0-16",
                                     [0, 2 ** 70], None])
def test_data_offsets_that_are_not_two_integers_in_range_are_refused(tmp_path, offsets):
    assert "a" in refused(tmp_path, with_entry(data_offsets=offsets))


@pytest.mark.parametrize("shape", [[2.0, 2], [True, 4], [-2, -2], [2] * 9, "2x2", [[2], [2]]])
def test_shapes_that_are_not_lists_of_counts_are_refused(tmp_path, shape):
    assert "shape" in refused(tmp_path, with_entry(shape=shape))


@pytest.mark.parametrize("entry, words", [
    ({"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16], "extra": 1}, "exactly dtype"),
    ({"dtype": "Q4", "shape": [2, 2], "data_offsets": [0, 16]}, "dtype"),
    ({"dtype": "F32", "shape": [3, 2], "data_offsets": [0, 16]}, "needs 24"),
    (["F32", [2, 2], [0, 16]], "must be an object"),
])
def test_bad_entries_are_refused(tmp_path, entry, words):
    assert words in refused(tmp_path, {**GOOD, "a": entry})


def test_overlapping_tensors_are_refused(tmp_path):
    header = {**GOOD, "b": {"dtype": "F16", "shape": [4], "data_offsets": [8, 16]}}
    assert "overlaps" in refused(tmp_path, header, data_bytes=16)


def test_a_gap_or_bytes_past_the_tensors_are_refused(tmp_path):
    assert "gap" in refused(tmp_path, {"b": GOOD["b"]}, data_bytes=24)
    assert "cover 24 bytes of a 32-byte" in refused(tmp_path, GOOD, data_bytes=32)
    assert "byte range" in refused(tmp_path, GOOD, data_bytes=20)


@pytest.mark.parametrize("raw, words", [
    (b'{"a": 1, "a": 2}', "twice"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    (b'{"__metadata__": {"k": 1}}', "__metadata__"),
    (b"[]", "not a JSON object"),
])
def test_malformed_json_is_refused(tmp_path, raw, words):
    assert words in refused(tmp_path, None, raw=raw)


@settings(max_examples=200, deadline=None)
@given(offsets=st.lists(st.one_of(st.integers(-5, 40), st.floats(allow_nan=True), st.booleans(), st.none(),
                                  st.text(max_size=3)), max_size=3))
def test_any_data_offsets_are_refused_or_give_integer_ranges_inside_the_file(tmp_path_factory, offsets):
    path = write(tmp_path_factory.mktemp("h") / "w.safetensors", with_entry(data_offsets=offsets))
    try:
        entries = read_safetensors_header(path)
    except ValueError:
        return
    for entry in entries.values():
        assert type(entry.start) is int and type(entry.end) is int
        assert 0 < entry.start <= entry.end <= path.stat().st_size
