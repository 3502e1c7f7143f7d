"""Bringing a cached vector index up to date from the record store's change log (`textual.record_store`).

FAISS cannot forget a row, so a saved index is reusable only when every row it holds is still wanted with the same
vector: then the memories added since its seq are appended to it. Anything else (a row that left the index, a
vector that changed, a log that no longer reaches back to its seq) means a rebuild from the stored vectors, which
`MemoryStore` does. `MemoryStore` applies the log to loaded indexes; this module holds the checks it shares.
"""

from __future__ import annotations

import numpy as np

from textual.record_store import LogEntry, RecordStore, net_changes
from textual.tenant_index import TenantIndex
from textual.vector_index import VectorIndex

CATCH_UP_BATCH = 1000  # change-log entries read at a time


def saved_caught_up(db: RecordStore, tenant: str, saved: VectorIndex, saved_seq: int, ids: list[str],
                    seq: int) -> VectorIndex | None:
    """`saved` (built at `saved_seq`) holding exactly the vectors of `ids` at `seq`; None when it cannot (see the
    module docstring)."""
    if saved_seq > seq:  # saved from a newer state than the store's (a restored database)
        return None
    entries: list[LogEntry] = []
    while saved_seq + len(entries) < seq:
        more = db.changes(tenant, saved_seq + len(entries), CATCH_UP_BATCH)
        if not more:
            return None
        entries += more
    wanted, held = set(ids), set(saved.ids)
    moved = [memory_id for memory_id, is_moved in net_changes(entries).items() if is_moved and memory_id in held]
    if not held <= wanted or any(differs_from(saved, memory.id, vector)
                                 for memory, vector in db.get_many(tenant, moved)):
        return None
    missing = [memory_id for memory_id in ids if memory_id not in held]
    found = db.get_many(tenant, missing)
    if len(found) != len(missing):
        return None
    if found:
        saved.add([memory.id for memory, _ in found], np.stack([vector for _, vector in found]))
    return saved


def differs(index: TenantIndex, memory_id: str, vector: np.ndarray) -> bool:
    """Whether the loaded `index` lacks `vector` for the memory (a stale index may hold anything)."""
    return index.vectors_stale or differs_from(index.vectors, memory_id, vector)


def differs_from(vectors: VectorIndex, memory_id: str, vector: np.ndarray) -> bool:
    held = vectors.vectors_of([memory_id])
    return len(held) == 0 or not np.array_equal(held[0], vector)
