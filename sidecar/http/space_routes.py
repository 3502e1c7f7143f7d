"""REST routes of shared memory spaces (`textual.spaces`): create, read, change the members of, and delete a space
of the caller's tenant. Memories enter a space through `POST /v1/memories` with `space_id`."""

from __future__ import annotations

from typing import Annotated, Any, Callable

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from sidecar.http.access import Caller
from sidecar.http.memory_routes import tenant_worker
from sidecar.limits import ID_REGEX
from sidecar.tenants.quota_book import QuotaBook
from textual.memory import Space
from textual.spaces import MAX_MEMBERS
from textual.store import MemoryStore


SpaceId = Annotated[str, Path(pattern=ID_REGEX, description="A memory space's id.")]


class Member(BaseModel):
    """One member: a user or an agent of the tenant, with write access or read only."""

    model_config = ConfigDict(extra="forbid")
    user_id: StrictStr | None = Field(None, pattern=ID_REGEX)
    agent_id: StrictStr | None = Field(None, pattern=ID_REGEX)
    write: StrictBool = False


class CreateSpace(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: StrictStr = Field(pattern=ID_REGEX)
    name: StrictStr | None = Field(None, min_length=1, max_length=200)
    members: list[Member] = Field(default_factory=list, max_length=MAX_MEMBERS)


class SpaceMembers(BaseModel):
    model_config = ConfigDict(extra="forbid")
    members: list[Member] = Field(max_length=MAX_MEMBERS)


def space_json(space: Space) -> dict[str, Any]:
    """A space as the API returns it: members as `{"user_id" | "agent_id": id, "write": bool}`, in key order."""
    members = []
    for key, grant in sorted(space.members.items()):
        kind, identifier = key.split(":", 1)
        members.append({f"{kind}_id": identifier, "write": grant == "write"})
    return {"id": space.id, "name": space.name, "created_at": space.created_at, "members": members}


def _members(members: list[Member]) -> list[dict[str, Any]]:
    return [member.model_dump(exclude_none=True) for member in members]


def space_router(store: MemoryStore, caller: Callable[..., Any], book: QuotaBook | None = None) -> APIRouter:
    """The `/v1/spaces` routes over `store`, each scoped to the tenant `caller` resolves."""
    router = APIRouter(prefix="/v1", tags=["spaces"])
    call = tenant_worker(store, book)

    @router.post("/spaces")
    async def create_space(body: CreateSpace, who: Caller = Depends(caller)) -> dict:
        return space_json(await call(who, lambda memory: memory.create_space(body.id, body.name,
                                                                             _members(body.members))))

    @router.get("/spaces")
    async def list_spaces(who: Caller = Depends(caller)) -> dict:
        return {"data": [space_json(space) for space in await call(who, lambda memory: memory.list_spaces())]}

    @router.get("/spaces/{space_id}")
    async def get_space(space_id: SpaceId, who: Caller = Depends(caller)) -> dict:
        return space_json(await call(who, lambda memory: memory.get_space(space_id)))

    @router.put("/spaces/{space_id}/members")
    async def set_members(space_id: SpaceId, body: SpaceMembers, who: Caller = Depends(caller)) -> dict:
        return space_json(await call(who, lambda memory: memory.set_space_members(space_id, _members(body.members))))

    @router.delete("/spaces/{space_id}")
    async def delete_space(space_id: SpaceId, who: Caller = Depends(caller)) -> dict:
        removed = await call(who, lambda memory: memory.delete_space(space_id))
        return {"id": space_id, "deleted": True, "memories_removed": removed}

    return router
