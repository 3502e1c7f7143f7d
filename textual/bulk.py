"""Changes to many memories of one tenant at once: delete all of a user's memories, and a batch of updates and
deletes. Each item of a batch is applied on its own (as `TenantMemory.update` / `delete` would), so one bad item
fails alone and the others go ahead; its outcome says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from textual.errors import InvalidMemoryError, MemoryNotFoundError
from textual.memory import Memory, check_identifier

MAX_BATCH = 100  # operations in one batch: one request never holds a tenant's lock for long
DELETE_CHUNK = 1000  # memories removed per transaction by `delete_user`
UPDATE_FIELDS = frozenset({"content", "metadata", "importance", "strength", "tier", "ttl_s", "expires_at"})


@dataclass(frozen=True)
class Outcome:
    """What happened to one batch operation: the memory after an update, or the error that refused it."""

    index: int
    op: str
    memory_id: str
    memory: Memory | None = None
    error: InvalidMemoryError | MemoryNotFoundError | None = None


def delete_user(handle, user: str) -> int:
    """Delete every memory of `user` in the tenant (with their histories); returns how many there were."""
    user = check_identifier("user", user)
    ids = [memory.id for memory in handle._store.db.each_memory(handle.tenant) if memory.user == user]
    removed = 0
    for start in range(0, len(ids), DELETE_CHUNK):
        removed += len(handle._store.remove(handle.tenant, ids[start:start + DELETE_CHUNK]))
    return removed


def apply_batch(handle, operations: Sequence[Mapping[str, Any]]) -> list[Outcome]:
    """Apply each `{"op": "update", "id", <fields>}` or `{"op": "delete", "id"}` in order; one outcome each."""
    if not isinstance(operations, Sequence) or not 1 <= len(operations) <= MAX_BATCH:
        raise InvalidMemoryError("operations", f"must be a list of 1 to {MAX_BATCH} operations")
    return [_apply(handle, index, operation) for index, operation in enumerate(operations)]


def _apply(handle, index: int, operation: Mapping[str, Any]) -> Outcome:
    op, memory_id = operation.get("op"), operation.get("id")
    fields = {key: value for key, value in operation.items() if key not in ("op", "id")}
    try:
        if op == "delete" and not fields:
            handle.delete(memory_id)
            return Outcome(index, op, memory_id)
        if op == "update" and fields and set(fields) <= UPDATE_FIELDS:
            return Outcome(index, op, memory_id, handle.update(memory_id, **fields))
        allowed = ", ".join(sorted(UPDATE_FIELDS))
        raise InvalidMemoryError(f"operations[{index}]", f"must be {{op: delete, id}} or {{op: update, id, and one "
                                                         f"or more of {allowed}}}")
    except (InvalidMemoryError, MemoryNotFoundError) as error:
        return Outcome(index, str(op), str(memory_id), error=error)
