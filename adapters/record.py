"""One registered adapter version, and its one on-disk encoding (the value stored in the registry's LMDB).

Encoding: UTF-8 JSON, keys sorted, no whitespace, `"v": 1` as the format version, `target_modules` a list,
`owner` null for a public adapter. Pinned by a golden-bytes test.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

FORMAT_VERSION = 1


@dataclass(frozen=True)
class AdapterRecord:
    """Version `version` (from 1, never reused for one owner and name) of adapter `name`.

    `owner` is the tenant that owns it, or None for a public adapter every tenant sees. The weights are the
    content-addressed blob `sha256`; `base_fingerprint` is the base model they were validated against.
    """

    name: str
    version: int
    owner: str | None
    base_fingerprint: str
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    bytes: int
    sha256: str
    created_at: float
    last_used_at: float

    @property
    def is_public(self) -> bool:
        return self.owner is None

    @property
    def engine_name(self) -> str:
        """The adapter's name in the engine: readable, and unique per (owner, name, version, content).

        `name.vN.` + 12 hex digits of a hash over the owner, name, version and content: two tenants' adapters
        with one name and version never share an engine slot, and the characters stay within [A-Za-z0-9._-].
        """
        identity = f"{self.owner or ''}\0{self.name}\0{self.version}\0{self.sha256}".encode()
        return f"{self.name}.v{self.version}.{hashlib.sha256(identity).hexdigest()[:12]}"

    @property
    def kv_adapter_id(self) -> str:
        """The KV cache namespace of this adapter: equal to `kvcache.fingerprint.adapter_id(name, path)`."""
        return f"{self.name}@{self.sha256}"

    @property
    def reference(self) -> str:
        """`name@vN`, the form `AdapterRegistry.resolve` also accepts."""
        return f"{self.name}@v{self.version}"

    def used_at(self, when: float) -> AdapterRecord:
        return replace(self, last_used_at=when)


def encode_record(record: AdapterRecord) -> bytes:
    """The stored bytes of `record`."""
    body = asdict(record)
    body["target_modules"] = list(record.target_modules)
    body["v"] = FORMAT_VERSION
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def decode_record(data: bytes) -> AdapterRecord:
    """The record in stored bytes; ValueError on an unknown format version."""
    body = json.loads(bytes(data))
    if body.pop("v", None) != FORMAT_VERSION:
        raise ValueError(f"adapter record has an unknown format version; expected {FORMAT_VERSION}")
    body["target_modules"] = tuple(body["target_modules"])
    return AdapterRecord(**body)
