"""Machine stalls: how long a process that only sleeps was kept from running, seen from outside the measured system.

A child process sleeps `tick_s` at a time and records every wake-up that came more than `threshold_s` late (when it
resumed, on CLOCK_MONOTONIC, which all processes share, and how late). It takes no lock, touches no file and
allocates nothing in its loop, so its delays are the machine's (every CPU held by the kernel, or the virtual machine
not run by its host), not the sidecar's. A benchmark reports them per phase beside its latencies, so that a tail
made by the machine is told from one made by the software: on the shared 2-core VM, `bench.tenants`'s flood came
with wake-ups up to 4.5 s late while half of the CPU time was idle (2026-12-05).
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass


def _sleeper(events, tick_s: float, threshold_s: float) -> None:
    deadline = time.monotonic() + tick_s
    while True:
        time.sleep(tick_s)
        now = time.monotonic()
        late = now - deadline
        if late > threshold_s:
            events.put((now, late))
        deadline = now + tick_s


@dataclass(frozen=True)
class Stalls:
    """The stalls of one window: their count, the seconds they took inside it, and the longest."""

    count: int
    seconds: float
    longest_s: float

    def as_json(self, window_s: float) -> dict:
        return {"count": self.count, "seconds": round(self.seconds, 2), "longest_s": round(self.longest_s, 2),
                "share": round(self.seconds / window_s, 3) if window_s > 0 else None}


class StallProbe:
    """A sleeping child process recording its late wake-ups (see the module); a context manager."""

    def __init__(self, tick_s: float = 0.01, threshold_s: float = 0.25) -> None:
        self.tick_s = tick_s
        self.threshold_s = threshold_s
        context = multiprocessing.get_context("spawn")  # no copy of this process's threads or memory
        self._events = context.Queue()
        self._process = context.Process(target=_sleeper, args=(self._events, tick_s, threshold_s), daemon=True)
        self._seen: list[tuple[float, float]] = []  # (resumed at, seconds late)

    def __enter__(self) -> "StallProbe":
        self._process.start()
        return self

    def __exit__(self, *exc) -> None:
        self._process.terminate()
        self._process.join(timeout=5)

    @property
    def pid(self) -> int | None:
        """The sleeping child's process id (None before it started)."""
        return self._process.pid

    def stalls(self, windows: list[tuple[float, float]]) -> Stalls:
        """The stalls overlapping `windows` (monotonic start, end), each counted for its part inside them."""
        while not self._events.empty():
            self._seen.append(self._events.get_nowait())
        count, seconds, longest = 0, 0.0, 0.0
        for resumed, late in self._seen:
            stalled = (resumed - late, resumed)
            inside = sum(max(0.0, min(end, stalled[1]) - max(start, stalled[0])) for start, end in windows)
            if inside > 0:
                count, seconds, longest = count + 1, seconds + inside, max(longest, late)
        return Stalls(count, seconds, longest)
