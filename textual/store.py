"""`MemoryStore`: a record store plus per-tenant derived indexes, and the only way to get a tenant handle.

Rules: open a store once per path per process (LMDB's rule) and after any fork. The record store
(`textual.record_store`: LMDB by default, PostgreSQL with `store_url`) is the source of truth; this process's
indexes are caches of it. A write returns only after the record store committed it.

Following the change log: each loaded index records the seq it reflects (`TenantIndex.seq`). This process's own
writes advance it; changes other nodes commit to a shared store reach `_note_change` (the store's `watch`), and the
next use of the index applies the log entries after its seq (`_catch_up`) before answering, or rebuilds the index
when the log no longer reaches back that far. Applying an entry reads the memory as it is now, so applying one
twice is harmless. FAISS indexes are saved in `index_dir` with the seq they reflect (on `release` and `close`); at
the next load a saved index is caught up from the log when the log still covers its seq, else rebuilt. When the
record store cannot be reached, a loaded index answers as it is (catching up later); loading one, and every write,
raise `StoreUnavailableError`.

Tiers: only hot and warm memories are loaded into a tenant's index; a write that moves a memory to cold or archived
takes it out, one that moves it back puts it in again with its stored vector. Cold memories are read from the record
store into a throwaway index when a search needs them (`cold_index`).

Residency: a tenant's index is loaded on first use and stays in RAM until `release` (the tier scheduler's demotion)
or `close`; a released index loses nothing (the record store is the source of truth; its FAISS file is saved on
release, so the next use loads the file instead of rebuilding). `residency()` reports per tenant what the
scheduler ranks by: uses (`for_tenant` calls, i.e. requests), last use, estimated resident bytes and the seconds
the last load took.

Locking: each tenant has its own lock (`tenant_lock`); a tenant's index, and its records as this process writes
them, change only under it, so one tenant's bulk write or index build never stalls another tenant's search. The
store-wide `_lock` guards only the maps of indexes, locks and seen seqs, and is never held across I/O, embedding or
a tenant's lock. Embedding happens before a tenant's lock is taken wherever the text to embed does not depend on the
stored state.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from textual.consolidation import ConsolidationPolicy
from textual.curator import LifecycleReport
from textual.embedder import Embedder
from textual.errors import EmbeddingModelMismatchError, StoreUnavailableError
from textual.history import Change, ChangeKind, Version
from textual.images import DEFAULT_MAX_IMAGE_BYTES
from textual.lexical_index import Analyzer
from textual.lifecycle import LifecyclePolicy
from textual.memory import (DEFAULT_MAX_CONTENT_CHARS, RESIDENT_TIERS, LifecycleTier, Memory, check_identifier,
                            peer_key)
from textual.lmdb_store import DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE, LmdbStore
from textual.log_follow import CATCH_UP_BATCH, differs, saved_caught_up
from textual.record_store import Container, GrowthCheck, LogEntry, RecordStore, net_changes
from textual.retriever import SearchSettings
from textual.tenant_index import TenantIndex, build_tenant_index
from textual.vector_index import DEFAULT_HNSW_THRESHOLD, HNSW_NEIGHBORS, ReplicaFactory, VectorIndex, replica_for

# Admission of new memories, given by the process serving the store (its quota policy): called with the tenant, its
# stored (memories, bytes), the contents of the memories about to be added and the embedding dimension, before they
# are embedded; it raises to refuse the write, and its error reaches the caller unchanged.
WriteAdmission = Callable[[str, tuple[int, int], Sequence[str], int], None]
# Its second check, exact: called with the tenant, its stored (memories, bytes) and the bytes a change the tenant makes
# adds (records, vectors and history versions: an update adds its version), inside the write's transaction; it raises
# to refuse, and nothing is written. Changes of the background lifecycle pass and access bookkeeping are not asked.
GrowthAdmission = GrowthCheck

# Estimated RAM of one resident memory besides its vector and text: the Memory object and its metadata, the id in
# several dicts and sets, its BM25 postings. An estimate for ranking and budgets, not a measurement.
PER_MEMORY_BYTES = 1024
log = logging.getLogger("memsidecar.memory")


@dataclass(frozen=True)
class TenantResidency:
    """One tenant's in-memory index as the tier scheduler sees it.

    `resident_bytes` estimates the index's RAM (vectors exactly, content, `PER_MEMORY_BYTES` per memory); for an
    index not loaded now, the figure it had when last loaded. `build_s`: seconds its last load took (None: never
    loaded in this process). `uses` counts `for_tenant` calls; `last_used_at` is on the store's clock."""

    tenant: str
    is_loaded: bool
    resident_bytes: int
    memories: int
    uses: int
    last_used_at: float
    build_s: float | None


@dataclass
class _Activity:
    uses: int = 0
    last_used_at: float = 0.0
    build_s: float | None = None
    resident_bytes: int = 0
    memories: int = 0


class MemoryStore:
    """All tenants' memories under one directory. Use `for_tenant` to read or write any of them."""

    def __init__(self, db: RecordStore, embedder: Embedder, index_dir: Path, hnsw_threshold: int,
                 max_content_chars: int, settings: SearchSettings, clock: Callable[[], float],
                 track_access: bool, lifecycle: LifecyclePolicy | None = None,
                 consolidation: ConsolidationPolicy | None = None,
                 max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES, replica: ReplicaFactory | None = None) -> None:
        self.db = db
        self.embedder = embedder
        self.analyzer = Analyzer()
        self.index_dir = index_dir
        self.hnsw_threshold = hnsw_threshold
        self.max_content_chars = max_content_chars
        self.settings = settings
        self.clock = clock
        self.track_access = track_access
        self.lifecycle = lifecycle or LifecyclePolicy()
        self.consolidation = consolidation or ConsolidationPolicy()
        self.max_image_bytes = max_image_bytes
        self.replica = replica  # where resident indexes also live for searching (a GPU), if anywhere
        self.admission: WriteAdmission | None = None  # set by the server that enforces quotas; None admits all
        self.growth_admission: GrowthAdmission | None = None  # the same server's exact check at commit
        self._lock = threading.Lock()
        self._tenant_locks: dict[str, threading.RLock] = {}
        self._indexes: dict[str, TenantIndex] = {}
        self._activity: dict[str, _Activity] = {}
        self._activity_lock = threading.Lock()  # never held across I/O: `for_tenant` runs on the event loop
        self._seen: dict[str, int] = {}  # tenant -> the newest seq the record store reported (under `_lock`)

    @classmethod
    def open(cls, path: str | Path, *, embedder: Embedder | None = None, model_path: str | Path | None = None,
             hnsw_threshold: int = DEFAULT_HNSW_THRESHOLD, max_content_chars: int = DEFAULT_MAX_CONTENT_CHARS,
             settings: SearchSettings | None = None, clock: Callable[[], float] = time.time,
             track_access: bool = True, map_size: int = DEFAULT_MAP_SIZE,
             max_map_size: int = DEFAULT_MAX_MAP_SIZE, lifecycle: LifecyclePolicy | None = None,
             consolidation: ConsolidationPolicy | None = None,
             max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES, vector_device: str = "auto",
             store_url: str | None = None) -> "MemoryStore":
        """Open or create the store in directory `path`; loads the embedding model unless `embedder` is given.
        The records live in LMDB under `path`, or with `store_url` in that PostgreSQL database (shared with other
        nodes, followed through its change log; `path` then holds this node's FAISS files only).
        `vector_device` ("auto", "cpu", "gpu") says where resident memories are searched (see `replica_for`); the
        LMDB map starts at `map_size` bytes and grows up to `max_map_size` (then writes raise StoreFullError)."""
        path = Path(path)
        replica = replica_for(vector_device)
        embedder = embedder if embedder is not None else Embedder.open(model_path)
        db = _open_records(path, store_url, map_size, max_map_size)
        try:
            recorded = db.embedding_model()
            if recorded is None:  # a new store, or one from before the record: its vectors are taken as this model's
                db.set_embedding_model(embedder.identity)
            elif recorded != embedder.identity:
                raise EmbeddingModelMismatchError(_describe(path, store_url), recorded, embedder.identity)
        except BaseException:
            db.close()
            raise
        store = cls(db, embedder, path / "faiss", hnsw_threshold, max_content_chars, settings or SearchSettings(),
                    clock, track_access, lifecycle, consolidation, max_image_bytes, replica)
        db.watch(store._note_change)
        return store

    def for_tenant(self, tenant: str):
        """A handle whose every read and write is confined to `tenant`; counts as one use of its index."""
        handle = self._handle(tenant)
        with self._activity_lock:
            activity = self._activity.setdefault(handle.tenant, _Activity())
            activity.uses += 1
            activity.last_used_at = self.clock()
        return handle

    def _handle(self, tenant: str):
        from textual.tenant_memory import TenantMemory

        return TenantMemory(self, check_identifier("tenant", tenant))

    def tenant_lock(self, tenant: str) -> threading.RLock:
        """The lock under which `tenant`'s memories and index change (re-entrant; see "Locking" above)."""
        with self._lock:
            lock = self._tenant_locks.get(tenant)
            if lock is None:
                lock = self._tenant_locks[tenant] = threading.RLock()
            return lock

    def usage(self, tenant: str) -> tuple[int, int]:
        """(memories, bytes) `tenant` stores, all tiers, as the record store counts them; read in O(1)."""
        return self.db.usage(tenant)

    def outage(self) -> str | None:
        """Why the record store cannot be reached now; None while it can (LMDB always can)."""
        return self.db.outage()

    def admit(self, tenant: str, contents: Sequence[str]) -> None:
        """Ask `admission` whether `tenant` may add memories holding `contents` (raises to refuse). Checked before
        embedding, without the tenant's lock: concurrent writes of one tenant can overshoot by what they carry."""
        if self.admission is not None and contents:
            self.admission(tenant, self.db.usage(tenant), list(contents), self.embedder.dim)

    def claim_lifecycle(self, interval_s: float) -> bool:
        """Whether this node runs the lifecycle pass of this `interval_s` (with several nodes on one PostgreSQL
        store, one of them does; see `RecordStore.claim_pass`)."""
        return self.db.claim_pass("lifecycle", interval_s)

    def run_lifecycle(self, now: float | None = None) -> dict[str, LifecycleReport]:
        """Run every tenant's lifecycle (see `TenantMemory.run_lifecycle`); tenant -> report. For a background job,
        so not counted as uses."""
        return {tenant: self._handle(tenant).run_lifecycle(now) for tenant in self.db.tenants()}

    def resident_usage(self) -> dict[str, int]:
        """What the in-memory indexes hold across tenants: tenants loaded, resident memories, vector bytes."""
        with self._lock:
            indexes = list(self._indexes.values())
        memories = sum(len(index.memories) for index in indexes)
        vector_bytes = sum(len(index.vectors) * index.vectors.dim * 4 for index in indexes)
        return {"tenants_loaded": len(indexes), "memories": memories, "vector_bytes": vector_bytes}

    def residency(self) -> list[TenantResidency]:
        """Every tenant used or loaded in this process, by tenant id (see `TenantResidency`)."""
        with self._lock:
            loaded = dict(self._indexes)
        for tenant, index in loaded.items():
            with self.tenant_lock(tenant):
                self._note_resident(tenant, index)
        with self._activity_lock:
            return [TenantResidency(tenant, tenant in loaded, a.resident_bytes, a.memories, a.uses, a.last_used_at,
                                    a.build_s) for tenant, a in sorted(self._activity.items())]

    def release(self, tenant: str) -> int:
        """Drop the tenant's index from RAM (saving its FAISS file first when fresh); the next use loads it again.
        Returns the estimated bytes released (0 when it was not loaded)."""
        with self.tenant_lock(tenant):
            index = self._loaded(tenant)
            if index is None:
                return 0
            if not index.vectors_stale:  # a failed save raises with the index still loaded
                index.vectors.save(self._index_path(tenant), index.seq)
            with self._lock:
                del self._indexes[tenant]
            return self._note_resident(tenant, index)

    def _note_resident(self, tenant: str, index: TenantIndex) -> int:
        size = index_bytes(index)
        with self._activity_lock:
            activity = self._activity.setdefault(tenant, _Activity())
            activity.resident_bytes, activity.memories = size, len(index.memories)
        return size

    def close(self) -> None:
        """Save fresh FAISS indexes for the next open, then close the record store."""
        with self._lock:
            tenants = list(self._indexes)
        for tenant in tenants:
            with self.tenant_lock(tenant):
                index = self._loaded(tenant)
                if index is not None and not index.vectors_stale:
                    index.vectors.save(self._index_path(tenant), index.seq)
        with self._lock:
            self._indexes.clear()
        self.db.close()

    def __enter__(self) -> "MemoryStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def index(self, tenant: str) -> TenantIndex:
        """The tenant's up-to-date index: loaded on first use, caught up with the change log, its vectors rebuilt
        after removals."""
        with self.tenant_lock(tenant):
            index = self._loaded(tenant)
            index = self._load(tenant) if index is None else self._catch_up(tenant, index)
            if index.vectors_stale:
                index.vectors = self._rebuild_vectors(tenant, list(index.memories))
                index.vectors_stale = False
            return index

    def _load(self, tenant: str) -> TenantIndex:
        started = time.perf_counter()
        seq = self.db.version(tenant)  # read first: what changes while the records are read is caught up later
        stored = self.db.memories(tenant)
        resident = [m for m in stored if m.tier in RESIDENT_TIERS]
        vectors = self._load_vectors(tenant, [m.id for m in resident], seq)
        cold = [m for m in stored if m.tier is LifecycleTier.COLD]
        index = build_tenant_index(resident, vectors, self.analyzer, cold)
        index.seq = seq
        with self._lock:
            self._indexes[tenant] = index
        with self._activity_lock:
            self._activity.setdefault(tenant, _Activity()).build_s = time.perf_counter() - started
        return index

    def _note_change(self, tenant: str, seq: int) -> None:
        """The record store reports that `tenant` changed up to `seq` (from its watcher thread)."""
        with self._lock:
            if seq > self._seen.get(tenant, 0):
                self._seen[tenant] = seq

    def _catch_up(self, tenant: str, index: TenantIndex) -> TenantIndex:
        """`index` with the change-log entries after its seq applied (see the module docstring); while the record
        store is unreachable, `index` as it is."""
        with self._lock:
            if self._seen.get(tenant, 0) <= index.seq:
                return index
        try:
            while True:
                entries = self.db.changes(tenant, index.seq, CATCH_UP_BATCH)
                if entries is None:
                    with self._lock:
                        del self._indexes[tenant]
                    return self._load(tenant)
                if not entries:
                    return index
                self._apply(tenant, index, entries)
        except StoreUnavailableError as exc:
            log.warning("tenant %s: memory index at seq %d answers without the newest changes: %s", tenant,
                        index.seq, exc)
            return index

    def _apply(self, tenant: str, index: TenantIndex, entries: Sequence[LogEntry]) -> None:
        """Bring `index` to the state after `entries`: each memory they touch placed as the record store holds it
        now, or removed when it is gone."""
        touched = net_changes(entries)
        found = {memory.id: (memory, vector) for memory, vector in self.db.get_many(tenant, touched)}
        memories, rows = [], []
        for memory_id, moved in touched.items():
            if memory_id not in found:
                index.cold.pop(memory_id, None)
                if memory_id in index.memories:
                    index.remove(memory_id)
                continue
            memory, vector = found[memory_id]
            memories.append(memory)
            rows.append(vector if memory_id not in index.memories or (moved and differs(index, memory_id, vector))
                        else None)
        self._place(tenant, index, memories, rows)
        index.seq = entries[-1].seq

    def _advance(self, tenant: str, index: TenantIndex, changed: int) -> None:
        """After this process wrote `changed` log entries of `tenant` and placed them in `index`: move its seq past
        them when nothing else came in between, else leave the gap to `_catch_up`."""
        try:
            seq = self.db.version(tenant)
        except StoreUnavailableError:
            seq = index.seq + changed + 1  # unknown: catch up (and re-apply this write, harmlessly) later
        if seq == index.seq + changed:
            index.seq = seq
        else:
            self._note_change(tenant, seq)

    def write(self, tenant: str, memories: Sequence[Memory],
              vectors: np.ndarray | Sequence[np.ndarray | None] | None,
              why: ChangeKind | Sequence[ChangeKind | None] | None = None, who: str | None = None,
              histories: Mapping[str, Sequence[Version]] | None = None) -> None:
        """Durably store memories (new or changed), with a vector for each (None: keep the stored one), then mirror
        them in the index. `why` (one kind for all, or one per memory; None: not a change worth a version, as an
        access is) records a version of each changed memory by `who` (default: the tenant) in the same
        transaction; `histories` carries an import's versions (see `LmdbStore.put_many`). A change the tenant makes
        (a version by the tenant) that grows its stored bytes is refused by `growth_admission` when it does not fit."""
        kinds = list(why) if why is not None and not isinstance(why, ChangeKind) else [why] * len(memories)
        at = self.clock()
        changes = [None if kind is None else Change(who or tenant, kind, at) for kind in kinds]
        by_tenant = (who or tenant) == tenant and any(change is not None for change in changes)
        with self.tenant_lock(tenant):
            index = self.index(tenant)
            rows = [None] * len(memories) if vectors is None else list(vectors)
            self.db.put_many(zip(memories, rows), changes, histories, self.growth_admission if by_tenant else None)
            self._place(tenant, index, memories, rows)
            self._advance(tenant, index, len(memories))

    def remove(self, tenant: str, memory_ids: Sequence[str], container: Container | None = None) -> list[str]:
        """Delete memories for good in one transaction (with `container`, the knowledge base or space they were
        in, see `RecordStore.delete_many`); returns the ids that existed."""
        with self.tenant_lock(tenant):
            index = self.index(tenant)
            removed = self.db.delete_many(tenant, memory_ids, container)
            for memory_id in removed:
                index.cold.pop(memory_id, None)
                if memory_id in index.memories:
                    index.remove(memory_id)
            self._advance(tenant, index, len(removed))
            return removed

    def cold_index(self, tenant: str) -> TenantIndex:
        """A throwaway index over the tenant's cold memories, read from the record store."""
        with self.tenant_lock(tenant):
            found = self.db.get_many(tenant, sorted(self.index(tenant).cold))
            matrix = np.stack([v for _, v in found]) if found else np.zeros((0, self.embedder.dim), np.float32)
            vectors = VectorIndex.build([m.id for m, _ in found], matrix, self.embedder.dim, self.hnsw_threshold)
            return build_tenant_index([m for m, _ in found], vectors, self.analyzer)

    def _loaded(self, tenant: str) -> TenantIndex | None:
        with self._lock:
            return self._indexes.get(tenant)

    def _place(self, tenant: str, index: TenantIndex, memories: Sequence[Memory], rows: list) -> None:
        """Mirror written memories: resident tiers in the index, cold ids aside, archived in neither."""
        entering, entering_rows = [], []
        for memory, row in zip(memories, rows):
            index.cold.pop(memory.id, None)
            if memory.tier not in RESIDENT_TIERS:
                if memory.id in index.memories:
                    index.remove(memory.id)
                if memory.tier is LifecycleTier.COLD:
                    index.cold[memory.id] = peer_key(memory)
            elif memory.id in index.memories:
                index.add([memory], None)
                index.vectors_stale = index.vectors_stale or row is not None
            else:
                entering.append(memory)
                entering_rows.append(row if row is not None else self.db.get_vector(tenant, memory.id))
        if entering:
            index.add(entering, np.stack(entering_rows))

    def _load_vectors(self, tenant: str, ids: list[str], seq: int) -> VectorIndex:
        """The vectors of `ids`: the saved FAISS index caught up from its seq to `seq` when it can be, else
        rebuilt from the stored vectors."""
        saved = VectorIndex.load_saved(self._index_path(tenant), self.hnsw_threshold, self.replica)
        caught = None if saved is None else saved_caught_up(self.db, tenant, *saved, ids, seq)
        return caught if caught is not None else self._rebuild_vectors(tenant, ids)

    def _rebuild_vectors(self, tenant: str, ids: list[str]) -> VectorIndex:
        wanted = set(ids)
        stored = {key: vector for key, vector in self.db.vectors(tenant).items() if key in wanted}
        ids = list(stored)
        matrix = np.stack([stored[i] for i in ids]) if ids else np.zeros((0, self.embedder.dim), np.float32)
        return VectorIndex.build(ids, matrix, self.embedder.dim, self.hnsw_threshold, self.replica)

    def _index_path(self, tenant: str) -> Path:
        return self.index_dir / tenant


def _open_records(path: Path, store_url: str | None, map_size: int, max_map_size: int) -> RecordStore:
    if store_url is not None:
        from textual.pg_store import PgStore  # psycopg only where a PostgreSQL store is used

        return PgStore.open(store_url)
    return LmdbStore.open(path / "lmdb", map_size=map_size, max_map_size=max_map_size)


def _describe(path: Path, store_url: str | None) -> str:
    if store_url is None:
        return str(path)
    from memcore.postgres import redacted

    return redacted(store_url)


def index_bytes(index: TenantIndex) -> int:
    """Estimated RAM of a tenant index: float32 vectors (plus HNSW links), content, `PER_MEMORY_BYTES` each."""
    per_vector = index.vectors.dim * 4 + (HNSW_NEIGHBORS * 2 * 4 if index.vectors.is_hnsw else 0)
    text = sum(len(memory.content) for memory in index.memories.values())
    return len(index.vectors) * per_vector + text + PER_MEMORY_BYTES * len(index.memories)
