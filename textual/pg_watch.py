"""Following a shared PostgreSQL record store: `LISTEN` for change notifications, and knowing when it is down.

`ChangeWatcher` runs one daemon thread with one connection of its own (outside the pool, in autocommit, doing
`LISTEN` on `CHANNEL`). Writers send `pg_notify(CHANNEL, "<seq> <tenant>")` in their transaction; PostgreSQL delivers
it on commit. Rules:
- On every (re)connection, and every `POLL_S` without a notification, the watcher reports every tenant's newest seq
  (one query), so a notification lost while disconnected delays a change by at most `POLL_S`, never loses it.
- The watcher's connection is the store's health check: while it cannot connect, `outage` says why, and the store
  fails operations at once instead of waiting for the pool. It reconnects by itself, backing off from
  `RETRY_MIN_S` to `RETRY_MAX_S`.
- Listeners run on the watcher's thread: they must be quick and never raise (an exception is logged).
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

import psycopg

from memcore.postgres import redacted
from textual.record_store import ChangeListener

log = logging.getLogger("memsidecar.memory")
CHANNEL = "textual_changes"
POLL_S = 5.0
WAIT_S = 0.5  # how long one wait for notifications lasts (the thread checks for `stop` in between)
RETRY_MIN_S, RETRY_MAX_S = 0.2, 2.0

VersionsQuery = Callable[[psycopg.Connection], list[tuple[str, int]]]


def payload(tenant: str, seq: int) -> str:
    """The notification a write of `tenant` up to `seq` sends (tenant ids hold no space)."""
    return f"{seq} {tenant}"


def parse_payload(text: str) -> tuple[str, int] | None:
    seq, _, tenant = text.partition(" ")
    return (tenant, int(seq)) if seq.isdigit() and tenant else None


class ChangeWatcher:
    """Reports a shared store's changes to a listener and tracks whether the server answers."""

    def __init__(self, url: str, listener: ChangeListener, versions: VersionsQuery) -> None:
        self.url = url
        self.listener = listener
        self.versions = versions
        self._outage: str | None = None  # the store was reached when it opened
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def outage(self) -> str | None:
        return self._outage

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="textual-change-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        delay = RETRY_MIN_S
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=2, keepalives_idle=5,
                                     keepalives_interval=2, keepalives_count=2) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    self._report_all(connection)
                    if self._outage is not None:
                        log.info("memory store %s is reachable", redacted(self.url))
                    self._outage, delay = None, RETRY_MIN_S
                    self._follow(connection)
            except psycopg.Error as exc:
                if self._outage is None:
                    log.warning("memory store %s is unreachable: %s", redacted(self.url), exc)
                self._outage = f"{type(exc).__name__}: {str(exc).strip() or 'connection failed'}"
                self._stop.wait(delay)
                delay = min(RETRY_MAX_S, delay * 2)

    def _follow(self, connection: psycopg.Connection) -> None:
        idle = 0.0
        while not self._stop.is_set():
            heard = False
            for notify in connection.notifies(timeout=WAIT_S):
                heard = True
                parsed = parse_payload(notify.payload)
                if parsed is not None:
                    self._tell(*parsed)
            idle = 0.0 if heard else idle + WAIT_S
            if idle >= POLL_S:
                self._report_all(connection)
                idle = 0.0

    def _report_all(self, connection: psycopg.Connection) -> None:
        for tenant, seq in self.versions(connection):
            self._tell(tenant, seq)

    def _tell(self, tenant: str, seq: int) -> None:
        try:
            self.listener(tenant, seq)
        except Exception:  # a listener's fault must not stop the watching; logged with its traceback
            log.exception("change listener failed for tenant %s at seq %d", tenant, seq)
