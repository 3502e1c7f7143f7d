"""Costs of the textual-memory lifecycle: consolidation on add, the lifecycle run, and cold-tier search.

    python -m bench.textual_lifecycle [--memories 500] [--queries 50] [--json]

Steps, on a fresh store in a temporary directory with the real MiniLM model on CPU:
- `add_plain` / `add_consolidated`: mean ms per `add` of synthetic facts, with consolidation off / on (the
  difference is the neighbour search and the merge/supersede decision);
- `lifecycle`: one `run_lifecycle` after the clock moves so that about half the memories go cold;
- `search_hot` / `search_cold`: median ms of a search over hot and warm only, and of one that names the cold tier
  (which reads the cold memories from LMDB into a throwaway index).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time

from rich.console import Console
from rich.table import Table

from textual.embedder import Embedder
from textual.lifecycle import DAY_S, LifecyclePolicy
from textual.store import MemoryStore

NAMES = ["Alice", "Bob", "Carol", "Dan", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy"]
THINGS = ["plays the {}", "collects {} stamps", "is learning {}", "visited {} last spring", "cooks {} on Sundays"]
WORDS = ["violin", "cello", "Spanish", "Kyoto", "ramen", "Lisbon", "chess", "pottery", "jazz", "tennis", "Oslo"]


def facts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(NAMES)} {rng.choice(THINGS).format(rng.choice(WORDS))} (note {i})" for i in range(count)]


def mean_ms(call, items) -> float:
    started = time.perf_counter()
    for item in items:
        call(item)
    return (time.perf_counter() - started) * 1000 / max(1, len(items))


def median_ms(call, items) -> float:
    times = []
    for item in items:
        started = time.perf_counter()
        call(item)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def run(memories: int, queries: int) -> dict:
    embedder, clock = Embedder.open(), [1_700_000_000.0]
    policy = LifecyclePolicy(half_life_s=DAY_S)
    with tempfile.TemporaryDirectory() as directory, MemoryStore.open(
            directory, embedder=embedder, clock=lambda: clock[0], lifecycle=policy, track_access=False) as store:
        plain, merged = store.for_tenant("plain"), store.for_tenant("merged")
        texts = facts(memories, seed=1)
        add_plain = mean_ms(lambda t: plain.add(t, user="u1", consolidate=False, importance=0.5), texts[::2])
        clock[0] += 3 * DAY_S  # the first half ages to strength 0.125: cold after the lifecycle run
        plain_rest = mean_ms(lambda t: plain.add(t, user="u1", consolidate=False, importance=0.5), texts[1::2])
        add_consolidated = mean_ms(lambda t: merged.add(t, user="u1"), texts)
        started = time.perf_counter()
        report = plain.run_lifecycle()
        lifecycle_ms = (time.perf_counter() - started) * 1000
        questions = [f"What does {n} do?" for n in facts(queries, seed=2)]
        search_hot = median_ms(lambda q: plain.search(q, k=10), questions)
        search_cold = median_ms(lambda q: plain.search(q, k=10, tiers=["cold"]), questions)
        return {"memories": memories, "queries": queries, "add_plain_ms": (add_plain + plain_rest) / 2,
                "add_consolidated_ms": add_consolidated, "consolidated_tiers": dict(merged.stats().by_tier),
                "lifecycle_ms": lifecycle_ms, "moves": dict(report.counts), "tiers": dict(plain.stats().by_tier),
                "search_hot_ms": search_hot, "search_cold_ms": search_cold}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memories", type=int, default=500)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    args = parser.parse_args()
    result = run(args.memories, args.queries)
    table = Table(title="textual lifecycle")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, f"{value:.2f}" if isinstance(value, float) else str(value))
    Console(stderr=True).print(table)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
