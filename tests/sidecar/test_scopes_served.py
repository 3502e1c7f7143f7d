"""Scopes, shared spaces and filters on a real `memsidecar serve` (its middleware, API keys and body limit), and a
chat whose `memory` options name an agent, a run and a filter (official openai client)."""

from __future__ import annotations

import time
import uuid

import httpx
import openai
import pytest

from tests.conftest import API_KEYS, auth

pytestmark = pytest.mark.slow


def post(sidecar, path: str, body: dict, tenant: str = "tenant-a") -> httpx.Response:
    return httpx.post(f"{sidecar.base_url}{path}", json=body, headers=auth(tenant), timeout=60)


def test_spaces_scopes_and_filters_end_to_end(sidecar):
    space, user, reader, outsider = (f"{name}-{uuid.uuid4().hex[:6]}" for name in ("crew", "ana", "ben", "cyd"))
    assert post(sidecar, "/v1/spaces", {"id": space, "members": [{"user_id": user, "write": True},
                                                                  {"user_id": reader}]}).status_code == 200
    shared = post(sidecar, "/v1/memories", {"user_id": user, "space_id": space, "agent_id": "ops", "run_id": "night",
                                            "content": "The crew's boat is moored at pier nine",
                                            "metadata": {"topic": "boat", "priority": 2}}).json()
    query = {"query": "where is the boat moored"}
    found = post(sidecar, "/v1/memories/search", {**query, "user_id": reader, "filter": {
        "and": [{"metadata.topic": {"eq": "boat"}}, {"metadata.priority": {"lte": 2}}, {"run_id": "night"}]}})
    assert [hit["id"] for hit in found.json()["results"]] == [shared["id"]]
    assert post(sidecar, "/v1/memories/search", {**query, "user_id": outsider}).json()["results"] == []
    assert post(sidecar, "/v1/memories/search", {**query, "user_id": outsider, "space_id": space}).status_code == 403
    assert post(sidecar, "/v1/memories", {"user_id": reader, "space_id": space, "content": "x"}).status_code == 403
    for response in (httpx.get(f"{sidecar.base_url}/v1/spaces/{space}", headers=auth("tenant-b")),
                     post(sidecar, "/v1/memories/search", {**query, "user_id": reader, "space_id": space}, "tenant-b"),
                     httpx.get(f"{sidecar.base_url}/v1/memories/{shared['id']}", headers=auth("tenant-b"))):
        assert response.status_code == 404, response.text
    bad = post(sidecar, "/v1/memories/search", {**query, "filter": {"or": [{"metadata.topic": {"regex": "b.*"}}]}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "filter.or[0].metadata.topic.regex"
    huge = post(sidecar, "/v1/memories/search", {**query, "filter": {"content": {"contains": "x" * 70_000}}})
    assert huge.status_code == 413  # the body limit holds for filters too


def test_chat_memory_options_scope_what_is_injected_and_written(sidecar):
    user = f"dee-{uuid.uuid4().hex[:6]}"
    kept = post(sidecar, "/v1/memories", {"user_id": user, "agent_id": "tutor", "run_id": "week-1",
                                          "metadata": {"subject": "maths"},
                                          "content": "Dee's maths exam is on the ninth of June"}).json()
    post(sidecar, "/v1/memories", {"user_id": user, "agent_id": "coach", "metadata": {"subject": "sport"},
                                   "content": "Dee's football exam is on the second of June"})
    client = openai.OpenAI(base_url=f"{sidecar.base_url}/v1", api_key=API_KEYS["tenant-a"], max_retries=0)
    reply = client.chat.completions.create(
        model=client.models.list().data[0].id, user=user, max_tokens=4,
        messages=[{"role": "user", "content": "When is my exam?"}],
        extra_body={"memory": {"agent_id": "tutor", "run_id": "week-1", "filter": {"metadata.subject": "maths"}}})
    assert reply.model_extra["memory"]["ids"] == [kept["id"]]
    with pytest.raises(openai.BadRequestError, match="memory.filter.subject"):
        client.chat.completions.create(model=client.models.list().data[0].id, user=user, max_tokens=4,
                                       messages=[{"role": "user", "content": "hi"}],
                                       extra_body={"memory": {"filter": {"subject": "maths"}}})
    deadline = time.monotonic() + 30  # the turns are written after the reply, off the response path
    while time.monotonic() < deadline:
        written = httpx.get(f"{sidecar.base_url}/v1/memories", headers=auth(), timeout=30,
                            params={"user_id": user, "type": "episode", "agent_id": "tutor", "run_id": "week-1"})
        if written.json()["data"]:
            break
        time.sleep(0.5)
    turn = written.json()["data"][0]  # the user's turn (the tiny model's reply may be blank, and then not kept)
    assert (turn["content"], turn["agent_id"], turn["run_id"]) == ("When is my exam?", "tutor", "week-1")


def test_a_chat_writes_into_a_space_only_with_a_write_grant(sidecar):
    space, writer, reader = (f"{name}-{uuid.uuid4().hex[:6]}" for name in ("club", "eve", "fay"))
    assert post(sidecar, "/v1/spaces", {"id": space, "members": [{"user_id": writer, "write": True},
                                                                  {"user_id": reader}]}).status_code == 200
    shared = post(sidecar, "/v1/memories", {"user_id": writer, "space_id": space,
                                            "content": "The book club meets on Thursday at the library"}).json()
    client = openai.OpenAI(base_url=f"{sidecar.base_url}/v1", api_key=API_KEYS["tenant-a"], max_retries=0)
    model = client.models.list().data[0].id
    with pytest.raises(openai.PermissionDeniedError, match="space_id"):  # fay may only read the space
        client.chat.completions.create(model=model, user=reader, max_tokens=4, extra_body={"memory": {
            "space_id": space}}, messages=[{"role": "user", "content": "When does the club meet?"}])
    reply = client.chat.completions.create(model=model, user=writer, max_tokens=4, extra_body={"memory": {
        "space_id": space}}, messages=[{"role": "user", "content": "When does the book club meet?"}])
    assert shared["id"] in reply.model_extra["memory"]["ids"]
    deadline = time.monotonic() + 30  # the turns are written after the reply, off the response path
    while time.monotonic() < deadline:
        written = httpx.get(f"{sidecar.base_url}/v1/memories", headers=auth(), timeout=30,
                            params={"space_id": space, "type": "episode"})
        if written.json()["data"]:
            break
        time.sleep(0.5)
    assert written.json()["data"][0]["content"] == "When does the book club meet?"
    assert written.json()["data"][0]["space_id"] == space


def test_an_agent_records_its_own_conversation_without_a_user(sidecar):
    agent = f"ops-{uuid.uuid4().hex[:6]}"
    turns = [{"role": "assistant", "content": "Rolled back the canary release at noon"},
             {"role": "user", "content": "Thanks, keep it rolled back until Monday"}]
    stored = post(sidecar, "/v1/memories/messages", {"agent_id": agent, "messages": turns, "extract": False})
    assert stored.status_code == 200, stored.text
    episodes = stored.json()["data"]
    assert [(m["user_id"], m["agent_id"]) for m in episodes] == [(None, agent)] * 2
    found = post(sidecar, "/v1/memories/search", {"query": "canary rolled back", "agent_id": agent}).json()
    assert {hit["id"] for hit in found["results"]} <= {m["id"] for m in episodes} and found["results"]
    ownerless = post(sidecar, "/v1/memories/messages", {"messages": turns})
    assert ownerless.status_code == 400 and ownerless.json()["error"]["param"] == "user_id", ownerless.text
