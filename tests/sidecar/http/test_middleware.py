"""The ASGI middleware, driven directly: refusals come from the headers alone, before the body is read."""

from __future__ import annotations

import asyncio
import json

from sidecar.http.access import Access, Caller
from sidecar.http.middleware import AuthenticateMiddleware, BodyLimitMiddleware, needs_key
from sidecar.tenants.keys import KeyTable, hash_key
from sidecar.tenants.rate_limit import RateLimiter

KEYS = KeyTable({hash_key("key-a"): "tenant-a"})


def scope(path: str, key: str | None = None, length: int = 100) -> dict:
    headers = [(b"content-length", str(length).encode())]
    if key:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    return {"type": "http", "method": "POST", "path": path, "headers": headers, "client": ("10.0.0.1", 1)}


async def never_read() -> dict:
    raise AssertionError("the body was read")


def run(app, request_scope: dict, receive=never_read) -> list[dict]:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(request_scope, receive, send))
    return sent


class Recorder:
    """An app that records the caller the scope carries and answers 200."""

    def __init__(self) -> None:
        self.callers: list[Caller] = []

    async def __call__(self, request_scope, receive, send) -> None:
        self.callers.append(request_scope["state"]["memsidecar.caller"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def test_a_request_without_a_valid_key_is_a_401_before_its_body_is_read():
    app = AuthenticateMiddleware(BodyLimitMiddleware(Recorder(), max_bytes=1 << 30), Access(KEYS, RateLimiter(0)))
    for key in (None, "wrong"):
        start, body = run(app, scope("/v1/adapters", key, length=256 << 20))
        assert start["status"] == 401 and (b"connection", b"close") in start["headers"]
        assert (b"www-authenticate", b"Bearer") in start["headers"]
        assert json.loads(body["body"])["error"]["code"] == "invalid_api_key"


def test_the_caller_is_authenticated_and_rate_limited_once_per_request():
    recorder = Recorder()
    access = Access(KEYS, RateLimiter(1))  # one request a minute: a second acquire would be a 429
    app = AuthenticateMiddleware(recorder, access)

    async def body() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    request_scope = scope("/v1/memories", "key-a")
    assert run(app, request_scope, body)[0]["status"] == 200
    assert access.caller_of(request_scope) == recorder.callers[0] == Caller("tenant-a", hash_key("key-a"))
    assert run(app, scope("/v1/memories", "key-a"))[0]["status"] == 429


def test_an_over_limit_content_length_is_a_413_before_the_body_is_read():
    app = AuthenticateMiddleware(BodyLimitMiddleware(Recorder(), max_bytes=1000), Access(KEYS, RateLimiter(0)))
    start, _ = run(app, scope("/v1/adapters", "key-a", length=1001))
    assert start["status"] == 413 and (b"connection", b"close") in start["headers"]


def test_only_the_api_needs_a_key():
    assert needs_key("/v1/chat/completions") and needs_key("/mcp") and needs_key("/v1")
    assert not any(needs_key(path) for path in ("/healthz", "/readyz", "/metrics", "/console/signin", "/docs",
                                                "/openapi.json", "/v10"))


class Holding:
    """An app that reads nothing more and answers only when `release` is set: a route still handling a body."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.bodies: list[bytes] = []

    async def __call__(self, request_scope, receive, send) -> None:
        self.bodies.append((await receive())["body"])
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def body(size: int):
    async def receive() -> dict:
        return {"type": "http.request", "body": b"x" * size, "more_body": False}
    return receive


def test_a_tenant_holds_at_most_its_large_bodies_at_once_and_gets_them_back():
    holding = Holding()
    limit = BodyLimitMiddleware(holding, max_bytes=10_000, large_bytes=1_000, large_bodies=2)
    app = AuthenticateMiddleware(limit, Access(KEYS, RateLimiter(0)))

    async def scenario() -> list[int]:
        statuses: list[int] = []

        async def post(size: int, declared: bool = True) -> None:
            sent: list[dict] = []

            async def send(message: dict) -> None:
                sent.append(message)

            request = scope("/v1/import", "key-a", length=size)
            if not declared:  # a chunked body: large only once counted
                request["headers"] = [h for h in request["headers"] if h[0] != b"content-length"]
            await app(request, body(size), send)
            statuses.append(sent[0]["status"])

        held = [asyncio.create_task(post(5_000)), asyncio.create_task(post(5_000, declared=False))]
        await asyncio.sleep(0.05)
        await post(5_000)  # a third large body while two are handled: refused at once
        held.append(asyncio.create_task(post(500)))  # a small one is not held back: it reaches the route
        await asyncio.sleep(0.05)
        reached = len(holding.bodies)
        holding.release.set()
        await asyncio.gather(*held)
        await post(5_000)  # the slots came back
        return [reached, *statuses]

    reached, *statuses = asyncio.run(scenario())
    assert reached == 3 and statuses[:1] == [429] and sorted(statuses[1:4]) == [200, 200, 200] and statuses[4] == 200
    assert limit.large_in_flight == {"tenant-a": 0}
