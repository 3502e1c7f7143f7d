"""The connector's configuration: the shared tier's URL and MAC secret reach the engine in its environment, never in
`--kv-transfer-config` (no engine started)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from kvcache.connector_config import (REMOTE_SECRET_ENV, REMOTE_URL_ENV, ConnectorConfig, connector_env,
                                      kv_transfer_config)

URL = "redis://memsidecar:hunter2-password@valkey:6379/0"
SECRET = "0123456789abcdef-shared-by-the-nodes"


def vllm_config(tmp_path, config_json: str) -> SimpleNamespace:
    """The parts of vLLM's config that `ConnectorConfig.from_vllm` reads."""
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    extra = json.loads(config_json)["kv_connector_extra_config"]
    return SimpleNamespace(
        kv_transfer_config=SimpleNamespace(kv_connector_extra_config=extra),
        parallel_config=SimpleNamespace(tensor_parallel_size=1, pipeline_parallel_size=1),
        cache_config=SimpleNamespace(cache_dtype="auto", kv_cache_layout="NHD", block_size=16),
        model_config=SimpleNamespace(model=str(model), quantization=None, dtype="bfloat16"),
        lora_config=None,
    )


def test_the_url_and_secret_travel_in_the_environment_not_the_json(tmp_path):
    config_json = kv_transfer_config(tmp_path / "kv", 1 << 20, 1 << 22, remote=True)
    assert "hunter2" not in config_json and SECRET not in config_json
    env = connector_env(URL, SECRET)
    assert env == {REMOTE_URL_ENV: URL, REMOTE_SECRET_ENV: SECRET}
    config = ConnectorConfig.from_vllm(vllm_config(tmp_path, config_json), environ={"PATH": "/bin", **env})
    assert (config.remote_url, config.remote_secret) == (URL, SECRET.encode())
    assert "hunter2" not in repr(config) and SECRET not in repr(config)


def test_without_a_shared_tier_the_environment_is_ignored(tmp_path):
    config_json = kv_transfer_config(tmp_path / "kv", 1 << 20, 1 << 22)
    assert connector_env(None, None) == {}
    stale = connector_env(URL, SECRET)  # inherited from some parent: not asked for, not used
    config = ConnectorConfig.from_vllm(vllm_config(tmp_path, config_json), environ=stale)
    assert (config.remote_url, config.remote_secret) == (None, None)


def test_a_shared_tier_without_its_environment_is_refused_naming_what_is_missing(tmp_path):
    config_json = kv_transfer_config(tmp_path / "kv", 1 << 20, 1 << 22, remote=True)
    with pytest.raises(ValueError, match=f"the engine's environment lacks {REMOTE_SECRET_ENV} .the sidecar"):
        ConnectorConfig.from_vllm(vllm_config(tmp_path, config_json), environ={REMOTE_URL_ENV: URL})
    with pytest.raises(ValueError, match="kv_remote_secret"):
        connector_env(URL, None)


def test_the_tenants_disk_budget_reaches_the_store_the_connector_opens(tmp_path):
    config_json = kv_transfer_config(tmp_path / "kv", 1 << 20, 1 << 22, tenant_disk_bytes=1 << 21)
    config = ConnectorConfig.from_vllm(vllm_config(tmp_path, config_json), environ={})
    assert config.store_config().tenant_disk_bytes == 1 << 21
    older = json.loads(config_json)
    del older["kv_connector_extra_config"]["tenant_disk_bytes"]  # a configuration written before the budget
    assert ConnectorConfig.from_vllm(vllm_config(tmp_path, json.dumps(older)), environ={}).tenant_disk_bytes == 0
