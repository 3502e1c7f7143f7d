"""The shared tier on a real redis-server: two nodes share blocks, a server that goes away is only a miss, and a
block the nodes did not seal under its key (no MAC, another secret, copied from another key) is never loaded."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import redis

from kvcache.block_format import encode
from kvcache.block_mac import BlockMac
from kvcache.remote_tier import KEY_PREFIX, RemoteTier
from kvcache.store import StoreConfig, TieredStore
from tests.conftest import RedisServer
from tests.kvcache.test_store import SHAPE, block, key, read


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


SECRET = b"the-nodes-shared-secret-0123456789"


def node(tmp_path, name: str, url: str, secret: bytes = SECRET) -> TieredStore:
    return TieredStore.open(StoreConfig(tmp_path / name, 1 << 20, 1 << 22, url, remote_timeout_s=2.0,
                                        remote_secret=secret))


def test_blocks_round_trip_and_namespaces_are_listed_literally(redis_server):
    tier = RemoteTier.open(redis_server.url, SECRET, timeout_s=5.0)  # generous: a loaded CI machine is slow
    star, plain = key(ord("*"), 0), key(ord("a"), 0)
    tier.put_many([(star, b"star"), (plain, b"plain")])
    assert tier.read(star, bytes) == b"star" and tier.contains(plain) and not tier.contains(key(1, 0))
    assert tier.keys(bytes([ord("*")]) * 16) == [star], "glob characters in a key prefix match only themselves"
    assert tier.count_prefix([star, plain, key(1, 0), star]) == 2
    assert tier.evict([star, key(1, 0)]) == 1 and tier.keys() == [plain]


def test_a_dead_server_degrades_for_a_cooldown_then_is_retried(tmp_path, redis_server):
    clock = Clock()
    tier = RemoteTier.open(redis_server.url, SECRET, timeout_s=0.2, cooldown_s=5.0, clock=clock)
    tier.put_many([(key(1, 0), b"zero")])
    redis_server.kill()
    assert tier.read(key(1, 0), bytes) is None
    assert tier.stats() == {"url": redis_server.url, "available": False, "errors": 1, "rejected": 0}
    tier.put_many([(key(1, 1), b"one")])
    assert tier.count_prefix([key(1, 0)]) == 0 and tier.keys() == []
    assert tier.errors == 1, "while degraded no request is sent"
    restarted = RedisServer(tmp_path, port=redis_server.port).start()  # empty (no persistence), same port
    try:
        clock.now = 5.0
        tier.put_many([(key(1, 2), b"two")])
        assert tier.available and tier.read(key(1, 2), bytes) == b"two" and tier.errors == 1
    finally:
        restarted.kill()


def test_a_block_saved_on_one_node_is_loaded_on_another(tmp_path, redis_server):
    first, second = node(tmp_path, "a", redis_server.url), node(tmp_path, "b", redis_server.url)
    first.put_many([(key(1, i), block(i)) for i in range(4)], "bfloat16", "LBHNC")
    assert second.lookup_prefix([key(1, i) for i in range(6)]) == 4
    assert np.array_equal(read(second, key(1, 2)), block(2))
    stats = second.stats()
    assert stats["remote"]["hits"] == 1 and stats["disk"]["misses"] == 1
    assert second.ram.contains(key(1, 2)) and second.disk.contains(key(1, 2)), "a remote hit is promoted"


def test_a_node_without_ram_promotes_remote_hits_to_disk(tmp_path, redis_server):
    node(tmp_path, "a", redis_server.url).put(key(1, 0), block(0), "bfloat16", "LBHNC")
    scheduler_side = TieredStore.open(StoreConfig(tmp_path / "b", 0, 1 << 22, redis_server.url,
                                                  remote_secret=SECRET), with_ram=False)
    assert np.array_equal(read(scheduler_side, key(1, 0)), block(0))
    redis_server.kill()
    assert np.array_equal(read(scheduler_side, key(1, 0)), block(0))
    assert scheduler_side.stats()["disk"]["hits"] == 1


def test_a_corrupt_remote_block_is_a_counted_miss_and_is_deleted(tmp_path, redis_server):
    """Damaged before it was sealed (the MAC is sound, the block's checksum is not): the checksum still catches it."""
    store = node(tmp_path, "a", redis_server.url)
    data = bytearray(encode(block(0), "bfloat16", "LBHNC"))
    data[-1] ^= 1
    client = redis.Redis.from_url(redis_server.url)
    client.set(KEY_PREFIX + key(1, 0), BlockMac(SECRET).seal(key(1, 0), bytes(data)))
    assert read(store, key(1, 0)) is None
    assert store.stats()["remote"]["corrupt"] == 1 and client.exists(KEY_PREFIX + key(1, 0)) == 0


def test_redis_killed_mid_run_leaves_the_local_tiers_serving(tmp_path, redis_server):
    store = node(tmp_path, "a", redis_server.url)
    store.put_many([(key(1, i), block(i)) for i in range(3)], "bfloat16", "LBHNC")
    redis_server.kill()
    store.put_many([(key(1, i), block(i)) for i in range(3, 6)], "bfloat16", "LBHNC")  # the remote write drops
    assert [np.array_equal(read(store, key(1, i)), block(i)) for i in range(6)] == [True] * 6
    out = np.zeros(SHAPE, dtype=np.int16)
    assert not store.get_into(key(1, 99), out, "bfloat16", "LBHNC") and not out.any()
    assert store.lookup_prefix([key(1, i) for i in range(8)]) == 6
    assert store.drop_namespace(bytes([1]) * 16) == 6
    remote = store.stats()["remote"]
    assert remote["errors"] >= 1 and remote["available"] is False and remote["hits"] == 0


# ---------------------------------------------------------------- hostile writers: blocks the nodes did not seal

def sealed_elsewhere(store_key: bytes) -> bytes:
    """A sound block for `store_key`, but sealed for the key one namespace over (another tenant's)."""
    other = bytes([store_key[0] ^ 1]) + store_key[1:]
    return BlockMac(SECRET).seal(other, encode(block(0), "bfloat16", "LBHNC"))


@pytest.mark.parametrize(("name", "forge"), [
    ("no MAC", lambda k: encode(block(0), "bfloat16", "LBHNC")),
    ("another secret", lambda k: BlockMac(b"an-attackers-own-secret-0000").seal(k, encode(block(0), "bfloat16",
                                                                                          "LBHNC"))),
    ("sealed for another key", sealed_elsewhere),
])
def test_a_block_the_nodes_did_not_seal_is_a_counted_miss_and_never_loaded(tmp_path, redis_server, name, forge):
    client = redis.Redis.from_url(redis_server.url)
    client.set(KEY_PREFIX + key(1, 0), forge(key(1, 0)))
    store = node(tmp_path, "a", redis_server.url)
    assert store.lookup_prefix([key(1, 0)]) == 1, "EXISTS cannot tell: the load that follows misses"
    out = np.full(SHAPE, 7, dtype=np.int16)
    assert not store.get_into(key(1, 0), out, "bfloat16", "LBHNC")
    assert (out == 7).all(), "not a byte of it reached the loader's array"
    remote = store.stats()["remote"]
    assert (remote["rejected"], remote["misses"], remote["hits"], remote["corrupt"]) == (1, 1, 0, 0)
    assert client.exists(KEY_PREFIX + key(1, 0)) == 0, "deleted, so an honest node's next save replaces it"
    assert not store.contains_locally(key(1, 0)), "never promoted to the local tiers"


def test_the_tier_hands_a_refused_block_to_no_consumer(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    client.set(KEY_PREFIX + key(1, 0), encode(block(0), "bfloat16", "LBHNC"))
    seen: list[bytes] = []
    tier = RemoteTier.open(redis_server.url, SECRET, timeout_s=5.0)  # generous: a loaded CI machine is slow
    assert tier.read(key(1, 0), lambda view: seen.append(bytes(view))) is None
    assert seen == [] and tier.stats()["rejected"] == 1


def test_a_block_copied_into_another_tenants_namespace_is_refused_there_only(tmp_path, redis_server):
    writer, reader = node(tmp_path, "a", redis_server.url), node(tmp_path, "b", redis_server.url)
    tenant_a, tenant_b = key(1, 5), key(2, 5)  # same chain hash, two tenants' namespaces
    writer.put(tenant_a, block(5), "bfloat16", "LBHNC")
    client = redis.Redis.from_url(redis_server.url)
    client.set(KEY_PREFIX + tenant_b, client.get(KEY_PREFIX + tenant_a))  # a byte-exact copy, MAC and all
    assert read(reader, tenant_b) is None and reader.stats()["remote"]["rejected"] == 1
    assert np.array_equal(read(reader, tenant_a), block(5)), "the original still loads"


def test_nodes_with_different_secrets_share_nothing(tmp_path, redis_server):
    node(tmp_path, "a", redis_server.url).put(key(1, 0), block(0), "bfloat16", "LBHNC")
    stranger = node(tmp_path, "b", redis_server.url, secret=b"another-deployments-secret-42")
    assert read(stranger, key(1, 0)) is None and stranger.stats()["remote"]["rejected"] == 1


def test_a_shared_tier_without_a_secret_is_refused_naming_the_setting(tmp_path, redis_server):
    with pytest.raises(ValueError, match="kv_remote_secret"):
        TieredStore.open(StoreConfig(tmp_path / "a", 1 << 20, 1 << 22, redis_server.url))
    config = StoreConfig(tmp_path / "a", 1 << 20, 1 << 22, "redis://u:hunter2@h:1/0", remote_secret=SECRET)
    assert "hunter2" not in repr(config) and SECRET.decode() not in repr(config)


# ---------------------------------------------------------------- credentials and TLS in the URL

PASSWORD = "a-url-safe-redis-password-0123"


def with_credentials(server: RedisServer, user: str, password: str, scheme: str = "redis", query: str = "") -> str:
    return f"{scheme}://{user}:{password}@127.0.0.1:{server.port}/0{query}"


def test_a_password_protected_server_works_with_credentials_in_the_url(tmp_path):
    acl_user = ("--user", "memsidecar", "on", ">acl-user-password-0123", "~msc:kv:*", "+@all")
    with RedisServer(tmp_path, args=("--requirepass", PASSWORD, *acl_user)).running() as server:
        for name, url in (("default", with_credentials(server, "", PASSWORD)),
                          ("acl", with_credentials(server, "memsidecar", "acl-user-password-0123"))):
            first, second = node(tmp_path, f"{name}-a", url), node(tmp_path, f"{name}-b", url)
            first.put_many([(key(1, i), block(i)) for i in range(3)], "bfloat16", "LBHNC")
            assert second.lookup_prefix([key(1, i) for i in range(4)]) == 3
            assert np.array_equal(read(second, key(1, 1)), block(1))
            assert second.stats()["remote"]["url"] == f"redis://127.0.0.1:{server.port}/0"
        assert redis.Redis.from_url(with_credentials(server, "", PASSWORD)).dbsize() == 3


@pytest.mark.parametrize("credentials", ["wrong", "none"])
def test_a_wrong_or_missing_password_degrades_to_misses(tmp_path, caplog, credentials):
    with RedisServer(tmp_path, args=("--requirepass", PASSWORD)).running() as server:
        url = with_credentials(server, "", "wrong-password-0000") if credentials == "wrong" else server.url
        store = node(tmp_path, "a", url)
        store.put_many([(key(1, 0), block(0))], "bfloat16", "LBHNC")  # the remote write drops
        assert np.array_equal(read(store, key(1, 0)), block(0)), "the local tiers still serve"
        assert read(store, key(1, 9)) is None and store.lookup_prefix([key(1, 9)]) == 0
        remote = store.stats()["remote"]
        assert remote["errors"] == 1 and remote["available"] is False and remote["hits"] == 0
        assert redis.Redis.from_url(with_credentials(server, "", PASSWORD)).dbsize() == 0
    assert "wrong-password" not in caplog.text and "degraded" in caplog.text


def test_tls_with_credentials(tmp_path):
    """`rediss://` with the server's CA (redis-py reads `ssl_ca_certs` from the URL's query)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed to make a test certificate")
    cert, private = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(private), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    server = RedisServer(tmp_path)
    tls = ("--port", "0", "--tls-port", str(server.port), "--tls-cert-file", str(cert), "--tls-key-file",
           str(private), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no", "--requirepass", PASSWORD)
    with RedisServer(tmp_path, port=server.port, args=tls).running():
        url = with_credentials(server, "", PASSWORD, "rediss", f"?ssl_ca_certs={cert}")
        first, second = node(tmp_path, "a", url), node(tmp_path, "b", url)
        first.put(key(1, 0), block(0), "bfloat16", "LBHNC")
        assert np.array_equal(read(second, key(1, 0)), block(0)) and second.stats()["remote"]["hits"] == 1
        plain = node(tmp_path, "c", with_credentials(server, "", PASSWORD))
        assert read(plain, key(1, 0)) is None and plain.stats()["remote"]["errors"] == 1, "no plaintext port"
        with pytest.raises(ValueError, match="invalid KV remote URL 'redis://127.0.0.1:.*ssl_ca_certs"):
            RemoteTier.open(url.replace("rediss://", "redis://"), SECRET)  # a TLS option without TLS: at start


def test_urls_are_shown_without_credentials():
    from kvcache.remote_tier import _redacted

    assert _redacted("rediss://user:pw@cache.internal:6380/2?password=pw2") == "rediss://cache.internal:6380/2"
    assert _redacted("redis://:pw@host/0") == "redis://host/0"
    assert "pw" not in _redacted("redis://u:pw@host:notaport/0")
