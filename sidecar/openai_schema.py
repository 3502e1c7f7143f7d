"""Pydantic models of the OpenAI requests the sidecar accepts, validated at the HTTP edge.

Only the fields the sidecar relies on (or must range-check) are declared; every other OpenAI or vLLM parameter is
kept as an extra field and forwarded to the engine untouched.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from sidecar.memory_chat import MemoryOptions


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[dict[str, Any]] | None = None


class _SamplingFields(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: StrictStr | None = Field(None, description="Served model (or adapter) name; unset means the base model.")
    stream: StrictBool = False
    max_tokens: StrictInt | None = Field(None, ge=1)
    temperature: StrictFloat | StrictInt | None = Field(None, ge=0, le=2)
    top_p: StrictFloat | StrictInt | None = Field(None, gt=0, le=1)
    n: StrictInt | None = Field(None, ge=1, le=16)


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1, max_length=10_000)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    user: StrictStr | None = Field(None, max_length=128, description="End user; memories are kept per user.")
    memory: MemoryOptions | None = Field(None, description="Memory controls (sidecar extension, via `extra_body`).")


class CompletionRequest(_SamplingFields):
    prompt: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]


def engine_body(request: _SamplingFields, model: str) -> dict[str, Any]:
    """The JSON the engine receives: what the client sent (extras included), with the resolved model name."""
    body = request.model_dump(mode="json", exclude_unset=True, exclude={"memory"})
    body["model"] = model
    return body
