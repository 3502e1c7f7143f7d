"""The sidecar's HTTP front door: an OpenAI-compatible API with memory, the memory REST API, health, readiness and
metrics.

Routes only translate HTTP to calls on `ChatService`, `ModelCatalog` and the caller's `TenantMemory`; every `/v1`
route authenticates through `Access`; errors leave in the OpenAI error shape.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse

from sidecar.access import Access, Caller
from sidecar.chat import ChatService, EngineGate, ModelCatalog
from sidecar.config import Settings
from sidecar.engine import Engine
from sidecar.engine_client import EngineClient, EngineStream
from sidecar.errors import APIError, error_response, install_error_handlers
from sidecar.memory_chat import MemoryChat, MemoryDefaults
from sidecar.memory_routes import memory_router
from sidecar.metrics import Metrics
from sidecar.middleware import BodyLimitMiddleware, MetricsMiddleware
from sidecar.openai_schema import ChatCompletionRequest, CompletionRequest
from sidecar.rate_limit import RateLimiter
from sidecar.tenancy import KeyTable
from textual.store import MemoryStore

log = logging.getLogger("memsidecar")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _to_response(result: dict | EngineStream) -> Response:
    if isinstance(result, EngineStream):
        return StreamingResponse(result.chunks, media_type="text/event-stream", headers=SSE_HEADERS)
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
               default_model: str | None = None) -> FastAPI:
    """The ASGI app. The engine is started and stopped, and the memory store closed, with the app's lifespan."""
    client = EngineClient(engine, settings.request_timeout_s)
    catalog = ModelCatalog(client, default_model)
    chat = ChatService(client, catalog, MemoryChat(store, memory_defaults(settings)),
                       EngineGate(settings.max_engine_requests), settings.kv_scope)
    metrics = Metrics(engine)
    access = Access(keys, RateLimiter(settings.rate_limit_per_minute))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await engine.start()
        lifecycle = asyncio.create_task(_lifecycle_loop(store, settings.memory_lifecycle_interval_s))
        try:
            yield
        finally:
            lifecycle.cancel()
            await chat.drain()
            await engine.stop()
            await client.close()
            store.close()

    app = FastAPI(title="memsidecar", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.include_router(memory_router(store, access.caller))

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        if not engine.is_ready:
            return error_response(APIError(503, "the engine is not ready", "engine_not_ready"))
        return JSONResponse({"status": "ready", "engine_restarts": engine.restart_count})

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def list_models(who: Caller = Depends(access.caller)) -> dict:
        return await catalog.listing()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatCompletionRequest, who: Caller = Depends(access.caller)) -> Response:
        return _to_response(await chat.chat(request, who.tenant))

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest, who: Caller = Depends(access.caller)) -> Response:
        return _to_response(await chat.complete(request, who.tenant))

    return app
