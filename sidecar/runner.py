"""Assemble a sidecar from its settings and run it under uvicorn until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from rich.console import Console

from adapters.base_model import BaseModelShape
from adapters.registry import AdapterRegistry
from adapters.sizing import DTYPE_BYTES, SlotSizing, size_slots
from kvcache.connector_config import check_store_dir, connector_env, kv_transfer_config
from kvcache.fingerprint import model_fingerprint
from kvcache.store import StoreConfig, TieredStore
from memcore.postgres import redacted
from memcore.units import MIB, gib_to_bytes
from sidecar.config import Settings
from sidecar.engine.dtype import engine_dtype, model_dtype
from sidecar.engine.model_builder import ensure_model
from sidecar.engine.command import EngineSpec, LoraSpec, parse_extra_args
from sidecar.engine.process import AttachedEngine, Engine, ManagedEngine, free_port
from sidecar.http.app import create_app
from sidecar.http.assembly import AdapterSetup
from sidecar.tenants.keys import DEFAULT_TENANT, KeyTable, check_exposure
from textual.embedder import Embedder
from textual.lifecycle import LifecyclePolicy
from textual.store import MemoryStore

log = logging.getLogger("memsidecar")
DEFAULT_MODEL = "smollm2-135m-instruct"
LORA_SHARE_OF_ENGINE = 0.25  # of the engine's memory budget, what `max_loras auto` may give adapters by default


def resolve_model_dir(settings: Settings, console: Console) -> Path:
    """The configured model directory, or the default real instruct model (built on first use)."""
    if settings.model is not None:
        return settings.model
    target = settings.models_dir / DEFAULT_MODEL
    with console.status(f"no model configured: preparing {DEFAULT_MODEL!r} in {target}") as status:
        return ensure_model(DEFAULT_MODEL, target,
                            progress=lambda message: status.update(f"{DEFAULT_MODEL}: {message}"))


def kv_connector_json(settings: Settings) -> str | None:
    """The engine's KV-connector configuration, or None with activation memory off. Checks the store is writable."""
    if not settings.kv_store:
        return None
    store_dir = settings.resolved_kv_store_dir
    check_store_dir(store_dir)
    return kv_transfer_config(store_dir, gib_to_bytes(settings.kv_ram_gib), gib_to_bytes(settings.kv_disk_gib),
                              remote=settings.kv_remote_url is not None,
                              tenant_disk_bytes=settings.tenant_max_kv_disk_bytes)


def kv_remote_secret(settings: Settings) -> str | None:
    return settings.kv_remote_secret.get_secret_value() if settings.kv_remote_secret is not None else None


def kv_connector_env(settings: Settings) -> dict[str, str]:
    """The engine's environment for the KV connector's shared tier (URL and MAC secret: never on its command line)."""
    if not settings.kv_store:
        return {}
    return connector_env(settings.kv_remote_url, kv_remote_secret(settings))


def lora_spec(settings: Settings) -> LoraSpec | None:
    """Runtime LoRA serving for the engine, or None with adapters off (`max_loras` 0)."""
    if not settings.max_loras:
        return None
    return LoraSpec(settings.max_loras, settings.max_cpu_loras, settings.max_lora_rank)


def lora_budget_bytes(settings: Settings) -> int:
    """Engine memory `max_loras auto` may give adapters: `lora_memory_gib`, else a share of the engine's budget."""
    if settings.lora_memory_gib is not None:
        return gib_to_bytes(settings.lora_memory_gib)
    engine_gib = settings.tier_engine_gib if settings.tier_engine_gib is not None else settings.kv_cache_gib
    return int(gib_to_bytes(engine_gib) * LORA_SHARE_OF_ENGINE)


def resolve_lora(settings: Settings, model_dir: Path | None, adapter_rank: int | None
                 ) -> tuple[Settings, SlotSizing | None]:
    """`settings` with `max_loras auto` sized for the model in `model_dir` and adapters of at most `adapter_rank`
    (None: none registered yet), and the sizing; other settings unchanged, and no sizing."""
    if settings.max_loras != "auto" or model_dir is None:
        return settings, None
    dtype = engine_dtype(settings.dtype, model_dir)
    dtype_bytes = DTYPE_BYTES.get(dtype if dtype != "auto" else model_dtype(model_dir) or "float32", 4)
    sizing = size_slots(lora_budget_bytes(settings), BaseModelShape.load(model_dir).lora_features, dtype_bytes,
                        settings.max_lora_rank, adapter_rank, settings.max_engine_requests, settings.max_cpu_loras)
    log.info("max_loras auto: %d engine slots, %d adapters cached (%.1f MiB a slot, %.1f MiB an adapter, %.0f of "
             "%.0f MiB; limited by %s)", sizing.max_loras, sizing.max_cpu_loras, sizing.slot_bytes / MIB,
             sizing.adapter_bytes / MIB, sizing.used_bytes / MIB, sizing.budget_bytes / MIB, sizing.limited_by)
    return settings.model_copy(update={"max_loras": sizing.max_loras, "max_cpu_loras": sizing.max_cpu_loras}), sizing


def served_model_dir(settings: Settings, console: Console) -> Path | None:
    """The directory of the model the engine serves; None when attached to an engine without `--model`."""
    if settings.engine_url:
        return settings.model.resolve() if settings.model is not None else None
    return resolve_model_dir(settings, console).resolve()


def build_engine(settings: Settings, console: Console) -> tuple[Engine, str | None]:
    """The engine and the model name requests default to (None when attached: the engine's only model). With
    `max_loras auto` still unresolved, its slots are sized as for no registered adapter."""
    if settings.engine_url:
        return AttachedEngine(settings.engine_url), settings.served_model_name
    model_dir = resolve_model_dir(settings, console)
    settings, _ = resolve_lora(settings, model_dir.resolve(), None)
    name = settings.served_model_name or model_dir.resolve().name
    spec = EngineSpec(
        model_dir=model_dir.resolve(),
        served_model_name=name,
        port=settings.engine_port or free_port(),
        kv_cache_gib=settings.kv_cache_gib,
        max_model_len=settings.max_model_len,
        block_size=settings.block_size,
        dtype=engine_dtype(settings.dtype, model_dir.resolve()),
        extra_args=parse_extra_args(settings.engine_args),
        cache_dir=settings.data_dir / "cache",
        kv_transfer_config=kv_connector_json(settings),
        secret_env=kv_connector_env(settings),
        lora=lora_spec(settings),
        compact_json=settings.memory_extraction,
        priority_scheduling=settings.engine_priorities,
    )
    engine = ManagedEngine(spec, settings.logs_dir / "engine.log", settings.engine_startup_timeout_s)
    return engine, name


def load_keys(settings: Settings) -> KeyTable:
    """The API key table; refuses an open (keyless) sidecar on a non-loopback address."""
    keys = KeyTable.load(settings.api_keys, settings.api_keys_file)
    check_exposure(keys, settings.host)
    if keys.is_open:
        log.warning("no API keys configured: every caller is tenant %r, serving loopback only", DEFAULT_TENANT)
    else:
        log.info("API keys configured for %d tenant(s)", len(set(keys.tenants_by_hash.values())))
    return keys


def open_memory(settings: Settings, console: Console) -> MemoryStore:
    """The textual-memory store of this sidecar (loads the embedding model; with `store`, connects to PostgreSQL
    and applies its migrations)."""
    where = settings.resolved_memory_dir if settings.store is None else redacted(settings.store)
    with console.status(f"opening textual memory in {where}"):
        embedder = Embedder.open(settings.embedding_model, bulk_nice=settings.bulk_work_nice)
        return MemoryStore.open(settings.resolved_memory_dir, embedder=embedder,
                                vector_device=settings.memory_index_device,
                                lifecycle=LifecyclePolicy(retention_s=settings.memory_retention_s),
                                map_size=gib_to_bytes(settings.memory_map_gib),
                                max_map_size=gib_to_bytes(settings.memory_map_max_gib), store_url=settings.store)


def open_adapters(settings: Settings, model_dir: Path | None) -> AdapterSetup | None:
    """The adapter registry for the engine's model (in `model_dir`), or None when adapters are off (`max_loras` 0)
    or the model directory is unknown (an attached engine without `--model`). An attached engine must run with
    `--enable-lora` and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=1`. With `--store` the registry is in that PostgreSQL
    database, shared with the other nodes on it, and its blobs are copied to DATA_DIR/adapters/cache on first use."""
    if not settings.max_loras:
        return None
    if model_dir is None:
        log.warning("adapters are off: attached to an engine without --model, the base model is unknown")
        return None
    cache_dir = settings.data_dir / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    registry = AdapterRegistry.open(
        settings.data_dir / "adapters", model_fingerprint(model_dir, cache_dir / "fingerprints.json"),
        settings.max_lora_rank, BaseModelShape.load(model_dir), settings.max_adapter_upload_bytes,
        store_url=settings.store)
    return AdapterSetup(registry, model_dir, settings.data_dir / "distill")


def open_kv_store(settings: Settings) -> TieredStore | None:
    """The engine connector's store, opened in this process without a RAM tier (statistics, pins)."""
    if not settings.kv_store:
        return None
    secret = kv_remote_secret(settings)
    return TieredStore.open(StoreConfig(settings.resolved_kv_store_dir, gib_to_bytes(settings.kv_ram_gib),
                                        gib_to_bytes(settings.kv_disk_gib), settings.kv_remote_url,
                                        remote_secret=secret.encode() if secret is not None else None,
                                        tenant_disk_bytes=settings.tenant_max_kv_disk_bytes),
                            with_ram=False)


def build_app(settings: Settings, console: Console) -> FastAPI:
    """The sidecar app with its engine; raises ValueError for unusable settings (keys, directories, model)."""
    keys = load_keys(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    model_dir = served_model_dir(settings, console)
    adapters = open_adapters(settings, model_dir)
    settings, sizing = resolve_lora(settings, model_dir, adapters.registry.max_rank() if adapters else None)
    if adapters is not None:
        adapters = replace(adapters, sizing=sizing)
    engine, default_model = build_engine(settings, console)
    store = open_memory(settings, console)
    kv_store = open_kv_store(settings) if isinstance(engine, ManagedEngine) else None
    log.info("memsidecar on http://%s:%d (data: %s, engine: %s)", settings.host, settings.port, settings.data_dir,
             engine.base_url)
    return create_app(settings, engine, keys, store, default_model, adapters, kv_store)


def serve_app(app: FastAPI, settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM; the app's lifespan starts and stops the engine."""
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, log_config=None)
