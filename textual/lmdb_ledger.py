"""The databases LMDB derives from the memory records, kept in step inside each write transaction.

- `usage`: tenant -> (memories, bytes): the number of records and the summed lengths of their record, vector and
  history-version values (`textual.lmdb_history` reports the latter's changes), two 8-byte little-endian counts.
  `/v1/whoami` and the quotas read it in O(1); with a `GrowthCheck`, `flush` lets a tenant's bytes grow only if it
  passes (the quota on them, checked exactly at commit).
- `by_time`: one key per memory in `textual.context.time_order` (`record.encode_time_key`) -> its id, so a tenant's
  memories are listed page by page in time order without reading the others.
- `users`: tenant NUL user -> that user's count, count by tier and newest `updated_at` (`record.encode_user_stats`).

Invariant: after every committed write, each database equals what a full scan of `memories`, `vectors` and
`history` would compute (`count_all` computes exactly that, once, for a store written before they existed;
`count_history` adds the versions to a store whose usage was derived before they counted). A write records its
changes in a `Ledger` (one per transaction) as it goes; `flush` applies the summed deltas (`textual.tally` owns the
arithmetic) before the commit.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import lmdb

from textual.memory import Memory
from textual.record import decode_memory, decode_user_stats, encode_key, encode_time_key, encode_user_stats
from textual.record_store import GrowthCheck
from textual.tally import Tally, merged_usage, merged_user

USAGE = struct.Struct("<QQ")


@dataclass(frozen=True)
class DerivedDbs:
    usage: object
    by_time: object
    users: object


class Ledger:
    """The derived-database changes of one write transaction: `by_time` written at once, the counts summed in a
    `Tally` and merged by `flush`."""

    def __init__(self, dbs: DerivedDbs, txn: lmdb.Transaction) -> None:
        self.dbs = dbs
        self.txn = txn
        self.tally = Tally()

    def added(self, memory: Memory, size: int) -> None:
        """`memory` (record and vector `size` bytes) is now stored."""
        self.txn.put(encode_time_key(memory), memory.id.encode(), db=self.dbs.by_time)
        self.tally.added(memory, size)

    def removed(self, old_record: bytes, size: int) -> None:
        """The memory stored as `old_record` (with `size` bytes in all) is gone (deleted, or about to be replaced)."""
        memory = decode_memory(old_record)
        self.txn.delete(encode_time_key(memory), db=self.dbs.by_time)
        self.tally.removed(memory, size)

    def resized(self, tenant: str, size: int) -> None:
        """The tenant's stored history versions grew by `size` bytes (negative: shrank)."""
        self.tally.resized(tenant, size)

    def flush(self, check_growth: GrowthCheck | None = None) -> None:
        """Apply the summed changes; a tenant whose bytes grow is first asked of `check_growth` (which may raise)."""
        for tenant, delta in self.tally.usage.items():
            key = tenant.encode()
            data = self.txn.get(key, db=self.dbs.usage)
            old = (0, 0) if data is None else USAGE.unpack(data)
            if check_growth is not None and delta[1] > 0:
                check_growth(tenant, old, delta[1])
            self.txn.put(key, USAGE.pack(*merged_usage(old, delta)), db=self.dbs.usage)
        for (tenant, user), delta in self.tally.users.items():
            key = encode_key(tenant, user)
            data = self.txn.get(key, db=self.dbs.users)
            merged = merged_user(None if data is None else decode_user_stats(data), delta)
            if merged is None:
                self.txn.delete(key, db=self.dbs.users)
            else:
                self.txn.put(key, encode_user_stats(*merged), db=self.dbs.users)


def count_all(dbs: DerivedDbs, txn: lmdb.Transaction, memories_db, vectors_db, history_bytes: dict[str, int]
              ) -> None:
    """Build every derived database from the records and each tenant's `history_bytes` (for a store written before
    they existed)."""
    vector_sizes = {bytes(key): len(value) for key, value in txn.cursor(db=vectors_db)}
    ledger = Ledger(dbs, txn)
    for key, value in txn.cursor(db=memories_db):
        memory = decode_memory(value)
        ledger.added(memory, len(value) + vector_sizes.get(bytes(key), 0))
    for tenant, size in history_bytes.items():
        ledger.resized(tenant, size)
    ledger.flush()


def count_history(dbs: DerivedDbs, txn: lmdb.Transaction, history_bytes: dict[str, int]) -> None:
    """Add each tenant's `history_bytes` to its usage (a store derived while versions did not count)."""
    ledger = Ledger(dbs, txn)
    for tenant, size in history_bytes.items():
        ledger.resized(tenant, size)
    ledger.flush()
