"""How many LoRA slots the engine gets (`--max-loras auto`): a pure function of memory, shapes and ranks.

Why it matters: vLLM's scheduler puts at most `max_loras` distinct adapters in one batch (`v1/core/sched/scheduler.py`
skips a waiting request whose adapter would be the K+1-th), so with N > K adapters in flight a batch holds K of
them and the other requests wait: 32 adapters through 4 slots decoded at 0.26x one adapter's rate. A slot costs
memory only, not time (vLLM's LoRA kernels gather each token's adapter; on CPU `bgmv` is one einsum whatever K is),
so the sidecar gives the engine as many slots as the distinct adapters that can be in flight, within a budget.

The memory arithmetic (vLLM 0.32, `lora/layers/base_linear.py` `create_lora_weights`, `lora/lora_model.py`):
- vLLM wraps every LoRA-able linear layer of the model (all of them, whatever the adapters target) with stacked
  weights of every slot: for a linear layer of `in` -> `out` features, `lora_a` (max_loras, max_lora_rank, in) and
  `lora_b` (max_loras, out, max_lora_rank) in the model's dtype. Packed layers (qkv_proj, gate_up_proj) hold one such
  pair per slice, so the sum over the unpacked modules is the same. One slot therefore costs

      slot_bytes = max_lora_rank * sum over linear layers (in + out) * dtype_bytes

  padded to `max_lora_rank` whatever the adapter's own rank.
- The engine's adapter cache (`max_cpu_loras` entries, LRU, and every adapter in a slot is in it too) holds each
  adapter at its own rank, on the modules it targets: at most

      adapter_bytes = rank * sum over linear layers (in + out) * dtype_bytes

  with `rank` the largest registered adapter's rank (the slot rank when none is registered yet).
- Both live in engine memory (GPU memory, or the engine's RAM on a CPU build) beside the KV cache, so they share one
  budget:  max_loras * (slot_bytes + adapter_bytes) + extra_cached * adapter_bytes <= budget_bytes.

The rule: K = min(cap, demand, budget // (slot_bytes + adapter_bytes)), at least 1; then the cache holds K plus as
many more adapters as the rest of the budget pays for, up to `max_cpu_cap` (and never fewer than K, vLLM's minimum).
`demand` is how many distinct adapters can be in flight at once (the sidecar's `max_engine_requests`); `cap` is the
most slots the engine is given (`MAX_AUTO_LORAS`).

Invariants (tested): 1 <= max_loras <= min(cap, demand); max_loras <= max_cpu_loras <= max(max_cpu_cap, max_loras);
when K >= 1 slot fits, the slots and cache fit the budget; more budget never gives fewer slots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MAX_AUTO_LORAS = 64  # the most slots `auto` gives (Settings' ceiling of max_loras)
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


class SizingError(ValueError):
    """Inputs the sizing cannot use (a non-positive rank, budget or demand)."""


@dataclass(frozen=True)
class SlotSizing:
    """The engine's LoRA limits chosen by `size_slots`, with the figures they follow from."""

    max_loras: int
    max_cpu_loras: int
    slot_bytes: int
    adapter_bytes: int
    budget_bytes: int
    limited_by: Literal["cap", "demand", "memory"]

    @property
    def used_bytes(self) -> int:
        """Engine memory the slots and the adapter cache take when full."""
        return self.max_loras * self.slot_bytes + self.max_cpu_loras * self.adapter_bytes

    def as_json(self) -> dict:
        return {"max_loras": self.max_loras, "max_cpu_loras": self.max_cpu_loras, "slot_bytes": self.slot_bytes,
                "adapter_bytes": self.adapter_bytes, "budget_bytes": self.budget_bytes,
                "used_bytes": self.used_bytes, "limited_by": self.limited_by}


def size_slots(budget_bytes: int, lora_features: int, dtype_bytes: int, slot_rank: int, adapter_rank: int | None,
               demand: int, max_cpu_cap: int, cap: int = MAX_AUTO_LORAS) -> SlotSizing:
    """K slots and the adapter cache for a budget (see the module docstring for the arithmetic).

    `lora_features`: sum of (in + out) over the model's LoRA-able linear layers (`BaseModelShape.lora_features`);
    `slot_rank`: the engine's `--max-lora-rank`; `adapter_rank`: the largest registered adapter's rank, None when
    none is registered; `demand`: distinct adapters that can be in flight; `max_cpu_cap`: the most cached adapters."""
    for name, value in (("budget_bytes", budget_bytes), ("lora_features", lora_features),
                        ("dtype_bytes", dtype_bytes), ("slot_rank", slot_rank), ("demand", demand),
                        ("max_cpu_cap", max_cpu_cap), ("cap", cap)):
        if value < 1:
            raise SizingError(f"{name} must be >= 1, not {value}")
    rank = min(adapter_rank or slot_rank, slot_rank)
    slot_bytes = slot_rank * lora_features * dtype_bytes
    adapter_bytes = max(1, rank) * lora_features * dtype_bytes
    fit = budget_bytes // (slot_bytes + adapter_bytes)
    max_loras = max(1, min(cap, demand, fit))
    limited_by = "memory" if fit < min(cap, demand) else "demand" if demand < cap else "cap"
    spare = max(0, budget_bytes - max_loras * (slot_bytes + adapter_bytes)) // adapter_bytes
    max_cpu_loras = max(max_loras, min(max_cpu_cap, max_loras + spare))
    return SlotSizing(max_loras, max_cpu_loras, slot_bytes, adapter_bytes, budget_bytes, limited_by)
