"""Migrations: versioned, re-runnable, safe to run concurrently, never touching the
platform's tables unless asked for the reference copy."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from proactive_delivery_tools.cli import main
from proactive_delivery_tools.schema.migrate import MigrationError, apply_migrations, available_migrations


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables "
            "WHERE table_schema IN ('public', 'delivery')"
        ).fetchall()
    return {r[0] for r in rows}


def test_migrations_apply_once_and_rerun_is_a_noop(empty_database_url: str) -> None:
    # GIVEN an empty database
    # WHEN migrations run twice
    first = apply_migrations(empty_database_url)
    second = apply_migrations(empty_database_url)

    # THEN the first run applied every version and the second nothing
    assert first == [m.version for m in available_migrations()]
    assert second == []
    # AND only this project's schema exists: the platform's tables were not created
    tables = _tables(empty_database_url)
    assert {"delivery.message_state", "delivery.attempt_log", "delivery.schema_migrations"} <= tables
    assert not any(t.startswith("public.") for t in tables)


def test_concurrent_migration_runs_are_serialised(empty_database_url: str) -> None:
    # GIVEN four runners started at the same moment
    barrier = threading.Barrier(4)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(apply_migrations(empty_database_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    # THEN none failed, every version was applied exactly once, by one of them
    assert errors == []
    applied = [v for r in results for v in r]
    assert sorted(applied) == sorted(m.version for m in available_migrations())
    with psycopg.connect(empty_database_url) as conn:
        count = conn.execute("SELECT count(*) FROM delivery.schema_migrations").fetchone()
    assert count is not None and count[0] == len(available_migrations())


def test_edited_migration_is_refused(empty_database_url: str) -> None:
    # GIVEN an applied migration whose recorded checksum no longer matches the file
    apply_migrations(empty_database_url)
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE delivery.schema_migrations SET checksum = 'edited' WHERE version = '0001_delivery_state'"
        )

    # WHEN migrations run again THEN they refuse, naming the version
    with pytest.raises(MigrationError, match="0001_delivery_state"):
        apply_migrations(empty_database_url)


def test_reference_schema_only_on_request_and_never_in_a_deployed_stage(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    # GIVEN a deployed stage
    monkeypatch.setenv("STAGE", "prod")

    # WHEN an operator asks for the reference schema THEN the command refuses
    assert main(["--database-url", empty_database_url, "migrate", "--reference-schema"]) == 2
    assert "refused in stage 'prod'" in capsys.readouterr().err
    assert "public.ai_proactive_messages" not in _tables(empty_database_url)

    # WHEN the plain migrate command runs THEN it applies this project's schema only
    assert main(["--database-url", empty_database_url, "migrate"]) == 0
    assert "applied" in capsys.readouterr().out
    assert "public.ai_proactive_messages" not in _tables(empty_database_url)


def test_migrate_against_unreachable_database_is_one_clear_line(capsys: Any) -> None:
    # GIVEN a database URL nothing listens on
    # WHEN migrate runs THEN it exits non-zero with one line, no traceback
    assert main(["--database-url", "postgresql://postgres@127.0.0.1:1/none", "migrate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("proactive-delivery: error: cannot apply migrations")
    assert len(err.strip().splitlines()) == 1


def test_due_scan_uses_the_partial_index(conn: psycopg.Connection[Any]) -> None:
    # GIVEN a large state table where almost everything is already sent
    conn.execute(
        "INSERT INTO delivery.message_state (source, source_id, state) "
        "SELECT 'proactive', g, CASE WHEN g % 1000 = 0 THEN 'queued' ELSE 'sent' END "
        "FROM generate_series(1, 200000) g"
    )
    conn.execute("ANALYZE delivery.message_state")

    # WHEN the reconciliation sweep's predicate is planned
    plan = "\n".join(
        r[0]
        for r in conn.execute(
            "EXPLAIN SELECT id FROM delivery.message_state WHERE source = 'proactive' "
            "AND state IN ('pending', 'queued', 'sending') AND id > 0 ORDER BY id LIMIT 500"
        ).fetchall()
    )

    # THEN it is an index scan on the partial index of open rows
    assert "message_state_open_idx" in plan
    assert "Seq Scan" not in plan
