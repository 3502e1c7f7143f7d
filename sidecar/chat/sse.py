"""Relaying the engine's server-sent events while adding the sidecar's final `memory` chunk.

The engine's stream is `data: <json>\\n\\n` events ending with `data: [DONE]\\n\\n`. The relay passes every event
through unchanged, collects the first choice's text, and just before `[DONE]` sends one more chunk with no choices
and the top-level `memory` object (the shape of OpenAI's usage chunk, which clients already accept). `on_done` gets
the reply text only when the stream completed; a stream that broke off leaves nothing behind in memory.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

DONE = b"[DONE]"


def _data_of(event: bytes) -> bytes | None:
    lines = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


def _delta_text(chunk: dict[str, Any]) -> str:
    for choice in chunk.get("choices") or ():
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            delta = choice.get("delta") or {}
            return delta.get("content") or "" if isinstance(delta, dict) else ""
    return ""


def memory_chunk(last: dict[str, Any] | None, memory: dict[str, Any]) -> bytes:
    """The final chunk carrying `memory`, with the id, model and creation time of the stream's chunks."""
    last = last or {}
    chunk = {"id": last.get("id", "chatcmpl-memory"), "object": "chat.completion.chunk",
             "created": last.get("created", 0), "model": last.get("model", ""), "choices": [], "memory": memory}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


async def with_memory_chunk(chunks: AsyncIterator[bytes], memory: dict[str, Any],
                            on_done: Callable[[str], None]) -> AsyncIterator[bytes]:
    buffer, pieces, last = b"", [], None
    async for chunk in chunks:
        buffer += chunk.replace(b"\r\n", b"\n")
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            data = _data_of(event)
            if data == DONE:
                yield memory_chunk(last, memory)
                yield event + b"\n\n"
                on_done("".join(pieces))
                continue
            parsed = _parse(data)
            if parsed is not None:
                last = parsed
                pieces.append(_delta_text(parsed))
            yield event + b"\n\n"
    if buffer:
        yield buffer


def _parse(data: bytes | None) -> dict[str, Any] | None:
    if not data:
        return None
    try:
        parsed = json.loads(data)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None
