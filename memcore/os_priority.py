"""Lower OS scheduling priority for the calling thread, so bulk work (a tenant's thousand-turn import, an adapter
upload's validation) yields the CPU to latency-bound work (searches, chats, the engine) of the same machine.

Rules: on Linux `nice` is per thread, and threads a niced thread creates (e.g. a torch/OpenMP team it starts) inherit
it. An unprivileged process may raise its niceness but never lower it again, so only threads that do nothing but
bulk work for the rest of their life are niced; there is no "restore". Elsewhere this does nothing.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

log = logging.getLogger("memsidecar.priority")
MAX_NICE = 19
IS_LINUX = sys.platform.startswith("linux")


def lower_thread_priority(nice: int) -> bool:
    """Add `nice` (0-19) to the calling thread's niceness; False when the platform cannot or 0 asks nothing."""
    if nice <= 0 or not IS_LINUX:  # elsewhere PRIO_PROCESS with a thread id would name some process
        return False
    if nice > MAX_NICE:
        raise ValueError(f"nice must be from 0 to {MAX_NICE}, got {nice}")
    thread_id = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread_id)
        os.setpriority(os.PRIO_PROCESS, thread_id, min(MAX_NICE, current + nice))
    except OSError as error:
        log.warning("could not lower the priority of thread %d by %d: %s", thread_id, nice, error)
        return False
    return True


def thread_niceness() -> int:
    """The calling thread's niceness (0 where the platform has none)."""
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) if IS_LINUX else 0
