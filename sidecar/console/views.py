"""What each console page shows: API calls (through `ConsoleAPI`) turned into template values. No HTTP here."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any, Mapping

from sidecar.console import charts
from sidecar.console.api import ConsoleAPI, ConsoleAPIError, path_segment
from sidecar.console.sessions import PlaygroundTurn

MEMORY_TYPES = ("fact", "preference", "event", "episode", "tool_schema", "tool_trajectory", "image", "document_chunk")
TIERS = ("hot", "warm", "cold", "archived")
FILTERS = ("user_id", "type", "tier", "kb_id", "since", "until", "contains", "q")
PLAYGROUND_MAX_TOKENS = 48


def date_to_epoch(text: str | None, end_of_day: bool = False) -> float | None:
    """A `YYYY-MM-DD` form date as UTC epoch seconds (its start, or its last moment), None when empty."""
    if not text:
        return None
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    except ValueError:
        raise ConsoleAPIError(400, f"dates are YYYY-MM-DD, got {text!r}") from None
    return day.timestamp() + (86_400 - 1e-3 if end_of_day else 0)


def memories_defaults(query: Mapping[str, str]) -> dict[str, Any]:
    """What the memories page needs to draw its forms even when the API refused the view."""
    return {"filters": {key: query.get(key, "") for key in FILTERS}, "users": [], "kbs": [],
            "memory_types": MEMORY_TYPES, "tiers": TIERS}


async def memories_view(api: ConsoleAPI, query: Mapping[str, str]) -> dict[str, Any]:
    """Users, knowledge bases, and the chosen user's memories: filtered, or ranked by a semantic search."""
    filters = {key: query.get(key, "") for key in FILTERS}
    users, kbs = await asyncio.gather(api.get("/v1/users"), api.get("/v1/kbs"))
    since, until = date_to_epoch(filters["since"]), date_to_epoch(filters["until"], end_of_day=True)
    if filters["q"]:
        body = {"query": filters["q"], "top_k": 20, "user_id": filters["user_id"] or None,
                "types": [filters["type"]] if filters["type"] else None,
                "kb_ids": [filters["kb_id"]] if filters["kb_id"] else None, "since": since, "until": until}
        if filters["tier"] in ("hot", "warm", "cold"):
            body["tiers"] = [filters["tier"]]
        result = await api.post("/v1/memories/search", {k: v for k, v in body.items() if v is not None})
        rows, searched = result["results"], True
    else:
        listing = await api.get("/v1/memories", user_id=filters["user_id"], type=filters["type"],
                                tier=filters["tier"], kb_id=filters["kb_id"], since=since, until=until,
                                contains=filters["contains"], limit=200)
        rows, searched = listing["data"], False
    return {"users": users["data"], "kbs": kbs["data"], "memories": rows, "searched": searched}


async def memory_view(api: ConsoleAPI, memory_id: str) -> dict[str, Any]:
    path_segment(memory_id, "memory_id")
    memory, strength = await asyncio.gather(api.get(f"/v1/memories/{memory_id}"),
                                            api.get(f"/v1/memories/{memory_id}/strength"))
    return {"memory": memory, "strength": strength, "chart": strength_chart(strength)}


def strength_chart(strength: Mapping[str, Any]) -> charts.Chart:
    """The forgetting curve with the tier thresholds as rules and the recorded accesses as marks."""
    points = [(p["time"], p["strength"]) for p in strength["points"]]
    thresholds = strength["thresholds"]
    top = max([s for _, s in points] + [thresholds["hot"] * 1.2])
    marks = [t for t in strength["accesses"] if t >= points[0][0] - strength["half_life_s"] * 4]
    return charts.line_chart([("strength", points)], y_max=top, fmt=lambda v: f"{v:.2f}", markers=marks,
                             rules=[(thresholds["hot"], "hot"), (thresholds["warm"], "warm"),
                                    (thresholds["archive"], "archive")])


async def lifecycle_view(api: ConsoleAPI, query: Mapping[str, str]) -> dict[str, Any]:
    """How the tenant's (or one user's) memories spread over the tiers, and a chosen memory's curve."""
    user_id = query.get("user_id", "")
    users = (await api.get("/v1/users"))["data"]
    chosen = [u for u in users if u["user_id"] == user_id] if user_id else users
    totals = {tier: sum(u["by_tier"].get(tier, 0) for u in chosen) for tier in TIERS}
    context: dict[str, Any] = {"users": users, "user_id": user_id, "totals": totals,
                               "tier_chart": charts.bar_chart(list(totals.items()), fmt=lambda v: f"{v:.0f}")}
    if user_id:
        context["memories"] = (await api.get("/v1/memories", user_id=user_id, limit=200))["data"]
    memory_id = query.get("memory_id")
    if memory_id:
        context.update(await memory_view(api, path_segment(memory_id, "memory_id")))
    return context


async def playground_turn(api: ConsoleAPI, history: list[PlaygroundTurn], user_id: str, message: str, *,
                          inject: bool, write: bool) -> PlaygroundTurn:
    """Send `message` as `user_id` after that user's earlier playground turns; what came back and what memory did."""
    messages: list[dict[str, str]] = []
    for turn in history:
        if turn.user_id == user_id:
            messages += [{"role": "user", "content": turn.message}, {"role": "assistant", "content": turn.reply}]
    messages.append({"role": "user", "content": message})
    body = {"messages": messages, "user": user_id, "max_tokens": PLAYGROUND_MAX_TOKENS, "temperature": 0,
            "memory": {"inject": inject, "write": write}}
    result = await api.post("/v1/chat/completions", body)
    usage = result.get("usage") or {}
    memory = result.get("memory") or {"ids": [], "tokens": 0}
    injected = await asyncio.gather(*(_memory_or_gone(api, memory_id) for memory_id in memory["ids"]))
    return PlaygroundTurn(user_id, message, result["choices"][0]["message"].get("content") or "", list(injected),
                          int(memory.get("tokens", 0)), int(usage.get("prompt_tokens", 0)),
                          (usage.get("prompt_tokens_details") or {}).get("cached_tokens"))


async def _memory_or_gone(api: ConsoleAPI, memory_id: str) -> dict[str, Any]:
    try:
        return await api.get(f"/v1/memories/{path_segment(memory_id, 'memory_id')}")
    except ConsoleAPIError:
        return {"id": memory_id, "content": "(deleted since)", "type": "", "tier": ""}


async def adapters_view(api: ConsoleAPI) -> dict[str, Any]:
    """Adapters with residency, and distillation jobs; a sidecar without LoRA says so instead."""
    try:
        adapters, jobs = await asyncio.gather(api.get("/v1/adapters"), api.get("/v1/adapters/jobs"))
    except ConsoleAPIError as error:
        if error.status == 404:
            return {"enabled": False}
        raise
    return {"enabled": True, "adapters": adapters["data"], "jobs": jobs["data"],
            "users": (await api.get("/v1/users"))["data"]}


async def tiers_view(api: ConsoleAPI) -> dict[str, Any]:
    """Budgets and usage per tier now, and KV tier figures over time."""
    tiers, history = await asyncio.gather(api.get("/v1/tiers"), api.get("/v1/tiers/history"))
    samples = history["samples"]
    return {"tiers": tiers, "samples": samples[-1:], "usage_chart": usage_chart(tiers),
            "budget_chart": budget_chart(tiers.get("scheduler") or {}), "history_charts": history_charts(samples)}


def budget_chart(scheduler: Mapping[str, Any]) -> charts.Chart:
    """The tier scheduler's budget and the usage its last pass left, per tier (engine, CPU RAM, disk)."""
    budgets = scheduler.get("budgets") or {}
    usage = (scheduler.get("last_pass") or {}).get("usage") or {}
    items: list[tuple[str, float]] = []
    for field, name in (("engine_bytes", "engine"), ("cpu_bytes", "CPU RAM"), ("disk_bytes", "disk")):
        if budgets.get(field) is not None:
            items += [(f"{name} budget", budgets[field]), (f"{name} used", usage.get(field) or 0)]
    return charts.bar_chart(items, fmt=charts.human_bytes)


def usage_chart(tiers: Mapping[str, Any]) -> charts.Chart:
    """Bytes held now by each store: KV on disk, adapters, memory indexes in RAM, memory records on disk."""
    disk = tiers.get("disk", {})
    ram = tiers.get("cpu_ram", {})
    items = [("KV blocks (disk)", disk.get("kv_lmdb", {}).get("bytes") or 0),
             ("adapters (disk)", disk.get("adapters", {}).get("blob_bytes") or 0),
             ("memory records (disk)", disk.get("memory_lmdb", {}).get("bytes") or 0),
             ("memory vectors (RAM)", ram.get("memory_indexes", {}).get("vector_bytes") or 0),
             ("adapters (engine)", tiers.get("engine", {}).get("adapter_slots", {}).get("loaded_bytes") or 0)]
    return charts.bar_chart(items, fmt=charts.human_bytes)


def history_charts(samples: list[Mapping[str, Any]]) -> list[tuple[str, charts.Chart]]:
    """Entries, bytes, hit rate and load bandwidth per KV tier over the sampled window."""
    def series(field: str) -> list[tuple[str, list[tuple[float, float | None]]]]:
        names = sorted({name for sample in samples for name in sample["tiers"]})
        return [(name, [(s["time"], s["tiers"].get(name, {}).get(field)) for s in samples]) for name in names]

    return [("KV entries", charts.line_chart(series("entries"), fmt=lambda v: f"{v:.0f}")),
            ("KV bytes", charts.line_chart(series("bytes"), fmt=charts.human_bytes)),
            ("Hit rate per interval", charts.line_chart(series("hit_rate"), y_max=1.0, fmt=lambda v: f"{v:.0%}")),
            ("Load bandwidth per interval", charts.line_chart(series("load_bytes_per_s"),
                                                              fmt=lambda v: charts.human_bytes(v) + "/s"))]
