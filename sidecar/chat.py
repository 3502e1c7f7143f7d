"""The chat path: resolve the model, prepare the request, forward it to the engine.

`prepare_chat` is the seam where memory joins the conversation: today it forwards the caller's messages unchanged;
the textual-memory issue injects retrieved memories there and records the turns after the reply.
"""

from __future__ import annotations

import time

from sidecar.engine_client import EngineClient, EngineStream
from sidecar.errors import APIError
from sidecar.openai_schema import ChatCompletionRequest, CompletionRequest, engine_body

MODELS_TTL_S = 30.0


class ModelCatalog:
    """The model names the engine serves, cached briefly; a miss refreshes once before a name is refused."""

    def __init__(self, client: EngineClient, default_model: str | None) -> None:
        self.client = client
        self.default_model = default_model
        self._names: set[str] = set()
        self._fetched_at = 0.0

    async def listing(self) -> dict:
        listing = await self.client.get_json("/v1/models")
        self._names = {entry["id"] for entry in listing.get("data", []) if isinstance(entry, dict) and "id" in entry}
        self._fetched_at = time.monotonic()
        return listing

    async def resolve(self, name: str | None) -> str:
        """The engine-side model name for a request, or a 404 naming the models that exist."""
        if time.monotonic() - self._fetched_at > MODELS_TTL_S or (name and name not in self._names):
            await self.listing()
        if name is None:
            name = self.default_model or (min(self._names) if self._names else None)
        if name not in self._names:
            available = ", ".join(sorted(self._names)) or "none"
            raise APIError(404, f"The model `{name}` does not exist. Available: {available}.", "model_not_found")
        return name


class ChatService:
    """OpenAI chat and text completions through the engine."""

    def __init__(self, client: EngineClient, catalog: ModelCatalog) -> None:
        self.client = client
        self.catalog = catalog

    async def chat(self, request: ChatCompletionRequest) -> dict | EngineStream:
        body = await self.prepare_chat(engine_body(request, await self.catalog.resolve(request.model)))
        if request.stream:
            return await self.client.post_stream("/v1/chat/completions", body)
        return await self.client.post_json("/v1/chat/completions", body)

    async def complete(self, request: CompletionRequest) -> dict | EngineStream:
        body = engine_body(request, await self.catalog.resolve(request.model))
        if request.stream:
            return await self.client.post_stream("/v1/completions", body)
        return await self.client.post_json("/v1/completions", body)

    async def prepare_chat(self, body: dict) -> dict:
        """The memory seam: returns the request the engine will see. No memory is injected yet."""
        return body
