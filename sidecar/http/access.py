"""Who is calling: `Authorization: Bearer <key>` turned into a `Caller`, rate-limited, once per request.

`AuthenticateMiddleware` (sidecar.http.middleware) authenticates every `/v1` and `/mcp` request from its headers alone,
before any byte of its body is read, and keeps the `Caller` in the ASGI scope; a request without a valid key is
answered 401 with its body unread. Every `/v1` route depends on `Access.caller`, which returns that `Caller`
(authenticating only where no middleware ran); routes reach memory only through `caller.tenant`, so another
tenant's objects cannot be named, only not found.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import Scope

from sidecar.http.errors import APIError
from sidecar.tenants.keys import KeyTable, hash_key
from sidecar.tenants.rate_limit import RateLimiter

CALLER_KEY = "memsidecar.caller"  # where the request's Caller is kept in the ASGI scope's state


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: its tenant, and the hashed key that rate limits apply to."""

    tenant: str
    key_hash: str


class Access:
    """Authentication and per-key rate limiting for the HTTP API."""

    def __init__(self, keys: KeyTable, limiter: RateLimiter) -> None:
        self.keys = keys
        self.limiter = limiter

    def authenticate(self, authorization: str | None, client: str = "unknown") -> Caller:
        """The caller for an `Authorization` header value; 401 for a missing or unknown key, 429 over the rate.

        Failed attempts count against the client address's own bucket, so guessing keys is rate-limited too."""
        key = _bearer(authorization)
        tenant = self.keys.tenant_of(key)
        if tenant is None:
            if self.limiter.acquire(f"unauthenticated:{client}") > 0:
                raise APIError(429, "too many requests without a valid API key", "rate_limit_exceeded",
                               headers={"Retry-After": "60"})
            raise APIError(401, "missing or invalid API key; send `Authorization: Bearer <key>`", "invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})
        key_hash = hash_key(key or "")
        wait_s = self.limiter.acquire(key_hash)
        if wait_s > 0:
            raise APIError(429, f"rate limit of {self.limiter.per_minute} requests per minute exceeded",
                           "rate_limit_exceeded", headers={"Retry-After": self.limiter.retry_after(wait_s)})
        return Caller(tenant, key_hash)

    def caller_of(self, scope: Scope) -> Caller:
        """The caller of the request `scope`, authenticated (and rate-limited) once: later calls return the same."""
        state = scope.setdefault("state", {})
        if CALLER_KEY not in state:
            client = (scope.get("client") or ("unknown",))[0]
            state[CALLER_KEY] = self.authenticate(Headers(scope=scope).get("authorization"), client)
        return state[CALLER_KEY]

    async def caller(self, request: Request) -> Caller:
        """FastAPI dependency: the authenticated caller of this request."""
        return self.caller_of(request.scope)


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, key = authorization.partition(" ")
    return key.strip() or None if scheme.lower() == "bearer" else None


def whoami_router(caller, quota_report: Callable[[str], dict] | None = None) -> APIRouter:
    """`GET /v1/whoami`: the tenant the caller's key belongs to (a cheap way to check a key), with its quota usage
    and limits."""
    router = APIRouter(prefix="/v1")

    @router.get("/whoami")
    async def whoami(who: Caller = Depends(caller)) -> dict:
        if quota_report is None:
            return {"tenant": who.tenant}
        return {"tenant": who.tenant, **await run_in_threadpool(quota_report, who.tenant)}

    return router
