"""Tool schema and image URL checks: pure, each error names the offending field."""

import base64

import pytest

from textual.errors import InvalidMemoryError
from textual.images import check_image_url
from textual.tools import check_tool_schema, tool_content, trajectory_content, with_outcome

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
                   "required": ["city"]}}}
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG fake image bytes").decode()


def test_schema_is_stored_in_full_form_and_described_by_its_parameters():
    assert check_tool_schema(WEATHER["function"]) == WEATHER
    assert tool_content(WEATHER) == "get_weather: Current weather for a city (city: City name)"


def test_trajectory_line_and_outcome_counts():
    assert trajectory_content("get_weather", {"city": "Oslo"}, "4 C, rain", True) == \
        'get_weather({"city":"Oslo"}) -> ok: 4 C, rain'
    metadata = with_outcome(with_outcome({"successes": 0}, "t1", True), "t2", False)
    assert (metadata["successes"], metadata["failures"], metadata["recent"]) == (1, 1, ["t2", "t1"])


@pytest.mark.parametrize("schema, field", [
    ([], "schema"),
    ({"type": "retrieval", "function": {}}, "schema.type"),
    ({"function": "get_weather"}, "schema.function"),
    ({"name": "get weather", "parameters": {"type": "object"}}, "schema.function.name"),
    ({"name": "x" * 65, "parameters": {"type": "object"}}, "schema.function.name"),
    ({"name": "f", "description": 3, "parameters": {"type": "object"}}, "schema.function.description"),
    ({"name": "f"}, "schema.function.parameters"),
    ({"name": "f", "parameters": {"type": "string"}}, "schema.function.parameters"),
    ({"name": "f", "parameters": {"type": "object", "properties": []}}, "schema.function.parameters.properties"),
    ({"name": "f", "parameters": {"type": "object", "required": ["x"]}}, "schema.function.parameters.required"),
])
def test_bad_schema_names_the_path(schema, field):
    with pytest.raises(InvalidMemoryError) as error:
        check_tool_schema(schema)
    assert error.value.field == field


def test_image_urls_accepted():
    assert check_image_url("https://example.com/cat.png") == "https://example.com/cat.png"
    assert check_image_url(PNG) == PNG


@pytest.mark.parametrize("url, message", [
    ("ftp://example.com/cat.png", "scheme"), ("javascript:alert(1)", "scheme"), ("https://", "scheme"),
    ("data:text/html;base64,PGI+", "data:image"), ("data:image/png;base64,@@@", "data:image"),
    ("data:image/png;base64,abc", "base64"), ("https://e.com/" + "a" * 3000, "limit"), (None, "http"),
    ("data:image/png;base64," + base64.b64encode(b"x" * 2000).decode(), "larger"),
])
def test_bad_image_urls_name_the_field(url, message):
    with pytest.raises(InvalidMemoryError, match=message) as error:
        check_image_url(url, max_bytes=1000)
    assert error.value.field == "image_url"
