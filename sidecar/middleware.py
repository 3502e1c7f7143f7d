"""ASGI middleware: request-size limits and per-route metrics. Pure ASGI, so streaming responses pass through."""

from __future__ import annotations

import time

from sidecar.errors import error_bytes
from sidecar.metrics import Metrics

BODY_METHODS = {"POST", "PUT", "PATCH"}


async def _send_error(send, status: int, message: str, code: str) -> None:
    body = error_bytes(status, message, code)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


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
