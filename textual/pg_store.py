"""PostgreSQL as the record store several sidecar nodes share; it keeps the `textual.record_store` contract.

Rules:
- One pool per store (`memcore.postgres.open_pool`); a connection serves one transaction and goes back. `open`
  applies the schema's migrations (`textual.pg_schema`) first.
- A write is one transaction. It locks its tenants' rows in `textual_tenants` first, in tenant order (so writers of
  one tenant take turns, and never deadlock), gives each memory it stores or deletes the tenant's next seq, appends
  those entries to the change log, keeps usage, user stats and histories in step, and sends
  `pg_notify(pg_watch.CHANNEL, ...)`, which PostgreSQL delivers on commit only.
- Formats: records, vectors, versions, user stats, knowledge bases and spaces are stored as the bytes
  `textual.record` and `textual.history` make (one owner per format); columns hold only what a query needs.
- Reaching the server: an operation that gets no connection, or loses it, raises `StoreUnavailableError` (a write
  then changed nothing, or it committed and its answer was lost, as with any database). While the watcher
  (`watch`, `textual.pg_watch`) knows the server is down, operations fail at once rather than wait for the pool.
- Periodic jobs over every tenant (the memory lifecycle) run on one node per interval: each node's loop asks
  `claim_pass`, and only the claiming node runs the pass.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import psycopg
from psycopg_pool import ConnectionPool

from memcore.postgres import UNREACHABLE, migrate, open_pool, redacted
from textual import pg_watch
from textual.errors import StoreUnavailableError
from textual.history import Change, Version, decode_version
from textual.memory import KnowledgeBase, Memory, Space
from textual.pg_memories import MemoryWrite, delete_memories, write_memories
from textual.pg_schema import COMPONENT, MIGRATIONS
from textual.record import (decode_kb, decode_memory, decode_space, decode_user_stats, decode_vector, encode_kb,
                            encode_key, encode_space, sortable_time)
from textual.record_store import ChangeListener, Container, EntryKind, GrowthCheck, LogEntry

NAMED_TABLES = {"kb": "textual_kbs", "space": "textual_spaces"}
PASS_LOCK = 0x70617373  # "pass": the advisory lock key under which a node claims a periodic job (`claim_pass`)


class PgStore:
    """Memories of all tenants in one PostgreSQL database; every method names its tenant."""

    def __init__(self, url: str, pool: ConnectionPool) -> None:
        self.url = url
        self._pool = pool
        self._watcher: pg_watch.ChangeWatcher | None = None

    @classmethod
    def open(cls, url: str, *, connect_timeout_s: float = 3.0) -> "PgStore":
        """Connect to `url` and bring its schema up to date; StoreUnavailableError when it cannot be reached."""
        store = cls(url, open_pool(url, name="textual", connect_timeout_s=connect_timeout_s))
        try:
            with store._transaction() as cursor:
                migrate(cursor.connection, COMPONENT, MIGRATIONS)
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        self._pool.close()

    def watch(self, listener: ChangeListener) -> None:
        """Start following other nodes' changes (`textual.pg_watch`); at most once per store."""
        self._watcher = pg_watch.ChangeWatcher(self.url, listener, _all_versions)
        self._watcher.start()

    def outage(self) -> str | None:
        return None if self._watcher is None else self._watcher.outage

    def disk_bytes(self) -> int:
        return 0  # the records live on the database server

    def claim_pass(self, name: str, interval_s: float) -> bool:
        """Claimed under a transaction-level advisory lock (a node that finds it taken skips: another is claiming),
        by the database's clock (nodes' clocks may differ): the newest claim's time is kept in `textual_meta`."""
        key = f"pass:{name}"
        with self._transaction() as cursor:
            if not cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", (PASS_LOCK,)).fetchone()[0]:
                return False
            now = cursor.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()[0]
            row = cursor.execute("SELECT value FROM textual_meta WHERE key = %s", (key,)).fetchone()
            if row is not None and float(row[0]) > now - interval_s:
                return False
            cursor.execute("INSERT INTO textual_meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE "
                           "SET value = EXCLUDED.value", (key, repr(now)))
            return True

    def embedding_model(self) -> str | None:
        with self._transaction() as cursor:
            row = cursor.execute("SELECT value FROM textual_meta WHERE key = 'embedding_model'").fetchone()
            return None if row is None else row[0]

    def set_embedding_model(self, identity: str) -> None:
        with self._transaction() as cursor:
            cursor.execute("INSERT INTO textual_meta VALUES ('embedding_model', %s) ON CONFLICT (key) DO UPDATE "
                           "SET value = EXCLUDED.value", (identity,))

    def put_many(self, items: Iterable[tuple[Memory, np.ndarray | None]],
                 changes: Sequence[Change | None] | None = None,
                 histories: Mapping[str, Sequence[Version]] | None = None,
                 check_growth: GrowthCheck | None = None) -> None:
        items = list(items)
        changes = list(changes) if changes is not None else [None] * len(items)
        by_tenant: dict[str, list[MemoryWrite]] = {}
        for (memory, vector), change in zip(items, changes):
            by_tenant.setdefault(memory.tenant, []).append(MemoryWrite(memory, vector, change))
        with self._transaction() as cursor:
            for tenant in sorted(by_tenant):
                write_memories(cursor, tenant, by_tenant[tenant], histories or {}, check_growth)

    def delete_many(self, tenant: str, memory_ids: Iterable[str], container: Container | None = None) -> list[str]:
        with self._transaction() as cursor:
            removed = delete_memories(cursor, tenant, list(memory_ids))
            if container is not None:
                kind, container_id = container
                cursor.execute(f"DELETE FROM {NAMED_TABLES[kind]} WHERE tenant = %s AND id = %s",
                               (tenant, container_id))
            return removed

    def put_kb(self, kb: KnowledgeBase) -> None:
        self._put_named("kb", kb.tenant, kb.id, encode_kb(kb))

    def get_kb(self, tenant: str, kb_id: str) -> KnowledgeBase | None:
        data = self._get_named("kb", tenant, kb_id)
        return None if data is None else decode_kb(data)

    def kbs(self, tenant: str) -> list[KnowledgeBase]:
        return [decode_kb(data) for data in self._all_named("kb", tenant)]

    def put_space(self, space: Space) -> None:
        self._put_named("space", space.tenant, space.id, encode_space(space))

    def get_space(self, tenant: str, space_id: str) -> Space | None:
        data = self._get_named("space", tenant, space_id)
        return None if data is None else decode_space(data)

    def spaces(self, tenant: str) -> list[Space]:
        return [decode_space(data) for data in self._all_named("space", tenant)]

    def get(self, tenant: str, memory_id: str) -> Memory | None:
        row = self._one("SELECT record FROM textual_memories WHERE tenant = %s AND id = %s", (tenant, memory_id))
        return None if row is None else decode_memory(row[0])

    def get_vector(self, tenant: str, memory_id: str) -> np.ndarray | None:
        row = self._one("SELECT vector FROM textual_memories WHERE tenant = %s AND id = %s", (tenant, memory_id))
        return None if row is None or row[0] is None else decode_vector(row[0])

    def get_many(self, tenant: str, memory_ids: Iterable[str]) -> list[tuple[Memory, np.ndarray]]:
        memory_ids = list(memory_ids)
        rows = self._all("SELECT id, record, vector FROM textual_memories WHERE tenant = %s AND id = ANY(%s) "
                         "AND vector IS NOT NULL", (tenant, memory_ids))
        found = {memory_id: (decode_memory(record), decode_vector(vector)) for memory_id, record, vector in rows}
        return [found[memory_id] for memory_id in dict.fromkeys(memory_ids) if memory_id in found]

    def memories(self, tenant: str) -> list[Memory]:
        return list(self.each_memory(tenant, batch=4096))

    def each_memory(self, tenant: str, batch: int = 512) -> Iterator[Memory]:
        after = ""
        while True:
            rows = self._all("SELECT id, record FROM textual_memories WHERE tenant = %s AND id > %s ORDER BY id "
                             "LIMIT %s", (tenant, after, batch))
            yield from (decode_memory(record) for _id, record in rows)
            if len(rows) < batch:
                return
            after = rows[-1][0]

    def vectors(self, tenant: str) -> dict[str, np.ndarray]:
        rows = self._all("SELECT id, vector FROM textual_memories WHERE tenant = %s AND vector IS NOT NULL",
                         (tenant,))
        return {memory_id: decode_vector(vector) for memory_id, vector in rows}

    def history(self, tenant: str, memory_id: str, after: int = 0, limit: int = 100) -> list[Version]:
        rows = self._all("SELECT version FROM textual_history WHERE tenant = %s AND memory_id = %s AND seq > %s "
                         "ORDER BY seq LIMIT %s", (tenant, memory_id, after, limit))
        return [decode_version(data) for (data,) in rows]

    def version(self, tenant: str) -> int:
        row = self._one("SELECT seq FROM textual_tenants WHERE tenant = %s", (tenant,))
        return 0 if row is None else row[0]

    def changes(self, tenant: str, after: int, limit: int = 1000) -> list[LogEntry] | None:
        if after >= self.version(tenant):
            return []
        rows = self._all("SELECT seq, memory_id, kind FROM textual_changes WHERE tenant = %s AND seq > %s "
                         "ORDER BY seq LIMIT %s", (tenant, after, limit))
        if not rows or rows[0][0] != after + 1:
            return None
        return [LogEntry(seq, memory_id, EntryKind(kind)) for seq, memory_id, kind in rows]

    def usage(self, tenant: str) -> tuple[int, int]:
        row = self._one("SELECT memories, bytes FROM textual_tenants WHERE tenant = %s", (tenant,))
        return (0, 0) if row is None else (row[0], row[1])

    def users(self, tenant: str) -> list[tuple[str, int, dict[str, int], float]]:
        rows = self._all("SELECT user_id, stats FROM textual_users WHERE tenant = %s ORDER BY user_id", (tenant,))
        return [(user, *decode_user_stats(stats)) for user, stats in rows]

    def memories_by_time(self, tenant: str, since: float | None = None, batch: int = 256) -> Iterator[Memory]:
        after = encode_key(tenant) + (b"" if since is None else sortable_time(since))
        while True:
            rows = self._all("SELECT time_key, record FROM textual_memories WHERE tenant = %s AND time_key > %s "
                             "ORDER BY time_key LIMIT %s", (tenant, after, batch))
            yield from (decode_memory(record) for _key, record in rows)
            if len(rows) < batch:
                return
            after = bytes(rows[-1][0])

    def tenants(self) -> list[str]:
        return [tenant for (tenant,) in self._all("SELECT tenant FROM textual_tenants ORDER BY tenant", ())]

    # Knowledge bases and spaces: small records of a tenant in a table of their own (`NAMED_TABLES`).

    def _put_named(self, kind: str, tenant: str, key: str, record: bytes) -> None:
        with self._transaction() as cursor:
            cursor.execute(f"INSERT INTO {NAMED_TABLES[kind]} VALUES (%s, %s, %s) ON CONFLICT (tenant, id) "
                           "DO UPDATE SET record = EXCLUDED.record", (tenant, key, record))

    def _get_named(self, kind: str, tenant: str, key: str) -> bytes | None:
        row = self._one(f"SELECT record FROM {NAMED_TABLES[kind]} WHERE tenant = %s AND id = %s", (tenant, key))
        return None if row is None else row[0]

    def _all_named(self, kind: str, tenant: str) -> list[bytes]:
        return [record for (record,) in self._all(
            f"SELECT record FROM {NAMED_TABLES[kind]} WHERE tenant = %s ORDER BY id", (tenant,))]

    def _one(self, sql: str, params: tuple) -> tuple | None:
        with self._transaction() as cursor:
            return cursor.execute(sql, params).fetchone()

    def _all(self, sql: str, params: tuple) -> list[tuple]:
        with self._transaction() as cursor:
            return cursor.execute(sql, params).fetchall()

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Cursor]:
        """One transaction on a pooled connection, committed when the block ends without an exception."""
        outage = self.outage()
        if outage is not None:
            raise StoreUnavailableError(redacted(self.url), outage)
        try:
            with self._pool.connection() as connection, connection.transaction(), connection.cursor() as cursor:
                yield cursor
        except UNREACHABLE as exc:
            raise StoreUnavailableError(redacted(self.url), f"{type(exc).__name__}: {exc}") from exc


def _all_versions(connection: psycopg.Connection) -> list[tuple[str, int]]:
    return [(tenant, seq) for tenant, seq in connection.execute("SELECT tenant, seq FROM textual_tenants")]

