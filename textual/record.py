"""The on-disk format of one memory record and its embedding, as stored in LMDB.

Record: UTF-8 JSON, keys sorted, no whitespace, with `"v": 1` as the format version; `source` is a list,
`type` and `tier` their string values; `accesses` (recent access times) is written only when there are
some, `expires_at` and the scopes `agent`, `run` and `space` (strings) only when set, so records written before
they existed read back unchanged.
Embedding: the vector as little-endian float32 bytes, nothing else.
Knowledge base: UTF-8 JSON, keys sorted, no whitespace, `"v": 1`, fields of `KnowledgeBase`.
Space: UTF-8 JSON, keys sorted, no whitespace, `"v": 1`, fields of `textual.spaces.Space`; `members` maps a
principal (`user:ID` or `agent:ID`) to its grant, `"read"` or `"write"`.
Key: `tenant` + NUL + `id` (of a memory or of a knowledge base), UTF-8 (ids cannot hold NUL, so one tenant's
keys are a contiguous prefix range).
Time key (the `by_time` index; its value is the memory id): `tenant` + NUL + `created_at` as 8 bytes that sort as
the float does (IEEE big-endian, sign bit flipped for positives, all bits flipped for negatives) + the session
(metadata `session`, UTF-8) + NUL + the position (metadata `position`, an int, else 0) plus 2^63 as 8 big-endian
bytes + `id`. Bytewise order of one tenant's time keys is `textual.context.time_order`.
User stats (the `users` index): key `tenant` + NUL + `user`; value UTF-8 JSON, keys sorted, no whitespace, `"v": 1`,
`count`, `by_tier` (tier -> count) and `updated_at` (the newest `updated_at` written, not lowered by deletes).
"""

from __future__ import annotations

import json
import struct

import numpy as np

from textual.memory import KnowledgeBase, LifecycleTier, Memory, MemoryType, Space

FORMAT_VERSION = 1
SCOPE_FIELDS = ("agent", "run", "space")  # optional: written only when set
_SEPARATOR = b"\x00"


def encode_key(tenant: str, memory_id: str = "") -> bytes:
    """The LMDB key of a memory; with no id, the prefix shared by all of `tenant`'s keys."""
    return tenant.encode() + _SEPARATOR + memory_id.encode()


def decode_key(key: bytes) -> tuple[str, str]:
    """(tenant, id) of a key made by `encode_key`."""
    tenant, memory_id = bytes(key).split(_SEPARATOR, 1)
    return tenant.decode(), memory_id.decode()


def encode_memory(memory: Memory) -> bytes:
    """The record bytes of `memory`."""
    body = {
        "v": FORMAT_VERSION, "id": memory.id, "tenant": memory.tenant, "user": memory.user,
        "kb_id": memory.kb_id, "type": memory.type.value, "content": memory.content,
        "metadata": dict(memory.metadata), "source": list(memory.source),
        "created_at": memory.created_at, "updated_at": memory.updated_at,
        "last_access_at": memory.last_access_at, "access_count": memory.access_count,
        "importance": memory.importance, "strength": memory.strength, "tier": memory.tier.value,
    }
    if memory.accesses:
        body["accesses"] = list(memory.accesses)
    if memory.expires_at is not None:
        body["expires_at"] = memory.expires_at
    for scope in SCOPE_FIELDS:
        if getattr(memory, scope) is not None:
            body[scope] = getattr(memory, scope)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def decode_memory(data: bytes) -> Memory:
    """The memory in record bytes; raises ValueError on an unknown format version."""
    body = json.loads(bytes(data))
    if body.pop("v", None) != FORMAT_VERSION:
        raise ValueError(f"memory record has unknown format version; expected {FORMAT_VERSION}")
    body["type"] = MemoryType(body["type"])
    body["tier"] = LifecycleTier(body["tier"])
    body["source"] = tuple(body["source"])
    body["accesses"] = tuple(body.get("accesses", ()))
    return Memory(**body)


def encode_kb(kb: KnowledgeBase) -> bytes:
    """The record bytes of a knowledge base."""
    return _versioned_bytes({"id": kb.id, "tenant": kb.tenant, "name": kb.name, "description": kb.description,
                             "created_at": kb.created_at, "metadata": dict(kb.metadata)})


def decode_kb(data: bytes) -> KnowledgeBase:
    """The knowledge base in record bytes; raises ValueError on an unknown format version."""
    return KnowledgeBase(**_versioned_body(data, "knowledge base"))


def encode_space(space: Space) -> bytes:
    """The record bytes of a shared memory space."""
    return _versioned_bytes({"id": space.id, "tenant": space.tenant, "name": space.name,
                             "created_at": space.created_at, "members": dict(space.members)})


def decode_space(data: bytes) -> Space:
    """The space in record bytes; raises ValueError on an unknown format version."""
    return Space(**_versioned_body(data, "space"))


def _versioned_bytes(body: dict) -> bytes:
    """`body` with `"v": FORMAT_VERSION` as sorted, compact UTF-8 JSON."""
    return json.dumps({"v": FORMAT_VERSION, **body}, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _versioned_body(data: bytes, what: str) -> dict:
    """The JSON object in `data` without its `v`; ValueError naming `what` when `v` is not FORMAT_VERSION."""
    body = json.loads(bytes(data))
    if body.pop("v", None) != FORMAT_VERSION:
        raise ValueError(f"{what} record has unknown format version; expected {FORMAT_VERSION}")
    return body


def encode_vector(vector: np.ndarray) -> bytes:
    """Little-endian float32 bytes of a 1-d vector."""
    return np.ascontiguousarray(vector, dtype="<f4").reshape(-1).tobytes()


def decode_vector(data: bytes) -> np.ndarray:
    """A float32 vector copied out of `data` (safe to keep after the LMDB transaction ends)."""
    return np.frombuffer(bytes(data), dtype="<f4").astype(np.float32)


def encode_time_key(memory: Memory) -> bytes:
    """The `by_time` key of `memory` (see the module docstring)."""
    position = memory.metadata.get("position", 0)
    position = position if isinstance(position, int) and not isinstance(position, bool) else 0
    position = min(max(position, -(1 << 63)), (1 << 63) - 1) + (1 << 63)
    return (encode_key(memory.tenant) + sortable_time(memory.created_at)
            + str(memory.metadata.get("session", "")).encode() + _SEPARATOR + struct.pack(">Q", position)
            + memory.id.encode())


def sortable_time(seconds: float) -> bytes:
    """8 bytes whose bytewise order is the numeric order of `seconds`."""
    bits = struct.unpack(">Q", struct.pack(">d", seconds))[0]
    bits = bits ^ (1 << 63) if not bits >> 63 else bits ^ ((1 << 64) - 1)
    return struct.pack(">Q", bits)


def encode_user_stats(count: int, by_tier: dict[str, int], updated_at: float) -> bytes:
    body = {"v": FORMAT_VERSION, "count": count, "by_tier": by_tier, "updated_at": updated_at}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def decode_user_stats(data: bytes) -> tuple[int, dict[str, int], float]:
    """(count, by_tier, updated_at) of one user's stats value."""
    body = json.loads(bytes(data))
    if body.get("v") != FORMAT_VERSION:
        raise ValueError(f"unknown user stats format version {body.get('v')!r}")
    return body["count"], body["by_tier"], body["updated_at"]
