"""PostgreSQL, the store several sidecar nodes share: URLs, connection pools and versioned schema migrations.

Rules this module keeps and its users follow:
- A store URL is `postgresql://user:password@host:port/database` (or `postgres://`); `redacted` is what logs,
  errors and `/readyz` show of it, never the password.
- Each package owns its schema as an ordered tuple of `Migration`s under a component name ("textual",
  "adapters"). `migrate` applies those a database lacks, each in its own transaction together with the row that
  records it, under a transaction-level advisory lock, so nodes that start together apply each migration once.
- Migrations are append-only: a released migration is never edited; a change of schema is a new version.
- Connections come from a `psycopg_pool.ConnectionPool`; a connection is used for one transaction and returned.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg_pool import ConnectionPool

SCHEMES = ("postgresql", "postgres")
# Key of the advisory lock that serializes `migrate` across nodes (any constant no other user of the database takes).
MIGRATION_LOCK = 0x6D656D73  # "mems"


# What "the server cannot be reached now" looks like to a caller: no connection from the pool, or one lost mid-way.
UNREACHABLE = (psycopg.OperationalError, psycopg.InterfaceError)  # PoolTimeout is an OperationalError


class StoreUnavailableError(ConnectionError):
    """The shared store's database server cannot be reached now: the operation changed nothing (or committed and
    its answer was lost). It works again, with nothing to do, once the server is back. `store`: the redacted URL."""

    def __init__(self, store: str, reason: str) -> None:
        super().__init__(f"the shared store {store} cannot be reached ({reason}); reads and writes that need it fail "
                         f"until it is back, then work again by themselves: retry later")
        self.store = store
        self.reason = reason


@contextmanager
def reaching(url: str) -> Iterator[None]:
    """Turn the server being unreachable inside the block into `StoreUnavailableError` naming `url` (redacted)."""
    try:
        yield
    except UNREACHABLE as exc:
        raise StoreUnavailableError(redacted(url), f"{type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class Migration:
    """One step of a component's schema: applied once, in `version` order, in one transaction."""

    version: int
    description: str
    sql: str


def check_url(url: str) -> str:
    """`url` if it names a PostgreSQL database; else ValueError saying what a store URL looks like."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname or not parts.path.strip("/"):
        raise ValueError(f"store URL {redacted(url)!r} is not postgresql://user:password@host:port/database")
    return url


def redacted(url: str) -> str:
    """`url` with its password replaced by `***` (for logs and errors)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def open_pool(url: str, *, name: str, min_size: int = 1, max_size: int = 8,
              connect_timeout_s: float = 5.0) -> ConnectionPool:
    """A pool of connections to `url`. It opens without waiting for the server, so a node starts while PostgreSQL
    is down; a caller that gets no connection within `connect_timeout_s` sees `psycopg_pool.PoolTimeout`. Each
    connection is checked as it leaves the pool, so one the server dropped (a restart) is replaced, not handed out."""
    check_url(url)
    return ConnectionPool(url, min_size=min_size, max_size=max_size, name=name, timeout=connect_timeout_s,
                          kwargs={"connect_timeout": max(1, int(connect_timeout_s))}, open=True,
                          check=ConnectionPool.check_connection)


def migrate(connection: psycopg.Connection, component: str, migrations: Sequence[Migration]) -> list[int]:
    """Apply the migrations of `component` that the database lacks, in version order; returns their versions.
    Each runs in its own transaction with the row that records it, so a crash leaves whole migrations only."""
    _check_order(component, migrations)
    applied = []
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        connection.execute("CREATE TABLE IF NOT EXISTS schema_migrations (component text NOT NULL, "
                           "version integer NOT NULL, description text NOT NULL, "
                           "applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (component, version))")
    for migration in migrations:
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            done = connection.execute("SELECT 1 FROM schema_migrations WHERE component = %s AND version = %s",
                                      (component, migration.version)).fetchone()
            if done:
                continue
            connection.execute(migration.sql)
            connection.execute("INSERT INTO schema_migrations (component, version, description) VALUES (%s, %s, %s)",
                               (component, migration.version, migration.description))
            applied.append(migration.version)
    return applied


def schema_version(connection: psycopg.Connection, component: str) -> int:
    """The highest migration of `component` applied to the database; 0 when none is (or no table exists yet)."""
    exists = connection.execute("SELECT to_regclass('schema_migrations')").fetchone()[0]
    if exists is None:
        return 0
    row = connection.execute("SELECT max(version) FROM schema_migrations WHERE component = %s",
                             (component,)).fetchone()
    return row[0] or 0


def _check_order(component: str, migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"{component} migrations must be numbered 1, 2, ... in order; got {versions}")
