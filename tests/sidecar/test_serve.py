"""A real `memsidecar serve` on the generated tiny model, driven by the official openai client and raw HTTP."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.conftest import API_KEYS, Sidecar, auth

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(sidecar) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{sidecar.base_url}/v1", api_key=API_KEYS["tenant-a"], max_retries=0)


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and "code" in error
    if code is not None:
        assert error["code"] == code
    return error


def test_models_lists_the_served_model(client, tiny_model):
    models = client.models.list().data
    assert models[0].id == "tiny"
    assert all(m.model_extra["parent"] == "tiny" and m.owned_by == "tenant-a" for m in models[1:])  # adapters


def test_chat_non_streaming_returns_text(client):
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hello there"}], max_tokens=8, temperature=0
    )
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content.strip()
    assert reply.usage.completion_tokens == 8


def test_chat_streaming_returns_the_same_text_as_non_streaming(client):
    messages = [{"role": "user", "content": "Stream me something"}]
    no_memory = {"memory": {"inject": False, "write": False}}  # the first reply must not join the second prompt
    whole = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0,
                                           extra_body=no_memory)
    stream = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0, stream=True,
                                            extra_body=no_memory)
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len(pieces) > 1
    assert "".join(pieces) == whole.choices[0].message.content


def test_model_defaults_to_the_served_model(sidecar):
    response = httpx.post(f"{sidecar.base_url}/v1/chat/completions",
                          json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}, headers=auth())
    assert response.status_code == 200
    assert response.json()["model"] == "tiny"


def test_text_completion(client):
    reply = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=5, temperature=0)
    assert reply.choices[0].text
    assert reply.usage.completion_tokens == 5


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        (b"{not json", "invalid_json", "JSON"),
        (json.dumps({"model": "tiny"}).encode(), "invalid_request", "messages"),
        (json.dumps({"model": "tiny", "messages": "hello"}).encode(), "invalid_request", "messages"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}).encode(), "invalid_request",
         "max_tokens"),
        (json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(), "invalid_request", "role"),
        (json.dumps({"messages": []}).encode(), "invalid_request", "messages"),
    ],
)
def test_bad_input_gets_a_400_naming_the_problem(sidecar, body, code, field):
    response = httpx.post(f"{sidecar.base_url}/v1/chat/completions", content=body,
                          headers={"content-type": "application/json", **auth()})
    error = assert_openai_error(response, 400, code)
    assert field in error["message"]


def test_unknown_model_is_a_404_in_openai_shape(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert caught.value.body["code"] == "model_not_found"
    assert "tiny" in caught.value.body["message"]


def test_over_long_body_is_a_413(sidecar):
    padding = "x" * 70_000  # the fixture's limit is 65,536 bytes
    response = httpx.post(f"{sidecar.base_url}/v1/chat/completions",
                          json={"messages": [{"role": "user", "content": padding}]}, headers=auth())
    assert_openai_error(response, 413, "request_too_large")


def test_over_long_chunked_body_is_a_413(sidecar):
    def chunks():
        for _ in range(20):
            yield b"x" * 8192

    response = httpx.post(f"{sidecar.base_url}/v1/chat/completions", content=chunks(),
                          headers={"content-type": "application/json", **auth()})
    assert_openai_error(response, 413, "request_too_large")


def test_engine_rejections_keep_their_status_and_shape(sidecar):
    too_long = {"messages": [{"role": "user", "content": "word " * 5000}], "max_tokens": 4}
    response = httpx.post(f"{sidecar.base_url}/v1/chat/completions", json=too_long, headers=auth())
    assert_openai_error(response, 400)


def test_unknown_route_is_a_404_in_openai_shape(sidecar):
    assert_openai_error(httpx.get(f"{sidecar.base_url}/v1/nothing-here", headers=auth()), 404)


def test_server_keeps_serving_after_bad_input(client, sidecar):
    httpx.post(f"{sidecar.base_url}/v1/chat/completions", content=b"\xff\xfe",
               headers={"content-type": "application/json", **auth()})
    reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "still there?"}],
                                           max_tokens=3)
    assert reply.choices[0].message.content


def test_health_readiness_and_metrics(sidecar):
    assert httpx.get(f"{sidecar.base_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{sidecar.base_url}/readyz").status_code == 200
    metrics = httpx.get(f"{sidecar.base_url}/metrics").text
    assert 'memsidecar_requests_total{method="POST",route="/v1/chat/completions",status="200"}' in metrics
    assert 'memsidecar_requests_total{method="POST",route="/v1/chat/completions",status="400"}' in metrics
    assert "memsidecar_request_duration_seconds_bucket" in metrics
    assert "memsidecar_engine_ready 1.0" in metrics
    assert "memsidecar_engine_restarts_total 0.0" in metrics


def test_attach_to_a_running_engine(sidecar, engine_port, tmp_path):
    attached = Sidecar(tmp_path / "data", ["--engine-url", f"http://127.0.0.1:{engine_port}"]).start()
    try:
        attached.wait_ready(timeout_s=60)
        reply = openai.OpenAI(base_url=f"{attached.base_url}/v1", api_key="unused").chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "via attach"}], max_tokens=3)
        assert reply.choices[0].message.content
        assert not (tmp_path / "data" / "models").exists(), "attach mode must not build a model"
    finally:
        attached.stop()
