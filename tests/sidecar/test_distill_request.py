"""The distillation request's `target_modules`: plain module names or PEFT's `all-linear`, checked at the edge."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sidecar.http.adapter_routes import DistillRequest


def test_target_modules_default_to_the_attention_projections_and_take_all_linear():
    assert DistillRequest(name="facts").target_modules == ["q_proj", "v_proj"]
    assert DistillRequest(name="facts", target_modules=["all-linear"]).target_modules == ["all-linear"]


@pytest.mark.parametrize("modules", [[], ["q_proj; rm"], ["(.*)*Z"], ["x" * 65], ["q_proj"] * 17])
def test_other_target_modules_are_refused_naming_the_field(modules):
    with pytest.raises(ValidationError, match="target_modules"):
        DistillRequest(name="facts", target_modules=modules)
