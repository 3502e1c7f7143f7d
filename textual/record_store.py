"""The record store: where memories, their vectors, histories, knowledge bases and spaces live durably.

Two implementations keep this one contract: `textual.lmdb_store.LmdbStore` (one node, files beside the process, the
default) and `textual.pg_store.PgStore` (PostgreSQL, shared by several nodes). The rest of `textual/` holds a
`RecordStore` and never asks which one it has. The contract:
- Tenants are isolated: every method names its tenant and touches only that tenant's records.
- Durability: a write returns only once it is committed; a write that raises changed nothing. Every write that
  changes several rows (a batch of memories, a memory and its history, a delete with its versions) is one
  transaction.
- The change log: every memory a write stores or deletes gets the tenant's next change sequence number, in the
  writing transaction, so one tenant's seqs are 1, 2, 3, ... in commit order with no gap. `version(tenant)` is the
  newest seq (0 for a tenant never written). `changes(tenant, after)` lists the entries after a seq, oldest first,
  or None once the log no longer reaches back that far: it keeps the newest `LOG_KEEP` entries of each tenant. A
  reader holding an index built at seq S catches up by applying `changes(tenant, S)`; where that is None it rebuilds.
- Knowledge bases and spaces are not in the change log (no index derives from them).
- `watch` reports changes committed by other processes sharing the store; a store only this process writes never
  reports any. `outage` says why the store cannot be reached now (None while it can); an operation that cannot
  reach it raises `textual.errors.StoreUnavailableError` and changes nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Literal, Mapping, Protocol, Sequence

import numpy as np

from textual.history import Change, Version
from textual.memory import KnowledgeBase, Memory, Space

LOG_KEEP = 100_000  # change-log entries kept per tenant; a reader further behind rebuilds its index
Container = tuple[Literal["kb", "space"], str]  # a knowledge base or a shared space of the tenant, by id
ChangeListener = Callable[[str, int], None]  # (tenant, its newest seq), called from a background thread
# Asked inside a write before a tenant's stored bytes (records, vectors, history versions) grow: the tenant, its
# (memories, bytes) before the write, the bytes the write adds; it raises to refuse, and the write changes nothing.
GrowthCheck = Callable[[str, tuple[int, int], int], None]


class EntryKind(str, enum.Enum):
    """What a write did to one memory."""

    UPSERT = "upsert"  # the record was stored with a new vector (a new memory, or new content)
    RECORD = "record"  # the record was stored; its vector is the one stored before
    DELETE = "delete"  # the memory, its vector and its history are gone


@dataclass(frozen=True)
class LogEntry:
    """One entry of a tenant's change log."""

    seq: int
    memory_id: str
    kind: EntryKind


def net_changes(entries: Iterable[LogEntry]) -> dict[str, bool]:
    """memory id -> whether its vector may differ from before `entries` (an upsert or a delete among them), for
    each memory the entries touch, in order of their last entry. The stored record says what the memory is now."""
    touched: dict[str, bool] = {}
    for entry in entries:
        moved = touched.pop(entry.memory_id, False) or entry.kind is not EntryKind.RECORD
        touched[entry.memory_id] = moved
    return touched


class RecordStore(Protocol):
    """Memories, embeddings, histories, knowledge bases and spaces of all tenants (see the module docstring)."""

    def close(self) -> None: ...

    def embedding_model(self) -> str | None:
        """The identity of the model every stored vector came from; None for a store that never recorded one."""

    def set_embedding_model(self, identity: str) -> None: ...

    def put_many(self, items: Iterable[tuple[Memory, np.ndarray | None]],
                 changes: Sequence[Change | None] | None = None,
                 histories: Mapping[str, Sequence[Version]] | None = None,
                 check_growth: GrowthCheck | None = None) -> None:
        """Store memories (and vectors, where given; None keeps the stored one) in one transaction, one log entry
        each. A memory whose `changes` entry is set gains a version recording the change (`textual.history`);
        `histories` (memory id -> versions, an import's) replaces those memories' histories first. `usage` counts
        the versions' bytes with the records'; a tenant whose bytes the write grows is asked of `check_growth`."""

    def delete_many(self, tenant: str, memory_ids: Iterable[str], container: Container | None = None) -> list[str]:
        """Remove memories with their vectors and histories in one transaction; returns the ids that were there.
        With `container` (kind, id), that knowledge base's ("kb") or space's ("space") own record goes in the same
        transaction: a container is deleted with its memories or not at all."""

    def put_kb(self, kb: KnowledgeBase) -> None: ...

    def get_kb(self, tenant: str, kb_id: str) -> KnowledgeBase | None: ...

    def kbs(self, tenant: str) -> list[KnowledgeBase]:
        """All of `tenant`'s knowledge bases, in id order."""

    def put_space(self, space: Space) -> None: ...

    def get_space(self, tenant: str, space_id: str) -> Space | None: ...

    def spaces(self, tenant: str) -> list[Space]:
        """All of `tenant`'s shared memory spaces, in id order."""

    def get(self, tenant: str, memory_id: str) -> Memory | None: ...

    def get_vector(self, tenant: str, memory_id: str) -> np.ndarray | None: ...

    def get_many(self, tenant: str, memory_ids: Iterable[str]) -> list[tuple[Memory, np.ndarray]]:
        """(memory, vector) for each id that has both, read at one point in time."""

    def memories(self, tenant: str) -> list[Memory]:
        """All of `tenant`'s memories, in id order (bytewise)."""

    def each_memory(self, tenant: str, batch: int = 512) -> Iterator[Memory]:
        """All of `tenant`'s memories in id order, read `batch` at a time (a long scan never blocks writers)."""

    def vectors(self, tenant: str) -> dict[str, np.ndarray]:
        """All of `tenant`'s vectors by memory id."""

    def history(self, tenant: str, memory_id: str, after: int = 0, limit: int = 100) -> list[Version]:
        """At most `limit` versions of the memory with a seq above `after`, oldest first."""

    def version(self, tenant: str) -> int:
        """The tenant's newest change seq; 0 for a tenant never written."""

    def changes(self, tenant: str, after: int, limit: int = 1000) -> list[LogEntry] | None:
        """At most `limit` log entries with a seq above `after`, oldest first; None when the log no longer holds
        the entry right after `after` (trimmed: rebuild instead)."""

    def usage(self, tenant: str) -> tuple[int, int]:
        """(memories, bytes) `tenant` holds, all tiers (`textual.tally`); read in O(1)."""

    def users(self, tenant: str) -> list[tuple[str, int, dict[str, int], float]]:
        """(user, count, count by tier, newest updated_at) of each of `tenant`'s users, by user id."""

    def memories_by_time(self, tenant: str, since: float | None = None, batch: int = 256) -> Iterator[Memory]:
        """`tenant`'s memories in `textual.context.time_order`, from `since` on, read `batch` at a time."""

    def tenants(self) -> list[str]:
        """Every tenant ever written, by id."""

    def disk_bytes(self) -> int:
        """Bytes the store keeps on this node's disk (the tier scheduler's disk budget counts them); 0 for a store
        on a database server."""

    def watch(self, listener: ChangeListener) -> None:
        """Call `listener(tenant, seq)` when another process commits changes (see the module docstring)."""

    def outage(self) -> str | None:
        """Why the store cannot be reached now; None while it can."""

    def claim_pass(self, name: str, interval_s: float) -> bool:
        """Whether this node runs the periodic job `name` (the memory lifecycle) now: True at most once per
        `interval_s` among every node on the store (claims are exclusive; a pass that outlasts its interval may still
        overlap the next node's); the claim is recorded, so the
        other nodes skip this interval. A store only one node opens (LMDB) always says True."""
