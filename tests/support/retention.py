"""Rows of our own, aged on purpose, and fingerprints of the tables the purge must not touch:
what the retention tests build and compare."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

# The platform's tables of the reference schema (the purge may only read them).
PLATFORM_TABLES = (
    "contractors",
    "contractor_action_items",
    "events",
    "ai_proactive_messages",
    "contractor_followup_schedules",
)


def finished_row(
    conn: psycopg.Connection[Any],
    source: str,
    source_id: int,
    state: str,
    *,
    days_ago: float,
    attempts: int = 0,
    reason: str | None = None,
) -> int:
    """A row of delivery.message_state that reached `state` `days_ago` days ago (updated_at),
    with `attempts` rows of attempt_log from that time. Open states are allowed too: a
    'sending' row carries a lease, as the table requires."""
    row = conn.execute(
        "INSERT INTO delivery.message_state (source, source_id, state, reason, attempts, queued_at,"
        " sent_at, lease_expires_at, created_at, updated_at)"
        " SELECT %(source)s, %(source_id)s, %(state)s, %(reason)s, %(attempts)s, t, "
        " CASE WHEN %(state)s = 'sent' THEN t END, CASE WHEN %(state)s = 'sending' THEN t END, t, t"
        " FROM (SELECT now() - make_interval(secs => %(seconds)s) AS t) w RETURNING id",
        {
            "source": source,
            "source_id": source_id,
            "state": state,
            "reason": reason,
            "attempts": attempts,
            "seconds": days_ago * 86400,
        },
    ).fetchone()
    assert row is not None
    delivery_id = int(row[0])
    conn.execute(
        "INSERT INTO delivery.attempt_log (delivery_id, attempt, channel, started_at, finished_at, outcome)"
        " SELECT %(id)s, n, 'sms', s.updated_at, s.updated_at, 'retry'"
        " FROM generate_series(1, %(attempts)s) n, delivery.message_state s WHERE s.id = %(id)s",
        {"id": delivery_id, "attempts": attempts},
    )
    return delivery_id


def age_delivery_rows(conn: psycopg.Connection[Any], days: float) -> None:
    """Move every row of ours `days` back in time, as if it had been written then."""
    shift = {"secs": days * 86400}
    conn.execute(
        "UPDATE delivery.message_state SET updated_at = updated_at - make_interval(secs => %(secs)s),"
        " created_at = created_at - make_interval(secs => %(secs)s)",
        shift,
    )
    conn.execute(
        "UPDATE delivery.attempt_log SET started_at = started_at - make_interval(secs => %(secs)s),"
        " finished_at = finished_at - make_interval(secs => %(secs)s)",
        shift,
    )


def table_fingerprint(conn: psycopg.Connection[Any], table: str) -> list[str]:
    """Every row of `table` with its system columns: the values byte for byte, and ctid, xmin
    and xmax, so an update to the same values, a delete and re-insert, or a row lock taken by
    anyone all show as a difference."""
    query = sql.SQL("SELECT concat_ws('|', t.ctid, t.xmin, t.xmax, t::text) FROM {} t ORDER BY 1").format(
        sql.Identifier(*table.split("."))
    )
    return [str(r[0]) for r in conn.execute(query).fetchall()]


def fingerprints(conn: psycopg.Connection[Any], tables: Sequence[str]) -> dict[str, list[str]]:
    return {table: table_fingerprint(conn, table) for table in tables}


def delivery_ids(conn: psycopg.Connection[Any]) -> set[int]:
    return {int(r[0]) for r in conn.execute("SELECT id FROM delivery.message_state").fetchall()}


def attempt_delivery_ids(conn: psycopg.Connection[Any]) -> list[int]:
    """The delivery id of every attempt_log row (one entry per row)."""
    return sorted(int(r[0]) for r in conn.execute("SELECT delivery_id FROM delivery.attempt_log").fetchall())


def inbound_event_row(
    conn: psycopg.Connection[Any],
    *,
    days_ago: float,
    action: str = "reply",
    outcome: str = "linked",
    kind: str = "sms.received",
    delivery_id: int | None = None,
    status: str | None = None,
    applied_at: Any = None,
) -> int:
    """A row of delivery.inbound_event the processor applied `days_ago` days ago (or at
    `applied_at`, a timestamptz, when given: a processor batch shares one)."""
    row = conn.execute(
        "INSERT INTO delivery.inbound_event (identity, kind, provider, received_at, occurred_at,"
        " applied_at, action, delivery_id, status, outcome)"
        " SELECT 'test:' || gen_random_uuid(), %(kind)s, 'twilio', t, t, t, %(action)s, %(delivery_id)s,"
        " %(status)s, %(outcome)s"
        " FROM (SELECT coalesce(%(at)s::timestamptz, now() - make_interval(secs => %(seconds)s)) AS t) w"
        " RETURNING id",
        {
            "kind": kind,
            "action": action,
            "delivery_id": delivery_id,
            "status": status,
            "outcome": outcome,
            "at": applied_at,
            "seconds": days_ago * 86400,
        },
    ).fetchone()
    assert row is not None
    return int(row[0])


def inbound_event_ids(conn: psycopg.Connection[Any]) -> set[int]:
    return {int(r[0]) for r in conn.execute("SELECT id FROM delivery.inbound_event").fetchall()}
