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
changes in a `Ledger` (one per transaction) as it goes; `flush` applies the summed deltas before the commit.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import lmdb

from textual.memory import Memory
from textual.record import decode_memory, decode_user_stats, encode_key, encode_time_key, encode_user_stats

USAGE = struct.Struct("<QQ")
# Asked before a tenant's bytes grow: the tenant, its (memories, bytes) before the write, the bytes the write adds;
# it raises to refuse, which aborts the transaction.
GrowthCheck = Callable[[str, tuple[int, int], int], None]


@dataclass(frozen=True)
class DerivedDbs:
    usage: object
    by_time: object
    users: object


class Ledger:
    """The derived-database changes of one write transaction."""

    def __init__(self, dbs: DerivedDbs, txn: lmdb.Transaction) -> None:
        self.dbs = dbs
        self.txn = txn
        self.usage: dict[str, list[int]] = {}
        self.users: dict[tuple[str, str], tuple[int, Counter, float]] = {}

    def added(self, memory: Memory, size: int) -> None:
        """`memory` (record and vector `size` bytes) is now stored."""
        self.txn.put(encode_time_key(memory), memory.id.encode(), db=self.dbs.by_time)
        self._count(memory.tenant, 1, size)
        self._user(memory, 1, memory.updated_at)

    def removed(self, old_record: bytes, size: int) -> None:
        """The memory stored as `old_record` (with `size` bytes in all) is gone (deleted, or about to be replaced)."""
        memory = decode_memory(old_record)
        self.txn.delete(encode_time_key(memory), db=self.dbs.by_time)
        self._count(memory.tenant, -1, -size)
        self._user(memory, -1, float("-inf"))

    def resized(self, tenant: str, size: int) -> None:
        self._count(tenant, 0, size)

    def flush(self, check_growth: GrowthCheck | None = None) -> None:
        """Apply the summed changes; a tenant whose bytes grow is first asked of `check_growth` (which may raise)."""
        for tenant, (count, size) in self.usage.items():
            key = tenant.encode()
            data = self.txn.get(key, db=self.dbs.usage)
            old_count, old_size = (0, 0) if data is None else USAGE.unpack(data)
            if check_growth is not None and size > 0:
                check_growth(tenant, (old_count, old_size), size)
            self.txn.put(key, USAGE.pack(max(0, old_count + count), max(0, old_size + size)), db=self.dbs.usage)
        for (tenant, user), (count, tiers, updated_at) in self.users.items():
            key = encode_key(tenant, user)
            data = self.txn.get(key, db=self.dbs.users)
            old_count, old_tiers, old_updated = (0, {}, float("-inf")) if data is None else decode_user_stats(data)
            total = old_count + count
            if total <= 0:
                self.txn.delete(key, db=self.dbs.users)
                continue
            by_tier = dict(old_tiers)
            for tier, n in tiers.items():
                by_tier[tier] = by_tier.get(tier, 0) + n
            by_tier = {tier: n for tier, n in sorted(by_tier.items()) if n > 0}
            self.txn.put(key, encode_user_stats(total, by_tier, max(old_updated, updated_at)), db=self.dbs.users)

    def _count(self, tenant: str, count: int, size: int) -> None:
        change = self.usage.setdefault(tenant, [0, 0])
        change[0] += count
        change[1] += size

    def _user(self, memory: Memory, count: int, updated_at: float) -> None:
        key = (memory.tenant, memory.user)
        old_count, tiers, old_updated = self.users.get(key, (0, Counter(), float("-inf")))
        tiers[memory.tier.value] += count
        self.users[key] = (old_count + count, tiers, max(old_updated, updated_at))


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
