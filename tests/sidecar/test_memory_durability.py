"""kill -9 of the sidecar during a burst of adds: every acknowledged memory is there after the restart."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import Sidecar

pytestmark = pytest.mark.slow

BURST = 200


def test_acknowledged_adds_survive_kill_9(sidecar, engine_port, tmp_path):
    data_dir = tmp_path / "data"
    args = ["--engine-url", f"http://127.0.0.1:{engine_port}"]
    server = Sidecar(data_dir, args).start()
    acknowledged: list[str] = []

    def add(i: int) -> None:
        try:
            response = httpx.post(f"{server.base_url}/v1/memories", timeout=60, json={
                "user_id": "burst", "content": f"burst memory number {i} about topic {i % 17}"})
        except httpx.HTTPError:
            return
        if response.status_code == 200:
            acknowledged.append(response.json()["id"])
            if len(acknowledged) == BURST // 2:
                os.kill(server.process.pid, signal.SIGKILL)

    try:
        server.wait_ready(timeout_s=120)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(add, range(BURST)))
        assert server.process.wait(timeout=30) == -signal.SIGKILL
    finally:
        server.stop()
    assert BURST // 2 <= len(acknowledged) < BURST
    with Sidecar(data_dir, args).running() as restarted:
        missing = [i for i in acknowledged
                   if httpx.get(f"{restarted.base_url}/v1/memories/{i}", timeout=30).status_code != 200]
        found = httpx.post(f"{restarted.base_url}/v1/memories/search", timeout=60,
                           json={"user_id": "burst", "query": "burst memory number 3 about topic 3", "top_k": 3})
    assert missing == []
    assert found.status_code == 200 and found.json()["results"]
