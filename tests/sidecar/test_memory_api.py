"""Memory through HTTP on a real sidecar: chat with injected memories (official openai client), the REST API,
API-key tenancy across every route, and bad input."""

from __future__ import annotations

import re
import time
import uuid

import httpx
import openai
import pytest

from tests.conftest import API_KEYS, auth

pytestmark = pytest.mark.slow

FACT = "Rosalind keeps three green parrots named Pip, Mango and Kiwi in her greenhouse"


def client_for(sidecar, tenant: str = "tenant-a") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{sidecar.base_url}/v1", api_key=API_KEYS[tenant], max_retries=0)


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def add_memory(sidecar, user: str, content: str = FACT, tenant: str = "tenant-a", **fields) -> dict:
    response = httpx.post(f"{sidecar.base_url}/v1/memories", json={"user_id": user, "content": content, **fields},
                          headers=auth(tenant), timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def engine_counter(sidecar, name: str) -> float:
    metrics = httpx.get(f"http://127.0.0.1:{sidecar.engine_port}/metrics").text
    match = re.search(rf"^{name}\{{[^}}]*\}} (\S+)$", metrics, re.M)
    return float(match.group(1)) if match else 0.0


def test_an_added_memory_is_injected_into_the_users_chat(sidecar):
    user = new_user()
    memory = add_memory(sidecar, user)
    client = client_for(sidecar)
    question = [{"role": "user", "content": "What are the names of my parrots?"}]
    with_memory = client.chat.completions.create(model="tiny", messages=question, user=user, max_tokens=4,
                                                 temperature=0)
    without = client.chat.completions.create(model="tiny", messages=question, user=user, max_tokens=4,
                                             temperature=0, extra_body={"memory": {"inject": False, "write": False}})
    injected = with_memory.model_extra["memory"]
    assert memory["id"] in injected["ids"]
    assert injected["tokens"] > 0
    assert without.model_extra["memory"] == {"ids": [], "tokens": 0}
    assert with_memory.usage.prompt_tokens > without.usage.prompt_tokens + 10  # the fact reached the engine


def test_a_second_turn_loads_the_first_turns_kv_from_activation_memory(sidecar):
    user = new_user()
    add_memory(sidecar, user)
    client = client_for(sidecar)
    opening = "Tell me a long story about my parrots and the greenhouse where they live " * 4
    turn1 = [{"role": "user", "content": opening}]
    first = client.chat.completions.create(model="tiny", messages=turn1, user=user, max_tokens=8, temperature=0)
    time.sleep(2)  # the engine saves KV blocks in the background
    before = engine_counter(sidecar, "vllm:external_prefix_cache_hits_total")
    turn2 = [*turn1, {"role": "assistant", "content": first.choices[0].message.content},
             {"role": "user", "content": "And what happened next?"}]
    second = client.chat.completions.create(model="tiny", messages=turn2, user=user, max_tokens=4, temperature=0)
    loaded = engine_counter(sidecar, "vllm:external_prefix_cache_hits_total") - before
    assert second.model_extra["memory"]["ids"] == first.model_extra["memory"]["ids"]  # stable block, stable prefix
    assert loaded >= 32, f"turn 2 loaded {loaded} tokens from activation memory"


def test_streaming_chat_carries_memory_on_its_final_chunk(sidecar):
    user = new_user()
    memory = add_memory(sidecar, user)
    client = client_for(sidecar)
    question = [{"role": "user", "content": "Which birds live in my greenhouse?"}]
    whole = client.chat.completions.create(model="tiny", messages=question, user=user, max_tokens=6, temperature=0,
                                           extra_body={"memory": {"write": False}})
    chunks = list(client.chat.completions.create(model="tiny", messages=question, user=user, max_tokens=6,
                                                 temperature=0, stream=True, extra_body={"memory": {"write": False}}))
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices == [] and memory["id"] in chunks[-1].model_extra["memory"]["ids"]


def test_memory_off_behaves_like_the_engine_alone(sidecar):
    messages = [{"role": "user", "content": "Say something about parrots"}]
    reply = client_for(sidecar).chat.completions.create(
        model="tiny", messages=messages, max_tokens=8, temperature=0,
        extra_body={"memory": {"inject": False, "write": False}})
    engine = openai.OpenAI(base_url=f"http://127.0.0.1:{sidecar.engine_port}/v1", api_key="x")
    direct = engine.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0)
    assert reply.choices[0].message.content == direct.choices[0].message.content
    assert reply.usage.prompt_tokens == direct.usage.prompt_tokens


def test_chat_turns_are_written_to_memory(sidecar):
    user = new_user()
    client_for(sidecar).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "My sister Beatrix moved to Lisbon in May"}],
        user=user, max_tokens=4, temperature=0)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listed = httpx.get(f"{sidecar.base_url}/v1/memories", params={"user_id": user}, headers=auth()).json()
        contents = [m["content"] for m in listed["data"]]
        if "My sister Beatrix moved to Lisbon in May" in contents:
            assert {m["type"] for m in listed["data"]} == {"episode"} and len(contents) == 2  # the turn and reply
            return
        time.sleep(0.2)
    raise AssertionError("the chat turn was never recorded")


def test_rest_memory_lifecycle(sidecar):
    base, user = sidecar.base_url, new_user()
    memory = add_memory(sidecar, user, "Prefers Python over Java for scripting", type="preference")
    found = httpx.post(f"{base}/v1/memories/search", json={"user_id": user, "query": "favourite language",
                                                           "top_k": 3}, headers=auth()).json()
    assert found["results"][0]["id"] == memory["id"] and found["results"][0]["score"] > 0
    patched = httpx.patch(f"{base}/v1/memories/{memory['id']}", json={"importance": 0.9}, headers=auth()).json()
    assert patched["importance"] == 0.9
    feedback = httpx.post(f"{base}/v1/memories/{memory['id']}/feedback",
                          json={"kind": "correction", "text": "Prefers Rust over Python"}, headers=auth()).json()
    assert feedback["content"] == "Prefers Rust over Python"
    archived = httpx.patch(f"{base}/v1/memories/{memory['id']}", json={"tier": "archived"}, headers=auth()).json()
    assert archived["tier"] == "archived"
    restored = httpx.post(f"{base}/v1/memories/{memory['id']}/restore", headers=auth()).json()
    assert restored["tier"] == "hot"
    assert httpx.delete(f"{base}/v1/memories/{memory['id']}", headers=auth()).json()["deleted"] is True
    assert httpx.get(f"{base}/v1/memories/{memory['id']}", headers=auth()).status_code == 404


def test_knowledge_base_documents_are_searchable_and_injected_first(sidecar):
    base, kb = sidecar.base_url, f"kb-{uuid.uuid4().hex[:6]}"
    assert httpx.post(f"{base}/v1/kbs", json={"id": kb, "name": "Greenhouse manual"}, headers=auth()).status_code == 200
    added = httpx.post(f"{base}/v1/kbs/{kb}/documents", headers=auth(), json={
        "text": "Parrots in a greenhouse need shade netting above twenty-eight degrees.", "title": "Heat"}).json()
    assert added["chunks"] == 1
    assert kb in [entry["id"] for entry in httpx.get(f"{base}/v1/kbs", headers=auth()).json()["data"]]
    user = new_user()
    add_memory(sidecar, user)
    reply = client_for(sidecar).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "How hot may the greenhouse get for parrots?"}],
        user=user, max_tokens=2, extra_body={"memory": {"kb_ids": [kb], "write": False}})
    assert reply.model_extra["memory"]["ids"][0] == added["ids"][0]
    assert httpx.delete(f"{base}/v1/kbs/{kb}", headers=auth()).json()["memories_removed"] == 1


def test_a_pinned_knowledge_base_goes_first_without_being_named(sidecar):
    base, kb = sidecar.base_url, f"kb-{uuid.uuid4().hex[:6]}"
    httpx.post(f"{base}/v1/kbs", json={"id": kb, "metadata": {"pinned": True}}, headers=auth("tenant-b"))
    added = httpx.post(f"{base}/v1/kbs/{kb}/documents", headers=auth("tenant-b"), json={
        "text": "Greenhouse parrots must be fed fresh mango every morning."}).json()
    ask = [{"role": "user", "content": "What should the parrots eat in the morning?"}]
    reply = client_for(sidecar, "tenant-b").chat.completions.create(
        model="tiny", messages=ask, user=new_user(), max_tokens=2, extra_body={"memory": {"write": False}})
    assert reply.model_extra["memory"]["ids"][:1] == added["ids"]
    other = client_for(sidecar).chat.completions.create(
        model="tiny", messages=ask, user=new_user(), max_tokens=2, extra_body={"memory": {"write": False}})
    assert added["ids"][0] not in other.model_extra["memory"]["ids"]  # pinned for tenant-b only
    httpx.delete(f"{base}/v1/kbs/{kb}", headers=auth("tenant-b"))


def test_another_tenant_sees_none_of_it(sidecar):
    base, user = sidecar.base_url, new_user()
    memory = add_memory(sidecar, user)
    kb = f"kb-{uuid.uuid4().hex[:6]}"
    httpx.post(f"{base}/v1/kbs", json={"id": kb}, headers=auth())
    other = auth("tenant-b")
    for method, path, body in [
        ("GET", f"/v1/memories/{memory['id']}", None), ("PATCH", f"/v1/memories/{memory['id']}", {"importance": 1}),
        ("POST", f"/v1/memories/{memory['id']}/feedback", {"kind": "positive"}),
        ("POST", f"/v1/memories/{memory['id']}/restore", None), ("DELETE", f"/v1/memories/{memory['id']}", None),
        ("POST", f"/v1/kbs/{kb}/documents", {"text": "x"}), ("DELETE", f"/v1/kbs/{kb}", None),
    ]:
        response = httpx.request(method, base + path, json=body, headers=other)
        assert response.status_code == 404, (method, path, response.text)
    search = httpx.post(f"{base}/v1/memories/search", json={"user_id": user, "query": "parrots"}, headers=other)
    assert search.json()["results"] == []
    assert httpx.get(f"{base}/v1/memories", params={"user_id": user}, headers=other).json()["data"] == []
    assert kb not in [entry["id"] for entry in httpx.get(f"{base}/v1/kbs", headers=other).json()["data"]]
    reply = client_for(sidecar, "tenant-b").chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "What are my parrots called?"}], user=user, max_tokens=2)
    assert memory["id"] not in reply.model_extra["memory"]["ids"]
    assert httpx.get(f"{base}/v1/memories/{memory['id']}", headers=auth()).status_code == 200  # still there


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": "Basic a2V5LWE="}])
def test_a_missing_or_wrong_key_is_a_401(sidecar, headers):
    for method, path in [("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("GET", "/v1/memories"),
                         ("POST", "/v1/memories/search"), ("GET", "/v1/kbs")]:
        response = httpx.request(method, sidecar.base_url + path, json={}, headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert response.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(("method", "path", "body", "param"), [
    ("POST", "/v1/memories", {"user_id": "u", "content": ""}, "content"),
    ("POST", "/v1/memories", {"user_id": "u", "content": 5}, "content"),
    ("POST", "/v1/memories", {"user_id": "../etc", "content": "x"}, "user_id"),
    ("POST", "/v1/memories", {"user_id": "u", "content": "x", "type": "secret"}, "type"),
    ("POST", "/v1/memories", {"user_id": "u", "content": "x" * 20_000}, "content"),
    ("POST", "/v1/memories", {"user_id": "u", "content": "x", "importance": 7}, "importance"),
    ("POST", "/v1/memories/search", {"query": "x", "top_k": -1}, "top_k"),
    ("POST", "/v1/memories/search", {"query": "x", "top_k": 10**9}, "top_k"),
    ("POST", "/v1/memories/search", {"query": "x", "token_budget": 0}, "token_budget"),
    ("POST", "/v1/memories/search", {"query": ""}, "query"),
    ("POST", "/v1/memories/search", {"query": "x", "since": 10, "until": 5}, "since"),
    ("POST", "/v1/kbs", {"id": "a/b"}, "id"),
    ("POST", "/v1/memories/messages", {"user_id": "u", "messages": []}, "messages"),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "memory": {"top_k": 0}},
     "top_k"),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "user": "a b"}, "user"),
    ("GET", "/v1/memories?limit=0", None, "limit"),
    ("GET", "/v1/memories/no-such-id", None, None),
    ("DELETE", "/v1/kbs/no-such-kb", None, None),
])
def test_bad_input_is_a_4xx_naming_the_field(sidecar, method, path, body, param):
    response = httpx.request(method, sidecar.base_url + path, json=body, headers=auth(), timeout=60)
    assert 400 <= response.status_code < 500, response.text
    if param is not None:
        assert param in response.json()["error"]["message"]
    else:
        assert response.status_code == 404


def test_invalid_utf8_is_a_400_and_the_server_still_serves(sidecar):
    response = httpx.post(f"{sidecar.base_url}/v1/memories", content=b'{"user_id": "u", "content": "\xff\xfe"}',
                          headers={"content-type": "application/json", **auth()})
    assert response.status_code == 400
    assert httpx.get(f"{sidecar.base_url}/v1/kbs", headers=auth()).status_code == 200


def test_mcp_tools_on_the_sidecar_see_the_same_tenant_memories(sidecar):
    from tests.sidecar.http.test_mcp import call, http_session, run

    user = new_user()
    memory = add_memory(sidecar, user)

    async def scenario():
        async with http_session(f"{sidecar.base_url}/mcp", API_KEYS["tenant-a"]) as session:
            found = await call(session, "memos_search_memory", query="parrots in the greenhouse", user_id=user)
            assert memory["id"] in [hit["id"] for hit in found["results"]]
        async with http_session(f"{sidecar.base_url}/mcp", API_KEYS["tenant-b"]) as session:
            found = await call(session, "memos_search_memory", query="parrots in the greenhouse", user_id=user)
            assert found["results"] == []

    run(scenario)


def test_pinning_a_texts_activations_is_per_tenant_and_undone_by_unpinning(sidecar):
    base, text = sidecar.base_url, "The parrots of the greenhouse keep their own calendar of festivals. " * 20

    def pinned() -> int:
        return httpx.get(f"{base}/v1/activations", headers=auth()).json()["tiers"]["disk"]["pinned"]

    before = pinned()
    pin = httpx.post(f"{base}/v1/activations/pin", json={"text": text}, headers=auth(), timeout=120).json()
    assert pin["tokens"] > 64
    assert pinned() > before  # the prompt's full blocks (how many depends on the engine's block size)
    assert [p["id"] for p in httpx.get(f"{base}/v1/activations", headers=auth()).json()["pins"]] == [pin["id"]]
    others = httpx.get(f"{base}/v1/activations", headers=auth("tenant-b")).json()["pins"]  # the fuzz test pins some
    assert pin["id"] not in [p["id"] for p in others]
    assert httpx.delete(f"{base}/v1/activations/pin/{pin['id']}", headers=auth("tenant-b")).status_code == 404
    prefetched = httpx.post(f"{base}/v1/activations/prefetch", json={"text": text}, headers=auth(), timeout=120)
    assert prefetched.json()["tokens"] == pin["tokens"]
    assert httpx.delete(f"{base}/v1/activations/pin/{pin['id']}", headers=auth(), timeout=120).json()["deleted"]
    assert pinned() == before


def test_tiers_report_budgets_and_usage_of_every_memory_kind(sidecar):
    add_memory(sidecar, new_user())
    tiers = httpx.get(f"{sidecar.base_url}/v1/tiers", headers=auth()).json()
    assert tiers["engine"]["adapter_slots"]["budget"] == 2
    assert tiers["cpu_ram"]["adapter_cpu_cache"]["budget"] == 4
    assert tiers["cpu_ram"]["memory_indexes"]["memories"] >= 1
    assert tiers["disk"]["kv_lmdb"]["entries"] >= 0 and tiers["disk"]["memory_lmdb"]["bytes"] > 0
    assert httpx.get(f"{sidecar.base_url}/v1/tiers").status_code == 401


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def test_tool_calls_become_trajectories_and_tools_are_injected(sidecar):
    client, user = client_for(sidecar), new_user()
    messages = [
        {"role": "user", "content": "What is the weather in Lisbon?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Lisbon"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "22 C and sunny"},
    ]
    client.chat.completions.create(model="tiny", messages=messages, tools=[WEATHER_TOOL], tool_choice="none",
                                   user=user, max_tokens=2)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listed = httpx.get(f"{sidecar.base_url}/v1/memories", params={"type": "tool_trajectory"},
                           headers=auth()).json()["data"]
        if any(m["metadata"].get("tool_name") == "get_weather" for m in listed):
            break
        time.sleep(0.2)
    trajectory = next(m for m in listed if m["metadata"].get("tool_name") == "get_weather")
    assert trajectory["metadata"]["success"] is True and trajectory["metadata"]["arguments"] == {"city": "Lisbon"}
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Will it rain in Lisbon today?"}], tools=[WEATHER_TOOL],
        tool_choice="none", user=user, max_tokens=2, extra_body={"memory": {"write": False}})
    tools = httpx.get(f"{sidecar.base_url}/v1/memories", params={"type": "tool_schema"}, headers=auth()).json()["data"]
    schema_id = next(m["id"] for m in tools if m["metadata"]["tool_name"] == "get_weather")
    assert schema_id in reply.model_extra["memory"]["ids"]


def test_a_key_over_its_rate_gets_429_with_retry_after(sidecar, tmp_path):
    from tests.conftest import Sidecar

    args = ["--engine-url", f"http://127.0.0.1:{sidecar.engine_port}", "--rate-limit-per-minute", "3",
            "--api-keys", "limited:tenant-x"]
    with Sidecar(tmp_path / "data", args).running() as limited:
        statuses = [httpx.get(f"{limited.base_url}/v1/kbs", headers={"Authorization": "Bearer limited"}).status_code
                    for _ in range(5)]
        refused = httpx.get(f"{limited.base_url}/v1/kbs", headers={"Authorization": "Bearer limited"})
    assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429]
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
