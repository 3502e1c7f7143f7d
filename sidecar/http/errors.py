"""Errors in the OpenAI shape: `{"error": {"message", "type", "code"}}`, for every failure the HTTP layer returns.

The one place where the services' domain errors (`sidecar.engine.errors`, `sidecar.chat.errors`, the tenants' quota
errors and the memory packages' errors) become HTTP statuses: `as_api_error`. Nothing below the edge raises an
`APIError`."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.errors import AdapterError
from sidecar.chat.errors import ChatError, ChatFailure
from sidecar.chat.output_limit import OutputLimitError
from sidecar.engine.errors import EngineError, EngineFailure, EngineRefused
from sidecar.tenants.quotas import QuotaExceeded
from textual.errors import (CALLER_ERRORS, InvalidMemoryError, KnowledgeBaseNotFoundError, MemoryNotFoundError,
                            SpaceAccessDenied, SpaceNotFoundError, StoreFullError, StoreUnavailableError)

log = logging.getLogger("memsidecar.http")

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
    504: "api_error",
    507: "insufficient_storage",
}


class APIError(Exception):
    """An error the client sees, with its HTTP status, OpenAI error type and machine-readable code."""

    def __init__(self, status: int, message: str, code: str | None = None, error_type: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}
        fallback = "api_error" if status >= 500 else "invalid_request_error"
        self.error_type = error_type or ERROR_TYPES.get(status, fallback)


def error_body(status: int, message: str, code: str | None = None, error_type: str | None = None,
               param: str | None = None) -> dict:
    error = APIError(status, message, code, error_type)
    return {"error": {"message": error.message, "type": error.error_type, "param": param, "code": error.code}}


def error_response(error: APIError) -> JSONResponse:
    body = error_body(error.status, error.message, error.code, error.error_type, error.param)
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def error_bytes(status: int, message: str, code: str | None = None) -> bytes:
    return json.dumps(error_body(status, message, code)).encode()


async def sse_with_errors(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Relay a stream's events; a domain error once the response has started ends the stream with one more event
    holding the error (its status can no longer be sent)."""
    try:
        async for chunk in chunks:
            yield chunk
    except DOMAIN_ERRORS as exc:
        error = as_api_error(exc)
        yield b"data: " + error_bytes(error.status, error.message, error.code) + b"\n\n"


def _describe_validation(exc: RequestValidationError) -> tuple[str, str, str | None]:
    """A readable message naming the fields at fault, the error code, and the first field at fault."""
    problems, fields = [], []
    for error in exc.errors():
        kind, context = error.get("type"), error.get("ctx") or {}
        if kind == "json_invalid":
            return f"request body is not valid JSON: {context.get('error', 'parse error')}", "invalid_json", None
        named = _named(context) if kind == "engine_internal" else ()
        location = ".".join(str(part) for part in (*error.get("loc", ()), *named) if part != "body")
        fields.append(location or None)
        if kind == "engine_internal":
            problems.append(str(error.get("msg")))
        elif kind == "extra_forbidden":
            problems.append(f"{location}: unknown field, not accepted (only the documented fields are)")
        else:
            problems.append(f"{location or 'body'}: {error.get('msg')}")
    return "; ".join(problems) or "invalid request", "invalid_request", next(filter(None, fields), None)


def _named(context: dict) -> tuple[str, ...]:
    """The field a model-level error names in its context (loc stops at the model)."""
    return (context["field"],) if isinstance(context.get("field"), str) else ()


RETRY_SOON = {"Retry-After": "1"}

# The HTTP status of each failure the services report.
STATUSES: dict[EngineFailure | ChatFailure, int] = {
    EngineFailure.NOT_READY: 503, EngineFailure.UNAVAILABLE: 503, EngineFailure.TIMEOUT: 504,
    EngineFailure.BAD_RESPONSE: 502, EngineFailure.ADAPTER_SLOTS_BUSY: 503, EngineFailure.ADAPTER_BUSY: 409,
    EngineFailure.TOO_MANY_PINNED: 409, EngineFailure.ADAPTER_LOAD_FAILED: 502,
    EngineFailure.ADAPTER_UNLOAD_FAILED: 502,
    ChatFailure.MODEL_NOT_FOUND: 404, ChatFailure.PIN_NOT_FOUND: 404, ChatFailure.ENGINE_BUSY: 503,
}
BUSY = frozenset({EngineFailure.ADAPTER_SLOTS_BUSY, ChatFailure.ENGINE_BUSY})  # answered with Retry-After


def as_api_error(exc: Exception) -> APIError | None:
    """The error the client sees for a domain error, or None when `exc` is not one (an internal fault)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, EngineRefused):
        return APIError(exc.status, str(exc), exc.code)
    if isinstance(exc, (EngineError, ChatError)):
        status = STATUSES[exc.failure]
        return APIError(status, str(exc), exc.code, "api_error" if status in (502, 504) else None,
                        headers=RETRY_SOON if exc.failure in BUSY else None)
    if isinstance(exc, InvalidMemoryError):
        return APIError(400, str(exc), "invalid_value", param=exc.field)
    if isinstance(exc, (MemoryNotFoundError, KnowledgeBaseNotFoundError, SpaceNotFoundError)):
        return APIError(404, str(exc), "not_found")
    if isinstance(exc, SpaceAccessDenied):
        return APIError(403, str(exc), "space_access_denied", param=exc.field)
    if isinstance(exc, AdapterError):
        return APIError(exc.status, str(exc), "not_found" if exc.status == 404 else "invalid_adapter",
                        param=exc.field)
    if isinstance(exc, QuotaExceeded):
        return APIError(exc.status, str(exc), "quota_exceeded", param=exc.resource.value,
                        headers=RETRY_SOON if exc.status == 429 else None)
    if isinstance(exc, StoreFullError):
        return APIError(507, str(exc), "memory_store_full")
    if isinstance(exc, StoreUnavailableError):
        return APIError(503, str(exc), "store_unavailable", headers=RETRY_SOON)
    if isinstance(exc, OutputLimitError):
        return APIError(400, str(exc), "max_tokens_too_large", param=exc.field)
    return None


DOMAIN_ERRORS = (APIError, EngineError, EngineRefused, ChatError, *CALLER_ERRORS, AdapterError, QuotaExceeded,
                 OutputLimitError)


def install_error_handlers(app: FastAPI) -> None:
    """Make every error path of `app` answer in the OpenAI error shape."""

    async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, StoreFullError):
            log.error("memory store full on %s %s: %s", request.method, request.url.path, exc)
        elif isinstance(exc, StoreUnavailableError):
            log.warning("memory store unavailable on %s %s: %s", request.method, request.url.path, exc.reason)
        return error_response(as_api_error(exc))

    for kind in DOMAIN_ERRORS:
        app.add_exception_handler(kind, _domain_error)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, code, field = _describe_validation(exc)
        return error_response(APIError(400, message, code, param=field))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(APIError(exc.status_code, str(exc.detail)))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(APIError(500, "internal server error", "internal_error", "api_error"))
