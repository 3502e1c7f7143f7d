"""The parts of one sidecar app, built from its settings, and their lifetime: the engine, the background loops and
the stores start and stop together (`Parts.running`). `create_app` (in `app.py`) puts HTTP in front of them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi.concurrency import run_in_threadpool

from adapters.admission import AdmissionQueue
from adapters.jobs import JobRunner
from adapters.registry import AdapterRegistry
from adapters.residency import Capacity
from adapters.sizing import SlotSizing
from kvcache.keys import tenant_scope
from kvcache.store import TieredStore
from kvcache.worker_stats import stats_path
from sidecar.chat.catalog import ModelCatalog
from sidecar.chat.extraction import MemoryExtractor
from sidecar.chat.gate import EngineGate
from sidecar.chat.injection import MemoryChat, MemoryDefaults
from sidecar.chat.pins import PinBook
from sidecar.chat.service import ChatService
from sidecar.config import Settings
from sidecar.engine.adapters import AdapterService
from sidecar.engine.client import EngineClient
from sidecar.engine.process import Engine
from sidecar.http.access import Access
from sidecar.http.mcp import McpHttpApp, mcp_http_app
from sidecar.http.metrics import Metrics
from sidecar.scheduler.executor import Scheduler
from sidecar.scheduler.history import TierHistory, sample_loop
from sidecar.scheduler.wiring import build_scheduler
from sidecar.tenants.keys import DEFAULT_TENANT, KeyTable
from sidecar.tenants.quota_book import QuotaBook
from sidecar.tenants.quotas import Resource
from sidecar.tenants.rate_limit import RateLimiter
from textual.store import MemoryStore

log = logging.getLogger("memsidecar.http")
TIER_SAMPLE_INTERVAL_S = 5.0  # KV tier figures for /v1/tiers/history and the console's charts


@dataclass(frozen=True)
class AdapterSetup:
    """The adapter registry of a sidecar whose managed engine serves LoRA, and where distillation works."""

    registry: AdapterRegistry
    base_model_dir: Path
    work_dir: Path
    sizing: SlotSizing | None = None  # how `max_loras auto` sized the engine's slots; None when set by hand


@dataclass
class Parts:
    """Everything one sidecar app serves from. Optional parts are None when off: `adapters`/`service` without LoRA
    (attached engine, or `max_loras` 0), `extractor` without extraction, `kv_store`/`pins` without a KV store."""

    settings: Settings
    engine: Engine
    store: MemoryStore
    client: EngineClient
    catalog: ModelCatalog
    book: QuotaBook
    chat: ChatService
    scheduler: Scheduler
    metrics: Metrics
    access: Access
    jobs: JobRunner
    mcp: McpHttpApp
    history: TierHistory
    default_model: str | None
    adapters: AdapterSetup | None
    service: AdapterService | None
    extractor: MemoryExtractor | None
    kv_store: TieredStore | None
    pins: PinBook | None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Start the engine and the background loops; on exit stop them, let memory writes finish, close stores."""
        await self.engine.start()
        loops = [asyncio.create_task(_lifecycle_loop(self.store, self.settings.memory_lifecycle_interval_s)),
                 asyncio.create_task(self.scheduler.run_forever(self.settings.tier_interval_s))]
        if self.kv_store is not None:
            loops.append(asyncio.create_task(sample_loop(
                self.history, self.kv_store.stats, stats_path(self.settings.resolved_kv_store_dir),
                TIER_SAMPLE_INTERVAL_S)))
        try:
            async with self.mcp.running():  # MCP stops before the store closes below
                yield
        finally:
            for loop in loops:
                loop.cancel()
            await self._stop()

    async def _stop(self) -> None:
        self.jobs.close(timeout=30)
        await self.chat.drain()
        if self.extractor is not None:
            await self.extractor.drain()
        await self.engine.stop()
        await self.client.close()
        self.store.close()
        if self.adapters is not None:
            self.adapters.registry.close()
        if self.kv_store is not None:
            self.kv_store.close()


def assemble(settings: Settings, engine: Engine, keys: KeyTable, store: MemoryStore, default_model: str | None,
             adapters: AdapterSetup | None, kv_store: TieredStore | None) -> Parts:
    """Build the parts; nothing starts yet."""
    client = EngineClient(engine, settings.request_timeout_s)
    catalog = ModelCatalog(client, default_model)
    service = None if adapters is None else AdapterService(
        adapters.registry, client, engine, Capacity(settings.max_loras, settings.max_cpu_loras),
        admission=AdmissionQueue(settings.max_loras) if settings.adapter_admission else None,
        sizing=adapters.sizing.as_json() if adapters.sizing is not None else None)
    jobs = JobRunner()
    pins = None if kv_store is None else PinBook(settings.data_dir / "activation-pins.json")
    book = quota_book(settings, store, adapters, service, jobs, pins, kv_store)
    gate = EngineGate(settings.max_engine_requests, book, settings.engine_priorities)
    extractor = None if not settings.memory_extraction else MemoryExtractor(
        client, catalog, gate, store, settings.memory_extraction_model, settings.memory_extraction_max_tokens,
        settings.kv_scope)
    chat = ChatService(client, catalog, MemoryChat(store, memory_defaults(settings)), gate, settings.kv_scope,
                       service, extractor, settings.max_output_tokens)
    scheduler = build_scheduler(settings, store, service, kv_store)
    access = Access(keys, RateLimiter(settings.rate_limit_per_minute))
    return Parts(settings, engine, store, client, catalog, book, chat, scheduler,
                 Metrics(engine, scheduler, extractor, service, (book, tenants_of(keys)), store.outage), access, jobs,
                 mcp_http_app(store, access), TierHistory(), default_model, adapters, service, extractor, kv_store,
                 pins)


def quota_book(settings: Settings, store: MemoryStore, adapters: AdapterSetup | None, service: AdapterService | None,
               jobs: JobRunner, pins: PinBook | None, kv_store: TieredStore | None = None) -> QuotaBook:
    """The tenants' quotas, reading each resource's usage from the part that owns it; the store asks the book before
    new memories are written, and again, exactly, when a tenant's change grows its stored bytes."""
    readers: dict[Resource, Callable[[str], int]] = {
        Resource.MEMORIES: lambda tenant: store.usage(tenant)[0],
        Resource.MEMORY_BYTES: lambda tenant: store.usage(tenant)[1],
        Resource.DISTILL_JOBS: lambda tenant: jobs.active(tenant, "distill"),
    }
    if adapters is not None and service is not None:
        readers[Resource.ADAPTERS] = lambda tenant: adapters.registry.owned(tenant)[0]
        readers[Resource.ADAPTER_BYTES] = lambda tenant: adapters.registry.owned(tenant)[1]
        readers[Resource.PINNED_ADAPTERS] = service.pinned_by
    if pins is not None:
        readers[Resource.PINNED_KV] = lambda tenant: len(pins.of(tenant))
    if kv_store is not None and settings.kv_scope == "tenant":
        readers[Resource.KV_DISK_BYTES] = lambda tenant: kv_store.scope_disk_bytes(tenant_scope(tenant))
    book = QuotaBook(settings.quota_limits, readers, settings.engine_fair_slots)
    store.admission = book.admit_memory_write
    store.growth_admission = book.admit_memory_growth
    return book


def memory_defaults(settings: Settings) -> MemoryDefaults:
    return MemoryDefaults(inject=settings.memory_inject, write=settings.memory_write, top_k=settings.memory_top_k,
                          token_budget=settings.memory_token_budget)


def tenants_of(keys: KeyTable) -> list[str]:
    """The tenants the configured keys name (`default` for an open sidecar): the label values of quota metrics."""
    return sorted(set(keys.tenants_by_hash.values())) if not keys.is_open else [DEFAULT_TENANT]


async def _lifecycle_loop(store: MemoryStore, interval_s: float) -> None:
    """Run every tenant's memory lifecycle (decay, tier moves, retention) every `interval_s` seconds: on the node that
    claims the interval's pass, when several share a PostgreSQL store."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            if not await run_in_threadpool(store.claim_lifecycle, interval_s):
                log.debug("memory lifecycle: another node runs this interval's pass")
                continue
            reports = await run_in_threadpool(store.run_lifecycle)
            log.debug("memory lifecycle ran for %d tenants", len(reports))
        except Exception:  # a failed pass is retried next interval; the error is logged, never swallowed silently
            log.exception("memory lifecycle pass failed")
