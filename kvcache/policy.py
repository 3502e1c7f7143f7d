"""Eviction and promotion planning for byte-bounded tiers, as pure functions (no I/O), tested in milliseconds.

The planner only returns values (`Plan`, lists of keys); the tiers and the store carry them out.

Invariants (checked by property tests):
- a pinned entry is never chosen for eviction;
- after the evictions the resident bytes fit the budget, unless every entry left is pinned;
- promotions only fill free space (after evictions): a promotion never pushes a resident entry out, so promoting
  a namespace cannot thrash blocks that are being used;
- an owner with a byte budget of its own (a tenant's share of the disk tier) frees only its own entries
  (`bytes_to_free`), and of the incoming blocks keeps the leading ones that fit (`fitting_prefix`), so it never
  ends above its budget.

Eviction order is least recently used first, fewer hits first among equals. Promotion order is the reverse: most
hits first, then most recent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    """What the planner knows of one stored block. `last_access` is any monotonic clock or sequence number."""

    key: bytes
    size: int
    last_access: float
    hits: int = 0
    pinned: bool = False


@dataclass(frozen=True)
class Plan:
    """Moves for one tier: `evict` leaves it (the store may demote them), `promote` is copied up into it."""

    evict: tuple[bytes, ...] = ()
    promote: tuple[bytes, ...] = ()


def choose_victims(oldest_first: Iterable[Entry], used_bytes: int, budget_bytes: int) -> list[bytes]:
    """Keys to evict, in the given order, until `used_bytes` fits `budget_bytes`; pinned entries are skipped.

    `oldest_first` is consumed lazily, so a tier that already keeps its entries in eviction order (an LRU dict, an
    LMDB sequence index) pays only for the entries it actually evicts.
    """
    victims = []
    if used_bytes <= budget_bytes:
        return victims
    for entry in oldest_first:
        if entry.pinned:
            continue
        victims.append(entry.key)
        used_bytes -= entry.size
        if used_bytes <= budget_bytes:
            break
    return victims


def eviction_order(entries: Iterable[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: (e.last_access, e.hits))


def plan(resident: Sequence[Entry], budget_bytes: int, candidates: Sequence[Entry] = (), incoming_bytes: int = 0
         ) -> Plan:
    """Evictions that make `resident` plus `incoming_bytes` fit `budget_bytes`, then promotions of `candidates`
    (entries of a slower tier) into whatever space is left. Candidates already resident are ignored."""
    used = sum(e.size for e in resident) + incoming_bytes
    evict = choose_victims(eviction_order(resident), used, budget_bytes)
    evicted = set(evict)
    free = budget_bytes - used + sum(e.size for e in resident if e.key in evicted)
    resident_keys = {e.key for e in resident}
    promote = []
    for entry in sorted(candidates, key=lambda e: (-e.hits, -e.last_access)):
        if entry.key in resident_keys or entry.size > free:
            continue
        promote.append(entry.key)
        resident_keys.add(entry.key)
        free -= entry.size
    return Plan(tuple(evict), tuple(promote))


def bytes_to_free(used_bytes: int, incoming_bytes: int, budget_bytes: int, low_water: float) -> int:
    """What an owner holding `used_bytes` of its `budget_bytes` must free before `incoming_bytes` arrive: nothing
    while they fit, else enough to end at `low_water` of the budget, so that one eviction (a scan) makes room for
    many writes."""
    if used_bytes + incoming_bytes <= budget_bytes:
        return 0
    return used_bytes + incoming_bytes - int(low_water * budget_bytes)


def fitting_prefix(sizes: Sequence[int], used_bytes: int, budget_bytes: int) -> int:
    """How many leading `sizes` fit on top of `used_bytes` within `budget_bytes`. The leading ones: a chain's later
    blocks are useless without its earlier ones."""
    count = 0
    for size in sizes:
        if used_bytes + size > budget_bytes:
            break
        used_bytes += size
        count += 1
    return count
