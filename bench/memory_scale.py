"""Textual memory at scale: add throughput and search latency with 10k, 100k (and 1M) memories in one tenant.

    python -m bench.memory_scale [--sizes 10000,100000] [--queries 100] [--json]

For each size, a fresh store in a temporary directory with the real MiniLM embedder on CPU (FAISS flat below
the HNSW threshold, HNSW above it; BM25 over every memory). Memories are synthetic, distinct sentences written
through `add_messages` in batches of `--batch` (one durable LMDB commit per batch).
- `add_per_s`: memories stored per second, embedding included;
- `first_search_ms`: the first search after the load (builds the BM25 index);
- `search_ms_p50` / `search_ms_p95`: `--queries` searches (top 10, 1,000-token budget) with varied questions;
- `search_after_add_ms_p50`: a search right after adding one memory (what chat does: every turn writes).
1M memories take hours of embedding on 2 CPU cores: pass `--sizes 1000000` on a bigger machine.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench.stats import percentile
from textual.embedder import Embedder
from textual.messages import ChatMessage
from textual.store import MemoryStore

console = Console(stderr=True)
NAMES = ["Alice", "Bob", "Carol", "Dan", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory", "Oscar"]
VERBS = ["visited", "talked about", "bought", "painted", "wrote about", "cooked", "studied", "photographed"]
THINGS = ["Kyoto", "a red bicycle", "the violin", "Lisbon", "sourdough bread", "a chess opening", "jazz records",
          "the garden", "a pottery class", "Oslo", "tennis shoes", "a sailing trip", "an old map", "ramen"]
WHEN = ["last spring", "on Sunday", "in May", "yesterday", "before the holidays", "at the festival", "in 2021"]


def sentence(rng: random.Random, i: int) -> str:
    return f"{rng.choice(NAMES)} {rng.choice(VERBS)} {rng.choice(THINGS)} {rng.choice(WHEN)} (entry {i})"


def question(rng: random.Random) -> str:
    return f"When did {rng.choice(NAMES)} last see {rng.choice(THINGS)}?"


def run_size(embedder: Embedder, size: int, queries: int, batch: int) -> dict:
    rng = random.Random(size)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as directory, MemoryStore.open(
            directory, embedder=embedder, track_access=False, map_size=64 << 30) as store:
        memory = store.for_tenant("scale")
        started = time.perf_counter()
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"adding {size} memories", total=size)
            for start in range(0, size, batch):
                count = min(batch, size - start)
                turns = [ChatMessage(rng.choice(NAMES), sentence(rng, start + j), 1_700_000_000.0 + start + j,
                                     session=f"s{(start + j) // 20}") for j in range(count)]
                memory.add_messages(turns, user="u")
                progress.advance(task, count)
        add_s = time.perf_counter() - started
        first = _timed(lambda: memory.search(question(rng), k=10, budget_tokens=1000))
        times = [_timed(lambda: memory.search(question(rng), k=10, budget_tokens=1000)) for _ in range(queries)]
        after_add = []
        for i in range(5):
            memory.add_messages([ChatMessage("Alice", sentence(rng, size + i), 1_800_000_000.0 + i)], user="u")
            after_add.append(_timed(lambda: memory.search(question(rng), k=10, budget_tokens=1000)))
        index = memory.stats().vector_index
    return {"memories": size, "vector_index": index, "add_per_s": round(size / add_s, 1),
            "first_search_ms": round(first, 1), "search_ms_p50": round(statistics.median(times), 2),
            "search_ms_p95": round(percentile(times, 0.95), 2),
            "search_after_add_ms_p50": round(statistics.median(after_add), 1)}


def _timed(call) -> float:
    started = time.perf_counter()
    call()
    return 1000 * (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated memory counts")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--batch", type=int, default=2000, help="memories per add_messages call")
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    args = parser.parse_args()
    embedder = Embedder.open()
    results = [run_size(embedder, int(size), args.queries, args.batch) for size in args.sizes.split(",")]
    table = Table(title="textual memory at scale (one tenant)")
    for key in results[0]:
        table.add_column(key)
    for row in results:
        table.add_row(*(str(value) for value in row.values()))
    console.print(table)
    if args.json:
        print(json.dumps({"bench": "memory_scale", "results": results}))


if __name__ == "__main__":
    main()
