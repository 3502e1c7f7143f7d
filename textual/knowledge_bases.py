"""Knowledge bases of one tenant: create, list, delete, and add documents as chunk memories.

A knowledge base record lives in LMDB's `kbs` database; its documents are `document_chunk` memories with its
`kb_id`, owned by the user `KB_USER`, chunked by `textual.chunking` (200 tokens, 40 shared between neighbours, by
default). Deleting a knowledge base deletes every memory with its id. Search within chosen knowledge bases with
`search(..., kb_id=[...])`.
"""

from __future__ import annotations

import uuid
from typing import Any, Mapping

from textual.chunking import DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP_TOKENS, chunk_text
from textual.errors import InvalidMemoryError, KnowledgeBaseNotFoundError
from textual.history import ChangeKind
from textual.memory import KnowledgeBase, Memory, MemoryType, check_content, check_identifier, check_metadata

KB_USER = "kb"
MAX_NAME_CHARS = 200
MAX_DESCRIPTION_CHARS = 2_000
MAX_DOCUMENT_CHARS = 2_000_000


def create_kb(handle, kb_id: str, name: str | None = None, description: str = "",
              metadata: Mapping[str, Any] | None = None) -> KnowledgeBase:
    """A new, empty knowledge base; InvalidMemoryError("kb_id") if the id is taken."""
    kb_id = check_identifier("kb_id", kb_id)
    name = kb_id if name is None else name
    _check_text("name", name, MAX_NAME_CHARS)
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS:
        raise InvalidMemoryError("description", f"must be a string of at most {MAX_DESCRIPTION_CHARS} characters")
    store = handle._store
    with store.tenant_lock(handle.tenant):
        if store.db.get_kb(handle.tenant, kb_id) is not None:
            raise InvalidMemoryError("kb_id", f"knowledge base {kb_id!r} already exists")
        kb = KnowledgeBase(id=kb_id, tenant=handle.tenant, name=name, description=description,
                           created_at=store.clock(), metadata=check_metadata(metadata or {}))
        store.db.put_kb(kb)
    return kb


def load_kb(handle, kb_id: str) -> KnowledgeBase:
    """The knowledge base with this id; KnowledgeBaseNotFoundError if the tenant has none."""
    kb = handle._store.db.get_kb(handle.tenant, check_identifier("kb_id", kb_id))
    if kb is None:
        raise KnowledgeBaseNotFoundError(kb_id)
    return kb


def delete_kb(handle, kb_id: str) -> int:
    """Delete the knowledge base and every memory in it; returns how many memories went."""
    store = handle._store
    with store.tenant_lock(handle.tenant):
        load_kb(handle, kb_id)
        ids = [m.id for m in store.db.memories(handle.tenant) if m.kb_id == kb_id]
        removed = store.remove(handle.tenant, ids, container=("kb", kb_id))
    return len(removed)


def add_document(handle, kb_id: str, text: str, *, title: str | None = None,
                 metadata: Mapping[str, Any] | None = None, chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
                 overlap_tokens: int = DEFAULT_OVERLAP_TOKENS) -> list[Memory]:
    """Chunk `text` into `document_chunk` memories of the knowledge base (one durable write); returns them."""
    _check_text("text", text, MAX_DOCUMENT_CHARS)
    if title is not None:
        _check_text("title", title, MAX_NAME_CHARS)
    metadata = check_metadata(metadata or {})
    if not isinstance(chunk_tokens, int) or not isinstance(overlap_tokens, int) or \
            not 0 <= overlap_tokens < chunk_tokens:
        raise InvalidMemoryError("chunk_tokens", "need integers with 0 <= overlap_tokens < chunk_tokens")
    store = handle._store
    load_kb(handle, kb_id)
    chunks = chunk_text(text, chunk_tokens, overlap_tokens)
    now, document_id = store.clock(), uuid.uuid4().hex
    memories = [Memory(
        id=uuid.uuid4().hex, tenant=handle.tenant, user=KB_USER, type=MemoryType.DOCUMENT_CHUNK, kb_id=kb_id,
        content=check_content(chunk.text, store.max_content_chars), created_at=now, updated_at=now,
        last_access_at=now, metadata={**metadata, "document_id": document_id, "title": title,
                                      "chunk_index": chunk.index, "chunk_count": len(chunks),
                                      "start": chunk.start, "end": chunk.end}) for chunk in chunks]
    store.admit(handle.tenant, [m.content for m in memories])
    vectors = store.embedder.embed([m.content if title is None else f"{title}\n{m.content}" for m in memories],
                                   owner=handle.tenant)
    with store.tenant_lock(handle.tenant):
        load_kb(handle, kb_id)  # it may have been deleted while the chunks were embedded
        store.write(handle.tenant, memories, vectors, ChangeKind.CREATE)
    return memories


def _check_text(field: str, value: object, max_chars: int) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidMemoryError(field, "must be a non-empty string")
    if len(value) > max_chars:
        raise InvalidMemoryError(field, f"is {len(value)} characters, the limit is {max_chars}")
