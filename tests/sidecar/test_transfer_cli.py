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


def test_migrate_then_import_moves_a_tenant_from_lmdb_into_a_postgresql_store(tmp_path, monkeypatch, postgres_url):
    for name in ("MEMSIDECAR_CONFIG", "MEMSIDECAR_DATA_DIR", "MEMSIDECAR_MEMORY_DIR", "MEMSIDECAR_STORE"):
        monkeypatch.delenv(name, raising=False)
    with MemoryStore.open(tmp_path / "a") as store:
        kept = store.for_tenant("t1").add("Rosalind keeps three green parrots", user="ros")
    runner = CliRunner()
    migrated = runner.invoke(app, ["migrate", "--store", postgres_url])
    assert migrated.exit_code == 0 and "textual: schema version 2 (applied now: 1, 2)" in migrated.output
    assert "applied now: none" in runner.invoke(app, ["migrate", "--store", postgres_url]).output
    out = tmp_path / "t1.jsonl"
    exported = runner.invoke(app, ["export", str(out), "--tenant", "t1", "--memory-dir", str(tmp_path / "a")])
    assert exported.exit_code == 0, exported.output
    monkeypatch.setenv("MEMSIDECAR_STORE", postgres_url)  # as a deployment gives it: not on the command line
    imported = runner.invoke(app, ["import", str(out), "--tenant", "t1", "--memory-dir", str(tmp_path / "node")])
    assert imported.exit_code == 0, imported.output
    with MemoryStore.open(tmp_path / "elsewhere", store_url=postgres_url) as store:
        assert store.for_tenant("t1").get(kept.id).content == kept.content


def test_migrate_without_a_store_or_with_an_unreachable_one_says_so(monkeypatch):
    monkeypatch.delenv("MEMSIDECAR_STORE", raising=False)
    runner = CliRunner()
    missing = runner.invoke(app, ["migrate"])
    assert missing.exit_code == 2 and "--store or MEMSIDECAR_STORE" in missing.output
    down = runner.invoke(app, ["migrate", "--store", "postgresql://app:hunter2@127.0.0.1:1/mem"])
    assert down.exit_code == 1 and "cannot reach postgresql://app:***@127.0.0.1:1/mem" in down.output
    assert "hunter2" not in down.output
