"""The shape of a base model as LoRA sees it: its linear layers and their (out, in) features.

Read from a Hugging Face model directory without loading weights: `config.json` for the layer count and the
header of every top-level `*.safetensors` file for tensor names and shapes. A linear layer is a module with a
2-D `.weight`, except embeddings and the output head (vLLM applies LoRA to decoder-layer linears only).

`read_safetensors_header` parses the safetensors format's header (8-byte little-endian length, then JSON) and
checks every tensor's byte range lies inside the file; the adapter validation uses it too.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

MAX_HEADER_BYTES = 100 << 20  # the limit the safetensors format itself sets
_NOT_LINEAR = ("embed", "lm_head", "wte", "wpe")
DTYPE_WIDTHS = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor in a safetensors file: dtype code (e.g. "BF16"), shape, and absolute byte range in the file."""

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True)
class BaseModelShape:
    """Module name (e.g. `model.layers.0.self_attn.q_proj`) -> (out_features, in_features) of every linear layer."""

    linear: Mapping[str, tuple[int, int]]
    num_layers: int

    @property
    def leaf_names(self) -> frozenset[str]:
        """The last components of the linear modules' names: q_proj, k_proj, ..., down_proj."""
        return frozenset(name.rsplit(".", 1)[-1] for name in self.linear)

    @classmethod
    def load(cls, model_dir: Path) -> BaseModelShape:
        """Read the shape of the model in `model_dir`; ValueError naming the file if it cannot be read."""
        weights = sorted(model_dir.glob("*.safetensors"))
        if not weights:
            raise ValueError(f"no *.safetensors weights in {model_dir}: the adapter registry needs them")
        linear = {}
        for path in weights:
            for key, entry in read_safetensors_header(path).items():
                module = key.removesuffix(".weight")
                if key.endswith(".weight") and len(entry.shape) == 2 and not _is_excluded(module):
                    linear[module] = (entry.shape[0], entry.shape[1])
        return cls(MappingProxyType(dict(sorted(linear.items()))), _num_layers(model_dir / "config.json"))


def read_safetensors_header(path: Path) -> dict[str, TensorEntry]:
    """Tensor name -> entry of the safetensors file at `path`; ValueError if the header is malformed."""
    size = path.stat().st_size
    with open(path, "rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path.name} is too short to be a safetensors file")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise ValueError(f"{path.name} has a header length of {length} bytes, beyond the file or the format")
        header = _json_object(file.read(length))
    if header is None:
        raise ValueError(f"{path.name} has a header that is not a JSON object")
    header.pop("__metadata__", None)
    return {key: _entry(path.name, key, value, 8 + length, size) for key, value in header.items()}


def _json_object(raw: bytes) -> dict | None:
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _entry(file_name: str, key: str, value: object, base: int, size: int) -> TensorEntry:
    try:
        dtype, shape, (start, end) = value["dtype"], tuple(value["shape"]), value["data_offsets"]
        count = 1
        for dim in shape:
            count *= int(dim)
        width = DTYPE_WIDTHS[dtype]
        valid = all(isinstance(d, int) and d >= 0 for d in shape) and 0 <= start <= end <= size - base
    except (TypeError, KeyError, ValueError):
        raise ValueError(f"{file_name}: tensor {key!r} has a malformed header entry") from None
    if not valid or end - start != count * width:
        raise ValueError(f"{file_name}: tensor {key!r} has a byte range that does not match its shape and dtype")
    return TensorEntry(dtype, shape, base + start, base + end)


def _is_excluded(module: str) -> bool:
    leaf = module.rsplit(".", 1)[-1]
    return any(marker in leaf for marker in _NOT_LINEAR)


def _num_layers(config_path: Path) -> int:
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {config_path}: {exc}") from None
    for section in (config, config.get("text_config") or {}):
        for key in ("num_hidden_layers", "n_layer", "num_layers"):
            if isinstance(section.get(key), int):
                return section[key]
    raise ValueError(f"{config_path} names no layer count (num_hidden_layers)")
