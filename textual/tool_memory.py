"""Tool memory of one tenant: registered tool schemas and the trajectories of their calls.

A tool is a `tool_schema` memory (user `TOOL_USER`) holding its schema in `metadata["schema"]`, keyed by
`metadata["tool_name"]`; registering a name again replaces its schema. A trajectory is a `tool_trajectory` memory
whose `metadata["tool_id"]` (and `source`) is the schema memory's id. The schema memory keeps the running counts of
successes and failures and the ids of its newest trajectories, so counts survive trajectories being forgotten.
Tool schemas are exempt from the lifecycle by default, so they stay in the resident index where lookups go.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any, Mapping

from textual.errors import InvalidMemoryError
from textual.history import ChangeKind
from textual.memory import LifecycleTier, Memory, MemoryType, check_content, check_time
from textual.tools import ToolMatch, check_tool_schema, check_trajectory, tool_content, trajectory_content, with_outcome

TOOL_USER = "tools"
MAX_TOOLS_K = 100


def register_tool(handle, schema: Mapping[str, Any]) -> Memory:
    """Store (or replace) a tool schema; returns its memory."""
    full = check_tool_schema(schema)
    name = full["function"]["name"]
    store = handle._store
    content = check_content(tool_content(full), store.max_content_chars)
    store.admit(handle.tenant, [content])
    vector = store.embedder.embed([content])
    with store.tenant_lock(handle.tenant):
        now = store.clock()
        existing = find_tool(handle, name)
        if existing is None:
            memory = Memory(id=uuid.uuid4().hex, tenant=handle.tenant, user=TOOL_USER, type=MemoryType.TOOL_SCHEMA,
                            content=content, created_at=now, updated_at=now, last_access_at=now, importance=0.7,
                            metadata={"tool_name": name, "schema": full, "successes": 0, "failures": 0,
                                      "recent": []})
        else:
            memory = replace(existing, content=content, metadata={**existing.metadata, "schema": full},
                             updated_at=max(now, existing.created_at))
        why = ChangeKind.CREATE if existing is None else ChangeKind.UPDATE
        store.write(handle.tenant, [memory], vector, why)
    return memory


def find_tool(handle, name: str) -> Memory | None:
    """The resident schema memory of the tool called `name`, or None."""
    index = handle._store.index(handle.tenant)
    return next((m for m in index.memories.values()
                 if m.type is MemoryType.TOOL_SCHEMA and m.metadata.get("tool_name") == name), None)


def record_trajectory(handle, tool_name: str, arguments: Mapping[str, Any], result_summary: str, success: bool,
                      latency_ms: float, created_at: float | None = None) -> Memory:
    """Store one call of a registered tool and count its outcome on the tool; returns the trajectory memory."""
    check_trajectory(arguments, result_summary, success, latency_ms)
    store = handle._store
    if not isinstance(tool_name, str) or find_tool(handle, tool_name) is None:
        raise InvalidMemoryError("tool_name", f"no registered tool {tool_name!r}; register_tool it first")
    content = check_content(trajectory_content(tool_name, arguments, result_summary, success),
                            store.max_content_chars)
    store.admit(handle.tenant, [content])
    vector = store.embedder.embed([content])[0]
    with store.tenant_lock(handle.tenant):
        tool = find_tool(handle, tool_name)
        if tool is None:
            raise InvalidMemoryError("tool_name", f"no registered tool {tool_name!r}; register_tool it first")
        now = store.clock()
        created = now if created_at is None else check_time("created_at", created_at)
        trajectory = Memory(
            id=uuid.uuid4().hex, tenant=handle.tenant, user=TOOL_USER, type=MemoryType.TOOL_TRAJECTORY,
            content=content, created_at=created, updated_at=max(created, now), last_access_at=created,
            source=(tool.id,), metadata={"tool_name": tool_name, "tool_id": tool.id, "arguments": dict(arguments),
                                         "result_summary": result_summary, "success": success,
                                         "latency_ms": float(latency_ms)})
        counted = replace(tool, metadata=with_outcome(tool.metadata, trajectory.id, success))
        store.write(handle.tenant, [trajectory, counted], [vector, None], [ChangeKind.CREATE, ChangeKind.UPDATE])
    return trajectory


def search_tools(handle, query: str, k: int = 5) -> list[ToolMatch]:
    """The `k` tools most relevant to `query`, found by their schemas or by their past trajectories."""
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_TOOLS_K:
        raise InvalidMemoryError("k", f"must be an integer in [1, {MAX_TOOLS_K}], got {k!r}")
    result = handle.search(query, k=min(1000, 8 * k), types=["tool_schema", "tool_trajectory"])
    scores: dict[str, float] = {}
    for hit in result.hits:
        tool_id = hit.memory.id if hit.memory.type is MemoryType.TOOL_SCHEMA else hit.memory.metadata["tool_id"]
        scores[tool_id] = max(scores.get(tool_id, 0.0), hit.score)
    db = handle._store.db
    matches = []
    for tool_id in sorted(scores, key=lambda key: (-scores[key], key)):
        tool = db.get(handle.tenant, tool_id)
        if tool is None or tool.tier is LifecycleTier.ARCHIVED:
            continue
        recent = tuple(m for m in (db.get(handle.tenant, i) for i in tool.metadata.get("recent", [])) if m)
        matches.append(ToolMatch(tool, scores[tool_id], int(tool.metadata.get("successes", 0)),
                                 int(tool.metadata.get("failures", 0)), recent))
    return matches[:k]
