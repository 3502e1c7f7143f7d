"""Console sign-in sessions, held in the sidecar's memory only.

A session maps a random id (the only thing in the browser's cookie) to the API key it was opened with, the key's
tenant, a CSRF token that every form must echo, and the playground's conversation. The key never leaves this
process: not in a cookie, a URL, a page or a log line. Sessions end on sign-out, after `ttl_s` idle, or when the
sidecar restarts (the user signs in again). At most `max_sessions` live at once; the least recently used goes first.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

MAX_PLAYGROUND_TURNS = 50


@dataclass
class PlaygroundTurn:
    """One exchange in the playground and what memory did for it."""

    user_id: str
    message: str
    reply: str
    injected: list[dict[str, Any]]
    memory_tokens: int
    prompt_tokens: int
    cached_tokens: int | None


@dataclass
class ConsoleSession:
    id: str
    key: str = field(repr=False)
    tenant: str
    csrf: str = field(repr=False)
    last_seen: float
    turns: list[PlaygroundTurn] = field(default_factory=list)
    flash: str | None = None

    def add_turn(self, turn: PlaygroundTurn) -> None:
        self.turns = [*self.turns, turn][-MAX_PLAYGROUND_TURNS:]

    def take_flash(self) -> str | None:
        message, self.flash = self.flash, None
        return message


class SessionStore:
    """Live console sessions by id; thread-safe."""

    def __init__(self, ttl_s: float = 8 * 3600, max_sessions: int = 1000,
                 clock: Callable[[], float] = time.time) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: OrderedDict[str, ConsoleSession] = OrderedDict()
        self._lock = threading.Lock()

    def create(self, key: str, tenant: str) -> ConsoleSession:
        session = ConsoleSession(secrets.token_urlsafe(32), key, tenant, secrets.token_urlsafe(32), self._clock())
        with self._lock:
            self._sessions[session.id] = session
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> ConsoleSession | None:
        """The live session with this id (its idle clock restarts), or None."""
        if not session_id:
            return None
        now = self._clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if now - session.last_seen > self.ttl_s:
                del self._sessions[session_id]
                return None
            session.last_seen = now
            self._sessions.move_to_end(session_id)
            return session

    def end(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._sessions)
