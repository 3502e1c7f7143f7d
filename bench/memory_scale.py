"""Textual memory at scale: add throughput, index load and search latency with 10k to 1M memories in one tenant.

    python -m bench.memory_scale [--sizes 10000,100000,1000000] [--store lmdb|postgresql://...] [--queries 100]
                                 [--cache-dir DIR] [--dir DIR] [--json]

For each size, a fresh store (LMDB in a temporary directory, or the PostgreSQL record store at `--store`, a
throwaway database: the tenants `scale-<size>-<run>` are left there) with FAISS flat below the HNSW threshold, HNSW
above it, and BM25 over every memory. Memories are episodes (20 turns a session) written through
`MemoryStore.write` with precomputed vectors, `--batch` a call (one durable commit each): the vectors come from a
cache of MiniLM base vectors (`bench.scale_corpus` says how a million distinct memories are derived from them), so
the figures measure the store and the index, not the model. Queries are embedded by the real MiniLM, as in serving.
- `add_per_s`: memories stored (and indexed: FAISS, BM25 postings) per second, embedding excluded;
- `first_search_ms`: the first search after the load (builds the BM25 index);
- `search_ms_p50` / `search_ms_p95`: `--queries` searches (top 10, 1,000-token budget) with varied questions,
  query embedding included (`embed_ms_p50` is that part alone);
- `search_cpu_ms_p50` / `_p95`, `embed_cpu_ms_p50`: the CPU time (all threads) of the same calls, and
  `load_average`, the 1-minute load average around them: on a shared machine the wall times include waiting for
  a core, the CPU times do not;
- `search_after_add_ms_p50`: a search right after writing one memory (what chat does: every turn writes);
- `index_load_s`: after reopening the store, loading the tenant's index with its saved FAISS file;
- `index_build_s`: the same without the FAISS file, so the vector index is rebuilt from the stored vectors;
- `visibility_ms_p50` / `_p95` (PostgreSQL only): a memory written on one node until a second node, a store on the
  same database with its own index, finds it by search; the second node has loaded the tenant's index (one search)
  before the first sample, as a serving node has: its cold load is `index_load_s`, not visibility.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import faiss
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench import scale_corpus
from bench.scale_corpus import ScaleCorpus, question
from bench.stats import percentile
from memcore.postgres import check_url, redacted
from textual.embedder import Embedder
from textual.history import ChangeKind
from textual.memory import Memory, MemoryType
from textual.messages import ChatMessage, episode_metadata
from textual.store import MemoryStore
from textual.vector_index import DEFAULT_HNSW_THRESHOLD, HNSW_EF_SEARCH, HNSW_NEIGHBORS

console = Console(stderr=True)
SESSION_TURNS = 20
FIRST_TIME = 1_700_000_000.0
K, BUDGET_TOKENS = 10, 1000
AFTER_ADD_SEARCHES = 5
VISIBILITY_SAMPLES = 20
VISIBILITY_TIMEOUT_S = 10.0
LMDB_MAP_SIZE = 64 << 30
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "memsidecar" / "bench"


def store_kind(store: str) -> str:
    return "lmdb" if store == "lmdb" else "postgresql"


def open_store(store: str, directory: Path, embedder: Embedder, hnsw_threshold: int) -> MemoryStore:
    """A store in `directory` (its LMDB files, or only its FAISS files when the records are in PostgreSQL)."""
    options = {"embedder": embedder, "track_access": False, "hnsw_threshold": hnsw_threshold,
               "vector_device": "cpu"}
    if store == "lmdb":
        return MemoryStore.open(directory, map_size=LMDB_MAP_SIZE, **options)
    return MemoryStore.open(directory, store_url=store, **options)


def episodes(corpus: ScaleCorpus, tenant: str, start: int, count: int, now: float) -> list[Memory]:
    """Memories start..start+count-1 as `add_messages` stores turns (user "u", `SESSION_TURNS` turns a session)."""
    memories = []
    for i in range(start, start + count):
        speaker, text = corpus.turn(i)
        message = ChatMessage(speaker, text, FIRST_TIME + i, session=f"s{i // SESSION_TURNS}")
        memories.append(Memory(id=uuid.uuid4().hex, tenant=tenant, user="u", type=MemoryType.EPISODE, content=text,
                               metadata=episode_metadata(message, i % SESSION_TURNS), created_at=message.time,
                               updated_at=max(message.time, now), last_access_at=max(message.time, now)))
    return memories


def write(store: MemoryStore, corpus: ScaleCorpus, tenant: str, start: int, count: int) -> list[Memory]:
    memories = episodes(corpus, tenant, start, count, store.clock())
    store.write(tenant, memories, corpus.vectors_for(start, count), ChangeKind.CREATE)
    return memories


def load(store: MemoryStore, corpus: ScaleCorpus, tenant: str, size: int, batch: int) -> float:
    """Writes memories 0..size-1; returns the seconds it took."""
    started = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"adding {size:,} memories", total=size)
        for start in range(0, size, batch):
            write(store, corpus, tenant, start, min(batch, size - start))
            progress.advance(task, min(batch, size - start))
    return time.perf_counter() - started


def searches(store: MemoryStore, corpus: ScaleCorpus, tenant: str, size: int, queries: int,
             rng: random.Random) -> dict:
    memory = store.for_tenant(tenant)
    search = lambda: memory.search(question(rng), k=K, budget_tokens=BUDGET_TOKENS)  # noqa: E731
    first = timed_ms(search)[0]
    load = os.getloadavg()[0]
    times, cpu = zip(*(timed_ms(search) for _ in range(queries)))
    embedded, embedded_cpu = zip(*(timed_ms(lambda: store.embedder.embed([question(rng)])) for _ in range(queries)))
    after_add = []
    for i in range(AFTER_ADD_SEARCHES):
        write(store, corpus, tenant, size + i, 1)
        after_add.append(timed_ms(search)[0])
    is_hnsw = store.index(tenant).vectors.is_hnsw  # not `stats()`: it reads every memory from the store
    return {"vector_index": "hnsw" if is_hnsw else "flat", "first_search_ms": round(first, 1),
            "search_ms_p50": round(statistics.median(times), 2), "search_ms_p95": round(percentile(times, 0.95), 2),
            "search_cpu_ms_p50": round(statistics.median(cpu), 2),
            "search_cpu_ms_p95": round(percentile(cpu, 0.95), 2),
            "embed_ms_p50": round(statistics.median(embedded), 2),
            "embed_cpu_ms_p50": round(statistics.median(embedded_cpu), 2),
            "search_after_add_ms_p50": round(statistics.median(after_add), 1),
            "load_average": round((load + os.getloadavg()[0]) / 2, 1)}


def index_seconds(reopen: Callable[[], MemoryStore], tenant: str, drop_vectors: bool) -> float:
    """Seconds to load the tenant's index in a freshly opened store; with `drop_vectors`, its saved FAISS files are
    deleted first, so the vector index is rebuilt from the stored vectors."""
    with reopen() as store:
        if drop_vectors:
            shutil.rmtree(store.index_dir, ignore_errors=True)
        started = time.perf_counter()
        store.index(tenant)
        return time.perf_counter() - started


def visibility_ms(writer: MemoryStore, reader: MemoryStore, corpus: ScaleCorpus, tenant: str, start: int,
                  samples: int) -> list[float]:
    """Per sample, ms from writing one memory on `writer` until a search on `reader` returns it (a sample that is
    never found within `VISIBILITY_TIMEOUT_S` counts as that timeout). Each sample's text holds a word of its own:
    a corpus text would lose to its near-duplicates in the search's de-duplication."""
    found = []
    for i in range(start, start + samples):
        [memory] = episodes(corpus, tenant, i, 1, writer.clock())
        memory = dataclasses.replace(memory, content=f"visibility probe {uuid.uuid4().hex}")
        written_at = time.perf_counter()
        writer.write(tenant, [memory], corpus.vectors_for(i, 1), ChangeKind.CREATE)
        reading = reader.for_tenant(tenant)
        while time.perf_counter() - written_at < VISIBILITY_TIMEOUT_S:
            if any(hit.memory.id == memory.id for hit in reading.search(memory.content, k=K).hits):
                break
        found.append(1000 * min(time.perf_counter() - written_at, VISIBILITY_TIMEOUT_S))
    return found


def run_size(args: argparse.Namespace, corpus: ScaleCorpus, embedder: Embedder, size: int) -> dict:
    tenant = f"scale-{size}-{uuid.uuid4().hex[:8]}"
    with workspace(args.dir, size) as directory:
        reopen = lambda: open_store(args.store, directory / "node-a", embedder, args.hnsw_threshold)  # noqa: E731
        with reopen() as store:
            add_s = load(store, corpus, tenant, size, args.batch)
            row = {"store": store_kind(args.store), "memories": size, "add_per_s": round(size / add_s, 1),
                   **searches(store, corpus, tenant, size, args.queries, random.Random(size))}
            if args.store != "lmdb":
                with open_store(args.store, directory / "node-b", embedder, args.hnsw_threshold) as other:
                    other.for_tenant(tenant).search(question(random.Random(0)), k=K)  # B serves: index loaded
                    seen = visibility_ms(store, other, corpus, tenant, size + AFTER_ADD_SEARCHES, VISIBILITY_SAMPLES)
                row |= {"visibility_ms_p50": round(statistics.median(seen), 1),
                        "visibility_ms_p95": round(percentile(seen, 0.95), 1)}
        row["index_load_s"] = round(index_seconds(reopen, tenant, drop_vectors=False), 2)
        row["index_build_s"] = round(index_seconds(reopen, tenant, drop_vectors=True), 2)
    return row


@contextmanager
def workspace(keep: Path | None, size: int) -> Iterator[Path]:
    """`keep/<size>` (left in place, for a closer look afterwards), or a temporary directory removed at the end."""
    if keep is not None:
        (keep / str(size)).mkdir(parents=True, exist_ok=False)
        yield keep / str(size)
        return
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as directory:
        yield Path(directory)


def timed_ms(call: Callable[[], object]) -> tuple[float, float]:
    """(wall ms, CPU ms of this process, all its threads) of one call: on a shared machine the CPU time is what the
    call costs, the wall time also what it waited for a core."""
    started, cpu_started = time.perf_counter(), time.process_time()
    call()
    return 1000 * (time.perf_counter() - started), 1000 * (time.process_time() - cpu_started)


def settings(args: argparse.Namespace, corpus: ScaleCorpus) -> dict:
    """What a reader needs to reproduce the figures: the store (password hidden), sizes, query shape, index
    parameters and threads."""
    import torch

    return {"store": "lmdb" if args.store == "lmdb" else redacted(args.store), "sizes": args.sizes,
            "queries": args.queries, "batch": args.batch, "k": K, "budget_tokens": BUDGET_TOKENS,
            "hnsw_threshold": args.hnsw_threshold,
            "hnsw": {"neighbors": HNSW_NEIGHBORS, "ef_construction": 80, "ef_search": HNSW_EF_SEARCH},
            "threads": {"faiss": faiss.omp_get_max_threads(), "torch": torch.get_num_threads()},
            "vector_device": "cpu", "vectors": corpus.describe()}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated memory counts")
    parser.add_argument("--store", default="lmdb", type=lambda s: s if s == "lmdb" else check_url(s),
                        help="lmdb (a temporary directory) or postgresql://user:password@host:port/database")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--batch", type=int, default=2000, help="memories per write (one durable commit)")
    parser.add_argument("--hnsw-threshold", type=int, default=DEFAULT_HNSW_THRESHOLD)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="where the base vectors are kept")
    parser.add_argument("--dir", type=Path, help="build each store in DIR/<size> and keep it (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    args = parser.parse_args(argv)
    try:
        args.sizes = [int(size) for size in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes: comma-separated integers, got {args.sizes!r}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    embedder = Embedder.open()
    corpus = scale_corpus.load_or_build(args.cache_dir, embedder.identity, embedder.embed,
                                        on_build=lambda n: console.print(f"embedding {n:,} base turns once"))
    results = [run_size(args, corpus, embedder, size) for size in args.sizes]
    table = Table(title=f"textual memory at scale (one tenant, {store_kind(args.store)})")
    for key in results[0]:
        table.add_column(key)
    for row in results:
        table.add_row(*(str(value) for value in row.values()))
    console.print(table)
    if args.json:
        print(json.dumps({"bench": "memory_scale", "settings": settings(args, corpus), "results": results}))


if __name__ == "__main__":
    main()
