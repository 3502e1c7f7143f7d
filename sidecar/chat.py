"""The chat path: resolve the model, scope the KV cache to the tenant, inject memories, forward to the engine,
and record the conversation in memory after the reply.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi.concurrency import run_in_threadpool

from sidecar.engine_client import EngineClient, EngineStream
from sidecar.memory_chat import Conversation, Injection, MemoryChat, conversation
from sidecar.sse import with_memory_chunk
from sidecar.errors import APIError
from sidecar.openai_schema import ChatCompletionRequest, CompletionRequest, engine_body

log = logging.getLogger("memsidecar.chat")
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


class EngineGate:
    """Bounds the requests in flight to the engine; over the bound a request is refused at once with 503."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def enter(self) -> None:
        if self.in_flight >= self.limit:
            raise APIError(503, f"the engine already has {self.limit} requests in flight; retry shortly",
                           "engine_busy", headers={"Retry-After": "1"})
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1


def cache_salt(body: dict[str, Any], tenant: str, kv_scope: str) -> dict[str, Any]:
    """The body with its KV isolation scope: per tenant (the client's own salt nested inside) unless shared."""
    if kv_scope == "shared":
        return body
    client_salt = body.get("cache_salt")
    salt = f"tenant:{tenant}" + (f":{client_salt}" if isinstance(client_salt, str) and client_salt else "")
    return {**body, "cache_salt": salt}


def reply_text(result: dict[str, Any]) -> str:
    choices = result.get("choices") or [{}]
    message = choices[0].get("message") or {} if isinstance(choices[0], dict) else {}
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""


class ChatService:
    """OpenAI chat and text completions through the engine, with memory injected and recorded for chats."""

    def __init__(self, client: EngineClient, catalog: ModelCatalog, memory: MemoryChat | None, gate: EngineGate,
                 kv_scope: str) -> None:
        self.client = client
        self.catalog = catalog
        self.memory = memory
        self.gate = gate
        self.kv_scope = kv_scope
        self._writes: set[asyncio.Task] = set()

    async def chat(self, request: ChatCompletionRequest, tenant: str) -> dict | EngineStream:
        body = cache_salt(engine_body(request, await self.catalog.resolve(request.model)), tenant, self.kv_scope)
        chat = None
        injection = Injection()
        if self.memory is not None:
            chat = conversation(tenant, body, request.memory, self.memory.defaults)
            body, injection = await run_in_threadpool(self.memory.prepare, chat, body)
        if request.stream:
            stream = await self._stream("/v1/chat/completions", body)
            remember = (lambda reply: self._remember(chat, reply)) if chat else (lambda reply: None)
            return EngineStream(with_memory_chunk(stream.chunks, injection.as_json(), remember))
        result = await self._json("/v1/chat/completions", body)
        if chat is not None:
            result["memory"] = injection.as_json()
            self._remember(chat, reply_text(result))
        return result

    async def complete(self, request: CompletionRequest, tenant: str) -> dict | EngineStream:
        body = cache_salt(engine_body(request, await self.catalog.resolve(request.model)), tenant, self.kv_scope)
        if request.stream:
            return await self._stream("/v1/completions", body)
        return await self._json("/v1/completions", body)

    async def drain(self) -> None:
        """Wait for every memory write still running (at shutdown: acknowledged chats leave their memories)."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    async def _json(self, path: str, body: dict) -> dict:
        self.gate.enter()
        try:
            return await self.client.post_json(path, body)
        finally:
            self.gate.leave()

    async def _stream(self, path: str, body: dict) -> EngineStream:
        self.gate.enter()
        try:
            stream = await self.client.post_stream(path, body)
        except BaseException:
            self.gate.leave()
            raise
        return EngineStream(_released(stream.chunks, self.gate))

    def _remember(self, chat: Conversation, reply: str) -> None:
        task = asyncio.get_running_loop().create_task(run_in_threadpool(self.memory.remember, chat, reply))
        self._writes.add(task)
        task.add_done_callback(self._write_done)

    def _write_done(self, task: asyncio.Task) -> None:
        self._writes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("recording a chat in memory failed: %s", task.exception())


async def _released(chunks: AsyncIterator[bytes], gate: EngineGate) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        gate.leave()
