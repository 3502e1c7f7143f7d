"""Facts, preferences and events extracted from stored chat turns through the engine.

Rules: the episodes are stored first (the plain path) and extraction never fails a chat or a write. One extraction
is one chat completion with structured outputs (`response_format` json_schema from `textual.extraction`, temperature
0, a bounded answer) under the tenant's KV scope; what the answer holds is stored through the tenant's memory, so a
near-duplicate merges and a changed fact supersedes as for any other memory. An engine error, a timeout or an
unusable answer is logged and counted (`MemoryExtractor.runs`, exported as Prometheus counters), never raised.
An extraction takes a slot of the engine gate like a chat: when the engine is saturated it fails (counted) rather
than queue behind the chats it serves.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi.concurrency import run_in_threadpool

from sidecar.chat.catalog import ModelCatalog
from sidecar.chat.errors import ChatError
from sidecar.chat.gate import EngineGate
from sidecar.chat.kv_scope import cache_salt
from sidecar.engine.client import EngineClient, reply_text
from sidecar.engine.errors import EngineError
from sidecar.tenants.quotas import QuotaExceeded
from textual.extraction import Extraction, SourceTurn, answer_schema, parse_answer, prompt_messages, recent_turns
from textual.memory import Memory
from textual.store import MemoryStore

log = logging.getLogger("memsidecar.extraction")


@dataclass(frozen=True)
class ExtractionOutcome:
    """What one extraction left: the memories now holding its results, the answer's dropped items, any error."""

    memories: tuple[Memory, ...] = ()
    dropped: int = 0
    error: str | None = None


class MemoryExtractor:
    """Asks the engine's `model` (None: the default model) for the memories in a batch of stored episodes.

    `runs` counts extractions by outcome (`done`, `failed`), `memories` the answers' items (`stored`, `dropped`).
    """

    def __init__(self, client: EngineClient, catalog: ModelCatalog, gate: EngineGate, store: MemoryStore,
                 model: str | None, max_tokens: int, kv_scope: str) -> None:
        self.client = client
        self.catalog = catalog
        self.gate = gate
        self.store = store
        self.model = model
        self.max_tokens = max_tokens
        self.kv_scope = kv_scope
        self.runs: Counter[str] = Counter()
        self.memories: Counter[str] = Counter()
        self._tasks: set[asyncio.Task] = set()

    async def extract(self, tenant: str, episodes: Sequence[Memory]) -> ExtractionOutcome:
        """Extract from the episodes (one user's, just stored) and store the results; never raises."""
        turns = recent_turns([SourceTurn.of_episode(episode) for episode in episodes])
        if not turns:
            return ExtractionOutcome()
        try:
            model = await self.catalog.resolve(self.model)
            result = await self._ask(model, tenant, turns)
            parsed = parse_answer(reply_text(result), turns)
            stored = await run_in_threadpool(self._store, tenant, episodes[0], turns, parsed, model)
        except (EngineError, ChatError) as error:
            return self._failed(tenant, f"the engine call failed: {error}")
        except QuotaExceeded as error:  # the tenant's engine share or memory quota is used up
            return self._failed(tenant, str(error))
        except Exception as error:  # an internal fault: logged with its trace and counted, the write stands
            log.exception("memory extraction for tenant %s failed", tenant)
            return self._failed(tenant, f"extraction failed: {type(error).__name__}")
        self.runs["done"] += 1
        self.memories["stored"] += len(stored)
        self.memories["dropped"] += parsed.dropped
        if parsed.dropped:
            log.info("memory extraction for tenant %s dropped %d answer item(s) (finish reason: %s)", tenant,
                     parsed.dropped, _finish_reason(result))
        return ExtractionOutcome(tuple(stored), parsed.dropped)

    def schedule(self, tenant: str, episodes: Sequence[Memory]) -> None:
        """Extract in the background, off the response path; `drain` waits for it."""
        task = asyncio.get_running_loop().create_task(self.extract(tenant, episodes))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for every background extraction (at shutdown, before the engine stops)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _ask(self, model: str, tenant: str, turns: Sequence[SourceTurn]) -> dict:
        body = {
            "model": model, "messages": prompt_messages(turns), "temperature": 0, "max_tokens": self.max_tokens,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "memories", "schema": answer_schema(turns), "strict": True}},
        }
        priority = self.gate.enter(tenant)
        try:
            return await self.client.post_json("/v1/chat/completions",
                                               self.gate.prioritized(cache_salt(body, tenant, self.kv_scope), priority))
        finally:
            self.gate.leave(tenant)

    def _store(self, tenant: str, episode: Memory, turns: Sequence[SourceTurn], parsed: Extraction,
               model: str) -> list[Memory]:
        """Store each extracted memory in the episodes' scopes (user, kb, agent, run, space), dated by its newest
        source turn."""
        handle = self.store.for_tenant(tenant)
        times = {turn.turn_id: turn.time for turn in turns}
        return [handle.add(memory.content, user=episode.user, type=memory.type.value, kb_id=episode.kb_id,
                           agent=episode.agent, run=episode.run, space=episode.space,
                           source=memory.source, metadata={"extracted_by": model},
                           created_at=max(times[turn_id] for turn_id in memory.source))
                for memory in parsed.memories]

    def _failed(self, tenant: str, message: str) -> ExtractionOutcome:
        self.runs["failed"] += 1
        log.warning("memory extraction for tenant %s: %s", tenant, message)
        return ExtractionOutcome(error=message)


def _finish_reason(result: dict) -> str:
    """Why the engine stopped answering ("length": the answer was cut at max_tokens)."""
    choices = result.get("choices")
    first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    return str(first.get("finish_reason"))
