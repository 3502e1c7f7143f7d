"""The KV isolation scope of an engine request: the one place the sidecar sets vLLM's `cache_salt`."""

from __future__ import annotations

from typing import Any

from kvcache.keys import tenant_scope


def cache_salt(body: dict[str, Any], tenant: str, kv_scope: str) -> dict[str, Any]:
    """The body with its KV isolation scope: per tenant unless shared. The salt is the sidecar's alone: a client's
    `cache_salt` is refused at the HTTP edge (`sidecar.chat.requests.ENGINE_INTERNAL`), and dropped here too."""
    if kv_scope == "shared":
        return {key: value for key, value in body.items() if key != "cache_salt"}
    return {**body, "cache_salt": tenant_scope(tenant)}
