"""The sidecar's HTTP front door: an OpenAI-compatible API with memory, the memory REST API, health, readiness and
metrics.

Routes only translate HTTP to calls on `ChatService`, `ModelCatalog` and the caller's `TenantMemory`; every `/v1`
route authenticates through `Access`; errors leave in the OpenAI error shape.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse

from adapters.jobs import JobRunner
from adapters.registry import AdapterRegistry
from adapters.residency import Capacity
from kvcache.store import TieredStore
from kvcache.worker_stats import stats_path
from sidecar.chat.catalog import ModelCatalog
from sidecar.chat.extraction import MemoryExtractor
from sidecar.chat.gate import EngineGate
from sidecar.chat.injection import MemoryChat, MemoryDefaults
from sidecar.chat.pins import PinBook
from sidecar.chat.requests import ChatCompletionRequest, CompletionRequest
from sidecar.chat.service import ChatService
from sidecar.config import Settings
from sidecar.console.routes import install_console
from sidecar.engine.adapters import AdapterService
from sidecar.engine.client import EngineClient, EngineStream
from sidecar.engine.process import Engine
from sidecar.http.access import Access, Caller, whoami_router
from sidecar.http.activation_routes import activation_router
from sidecar.http.adapter_routes import adapter_router
from sidecar.http.errors import APIError, error_response, install_error_handlers, sse_with_errors
from sidecar.http.mcp import mcp_http_app
from sidecar.http.memory_routes import memory_router
from sidecar.http.metrics import Metrics
from sidecar.http.middleware import AuthenticateMiddleware, BodyLimitMiddleware, MetricsMiddleware
from sidecar.http.tier_routes import tier_history_router
from sidecar.scheduler.history import TierHistory, sample_loop
from sidecar.scheduler.report import tier_report
from sidecar.scheduler.wiring import build_scheduler
from sidecar.tenants.keys import DEFAULT_TENANT, KeyTable
from sidecar.tenants.quota_book import QuotaBook
from sidecar.tenants.quotas import Resource
from sidecar.tenants.rate_limit import RateLimiter
from textual.store import MemoryStore

log = logging.getLogger("memsidecar")
TIER_SAMPLE_INTERVAL_S = 5.0  # KV tier figures for /v1/tiers/history and the console's charts
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass(frozen=True)
class AdapterSetup:
    """The adapter registry of a sidecar whose managed engine serves LoRA, and where distillation works."""

    registry: AdapterRegistry
    base_model_dir: Path
    work_dir: Path


def _to_response(result: dict | EngineStream) -> Response:
    if isinstance(result, EngineStream):
        return StreamingResponse(sse_with_errors(result.chunks), media_type="text/event-stream", headers=SSE_HEADERS)
    return JSONResponse(result)


def memory_defaults(settings: Settings) -> MemoryDefaults:
    return MemoryDefaults(inject=settings.memory_inject, write=settings.memory_write, top_k=settings.memory_top_k,
                          token_budget=settings.memory_token_budget)


async def _lifecycle_loop(store: MemoryStore, interval_s: float) -> None:
    """Run every tenant's memory lifecycle (decay, tier moves, retention) every `interval_s` seconds."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            reports = await run_in_threadpool(store.run_lifecycle)
            log.debug("memory lifecycle ran for %d tenants", len(reports))
        except Exception:  # a failed pass is retried next interval; the error is logged, never swallowed silently
            log.exception("memory lifecycle pass failed")


def create_app(settings: Settings, engine: Engine, keys: KeyTable, store: MemoryStore,
               default_model: str | None = None, adapters: AdapterSetup | None = None,
               kv_store: TieredStore | None = None) -> FastAPI:
    """The ASGI app. The engine is started and stopped, and the stores closed, with the app's lifespan.
    Without `adapters` (attached engine, or `max_loras` 0) requests can name served models only."""
    client = EngineClient(engine, settings.request_timeout_s)
    catalog = ModelCatalog(client, default_model)
    service = None if adapters is None else AdapterService(
        adapters.registry, client, engine, Capacity(settings.max_loras, settings.max_cpu_loras))
    book = quota_book(settings, store, adapters, service)
    gate = EngineGate(settings.max_engine_requests, book)
    extractor = None if not settings.memory_extraction else MemoryExtractor(
        client, catalog, gate, store, settings.memory_extraction_model, settings.memory_extraction_max_tokens,
        settings.kv_scope)
    chat = ChatService(client, catalog, MemoryChat(store, memory_defaults(settings)), gate, settings.kv_scope,
                       service, extractor, settings.max_output_tokens)
    scheduler = build_scheduler(settings, store, service, kv_store)
    metrics = Metrics(engine, scheduler, extractor, service, (book, tenants_of(keys)))
    access = Access(keys, RateLimiter(settings.rate_limit_per_minute))
    jobs = JobRunner()
    book.readers[Resource.DISTILL_JOBS] = lambda tenant: jobs.active(tenant, "distill")
    mcp = mcp_http_app(store, access)
    history = TierHistory()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await engine.start()
        lifecycle = asyncio.create_task(_lifecycle_loop(store, settings.memory_lifecycle_interval_s))
        tiering = asyncio.create_task(scheduler.run_forever(settings.tier_interval_s))
        sampler = None if kv_store is None else asyncio.create_task(
            sample_loop(history, kv_store.stats, stats_path(settings.resolved_kv_store_dir), TIER_SAMPLE_INTERVAL_S))
        try:
            async with mcp.running():  # MCP stops before the store closes below
                yield
        finally:
            lifecycle.cancel()
            tiering.cancel()
            if sampler is not None:
                sampler.cancel()
            jobs.close(timeout=30)
            await chat.drain()
            if extractor is not None:
                await extractor.drain()
            await engine.stop()
            await client.close()
            store.close()
            if adapters is not None:
                adapters.registry.close()
            if kv_store is not None:
                kv_store.close()

    app = FastAPI(title="memsidecar", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    # added innermost first: metrics, then authentication, then the body limit, then the routes
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes,
                       per_path={"/v1/adapters": settings.max_adapter_upload_bytes})
    app.add_middleware(AuthenticateMiddleware, access=access)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.include_router(memory_router(store, access.caller, extractor, book))
    if kv_store is not None:
        pins = PinBook(settings.data_dir / "activation-pins.json")
        book.readers[Resource.PINNED_KV] = lambda tenant: len(pins.of(tenant))
        app.include_router(activation_router(chat, kv_store, pins, settings.kv_scope, access.caller, book))
    app.add_route("/mcp", mcp.endpoint, include_in_schema=False)  # not mount: that answers a bare /mcp with 307
    if adapters is not None:
        app.include_router(adapter_router(service, jobs, store, adapters.base_model_dir, adapters.work_dir,
                                          settings.max_adapter_upload_bytes, access.caller, book))

    app.include_router(health_router(engine, metrics))
    app.include_router(whoami_router(access.caller, book.report))
    app.include_router(tier_history_router(history, access.caller))
    install_console(app)
    app.include_router(openai_router(chat, catalog, adapters, default_model, access.caller))

    @app.get("/v1/tiers", tags=["tiers"])
    async def tiers(who: Caller = Depends(access.caller)) -> dict:
        return await run_in_threadpool(tier_report, settings, kv_store, service, store, scheduler.report())

    return app


def quota_book(settings: Settings, store: MemoryStore, adapters: AdapterSetup | None,
               service: AdapterService | None) -> QuotaBook:
    """The tenants' quotas, reading memory usage from the store (which asks the book before new memories are
    written) and adapter usage from the registry and the adapter service."""
    book = QuotaBook(settings.quota_limits)
    store.admission = book.admit_memory_write
    book.readers[Resource.MEMORIES] = lambda tenant: store.usage(tenant)[0]
    book.readers[Resource.MEMORY_BYTES] = lambda tenant: store.usage(tenant)[1]
    if adapters is not None and service is not None:
        book.readers[Resource.ADAPTERS] = lambda tenant: adapters.registry.owned(tenant)[0]
        book.readers[Resource.ADAPTER_BYTES] = lambda tenant: adapters.registry.owned(tenant)[1]
        book.readers[Resource.PINNED_ADAPTERS] = service.pinned_by
    return book


def tenants_of(keys: KeyTable) -> list[str]:
    """The tenants the configured keys name (`default` for an open sidecar): the label values of quota metrics."""
    return sorted(set(keys.tenants_by_hash.values())) if not keys.is_open else [DEFAULT_TENANT]


def health_router(engine: Engine, metrics: Metrics) -> APIRouter:
    """Liveness, readiness (the engine answers) and Prometheus metrics; no authentication."""
    router = APIRouter()

    @router.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> Response:
        if not engine.is_ready:
            return error_response(APIError(503, "the engine is not ready", "engine_not_ready"))
        return JSONResponse({"status": "ready", "engine_restarts": engine.restart_count})

    @router.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    return router


def openai_router(chat: ChatService, catalog: ModelCatalog, adapters: AdapterSetup | None,
                  default_model: str | None, caller) -> APIRouter:
    """The OpenAI routes: models (served ones plus the caller's adapters), chat and text completions."""
    router = APIRouter(prefix="/v1")

    @router.get("/models")
    async def list_models(who: Caller = Depends(caller)) -> dict:
        listing = await catalog.listing()
        if adapters is None:
            return listing
        base = default_model or next((card["id"] for card in listing["data"]), None)
        cards = [{"id": record.name, "object": "model", "created": int(record.created_at), "parent": base,
                  "owned_by": "public" if record.is_public else who.tenant, "root": record.reference}
                 for record in adapters.registry.list(who.tenant)]
        return {**listing, "data": listing["data"] + cards}

    @router.post("/chat/completions")
    async def chat_completions(request: ChatCompletionRequest, who: Caller = Depends(caller)) -> Response:
        return _to_response(await chat.chat(request, who.tenant))

    @router.post("/completions")
    async def completions(request: CompletionRequest, who: Caller = Depends(caller)) -> Response:
        return _to_response(await chat.complete(request, who.tenant))

    return router
