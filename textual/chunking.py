"""Splitting a knowledge-base document into chunks. Pure.

Rule: tokens are the budget's regex pieces (`textual.tokens`); a chunk is the span of the original text from its
first token to its last, windows of `max_tokens` tokens starting every `max_tokens - overlap` tokens, so
consecutive chunks share `overlap` tokens and the last window may be shorter. A text of at most `max_tokens`
tokens is one chunk. Whitespace and layout inside a chunk are kept as written.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.tokens import TOKEN_PATTERN

DEFAULT_CHUNK_TOKENS = 200
DEFAULT_OVERLAP_TOKENS = 40


@dataclass(frozen=True)
class Chunk:
    """One piece of a document: its text and its [start, end) character span in the document."""

    index: int
    text: str
    start: int
    end: int


def chunk_text(text: str, max_tokens: int = DEFAULT_CHUNK_TOKENS,
               overlap: int = DEFAULT_OVERLAP_TOKENS) -> list[Chunk]:
    """The chunks of `text` by the rule above; [] for a text without tokens."""
    if max_tokens < 1 or not 0 <= overlap < max_tokens:
        raise ValueError(f"need max_tokens >= 1 and 0 <= overlap < max_tokens, got {max_tokens}, {overlap}")
    spans = [match.span() for match in TOKEN_PATTERN.finditer(text)]
    chunks: list[Chunk] = []
    step = max_tokens - overlap
    for first in range(0, len(spans), step):
        window = spans[first:first + max_tokens]
        start, end = window[0][0], window[-1][1]
        chunks.append(Chunk(len(chunks), text[start:end], start, end))
        if first + max_tokens >= len(spans):
            break
    return chunks
