"""Pydantic models of the OpenAI requests the chat path accepts (FastAPI validates them at the HTTP edge).

Invariant: the engine receives only fields declared here. vLLM's OpenAI server accepts many fields that control
the engine itself rather than one completion (`kv_transfer_params` drives the KV connector's pinning,
`cache_salt` is the tenant's KV isolation, `priority` and `request_id` the scheduler's bookkeeping,
`prompt_embeds` and `logits_processors` load tensors and code); the sidecar sets some of them itself. So the
models forbid every undeclared field, and a request naming one is refused with a 400 naming it; the declared set
is the OpenAI API plus vLLM's per-request sampling options, each range-checked. Message content parts are text,
or media carried inline (data: URLs): the engine never fetches a URL a tenant chose.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr,
                      model_validator)
from pydantic_core import PydanticCustomError

from sidecar.chat.injection import MemoryOptions

# field -> why a tenant may not set it; any other undeclared field is refused as unknown
ENGINE_INTERNAL = {
    "kv_transfer_params": "it drives the KV connector (pinning, transfers); use /v1/activations",
    "cache_salt": "the sidecar sets the KV cache salt per tenant",
    "lora_request": "adapters are chosen by `model`, through the adapter registry",
    "priority": "scheduling priority is the operator's, not a tenant's",
    "request_id": "the engine's request ids are the sidecar's",
    "vllm_xargs": "it passes arbitrary arguments to engine plugins",
    "prompt_embeds": "the engine would deserialize tenant-supplied tensors",
    "logits_processors": "the engine would import code a tenant names",
    "chat_template": "the model's own chat template is used",
    "mm_processor_kwargs": "the engine's multimodal processing is the operator's",
    "data_parallel_rank": "engine placement is the operator's",
}
MAX_STOP = 16
MAX_TOOLS = 128
# JSON schemas a tenant hands the engine (`response_format`, `tools`, `tool_choice`) are compiled into grammars for
# structured output on the engine's scheduling path: their size, nesting and regular expressions are bounded so one
# request cannot hold the engine compiling.
MAX_SCHEMA_DEPTH = 32
MAX_SCHEMA_NODES = 4_096
MAX_SCHEMA_PATTERN_CHARS = 1_000
Number = StrictFloat | StrictInt
Seed = Annotated[StrictInt, Field(ge=-(2 ** 63), le=2 ** 63 - 1)]  # the engine keeps seeds as int64
TokenId = Annotated[StrictInt, Field(ge=0, le=2 ** 31 - 1)]


def bounded_schema(value: Any) -> Any:
    """`value` if its JSON has at most `MAX_SCHEMA_NODES` values nested at most `MAX_SCHEMA_DEPTH` deep, and every
    `pattern` (and `patternProperties` key) has at most `MAX_SCHEMA_PATTERN_CHARS` characters."""
    nodes, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if depth > MAX_SCHEMA_DEPTH or nodes > MAX_SCHEMA_NODES:
            raise PydanticCustomError("schema_too_large", "more than {nodes} values or {depth} levels of nesting",
                                      {"nodes": MAX_SCHEMA_NODES, "depth": MAX_SCHEMA_DEPTH})
        if isinstance(node, dict):
            _check_patterns(node)
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
    return value


def _check_patterns(schema: dict[str, Any]) -> None:
    patterns = [schema["pattern"]] if isinstance(schema.get("pattern"), str) else []
    if isinstance(schema.get("patternProperties"), dict):
        patterns += list(schema["patternProperties"])
    if any(len(pattern) > MAX_SCHEMA_PATTERN_CHARS for pattern in patterns):
        raise PydanticCustomError("schema_pattern_too_long", "a pattern is longer than {limit} characters",
                                  {"limit": MAX_SCHEMA_PATTERN_CHARS})


Schema = Annotated[dict[str, Any], AfterValidator(bounded_schema)]


class _Strict(BaseModel):
    """Undeclared fields are refused; an engine-internal one with a message saying why."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_engine_internal_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for field in ENGINE_INTERNAL.keys() & data.keys():
                raise PydanticCustomError("engine_internal", "{field} is not accepted: {reason}",
                                          {"field": field, "reason": ENGINE_INTERNAL[field]})
        return data


class _InlineURL(_Strict):
    url: StrictStr = Field(pattern=r"^data:", max_length=20_000_000, description="A data: URL; never fetched.")
    detail: Literal["auto", "low", "high"] | None = None


class _TextPart(_Strict):
    type: Literal["text"]
    text: StrictStr


class _ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: _InlineURL


class _AudioPart(_Strict):
    type: Literal["input_audio"]
    input_audio: dict[StrictStr, StrictStr]


ContentPart = Annotated[_TextPart | _ImagePart | _AudioPart, Field(discriminator="type")]


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[ContentPart] | None = None
    name: StrictStr | None = Field(None, max_length=256)
    tool_calls: list[dict[str, Any]] | None = Field(None, max_length=MAX_TOOLS)
    tool_call_id: StrictStr | None = Field(None, max_length=256)
    reasoning_content: StrictStr | None = None


class StreamOptions(_Strict):
    include_usage: StrictBool | None = None
    continuous_usage_stats: StrictBool | None = None


class _SamplingFields(_Strict):
    """What both chat and text completions accept: OpenAI's sampling fields and vLLM's per-request extras."""

    model: StrictStr | None = Field(None, max_length=256,
                                    description="Served model (or adapter) name; unset means the base model.")
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: StrictInt | None = Field(None, ge=1, le=2 ** 31 - 1)
    temperature: Number | None = Field(None, ge=0, le=2)
    top_p: Number | None = Field(None, gt=0, le=1)
    n: StrictInt | None = Field(None, ge=1, le=16)
    stop: StrictStr | Annotated[list[StrictStr], Field(max_length=MAX_STOP)] | None = None
    presence_penalty: Number | None = Field(None, ge=-2, le=2)
    frequency_penalty: Number | None = Field(None, ge=-2, le=2)
    logit_bias: dict[StrictStr, Number] | None = Field(None, max_length=300)
    seed: Seed | None = None
    user: StrictStr | None = Field(None, max_length=128, description="End user; memories are kept per user.")
    top_k: StrictInt | None = Field(None, ge=-1, le=2 ** 31 - 1)
    min_p: Number | None = Field(None, ge=0, le=1)
    repetition_penalty: Number | None = Field(None, gt=0, le=10)
    min_tokens: StrictInt | None = Field(None, ge=0, le=2 ** 31 - 1)
    ignore_eos: StrictBool | None = None
    stop_token_ids: list[TokenId] | None = Field(None, max_length=MAX_STOP)
    include_stop_str_in_output: StrictBool | None = None
    skip_special_tokens: StrictBool | None = None
    spaces_between_special_tokens: StrictBool | None = None
    add_special_tokens: StrictBool | None = None


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1, max_length=10_000)
    max_completion_tokens: StrictInt | None = Field(None, ge=1, le=2 ** 31 - 1)
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = Field(None, ge=0, le=20)
    response_format: Schema | None = None
    tools: list[Schema] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: StrictStr | Schema | None = None
    parallel_tool_calls: StrictBool | None = None
    add_generation_prompt: StrictBool | None = None
    continue_final_message: StrictBool | None = None
    memory: MemoryOptions | None = Field(None, description="Memory controls (sidecar extension, via `extra_body`).")


class CompletionRequest(_SamplingFields):
    prompt: StrictStr | list[StrictStr] | list[TokenId] | list[list[TokenId]] = Field(
        description="Text, texts, token ids or lists of token ids.")
    echo: StrictBool | None = None
    logprobs: StrictInt | None = Field(None, ge=0, le=20)
    suffix: StrictStr | None = None


def engine_body(request: _SamplingFields, model: str) -> dict[str, Any]:
    """The JSON the engine receives: the declared fields the client set, with the resolved model name."""
    body = request.model_dump(mode="json", exclude_unset=True, exclude={"memory"})
    body["model"] = model
    return body
