"""The `scopes` and `scope_bytes` databases of the disk tier, inside `LmdbTier`'s transactions: which isolation scope
each namespace belongs to, and how many bytes of blocks each scope holds.

Format (part of `msc-kv-lmdb-2`, pinned with the rest by `tests/kvcache/test_lmdb_tier.py`):
- `scopes`: 16-byte namespace id -> its scope (UTF-8). A namespace id hashes its scope (`keys.namespace_id`), so an
  entry never changes once written, and this process may keep every entry it read;
- `scope_bytes`: scope (UTF-8) -> 8-byte big-endian sum of the lengths of the stored blocks whose namespace is
  registered to it.
Invariant (kept by `LmdbTier`, which calls `add` in the transaction of every put, delete and registration): after
every commit, `scope_bytes` equals that sum over the `blocks` database. Blocks of an unregistered namespace count
nowhere until it is registered.
"""

from __future__ import annotations

import logging
import struct

import lmdb

from kvcache.keys import NAMESPACE_BYTES

log = logging.getLogger("memsidecar.kvcache")
_COUNT = struct.Struct(">Q")


class ScopeBook:
    """The two databases, opened in `env`, and this process's copy of the namespace -> scope entries it read."""

    def __init__(self, env: lmdb.Environment) -> None:
        self.scopes = env.open_db(b"scopes")
        self.scope_bytes = env.open_db(b"scope_bytes")
        self._scope_of: dict[bytes, str] = {}

    def is_known(self, namespace_id: bytes, scope: str) -> bool:
        """Whether this process already saw `namespace_id` registered to `scope` (no transaction needed)."""
        return self._scope_of.get(namespace_id) == scope

    def scope_for(self, txn: lmdb.Transaction, key: bytes) -> str | None:
        """The scope the namespace of `key` (a block key or a namespace id) is registered to; None if none."""
        namespace = bytes(key[:NAMESPACE_BYTES])
        scope = self._scope_of.get(namespace)
        if scope is None:
            found = txn.get(namespace, db=self.scopes)
            if found is None:
                return None
            scope = self._scope_of[namespace] = bytes(found).decode()
        return scope

    def register(self, txn: lmdb.Transaction, namespace_id: bytes, scope: str, stored_bytes: int) -> None:
        """Write a new entry, counting the `stored_bytes` of blocks the namespace already holds for the scope; call
        `remember` once the transaction committed."""
        txn.put(namespace_id, scope.encode(), db=self.scopes)
        self.add(txn, scope, stored_bytes)

    def remember(self, namespace_id: bytes, scope: str) -> None:
        self._scope_of[namespace_id] = scope

    def bytes_of(self, txn: lmdb.Transaction, scope: str) -> int:
        data = txn.get(scope.encode(), db=self.scope_bytes)
        return 0 if data is None else _COUNT.unpack(data)[0]

    def namespaces_of(self, txn: lmdb.Transaction, scope: str) -> set[bytes]:
        """Every namespace id registered to `scope` (reads all entries: there is one per tenant and adapter)."""
        encoded = scope.encode()
        return {bytes(namespace) for namespace, found in txn.cursor(db=self.scopes) if bytes(found) == encoded}

    def add(self, txn: lmdb.Transaction, scope: str, delta: int) -> None:
        if not delta:
            return
        total = self.bytes_of(txn, scope) + delta
        if total < 0:  # an internal fault: logged, and the count kept usable
            log.error("KV disk tier: the bytes of scope %r would go negative (%d); counted as 0", scope, total)
        txn.put(scope.encode(), _COUNT.pack(max(0, total)), db=self.scope_bytes)
