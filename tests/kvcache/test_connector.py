"""memsidecar's KV connector in a real vLLM engine (CPU build, tiny model), through `memsidecar serve`.

vLLM's own prefix cache is off in these engines, so every hit comes from our store. A request under another
`cache_salt` (isolation scope) is a miss by construction, which gives the recompute reference for any prompt.
"""

from __future__ import annotations

import concurrent.futures
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import lmdb
import numpy as np
import pytest

from adapters.synthetic import random_adapter
from kvcache.worker_stats import read_stats, stats_path
from sidecar.engine.process import free_port
from tests.conftest import RedisServer, Sidecar

pytestmark = pytest.mark.slow
BLOCK = 32
SHARED_SECRET = "the-nodes-shared-secret-0123456789"


@pytest.fixture(scope="module")
def kv_data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kv") / "data"


@pytest.fixture(scope="module")
def shared_tier(tmp_path_factory) -> RedisServer:
    with RedisServer(tmp_path_factory.mktemp("redis")).running() as server:
        yield server


@pytest.fixture(scope="module")
def lora_adapters(tiny_model, tmp_path_factory) -> dict[str, Path]:
    """Two PEFT adapters with random non-zero weights: each gives the tiny model its own outputs."""
    adapters = {}
    for seed, name in enumerate(("adapter-a", "adapter-b")):
        adapters[name] = random_adapter(tiny_model, tmp_path_factory.mktemp(name), seed)
    return adapters


@pytest.fixture(scope="module")
def kv_sidecar(kv_data_dir, tiny_model, shared_tier, lora_adapters):
    modules = " ".join(f"{name}={path}" for name, path in lora_adapters.items())
    engine_args = f"--no-enable-prefix-caching --enable-lora --max-lora-rank 8 --max-loras 2 --lora-modules {modules}"
    server = Sidecar(kv_data_dir, ["--model", str(tiny_model), "--kv-remote-url", shared_tier.url,
                                   "--block-size", str(BLOCK), "--engine-args", engine_args], engine_port=free_port(),
                     env={"MEMSIDECAR_KV_REMOTE_SECRET": SHARED_SECRET})
    with server.running():
        yield server


def prompt(length: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(3, 2000, size=length).tolist()


def complete(server: Sidecar, tokens: list[int], salt: str | None = None, model: str = "tiny") -> str:
    """Through the sidecar (its tenant's scope), or with `salt` straight to its engine: the sidecar refuses a
    client's `cache_salt`, and these tests need scopes of their own choosing."""
    body = {"model": model, "prompt": tokens, "max_tokens": 8, "temperature": 0}
    url = server.base_url
    if salt:
        body["cache_salt"] = salt
        url = f"http://127.0.0.1:{server.engine_port}"
    response = httpx.post(f"{url}/v1/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["text"]


def external_hits(server: Sidecar) -> float:
    metrics = httpx.get(f"http://127.0.0.1:{server.engine_port}/metrics").text
    return float(re.search(r"^vllm:external_prefix_cache_hits_total\{[^}]*\} (\S+)$", metrics, re.M).group(1))


def saved_then_hit(server: Sidecar, tokens: list[int]) -> tuple[str, str, float]:
    """The output computed from scratch, the output with a hit, and how many tokens the hit loaded."""
    computed = complete(server, tokens)
    before = external_hits(server)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # saves land in the background; the next request hits once they have
        hit = complete(server, tokens)
        loaded = external_hits(server) - before
        if loaded:
            return computed, hit, loaded
        time.sleep(0.2)
    raise AssertionError("no KV hit within 60 s of requests")


@pytest.mark.parametrize("length", [BLOCK + 1, 10 * BLOCK + 1, 7 * BLOCK + 13])
def test_outputs_are_token_identical_with_a_hit(kv_sidecar, length):
    tokens = prompt(length, seed=length)
    computed, hit, loaded = saved_then_hit(kv_sidecar, tokens)
    assert hit == computed
    assert loaded == length - 1  # everything but the last prompt token, whose logits the engine needs


def test_the_worker_publishes_its_tiers_and_loads_in_one_copy(kv_sidecar, kv_data_dir):
    """The RAM tier's figures reach the sidecar through the worker's stats file; on the CPU, hits are decoded
    straight into the paged KV cache (no staging buffer)."""
    import json

    from kvcache.worker_stats import stats_path

    path = stats_path(kv_data_dir / "kv")

    def ram_hits() -> tuple[int, dict]:
        stats = json.loads(path.read_text()) if path.exists() else {}
        return stats.get("ram", {}).get("hits", 0), stats

    time.sleep(2.5)  # the worker publishes every 2 s: start from a snapshot after earlier tests' loads
    before, _ = ram_hits()
    saved_then_hit(kv_sidecar, prompt(3 * BLOCK + 5, seed=7))
    deadline = time.monotonic() + 30
    while (hits := ram_hits())[0] < before + 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    count, stats = hits
    assert stats["load_path"] == "direct"
    assert stats["loads"]["blocks"] >= 3 and stats["loads"]["bytes_per_s"] > 0 and stats["loads"]["forward_seconds"] > 0
    assert count >= before + 3 and stats["ram"]["entries"] >= 3 and stats["disk"]["entries"] >= 3


def test_a_shared_prefix_is_loaded_and_the_suffix_computed(kv_sidecar):
    prefix = prompt(6 * BLOCK, seed=100)
    saved_then_hit(kv_sidecar, prefix + prompt(20, seed=101))
    other = prefix + prompt(45, seed=102)
    before = external_hits(kv_sidecar)
    with_prefix = complete(kv_sidecar, other)
    assert external_hits(kv_sidecar) - before == 6 * BLOCK
    assert with_prefix == complete(kv_sidecar, other, salt="fresh-scope-for-reference")


def test_another_scope_never_loads_these_blocks(kv_sidecar):
    tokens = prompt(4 * BLOCK + 5, seed=200)
    saved_then_hit(kv_sidecar, tokens)
    before = external_hits(kv_sidecar)
    complete(kv_sidecar, tokens, salt="tenant-b")
    assert external_hits(kv_sidecar) == before


def test_adapters_and_the_base_model_never_load_each_others_blocks(kv_sidecar):
    tokens = prompt(6 * BLOCK + 1, seed=250)
    under_a = complete(kv_sidecar, tokens, model="adapter-a")
    before = external_hits(kv_sidecar)
    under_b = complete(kv_sidecar, tokens, model="adapter-b")
    base = complete(kv_sidecar, tokens)
    assert external_hits(kv_sidecar) == before, "KV computed under adapter A was loaded for B or the base model"
    assert len({under_a, under_b, base}) == 3  # the adapters really change the computation
    assert complete(kv_sidecar, tokens, model="adapter-a") == under_a


def test_concurrent_requests_with_overlapping_prefixes_are_all_correct(kv_sidecar):
    base = prompt(5 * BLOCK, seed=300)
    prompts = [base + prompt(10 + 7 * i, seed=310 + i) for i in range(10)]
    references = [complete(kv_sidecar, p, salt=f"reference-{i}") for i, p in enumerate(prompts)]
    complete(kv_sidecar, base + [5])
    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        outputs = list(pool.map(lambda p: complete(kv_sidecar, p), prompts))
    assert outputs == references


def test_the_engine_seals_its_shared_blocks_and_no_command_line_shows_the_secret(kv_sidecar, shared_tier):
    """The secret reaches the connector in the engine's environment: ps (every process's argv) never shows it."""
    import redis

    from kvcache.remote_tier import KEY_PREFIX

    saved_then_hit(kv_sidecar, prompt(3 * BLOCK + 1, seed=450))
    client = redis.Redis.from_url(shared_tier.url)
    deadline = time.monotonic() + 30  # the remote write follows the local ones, on the connector's writer thread
    while not (names := list(client.scan_iter(match=KEY_PREFIX + b"*"))) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert names and all(client.getrange(name, 0, 3) == b"MSKA" for name in names)
    for pid in kv_sidecar.descendants():
        assert SHARED_SECRET.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_the_shared_tier_going_away_fails_no_request(kv_sidecar, shared_tier):
    tokens = prompt(5 * BLOCK + 9, seed=500)
    computed, _, _ = saved_then_hit(kv_sidecar, tokens)
    shared_tier.kill()
    assert complete(kv_sidecar, tokens) == computed  # a local hit, the remote unreachable
    fresh = prompt(4 * BLOCK + 2, seed=501)
    assert complete(kv_sidecar, fresh) == complete(kv_sidecar, fresh, salt="reference")


def corrupt_newest_blocks(store_dir: Path, count: int) -> None:
    """Flip a payload byte in the `count` most recently written blocks."""
    env = lmdb.open(str(store_dir), max_dbs=4)
    blocks, order = env.open_db(b"blocks"), env.open_db(b"order")
    with env.begin(write=True) as txn:
        newest = [bytes(key) for _, key in txn.cursor(db=order)][-count:]
        for key in newest:
            value = bytearray(txn.get(key, db=blocks))
            value[-1] ^= 0xFF
            txn.put(key, bytes(value), db=blocks)
    env.close()


def test_a_restarted_engine_loads_from_disk_and_recomputes_corrupt_blocks(kv_sidecar, kv_data_dir, tiny_model):
    kept = prompt(9 * BLOCK + 3, seed=400)
    damaged = prompt(3 * BLOCK + 3, seed=401)  # saved last: its blocks (3 full, 1 tail) are the newest
    kept_output = saved_then_hit(kv_sidecar, kept)[0]
    damaged_output = saved_then_hit(kv_sidecar, damaged)[0]
    kv_sidecar.stop()
    corrupt_newest_blocks(kv_data_dir / "kv", 3)

    restarted = Sidecar(kv_data_dir, kv_sidecar.args, engine_port=kv_sidecar.engine_port,
                        env=kv_sidecar.env)  # same configuration
    with restarted.running():
        assert complete(restarted, kept) == kept_output
        assert external_hits(restarted) == len(kept) - 1  # a fresh engine: all of it came from disk
        assert complete(restarted, damaged) == damaged_output
        deadline = time.monotonic() + 10
        stats: dict = {}
        while not (stats.get("premapped_bytes") and stats.get("warmed_bytes")):
            assert time.monotonic() < deadline, "the new worker maps the store's cached pages and reads its newest"
            time.sleep(0.5)
            stats = read_stats(stats_path(kv_data_dir / "kv")) or {}
    assert "dropping a corrupt KV block" in (kv_data_dir / "logs" / "engine.log").read_text()


def test_an_unwritable_store_directory_is_a_clear_error_at_start_up(tmp_path, tiny_model):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "memsidecar"), "serve", "--data-dir", str(tmp_path / "data"),
         "--model", str(tiny_model), "--kv-store-dir", str(blocker / "kv")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "KV store directory" in result.stderr and str(blocker) in " ".join(result.stderr.split())
