"""What `bench/REPORT.md` shows of each benchmark: how its JSON line splits into rows, the columns, the issue's
targets and the plot.

A target is checked only on rows whose JSON holds every figure it needs; one that no row measures is reported as
not measured yet, never as met.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import plots


@dataclass(frozen=True)
class Column:
    """A table column: its header and how a row's values become its cell."""

    header: str
    cell: Callable[[dict], str]


@dataclass(frozen=True)
class Target:
    """An issue target on one figure of a row: met when `figure(values)` is at most (or at least) `bound`.

    `applies(key)` picks the rows the target speaks of; `needs` says which run would measure it when none does.
    """

    label: str
    figure: Callable[[dict], float | None]
    bound: float
    at_most: bool
    unit: str = "×"
    applies: Callable[[tuple], bool] = lambda key: True
    needs: str = "a run of this benchmark"


@dataclass(frozen=True)
class Verdict:
    """A target checked against one row; `figure` is None when no row measures it."""

    bench: str
    where: str
    target: Target
    figure: float | None

    @property
    def met(self) -> bool | None:
        if self.figure is None:
            return None
        return self.figure <= self.target.bound if self.target.at_most else self.figure >= self.target.bound

    def line(self) -> str:
        t = self.target
        wanted = f"target {'≤' if t.at_most else '≥'} {t.bound:g}{t.unit}"
        if self.figure is None:
            return f"**not measured yet**: {t.label} ({wanted}); needs {t.needs}"
        where = f"{self.where}: " if self.where else ""
        figure = f"{self.figure:.0f}" if abs(self.figure) >= 100 else f"{self.figure:.3g}"
        return f"**{'met' if self.met else 'MISSED'}**: {where}{t.label} = {figure}{t.unit} ({wanted})"


@dataclass(frozen=True)
class Plot:
    """A PNG drawn from a benchmark's rows into `plots/<file>` beside the report."""

    file: str
    alt: str
    draw: Callable[[list[dict], Path], None]


@dataclass(frozen=True)
class Section:
    """How one benchmark is reported: `split` turns its JSON line into (key, values) rows, one per setting."""

    bench: str
    title: str
    about: str
    split: Callable[[dict], list[tuple[tuple, dict]]]
    where: Callable[[tuple], str]
    columns: tuple[Column, ...]
    targets: tuple[Target, ...] = ()
    plot: Plot | None = None
    compare: Callable[[dict, list[dict]], dict] | None = None  # a row's values, given all rows: figures across rows

    def verdicts(self, rows: list[tuple[tuple, dict]]) -> list[Verdict]:
        """Every target against every (key, values) row it applies to that measures it."""
        found = []
        for target in self.targets:
            checked = [Verdict(self.bench, self.where(key), target, target.figure(values))
                       for key, values in rows if target.applies(key)]
            found += [v for v in checked if v.figure is not None] or [Verdict(self.bench, "", target, None)]
        return found


def ratio(values: dict, numerator: str, denominator: str) -> float | None:
    top, bottom = values.get(numerator), values.get(denominator)
    return None if top is None or not bottom else top / bottom


def col(header: str, key: str, fmt: str = "", suffix: str = "") -> Column:
    return Column(header, lambda v: "–" if v.get(key) is None else format(v[key], fmt) + suffix)


def pair(header: str, first: str, second: str, fmt: str = "", suffix: str = "") -> Column:
    a, b = col("", first, fmt), col("", second, fmt)
    return Column(header, lambda v: "–" if v.get(first) is None and v.get(second) is None
                  else f"{a.cell(v)} / {b.cell(v)}{suffix}")


def times(header: str, numerator: str, denominator: str) -> Column:
    def cell(values: dict) -> str:
        value = ratio(values, numerator, denominator)
        return "–" if value is None else f"{value:.2f}×"
    return Column(header, cell)


def yes_no(header: str, key: str) -> Column:
    return Column(header, lambda v: {True: "yes", False: "**no**"}.get(v.get(key), "–"))


def per_row(field: str) -> Callable[[dict], list[tuple[tuple, dict]]]:
    """A split for lines that hold a list of rows in `results`, keyed by `field`."""
    return lambda line: [((row[field],), row) for row in line["results"]]


def per_line(*fields: str) -> Callable[[dict], list[tuple[tuple, dict]]]:
    """A split for lines that are one row, keyed by the settings `fields`."""
    return lambda line: [(tuple(line[f] for f in fields), line)]


TTFT_MODES = ("recompute", "prefix_cache", "example_connector", "ours_ram", "ours_disk_restart")


def ttft_rows(line: dict) -> list[tuple[tuple, dict]]:
    """Rows keyed by (prompt tokens, the engines' dtype, the modes the run measured): a run of some modes, or in
    another dtype, does not hide a full bf16 one."""
    modes = tuple(line.get("modes", TTFT_MODES))
    dtype = line.get("settings", {}).get("dtype", "bfloat16")
    return [((row["prompt_tokens"], dtype, modes), {**row, "dtype": dtype}) for row in line["results"]]


def ttft_where(key: tuple) -> str:
    tokens, dtype, modes = key
    return f"{tokens:,} tokens" + ("" if dtype == "bfloat16" else f", {dtype}") + \
        ("" if set(modes) >= set(TTFT_MODES) else f" (a run of {', '.join(modes)})")


TTFT = Section(
    bench="ttft", title="Time to first token (`bench.ttft`)",
    about="Every mode on the same engine settings; median of the run's distinct prompts per length. For our modes "
          "the engine worker times the load and, from its end, the rest of that step's forward pass.",
    split=ttft_rows, where=ttft_where,
    columns=(col("prompt tokens", "prompt_tokens", ","), col("recompute", "recompute_s", ".3f", " s"),
             col("vLLM prefix cache", "prefix_cache_s", ".3f", " s"),
             col("vLLM ExampleConnector (fresh engine)", "example_connector_s", ".3f", " s"),
             col("ours, RAM tier", "ours_ram_s", ".3f", " s"),
             col("ours, LMDB after restart", "ours_disk_restart_s", ".3f", " s"),
             col("load bandwidth, RAM tier", "ours_ram_load_gb_per_s", ".2f", " GB/s"),
             col("load bandwidth, LMDB after restart", "ours_disk_restart_load_gb_per_s", ".2f", " GB/s"),
             pair("load / forward, RAM tier", "ours_ram_load_s", "ours_ram_forward_s", ".3f", " s"),
             pair("load / forward, after restart", "ours_disk_restart_load_s", "ours_disk_restart_forward_s", ".3f",
                  " s"),
             yes_no("outputs match", "outputs_match")),
    targets=(Target("ExampleConnector TTFT ÷ ours after a restart",
                    lambda v: ratio(v, "example_connector_s", "ours_disk_restart_s"), 3, at_most=False),
             Target("ours (RAM tier) TTFT ÷ vLLM prefix cache", lambda v: ratio(v, "ours_ram_s", "prefix_cache_s"),
                    1.5, at_most=True),
             Target("recompute TTFT ÷ ours after a restart",
                    lambda v: ratio(v, "recompute_s", "ours_disk_restart_s"), 25, at_most=False),
             Target("engine load bandwidth after a restart (bytes loaded ÷ load time)",
                    lambda v: v.get("ours_disk_restart_load_gb_per_s"), 2, at_most=False, unit=" GB/s")),
    plot=Plot("ttft.png", "TTFT by mode and prompt length, log scale", plots.ttft))

ADAPTERS = Section(
    bench="adapters", title="LoRA adapters (`bench.adapters`)",
    about="N seeded rank-8 adapters through K engine slots on the tiny model; throughput is completion tokens per "
          "second of concurrent greedy chats. The vLLM resolver columns: vLLM alone on the same engine command line, "
          "loading the same adapters by name on first use through its filesystem LoRA resolver plugin.",
    split=per_line("adapters", "max_loras"), where=lambda key: f"N={key[0]}, K={key[1]}",
    columns=(col("adapters N", "adapters"), col("slots K", "max_loras"),
             col("cold load p50", "cold_load_ms_p50", ".1f", " ms"),
             col("warm switch p50", "warm_switch_ms_p50", ".1f", " ms"),
             col("base 1-token chat p50", "base_one_token_ms_p50", ".1f", " ms"),
             col("tokens/s base", "tokens_per_s_base", ".0f"), col("tokens/s one adapter", "tokens_per_s_one", ".0f"),
             col("tokens/s N interleaved", "tokens_per_s_many", ".0f"),
             times("N interleaved ÷ one", "tokens_per_s_many", "tokens_per_s_one"),
             yes_no("outputs match", "outputs_match"),
             pair("cold first request p50, ours / vLLM resolver", "cold_first_request_ms_p50",
                  "resolver_cold_first_request_ms_p50", ".1f", " ms"),
             col("vLLM resolver: warm switch p50", "resolver_warm_switch_ms_p50", ".1f", " ms"),
             col("vLLM resolver: tokens/s N interleaved", "resolver_tokens_per_s_many", ".0f"),
             yes_no("vLLM resolver: outputs match ours", "resolver_outputs_match"),
             pair("engine RSS after all N, ours / vLLM resolver", "engine_rss_mib_after_cycle",
                  "resolver_engine_rss_mib_after_cycle", ",.0f", " MiB")),
    targets=(Target("tokens/s with N adapters interleaved ÷ one adapter",
                    lambda v: ratio(v, "tokens_per_s_many", "tokens_per_s_one"), 0.8, at_most=False,
                    applies=lambda key: key == (32, 4), needs="a run with N=32, K=4 (the default)"),),
    plot=Plot("adapters.png", "Adapter throughput: base, one adapter, N interleaved", plots.adapters))

def _e2e_context(line: dict) -> int:
    """The context both ways ran with (runs before the option existed used 4,096)."""
    return line.get("settings", {}).get("max_model_len", 4096)


E2E = Section(
    bench="e2e", title="End to end on LoCoMo conversations (`bench.e2e`)",
    about="Each question asked two ways on the same engine settings: the whole history so far in the prompt (vLLM "
          "alone, truncated to the context) and memsidecar (memory injection, activation memory). Rows without "
          "timings are `--prompts-only` runs: no engine, both prompts counted with the model's tokenizer and chat "
          "template, recall through the sidecar's memory path in process.",
    split=lambda line: [((line["requests"], _e2e_context(line),
                          line.get("settings", {}).get("memory_token_budget", 1000)), line)],
    where=lambda key: f"{key[0]} requests, {key[1]:,}-token context, {key[2]:,}-token memory budget",
    columns=(col("requests", "requests"), Column("context (tokens)", lambda v: format(_e2e_context(v), ",")),
             col("prompt tokens, whole history", "baseline_prompt_tokens_mean", ",.0f"),
             col("prompt tokens, memsidecar", "sidecar_prompt_tokens_mean", ",.0f"),
             pair("TTFT p50 / p95, whole history", "baseline_ttft_s_p50", "baseline_ttft_s_p95", ".2f", " s"),
             pair("TTFT p50 / p95, memsidecar", "sidecar_ttft_s_p50", "sidecar_ttft_s_p95", ".2f", " s"),
             pair("latency p50, whole history / memsidecar", "baseline_latency_s_p50", "sidecar_latency_s_p50",
                  ".2f", " s"),
             col("evidence recall (memsidecar)", "sidecar_evidence_recall", ".3f")),
    targets=(Target("prompt tokens per request, memsidecar ÷ whole history",
                    lambda v: ratio(v, "sidecar_prompt_tokens_mean", "baseline_prompt_tokens_mean"), 0.1,
                    at_most=True),
             Target("TTFT p50, memsidecar ÷ whole history",
                    lambda v: ratio(v, "sidecar_ttft_s_p50", "baseline_ttft_s_p50"), 0.5, at_most=True),
             Target("evidence recall of the injected memories", lambda v: v.get("sidecar_evidence_recall"), 0.8,
                    at_most=False, unit="")),
    plot=Plot("e2e_prompt_tokens.png", "Prompt tokens per request, whole history vs memsidecar",
              plots.e2e_prompt_tokens))

OVERHEAD = Section(
    bench="overhead", title="Latency the sidecar adds (`bench.overhead`)",
    about="The same chat sent one at a time to the engine alone, through the sidecar with memory off, and with "
          "memory on for a user holding M memories; end-to-end latency.",
    split=per_line(), where=lambda key: "",
    columns=(col("chats each way", "requests"), col("memories M", "memories"),
             pair("engine p50 / p95", "engine_ms_p50", "engine_ms_p95", ".1f", " ms"),
             pair("memory off p50 / p95", "sidecar_off_ms_p50", "sidecar_off_ms_p95", ".1f", " ms"),
             pair("memory on p50 / p95", "sidecar_on_ms_p50", "sidecar_on_ms_p95", ".1f", " ms"),
             pair("added, memory on, p50 / p95", "added_on_ms_p50", "added_on_ms_p95", "+.1f", " ms")))

STORE_NAMES = {"lmdb": "LMDB", "postgresql": "PostgreSQL"}


def memory_scale_rows(line: dict) -> list[tuple[tuple, dict]]:
    """Rows keyed by (store, memories); lines from before `--store` measured LMDB."""
    return [((row.get("store", "lmdb"), row["memories"]), {"store": "lmdb", **row}) for row in line["results"]]


def against_lmdb(values: dict, rows: list[dict]) -> dict:
    """A PostgreSQL row with its add throughput as a multiple of LMDB's at the same size (when a row has it)."""
    lmdb = [r for r in rows if r["store"] == "lmdb" and r["memories"] == values["memories"]]
    if values["store"] == "lmdb" or not lmdb:
        return values
    return {**values, "add_vs_lmdb": ratio({"pg": values.get("add_per_s"), "lmdb": lmdb[0].get("add_per_s")},
                                           "pg", "lmdb")}


MEMORY_SCALE = Section(
    bench="memory_scale", title="Textual memory at scale (`bench.memory_scale`)",
    about="One tenant of episodes; vectors precomputed from cached MiniLM base vectors (`bench.scale_corpus`), so "
          "add throughput is the store and the index, not the model; queries are embedded by MiniLM (included in "
          "the search times; the embedding alone is its own column). Search is top 10 under a 1,000-token budget. "
          "Index load: the tenant's index after a reopen, with its saved FAISS file; rebuild: without it. Search CPU "
          "is the process's CPU time per search (all threads): on a shared machine (load average above the cores) "
          "the wall times include waiting for a core.",
    split=memory_scale_rows, where=lambda key: f"{STORE_NAMES.get(key[0], key[0])}, {key[1]:,} memories",
    compare=against_lmdb,
    columns=(Column("store", lambda v: STORE_NAMES.get(v["store"], v["store"])), col("memories", "memories", ","),
             col("vector index", "vector_index"), col("add (memories/s)", "add_per_s", ".0f"),
             col("index load", "index_load_s", ".1f", " s"), col("index rebuild", "index_build_s", ".1f", " s"),
             col("first search", "first_search_ms", ",.0f", " ms"),
             col("search p50", "search_ms_p50", ".1f", " ms"), col("search p95", "search_ms_p95", ".1f", " ms"),
             col("of which query embedding p50", "embed_ms_p50", ".1f", " ms"),
             pair("search CPU p50 / p95", "search_cpu_ms_p50", "search_cpu_ms_p95", ".1f", " ms"),
             col("load average", "load_average", ".1f"),
             col("search after an add p50", "search_after_add_ms_p50", ".1f", " ms"),
             pair("cross-node visibility p50 / p95", "visibility_ms_p50", "visibility_ms_p95", ",.0f", " ms"),
             col("add vs LMDB", "add_vs_lmdb", ".2f", "×")),
    targets=(Target("search p95", lambda v: v.get("search_ms_p95"), 50, at_most=True, unit=" ms",
                    applies=lambda key: key[1] >= 100_000, needs="a run with 100,000 memories or more"),
             Target("add throughput ÷ LMDB's", lambda v: v.get("add_vs_lmdb"), 0.5, at_most=False,
                    applies=lambda key: key[0] == "postgresql",
                    needs="`--store postgresql://...` at a size LMDB was also run at"),
             Target("cross-node visibility p95", lambda v: v.get("visibility_ms_p95"), 1000, at_most=True,
                    unit=" ms", applies=lambda key: key[0] == "postgresql", needs="`--store postgresql://...`")),
    plot=Plot("memory_scale.png", "Search latency by collection size", plots.memory_scale))

SCALE_SEARCH = Section(
    bench="scale_search", title="Search on a kept store of a million memories (`bench.scale_search`)",
    about="Search as `bench.memory_scale` measures it (same questions, top 10, 1,000-token budget, query embedding "
          "included) on a store that `bench.memory_scale --dir` (or a script adding as it does) kept, without adding "
          "its memories again; the index is loaded from its saved FAISS file. Search CPU is the process's CPU time "
          "per search: wall times above it are waiting for a core on a shared machine.",
    split=lambda line: [((line["store"], round(line["memories"], -4)), line)],
    where=lambda key: f"{STORE_NAMES.get(key[0], key[0])}, {key[1]:,} memories",
    columns=(Column("store", lambda v: STORE_NAMES.get(v["store"], v["store"])), col("memories", "memories", ","),
             col("vector index", "vector_index"), col("index load", "index_load_s", ".1f", " s"),
             col("first search", "first_search_ms", ",.0f", " ms"),
             pair("search p50 / p95", "search_ms_p50", "search_ms_p95", ".1f", " ms"),
             pair("search CPU p50 / p95", "search_cpu_ms_p50", "search_cpu_ms_p95", ".1f", " ms"),
             col("of which query embedding p50", "embed_ms_p50", ".1f", " ms"),
             col("load average", "load_average", ".1f")),
    targets=(Target("search p95", lambda v: v.get("search_ms_p95"), 50, at_most=True, unit=" ms",
                    needs="a kept store of 1,000,000 memories"),))

LOCOMO = Section(
    bench="locomo", title="LoCoMo evidence recall (`bench.locomo`)",
    about="Every question of categories 1-4 with evidence, searched alone; recall is the share of its evidence "
          "turns among the sources of what would be injected (the recall target is the end-to-end one).",
    split=lambda line: [((line.get("budget", 1000),),
                         line | {"multi_hop": line.get("by_category", {}).get("multi-hop")})],
    where=lambda key: f"{key[0]:,}-token budget",
    columns=(col("questions", "questions"), col("token budget", "budget", ","),
             col("evidence recall", "evidence_recall", ".3f"),
             col("multi-hop", "multi_hop", ".3f"),
             col("mean injected tokens", "mean_context_tokens", ",.0f"),
             pair("search p50 / p95", "search_ms_p50", "search_ms_p95", ".1f", " ms")),
    targets=(Target("evidence recall", lambda v: v.get("evidence_recall"), 0.8, at_most=False, unit=""),
             # issue 21: 0.88 at 1,000 tokens, 0.80 at 500, multi-hop 0.70, search p95 50 ms
             Target("evidence recall (issue 21)", lambda v: v.get("evidence_recall"), 0.88, at_most=False, unit="",
                    applies=lambda key: key[0] == 1000, needs="a run at the default 1,000-token budget"),
             Target("evidence recall (issue 21)", lambda v: v.get("evidence_recall"), 0.80, at_most=False, unit="",
                    applies=lambda key: key[0] == 500, needs="a run with `--budget 500`"),
             Target("multi-hop evidence recall (issue 21)", lambda v: v.get("multi_hop"), 0.70, at_most=False,
                    unit="", applies=lambda key: key[0] == 1000, needs="a run at 1,000 tokens with by_category"),
             Target("search p95 (issue 21)", lambda v: v.get("search_ms_p95"), 50, at_most=True, unit=" ms",
                    applies=lambda key: key[0] == 1000)))

TEXTUAL_LIFECYCLE = Section(
    bench="textual_lifecycle", title="Textual memory lifecycle (`bench.textual_lifecycle`)",
    about="Mean ms per add without and with consolidation, one lifecycle run, median search over hot+warm and over "
          "cold.",
    split=per_line(), where=lambda key: "",
    columns=(col("memories", "memories"), col("add, plain", "add_plain_ms", ".2f", " ms"),
             col("add, consolidated", "add_consolidated_ms", ".2f", " ms"),
             col("lifecycle run", "lifecycle_ms", ".1f", " ms"),
             col("search hot", "search_hot_ms", ".2f", " ms"), col("search cold", "search_cold_ms", ".2f", " ms")))

def answers_rows(line: dict) -> list[tuple[tuple, dict]]:
    """One row per run, its conditions' figures flattened (`f1_memory`, `prompt_tokens_history`, ...)."""
    values = {"questions": line["questions"], "model": line["model"]}
    for condition, figures in line["conditions"].items():
        values |= {f"f1_{condition}": figures["f1"], f"bleu1_{condition}": figures["bleu1"],
                   f"prompt_tokens_{condition}": figures["prompt_tokens_mean"]}
    budget = line.get("settings", {}).get("memory_token_budget", 1000)
    return [((line["model"], line["questions"], budget), values)]


ANSWERS = Section(
    bench="answers", title="Answers scored on LoCoMo (`bench.answers`)",
    about="LoCoMo questions (categories 1-4) answered by the served model, greedy, on one engine, under each "
          "condition: no memory, the whole conversation (newest turns that fit the context), memsidecar's "
          "injection, and the gold evidence turns injected the same way (the ceiling of retrieval). LoCoMo's token F1.",
    split=answers_rows, where=lambda key: f"{key[0]}, {key[1]} questions, {key[2]:,}-token memory budget",
    columns=(col("model", "model"), col("questions", "questions"), col("F1, no memory", "f1_none", ".3f"),
             col("F1, whole history", "f1_history", ".3f"), col("F1, memsidecar", "f1_memory", ".3f"),
             col("F1, gold evidence", "f1_evidence", ".3f"),
             pair("prompt tokens, whole history / memsidecar", "prompt_tokens_history", "prompt_tokens_memory",
                  ",.0f")),
    targets=(Target("F1, memsidecar ÷ whole history", lambda v: ratio(v, "f1_memory", "f1_history"), 2,
                    at_most=False),
             Target("F1, memsidecar ÷ no memory", lambda v: ratio(v, "f1_memory", "f1_none"), 4, at_most=False),
             Target("prompt tokens, memsidecar ÷ whole history",
                    lambda v: ratio(v, "prompt_tokens_memory", "prompt_tokens_history"), 1 / 6, at_most=True),
             Target("F1, memsidecar ÷ gold evidence", lambda v: ratio(v, "f1_memory", "f1_evidence"), 0.8,
                    at_most=False)))

def distill_method(line: dict) -> str:
    """How the run trained its facts: runs that count their examples expand each fact into questions written by the
    base model (`adapters.fact_questions`); the earlier ones trained each memory's text."""
    return "fact questions" if "examples" in line["distillation"] else "memory text"


DISTILL = Section(
    bench="distill", title="Facts distilled into an adapter (`bench.distill`)",
    about="Made-up facts about one user stored as memories, an adapter distilled from them in the sidecar, and "
          "every fact's question asked closed-book (no injection) with and without it, and with injection instead.",
    split=lambda line: [((line["model"], line["facts"], line["distillation"]["epochs"], distill_method(line)),
                         line["accuracy"] | line["distillation"] | {"method": distill_method(line)})],
    where=lambda key: f"{key[0]}, {key[1]} facts, {key[2]} epochs, {key[3]}",
    columns=(col("method", "method"), col("epochs", "epochs"), col("closed book, base", "base_closed_book", ".0%"),
             col("closed book, adapter", "adapter_closed_book", ".0%"),
             col("base with injection", "base_with_injection", ".0%"), col("steps", "steps"),
             pair("loss first / last", "first_loss", "last_loss", ".3f"),
             col("training", "train_seconds", ".0f", " s")),
    targets=(Target("closed-book accuracy with the adapter", lambda v: v.get("adapter_closed_book"), 0.5,
                    at_most=False, unit=""),
             Target("closed-book accuracy without it", lambda v: v.get("base_closed_book"), 0.1, at_most=True,
                    unit="")))

def machine_stalls(values: dict) -> str:
    """The share of B's measuring time the machine stalled (`bench.stalls`), alone / under the flood; runs before
    the probe existed show a dash."""
    shares = [(values.get(f"machine_stalls_{phase}") or {}).get("share") for phase in ("alone", "flood")]
    return "–" if shares == [None, None] else " / ".join("–" if s is None else f"{s:.0%}" for s in shares)


TENANTS = Section(
    bench="tenants", title="One tenant flooding, another served (`bench.tenants`)",
    about="Tenant A floods one sidecar (bulk memory writes, long chats, adapter uploads) while tenant B chats with "
          "memory; B's chat latency alone and under the flood, A's refusals, and the share of B's measuring time "
          "in which the machine itself stalled (a sleeping process woken over 0.25 s late: no scheduling in the "
          "sidecar shortens those).",
    split=per_line(), where=lambda key: "",
    columns=(pair("B chat p50 / p95, alone", "b_alone_ms_p50", "b_alone_ms_p95", ",.0f", " ms"),
             pair("B chat p50 / p95, under A's flood", "b_flood_ms_p50", "b_flood_ms_p95", ",.0f", " ms"),
             Column("machine stalled, alone / flood", machine_stalls),
             col("server errors", "server_errors")),
    targets=(Target("B's chat p95 under the flood ÷ alone", lambda v: v.get("b_p95_ratio"), 2, at_most=True),
             Target("server errors", lambda v: v.get("server_errors"), 0, at_most=True, unit="")))

SECTIONS = (TTFT, ADAPTERS, E2E, ANSWERS, DISTILL, TENANTS, OVERHEAD, MEMORY_SCALE, SCALE_SEARCH, LOCOMO,
            TEXTUAL_LIFECYCLE)
