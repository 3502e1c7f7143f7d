"""What can go wrong with the engine or its adapters, as the services see it. No HTTP here: the edge
(`sidecar.http.errors`) maps each failure to a status."""

from __future__ import annotations

import enum


class EngineFailure(str, enum.Enum):
    """What went wrong; the value is the machine-readable code clients receive."""

    NOT_READY = "engine_not_ready"  # starting or restarting: retry shortly
    UNAVAILABLE = "engine_unavailable"  # not reachable (restarting or stopped), or it stopped while streaming
    TIMEOUT = "engine_timeout"  # no answer within the sidecar's request timeout
    BAD_RESPONSE = "bad_engine_response"  # 200 with a body that is not a JSON object
    ADAPTER_SLOTS_BUSY = "adapter_slots_busy"  # every adapter slot stayed pinned or busy for the whole wait
    ADAPTER_BUSY = "adapter_busy"  # the adapter is serving requests, so it cannot be unloaded now
    TOO_MANY_PINNED = "too_many_pinned"  # one more pinned adapter would leave no slot for the others
    ADAPTER_LOAD_FAILED = "adapter_load_failed"  # the engine refused to load an adapter
    ADAPTER_UNLOAD_FAILED = "adapter_unload_failed"  # the engine refused to unload one


class EngineError(Exception):
    """The engine, or the engine's adapter set, could not do what a service asked; `failure` says what."""

    def __init__(self, failure: EngineFailure, message: str) -> None:
        super().__init__(message)
        self.failure = failure
        self.code = failure.value


class EngineRefused(Exception):
    """The engine answered a request with an error of its own: its HTTP `status`, message and code, relayed as
    they are (the engine's validation of a request is the client's business)."""

    def __init__(self, status: int, message: str, code: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
