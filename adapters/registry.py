"""The adapter registry: validated LoRA adapters, their versions, owners and bindings, persisted under one root.

Layout under `root`:
- `blobs/<sha256>/` holds `adapter_config.json` and `adapter_model.safetensors`, content-addressed. A blob is
  built in `staging/`, fsynced, then renamed into place, so a crash never leaves half an adapter visible; a blob
  no record refers to (a crash between rename and commit) is removed by `open`, as is anything left in staging.
- `meta/` is an LMDB environment with databases `records` (owner scope NUL name NUL 8-byte big-endian version
  -> `record.encode_record`), `counters` (owner scope NUL name -> the last version handed out), `bindings`
  (tenant NUL user, user "" for the tenant's default -> JSON {"v": 1, "owner", "name", "version"}; version null
  follows the latest) and `meta` (`format`). The owner scope is the tenant id, or "" for public adapters (tenant
  ids are never empty). Names and ids hold no NUL, so one scope's or one name's keys are a contiguous range.

Invariants:
- Visibility is decided in `_versions_in` alone: a tenant sees its own adapters and public ones registered
  against the current base fingerprint; anything else raises AdapterNotFoundError, as if it did not exist. An own
  adapter shadows a public one of the same name.
- Versions count from 1 per (owner scope, name) and are never reused, even after a delete. Every upload is a
  new version, even one whose content equals the latest: the version records the act of publishing, and the blob
  is shared, so the repeat costs no disk.
- A blob exists while any record (under any base fingerprint) refers to it; deletes remove the others.

py-lmdb rules kept here: one registry per root per process (blob garbage collection assumes no other writer);
every write is one transaction, synced on commit, under `self._lock`, which also covers blob moves; values read
in a transaction are decoded before it ends.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import lmdb

from adapters.archive import ArchiveLimits, copy_directory, unpack_archive
from adapters.base_model import BaseModelShape
from adapters.errors import TOO_LARGE, AdapterNotFoundError, InvalidAdapterError
from adapters.names import check_name, check_tenant, check_user, parse_reference
from adapters.record import AdapterRecord, decode_record, encode_record
from adapters.validation import CONFIG_FILE, WEIGHTS_FILE, AdapterInfo, validate_adapter
from memcore.units import GIB

FORMAT = b"msc-adapters-1"
MAP_SIZE = GIB  # metadata only; the weights live in blobs/
TOUCH_INTERVAL_S = 60.0  # last_used_at is kept to this precision, so serving does not sync a write per request
MAX_MEMBERS = 16
_VERSION = struct.Struct(">Q")
_SEP = b"\0"


class AdapterRegistry:
    """Adapters of all tenants on one base model; every method names the tenant it acts for."""

    def __init__(self, root: Path, env: lmdb.Environment, base_fingerprint: str, max_lora_rank: int,
                 base_shape: BaseModelShape, max_upload_bytes: int, clock: Callable[[], float]) -> None:
        self._root = root
        self._env = env
        self.base_fingerprint = base_fingerprint
        self.max_lora_rank = max_lora_rank
        self.base_shape = base_shape
        self.max_upload_bytes = max_upload_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._records = env.open_db(b"records")
        self._counters = env.open_db(b"counters")
        self._bindings = env.open_db(b"bindings")
        self._meta = env.open_db(b"meta")

    @classmethod
    def open(cls, root: Path, base_fingerprint: str, max_lora_rank: int, base_shape: BaseModelShape,
             max_upload_bytes: int, clock: Callable[[], float] = time.time) -> AdapterRegistry:
        """Open (creating) the registry in `root`; ValueError naming the directory if that is impossible."""
        try:
            for directory in (root / "blobs", root / "staging", root / "meta"):
                directory.mkdir(parents=True, exist_ok=True)
            env = lmdb.open(str(root / "meta"), map_size=MAP_SIZE, max_dbs=4, sync=True, metasync=True)
        except (OSError, lmdb.Error) as exc:
            raise ValueError(f"cannot open the adapter registry in {root}: {exc}") from None
        registry = cls(root, env, base_fingerprint, max_lora_rank, base_shape, max_upload_bytes, clock)
        registry._check_format()
        registry._recover()
        return registry

    def close(self) -> None:
        self._env.close()

    def register_archive(self, data: bytes, name: str, tenant: str, public: bool = False) -> AdapterRecord:
        """Store the adapter in an uploaded .zip/.tar/.tar.gz as the next version of `name`."""
        if len(data) > self.max_upload_bytes:
            raise InvalidAdapterError("archive", f"the upload is larger than {self.max_upload_bytes} bytes",
                                      TOO_LARGE)
        return self._register(name, tenant, public, lambda dest: unpack_archive(data, dest, self._limits()))

    def register_directory(self, path: Path, name: str, tenant: str, public: bool = False) -> AdapterRecord:
        """Store the adapter in a local directory (the CLI's path) as the next version of `name`."""
        return self._register(name, tenant, public, lambda dest: copy_directory(Path(path), dest, self._limits()))

    def resolve(self, name: str, tenant: str, version: int | None = None) -> AdapterRecord:
        """Version `version` (or the latest) of `name` ("name" or "name@vN") as `tenant` sees it."""
        if version is None:
            name, version = parse_reference(name)
        records = self.versions(name, tenant)
        if version is None:
            return records[-1]
        for record in records:
            if record.version == version:
                return record
        raise AdapterNotFoundError("version", f"adapter {name!r} has no version {version}")

    def versions(self, name: str, tenant: str) -> list[AdapterRecord]:
        """All visible versions of `name` for `tenant`, oldest first (own adapters shadow public ones)."""
        check_name(name)
        check_tenant(tenant)
        with self._env.begin() as txn:
            records = self._versions_in(txn, tenant, name) or self._versions_in(txn, None, name)
        if not records:
            raise AdapterNotFoundError("name", f"no adapter named {name!r}")
        return records

    def list(self, tenant: str) -> list[AdapterRecord]:
        """The latest version of every adapter `tenant` sees, its own then public ones, each by name."""
        check_tenant(tenant)
        latest: dict[tuple[str | None, str], AdapterRecord] = {}
        with self._env.begin() as txn:
            for owner in (tenant, None):
                for record in self._scan(txn, _scope(owner) + _SEP):
                    latest[(owner, record.name)] = record
        return sorted(latest.values(), key=lambda r: (r.owner is None, r.name))

    def owned(self, tenant: str) -> tuple[int, int]:
        """(versions, bytes) of the adapters `tenant` owns (public ones excluded); bytes count each blob once."""
        check_tenant(tenant)
        with self._env.begin() as txn:
            records = list(self._scan(txn, _scope(tenant) + _SEP))
        return len(records), sum({r.sha256: r.bytes for r in records}.values())

    def usage(self) -> dict[str, int]:
        """Across all owners: how many versions are registered and the bytes of their distinct blobs."""
        with self._env.begin() as txn:
            records = [decode_record(value) for _key, value in txn.cursor(db=self._records)]
        return {"versions": len(records), "blob_bytes": sum({r.sha256: r.bytes for r in records}.values())}

    def max_rank(self) -> int | None:
        """The largest rank of the adapters registered on this base model (any owner), None when there are none."""
        with self._env.begin() as txn:
            return max((record.rank for record in self._scan(txn, b"")), default=None)

    def delete(self, name: str, tenant: str, version: int | None = None, public: bool = False) -> list[AdapterRecord]:
        """Remove one version (or all) of the tenant's own `name`, or of public `name`; the records removed.

        Whether `tenant` may delete public adapters is the caller's decision (as is whether it may publish).
        """
        owner = None if public else check_tenant(tenant)
        check_name(name)
        with self._lock:
            with self._env.begin(write=True) as txn:
                doomed = [r for r in self._versions_in(txn, owner, name) if version in (None, r.version)]
                for record in doomed:
                    txn.delete(_record_key(owner, name, record.version), db=self._records)
                unreferenced = {r.sha256 for r in doomed} - self._referenced(txn)
            for sha256 in unreferenced:
                self._remove_blob(sha256)
        if not doomed:
            raise AdapterNotFoundError("name", f"no adapter named {name!r}" +
                                       ("" if version is None else f" with version {version}"))
        return doomed

    def touch(self, record: AdapterRecord) -> AdapterRecord:
        """Note that `record` was used now; stored at most once per TOUCH_INTERVAL_S. The record as stored."""
        now = self._clock()
        if now - record.last_used_at < TOUCH_INTERVAL_S:
            return record
        key = _record_key(record.owner, record.name, record.version)
        with self._lock, self._env.begin(write=True, db=self._records) as txn:
            data = txn.get(key)
            if data is None:
                return record
            stored = decode_record(data)
            if now - stored.last_used_at < TOUCH_INTERVAL_S:
                return stored
            txn.put(key, encode_record(stored.used_at(now)))
            return stored.used_at(now)

    def path_of(self, record: AdapterRecord) -> Path:
        """The directory holding the record's adapter_config.json and adapter_model.safetensors."""
        return self._root / "blobs" / record.sha256

    def bind(self, tenant: str, name: str, user: str | None = None, version: int | None = None) -> AdapterRecord:
        """Make `name` (following its latest version, or pinned to `version`) the default of the tenant or user."""
        record = self.resolve(name, tenant, version)
        if version is None:
            version = parse_reference(name)[1]
        value = {"v": 1, "owner": record.owner, "name": record.name, "version": version}
        with self._lock, self._env.begin(write=True, db=self._bindings) as txn:
            txn.put(_binding_key(tenant, user), json.dumps(value, sort_keys=True, separators=(",", ":")).encode())
        return record

    def unbind(self, tenant: str, user: str | None = None) -> bool:
        """Remove the tenant's (or user's) binding; False if there was none."""
        key = _binding_key(check_tenant(tenant), user)
        with self._lock, self._env.begin(write=True, db=self._bindings) as txn:
            return txn.delete(key)

    def binding_for(self, tenant: str, user: str | None = None) -> AdapterRecord | None:
        """The user's binding, else the tenant's; a binding to a deleted or invisible adapter counts as absent."""
        keys = ([_binding_key(tenant, user)] if user is not None else []) + [_binding_key(tenant, None)]
        with self._env.begin() as txn:
            for key in keys:
                data = txn.get(key, db=self._bindings)
                record = None if data is None else self._bound_record(txn, json.loads(bytes(data)))
                if record is not None:
                    return record
        return None

    def _bound_record(self, txn: lmdb.Transaction, binding: dict) -> AdapterRecord | None:
        records = self._versions_in(txn, binding["owner"], binding["name"])
        matching = [r for r in records if binding["version"] in (None, r.version)]
        return matching[-1] if matching else None

    def _register(self, name: str, tenant: str, public: bool, fill: Callable[[Path], object]) -> AdapterRecord:
        check_name(name)
        owner = None if public else check_tenant(tenant)
        staging = Path(tempfile.mkdtemp(dir=self._root / "staging"))
        try:
            upload = staging / "upload"
            fill(upload)
            info = validate_adapter(upload, self.base_shape, self.max_lora_rank)
            with self._lock:
                self._store_blob(upload, info.sha256, staging / "blob")
                return self._add_version(owner, name, info)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _add_version(self, owner: str | None, name: str, info: AdapterInfo) -> AdapterRecord:
        counter_key = _scope(owner) + _SEP + name.encode()
        now = self._clock()
        with self._env.begin(write=True) as txn:
            last = txn.get(counter_key, db=self._counters)
            version = 1 + (0 if last is None else _VERSION.unpack(last)[0])
            record = AdapterRecord(name, version, owner, self.base_fingerprint, info.rank, info.alpha,
                                   info.target_modules, info.bytes, info.sha256, now, now)
            txn.put(counter_key, _VERSION.pack(version), db=self._counters)
            txn.put(_record_key(owner, name, version), encode_record(record), db=self._records)
        return record

    def _store_blob(self, upload: Path, sha256: str, blob: Path) -> None:
        """Move the validated files into blobs/<sha256>/ (if not there already): fsynced, then renamed whole."""
        target = self._root / "blobs" / sha256
        if target.is_dir():
            return
        blob.mkdir()
        for file_name in (CONFIG_FILE, WEIGHTS_FILE):
            os.rename(upload / file_name, blob / file_name)
            _fsync(blob / file_name)
        _fsync(blob)
        os.rename(blob, target)
        _fsync(target.parent)

    def _remove_blob(self, sha256: str) -> None:
        """Rename the blob out of blobs/ first, so a crash mid-removal leaves nothing half-visible."""
        trash = Path(tempfile.mkdtemp(dir=self._root / "staging")) / sha256
        os.rename(self._root / "blobs" / sha256, trash)
        shutil.rmtree(trash.parent)

    def _versions_in(self, txn: lmdb.Transaction, owner: str | None, name: str) -> list[AdapterRecord]:
        """The one visibility rule: records of this owner scope and name, on the current base model."""
        return list(self._scan(txn, _scope(owner) + _SEP + name.encode() + _SEP))

    def _scan(self, txn: lmdb.Transaction, prefix: bytes):
        cursor = txn.cursor(db=self._records)
        if cursor.set_range(prefix):
            for key, value in cursor:
                if not key.startswith(prefix):
                    break
                record = decode_record(value)
                if record.base_fingerprint == self.base_fingerprint:
                    yield record

    def _referenced(self, txn: lmdb.Transaction) -> set[str]:
        """The blobs any record refers to, under any base fingerprint."""
        return {decode_record(value).sha256 for _key, value in txn.cursor(db=self._records)}

    def _limits(self) -> ArchiveLimits:
        return ArchiveLimits(max_total_bytes=self.max_upload_bytes, max_members=MAX_MEMBERS)

    def _check_format(self) -> None:
        with self._env.begin(write=True, db=self._meta) as txn:
            found = txn.get(b"format")
            if found is None:
                txn.put(b"format", FORMAT)
            elif found != FORMAT:
                raise ValueError(f"the adapter registry in {self._root} has format {found!r}, expected {FORMAT!r}")

    def _recover(self) -> None:
        """Remove staging leftovers and blobs no record refers to: the traces of a crash mid-write."""
        with self._lock:
            for leftover in (self._root / "staging").iterdir():
                shutil.rmtree(leftover, ignore_errors=True)
            with self._env.begin() as txn:
                referenced = self._referenced(txn)
            for blob in (self._root / "blobs").iterdir():
                if blob.name not in referenced:
                    self._remove_blob(blob.name)


def _scope(owner: str | None) -> bytes:
    return (owner or "").encode()


def _record_key(owner: str | None, name: str, version: int) -> bytes:
    return _scope(owner) + _SEP + name.encode() + _SEP + _VERSION.pack(version)


def _binding_key(tenant: str, user: str | None) -> bytes:
    check_tenant(tenant)
    return tenant.encode() + _SEP + (b"" if user is None else check_user(user).encode())


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
