"""The platform's tables as found in a database, and every named query rendered for them:
the real schema (sql/reference/platform.sql), the seed document's minimal variant
(timestamptz, no timezone / sms_opt_in / follow-up recurrence columns), a deployment without
the follow-up table and one without the proactive table. Each rendered query is planned by
PostgreSQL (EXPLAIN), so a placeholder that renders to bad SQL fails here, not in a deploy."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import closing
from typing import Any

import psycopg
import pytest

from proactive_delivery.adapters.postgres.database import RUNTIME_SQL, Database, load_queries
from proactive_delivery.core.errors import ConfigError
from tests.support.db import DATABASE_TIMEZONE, VARIANTS


def planned(url: str, text: str) -> Any:
    params = dict.fromkeys(re.findall(r"%\((\w+)\)s", text))
    with psycopg.connect(url) as conn:
        return conn.execute("EXPLAIN " + text, params).fetchall()  # type: ignore[arg-type]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_query_renders_and_plans_on_each_platform_variant(
    platform_database: Callable[[str], str], variant: str
) -> None:
    # GIVEN a database with this variant of the platform's tables
    ddl, sources = VARIANTS[variant]
    url = platform_database(ddl)
    db = Database(lambda: url)
    # THEN the sources found are the ones whose table exists
    assert db.platform_schema().sources == sources
    # AND every query of those sources renders and PostgreSQL plans it
    absent = {"proactive", "followup"} - set(sources)
    checked = 0
    catalogs = [
        ("queries.sql", RUNTIME_SQL),
        ("operations.sql", "proactive_delivery_tools.ops.sql"),
        ("preferences.sql", "proactive_delivery_tools.ops.sql"),
    ]
    for filename, package in catalogs:
        queries = load_queries(filename, package)
        # Blocks included in others with {{> name}} are fragments, planned inside those.
        fragments = {m for text in queries.values() for m in re.findall(r"\{\{>\s*(\w+)\s*\}\}", text)}
        for name in queries:
            if name in fragments or any(name.endswith(f"_{s}") for s in absent):
                continue
            assert planned(url, db.sql(name, filename, package=package)), name
            checked += 1
    assert checked >= 15
    db.close()


def schema_of(url: str) -> Any:
    with closing(Database(lambda: url)) as db:
        return db.platform_schema()


def test_the_real_schema_has_every_optional_column(platform_database: Callable[[str], str]) -> None:
    schema = schema_of(platform_database(VARIANTS["real"][0]))
    for flag in ("action_items", "recurrence", "k.timezone", "k.sms_opt_in", "k.name", "f.sent_by"):
        assert schema.flag(flag), flag
    assert schema.type_of("ai_proactive_messages", "sent_at") == "timestamp without time zone"


def test_the_minimal_variant_has_none_of_them(platform_database: Callable[[str], str]) -> None:
    schema = schema_of(platform_database(VARIANTS["seed_minimal"][0]))
    for flag in ("action_items", "recurrence", "k.timezone", "k.sms_opt_in", "k.name", "f.sent_by"):
        assert not schema.flag(flag), flag
    assert schema.type_of("ai_proactive_messages", "sent_at") == "timestamp with time zone"


def test_a_database_without_the_platforms_tables_is_one_clear_error(
    platform_database: Callable[[str], str],
) -> None:
    # GIVEN a database with only this project's schema (a wrong DATABASE_URL)
    url = platform_database("SELECT 1")
    # THEN the first query says what is wrong, in one line
    with closing(Database(lambda: url)) as db, pytest.raises(ConfigError) as info:
        db.sql("claim_batch")
    assert "contractors" in str(info.value) and "\n" not in str(info.value)


def test_contractors_without_a_source_table_is_one_clear_error(
    platform_database: Callable[[str], str],
) -> None:
    url = platform_database(VARIANTS["real"][0].split("-- What follow-ups reference")[0])
    with pytest.raises(ConfigError) as info:
        schema_of(url)
    assert "ai_proactive_messages" in str(info.value)


def test_a_platform_timezone_is_written_into_the_conversions(platform_database: Callable[[str], str]) -> None:
    url = platform_database(VARIANTS["real"][0])
    with (
        closing(Database(lambda: url)) as db,
        closing(Database(lambda: url, platform_timezone="America/Chicago")) as local,
    ):
        utc, chicago = db.sql("enqueue_new_followup"), local.sql("enqueue_new_followup")
    assert "AT TIME ZONE 'UTC'" in utc
    assert "AT TIME ZONE 'America/Chicago'" in chicago


def test_naive_columns_are_compared_in_utc_whatever_the_session_zone(
    platform_database: Callable[[str], str],
) -> None:
    # GIVEN the real schema, a session 8 hours behind UTC, and follow-ups due one second ago
    # and one second ahead in naive UTC
    url = platform_database(VARIANTS["real"][0])
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SHOW timezone").fetchone() == (DATABASE_TIMEZONE,)
        conn.execute("INSERT INTO contractors (email) VALUES ('a@example.com')")
        for offset in (-1, 1):
            conn.execute(
                "INSERT INTO contractor_followup_schedules (contractor_id, scheduled_time, followup_type,"
                " message_template, status) VALUES"
                " (1, (now() AT TIME ZONE 'UTC') + make_interval(secs => %s), 'check_in', 'Hi', 'scheduled')",
                (offset,),
            )
    db = Database(lambda: url)
    # WHEN evaluate's page query runs
    [page] = db.fetch_all(
        db.sql("enqueue_new_followup"), {"source": "followup", "run_id": None, "after_id": 0, "page_size": 10}
    )
    # THEN only the one whose UTC time has come is due
    assert list(page["queued_ids"]) == [1]
    db.close()
