"""The engine worker's KV store figures, published to a small JSON file the sidecar reads.

The RAM tier lives in the vLLM worker process; the sidecar sees only the disk and shared tiers. The worker therefore
writes its `TieredStore.stats()` (plus `dropped_saves`, the `loads` totals and the time written) to
`worker-stats.json` in the store directory, at most every `interval_s`, by write-then-rename so a reader never sees
half a file. A missing or unreadable file reads as `None`: the figures are a report, never needed for correctness.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("memsidecar.kvcache")
FILE_NAME = "worker-stats.json"


@dataclass
class LoadTotals:
    """Blocks loaded into the engine's KV cache and the wall time of the loads that did it (the engine's load
    bandwidth is `bytes / seconds`: store lookup, checksum and the copy into the layers, as the forward pass waits),
    and `forward_seconds`: the wall time from the end of each such load to the end of its step's forward pass (what
    the loaded blocks did not save: the tokens still computed, sampling)."""

    blocks: int = 0
    bytes: int = 0
    seconds: float = 0.0
    forward_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, blocks: int, nbytes: int, seconds: float) -> None:
        with self._lock:
            self.blocks += blocks
            self.bytes += nbytes
            self.seconds += seconds

    def add_forward(self, seconds: float) -> None:
        with self._lock:
            self.forward_seconds += seconds

    def as_dict(self) -> dict[str, float]:
        with self._lock:
            rate = self.bytes / self.seconds if self.seconds else 0.0
            return {"blocks": self.blocks, "bytes": self.bytes, "seconds": round(self.seconds, 6),
                    "bytes_per_s": round(rate), "forward_seconds": round(self.forward_seconds, 6)}


def stats_path(store_dir: str | Path) -> Path:
    return Path(store_dir) / FILE_NAME


class StatsPublisher:
    """Writes a stats snapshot when `maybe_publish` is called and `interval_s` has passed since the last one; the
    snapshot is taken (`snapshot()` called) only then, so a caller on a busy thread pays for it once per interval."""

    def __init__(self, path: Path, interval_s: float = 2.0) -> None:
        self.path = path
        self.interval_s = interval_s
        self._last = 0.0

    def maybe_publish(self, snapshot: Callable[[], dict[str, Any]]) -> bool:
        now = time.time()
        if now - self._last < self.interval_s:
            return False
        self._last = now
        stats = snapshot()
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            temporary.write_text(json.dumps({**stats, "written_at": now}))
            os.replace(temporary, self.path)
        except OSError:  # a report only; the next interval tries again
            log.warning("could not write KV worker stats to %s", self.path, exc_info=True)
            return False
        return True


def read_stats(path: Path) -> dict[str, Any] | None:
    """The last snapshot, or None when there is none (no engine with a worker yet) or it cannot be read."""
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None
