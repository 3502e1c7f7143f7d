"""ASGI middleware: authentication, request-size limits and per-route metrics. Pure ASGI, so streaming responses
pass through.

Order (outermost first): metrics, authentication, body limit, the app. So no byte of a body is read before the
caller is known: a request without a valid key, or declaring a body over the limit, is answered from its headers,
with `Connection: close` so the server drops the connection instead of draining the body it will never use.
"""

from __future__ import annotations

import time

from memcore.units import MIB
from sidecar.http.access import CALLER_KEY, Access
from sidecar.http.errors import APIError, error_bytes
from sidecar.http.metrics import Metrics

BODY_METHODS = {"POST", "PUT", "PATCH"}
AUTHENTICATED_PREFIXES = ("/v1/", "/mcp")


async def _send_error(send, status: int, message: str, code: str | None,
                      extra_headers: dict[str, str] | None = None) -> None:
    """Answer an error before the body is read; the connection closes after it (its body is never read)."""
    body = error_bytes(status, message, code)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    headers += [(name.lower().encode(), value.encode()) for name, value in (extra_headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def needs_key(path: str) -> bool:
    """Whether a path is the API's (authenticated) rather than health, metrics, docs or the console's pages."""
    return path == "/v1" or path.startswith(AUTHENTICATED_PREFIXES)


class AuthenticateMiddleware:
    """Authenticates every API request from its headers before anything reads its body; refusals (401, 429) are
    answered at once. The `Caller` is kept in the scope, where `Access.caller` finds it."""

    def __init__(self, app, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and needs_key(scope["path"]):
            try:
                self.access.caller_of(scope)
            except APIError as error:
                return await _send_error(send, error.status, error.message, error.code, error.headers)
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Refuses bodies over `max_bytes` with 413, by the declared Content-Length or by counting a chunked body.
    `per_path` gives exact paths (adapter uploads) a limit of their own; the bodies of the exact paths in `streamed`
    (an import) pass through unread and unbounded here: their route reads them incrementally and bounds them itself.

    A body is buffered whole before the route sees it, so memory is bounded per tenant too: a body over
    `large_bytes` holds one of the caller's tenant's `large_bodies` slots from the moment it is known to be large
    until its route has answered; a tenant whose slots are all held gets 429 (so no tenant can buffer more than
    `large_bodies` times the largest limit at once)."""

    def __init__(self, app, max_bytes: int, per_path: dict[str, int] | None = None, large_bytes: int = MIB,
                 large_bodies: int = 2, streamed: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = per_path or {}
        self.streamed = streamed
        self.large_bytes = large_bytes
        self.large_bodies = large_bodies
        self.large_in_flight: dict[str, int] = {}  # tenant -> its large bodies being read or handled

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS or scope["path"] in self.streamed:
            return await self.app(scope, receive, send)
        limit = self.per_path.get(scope["path"], self.max_bytes)
        too_large = f"request body exceeds the limit of {limit} bytes"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await _send_error(send, 413, too_large, "request_too_large")
        holder = None
        try:
            chunks, size = [], 0
            if declared is not None and int(declared) > self.large_bytes:
                if (holder := self._take_large(scope)) is None:
                    return await self._refuse_large(send)
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    return await _send_error(send, 413, too_large, "request_too_large")
                if size > self.large_bytes and holder is None:
                    if (holder := self._take_large(scope)) is None:
                        return await self._refuse_large(send)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
            del chunks

            async def replay():
                return pending.pop() if pending else await receive()

            await self.app(scope, replay, send)
        finally:
            if holder is not None:
                self.large_in_flight[holder] -= 1

    def _take_large(self, scope) -> str | None:
        """Take one of the caller's tenant's large-body slots: the tenant, or None when all are held."""
        caller = scope.get("state", {}).get(CALLER_KEY)
        tenant = caller.tenant if caller is not None else ""
        if self.large_in_flight.get(tenant, 0) >= self.large_bodies:
            return None
        self.large_in_flight[tenant] = self.large_in_flight.get(tenant, 0) + 1
        return tenant

    async def _refuse_large(self, send) -> None:
        await _send_error(send, 429, f"this tenant already has {self.large_bodies} request bodies over "
                          f"{self.large_bytes} bytes in flight; retry when one has finished", "too_many_large_bodies",
                          {"Retry-After": "1"})


class MetricsMiddleware:
    """Counts every request and times it to the end of its response body, labelled by the matched route."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def send_and_observe(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.metrics.observe(_route_of(scope), scope["method"], status, started)

        await self.app(scope, receive, send_and_observe)


def _route_of(scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"
