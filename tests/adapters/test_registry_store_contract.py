"""The `RegistryStore` contract, on both stores: LMDB in a directory and PostgreSQL on a real server."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

from adapters.lmdb_registry_store import LmdbRegistryStore
from adapters.pg_registry_store import PgRegistryStore
from adapters.record import AdapterRecord
from adapters.registry_store import BLOB_FILES, Binding, RegistryStore
from memcore.digest import adapter_digest
from tests.adapters.conftest import files_of


class Stores:
    """Opens stores of one kind on one backing store (reopening it, or as another node); closes them all."""

    def __init__(self, kind: str, tmp_path: Path, url: str | None) -> None:
        self.kind, self.tmp_path, self.url, self.opened = kind, tmp_path, url, []

    def open(self, node: str = "a") -> RegistryStore:
        if self.kind == "lmdb":
            store = LmdbRegistryStore.open(self.tmp_path / "registry")
        else:
            store = PgRegistryStore.open(self.url, self.tmp_path / node / "cache")
        self.opened.append(store)
        return store

    def blobs(self) -> list[str]:
        """The digests of the blobs the backing store holds."""
        if self.kind == "lmdb":
            return sorted(p.name for p in (self.tmp_path / "registry" / "blobs").iterdir())
        with psycopg.connect(self.url) as connection:
            return sorted(row[0] for row in connection.execute("SELECT sha256 FROM adapter_blobs"))


@pytest.fixture(params=["lmdb", "postgres"])
def stores(request, tmp_path):
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    opened = Stores(request.param, tmp_path, url)
    yield opened
    for store in opened.opened:
        store.close()


@pytest.fixture
def blob_files(peft_adapters, tmp_path):
    """A fresh directory of one session adapter's blob files (a store may consume it), and its digest."""
    counter = iter(range(1000))

    def make(kind: str = "qv") -> tuple[Path, str]:
        target = tmp_path / f"files-{next(counter)}"
        target.mkdir()
        for name in BLOB_FILES:
            shutil.copy(peft_adapters[kind] / name, target / name)
        return target, adapter_digest(target)
    return make


def record_of(name: str, owner: str | None, sha256: str, base: str = "fp"):
    return lambda version: AdapterRecord(name, version, owner, base, 8, 16.0, ("q_proj", "v_proj"), 1000, sha256,
                                         1.0, 1.0)


def add(store: RegistryStore, blob_files, name: str, owner: str | None, kind: str = "qv") -> AdapterRecord:
    files, sha256 = blob_files(kind)
    return store.add_version(owner, name, record_of(name, owner, sha256), files)


def test_versions_count_per_owner_scope_and_name_and_are_never_reused(stores, blob_files):
    store = stores.open()
    first = add(store, blob_files, "b", "acme")
    assert [add(store, blob_files, "b", "acme").version for _ in range(2)] == [2, 3]
    assert add(store, blob_files, "a", "acme").version == add(store, blob_files, "b", None).version == 1
    assert add(store, blob_files, "b", "globex").version == 1
    assert [(r.name, r.version) for r in store.records("acme")] == [("a", 1), ("b", 1), ("b", 2), ("b", 3)]
    assert [r.version for r in store.records("acme", "b")] == [1, 2, 3] and store.records("acme", "c") == []
    assert [(r.owner, r.name) for r in store.records(None)] == [(None, "b")]
    assert len(store.all_records()) == 6 and store.get("acme", "b", 1) == first
    assert store.get("acme", "b", 9) is None and store.get("globex", "a", 1) is None
    doomed = store.records("acme", "b")
    assert store.remove(doomed) == doomed and store.records("acme", "b") == []
    assert add(store, blob_files, "b", "acme").version == 4


def test_a_blob_is_shared_and_collected_with_its_last_record(stores, blob_files):
    store = stores.open()
    one = add(store, blob_files, "x", "acme")
    two = add(store, blob_files, "y", "globex")
    other = add(store, blob_files, "x", "acme", "mlp")
    assert one.sha256 == two.sha256 != other.sha256 and stores.blobs() == sorted({one.sha256, other.sha256})
    path = store.blob_path(one.sha256)
    assert sorted(files_of(path)) == sorted(BLOB_FILES) and adapter_digest(path) == one.sha256
    assert store.remove([one, one]) == [one] and store.remove([one]) == []
    assert stores.blobs() == sorted({one.sha256, other.sha256})  # globex's record still refers to it
    assert store.remove([two, other]) == [two, other] and stores.blobs() == []


def test_replace_overwrites_a_stored_record_only(stores, blob_files):
    store = stores.open()
    record = add(store, blob_files, "x", "acme")
    assert store.replace(record.used_at(99.0)) and store.get("acme", "x", 1).last_used_at == 99.0
    store.remove([record])
    assert not store.replace(record.used_at(100.0)) and store.get("acme", "x", 1) is None


def test_bindings_per_tenant_and_user(stores):
    store = stores.open()
    assert store.get_binding("acme", None) is None
    store.put_binding("acme", None, Binding("acme", "x", None))
    store.put_binding("acme", "alice", Binding(None, "shared", 2))
    assert store.get_binding("acme", None) == Binding("acme", "x", None)
    assert store.get_binding("acme", "alice") == Binding(None, "shared", 2)
    assert store.get_binding("globex", None) is None
    store.put_binding("acme", "alice", Binding("acme", "y", 3))
    assert store.get_binding("acme", "alice") == Binding("acme", "y", 3)
    assert store.delete_binding("acme", "alice") and not store.delete_binding("acme", "alice")
    assert store.get_binding("acme", "alice") is None and store.get_binding("acme", None) is not None


def test_everything_survives_a_reopen(stores, blob_files):
    store = stores.open()
    record = add(store, blob_files, "x", "acme")
    store.put_binding("acme", None, Binding("acme", "x", 1))
    store.close()
    stores.opened.remove(store)
    reopened = stores.open()
    assert reopened.records("acme") == [record] and reopened.get_binding("acme", None) == Binding("acme", "x", 1)
    assert adapter_digest(reopened.blob_path(record.sha256)) == record.sha256
    assert add(reopened, blob_files, "x", "acme").version == 2
