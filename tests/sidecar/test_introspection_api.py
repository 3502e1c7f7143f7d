"""The read-only API the console is built on (also for any client): whoami, users, text filter, strength curve,
job list, KV tier history. Against the shared test sidecar; every route scoped to the key's tenant."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.conftest import auth

pytestmark = pytest.mark.slow


@pytest.fixture()
def client(sidecar):
    with httpx.Client(base_url=sidecar.base_url, timeout=60) as http:
        yield http


def test_whoami_names_the_keys_tenant(client):
    for tenant in ("tenant-a", "tenant-b"):
        me = client.get("/v1/whoami", headers=auth(tenant)).json()
        assert me["tenant"] == tenant and set(me) == {"tenant", "usage", "limits"}  # see test_quotas_api.py
        assert set(me["usage"]) == set(me["limits"]) and me["limits"]["engine_requests"] == 16
    assert client.get("/v1/whoami", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_users_text_filter_and_strength_curve(client):
    user = f"intro-{uuid.uuid4().hex[:6]}"
    added = client.post("/v1/memories", headers=auth(), json={"user_id": user, "content": "Ada keeps BONSAI trees"})
    memory_id = added.json()["id"]
    users = {u["user_id"]: u for u in client.get("/v1/users", headers=auth()).json()["data"]}
    assert users[user]["count"] == 1 and users[user]["by_tier"] == {"hot": 1}
    assert user not in {u["user_id"] for u in client.get("/v1/users", headers=auth("tenant-b")).json()["data"]}
    found = client.get("/v1/memories", headers=auth(), params={"user_id": user, "contains": "bonsai"}).json()
    assert [m["id"] for m in found["data"]] == [memory_id]
    assert client.get("/v1/memories", headers=auth(), params={"contains": ""}).status_code == 400
    curve = client.get(f"/v1/memories/{memory_id}/strength", headers=auth(), params={"points": 5}).json()
    strengths = [p["strength"] for p in curve["points"]]
    assert len(strengths) == 5 and strengths == sorted(strengths, reverse=True) and strengths[-1] < strengths[0]
    assert curve["thresholds"]["hot"] > curve["thresholds"]["warm"] > curve["thresholds"]["archive"]
    assert client.get(f"/v1/memories/{memory_id}/strength", headers=auth("tenant-b")).status_code == 404


def test_job_list_is_per_tenant(client):
    assert client.get("/v1/adapters/jobs", headers=auth("tenant-b")).status_code == 200
    mine = {job["id"] for job in client.get("/v1/adapters/jobs", headers=auth("tenant-a")).json()["data"]}
    theirs = {job["id"] for job in client.get("/v1/adapters/jobs", headers=auth("tenant-b")).json()["data"]}
    assert not mine & theirs


def test_tier_history_samples_the_kv_tiers(client):
    samples = client.get("/v1/tiers/history", headers=auth()).json()["samples"]
    assert samples, "the sampler records one sample at start-up"
    disk = samples[-1]["tiers"]["disk"]
    assert {"entries", "bytes", "budget_bytes", "hit_rate", "load_bytes_per_s"} <= set(disk)
    assert client.get("/v1/tiers/history").status_code == 401
