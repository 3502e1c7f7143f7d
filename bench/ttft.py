"""Time to first token with and without activation memory, every mode on identical engine settings.

    python -m bench.ttft [--quick] [--json] [--model DIR] [--lengths 1024,4096]

Modes (prompt lengths 1024, 4096, 8192; `--quick`: 1024 and 4096):
- `recompute`: no prefix caching, no connector: every prompt is prefilled;
- `prefix_cache`: vLLM's in-engine prefix cache, the second request of a prompt;
- `example_connector`: vLLM's ExampleConnector, a fresh engine loading files an earlier engine wrote;
- `ours_ram`: memsidecar's connector, same engine, prefix caching off, so the hit comes from the RAM tier;
- `ours_disk_restart`: memsidecar's connector, a fresh engine process with an empty RAM tier: the hit is from LMDB.
Only the compared thing changes between modes; the JSON records the shared engine settings. TTFT is the wall time
from sending a streaming completion to its first token, median of `--runs` distinct prompts per length.
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
from sidecar.engine import EngineSpec, ManagedEngine, free_port
from sidecar.model_builder import ensure_model

MODES = ("recompute", "prefix_cache", "example_connector", "ours_ram", "ours_disk_restart")
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


def kv_bytes_per_token(model_dir: Path) -> int:
    config = json.loads((model_dir / "config.json").read_text())
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    return 2 * config["num_hidden_layers"] * config["num_key_value_heads"] * head_dim * 2  # K and V, 2-byte dtype


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


async def run_modes(model_dir: Path, lengths: list[int], runs: int, settings: EngineSettings, vocab: int,
                    work: Path) -> dict[tuple[str, int], tuple[float, str]]:
    """(mode, length) -> (median TTFT, output text of run 0)."""
    results: dict[tuple[str, int], tuple[float, str]] = {}
    prompts = {n: [prompt_ids(n, r, vocab) for r in range(runs)] for n in lengths}
    no_prefix = ["--no-enable-prefix-caching"]

    async def measure(engine: Engine, mode: str, before_each=None) -> None:
        for n in lengths:
            samples = []
            for prompt in prompts[n]:
                if before_each is not None:
                    await before_each(engine, prompt)
                samples.append(await engine.ttft(prompt))
            results[mode, n] = (statistics.median(s for s, _ in samples), samples[0][1])
            console.log(f"{mode:>18} {n:>5} tokens: {results[mode, n][0]:.3f} s")

    async def warm(engine: Engine, prompt: list[int]) -> None:
        await engine.ttft(prompt)
        await asyncio.sleep(0.5)  # let background saves land

    async with Engine(model_dir, settings, work, no_prefix, None) as engine:
        await measure(engine, "recompute")
    async with Engine(model_dir, settings, work, [], None) as engine:
        await measure(engine, "prefix_cache", before_each=warm)
    example = json.dumps({"kv_connector": "ExampleConnector", "kv_role": "kv_both",
                          "kv_connector_extra_config": {"shared_storage_path": str(work / "example")}})
    async with Engine(model_dir, settings, work, no_prefix, example) as engine:
        for n in lengths:
            for prompt in prompts[n]:
                await engine.ttft(prompt)
    async with Engine(model_dir, settings, work, no_prefix, example) as engine:
        await measure(engine, "example_connector")
    ours = kv_transfer_config(work / "kv", ram_bytes=4 << 30, disk_bytes=16 << 30)
    async with Engine(model_dir, settings, work, no_prefix, ours) as engine:
        await measure(engine, "ours_ram", before_each=warm)
    async with Engine(model_dir, settings, work, no_prefix, ours) as engine:
        await measure(engine, "ours_disk_restart")
    return results


def summarize(results, lengths: list[int], per_token: int) -> list[dict]:
    rows = []
    for n in lengths:
        row = {"prompt_tokens": n}
        row.update({f"{mode}_s": round(results[mode, n][0], 4) for mode in MODES})
        row["kv_bytes"] = per_token * n
        row["outputs_match"] = len({results[mode, n][1] for mode in MODES}) == 1
        rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    table = Table(title="TTFT (s), median")
    for column in ("prompt_tokens", *(f"{m}_s" for m in MODES), "outputs_match"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c]) for c in ("prompt_tokens", *(f"{m}_s" for m in MODES), "outputs_match")))
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
    args = parser.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")] if args.lengths else [1024, 4096] if args.quick else \
        [1024, 4096, 8192]
    settings = EngineSettings(block_size=args.block_size)
    model_dir = args.model if (args.model / "config.json").exists() else ensure_model("qwen2-0.5b-shape", args.model)
    vocab = len(json.loads((model_dir / "tokenizer.json").read_text())["model"]["vocab"])
    with tempfile.TemporaryDirectory(prefix="bench-ttft-") as work:
        results = asyncio.run(run_modes(model_dir, lengths, args.runs, settings, vocab, Path(work)))
    rows = summarize(results, lengths, kv_bytes_per_token(model_dir))
    print_table(rows)
    if args.json:
        print(json.dumps({"bench": "ttft", "model": model_dir.name, "block_size": settings.block_size,
                          "settings": asdict(settings), "runs": args.runs, "results": rows}))


if __name__ == "__main__":
    main()
