"""The adapter registry's store in PostgreSQL, shared by several sidecar nodes (`--store postgresql://...`).

Schema (component "adapters" of `memcore.postgres.migrate`, applied on open):
- `adapter_records (owner, name, version) -> sha256, record`: `record` is `record.encode_record`, the one format of
  a record; `sha256` repeats the record's for the foreign key to its blob. `owner` is the scope, "" when public.
- `adapter_counters (owner, name) -> last_version`: bumped in the transaction that adds the version, so racing
  nodes get distinct versions and a deleted version's number is never handed out again.
- `adapter_bindings (tenant, user_id) -> owner, name, version`: user_id "" for the tenant's default; owner NULL for
  a public adapter, version NULL to follow the latest.
- `adapter_blobs (sha256) -> bytes` and `adapter_blob_chunks (sha256, file, seq) -> data`: each file of a blob
  (`BLOB_FILES`) as `CHUNK_BYTES` bytea rows, at least one per file; chunks go with their blob (ON DELETE CASCADE).

Rules:
- Every change is one transaction from a pooled connection; a method returns after its commit, so an acknowledged
  write is durable and visible to every node.
- A blob is stored and collected under a transaction-level advisory lock on its digest (key class `BLOB_LOCK`), so a
  registration that reuses a blob and a delete that collects it never interleave; records reference their blob by
  foreign key besides.
- Nodes read blobs through their `BlobCache` (`<root>/cache`): fetched on first use, checked against the digest.
- Migrations are append-only (see `memcore.postgres`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from adapters.blob_cache import BlobCache
from adapters.errors import CorruptAdapterError
from adapters.record import AdapterRecord, decode_record, encode_record
from adapters.registry_store import BLOB_FILES, Binding, RecordOfVersion
from memcore.postgres import Migration, migrate, open_pool, reaching, redacted
from memcore.units import MIB

COMPONENT = "adapters"
CHUNK_BYTES = MIB
BLOB_LOCK = 0x61647074  # "adpt": the first key of the two-key advisory locks on blobs
MIGRATIONS = (
    Migration(1, "adapter records, counters, bindings and chunked blobs", """
        CREATE TABLE adapter_blobs (sha256 text PRIMARY KEY, bytes bigint NOT NULL,
                                    created_at timestamptz NOT NULL DEFAULT now());
        CREATE TABLE adapter_blob_chunks (sha256 text NOT NULL REFERENCES adapter_blobs ON DELETE CASCADE,
                                          file text NOT NULL, seq integer NOT NULL, data bytea NOT NULL,
                                          PRIMARY KEY (sha256, file, seq));
        CREATE TABLE adapter_counters (owner text NOT NULL, name text NOT NULL, last_version integer NOT NULL,
                                       PRIMARY KEY (owner, name));
        CREATE TABLE adapter_records (owner text NOT NULL, name text NOT NULL, version integer NOT NULL,
                                      sha256 text NOT NULL REFERENCES adapter_blobs, record bytea NOT NULL,
                                      PRIMARY KEY (owner, name, version));
        CREATE INDEX adapter_records_sha256 ON adapter_records (sha256);
        CREATE TABLE adapter_bindings (tenant text NOT NULL, user_id text NOT NULL, owner text, name text NOT NULL,
                                       version integer, PRIMARY KEY (tenant, user_id));
    """),
)
_ORDER = 'ORDER BY owner COLLATE "C", name COLLATE "C", version'  # the byte order LMDB keys sort in


class PgRegistryStore:
    """A `RegistryStore` in a PostgreSQL database, with this node's copies of blobs in `cache`."""

    def __init__(self, pool: ConnectionPool, cache: BlobCache, url: str) -> None:
        self._pool = pool
        self._cache = cache
        self._url = url

    @classmethod
    def open(cls, url: str, cache_dir: Path) -> PgRegistryStore:
        """Connect, apply the schema's missing migrations, and drop cached blobs the database no longer has;
        ValueError naming the store (never its password) when the database cannot be reached or migrated."""
        pool = open_pool(url, name=COMPONENT)
        try:
            with pool.connection() as connection:
                migrate(connection, COMPONENT, MIGRATIONS)
            store = cls(pool, BlobCache.open(cache_dir), url)
            store._cache.keep_only(store._blob_digests())
        except (psycopg.Error, PoolTimeout) as exc:
            pool.close()
            raise ValueError(f"cannot open the adapter registry in {redacted(url)}: {exc}") from None
        return store

    def close(self) -> None:
        self._pool.close()

    def records(self, owner: str | None, name: str | None = None) -> list[AdapterRecord]:
        with self._transaction() as connection:
            if name is None:
                rows = connection.execute(f"SELECT record FROM adapter_records WHERE owner = %s {_ORDER}",
                                          (_scope(owner),))
            else:
                rows = connection.execute(f"SELECT record FROM adapter_records WHERE owner = %s AND name = %s "
                                          f"{_ORDER}", (_scope(owner), name))
            return [decode_record(row[0]) for row in rows]

    def all_records(self) -> list[AdapterRecord]:
        with self._transaction() as connection:
            return [decode_record(row[0]) for row in connection.execute(f"SELECT record FROM adapter_records {_ORDER}")]

    def get(self, owner: str | None, name: str, version: int) -> AdapterRecord | None:
        with self._transaction() as connection:
            row = connection.execute("SELECT record FROM adapter_records WHERE owner = %s AND name = %s AND "
                                     "version = %s", (_scope(owner), name, version)).fetchone()
        return None if row is None else decode_record(row[0])

    def add_version(self, owner: str | None, name: str, record_of: RecordOfVersion, files: Path) -> AdapterRecord:
        with self._transaction() as connection:
            version = connection.execute(
                "INSERT INTO adapter_counters (owner, name, last_version) VALUES (%s, %s, 1) ON CONFLICT (owner, name) "
                "DO UPDATE SET last_version = adapter_counters.last_version + 1 RETURNING last_version",
                (_scope(owner), name)).fetchone()[0]
            record = record_of(version)
            _lock_blob(connection, record.sha256)
            if connection.execute("SELECT 1 FROM adapter_blobs WHERE sha256 = %s", (record.sha256,)).fetchone() is None:
                _insert_blob(connection, record.sha256, record.bytes, files)
            connection.execute("INSERT INTO adapter_records (owner, name, version, sha256, record) "
                               "VALUES (%s, %s, %s, %s, %s)",
                               (_scope(owner), name, version, record.sha256, encode_record(record)))
        return record

    def replace(self, record: AdapterRecord) -> bool:
        with self._transaction() as connection:
            cursor = connection.execute("UPDATE adapter_records SET record = %s WHERE owner = %s AND name = %s AND "
                                        "version = %s", (encode_record(record), _scope(record.owner), record.name,
                                                         record.version))
            return cursor.rowcount == 1

    def remove(self, records: list[AdapterRecord]) -> list[AdapterRecord]:
        with self._transaction() as connection:
            removed = [r for r in records if connection.execute(
                "DELETE FROM adapter_records WHERE owner = %s AND name = %s AND version = %s",
                (_scope(r.owner), r.name, r.version)).rowcount == 1]
            collected = [sha256 for sha256 in sorted({r.sha256 for r in removed})  # sorted: one lock order
                         if _collect_blob(connection, sha256)]
        for sha256 in collected:
            self._cache.discard(sha256)
        return removed

    def put_binding(self, tenant: str, user: str | None, binding: Binding) -> None:
        with self._transaction() as connection:
            connection.execute(
                "INSERT INTO adapter_bindings (tenant, user_id, owner, name, version) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (tenant, user_id) DO UPDATE SET owner = EXCLUDED.owner, name = EXCLUDED.name, "
                "version = EXCLUDED.version", (tenant, user or "", binding.owner, binding.name, binding.version))

    def delete_binding(self, tenant: str, user: str | None) -> bool:
        with self._transaction() as connection:
            return connection.execute("DELETE FROM adapter_bindings WHERE tenant = %s AND user_id = %s",
                                      (tenant, user or "")).rowcount == 1

    def get_binding(self, tenant: str, user: str | None) -> Binding | None:
        with self._transaction() as connection:
            row = connection.execute("SELECT owner, name, version FROM adapter_bindings WHERE tenant = %s AND "
                                     "user_id = %s", (tenant, user or "")).fetchone()
        return None if row is None else Binding(*row)

    def blob_path(self, sha256: str) -> Path:
        return self._cache.path(sha256, lambda directory: self._fetch(sha256, directory))

    def _fetch(self, sha256: str, directory: Path) -> None:
        """Write the blob's chunks, file by file, in order; streamed, so a large adapter is never held whole."""
        with self._transaction() as connection:
            cursor = connection.cursor(name="adapter_blob")  # server-side: rows arrive in batches
            cursor.execute("SELECT file, data FROM adapter_blob_chunks WHERE sha256 = %s ORDER BY file, seq",
                           (sha256,))
            for file_name, data in cursor:
                if file_name not in BLOB_FILES:
                    raise CorruptAdapterError(sha256, f"the store holds an unexpected file {file_name!r}")
                with open(directory / file_name, "ab") as out:
                    out.write(data)
        if not any(directory.iterdir()):
            raise CorruptAdapterError(sha256, "the store holds no such blob")

    def _blob_digests(self) -> set[str]:
        with self._transaction() as connection:
            return {row[0] for row in connection.execute("SELECT sha256 FROM adapter_blobs")}

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection]:
        """One transaction on a pooled connection; `StoreUnavailableError` (a 503) when the server is unreachable."""
        with reaching(self._url), self._pool.connection() as connection, connection.transaction():
            yield connection


def _insert_blob(connection: psycopg.Connection, sha256: str, size: int, files: Path) -> None:
    connection.execute("INSERT INTO adapter_blobs (sha256, bytes) VALUES (%s, %s)", (sha256, size))
    for file_name in BLOB_FILES:
        for seq, data in enumerate(_chunks(files / file_name)):
            connection.execute("INSERT INTO adapter_blob_chunks (sha256, file, seq, data) VALUES (%s, %s, %s, %s)",
                               (sha256, file_name, seq, data))


def _collect_blob(connection: psycopg.Connection, sha256: str) -> bool:
    """Delete the blob if no record refers to it any more (in this transaction's view, under its lock)."""
    _lock_blob(connection, sha256)
    return connection.execute("DELETE FROM adapter_blobs b WHERE sha256 = %s AND NOT EXISTS "
                              "(SELECT 1 FROM adapter_records r WHERE r.sha256 = b.sha256)", (sha256,)).rowcount == 1


def _lock_blob(connection: psycopg.Connection, sha256: str) -> None:
    connection.execute("SELECT pg_advisory_xact_lock(%s, %s)", (BLOB_LOCK, int(sha256[:8], 16) - (1 << 31)))


def _chunks(path: Path) -> Iterator[bytes]:
    """The file's content in CHUNK_BYTES pieces; one empty piece for an empty file, so every file has a row."""
    with open(path, "rb") as file:
        data = file.read(CHUNK_BYTES)
        yield data
        while data := file.read(CHUNK_BYTES):
            yield data


def _scope(owner: str | None) -> str:
    return owner or ""
