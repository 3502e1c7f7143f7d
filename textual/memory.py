"""The memory value object, its kinds and tiers, and the checks that guard what enters the store.

Invariants of a stored `Memory`: `content` is non-empty after stripping and at most the store's size limit,
`0 <= importance <= 1`, `strength >= 0`, `access_count >= 0`, and `created_at <= updated_at`.
Times are seconds since the Unix epoch (UTC). A memory whose `expires_at` has passed is expired: no read returns it
(search, list, get, injection, export) and the next lifecycle pass deletes it with its history.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from textual.errors import InvalidMemoryError

ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
DEFAULT_MAX_CONTENT_CHARS = 16_000
MAX_ACCESSES = 16  # access times kept per memory, to show what reinforced it
MAX_TTL_S = 100 * 365 * 86_400.0  # the longest time to live a memory may be given


class MemoryType(str, enum.Enum):
    """What a memory holds."""

    FACT = "fact"
    PREFERENCE = "preference"
    EVENT = "event"
    EPISODE = "episode"
    TOOL_SCHEMA = "tool_schema"
    TOOL_TRAJECTORY = "tool_trajectory"
    IMAGE = "image"
    DOCUMENT_CHUNK = "document_chunk"


class LifecycleTier(str, enum.Enum):
    """Where a memory is in its lifecycle: hot and warm are searched first, archived only when asked for.

    A stage of a memory's life (its strength decays it from hot to archived), not where its bytes are held: that
    is `memcore.tiers.Tier`. The values are the `tier` field of the REST API and of the stored records."""

    HOT = "hot"
    WARM = "warm"
    COLD = "cold"
    ARCHIVED = "archived"


# Tiers held in the in-memory index; cold memories stay on disk (searched on request or as a fallback) and
# archived ones are never searched.
RESIDENT_TIERS = frozenset({LifecycleTier.HOT, LifecycleTier.WARM})


@dataclass(frozen=True)
class Memory:
    """One textual or tool memory of one tenant's user or agent; `source` holds the message or turn ids it came from.

    Scopes beside `user` (whom the memory is about), each None when not given: `agent`, the agent that made it or
    that it is for; `run`, the run (a task or a session of an agent) it belongs to; `space`, the shared memory space
    (`textual.spaces`) it was written to, readable by the space's members."""

    id: str
    tenant: str
    user: str | None  # None: an agent's memory about no user (then `agent` is set; `check_owner`)
    type: MemoryType
    content: str
    created_at: float
    updated_at: float
    last_access_at: float
    kb_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    source: tuple[str, ...] = ()
    access_count: int = 0
    importance: float = 0.5
    strength: float = 1.0
    tier: LifecycleTier = LifecycleTier.HOT
    accesses: tuple[float, ...] = ()  # the most recent access times, oldest first, at most MAX_ACCESSES
    expires_at: float | None = None  # from then on the memory is gone for every read; the lifecycle deletes it
    agent: str | None = None
    run: str | None = None
    space: str | None = None


PeerKey = tuple[str, MemoryType, str | None, str | None, str | None, str | None]


def peer_key(memory: Memory) -> PeerKey:
    """(user, type, kb_id, agent, run, space): memories that may merge with or supersede each other share it, so a
    memory never merges into one of another scope."""
    return memory.user, memory.type, memory.kb_id, memory.agent, memory.run, memory.space


@dataclass(frozen=True)
class KnowledgeBase:
    """A named collection of documents in one tenant; its chunks are `document_chunk` memories with its `id`."""

    id: str
    tenant: str
    name: str
    created_at: float
    description: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Space:
    """A named set of one tenant's memories shared by its members: `members` maps a principal (`user:ID` or
    `agent:ID`) to its grant, "read" or "write" (write includes read). Memories are in it when their `space` is
    `id`; `textual.spaces` holds the rules."""

    id: str
    tenant: str
    name: str
    created_at: float
    members: Mapping[str, str] = field(default_factory=dict)


def check_identifier(name: str, value: object) -> str:
    """`value` if it is a usable tenant, user, kb or memory id, else InvalidMemoryError naming `name`."""
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise InvalidMemoryError(name, f"must be 1-128 characters of letters, digits and _.:@-, got {value!r}")
    return value


def check_owner(user: str | None, agent: str | None) -> None:
    """Refuse a memory about no user and for no agent: every memory has a `user`, an `agent` or both."""
    if user is None and agent is None:
        raise InvalidMemoryError("user_id", "a memory needs a user_id, an agent_id or both (an agent's own memory "
                                            "may name no user)")


def check_content(content: object, max_chars: int) -> str:
    """`content` if it is a non-blank string of at most `max_chars` characters."""
    if not isinstance(content, str) or not content.strip():
        raise InvalidMemoryError("content", "must be a non-empty string")
    if len(content) > max_chars:
        raise InvalidMemoryError("content", f"is {len(content)} characters, the limit is {max_chars}")
    return content


def check_importance(importance: object) -> float:
    """`importance` as a float in [0, 1]."""
    if not _is_number(importance) or not 0.0 <= float(importance) <= 1.0:
        raise InvalidMemoryError("importance", f"must be a number in [0, 1], got {importance!r}")
    return float(importance)


def check_strength(strength: object) -> float:
    """`strength` as a finite float >= 0."""
    if not _is_number(strength) or float(strength) < 0:
        raise InvalidMemoryError("strength", f"must be a number >= 0, got {strength!r}")
    return float(strength)


def check_ttl(ttl_s: object) -> float:
    """`ttl_s` (seconds a memory lives) as a float in [1, MAX_TTL_S]."""
    if not _is_number(ttl_s) or not 1 <= float(ttl_s) <= MAX_TTL_S:
        raise InvalidMemoryError("ttl_s", f"must be a number of seconds in [1, {MAX_TTL_S:.0f}], got {ttl_s!r}")
    return float(ttl_s)


def is_expired(memory: Memory, now: float) -> bool:
    """Whether `memory` has expired at `now` (see the module docstring)."""
    return memory.expires_at is not None and memory.expires_at <= now


def check_time(name: str, value: object) -> float:
    """`value` as epoch seconds."""
    if not _is_number(value):
        raise InvalidMemoryError(name, f"must be seconds since the epoch, got {value!r}")
    return float(value)


def parse_type(value: object) -> MemoryType:
    """The MemoryType named by `value`, else an error listing the allowed names."""
    return _parse_enum("type", MemoryType, value)


def parse_tier(value: object) -> LifecycleTier:
    """The lifecycle tier named by `value`, else an error listing the allowed names."""
    return _parse_enum("tier", LifecycleTier, value)


def check_metadata(metadata: object) -> dict[str, Any]:
    """A copy of `metadata` if it is a dict with string keys."""
    if not isinstance(metadata, Mapping) or not all(isinstance(key, str) for key in metadata):
        raise InvalidMemoryError("metadata", "must be a dict with string keys")
    return dict(metadata)


def check_source(source: object) -> tuple[str, ...]:
    """`source` as a tuple of non-empty strings."""
    if isinstance(source, str) or not all(isinstance(item, str) and item for item in source):
        raise InvalidMemoryError("source", "must be a list of non-empty message or turn ids")
    return tuple(source)


def _parse_enum(name: str, kind: type[enum.Enum], value: object):
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise InvalidMemoryError(name, f"{value!r} is not one of {allowed}") from None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
