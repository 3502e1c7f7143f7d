"""The sidecar's HTTP front door: an OpenAI-compatible API with memory, the memory REST API, health, readiness and
metrics.

Routes only translate HTTP to calls on `ChatService`, `ModelCatalog` and the caller's `TenantMemory`; every `/v1`
route authenticates through `Access`; errors leave in the OpenAI error shape.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse, Response, StreamingResponse

from kvcache.store import TieredStore
from sidecar.chat.catalog import ModelCatalog
from sidecar.chat.requests import ChatCompletionRequest, CompletionRequest
from sidecar.chat.service import ChatService
from sidecar.config import Settings
from sidecar.console.routes import install_console
from sidecar.engine.client import EngineStream
from sidecar.engine.process import Engine
from sidecar.http.access import Caller, whoami_router
from sidecar.http.activation_routes import activation_router
from sidecar.http.adapter_routes import adapter_router
from sidecar.http.assembly import AdapterSetup, Parts, assemble
from sidecar.http.errors import APIError, error_response, install_error_handlers, sse_with_errors
from sidecar.http.memory_admin_routes import STREAMED_BODIES, memory_admin_router
from sidecar.http.memory_routes import memory_router
from sidecar.http.metrics import Metrics
from sidecar.http.middleware import AuthenticateMiddleware, BodyLimitMiddleware, MetricsMiddleware
from sidecar.http.space_routes import space_router
from sidecar.http.tier_routes import tier_router
from sidecar.http.tool_routes import tool_router
from sidecar.scheduler.report import tier_report
from sidecar.tenants.keys import KeyTable
from textual.store import MemoryStore

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _to_response(result: dict | EngineStream) -> Response:
    if isinstance(result, EngineStream):
        return StreamingResponse(sse_with_errors(result.chunks), media_type="text/event-stream", headers=SSE_HEADERS)
    return JSONResponse(result)


def create_app(settings: Settings, engine: Engine, keys: KeyTable, store: MemoryStore,
               default_model: str | None = None, adapters: AdapterSetup | None = None,
               kv_store: TieredStore | None = None) -> FastAPI:
    """The ASGI app. The engine is started and stopped, and the stores closed, with the app's lifespan.
    Without `adapters` (attached engine, or `max_loras` 0) requests can name served models only."""
    parts = assemble(settings, engine, keys, store, default_model, adapters, kv_store)
    app = FastAPI(title="memsidecar", version="0.1.0", lifespan=lambda app: parts.running())
    install_error_handlers(app)
    # added innermost first: metrics, then authentication, then the body limit, then the routes
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes,
                       per_path={"/v1/adapters": settings.max_adapter_upload_bytes}, streamed=STREAMED_BODIES)
    app.add_middleware(AuthenticateMiddleware, access=parts.access)
    app.add_middleware(MetricsMiddleware, metrics=parts.metrics)
    _install_routes(app, parts)
    return app


def _install_routes(app: FastAPI, parts: Parts) -> None:
    caller, settings = parts.access.caller, parts.settings
    app.include_router(memory_router(parts.store, caller, parts.extractor, parts.book))
    app.include_router(memory_admin_router(parts.store, caller, parts.book))
    app.include_router(tool_router(parts.store, caller, parts.book))
    app.include_router(space_router(parts.store, caller, parts.book))
    if parts.kv_store is not None and parts.pins is not None:
        app.include_router(activation_router(parts.chat, parts.kv_store, parts.pins, settings.kv_scope, caller,
                                             parts.book))
    app.add_route("/mcp", parts.mcp.endpoint, include_in_schema=False)  # not mount: that answers a bare /mcp with 307
    if parts.adapters is not None and parts.service is not None:
        app.include_router(adapter_router(parts.service, parts.jobs, parts.store, parts.adapters.base_model_dir,
                                          parts.adapters.work_dir, settings.max_adapter_upload_bytes, caller,
                                          parts.book))
    app.include_router(health_router(parts.engine, parts.metrics, parts.store))
    app.include_router(whoami_router(caller, parts.book.report))
    app.include_router(tier_router(parts.history, caller, lambda: tier_report(
        settings, parts.kv_store, parts.service, parts.store, parts.scheduler.report())))
    install_console(app)
    app.include_router(openai_router(parts.chat, parts.catalog, parts.adapters, parts.default_model, caller))


def health_router(engine: Engine, metrics: Metrics, store: MemoryStore) -> APIRouter:
    """Liveness, readiness and Prometheus metrics; no authentication. Ready means the engine answers: chat is served.
    The memory store's state is in the detail (`memory`); while it cannot be reached the status reads "degraded"
    (chat goes on, injecting from the indexes in memory; memory writes answer 503)."""
    router = APIRouter()

    @router.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> Response:
        if not engine.is_ready:
            return error_response(APIError(503, "the engine is not ready", "engine_not_ready"))
        outage = store.outage()
        memory = {"ready": True} if outage is None else {"ready": False, "error": outage}
        return JSONResponse({"status": "ready" if outage is None else "degraded",
                             "engine_restarts": engine.restart_count, "memory": memory})

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
