"""Fuzz the HTTP API from its OpenAPI schema (schemathesis): no input, valid or not, makes a 5xx, and the server
keeps serving."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.conftest import auth

pytestmark = pytest.mark.slow
EXAMPLES_PER_ROUTE = 12
# Routes whose valid calls run the engine get fewer examples; distillation (a training job) is not fuzzed.
ENGINE_EXAMPLES_PER_ROUTE = 6
GROUPS = {
    "memories, kbs and spaces": (r"^/v1/(memories|kbs|spaces)", EXAMPLES_PER_ROUTE, 17),
    "adapters": (r"^/v1/adapters(?!/distill)", EXAMPLES_PER_ROUTE, 8),
    "activations": (r"^/v1/activations", ENGINE_EXAMPLES_PER_ROUTE, 3),
    "chat and completions": (r"^/v1/(chat/)?completions$", ENGINE_EXAMPLES_PER_ROUTE, 2),
}


@pytest.mark.parametrize("group", list(GROUPS))
def test_no_input_makes_a_server_error(sidecar, group):
    path_regex, examples, min_operations = GROUPS[group]
    schema = schemathesis.openapi.from_url(f"{sidecar.base_url}/openapi.json").include(path_regex=path_regex)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= min_operations
    for operation in operations:

        @given(case=st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                              operation.as_strategy(GenerationMode.NEGATIVE)))
        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck),
                  derandomize=True, database=None)
        def no_server_error(case) -> None:
            response = case.call(headers=auth("tenant-b"), timeout=120)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} {case.body!r}: {response.status_code} {response.text}")
            if response.status_code >= 400:
                assert "error" in response.json()

        no_server_error()
    assert httpx.get(f"{sidecar.base_url}/readyz", timeout=30).status_code == 200
    assert httpx.get(f"{sidecar.base_url}/v1/whoami", headers=auth("tenant-a"), timeout=30).json()["tenant"] == \
        "tenant-a"
