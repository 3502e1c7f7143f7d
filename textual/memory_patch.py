"""What an update changes in a memory's expiry and scopes: the checked new values, planned from the old memory.

Rules:
- a field not given keeps its value (`KEEP`); `None` is a value: it clears the expiry or removes a scope;
- `ttl_s` sets the expiry that many seconds from now, `expires_at` sets it to a time in the future (at most
  `MAX_TTL_S` ahead) or, as None, removes it; giving both is refused;
- the scopes `user`, `agent`, `run` and `space` are checked as `add` checks them, and a memory keeps at least one
  of `user` and `agent` (`check_owner`).
The planners are pure; whether the memory's user or agent may write to its new space is the caller's check
(`textual.spaces.check_access`), made on the scopes the memory will have.
"""

from __future__ import annotations

from typing import Any

from textual.errors import InvalidMemoryError
from textual.memory import MAX_TTL_S, Memory, check_identifier, check_owner, check_time, check_ttl


class Keep:
    """The type of `KEEP`, the default of an update's optional fields: "leave this field as it is"."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP = Keep()
SCOPES = {"user": "user_id", "agent": "agent_id", "run": "run_id", "space": "space_id"}  # field -> API name


def expiry_change(now: float, ttl_s: float | None, expires_at: float | None | Keep) -> dict[str, Any]:
    """`{"expires_at": value}` when the update sets or clears the expiry, else `{}`."""
    if ttl_s is not None and expires_at is not KEEP:
        raise InvalidMemoryError("expires_at", "give ttl_s or expires_at, not both")
    if ttl_s is not None:
        return {"expires_at": now + check_ttl(ttl_s)}
    if expires_at is KEEP:
        return {}
    if expires_at is None:
        return {"expires_at": None}
    at = check_time("expires_at", expires_at)
    if not now < at <= now + MAX_TTL_S:
        raise InvalidMemoryError("expires_at", f"must be in the future and at most {MAX_TTL_S:.0f} s ahead, got {at}"
                                               "; delete the memory to forget it now, or send null to keep it")
    return {"expires_at": at}


def scope_change(old: Memory, given: dict[str, str | None | Keep]) -> dict[str, Any]:
    """The checked scopes the update gives (`given` maps `user`/`agent`/`run`/`space` to a value or KEEP), as
    changes of `old`; InvalidMemoryError naming the field (`user_id`, ...) for a bad id or an ownerless memory."""
    changes = {field: None if value is None else check_identifier(SCOPES[field], value)
               for field, value in given.items() if value is not KEEP}
    check_owner(changes.get("user", old.user), changes.get("agent", old.agent))
    return {field: value for field, value in changes.items() if getattr(old, field) != value}
