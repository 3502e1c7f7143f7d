"""Lowering a thread's OS priority: that thread only, and the threads it starts inherit it (Linux)."""

from __future__ import annotations

import threading

import pytest

from memcore.os_priority import IS_LINUX, lower_thread_priority, thread_niceness

pytestmark = pytest.mark.skipif(not IS_LINUX, reason="per-thread niceness is Linux's")


def test_a_niced_thread_and_its_children_run_lower_while_the_caller_does_not():
    before = thread_niceness()
    seen: dict[str, int | bool] = {}

    def bulk() -> None:
        seen["lowered"] = lower_thread_priority(5)
        seen["bulk"] = thread_niceness()
        child = threading.Thread(target=lambda: seen.setdefault("child", thread_niceness()))
        child.start()
        child.join()

    thread = threading.Thread(target=bulk)
    thread.start()
    thread.join()
    assert seen == {"lowered": True, "bulk": min(19, before + 5), "child": min(19, before + 5)}
    assert thread_niceness() == before


def test_zero_asks_nothing_and_past_19_is_refused():
    assert lower_thread_priority(0) is False
    with pytest.raises(ValueError, match="from 0 to 19"):
        lower_thread_priority(20)
