"""Two `memsidecar serve` processes on one PostgreSQL database (the session's throwaway server), each attached to a
small stand-in engine (the memory API needs none; chat gets a fixed reply): a memory added on A is found on B
within a second, a delete on B disappears from A, kill -9 of A during a burst of adds loses no acknowledged add, and
a stopped database gives 503s and degraded service, never a crash, until it is back."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.conftest import Sidecar

pytestmark = pytest.mark.slow

BURST = 120


class _StandInEngine(BaseHTTPRequestHandler):
    """Just enough of vLLM's API for the sidecar: health, one model, a fixed chat reply."""

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send({})
        else:
            self._send({"object": "list", "data": [{"id": "stand-in", "object": "model", "max_model_len": 4096}]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._send({"id": "c1", "object": "chat.completion", "created": 0, "model": "stand-in",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "a fixed reply"}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}})

    def _send(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def engine_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StandInEngine)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def node(tmp_path, name: str, engine_url: str, store_url: str) -> Sidecar:
    """A sidecar on the shared store (its URL in the environment, as a deployment gives it)."""
    (tmp_path / name).mkdir(exist_ok=True)
    return Sidecar(tmp_path / name / "data", ["--engine-url", engine_url, "--max-loras", "0",
                                              "--memory-lifecycle-interval-s", "3600"],
                   env={"MEMSIDECAR_STORE": store_url})


def add(server: Sidecar, content: str) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/memories", timeout=30, json={"user_id": "u", "content": content})


def search(server: Sidecar, query: str) -> list[str]:
    response = httpx.post(f"{server.base_url}/v1/memories/search", timeout=30,
                          json={"user_id": "u", "query": query, "top_k": 5})
    assert response.status_code == 200, response.text
    return [hit["id"] for hit in response.json()["results"]]


def seconds_until(condition, timeout_s: float) -> float:
    """Seconds from now to the start of the first check of `condition` that held; fails if no check started within
    `timeout_s` held (a check itself, a search that embeds its query, may take a while on a busy machine)."""
    started = time.monotonic()
    while True:
        asked = time.monotonic() - started
        assert asked < timeout_s, f"not within {timeout_s} s"
        if condition():
            return asked
        time.sleep(0.02)


def test_two_nodes_see_each_others_adds_and_deletes_within_a_second(tmp_path, engine_url, postgres_url):
    with node(tmp_path, "a", engine_url, postgres_url) as a, node(tmp_path, "b", engine_url, postgres_url) as b:
        assert add(a, "The office plant is a fern named Gerald").status_code == 200
        assert search(b, "office plant fern")  # B loads the tenant's index from the database
        added = add(a, "Lunch on Fridays is at the noodle bar").json()["id"]
        seen_after = seconds_until(lambda: added in search(b, "noodle bar lunch"), 1.0)
        assert httpx.delete(f"{b.base_url}/v1/memories/{added}", timeout=30).status_code in (200, 204)
        gone_after = seconds_until(lambda: added not in search(a, "noodle bar lunch"), 1.0)
        asked = time.monotonic()
        search(b, "noodle bar lunch")
        print(f"add on A found by a search on B asked {seen_after:.3f} s after the add; delete on B gone on A "
              f"{gone_after:.3f} s after; one search takes {time.monotonic() - asked:.3f} s")


def test_kill_9_during_a_burst_of_adds_loses_no_acknowledged_add(tmp_path, engine_url, postgres_url):
    acknowledged: list[str] = []
    with node(tmp_path, "b", engine_url, postgres_url) as b:
        a = node(tmp_path, "a", engine_url, postgres_url).start()

        def burst(i: int) -> None:
            try:
                response = add(a, f"burst memory number {i} about topic {i % 17}")
            except httpx.HTTPError:
                return
            if response.status_code == 200:
                acknowledged.append(response.json()["id"])
                if len(acknowledged) == BURST // 2:
                    os.kill(a.process.pid, signal.SIGKILL)

        try:
            a.wait_ready(timeout_s=120)
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(burst, range(BURST)))
            assert a.process.wait(timeout=30) == -signal.SIGKILL
        finally:
            a.stop()
        assert BURST // 2 <= len(acknowledged) < BURST
        missing = [i for i in acknowledged if httpx.get(f"{b.base_url}/v1/memories/{i}", timeout=30).status_code != 200]
        assert missing == []
        assert search(b, "burst memory number 3 about topic 3")


def test_a_stopped_database_gives_clear_errors_and_degraded_service_then_memory_works_again(
        tmp_path, engine_url, postgres_server):
    url = postgres_server.create_database(f"t_served_outage_{int(time.time() * 1000)}")
    with node(tmp_path, "a", engine_url, url) as a:
        kept = add(a, "The wifi password is on the fridge").json()["id"]
        assert kept in search(a, "wifi password")
        postgres_server.stop()
        try:
            seconds_until(lambda: httpx.get(f"{a.base_url}/readyz").json().get("status") == "degraded", 10)
            ready = httpx.get(f"{a.base_url}/readyz")
            assert ready.status_code == 200 and ready.json()["memory"]["ready"] is False
            assert "memsidecar_memory_store_ready 0.0" in httpx.get(f"{a.base_url}/metrics").text
            refused = add(a, "written while the database is away")
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "store_unavailable"
            assert "cannot be reached" in refused.json()["error"]["message"]
            assert kept in search(a, "wifi password")  # from the index in memory
            chat = httpx.post(f"{a.base_url}/v1/chat/completions", timeout=30, json={
                "messages": [{"role": "user", "content": "Where is the wifi password?"}], "user": "u"})
            assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"] == "a fixed reply"
            listed = httpx.get(f"{a.base_url}/v1/memories", params={"user_id": "u"}, timeout=30)
            assert listed.status_code == 503
        finally:
            postgres_server.start()
        seconds_until(lambda: httpx.get(f"{a.base_url}/readyz").json().get("status") == "ready", 20)
        again = add(a, "The spare bulbs are in the garage")
        assert again.status_code == 200 and again.json()["id"] in search(a, "spare bulbs garage")
        assert "memsidecar_memory_store_ready 1.0" in httpx.get(f"{a.base_url}/metrics").text
    assert "Traceback" not in (tmp_path / "a").joinpath(f"sidecar-{a.port}.log").read_text()
