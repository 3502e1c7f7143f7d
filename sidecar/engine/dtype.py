"""What the engine dtype `auto` means on this machine: the one place for that policy.

vLLM's `auto` takes the model's own dtype (bfloat16 for the generated `qwen2-0.5b-shape`) and downcasts float32
models to the platform's first dtype, which on CPUs is bf16, treated as native on every x86 CPU. On a CPU without
bf16 instructions (x86 AVX512_BF16 or AMX, Arm BF16) oneDNN refuses bf16 matmuls ("Failed to create oneDNN linear,
fallback to torch linear") and every matmul runs torch's reference kernel: on this project's AVX2-only 2-core
machines a 4096-token prefill of that model took ~10x longer in bf16 than in float32. So with no GPU and no bf16
instructions, `auto` runs bf16 and float32 models in float32; asking for bfloat16 explicitly still gets it. The KV
namespace records the dtype, so activations of one dtype are never loaded into the other.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger("memsidecar.engine")
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})  # x86 AVX512 / AMX, Arm
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The flags of the first processor in a /proc/cpuinfo text (x86 `flags`, Arm `Features`)."""
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def model_dtype(model_dir: Path) -> str | None:
    """The dtype a model's `config.json` declares (`dtype`, or the older `torch_dtype`), if any."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    value = config.get("dtype") or config.get("torch_dtype")
    return value if isinstance(value, str) else None


def resolve_dtype(requested: str, declared: str | None, cuda: bool, flags: frozenset[str]) -> str:
    """`requested`, except that `auto` becomes float32 where vLLM's `auto` would run bf16 on a CPU without bf16
    instructions: no GPU, and a bf16 model, or a float32 one (or one declaring no dtype, which is float32): vLLM
    downcasts float32 models to the platform's first dtype, bf16 on CPUs. Everywhere else `auto` is left to vLLM.
    Pure: `declared` is the model's dtype, `cuda` whether a GPU is visible, `flags` the CPU's feature flags."""
    if requested == "auto" and not cuda and not flags & BF16_FLAGS and declared in ("bfloat16", "float32", None):
        return "float32"
    return requested


def this_machine() -> tuple[bool, frozenset[str]]:
    """Whether a GPU is visible here, and this CPU's feature flags (empty where /proc/cpuinfo cannot be read)."""
    import torch

    try:
        flags = cpu_flags(CPUINFO.read_text())
    except OSError:
        flags = frozenset()
    return torch.cuda.is_available(), flags


def engine_dtype(requested: str, model_dir: Path) -> str:
    """`resolve_dtype` for this machine and the model in `model_dir` (still `auto` where vLLM's rule is kept)."""
    if requested != "auto":
        return requested
    cuda, flags = this_machine()
    chosen = resolve_dtype(requested, model_dtype(model_dir), cuda, flags)
    if chosen != requested:
        log.info("dtype auto: running the model in %s (no GPU, and the CPU has no bf16 instructions)", chosen)
    return chosen


def explicit_dtype(requested: str, model_dir: Path) -> str:
    """A dtype name to pass the engine explicitly and record, for benchmarks: `engine_dtype`, and where that keeps
    `auto`, the model's declared dtype (float32 if none)."""
    chosen = engine_dtype(requested, model_dir)
    return (model_dtype(model_dir) or "float32") if chosen == "auto" else chosen
