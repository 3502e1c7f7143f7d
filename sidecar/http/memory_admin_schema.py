"""Pydantic models and JSON shapes of the routes that manage memories as records: history, batch changes, delete-all,
export and import. Bounds here are the HTTP edge's; `textual` re-checks every value it is given."""

from __future__ import annotations

from typing import Any, Literal, Sequence

from pydantic import Field, StrictStr

from sidecar.http.errors import as_api_error
from sidecar.http.memory_schema import Number, _Strict, memory_json
from sidecar.limits import ID_REGEX, TierName
from textual.bulk import MAX_BATCH, Outcome
from textual.history import Version, version_json
from textual.memory import MAX_TTL_S
from textual.transfer import ImportReport


def history_json(memory_id: str, versions: Sequence[Version], limit: int) -> dict[str, Any]:
    """One page of a memory's versions (`versions` holds up to `limit` + 1: the extra one only says more follow)."""
    page = list(versions[:limit])
    return {"id": memory_id, "data": [version_json(v) for v in page], "has_more": len(versions) > limit,
            "next_after": page[-1].seq if page else None}


class BatchOperation(_Strict):
    op: Literal["update", "delete"]
    id: StrictStr = Field(pattern=ID_REGEX)
    content: StrictStr | None = Field(None, min_length=1)
    metadata: dict[str, Any] | None = None
    importance: Number | None = Field(None, ge=0, le=1)
    strength: Number | None = Field(None, ge=0)
    tier: TierName | None = None
    ttl_s: Number | None = Field(None, ge=1, le=MAX_TTL_S)
    expires_at: Number | None = None  # null: never expire


class Batch(_Strict):
    operations: list[BatchOperation] = Field(min_length=1, max_length=MAX_BATCH)


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    """One batch operation's outcome: `status` as the single-memory route would answer (200, 400 or 404)."""
    body: dict[str, Any] = {"index": outcome.index, "op": outcome.op, "id": outcome.memory_id}
    if outcome.error is not None:
        error = as_api_error(outcome.error)
        return {**body, "status": error.status,
                "error": {"message": error.message, "code": error.code, "param": error.param}}
    if outcome.memory is not None:
        body["memory"] = memory_json(outcome.memory)
    return {**body, "status": 200}


def import_json(report: ImportReport) -> dict[str, Any]:
    return {"imported": report.imported, "reembedded": report.reembedded, "remapped": report.remapped}
