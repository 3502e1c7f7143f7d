"""API keys, tenants and rate limits: pure logic, no server."""

from __future__ import annotations

import pytest

from sidecar.http.access import Access
from sidecar.http.errors import APIError
from sidecar.tenants.keys import DEFAULT_TENANT, KeyConfigError, KeyTable, add_key, check_exposure, hash_key
from sidecar.tenants.rate_limit import RateLimiter


def test_keys_map_to_their_tenants_and_nothing_else():
    table = KeyTable.load("alpha-key:acme, beta-key:globex", None)
    assert table.tenant_of("alpha-key") == "acme"
    assert table.tenant_of("beta-key") == "globex"
    assert table.tenant_of("gamma-key") is None
    assert table.tenant_of(None) is None
    assert "alpha-key" not in repr(table)  # only hashes are kept


def test_a_keys_file_holds_only_hashes(tmp_path):
    path = tmp_path / "keys"
    key = add_key(path, "acme")
    assert key not in path.read_text() and hash_key(key) in path.read_text()
    assert KeyTable.load(None, path).tenant_of(key) == "acme"
    assert path.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("spec", ["no-separator", ":tenant", "key:../etc", "key:"])
def test_bad_key_entries_are_refused_with_their_position(spec):
    with pytest.raises(KeyConfigError, match="api_keys entry 1"):
        KeyTable.load(spec, None)


def test_a_bad_keys_file_line_is_named(tmp_path):
    path = tmp_path / "keys"
    path.write_text("# comment\nsha256:abc acme\n")
    with pytest.raises(KeyConfigError, match=r"keys:2"):
        KeyTable.load(None, path)


def test_without_keys_there_is_one_tenant_and_only_loopback():
    table = KeyTable.load(None, None)
    assert table.tenant_of(None) == DEFAULT_TENANT
    check_exposure(table, "127.0.0.1")
    check_exposure(table, "::1")
    with pytest.raises(KeyConfigError, match="loopback"):
        check_exposure(table, "0.0.0.0")
    check_exposure(KeyTable.load("k:t", None), "0.0.0.0")


def test_the_rate_limit_refuses_past_the_burst_and_refills():
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])
    assert all(limiter.acquire("k") == 0 for _ in range(60))
    assert limiter.acquire("k") == pytest.approx(1.0)
    assert limiter.acquire("other") == 0  # per key
    now[0] += 1.0
    assert limiter.acquire("k") == 0


def test_access_answers_401_and_429_in_openai_shape():
    access = Access(KeyTable.load("good:acme", None), RateLimiter(1))
    with pytest.raises(APIError) as caught:
        access.authenticate("Bearer bad")
    assert caught.value.status == 401
    assert access.authenticate("Bearer good").tenant == "acme"
    with pytest.raises(APIError) as caught:
        access.authenticate("bearer good")
    assert caught.value.status == 429 and int(caught.value.headers["Retry-After"]) >= 1


def test_guessing_keys_is_rate_limited_per_client_address():
    access = Access(KeyTable.load("good:acme", None), RateLimiter(2))
    for _ in range(2):
        with pytest.raises(APIError) as caught:
            access.authenticate("Bearer guess", client="10.0.0.9")
        assert caught.value.status == 401
    with pytest.raises(APIError) as caught:
        access.authenticate("Bearer guess", client="10.0.0.9")
    assert caught.value.status == 429
    assert access.authenticate("Bearer good", client="10.0.0.9").tenant == "acme"  # its own bucket
