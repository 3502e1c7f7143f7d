"""Block keys of activation memory: chained hashes of token blocks inside a namespace.

Format (version 1, pinned by golden-bytes tests):
- `namespace_id(ns)` = BLAKE2b-128 (person `msc-ns-v1`) of the namespace's canonical JSON (sorted keys, no spaces);
- a store key is 48 bytes: the 16-byte namespace id, then a 32-byte chain hash, so a namespace is a key prefix;
- the root (parent of block 0) is `nsid + BLAKE2b-256(nsid)` (person `msc-root-v1`);
- block i's key is `nsid + BLAKE2b-256(parent key || token ids as little-endian uint32)` (person `msc-block-v1`).

Keys never come from Python's `hash()`, so every process and machine computes the same ones. A block computed under
one namespace (model, engine variant, KV dtype and layout, block size, parallel rank, LoRA adapter, isolation scope)
can never be found under another.

Scopes: a namespace's `scope` is "public" (shared by every caller) or, under the sidecar's per-tenant isolation,
`tenant_scope(tenant)`; `scope_tenant` reads the owner back, so the KV store can hold each tenant to its disk budget.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

KEY_VERSION = 1
NAMESPACE_BYTES = 16
KEY_BYTES = 48
ADAPTER_PATTERN = re.compile(r"none|[^@\s]+@[0-9a-f]{64}")
PUBLIC_SCOPE = "public"
TENANT_SCOPE_PREFIX = "tenant:"


@dataclass(frozen=True)
class Namespace:
    """Everything that decides whether stored KV may be reused. `adapter` is "none" or "name@<sha256 hex>" from
    `fingerprint.adapter_id` (content, never a path: a retrained adapter at the same path must not reuse KV);
    `engine_variant` names engine settings that change the numerics (LoRA layers, quantization), since KV computed
    with them differs in its low bits from KV computed without, and greedy outputs would then diverge."""

    model_fingerprint: str
    engine_variant: str
    kv_dtype: str
    kv_layout: str
    block_size: int
    tp_rank: int = 0
    tp_size: int = 1
    adapter: str = "none"
    scope: str = PUBLIC_SCOPE

    def __post_init__(self) -> None:
        if not ADAPTER_PATTERN.fullmatch(self.adapter):
            raise ValueError(f"Namespace.adapter must be 'none' or 'name@<64 hex sha256>', got {self.adapter!r}")
        if self.block_size <= 0:
            raise ValueError(f"Namespace.block_size must be positive, got {self.block_size}")
        if not 0 <= self.tp_rank < self.tp_size:
            raise ValueError(f"Namespace.tp_rank must be in [0, tp_size={self.tp_size}), got {self.tp_rank}")
        for name in ("model_fingerprint", "kv_dtype", "kv_layout", "scope"):
            if not getattr(self, name):
                raise ValueError(f"Namespace.{name} must not be empty")

    def with_request(self, adapter: str, scope: str) -> "Namespace":
        return replace(self, adapter=adapter, scope=scope)


def tenant_scope(tenant: str) -> str:
    """The isolation scope (vLLM's `cache_salt`) of the KV blocks of `tenant`'s requests."""
    return TENANT_SCOPE_PREFIX + tenant


def scope_tenant(scope: str) -> str | None:
    """The tenant whose requests own the blocks of `scope`; None for a scope no tenant owns ("public")."""
    return scope[len(TENANT_SCOPE_PREFIX):] if scope.startswith(TENANT_SCOPE_PREFIX) else None


def _blake2b(data: bytes, size: int, person: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=size, person=person).digest()


def namespace_id(ns: Namespace) -> bytes:
    canonical = json.dumps({"v": KEY_VERSION, **asdict(ns)}, sort_keys=True, separators=(",", ":"))
    return _blake2b(canonical.encode(), NAMESPACE_BYTES, b"msc-ns-v1")


def namespace_root(ns: Namespace) -> bytes:
    """The chain's starting point for `ns` (not itself a block key)."""
    nsid = namespace_id(ns)
    return nsid + _blake2b(nsid, 32, b"msc-root-v1")


def chain_key(parent: bytes, token_ids: Sequence[int]) -> bytes:
    """The key of the block holding `token_ids`, whose predecessor's key (or the root) is `parent`."""
    if len(parent) != KEY_BYTES:
        raise ValueError(f"parent key must be {KEY_BYTES} bytes, got {len(parent)}")
    tokens = np.asarray(token_ids, dtype=np.int64)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= 2**32):
        raise ValueError("token ids must be in [0, 2**32)")
    return parent[:NAMESPACE_BYTES] + _blake2b(parent + tokens.astype("<u4").tobytes(), 32, b"msc-block-v1")


def block_keys(ns: Namespace, token_ids: Sequence[int], block_size: int | None = None) -> list[bytes]:
    """Keys of every full block of `token_ids` (a trailing partial block has none).

    `block_size` defaults to the namespace's; passing another is refused, since the keys would then be filed
    under a namespace that does not describe them.
    """
    if block_size is not None and block_size != ns.block_size:
        raise ValueError(f"block_size {block_size} differs from Namespace.block_size {ns.block_size}")
    size, keys, parent = ns.block_size, [], namespace_root(ns)
    for start in range(0, len(token_ids) - size + 1, size):
        parent = chain_key(parent, token_ids[start:start + size])
        keys.append(parent)
    return keys


def key_namespace(key: bytes) -> bytes:
    return key[:NAMESPACE_BYTES]
