"""LoRA adapter serving through memsidecar: cold load, warm switch, decode throughput with 0, 1 and N adapters.

    python -m bench.adapters [--quick] [--json] [--adapters N] [--max-loras K] [--model DIR]

One `memsidecar serve` (a real sidecar and engine) on the tiny model with K engine slots and N loaded at most.
N seeded random rank-8 adapters are uploaded through `POST /v1/adapters`, then:
- cold load: `POST /v1/adapters/{name}/load` of an adapter not in the engine (disk -> serving), p50 over N;
- warm switch: a 1-token chat alternating between two loaded adapters, p50 (the base model's 1-token chat is
  reported beside it);
- decode throughput: `--concurrency` simultaneous chats of `--max-tokens` greedy tokens each, for the base model,
  for one adapter, and for N adapters interleaved round-robin through K slots; tokens/s = completion tokens / wall;
- outputs match: every adapter's output in the interleaved run equals its output requested alone.
Defaults N=32, K=4 (`--quick`: N=8, K=2). The JSON records every engine setting.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from adapters.synthetic import random_adapter
from sidecar.engine import free_port
from sidecar.model_builder import ensure_model

console = Console(stderr=True)
PROMPT = "The greenhouse door was"


def zipped(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(directory.iterdir()):
            archive.write(path, path.name)
    return buffer.getvalue()


class Sidecar:
    """A `memsidecar serve` subprocess with adapters on, and an async client for it."""

    def __init__(self, model: Path, work: Path, max_loras: int, max_cpu_loras: int) -> None:
        self.port = free_port()
        self.argv = [str(Path(sys.executable).parent / "memsidecar"), "serve", "--model", str(model),
                     "--data-dir", str(work / "data"), "--port", str(self.port), "--max-loras", str(max_loras),
                     "--max-cpu-loras", str(max_cpu_loras), "--no-memory-inject", "--no-memory-write",
                     "--rate-limit-per-minute", "0", "--engine-args=--seed 0"]
        self.log = work / "sidecar.log"
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "Sidecar":
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the sidecar exited; see {self.log}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"the sidecar was not ready in 600 s; see {self.log}")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


async def chat(client: httpx.AsyncClient, model: str | None, max_tokens: int) -> tuple[str, int, float]:
    body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens, "temperature": 0,
            "ignore_eos": True}
    if model:
        body["model"] = model
    started = time.perf_counter()
    response = await client.post("/v1/chat/completions", json=body)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    reply = response.json()
    return reply["choices"][0]["message"]["content"], reply["usage"]["completion_tokens"], elapsed


async def throughput(client: httpx.AsyncClient, models: list[str | None], max_tokens: int) -> tuple[float, list[str]]:
    started = time.perf_counter()
    results = await asyncio.gather(*(chat(client, model, max_tokens) for model in models))
    wall = time.perf_counter() - started
    return sum(tokens for _, tokens, _ in results) / wall, [text for text, _, _ in results]


async def measure(url: str, names: list[str], concurrency: int, max_tokens: int) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        cold = []
        for name in names:  # most are on disk: only the last max_cpu_loras loaded stay loaded
            await client.post(f"/v1/adapters/{name}/unload")
            started = time.perf_counter()
            (await client.post(f"/v1/adapters/{name}/load")).raise_for_status()
            cold.append(time.perf_counter() - started)
        alone = {name: (await chat(client, name, max_tokens))[0] for name in names}
        a, b = names[-1], names[-2]
        await chat(client, a, 1)
        switch = [(await chat(client, (a, b)[i % 2], 1))[2] for i in range(20)]
        base_1 = [(await chat(client, None, 1))[2] for _ in range(10)]
        batch = max(concurrency, len(names))  # the same number of simultaneous chats in all three runs
        base_tps, _ = await throughput(client, [None] * batch, max_tokens)
        one_tps, _ = await throughput(client, [a] * batch, max_tokens)
        order = [names[i % len(names)] for i in range(batch)]
        many_tps, texts = await throughput(client, order, max_tokens)
    return {"cold_load_ms_p50": round(1000 * statistics.median(cold), 1),
            "warm_switch_ms_p50": round(1000 * statistics.median(switch), 1),
            "base_one_token_ms_p50": round(1000 * statistics.median(base_1), 1),
            "tokens_per_s_base": round(base_tps, 1), "tokens_per_s_one": round(one_tps, 1),
            "tokens_per_s_many": round(many_tps, 1),
            "outputs_match": all(text == alone[name] for text, name in zip(texts, order))}


def upload_all(url: str, model: Path, work: Path, count: int) -> list[str]:
    names = []
    for seed in range(count):
        name = f"bench-{seed}"
        data = zipped(random_adapter(model, work / name, seed))
        response = httpx.post(f"{url}/v1/adapters", params={"name": name}, content=data, timeout=120,
                              headers={"content-type": "application/zip"})
        response.raise_for_status()
        names.append(name)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 adapters through 2 slots")
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    parser.add_argument("--adapters", type=int, help="number of adapters N (default 32, --quick 8)")
    parser.add_argument("--max-loras", type=int, help="engine slots K (default 4, --quick 2)")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="simultaneous chats per throughput run (at least N)")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens generated per chat")
    parser.add_argument("--model", type=Path, help="base model directory (default: the generated tiny model)")
    args = parser.parse_args()
    count = args.adapters or (8 if args.quick else 32)
    slots = args.max_loras or (2 if args.quick else 4)
    with tempfile.TemporaryDirectory(prefix="bench-adapters-") as tmp:
        work = Path(tmp)
        model = args.model or ensure_model("tiny", work / "tiny")
        max_cpu_loras = max(slots, count)
        with console.status(f"starting a sidecar with {slots} slots"), Sidecar(model, work, slots, max_cpu_loras) as s:
            with console.status(f"uploading {count} adapters"):
                names = upload_all(s.url, model, work, count)
            with console.status("measuring"):
                result = asyncio.run(measure(s.url, names, args.concurrency, args.max_tokens))
    line = {"bench": "adapters", "adapters": count, "max_loras": slots, **result,
            "settings": {"model": model.name, "max_loras": slots, "max_cpu_loras": max_cpu_loras, "rank": 8,
                         "concurrency": max(args.concurrency, count), "max_tokens": args.max_tokens, "dtype": "auto",
                         "temperature": 0}}
    table = Table(title=f"{count} adapters through {slots} slots")
    for key in ("cold_load_ms_p50", "warm_switch_ms_p50", "base_one_token_ms_p50", "tokens_per_s_base",
                "tokens_per_s_one", "tokens_per_s_many", "outputs_match"):
        table.add_row(key, str(result[key]))
    console.print(table)
    if args.json:
        print(json.dumps(line))


if __name__ == "__main__":
    main()
