"""The chat path: resolve the model, scope the KV cache to the tenant, inject memories, forward to the engine,
and record the conversation in memory after the reply.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi.concurrency import run_in_threadpool

from sidecar.adapter_service import AdapterService
from sidecar.engine_client import EngineClient, EngineStream
from sidecar.memory_chat import Conversation, Injection, MemoryChat, conversation
from sidecar.sse import with_memory_chunk
from sidecar.errors import APIError
from sidecar.openai_schema import ChatCompletionRequest, CompletionRequest, engine_body
from sidecar.output_limit import bound_output_tokens
from sidecar.quota_book import QuotaBook
from sidecar.quotas import QuotaExceeded

if TYPE_CHECKING:  # memory_extractor imports this module
    from sidecar.memory_extractor import MemoryExtractor

log = logging.getLogger("memsidecar.chat")
MODELS_TTL_S = 30.0
WRITE_BACKS_PER_TENANT = 2
MANAGED_ADAPTER = re.compile(r"\.v\d+\.[0-9a-f]{12}$")


class ModelCatalog:
    """The models the engine serves to everyone, cached briefly; a miss refreshes once before a name is refused.

    Adapters the sidecar loaded for tenants (`name.vN.<hash>` engine names) are not in it: they are reached only
    through the adapter registry, which checks the tenant.
    """

    def __init__(self, client: EngineClient, default_model: str | None) -> None:
        self.client = client
        self.default_model = default_model
        self._names: set[str] = set()
        self._context: dict[str, int] = {}
        self._fetched_at = 0.0

    async def listing(self) -> dict:
        listing = await self.client.get_json("/v1/models")
        cards = [entry for entry in listing.get("data", []) if isinstance(entry, dict) and "id" in entry
                 and not MANAGED_ADAPTER.search(str(entry["id"]))]
        self._names = {card["id"] for card in cards}
        self._context = {card["id"]: card["max_model_len"] for card in cards
                         if isinstance(card.get("max_model_len"), int)}
        self._fetched_at = time.monotonic()
        return {**listing, "data": cards}

    async def names(self) -> set[str]:
        if time.monotonic() - self._fetched_at > MODELS_TTL_S:
            await self.listing()
        return self._names

    def context_length(self, name: str) -> int | None:
        """The context length the engine reported for model `name`; for an adapter (not listed), the smallest of
        the served models'; None when the engine reports none."""
        return self._context.get(name) or min(self._context.values(), default=None)

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
    """Bounds the requests in flight to the engine: per tenant (429 over its share, from `book`) and in all (503 over
    `limit`). A tenant's slot is taken when its request arrives (`admit`), before any memory or adapter work is done
    for it, and held until its last byte; the shared slot only around the engine call (`enter`/`leave`)."""

    def __init__(self, limit: int, book: QuotaBook | None = None) -> None:
        self.limit = limit
        self.book = book
        self.in_flight = 0

    def admit(self, tenant: str) -> None:
        """Take one of `tenant`'s slots (429 when it holds its share)."""
        if self.book is not None:
            with self.book.refusing(tenant):
                self.book.engine_slots.acquire(tenant)

    def dismiss(self, tenant: str) -> None:
        if self.book is not None:
            self.book.engine_slots.release(tenant)

    def enter(self, tenant: str | None = None) -> None:
        """Take a shared slot (503 when all are taken), and with `tenant`, one of its slots first."""
        if tenant is not None:
            self.admit(tenant)
        if self.in_flight >= self.limit:
            if tenant is not None:
                self.dismiss(tenant)
            raise APIError(503, f"the engine already has {self.limit} requests in flight; retry shortly",
                           "engine_busy", headers={"Retry-After": "1"})
        self.in_flight += 1

    def leave(self, tenant: str | None = None) -> None:
        self.in_flight -= 1
        if tenant is not None:
            self.dismiss(tenant)


def cache_salt(body: dict[str, Any], tenant: str, kv_scope: str) -> dict[str, Any]:
    """The body with its KV isolation scope: per tenant unless shared. The salt is the sidecar's alone: a client's
    `cache_salt` is refused at the HTTP edge (`sidecar.openai_schema.ENGINE_INTERNAL`), and dropped here too."""
    if kv_scope == "shared":
        return {key: value for key, value in body.items() if key != "cache_salt"}
    return {**body, "cache_salt": f"tenant:{tenant}"}


def reply_text(result: dict[str, Any]) -> str:
    choices = result.get("choices") or [{}]
    message = choices[0].get("message") or {} if isinstance(choices[0], dict) else {}
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""


class ChatService:
    """OpenAI chat and text completions through the engine, with the tenant's adapter, memories injected and the
    conversation recorded for chats (with an `extractor`, also the facts, preferences and events in its turns)."""

    def __init__(self, client: EngineClient, catalog: ModelCatalog, memory: MemoryChat | None, gate: EngineGate,
                 kv_scope: str, adapters: AdapterService | None = None,
                 extractor: MemoryExtractor | None = None, max_output_tokens: int = 4096) -> None:
        self.client = client
        self.catalog = catalog
        self.memory = memory
        self.gate = gate
        self.kv_scope = kv_scope
        self.adapters = adapters
        self.extractor = extractor
        self.max_output_tokens = max_output_tokens
        self._writes: set[asyncio.Task] = set()
        self._write_slots: dict[str, asyncio.Semaphore] = {}  # tenant -> its write-backs that may run at once

    async def chat(self, request: ChatCompletionRequest, tenant: str) -> dict | EngineStream:
        return await self._admitted(tenant, lambda: self._chat(request, tenant))

    async def complete(self, request: CompletionRequest, tenant: str) -> dict | EngineStream:
        return await self._admitted(tenant, lambda: self._complete(request, tenant))

    async def _admitted(self, tenant: str, work: Callable[[], Awaitable[dict | EngineStream]]) -> dict | EngineStream:
        """Run `work` holding one of the tenant's engine slots from now (memory preparation included) to the end of
        its answer, the last byte of a stream included: a tenant never has more chats in the works than its share."""
        self.gate.admit(tenant)
        try:
            result = await work()
        except BaseException:
            self.gate.dismiss(tenant)
            raise
        if isinstance(result, EngineStream):
            return EngineStream(_released(result.chunks, lambda: None, lambda: self.gate.dismiss(tenant)))
        self.gate.dismiss(tenant)
        return result

    async def _chat(self, request: ChatCompletionRequest, tenant: str) -> dict | EngineStream:
        model, lease = await self._model_for(request.model, tenant, request.user)
        try:
            body = self._bounded(cache_salt(engine_body(request, model), tenant, self.kv_scope), model)
            chat, injection = None, Injection()
            if self.memory is not None:
                chat = conversation(tenant, body, request.memory, self.memory.defaults)
                body, injection = await run_in_threadpool(self.memory.prepare, chat, body)
            if request.stream:
                stream = await self._stream("/v1/chat/completions", body, lease)
                lease = None  # the stream releases it
                remember = (lambda reply: self._remember(chat, reply)) if chat else (lambda reply: None)
                return EngineStream(with_memory_chunk(stream.chunks, injection.as_json(), remember))
            result = await self._json("/v1/chat/completions", body)
        finally:
            self._release(lease)
        result["model"] = request.model or result.get("model")
        if chat is not None:
            result["memory"] = injection.as_json()
            self._remember(chat, reply_text(result))
        return result

    async def _complete(self, request: CompletionRequest, tenant: str) -> dict | EngineStream:
        model, lease = await self._model_for(request.model, tenant, None)
        try:
            body = self._bounded(cache_salt(engine_body(request, model), tenant, self.kv_scope), model)
            if request.stream:
                stream = await self._stream("/v1/completions", body, lease)
                lease = None
                return stream
            return await self._json("/v1/completions", body)
        finally:
            self._release(lease)

    async def _model_for(self, name: str | None, tenant: str, user: str | None) -> tuple[str, str | None]:
        """The engine model for a request and the adapter lease it holds: a served model by name, else the
        tenant's adapter by name, else (no name) the user's or tenant's bound adapter, else the default model."""
        if self.adapters is None or (name is not None and name in await self.catalog.names()):
            return await self.catalog.resolve(name), None
        if name is None:
            record = self.adapters.registry.binding_for(tenant, user if user and _is_user(user) else None)
            if record is None:
                return await self.catalog.resolve(None), None
        else:
            record = self.adapters.registry_lookup(name, tenant)
            if record is None:
                names = sorted(await self.catalog.names()) + [r.name for r in self.adapters.registry.list(tenant)]
                raise APIError(404, f"The model `{name}` does not exist. Available: {', '.join(names) or 'none'}.",
                               "model_not_found")
        key = await self.adapters.acquire(record)
        return key, key

    def _release(self, lease: str | None) -> None:
        if lease is not None:
            self.adapters.release(lease)

    async def drain(self) -> None:
        """Wait for every memory write still running (at shutdown: acknowledged chats leave their memories)."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    def _bounded(self, body: dict, model: str) -> dict:
        return bound_output_tokens(body, self.max_output_tokens, self.catalog.context_length(model))

    async def _json(self, path: str, body: dict) -> dict:
        self.gate.enter()
        try:
            return await self.client.post_json(path, body)
        finally:
            self.gate.leave()

    async def _stream(self, path: str, body: dict, lease: str | None) -> EngineStream:
        self.gate.enter()
        try:
            stream = await self.client.post_stream(path, body)
        except BaseException:
            self.gate.leave()
            raise
        return EngineStream(_released(stream.chunks, self.gate.leave, lambda: self._release(lease)))

    def _remember(self, chat: Conversation, reply: str) -> None:
        task = asyncio.get_running_loop().create_task(self._record(chat, reply))
        self._writes.add(task)
        task.add_done_callback(self._write_done)

    async def _record(self, chat: Conversation, reply: str) -> None:
        """Store the new turns as episodes, then extract from them (each step off the response path). At most
        `WRITE_BACKS_PER_TENANT` of a tenant's write-backs hold worker threads at once; the others wait on the loop."""
        slot = self._write_slots.setdefault(chat.tenant, asyncio.Semaphore(WRITE_BACKS_PER_TENANT))
        try:
            async with slot:
                episodes = await run_in_threadpool(self.memory.remember, chat, reply)
        except QuotaExceeded as error:  # the reply was delivered; only its record is refused
            log.info("tenant %s: chat not recorded in memory: %s", chat.tenant, error)
            return
        if episodes and self.extractor is not None:
            await self.extractor.extract(chat.tenant, episodes)

    def _write_done(self, task: asyncio.Task) -> None:
        self._writes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("recording a chat in memory failed: %s", task.exception())


def _is_user(user: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9@][A-Za-z0-9._@-]{0,127}", user) is not None


async def _released(chunks: AsyncIterator[bytes], leave: Callable[[], None],
                    release: Callable[[], None]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        leave()
        release()
