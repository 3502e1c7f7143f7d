"""Each tenant's KV blocks on disk stay within `--tenant-max-kv-disk-bytes` in a real vLLM engine (CPU build, tiny
model, no RAM tier: every hit is read from disk) behind `memsidecar serve`: one tenant's flood of prompts evicts its
own oldest blocks, never another tenant's, and `/v1/whoami` and `/metrics` show the usage and the limit."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from sidecar.engine.process import free_port
from tests.conftest import Sidecar
from tests.kvcache.test_connector import BLOCK, external_hits, prompt

pytestmark = pytest.mark.slow
KEYS = {"tenant-a": "key-a", "tenant-b": "key-b"}
LIMIT = 400_000  # the tiny model's blocks of 32 tokens take 16-33 kB (bfloat16 or float32): 12 to 24 of them


@pytest.fixture(scope="module")
def budgeted(tiny_model, tmp_path_factory) -> Sidecar:
    keys = ",".join(f"{key}:{tenant}" for tenant, key in KEYS.items())
    server = Sidecar(tmp_path_factory.mktemp("kv-budget") / "data",
                     ["--model", str(tiny_model), "--api-keys", keys, "--rate-limit-per-minute", "0",
                      "--block-size", str(BLOCK), "--max-loras", "0", "--kv-ram-gib", "0",
                      "--tenant-max-kv-disk-bytes", str(LIMIT),
                      "--engine-args=--no-enable-prefix-caching"], engine_port=free_port())
    with server.running():
        yield server


def complete(server: Sidecar, tenant: str, tokens: list[int]) -> str:
    response = httpx.post(f"{server.base_url}/v1/completions", headers={"Authorization": f"Bearer {KEYS[tenant]}"},
                          json={"model": "tiny", "prompt": tokens, "max_tokens": 1, "temperature": 0}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["text"]


def disk_usage(server: Sidecar, tenant: str) -> tuple[int, int]:
    """(usage, limit) of `kv_disk_bytes` as `/v1/whoami` shows them to `tenant`."""
    body = httpx.get(f"{server.base_url}/v1/whoami", headers={"Authorization": f"Bearer {KEYS[tenant]}"},
                     timeout=30).json()
    return body["usage"]["kv_disk_bytes"], body["limits"]["kv_disk_bytes"]


def settled(server: Sidecar, tenant: str, at_least: int) -> int:
    """The tenant's disk bytes once they reached `at_least` and stopped changing (saves land in the background)."""
    deadline, last = time.monotonic() + 60, -1
    while time.monotonic() < deadline:
        used = disk_usage(server, tenant)[0]
        if used >= at_least and used == last:
            return used
        last = used
        time.sleep(1.0)
    raise AssertionError(f"{tenant}'s KV disk bytes did not settle at {at_least} or more within 60 s: {last}")


def test_a_flooding_tenant_evicts_its_own_blocks_and_the_others_stay(budgeted):
    kept = prompt(4 * BLOCK + 1, seed=900)
    kept_output = complete(budgeted, "tenant-b", kept)
    b_bytes = settled(budgeted, "tenant-b", 1)  # its 4 full blocks and the tail's
    assert disk_usage(budgeted, "tenant-b")[1] == LIMIT and disk_usage(budgeted, "tenant-a")[0] == 0

    floods = [prompt(4 * BLOCK + 1, seed=910 + i) for i in range(12)]
    assert len(floods) * b_bytes > 2 * LIMIT  # as many blocks again as the limit allows, and more
    for tokens in floods:
        complete(budgeted, "tenant-a", tokens)
    assert LIMIT // 2 <= settled(budgeted, "tenant-a", LIMIT // 2) <= LIMIT

    assert settled(budgeted, "tenant-b", b_bytes) == b_bytes  # none of B's blocks went for A's
    before = external_hits(budgeted)
    assert complete(budgeted, "tenant-b", kept) == kept_output
    assert external_hits(budgeted) - before == 4 * BLOCK  # and they still load
    before = external_hits(budgeted)
    complete(budgeted, "tenant-a", floods[-1])
    assert external_hits(budgeted) - before == 4 * BLOCK  # A keeps its newest blocks
    before = external_hits(budgeted)
    complete(budgeted, "tenant-a", floods[0])
    assert external_hits(budgeted) == before  # and lost its oldest

    metrics = httpx.get(f"{budgeted.base_url}/metrics", timeout=30).text
    assert re.search(rf'memsidecar_tenant_limit\{{resource="kv_disk_bytes"\}} {float(LIMIT)}', metrics)
    usage = re.search(r'memsidecar_tenant_usage\{resource="kv_disk_bytes",tenant="tenant-a"\} (\S+)', metrics)
    assert usage and 0 < float(usage.group(1)) <= LIMIT
