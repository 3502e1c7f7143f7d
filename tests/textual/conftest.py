"""Fixtures for textual memory: the real MiniLM model, loaded once per session, and stores in tmp_path."""

from __future__ import annotations

import pytest

from textual.embedder import Embedder
from textual.store import MemoryStore


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder.open()


@pytest.fixture
def store(tmp_path, embedder):
    opened = MemoryStore.open(tmp_path / "store", embedder=embedder)
    yield opened
    opened.close()
