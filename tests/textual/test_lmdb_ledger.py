"""The databases derived from the memory records (usage, time index, user stats) on real LMDB files: kept in step by
every write and delete (usage counting history versions too), built once for an older store, and what `list` and
`users` read instead of every record."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from textual.history import Change, ChangeKind
from textual.lmdb_ledger import USAGE
from textual.lmdb_store import LmdbStore
from textual.record import encode_memory, encode_vector
from tests.textual.test_map_growth import fill, memory
from textual.memory import LifecycleTier, Memory, MemoryType


def test_usage_counts_records_and_bytes_through_updates_and_deletes(tmp_path):
    db = LmdbStore.open(tmp_path / "db")
    vector = np.ones(384, np.float32)
    db.put_many([(memory("a", 1, 100), vector), (memory("a", 2, 100), vector), (memory("b", 1, 10), vector)])
    count, size = db.usage("a")
    assert count == 2 and size > 2 * (100 + 384 * 4)
    db.put_many([(memory("a", 1, 300), None)])  # an update: no new record, 200 more bytes of content
    assert db.usage("a") == (2, size + 200)
    db.delete_many("a", ["m000001", "absent"])
    freed = len(encode_memory(memory("a", 1, 300))) + len(encode_vector(vector))
    assert db.usage("a") == (1, size + 200 - freed)
    assert db.usage("b")[0] == 1 and db.usage("nobody") == (0, 0)
    db.close()


def test_derived_databases_equal_a_full_count_and_are_built_once_for_an_older_store(tmp_path):
    db = LmdbStore.open(tmp_path / "db")
    fill(db, "a", 7)
    db.delete_many("a", ["m000003"])
    kept = db.usage("a")
    users, by_time = db.users("a"), [m.id for m in db.memories_by_time("a")]
    with db._env.begin(write=True) as txn:  # as a store written before the derived databases existed
        for derived in (db._derived.usage, db._derived.by_time, db._derived.users):
            txn.drop(derived, delete=False)
        txn.delete(b"derived", db=db._meta)
    db.close()
    again = LmdbStore.open(tmp_path / "db")
    assert again.usage("a") == kept
    assert kept[0] == 6 and kept[1] == sum(len(v) for v in _values(again, "a"))
    assert again.users("a") == users and [m.id for m in again.memories_by_time("a")] == by_time
    again.close()


def update(db: LmdbStore, tenant: str, number: int, content: str, at: float = 2.0, **options) -> None:
    """Change a memory's content as an update by its tenant, which records a version."""
    changed = dataclasses.replace(memory(tenant, number), content=content, updated_at=at)
    db.put_many([(changed, None)], [Change(tenant, ChangeKind.UPDATE, at)], **options)


def test_usage_counts_history_versions_as_they_come_and_go(tmp_path):
    db = LmdbStore.open(tmp_path / "db")
    vector = np.ones(384, np.float32)
    db.put_many([(memory("a", 1, 10), vector)], [Change("a", ChangeKind.CREATE, 1.0)])
    assert db.usage("a")[1] == sum(len(v) for v in _values(db, "a")) + _history_bytes(db, "a")
    for i in range(30):  # the same memory changed 30 times: each change keeps the previous content (~5 kB)
        update(db, "a", 1, f"{i:05d}" + "y" * 5000)
    count, size = db.usage("a")
    versions = _history_bytes(db, "a")
    assert count == 1 and versions > 29 * 5000 and size == sum(len(v) for v in _values(db, "a")) + versions
    db.delete_many("a", ["m000001"])
    assert db.usage("a") == (0, 0) and _history_bytes(db, "a") == 0
    db.close()


def test_a_growth_check_sees_the_exact_bytes_added_and_a_refusal_writes_nothing(tmp_path):
    db = LmdbStore.open(tmp_path / "db")
    db.put_many([(memory("a", 1, 100), np.ones(384, np.float32))])
    seen = []

    def refuse(tenant, stored, adding):
        seen.append((tenant, stored, adding))
        raise PermissionError("over the limit")

    before, versions = db.usage("a"), _history_bytes(db, "a")
    with pytest.raises(PermissionError):
        update(db, "a", 1, "z" * 300, check_growth=refuse)
    assert db.usage("a") == before and _history_bytes(db, "a") == versions
    assert db.get("a", "m000001").content == "x" * 100
    update(db, "a", 1, "z" * 300, check_growth=lambda *args: seen.append(args))
    assert seen[0] == seen[1] == ("a", before, db.usage("a")[1] - before[1]) and seen[0][2] > 200
    update(db, "a", 1, "", check_growth=lambda *args: seen.append(args))  # shorter, but its version keeps the text
    assert seen[2][2] > 0
    unchanged = db.get("a", "m000001")
    db.put_many([(unchanged, None)], check_growth=refuse)  # adds no byte (no version, same record): not asked
    assert len(seen) == 3
    db.close()


def test_a_store_derived_before_versions_counted_adds_them_once(tmp_path):
    db = LmdbStore.open(tmp_path / "db")
    fill(db, "a", 3)
    for i in range(5):
        update(db, "a", 1, "w" * (100 * i))
    counted, versions = db.usage("a"), _history_bytes(db, "a")
    with db._env.begin(write=True) as txn:  # as a store derived by the previous version left it
        txn.put(b"a", USAGE.pack(counted[0], counted[1] - versions), db=db._derived.usage)
        txn.put(b"derived", b"1", db=db._meta)
    db.close()
    for _ in range(2):
        again = LmdbStore.open(tmp_path / "db")
        assert again.usage("a") == counted and versions > 0
        again.close()


def test_each_memory_reads_in_batches_in_key_order(tmp_path):
    db = LmdbStore.open(tmp_path / "db")
    fill(db, "a", 11)
    fill(db, "b", 3)
    assert [m.id for m in db.each_memory("a", batch=4)] == [f"m{n:06d}" for n in range(11)]
    db.close()


def _history_bytes(db: LmdbStore, tenant: str) -> int:
    with db._env.begin() as txn:
        return sum(len(value) for key, value in txn.cursor(db=db._history) if key.startswith(tenant.encode() + b"\0"))


def _values(db: LmdbStore, tenant: str) -> list[bytes]:
    with db._env.begin() as txn:
        return [value for _key, value in db._scan(txn, tenant, db._memories)] + \
               [value for _key, value in db._scan(txn, tenant, db._vectors)]


def timed(tenant: str, number: int, created_at: float, user: str = "u", tier: LifecycleTier = LifecycleTier.HOT,
          session: str = "", position: int = 0) -> Memory:
    return Memory(id=f"m{number:03d}", tenant=tenant, user=user, type=MemoryType.EPISODE, content=f"turn {number}",
                  created_at=created_at, updated_at=created_at + 1, last_access_at=created_at, tier=tier,
                  metadata={"session": session, "position": position})


def test_memories_come_by_time_from_since_through_updates_and_deletes(tmp_path):
    db = LmdbStore.open(tmp_path / "db")
    vector = np.ones(4, np.float32)
    stored = [timed("a", 1, 30.0), timed("a", 2, -5.0), timed("a", 3, 10.0, session="s", position=2),
              timed("a", 4, 10.0, session="s", position=1), timed("a", 5, 1e9), timed("b", 6, 0.0)]
    db.put_many([(m, vector) for m in stored])
    assert [m.id for m in db.memories_by_time("a", batch=2)] == ["m002", "m004", "m003", "m001", "m005"]
    assert [m.id for m in db.memories_by_time("a", since=10.0)] == ["m004", "m003", "m001", "m005"]
    db.put_many([(timed("a", 1, 0.5), None)])  # a changed time moves the memory in the index
    db.delete_many("a", ["m005"])
    assert [m.id for m in db.memories_by_time("a")] == ["m002", "m001", "m004", "m003"]
    db.close()


def test_user_stats_follow_tier_moves_and_deletes(tmp_path):
    db = LmdbStore.open(tmp_path / "db")
    vector = np.ones(4, np.float32)
    db.put_many([(timed("a", 1, 1.0, "ann"), vector), (timed("a", 2, 2.0, "ann"), vector),
                 (timed("a", 3, 3.0, "bob"), vector), (timed("b", 4, 4.0, "ann"), vector)])
    db.put_many([(timed("a", 2, 2.0, "ann", LifecycleTier.COLD), None)])
    assert db.users("a") == [("ann", 2, {"cold": 1, "hot": 1}, 3.0), ("bob", 1, {"hot": 1}, 4.0)]
    db.delete_many("a", ["m003", "m001"])
    assert db.users("a") == [("ann", 1, {"cold": 1}, 3.0)]  # the newest change is kept after deletes
    db.close()
