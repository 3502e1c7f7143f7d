"""What the chat path refuses, as the services see it. No HTTP here: `sidecar.http.errors` maps each failure to a
status."""

from __future__ import annotations

import enum


class ChatFailure(str, enum.Enum):
    """Why the chat path refused; the value is the machine-readable code clients receive."""

    MODEL_NOT_FOUND = "model_not_found"  # no served model, and no adapter of the caller's tenant, has the name
    ENGINE_BUSY = "engine_busy"  # every shared engine slot is taken: retry shortly
    PIN_NOT_FOUND = "not_found"  # no activation pin with this id belongs to the caller's tenant


class ChatError(Exception):
    """The chat path refused a request; `failure` says why."""

    def __init__(self, failure: ChatFailure, message: str) -> None:
        super().__init__(message)
        self.failure = failure
        self.code = failure.value


def model_not_found(name: str | None, available: list[str]) -> ChatError:
    """The error for a model name nobody serves, naming the models that exist."""
    return ChatError(ChatFailure.MODEL_NOT_FOUND,
                     f"The model `{name}` does not exist. Available: {', '.join(available) or 'none'}.")
