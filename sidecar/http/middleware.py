"""ASGI middleware: authentication, request-size limits and per-route metrics. Pure ASGI, so streaming responses
pass through.

Order (outermost first): metrics, authentication, body limit, the app. So no byte of a body is read before the
caller is known: a request without a valid key, or declaring a body over the limit, is answered from its headers,
with `Connection: close` so the server drops the connection instead of draining the body it will never use.
"""

from __future__ import annotations

import time

from sidecar.http.access import Access
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
    `per_path` gives exact paths (adapter uploads) a limit of their own."""

    def __init__(self, app, max_bytes: int, per_path: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = per_path or {}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            return await self.app(scope, receive, send)
        limit = self.per_path.get(scope["path"], self.max_bytes)
        too_large = f"request body exceeds the limit of {limit} bytes"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await _send_error(send, 413, too_large, "request_too_large")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await _send_error(send, 413, too_large, "request_too_large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay():
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)


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
