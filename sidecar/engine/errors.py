"""What can go wrong with the engine or its adapters, as the services see it. No HTTP here: the edge
(`sidecar.http.errors`) maps each class to a status; `code` is the machine-readable code clients receive."""

from __future__ import annotations


class EngineError(Exception):
    """Base of the engine's errors."""

    code = "engine_error"


class EngineNotReady(EngineError):
    """The engine is starting or restarting; the request may be retried shortly."""

    code = "engine_not_ready"


class EngineUnavailable(EngineError):
    """The engine could not be reached (it is restarting or stopped)."""

    code = "engine_unavailable"


class EngineTimeout(EngineError):
    """The engine did not answer within the sidecar's timeout."""

    code = "engine_timeout"


class EngineBadResponse(EngineError):
    """The engine answered 200 with a body that is not a JSON object."""

    code = "bad_engine_response"


class EngineRefused(EngineError):
    """The engine answered a request with an error of its own: its HTTP `status`, message and code, relayed as
    they are (the engine's validation is the client's business)."""

    def __init__(self, status: int, message: str, code: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class AdapterSlotsBusy(EngineError):
    """Every adapter slot of the engine stayed pinned or busy for the whole wait; retry shortly."""

    code = "adapter_slots_busy"


class AdapterBusy(EngineError):
    """The adapter is serving requests, so it cannot be unloaded now."""

    code = "adapter_busy"


class TooManyPinned(EngineError):
    """Pinning one more adapter would leave the engine no slot for the others."""

    code = "too_many_pinned"


class AdapterLoadFailed(EngineError):
    """The engine refused to load (or unload) an adapter; `code` says which."""

    def __init__(self, message: str, code: str = "adapter_load_failed") -> None:
        super().__init__(message)
        self.code = code
