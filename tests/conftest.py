"""Shared fixtures.

PostgreSQL: a migrated template database is built once per session (this project's
migrations plus the reference copy of the platform's tables), then every test gets its own
database created from it with CREATE DATABASE ... TEMPLATE (milliseconds), reached through
the standard PG* variables (defaults: 127.0.0.1:5432, user postgres). `make test` starts a
throwaway cluster when none is reachable. Never SQLite, never a mock of the database.

Time. Nothing may depend on the server's or the process's time zone, so the whole suite
runs with neither at UTC: every test database has `ALTER DATABASE ... SET timezone` to a
zone west of UTC (with DST), and the test process (and what it starts) runs with TZ set to
a zone east of UTC. The platform's naive timestamps are written as UTC explicitly.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from proactive_delivery_tools.local.postgres import url_from_environment
from proactive_delivery_tools.schema.migrate import apply_migrations
from tests.support.db import DATABASE_TIMEZONE, PROCESS_TIMEZONE
from tests.support.policy import SIGNING_SECRET


def pytest_configure(config: pytest.Config) -> None:
    os.environ["TZ"] = PROCESS_TIMEZONE
    time.tzset()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier == "integration":
            item.add_marker(pytest.mark.integration)
        elif tier == "e2e":
            item.add_marker(pytest.mark.e2e)


def _conninfo(dbname: str) -> str:
    return url_from_environment(dbname)


def _admin() -> psycopg.Connection[Any]:
    return psycopg.connect(
        _conninfo(os.environ.get("PGDATABASE", "postgres")), autocommit=True, connect_timeout=5
    )


@pytest.fixture(scope="session")
def template_database() -> Iterator[str]:
    from proactive_delivery_tools.schema.migrate import apply_migrations

    name = f"pd_template_{os.getpid()}"
    try:
        admin = _admin()
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable through the PG* variables ({exc}); run `make test`")
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    apply_migrations(_conninfo(name), reference_schema=True)
    yield name
    with _admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(template_database: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"pd_test_{uuid.uuid4().hex[:12]}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
        # Database settings are not copied from a template: set the session zone per database.
        admin.execute(f"ALTER DATABASE \"{name}\" SET timezone = '{DATABASE_TIMEZONE}'")
    url = _conninfo(name)
    monkeypatch.setenv("PD_TEST_DATABASE_URL", url)
    yield url
    with _admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def platform_database() -> Iterator[Callable[[str], str]]:
    """A database with the given platform DDL and this project's migrations."""
    names: list[str] = []

    def make(ddl: str) -> str:
        name = f"pd_variant_{uuid.uuid4().hex[:12]}"
        names.append(name)
        with _admin() as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
            admin.execute(f"ALTER DATABASE \"{name}\" SET timezone = '{DATABASE_TIMEZONE}'")
        url = _conninfo(name)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(ddl)  # type: ignore[arg-type]
        apply_migrations(url)
        return url

    yield make
    with _admin() as admin:
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_database_url() -> Iterator[str]:
    """A database with nothing in it (migration tests)."""
    name = f"pd_empty_{uuid.uuid4().hex[:12]}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield _conninfo(name)
    with _admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def make_contractor(conn: psycopg.Connection[Any]) -> Callable[..., int]:
    """A row of the platform's contractors table. Phones default to valid E.164 numbers in
    the range reserved for fiction (312-555-01xx); pass `phone` as the platform stores it
    ("(312) 555-0142") to test normalisation. The platform requires a unique email."""
    counter = iter(range(1, 10_000_000))

    def make(
        first_name: str | None = "Ana",
        phone: str | None = "default",
        email: str = "default",
        *,
        last_name: str | None = None,
        name: str | None = None,
        timezone: str | None = None,
        sms_opt_in: bool | None = None,
    ) -> int:
        n = next(counter)
        if phone == "default":
            phone = f"+1312555{100 + n % 100:04d}"
        if email == "default":
            email = f"contractor{n}@example.com"
        row = conn.execute(
            "INSERT INTO contractors (first_name, last_name, name, phone, email, timezone, sms_opt_in)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (first_name, last_name, name, phone, email, timezone, sms_opt_in),
        ).fetchone()
        assert row is not None
        return int(row[0])

    return make


@pytest.fixture
def make_message(conn: psycopg.Connection[Any], make_contractor: Callable[..., int]) -> Callable[..., int]:
    """A row of ai_proactive_messages as the platform writes it: created_at/updated_at are
    naive UTC (written explicitly, whatever the session's TimeZone); created_offset_seconds
    None leaves created_at NULL, as the nullable column allows."""

    def make(
        contractor_id: int | None = None,
        content: str = "Hi Ana, how did this week's bids go?",
        message_type: str = "check_in",
        created_offset_seconds: int | None = -60,
    ) -> int:
        if contractor_id is None:
            contractor_id = make_contractor()
        row = conn.execute(
            "INSERT INTO ai_proactive_messages (contractor_id, message_type, message_content, ai_reasoning,"
            " context_data, created_at, updated_at) VALUES (%s, %s, %s, 'why', '{}'::jsonb,"
            " (now() AT TIME ZONE 'UTC') + make_interval(secs => %s), now() AT TIME ZONE 'UTC')"
            " RETURNING id",
            (contractor_id, message_type, content, created_offset_seconds),
        ).fetchone()
        assert row is not None
        return int(row[0])

    return make


@pytest.fixture
def make_followup(conn: psycopg.Connection[Any], make_contractor: Callable[..., int]) -> Callable[..., int]:
    """A row of contractor_followup_schedules as the platform's inserts write it: status,
    created_at and updated_at always given (the table has no defaults), naive UTC times."""

    def make(
        contractor_id: int | None = None,
        template: str | None = "Hi {first_name}, checking in on your bids.",
        offset_seconds: float = -60,
        status: str | None = "scheduled",
        followup_type: str = "check_in",
        *,
        action_item_id: int | None = None,
        skip_if_completed: bool | None = None,
        is_recurring: bool | None = None,
        recurrence_interval_days: int | None = None,
    ) -> int:
        if contractor_id is None:
            contractor_id = make_contractor()
        row = conn.execute(
            "INSERT INTO contractor_followup_schedules (contractor_id, scheduled_time, followup_type,"
            " message_template, message_tone, status, action_item_id, skip_if_completed, is_recurring,"
            " recurrence_interval_days, ai_should_personalize, created_at, updated_at)"
            " VALUES (%s, (now() AT TIME ZONE 'UTC') + make_interval(secs => %s), %s, %s, 'friendly', %s,"
            " %s, %s, %s, %s, false, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC') RETURNING id",
            (
                contractor_id,
                offset_seconds,
                followup_type,
                template,
                status,
                action_item_id,
                skip_if_completed,
                is_recurring,
                recurrence_interval_days,
            ),
        ).fetchone()
        assert row is not None
        return int(row[0])

    return make


@pytest.fixture
def make_messages(make_message: Callable[..., int]) -> Callable[[int], list[int]]:
    return lambda n: [make_message() for _ in range(n)]


@pytest.fixture
def signing_secret() -> str:
    return SIGNING_SECRET


@pytest.fixture
def pipeline(monkeypatch: pytest.MonkeyPatch, database_url: str, signing_secret: str) -> Iterator[Any]:
    from tests.pipeline import running_pipeline

    with running_pipeline(monkeypatch, database_url, signing_secret) as p:
        yield p
