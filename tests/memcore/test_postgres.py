"""memcore.postgres against a real PostgreSQL server: URLs, and migrations applied once, in order, by racing nodes."""

from __future__ import annotations

import threading

import psycopg
import pytest

from memcore.postgres import Migration, check_url, migrate, open_pool, redacted, schema_version

STEPS = (Migration(1, "notes", "CREATE TABLE notes (id integer PRIMARY KEY, body text NOT NULL)"),
         Migration(2, "note tags", "ALTER TABLE notes ADD COLUMN tag text"))


def test_a_url_that_is_not_postgresql_is_refused_without_its_password():
    with pytest.raises(ValueError, match=r"postgresql://user:password@host:port/database") as refused:
        check_url("mysql://admin:hunter2@db/x")
    assert "hunter2" not in str(refused.value)
    with pytest.raises(ValueError):
        check_url("postgresql://host-only")
    assert check_url("postgres://u@h:5432/db") == "postgres://u@h:5432/db"


def test_redacted_hides_the_password_only():
    assert redacted("postgresql://app:s3cr%40t@db.internal:5432/mem") == "postgresql://app:***@db.internal:5432/mem"
    assert redacted("postgresql://app@db/mem") == "postgresql://app@db/mem"


def test_migrations_apply_once_in_order_and_record_their_version(postgres_url):
    with psycopg.connect(postgres_url) as connection:
        assert schema_version(connection, "demo") == 0
        assert migrate(connection, "demo", STEPS[:1]) == [1]
        assert migrate(connection, "demo", STEPS) == [2]
        assert migrate(connection, "demo", STEPS) == []
        assert schema_version(connection, "demo") == 2
        connection.execute("INSERT INTO notes VALUES (1, 'x', 'y')")


def test_a_failing_migration_leaves_the_database_at_the_previous_version(postgres_url):
    broken = (*STEPS, Migration(3, "broken", "ALTER TABLE missing ADD COLUMN x int"))
    with psycopg.connect(postgres_url) as connection:
        with pytest.raises(psycopg.errors.UndefinedTable):
            migrate(connection, "demo", broken)
        assert schema_version(connection, "demo") == 2


def test_misnumbered_migrations_are_refused_before_touching_the_database(postgres_url):
    with psycopg.connect(postgres_url) as connection, pytest.raises(ValueError, match="numbered 1, 2"):
        migrate(connection, "demo", (STEPS[1],))


def test_nodes_migrating_together_apply_each_migration_once(postgres_url):
    applied, errors = [], []

    def node() -> None:
        try:
            with psycopg.connect(postgres_url) as connection:
                applied.extend(migrate(connection, "demo", STEPS))
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=node) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and sorted(applied) == [1, 2]


def test_a_pool_opens_while_the_server_is_down_and_times_out_clearly(postgres_server):
    from psycopg_pool import PoolTimeout

    pool = open_pool(postgres_server.url_of("nowhere").replace(str(postgres_server.port), "1"), name="down",
                     connect_timeout_s=1)
    try:
        with pytest.raises(PoolTimeout), pool.connection():
            pass
    finally:
        pool.close()
