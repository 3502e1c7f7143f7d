"""The adapter registry: validated LoRA adapters, their versions, owners and bindings, in one `RegistryStore`.

The store is LMDB under `root` (`adapters.lmdb_registry_store`), or PostgreSQL shared by several nodes when `open`
gets a store URL (`adapters.pg_registry_store`, with this node's copies of blobs under `root/cache`); nothing else
here knows which. `root/staging/` is the registry's own: uploads are unpacked and validated there, and `open`
clears what a crash left.

Invariants:
- Visibility is decided in `_versions_in` alone: a tenant sees its own adapters and public ones registered
  against the current base fingerprint; anything else raises AdapterNotFoundError, as if it did not exist. An own
  adapter shadows a public one of the same name.
- Versions count from 1 per (owner scope, name) and are never reused, even after a delete. Every upload is a
  new version, even one whose content equals the latest: the version records the act of publishing, and the blob
  is shared, so the repeat costs no disk.
- Nothing reaches the store before validation passes; a blob exists while any record (under any base fingerprint)
  refers to it (the store's contract, `adapters.registry_store`).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from adapters.archive import ArchiveLimits, copy_directory, unpack_archive
from adapters.base_model import BaseModelShape
from adapters.errors import TOO_LARGE, AdapterNotFoundError, InvalidAdapterError
from adapters.lmdb_registry_store import LmdbRegistryStore
from adapters.names import check_name, check_tenant, check_user, parse_reference
from adapters.pg_registry_store import PgRegistryStore
from adapters.record import AdapterRecord
from adapters.registry_store import Binding, RegistryStore
from adapters.validation import AdapterInfo, validate_adapter

TOUCH_INTERVAL_S = 60.0  # last_used_at is kept to this precision, so serving does not sync a write per request
MAX_MEMBERS = 16


class AdapterRegistry:
    """Adapters of all tenants on one base model; every method names the tenant it acts for."""

    def __init__(self, root: Path, store: RegistryStore, base_fingerprint: str, max_lora_rank: int,
                 base_shape: BaseModelShape, max_upload_bytes: int, clock: Callable[[], float]) -> None:
        self._staging = root / "staging"
        self._store = store
        self.base_fingerprint = base_fingerprint
        self.max_lora_rank = max_lora_rank
        self.base_shape = base_shape
        self.max_upload_bytes = max_upload_bytes
        self._clock = clock

    @classmethod
    def open(cls, root: Path, base_fingerprint: str, max_lora_rank: int, base_shape: BaseModelShape,
             max_upload_bytes: int, clock: Callable[[], float] = time.time, store_url: str | None = None
             ) -> AdapterRegistry:
        """Open (creating) the registry in `root`, its records in PostgreSQL at `store_url` when given; ValueError
        naming the directory or the store if that is impossible."""
        try:
            shutil.rmtree(root / "staging", ignore_errors=True)  # uploads a crash interrupted
            (root / "staging").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"cannot open the adapter registry in {root}: {exc}") from None
        if store_url is None:
            store = LmdbRegistryStore.open(root)
        else:
            store = PgRegistryStore.open(store_url, root / "cache")
        return cls(root, store, base_fingerprint, max_lora_rank, base_shape, max_upload_bytes, clock)

    def close(self) -> None:
        self._store.close()

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
        records = self._versions_in(tenant, name) or self._versions_in(None, name)
        if not records:
            raise AdapterNotFoundError("name", f"no adapter named {name!r}")
        return records

    def list(self, tenant: str) -> list[AdapterRecord]:
        """The latest version of every adapter `tenant` sees, its own then public ones, each by name."""
        check_tenant(tenant)
        latest: dict[tuple[str | None, str], AdapterRecord] = {}
        for owner in (tenant, None):
            for record in self._current(self._store.records(owner)):
                latest[(owner, record.name)] = record
        return sorted(latest.values(), key=lambda r: (r.owner is None, r.name))

    def owned(self, tenant: str) -> tuple[int, int]:
        """(versions, bytes) of the adapters `tenant` owns (public ones excluded); bytes count each blob once."""
        records = self._current(self._store.records(check_tenant(tenant)))
        return len(records), sum({r.sha256: r.bytes for r in records}.values())

    def usage(self) -> dict[str, int]:
        """Across all owners and base models: how many versions are registered and the bytes of their distinct blobs."""
        records = self._store.all_records()
        return {"versions": len(records), "blob_bytes": sum({r.sha256: r.bytes for r in records}.values())}

    def max_rank(self) -> int | None:
        """The largest rank of the adapters registered on this base model (any owner), None when there are none."""
        return max((record.rank for record in self._current(self._store.all_records())), default=None)

    def delete(self, name: str, tenant: str, version: int | None = None, public: bool = False) -> list[AdapterRecord]:
        """Remove one version (or all) of the tenant's own `name`, or of public `name`; the records removed.

        Whether `tenant` may delete public adapters is the caller's decision (as is whether it may publish).
        """
        owner = None if public else check_tenant(tenant)
        check_name(name)
        doomed = [r for r in self._versions_in(owner, name) if version in (None, r.version)]
        removed = self._store.remove(doomed)
        if not removed:
            raise AdapterNotFoundError("name", f"no adapter named {name!r}" +
                                       ("" if version is None else f" with version {version}"))
        return removed

    def touch(self, record: AdapterRecord) -> AdapterRecord:
        """Note that `record` was used now; stored at most once per TOUCH_INTERVAL_S. The record as stored."""
        now = self._clock()
        if now - record.last_used_at < TOUCH_INTERVAL_S:
            return record
        stored = self._store.get(record.owner, record.name, record.version)
        if stored is None:
            return record
        if now - stored.last_used_at < TOUCH_INTERVAL_S:
            return stored
        return stored.used_at(now) if self._store.replace(stored.used_at(now)) else record

    def path_of(self, record: AdapterRecord) -> Path:
        """The local directory holding the record's adapter_config.json and adapter_model.safetensors (fetched
        into this node's cache first with a shared store; `CorruptAdapterError` if they fail the digest check)."""
        return self._store.blob_path(record.sha256)

    def bind(self, tenant: str, name: str, user: str | None = None, version: int | None = None) -> AdapterRecord:
        """Make `name` (following its latest version, or pinned to `version`) the default of the tenant or user."""
        if user is not None:
            check_user(user)
        record = self.resolve(name, tenant, version)
        if version is None:
            version = parse_reference(name)[1]
        self._store.put_binding(tenant, user, Binding(record.owner, record.name, version))
        return record

    def unbind(self, tenant: str, user: str | None = None) -> bool:
        """Remove the tenant's (or user's) binding; False if there was none."""
        check_tenant(tenant)
        if user is not None:
            check_user(user)
        return self._store.delete_binding(tenant, user)

    def binding_for(self, tenant: str, user: str | None = None) -> AdapterRecord | None:
        """The user's binding, else the tenant's; a binding to a deleted or invisible adapter counts as absent."""
        check_tenant(tenant)
        for who in ([user] if user is not None else []) + [None]:
            if who is not None:
                check_user(who)
            binding = self._store.get_binding(tenant, who)
            record = None if binding is None else self._bound_record(binding)
            if record is not None:
                return record
        return None

    def _bound_record(self, binding: Binding) -> AdapterRecord | None:
        records = self._versions_in(binding.owner, binding.name)
        matching = [r for r in records if binding.version in (None, r.version)]
        return matching[-1] if matching else None

    def _register(self, name: str, tenant: str, public: bool, fill: Callable[[Path], object]) -> AdapterRecord:
        check_name(name)
        owner = None if public else check_tenant(tenant)
        staging = Path(tempfile.mkdtemp(dir=self._staging))
        try:
            upload = staging / "upload"
            fill(upload)
            info = validate_adapter(upload, self.base_shape, self.max_lora_rank)
            return self._store.add_version(owner, name, lambda version: self._record(owner, name, version, info),
                                           upload)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _record(self, owner: str | None, name: str, version: int, info: AdapterInfo) -> AdapterRecord:
        now = self._clock()
        return AdapterRecord(name, version, owner, self.base_fingerprint, info.rank, info.alpha, info.target_modules,
                             info.bytes, info.sha256, now, now)

    def _versions_in(self, owner: str | None, name: str) -> list[AdapterRecord]:
        """The one visibility rule: records of this owner scope and name, on the current base model."""
        return self._current(self._store.records(owner, name))

    def _current(self, records: list[AdapterRecord]) -> list[AdapterRecord]:
        return [record for record in records if record.base_fingerprint == self.base_fingerprint]

    def _limits(self) -> ArchiveLimits:
        return ArchiveLimits(max_total_bytes=self.max_upload_bytes, max_members=MAX_MEMBERS)
