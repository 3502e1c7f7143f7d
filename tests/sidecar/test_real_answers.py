"""The default real model, served: a memory stored through the API changes its answer (the official client)."""

from __future__ import annotations

import httpx
import pytest
from openai import OpenAI

from tests.conftest import Sidecar

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_sidecar(tmp_path_factory, real_model):
    server = Sidecar(tmp_path_factory.mktemp("real") / "data",
                     ["--model", str(real_model), "--max-loras", "0", "--kv-cache-gib", "1"])
    with server.running():
        yield server


def test_a_stored_memory_changes_the_answer(real_sidecar):
    added = httpx.post(f"{real_sidecar.base_url}/v1/memories",
                       json={"user_id": "alice", "type": "fact", "content": "My cat is named Zorblax."})
    assert added.status_code == 200, added.text
    client = OpenAI(base_url=f"{real_sidecar.base_url}/v1", api_key="unused")

    def ask(inject: bool):
        return client.chat.completions.create(
            model="smollm2-135m-instruct", user="alice", max_tokens=24, temperature=0,
            messages=[{"role": "user", "content": "What is my cat called?"}],
            extra_body={"memory": {"inject": inject, "write": False}})

    without, with_memory = ask(False), ask(True)
    assert "zorblax" not in without.choices[0].message.content.lower()
    assert "zorblax" in with_memory.choices[0].message.content.lower()
    assert with_memory.usage.prompt_tokens > without.usage.prompt_tokens  # the memory is in the prompt
