"""`memsidecar export` and `memsidecar import` on real memory directories (offline, through the typer app)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from sidecar.cli import app
from textual.store import MemoryStore


def test_export_then_import_moves_a_tenants_memories_to_another_directory(tmp_path, monkeypatch):
    for name in ("MEMSIDECAR_CONFIG", "MEMSIDECAR_DATA_DIR", "MEMSIDECAR_MEMORY_DIR"):
        monkeypatch.delenv(name, raising=False)
    with MemoryStore.open(tmp_path / "a") as store:
        kept = store.for_tenant("t1").add("Rosalind keeps three green parrots", user="ros")
        store.for_tenant("t2").add("Another tenant's memory", user="ros")
    out = tmp_path / "t1.jsonl"
    runner = CliRunner()
    exported = runner.invoke(app, ["export", str(out), "--tenant", "t1", "--memory-dir", str(tmp_path / "a")])
    assert exported.exit_code == 0, exported.output
    lines = out.read_bytes().splitlines()
    assert json.loads(lines[0])["format"] == "memsidecar.memories" and len(lines) == 2
    imported = runner.invoke(app, ["import", str(out), "--tenant", "t9", "--memory-dir", str(tmp_path / "b")])
    assert imported.exit_code == 0, imported.output
    assert "imported 1 memories" in imported.output
    with MemoryStore.open(tmp_path / "b") as store:
        assert store.for_tenant("t9").get(kept.id).content == kept.content
    out.write_bytes(lines[0] + b"\n{broken\n")
    refused = runner.invoke(app, ["import", str(out), "--tenant", "t9", "--memory-dir", str(tmp_path / "b")])
    assert refused.exit_code == 2 and "line 2" in refused.output
