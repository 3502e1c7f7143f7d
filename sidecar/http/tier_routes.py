"""`GET /v1/tiers` (budgets and usage of every tier now) and `GET /v1/tiers/history` (the KV tiers over time), for
any signed-in caller: the figures cover the whole sidecar and name no tenant's objects."""

from __future__ import annotations

from typing import Any, Callable

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from sidecar.scheduler.history import TierHistory


def tier_router(history: TierHistory, caller, report: Callable[[], dict[str, Any]]) -> APIRouter:
    """The tier routes; `report` gives the current figures (it reads files: called in a worker thread)."""
    router = APIRouter(prefix="/v1/tiers", tags=["tiers"])

    @router.get("")
    async def tiers(who=Depends(caller)) -> dict:
        return await run_in_threadpool(report)

    @router.get("/history")
    async def tier_history(who=Depends(caller)) -> dict:
        return {"interval_note": "per-interval hit rate and load bandwidth; usage as sampled",
                "samples": history.samples()}

    return router
