"""Runs inside the engine's OpenAI server (`--middleware sidecar.engine.lora_release.LoraRelease`, added by
`engine_command` when LoRA is on): releasing an adapter for good.

vLLM's `/v1/unload_lora_adapter` only forgets the adapter's name in the API server; its weights stay in the engine
worker's LoRA cache until `max_cpu_loras` other adapters push them out. The residency executor needs an evicted
adapter's memory back now, and to know it is back, so this middleware adds two routes on the engine:

- `POST /memsidecar/v1/release_lora {"lora_name"}`: unload the name as vLLM does, then remove the adapter from the
  engine's caches (`EngineClient.remove_lora`) and check the engine no longer lists it. Answers
  `{"lora_name", "lora_int_id", "released": bool}`; 404 when the name is not loaded.
- `GET /memsidecar/v1/loras`: `{"lora_int_ids": [...], "names": {name: id}}`, what the engine holds and the names the
  API server knows.

The module imports vLLM only inside the handlers: the sidecar imports it without vLLM for `RELEASE_PATH`.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

RELEASE_PATH = "/memsidecar/v1/release_lora"
LIST_PATH = "/memsidecar/v1/loras"
MAX_BODY_BYTES = 4096

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class LoraRelease:
    """ASGI middleware adding the two routes above; every other request passes through untouched."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = (scope.get("method"), scope.get("path")) if scope["type"] == "http" else None
        if route == ("POST", RELEASE_PATH):
            status, body = await self._release(scope["app"].state, await _body(receive))
        elif route == ("GET", LIST_PATH):
            status, body = 200, await _listing(scope["app"].state)
        else:
            await self.app(scope, receive, send)
            return
        payload = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _release(self, state: Any, raw: bytes | None) -> tuple[int, dict]:
        try:
            name = json.loads(raw or b"")["lora_name"]
            if not isinstance(name, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return 400, {"error": 'expected a JSON body {"lora_name": "<name>"} of at most 4 KiB'}
        from vllm.entrypoints.serve.lora.protocol import UnloadLoRAAdapterRequest

        models, engine = state.openai_serving_models, state.engine_client
        lora = models.lora_requests.get(name)
        if lora is None:
            return 404, {"error": f"LoRA adapter {name!r} is not loaded", "lora_name": name}
        result = await models.unload_lora_adapter(UnloadLoRAAdapterRequest(lora_name=name))
        if not isinstance(result, str):  # an ErrorResponse
            return 409, {"error": f"vLLM refused to unload {name!r}", "lora_name": name}
        await engine.remove_lora(lora.lora_int_id)
        released = lora.lora_int_id not in await engine.list_loras()
        return 200, {"lora_name": name, "lora_int_id": lora.lora_int_id, "released": released}


async def _listing(state: Any) -> dict:
    ids = await state.engine_client.list_loras()
    names = {name: lora.lora_int_id for name, lora in state.openai_serving_models.lora_requests.items()}
    return {"lora_int_ids": sorted(ids), "names": names}


async def _body(receive: Receive) -> bytes | None:
    """The request body, or None when it is larger than MAX_BODY_BYTES."""
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)
