"""Sample contractors and messages for the local demo and manual tests (reference schema)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import psycopg

FIRST_NAMES = ["Ana", "Ben", "Chloe", "Dev", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jade", "Kofi", "Lena"]
MESSAGE_TYPES = ["check_in", "milestone", "win_celebration", "re_engagement", "tip"]
TEMPLATES = [
    "Hi {name}, how did this week's bids go? Reply with a number 1-5.",
    "{name}, you closed 3 jobs this month - that's a personal best!",
    "Quick tip, {name}: follow up on open estimates within 48 hours.",
    "{name}, we haven't heard from you in a while. Anything we can help with?",
]


@dataclass(frozen=True)
class SeedResult:
    contractors: int
    messages: int
    without_phone: int
    followups: int = 0
    preferences: int = 0


# Zones spread around the globe: at any hour some contractors are inside their quiet hours.
DEMO_ZONES = ["America/New_York", "America/Los_Angeles", "Europe/London", "Asia/Tokyo", "Australia/Sydney"]


def zone_in_quiet_hours(now: datetime | None = None) -> str:
    """A zone whose local time is inside 21:00-08:00 right now (there always is one)."""
    now = now or datetime.now(UTC)
    for offset in range(-11, 13):
        zone = f"Etc/GMT{-offset:+d}" if offset else "UTC"
        hour = now.astimezone(ZoneInfo(zone)).hour
        if hour >= 22 or hour < 7:
            return zone
    return "UTC"  # pragma: no cover - some zone is always at night


def seed_preferences_and_followups(
    conn: psycopg.Connection[object], contractor_ids: list[int], *, followups: int = 10
) -> tuple[int, int]:
    """Preferences for the demo: contractors in several time zones and on every channel, one
    opted out, one in its quiet hours now; and a few due follow-ups (one cancelled)."""
    channels = [["sms"], ["email", "sms"], ["web_chat", "sms"], ["sms", "email"]]
    quiet_zone = zone_in_quiet_hours()
    rows = []
    for n, contractor_id in enumerate(contractor_ids):
        zone = quiet_zone if n == 1 else DEMO_ZONES[n % len(DEMO_ZONES)]
        # Outside the demo's night contractor, quiet hours are off so the demo shows sends.
        start, end = ("21:00", "08:00") if n == 1 else ("00:00", "00:00")
        rows.append((contractor_id, channels[n % len(channels)], n == 2, zone, start, end))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO delivery.contractor_preferences (contractor_id, channels, opted_out, opted_out_at,"
            " opt_out_source, timezone, quiet_start, quiet_end) VALUES (%s, %s, %s,"
            " CASE WHEN %s THEN now() END, CASE WHEN %s THEN 'demo' END, %s, %s, %s)"
            " ON CONFLICT (contractor_id) DO NOTHING",
            [(c, ch, out, out, out, zone, start, end) for c, ch, out, zone, start, end in rows],
        )
        cur.executemany(
            "INSERT INTO contractor_followup_schedules (contractor_id, scheduled_time, followup_type,"
            " message_template, status) VALUES (%s, now() - interval '1 minute', %s, %s, %s)",
            [
                (
                    contractor_ids[n % len(contractor_ids)],
                    "estimate_follow_up",
                    "Hi {first_name}, did the customer get back to you about the estimate?",
                    "cancelled" if n == 0 else "scheduled",
                )
                for n in range(followups)
            ],
        )
    return len(rows), followups


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
    with conn.cursor() as cur:
        for i in range(contractors):
            name = FIRST_NAMES[i % len(FIRST_NAMES)]
            phone = None if i % 10 == 9 else f"+1555010{i:04d}"[:12]
            without_phone += phone is None
            cur.execute(
                "INSERT INTO contractors (first_name, phone, email) VALUES (%s, %s, %s) RETURNING id",
                (name, phone, f"{name.lower()}.{i}@example.com"),
            )
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
    preferences, followups = seed_preferences_and_followups(conn, ids)
    return SeedResult(
        contractors=contractors,
        messages=count,
        without_phone=without_phone,
        followups=followups,
        preferences=preferences,
    )
