"""The tier scheduler's executor on real stores: a MemoryStore with MiniLM in a temp dir, a TieredStore's LMDB."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil

import numpy as np
import pytest

from kvcache.keys import Namespace, block_keys
from kvcache.store import StoreConfig, TieredStore
from kvcache.worker_control import ControlReader, ControlWriter, control_path
from kvcache.worker_stats import StatsPublisher, stats_path
from memcore.tiers import Tier
from memcore.value import ValueModel
from sidecar.engine.process import AttachedEngine
from sidecar.http.metrics import Metrics
from sidecar.scheduler.executor import Scheduler
from sidecar.scheduler.objects import Action, Budgets, Kind, usage
from sidecar.scheduler.reporters import KvReporter, MemoryIndexReporter
from textual.store import MemoryStore

FACTS = {
    "alpha": ["Alice keeps three cats named after planets", "Alice commutes by folding bicycle"],
    "beta": ["Bruno grows chili peppers on his balcony", "Bruno is learning to play the bassoon"],
    "gamma": ["Greta restores antique clocks on weekends", "Greta drinks her coffee black"],
}
ROOMY = Budgets(engine_bytes=0, cpu_bytes=2**40, disk_bytes=2**40, adapter_slots=0)


@pytest.fixture
def store(tmp_path, embedder):
    opened = MemoryStore.open(tmp_path / "memory", embedder=embedder)
    for tenant, facts in FACTS.items():
        handle = opened.for_tenant(tenant)
        for i in range(12):
            handle.add(f"{facts[i % 2]} (note {i})", user="u1", consolidate=False)
    yield opened
    opened.close()


def use(store: MemoryStore, tenant: str, times: int) -> None:
    for _ in range(times):
        store.for_tenant(tenant).search("hobbies", k=1)


def test_the_least_used_index_is_released_within_the_cpu_budget_and_still_answers(store):
    use(store, "alpha", 60)
    use(store, "gamma", 40)
    use(store, "beta", 1)
    reporter = MemoryIndexReporter(store)
    sizes = {r.tenant: r.resident_bytes for r in store.residency()}
    budget = sum(sizes.values()) - min(sizes.values()) // 2  # one index too many
    scheduler = Scheduler([reporter], Budgets(0, budget, 2**40, 0))

    done = asyncio.run(scheduler.run_once())

    assert [(m.action, m.key, m.src, m.dst) for m in done.moves] == [
        (Action.DEMOTE, "memory:beta", Tier.CPU, Tier.DISK)]
    assert done.usage_after.cpu_bytes <= budget and not done.failed
    assert {r.tenant: r.is_loaded for r in store.residency()} == {"alpha": True, "beta": False, "gamma": True}
    hits = store.for_tenant("beta").search("which instrument is Bruno learning", k=1).hits
    assert "bassoon" in hits[0].memory.content  # rebuilt from LMDB and its saved FAISS file on use
    again = asyncio.run(scheduler.run_once())
    assert again.usage_after.cpu_bytes <= budget
    report = json.dumps(scheduler.report())
    assert not any(tenant in report for tenant in FACTS)  # the report names no tenant
    assert scheduler.report()["moves_total"][0] == {"action": "demote", "kind": "memory_index", "outcome": "done",
                                                    "count": sum(m.action is Action.DEMOTE for m in
                                                                 done.moves + again.moves)}


def test_a_released_index_is_prefetched_back_when_room_frees_up(store):
    use(store, "alpha", 5)
    assert store.release("alpha") > 0
    scheduler = Scheduler([MemoryIndexReporter(store)], ROOMY)
    done = asyncio.run(scheduler.run_once())
    assert [(m.action, m.key) for m in done.moves] == [(Action.PREFETCH, "memory:alpha")]
    assert {r.tenant for r in store.residency() if r.is_loaded} == set(FACTS)


def test_a_failed_move_is_logged_counted_and_the_pass_goes_on(store, caplog):
    use(store, "alpha", 1)
    shutil.rmtree(store.index_dir, ignore_errors=True)
    store.index_dir.write_text("not a directory")  # FAISS files can no longer be saved: every release fails
    scheduler = Scheduler([MemoryIndexReporter(store)], Budgets(0, 0, 2**40, 0))
    try:
        with caplog.at_level(logging.ERROR, logger="memsidecar.tiers"):
            done = asyncio.run(scheduler.run_once())
    finally:
        store.index_dir.unlink()
    assert len(done.moves) == 3 and len(done.failed) == 3
    assert usage(done.after).cpu_bytes == usage(done.observed).cpu_bytes  # nothing was released
    assert all(r.is_loaded for r in store.residency())
    assert caplog.text.count("tier move failed") == 3 and "FileExistsError" in done.failed[0].error
    assert scheduler.counts[("demote", "memory_index", "failed")] == 3
    assert len(scheduler.report()["last_pass"]["failed"]) == 3


def kv_blocks(store: TieredStore, scope: str, tokens: int, start: int = 0) -> list[bytes]:
    namespace = Namespace("model", "lora=False;quant=none", "float32", "LHTD", 4, scope=scope)
    keys = block_keys(namespace, list(range(start, start + tokens)))
    store.put_many([(key, np.full((2, 4, 64), i, np.float32)) for i, key in enumerate(keys)], "float32", "LHTD")
    return keys


def test_the_coldest_kv_namespace_is_evicted_from_disk_and_pinned_blocks_never(tmp_path):
    kv = TieredStore.open(StoreConfig(tmp_path / "kv", 0, 256 * 2**20), with_ram=False)
    try:
        cold, warm, pinned = (kv_blocks(kv, scope, 40) for scope in ("tenant-cold", "tenant-warm", "tenant-pin"))
        kv.pin(pinned)
        clock = [1000.0]
        reporter = KvReporter(kv, engine_cache_bytes=2**20, ram_tier_bytes=2**20, block_tokens=4)
        scheduler = Scheduler([reporter], ROOMY, ValueModel(half_life_s=600), clock=lambda: clock[0])
        first = asyncio.run(scheduler.run_once())  # sees three namespaces, one use each
        assert not first.moves and len([o for o in first.observed if o.evictable]) == 3
        clock[0] += 1200
        kv_blocks(kv, "tenant-warm", 4, start=1000)  # used again: its newest access sequence grows
        observed = asyncio.run(reporter.objects(clock[0]))
        total = usage(observed).disk_bytes
        scheduler.budgets = Budgets(2**20, 2**20, total - 1, 0)

        done = asyncio.run(scheduler.run_once())

        assert [(m.action, m.kind) for m in done.moves] == [(Action.EVICT, Kind.KV)]
        assert not any(kv.disk.contains(key) for key in cold)
        assert all(kv.disk.contains(key) for key in warm + pinned)
        assert done.usage_after.disk_bytes <= total - 1
        assert usage(asyncio.run(reporter.objects(clock[0]))).disk_bytes <= total - 1  # the LMDB pages went too
        reserved = {o.key: o.tier for o in done.after if o.pinned}
        assert reserved["kv-reserved:engine-cache"] is Tier.ENGINE and reserved["kv-reserved:ram-tier"] is Tier.CPU
        scheduler.budgets = Budgets(2**20, 2**20, 0, 0)
        squeezed = asyncio.run(scheduler.run_once())  # even a zero budget leaves pinned blocks alone
        assert all(kv.disk.contains(key) for key in pinned) and not any(kv.disk.contains(key) for key in warm)
        assert {m.action for m in squeezed.moves} == {Action.EVICT}
    finally:
        kv.close()


class FakeWorker:
    """The engine worker's side of the RAM tier, in this process: a store with RAM, its published figures, and
    the control commands it carries out through the worker's own code (`ControlReader.apply_pending`, which
    `kvcache.connector._Worker` calls on its writer thread)."""

    def __init__(self, directory) -> None:
        self.store = TieredStore.open(StoreConfig(directory, 2**30, 256 * 2**20))
        self.publisher = StatsPublisher(stats_path(directory), interval_s=0)
        self.control = ControlReader(control_path(directory))
        self.publish()

    def publish(self) -> None:
        self.publisher.maybe_publish(lambda: {"ram_namespaces": self.store.ram_namespaces()})

    def poll(self) -> list[str]:
        done = [command.action for command in self.control.apply_pending(self.store)]
        self.publish()
        return done


def test_kv_namespaces_leave_and_enter_the_worker_ram_by_commands_and_by_value(tmp_path):
    directory = tmp_path / "kv"
    worker = FakeWorker(directory)
    try:
        hot, cold = (kv_blocks(worker.store, scope, 40) for scope in ("tenant-hot", "tenant-cold"))
        worker.publish()
        clock = [1000.0]
        # one LMDB environment per process: the reporter reads the disk tier through the worker's store here
        reporter = KvReporter(worker.store, 0, 2**30, block_tokens=4, clock=lambda: clock[0],
                              worker_stats=stats_path(directory), control=ControlWriter(control_path(directory)))
        scheduler = Scheduler([reporter], ROOMY, ValueModel(half_life_s=600), clock=lambda: clock[0])
        first = asyncio.run(scheduler.run_once())
        in_ram = {o.key: o for o in first.observed if o.kind is Kind.KV and o.tier is Tier.CPU}
        assert len(in_ram) == 2 and all(o.reload_s < o.rebuild_s for o in in_ram.values())
        assert "kv-reserved:ram-tier" not in {o.key for o in first.observed}  # real bytes, not a reservation
        clock[0] += 1200
        kv_blocks(worker.store, "tenant-hot", 4, start=1000)  # used again
        worker.publish()
        one = next(iter(in_ram.values())).size_bytes
        scheduler.budgets = Budgets(0, one + one // 2, 2**40, 0)  # room in RAM for one namespace

        done = asyncio.run(scheduler.run_once())

        assert [(m.action, m.src, m.dst) for m in done.moves] == [(Action.DEMOTE, Tier.CPU, Tier.DISK)]
        assert worker.poll() == ["release"]
        assert set(worker.store.ram_namespaces()) == {hot[0][:16].hex()}  # the cold one left RAM, not the disk
        assert all(worker.store.disk.contains(key) for key in cold)
        scheduler.budgets = ROOMY
        back = asyncio.run(scheduler.run_once())  # room again: the cold namespace is prefetched
        assert [(m.action, m.dst) for m in back.moves] == [(Action.PREFETCH, Tier.CPU)]
        assert worker.poll() == ["prefetch"] and len(worker.store.ram_namespaces()) == 2
        scheduler.budgets = Budgets(0, one + one // 2, 2**40, 0)
        asyncio.run(scheduler.run_once())  # the same release again within a minute is not resent
        assert worker.poll() == []
    finally:
        worker.store.close()


def test_the_background_loop_runs_passes_until_cancelled_and_metrics_show_the_tiers(store):
    scheduler = Scheduler([MemoryIndexReporter(store)], Budgets(0, 0, 2**40, 0))

    async def run_a_while() -> None:
        task = asyncio.create_task(scheduler.run_forever(0.01))
        while scheduler.passes < 3:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run_a_while())
    assert scheduler.passes >= 3 and not any(r.is_loaded for r in store.residency())
    text = Metrics(AttachedEngine("http://127.0.0.1:9"), scheduler).render().decode()
    assert 'memsidecar_tier_budget_bytes{tier="disk"} 1.099511627776e+12' in text
    assert 'memsidecar_tier_usage_bytes{tier="cpu"} 0.0' in text
    assert 'memsidecar_tier_moves_total{action="demote",kind="memory_index",outcome="done"} 3.0' in text

