"""The version history of memories: one version per change of a memory, stored outside its record.

A version says who changed the memory (the tenant for its own calls, "lifecycle" for the background pass), when
(epoch seconds), why (`ChangeKind`), which fields changed, and the previous value of each changed field, so the
memory as it was before any version is the current record with the `before` values of the later versions applied,
newest first.

Format (LMDB database `history`, written by `textual.lmdb_store` in the same transaction as the change):
- key: `tenant` + NUL + memory id + NUL + `seq` as 8 big-endian bytes. `seq` counts from 1 per memory and only
  grows, so one memory's versions are one contiguous key range in order (ids hold no NUL, so no other memory's
  keys fall inside it).
- value: UTF-8 JSON, keys sorted, no whitespace: `{"at", "before", "changed", "seq", "v": 1, "who", "why"}`;
  `changed` lists the names of `TRACKED_FIELDS` whose value differs from the stored record before the change, in
  `TRACKED_FIELDS` order; `before` maps each of them to its previous value (`tier` as its name). A creation (no
  record before) has `changed` and `before` empty.
Invariants: a memory keeps at most `MAX_VERSIONS` versions (the oldest are dropped first); deleting a memory deletes
all its versions; reading a memory's history is tenant-scoped like every read; the versions' bytes count in the
tenant's usage (`textual.lmdb_ledger`), so its byte quota covers them.
"""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from textual.memory import Memory

FORMAT_VERSION = 1
MAX_VERSIONS = 200  # per memory: a memory changed more often keeps its newest MAX_VERSIONS versions
TRACKED_FIELDS = ("content", "metadata", "tier", "importance", "strength", "expires_at",
                  "user", "agent", "run", "space")
LIFECYCLE = "lifecycle"  # `who` of the changes the background lifecycle pass makes
_SEPARATOR = b"\x00"


class ChangeKind(str, enum.Enum):
    """Why a memory changed."""

    CREATE = "create"
    UPDATE = "update"  # a PATCH or a batch update: content, metadata, importance, strength, tier, expiry or scopes
    MERGE = "merge"  # the same memory said again (see `consolidation`)
    SUPERSEDE = "supersede"  # archived by a newer value, or stored as the newer value
    FEEDBACK = "feedback"
    RESTORE = "restore"
    TIER = "tier"  # moved by the lifecycle pass
    IMPORT = "import"  # written by an import (`textual.transfer`)


@dataclass(frozen=True)
class Change:
    """Who makes a change, why, and when (epoch seconds)."""

    who: str  # the caller's tenant, or LIFECYCLE for the background pass
    why: ChangeKind  # the kind of change
    at: float  # epoch seconds


@dataclass(frozen=True)
class Version:
    """One change of one memory (see the module docstring)."""

    seq: int
    at: float
    who: str
    why: ChangeKind
    changed: tuple[str, ...] = ()
    before: Mapping[str, Any] = field(default_factory=dict)


def version_of(old: Memory | None, new: Memory, change: Change, seq: int) -> Version:
    """The version recording that `old` (None: no record before) became `new`."""
    if old is None:
        return Version(seq, change.at, change.who, change.why)
    changed = tuple(name for name in TRACKED_FIELDS if _value(old, name) != _value(new, name))
    return Version(seq, change.at, change.who, change.why, changed, {name: _value(old, name) for name in changed})


def kept_versions(versions: Sequence[Version]) -> list[Version]:
    """An import's versions as a store keeps them: the newest `MAX_VERSIONS`, renumbered 1.. in order."""
    return [Version(seq, v.at, v.who, v.why, v.changed, v.before)
            for seq, v in enumerate(list(versions)[-MAX_VERSIONS:], 1)]


def version_json(version: Version) -> dict[str, Any]:
    """The version as a JSON object (the stored value without its format version; also the export's shape)."""
    return {"seq": version.seq, "at": version.at, "who": version.who, "why": version.why.value,
            "changed": list(version.changed), "before": dict(version.before)}


def version_from_json(body: Mapping[str, Any]) -> Version:
    """The version in a JSON object made by `version_json`; raises ValueError (naming the field) on a bad one."""
    try:
        seq, at, who, changed, before = body["seq"], body["at"], body["who"], body["changed"], body["before"]
        why = ChangeKind(body["why"])
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"history: not a version record ({exc})") from None
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise ValueError(f"history.seq: must be an integer >= 1, got {seq!r}")
    if not isinstance(at, (int, float)) or isinstance(at, bool) or not isinstance(who, str):
        raise ValueError("history: `at` must be a number and `who` a string")
    if not isinstance(changed, list) or any(name not in TRACKED_FIELDS for name in changed):
        raise ValueError(f"history.changed: must list fields of {', '.join(TRACKED_FIELDS)}")
    if not isinstance(before, dict) or set(before) != set(changed):
        raise ValueError("history.before: must hold exactly the changed fields")
    return Version(seq, float(at), who, why, tuple(changed), dict(before))


def encode_version(version: Version) -> bytes:
    """The stored bytes of a version."""
    body = {"v": FORMAT_VERSION, **version_json(version)}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def decode_version(data: bytes) -> Version:
    """The version in stored bytes; raises ValueError on an unknown format version."""
    body = json.loads(bytes(data))
    if body.pop("v", None) != FORMAT_VERSION:
        raise ValueError(f"version record has unknown format version; expected {FORMAT_VERSION}")
    return version_from_json(body)


def history_prefix(tenant: str, memory_id: str) -> bytes:
    """The prefix shared by the keys of one memory's versions."""
    return tenant.encode() + _SEPARATOR + memory_id.encode() + _SEPARATOR


def history_end(tenant: str, memory_id: str) -> bytes:
    """A key above every key of the memory's versions and below any other memory's (NUL + 1)."""
    return tenant.encode() + _SEPARATOR + memory_id.encode() + b"\x01"


def encode_history_key(tenant: str, memory_id: str, seq: int) -> bytes:
    return history_prefix(tenant, memory_id) + struct.pack(">Q", seq)


def seq_of_key(key: bytes) -> int:
    return struct.unpack(">Q", bytes(key)[-8:])[0]


def _value(memory: Memory, name: str) -> Any:
    value = getattr(memory, name, None)
    if name == "tier":
        return value.value
    if name == "metadata":
        return dict(value)
    return value
