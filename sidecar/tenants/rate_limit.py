"""Per-key request rate limiting: one token bucket per API key (hashed), refilled continuously. Pure, clock injected.

Invariant: a key never gets more than `per_minute` requests in any minute beyond its initial burst of `per_minute`.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable


class RateLimiter:
    """`acquire(key)` returns 0 when the request may go ahead, else the seconds to wait before retrying."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    @property
    def is_unlimited(self) -> bool:
        return self.per_minute <= 0

    def acquire(self, key: str) -> float:
        if self.is_unlimited:
            return 0.0
        rate = self.per_minute / 60.0
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.get(key, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - at) * rate)
            if tokens >= 1.0:
                self._store(key, (tokens - 1.0, now))
                return 0.0
            self._store(key, (tokens, now))
            return (1.0 - tokens) / rate

    def retry_after(self, wait_s: float) -> str:
        """The `Retry-After` header value for a wait: whole seconds, at least 1."""
        return str(max(1, math.ceil(wait_s)))

    def _store(self, key: str, bucket: tuple[float, float]) -> None:
        if key not in self._buckets and len(self._buckets) >= self.max_keys:
            self._buckets.pop(next(iter(self._buckets)))  # oldest inserted: bounded memory under key spraying
        self._buckets[key] = bucket
