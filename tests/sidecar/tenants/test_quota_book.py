"""The quota book against a real memory store (LMDB files, the MiniLM embedder): `memory_bytes` covers every
memory's history versions, so updating one memory again and again ends in a 413 at the limit instead of growing the
shared map without bound."""

from __future__ import annotations

import pytest

from sidecar.tenants.quota_book import QuotaBook
from sidecar.tenants.quotas import QuotaExceeded, QuotaLimits, Resource
from textual.lifecycle import DAY_S
from textual.store import MemoryStore

LIMIT = 120_000


@pytest.fixture
def guarded(tmp_path, embedder):
    """A store whose writes the book admits, as `sidecar.http.assembly.quota_book` wires them."""
    store = MemoryStore.open(tmp_path / "store", embedder=embedder)
    book = QuotaBook(QuotaLimits(memory_bytes=LIMIT), {Resource.MEMORY_BYTES: lambda tenant: store.usage(tenant)[1]})
    store.admission = book.admit_memory_write
    store.growth_admission = book.admit_memory_growth
    yield store, book
    store.close()


def test_updating_one_memory_again_and_again_is_refused_at_the_limit(guarded):
    store, book = guarded
    handle = store.for_tenant("t")
    memory = handle.add("The kiln schedule", user="u")
    updates = 0
    with pytest.raises(QuotaExceeded) as refused:
        for updates in range(1, 100):  # each update keeps the previous 10 kB text in its version
            handle.update(memory.id, content=f"Schedule {updates}: " + "ramp to 1000 C, hold. " * 450)
    assert refused.value.resource is Resource.MEMORY_BYTES and refused.value.status == 413
    assert f"limit {LIMIT}," in str(refused.value) and book.refusals[("t", "memory_bytes")] == 1
    assert 5 < updates < 15 and store.usage("t")[1] <= LIMIT  # the versions filled it, not the one record
    assert len(handle.history(memory.id, limit=1000)) == updates  # the creation and the admitted updates only
    assert handle.get(memory.id).content.startswith(f"Schedule {updates - 1}:")  # the refused one wrote nothing
    assert book.report("t")["usage"]["memory_bytes"] == store.usage("t")[1]

    assert store.for_tenant("other").add("Another tenant still writes", user="u").content  # its own quota
    handle.run_lifecycle(store.clock() + 400 * DAY_S)  # the background pass is never refused: it moves the tier
    assert handle.get(memory.id).tier.value != "hot"
    handle.delete(memory.id)  # deleting a memory frees its versions too
    assert store.usage("t") == (0, 0)
    assert handle.add("Room again", user="u").content == "Room again"


def test_an_import_may_bring_the_memories_the_quota_has_room_for_and_twice_its_bytes():
    book = QuotaBook(QuotaLimits(memories=10, memory_bytes=1000))
    assert book.import_room((4, 300)) == (6, 1400)
    assert book.import_room((12, 2000)) == (0, 0)  # over its quota already: no room, never negative
    assert QuotaBook(QuotaLimits(memories=0, memory_bytes=0)).import_room((4, 300)) == (None, None)
