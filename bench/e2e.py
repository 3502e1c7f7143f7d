"""Chat with memsidecar against chat with the whole history, end to end, on LoCoMo conversations.

    python -m bench.e2e [--quick] [--json] [--data FILE] [--model DIR] [--questions N] [--max-model-len N]
                        [--memory-budget N] [--dtype auto|bfloat16|float16|float32] [--prompts-only]

Each conversation of the development split is replayed session by session; after each session, the questions whose
evidence ends in it are asked (categories 1-4, evidence present), two ways, on identical engine settings:
- `baseline`: vLLM alone (its prefix cache on), the prompt is the whole conversation so far as one system message
  (`[date]` headers, `Speaker: text` lines) plus the question, truncated from the oldest turns to fit the context
  as a client would (the model's own context, 32,768 tokens for Qwen2-0.5B, unless `--max-model-len` is given);
- `sidecar`: `memsidecar serve` (activation memory on) with the same engine settings; the session's turns are
  written to memory through `POST /v1/memories/messages` as they happen (what the chat path records), and each
  question is a chat with only the question, memory injected (top_k 100, `--memory-budget` tokens, default 1,000).
Reported per way: prompt tokens per request (the engine's count), TTFT p50/p95 (streaming, first content chunk),
end-to-end latency p50, and for the sidecar the evidence recall of the injected memories (share of the question's
evidence turn ids among their source turns). `--prompts-only` runs no engine: it counts both ways' prompts with
the model's tokenizer and chat template (as the engine does) and measures recall through the sidecar's memory path
in process, so the whole split takes minutes (timing it takes many hours on a CPU). Answers are never read. The
model is `qwen2-0.5b-shape` (random weights: outputs are meaningless, costs are real). `--quick`: the first
conversation, 8 of its questions spread over its sessions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from bench.locomo import CATEGORIES, evidence_ids, session_time
from bench.served import ServedSidecar
from bench.stats import percentile
from sidecar.engine.dtype import explicit_dtype
from sidecar.engine.model_builder import ensure_model
from sidecar.engine.command import EngineSpec
from sidecar.engine.process import ManagedEngine, free_port

console = Console(stderr=True)
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "locomo" / "locomo_dev.json"
DEFAULT_MODEL_DIR = Path(".data/models/qwen2-0.5b-shape")  # shared with bench.ttft
MEMORY_TOP_K = 100


@dataclass(frozen=True)
class Settings:
    """Engine settings shared by both ways."""

    max_model_len: int = 32768
    memory_token_budget: int = 1000
    block_size: int = 32
    dtype: str = "bfloat16"
    kv_cache_gib: float = 4.0
    max_tokens: int = 16
    max_num_seqs: int = 4


def sessions(conversation: dict) -> list[tuple[str, float, list[dict]]]:
    result, number = [], 1
    while f"session_{number}" in conversation:
        result.append((f"session_{number}", session_time(conversation[f"session_{number}_date_time"]),
                       conversation[f"session_{number}"]))
        number += 1
    return result


def last_evidence_session(qa: dict) -> int:
    """The session number of the question's latest evidence turn (`D3:7` is session 3)."""
    return max(int(turn[1:].split(":")[0]) for turn in evidence_ids(qa["evidence"]))


def turn_text(turn: dict) -> str:
    """A turn as both ways see it: its text, and the caption of an image it shared."""
    caption = turn.get("blip_caption")
    return f"{turn['text']} [shares image: {caption}]" if caption else turn["text"]


def history_lines(done: list[tuple[str, float, list[dict]]]) -> list[str]:
    lines = []
    for _, when, turns in done:
        lines.append(f"[{datetime.fromtimestamp(when, tz=timezone.utc):%d %B %Y}]")
        lines += [f"{turn['speaker']}: {turn_text(turn)}" for turn in turns]
    return lines


def truncated(tokenizer, lines: list[str], budget: int) -> str:
    """The newest lines whose text fits `budget` tokens of the model's tokenizer."""
    kept, used = [], 0
    for line in reversed(lines):
        cost = len(tokenizer.encode(line, add_special_tokens=False)) + 1
        if used + cost > budget:
            break
        kept.append(line)
        used += cost
    return "\n".join(reversed(kept))


async def timed_chat(client: httpx.AsyncClient, body: dict) -> dict:
    """TTFT (first content chunk), total latency, prompt tokens, the reply's text and the final `memory` object of a
    streamed chat."""
    started, first, usage, memory, text = time.perf_counter(), None, {}, None, []
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            pieces = [(c.get("delta") or {}).get("content") or "" for c in chunk.get("choices") or []]
            if first is None and any(pieces):
                first = time.perf_counter() - started
            text += pieces
            usage = chunk.get("usage") or usage
            memory = chunk.get("memory", memory)
    return {"ttft": first if first is not None else time.perf_counter() - started,
            "latency": time.perf_counter() - started, "prompt_tokens": usage.get("prompt_tokens", 0),
            "memory": memory, "text": "".join(text)}


def served_sidecar(model: Path, work: Path, settings: Settings, extra_args: Sequence[str] = ()) -> ServedSidecar:
    """`memsidecar serve` on both ways' engine settings, adapters off; `extra_args` come last, so they override."""
    args = ["--model", str(model), "--data-dir", str(work / "sidecar"), "--max-loras", "0",
            "--rate-limit-per-minute", "0", "--max-model-len", str(settings.max_model_len),
            "--block-size", str(settings.block_size), "--dtype", settings.dtype,
            "--kv-cache-gib", str(settings.kv_cache_gib), "--served-model-name", "bench",
            f"--engine-args=--max-num-seqs {settings.max_num_seqs} --seed 0", *extra_args]
    return ServedSidecar(args, work / "sidecar.log", ready_timeout_s=900)


def baseline_engine(model: Path, work: Path, settings: Settings) -> ManagedEngine:
    spec = EngineSpec(model_dir=model, served_model_name="bench", port=free_port(), kv_cache_gib=settings.kv_cache_gib,
                      max_model_len=settings.max_model_len, block_size=settings.block_size, dtype=settings.dtype,
                      extra_args=("--max-num-seqs", str(settings.max_num_seqs), "--seed", "0"),
                      cache_dir=work / "cache")
    return ManagedEngine(spec, work / "baseline-engine.log")


def plan(samples: list[dict], limit: int | None) -> list[tuple[dict, dict[int, list[dict]]]]:
    """Per conversation, the questions to ask after each session number. With `limit`, that many questions spread
    evenly over all eligible ones, so early and late sessions (short and long histories) are both asked about."""
    eligible = [(index, qa) for index, sample in enumerate(samples) for qa in sample["qa"]
                if qa["category"] in CATEGORIES and evidence_ids(qa.get("evidence") or [])]
    if limit is not None and limit < len(eligible):
        eligible = [eligible[round(i * (len(eligible) - 1) / max(1, limit - 1))] for i in range(limit)]
    result = []
    for index, sample in enumerate(samples):
        asked: dict[int, list[dict]] = {}
        for owner, qa in eligible:
            if owner == index:
                asked.setdefault(last_evidence_session(qa), []).append(qa)
        result.append((sample, asked))
    return result


def baseline_messages(tokenizer, done: list[tuple[str, float, list[dict]]], qa: dict, settings: Settings) -> list:
    """The baseline's prompt: the history so far (truncated to the context, newest kept) and the question."""
    history = truncated(tokenizer, history_lines(done), settings.max_model_len - settings.max_tokens - 64 - 32)
    return [{"role": "system", "content": f"Conversation so far:\n{history}"},
            {"role": "user", "content": qa["question"]}]


def session_turns(name: str, when: float, turns: list[dict]) -> list[dict]:
    """A session's turns as `POST /v1/memories/messages` takes them."""
    return [{"role": "user", "content": turn_text(turn), "speaker": turn["speaker"], "time": when, "session": name,
             "turn_id": turn["dia_id"]} for turn in turns]


def memory_options(settings: Settings) -> dict:
    """The `memory` object of the sidecar's question chats: inject, never write the question back."""
    return {"inject": True, "write": False, "top_k": MEMORY_TOP_K, "token_budget": settings.memory_token_budget}


def evidence_recall(qa: dict, sources: set[str]) -> float:
    wanted = evidence_ids(qa["evidence"])
    return len(wanted & sources) / len(wanted)


async def run_baseline(engine_url: str, tokenizer, work_plan, settings: Settings) -> list[dict]:
    measured = []
    async with httpx.AsyncClient(base_url=engine_url, timeout=900) as client:
        for sample, asked in work_plan:
            done = []
            for number, session in enumerate(sessions(sample["conversation"]), start=1):
                done.append(session)
                for qa in asked.get(number, []):
                    body = {"model": "bench", "max_tokens": settings.max_tokens, "temperature": 0,
                            "messages": baseline_messages(tokenizer, done, qa, settings)}
                    measured.append(await timed_chat(client, body))
    return measured


async def run_sidecar(url: str, work_plan, settings: Settings) -> list[dict]:
    measured = []
    async with httpx.AsyncClient(base_url=url, timeout=900) as client:
        for index, (sample, asked) in enumerate(work_plan):
            user = f"conv{index}"
            for number, (name, when, turns) in enumerate(sessions(sample["conversation"]), start=1):
                (await client.post("/v1/memories/messages",
                                   json={"user_id": user, "messages": session_turns(name, when, turns)})
                 ).raise_for_status()
                for qa in asked.get(number, []):
                    body = {"model": "bench", "user": user, "max_tokens": settings.max_tokens, "temperature": 0,
                            "messages": [{"role": "user", "content": qa["question"]}],
                            "memory": memory_options(settings)}
                    result = await timed_chat(client, body)
                    result["recall"] = evidence_recall(qa, await injected_sources(client, result["memory"]["ids"]))
                    measured.append(result)
    return measured


def count_prompts(model: Path, work: Path, work_plan, settings: Settings) -> dict:
    """`--prompts-only`: both ways' prompt tokens and memsidecar's evidence recall for every planned question, with
    no engine. The memory side runs in process on the sidecar's own path (`MemoryStore`, `MemoryChat.prepare`, which
    `/v1/memories/messages` and the chat endpoint call); prompts are counted with the model's tokenizer and chat
    template, as the engine counts them. TTFT and latency are not measured."""
    from transformers import AutoTokenizer

    from sidecar.chat.injection import MemoryChat, MemoryDefaults, MemoryOptions, conversation
    from textual.embedder import Embedder
    from textual.messages import ChatMessage
    from textual.store import MemoryStore

    tokenizer = AutoTokenizer.from_pretrained(model)

    def tokens(messages: list[dict]) -> int:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return len(tokenizer.encode(text, add_special_tokens=False))

    baseline, sidecar = [], []
    questions = sum(len(qs) for _, asked in work_plan for qs in asked.values())
    with MemoryStore.open(work / "memory", embedder=Embedder.open(), track_access=False) as store, \
            tqdm(total=questions, desc="questions", unit="q", file=sys.stderr) as bar:
        chat, handle = MemoryChat(store, MemoryDefaults(True, False, MEMORY_TOP_K, 1000)), store.for_tenant("bench")
        for index, (sample, asked) in enumerate(work_plan):
            user, done = f"conv{index}", []
            for number, (name, when, turns) in enumerate(sessions(sample["conversation"]), start=1):
                done.append((name, when, turns))
                handle.add_messages([ChatMessage(m["speaker"], m["content"], m["time"], m["session"], m["turn_id"])
                                     for m in session_turns(name, when, turns)], user=user)
                for qa in asked.get(number, []):
                    baseline.append({"prompt_tokens": tokens(baseline_messages(tokenizer, done, qa, settings))})
                    body = {"model": "bench", "user": user, "messages": [{"role": "user", "content": qa["question"]}]}
                    options = MemoryOptions(**memory_options(settings))
                    prepared, injection = chat.prepare(conversation("bench", body, options, chat.defaults), body)
                    sources = {turn for memory_id in injection.ids for turn in handle.get(memory_id).source}
                    sidecar.append({"prompt_tokens": tokens(prepared["messages"]),
                                    "recall": evidence_recall(qa, sources)})
                    bar.update()
    return summarize(baseline, sidecar, settings)


async def injected_sources(client: httpx.AsyncClient, ids: list[str]) -> set[str]:
    sources = set()
    for memory_id in ids:
        sources.update((await client.get(f"/v1/memories/{memory_id}")).json().get("source", []))
    return sources


def summarize(baseline: list[dict], sidecar: list[dict], settings: Settings) -> dict:
    """The JSON line; the timing figures only when the rows have them (not with `--prompts-only`)."""
    def stats(rows: list[dict], key: str, q: float) -> float:
        return round(percentile([row[key] for row in rows], q), 3)

    line = {
        "bench": "e2e", "requests": len(sidecar),
        "baseline_prompt_tokens_mean": round(statistics.fmean(r["prompt_tokens"] for r in baseline), 1),
        "sidecar_prompt_tokens_mean": round(statistics.fmean(r["prompt_tokens"] for r in sidecar), 1),
        "sidecar_evidence_recall": round(statistics.fmean(r["recall"] for r in sidecar), 4),
        "settings": settings.__dict__,
    }
    if all("ttft" in row for row in baseline + sidecar):
        line |= {
            "baseline_ttft_s_p50": stats(baseline, "ttft", 0.5), "sidecar_ttft_s_p50": stats(sidecar, "ttft", 0.5),
            "baseline_ttft_s_p95": stats(baseline, "ttft", 0.95), "sidecar_ttft_s_p95": stats(sidecar, "ttft", 0.95),
            "baseline_latency_s_p50": stats(baseline, "latency", 0.5),
            "sidecar_latency_s_p50": stats(sidecar, "latency", 0.5),
        }
    return line


async def measure(model: Path, work: Path, work_plan, settings: Settings) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    engine = baseline_engine(model, work, settings)
    await engine.start()
    try:
        while not engine.is_ready:
            await asyncio.sleep(0.5)
        with console.status("baseline: whole history in every prompt"):
            baseline = await run_baseline(engine.base_url, tokenizer, work_plan, settings)
    finally:
        await engine.stop()
    async with served_sidecar(model, work, settings) as sidecar:
        with console.status("sidecar: memory injection and activation memory"):
            measured = await run_sidecar(sidecar.base_url, work_plan, settings)
    return summarize(baseline, measured, settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the first conversation, 8 questions spread over it")
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="LoCoMo-format JSON file")
    parser.add_argument("--model", type=Path, help="model directory (default: the generated qwen2-0.5b-shape)")
    parser.add_argument("--questions", type=int, help="ask at most this many questions in all")
    parser.add_argument("--max-model-len", type=int, help="context of both ways (default: the model's own)")
    parser.add_argument("--memory-budget", type=int, default=Settings.memory_token_budget,
                        help="token budget of the injected memories (default %(default)s)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"],
                        help="both ways' engine dtype (default: what `memsidecar serve` runs the model in)")
    parser.add_argument("--prompts-only", action="store_true",
                        help="no engine: count both ways' prompt tokens and measure recall only (minutes for the "
                             "whole split, where timing it would take many hours on a CPU)")
    args = parser.parse_args()
    samples = json.loads(args.data.read_text())
    limit = args.questions or (8 if args.quick else None)
    samples = samples[:1] if args.quick else samples
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        work = Path(tmp)
        model = args.model or ensure_model("qwen2-0.5b-shape", DEFAULT_MODEL_DIR)
        context = json.loads((model / "config.json").read_text())["max_position_embeddings"]
        settings = Settings(max_model_len=args.max_model_len or context, memory_token_budget=args.memory_budget,
                            dtype=explicit_dtype(args.dtype, model))
        if args.prompts_only:
            line = count_prompts(model, work, plan(samples, limit), settings) | {"mode": "prompts_only"}
        else:
            line = asyncio.run(measure(model, work, plan(samples, limit), settings))
    table = Table(title=f"{line['requests']} questions: whole history vs memsidecar")
    table.add_column("")
    table.add_column("baseline")
    table.add_column("memsidecar")
    table.add_row("prompt tokens (mean)", str(line["baseline_prompt_tokens_mean"]),
                  str(line["sidecar_prompt_tokens_mean"]))
    if "baseline_ttft_s_p50" in line:
        table.add_row("TTFT p50 / p95 (s)", f"{line['baseline_ttft_s_p50']} / {line['baseline_ttft_s_p95']}",
                      f"{line['sidecar_ttft_s_p50']} / {line['sidecar_ttft_s_p95']}")
        table.add_row("latency p50 (s)", str(line["baseline_latency_s_p50"]), str(line["sidecar_latency_s_p50"]))
    table.add_row("evidence recall", "-", str(line["sidecar_evidence_recall"]))
    console.print(table)
    if args.json:
        print(json.dumps(line))


if __name__ == "__main__":
    main()
