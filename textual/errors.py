"""Errors a caller of textual memory can act on: each names the offending field or id."""

from __future__ import annotations

from memcore.postgres import StoreUnavailableError  # shared with the adapter registry; re-exported for textual


class InvalidMemoryError(ValueError):
    """A user mistake in a memory, a filter or a query; `field` names what to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class MemoryNotFoundError(KeyError):
    """No memory with this id exists in the caller's tenant (another tenant's ids are reported the same way)."""

    def __init__(self, memory_id: str) -> None:
        super().__init__(memory_id)
        self.memory_id = memory_id

    def __str__(self) -> str:
        return f"memory_id: no memory {self.memory_id!r} in this tenant"


class KnowledgeBaseNotFoundError(KeyError):
    """No knowledge base with this id exists in the caller's tenant."""

    def __init__(self, kb_id: str) -> None:
        super().__init__(kb_id)
        self.kb_id = kb_id
        self.field = "kb_id"

    def __str__(self) -> str:
        return f"kb_id: no knowledge base {self.kb_id!r} in this tenant"


class EmbeddingModelMismatchError(ValueError):
    """The store's vectors came from another embedding model than the one loaded: searching would compare vectors
    of two different spaces, so the store is not opened."""

    def __init__(self, path: str, recorded: str, loaded: str) -> None:
        super().__init__(
            f"the memories in {path} were embedded with {recorded!r}, but this process loaded {loaded!r}. Configure "
            f"that same model again (--embedding-model / MEMSIDECAR_EMBEDDING_MODEL), or point --memory-dir at a new "
            f"directory for the new model; vectors of two models are never mixed.")
        self.recorded = recorded
        self.loaded = loaded


class StoreFullError(RuntimeError):
    """The memory store's LMDB map is full and already at its configured ceiling: the write was not made."""

    def __init__(self, map_size: int, ceiling: int) -> None:
        super().__init__(
            f"the memory store is full: its LMDB map is {map_size} bytes and may not grow past {ceiling} bytes for new "
            f"data (--memory-map-max-gib, less 1/8 kept for deletes); delete memories, or raise the ceiling")
        self.map_size = map_size
        self.ceiling = ceiling


class SpaceNotFoundError(KeyError):
    """No shared memory space with this id exists in the caller's tenant (another tenant's are reported the same)."""

    def __init__(self, space_id: str) -> None:
        super().__init__(space_id)
        self.space_id = space_id
        self.field = "space_id"

    def __str__(self) -> str:
        return f"space_id: no memory space {self.space_id!r} in this tenant"


class SpaceAccessDenied(PermissionError):
    """The named user or agent is not granted what it asked of a space of its own tenant (read or write)."""

    def __init__(self, space_id: str, need: str, who: str) -> None:
        super().__init__(f"space_id: {who} may not {need} memory space {space_id!r}; a member with that grant may")
        self.space_id = space_id
        self.field = "space_id"


# The errors a caller of textual memory can act on (a bad value, an unknown id, a refused access, a full store, a
# store that cannot be reached now).
CALLER_ERRORS = (InvalidMemoryError, MemoryNotFoundError, KnowledgeBaseNotFoundError, SpaceNotFoundError,
                 SpaceAccessDenied, StoreFullError, StoreUnavailableError)
