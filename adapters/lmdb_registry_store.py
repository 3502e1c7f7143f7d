"""The adapter registry's store on one node's disk: records in LMDB, blobs as directories (the default store).

Layout under `root` (the registry's directory; `staging/` beside these belongs to the registry):
- `blobs/<sha256>/` holds the blob's files (`BLOB_FILES`). A blob is built in `blobs/.new-*`, fsynced, then renamed
  into place, and removed by renaming it to `blobs/.old-*` first, so a crash never leaves half an adapter visible;
  `open` removes dot-entries and blobs no record refers to (a crash between rename and commit).
- `meta/` is an LMDB environment with databases `records` (owner scope NUL name NUL 8-byte big-endian version
  -> `record.encode_record`), `counters` (owner scope NUL name -> the last version handed out), `bindings`
  (tenant NUL user, user "" for the tenant's default -> JSON {"v": 1, "owner", "name", "version"}) and `meta`
  (`format`). Names and ids hold no NUL, so one scope's or one name's keys are a contiguous range.

py-lmdb rules kept here: one store per root per process (blob garbage collection assumes no other writer); every
write is one transaction, synced on commit, under `self._lock`, which also covers blob moves; values read in a
transaction are decoded before it ends.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import threading
from pathlib import Path

import lmdb

from adapters.blob_cache import fsync_path
from adapters.record import AdapterRecord, decode_record, encode_record
from adapters.registry_store import BLOB_FILES, Binding, RecordOfVersion
from memcore.units import GIB

FORMAT = b"msc-adapters-1"
MAP_SIZE = GIB  # metadata only; the weights live in blobs/
_VERSION = struct.Struct(">Q")
_SEP = b"\0"


class LmdbRegistryStore:
    """A `RegistryStore` in `root`: LMDB for records and bindings, a directory per blob."""

    def __init__(self, root: Path, env: lmdb.Environment) -> None:
        self._root = root
        self._blobs = root / "blobs"
        self._env = env
        self._lock = threading.Lock()
        self._records = env.open_db(b"records")
        self._counters = env.open_db(b"counters")
        self._bindings = env.open_db(b"bindings")
        self._meta = env.open_db(b"meta")

    @classmethod
    def open(cls, root: Path) -> LmdbRegistryStore:
        """Open (creating) the store in `root`; ValueError naming the directory if that is impossible."""
        try:
            for directory in (root / "blobs", root / "meta"):
                directory.mkdir(parents=True, exist_ok=True)
            env = lmdb.open(str(root / "meta"), map_size=MAP_SIZE, max_dbs=4, sync=True, metasync=True)
        except (OSError, lmdb.Error) as exc:
            raise ValueError(f"cannot open the adapter registry in {root}: {exc}") from None
        store = cls(root, env)
        store._check_format()
        store._recover()
        return store

    def close(self) -> None:
        self._env.close()

    def records(self, owner: str | None, name: str | None = None) -> list[AdapterRecord]:
        prefix = _scope(owner) + _SEP + (b"" if name is None else name.encode() + _SEP)
        with self._env.begin() as txn:
            return list(self._scan(txn, prefix))

    def all_records(self) -> list[AdapterRecord]:
        with self._env.begin() as txn:
            return list(self._scan(txn, b""))

    def get(self, owner: str | None, name: str, version: int) -> AdapterRecord | None:
        with self._env.begin(db=self._records) as txn:
            data = txn.get(_record_key(owner, name, version))
            return None if data is None else decode_record(data)

    def add_version(self, owner: str | None, name: str, record_of: RecordOfVersion, files: Path) -> AdapterRecord:
        counter_key = _scope(owner) + _SEP + name.encode()
        with self._lock:
            with self._env.begin() as txn:
                last = txn.get(counter_key, db=self._counters)
            record = record_of(1 + (0 if last is None else _VERSION.unpack(last)[0]))
            self._store_blob(files, record.sha256)
            with self._env.begin(write=True) as txn:
                txn.put(counter_key, _VERSION.pack(record.version), db=self._counters)
                txn.put(_record_key(owner, name, record.version), encode_record(record), db=self._records)
        return record

    def replace(self, record: AdapterRecord) -> bool:
        key = _record_key(record.owner, record.name, record.version)
        with self._lock, self._env.begin(write=True, db=self._records) as txn:
            if txn.get(key) is None:
                return False
            return txn.put(key, encode_record(record))

    def remove(self, records: list[AdapterRecord]) -> list[AdapterRecord]:
        with self._lock:
            with self._env.begin(write=True, db=self._records) as txn:
                removed = [r for r in records if txn.delete(_record_key(r.owner, r.name, r.version))]
                unreferenced = {r.sha256 for r in removed} - self._referenced(txn)
            for sha256 in unreferenced:
                self._remove_blob(sha256)
        return removed

    def put_binding(self, tenant: str, user: str | None, binding: Binding) -> None:
        value = {"v": 1, "owner": binding.owner, "name": binding.name, "version": binding.version}
        with self._lock, self._env.begin(write=True, db=self._bindings) as txn:
            txn.put(_binding_key(tenant, user), json.dumps(value, sort_keys=True, separators=(",", ":")).encode())

    def delete_binding(self, tenant: str, user: str | None) -> bool:
        with self._lock, self._env.begin(write=True, db=self._bindings) as txn:
            return txn.delete(_binding_key(tenant, user))

    def get_binding(self, tenant: str, user: str | None) -> Binding | None:
        with self._env.begin(db=self._bindings) as txn:
            data = txn.get(_binding_key(tenant, user))
            value = None if data is None else json.loads(bytes(data))
        return None if value is None else Binding(value["owner"], value["name"], value["version"])

    def blob_path(self, sha256: str) -> Path:
        return self._blobs / sha256

    def _store_blob(self, files: Path, sha256: str) -> None:
        """Move the files into blobs/<sha256>/ (if not there already): fsynced, then renamed whole."""
        target = self._blobs / sha256
        if target.is_dir():
            return
        blob = Path(tempfile.mkdtemp(prefix=".new-", dir=self._blobs))
        for file_name in BLOB_FILES:
            os.rename(files / file_name, blob / file_name)
            fsync_path(blob / file_name)
        fsync_path(blob)
        os.rename(blob, target)
        fsync_path(self._blobs)

    def _remove_blob(self, sha256: str) -> None:
        """Rename the blob out of sight first, so a crash mid-removal leaves nothing half-visible."""
        trash = Path(tempfile.mkdtemp(prefix=".old-", dir=self._blobs))
        os.rename(self._blobs / sha256, trash / sha256)
        shutil.rmtree(trash)

    def _scan(self, txn: lmdb.Transaction, prefix: bytes):
        cursor = txn.cursor(db=self._records)
        if cursor.set_range(prefix):
            for key, value in cursor:
                if not key.startswith(prefix):
                    break
                yield decode_record(value)

    def _referenced(self, txn: lmdb.Transaction) -> set[str]:
        """The blobs any record refers to, under any base fingerprint."""
        return {decode_record(value).sha256 for _key, value in txn.cursor(db=self._records)}

    def _check_format(self) -> None:
        with self._env.begin(write=True, db=self._meta) as txn:
            found = txn.get(b"format")
            if found is None:
                txn.put(b"format", FORMAT)
            elif found != FORMAT:
                raise ValueError(f"the adapter registry in {self._root} has format {found!r}, expected {FORMAT!r}")

    def _recover(self) -> None:
        """Remove half-built or half-removed blobs and blobs no record refers to: the traces of a crash mid-write."""
        with self._lock:
            with self._env.begin() as txn:
                referenced = self._referenced(txn)
            for blob in self._blobs.iterdir():
                if blob.name.startswith("."):
                    shutil.rmtree(blob, ignore_errors=True)
                elif blob.name not in referenced:
                    self._remove_blob(blob.name)


def _scope(owner: str | None) -> bytes:
    return (owner or "").encode()


def _record_key(owner: str | None, name: str, version: int) -> bytes:
    return _scope(owner) + _SEP + name.encode() + _SEP + _VERSION.pack(version)


def _binding_key(tenant: str, user: str | None) -> bytes:
    return tenant.encode() + _SEP + (user or "").encode()
