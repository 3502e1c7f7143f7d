"""Answers, scored: LoCoMo questions answered by the served model, with and without memory, on one engine.

    python -m bench.answers [--quick] [--data FILE] [--model DIR] [--questions N] [--conditions a,b,...]
                            [--memory-budget N] [--max-tokens N] [--json]

One `memsidecar serve` (the default real model unless `--model` is given) answers every question of categories 1-4
that has evidence (or `--questions N` of them, spread evenly over the file), after the whole conversation, under
each condition in turn, greedy, through its chat endpoint, with the same client system message (`INSTRUCTION`):
- `none`: the question alone (memory off);
- `history`: the conversation as one system message (`[date]` headers, `Speaker: text` lines), the newest turns
  that fit the model's context, then the question (memory off), as a client without memory would send it;
- `memory`: the question alone, memsidecar's injection on as a client gets it by default (the sidecar's `top_k`,
  8, within `--memory-budget` tokens, default 1,000); the conversation was written to memory through
  `POST /v1/memories/messages`;
- `memory_extraction`: the same over a second copy of the conversation written with `extract: true`, so that the
  served model's extracted facts, preferences and events sit beside the turns (costly: one generation per 20 turns);
- `evidence`: the question's gold evidence turns, rendered as memsidecar renders memories, in the same place:
  the ceiling of retrieval.
Scores are LoCoMo's token F1 and BLEU-1 (`bench.scoring`), per category and overall; prompt tokens are the engine's
count, TTFT the first streamed content chunk. Answers are read only to be scored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from bench.e2e import (DEFAULT_DATA, history_lines, served_sidecar, session_turns, sessions, timed_chat, truncated,
                       turn_text)
from bench.e2e import Settings as EngineSettings
from bench.locomo import CATEGORIES, evidence_ids
from bench.scoring import answer_f1, bleu1
from bench.stats import percentile
from sidecar.chat.injection import MEMORY_HEADER, inject_block, memory_block
from sidecar.engine.dtype import explicit_dtype
from sidecar.engine.model_builder import ensure_model
from sidecar.runner import DEFAULT_MODEL
from textual import context
from textual.memory import Memory, MemoryType

console = Console(stderr=True)
CONDITIONS = ("none", "history", "memory", "memory_extraction", "evidence")
DEFAULT_MODEL_DIR = Path(".data/models") / DEFAULT_MODEL
INSTRUCTION = "Answer the question in a few words."
EXTRACTION_BATCH = 20  # turns per extraction request: what one extraction reads (`textual.extraction.MAX_TURNS`)
EXTRACTION_EXAMPLES = 12  # extracted memories shown (and kept in the JSON line) so a reader sees what extraction made


def plan(samples: list[dict], limit: int | None) -> list[tuple[int, dict]]:
    """(conversation index, qa) for the eligible questions; with `limit`, that many spread evenly over the file."""
    eligible = [(index, qa) for index, sample in enumerate(samples) for qa in sample["qa"]
                if qa["category"] in CATEGORIES and evidence_ids(qa.get("evidence") or []) and "answer" in qa]
    if limit is not None and limit < len(eligible):
        eligible = [eligible[round(i * (len(eligible) - 1) / max(1, limit - 1))] for i in range(limit)]
    return eligible


def evidence_block(sample: dict, qa: dict) -> str:
    """The gold evidence turns as memsidecar's injection renders episode memories, under the same header."""
    wanted, memories = evidence_ids(qa["evidence"]), []
    for name, when, turns in sessions(sample["conversation"]):
        for position, turn in enumerate(turns):
            if turn["dia_id"] in wanted:
                memories.append(Memory(turn["dia_id"], "bench", "bench", MemoryType.EPISODE, turn_text(turn), when,
                                       when, when, metadata={"speaker": turn["speaker"], "session": name,
                                                             "position": position}))
    return memory_block([(MEMORY_HEADER, context.render(memories))])


def request(condition: str, index: int, sample: dict, qa: dict, tokenizer, settings: EngineSettings) -> dict:
    """The chat body that asks `qa` under `condition`."""
    messages = [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": qa["question"]}]
    memory = {"inject": False, "write": False}
    if condition == "history":
        budget = settings.max_model_len - settings.max_tokens - 128
        lines = history_lines(sessions(sample["conversation"]))
        messages = inject_block(messages, f"Conversation so far:\n{truncated(tokenizer, lines, budget)}")
    elif condition == "evidence":
        messages = inject_block(messages, evidence_block(sample, qa))
    elif condition in ("memory", "memory_extraction"):
        memory = {"inject": True, "write": False, "token_budget": settings.memory_token_budget}
    user = f"conv{index}x" if condition == "memory_extraction" else f"conv{index}"
    return {"model": "bench", "user": user, "messages": messages, "max_tokens": settings.max_tokens,
            "temperature": 0, "memory": memory}


async def ingest(client: httpx.AsyncClient, samples: list[dict], indexes: list[int], extraction: bool) -> dict:
    """Write each asked-about conversation to memory (and a second copy with extraction); returns extraction counts
    and the first `EXTRACTION_EXAMPLES` extracted memories (`examples`: type, content, source turn ids)."""
    counts, examples = defaultdict(int), []
    turns_total = sum(len(t) for i in indexes for _, _, t in sessions(samples[i]["conversation"]))
    with tqdm(total=turns_total * (2 if extraction else 1), desc="memory", unit="turn", file=sys.stderr) as bar:
        for index in indexes:
            for name, when, turns in sessions(samples[index]["conversation"]):
                body = {"user_id": f"conv{index}", "messages": session_turns(name, when, turns), "extract": False}
                (await client.post("/v1/memories/messages", json=body)).raise_for_status()
                bar.update(len(turns))
                if not extraction:
                    continue
                for start in range(0, len(turns), EXTRACTION_BATCH):
                    batch = session_turns(name, when, turns[start:start + EXTRACTION_BATCH])
                    response = await client.post("/v1/memories/messages",
                                                 json={"user_id": f"conv{index}x", "messages": batch, "extract": True})
                    response.raise_for_status()
                    outcome = response.json().get("extraction") or {}
                    counts[outcome.get("status", "none")] += 1
                    counts["memories"] += len(outcome.get("memories") or [])
                    examples += [{"type": m["type"], "content": m["content"], "source": m["source"]}
                                 for m in outcome.get("memories") or []][:EXTRACTION_EXAMPLES - len(examples)]
                    bar.update(len(batch))
    return dict(counts) | ({"examples": examples} if extraction else {})


async def ask_all(client: httpx.AsyncClient, samples, questions, conditions, tokenizer, settings) -> dict:
    rows: dict[str, list[dict]] = {condition: [] for condition in conditions}
    with tqdm(total=len(questions) * len(conditions), desc="answers", unit="q", file=sys.stderr) as bar:
        for index, qa in questions:
            for condition in conditions:
                result = await timed_chat(client, request(condition, index, samples[index], qa, tokenizer, settings))
                rows[condition].append({
                    "category": qa["category"], "f1": answer_f1(result["text"], qa["answer"], qa["category"]),
                    "bleu1": bleu1(result["text"], str(qa["answer"])), "prompt_tokens": result["prompt_tokens"],
                    "ttft": result["ttft"], "latency": result["latency"]})
                bar.update()
    return rows


def condition_summary(rows: list[dict]) -> dict:
    by_category = defaultdict(list)
    for row in rows:
        by_category[CATEGORIES[row["category"]]].append(row)
    return {
        "f1": round(statistics.fmean(r["f1"] for r in rows), 4),
        "bleu1": round(statistics.fmean(r["bleu1"] for r in rows), 4),
        "prompt_tokens_mean": round(statistics.fmean(r["prompt_tokens"] for r in rows), 1),
        "ttft_s_p50": round(percentile([r["ttft"] for r in rows], 0.5), 3),
        "latency_s_p50": round(percentile([r["latency"] for r in rows], 0.5), 3),
        "by_category": {name: {"questions": len(group), "f1": round(statistics.fmean(r["f1"] for r in group), 4),
                               "bleu1": round(statistics.fmean(r["bleu1"] for r in group), 4)}
                        for name, group in sorted(by_category.items())},
    }


async def measure(model: Path, work: Path, samples, questions, conditions, settings: EngineSettings) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    extraction = "memory_extraction" in conditions
    extra = ["--memory-extraction"] if extraction else []
    async with served_sidecar(model, work, settings, extra) as sidecar:
        async with httpx.AsyncClient(base_url=sidecar.base_url, timeout=900) as client:
            indexes = sorted({index for index, _ in questions})
            extracted = await ingest(client, samples, indexes, extraction)
            rows = await ask_all(client, samples, questions, conditions, tokenizer, settings)
    line = {"bench": "answers", "model": model.name, "questions": len(questions),
            "conditions": {condition: condition_summary(rows[condition]) for condition in conditions},
            "settings": settings.__dict__ | {"instruction": INSTRUCTION}}
    if extraction:
        line["extraction"] = extracted
    return line


def print_table(line: dict) -> None:
    table = Table(title=f"{line['questions']} LoCoMo questions answered by {line['model']}")
    for column in ("condition", "F1", "BLEU-1", "prompt tokens", "TTFT p50 (s)", "latency p50 (s)"):
        table.add_column(column)
    for condition, summary in line["conditions"].items():
        table.add_row(condition, f"{summary['f1']:.3f}", f"{summary['bleu1']:.3f}",
                      f"{summary['prompt_tokens_mean']:.0f}", f"{summary['ttft_s_p50']:.3f}",
                      f"{summary['latency_s_p50']:.3f}")
    console.print(table)
    for example in line.get("extraction", {}).get("examples", []):
        console.print(f"extracted {example['type']}: {example['content']} ({', '.join(example['source'])})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="LoCoMo-format JSON file")
    parser.add_argument("--model", type=Path, help=f"model directory (default: {DEFAULT_MODEL}, built if needed)")
    parser.add_argument("--questions", type=int, help="ask this many questions, spread over the file")
    parser.add_argument("--conditions", default=",".join(CONDITIONS), help="comma-separated, of: "
                        + ", ".join(CONDITIONS))
    parser.add_argument("--memory-budget", type=int, default=1000, help="injected tokens (default %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=32, help="answer length (default %(default)s)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    parser.add_argument("--quick", action="store_true", help="20 questions; no extraction condition")
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    args = parser.parse_args(argv)
    if args.quick:
        args.questions = args.questions or 20
        args.conditions = ",".join(c for c in args.conditions.split(",") if c != "memory_extraction")
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    unknown = sorted(set(conditions) - set(CONDITIONS))
    if unknown or not conditions:
        parser.error(f"--conditions: unknown {unknown}; choose from {', '.join(CONDITIONS)}")
    samples = json.loads(args.data.read_text())
    questions = plan(samples, args.questions)
    model = args.model or ensure_model(DEFAULT_MODEL, DEFAULT_MODEL_DIR)
    context_len = json.loads((model / "config.json").read_text())["max_position_embeddings"]
    settings = EngineSettings(max_model_len=context_len, memory_token_budget=args.memory_budget,
                              dtype=explicit_dtype(args.dtype, model), max_tokens=args.max_tokens)
    with tempfile.TemporaryDirectory(prefix="bench-answers-") as tmp:
        line = asyncio.run(measure(model, Path(tmp), samples, questions, conditions, settings))
    print_table(line)
    if args.json:
        print(json.dumps(line))


if __name__ == "__main__":
    main()
