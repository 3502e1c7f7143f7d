"""The OpenAI request models: schemas a tenant hands the engine for structured output are bounded."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sidecar.chat.requests import (MAX_SCHEMA_DEPTH, MAX_SCHEMA_NODES, MAX_SCHEMA_PATTERN_CHARS, ChatCompletionRequest,
                                   bounded_schema)

MESSAGES = [{"role": "user", "content": "hi"}]


def nested(depth: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


def json_schema(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def refusal(**fields) -> str:
    with pytest.raises(ValidationError) as caught:
        ChatCompletionRequest(model="m", messages=MESSAGES, **fields)
    (error,) = caught.value.errors()
    return f"{'.'.join(map(str, error['loc']))}: {error['type']}"


def test_an_ordinary_schema_and_tool_pass_unchanged():
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "pattern": "^[A-Z][a-z]+$"}}}}}
    request = ChatCompletionRequest(model="m", messages=MESSAGES, response_format=json_schema(nested(5)), tools=[tool],
                                    tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert request.tools == [tool] and request.response_format == json_schema(nested(5))


def test_a_schema_nested_too_deep_is_refused_naming_the_field():
    assert refusal(response_format=json_schema(nested(MAX_SCHEMA_DEPTH))) == "response_format: schema_too_large"


def test_a_schema_with_too_many_values_is_refused():
    wide = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(MAX_SCHEMA_NODES)}}
    tool = {"type": "function", "function": {"name": "f", "parameters": wide}}
    assert refusal(tools=[tool]) == "tools.0: schema_too_large"


def test_a_long_pattern_is_refused_wherever_it_sits():
    long = "a" * (MAX_SCHEMA_PATTERN_CHARS + 1)
    assert refusal(response_format=json_schema({"type": "string", "pattern": long})) == \
        "response_format: schema_pattern_too_long"
    assert refusal(response_format=json_schema({"type": "object", "patternProperties": {long: {}}})) == \
        "response_format: schema_pattern_too_long"


def test_the_bound_counts_every_value_once():
    assert bounded_schema({"a": [1, 2, {"b": None}]}) == {"a": [1, 2, {"b": None}]}
