"""The engine child is supervised: restarted when killed, and stopped with the sidecar leaving no process behind."""

from __future__ import annotations

import os
import signal
import time

import httpx
import openai
import pytest

from tests.conftest import Sidecar

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lone_sidecar(tmp_path_factory, tiny_model) -> Sidecar:
    with Sidecar(tmp_path_factory.mktemp("lifecycle") / "data", ["--model", str(tiny_model)]).running() as server:
        yield server


def engine_front_end_pid(server: Sidecar) -> int:
    for pid in server.descendants():
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        if b"vllm.entrypoints.openai.api_server" in cmdline:
            return pid
    raise AssertionError("no engine process found")


def chat(server: Sidecar) -> str:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    return reply.choices[0].message.content


def pin(server: Sidecar, text: str) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/activations/pin", json={"text": text}, timeout=120)


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_one_token_prompt_first_does_not_take_the_engine_down(lone_sidecar):
    # first in the module: the engine's first request from a caller (it crashed vLLM's CPU worker with LoRA on, on
    # a Xeon with AMX, until the sidecar warmed the engine up before calling it ready)
    response = pin(lone_sidecar, "0")
    assert response.status_code < 500, response.text
    assert chat(lone_sidecar)
    assert "memsidecar_engine_restarts_total 0.0" in httpx.get(f"{lone_sidecar.base_url}/metrics").text


def test_killed_engine_is_restarted_without_restarting_the_sidecar(lone_sidecar):
    assert chat(lone_sidecar)
    stored = "a prompt long enough to fill more than one block of the KV cache, stored before the engine is killed"
    assert pin(lone_sidecar, stored).status_code == 200
    sidecar_pid = lone_sidecar.process.pid
    os.kill(engine_front_end_pid(lone_sidecar), signal.SIGKILL)

    wait_for(lambda: httpx.get(f"{lone_sidecar.base_url}/readyz").status_code == 503, 30, "/readyz to turn 503")
    response = httpx.post(f"{lone_sidecar.base_url}/v1/chat/completions",
                          json={"messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 503
    assert response.json()["error"]["code"] in ("engine_not_ready", "engine_unavailable")

    lone_sidecar.wait_ready()
    assert chat(lone_sidecar)
    assert lone_sidecar.process.pid == sidecar_pid and lone_sidecar.process.poll() is None
    metrics = httpx.get(f"{lone_sidecar.base_url}/metrics").text
    assert "memsidecar_engine_restarts_total 1.0" in metrics
    # all of it but its last token loads from the KV store: a one-token forward pass, which a warm-up must precede
    assert pin(lone_sidecar, stored).status_code == 200
    assert "memsidecar_engine_restarts_total 1.0" in httpx.get(f"{lone_sidecar.base_url}/metrics").text


def test_engine_has_its_own_process_group_in_the_sidecars_session(lone_sidecar):
    # its own group: a stop kills all of it; the sidecar's session: one scheduling autogroup with the sidecar
    engine = engine_front_end_pid(lone_sidecar)
    sidecar = lone_sidecar.process.pid
    assert os.getpgid(engine) == engine != os.getpgid(sidecar)
    assert os.getsid(engine) == os.getsid(sidecar)


def test_sigterm_stops_the_sidecar_and_every_engine_process(lone_sidecar):
    sessions = lone_sidecar.process_sessions()
    assert len(lone_sidecar.live_pids(sessions)) >= 3  # sidecar, engine front end, engine core (+ worker)
    lone_sidecar.process.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal it caught, as a well-behaved server does
    assert lone_sidecar.process.wait(timeout=60) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in lone_sidecar.log_tail()
    wait_for(lambda: not lone_sidecar.live_pids(sessions), 30, "every engine process to exit")
