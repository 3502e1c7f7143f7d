"""Fixtures for textual memory: stores in tmp_path (the real MiniLM embedder comes from the root conftest)."""

from __future__ import annotations

import pytest

from textual.lifecycle import DAY_S, LifecyclePolicy
from textual.store import MemoryStore


@pytest.fixture
def store(tmp_path, embedder):
    opened = MemoryStore.open(tmp_path / "store", embedder=embedder)
    yield opened
    opened.close()


class Clock:
    """A settable clock for stores whose lifecycle a test drives through time."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def clocked_store(tmp_path, embedder, clock):
    opened = MemoryStore.open(tmp_path / "clocked", embedder=embedder, clock=clock,
                              lifecycle=LifecyclePolicy(half_life_s=10 * DAY_S, retention_s=30 * DAY_S))
    yield opened
    opened.close()
