"""`adapters.sizing`: engine LoRA slots from a memory budget, the model's shapes and the adapters' ranks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.base_model import BaseModelShape
from adapters.sizing import MAX_AUTO_LORAS, SizingError, size_slots
from memcore.units import MIB

# smollm2-135m: 30 layers of q, k, v, o, gate, up, down with (in + out) features summing to 10,176
SMOLLM2_FEATURES = 30 * 10_176


def test_a_slot_costs_the_padded_rank_and_a_cached_adapter_its_own_rank():
    sizing = size_slots(256 * MIB, SMOLLM2_FEATURES, 4, slot_rank=16, adapter_rank=8, demand=64, max_cpu_cap=1024)
    assert sizing.slot_bytes == 16 * SMOLLM2_FEATURES * 4  # 19.5 MB in float32
    assert sizing.adapter_bytes == 8 * SMOLLM2_FEATURES * 4
    assert sizing.max_loras == 256 * MIB // (sizing.slot_bytes + sizing.adapter_bytes) == 9
    assert sizing.limited_by == "memory" and sizing.used_bytes <= sizing.budget_bytes


def test_a_small_model_gets_a_slot_for_every_request_that_can_be_in_flight():
    tiny = 2 * (256 + 192 + 192 + 256 + 640 + 640 + 640)
    sizing = size_slots(256 * MIB, tiny, 4, slot_rank=16, adapter_rank=None, demand=64, max_cpu_cap=32)
    assert (sizing.max_loras, sizing.max_cpu_loras, sizing.limited_by) == (64, 64, "cap")
    assert size_slots(256 * MIB, tiny, 4, 16, None, demand=40, max_cpu_cap=1024).max_loras == 40


def test_without_registered_adapters_the_cache_is_sized_at_the_slot_rank():
    sizing = size_slots(64 * MIB, 1000, 2, slot_rank=32, adapter_rank=None, demand=8, max_cpu_cap=1024)
    assert sizing.adapter_bytes == sizing.slot_bytes == 32 * 1000 * 2


def test_at_least_one_slot_even_when_none_fits():
    sizing = size_slots(1, SMOLLM2_FEATURES, 4, 16, 16, demand=64, max_cpu_cap=8)
    assert (sizing.max_loras, sizing.max_cpu_loras, sizing.limited_by) == (1, 1, "memory")


@pytest.mark.parametrize("field", ["budget_bytes", "lora_features", "dtype_bytes", "slot_rank", "demand"])
def test_non_positive_inputs_are_refused_naming_the_field(field):
    args = {"budget_bytes": MIB, "lora_features": 100, "dtype_bytes": 2, "slot_rank": 8, "adapter_rank": None,
            "demand": 4, "max_cpu_cap": 8, field: 0}
    with pytest.raises(SizingError, match=field):
        size_slots(**args)


def test_the_models_lora_features_sum_in_and_out_of_its_linear_layers():
    shape = BaseModelShape({"l.0.q_proj": (128, 64), "l.0.down_proj": (64, 256)}, 1)
    assert shape.lora_features == 128 + 64 + 64 + 256


sizes = dict(budget=st.integers(1, 1 << 34), features=st.integers(1, 1 << 20), dtype=st.sampled_from([2, 4]),
             slot_rank=st.sampled_from([8, 16, 64]), adapter_rank=st.one_of(st.none(), st.integers(1, 64)),
             demand=st.integers(1, 256), cpu_cap=st.integers(1, 1024), cap=st.integers(1, MAX_AUTO_LORAS))


@given(**sizes)
def test_sizing_invariants(budget, features, dtype, slot_rank, adapter_rank, demand, cpu_cap, cap):
    sizing = size_slots(budget, features, dtype, slot_rank, adapter_rank, demand, cpu_cap, cap)
    assert 1 <= sizing.max_loras <= min(cap, demand)
    assert sizing.max_loras <= sizing.max_cpu_loras <= max(cpu_cap, sizing.max_loras)
    if budget >= sizing.slot_bytes + sizing.adapter_bytes:  # one slot fits: everything fits
        assert sizing.used_bytes <= budget
    more = size_slots(budget * 2, features, dtype, slot_rank, adapter_rank, demand, cpu_cap, cap)
    assert more.max_loras >= sizing.max_loras
