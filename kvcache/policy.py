"""Eviction policy for a byte-bounded tier, as a pure function (no I/O), so it is tested in milliseconds.

Invariants: a pinned key is never chosen; after the chosen keys are removed the tier is within its budget, unless
what remains is all pinned.
"""

from __future__ import annotations

from collections.abc import Iterable


def choose_victims(oldest_first: Iterable[tuple[bytes, int]], pinned: set[bytes], used_bytes: int,
                   budget_bytes: int) -> list[bytes]:
    """Keys to evict, oldest first, until `used_bytes` fits `budget_bytes`. `oldest_first` yields (key, size)."""
    victims = []
    for key, size in oldest_first:
        if used_bytes <= budget_bytes:
            break
        if key in pinned:
            continue
        victims.append(key)
        used_bytes -= size
    return victims
