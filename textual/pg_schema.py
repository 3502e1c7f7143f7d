"""The PostgreSQL schema of textual memory: component "textual" of `memcore.postgres.migrate`, append-only.

Tables (ids and tenants `COLLATE "C"`, so ordering them is bytewise, as LMDB keys are):
- `textual_tenants`: one row per tenant ever written: `seq` (its newest change seq, the record store's `version`),
  `memories` and `bytes` (its usage, `textual.tally`). Writers lock the row first: it serializes a tenant's writes
  and makes its seqs gap-free.
- `textual_memories`: `record` (`textual.record.encode_memory` bytes), `vector` (`encode_vector` bytes) and
  `time_key` (`encode_time_key`, for listing in time order). A vector stays in its row, uncompressed (migration
  2): float bytes do not compress, and a 384-dim row (~2.1 kB) is past PostgreSQL's default 2 kB TOAST threshold,
  which moved every vector to the TOAST table after a failed compression (a second table and index written per
  memory, and read back per vector when an index is built). Rows up to 8,160 bytes now stay whole; a larger one
  has its record compressed or moved out first, its vector only as a last resort.
- `textual_history`: one row per version, `version` holding `textual.history.encode_version` bytes.
- `textual_changes`: the change log, `kind` a `textual.record_store.EntryKind` value.
- `textual_users`: per-user stats (`encode_user_stats` bytes); `textual_kbs`, `textual_spaces`: their records;
  `textual_meta`: `embedding_model`.
"""

from __future__ import annotations

from memcore.postgres import Migration

COMPONENT = "textual"

MIGRATIONS = (
    Migration(1, "memories, vectors, history, change log, usage, knowledge bases, spaces", """
        CREATE TABLE textual_meta (key text PRIMARY KEY, value text NOT NULL);
        CREATE TABLE textual_tenants (
            tenant text COLLATE "C" PRIMARY KEY, seq bigint NOT NULL DEFAULT 0,
            memories bigint NOT NULL DEFAULT 0, bytes bigint NOT NULL DEFAULT 0);
        CREATE TABLE textual_memories (
            tenant text COLLATE "C" NOT NULL, id text COLLATE "C" NOT NULL, record bytea NOT NULL, vector bytea,
            time_key bytea NOT NULL, PRIMARY KEY (tenant, id));
        CREATE INDEX textual_memories_by_time ON textual_memories (tenant, time_key);
        CREATE TABLE textual_history (
            tenant text COLLATE "C" NOT NULL, memory_id text COLLATE "C" NOT NULL, seq integer NOT NULL,
            version bytea NOT NULL, PRIMARY KEY (tenant, memory_id, seq));
        CREATE TABLE textual_changes (
            tenant text COLLATE "C" NOT NULL, seq bigint NOT NULL, memory_id text COLLATE "C" NOT NULL,
            kind text NOT NULL, PRIMARY KEY (tenant, seq));
        CREATE TABLE textual_users (
            tenant text COLLATE "C" NOT NULL, user_id text COLLATE "C" NOT NULL, stats bytea NOT NULL,
            PRIMARY KEY (tenant, user_id));
        CREATE TABLE textual_kbs (
            tenant text COLLATE "C" NOT NULL, id text COLLATE "C" NOT NULL, record bytea NOT NULL,
            PRIMARY KEY (tenant, id));
        CREATE TABLE textual_spaces (
            tenant text COLLATE "C" NOT NULL, id text COLLATE "C" NOT NULL, record bytea NOT NULL,
            PRIMARY KEY (tenant, id));
    """),
    Migration(2, "vectors kept in their rows, uncompressed", """
        ALTER TABLE textual_memories ALTER COLUMN vector SET STORAGE MAIN, SET (toast_tuple_target = 8160);
    """),
)
