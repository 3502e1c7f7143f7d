"""`GET /v1/tiers/history`: the tier history's samples, for any signed-in caller (figures name no tenant)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from sidecar.scheduler.history import TierHistory


def tier_history_router(history: TierHistory, caller) -> APIRouter:
    router = APIRouter(prefix="/v1/tiers", tags=["tiers"])

    @router.get("/history")
    async def tier_history(who=Depends(caller)) -> dict:
        return {"interval_note": "per-interval hit rate and load bandwidth; usage as sampled",
                "samples": history.samples()}

    return router
