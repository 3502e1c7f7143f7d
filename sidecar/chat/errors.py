"""What the chat path refuses, as the services see it. No HTTP here: `sidecar.http.errors` maps each class to a
status; `code` is the machine-readable code clients receive."""

from __future__ import annotations


class ChatError(Exception):
    """Base of the chat path's errors."""

    code = "chat_error"


class ModelNotFound(ChatError):
    """No served model, and no adapter of the caller's tenant, has the requested name."""

    code = "model_not_found"

    def __init__(self, name: str | None, available: list[str]) -> None:
        super().__init__(f"The model `{name}` does not exist. Available: {', '.join(available) or 'none'}.")
        self.name = name


class EngineBusy(ChatError):
    """Every shared engine slot is taken; retry shortly."""

    code = "engine_busy"


class PinNotFound(ChatError):
    """No activation pin with this id belongs to the caller's tenant."""

    code = "not_found"
