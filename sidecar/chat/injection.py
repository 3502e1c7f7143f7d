"""Memory in the chat path: what to retrieve for a conversation, where the memories go in the prompt, and what
the conversation leaves behind in memory.

Prompt invariant: the injected block is one system message placed right after the caller's leading system
(or developer) messages; its text lists knowledge-base passages first (from the request's `kb_ids`, else from the
tenant's knowledge bases created with `metadata: {"pinned": true}`), then tools, then the user's memories, each
in time order (not score order), so consecutive turns that retrieve the same memories send the engine the same
prefix and reuse its KV blocks.
Write-back: the request's newest user turn and the reply become episode memories, each image part of that user
turn becomes an image memory (see `shared_images`), both in the request's `space_id` when it names one (checked
before the engine is asked: writing needs the user's or agent's write grant, as on the REST route), and tool results
at the end of the conversation become tool trajectories; this happens after the reply, off the response path (and
so does the extraction of facts, preferences and events from those episodes, when `sidecar.chat.extraction` is on).
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from sidecar.limits import ID_REGEX, MAX_TOKEN_BUDGET, MAX_TOP_K, MemoryTypeName
from textual import context
from textual.errors import InvalidMemoryError, StoreUnavailableError
from textual.filter_expr import Predicate, parse_filter
from textual.memory import Memory
from textual.messages import ChatMessage
from textual.retriever import SearchResult
from textual.store import MemoryStore
from textual.tenant_memory import TenantMemory
from textual.tokens import count_tokens

log = logging.getLogger("memsidecar.memory")

QUERY_WINDOW = 3  # the latest user turn plus the two messages before it
MAX_QUERY_CHARS = 2000
MEMORY_HEADER = "Notes from earlier conversations with this user (quoted, for reference):"
BLOCK_FOOTER = "Use these notes to answer the user's question."
KB_HEADER = "Relevant knowledge-base passages:"
TOOLS_HEADER = "Tools used before, with their outcomes:"
DEFAULT_USER = "default"
MAX_IMAGES_PER_TURN = 8
MAX_CAPTION_CHARS = 1000


class MemoryOptions(BaseModel):
    """The optional `memory` object of a chat request; unset fields take the sidecar's configured defaults."""

    model_config = ConfigDict(extra="forbid")

    inject: StrictBool | None = None
    write: StrictBool | None = None
    top_k: StrictInt | None = Field(None, ge=1, le=MAX_TOP_K)
    token_budget: StrictInt | None = Field(None, ge=1, le=MAX_TOKEN_BUDGET)
    kb_ids: list[StrictStr] = Field(default_factory=list, max_length=100)
    types: list[MemoryTypeName] = Field(default_factory=list)
    session: StrictStr = Field("chat", pattern=ID_REGEX)
    image_caption: StrictStr | None = Field(None, min_length=1, max_length=MAX_CAPTION_CHARS)
    agent_id: StrictStr | None = Field(None, pattern=ID_REGEX)  # retrieve this agent's memories; write as it
    run_id: StrictStr | None = Field(None, pattern=ID_REGEX)  # retrieve this run's memories; write into it
    filter: dict[str, Any] | None = None  # a `textual.filter_expr` tree the retrieved user memories must pass
    space_id: StrictStr | None = Field(None, pattern=ID_REGEX)  # write into this shared space; it is read too


@dataclass(frozen=True)
class MemoryDefaults:
    inject: bool
    write: bool
    top_k: int
    token_budget: int


@dataclass(frozen=True)
class Injection:
    """What was injected into one request: memory ids in prompt order and the block's token count."""

    ids: tuple[str, ...] = ()
    tokens: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"ids": list(self.ids), "tokens": self.tokens}


@dataclass(frozen=True)
class Conversation:
    """The memory-relevant facts of one chat request."""

    tenant: str
    user: str
    messages: tuple[dict[str, Any], ...]
    tools: tuple[dict[str, Any], ...]
    inject: bool
    write: bool
    top_k: int
    token_budget: int
    kb_ids: tuple[str, ...]
    types: tuple[str, ...]
    session: str
    image_caption: str | None = None
    agent: str | None = None
    run: str | None = None
    where: Predicate | None = None
    space: str | None = None  # the shared space the chat writes to (and reads, as any space its user may read)


def conversation(tenant: str, body: dict[str, Any], options: MemoryOptions | None,
                 defaults: MemoryDefaults) -> Conversation:
    """The conversation of an engine-bound chat body, with the memory options resolved against the defaults."""
    options = options or MemoryOptions()
    inject = defaults.inject if options.inject is None else options.inject
    write = defaults.write if options.write is None else options.write
    user = body.get("user") or DEFAULT_USER
    if (inject or write) and (not isinstance(user, str) or not _is_identifier(user)):
        raise InvalidMemoryError("user", f"must match {ID_REGEX} to use memory (or turn memory off)")
    return Conversation(
        tenant=tenant, user=user, messages=tuple(body["messages"]), tools=tuple(body.get("tools") or ()),
        inject=inject, write=write,
        top_k=options.top_k or defaults.top_k, token_budget=options.token_budget or defaults.token_budget,
        kb_ids=tuple(options.kb_ids), types=tuple(options.types), session=options.session,
        image_caption=options.image_caption, agent=options.agent_id, run=options.run_id, space=options.space_id,
        where=None if options.filter is None else parse_filter(options.filter, root="memory.filter"))


def message_text(message: dict[str, Any]) -> str:
    """The text of a chat message: its string content, or the text parts of a multi-part content."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict)
                        and part.get("type") == "text" and isinstance(part.get("text"), str))
    return ""


def shared_images(message: dict[str, Any], caption: str | None = None) -> list[tuple[str, str]]:
    """(caption, url) of each image part of `message`, at most `MAX_IMAGES_PER_TURN`, in order.

    An image's caption is `caption` when given (the request's `memory.image_caption`), else the text parts right
    before and after it (up to the neighbouring images), else the message's whole text; an image with none of these
    is left out, since nothing could find it. Captions are cut to `MAX_CAPTION_CHARS`.
    """
    parts = message.get("content")
    if not isinstance(parts, list):
        return []
    whole = message_text(message).strip()
    images = []
    for i, part in enumerate(parts):
        url = part.get("image_url", {}).get("url") if isinstance(part, dict) and part.get("type") == "image_url" \
            else None
        if not isinstance(url, str):
            continue
        text = caption or _text_around(parts, i) or whole
        if text:
            images.append((" ".join(text.split())[:MAX_CAPTION_CHARS], url))
    return images[:MAX_IMAGES_PER_TURN]


def _text_around(parts: list[Any], at: int) -> str:
    """The text parts next to `parts[at]`, up to the image parts on either side of it."""
    def text_of(part: Any) -> str | None:
        if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
            return part["text"]
        return None

    before, after = [], []
    for i in range(at - 1, -1, -1):
        if text_of(parts[i]) is None:
            break
        before.insert(0, text_of(parts[i]))
    for i in range(at + 1, len(parts)):
        if text_of(parts[i]) is None:
            break
        after.append(text_of(parts[i]))
    return " ".join(before + after).strip()


def retrieval_query(messages: tuple[dict[str, Any], ...]) -> str | None:
    """The search query: the latest user turn and the short window before it, newest last; None without text."""
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    if last_user is None:
        return None
    window = [message_text(m) for m in messages[max(0, last_user - QUERY_WINDOW + 1):last_user + 1]
              if m.get("role") in ("user", "assistant")]
    query = "\n".join(text for text in window if text.strip())[-MAX_QUERY_CHARS:]
    return query or None


def inject_block(messages: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """`messages` with a system message holding `text` after the leading system/developer messages."""
    position = 0
    while position < len(messages) and messages[position].get("role") in ("system", "developer"):
        position += 1
    return [*messages[:position], {"role": "system", "content": text}, *messages[position:]]


def memory_block(sections: list[tuple[str, str]]) -> str:
    """The injected text: each (header, rendered lines) section, blank lines between, then the closing instruction
    (a small model measured better with it: `bench.answers`)."""
    return "\n\n".join(f"{header}\n{rendered}" for header, rendered in sections) + f"\n{BLOCK_FOOTER}"


class MemoryChat:
    """Retrieval for, and write-back from, chat requests over one `MemoryStore`."""

    def __init__(self, store: MemoryStore, defaults: MemoryDefaults) -> None:
        self.store = store
        self.defaults = defaults

    def prepare(self, chat: Conversation, body: dict[str, Any]) -> tuple[dict[str, Any], Injection]:
        """The engine body with the memory block injected (blocking: embeds and searches).

        Memories whose text is already in the conversation (its own recorded turns) are left out: they add
        nothing, and leaving them out keeps the block stable from turn to turn. While the memory store cannot be
        reached, the block comes from the tenant's index in memory, or is left out when none is loaded: the chat
        is served either way.
        """
        query = retrieval_query(chat.messages)
        try:
            self._check_space(chat)
            if not chat.inject or query is None:
                return body, Injection()
            return self._injected(chat, body, query)
        except StoreUnavailableError as error:
            log.warning("tenant %s: chat served without memories: %s", chat.tenant, error.reason)
            return body, Injection()

    def _check_space(self, chat: Conversation) -> None:
        """Refuse a chat naming a space its user and agent may not write to (or, writing nothing, read), before
        the engine is asked: write-back happens after the reply, too late to refuse (SpaceAccessDenied: a 403)."""
        if chat.space is not None and (chat.write or chat.inject):
            self.store.for_tenant(chat.tenant).space_access(chat.space, write=chat.write, user=chat.user,
                                                            agent=chat.agent)

    def _injected(self, chat: Conversation, body: dict[str, Any], query: str) -> tuple[dict[str, Any], Injection]:
        handle = self.store.for_tenant(chat.tenant)
        seen = {message_text(m).strip() for m in chat.messages}
        sections: list[tuple[str, str, list[Memory]]] = []
        budget = chat.token_budget - count_tokens(BLOCK_FOOTER)
        kb_ids = list(chat.kb_ids) or _pinned_kbs(handle)
        if kb_ids:
            found = handle.search(query, k=chat.top_k, budget_tokens=max(1, budget // 2), kb_id=kb_ids)
            budget = _add_section(sections, KB_HEADER, _unseen(found, seen), budget)
        if chat.tools:
            budget = _add_tool_section(sections, handle, query, budget)
        if budget > 0:
            found = handle.search(query, k=chat.top_k, budget_tokens=budget, user=chat.user,
                                  types=list(chat.types) or None, agent=chat.agent, run=chat.run, where=chat.where)
            _add_section(sections, MEMORY_HEADER, _unseen(found, seen), budget)
        if not sections:
            return body, Injection()
        text = memory_block([(header, rendered) for header, rendered, _ in sections])
        ids = tuple(memory.id for _, _, memories in sections for memory in memories)
        return {**body, "messages": inject_block(list(chat.messages), text)}, Injection(ids, count_tokens(text))

    def remember(self, chat: Conversation, reply: str | None, now: float | None = None) -> list[Memory]:
        """Write the conversation's new turns (blocking) and return their episodes, for extraction. Failures are
        logged by the caller: the reply has already been sent."""
        if not chat.write:
            return []
        now = time.time() if now is None else now
        handle = self.store.for_tenant(chat.tenant)
        if chat.tools:
            for tool in chat.tools:
                handle.register_tool(tool)
        _record_trailing_tool_results(handle, chat.messages)
        _remember_images(handle, chat, now)
        turns = _new_turns(chat, reply, now)
        return handle.add_messages(turns, user=chat.user, agent=chat.agent, run=chat.run,
                                   space=chat.space) if turns else []


def _pinned_kbs(handle: TenantMemory) -> list[str]:
    """The tenant's knowledge bases marked `pinned`; none while the memory store cannot be reached."""
    try:
        return [kb.id for kb in handle.list_kbs() if kb.metadata.get("pinned") is True]
    except StoreUnavailableError:
        return []


def _unseen(found: SearchResult, seen: set[str]) -> list[Memory]:
    return [hit.memory for hit in found.hits if hit.memory.content.strip() not in seen]


def _add_section(sections: list, header: str, memories: list[Memory], budget: int) -> int:
    """Append a section of `memories` rendered in time order; returns the budget left."""
    if not memories:
        return budget
    ordered = sorted(memories, key=context.time_order)
    rendered = context.render(ordered)
    sections.append((header, rendered, ordered))
    return budget - count_tokens(f"{header}\n{rendered}")


def _add_tool_section(sections: list, handle: TenantMemory, query: str, budget: int) -> int:
    matches = sorted(handle.search_tools(query, k=3), key=lambda m: str(m.memory.metadata.get("tool_name", "")))
    lines = [f"- {m.memory.metadata.get('tool_name')}: {m.successes} succeeded, {m.failures} failed"
             for m in matches]
    rendered = "\n".join(lines)
    if not matches or count_tokens(f"{TOOLS_HEADER}\n{rendered}") > budget:
        return budget
    sections.append((TOOLS_HEADER, rendered, [m.memory for m in matches]))
    return budget - count_tokens(f"{TOOLS_HEADER}\n{rendered}")


def _new_turns(chat: Conversation, reply: str | None, now: float) -> list[ChatMessage]:
    last_user = max((i for i, m in enumerate(chat.messages) if m.get("role") == "user"), default=None)
    turns = []
    if last_user is not None and message_text(chat.messages[last_user]).strip():
        turns.append(ChatMessage(chat.user, message_text(chat.messages[last_user]), now, chat.session))
    if reply and reply.strip():
        turns.append(ChatMessage("assistant", reply, now, chat.session))
    return turns


def _remember_images(handle: TenantMemory, chat: Conversation, now: float) -> None:
    """Store the newest user turn's images as image memories; a refused image (its URL checked by
    `textual.images`) is logged and skipped, since the reply has already been sent."""
    last_user = max((i for i, m in enumerate(chat.messages) if m.get("role") == "user"), default=None)
    if last_user is None:
        return
    for caption, url in shared_images(chat.messages[last_user], chat.image_caption):
        try:
            handle.add_image(caption, url, user=chat.user, metadata={"session": chat.session}, created_at=now,
                             agent=chat.agent, run=chat.run, space=chat.space)
        except InvalidMemoryError as error:
            log.info("chat image not remembered: %s", error)


def _record_trailing_tool_results(handle: TenantMemory, messages: tuple[dict[str, Any], ...]) -> None:
    """Record the tool results after the last assistant message (each is new exactly once) as trajectories."""
    last_assistant = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    if last_assistant is None:
        return
    calls = {call.get("id"): call.get("function", {}) for call in messages[last_assistant].get("tool_calls") or []
             if isinstance(call, dict)}
    for message in messages[last_assistant + 1:]:
        function = calls.get(message.get("tool_call_id")) if message.get("role") == "tool" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            continue
        result = message_text(message)
        try:
            arguments = json.loads(function.get("arguments") or "{}")
            handle.record_trajectory(function["name"], arguments if isinstance(arguments, dict) else {},
                                     result[:2000] or "(empty)", _looks_successful(result), 0.0)
        except (InvalidMemoryError, ValueError) as error:
            log.info("tool result not recorded: %s", error)


def _looks_successful(result: str) -> bool:
    head = result.strip()[:200].lower()
    return not (head.startswith("error") or '"error"' in head or "exception" in head)


def _is_identifier(value: str) -> bool:
    return re.fullmatch(ID_REGEX, value) is not None
