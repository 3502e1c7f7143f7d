"""The shape of a base model as LoRA sees it: its linear layers and their (out, in) features.

Read from a Hugging Face model directory without loading weights: `config.json` for the layer count and the
header of every top-level `*.safetensors` file for tensor names and shapes. A linear layer is a module with a
2-D `.weight`, except embeddings and the output head (vLLM applies LoRA to decoder-layer linears only).

Headers are read by `adapters.safetensors_header`, which the adapter validation uses too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from adapters.safetensors_header import read_safetensors_header

_NOT_LINEAR = ("embed", "lm_head", "wte", "wpe")


@dataclass(frozen=True)
class BaseModelShape:
    """Module name (e.g. `model.layers.0.self_attn.q_proj`) -> (out_features, in_features) of every linear layer."""

    linear: Mapping[str, tuple[int, int]]
    num_layers: int

    @property
    def leaf_names(self) -> frozenset[str]:
        """The last components of the linear modules' names: q_proj, k_proj, ..., down_proj."""
        return frozenset(name.rsplit(".", 1)[-1] for name in self.linear)

    @property
    def lora_features(self) -> int:
        """The sum of (in + out) features over the linear layers: what one LoRA rank costs in elements, per
        adapter (`adapters.sizing`)."""
        return sum(out + in_ for out, in_ in self.linear.values())

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
