"""LoCoMo evidence-recall benchmark for textual memory.

Each conversation is ingested through `add_messages` (one tenant and user per conversation, session dates as
message times); every question of categories 1-4 that has evidence is searched with the question alone.
Evidence recall: the share of the question's evidence turn ids among the source turns of the returned memories.
Context tokens: `\\w+|[^\\w\\s]` pieces of the exact injected text. `answer` is never read; `evidence` only to score.

    python -m bench.locomo --data FILE [--k K] [--budget TOKENS] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from textual.embedder import Embedder
from textual.messages import ChatMessage
from textual.store import MemoryStore
from textual.tenant_memory import TenantMemory

CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}


def session_time(text: str) -> float:
    """Epoch seconds (UTC) of a LoCoMo session date such as "1:56 pm on 8 May, 2023"."""
    return datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=timezone.utc).timestamp()


def conversation_messages(conversation: dict) -> list[ChatMessage]:
    messages, number = [], 1
    while f"session_{number}" in conversation:
        when = session_time(conversation[f"session_{number}_date_time"])
        for turn in conversation[f"session_{number}"]:
            messages.append(ChatMessage(speaker=turn["speaker"], text=turn["text"], time=when,
                                        session=f"session_{number}", turn_id=turn["dia_id"],
                                        image_caption=turn.get("blip_caption")))
        number += 1
    return messages


TURN_ID = re.compile(r"D:?(\d+):(\d+)")


def evidence_ids(evidence: list[str]) -> set[str]:
    """Evidence turn ids (`D<session>:<turn>`). A few entries hold several ids separated by ';' or spaces; the
    dataset's typos are read as meant (`D:11:26` is `D11:26`) or skipped when they name no turn (a bare `D`)."""
    return {f"D{match[1]}:{match[2]}" for item in evidence for piece in re.split(r"[;,\s]+", item)
            if (match := TURN_ID.fullmatch(piece))}


def ingest(store: MemoryStore, samples: list[dict]) -> dict[str, TenantMemory]:
    handles = {}
    turns = sum(len(conversation_messages(sample["conversation"])) for sample in samples)
    with tqdm(total=turns, desc="ingest", unit="turn", file=sys.stderr) as bar:
        for sample in samples:
            handle = handles[sample["sample_id"]] = store.for_tenant(sample["sample_id"])
            messages = conversation_messages(sample["conversation"])
            for start in range(0, len(messages), 64):
                handle.add_messages(messages[start:start + 64], user="speakers")
                bar.update(len(messages[start:start + 64]))
    return handles


def evaluate(handles: dict[str, TenantMemory], samples: list[dict], k: int, budget: int | None) -> dict:
    recalls, tokens, latencies = defaultdict(list), [], []
    for sample in tqdm(samples, desc="search", unit="conv", file=sys.stderr):
        for qa in sample["qa"]:
            wanted = evidence_ids(qa.get("evidence") or [])
            if qa["category"] not in CATEGORIES or not wanted:
                continue
            started = time.perf_counter()
            result = handles[sample["sample_id"]].search(qa["question"], k=k, budget_tokens=budget, user="speakers")
            latencies.append((time.perf_counter() - started) * 1000)
            returned = {turn for hit in result.hits for turn in hit.memory.source}
            recalls[qa["category"]].append(len(wanted & returned) / len(wanted))
            tokens.append(result.context_tokens)
    return {"recalls": recalls, "tokens": tokens, "latencies": latencies}


def summary(measured: dict, k: int, budget: int) -> dict:
    every = [r for values in measured["recalls"].values() for r in values]
    latencies = sorted(measured["latencies"])
    return {"bench": "locomo", "k": k, "budget": budget, "questions": len(every),
            "evidence_recall": round(statistics.fmean(every), 4),
            "by_category": {name: round(statistics.fmean(measured["recalls"][category]), 4)
                            for category, name in CATEGORIES.items() if measured["recalls"].get(category)},
            "mean_context_tokens": round(statistics.fmean(measured["tokens"]), 1),
            "search_ms_p50": round(latencies[len(latencies) // 2], 2),
            "search_ms_p95": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 2)}


def print_table(measured: dict, line: dict, k: int, budget: int | None) -> None:
    print(f"LoCoMo evidence recall (k={k}, budget={budget} tokens)")
    print(f"{'category':<14}{'questions':>10}{'recall':>10}")
    for category, name in CATEGORIES.items():
        values = measured["recalls"].get(category, [])
        if values:
            print(f"{name:<14}{len(values):>10}{statistics.fmean(values):>10.3f}")
    print(f"{'all':<14}{line['questions']:>10}{line['evidence_recall']:>10.3f}")
    print(f"mean context tokens {line['mean_context_tokens']}, search p50 {line['search_ms_p50']} ms, "
          f"p95 {line['search_ms_p95']} ms")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="LoCoMo-format JSON file")
    parser.add_argument("--k", type=int, default=100, help="most memories returned per question")
    parser.add_argument("--budget", type=int, default=1000, help="token budget of the injected text (0: none)")
    parser.add_argument("--model", type=Path, default=None, help="sentence-transformers model directory")
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    args = parser.parse_args(argv)
    samples = json.loads(args.data.read_text())
    budget = args.budget or None
    with tempfile.TemporaryDirectory(prefix="locomo-") as directory:
        with MemoryStore.open(directory, embedder=Embedder.open(args.model), track_access=False) as store:
            handles = ingest(store, samples)
            measured = evaluate(handles, samples, args.k, budget)
    line = summary(measured, args.k, args.budget)
    print_table(measured, line, args.k, budget)
    if args.json:
        print(json.dumps(line))


if __name__ == "__main__":
    main()
