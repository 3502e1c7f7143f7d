"""Tool memory values: checking OpenAI tool schemas and the text that tool and trajectory memories hold. Pure.

A schema is accepted in the OpenAI tools form `{"type": "function", "function": {...}}` or as the bare function
object, and is stored in the full form. The function needs a `name` matching `^[A-Za-z0-9_-]{1,64}$` and
`parameters` that is a JSON-schema object (`"type": "object"`, `properties` a dict, `required` a list of names
among the properties); `description` is optional text. Errors name the offending path, e.g. `schema.function.name`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from textual.errors import InvalidMemoryError
from textual.memory import Memory

TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_SUMMARY_CHARS = 2_000
RECENT_EXAMPLES = 3


@dataclass(frozen=True)
class ToolMatch:
    """A tool found for a query: its schema memory, score, past outcomes and recent trajectories (newest first)."""

    memory: Memory
    score: float
    successes: int
    failures: int
    recent: tuple[Memory, ...]

    @property
    def name(self) -> str:
        return str(self.memory.metadata["tool_name"])

    @property
    def schema(self) -> Mapping[str, Any]:
        return self.memory.metadata["schema"]


def check_tool_schema(schema: object) -> dict[str, Any]:
    """The schema in the full OpenAI form, or InvalidMemoryError naming the bad path."""
    if not isinstance(schema, Mapping):
        raise InvalidMemoryError("schema", "must be an OpenAI tool object")
    if "function" in schema:
        if schema.get("type", "function") != "function":
            raise InvalidMemoryError("schema.type", f"must be 'function', got {schema.get('type')!r}")
        function = schema["function"]
    else:
        function = schema
    if not isinstance(function, Mapping):
        raise InvalidMemoryError("schema.function", "must be an object")
    name = function.get("name")
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        raise InvalidMemoryError("schema.function.name", f"must match {TOOL_NAME.pattern}, got {name!r}")
    description = function.get("description", "")
    if not isinstance(description, str):
        raise InvalidMemoryError("schema.function.description", "must be a string")
    _check_parameters(function.get("parameters"))
    return json.loads(json.dumps({"type": "function", "function": dict(function)}))


def _check_parameters(parameters: object) -> None:
    field = "schema.function.parameters"
    if not isinstance(parameters, Mapping) or parameters.get("type") != "object":
        raise InvalidMemoryError(field, 'must be a JSON-schema object with "type": "object"')
    properties = parameters.get("properties", {})
    if not isinstance(properties, Mapping) or not all(isinstance(v, Mapping) for v in properties.values()):
        raise InvalidMemoryError(f"{field}.properties", "must map parameter names to JSON-schema objects")
    required = parameters.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) and r in properties for r in required):
        raise InvalidMemoryError(f"{field}.required", "must be a list of names among the properties")
    try:
        json.dumps(parameters, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidMemoryError(field, f"must be plain JSON: {error}") from None


def tool_content(schema: Mapping[str, Any]) -> str:
    """What a tool schema memory holds and is found by: name, description and parameter names with theirs."""
    function = schema["function"]
    properties = function["parameters"].get("properties", {})
    params = "; ".join(f"{key}: {value.get('description', value.get('type', ''))}".strip()
                       for key, value in properties.items())
    return f"{function['name']}: {function.get('description', '')} ({params})"


def check_trajectory(arguments: object, result_summary: object, success: object, latency_ms: object) -> None:
    """InvalidMemoryError naming the field unless the trajectory parts are usable."""
    if not isinstance(arguments, Mapping) or not all(isinstance(key, str) for key in arguments):
        raise InvalidMemoryError("arguments", "must be a dict with string keys")
    try:
        json.dumps(arguments, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidMemoryError("arguments", f"must be plain JSON: {error}") from None
    if not isinstance(result_summary, str) or len(result_summary) > MAX_SUMMARY_CHARS:
        raise InvalidMemoryError("result_summary", f"must be a string of at most {MAX_SUMMARY_CHARS} characters")
    if not isinstance(success, bool):
        raise InvalidMemoryError("success", f"must be true or false, got {success!r}")
    if (not isinstance(latency_ms, (int, float)) or isinstance(latency_ms, bool) or not math.isfinite(latency_ms)
            or latency_ms < 0):
        raise InvalidMemoryError("latency_ms", f"must be a number >= 0, got {latency_ms!r}")


def trajectory_content(tool_name: str, arguments: Mapping[str, Any], result_summary: str, success: bool) -> str:
    """One line a trajectory memory holds, e.g. `get_weather({"city":"Oslo"}) -> ok: 4 C, rain`."""
    outcome = "ok" if success else "failed"
    summary = f": {result_summary}" if result_summary.strip() else ""
    return f"{tool_name}({json.dumps(arguments, separators=(',', ':'), sort_keys=True)}) -> {outcome}{summary}"


def with_outcome(schema_metadata: Mapping[str, Any], trajectory_id: str, success: bool) -> dict[str, Any]:
    """A tool schema's metadata after one more trajectory: counts and the newest trajectory ids."""
    key = "successes" if success else "failures"
    recent = [trajectory_id] + list(schema_metadata.get("recent", []))[:RECENT_EXAMPLES - 1]
    return {**schema_metadata, key: int(schema_metadata.get(key, 0)) + 1, "recent": recent}
