"""The `history` database inside a write transaction of `LmdbStore`: append, drop and read a memory's versions.

Versions are written in the transaction that writes the change they record, so a change and its version are
durable together or not at all. `textual.history` owns the key and value format and the invariants (seq grows by
one per version; at most `MAX_VERSIONS` per memory; none outlives its memory). Every function that writes returns by
how many bytes the memory's stored versions (their values) grew or shrank, for the tenant's usage
(`textual.lmdb_ledger`), which counts them with the memory's record and vector.
"""

from __future__ import annotations

from typing import Sequence

import lmdb

from textual.history import (MAX_VERSIONS, Change, Version, decode_version, encode_history_key, encode_version,
                             history_end, history_prefix, kept_versions, seq_of_key, version_of)
from textual.memory import Memory


def append(txn: lmdb.Transaction, db, old: Memory | None, new: Memory, change: Change) -> int:
    """Record that `old` became `new`, dropping the memory's oldest versions beyond `MAX_VERSIONS`; the bytes added
    (the new version's, less the dropped ones')."""
    first, last = _bounds(txn, db, new.tenant, new.id)
    version = encode_version(version_of(old, new, change, last + 1))
    txn.put(encode_history_key(new.tenant, new.id, last + 1), version, db=db)
    grown = len(version)
    for seq in range(first, last + 2 - MAX_VERSIONS) if first else ():
        dropped = txn.pop(encode_history_key(new.tenant, new.id, seq), db=db)
        grown -= 0 if dropped is None else len(dropped)
    return grown


def put_all(txn: lmdb.Transaction, db, tenant: str, memory_id: str, versions: Sequence[Version]) -> int:
    """Replace the memory's versions by `versions` (an import's), renumbered 1.. in order, the newest
    `MAX_VERSIONS` kept; the bytes added (those written, less those replaced)."""
    grown = -drop(txn, db, tenant, memory_id)
    for version in kept_versions(versions):
        encoded = encode_version(version)
        txn.put(encode_history_key(tenant, memory_id, version.seq), encoded, db=db)
        grown += len(encoded)
    return grown


def drop(txn: lmdb.Transaction, db, tenant: str, memory_id: str) -> int:
    """Delete every version of the memory; the bytes freed."""
    prefix = history_prefix(tenant, memory_id)
    cursor = txn.cursor(db=db)
    freed = 0
    if not cursor.set_range(prefix):
        return freed
    while cursor.key().startswith(prefix):
        freed += len(cursor.value())
        if not cursor.delete():
            break
    return freed


def tenant_bytes(txn: lmdb.Transaction, db) -> dict[str, int]:
    """The bytes of every tenant's versions: a full scan, for a store whose usage did not count them yet."""
    found: dict[str, int] = {}
    for key, value in txn.cursor(db=db):
        tenant = bytes(key).split(b"\x00", 1)[0].decode()
        found[tenant] = found.get(tenant, 0) + len(value)
    return found


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
