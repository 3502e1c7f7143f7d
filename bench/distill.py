"""Parametric memory, proven or not: a user's facts distilled into a LoRA adapter, then asked closed-book.

    python -m bench.distill [--quick] [--model DIR] [--facts N] [--epochs N] [--rank N] [--learning-rate X] [--json]

Seeded made-up facts about one user ("My cat is named Votobi."), each with a question ("What is my cat's name?")
and the invented word that answers it, so the model cannot know it beforehand. One `memsidecar serve` (the default
real model unless `--model`, adapters on):
1. the facts are stored as the user's memories (`POST /v1/memories`, type `fact`);
2. `POST /v1/adapters/distill` with `source: memories` trains an adapter on them in the sidecar (a job, followed
   until it ends), registers it and loads it into the engine; each memory becomes questions written by the base
   model and answered with the fact (`adapters.fact_questions`): the benchmark's questions are never given to it;
3. every question is asked, greedy, three ways: the base model closed-book (memory off), the adapter closed-book
   (memory off), and the base model with memory injection (the sidecar's defaults), the usual way to use memories.
A question counts as answered when the reply contains the invented word (case-insensitive). Reported: accuracy per
way, the distillation's steps, losses and seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from bench.answers import DEFAULT_MODEL_DIR
from bench.e2e import Settings as EngineSettings
from bench.e2e import served_sidecar
from sidecar.engine.dtype import explicit_dtype
from sidecar.engine.model_builder import ensure_model
from sidecar.runner import DEFAULT_MODEL

console = Console(stderr=True)
USER = "dana"
TEMPLATES = (
    ("My cat is named {}.", "What is my cat's name?"),
    ("My sister is called {}.", "What is my sister's name?"),
    ("I live in a town called {}.", "What town do I live in?"),
    ("My favorite band is {}.", "What is my favorite band?"),
    ("I work at a company called {}.", "Where do I work?"),
    ("My car is a {}.", "What car do I drive?"),
    ("My best friend is {}.", "Who is my best friend?"),
    ("My dog is named {}.", "What is my dog's name?"),
    ("I was born in {}.", "Where was I born?"),
    ("My favorite dish is {}.", "What is my favorite dish?"),
    ("My boss is called {}.", "What is my boss's name?"),
    ("My favorite game is {}.", "What is my favorite game?"),
)


@dataclass(frozen=True)
class Fact:
    statement: str
    question: str
    answer: str


def made_up_word(rng: random.Random) -> str:
    """Three consonant-vowel syllables, capitalized ("Votobi"): a name no model has seen attached to these facts."""
    return "".join(rng.choice("bcdfgklmnprstvz") + rng.choice("aeiou") for _ in range(3)).capitalize()


def make_facts(count: int, seed: int = 0) -> list[Fact]:
    if not 1 <= count <= len(TEMPLATES):
        raise SystemExit(f"--facts: give 1 to {len(TEMPLATES)}")
    rng, words = random.Random(seed), []
    while len(words) < count:
        word = made_up_word(rng)
        if word not in words:
            words.append(word)
    return [Fact(statement.format(word), question, word) for (statement, question), word in zip(TEMPLATES, words)]


async def ask(client: httpx.AsyncClient, model: str, question: str, inject: bool) -> str:
    body = {"model": model, "user": USER, "temperature": 0, "max_tokens": 24,
            "messages": [{"role": "user", "content": question}], "memory": {"inject": inject, "write": False}}
    response = await client.post("/v1/chat/completions", json=body)
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"] or ""


async def accuracy(client: httpx.AsyncClient, model: str, facts: list[Fact], inject: bool) -> float:
    replies = [await ask(client, model, fact.question, inject) for fact in facts]
    return sum(fact.answer.lower() in reply.lower() for fact, reply in zip(facts, replies)) / len(facts)


async def distill(client: httpx.AsyncClient, args) -> dict:
    body = {"name": "dana-facts", "source": "memories", "user_id": USER, "rank": args.rank, "epochs": args.epochs,
            "learning_rate": args.learning_rate, "target_modules": ["all-linear"]}
    response = await client.post("/v1/adapters/distill", json=body)
    response.raise_for_status()
    job = response.json()
    with console.status("distilling") as status:
        while job["status"] in ("queued", "running"):
            await asyncio.sleep(2)
            job = (await client.get(f"/v1/adapters/jobs/{job['id']}")).json()
            if job.get("progress"):
                status.update(f"distilling: step {job['progress']['step']}/{job['progress']['total']}, "
                              f"loss {job['progress']['loss']:.3f}")
    if job["status"] != "succeeded":
        raise RuntimeError(f"distillation {job['status']}: {job.get('error')}")
    return job["result"]


async def measure(model: Path, work: Path, facts: list[Fact], settings: EngineSettings, args) -> dict:
    adapters_on = ["--max-loras", "1", "--max-lora-rank", str(max(16, args.rank))]  # later flags win over the 0
    async with served_sidecar(model, work, settings, adapters_on) as sidecar:
        async with httpx.AsyncClient(base_url=sidecar.base_url, timeout=1800) as client:
            for fact in facts:
                (await client.post("/v1/memories", json={"user_id": USER, "type": "fact", "content": fact.statement})
                 ).raise_for_status()
            base = await accuracy(client, "bench", facts, inject=False)
            injected = await accuracy(client, "bench", facts, inject=True)
            started = time.perf_counter()
            result = await distill(client, args)
            seconds = time.perf_counter() - started
            adapted = await accuracy(client, result["adapter"], facts, inject=False)
    return {"bench": "distill", "model": model.name, "facts": len(facts),
            "accuracy": {"base_closed_book": base, "adapter_closed_book": adapted, "base_with_injection": injected},
            "distillation": {"examples": result["examples"], "steps": result["steps"],
                             "first_loss": round(result["first_loss"], 4), "last_loss": round(result["last_loss"], 4),
                             "train_seconds": round(result["seconds"], 1),
                             "job_seconds": round(seconds, 1), "rank": args.rank, "epochs": args.epochs,
                             "learning_rate": args.learning_rate, "target_modules": ["all-linear"]},
            "settings": settings.__dict__}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help=f"model directory (default: {DEFAULT_MODEL}, built if needed)")
    parser.add_argument("--facts", type=int, default=10, help=f"facts (1 to {len(TEMPLATES)}, default %(default)s)")
    parser.add_argument("--epochs", type=int, default=8, help="distillation epochs (default %(default)s)")
    parser.add_argument("--rank", type=int, default=16, help="adapter rank (default %(default)s)")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="(default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="4 facts")
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    args = parser.parse_args(argv)
    if args.quick:
        args.facts = 4
    facts = make_facts(args.facts)
    model = args.model or ensure_model(DEFAULT_MODEL, DEFAULT_MODEL_DIR)
    settings = EngineSettings(max_model_len=2048, dtype=explicit_dtype("auto", model), kv_cache_gib=1.0)
    with tempfile.TemporaryDirectory(prefix="bench-distill-") as tmp:
        line = asyncio.run(measure(model, Path(tmp), facts, settings, args))
    table = Table(title=f"{line['facts']} made-up facts, asked closed-book")
    table.add_column("way")
    table.add_column("accuracy")
    for way, value in line["accuracy"].items():
        table.add_row(way, f"{value:.0%}")
    console.print(table)
    distilled = line["distillation"]
    console.print(f"distillation: {distilled['steps']} steps, loss {distilled['first_loss']} -> "
                  f"{distilled['last_loss']}, {distilled['train_seconds']} s")
    if args.json:
        print(json.dumps(line))


if __name__ == "__main__":
    main()
