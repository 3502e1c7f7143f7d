"""The shared tier: encoded blocks in Redis or Valkey, so engines on several machines reuse each other's KV.

Failure rule: this tier is an optimisation. A connection error or timeout (sockets time out after `timeout_s`)
marks it degraded for `cooldown_s`, is counted, and answers as a miss (reads) or a dropped write; it never raises
into the engine. While degraded no request is sent, so a dead server costs nothing per block; after the cooldown
the next call tries again (redis-py reconnects on demand).

Trust rule: whoever reaches the server can write to it, so every block is sealed with the nodes' shared secret
(`block_mac`) on the way in and opened on the way out. A block whose MAC fails (written without the secret, with
another one, or copied from another key) is a miss: `consume` never sees a byte of it, it is counted (`rejected`),
logged and deleted, so the next save of that block by an honest node replaces it. Only reads check the MAC:
`contains` / `count_prefix` answer from EXISTS, so a forged key can make the scheduler plan a load that then misses
(the engine recomputes those tokens), once, until the read deletes it.

Credentials: `url` may carry them (`redis://user:password@host:port/db`, `rediss://` for TLS, as redis-py's
`from_url` reads them); logs and stats show it without them (`_redacted`).

Keys are `msc:kv:` + the 48-byte block key, optionally expiring after `ttl_s`; Redis's own `maxmemory` policy
bounds the bytes, so this tier keeps no budget of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TypeVar
from urllib.parse import urlsplit

import redis

from kvcache.block_mac import BlockMac, UnsealedBlock
from kvcache.tier import TierUsage

log = logging.getLogger("memsidecar.kvcache")
T = TypeVar("T")
KEY_PREFIX = b"msc:kv:"
_GLOB_SPECIAL = frozenset(b"*?[]\\")


class RemoteTier:
    """Sealed blocks in a Redis-compatible server, degrading to misses when it is away or a block is not ours."""

    name = "remote"

    def __init__(self, client: redis.Redis, url: str, mac: BlockMac, ttl_s: int | None = None,
                 cooldown_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._mac = mac
        self.url = _redacted(url)
        self.ttl_s = ttl_s
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._down_until = 0.0
        self.errors = 0
        self.rejected = 0

    @classmethod
    def open(cls, url: str, secret: bytes, ttl_s: int | None = None, timeout_s: float = 0.5,
             cooldown_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> RemoteTier:
        """A client for `url`, sealing blocks with `secret` (no connection is made until the first call)."""
        mac = BlockMac(secret)
        try:
            client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
            _check_options(client)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"invalid KV remote URL {_redacted(url)!r}: {exc}") from None
        return cls(client, url, mac, ttl_s, cooldown_s, clock)

    @property
    def available(self) -> bool:
        return self._clock() >= self._down_until

    def _call(self, operation: Callable[[], T], default: T) -> T:
        if not self.available:
            return default
        try:
            return operation()
        except redis.RedisError as exc:
            self.errors += 1
            self._down_until = self._clock() + self.cooldown_s
            log.warning("KV remote tier %s degraded for %.0f s: %s", self.url, self.cooldown_s, exc)
            return default

    def contains(self, key: bytes) -> bool:
        return self.count_prefix([key]) == 1

    def count_prefix(self, keys: list[bytes]) -> int:
        """How many leading `keys` the server holds (one round trip); 0 while degraded."""
        if not keys:
            return 0

        def ask() -> int:
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.exists(KEY_PREFIX + key)
            found = pipe.execute()
            return next((i for i, present in enumerate(found) if not present), len(keys))

        return self._call(ask, 0)

    def read(self, key: bytes, consume: Callable[[memoryview], T]) -> T | None:
        """`consume(block)` when the server holds a block under `key` whose MAC is sound; else None (a miss)."""
        sealed = self._call(lambda: self._client.get(KEY_PREFIX + key), None)
        if sealed is None:
            return None
        try:
            block = self._mac.open(key, sealed)
        except UnsealedBlock as exc:
            self._reject(key, exc)
            return None
        return consume(block)

    def _reject(self, key: bytes, error: UnsealedBlock) -> None:
        self.rejected += 1
        log.warning("refusing KV block %s from the shared tier %s (deleted): %s", key.hex(), self.url, error)
        self._call(lambda: self._client.delete(KEY_PREFIX + key), 0)

    def put_many(self, items: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """Seal and write blocks in one pipeline; dropped (and counted) while degraded. Never evicts: returns []."""
        def write() -> None:
            pipe = self._client.pipeline(transaction=False)
            for key, block in items:
                pipe.set(KEY_PREFIX + key, self._mac.seal(key, block), ex=self.ttl_s)
            pipe.execute()

        if items:
            self._call(write, None)
        return []

    def evict(self, keys: Iterable[bytes]) -> int:
        names = [KEY_PREFIX + key for key in keys]
        return self._call(lambda: self._client.delete(*names), 0) if names else 0

    def keys(self, prefix: bytes = b"") -> list[bytes]:
        """Keys under `prefix`, by SCAN (never KEYS, which blocks the server); [] while degraded."""
        pattern = KEY_PREFIX + _glob_escape(prefix) + b"*"
        found = self._call(lambda: list(self._client.scan_iter(match=pattern, count=1000)), [])
        return [name[len(KEY_PREFIX):] for name in found]

    def usage(self) -> TierUsage:
        return TierUsage(None, None, None)

    def stats(self) -> dict[str, object]:
        return {"url": self.url, "available": self.available, "errors": self.errors, "rejected": self.rejected}

    def close(self) -> None:
        self._client.close()


def _check_options(client: redis.Redis) -> None:
    """Build one connection object without connecting, so that a URL option that does not apply (`ssl_ca_certs`
    on a `redis://` URL: a TypeError) is refused at start, not raised into the engine at its first block."""
    pool = client.connection_pool
    pool.connection_class(**pool.connection_kwargs)


def _glob_escape(raw: bytes) -> bytes:
    """`raw` as a literal in a Redis MATCH pattern (key bytes are arbitrary, so `*?[]\\` must be escaped)."""
    return b"".join(b"\\" + bytes([c]) if c in _GLOB_SPECIAL else bytes([c]) for c in raw)


def _redacted(url: str) -> str:
    """The URL without credentials (user, password, query parameters such as `?password=`), for logs and stats."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:  # a malformed port: leave it out rather than echo the raw text
        port = None
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}{parts.path}"
