"""Search latency on a store `bench.memory_scale --dir` kept, without adding its memories again.

    python -m bench.scale_search DIR [--store lmdb|postgresql://...] [--queries 100] [--json]

DIR is one size's directory of a kept run (`--dir D` keeps `D/<size>`; DIR is that `<size>` directory): its
`node-a` holds the LMDB files (or, with the records in PostgreSQL at `--store`, only the FAISS files). The store's
one `scale-*` tenant is loaded (`index_load_s`, from its saved FAISS file) and searched exactly as
`bench.memory_scale` does it (`memory_scale.searches`: the same questions, top 10, 1,000-token budget, query embedding
included, then searches right after one-memory writes, which stay in the store), so the figures of a changed
search path can be taken again on a million memories in minutes instead of the hour that adding them takes.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from bench import memory_scale, scale_corpus
from memcore.postgres import check_url
from textual.embedder import Embedder


def measure(directory: Path, store: str, queries: int, embedder: Embedder,
            corpus: scale_corpus.ScaleCorpus) -> dict:
    with memory_scale.open_store(store, directory / "node-a", embedder, memory_scale.DEFAULT_HNSW_THRESHOLD) as opened:
        tenants = [tenant for tenant in opened.db.tenants() if tenant.startswith("scale-")]
        if len(tenants) != 1:
            raise SystemExit(f"{directory}: expected one scale-* tenant (a `bench.memory_scale --dir` store), "
                             f"found {tenants or 'none'}")
        [tenant] = tenants
        size = opened.db.usage(tenant)[0]
        started = time.perf_counter()
        opened.index(tenant)
        load_s = time.perf_counter() - started
        row = memory_scale.searches(opened, corpus, tenant, size, queries, random.Random(size))
    return {"bench": "scale_search", "store": memory_scale.store_kind(store), "memories": size,
            "index_load_s": round(load_s, 1), **row}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path, help="a kept store's size directory (DIR/<size> of `memory_scale --dir`)")
    parser.add_argument("--store", default="lmdb", type=lambda s: s if s == "lmdb" else check_url(s),
                        help="lmdb, or the postgresql:// URL the kept run used")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--cache-dir", type=Path, default=memory_scale.DEFAULT_CACHE_DIR,
                        help="where the base vectors are kept")
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    args = parser.parse_args(argv)
    if not (args.dir / "node-a").is_dir():
        parser.error(f"{args.dir} holds no node-a directory: give DIR/<size> of a `bench.memory_scale --dir DIR` run")
    embedder = Embedder.open()
    corpus = scale_corpus.load_or_build(args.cache_dir, embedder.identity, embedder.embed)
    row = measure(args.dir, args.store, args.queries, embedder, corpus)
    memory_scale.console.print(f"{row['memories']:,} memories: search p50 {row['search_ms_p50']} ms, p95 "
                               f"{row['search_ms_p95']} ms (load {row['load_average']})")
    if args.json:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
