"""Time to first token with and without activation memory, every mode on identical engine settings.

    python -m bench.ttft [--quick] [--json] [--model DIR] [--lengths 1024,4096] [--dtype D] [--modes M,...]

Modes (prompt lengths 1024, 4096, 8192; `--quick`: 1024 and 4096):
- `recompute`: no prefix caching, no connector: every prompt is prefilled;
- `prefix_cache`: vLLM's in-engine prefix cache, the second request of a prompt;
- `example_connector`: vLLM's ExampleConnector, a fresh engine loading files an earlier engine wrote;
- `ours_ram`: memsidecar's connector, same engine, prefix caching off, so the hit comes from the RAM tier;
- `ours_disk_restart`: memsidecar's connector, a fresh engine process with an empty RAM tier: the hit is from LMDB.
Only the compared thing changes between modes; the JSON records the shared engine settings. TTFT is the wall time
from sending a streaming completion to its first token, median of `--runs` distinct prompts per length.
For our two modes the engine worker's own load figures (published to `worker-stats.json`) give the load time per
request and the load bandwidth: bytes put into the KV cache / wall time of the loads (lookup, checksum, copy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from kvcache.connector_config import kv_transfer_config
from kvcache.worker_stats import read_stats, stats_path
from sidecar.engine.dtype import explicit_dtype
from sidecar.engine.model_builder import ensure_model
from sidecar.engine.command import EngineSpec
from sidecar.engine.process import ManagedEngine, free_port

MODES = ("recompute", "prefix_cache", "example_connector", "ours_ram", "ours_disk_restart")
OURS = ("ours_ram", "ours_disk_restart")
PUBLISH_WAIT_S = 2.5  # the worker publishes its figures every 2 s
console = Console(stderr=True)


@dataclass(frozen=True)
class EngineSettings:
    """What every mode shares."""

    block_size: int = 32
    kv_cache_gib: float = 4.0
    max_model_len: int = 8448
    max_num_batched_tokens: int = 8448
    max_num_seqs: int = 4
    dtype: str = "bfloat16"
    max_tokens: int = 8


def prompt_ids(length: int, run: int, vocab: int) -> list[int]:
    """A deterministic random prompt; distinct per (length, run). Ids 0-2 are the special tokens."""
    return np.random.default_rng(length * 1000 + run).integers(3, vocab, size=length).tolist()


DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


def kv_bytes_per_token(model_dir: Path, dtype: str = "bfloat16") -> int:
    """KV bytes one token takes in every layer (K and V), for the engine's `dtype`."""
    config = json.loads((model_dir / "config.json").read_text())
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    return 2 * config["num_hidden_layers"] * config["num_key_value_heads"] * head_dim * DTYPE_BYTES[dtype]


class Engine:
    """One engine process for a mode, with a streaming completion client."""

    def __init__(self, model_dir: Path, settings: EngineSettings, work: Path, args: list[str], kv: str | None):
        extra = ("--max-num-batched-tokens", str(settings.max_num_batched_tokens),
                 "--max-num-seqs", str(settings.max_num_seqs), "--seed", "0", *args)
        spec = EngineSpec(model_dir=model_dir, served_model_name="bench", port=free_port(),
                          kv_cache_gib=settings.kv_cache_gib, max_model_len=settings.max_model_len,
                          block_size=settings.block_size, dtype=settings.dtype, extra_args=extra,
                          cache_dir=work / "cache", kv_transfer_config=kv)
        self.engine = ManagedEngine(spec, work / f"engine-{spec.port}.log")
        self.max_tokens = settings.max_tokens

    async def __aenter__(self) -> "Engine":
        await self.engine.start()
        while not self.engine.is_ready:
            await asyncio.sleep(0.5)
        await self.ttft([5, 6, 7, 8] * 8)  # warm-up
        return self

    async def __aexit__(self, *exc) -> None:
        await self.engine.stop()

    async def ttft(self, prompt: list[int]) -> tuple[float, str]:
        body = {"model": "bench", "prompt": prompt, "max_tokens": self.max_tokens, "temperature": 0, "stream": True}
        text, first = [], None
        async with httpx.AsyncClient(timeout=600) as client:
            started = time.perf_counter()
            async with client.stream("POST", f"{self.engine.base_url}/v1/completions", json=body) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    first = first or time.perf_counter() - started
                    text += [choice.get("text", "") for choice in json.loads(line[6:]).get("choices", [])]
        return first, "".join(text)


async def worker_loads(store_dir: Path) -> dict:
    """The engine worker's load totals once it has published everything done so far."""
    await asyncio.sleep(PUBLISH_WAIT_S)
    return (read_stats(stats_path(store_dir)) or {}).get("loads") or {"blocks": 0, "bytes": 0, "seconds": 0.0}


@dataclass
class Measured:
    ttft: dict[tuple[str, int], tuple[float, str]]  # (mode, length) -> (median TTFT, output text of run 0)
    loads: dict[tuple[str, int], dict]  # (our mode, length) -> worker load totals over that length's measured runs


async def run_modes(model_dir: Path, lengths: list[int], runs: int, settings: EngineSettings, vocab: int,
                    work: Path, modes: tuple[str, ...] = MODES) -> Measured:
    measured = Measured({}, {})
    results = measured.ttft
    prompts = {n: [prompt_ids(n, r, vocab) for r in range(runs)] for n in lengths}
    no_prefix = ["--no-enable-prefix-caching"]

    async def measure(engine: Engine, mode: str, before_each=None, store_dir: Path | None = None) -> None:
        for n in lengths:
            samples = []
            for prompt in prompts[n]:
                if before_each is not None:
                    await before_each(engine, prompt)
                loads_before = await worker_loads(store_dir) if store_dir else None
                samples.append(await engine.ttft(prompt))
                if store_dir:
                    after = await worker_loads(store_dir)
                    total = measured.loads.setdefault((mode, n), {"blocks": 0, "bytes": 0, "seconds": 0.0,
                                                                  "forward_seconds": 0.0})
                    for key in total:
                        total[key] += after.get(key, 0) - loads_before.get(key, 0)
            results[mode, n] = (statistics.median(s for s, _ in samples), samples[0][1])
            console.log(f"{mode:>18} {n:>5} tokens: {results[mode, n][0]:.3f} s")

    async def warm(engine: Engine, prompt: list[int]) -> None:
        await engine.ttft(prompt)
        await asyncio.sleep(0.5)  # let background saves land

    if "recompute" in modes:
        async with Engine(model_dir, settings, work, no_prefix, None) as engine:
            await measure(engine, "recompute")
    if "prefix_cache" in modes:
        async with Engine(model_dir, settings, work, [], None) as engine:
            await measure(engine, "prefix_cache", before_each=warm)
    if "example_connector" in modes:
        example = json.dumps({"kv_connector": "ExampleConnector", "kv_role": "kv_both",
                              "kv_connector_extra_config": {"shared_storage_path": str(work / "example")}})
        async with Engine(model_dir, settings, work, no_prefix, example) as engine:
            for n in lengths:
                for prompt in prompts[n]:
                    await engine.ttft(prompt)
        async with Engine(model_dir, settings, work, no_prefix, example) as engine:
            await measure(engine, "example_connector")
    ours = kv_transfer_config(work / "kv", ram_bytes=4 << 30, disk_bytes=16 << 30)
    if "ours_ram" in modes:  # also writes the blocks the restart mode loads
        async with Engine(model_dir, settings, work, no_prefix, ours) as engine:
            await measure(engine, "ours_ram", before_each=warm, store_dir=work / "kv")
    if "ours_disk_restart" in modes:
        async with Engine(model_dir, settings, work, no_prefix, ours) as engine:
            await measure(engine, "ours_disk_restart", store_dir=work / "kv")
    return measured


def summarize(measured: Measured, lengths: list[int], per_token: int, runs: int,
              modes: tuple[str, ...] = MODES) -> list[dict]:
    """One row per length; `<our mode>_load_s` is the mean load time per request, `_load_gb_per_s` its bandwidth,
    `_forward_s` the mean time from the end of the load to the end of that step's forward pass (the rest of the TTFT
    is scheduling, sampling and HTTP). `outputs_match` compares the modes that ran."""
    results = measured.ttft
    rows = []
    for n in lengths:
        row = {"prompt_tokens": n}
        row.update({f"{mode}_s": round(results[mode, n][0], 4) for mode in modes})
        row["kv_bytes"] = per_token * n
        row["outputs_match"] = len({results[mode, n][1] for mode in modes}) == 1
        for mode in (m for m in OURS if m in modes):
            loads = measured.loads.get((mode, n), {})
            seconds = loads.get("seconds") or 0.0
            row[f"{mode}_loaded_bytes"] = int(loads.get("bytes", 0) / runs)
            row[f"{mode}_load_s"] = round(seconds / runs, 4)
            row[f"{mode}_forward_s"] = round(loads.get("forward_seconds", 0.0) / runs, 4)
            row[f"{mode}_load_gb_per_s"] = round(loads["bytes"] / seconds / 1e9, 2) if seconds else None
        rows.append(row)
    return rows


def print_table(rows: list[dict], modes: tuple[str, ...] = MODES) -> None:
    columns = ("prompt_tokens", *(f"{m}_s" for m in modes), *(f"{m}_load_gb_per_s" for m in OURS if m in modes),
               "outputs_match")
    table = Table(title="TTFT (s), median; load bandwidth of our modes (GB/s)")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1024 and 4096 tokens only")
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    parser.add_argument("--model", type=Path, default=Path(".data/models/qwen2-0.5b-shape"),
                        help="model directory (the qwen2-0.5b-shape preset is built there if missing)")
    parser.add_argument("--lengths", default=None, help="comma-separated prompt lengths (overrides --quick)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--dtype", default="auto", choices=["auto", *sorted(DTYPE_BYTES)],
                        help="every engine's dtype (default: what `memsidecar serve` runs the model in, "
                             "`sidecar.engine.dtype`: float32 on a CPU without bf16 instructions)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help="comma-separated subset of the modes (ours_disk_restart needs ours_ram, which is added)")
    args = parser.parse_args()
    chosen = set(args.modes.split(",")) | ({"ours_ram"} if "ours_disk_restart" in args.modes else set())
    if not chosen <= set(MODES):
        parser.error(f"--modes: unknown {sorted(chosen - set(MODES))}; choose from {', '.join(MODES)}")
    modes = tuple(mode for mode in MODES if mode in chosen)
    lengths = [int(x) for x in args.lengths.split(",")] if args.lengths else [1024, 4096] if args.quick else \
        [1024, 4096, 8192]
    model_dir = args.model if (args.model / "config.json").exists() else ensure_model("qwen2-0.5b-shape", args.model)
    settings = EngineSettings(block_size=args.block_size, dtype=explicit_dtype(args.dtype, model_dir))
    vocab = len(json.loads((model_dir / "tokenizer.json").read_text())["model"]["vocab"])
    with tempfile.TemporaryDirectory(prefix="bench-ttft-") as work:
        results = asyncio.run(run_modes(model_dir, lengths, args.runs, settings, vocab, Path(work), modes))
    rows = summarize(results, lengths, kv_bytes_per_token(model_dir, settings.dtype), args.runs, modes)
    print_table(rows, modes)
    if args.json:
        print(json.dumps({"bench": "ttft", "model": model_dir.name, "block_size": settings.block_size,
                          "settings": asdict(settings), "runs": args.runs, "modes": list(modes), "results": rows}))


if __name__ == "__main__":
    main()
