"""The ceiling of a request's output tokens: pure. One tenant's request must not hold an engine slot for as long as
the whole context allows unless the sidecar's operator says so.

Rule: the limit is `max_output_tokens` (configured), or the engine's context length (`max_model_len`) when smaller.
A request asking for more in `max_tokens` or `max_completion_tokens` is refused (400 naming the field and the
limit); one asking for nothing gets `max_tokens` = the limit. The engine itself clamps any `max_tokens` to what
the context leaves after the prompt, so the limit never makes a request fail that would have fitted.
"""

from __future__ import annotations

from typing import Any

FIELDS = ("max_tokens", "max_completion_tokens")


class OutputLimitError(ValueError):
    """A request asked for more output tokens than the limit; `field` names the field."""

    def __init__(self, field: str, asked: int, limit: int, why: str) -> None:
        super().__init__(f"{field}: {asked} is more than this sidecar allows, {limit} ({why})")
        self.field = field
        self.limit = limit


def output_limit(ceiling: int, context_length: int | None) -> tuple[int, str]:
    """The output-token limit and what sets it."""
    if context_length is not None and context_length < ceiling:
        return context_length, "the model's context length; prompt and output share it"
    return ceiling, "the configured max_output_tokens"


def bound_output_tokens(body: dict[str, Any], ceiling: int, context_length: int | None) -> dict[str, Any]:
    """The engine body with its output tokens within the limit: refused (OutputLimitError) or defaulted."""
    limit, why = output_limit(ceiling, context_length)
    for field in FIELDS:
        asked = body.get(field)
        if isinstance(asked, int) and asked > limit:
            raise OutputLimitError(field, asked, limit, why)
    if all(body.get(field) is None for field in FIELDS):
        return {**body, "max_tokens": limit}
    return body
