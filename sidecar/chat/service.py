"""The chat path: resolve the model, scope the KV cache to the tenant, inject memories, forward to the engine,
and record the conversation in memory after the reply.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi.concurrency import run_in_threadpool

from sidecar.chat.catalog import ModelCatalog
from sidecar.chat.errors import model_not_found
from sidecar.chat.extraction import MemoryExtractor
from sidecar.chat.gate import EngineGate
from sidecar.chat.injection import Conversation, Injection, MemoryChat, conversation
from sidecar.chat.kv_scope import cache_salt
from sidecar.chat.output_limit import bound_output_tokens
from sidecar.chat.requests import ChatCompletionRequest, CompletionRequest, engine_body
from sidecar.chat.sse import with_memory_chunk
from sidecar.engine.adapters import AdapterLease, AdapterService
from sidecar.engine.client import EngineClient, EngineStream, reply_text
from sidecar.tenants.quotas import QuotaExceeded
from textual.errors import StoreUnavailableError

log = logging.getLogger("memsidecar.chat")
WRITE_BACKS_PER_TENANT = 2


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
        return await self._admitted(tenant, lambda priority: self._chat(request, tenant, priority))

    async def complete(self, request: CompletionRequest, tenant: str) -> dict | EngineStream:
        return await self._admitted(tenant, lambda priority: self._complete(request, tenant, priority))

    async def _admitted(self, tenant: str,
                        work: Callable[[int], Awaitable[dict | EngineStream]]) -> dict | EngineStream:
        """Run `work` (given the request's engine priority) holding one of the tenant's engine slots from now (memory
        preparation included) to the end of its answer, the last byte of a stream included: a tenant never has more
        chats in the works than its share."""
        priority = self.gate.admit(tenant)
        try:
            result = await work(priority)
        except BaseException:
            self.gate.dismiss(tenant)
            raise
        if isinstance(result, EngineStream):
            return EngineStream(_released(result.chunks, lambda: None, lambda: self.gate.dismiss(tenant)))
        self.gate.dismiss(tenant)
        return result

    async def _chat(self, request: ChatCompletionRequest, tenant: str, priority: int) -> dict | EngineStream:
        model, lease = await self._model_for(request.model, tenant, request.user)
        try:
            body = self._engine_body(engine_body(request, model), tenant, model, priority)
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

    async def _complete(self, request: CompletionRequest, tenant: str, priority: int) -> dict | EngineStream:
        model, lease = await self._model_for(request.model, tenant, None)
        try:
            body = self._engine_body(engine_body(request, model), tenant, model, priority)
            if request.stream:
                stream = await self._stream("/v1/completions", body, lease)
                lease = None
                return stream
            return await self._json("/v1/completions", body)
        finally:
            self._release(lease)

    async def _model_for(self, name: str | None, tenant: str, user: str | None) -> tuple[str, AdapterLease | None]:
        """The engine model for a request and the adapter lease it holds: a served model by name, else the
        tenant's adapter by name, else (no name) the user's or tenant's bound adapter, else the default model."""
        if self.adapters is None or (name is not None and name in await self.catalog.names()):
            return await self.catalog.resolve(name), None
        if name is None:
            record = await asyncio.to_thread(self.adapters.registry.binding_for, tenant,
                                           user if user and _is_user(user) else None)
            if record is None:
                return await self.catalog.resolve(None), None
        else:
            record = await asyncio.to_thread(self.adapters.registry_lookup, name, tenant)
            if record is None:
                listed = await asyncio.to_thread(self.adapters.registry.list, tenant)
                names = sorted(await self.catalog.names()) + [r.name for r in listed]
                raise model_not_found(name, names)
        lease = await self.adapters.acquire(record, tenant)
        return lease.key, lease

    def _release(self, lease: AdapterLease | None) -> None:
        if lease is not None:
            self.adapters.release(lease)

    async def drain(self) -> None:
        """Wait for every memory write still running (at shutdown: acknowledged chats leave their memories)."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    def _engine_body(self, body: dict, tenant: str, model: str, priority: int) -> dict:
        """The body as the engine gets it: KV scoped to the tenant, output tokens bounded, and its priority."""
        body = bound_output_tokens(cache_salt(body, tenant, self.kv_scope), self.max_output_tokens,
                                   self.catalog.context_length(model))
        return self.gate.prioritized(body, priority)

    async def _json(self, path: str, body: dict) -> dict:
        self.gate.enter()
        try:
            return await self.client.post_json(path, body)
        finally:
            self.gate.leave()

    async def _stream(self, path: str, body: dict, lease: AdapterLease | None) -> EngineStream:
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
        except StoreUnavailableError as error:  # the reply was delivered; the store is away, and says so elsewhere
            log.warning("tenant %s: chat not recorded in memory: %s", chat.tenant, error.reason)
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
