"""`bench.report` turns results lines into REPORT.md and plots; `bench.run_all` appends lines and names failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report, run_all, sections
from bench.sections import ADAPTERS, MEMORY_SCALE as MEMORY_SCALE_SECTION

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

E2E_ROW = "8 requests, 4,096-token context, 1,000-token memory budget"


def ttft_line(example_s: float, disk_s: float, date: str) -> dict:
    row = {"prompt_tokens": 4096, "recompute_s": 24.0, "prefix_cache_s": 0.3, "example_connector_s": example_s,
           "ours_ram_s": 0.2, "ours_disk_restart_s": disk_s, "ours_ram_load_gb_per_s": 3.1,
           "ours_disk_restart_load_gb_per_s": 1.5, "outputs_match": True}
    return {"bench": "ttft", "results": [row],
            "meta": {"commit": "abc1234", "date": date, "command": "python -m bench.ttft --quick --json",
                     "machine": "x86_64, 2 cores (CPU only)"}}


def adapters_line(count: int, slots: int, one: float, many: float) -> dict:
    return {"bench": "adapters", "adapters": count, "max_loras": slots, "cold_load_ms_p50": 6.6,
            "warm_switch_ms_p50": 18.5, "base_one_token_ms_p50": 18.6, "tokens_per_s_base": 1100.0,
            "tokens_per_s_one": one, "tokens_per_s_many": many, "outputs_match": True,
            "meta": {"commit": "abc1234", "date": "2026-11-24T10:00:00Z", "command": "python -m bench.adapters"}}


E2E = {"bench": "e2e", "requests": 8, "baseline_prompt_tokens_mean": 3000.0, "sidecar_prompt_tokens_mean": 1500.0,
       "baseline_ttft_s_p50": 20.0, "sidecar_ttft_s_p50": 4.0, "baseline_ttft_s_p95": 21.0, "sidecar_ttft_s_p95": 4.5,
       "baseline_latency_s_p50": 21.0, "sidecar_latency_s_p50": 5.0, "sidecar_evidence_recall": 0.75}
MEMORY_SCALE = {"bench": "memory_scale", "results": [
    {"memories": 10000, "vector_index": "flat", "add_per_s": 224.1, "first_search_ms": 141.4, "search_ms_p50": 21.4,
     "search_ms_p95": 34.3, "search_after_add_ms_p50": 18.7},
    {"memories": 100000, "vector_index": "hnsw", "add_per_s": 212.7, "first_search_ms": 1644.5,
     "search_ms_p50": 28.0, "search_ms_p95": 61.2, "search_after_add_ms_p50": 29.2}]}


def write_lines(path: Path, lines: list[dict]) -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


@pytest.fixture
def written(tmp_path: Path, capsys) -> tuple[str, Path, str]:
    results = tmp_path / "results"
    results.mkdir()
    # The older ttft line is last in the file: the newer date must still win.
    float32 = ttft_line(0.7, 0.22, "2026-11-30") | {"settings": {"dtype": "float32"}}
    write_lines(results / "ttft.jsonl", [ttft_line(0.6, 0.15, "2026-11-25T09:00:00Z"), float32,
                                         ttft_line(0.21, 0.15, "2026-11-24")])
    write_lines(results / "adapters.jsonl", [adapters_line(32, 4, 600.0, 300.0), adapters_line(8, 8, 1000.0, 900.0),
                                             adapters_line(32, 4, 600.0, 540.0)])
    write_lines(results / "e2e.jsonl", [E2E])
    write_lines(results / "memory_scale.jsonl", [MEMORY_SCALE])
    out = tmp_path / "site" / "REPORT.md"
    out.parent.mkdir()
    report.main(["--results", str(results), "--out", str(out)])
    return out.read_text(), out.parent / "plots", capsys.readouterr().out


def test_the_newest_line_per_setting_fills_the_tables(written):
    text, _, _ = written
    row = "| 4,096 | 24.000 s | 0.300 s | 0.600 s | 0.200 s | 0.150 s | 3.10 GB/s | 1.50 GB/s | – | – | yes | r"
    assert row in text
    assert "0.210 s" not in text
    assert "4,096 tokens, float32: ExampleConnector TTFT ÷ ours after a restart = 3.18×" in text, \
        "a run in another dtype is its own row"
    assert "| 32 | 4 | 6.6 ms | 18.5 ms | 18.6 ms | 1100 | 600 | 540 | 0.90× | yes |" in text
    assert "| 8 | 8 |" in text and "| 300 |" not in text
    assert "| LMDB | 100,000 | hnsw | 213 | – | – | 1,644 ms | 28.0 ms | 61.2 ms | – | – | – | 29.2 ms | – | – |" in text
    assert "| r1 | adapters | 2026-11-24T10:00:00Z | abc1234 |" in text


def test_targets_are_marked_met_or_missed_from_the_figures(written):
    text, _, printed = written
    for line in ("**met**: 4,096 tokens: ExampleConnector TTFT ÷ ours after a restart = 4× (target ≥ 3×)",
                 "**met**: 4,096 tokens: ours (RAM tier) TTFT ÷ vLLM prefix cache = 0.667× (target ≤ 1.5×)",
                 "**met**: 4,096 tokens: recompute TTFT ÷ ours after a restart = 160× (target ≥ 25×)",
                 "**MISSED**: 4,096 tokens: engine load bandwidth after a restart (bytes loaded ÷ load time) = "
                 "1.5 GB/s (target ≥ 2 GB/s)",
                 "**met**: N=32, K=4: tokens/s with N adapters interleaved ÷ one adapter = 0.9× (target ≥ 0.8×)",
                 f"**MISSED**: {E2E_ROW}: prompt tokens per request, memsidecar ÷ whole history = 0.5× (target ≤ 0.1×)",
                 f"**met**: {E2E_ROW}: TTFT p50, memsidecar ÷ whole history = 0.2× (target ≤ 0.5×)",
                 f"**MISSED**: {E2E_ROW}: evidence recall of the injected memories = 0.75 (target ≥ 0.8)",
                 "**MISSED**: LMDB, 100,000 memories: search p95 = 61.2 ms (target ≤ 50 ms)"):
        assert f"\n- {line}\n" in text
        assert line.replace("**", "") in printed
    assert "10,000 memories: search p95" not in text and "N=8, K=8: tokens/s" not in text


def test_the_report_counts_verdicts_and_says_which_benchmarks_have_not_run(written):
    text, _, _ = written
    assert "Issue targets: 8 met, 5 MISSED" in text  # the float32 ttft row brings 3 met, 1 missed
    for bench in ("overhead", "locomo", "textual_lifecycle"):
        assert f"Not run yet: no results of `bench.{bench}`" in text
    assert "evidence recall = " not in text


def test_adapters_rows_show_the_resolver_comparison_and_dashes_for_runs_without_it():
    compared = {**adapters_line(8, 2, 900.0, 340.0), "cold_first_request_ms_p50": 31.2,
                "resolver_cold_first_request_ms_p50": 44.0, "resolver_warm_switch_ms_p50": 19.0,
                "resolver_tokens_per_s_many": 352.4, "resolver_outputs_match": False,
                "engine_rss_mib_after_cycle": 1510.4, "resolver_engine_rss_mib_after_cycle": 1490.0}
    tail = [column.cell(compared) for column in ADAPTERS.columns][-5:]
    assert tail == ["31.2 / 44.0 ms", "19.0 ms", "352", "**no**", "1,510 / 1,490 MiB"]
    older = [column.cell(adapters_line(8, 2, 900.0, 340.0)) for column in ADAPTERS.columns][-5:]
    assert older == ["–", "–", "–", "–", "–"]


def test_a_target_no_row_measures_is_not_measured_rather_than_met():
    verdicts = MEMORY_SCALE_SECTION.verdicts([(("lmdb", 10000), MEMORY_SCALE["results"][0])])
    assert [v.line() for v in verdicts] == [
        "**not measured yet**: search p95 (target ≤ 50 ms); needs a run with 100,000 memories or more",
        "**not measured yet**: add throughput ÷ LMDB's (target ≥ 0.5×); needs `--store postgresql://...` at a size "
        "LMDB was also run at",
        "**not measured yet**: cross-node visibility p95 (target ≤ 1000 ms); needs `--store postgresql://...`"]
    missing = ADAPTERS.verdicts([((32, 4), {"tokens_per_s_one": 600.0})])
    assert [v.met for v in missing] == [None]


def test_a_postgresql_row_is_compared_with_the_lmdb_row_of_its_size(tmp_path: Path):
    postgres = {"bench": "memory_scale", "results": [
        {"store": "postgresql", "memories": 100000, "vector_index": "hnsw", "add_per_s": 85.0, "search_ms_p50": 30.0,
         "search_ms_p95": 45.0, "visibility_ms_p50": 300.0, "visibility_ms_p95": 1400.0}]}
    write_lines(tmp_path / "memory_scale.jsonl", [MEMORY_SCALE, postgres])
    text, checked = report.render(report.load_runs(tmp_path), tmp_path / "REPORT.md")
    assert "| PostgreSQL | 100,000 | hnsw | 85 |" in text and "| 300 / 1,400 ms | 0.40× |" in text
    lines = [v.line() for v in checked if v.bench == "memory_scale"]
    assert "**MISSED**: PostgreSQL, 100,000 memories: add throughput ÷ LMDB's = 0.4× (target ≥ 0.5×)" in lines
    assert "**MISSED**: PostgreSQL, 100,000 memories: cross-node visibility p95 = 1400 ms (target ≤ 1000 ms)" in lines
    assert "**met**: PostgreSQL, 100,000 memories: search p95 = 45 ms (target ≤ 50 ms)" in lines


def test_plots_are_png_files_linked_from_the_report(written):
    text, plots, _ = written
    for name in ("ttft.png", "adapters.png", "e2e_prompt_tokens.png", "memory_scale.png"):
        assert (plots / name).read_bytes()[:8] == PNG_MAGIC and (plots / name).stat().st_size > 5000
        assert f"(plots/{name})" in text


def test_a_report_of_no_results_says_every_benchmark_is_not_run(tmp_path: Path):
    out = tmp_path / "REPORT.md"
    report.main(["--results", str(tmp_path / "absent"), "--out", str(out)])
    assert out.read_text().count("Not run yet") == len(sections.SECTIONS)
    assert not (tmp_path / "plots").exists()


def test_run_all_appends_a_line_with_meta_and_fails_naming_a_failed_benchmark(tmp_path: Path, monkeypatch):
    scripts = {"ttft": "print('table'); print('{\"bench\": \"ttft\", \"results\": []}')",
               "textual_lifecycle": "print('{\"memories\": 5}')",
               "overhead": "print('{\"bench\": \"overhead\"}'); raise SystemExit(3)"}
    monkeypatch.setattr(run_all, "command", lambda bench, *_: ["python", "-c", scripts[bench]])
    with pytest.raises(SystemExit, match="failed: overhead$"):
        run_all.main(["ttft", "overhead", "textual_lifecycle", "--results", str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["textual_lifecycle.jsonl", "ttft.jsonl"]
    line = json.loads((tmp_path / "textual_lifecycle.jsonl").read_text())
    assert line["bench"] == "textual_lifecycle" and line["memories"] == 5
    assert set(line["meta"]) == {"commit", "date", "command", "machine"} and line["meta"]["date"].endswith("Z")


def test_quick_goes_only_to_benchmarks_that_have_it():
    assert run_all.command("ttft", True, Path("d.json"), []) == ["python", "-m", "bench.ttft", "--json", "--quick"]
    assert run_all.command("overhead", True, Path("d.json"), []) == ["python", "-m", "bench.overhead", "--json"]
    assert run_all.command("locomo", False, run_all.ROOT / "d.json", ["--k", "10"]) == \
        ["python", "-m", "bench.locomo", "--json", "--data", "d.json", "--k", "10"]


def test_the_machine_names_the_cpu_and_its_bf16_instructions(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu avx2 avx512f "
                    "avx512_bf16 amx_bf16\n\nprocessor\t: 1\n")
    assert run_all.cpu_description(info) == "Intel(R) Xeon(R) Platinum 8480+, AVX-512, AMX bf16"
    info.write_text("model name\t: AMD EPYC\nflags\t\t: fpu sse4_2 avx2\n")
    assert run_all.cpu_description(info) == "AMD EPYC, AVX2, no bf16"
    assert run_all.cpu_description(tmp_path / "absent") == ""
