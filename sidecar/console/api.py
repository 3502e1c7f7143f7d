"""The console's only way to memory: in-process HTTP requests to the sidecar's own REST API, made with the
signed-in user's key and the browser's address.

Going through the app (rather than calling the stores) means every console view passes the same authentication,
rate limits, validation and tenant checks as any other client: there is no second implementation of access rules.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
from starlette.types import ASGIApp

INTERNAL_BASE_URL = "http://memsidecar.console"
# A memory id or adapter name as it may appear in an API path: never a dot segment or anything to escape.
SEGMENT = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"


class ConsoleAPIError(Exception):
    """The API refused a console request: its HTTP status and the message it gave."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def path_segment(value: str, field: str) -> str:
    """`value` if it may be put into an API path as one segment; else ConsoleAPIError(400) naming `field`.

    Every id a page forwards from a query string or form into an API path passes here first."""
    if not re.fullmatch(SEGMENT, value):
        raise ConsoleAPIError(400, f"{field}: {value[:80]!r} is not a valid id (1 to 128 characters from A-Z a-z "
                                   "0-9 _ . : @ -, starting with a letter or digit)")
    return value


class ConsoleAPI:
    """Calls the REST API of `app` as the holder of `key`, from `client_host` (rate limits see the real client)."""

    def __init__(self, app: ASGIApp, key: str, client_host: str, timeout_s: float = 300.0) -> None:
        self._app = app
        self._key = key
        self._client_host = client_host
        self._timeout_s = timeout_s

    async def call(self, method: str, path: str, *, params: Any = None, json: Any = None) -> Any:
        """The JSON the API answers; ConsoleAPIError with the API's own message for any status >= 400."""
        transport = httpx.ASGITransport(app=self._app, client=(self._client_host, 0))
        headers = {"Authorization": f"Bearer {self._key}"}
        async with httpx.AsyncClient(transport=transport, base_url=INTERNAL_BASE_URL, headers=headers,
                                     timeout=self._timeout_s) as client:
            response = await client.request(method, path, params=params, json=json)
        if response.status_code >= 400:
            raise ConsoleAPIError(response.status_code, _message(response))
        return response.json()

    async def get(self, path: str, **params: Any) -> Any:
        return await self.call("GET", path, params={k: v for k, v in params.items() if v not in (None, "", [])})

    async def post(self, path: str, json: Any = None) -> Any:
        return await self.call("POST", path, json=json)


def _message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
    except ValueError:
        return response.text[:500] or f"HTTP {response.status_code}"
    return str(error.get("message") or f"HTTP {response.status_code}")
