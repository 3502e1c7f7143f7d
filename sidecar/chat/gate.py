"""The engine's concurrency bound: per tenant (its share of engine slots) and in all; and each request's engine
priority: a tenant's first request in flight outranks every tenant's second, and so on, so with vLLM's priority
scheduling the engine admits, and under memory pressure keeps, a lightly loaded tenant's requests before a flooding
tenant's extra ones."""

from __future__ import annotations

from sidecar.chat.errors import ChatError, ChatFailure
from sidecar.tenants.quota_book import QuotaBook


class EngineGate:
    """Bounds the requests in flight to the engine: per tenant (429 over its share, from `book`) and in all (503 over
    `limit`). A tenant's slot is taken when its request arrives (`admit`), before any memory or adapter work is done
    for it, and held until its last byte; the shared slot only around the engine call (`enter`/`leave`). With
    `priorities`, the engine runs vLLM's priority scheduling (which refuses a non-zero priority otherwise) and
    `prioritized` puts each request's priority in its body."""

    def __init__(self, limit: int, book: QuotaBook | None = None, priorities: bool = False) -> None:
        self.limit = limit
        self.book = book
        self.priorities = priorities
        self.in_flight = 0

    def admit(self, tenant: str) -> int:
        """Take one of `tenant`'s slots (429 when it holds its share); returns the request's engine priority (lower
        runs first): how many requests the tenant already had in flight."""
        if self.book is None:
            return 0
        with self.book.refusing(tenant):
            return self.book.engine_slots.acquire(tenant)

    def prioritized(self, body: dict, priority: int) -> dict:
        """`body` as the engine gets it: with its `priority` when the engine schedules by priority."""
        return {**body, "priority": priority} if self.priorities else body

    def dismiss(self, tenant: str) -> None:
        if self.book is not None:
            self.book.engine_slots.release(tenant)

    def enter(self, tenant: str | None = None) -> int:
        """Take a shared slot (503 when all are taken), and with `tenant`, one of its slots first; returns the
        request's engine priority (see `admit`)."""
        priority = self.admit(tenant) if tenant is not None else 0
        if self.in_flight >= self.limit:
            if tenant is not None:
                self.dismiss(tenant)
            raise ChatError(ChatFailure.ENGINE_BUSY,
                            f"the engine already has {self.limit} requests in flight; retry shortly")
        self.in_flight += 1
        return priority

    def leave(self, tenant: str | None = None) -> None:
        self.in_flight -= 1
        if tenant is not None:
            self.dismiss(tenant)
