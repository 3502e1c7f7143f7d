"""The errors of the adapter registry, each naming the field at fault and the HTTP status it maps to.

The HTTP layer maps `error.status` straight to a response; no route inspects messages. `CorruptAdapterError` is
no user mistake: it is an internal fault (a stored adapter that does not match its digest), answered with a 500.
"""

from __future__ import annotations

BAD_REQUEST = 400
TOO_LARGE = 413
UNPROCESSABLE = 422
NOT_FOUND = 404


class AdapterError(ValueError):
    """A user mistake about an adapter: `field` names what was wrong, `message` says why and what is allowed."""

    status = BAD_REQUEST

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InvalidAdapterError(AdapterError):
    """The upload (or a name in the request) is bad.

    `status` is 400 for a malformed request (bad archive, bad JSON, missing or pickle files, bad names), 413 when
    the upload or a member is too large, and 422 when a well-formed adapter does not fit the base model or the
    engine (rank, target modules, tensor shapes, unsupported PEFT options).
    """

    def __init__(self, field: str, message: str, status: int = BAD_REQUEST) -> None:
        if status not in (BAD_REQUEST, TOO_LARGE, UNPROCESSABLE):
            raise ValueError(f"status must be 400, 413 or 422, not {status}")
        super().__init__(field, message)
        self.status = status


class AdapterNotFoundError(AdapterError):
    """No such adapter visible to the tenant; also raised for another tenant's adapter, so existence never leaks."""

    status = NOT_FOUND


class CorruptAdapterError(RuntimeError):
    """A stored adapter's files do not match the digest its record holds: the store was damaged or tampered with."""

    def __init__(self, sha256: str, message: str) -> None:
        super().__init__(f"adapter blob {sha256}: {message}")
        self.sha256 = sha256


class DistillError(AdapterError):
    """A bad distillation request: `field` names the spec field (or input line) at fault."""
