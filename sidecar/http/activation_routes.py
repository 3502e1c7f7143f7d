"""Activation memory over HTTP: tier statistics, pinning a text's KV blocks, prefetching a text into RAM.

The KV store belongs to the engine's connector; the sidecar reaches it two ways. Statistics come from the disk and
shared tiers opened read-mostly in this process (LMDB allows several processes). Pin, unpin and prefetch are
1-token completions of the text through the engine, in the caller's KV scope: the connector pins (or unpins) the
prompt's blocks when the request carries `kv_transfer_params: {"memsidecar_pin": ...}`, and any completion loads
stored blocks into the RAM tier. Pin records (id, tenant, text) are kept in one JSON file, replaced atomically.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from kvcache.store import TieredStore
from sidecar.chat.kv_scope import cache_salt
from sidecar.chat.pins import Pin, PinBook
from sidecar.chat.service import ChatService
from sidecar.http.access import Caller
from sidecar.tenants.quota_book import QuotaBook
from sidecar.tenants.quotas import Resource

MAX_PIN_CHARS = 200_000
PIN_ID_REGEX = r"^[0-9a-f]{32}$"  # uuid4().hex


class TextRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: StrictStr = Field(min_length=1, max_length=MAX_PIN_CHARS, description="The prompt text whose KV to keep.")
    model: StrictStr | None = Field(None, max_length=256, description="Served model; unset: the default model.")


def activation_router(chat: ChatService, store: TieredStore, pins: PinBook, kv_scope: str, caller,
                      book: QuotaBook | None = None) -> APIRouter:
    """The `/v1/activations` routes over the engine connector's store (opened here without a RAM tier)."""
    router = APIRouter(prefix="/v1/activations", tags=["activations"])

    async def one_token(text: str, model: str | None, tenant: str, extra: dict[str, Any]) -> tuple[str, int]:
        name = await chat.catalog.resolve(model)
        body = cache_salt({"model": name, "prompt": text, "max_tokens": 1, "temperature": 0, **extra}, tenant,
                          kv_scope)
        result = await chat.client.post_json("/v1/completions", body)
        return name, int(result.get("usage", {}).get("prompt_tokens", 0))

    @router.get("")
    async def stats(who: Caller = Depends(caller)) -> dict:
        return {"tiers": store.stats(), "pins": [_pin_json(pin) for pin in pins.of(who.tenant)],
                "note": "tier figures cover every tenant (this process sees the disk and shared tiers)"}

    @router.post("/pin")
    async def pin(body: TextRequest, who: Caller = Depends(caller)) -> dict:
        if book is not None:
            book.check(who.tenant, Resource.PINNED_KV)
        model, tokens = await one_token(body.text, body.model, who.tenant,
                                        {"kv_transfer_params": {"memsidecar_pin": True}})
        record = Pin(uuid.uuid4().hex, who.tenant, body.text, model, tokens, time.time())
        pins.add(record)
        return _pin_json(record)

    @router.delete("/pin/{pin_id}")
    async def unpin(pin_id: Annotated[str, PathParam(pattern=PIN_ID_REGEX)], who: Caller = Depends(caller)) -> dict:
        record = pins.get(pin_id, who.tenant)
        await one_token(record.text, record.model, who.tenant, {"kv_transfer_params": {"memsidecar_pin": False}})
        pins.remove(pin_id)
        return {"id": pin_id, "deleted": True}

    @router.post("/prefetch")
    async def prefetch(body: TextRequest, who: Caller = Depends(caller)) -> dict:
        model, tokens = await one_token(body.text, body.model, who.tenant, {})
        return {"model": model, "tokens": tokens}

    return router


def _pin_json(pin: Pin) -> dict[str, Any]:
    return {"id": pin.id, "model": pin.model, "tokens": pin.tokens, "created_at": pin.created_at,
            "text_preview": pin.text[:200]}
