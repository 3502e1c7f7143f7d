"""Checking an unpacked PEFT LoRA adapter against the base model and the engine's limits, before it is stored.

An adapter directory holds exactly `adapter_config.json` and `adapter_model.safetensors` (a README.md is allowed
and ignored). Pickle weights are refused outright: loading them runs arbitrary code. The checks, in order: files,
config JSON, PEFT options vLLM cannot serve, rank and alpha, target modules against the base model's linear
layers (`adapters.target_modules`, in linear time), then every tensor: a lora_A [r, in] or lora_B [out, r] of a
targeted linear layer, in float16, bfloat16 or float32, finite. The safetensors header is checked whole before any
byte range is used (`adapters.safetensors_header`); finiteness is checked on the raw bits.

`adapter_digest` (from `memcore.digest`) is the SHA-256 the KV cache uses for the adapter's namespace
(`kvcache.fingerprint.adapter_id`): over b"msc-adapter-v1\\0", the config as canonical JSON, then
"adapter_model.safetensors\\0" (a checked adapter's only weight file) and the BLAKE2b-256 hex of its content. Both
packages compute it through that one function.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adapters.base_model import BaseModelShape
from adapters.errors import UNPROCESSABLE, InvalidAdapterError
from adapters.safetensors_header import TensorEntry, read_safetensors_header
from adapters.target_modules import targeted_modules
from memcore.digest import ADAPTER_CONFIG, adapter_digest

CONFIG_FILE = ADAPTER_CONFIG
WEIGHTS_FILE = "adapter_model.safetensors"
IGNORED_FILES = ("README.md",)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# exponent bits all set means Inf or NaN
_NON_FINITE = {"F16": (np.uint16, 0x7C00), "BF16": (np.uint16, 0x7F80), "F32": (np.uint32, 0x7F800000)}
_KEY = re.compile(r"base_model\.model\.(?P<module>.+)\.lora_(?P<kind>[AB])\.weight")
# option -> the values vLLM serves (the PEFT defaults); anything else is refused
_PLAIN_LORA = {
    "modules_to_save": (None, []), "use_dora": (None, False), "rank_pattern": (None, {}),
    "alpha_pattern": (None, {}), "layer_replication": (None, []), "target_parameters": (None, []),
    "trainable_token_indices": (None, {}), "use_qalora": (None, False), "alora_invocation_tokens": (None, []),
    "fan_in_fan_out": (None, False), "bias": (None, "none"), "lora_bias": (None, False),
    "use_bdlora": (None, False),
}


@dataclass(frozen=True)
class AdapterInfo:
    """What validation learned: rank, alpha, targeted layer kinds (leaf names), size in bytes, content SHA-256."""

    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    bytes: int
    sha256: str


def validate_adapter(directory: Path, base: BaseModelShape, max_lora_rank: int) -> AdapterInfo:
    """The adapter in `directory` described, or an InvalidAdapterError naming the first field at fault."""
    _check_files(directory)
    config = _read_config(directory / CONFIG_FILE)
    _check_plain_lora(config)
    rank, alpha = _check_rank_and_alpha(config, max_lora_rank)
    targeted = targeted_modules(config.get("target_modules"), base.linear)
    weights = directory / WEIGHTS_FILE
    try:
        tensors = read_safetensors_header(weights)
    except ValueError as exc:
        raise InvalidAdapterError(WEIGHTS_FILE, str(exc)) from None
    modules = _check_tensors(tensors, targeted, base, rank)
    _check_finite(weights, tensors)
    leaves = tuple(sorted({module.rsplit(".", 1)[-1] for module in modules}))
    size = (directory / CONFIG_FILE).stat().st_size + weights.stat().st_size
    return AdapterInfo(rank, alpha, leaves, size, adapter_digest(directory))


def _check_files(directory: Path) -> None:
    names = sorted(path.name for path in directory.iterdir())
    for name in names:
        if name.lower().endswith(PICKLE_SUFFIXES):
            raise InvalidAdapterError(name, "pickle weights are not accepted; save with safetensors "
                                            "(save_pretrained(..., safe_serialization=True))")
    for name in names:
        if name not in (CONFIG_FILE, WEIGHTS_FILE, *IGNORED_FILES) or not (directory / name).is_file():
            raise InvalidAdapterError(name, f"unexpected file: an adapter holds exactly {CONFIG_FILE} and "
                                            f"{WEIGHTS_FILE} (a README.md is ignored)")
    for required in (CONFIG_FILE, WEIGHTS_FILE):
        if required not in names:
            raise InvalidAdapterError(required, f"missing: an adapter holds exactly {CONFIG_FILE} and {WEIGHTS_FILE}")


def _read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidAdapterError(CONFIG_FILE, f"not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidAdapterError(CONFIG_FILE, "nested too deeply to be a PEFT config") from None
    if not isinstance(config, dict):
        raise InvalidAdapterError(CONFIG_FILE, "must be a JSON object")
    if config.get("peft_type") != "LORA":
        raise InvalidAdapterError("peft_type", f"{config.get('peft_type')!r} is not supported: only 'LORA'",
                                  UNPROCESSABLE)
    return config


def _check_plain_lora(config: dict) -> None:
    for option, served in _PLAIN_LORA.items():
        if config.get(option) not in served:
            raise InvalidAdapterError(option, f"{config[option]!r} is not supported: the engine serves plain LoRA "
                                              f"adapters; train with {option}={served[-1]!r}", UNPROCESSABLE)


def _check_rank_and_alpha(config: dict, max_lora_rank: int) -> tuple[int, float]:
    rank, alpha = config.get("r"), config.get("lora_alpha")
    if type(rank) is not int or not 1 <= rank <= max_lora_rank:
        raise InvalidAdapterError("r", f"rank {rank!r} is not allowed: the engine serves ranks 1 to {max_lora_rank}",
                                  UNPROCESSABLE)
    if type(alpha) not in (int, float) or not math.isfinite(alpha) or alpha <= 0:
        raise InvalidAdapterError("lora_alpha", f"{alpha!r} is not allowed: it must be a positive number",
                                  UNPROCESSABLE)
    return rank, alpha


def _check_tensors(tensors: dict[str, TensorEntry], targeted: frozenset[str], base: BaseModelShape,
                   rank: int) -> set[str]:
    """The modules the weights adapt; every tensor must be the lora_A or lora_B of a targeted linear layer."""
    kinds: dict[str, set[str]] = {}
    for key, entry in tensors.items():
        match = _KEY.fullmatch(key)
        if match is None or match["module"] not in base.linear:
            raise InvalidAdapterError(key, "not a lora_A or lora_B weight of a linear layer of the base model "
                                           "(embeddings, biases and other extra tensors are not accepted)",
                                      UNPROCESSABLE)
        module, kind = match["module"], match["kind"]
        if module not in targeted:
            raise InvalidAdapterError(key, "adapts a module not among target_modules", UNPROCESSABLE)
        if entry.dtype not in _NON_FINITE:
            raise InvalidAdapterError(key, f"dtype {entry.dtype} is not accepted: use float16, bfloat16 or float32",
                                      UNPROCESSABLE)
        out_features, in_features = base.linear[module]
        expected = (rank, in_features) if kind == "A" else (out_features, rank)
        if entry.shape != expected:
            raise InvalidAdapterError(key, f"shape {list(entry.shape)} does not fit the base model: expected "
                                           f"{list(expected)} for rank {rank}", UNPROCESSABLE)
        kinds.setdefault(module, set()).add(kind)
    _check_pairs(kinds)
    return set(kinds)


def _check_pairs(kinds: dict[str, set[str]]) -> None:
    if not kinds:
        raise InvalidAdapterError(WEIGHTS_FILE, "holds no LoRA weights", UNPROCESSABLE)
    for module, present in sorted(kinds.items()):
        if present != {"A", "B"}:
            missing = "lora_B" if "A" in present else "lora_A"
            raise InvalidAdapterError(f"{module}.{missing}", "missing: every adapted layer needs lora_A and lora_B",
                                      UNPROCESSABLE)


def _check_finite(path: Path, tensors: dict[str, TensorEntry]) -> None:
    for key, entry in tensors.items():
        bits, mask = _NON_FINITE[entry.dtype]
        count = (entry.end - entry.start) // np.dtype(bits).itemsize
        raw = np.fromfile(path, dtype=np.dtype(bits).newbyteorder("<"), count=count, offset=entry.start)
        if np.any((raw & mask) == mask):
            raise InvalidAdapterError(key, "holds NaN or infinite values", UNPROCESSABLE)
