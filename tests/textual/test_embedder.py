"""The embedder's fairness rule, on a fake model that records what it encodes: bulk requests of two owners are
embedded slice by slice in turn, a small request never queues behind them, and the bulk worker runs niced."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from memcore.os_priority import IS_LINUX, thread_niceness
from textual.embedder import Embedder


class RecordingModel:
    """Encodes a text to a one-hot-ish unit vector; records each call's first text and the thread's niceness.
    The first bulk call waits for `release`, so a test can queue more work behind it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.release = threading.Event()
        self.busy = threading.Event()

    def get_sentence_embedding_dimension(self) -> int:
        return 4

    def encode(self, texts, **_) -> np.ndarray:
        self.calls.append((texts[0], thread_niceness()))
        if len(texts) > 1 and not self.release.is_set():
            self.busy.set()
            self.release.wait(10)
        return np.array([[1.0, 0, 0, 0]] * len(texts), dtype=np.float32)


def test_two_owners_bulk_writes_are_embedded_in_turns_and_a_query_does_not_wait():
    model = RecordingModel()
    embedder = Embedder(model, batch_size=10, bulk_nice=3)
    results: dict[str, np.ndarray] = {}

    def bulk(owner: str, count: int) -> None:
        results[owner] = embedder.embed([f"{owner}{i}" for i in range(count)], owner=owner)

    a = threading.Thread(target=bulk, args=("a", 50))
    a.start()
    assert model.busy.wait(10)  # a's first slice is being embedded; its other four wait
    b = threading.Thread(target=bulk, args=("b", 20))
    b.start()
    time.sleep(0.2)  # b's two slices are queued behind a's
    started = time.perf_counter()
    query = embedder.embed(["what about b?"], owner="b")
    assert time.perf_counter() - started < 1.0 and query.shape == (1, 4)  # while a's slice still holds the worker
    model.release.set()
    a.join(10)
    b.join(10)
    bulk_calls = [text for text, _ in model.calls if text != "what about b?"]
    assert bulk_calls == ["a0", "a10", "b0", "a20", "b10", "a30", "a40"]
    assert results["a"].shape == (50, 4) and results["b"].shape == (20, 4)
    if IS_LINUX:
        niceness = dict(model.calls)
        assert niceness["a10"] == niceness["what about b?"] + 3  # the bulk worker runs lower than the caller


def test_an_encoding_error_reaches_the_bulk_caller():
    class Failing(RecordingModel):
        def encode(self, texts, **_):
            raise RuntimeError("model broke")

    embedder = Embedder(Failing(), batch_size=4)
    with pytest.raises(RuntimeError, match="model broke"):
        embedder.embed([f"t{i}" for i in range(20)], owner="a")


def test_a_small_request_is_encoded_on_one_torch_thread_and_the_callers_setting_is_kept():
    torch = pytest.importorskip("torch")

    class ThreadCounting(RecordingModel):
        def encode(self, texts, **options):
            self.threads = torch.get_num_threads()
            return super().encode(texts, **options)

    model = ThreadCounting()
    embedder = Embedder(model)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        embedder.embed(["what is my cat called?"])
        assert model.threads == 1  # one core: a layer never waits for a second, busy one
        assert torch.get_num_threads() == 2  # the caller's own torch work keeps its threads
    finally:
        torch.set_num_threads(previous)
