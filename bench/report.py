"""Turns the benchmarks' JSON lines into `bench/REPORT.md`: tables, the issue's targets marked met or MISSED, plots.

    python -m bench.report [--results DIR] [--out FILE]

Input: every `*.jsonl` in the results folder (`make bench` appends to `bench/results/<bench>.jsonl`), one JSON
object per line as a benchmark printed it, plus a `meta` object (`commit`, `date`, `command`, `machine`, optional
`note`) saying where it was measured. A line gives one or more rows (`bench/sections.py` says how). For each
benchmark and row key the newest line wins: the latest `meta.date` (ISO 8601, compared as text), then the later
file, then the later line. Plots are written to `plots/` beside the output file and linked from it.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from bench.sections import SECTIONS, Section, Verdict

BENCH_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Run:
    """One JSON line of a results file; `order` sorts runs oldest first."""

    line: dict
    meta: dict
    order: tuple[str, str, int]  # (meta date, file name, line number)

    @property
    def bench(self) -> str:
        return self.line["bench"]


@dataclass(frozen=True)
class Row:
    """One table row: the key that tells its settings apart from the benchmark's other rows, its values, its run."""

    key: tuple
    values: dict
    run: Run


def load_runs(folder: Path) -> list[Run]:
    """Every JSON line of every `*.jsonl` in `folder`; a line without `bench` belongs to the file's name."""
    runs = []
    for path in sorted(folder.glob("*.jsonl")):
        for number, text in enumerate(path.read_text().splitlines(), 1):
            if not text.strip():
                continue
            line = json.loads(text)
            if not isinstance(line, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object, got {type(line).__name__}")
            meta = line.pop("meta", {})
            line.setdefault("bench", path.stem)
            runs.append(Run(line, meta, (str(meta.get("date", "")), path.name, number)))
    return runs


def newest_rows(runs: list[Run], section: Section) -> list[Row]:
    """The newest row per key of one benchmark, ordered by key, with the section's cross-row figures."""
    chosen: dict[tuple, Row] = {}
    for run in sorted(runs, key=lambda r: r.order):
        if run.bench == section.bench:
            for key, values in section.split(run.line):
                chosen[key] = Row(key, values, run)
    rows = [chosen[key] for key in sorted(chosen)]
    if section.compare is None:
        return rows
    others = [row.values for row in rows]
    return [Row(row.key, section.compare(row.values, others), row.run) for row in rows]


def markdown_table(headers: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)] + \
        ["| " + " | ".join(cells) + " |" for cells in body]


def render_runs(runs: list[Run]) -> tuple[list[str], dict[int, str]]:
    """The table of the runs behind the figures, and the id (r1, r2, ...) of each, by `id(run)`."""
    run_ids = {id(run): f"r{i}" for i, run in enumerate(runs, 1)}
    body = [[run_ids[id(r)], r.bench, r.meta.get("date", "?"), r.meta.get("commit", "?"), r.meta.get("machine", "?"),
             f"`{r.meta['command']}`" if "command" in r.meta else "?"] for r in runs]
    lines = markdown_table(["run", "benchmark", "date (UTC)", "commit", "machine", "command"], body) + [""]
    notes: dict[str, list[str]] = {}
    for run in runs:
        if run.meta.get("note"):
            notes.setdefault(run.meta["note"], []).append(run_ids[id(run)])
    lines += [f"Note on {', '.join(ids)}: {note}." for note, ids in notes.items()]
    return lines + ([""] if notes else []), run_ids


def render_section(section: Section, rows: list[Row], checked: list[Verdict], run_ids: dict[int, str],
                   out: Path) -> list[str]:
    """One benchmark's markdown: its table, its plot (drawn now), its targets; or that it has not been run."""
    lines = [f"## {section.title}", "", section.about, ""]
    if not rows:
        return lines + [f"Not run yet: no results of `bench.{section.bench}` "
                        f"(`make bench BENCHES={section.bench}`).", ""]
    body = [[c.cell(r.values) for c in section.columns] + [run_ids[id(r.run)]] for r in rows]
    lines += markdown_table([c.header for c in section.columns] + ["run"], body) + [""]
    if section.plot:
        section.plot.draw([r.values for r in rows], out.parent / "plots" / section.plot.file)
        lines += [f"![{section.plot.alt}](plots/{section.plot.file})", ""]
    if checked:
        lines += ["Issue targets:", ""] + [f"- {v.line()}" for v in checked] + [""]
    return lines


def header(checked: list[Verdict]) -> list[str]:
    met = sum(v.met is True for v in checked)
    missed = sum(v.met is False for v in checked)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return ["# Benchmark report", "",
            f"Written by `python -m bench.report` on {now} from `bench/results/*.jsonl`. `make bench` runs every "
            "benchmark again (`QUICK=1`: the short variants; `BENCHES=\"ttft adapters\"`: a subset), appends to "
            "those files and rewrites this report. Each row names the run it comes from, the newest of that "
            "benchmark and setting; the table below says when, where and at which commit each run was measured.", "",
            f"Issue targets: {met} met, {missed} MISSED (listed under each benchmark).", "", "## Runs", ""]


def render(runs: list[Run], out: Path) -> tuple[str, list[Verdict]]:
    """The report's markdown (drawing its plots on the way) and every target's verdict, in section order."""
    chosen = {s.bench: newest_rows(runs, s) for s in SECTIONS}
    used = sorted({id(r.run): r.run for rows in chosen.values() for r in rows}.values(),
                  key=lambda run: (run.bench, run.order))
    runs_table, run_ids = render_runs(used)
    body, checked = [], []
    for section in SECTIONS:
        rows = chosen[section.bench]
        verdicts = section.verdicts([(r.key, r.values) for r in rows]) if rows else []
        body += render_section(section, rows, verdicts, run_ids, out)
        checked += verdicts
    return "\n".join(header(checked) + runs_table + body), checked


def unreported(runs: list[Run]) -> list[str]:
    """Benchmarks in the results that no section reports (a misspelt `bench` field, or a new script)."""
    return sorted({r.bench for r in runs} - {s.bench for s in SECTIONS})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results", help="folder of *.jsonl files")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "REPORT.md", help="markdown file to write")
    args = parser.parse_args(argv)
    runs = load_runs(args.results)
    for bench in unreported(runs):
        print(f"bench.report: no section for benchmark {bench!r}; its lines are left out", file=sys.stderr)
    text, checked = render(runs, args.out)
    args.out.write_text(text)
    for verdict in checked:
        print(f"{verdict.bench}: {verdict.line().replace('**', '')}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
