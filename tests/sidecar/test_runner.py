"""`max_loras auto` at start: the engine's LoRA arguments sized from the model, the budget and registered ranks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from rich.console import Console

from adapters.base_model import BaseModelShape
from sidecar.config import Settings
from sidecar.engine.command import engine_command
from sidecar.runner import build_engine, resolve_lora


def test_auto_gives_the_tiny_model_a_slot_per_request_in_flight(tiny_model, tmp_path):
    settings = Settings.load(model=tiny_model, data_dir=tmp_path, max_loras="auto", max_cpu_loras=48,
                             max_engine_requests=40)
    resolved, sizing = resolve_lora(settings, tiny_model.resolve(), adapter_rank=8)
    assert (resolved.max_loras, resolved.max_cpu_loras, sizing.limited_by) == (40, 48, "demand")
    assert sizing.slot_bytes == 16 * tiny_model_features(tiny_model) * 4  # max_lora_rank 16, float32
    engine, _ = build_engine(settings, Console(quiet=True))
    argv = engine_command(engine.spec)
    assert argv[argv.index("--max-loras") + 1] == "40" and argv[argv.index("--max-cpu-loras") + 1] == "48"


def test_auto_within_a_small_budget_gives_fewer_slots(tiny_model, tmp_path):
    settings = Settings.load(model=tiny_model, data_dir=tmp_path, max_loras="auto", lora_memory_gib=0.002)
    resolved, sizing = resolve_lora(settings, tiny_model.resolve(), adapter_rank=None)
    assert sizing.limited_by == "memory" and 1 <= resolved.max_loras < 64
    assert sizing.used_bytes <= sizing.budget_bytes == int(0.002 * 2**30)


def test_numbers_are_left_alone(tiny_model, tmp_path):
    settings = Settings.load(model=tiny_model, data_dir=tmp_path, max_loras=3)
    assert resolve_lora(settings, tiny_model.resolve(), 8) == (settings, None)


def test_auto_is_refused_for_an_attached_engine():
    with pytest.raises(ValidationError, match="engine_url"):
        Settings.load(max_loras="auto", engine_url="http://127.0.0.1:9")


def tiny_model_features(model) -> int:
    return BaseModelShape.load(model).lora_features
