"""Activation pins: texts whose KV blocks a tenant asked the engine's connector to keep. Records (id, tenant, text)
are kept in one JSON file, replaced atomically."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from sidecar.chat.errors import ChatError, ChatFailure


@dataclass(frozen=True)
class Pin:
    id: str
    tenant: str
    text: str
    model: str
    tokens: int
    created_at: float


class PinBook:
    """Pin records by tenant, in a JSON file replaced atomically on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._pins = {pin["id"]: Pin(**pin) for pin in json.loads(path.read_text())} if path.exists() else {}

    def of(self, tenant: str) -> list[Pin]:
        return [pin for pin in self._pins.values() if pin.tenant == tenant]

    def get(self, pin_id: str, tenant: str) -> Pin:
        pin = self._pins.get(pin_id)
        if pin is None or pin.tenant != tenant:
            raise ChatError(ChatFailure.PIN_NOT_FOUND, f"no activation pin {pin_id!r}")
        return pin

    def add(self, pin: Pin) -> None:
        with self._lock:
            self._pins[pin.id] = pin
            self._save()

    def remove(self, pin_id: str) -> None:
        with self._lock:
            self._pins.pop(pin_id, None)
            self._save()

    def _save(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps([asdict(pin) for pin in self._pins.values()]))
        with open(temporary, "rb") as file:
            os.fsync(file.fileno())
        os.replace(temporary, self.path)
