"""Two tenants on one sidecar: does tenant A's flood starve tenant B?

    python -m bench.tenants [--chats N] [--rounds R] [--json]

One `memsidecar serve` on the tiny model with its default quotas and rate limit, and two API keys. Tenant B holds
`--memories` memories and chats one request at a time with memory on (injection and write-back), `--max-tokens`
greedy tokens: alone, then again while tenant A floods the sidecar, in `--rounds` rounds (`--chats` chats per phase
in all, split over the rounds; alternating keeps a drift in a shared machine's other load off one phase). A floods
from many threads with
- bulk memory writes (`--bulk-threads` threads, `--bulk-turns` turns per request),
- long chats (`--long-threads` threads, `--long-tokens` tokens each, EOS ignored),
- adapter uploads (one thread, the same few random LoRA adapters again and again: each upload is a new version).
Reported: B's chat latency p50/p95 alone and under the flood, their ratio (target: p95 under flood <= 2x alone),
B's failures, A's requests served and refused by reason (status and error code / quota), and 5xx answers of
either tenant (target: none). To tell where B's time goes, B also times, alone and under the flood, memory searches
alone (`b_search_*`) and chats with memory off (`b_plain_*`, the engine path only), and the cores that the sidecar,
its engine and this client (A's threads and B) used while B measured (`cores_alone`, `cores_flood`), and A's chats
in flight to the engine meanwhile (`a_engine_in_flight_*`, from the sidecar's /metrics), and the machine's stalls
while B measured (`machine_stalls_*`: a sleeping process's late wake-ups, `bench.stalls`), which no scheduling in
the sidecar can shorten.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import statistics
import tempfile
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
from rich.console import Console
from rich.table import Table

from bench.served import ServedSidecar
from bench.stalls import StallProbe
from bench.stats import percentile
from sidecar.engine.model_builder import ensure_model

console = Console(stderr=True)
KEYS = {"A": "key-flood", "B": "key-normal"}
TOPICS = ["parrots", "the greenhouse", "Lisbon", "my sister", "Python", "the festival", "the garden", "music"]


def headers(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[tenant]}"}


def served_sidecar(model: Path, work: Path, extra: list[str]) -> ServedSidecar:
    """`memsidecar serve` on the tiny model with both tenants' API keys and its default quotas, then `extra`."""
    keys = ",".join(f"{key}:tenant-{name.lower()}" for name, key in KEYS.items())
    args = ["--model", str(model), "--data-dir", str(work / "data"), "--api-keys", keys, *extra]
    return ServedSidecar(args, work / "sidecar.log", stop_timeout_s=120)


def adapter_archives(model: Path, work: Path, count: int = 3) -> list[bytes]:
    from adapters.synthetic import random_adapter

    archives = []
    for seed in range(count):
        directory = random_adapter(model, work / f"adapter-{seed}", seed)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for path in sorted(directory.iterdir()):
                archive.write(path, path.name)
        archives.append(buffer.getvalue())
    return archives


def reason(response: httpx.Response) -> str:
    """`status code/param` of an answer: e.g. `429 quota_exceeded/engine_requests`, `200`."""
    if response.status_code < 400:
        return str(response.status_code)
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return str(response.status_code)
    return f"{response.status_code} {error.get('code')}" + (f"/{error['param']}" if error.get("param") else "")


class Flood:
    """Tenant A's threads, counting every answer by reason until `stop`."""

    def __init__(self, url: str, archives: list[bytes], args: argparse.Namespace) -> None:
        self.url, self.archives, self.args = url, archives, args
        self.answers: Counter[str] = Counter()
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        plan = [self._bulk] * self.args.bulk_threads + [self._long] * self.args.long_threads + [self._upload]
        for number, work in enumerate(plan):
            thread = threading.Thread(target=self._loop, args=(work, number), daemon=True)
            thread.start()
            self._threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(600)

    def _loop(self, work, number: int) -> None:
        with httpx.Client(timeout=600) as client:
            round_ = 0
            while not self.stop.is_set():
                try:
                    response = work(client, number, round_)
                    answer = reason(response)
                except httpx.HTTPError as error:
                    answer = f"transport {type(error).__name__}"
                with self._lock:
                    self.answers[answer] += 1
                if answer.startswith("429"):
                    time.sleep(0.2)  # a well-behaved client backs off a little; a hostile one would not need to
                round_ += 1

    def _bulk(self, client: httpx.Client, number: int, round_: int) -> httpx.Response:
        turns = [{"role": "user" if i % 2 == 0 else "assistant", "session": f"s{number}-{round_}",
                  "content": f"Flood turn {i}: the quarterly numbers for region {number} went up by {i} percent."}
                 for i in range(self.args.bulk_turns)]
        return client.post(f"{self.url}/v1/memories/messages", headers=headers("A"),
                           json={"user_id": "flooder", "messages": turns})

    def _long(self, client: httpx.Client, number: int, round_: int) -> httpx.Response:
        body = {"messages": [{"role": "user", "content": f"Tell me a very long story number {number}-{round_}."}],
                "max_tokens": self.args.long_tokens, "ignore_eos": True, "temperature": 0, "user": "flooder"}
        return client.post(f"{self.url}/v1/chat/completions", headers=headers("A"), json=body)

    def _upload(self, client: httpx.Client, number: int, round_: int) -> httpx.Response:
        return client.post(f"{self.url}/v1/adapters", params={"name": f"flood-{round_ % 50}"},
                           content=self.archives[round_ % len(self.archives)],
                           headers={**headers("A"), "content-type": "application/zip"})


def b_chats(client: httpx.Client, url: str, count: int, max_tokens: int, offset: int) -> tuple[list[float], Counter]:
    latencies, failures = [], Counter()
    for i in range(offset, offset + count):
        body = {"messages": [{"role": "user", "content": f"What do you remember about {TOPICS[i % len(TOPICS)]}? "
                                                         f"({i})"}],
                "max_tokens": max_tokens, "temperature": 0, "user": "normal"}
        started = time.perf_counter()
        response = client.post(f"{url}/v1/chat/completions", headers=headers("B"), json=body)
        elapsed = time.perf_counter() - started
        if response.status_code == 200:
            latencies.append(elapsed)
        else:
            failures[reason(response)] += 1
    return latencies, failures


def b_searches(client: httpx.Client, url: str, count: int, failures: Counter) -> list[float]:
    """B's memory searches: latencies of those answered 200; the others counted in `failures` by reason."""
    return _timed(failures, [lambda i=i: client.post(
        f"{url}/v1/memories/search", headers=headers("B"),
        json={"user_id": "normal", "query": f"What about {TOPICS[i % len(TOPICS)]}?"}) for i in range(count)])


def b_plain_chats(client: httpx.Client, url: str, count: int, max_tokens: int, failures: Counter) -> list[float]:
    """B's chats with memory off (the engine path only), as `b_searches`."""
    bodies = [{"messages": [{"role": "user", "content": f"Say something about {TOPICS[i % len(TOPICS)]}."}],
               "max_tokens": max_tokens, "temperature": 0, "memory": {"inject": False, "write": False}}
              for i in range(count)]
    return _timed(failures, [lambda body=body: client.post(f"{url}/v1/chat/completions", headers=headers("B"),
                                                           json=body) for body in bodies])


def _timed(failures: Counter, calls: list[Callable[[], httpx.Response]]) -> list[float]:
    latencies = []
    for call in calls:
        started = time.perf_counter()
        response = call()
        if response.status_code == 200:
            latencies.append(time.perf_counter() - started)
        else:
            failures[reason(response)] += 1
    return latencies


def summary(name: str, values: list[float]) -> dict:
    return {f"{name}_ms_p50": round(1000 * statistics.median(values), 1),
            f"{name}_ms_p95": round(1000 * percentile(values, 0.95), 1)}


def b_phase(client: httpx.Client, url: str, chats: int, parts: int, max_tokens: int, offset: int) -> tuple:
    """B's chats (latencies, failures), then its searches and its chats with memory off (latencies; their failures
    join the chats')."""
    latencies, failures = b_chats(client, url, chats, max_tokens, offset)
    return (latencies, failures, b_searches(client, url, parts, failures),
            b_plain_chats(client, url, parts, max_tokens, failures))


class InFlightSampler:
    """A's chats in flight to the engine (the sidecar's `/metrics`), sampled every `every_s` seconds until `stop`."""

    def __init__(self, url: str, every_s: float = 0.5) -> None:
        self.url, self.every_s = url, every_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "InFlightSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        line = 'memsidecar_tenant_usage{resource="engine_requests",tenant="tenant-a"}'
        with httpx.Client(timeout=30) as client:
            while not self._stop.wait(self.every_s):
                for text in client.get(f"{self.url}/metrics").text.splitlines():
                    if text.startswith(line):
                        self.samples.append(int(float(text.split()[-1])))


class CpuMeter:
    """CPU seconds used by the sidecar, its engine (every process under it) and this process, over the phases."""

    def __init__(self, sidecar_pid: int) -> None:
        self.sidecar = psutil.Process(sidecar_pid)
        self.used: dict[str, Counter[str]] = {"alone": Counter(), "flood": Counter()}
        self.windows: dict[str, list[tuple[float, float]]] = {"alone": [], "flood": []}  # monotonic start, end

    def sample(self) -> Counter[str]:
        engine = 0.0
        for child in self.sidecar.children(recursive=True):
            try:
                engine += sum(child.cpu_times()[:2])
            except psutil.Error:
                pass  # a process that ended between listing and reading
        return Counter({"sidecar": sum(self.sidecar.cpu_times()[:2]), "engine": engine,
                        "bench_client": sum(psutil.Process().cpu_times()[:2])})

    def measure(self, phase: str, work):
        before, started = self.sample(), time.monotonic()
        result = work()
        self.windows[phase].append((started, time.monotonic()))
        self.used[phase].update(self.sample() - before)
        return result

    def wall(self, phase: str) -> float:
        """Seconds B measured in `phase`, all its windows together."""
        return sum(end - start for start, end in self.windows[phase])

    def cores(self, phase: str) -> dict[str, float]:
        """Cores each used on average while B measured in `phase`."""
        return {name: round(seconds / self.wall(phase), 2) for name, seconds in self.used[phase].items()}


def run(url: str, archives: list[bytes], args: argparse.Namespace, meter: CpuMeter, probe: StallProbe) -> dict:
    """B's figures over `args.rounds` rounds, each B alone then B under A's flood, pooled: alternating the phases
    keeps a drift in the machine's other load from landing on one phase only."""
    latencies: dict[str, list[float]] = {}
    failures: Counter[str] = Counter()
    answers: Counter[str] = Counter()
    a_in_flight: list[int] = []  # A's chats in flight to the engine while B measured under the flood
    per_round = [args.chats // args.rounds + (i < args.chats % args.rounds) for i in range(args.rounds)]
    parts = [args.parts // args.rounds + (i < args.parts % args.rounds) for i in range(args.rounds)]
    with httpx.Client(timeout=600) as client:
        for i in range(args.memories):
            client.post(f"{url}/v1/memories", headers=headers("B"), json={
                "user_id": "normal", "content": f"Fact {i}: I like {TOPICS[i % len(TOPICS)]} ({i})"}).raise_for_status()
        b_chats(client, url, 3, args.max_tokens, 0)  # warm-up
        for round_ in range(args.rounds):
            for phase in ("alone", "flood"):
                flood = Flood(url, archives, args) if phase == "flood" else None
                if flood is not None:
                    flood.start()
                    time.sleep(args.flood_lead_s)  # let the flood reach its steady state
                offset = 100 * (1 + round_) + (5000 if flood else 0)  # B asks new questions every round
                with InFlightSampler(url) as sampler:
                    chats, failed, searches, plain = meter.measure(phase, lambda: b_phase(
                        client, url, per_round[round_], parts[round_], args.max_tokens, offset))
                if flood is not None:
                    a_in_flight += sampler.samples
                if flood is not None:
                    flood.finish()
                    answers += flood.answers
                for name, values in (("b", chats), ("b_search", searches), ("b_plain", plain)):
                    latencies.setdefault(f"{name}_{phase}", []).extend(values)
                failures += failed
        whoami = client.get(f"{url}/v1/whoami", headers=headers("A")).json()
    server_errors = sum(n for r, n in (answers + failures).items() if r[:1] == "5")
    alone_p95, loaded_p95 = percentile(latencies["b_alone"], 0.95), percentile(latencies["b_flood"], 0.95)
    return {
        **summary("b_alone", latencies["b_alone"]), **summary("b_flood", latencies["b_flood"]),
        "b_p95_ratio": round(loaded_p95 / alone_p95, 2), "b_failures": dict(failures),
        **{k: v for name in ("b_search_alone", "b_plain_alone", "b_search_flood", "b_plain_flood")
           for k, v in summary(name, latencies[name]).items()},
        "cores_alone": meter.cores("alone"), "cores_flood": meter.cores("flood"),
        **{f"machine_stalls_{phase}": probe.stalls(meter.windows[phase]).as_json(meter.wall(phase))
           for phase in ("alone", "flood")},
        "a_engine_in_flight_mean": round(statistics.mean(a_in_flight), 1) if a_in_flight else None,
        "a_engine_in_flight_max": max(a_in_flight, default=None),
        "a_answers": dict(sorted(answers.items())),
        "a_refused": {r: n for r, n in sorted(answers.items()) if r[:1] == "4"},
        "server_errors": server_errors, "a_usage_after": whoami.get("usage", {}),
        "target_met": loaded_p95 <= 2 * alone_p95 and server_errors == 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chats", type=int, default=30, help="B's chats alone, and again under the flood")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of B alone then flooded; the figures pool them")
    parser.add_argument("--memories", type=int, default=50, help="B's memories")
    parser.add_argument("--parts", type=int, default=15, help="B's searches and plain chats, alone and flooded")
    parser.add_argument("--max-tokens", type=int, default=16, help="tokens of B's answers")
    parser.add_argument("--bulk-threads", type=int, default=10, help="A's threads writing memories in bulk")
    parser.add_argument("--bulk-turns", type=int, default=200, help="turns per bulk write")
    parser.add_argument("--long-threads", type=int, default=24, help="A's threads sending long chats")
    parser.add_argument("--long-tokens", type=int, default=512, help="tokens of A's long chats")
    parser.add_argument("--flood-lead-s", type=float, default=5.0, help="seconds the flood runs before B measures")
    parser.add_argument("--sidecar-args", default="", help="more `memsidecar serve` flags, e.g. quotas")
    parser.add_argument("--keep", type=Path, default=None,
                        help="work in this directory and keep it (the sidecar's log, its data), else a temporary one")
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    args = parser.parse_args()
    with contextlib.nullcontext(str(args.keep)) if args.keep else tempfile.TemporaryDirectory(
            prefix="bench-tenants-") as tmp:
        work = Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model = ensure_model("tiny", work / "tiny")
        archives = adapter_archives(model, work)
        with served_sidecar(model, work, shlex.split(args.sidecar_args)) as sidecar, StallProbe() as probe, \
                console.status("measuring"):
            result = run(sidecar.base_url, archives, args, CpuMeter(sidecar.process.pid), probe)
    table = Table(title="tenant B's chat latency, ms")
    for column in ("", "p50", "p95"):
        table.add_column(column)
    table.add_row("B alone", str(result["b_alone_ms_p50"]), str(result["b_alone_ms_p95"]))
    table.add_row("B under A's flood", str(result["b_flood_ms_p50"]), str(result["b_flood_ms_p95"]))
    for part, label in (("search", "B memory search"), ("plain", "B chat, memory off")):
        for phase in ("alone", "flood"):
            table.add_row(f"{label}, {'alone' if phase == 'alone' else 'under the flood'}",
                          str(result[f"b_{part}_{phase}_ms_p50"]), str(result[f"b_{part}_{phase}_ms_p95"]))
    console.print(table)
    answers = Table(title="tenant A's answers")
    answers.add_column("answer")
    answers.add_column("count")
    for answer, count in result["a_answers"].items():
        answers.add_row(answer, str(count))
    console.print(answers)
    for phase in ("alone", "flood"):
        console.print(f"cores used while B measured, {phase}: {result[f'cores_{phase}']}")
        console.print(f"machine stalls while B measured, {phase} (a sleeping process woken > 0.25 s late): "
                      f"{result[f'machine_stalls_{phase}']}")
    console.print(f"A's chats in flight to the engine while B measured under the flood: mean "
                  f"{result['a_engine_in_flight_mean']}, max {result['a_engine_in_flight_max']}")
    console.print(f"B p95 ratio {result['b_p95_ratio']} (target <= 2), 5xx answers {result['server_errors']} "
                  f"(target 0), B failures {result['b_failures'] or 'none'}")
    if args.json:
        print(json.dumps({"bench": "tenants", "chats": args.chats, "rounds": args.rounds, "memories": args.memories,
                          "settings": {"model": "tiny", "max_tokens": args.max_tokens,
                                       "bulk_threads": args.bulk_threads, "bulk_turns": args.bulk_turns,
                                       "long_threads": args.long_threads, "long_tokens": args.long_tokens,
                                       "sidecar_args": args.sidecar_args},
                          **result}))


if __name__ == "__main__":
    main()
