"""Pydantic models of the memory and knowledge-base REST API, and the JSON shape of a memory record.

Field names follow MemOS's REST API (`user_id`, `content`, `type`, `query`, `top_k`). Bounds here are the HTTP
edge's; `textual` re-checks every value and names the field when it refuses one.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from sidecar.chat.extraction import ExtractionOutcome
from sidecar.limits import ID_REGEX, MAX_TOKEN_BUDGET, MAX_TOP_K, MemoryTypeName, TierName
from textual.errors import InvalidMemoryError
from textual.lifecycle import LifecyclePolicy, strength_curve
from textual.memory import MAX_TTL_S, KnowledgeBase, Memory
from textual.memory_patch import SCOPES
from textual.retriever import SearchResult

Number = StrictFloat | StrictInt


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


ScopeId = StrictStr | None  # an agent, run or space id: checked against ID_REGEX in each model's field
SCOPE_ARGUMENTS = {api: field for field, api in SCOPES.items()}  # API name -> `TenantMemory.update` argument


class AddMemory(_Strict):
    user_id: ScopeId = Field(None, pattern=ID_REGEX)  # None: an agent's own memory (textual refuses no owner)
    agent_id: ScopeId = Field(None, pattern=ID_REGEX)
    run_id: ScopeId = Field(None, pattern=ID_REGEX)
    space_id: ScopeId = Field(None, pattern=ID_REGEX)
    content: StrictStr = Field(min_length=1)
    type: MemoryTypeName = "fact"
    kb_id: StrictStr | None = Field(None, pattern=ID_REGEX)
    metadata: dict[str, Any] | None = None
    source: list[StrictStr] = Field(default_factory=list, max_length=100)
    importance: Number | None = Field(None, ge=0, le=1)
    ttl_s: Number | None = Field(None, ge=1, le=MAX_TTL_S, description="Seconds until the memory expires.")


class SearchMemories(_Strict):
    query: StrictStr = Field(min_length=1, max_length=4000)
    user_id: StrictStr | None = Field(None, pattern=ID_REGEX)
    agent_id: ScopeId = Field(None, pattern=ID_REGEX)
    run_id: ScopeId = Field(None, pattern=ID_REGEX)
    space_id: ScopeId = Field(None, pattern=ID_REGEX)
    filter: dict[str, Any] | None = None  # the filter language of `textual.filter_expr`, checked there
    top_k: StrictInt = Field(10, ge=1, le=MAX_TOP_K)
    token_budget: StrictInt | None = Field(None, ge=1, le=MAX_TOKEN_BUDGET)
    kb_ids: list[StrictStr] | None = Field(None, min_length=1, max_length=100)
    types: list[MemoryTypeName] | None = Field(None, min_length=1)
    tiers: list[Literal["hot", "warm", "cold"]] | None = Field(None, min_length=1)
    since: Number | None = None
    until: Number | None = None


class UpdateMemory(_Strict):
    content: StrictStr | None = Field(None, min_length=1)
    metadata: dict[str, Any] | None = None
    importance: Number | None = Field(None, ge=0, le=1)
    strength: Number | None = Field(None, ge=0)
    tier: TierName | None = None
    ttl_s: Number | None = Field(None, ge=1, le=MAX_TTL_S, description="Expire this many seconds from now.")
    expires_at: Number | None = Field(None, description="Expire at this time (epoch seconds); null: never expire.")
    user_id: ScopeId = Field(None, pattern=ID_REGEX, description="Move it to this user; null: to no user.")
    agent_id: ScopeId = Field(None, pattern=ID_REGEX)
    run_id: ScopeId = Field(None, pattern=ID_REGEX)
    space_id: ScopeId = Field(None, pattern=ID_REGEX, description="Move it into this space (a write grant is "
                                                                  "needed); null: out of its space.")

    def changes(self) -> dict[str, Any]:
        """The fields the request sent, as `TenantMemory.update` arguments: a null sent clears a field (expiry,
        scopes) or is ignored (the others), a field not sent is kept."""
        sent = self.model_dump(exclude_unset=True)
        return {SCOPE_ARGUMENTS.get(name, name): value for name, value in sent.items()}


class Feedback(_Strict):
    kind: Literal["positive", "negative", "correction"]
    text: StrictStr | None = Field(None, min_length=1)


class Turn(_Strict):
    role: Literal["user", "assistant", "system", "tool"]
    content: StrictStr = Field(min_length=1)
    speaker: StrictStr | None = Field(None, min_length=1, max_length=128)
    time: Number | None = None
    session: StrictStr = Field("", max_length=128)
    turn_id: StrictStr | None = Field(None, pattern=ID_REGEX)


class AddMessages(_Strict):
    user_id: ScopeId = Field(None, pattern=ID_REGEX)  # None: an agent's own conversation (agent_id needed)
    agent_id: ScopeId = Field(None, pattern=ID_REGEX)
    run_id: ScopeId = Field(None, pattern=ID_REGEX)
    messages: list[Turn] = Field(min_length=1, max_length=1000)
    kb_id: StrictStr | None = Field(None, pattern=ID_REGEX)
    extract: StrictBool | None = None  # unset: in the background when extraction is on; true: wait; false: skip


class CreateKnowledgeBase(_Strict):
    id: StrictStr = Field(pattern=ID_REGEX)
    name: StrictStr | None = Field(None, min_length=1, max_length=200)
    description: StrictStr = Field("", max_length=2000)
    metadata: dict[str, Any] | None = None


class AddDocument(_Strict):
    text: StrictStr = Field(min_length=1)
    title: StrictStr | None = Field(None, max_length=500)
    metadata: dict[str, Any] | None = None
    chunk_tokens: StrictInt | None = Field(None, ge=16, le=2000)
    overlap_tokens: StrictInt | None = Field(None, ge=0, le=1000)


MAX_FILTER_QUERY_CHARS = 8000


def filter_query(text: str | None) -> Any:
    """The filter tree of a `filter` query parameter (JSON text); InvalidMemoryError("filter") when not JSON."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:  # RecursionError: nested deeper than the parser goes
        raise InvalidMemoryError("filter", f"must be a JSON object: {type(error).__name__}: {error}") from None


def memory_json(memory: Memory, score: float | None = None) -> dict[str, Any]:
    """A memory as the API returns it."""
    body = {
        "id": memory.id, "user_id": memory.user, "type": memory.type.value, "content": memory.content,
        "kb_id": memory.kb_id, "metadata": dict(memory.metadata), "source": list(memory.source),
        "created_at": memory.created_at, "updated_at": memory.updated_at, "last_access_at": memory.last_access_at,
        "access_count": memory.access_count, "importance": memory.importance, "strength": memory.strength,
        "tier": memory.tier.value, "accesses": list(memory.accesses), "expires_at": memory.expires_at,
        "agent_id": memory.agent, "run_id": memory.run, "space_id": memory.space,
    }
    if score is not None:
        body["score"] = score
    return body


def search_json(result: SearchResult) -> dict[str, Any]:
    return {"results": [memory_json(hit.memory, hit.score) for hit in result.hits], "context": result.context,
            "context_tokens": result.context_tokens}


def extraction_json(outcome: ExtractionOutcome) -> dict[str, Any]:
    return {"status": "failed" if outcome.error else "done", "memories": [memory_json(m) for m in outcome.memories],
            "dropped": outcome.dropped, "error": outcome.error}


def kb_json(kb: KnowledgeBase) -> dict[str, Any]:
    return {"id": kb.id, "name": kb.name, "description": kb.description, "created_at": kb.created_at,
            "metadata": dict(kb.metadata)}


def strength_json(memory: Memory, policy: LifecyclePolicy, now: float, points: int) -> dict[str, Any]:
    """The memory's forgetting curve from its last reinforcement to three half-lives past `now`, with its recorded
    accesses and the tier thresholds the curve crosses."""
    horizon = policy.half_life_s * (0.5 + memory.importance)
    curve = strength_curve(memory, policy, max(now, memory.last_access_at) + 3 * horizon, points)
    return {"id": memory.id, "now": now, "tier": memory.tier.value, "importance": memory.importance,
            "half_life_s": horizon, "accesses": list(memory.accesses), "access_count": memory.access_count,
            "points": [{"time": p.time, "strength": p.strength} for p in curve],
            "thresholds": {"hot": policy.hot_above, "warm": policy.warm_above, "archive": policy.archive_below}}
