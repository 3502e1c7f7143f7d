"""PNG plots of benchmark rows for `bench/REPORT.md`, drawn with matplotlib's Agg renderer.

Each function takes the row values of one benchmark (the dicts its JSON line holds, newest per setting) and a PNG
path. Figures are built from `matplotlib.figure.Figure`, never `pyplot`, so no global figure state is left behind.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.axes import Axes  # noqa: E402  (after the backend is chosen)
from matplotlib.figure import Figure  # noqa: E402

TTFT_MODES = (("recompute_s", "recompute"), ("prefix_cache_s", "vLLM prefix cache"),
              ("example_connector_s", "vLLM ExampleConnector"), ("ours_ram_s", "ours, RAM tier"),
              ("ours_disk_restart_s", "ours, LMDB after restart"))
ADAPTER_RUNS = (("tokens_per_s_base", "base model"), ("tokens_per_s_one", "one adapter"),
                ("tokens_per_s_many", "N adapters interleaved"))


def grouped_bars(ax, groups: list[str], series: list[tuple[str, list[float]]], fmt: str) -> None:
    """Bars of each series side by side in every group, each labelled with its value."""
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        bars = ax.bar(xs, values, width, label=label)
        ax.bar_label(bars, labels=[format(v, fmt) for v in values], fontsize=7, padding=2)
    ax.set_xticks(range(len(groups)), groups)


def save(fig: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def bar_chart(path: Path, size: tuple[float, float], groups: list[str], series: list[tuple[str, list[float]]],
              fmt: str, ylabel: str, title: str, decorate: Callable[[Axes], None] = lambda ax: None) -> None:
    """One grouped bar chart saved to `path`; `decorate` adds what a chart has beyond the bars (scales, targets)."""
    fig = Figure(figsize=size)
    ax = fig.subplots()
    grouped_bars(ax, groups, series, fmt)
    decorate(ax)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    save(fig, path)


def _dtype_note(row: dict) -> str:
    """", float32" for a row measured in another dtype than the benchmark's bf16, else ""."""
    return "" if row.get("dtype", "bfloat16") == "bfloat16" else f", {row['dtype']}"


def ttft(rows: list[dict], path: Path) -> None:
    """TTFT of every mode, grouped by prompt length, on a log scale."""
    modes = [(key, label) for key, label in TTFT_MODES if all(key in row for row in rows)]
    bar_chart(path, (8, 4.5), [f"{row['prompt_tokens']:,} tokens{_dtype_note(row)}" for row in rows],
              [(label, [row[key] for row in rows]) for key, label in modes], ".3f",
              "time to first token (s, log scale)", "TTFT by mode and prompt length", lambda ax: ax.set_yscale("log"))


def e2e_prompt_tokens(rows: list[dict], path: Path) -> None:
    """Prompt tokens per request, whole history against memsidecar, with the ≤ 0.1× target marked."""
    def targets(ax: Axes) -> None:
        for i, row in enumerate(rows):
            ax.hlines(0.1 * row["baseline_prompt_tokens_mean"], i - 0.45, i + 0.45, colors="black",
                      linestyles="dashed", label="target: 0.1× the whole history" if i == 0 else None)

    bar_chart(path, (6, 4), [f"{row['requests']} requests" for row in rows],
              [("whole history (vLLM alone)", [row["baseline_prompt_tokens_mean"] for row in rows]),
               ("memsidecar", [row["sidecar_prompt_tokens_mean"] for row in rows])], ",.0f",
              "prompt tokens per request (mean)", "End to end: prompt tokens per request", targets)


def adapters(rows: list[dict], path: Path) -> None:
    """Decode throughput with the base model, one adapter and N adapters, per N adapters through K slots."""
    bar_chart(path, (8, 4.5), [f"N={row['adapters']}, K={row['max_loras']}" for row in rows],
              [(label, [row[key] for row in rows]) for key, label in ADAPTER_RUNS], ".0f", "completion tokens/s",
              "Adapter throughput (N adapters through K engine slots)")


def memory_scale(rows: list[dict], path: Path) -> None:
    """Search latency p50 and p95 by collection size, one pair of lines per store, with the 50 ms p95 target."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for store in sorted({row.get("store", "lmdb") for row in rows}):
        mine = [row for row in rows if row.get("store", "lmdb") == store]
        for key, label in (("search_ms_p50", "p50"), ("search_ms_p95", "p95")):
            ax.plot([row["memories"] for row in mine], [row[key] for row in mine], marker="o",
                    label=f"{store}, search {label}")
    sizes = sorted({row["memories"] for row in rows})
    ax.axhline(50, color="black", linestyle="dashed", label="target: p95 ≤ 50 ms from 100k")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(sizes, [f"{size:,}" for size in sizes])
    ax.set_ylim(0, max(60, 1.15 * max(row["search_ms_p95"] for row in rows)))
    ax.set_xlabel("memories in the tenant")
    ax.set_ylabel("search latency (ms)")
    ax.set_title("Textual memory search latency by size")
    ax.legend(fontsize=8)
    save(fig, path)
