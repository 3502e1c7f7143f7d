"""Runs benchmarks for `make bench`, appending each one's JSON line and where it ran to `bench/results/<bench>.jsonl`.

    python -m bench.run_all [--quick] [--results DIR] [--locomo-data FILE] [BENCH ...] [-- EXTRA ARGS]

With no BENCH, every benchmark runs, one after the other. `--quick` passes `--quick` to those that have it. EXTRA
ARGS go to every benchmark named (e.g. `adapters -- --adapters 64 --max-loras 4`). Each benchmark's output is shown
as it runs; its last stdout line must be its JSON object, which is appended with a `meta` object: `commit` (short
hash, `-dirty` when tracked files differ from it), `date` (UTC, ISO 8601), `command`, `machine`. A benchmark that
exits non-zero or prints no JSON last is a failure: the others still run, then this exits 1 naming the failures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent  # benchmarks run here: some default to paths such as `.data/models`
BENCHES = ("ttft", "adapters", "overhead", "memory_scale", "locomo", "e2e", "answers", "distill", "tenants", "textual_lifecycle")
HAS_QUICK = ("ttft", "adapters", "e2e", "answers", "distill")
LOCOMO_DATA = ROOT.parent / "shared" / "data" / "locomo" / "locomo_dev.json"


def command(bench: str, quick: bool, locomo_data: Path, extra: list[str]) -> list[str]:
    """The benchmark's command line as a person would type it (`python` stands for this interpreter)."""
    argv = ["python", "-m", f"bench.{bench}", "--json"]
    if quick and bench in HAS_QUICK:
        argv.append("--quick")
    if bench == "locomo":
        argv += ["--data", os.path.relpath(locomo_data, ROOT)]
    return argv + extra


def git(*args: str) -> str:
    """A read-only git query's output ("" on failure); no optional locks, so a commit running beside it is safe."""
    result = subprocess.run(["git", "--no-optional-locks", *args], capture_output=True, text=True, cwd=ROOT)
    return result.stdout.strip() if result.returncode == 0 else ""


def machine() -> str:
    """`uname -m`, the cores this process may use, the CPU and its widest vector / bf16 instructions (a bf16 model
    computes about ten times slower on a CPU without them), and the GPU when `nvidia-smi` names one."""
    gpus = ""
    if shutil.which("nvidia-smi"):
        gpus = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True).stdout.strip().replace("\n", ", ")
    cpu = cpu_description(Path("/proc/cpuinfo"))
    return f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores{f' of {cpu}' if cpu else ''} " \
           f"({gpus or 'CPU only'})"


def cpu_description(cpuinfo: Path) -> str:
    """The first CPU's model name and vector / bf16 instructions from a Linux /proc/cpuinfo, e.g. "AMD EPYC, AVX2,
    no bf16"; "" where there is no such file."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return ""
    fields = dict(line.split(":", 1) for line in text.splitlines()[:40] if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    bf16 = "AMX bf16" if "amx_bf16" in flags else "AVX-512 bf16" if "avx512_bf16" in flags else "no bf16"
    return ", ".join(part for part in (fields.get("model name", ""), vector, bf16) if part)


def meta(argv: list[str]) -> dict:
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"commit": commit + ("-dirty" if dirty else ""),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": shlex.join(argv), "machine": machine()}


def run(argv: list[str]) -> dict | None:
    """Runs one benchmark, echoing its stdout; its JSON object, or None if it failed or printed none last."""
    print(f"\n$ {shlex.join(argv)}", flush=True)
    process = subprocess.Popen([sys.executable, *argv[1:]], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    last = ""
    for text in process.stdout:
        print(text, end="", flush=True)
        last = text.strip() or last
    if process.wait() != 0:
        return None
    try:
        line = json.loads(last)
    except json.JSONDecodeError:
        return None
    return line if isinstance(line, dict) else None


def append(results: Path, bench: str, line: dict, argv: list[str]) -> Path:
    """Appends the line, named `bench` where the script leaves that out, with its `meta` to `<bench>.jsonl`."""
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{bench}.jsonl"
    with path.open("a") as file:
        file.write(json.dumps({"bench": bench, **line, "meta": meta(argv)}) + "\n")
    return path


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benches", nargs="*", metavar="BENCH", help=f"any of: {', '.join(BENCHES)} (default: all)")
    parser.add_argument("--quick", action="store_true", help=f"pass --quick to {', '.join(HAS_QUICK)}")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results", help="folder of <bench>.jsonl")
    parser.add_argument("--locomo-data", type=Path, default=LOCOMO_DATA, help="LoCoMo JSON for bench.locomo")
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    unknown = [name for name in args.benches if name not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from: {', '.join(BENCHES)}")
    args.extra = argv[split + 1:]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    failed = []
    for bench in args.benches or BENCHES:
        argv_bench = command(bench, args.quick, args.locomo_data, args.extra)
        line = run(argv_bench)
        if line is None:
            failed.append(bench)
            print(f"bench.run_all: {bench} failed (non-zero exit or no JSON line last)", file=sys.stderr)
        else:
            print(f"bench.run_all: {bench} -> {append(args.results, bench, line, argv_bench)}", flush=True)
    if failed:
        sys.exit(f"bench.run_all: failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
