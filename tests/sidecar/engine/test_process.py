"""The engine's command line and environment, the restart back-off policy, readiness from health probes, and a
start that fails (no engine process started)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from sidecar.engine.command import EngineSpec, engine_command, engine_env, parse_extra_args
from sidecar.engine.process import ManagedEngine, Readiness, RestartBackoff


def spec(**overrides) -> EngineSpec:
    values = dict(model_dir=Path("/models/tiny"), served_model_name="tiny", port=9100)
    return EngineSpec(**(values | overrides))


def test_command_runs_the_openai_server_module_with_explicit_kv_cache_size():
    argv = engine_command(spec(kv_cache_gib=2.0), python="/venv/bin/python")
    assert argv[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert argv[argv.index("--model") + 1] == "/models/tiny"
    assert argv[argv.index("--served-model-name") + 1] == "tiny"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == "9100"
    assert argv[argv.index("--kv-cache-memory-bytes") + 1] == str(2 * 2**30)
    assert "--max-model-len" not in argv and "--block-size" not in argv


def test_optional_settings_and_extra_args_reach_the_command():
    extra = parse_extra_args("--seed 7 --enforce-eager")
    argv = engine_command(spec(max_model_len=1024, block_size=32, extra_args=extra))
    assert argv[argv.index("--max-model-len") + 1] == "1024"
    assert argv[argv.index("--block-size") + 1] == "32"
    assert argv[-3:] == ["--seed", "7", "--enforce-eager"]


def test_compact_json_configures_structured_outputs_unless_the_extra_args_do():
    import json

    argv = engine_command(spec(compact_json=True))
    config = json.loads(argv[argv.index("--structured-outputs-config") + 1])
    assert config == {"backend": "guidance", "disable_any_whitespace": True}
    assert "--structured-outputs-config" not in engine_command(spec())
    own = parse_extra_args("--structured-outputs-config.backend xgrammar")
    assert engine_command(spec(compact_json=True, extra_args=own))[-2:] == list(own)
    assert "--structured-outputs-config" not in engine_command(spec(compact_json=True, extra_args=own))


def test_priority_scheduling_reaches_the_command_unless_the_extra_args_set_a_policy():
    argv = engine_command(spec(priority_scheduling=True))
    assert argv[argv.index("--scheduling-policy") + 1] == "priority"
    assert "--scheduling-policy" not in engine_command(spec())
    own = parse_extra_args("--scheduling-policy fcfs")
    assert engine_command(spec(priority_scheduling=True, extra_args=own)).count("--scheduling-policy") == 1


def test_environment_is_offline_and_sizes_the_cpu_kv_cache():
    env = engine_env(spec(kv_cache_gib=3.0, cache_dir=Path("/data/cache")), {"PATH": "/bin"})
    assert env["PATH"] == "/bin"
    assert env["HF_HUB_OFFLINE"] == "1" and env["VLLM_NO_USAGE_STATS"] == "1"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert env["VLLM_CACHE_ROOT"] == "/data/cache/vllm"


def test_backoff_doubles_on_quick_failures_up_to_the_maximum():
    backoff = RestartBackoff(initial_s=1, maximum_s=8, reset_after_s=60)
    assert [backoff.delay_after(uptime_s=2) for _ in range(6)] == [1, 2, 4, 8, 8, 8]


def test_backoff_resets_after_a_long_healthy_run():
    backoff = RestartBackoff(initial_s=1, maximum_s=30, reset_after_s=60)
    for _ in range(4):
        backoff.delay_after(uptime_s=1)
    assert backoff.delay_after(uptime_s=600) == 1


def test_the_kv_connector_configuration_reaches_the_engine(tmp_path):
    import json

    from kvcache.connector_config import kv_transfer_config

    config = kv_transfer_config(tmp_path / "kv", ram_bytes=1 << 30, disk_bytes=8 << 30, tenant_disk_bytes=2 << 30)
    argv = engine_command(spec(kv_transfer_config=config))
    parsed = json.loads(argv[argv.index("--kv-transfer-config") + 1])
    assert parsed["kv_connector"] == "MemsidecarConnector" and parsed["kv_connector_module_path"] == "kvcache.connector"
    assert parsed["kv_load_failure_policy"] == "recompute"
    assert parsed["kv_connector_extra_config"] == {"store_dir": str(tmp_path / "kv"), "ram_bytes": 1 << 30,
                                                   "disk_bytes": 8 << 30, "remote": False,
                                                   "tenant_disk_bytes": 2 << 30}


def test_the_shared_tiers_credentials_and_secret_reach_the_engine_only_in_its_environment(tmp_path):
    """ps shows every user the engine's argv; /proc/PID/environ only its own user."""
    from sidecar.config import Settings
    from sidecar.runner import kv_connector_env, kv_connector_json

    url, secret = "redis://memsidecar:hunter2-password@valkey:6379/0", "0123456789abcdef-shared-by-the-nodes"
    settings = Settings(data_dir=tmp_path, kv_remote_url=url, kv_remote_secret=secret)
    engine = spec(kv_transfer_config=kv_connector_json(settings), secret_env=kv_connector_env(settings))
    argv = " ".join(engine_command(engine))
    assert '"remote": true' in argv and "hunter2" not in argv and secret not in argv
    assert f'"tenant_disk_bytes": {settings.tenant_max_kv_disk_bytes}' in argv  # each tenant's disk budget, too
    env = engine_env(engine, {"PATH": "/bin"})
    assert env["MEMSIDECAR_CONNECTOR_REMOTE_URL"] == url and env["MEMSIDECAR_CONNECTOR_REMOTE_SECRET"] == secret
    assert "hunter2" not in repr(engine) and secret not in repr(engine)
    assert kv_connector_env(Settings(data_dir=tmp_path, kv_remote_url=url, kv_remote_secret=secret,
                                     kv_store=False)) == {}


def test_readiness_survives_single_unanswered_probes_and_drops_after_consecutive_ones():
    readiness = Readiness(misses=3)
    assert not readiness.observe(False)  # never answered: not ready
    assert readiness.observe(True)
    assert readiness.observe(False) and readiness.observe(False)  # two probes timed out under load: still ready
    assert readiness.observe(True) and readiness.observe(False) and readiness.observe(False)  # a 200 resets
    assert not readiness.observe(False)  # the third in a row: not ready
    assert readiness.observe(True)
    readiness.lost()  # the process died: not ready at once
    assert not readiness.ready


def test_a_start_that_fails_is_logged_and_retried_with_back_off(tmp_path, caplog):
    log_path = tmp_path / "engine.log"
    log_path.mkdir()  # the engine's log cannot be opened: its start fails before any process exists
    engine = ManagedEngine(spec(), log_path, backoff=RestartBackoff(initial_s=0.01, maximum_s=0.01))

    async def run() -> int:
        await engine.start()
        deadline = time.monotonic() + 10
        while engine.restart_count < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await engine.stop()
        return engine.restart_count

    with caplog.at_level(logging.WARNING, logger="memsidecar.engine"):
        assert asyncio.run(run()) >= 2
    assert not engine.is_ready and engine.pid is None
    assert "engine could not be started (IsADirectoryError" in caplog.text


def test_supervision_ended_by_a_defect_is_logged(tmp_path, caplog):
    engine = ManagedEngine(spec(), tmp_path / "engine.log")

    async def broken_spawn() -> None:
        raise TypeError("unexpected keyword argument 'process_group'")  # as uvloop's subprocess_exec answers one

    engine._spawn = broken_spawn

    async def run() -> None:
        await engine.start()
        await asyncio.sleep(0.1)
        await engine.stop()

    with caplog.at_level(logging.ERROR, logger="memsidecar.engine"):
        asyncio.run(run())
    assert "engine supervision ended by an error" in caplog.text and "process_group" in caplog.text
