"""HTTP client for the engine's OpenAI API. Engine failures raise `sidecar.engine.errors`; an error the engine
answers itself is relayed with its status (`EngineRefused`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from sidecar.engine.errors import EngineError, EngineFailure, EngineRefused
from sidecar.engine.process import Engine

log = logging.getLogger("memsidecar.engine")
# An idle pooled connection is dropped after this long, well before the engine's own keep-alive timeout (uvicorn's
# default, 5 s, which vLLM keeps): with equal timeouts a request can go out on a connection the engine is closing,
# and fail with an empty "engine request failed" (seen under a flood, as a 503 for a tenant that did nothing wrong).
KEEPALIVE_EXPIRY_S = 2.0


@dataclass(frozen=True)
class EngineStream:
    """An open streaming response from the engine; iterate `chunks` once, it closes itself when done."""

    chunks: AsyncIterator[bytes]


class EngineClient:
    """Forwards OpenAI requests to the engine, refusing with 503 while it is not ready."""

    def __init__(self, engine: Engine, timeout_s: float) -> None:
        self.engine = engine
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=5.0),
                                       limits=httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY_S))

    async def close(self) -> None:
        await self._http.aclose()

    def _require_ready(self) -> None:
        if not self.engine.is_ready:
            raise EngineError(EngineFailure.NOT_READY,
                              "the engine is not ready (starting or restarting); retry shortly")

    async def get_json(self, path: str) -> dict:
        self._require_ready()
        response = await self._send(self._http.build_request("GET", self.engine.base_url + path))
        return _json_or_raise(response, await response.aread())

    async def post_json(self, path: str, body: dict) -> dict:
        self._require_ready()
        response = await self._send(self._http.build_request("POST", self.engine.base_url + path, json=body))
        return _json_or_raise(response, await response.aread())

    async def post_command(self, path: str, body: dict) -> tuple[int, str]:
        """POST to an engine endpoint answering plain text (LoRA loading); returns the HTTP status and text,
        raising only when the engine cannot be reached."""
        self._require_ready()
        response = await self._send(self._http.build_request("POST", self.engine.base_url + path, json=body))
        text = (await response.aread()).decode(errors="replace")
        if response.status_code != 200:
            log.info("engine %s answered %d: %s", path, response.status_code, text[:500])
        return response.status_code, text

    async def post_stream(self, path: str, body: dict) -> EngineStream:
        """Start a streaming request; errors before the first byte raise, so the caller can still send a 4xx/5xx."""
        self._require_ready()
        request = self._http.build_request("POST", self.engine.base_url + path, json=body)
        response = await self._send(request, stream=True)
        if response.status_code != 200:
            content = await response.aread()
            await response.aclose()
            _json_or_raise(response, content)
        return EngineStream(_relay(response))

    async def _send(self, request: httpx.Request, stream: bool = False) -> httpx.Response:
        try:
            return await self._http.send(request, stream=stream)
        except httpx.TimeoutException:
            raise EngineError(EngineFailure.TIMEOUT, "the engine did not answer in time") from None
        except httpx.HTTPError as exc:
            log.warning("engine request failed: %s: %s", type(exc).__name__, exc)
            raise EngineError(EngineFailure.UNAVAILABLE,
                              "the engine is unavailable (restarting); retry shortly") from None


async def _relay(response: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    except httpx.HTTPError as exc:
        log.warning("engine stream broke off: %s: %s", type(exc).__name__, exc)
        raise EngineError(EngineFailure.UNAVAILABLE, "the engine stopped while streaming") from None
    finally:
        await response.aclose()


def _json_or_raise(response: httpx.Response, content: bytes) -> dict:
    """The engine's JSON on 200; otherwise an EngineRefused carrying the engine's own status and message."""
    try:
        payload = response.json() if content else {}
    except ValueError:
        payload = {}
    if response.status_code == 200 and isinstance(payload, dict):
        return payload
    error = payload.get("error") if isinstance(payload, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if response.status_code == 200:
        raise EngineError(EngineFailure.BAD_RESPONSE, "the engine answered with invalid JSON")
    raise EngineRefused(response.status_code, message or f"engine error (HTTP {response.status_code})",
                        (error or {}).get("code") if isinstance((error or {}).get("code"), str) else None)


def reply_text(result: dict[str, Any]) -> str:
    """The assistant text of a chat completion result; empty when it has none."""
    choices = result.get("choices") or [{}]
    message = choices[0].get("message") or {} if isinstance(choices[0], dict) else {}
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""
