"""What the adapter registry keeps, and the protocol of the two stores that keep it: LMDB on the node's disk
(`adapters.lmdb_registry_store`) or PostgreSQL shared by several nodes (`adapters.pg_registry_store`).

A store holds three things and decides nothing about them (visibility, base models and versions' meaning are
`adapters.registry`'s):
- records (`adapters.record.AdapterRecord`), keyed by (owner scope, name, version); the owner scope is the tenant
  id, or "" for a public adapter (tenant ids are never empty);
- the last version handed out per (owner scope, name), so versions are never reused, even after a delete;
- bindings: (tenant, user, "" for the tenant's default) -> `Binding`;
- blobs: an adapter's files (`BLOB_FILES`), content-addressed by the record's `sha256`.

Contract, kept by both stores and pinned by tests/adapters/test_registry_store_contract.py:
- `add_version` stores the blob (unless present) and the record of the next version in one commit; when it returns,
  the record is durable and every node of the store sees it.
- A blob exists while any record (under any base fingerprint) refers to it; `remove` drops the others in the
  commit that removes their last records.
- `blob_path` gives a local directory holding exactly `BLOB_FILES` whose `adapter_digest` is the sha256 asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from adapters.record import AdapterRecord
from adapters.validation import CONFIG_FILE, WEIGHTS_FILE

BLOB_FILES = (CONFIG_FILE, WEIGHTS_FILE)  # a blob is a directory of these files, nothing else
RecordOfVersion = Callable[[int], AdapterRecord]


@dataclass(frozen=True)
class Binding:
    """The adapter a tenant or user chats with by default: `name` of `owner` (None: public), following its latest
    version when `version` is None."""

    owner: str | None
    name: str
    version: int | None


class RegistryStore(Protocol):
    """Records, version counters, bindings and blobs of the adapter registry (see the module docstring)."""

    def records(self, owner: str | None, name: str | None = None) -> list[AdapterRecord]:
        """The records of owner scope `owner` (None: public), of `name` only if given; by name, then version."""

    def all_records(self) -> list[AdapterRecord]:
        """Every record of every owner and base model."""

    def get(self, owner: str | None, name: str, version: int) -> AdapterRecord | None:
        """One record, None when absent."""

    def add_version(self, owner: str | None, name: str, record_of: RecordOfVersion, files: Path) -> AdapterRecord:
        """Store `record_of(v)`, v the next version of (owner, name), and its blob from `files` (a directory of
        `BLOB_FILES`, which the store may consume) unless the blob is there already; one commit."""

    def replace(self, record: AdapterRecord) -> bool:
        """Store `record` over the stored one of its key; False (nothing stored) when there is none."""

    def remove(self, records: list[AdapterRecord]) -> list[AdapterRecord]:
        """Remove those of `records` still stored, and the blobs no record refers to then; the records removed."""

    def put_binding(self, tenant: str, user: str | None, binding: Binding) -> None:
        """Bind the tenant's default (`user` None) or the user's."""

    def delete_binding(self, tenant: str, user: str | None) -> bool:
        """Remove a binding; False if there was none."""

    def get_binding(self, tenant: str, user: str | None) -> Binding | None:
        """A binding, None when absent."""

    def blob_path(self, sha256: str) -> Path:
        """A local directory holding the blob's files; `CorruptAdapterError` when they do not match `sha256`."""

    def close(self) -> None:
        """Release files and connections."""
