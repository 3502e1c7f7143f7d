"""Fuzz the memory and knowledge-base routes from their OpenAPI schema (schemathesis): no input makes a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.conftest import auth

pytestmark = pytest.mark.slow
EXAMPLES_PER_ROUTE = 12


def test_no_input_makes_a_server_error(sidecar):
    schema = schemathesis.openapi.from_url(f"{sidecar.base_url}/openapi.json").include(
        path_regex=r"^/v1/(memories|kbs)")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_ROUTE, deadline=None, suppress_health_check=list(HealthCheck),
                  derandomize=True, database=None)
        def no_server_error(case) -> None:
            response = case.call(headers=auth("tenant-b"), timeout=60)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} {case.body!r}: {response.status_code} {response.text}")
            if response.status_code >= 400:
                assert "error" in response.json()

        no_server_error()
