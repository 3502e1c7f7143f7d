"""The connector's configuration: the one place that writes and reads `kv_connector_extra_config`.

The sidecar builds the engine's `--kv-transfer-config` with `kv_transfer_config(...)`; the connector, inside the
engine, reads it back with `ConnectorConfig.from_vllm(...)` and adds what only the engine knows (KV dtype, layout,
block size, tensor-parallel rank).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvcache.fingerprint import model_fingerprint
from kvcache.keys import Namespace

CONNECTOR_CLASS = "MemsidecarConnector"
CONNECTOR_MODULE = "kvcache.connector"


def kv_transfer_config(store_dir: Path, ram_bytes: int, disk_bytes: int, remote_url: str | None = None) -> str:
    """The JSON for vLLM's `--kv-transfer-config` that loads memsidecar's connector."""
    extra = {"store_dir": str(store_dir), "ram_bytes": ram_bytes, "disk_bytes": disk_bytes, "remote_url": remote_url}
    return json.dumps({
        "kv_connector": CONNECTOR_CLASS,
        "kv_connector_module_path": CONNECTOR_MODULE,
        "kv_role": "kv_both",
        "kv_load_failure_policy": "recompute",
        "kv_connector_extra_config": extra,
    })


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
    """Everything the connector needs, resolved inside the engine."""

    store_dir: Path
    ram_bytes: int
    disk_bytes: int
    remote_url: str | None
    base_namespace: Namespace

    @classmethod
    def from_vllm(cls, vllm_config: Any) -> "ConnectorConfig":
        extra: dict[str, Any] = vllm_config.kv_transfer_config.kv_connector_extra_config
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
        return cls(store_dir, int(extra["ram_bytes"]), int(extra["disk_bytes"]), extra.get("remote_url"), namespace)
