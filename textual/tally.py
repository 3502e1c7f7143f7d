"""The counts derived from a tenant's memory records, as deltas one write makes and as merged totals.

Both record stores keep, in the transaction of every write, what a full scan of the records would compute:
- usage: tenant -> (memories, bytes), the number of records and the summed lengths of their record, vector and
  history versions;
- user stats: (tenant, user) -> (count, count by tier, newest `updated_at` written; a delete does not lower it).
A write records each stored and each replaced or deleted memory in a `Tally`; the store then merges the deltas into
the stored totals (`merged_usage`, `merged_user`). This module is the one owner of that arithmetic.
"""

from __future__ import annotations

from collections import Counter

from textual.memory import Memory

UserStats = tuple[int, dict[str, int], float]  # count, count by tier, newest updated_at


class Tally:
    """The derived-count deltas of one write."""

    def __init__(self) -> None:
        self.usage: dict[str, list[int]] = {}
        self.users: dict[tuple[str, str], tuple[int, Counter, float]] = {}

    def added(self, memory: Memory, size: int) -> None:
        """`memory` (record and vector `size` bytes) is now stored."""
        self._count(memory.tenant, 1, size)
        self._user(memory, 1, memory.updated_at)

    def removed(self, memory: Memory, size: int) -> None:
        """The stored `memory` (`size` bytes in all) is gone: deleted, or about to be replaced."""
        self._count(memory.tenant, -1, -size)
        self._user(memory, -1, float("-inf"))

    def resized(self, tenant: str, size: int) -> None:
        """The tenant's stored history versions grew by `size` bytes (negative: shrank)."""
        self._count(tenant, 0, size)

    def _count(self, tenant: str, count: int, size: int) -> None:
        change = self.usage.setdefault(tenant, [0, 0])
        change[0] += count
        change[1] += size

    def _user(self, memory: Memory, count: int, updated_at: float) -> None:
        if memory.user is None:  # an agent's memory about no user is in no user's stats
            return
        key = (memory.tenant, memory.user)
        old_count, tiers, old_updated = self.users.get(key, (0, Counter(), float("-inf")))
        tiers[memory.tier.value] += count
        self.users[key] = (old_count + count, tiers, max(old_updated, updated_at))


def merged_usage(old: tuple[int, int], delta: list[int]) -> tuple[int, int]:
    """The stored (memories, bytes) after a write's delta (never below zero)."""
    return max(0, old[0] + delta[0]), max(0, old[1] + delta[1])


def merged_user(old: UserStats | None, delta: tuple[int, Counter, float]) -> UserStats | None:
    """A user's stats after a write's delta; None when the user has no memory left (its row is deleted)."""
    old_count, old_tiers, old_updated = (0, {}, float("-inf")) if old is None else old
    count, tiers, updated_at = delta
    if old_count + count <= 0:
        return None
    by_tier = dict(old_tiers)
    for tier, n in tiers.items():
        by_tier[tier] = by_tier.get(tier, 0) + n
    by_tier = {tier: n for tier, n in sorted(by_tier.items()) if n > 0}
    return old_count + count, by_tier, max(old_updated, updated_at)
