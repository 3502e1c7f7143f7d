"""The sidecar's HTTP front door: an OpenAI-compatible API plus health, readiness and metrics.

Routes only translate HTTP to calls on `ChatService` and `ModelCatalog`; errors leave in the OpenAI error shape.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response, StreamingResponse

from sidecar.chat import ChatService, ModelCatalog
from sidecar.config import Settings
from sidecar.engine import Engine
from sidecar.engine_client import EngineClient, EngineStream
from sidecar.errors import APIError, error_response, install_error_handlers
from sidecar.metrics import Metrics
from sidecar.middleware import BodyLimitMiddleware, MetricsMiddleware
from sidecar.openai_schema import ChatCompletionRequest, CompletionRequest

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _to_response(result: dict | EngineStream) -> Response:
    if isinstance(result, EngineStream):
        return StreamingResponse(result.chunks, media_type="text/event-stream", headers=SSE_HEADERS)
    return JSONResponse(result)


def create_app(settings: Settings, engine: Engine, default_model: str | None = None) -> FastAPI:
    """The ASGI app. The engine is started and stopped with the app's lifespan."""
    client = EngineClient(engine, settings.request_timeout_s)
    catalog = ModelCatalog(client, default_model)
    chat = ChatService(client, catalog)
    metrics = Metrics(engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await engine.start()
        try:
            yield
        finally:
            await engine.stop()
            await client.close()

    app = FastAPI(title="memsidecar", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

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
    async def list_models() -> dict:
        return await catalog.listing()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatCompletionRequest) -> Response:
        return _to_response(await chat.chat(request))

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest) -> Response:
        return _to_response(await chat.complete(request))

    return app
