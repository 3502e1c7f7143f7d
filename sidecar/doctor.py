"""Environment checks run after `make install` (`memsidecar doctor`)."""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path

from rich.console import Console

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = ("sidecar", "kvcache", "adapters", "textual")
# Textual, the TUI framework, installs a top-level `textual` package that would collide with ours.
CONFLICTING_DISTRIBUTIONS = ("textual",)


def _check_project_packages() -> list[str]:
    problems = []
    for name in PROJECT_PACKAGES:
        module = importlib.import_module(name)
        location = Path(module.__file__).resolve().parent
        if location != PROJECT_ROOT / name:
            problems.append(f"`import {name}` resolves to {location}, not this project's {PROJECT_ROOT / name}")
    return problems


def _check_conflicts() -> list[str]:
    problems = []
    for name in CONFLICTING_DISTRIBUTIONS:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        problems.append(f"the distribution {name}=={version} is installed and shadows this project's `{name}` "
                        f"package; uninstall it (pip uninstall {name})")
    return problems


def _check_engine() -> list[str]:
    try:
        importlib.import_module("vllm.entrypoints.openai.api_server")
    except Exception as exc:  # any import failure is the finding itself
        return [f"vLLM does not import: {exc!r}. On CPU, uninstall torchvision, torchaudio and torchcodec."]
    return []


def run_checks(console: Console) -> list[str]:
    """Print each check's outcome; return the problems found."""
    problems = []
    for title, check in (("project packages", _check_project_packages), ("conflicting packages", _check_conflicts),
                         ("vLLM import", _check_engine)):
        found = check()
        problems += found
        console.print(f"{'[green]ok[/green]' if not found else '[red]FAIL[/red]'}  {title}")
        for problem in found:
            console.print(f"    {problem}")
    return problems
