"""Shared memory spaces of one tenant: named sets of memories that several of its users or agents read and write.

Rules: a space belongs to exactly one tenant and is reached only through that tenant's handle, so another tenant's
space id reads as unknown (SpaceNotFoundError). A member is a principal, `user:ID` or `agent:ID`, granted "read" or
"write" (which includes read). A memory is in a space when its `space` is the space's id; it is written there only
on behalf of a user or agent holding "write" (SpaceAccessDenied otherwise). A search or list naming a user and/or an
agent also sees the memories of every space one of them may read; one naming neither (the tenant's own key, acting
for the whole tenant) sees everything, as before. Deleting a space deletes its memories.
The planners here (`check_members`, `readable`, `may`) are pure; the operations take a `TenantMemory` handle.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from textual.errors import InvalidMemoryError, SpaceAccessDenied, SpaceNotFoundError, StoreUnavailableError
from textual.memory import Space, check_identifier

READ, WRITE = "read", "write"
MAX_MEMBERS = 256
MAX_SPACES = 256  # per tenant: every scoped search reads them all
MAX_NAME_CHARS = 200


def principal(kind: str, identifier: str) -> str:
    """The member key of a user (`kind` "user") or an agent ("agent")."""
    return f"{kind}:{identifier}"


def check_members(members: object) -> dict[str, str]:
    """Principal -> grant from a list of `{"user_id"|"agent_id": ID, "write": bool}`; InvalidMemoryError naming the
    bad entry (`members[2].user_id`)."""
    if not isinstance(members, list) or len(members) > MAX_MEMBERS:
        raise InvalidMemoryError("members", f"must be a list of at most {MAX_MEMBERS} members")
    checked: dict[str, str] = {}
    for i, member in enumerate(members):
        where = f"members[{i}]"
        if not isinstance(member, Mapping) or set(member) - {"user_id", "agent_id", "write"}:
            raise InvalidMemoryError(where, 'must be {"user_id": ID} or {"agent_id": ID}, with an optional "write"')
        named = [key for key in ("user_id", "agent_id") if member.get(key) is not None]
        if len(named) != 1:
            raise InvalidMemoryError(where, "must name exactly one of user_id and agent_id")
        write = member.get("write", False)
        if not isinstance(write, bool):
            raise InvalidMemoryError(f"{where}.write", f"must be true or false, got {write!r}")
        key = principal(named[0].removesuffix("_id"), check_identifier(f"{where}.{named[0]}", member[named[0]]))
        checked[key] = WRITE if write or checked.get(key) == WRITE else READ
    return checked


def may(space: Space, need: str, user: str | None, agent: str | None) -> bool:
    """Whether the user or the agent (either suffices) holds `need` ("read" or "write") in `space`."""
    grants = {space.members.get(principal("user", user)) if user else None,
              space.members.get(principal("agent", agent)) if agent else None}
    return WRITE in grants or (need == READ and READ in grants)


def readable(spaces: Iterable[Space], user: str | None, agent: str | None) -> frozenset[str]:
    """The ids of the spaces the user or the agent may read."""
    return frozenset(space.id for space in spaces if may(space, READ, user, agent))


def create_space(handle, space_id: str, name: str | None, members: object) -> Space:
    """A new space with its members; InvalidMemoryError("space_id") if the id is taken or the tenant has
    `MAX_SPACES` already."""
    space_id = check_identifier("space_id", space_id)
    name = space_id if name is None else name
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS:
        raise InvalidMemoryError("name", f"must be a non-empty string of at most {MAX_NAME_CHARS} characters")
    checked = check_members(members)
    store = handle._store
    with store.tenant_lock(handle.tenant):
        if store.db.get_space(handle.tenant, space_id) is not None:
            raise InvalidMemoryError("space_id", f"memory space {space_id!r} already exists")
        if len(store.db.spaces(handle.tenant)) >= MAX_SPACES:
            raise InvalidMemoryError("space_id", f"a tenant has at most {MAX_SPACES} memory spaces")
        space = Space(id=space_id, tenant=handle.tenant, name=name, created_at=store.clock(), members=checked)
        store.db.put_space(space)
    return space


def load_space(handle, space_id: str) -> Space:
    """The space with this id; SpaceNotFoundError if the tenant has none."""
    space = handle._store.db.get_space(handle.tenant, check_identifier("space_id", space_id))
    if space is None:
        raise SpaceNotFoundError(space_id)
    return space


def set_members(handle, space_id: str, members: object) -> Space:
    """The space with its members replaced by `members` (grants and revocations take effect at once)."""
    checked = check_members(members)
    store = handle._store
    with store.tenant_lock(handle.tenant):
        space = load_space(handle, space_id)
        changed = Space(id=space.id, tenant=space.tenant, name=space.name, created_at=space.created_at,
                        members=checked)
        store.db.put_space(changed)
    return changed


def delete_space(handle, space_id: str) -> int:
    """Delete the space and every memory in it; returns how many memories went."""
    store = handle._store
    with store.tenant_lock(handle.tenant):
        load_space(handle, space_id)
        removed = store.remove(handle.tenant, [m.id for m in store.db.memories(handle.tenant) if m.space == space_id],
                               container=("space", space_id))
    return len(removed)


def check_access(handle, space_id: str, need: str, user: str | None, agent: str | None) -> Space:
    """The space, if the user or agent holds `need` in it; SpaceNotFoundError or SpaceAccessDenied otherwise. With
    neither a user nor an agent (the tenant acting as a whole) only the space's existence is checked for a read."""
    space = load_space(handle, space_id)
    if (user or agent or need == WRITE) and not may(space, need, user, agent):
        who = " or ".join(f"{kind} {name!r}" for kind, name in (("user", user), ("agent", agent)) if name)
        raise SpaceAccessDenied(space.id, need, who or "nobody named")
    return space


def shared_with(handle, user: str | None, agent: str | None) -> frozenset[str]:
    """The ids of the tenant's spaces the user or agent may read (none when neither is named). While the record
    store cannot be reached, none: a search from the cached index then sees the caller's own memories, never more."""
    if not user and not agent:
        return frozenset()
    try:
        return readable(handle._store.db.spaces(handle.tenant), user, agent)
    except StoreUnavailableError:
        return frozenset()
