"""Extraction of facts, preferences and events through a real engine (the tiny model, random weights: the content is
meaningless, structured outputs keep it schema-valid), and the plain path standing alone when extraction is off or
its engine call fails."""

from __future__ import annotations

import re
import time
import uuid

import httpx
import openai
import pytest

from sidecar.engine.process import free_port
from tests.conftest import Sidecar

pytestmark = pytest.mark.slow

KEY = "key-extract"
HEADERS = {"Authorization": f"Bearer {KEY}"}
TURNS = [  # fixed times: the same conversation gives the same prompt, and greedy decoding the same answer
    {"role": "user", "content": "I moved to Berlin last month and I love the parks.", "turn_id": "c1-t1",
     "time": 1_714_557_600},
    {"role": "assistant", "content": "That sounds lovely. Which park is your favourite?", "turn_id": "c1-t2",
     "time": 1_714_557_660},
    {"role": "user", "content": "Tempelhof. I prefer tea to coffee, and I run a marathon on May 12.",
     "turn_id": "c1-t3", "time": 1_714_557_720},
]
TURN_IDS = {turn["turn_id"] for turn in TURNS}
EXTRACTED = ["fact", "preference", "event"]


@pytest.fixture(scope="module")
def extracting(tiny_model, tmp_path_factory):
    """A sidecar with extraction on and an engine of its own (which then runs structured outputs compactly)."""
    server = Sidecar(tmp_path_factory.mktemp("extracting") / "data",
                     ["--model", str(tiny_model), "--api-keys", f"{KEY}:tenant-x", "--memory-extraction"],
                     engine_port=free_port())
    with server.running():
        yield server


def attached(extracting: Sidecar, data_dir, *extra: str) -> Sidecar:
    """Another sidecar on the same engine (no second engine to start), with a memory of its own."""
    return Sidecar(data_dir, ["--engine-url", f"http://127.0.0.1:{extracting.engine_port}", "--api-keys",
                              f"{KEY}:tenant-x", *extra])


@pytest.fixture(scope="module")
def plain(extracting, tmp_path_factory):
    with attached(extracting, tmp_path_factory.mktemp("plain") / "data").running() as server:
        yield server


@pytest.fixture(scope="module")
def misconfigured(extracting, tmp_path_factory):
    server = attached(extracting, tmp_path_factory.mktemp("misconfigured") / "data", "--memory-extraction",
                      "--memory-extraction-model", "no-such-model")
    with server.running():
        yield server


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def write(server: Sidecar, user: str, **fields) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/memories/messages", json={"user_id": user, "messages": TURNS, **fields},
                      headers=HEADERS, timeout=300)


def listed(server: Sidecar, user: str, types: list[str]) -> list[dict]:
    response = httpx.get(f"{server.base_url}/v1/memories", params={"user_id": user, "type": types}, headers=HEADERS)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def metric(server: Sidecar, name: str) -> float:
    text = httpx.get(f"{server.base_url}/metrics").text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def wait_for(condition, timeout_s: float = 240.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError("condition not met")


def assert_extracted(memories: list[dict], turn_ids: set[str]) -> None:
    for memory in memories:
        assert memory["type"] in EXTRACTED
        assert memory["source"] and set(memory["source"]) <= turn_ids
        assert memory["metadata"]["extracted_by"] == "tiny"
        assert 0 < len(memory["content"]) <= 200


def test_a_waited_extraction_stores_episodes_and_memories_linked_to_their_turns(extracting):
    user = new_user()
    response = write(extracting, user, extract=True)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [m["type"] for m in body["data"]] == ["episode"] * 3
    assert [m["source"] for m in body["data"]] == [[t["turn_id"]] for t in TURNS]
    extraction = body["extraction"]
    assert extraction["status"] == "done" and extraction["error"] is None
    assert extraction["memories"], "the schema-constrained answer held no memory"
    assert_extracted(extraction["memories"], TURN_IDS)
    stored = listed(extracting, user, EXTRACTED)
    assert {m["id"] for m in stored} == {m["id"] for m in extraction["memories"]}
    assert len(listed(extracting, user, ["episode"])) == 3
    assert metric(extracting, 'memsidecar_memory_extractions_total{outcome="done"}') >= 1
    assert metric(extracting, 'memsidecar_extracted_memories_total{outcome="stored"}') >= len(stored)


def test_extracting_the_same_conversation_again_merges_into_the_stored_memories(extracting):
    user = new_user()
    first = write(extracting, user, extract=True).json()["extraction"]["memories"]
    again = write(extracting, user, extract=True).json()["extraction"]["memories"]
    assert first and {m["id"] for m in again} == {m["id"] for m in first}
    assert all(m["access_count"] == 1 for m in again)  # reinforced by the repeat, not copied
    assert len(listed(extracting, user, EXTRACTED)) == len(first)
    assert len(listed(extracting, user, ["episode"])) == 6


def test_by_default_extraction_runs_after_the_response(extracting):
    user = new_user()
    response = write(extracting, user)
    assert response.status_code == 200 and "extraction" not in response.json()
    memories = wait_for(lambda: listed(extracting, user, EXTRACTED))
    assert_extracted(memories, TURN_IDS)
    skipped = new_user()
    assert write(extracting, skipped, extract=False).status_code == 200
    time.sleep(2)
    assert listed(extracting, skipped, EXTRACTED) == []


def test_a_chat_turn_is_extracted_from_its_recorded_episodes(extracting):
    user = new_user()
    client = openai.OpenAI(base_url=f"{extracting.base_url}/v1", api_key=KEY, max_retries=0)
    client.chat.completions.create(model="tiny", user=user, max_tokens=8, temperature=0,
                                   messages=[{"role": "user", "content": "My sister Eve lives in Lisbon."}])
    episodes = wait_for(lambda: listed(extracting, user, ["episode"]))
    memories = wait_for(lambda: listed(extracting, user, EXTRACTED))
    assert_extracted(memories, {episode["id"] for episode in episodes})  # unnamed turns: the episodes' own ids


def test_with_extraction_off_only_episodes_are_stored(plain):
    user = new_user()
    refused = write(plain, user, extract=True)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "extraction_off"
    assert listed(plain, user, ["episode"]) == []  # refused before anything was written
    response = write(plain, user)
    assert response.status_code == 200 and "extraction" not in response.json()
    time.sleep(2)
    assert len(listed(plain, user, ["episode"])) == 3
    assert listed(plain, user, EXTRACTED) == []
    assert "memsidecar_memory_extractions" not in httpx.get(f"{plain.base_url}/metrics").text


def test_an_engine_failure_keeps_the_episodes_and_is_counted(misconfigured):
    user = new_user()
    response = write(misconfigured, user, extract=True)
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 3
    extraction = response.json()["extraction"]
    assert extraction["status"] == "failed" and "no-such-model" in extraction["error"]
    assert metric(misconfigured, 'memsidecar_memory_extractions_total{outcome="failed"}') == 1
    assert write(misconfigured, new_user()).status_code == 200  # in the background: fails, counted
    wait_for(lambda: metric(misconfigured, 'memsidecar_memory_extractions_total{outcome="failed"}') == 2)
    assert len(listed(misconfigured, user, ["episode"])) == 3
    assert listed(misconfigured, user, EXTRACTED) == []
    assert metric(misconfigured, 'memsidecar_memory_extractions_total{outcome="done"}') == 0
