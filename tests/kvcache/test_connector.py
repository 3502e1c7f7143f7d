"""memsidecar's KV connector in a real vLLM engine (CPU build, tiny model), through `memsidecar serve`.

vLLM's own prefix cache is off in these engines, so every hit comes from our store. A request under another
`cache_salt` (isolation scope) is a miss by construction, which gives the recompute reference for any prompt.
"""

from __future__ import annotations

import concurrent.futures
import re
import subprocess
import sys
from pathlib import Path

import httpx
import lmdb
import numpy as np
import pytest

from tests.conftest import Sidecar, free_port

pytestmark = pytest.mark.slow
BLOCK = 32
ENGINE_ARGS = ["--block-size", str(BLOCK), "--engine-args", "--no-enable-prefix-caching"]


@pytest.fixture(scope="module")
def kv_data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kv") / "data"


@pytest.fixture(scope="module")
def kv_sidecar(kv_data_dir, tiny_model):
    engine_port = free_port()
    server = Sidecar(kv_data_dir, ["--model", str(tiny_model), "--engine-port", str(engine_port), *ENGINE_ARGS])
    server.engine_port = engine_port
    server.start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def prompt(length: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(3, 2000, size=length).tolist()


def complete(server: Sidecar, tokens: list[int], salt: str | None = None) -> str:
    body = {"model": "tiny", "prompt": tokens, "max_tokens": 8, "temperature": 0}
    if salt:
        body["cache_salt"] = salt
    response = httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["text"]


def external_hits(server: Sidecar) -> float:
    metrics = httpx.get(f"http://127.0.0.1:{server.engine_port}/metrics").text
    return float(re.search(r"^vllm:external_prefix_cache_hits_total\{[^}]*\} (\S+)$", metrics, re.M).group(1))


def saved_then_hit(server: Sidecar, tokens: list[int]) -> tuple[str, str, float]:
    """The output computed from scratch, the output with a hit, and how many tokens the hit loaded."""
    computed = complete(server, tokens)
    before = external_hits(server)
    for _ in range(20):  # saves land in the background; the next request hits once they have
        hit = complete(server, tokens)
        loaded = external_hits(server) - before
        if loaded:
            return computed, hit, loaded
    raise AssertionError("no KV hit after 20 requests")


@pytest.mark.parametrize("length", [BLOCK + 1, 10 * BLOCK + 1, 7 * BLOCK + 13])
def test_outputs_are_token_identical_with_a_hit(kv_sidecar, length):
    tokens = prompt(length, seed=length)
    computed, hit, loaded = saved_then_hit(kv_sidecar, tokens)
    assert hit == computed
    assert loaded == (length - 1) // BLOCK * BLOCK


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


def test_concurrent_requests_with_overlapping_prefixes_are_all_correct(kv_sidecar):
    base = prompt(5 * BLOCK, seed=300)
    prompts = [base + prompt(10 + 7 * i, seed=310 + i) for i in range(10)]
    references = [complete(kv_sidecar, p, salt=f"reference-{i}") for i, p in enumerate(prompts)]
    complete(kv_sidecar, base + [5])
    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        outputs = list(pool.map(lambda p: complete(kv_sidecar, p), prompts))
    assert outputs == references


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
    damaged = prompt(3 * BLOCK + 3, seed=401)  # saved last: its 3 blocks are the newest in the store
    kept_output = saved_then_hit(kv_sidecar, kept)[0]
    damaged_output = saved_then_hit(kv_sidecar, damaged)[0]
    kv_sidecar.stop()
    corrupt_newest_blocks(kv_data_dir / "kv", 3)

    restarted = Sidecar(kv_data_dir, ["--model", str(tiny_model), "--engine-port", str(kv_sidecar.engine_port),
                                      *ENGINE_ARGS])
    restarted.engine_port = kv_sidecar.engine_port
    restarted.start()
    try:
        restarted.wait_ready()
        assert complete(restarted, kept) == kept_output
        assert external_hits(restarted) == 9 * BLOCK  # a fresh engine: all of it came from disk
        assert complete(restarted, damaged) == damaged_output
    finally:
        restarted.stop()
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
