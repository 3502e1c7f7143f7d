"""Hostile tenants over HTTP, on real `memsidecar serve` processes: every quota refuses with its documented status and
names its limit, `/v1/whoami` and `/metrics` show usage and limits, `max_tokens` is bounded, and a full memory map
grows or answers 507, never 500.

Sidecars with small quotas attach to the session sidecar's engine (no second engine start); the tests that need the
managed engine's adapter slots or KV store use the session sidecar itself, as tenant-c, and clean up after.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import Sidecar, auth
from tests.sidecar.test_adapters_api import upload, zipped

pytestmark = pytest.mark.slow

KEYS = "key-a:tenant-a,key-b:tenant-b"
QUOTAS = ["--tenant-max-memories", "20", "--tenant-max-memory-bytes", "60000", "--tenant-max-engine-requests", "2",
          "--tenant-max-adapters", "1", "--tenant-max-distill-jobs", "1", "--max-output-tokens", "1024"]


@pytest.fixture(scope="module")
def small(sidecar, engine_port, tiny_model, tmp_path_factory) -> Sidecar:
    """A sidecar on the session engine whose tenants have small quotas."""
    args = ["--engine-url", f"http://127.0.0.1:{engine_port}", "--model", str(tiny_model), "--api-keys", KEYS,
            "--rate-limit-per-minute", "0", "--max-loras", "2", "--max-cpu-loras", "4", *QUOTAS]
    with Sidecar(tmp_path_factory.mktemp("small") / "data", args).running() as server:
        yield server


def post(server: Sidecar, path: str, tenant: str = "tenant-a", **body) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, headers=auth(tenant), timeout=120)


def refused(response: httpx.Response, status: int, resource: str, limit: int) -> dict:
    """The error of a quota refusal, checked: status, code, the resource as `param` and the limit in the message."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("quota_exceeded", resource)
    assert f"quota exceeded: {resource}" in error["message"] and f"limit {limit}," in error["message"]
    return error


def whoami(server: Sidecar, tenant: str = "tenant-a") -> dict:
    response = httpx.get(f"{server.base_url}/v1/whoami", headers=auth(tenant), timeout=30)
    assert response.status_code == 200
    return response.json()


def test_memory_count_quota_is_a_413_naming_its_limit_and_whoami_shows_it(small):
    for i in range(20):
        assert post(small, "/v1/memories", user_id="u", content=f"note {i}: the kiln is at {i}00 degrees",
                    type="episode").status_code == 200
    refused(post(small, "/v1/memories", user_id="u", content="one too many", type="episode"), 413, "memories", 20)
    many = [{"role": "user", "content": f"turn {i}"} for i in range(5)]
    refused(post(small, "/v1/memories/messages", user_id="u", messages=many), 413, "memories", 20)
    me = whoami(small)
    assert me["tenant"] == "tenant-a" and me["usage"]["memories"] == 20 and me["limits"]["memories"] == 20
    assert whoami(small, "tenant-b")["usage"]["memories"] == 0  # the other tenant is untouched
    assert post(small, "/v1/memories", "tenant-b", user_id="u", content="tenant b still writes").status_code == 200
    deleted = httpx.get(f"{small.base_url}/v1/memories", params={"limit": 1}, headers=auth(), timeout=30).json()
    assert httpx.delete(f"{small.base_url}/v1/memories/{deleted['data'][0]['id']}", headers=auth()).status_code == 200
    assert post(small, "/v1/memories", user_id="u", content="room again after a delete").status_code == 200


def test_memory_bytes_quota_is_a_413_naming_its_limit(small):
    big = "The glaze recipe calls for feldspar, silica and whiting. " * 260  # ~15 kB
    for _ in range(3):
        written = post(small, "/v1/memories", "tenant-b", user_id="v", content=big, type="episode")
        assert written.status_code == 200
    refused(post(small, "/v1/memories", "tenant-b", user_id="v", content=big, type="episode"), 413, "memory_bytes",
            60000)
    usage = whoami(small, "tenant-b")["usage"]
    assert 3 * len(big) < usage["memory_bytes"] <= 60000
    # an update keeps the previous content as a version, which counts: it no longer fits either
    update = httpx.patch(f"{small.base_url}/v1/memories/{written.json()['id']}", json={"content": big.upper()},
                         headers=auth("tenant-b"), timeout=120)
    refused(update, 413, "memory_bytes", 60000)
    assert whoami(small, "tenant-b")["usage"]["memory_bytes"] == usage["memory_bytes"]


def test_engine_slots_per_tenant_are_a_429_and_leave_other_tenants_served(small):
    def complete(tenant: str) -> httpx.Response:
        return post(small, "/v1/completions", tenant, prompt="Once upon a time", max_tokens=1024, ignore_eos=True,
                    temperature=0)  # long enough to overlap: the flood's requests are all in flight together

    with ThreadPoolExecutor(7) as pool:
        flood = [pool.submit(complete, "tenant-a") for _ in range(6)]
        other = pool.submit(complete, "tenant-b")
        responses = [future.result() for future in flood]
    statuses = sorted(response.status_code for response in responses)
    assert set(statuses) <= {200, 429} and statuses.count(200) >= 2 and statuses.count(429) >= 1, statuses
    for response in responses:
        if response.status_code == 429:
            refused(response, 429, "engine_requests", 2)
            assert response.headers["retry-after"] == "1"
    assert other.result().status_code == 200


def test_max_tokens_over_the_ceiling_is_a_400_naming_the_field_and_unset_gets_the_ceiling(small, sidecar):
    chat = {"messages": [{"role": "user", "content": "Say something"}], "memory": {"inject": False, "write": False}}
    for field in ("max_tokens", "max_completion_tokens"):
        response = post(small, "/v1/chat/completions", **chat, **{field: 1025})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == field and "1025 is more than this sidecar allows, 1024" in error["message"]
    unset = post(small, "/v1/chat/completions", **chat, ignore_eos=True, temperature=0)
    assert unset.status_code == 200 and unset.json()["usage"]["completion_tokens"] == 1024
    context = post(sidecar, "/v1/completions", "tenant-c", prompt="Hello", max_tokens=2049)  # tiny: 2,048 tokens
    assert context.status_code == 400 and context.json()["error"]["param"] == "max_tokens"
    assert "2048 (the model's context length" in context.json()["error"]["message"]


def test_adapter_quota_is_a_413_and_distillation_jobs_a_409(small, adapter_dirs):
    assert upload(small, "mine", zipped(adapter_dirs[0])).status_code == 200
    refused(upload(small, "second", zipped(adapter_dirs[1])), 413, "adapters", 1)
    examples = [{"question": f"What colour is parrot {i}?", "answer": "Green."} for i in range(4)]
    job = post(small, "/v1/adapters/distill", "tenant-b", name="slow", examples=examples, max_steps=100_000)
    assert job.status_code == 202, job.text
    try:
        refused(post(small, "/v1/adapters/distill", "tenant-b", name="other", examples=examples), 409,
                "distill_jobs", 1)
        assert whoami(small, "tenant-b")["usage"]["distill_jobs"] == 1
    finally:
        httpx.post(f"{small.base_url}/v1/adapters/jobs/{job.json()['id']}/cancel", headers=auth("tenant-b"))


def test_pinned_adapters_and_pinned_activations_are_409s_on_the_managed_engine(sidecar, adapter_dirs):
    names = ["quota-pin-0", "quota-pin-1"]
    for name, directory in zip(names, adapter_dirs[:2]):
        assert upload(sidecar, name, zipped(directory), tenant="tenant-c").status_code == 200
    pins: list[str] = []
    try:
        assert post(sidecar, f"/v1/adapters/{names[0]}/pin", "tenant-c").status_code == 200
        refused(post(sidecar, f"/v1/adapters/{names[1]}/pin", "tenant-c"), 409, "pinned_adapters", 1)
        assert post(sidecar, f"/v1/adapters/{names[0]}/pin", "tenant-c").status_code == 200  # pinning again is free
        for i in range(16):
            response = post(sidecar, "/v1/activations/pin", "tenant-c", text=f"Pinned prefix number {i}.")
            assert response.status_code == 200, response.text
            pins.append(response.json()["id"])
        refused(post(sidecar, "/v1/activations/pin", "tenant-c", text="one more"), 409, "pinned_kv", 16)
        usage = whoami(sidecar, "tenant-c")["usage"]
        assert (usage["pinned_adapters"], usage["pinned_kv"]) == (1, 16)
    finally:
        for pin_id in pins:
            httpx.delete(f"{sidecar.base_url}/v1/activations/pin/{pin_id}", headers=auth("tenant-c"), timeout=60)
        post(sidecar, f"/v1/adapters/{names[0]}/unpin", "tenant-c")
        for name in names:
            httpx.delete(f"{sidecar.base_url}/v1/adapters/{name}", headers=auth("tenant-c"), timeout=60)


def test_metrics_show_usage_limits_and_refusals_per_tenant(small):
    text = httpx.get(f"{small.base_url}/metrics", timeout=30).text
    assert re.search(r'memsidecar_tenant_limit\{resource="memories"\} 20\.0', text)
    assert re.search(r'memsidecar_tenant_usage\{resource="memories",tenant="tenant-a"\} \d+', text)
    refusals = re.findall(r'memsidecar_quota_refusals_total\{resource="(\w+)",tenant="tenant-a"\} (\d+)', text)
    assert dict(refusals).get("memories") and int(dict(refusals)["memories"]) >= 2


@pytest.fixture(scope="module")
def adapter_dirs(tiny_model, tmp_path_factory):
    from adapters.synthetic import random_adapter

    root = tmp_path_factory.mktemp("quota-peft")
    return [random_adapter(tiny_model, root / f"q{seed}", seed) for seed in range(2)]
