"""The `history` database inside a write transaction of `LmdbStore`: append, drop and read a memory's versions.

Versions are written in the transaction that writes the change they record, so a change and its version are
durable together or not at all. `textual.history` owns the key and value format and the invariants (seq grows by
one per version; at most `MAX_VERSIONS` per memory; none outlives its memory).
"""

from __future__ import annotations

from typing import Sequence

import lmdb

from textual.history import (MAX_VERSIONS, Change, Version, decode_version, encode_history_key, encode_version,
                             history_end, history_prefix, kept_versions, seq_of_key, version_of)
from textual.memory import Memory


def append(txn: lmdb.Transaction, db, old: Memory | None, new: Memory, change: Change) -> Version:
    """Record that `old` became `new`, dropping the memory's oldest versions beyond `MAX_VERSIONS`."""
    first, last = _bounds(txn, db, new.tenant, new.id)
    version = version_of(old, new, change, last + 1)
    txn.put(encode_history_key(new.tenant, new.id, version.seq), encode_version(version), db=db)
    for seq in range(first, version.seq - MAX_VERSIONS + 1) if first else ():
        txn.delete(encode_history_key(new.tenant, new.id, seq), db=db)
    return version


def put_all(txn: lmdb.Transaction, db, tenant: str, memory_id: str, versions: Sequence[Version]) -> int:
    """Replace the memory's versions by `versions` (an import's), renumbered 1.. in order, the newest
    `MAX_VERSIONS` kept; returns how many were kept."""
    drop(txn, db, tenant, memory_id)
    kept = kept_versions(versions)
    for version in kept:
        txn.put(encode_history_key(tenant, memory_id, version.seq), encode_version(version), db=db)
    return len(kept)


def drop(txn: lmdb.Transaction, db, tenant: str, memory_id: str) -> None:
    """Delete every version of the memory."""
    prefix = history_prefix(tenant, memory_id)
    cursor = txn.cursor(db=db)
    if not cursor.set_range(prefix):
        return
    while cursor.key().startswith(prefix):
        if not cursor.delete():
            return


def read(txn: lmdb.Transaction, db, tenant: str, memory_id: str, after: int, limit: int) -> list[Version]:
    """At most `limit` of the memory's versions with a seq above `after`, oldest first, decoded."""
    prefix = history_prefix(tenant, memory_id)
    cursor = txn.cursor(db=db)
    if not cursor.set_range(encode_history_key(tenant, memory_id, after + 1)):
        return []
    found = []
    for key, value in cursor.iternext():
        if not bytes(key).startswith(prefix) or len(found) >= limit:
            break
        found.append(decode_version(value))
    return found


def _bounds(txn: lmdb.Transaction, db, tenant: str, memory_id: str) -> tuple[int, int]:
    """(first seq, last seq) of the memory's versions; (0, 0) when it has none."""
    prefix = history_prefix(tenant, memory_id)
    cursor = txn.cursor(db=db)
    if not cursor.set_range(prefix) or not cursor.key().startswith(prefix):
        return 0, 0
    first = seq_of_key(cursor.key())
    found = cursor.set_range(history_end(tenant, memory_id))
    if not (cursor.prev() if found else cursor.last()):
        return 0, 0
    return first, seq_of_key(cursor.key())
