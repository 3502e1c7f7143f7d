"""The connector's configuration: the one place that writes and reads `kv_connector_extra_config`.

The sidecar builds the engine's `--kv-transfer-config` with `kv_transfer_config(...)`; the connector, inside the
engine, reads it back with `ConnectorConfig.from_vllm(...)` and adds what only the engine knows (KV dtype, layout,
block size, tensor-parallel rank).

Secrets never travel in `--kv-transfer-config`, which is on the engine's command line and so visible to every user
in `ps`: the shared tier's URL (it may carry a password) and its MAC secret reach the engine in its environment
(`connector_env`, readable only by its user), and the JSON says only whether to expect them (`remote`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvcache.fingerprint import model_fingerprint
from kvcache.keys import Namespace
from kvcache.store import StoreConfig

CONNECTOR_CLASS = "MemsidecarConnector"
CONNECTOR_MODULE = "kvcache.connector"
REMOTE_URL_ENV = "MEMSIDECAR_CONNECTOR_REMOTE_URL"
REMOTE_SECRET_ENV = "MEMSIDECAR_CONNECTOR_REMOTE_SECRET"


def kv_transfer_config(store_dir: Path, ram_bytes: int, disk_bytes: int, remote: bool = False,
                       tenant_disk_bytes: int = 0) -> str:
    """The JSON for vLLM's `--kv-transfer-config` that loads memsidecar's connector; with `remote`, the engine's
    environment must hold `connector_env(...)`. `tenant_disk_bytes`: what one tenant's blocks may take of the disk
    tier (0: no limit)."""
    extra = {"store_dir": str(store_dir), "ram_bytes": ram_bytes, "disk_bytes": disk_bytes, "remote": remote,
             "tenant_disk_bytes": tenant_disk_bytes}
    return json.dumps({
        "kv_connector": CONNECTOR_CLASS,
        "kv_connector_module_path": CONNECTOR_MODULE,
        "kv_role": "kv_both",
        "kv_load_failure_policy": "recompute",
        "kv_connector_extra_config": extra,
    })


def connector_env(remote_url: str | None, remote_secret: str | None) -> dict[str, str]:
    """The engine's environment variables for the shared tier: its URL and MAC secret; {} without a shared tier."""
    if not remote_url:
        return {}
    if not remote_secret:
        raise ValueError("kv_remote_url needs kv_remote_secret (MEMSIDECAR_KV_REMOTE_SECRET), the MAC secret the "
                         "nodes sharing the tier hold")
    return {REMOTE_URL_ENV: remote_url, REMOTE_SECRET_ENV: remote_secret}


def check_store_dir(store_dir: Path) -> None:
    """Raise a clear error at start-up when the store directory cannot be created or written."""
    try:
        store_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"KV store directory {store_dir} cannot be created: {exc.strerror}") from None
    if not os.access(store_dir, os.W_OK | os.X_OK):
        raise ValueError(f"KV store directory {store_dir} is not writable; fix its permissions or pass --kv-store-dir")


@dataclass(frozen=True)
class ConnectorConfig:
    """Everything the connector needs, resolved inside the engine. The shared tier's URL and secret stay out of the
    repr."""

    store_dir: Path
    ram_bytes: int
    disk_bytes: int
    remote_url: str | None = field(repr=False)
    remote_secret: bytes | None = field(repr=False)
    base_namespace: Namespace
    tenant_disk_bytes: int = 0

    @classmethod
    def from_vllm(cls, vllm_config: Any, environ: Mapping[str, str] = os.environ) -> "ConnectorConfig":
        """Read the sidecar's JSON back (`environ`: the engine's environment, where the shared tier's URL and MAC
        secret are) and add what the engine knows."""
        extra: dict[str, Any] = vllm_config.kv_transfer_config.kv_connector_extra_config
        remote_url, remote_secret = remote_from_env(environ) if extra.get("remote") else (None, None)
        parallel = vllm_config.parallel_config
        if parallel.tensor_parallel_size != 1 or parallel.pipeline_parallel_size != 1:
            raise ValueError("memsidecar's KV connector supports tensor/pipeline parallel size 1 only for now")
        cache = vllm_config.cache_config
        store_dir = Path(extra["store_dir"])
        store_dir.mkdir(parents=True, exist_ok=True)
        fingerprint = model_fingerprint(Path(vllm_config.model_config.model), store_dir / "fingerprints.json")
        quantization = getattr(vllm_config.model_config, "quantization", None) or "none"
        namespace = Namespace(
            model_fingerprint=fingerprint,
            engine_variant=f"lora={vllm_config.lora_config is not None};quant={quantization}",
            kv_dtype=str(cache.cache_dtype if cache.cache_dtype != "auto" else vllm_config.model_config.dtype),
            kv_layout=str(cache.kv_cache_layout or "unknown"),
            block_size=cache.block_size,
            tp_rank=0,
            tp_size=parallel.tensor_parallel_size,
            adapter="none",
            scope="public",
        )
        return cls(store_dir, int(extra["ram_bytes"]), int(extra["disk_bytes"]), remote_url, remote_secret, namespace,
                   int(extra.get("tenant_disk_bytes", 0)))

    def store_config(self) -> StoreConfig:
        """The store the connector opens, in the scheduler and in the worker."""
        return StoreConfig(self.store_dir, self.ram_bytes, self.disk_bytes, self.remote_url,
                           remote_secret=self.remote_secret, tenant_disk_bytes=self.tenant_disk_bytes)


def remote_from_env(environ: Mapping[str, str]) -> tuple[str, bytes]:
    """The shared tier's URL and MAC secret from the engine's environment; raises naming what is missing."""
    missing = [name for name in (REMOTE_URL_ENV, REMOTE_SECRET_ENV) if not environ.get(name)]
    if missing:
        raise ValueError(f"the KV connector is configured with a shared tier but the engine's environment lacks "
                         f"{' and '.join(missing)} (the sidecar sets them from kv_remote_url and kv_remote_secret)")
    return environ[REMOTE_URL_ENV], environ[REMOTE_SECRET_ENV].encode()
