"""The engine's concurrency bound: per tenant (its share of engine slots) and in all."""

from __future__ import annotations

from sidecar.chat.errors import ChatError, ChatFailure
from sidecar.tenants.quota_book import QuotaBook


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
            raise ChatError(ChatFailure.ENGINE_BUSY,
                            f"the engine already has {self.limit} requests in flight; retry shortly")
        self.in_flight += 1

    def leave(self, tenant: str | None = None) -> None:
        self.in_flight -= 1
        if tenant is not None:
            self.dismiss(tenant)
