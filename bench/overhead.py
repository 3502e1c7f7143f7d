"""Latency the sidecar adds over the engine alone, with memory off and on.

    python -m bench.overhead [--requests N] [--memories M] [--json]

One `memsidecar serve` on the tiny model (activation memory on, as served by default). The same chat (one user
turn, `--max-tokens` greedy tokens) is sent N times each way, one at a time:
- `engine`: straight to the engine's own OpenAI server;
- `sidecar_off`: through the sidecar with `"memory": {"inject": false, "write": false}`;
- `sidecar_on`: through the sidecar with memory on (inject and write) for a user holding M memories.
Reported: end-to-end latency p50/p95 per way, and the sidecar's added p50/p95 over the engine. The questions vary
(so memory search and injection really run); the engine sees the same prompts in `engine` and `sidecar_off`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from bench.served import ServedSidecar
from bench.stats import percentile
from sidecar.engine.model_builder import ensure_model
from sidecar.engine.process import free_port

console = Console(stderr=True)
TOPICS = ["parrots", "the greenhouse", "Lisbon", "my sister", "Python", "the festival", "the garden", "music"]


def served_sidecar(model: Path, work: Path, engine_port: int) -> ServedSidecar:
    """`memsidecar serve` on the tiny model, its engine on `engine_port` (the `engine` way talks to it directly)."""
    args = ["--model", str(model), "--data-dir", str(work / "data"), "--engine-port", str(engine_port),
            "--rate-limit-per-minute", "0"]
    return ServedSidecar(args, work / "sidecar.log")


def timed(client: httpx.Client, url: str, body: dict) -> float:
    started = time.perf_counter()
    response = client.post(f"{url}/v1/chat/completions", json=body)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed


def run(url: str, engine_url: str, requests: int, memories: int, max_tokens: int) -> dict:
    user = "bench-user"
    with httpx.Client(timeout=120) as client:
        for i in range(memories):
            topic = TOPICS[i % len(TOPICS)]
            client.post(f"{url}/v1/memories", json={"user_id": user, "content": f"Fact {i}: I like {topic} ({i})"}
                        ).raise_for_status()

        def body(i: int, memory: dict | None) -> dict:
            question = f"What do you remember about {TOPICS[i % len(TOPICS)]}? ({i})"
            chat = {"model": "tiny", "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
                    "temperature": 0, "user": user}
            return {**chat, "memory": memory} if memory is not None else chat

        for i in range(3):  # warm-up of every path
            timed(client, engine_url, body(i, None))
            timed(client, url, body(i, {"inject": True, "write": False}))
        ways = {"engine": (engine_url, None), "sidecar_off": (url, {"inject": False, "write": False}),
                "sidecar_on": (url, {"inject": True, "write": True})}
        latencies: dict[str, list[float]] = {way: [] for way in ways}
        for i in range(requests):
            for way, (target, memory) in ways.items():
                latencies[way].append(timed(client, target, body(i, memory)))
    result = {}
    for way, values in latencies.items():
        result[f"{way}_ms_p50"] = round(1000 * statistics.median(values), 1)
        result[f"{way}_ms_p95"] = round(1000 * percentile(values, 0.95), 1)
    for way in ("sidecar_off", "sidecar_on"):
        for q in ("p50", "p95"):
            result[f"added_{way.split('_')[1]}_ms_{q}"] = round(result[f"{way}_ms_{q}"] - result[f"engine_ms_{q}"], 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50, help="requests per way")
    parser.add_argument("--memories", type=int, default=200, help="memories of the user for `sidecar_on`")
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        work = Path(tmp)
        model = ensure_model("tiny", work / "tiny")
        engine_port = free_port()
        with served_sidecar(model, work, engine_port) as sidecar, console.status("measuring"):
            result = run(sidecar.base_url, f"http://127.0.0.1:{engine_port}", args.requests, args.memories,
                         args.max_tokens)
    table = Table(title="chat latency, ms")
    table.add_column("way")
    table.add_column("p50")
    table.add_column("p95")
    for way in ("engine", "sidecar_off", "sidecar_on"):
        table.add_row(way, str(result[f"{way}_ms_p50"]), str(result[f"{way}_ms_p95"]))
    console.print(table)
    if args.json:
        print(json.dumps({"bench": "overhead", "requests": args.requests, "memories": args.memories,
                          "settings": {"model": "tiny", "max_tokens": args.max_tokens, "kv_store": True}, **result}))


if __name__ == "__main__":
    main()
