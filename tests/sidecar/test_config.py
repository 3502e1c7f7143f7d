"""Settings precedence (flags > environment > config file > defaults), validation, and the settings table of
docs/configuration.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from sidecar.config import Settings

SETTINGS_TABLE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in Settings.model_fields:
        monkeypatch.delenv(f"MEMSIDECAR_{name.upper()}", raising=False)
    monkeypatch.delenv("MEMSIDECAR_CONFIG", raising=False)


def test_defaults_bind_loopback_port_8000():
    settings = Settings.load()
    assert (settings.host, settings.port, settings.model) == ("127.0.0.1", 8000, None)


def test_flags_beat_environment_beat_config_file(tmp_path, monkeypatch):
    config = tmp_path / "memsidecar.toml"
    config.write_text('port = 9001\nhost = "0.0.0.0"\nlog_level = "debug"\n')
    monkeypatch.setenv("MEMSIDECAR_PORT", "9002")
    monkeypatch.setenv("MEMSIDECAR_LOG_LEVEL", "warning")
    settings = Settings.load(config, port=9003, host=None)
    assert settings.port == 9003  # flag
    assert settings.log_level == "warning"  # environment over file
    assert settings.host == "0.0.0.0"  # file over default; None means "flag not given"


def test_config_file_from_environment(tmp_path, monkeypatch):
    config = tmp_path / "c.toml"
    config.write_text(f'data_dir = "{tmp_path / "state"}"\n')
    monkeypatch.setenv("MEMSIDECAR_CONFIG", str(config))
    assert Settings.load().data_dir == tmp_path / "state"


def test_unknown_key_in_config_file_is_refused(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("prot = 1\n")
    with pytest.raises(ValidationError, match="prot"):
        Settings.load(config)


def test_missing_config_file_is_refused(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        Settings.load(tmp_path / "absent.toml")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("port", 70000, "port"),
    ("log_level", "loud", "critical, error"),
    ("dtype", "int4", "auto, float32"),
    ("model", Path("/nonexistent-model"), "make-model"),
])
def test_bad_values_name_the_field_and_the_allowed_values(field, value, message):
    with pytest.raises(ValidationError, match=message):
        Settings.load(**{field: value})


def test_settings_table_lists_every_setting_with_its_environment_variable():
    text = SETTINGS_TABLE.read_text()
    row = r"^\| `--([a-z0-9-]+)`(?: / `--no-[a-z0-9-]+`)? \| `(MEMSIDECAR_[A-Z0-9_]+)` \|"
    rows = dict(re.findall(row, text, flags=re.MULTILINE))
    expected = {name.replace("_", "-"): f"MEMSIDECAR_{name.upper()}" for name in Settings.model_fields}
    assert rows == expected


def test_serve_help_lists_every_setting():
    from typer.testing import CliRunner

    from sidecar.cli import app

    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "250", "NO_COLOR": "1"})
    assert result.exit_code == 0
    for name in Settings.model_fields:
        assert f"--{name.replace('_', '-')}" in result.output
        assert f"MEMSIDECAR_{name.upper()}" in result.output


SECRET = "0123456789abcdef-shared-by-the-nodes"


def test_a_shared_kv_tier_needs_the_mac_secret_and_neither_is_echoed(monkeypatch):
    url = "redis://memsidecar:hunter2-password@valkey:6379/0"
    needs_secret = "kv_remote_url needs kv_remote_secret .MEMSIDECAR_KV_REMOTE_SECRET"
    with pytest.raises(ValidationError, match=needs_secret) as missing:
        Settings.load(kv_remote_url=url)
    with pytest.raises(ValidationError, match="at least 16 bytes") as short:
        Settings.load(kv_remote_url=url, kv_remote_secret="short-secret")
    with pytest.raises(ValidationError, match="redis://, rediss://, unix://") as scheme:
        Settings.load(kv_remote_url="http://memsidecar:hunter2-password@valkey/0", kv_remote_secret=SECRET)
    for error in (missing, short, scheme):
        assert "hunter2" not in str(error.value) and "short-secret" not in str(error.value)
    monkeypatch.setenv("MEMSIDECAR_KV_REMOTE_SECRET", SECRET)
    settings = Settings.load(kv_remote_url=url.replace("redis:", "rediss:"))
    assert settings.kv_remote_secret.get_secret_value() == SECRET and SECRET not in repr(settings)
