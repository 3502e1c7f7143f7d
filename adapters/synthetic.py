"""Seeded random LoRA adapters in PEFT format, for tests and benchmarks (as `make-model` is for base models).

Same base model, seed, rank and targets: same bytes. The weights are random (PEFT's `init_lora_weights=False`), so
each adapter changes the model's outputs in its own deterministic way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def random_adapter(base_model_dir: Path, out: Path, seed: int, rank: int = 8,
                   target_modules: Sequence[str] | str = ("q_proj", "v_proj"), alpha: float | None = None,
                   **options: Any) -> Path:
    """Write a random LoRA adapter for the model in `base_model_dir` to `out` (safetensors); returns `out`.
    `alpha` defaults to 2 * rank; `options` are further `peft.LoraConfig` fields."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        targets = target_modules if isinstance(target_modules, str) else list(target_modules)
        config = LoraConfig(r=rank, lora_alpha=2 * rank if alpha is None else alpha, target_modules=targets,
                            init_lora_weights=False, **options)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_model_dir), config)
        model.save_pretrained(out)
    return out
