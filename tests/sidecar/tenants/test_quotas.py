"""The quota policy alone: limits, the refusal's status and message, per-tenant slots. No I/O, milliseconds."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.tenants.quotas import (RECORD_OVERHEAD_BYTES, QuotaExceeded, QuotaLimits, Resource, TenantSlots, check,
                                    check_adapter_upload, check_memory_write, fair_share, memory_write_bytes)


@given(limit=st.integers(0, 50), used=st.integers(0, 60), adding=st.integers(0, 20))
def test_check_refuses_exactly_when_the_limit_would_be_passed(limit, used, adding):
    passes = limit == 0 or adding == 0 or used + adding <= limit
    if passes:
        check(Resource.MEMORIES, limit, used, adding)
    else:
        with pytest.raises(QuotaExceeded):
            check(Resource.MEMORIES, limit, used, adding)


def test_a_tenant_at_its_limit_may_still_write_what_adds_nothing():
    check(Resource.MEMORY_BYTES, 100, 100, 0)
    check(Resource.MEMORY_BYTES, 100, 150, -20)


@pytest.mark.parametrize(("resource", "status"), [
    (Resource.ENGINE_REQUESTS, 429), (Resource.MEMORY_REQUESTS, 429), (Resource.MEMORIES, 413),
    (Resource.MEMORY_BYTES, 413), (Resource.ADAPTERS, 413), (Resource.ADAPTER_BYTES, 413),
    (Resource.DISTILL_JOBS, 409), (Resource.PINNED_ADAPTERS, 409), (Resource.PINNED_KV, 409),
    (Resource.KV_DISK_BYTES, 413)])
def test_each_resource_has_its_status_and_a_message_naming_limit_and_setting(resource, status):
    with pytest.raises(QuotaExceeded) as caught:
        check(resource, 3, 3, 1)
    assert caught.value.status == status
    message = str(caught.value)
    assert f"quota exceeded: {resource.value}" in message and "limit 3" in message and "in use 3" in message
    assert f"--tenant-max-{resource.value.replace('_', '-')}" in message


def test_every_resource_has_a_default_limit_and_a_settings_field():
    from sidecar.config import Settings

    limits = QuotaLimits()
    for resource in Resource:
        assert limits.of(resource) > 0
        assert resource.setting in Settings.model_fields
        assert Settings.model_fields[resource.setting].default == limits.of(resource)


def test_memory_write_estimate_counts_content_overhead_and_vector():
    assert memory_write_bytes(["héllo", "ab"], 384) == (6 + 2) + 2 * (RECORD_OVERHEAD_BYTES + 4 * 384)


def test_memory_write_checks_count_then_bytes():
    limits = QuotaLimits(memories=10, memory_bytes=10_000)
    check_memory_write(limits, (9, 0), ["a"], 384)
    with pytest.raises(QuotaExceeded) as count:
        check_memory_write(limits, (9, 0), ["a", "b"], 384)
    assert count.value.resource is Resource.MEMORIES
    with pytest.raises(QuotaExceeded) as size:
        check_memory_write(limits, (0, 9_000), ["a"], 384)
    assert size.value.resource is Resource.MEMORY_BYTES and size.value.adding == 1 + RECORD_OVERHEAD_BYTES + 1536


def test_adapter_upload_checks_versions_then_bytes():
    limits = QuotaLimits(adapters=2, adapter_bytes=1000)
    check_adapter_upload(limits, (1, 500), 500)
    with pytest.raises(QuotaExceeded, match="adapters"):
        check_adapter_upload(limits, (2, 0), 1)
    with pytest.raises(QuotaExceeded, match="adapter_bytes"):
        check_adapter_upload(limits, (1, 600), 500)


def test_slots_are_per_tenant_and_released():
    slots = TenantSlots(Resource.ENGINE_REQUESTS, 2)
    slots.acquire("a")
    slots.acquire("a")
    with pytest.raises(QuotaExceeded) as caught:
        slots.acquire("a")
    assert caught.value.status == 429
    slots.acquire("b")  # another tenant is not affected
    slots.release("a")
    slots.acquire("a")
    assert slots.snapshot() == {"a": 2, "b": 1}
    for tenant in ("a", "a", "b"):
        slots.release(tenant)
    assert slots.snapshot() == {} and slots.in_flight("a") == 0


def test_slots_never_exceed_the_limit_under_threads():
    slots, peak, held = TenantSlots(Resource.MEMORY_REQUESTS, 3), [0], []
    lock = threading.Lock()

    def worker():
        for _ in range(200):
            try:
                slots.acquire("a")
            except QuotaExceeded:
                continue
            with lock:
                peak[0] = max(peak[0], slots.in_flight("a"))
            slots.release("a")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak[0] <= 3 and slots.in_flight("a") == 0 and not held


def test_zero_means_unlimited():
    slots = TenantSlots(Resource.ENGINE_REQUESTS, 0)
    for _ in range(1000):
        slots.acquire("a")
    assert slots.in_flight("a") == 1000


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_fair_share_splits_the_slots_evenly_and_leaves_everyone_one():
    assert [fair_share(8, active) for active in (1, 2, 3, 4, 8, 9, 100)] == [8, 4, 2, 2, 1, 1, 1]


def test_a_flooding_tenant_is_held_to_its_fair_share_while_another_is_active():
    clock = Clock()
    slots = TenantSlots(Resource.ENGINE_REQUESTS, 16, fair_slots=6, active_window_s=30, clock=clock)
    assert [slots.acquire("a") for _ in range(8)] == list(range(8))  # alone: its own limit, past the fair slots
    for _ in range(2):
        slots.release("a")
    assert slots.acquire("b") == 0  # b gets in: its rank 0 outranks a's every request but the first
    with pytest.raises(QuotaExceeded) as caught:
        slots.acquire("a")
    assert (caught.value.status, caught.value.limit, caught.value.used) == (429, 3, 6)
    assert "limit 3, in use 6, this request adds 1; retry when some finish (its even share of " \
           "--engine-fair-slots with 2 tenant(s) active)" in str(caught.value)
    slots.release("b")
    clock.now += 29  # b between two chats: still active
    with pytest.raises(QuotaExceeded):
        slots.acquire("a")
    for _ in range(4):  # a's requests in flight finish; it starts new ones up to its share
        slots.release("a")
    assert slots.acquire("a") == 2
    with pytest.raises(QuotaExceeded):
        slots.acquire("a")
    clock.now += 2  # b ended 31 s ago: a is alone again
    assert slots.acquire("a") == 3 and slots.snapshot() == {"a": 4}


def test_without_fair_slots_only_the_tenant_limit_applies():
    slots = TenantSlots(Resource.ENGINE_REQUESTS, 3)
    slots.acquire("b")
    assert [slots.acquire("a") for _ in range(3)] == [0, 1, 2]
    with pytest.raises(QuotaExceeded, match=r"limit 3, .*\(limit set by --tenant-max-engine-requests\)"):
        slots.acquire("a")
