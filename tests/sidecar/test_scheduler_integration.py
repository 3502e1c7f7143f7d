"""The tier scheduler on a real sidecar whose CPU RAM budget is small: KV blocks in the engine worker's RAM tier,
LoRA adapters and three tenants' memory indexes compete for it. The budget holds after every pass, the scheduler
releases KV namespaces from the worker's RAM (by command), releases indexes and unloads adapters through the real
engine, and greedy outputs, injected memories and searches stay the same."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from adapters.synthetic import random_adapter
from tests.conftest import Sidecar
from tests.sidecar.test_adapters_api import zipped

pytestmark = pytest.mark.slow

KEYS = {"t-one": "key-one", "t-two": "key-two", "t-three": "key-three"}
FACTS = {
    "t-one": "My sister Odile repairs church organs in Lyon",
    "t-two": "My neighbour Teodor breeds racing pigeons on his roof",
    "t-three": "My uncle Thibault collects antique brass telescopes",
}
DIARY = ["I walked along the river before breakfast", "The bakery on the corner sells rye bread on Fridays",
         "My bicycle needs a new rear tyre", "We planted tulips by the fence in October",
         "The train to the coast was delayed by an hour", "I finished reading a novel about lighthouse keepers",
         "Our kitchen tap has been dripping all week", "The choir rehearses on Tuesday evenings"]
KV_RAM_BYTES = 2**20  # the worker's KV RAM tier may hold this much by its own LRU; the scheduler counts what it holds
CPU_BUDGET_BYTES = 48_000  # room for one tiny adapter (~30 KB), not for the three, nor the indexes, nor the chats' KV
DISK_BUDGET_BYTES = 1_000_000  # the stores take ~300 KB, the chats' KV blocks ~850 KB: some KV must go


def auth(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[tenant]}"}


@pytest.fixture(scope="module")
def tight(tmp_path_factory, tiny_model) -> Sidecar:
    keys = ",".join(f"{key}:{tenant}" for tenant, key in KEYS.items())
    server = Sidecar(tmp_path_factory.mktemp("tight") / "data",
                     ["--model", str(tiny_model), "--api-keys", keys, "--max-loras", "2", "--max-cpu-loras", "4",
                      "--kv-ram-gib", repr(KV_RAM_BYTES / 2**30), "--tier-cpu-gib", repr(CPU_BUDGET_BYTES / 2**30),
                      "--tier-disk-gib", repr(DISK_BUDGET_BYTES / 2**30), "--tier-interval-s", "1",
                      "--engine-args=--no-enable-prefix-caching"])
    with server.running():
        yield server


def chat(server: Sidecar, tenant: str, model: str, question: str, inject: bool) -> tuple[str, list[str]]:
    body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": 8, "temperature": 0,
            "user": "u1", "memory": {"inject": inject, "write": False}}
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, headers=auth(tenant), timeout=120)
    assert response.status_code == 200, response.text
    answer = response.json()
    return answer["choices"][0]["message"]["content"], answer["memory"]["ids"]


def tiers(server: Sidecar) -> dict:
    return httpx.get(f"{server.base_url}/v1/tiers", headers=auth("t-one"), timeout=30).json()


def wait_for_passes(server: Sidecar, count: int, timeout_s: float = 60) -> dict:
    """The tiers report once `count` more scheduler passes have run."""
    target = tiers(server)["scheduler"]["passes"] + count
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        report = tiers(server)
        if report["scheduler"]["passes"] >= target:
            return report
        time.sleep(0.2)
    raise TimeoutError(f"fewer than {count} scheduler passes in {timeout_s} s")


def done_moves(report: dict, action: str, kind: str) -> int:
    return sum(m["count"] for m in report["scheduler"]["moves_total"]
               if (m["action"], m["kind"], m["outcome"]) == (action, kind, "done"))


def worker_after_releases(server: Sidecar, timeout_s: float = 60) -> dict:
    """The engine worker's published figures once it has applied a command and its RAM tier holds little KV (the
    scheduler releases KV namespaces from it: one adapter fills the CPU budget)."""
    path = server.data_dir / "kv" / "worker-stats.json"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        worker = json.loads(path.read_text()) if path.exists() else {}
        if worker.get("applied_command", 0) >= 1 and sum(worker["ram_namespaces"].values()) <= CPU_BUDGET_BYTES:
            return worker
        time.sleep(0.5)
    raise TimeoutError(f"the worker did not release KV from RAM in {timeout_s} s: {worker}")


def assert_within_budget(report: dict) -> None:
    scheduler = report["scheduler"]
    usage, budgets = scheduler["last_pass"]["usage"], scheduler["budgets"]
    assert (budgets["cpu_bytes"], budgets["disk_bytes"]) == (CPU_BUDGET_BYTES, DISK_BUDGET_BYTES)
    assert usage["cpu_bytes"] <= budgets["cpu_bytes"], scheduler["last_pass"]
    assert usage["disk_bytes"] <= budgets["disk_bytes"] and usage["loaded_adapters"] <= budgets["adapter_slots"]


def test_a_small_ram_budget_holds_while_outputs_and_memories_stay_the_same(tight, tiny_model, tmp_path):
    adapters = []
    for seed in range(3):
        name = f"tier-{seed}"
        response = httpx.post(f"{tight.base_url}/v1/adapters", params={"name": name}, timeout=120,
                              content=zipped(random_adapter(tiny_model, tmp_path / name, seed)),
                              headers={"content-type": "application/zip", **auth("t-one")})
        assert response.status_code == 200, response.text
        adapters.append(name)
    for tenant, fact in FACTS.items():
        for content in [fact, *DIARY]:
            response = httpx.post(f"{tight.base_url}/v1/memories", headers=auth(tenant), timeout=60,
                                  json={"user_id": "u1", "content": content})
            assert response.status_code == 200, response.text
    jobs = [(tenant, "tiny", "Who in my family has an unusual hobby?", True) for tenant in FACTS]
    jobs += [("t-one", name, "The greenhouse door was", False) for name in adapters for _ in range(3 - int(name[-1]))]

    before = [chat(tight, *job) for job in jobs]
    assert all(ids for (_, ids), job in zip(before, jobs) if job[3])  # each tenant's memories were injected
    assert len({text for (text, _), job in zip(before, jobs) if not job[3]}) == 3  # each adapter changes the output

    settled = wait_for_passes(tight, 2)
    assert_within_budget(settled)
    assert done_moves(settled, "demote", "memory_index") >= 3  # every index was released at least once
    assert done_moves(settled, "demote", "adapter") >= 2  # two of three adapters had to leave the engine
    assert done_moves(settled, "evict", "kv") >= 1  # cold KV namespaces left the disk
    worker = worker_after_releases(tight)  # the engine worker carried out the scheduler's release commands
    assert worker["applied_command"] >= 1 and done_moves(tiers(tight), "demote", "kv") >= 1
    assert settled["cpu_ram"]["memory_indexes"]["tenants_loaded"] == 0
    residency = {a["name"]: a["residency"] for a in
                 httpx.get(f"{tight.base_url}/v1/adapters", headers=auth("t-one")).json()["data"]}
    assert sorted(residency.values()) == ["disk", "disk", "loaded"]  # one adapter fits, nothing else

    assert [chat(tight, *job) for job in jobs] == before  # reloaded adapters, rebuilt indexes, recomputed KV
    hits = httpx.post(f"{tight.base_url}/v1/memories/search", headers=auth("t-three"), timeout=60,
                      json={"query": "who collects telescopes", "user_id": "u1", "top_k": 3}).json()
    assert "Thibault" in hits["results"][0]["content"]  # its index was released; the search rebuilt it

    again = wait_for_passes(tight, 2)
    assert_within_budget(again)
    metrics = httpx.get(f"{tight.base_url}/metrics").text
    assert metric(metrics, 'memsidecar_tier_budget_bytes{tier="cpu"}') == CPU_BUDGET_BYTES
    assert metric(metrics, 'memsidecar_tier_usage_bytes{tier="cpu"}') <= CPU_BUDGET_BYTES
    assert metric(metrics, 'memsidecar_tier_moves_total{action="demote",kind="adapter",outcome="done"}') >= 2


def metric(text: str, series: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(series + " "))
    return float(line.rsplit(" ", 1)[1])
