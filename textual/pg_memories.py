"""The memory writes of `textual.pg_store.PgStore`, each inside the one transaction the store opened.

A write of a tenant: lock its `textual_tenants` row (its writers take turns from here to the commit), read the old
records it replaces, write records, vectors and versions (`textual.history` owns the version rule: one per change,
at most `MAX_VERSIONS` per memory), then `_log`: the change-log entries with the tenant's next seqs (gap-free,
since the row lock is held), the log trimmed to `LOG_KEEP`, usage and user stats merged (`textual.tally`), the
tenant's seq stored, and the notification sent (delivered on commit). Usage counts the bytes of the stored versions
with the records' (as LMDB's does); a write that grows the tenant's bytes is first asked of its `GrowthCheck`.
Rows go to the server in bulk, a few statements per write whatever its size: memories the tenant did not hold
(absent under its row lock, so no other writer can add them before the commit), versions and log entries by binary
`COPY`; memories it held by one pipelined upsert each (`executemany`). A memory written twice in one batch is
stored once, as the last write leaves it (its newest vector given), with a version and a log entry per write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import psycopg

from textual.history import MAX_VERSIONS, Change, Version, encode_version, kept_versions, version_of
from textual.memory import Memory
from textual.pg_watch import CHANNEL, payload
from textual.record import decode_memory, decode_user_stats, encode_memory, encode_time_key, encode_user_stats, \
    encode_vector
from textual.record_store import LOG_KEEP, EntryKind, GrowthCheck
from textual.tally import Tally, merged_user

UPSERT_MEMORY = ("INSERT INTO textual_memories (tenant, id, record, vector, time_key) VALUES (%s, %s, %s, %s, %s) "
                 "ON CONFLICT (tenant, id) DO UPDATE SET record = EXCLUDED.record, time_key = EXCLUDED.time_key, "
                 "vector = COALESCE(EXCLUDED.vector, textual_memories.vector)")
# Binary COPY of new rows: (statement, column types in order).
COPY_MEMORIES = ("COPY textual_memories (tenant, id, record, vector, time_key) FROM STDIN (FORMAT BINARY)",
                 ("text", "text", "bytea", "bytea", "bytea"))
COPY_VERSIONS = ("COPY textual_history (tenant, memory_id, seq, version) FROM STDIN (FORMAT BINARY)",
                 ("text", "text", "int4", "bytea"))
COPY_CHANGES = ("COPY textual_changes (tenant, seq, memory_id, kind) FROM STDIN (FORMAT BINARY)",
                ("text", "int8", "text", "text"))


@dataclass(frozen=True)
class MemoryWrite:
    """One memory to store: its vector (None: keep the stored one) and the change to record (None: no version)."""

    memory: Memory
    vector: np.ndarray | None
    change: Change | None


def write_memories(cursor: psycopg.Cursor, tenant: str, writes: Sequence[MemoryWrite],
                   histories: Mapping[str, Sequence[Version]], check_growth: GrowthCheck | None = None) -> None:
    """Store `writes` (all of `tenant`), replacing the histories of the ids in `histories` first."""
    seq = _lock_tenant(cursor, tenant, create=True)
    ids = list(dict.fromkeys(write.memory.id for write in writes))
    old = {memory_id: (bytes(record), size) for memory_id, record, size in cursor.execute(
        "SELECT id, record, COALESCE(octet_length(vector), 0) FROM textual_memories WHERE tenant = %s "
        "AND id = ANY(%s)", (tenant, ids))}
    tally = Tally()
    tally.resized(tenant, _replace_histories(cursor, tenant, {i: histories[i] for i in ids if i in histories}))
    bounds = {memory_id: (first, last) for memory_id, first, last in cursor.execute(
        "SELECT memory_id, min(seq), max(seq) FROM textual_history WHERE tenant = %s AND memory_id = ANY(%s) "
        "GROUP BY memory_id", (tenant, [w.memory.id for w in writes if w.change is not None]))}
    stored = set(old)
    rows, versions, trims, entries = {}, [], {}, []
    for write in writes:
        memory, record = write.memory, encode_memory(write.memory)
        vector = None if write.vector is None else encode_vector(write.vector)
        before = old.get(memory.id)
        if before is not None:
            tally.removed(decode_memory(before[0]), len(before[0]) + before[1])
        if write.change is not None:
            first, last = bounds.get(memory.id, (0, 0))
            version = version_of(None if before is None else decode_memory(before[0]), memory, write.change, last + 1)
            versions.append((tenant, memory.id, version.seq, encode_version(version)))
            tally.resized(tenant, len(versions[-1][3]))
            bounds[memory.id] = (first or version.seq, version.seq)
            if version.seq - MAX_VERSIONS >= (first or version.seq):
                trims[memory.id] = version.seq - MAX_VERSIONS
        size = len(vector) if vector is not None else (before[1] if before is not None else 0)
        tally.added(memory, len(record) + size)
        old[memory.id] = (record, size)
        entries.append((memory.id, EntryKind.UPSERT if vector is not None or before is None else EntryKind.RECORD))
        if vector is None and memory.id in rows:  # written twice in this batch: keep the vector given before
            vector = rows[memory.id][3]
        rows[memory.id] = (tenant, memory.id, record, vector, encode_time_key(memory))
    _store_rows(cursor, rows, stored)
    _copy(cursor, COPY_VERSIONS, versions)
    for memory_id, cutoff in trims.items():
        tally.resized(tenant, -_deleted_bytes(cursor, "DELETE FROM textual_history WHERE tenant = %s AND memory_id = "
                                              "%s AND seq <= %s RETURNING octet_length(version)",
                                              (tenant, memory_id, cutoff)))
    _log(cursor, tenant, seq, entries, tally, check_growth)


def _store_rows(cursor: psycopg.Cursor, rows: Mapping[str, tuple], stored: set[str]) -> None:
    """Write one row per memory id: by COPY those the tenant did not hold, by upsert those in `stored`."""
    _copy(cursor, COPY_MEMORIES, [row for memory_id, row in rows.items() if memory_id not in stored])
    updated = [row for memory_id, row in rows.items() if memory_id in stored]
    if updated:
        cursor.executemany(UPSERT_MEMORY, updated)


def delete_memories(cursor: psycopg.Cursor, tenant: str, memory_ids: Sequence[str]) -> list[str]:
    """Delete the memories with their vectors and histories; returns the ids that were there, in the given order."""
    seq = _lock_tenant(cursor, tenant, create=False)
    if seq is None:  # never written: nothing to delete
        return []
    gone = {memory_id: (bytes(record), size) for memory_id, record, size in cursor.execute(
        "DELETE FROM textual_memories WHERE tenant = %s AND id = ANY(%s) "
        "RETURNING id, record, COALESCE(octet_length(vector), 0)", (tenant, list(memory_ids)))}
    removed = [memory_id for memory_id in dict.fromkeys(memory_ids) if memory_id in gone]
    tally = Tally()
    for memory_id in removed:
        record, size = gone[memory_id]
        tally.removed(decode_memory(record), len(record) + size)
    if removed:
        tally.resized(tenant, -_deleted_bytes(cursor, "DELETE FROM textual_history WHERE tenant = %s AND memory_id = "
                                              "ANY(%s) RETURNING octet_length(version)", (tenant, removed)))
    _log(cursor, tenant, seq, [(memory_id, EntryKind.DELETE) for memory_id in removed], tally)
    return removed


def _lock_tenant(cursor: psycopg.Cursor, tenant: str, create: bool) -> int | None:
    """Lock the tenant's row until the commit (creating it when `create`); its seq, or None when it has no row."""
    if create:
        cursor.execute("INSERT INTO textual_tenants (tenant) VALUES (%s) ON CONFLICT DO NOTHING", (tenant,))
    row = cursor.execute("SELECT seq FROM textual_tenants WHERE tenant = %s FOR UPDATE", (tenant,)).fetchone()
    return None if row is None else row[0]


def _replace_histories(cursor: psycopg.Cursor, tenant: str, histories: Mapping[str, Sequence[Version]]) -> int:
    """Replace the histories of the memories in `histories`; the bytes of versions added, less those replaced."""
    if not histories:
        return 0
    freed = _deleted_bytes(cursor, "DELETE FROM textual_history WHERE tenant = %s AND memory_id = ANY(%s) "
                           "RETURNING octet_length(version)", (tenant, list(histories)))
    rows = [(tenant, memory_id, version.seq, encode_version(version)) for memory_id, versions in histories.items()
            for version in kept_versions(versions)]
    _copy(cursor, COPY_VERSIONS, rows)
    return sum(len(row[3]) for row in rows) - freed


def _copy(cursor: psycopg.Cursor, copy: tuple[str, Sequence[str]], rows: Sequence[tuple]) -> None:
    """Insert `rows` with one binary COPY (`copy`: the statement and its column types); nothing when empty."""
    if not rows:
        return
    statement, types = copy
    with cursor.copy(statement) as stream:
        stream.set_types(types)
        for row in rows:
            stream.write_row(row)


def _deleted_bytes(cursor: psycopg.Cursor, sql: str, params: tuple) -> int:
    """Run a `DELETE ... RETURNING octet_length(...)`; the bytes it deleted."""
    return sum(size for (size,) in cursor.execute(sql, params).fetchall())


def _log(cursor: psycopg.Cursor, tenant: str, seq: int, entries: Sequence[tuple[str, EntryKind]],
         tally: Tally, check_growth: GrowthCheck | None = None) -> None:
    """Append the change-log entries after `seq`, and bring the tenant's counters, user stats and seq up to date
    (after asking `check_growth` when the tenant's bytes grow: it may raise, and the transaction rolls back)."""
    count, size = tally.usage.get(tenant, (0, 0))
    if check_growth is not None and size > 0:
        stored = cursor.execute("SELECT memories, bytes FROM textual_tenants WHERE tenant = %s", (tenant,)).fetchone()
        check_growth(tenant, (stored[0], stored[1]), size)
    last = seq + len(entries)
    if entries:
        _copy(cursor, COPY_CHANGES,
              [(tenant, seq + n, memory_id, kind.value) for n, (memory_id, kind) in enumerate(entries, 1)])
        if last > LOG_KEEP:
            cursor.execute("DELETE FROM textual_changes WHERE tenant = %s AND seq <= %s", (tenant, last - LOG_KEEP))
    cursor.execute("UPDATE textual_tenants SET seq = %s, memories = GREATEST(0, memories + %s), "
                   "bytes = GREATEST(0, bytes + %s) WHERE tenant = %s", (last, count, size, tenant))
    _merge_users(cursor, tenant, tally)
    if entries:
        cursor.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload(tenant, last)))


def _merge_users(cursor: psycopg.Cursor, tenant: str, tally: Tally) -> None:
    users = [user for (owner, user) in tally.users if owner == tenant]
    if not users:
        return
    stored = {user: decode_user_stats(stats) for user, stats in cursor.execute(
        "SELECT user_id, stats FROM textual_users WHERE tenant = %s AND user_id = ANY(%s)", (tenant, users))}
    kept, dropped = [], []
    for user in users:
        merged = merged_user(stored.get(user), tally.users[(tenant, user)])
        if merged is None:
            dropped.append(user)
        else:
            kept.append((tenant, user, encode_user_stats(*merged)))
    if kept:
        cursor.executemany("INSERT INTO textual_users VALUES (%s, %s, %s) ON CONFLICT (tenant, user_id) "
                           "DO UPDATE SET stats = EXCLUDED.stats", kept)
    if dropped:
        cursor.execute("DELETE FROM textual_users WHERE tenant = %s AND user_id = ANY(%s)", (tenant, dropped))
