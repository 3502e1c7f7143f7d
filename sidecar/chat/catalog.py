"""The models the engine serves, as the chat path sees them: names, context lengths, and the default."""

from __future__ import annotations

import re
import time

from sidecar.chat.errors import model_not_found
from sidecar.engine.client import EngineClient

MODELS_TTL_S = 30.0


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
            raise model_not_found(name, sorted(self._names))
        return name
