"""Reading what the pipeline wrote to a real PostgreSQL, and the platform schema variants the
tests run on."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row

from proactive_delivery_tools.schema.migrate import reference_schema_sql

ROOT: Final = Path(__file__).resolve().parents[2]

# Nothing may depend on the server's or the process's time zone, so the suite runs with
# neither at UTC: west of UTC with DST for the database sessions, east of UTC for the process.
DATABASE_TIMEZONE: Final = os.environ.get("PD_TEST_DATABASE_TIMEZONE", "America/Los_Angeles")
PROCESS_TIMEZONE: Final = os.environ.get("PD_TEST_PROCESS_TIMEZONE", "Asia/Tokyo")

MINIMAL: Final = (ROOT / "tests" / "fixtures" / "platform_seed_minimal.sql").read_text(encoding="utf-8")
REAL: Final = reference_schema_sql()
# The real schema without its follow-up table, and without its proactive table.
NO_FOLLOWUPS: Final = REAL.split("-- 21 columns")[0]
NO_PROACTIVE: Final = re.sub(
    r"-- The platform's own migration.*?(?=-- 21 columns)", "", REAL, flags=re.DOTALL
)

VARIANTS: Final = {
    "real": (REAL, ("proactive", "followup")),
    "seed_minimal": (MINIMAL, ("proactive", "followup")),
    "no_followup_table": (NO_FOLLOWUPS, ("proactive",)),
    "no_proactive_table": (NO_PROACTIVE, ("followup",)),
}


def states(conn: psycopg.Connection[Any]) -> dict[int, str]:
    rows = conn.execute(
        "SELECT source_id, state FROM delivery.message_state WHERE source = 'proactive'"
    ).fetchall()
    return {int(r[0]): str(r[1]) for r in rows}


def state_row(conn: psycopg.Connection[Any], source_id: int, source: str = "proactive") -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT * FROM delivery.message_state WHERE source = %s AND source_id = %s", (source, source_id)
        ).fetchone()
    assert row is not None, f"no delivery state for {source}-{source_id}"
    return row


def attempts(
    conn: psycopg.Connection[Any], source_id: int, source: str = "proactive"
) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT a.* FROM delivery.attempt_log a JOIN delivery.message_state s ON s.id = a.delivery_id "
            "WHERE s.source = %s AND s.source_id = %s ORDER BY a.id",
            (source, source_id),
        ).fetchall()


def platform_sent_at(conn: psycopg.Connection[Any], message_id: int) -> Any:
    """The platform row's sent_at (naive UTC on the real schema) as an aware datetime."""
    row = conn.execute(
        "SELECT sent_at AT TIME ZONE 'UTC' FROM ai_proactive_messages WHERE id = %s", (message_id,)
    ).fetchone()
    assert row is not None
    return row[0]


def preferences(conn: psycopg.Connection[Any], contractor_id: int) -> dict[str, Any] | None:
    """A contractor's row of delivery.contractor_preferences: opt-outs and suppressions."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT opted_out, opted_out_channels, opt_out_source, opt_out_sources, suppressed_channels"
            " FROM delivery.contractor_preferences WHERE contractor_id = %s",
            (contractor_id,),
        ).fetchone()


def sms_opt_in(conn: psycopg.Connection[Any], contractor_id: int) -> bool | None:
    """The platform's contractors.sms_opt_in."""
    row = conn.execute("SELECT sms_opt_in FROM contractors WHERE id = %s", (contractor_id,)).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan, depth first."""
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def operator_opts_out(database_url: str, contractor_id: int) -> None:
    """The operator's `proactive-delivery prefs set ID --opted-out`, through the real command."""
    from proactive_delivery_tools.cli import prefs as prefs_cli

    args = argparse.Namespace(
        prefs_command="set",
        contractor_id=contractor_id,
        channels=None,
        timezone=None,
        quiet_hours=None,
        max_per_day=None,
        opted_out=True,
    )
    assert prefs_cli.run(args, database_url) == 0
