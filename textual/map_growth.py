"""Growing an LMDB map when it fills: the size policy (pure) and the gate that makes resizing safe.

py-lmdb's rule for `Environment.set_mapsize`: it may be called only while no transaction of the environment is open
in this process. `GrowthGate` keeps that rule: every transaction runs inside `shared()`, a resize inside
`exclusive()`, which waits until no transaction is open and lets none begin meanwhile. Rules for callers: never
nest `shared()` in one thread (a resize waiting between the two would deadlock), and never resize from inside
`shared()`; a writer that hit `MapFullError` leaves its transaction (aborted) first, then grows, then retries.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

GROWTH_FACTOR = 2


def delete_reserve(max_map_size: int) -> int:
    """The part of a map's ceiling kept for deletes: 1/8 of it, at least 256 KiB (never all of it)."""
    return min(max_map_size // 2, max(max_map_size // 8, 256 << 10))


def next_map_size(current: int, ceiling: int) -> int | None:
    """The map size after `current` filled: doubled, capped at `ceiling`; None when `current` is the ceiling."""
    if current >= ceiling:
        return None
    return min(ceiling, current * GROWTH_FACTOR)


class GrowthGate:
    """A readers-writer gate: many transactions at once (`shared`), or one resize alone (`exclusive`)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._open = 0
        self._resizing = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: not self._resizing)
            self._open += 1
        try:
            yield
        finally:
            with self._condition:
                self._open -= 1
                if not self._open:
                    self._condition.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: not self._resizing)
            self._resizing = True
            self._condition.wait_for(lambda: self._open == 0)
        try:
            yield
        finally:
            with self._condition:
                self._resizing = False
                self._condition.notify_all()
