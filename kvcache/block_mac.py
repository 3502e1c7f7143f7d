"""The one format of a block in the shared tier: an encoded block (`block_format`) sealed with a keyed MAC.

    offset  size  field
    0       4     magic b"MSKA"
    4       1     version (1)
    5       1     MAC algorithm (1: HMAC-SHA256)
    6       2     reserved (0)
    8       32    tag: HMAC-SHA256(secret, bytes 0..8 || store key (48 bytes) || block)
    40      ...   block: the `block_format` bytes, unchanged

Anyone who can reach a Redis server can write into it, so a shared-tier block is trusted only when its tag proves
that a holder of the nodes' secret wrote these bytes under this key. The tag covers the 48-byte store key (namespace
id, which names the tenant's scope, then chain hash), so a sound block copied under another key, another tenant's
or another prefix's, is refused too. Keys have one fixed length, so key || block is unambiguous. `open` checks the
tag (in constant time) before handing out a byte of the block; a refused block is never decoded.

The block's own XXH3 checksum still guards against damage; the tag is about who wrote it, not a replacement.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from kvcache.keys import KEY_BYTES

MAGIC = b"MSKA"
VERSION = 1
HMAC_SHA256 = 1
_HEADER = struct.Struct("<4sBBH")
TAG_BYTES = 32
SEALED_OVERHEAD = _HEADER.size + TAG_BYTES
MIN_SECRET_BYTES = 16


class UnsealedBlock(ValueError):
    """A shared-tier block that its tag does not vouch for (none, a wrong one, or one made for another key)."""


class BlockMac:
    """Seals and opens shared-tier blocks under one secret. Holds no state besides the keyed hash, so one instance
    serves every thread."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"a KV block MAC secret needs at least {MIN_SECRET_BYTES} bytes, got {len(secret)}; "
                             "generate one with `openssl rand -hex 32`")
        self._keyed = hmac.new(secret, digestmod=hashlib.sha256)  # copied per block: the key schedule runs once
        self._header = _HEADER.pack(MAGIC, VERSION, HMAC_SHA256, 0)

    def __repr__(self) -> str:
        return "BlockMac(secret=<hidden>)"

    def seal(self, key: bytes, block: bytes | memoryview) -> bytes:
        """Header, tag and `block`, ready to store under `key`."""
        return b"".join((self._header, self._tag(key, block), block))

    def open(self, key: bytes, sealed: bytes | memoryview) -> memoryview:
        """The block inside `sealed` (a view, no copy) when its tag is right for `key`; raises `UnsealedBlock`."""
        sealed = memoryview(sealed).cast("B")
        if len(sealed) < SEALED_OVERHEAD:
            raise UnsealedBlock(f"{len(sealed)} bytes are shorter than a sealed block's header")
        if sealed[:_HEADER.size] != self._header:
            raise UnsealedBlock(f"not a sealed memsidecar block (header {bytes(sealed[:_HEADER.size]).hex()})")
        block = sealed[SEALED_OVERHEAD:]
        if not hmac.compare_digest(sealed[_HEADER.size:SEALED_OVERHEAD], self._tag(key, block)):
            raise UnsealedBlock("its MAC does not match this key and secret")
        return block

    def _tag(self, key: bytes, block: bytes | memoryview) -> bytes:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a store key has {KEY_BYTES} bytes, not {len(key)}")
        mac = self._keyed.copy()
        mac.update(self._header)
        mac.update(key)
        mac.update(block)
        return mac.digest()
