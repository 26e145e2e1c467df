"""Sample contractors and messages for the local demo and manual tests (reference schema)."""

from __future__ import annotations

import random
from dataclasses import dataclass

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


def seed(
    conn: psycopg.Connection[object], *, count: int = 100, contractors: int = 20, seed: int = 7
) -> SeedResult:
    """Insert `contractors` contractors (every tenth without a phone) and `count` unsent
    messages spread over them. Phones are from the 555-01xx range reserved for fiction."""
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
    return SeedResult(contractors=contractors, messages=count, without_phone=without_phone)
