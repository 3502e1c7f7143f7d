"""The shared tier on a real redis-server: two nodes share blocks, and a server that goes away is only a miss."""

from __future__ import annotations

import numpy as np
import redis

from kvcache.block_format import encode
from kvcache.remote_tier import KEY_PREFIX, RemoteTier
from kvcache.store import StoreConfig, TieredStore
from tests.conftest import RedisServer
from tests.kvcache.test_store import SHAPE, block, key, read


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def node(tmp_path, name: str, url: str) -> TieredStore:
    return TieredStore.open(StoreConfig(tmp_path / name, 1 << 20, 1 << 22, url, remote_timeout_s=0.2))


def test_blocks_round_trip_and_namespaces_are_listed_literally(redis_server):
    tier = RemoteTier.open(redis_server.url)
    star, plain = key(ord("*"), 0), key(ord("a"), 0)
    tier.put_many([(star, b"star"), (plain, b"plain")])
    assert tier.read(star, bytes) == b"star" and tier.contains(plain) and not tier.contains(key(1, 0))
    assert tier.keys(bytes([ord("*")]) * 16) == [star], "glob characters in a key prefix match only themselves"
    assert tier.count_prefix([star, plain, key(1, 0), star]) == 2
    assert tier.evict([star, key(1, 0)]) == 1 and tier.keys() == [plain]


def test_a_dead_server_degrades_for_a_cooldown_then_is_retried(tmp_path, redis_server):
    clock = Clock()
    tier = RemoteTier.open(redis_server.url, timeout_s=0.2, cooldown_s=5.0, clock=clock)
    tier.put_many([(key(1, 0), b"zero")])
    redis_server.kill()
    assert tier.read(key(1, 0), bytes) is None
    assert tier.stats() == {"url": redis_server.url, "available": False, "errors": 1}
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
    scheduler_side = TieredStore.open(StoreConfig(tmp_path / "b", 0, 1 << 22, redis_server.url), with_ram=False)
    assert np.array_equal(read(scheduler_side, key(1, 0)), block(0))
    redis_server.kill()
    assert np.array_equal(read(scheduler_side, key(1, 0)), block(0))
    assert scheduler_side.stats()["disk"]["hits"] == 1


def test_a_corrupt_remote_block_is_a_counted_miss_and_is_deleted(tmp_path, redis_server):
    store = node(tmp_path, "a", redis_server.url)
    data = bytearray(encode(block(0), "bfloat16", "LBHNC"))
    data[-1] ^= 1
    client = redis.Redis.from_url(redis_server.url)
    client.set(KEY_PREFIX + key(1, 0), bytes(data))
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
