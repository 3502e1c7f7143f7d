"""LoRA adapter serving through memsidecar, beside vLLM's own filesystem LoRA resolver: cold load, warm switch,
decode throughput with 0, 1 and N adapters, engine memory.

    python -m bench.adapters [--quick] [--json] [--adapters N] [--max-loras K] [--model DIR] [--no-compare-resolver]

One `memsidecar serve` (a real sidecar and engine) on the tiny model with K engine slots and N loaded at most.
N seeded random rank-8 adapters are uploaded through `POST /v1/adapters`, then:
- cold load: `POST /v1/adapters/{name}/load` of an adapter not in the engine (disk -> serving), p50 over N;
- cold first request: a 1-token chat naming an adapter unloaded just before (loaded on the request path), p50;
- warm switch: a 1-token chat alternating between two loaded adapters, p50 (the base model's 1-token chat is
  reported beside it);
- decode throughput: `--concurrency` simultaneous chats of `--max-tokens` greedy tokens each, for the base model,
  for one adapter, and for N adapters interleaved round-robin through K slots; tokens/s = completion tokens / wall,
  the median of 3 rounds of the three batches after a warm-up batch (the engine's throughput swings for a while
  after batches with more adapters than slots; rounds spread a slow spell over all three kinds);
- outputs match: every adapter's output in the interleaved run equals its output requested alone;
- engine RSS after the cycle: resident memory of the engine's processes (server and children, summed) once every
  adapter has served, in MiB; the engine keeps at most `max_cpu_loras` adapters' weights (here max(K, N)).
Then the resolver comparison (`--compare-resolver`, on by default: one more engine start, about doubling the run;
`--no-compare-resolver` skips it): the sidecar stops and vLLM's OpenAI server runs alone on the very command line
the sidecar gave its engine (built by the sidecar's `build_engine` from the same settings: model, dtype, KV cache,
KV connector, `--max-loras`, `--max-cpu-loras`, `--max-lora-rank`, `--seed 0`), with vLLM's filesystem resolver
(`VLLM_PLUGINS=lora_filesystem_resolver`, `VLLM_LORA_RESOLVER_CACHE_DIR` holding the same N adapter directories,
`VLLM_ALLOW_RUNTIME_LORA_UPDATING=1`). The resolver loads an adapter when a request first names it (by directory
name) and only if its `base_model_name_or_path` is the engine's `--model` string exactly, so the adapters here
name the resolved model path. The same figures are measured there under `resolver_` keys, except the cold load (the
resolver has no load call): its cold first request is each adapter's first chat. `resolver_outputs_match`: each
adapter's output alone and in the interleaved run equals ours alone.
Defaults N=32, K=4 (`--quick`: N=8, K=2). The JSON records the engine settings both engines share (null: the
engine's default).

`--max-loras auto` lets the sidecar size its engine's slots (`adapters.sizing`: K from its memory budget, the
model's shapes and the adapters' ranks) and compares three sidecars, one after the other, each measured as above
(`modes` in the JSON, each with its engine settings and `many_over_one`, tokens/s of N interleaved / one adapter):
- `auto`: K sized by the sidecar (adapter-aware admission on, idle while K >= N); its figures are the line's own;
- `admission`: K = `--admission-slots` (default 4) with adapter-aware admission (`adapters.admission`): requests
  of at most K adapters in the engine, the others queued by adapter and admitted in groups, in rotation;
- `skip`: the same engine as `admission`, admission off: vLLM's scheduler skips the requests of adapters beyond K.
`admission` and `skip` differ only in the sidecar's `adapter_admission`; `auto` and `admission` only in
`max_loras` and `max_cpu_loras` (the sizing), so each pair compares one thing. The resolver comparison runs on the
`auto` engine's settings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path

import httpx
import psutil
from rich.console import Console
from rich.table import Table

from adapters.synthetic import random_adapter
from bench.served import ServedSidecar, wait_until_ready
from memcore.units import MIB
from sidecar.config import Settings
from sidecar.engine.model_builder import ensure_model
from sidecar.engine.command import EngineSpec, engine_command, engine_env
from sidecar.runner import build_engine

console = Console(stderr=True)
PROMPT = "The greenhouse door was"
THROUGHPUT_ROUNDS = 3  # each tokens/s figure is the median of this many batches
RANK = 8
ENGINE_SERVER = "vllm.entrypoints.openai.api_server"
FIGURES = ("cold_load_ms_p50", "cold_first_request_ms_p50", "warm_switch_ms_p50", "base_one_token_ms_p50",
           "tokens_per_s_base", "tokens_per_s_one", "tokens_per_s_many", "outputs_match", "engine_rss_mib_after_cycle")


def zipped(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(directory.iterdir()):
            archive.write(path, path.name)
    return buffer.getvalue()


def serve_flags(model: Path, data_dir: Path, slots: int | str, max_cpu_loras: int, admission: bool = True) -> dict:
    """The sidecar's settings in this benchmark (as `Settings` fields); its engine's command line follows from them."""
    return {"model": model, "data_dir": data_dir, "max_loras": slots,
            "max_cpu_loras": max_cpu_loras, "memory_inject": False, "memory_write": False, "rate_limit_per_minute": 0,
            "engine_args": "--seed 0", "adapter_admission": admission,
            "tenant_max_engine_requests": 0}  # one tenant sends every chat of a batch at once


def serve_args(flags: dict) -> list[str]:
    """`flags` as `memsidecar serve` flags: `--name=value`, `--name` / `--no-name` for booleans."""
    args = []
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        args.append((flag if value else f"--no-{flag[2:]}") if isinstance(value, bool) else f"{flag}={value}")
    return args


def engine_spec(flags: dict, data_dir: Path) -> EngineSpec:
    """The engine the sidecar starts for `flags`, built as the sidecar builds it, but with its own `data_dir`."""
    engine, _ = build_engine(Settings.load(None, **{**flags, "data_dir": data_dir}), console)
    return engine.spec


class ResolverEngine:
    """vLLM's OpenAI server alone on `spec`, in its own process group, finding adapters by name in `adapter_dir`
    through vLLM's filesystem resolver plugin; ready once `/health` answers 200, stopped on exit."""

    def __init__(self, spec: EngineSpec, adapter_dir: Path, log: Path) -> None:
        self.argv, self.url, self.log = engine_command(spec), spec.base_url, log
        self.env = {**engine_env(spec, dict(os.environ)), "VLLM_PLUGINS": "lora_filesystem_resolver",
                    "VLLM_LORA_RESOLVER_CACHE_DIR": str(adapter_dir)}  # engine_env allows runtime LoRA updating

    def __enter__(self) -> "ResolverEngine":
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True)
        try:
            wait_until_ready(self.process, f"{self.url}/health", self.log, timeout_s=600)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):  # engine-core processes left behind by the server
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def engine_rss_mib(pid: int) -> float:
    """Resident memory in MiB of the vLLM server at or under `pid` and of its children, summed."""
    root = psutil.Process(pid)
    server = next((p for p in [root, *root.children(recursive=True)] if ENGINE_SERVER in p.cmdline()), None)
    if server is None:
        raise RuntimeError(f"no {ENGINE_SERVER} process at or under pid {pid}")
    total = 0
    for process in [server, *server.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return round(total / MIB, 1)


async def chat(client: httpx.AsyncClient, model: str | None, max_tokens: int) -> tuple[str, int, float]:
    body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens, "temperature": 0,
            "ignore_eos": True}
    if model:
        body["model"] = model
    started = time.perf_counter()
    response = await client.post("/v1/chat/completions", json=body)
    elapsed = time.perf_counter() - started
    if response.is_error:
        raise RuntimeError(f"chat with model {model!r}: HTTP {response.status_code} {response.text[:300]}")
    reply = response.json()
    return reply["choices"][0]["message"]["content"], reply["usage"]["completion_tokens"], elapsed


async def throughput(client: httpx.AsyncClient, models: list[str | None], max_tokens: int) -> tuple[float, list[str]]:
    started = time.perf_counter()
    results = await asyncio.gather(*(chat(client, model, max_tokens) for model in models))
    wall = time.perf_counter() - started
    return sum(tokens for _, tokens, _ in results) / wall, [text for text, _, _ in results]


def ms_p50(seconds: list[float]) -> float:
    return round(1000 * statistics.median(seconds), 1)


async def cold_loads(client: httpx.AsyncClient, names: list[str]) -> list[float]:
    cold = []
    for name in names:  # most are on disk: only the last max_cpu_loras loaded stay loaded
        await client.post(f"/v1/adapters/{name}/unload")
        started = time.perf_counter()
        (await client.post(f"/v1/adapters/{name}/load")).raise_for_status()
        cold.append(time.perf_counter() - started)
    return cold


async def first_requests(client: httpx.AsyncClient, names: list[str], unload: bool) -> list[float]:
    """Seconds of a 1-token chat per adapter, each not loaded before it (`unload`: through the sidecar's API)."""
    seconds = []
    for name in names:
        if unload:
            (await client.post(f"/v1/adapters/{name}/unload")).raise_for_status()
        seconds.append((await chat(client, name, 1))[2])
    return seconds


async def serving(client: httpx.AsyncClient, names: list[str], concurrency: int,
                  max_tokens: int) -> tuple[dict, dict[str, str], list[tuple[str, str]]]:
    """The figures measured by chats alone, each adapter's output alone, and (adapter, output) of the interleaved
    run."""
    alone = {name: (await chat(client, name, max_tokens))[0] for name in names}
    a, b = names[-1], names[-2]
    await chat(client, a, 1)
    switch = [(await chat(client, (a, b)[i % 2], 1))[2] for i in range(20)]
    base_1 = [(await chat(client, None, 1))[2] for _ in range(10)]
    batch = max(concurrency, len(names))  # the same number of simultaneous chats in all three kinds of batch
    await throughput(client, [None] * batch, max_tokens)  # warm-up: one-off costs of the first batch this wide
    order = [names[i % len(names)] for i in range(batch)]
    kinds = {"base": [None] * batch, "one": [a] * batch, "many": order}
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    mixed: list[tuple[str, str]] = []
    for _ in range(THROUGHPUT_ROUNDS):  # rounds of the three kinds: a slow spell of the engine hits all of them
        for kind, models in kinds.items():
            rate, texts = await throughput(client, models, max_tokens)
            rates[kind].append(rate)
            if kind == "many":
                mixed += list(zip(order, texts))
    figures = {"warm_switch_ms_p50": ms_p50(switch), "base_one_token_ms_p50": ms_p50(base_1),
               **{f"tokens_per_s_{kind}": round(statistics.median(values), 1) for kind, values in rates.items()}}
    return figures, alone, mixed


async def measure(url: str, names: list[str], concurrency: int, max_tokens: int) -> tuple[dict, dict[str, str]]:
    """The sidecar's figures, and each adapter's output alone."""
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        await chat(client, None, 1)  # one-off costs of the engine's first request
        cold = await cold_loads(client, names)
        first = await first_requests(client, names, unload=True)
        figures, alone, mixed = await serving(client, names, concurrency, max_tokens)
    return {"cold_load_ms_p50": ms_p50(cold), "cold_first_request_ms_p50": ms_p50(first), **figures,
            "outputs_match": all(text == alone[name] for name, text in mixed)}, alone


async def measure_resolver(url: str, names: list[str], concurrency: int, max_tokens: int,
                           ours: dict[str, str]) -> dict:
    """The resolver engine's figures; outputs match when each equals ours alone for its adapter."""
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        await chat(client, None, 1)
        first = await first_requests(client, names, unload=False)
        figures, alone, mixed = await serving(client, names, concurrency, max_tokens)
    same = all(alone[name] == ours[name] for name in names) and all(text == ours[name] for name, text in mixed)
    return {"cold_first_request_ms_p50": ms_p50(first), **figures, "outputs_match": same}


def write_adapters(model: Path, folder: Path, count: int) -> list[str]:
    """N seeded adapters in `folder`, one directory each named as served, naming `model` as their base model (the
    engine's `--model`, which vLLM's filesystem resolver requires)."""
    names = []
    for seed in range(count):
        name = f"bench-{seed}"
        config_path = random_adapter(model, folder / name, seed, rank=RANK) / "adapter_config.json"
        config = json.loads(config_path.read_text())
        config_path.write_text(json.dumps({**config, "base_model_name_or_path": str(model)}, indent=2))
        names.append(name)
    return names


def upload_all(url: str, folder: Path, names: list[str]) -> None:
    for name in names:
        response = httpx.post(f"{url}/v1/adapters", params={"name": name}, content=zipped(folder / name), timeout=120,
                              headers={"content-type": "application/zip"})
        response.raise_for_status()


def shared_settings(spec: EngineSpec, concurrency: int, max_tokens: int) -> dict:
    lora = spec.lora
    return {"model": spec.model_dir.name, "max_loras": lora.max_loras, "max_cpu_loras": lora.max_cpu_loras,
            "rank": RANK, "concurrency": concurrency, "max_tokens": max_tokens, "dtype": spec.dtype,
            "temperature": 0, "max_lora_rank": lora.max_lora_rank, "kv_cache_gib": spec.kv_cache_gib,
            "block_size": spec.block_size, "max_model_len": spec.max_model_len, "max_num_seqs": None,
            "kv_connector": spec.kv_transfer_config is not None, "engine_extra_args": " ".join(spec.extra_args)}


def print_table(title: str, ours: dict, resolver: dict) -> None:
    table = Table(title=title)
    for header in ("figure", "memsidecar", "vLLM filesystem resolver"):
        table.add_column(header)
    for key in FIGURES:
        table.add_row(key, str(ours.get(key, "–")), str(resolver.get(key, "–")))
    console.print(table)


def run_sidecar(flags: dict, work: Path, names: list[str], concurrency: int,
                max_tokens: int) -> tuple[dict, dict[str, str]]:
    """The sidecar's figures, and each adapter's output alone; `adapter_slots`: its /v1/tiers view of the slots
    (the `auto` sizing, the admission queue's counts)."""
    data = flags["data_dir"]
    with console.status(f"starting a sidecar with {flags['max_loras']} slots"), \
            ServedSidecar(serve_args(flags), work / f"sidecar-{data.name}.log") as sidecar:
        with console.status(f"uploading {len(names)} adapters"):
            upload_all(sidecar.base_url, work / "adapters", names)
        with console.status("measuring"):
            ours, alone = asyncio.run(measure(sidecar.base_url, names, concurrency, max_tokens))
            ours["engine_rss_mib_after_cycle"] = engine_rss_mib(sidecar.process.pid)
            ours["adapter_slots"] = httpx.get(f"{sidecar.base_url}/v1/tiers", timeout=60).json()["engine"][
                "adapter_slots"]
    return ours, alone


def mode_figures(figures: dict, spec: EngineSpec, flags: dict, concurrency: int, max_tokens: int) -> dict:
    """One mode's figures with its engine settings and the sidecar's admission setting."""
    many_over_one = figures["tokens_per_s_many"] / figures["tokens_per_s_one"] if figures["tokens_per_s_one"] else None
    return {**figures, "many_over_one": None if many_over_one is None else round(many_over_one, 3),
            "settings": {**shared_settings(spec, concurrency, max_tokens),
                         "adapter_admission": flags["adapter_admission"]}}


def run_modes(model: Path, work: Path, names: list[str], admission_slots: int, concurrency: int,
              max_tokens: int) -> tuple[dict[str, dict], dict[str, str], EngineSpec]:
    """`auto`, `admission` and `skip` (see the module docstring): each mode's figures, each adapter's output alone
    (from `auto`), and the `auto` engine's spec."""
    count = len(names)
    modes = {"auto": serve_flags(model, work / "data-auto", "auto", count),
             "admission": serve_flags(model, work / "data-admission", admission_slots, max(admission_slots, count)),
             "skip": serve_flags(model, work / "data-skip", admission_slots, max(admission_slots, count), False)}
    figures, alone, specs = {}, {}, {}
    for mode, flags in modes.items():
        specs[mode] = engine_spec(flags, work / f"spec-{mode}")
        ours, outputs = run_sidecar(flags, work, names, concurrency, max_tokens)
        alone = alone or outputs
        ours["outputs_match"] = ours["outputs_match"] and outputs == alone  # alone, the same in every mode
        figures[mode] = mode_figures(ours, specs[mode], flags, max(concurrency, count), max_tokens)
    return figures, alone, specs["auto"]


def run_resolver(spec: EngineSpec, work: Path, names: list[str], concurrency: int, max_tokens: int,
                 ours: dict[str, str]) -> dict:
    """The figures of vLLM alone on `spec` with its filesystem resolver over the same adapters (unprefixed keys)."""
    with console.status("starting vLLM with its filesystem LoRA resolver"), \
            ResolverEngine(spec, work / "adapters", work / "resolver-engine.log") as engine:
        with console.status("measuring the resolver"):
            figures = asyncio.run(measure_resolver(engine.url, names, concurrency, max_tokens, ours))
            figures["engine_rss_mib_after_cycle"] = engine_rss_mib(engine.process.pid)
    return figures


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 adapters through 2 slots")
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    parser.add_argument("--adapters", type=int, help="number of adapters N (default 32, --quick 8)")
    parser.add_argument("--max-loras", type=slots_arg,
                        help="engine slots K, or auto: the sidecar sizes them, compared with --admission-slots with "
                             "and without adapter-aware admission (default 4, --quick 2)")
    parser.add_argument("--admission-slots", type=int, default=4,
                        help="with --max-loras auto: K of the admission and skip modes (default 4)")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="simultaneous chats per throughput run (at least N)")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens generated per chat")
    parser.add_argument("--model", type=Path, help="base model directory (default: the generated tiny model)")
    parser.add_argument("--compare-resolver", action=argparse.BooleanOptionalAction, default=True,
                        help="then measure vLLM alone with its filesystem LoRA resolver, same engine settings "
                             "(default: on)")
    return parser.parse_args()


def slots_arg(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer or auto, not {text!r}") from None


def print_modes(modes: dict[str, dict]) -> None:
    table = Table(title="slots sized by the sidecar vs fixed K with and without adapter-aware admission")
    for header in ("mode", "K", "admission", "tokens/s one", "tokens/s many", "many ÷ one", "outputs match"):
        table.add_column(header)
    for mode, figures in modes.items():
        settings = figures["settings"]
        table.add_row(mode, str(settings["max_loras"]), str(settings["adapter_admission"]),
                      str(figures["tokens_per_s_one"]), str(figures["tokens_per_s_many"]),
                      str(figures["many_over_one"]), str(figures["outputs_match"]))
    console.print(table)


def main() -> None:
    args = parse_args()
    count = args.adapters or (8 if args.quick else 32)
    slots = args.max_loras or (2 if args.quick else 4)
    concurrency = max(args.concurrency, count)
    modes: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-adapters-") as tmp:
        work = Path(tmp)
        model = (args.model or ensure_model("tiny", work / "tiny")).resolve()
        with console.status(f"writing {count} adapters"):
            names = write_adapters(model, work / "adapters", count)
        if slots == "auto":
            modes, alone, spec = run_modes(model, work, names, args.admission_slots, args.concurrency,
                                           args.max_tokens)
            ours = {key: value for key, value in modes["auto"].items() if key != "settings"}
        else:
            flags = serve_flags(model, work / "data", slots, max(slots, count))
            spec = engine_spec(flags, work / "resolver-data")
            ours, alone = run_sidecar(flags, work, names, args.concurrency, args.max_tokens)
        resolver = {}
        if args.compare_resolver:
            resolver = run_resolver(spec, work, names, args.concurrency, args.max_tokens, alone)
    settings = shared_settings(spec, concurrency, args.max_tokens)
    line = {"bench": "adapters", "adapters": count, "max_loras": spec.lora.max_loras, **ours,
            **{f"resolver_{key}": value for key, value in resolver.items()},
            "settings": {**settings, "max_loras_setting": slots, "compare_resolver": args.compare_resolver}}
    if modes:
        line["modes"] = modes
        print_modes(modes)
    print_table(f"{count} adapters through {spec.lora.max_loras} slots", ours, resolver)
    if args.json:
        print(json.dumps(line))


if __name__ == "__main__":
    main()
