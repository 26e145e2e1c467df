"""Sample contractors and messages for the local demo and manual tests (reference schema).

The reference tables grow as the project does; seed fills the columns and tables it finds:
contractors and ai_proactive_messages always; a time zone or preferred channel column on
contractors when there is one; contractor_followup_schedules when that table exists.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import psycopg

FIRST_NAMES = ["Ana", "Ben", "Chloe", "Dev", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jade", "Kofi", "Lena"]
MESSAGE_TYPES = ["check_in", "milestone", "win_celebration", "re_engagement", "tip"]
TEMPLATES = [
    "Hi {name}, how did this week's bids go? Reply with a number 1-5.",
    "{name}, you closed 3 jobs this month - that's a personal best!",
    "Quick tip, {name}: follow up on open estimates within 48 hours.",
    "{name}, we haven't heard from you in a while. Anything we can help with?",
]


TIME_ZONES = ["America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles", "Europe/London",
              "Asia/Kolkata", "Australia/Sydney"]  # fmt: skip
CHANNELS = ["sms", "sms", "email", "web_chat"]
FOLLOWUP_TYPES = ["estimate_follow_up", "check_in", "review_request"]


@dataclass(frozen=True)
class SeedResult:
    contractors: int
    messages: int
    without_phone: int
    followups: int = 0


def _columns(conn: psycopg.Connection[Any], table: str) -> set[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = %s",
        (table,),
    ).fetchall()
    return {str(r[0]) for r in rows}


def _first(columns: set[str], *names: str) -> str | None:
    return next((n for n in names if n in columns), None)


def seed(
    conn: psycopg.Connection[object], *, count: int = 100, contractors: int = 20, seed: int = 7
) -> SeedResult:
    """Insert `contractors` contractors (every tenth without a phone) and `count` unsent
    messages spread over them. Phones are from the 555-01xx range reserved for fiction."""
    if count < 0 or contractors < 1:
        raise ValueError("seed needs count >= 0 and at least one contractor")
    rng = random.Random(seed)  # noqa: S311 - sample data, not security  # nosec B311
    without_phone = 0
    ids: list[int] = []
    contractor_columns = _columns(conn, "contractors")
    tz_column = _first(contractor_columns, "timezone", "time_zone", "tz")
    channel_column = _first(contractor_columns, "preferred_channel", "channel")
    extra = [c for c in (tz_column, channel_column) if c]
    # Column names come from information_schema (see _columns), never from input.
    columns = ", ".join(["first_name", "phone", "email", *extra])
    markers = ", ".join(["%s"] * (3 + len(extra)))
    insert = f"INSERT INTO contractors ({columns}) VALUES ({markers}) RETURNING id"  # nosec B608
    with conn.cursor() as cur:
        for i in range(contractors):
            name = FIRST_NAMES[i % len(FIRST_NAMES)]
            phone = None if i % 10 == 9 else f"+1555010{i:04d}"[:12]
            without_phone += phone is None
            values: list[object] = [name, phone, f"{name.lower()}.{i}@example.com"]
            if tz_column:
                values.append(TIME_ZONES[i % len(TIME_ZONES)])
            if channel_column:
                values.append(CHANNELS[i % len(CHANNELS)])
            cur.execute(insert, values)
            row = cur.fetchone()
            assert row is not None
            ids.append(int(row[0]))  # type: ignore[index]
        rows = []
        for _ in range(count):
            index = rng.randrange(len(ids))
            name = FIRST_NAMES[index % len(FIRST_NAMES)]
            rows.append(
                (
                    ids[index],
                    rng.choice(MESSAGE_TYPES),
                    rng.choice(TEMPLATES).format(name=name),
                    "sample reasoning",
                )
            )
        cur.executemany(
            "INSERT INTO ai_proactive_messages (contractor_id, message_type, message_content, ai_reasoning, "
            "context_data) VALUES (%s, %s, %s, %s, '{}'::jsonb)",
            rows,
        )
    followups = _seed_followups(conn, ids, rng, count)
    return SeedResult(
        contractors=contractors, messages=count, without_phone=without_phone, followups=followups
    )


def _seed_followups(conn: psycopg.Connection[Any], ids: list[int], rng: random.Random, count: int) -> int:
    """Follow-ups due now and later, when the reference table exists (a later migration)."""
    columns = _columns(conn, "contractor_followup_schedules")
    if not {"contractor_id", "scheduled_time"} <= columns:
        return 0
    message_column = _first(columns, "message", "message_content", "message_text")
    type_column = _first(columns, "followup_type", "type", "follow_up_type")
    names = ["contractor_id", "scheduled_time", *(c for c in (message_column, type_column) if c)]
    rows = []
    for n in range(max(1, count // 4)):
        # Every third one is due in an hour: the next evaluate run must leave it alone.
        row: list[object] = [ids[rng.randrange(len(ids))], "1 hour" if n % 3 == 2 else "-5 minutes"]
        if message_column:
            row.append("Did the customer accept your estimate? Reply YES or NO.")
        if type_column:
            row.append(FOLLOWUP_TYPES[n % len(FOLLOWUP_TYPES)])
        rows.append(row)
    placeholders = ", ".join(["%s", "now() + %s::interval"] + ["%s"] * (len(names) - 2))
    with conn.cursor() as cur:
        # Column names come from information_schema (see _columns), never from input.
        sql = f"INSERT INTO contractor_followup_schedules ({', '.join(names)}) VALUES ({placeholders})"  # nosec B608
        cur.executemany(sql, rows)
    return len(rows)
