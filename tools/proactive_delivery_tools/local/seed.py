"""Sample contractors and messages for the local demo and manual tests, on the platform's
real tables (sql/reference/platform.sql): naive-UTC timestamps, phones stored as people
typed them, names sometimes only in `name`, the platform's own sms_opt_in and timezone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import psycopg

from proactive_delivery_tools.local.twilio import Handset

FIRST_NAMES = ["Ana", "Ben", "Chloe", "Dev", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jade", "Kofi", "Lena"]
LAST_NAMES = ["Silva", "Okafor", "Martin", "Patel", "Cohen", "Haddad", "Berg", "Sato", "Petrov", "Lee"]
# The platform's CHECK on ai_proactive_messages.message_type.
MESSAGE_TYPES = [
    "check_in",
    "milestone_follow_up",
    "resource_suggestion",
    "encouragement",
    "course_correction",
    "celebration",
]
TEXTS = [
    "Hi {name}, how did this week's bids go? Reply with a number 1-5.",
    "{name}, you closed 3 jobs this month - that's a personal best!",
    "Quick tip, {name}: follow up on open estimates within 48 hours.",
    "{name}, we haven't heard from you in a while. Anything we can help with?",
    # As long as the platform's AI-written check-ins often are: one GSM-7 segment as typed,
    # two once an apostrophe is a curly one.
    "Hi {name}, great work on the Miller bathroom remodel - the client's review mentioned how"
    " clean you left the site. Want to set a goal for next month?",
]
# Phones as the platform stores them: as entered. 555-0100..0199 is reserved for fiction.
PHONE_FORMATS = ["({area}) 555-{line}", "{area}.555.{line}", "+1 {area} 555 {line}", "{area}-555-{line}"]


@dataclass(frozen=True)
class SeedResult:
    contractors: int
    messages: int
    without_phone: int
    followups: int = 0
    preferences: int = 0


@dataclass(frozen=True)
class ScenarioContractor:
    """A contractor of the way-back scenario: their number as the platform stores it and as
    Twilio writes it, their channel order, what the Twilio stand-in's handset at that number
    does, their one message of the first pass, and the message the platform writes them
    once what came back is applied (None: none)."""

    key: str
    first_name: str
    last_name: str
    phone: str
    e164: str
    channels: tuple[str, ...]
    handset: Handset
    first: tuple[str, str]
    next: tuple[str, str] | None

    @property
    def email(self) -> str:
        return f"{self.first_name.lower()}.{self.key}@example.com"


# The way back in the demo (docs/local-runtime.md, "What comes back"): one contractor replies
# STOP, one answers a check-in, one number is a landline. Area code 415, so no sample
# contractor (312) shares their number; 555-01xx is reserved for fiction.
INBOUND_SCENARIO: tuple[ScenarioContractor, ...] = (
    ScenarioContractor(
        "stop", "Noor", "Kaplan", "(415) 555-0181", "+14155550181", ("sms",), Handset(reply="STOP"),
        ("encouragement", "Noor, four jobs booked this month - keep that pace!"),
        ("resource_suggestion", "Quick tip, Noor: follow up on open estimates within 48 hours."),
    ),
    ScenarioContractor(
        "check_in", "Omar", "Reyes", "415.555.0182", "+14155550182", ("sms",),
        Handset(reply="4 - two bids out, one signed"),
        ("check_in", "Hi Omar, how did this week's bids go? Reply with a number 1-5."),
        None,
    ),
    ScenarioContractor(
        "landline", "Pia", "Novak", "415-555-0183", "+14155550183", ("sms", "email"), Handset(landline=True),
        ("celebration", "Pia, you closed 3 jobs this month - that's a personal best!"),
        ("check_in", "Hi Pia, how did this week's bids go? Reply with a number 1-5."),
    ),
)  # fmt: skip
# What the Twilio stand-in does at each scenario number (E.164, as the SMS channel sends To).
DEMO_HANDSETS: dict[str, Handset] = {c.e164: c.handset for c in INBOUND_SCENARIO}


def _insert_message(cur: psycopg.Cursor[object], contractor_id: int, message: tuple[str, str]) -> None:
    cur.execute(
        "INSERT INTO ai_proactive_messages (contractor_id, message_type, message_content, ai_reasoning,"
        " context_data, created_at, updated_at) VALUES (%s, %s, %s, 'sample reasoning', '{}'::jsonb,"
        " now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')",
        (contractor_id, message[0], message[1]),
    )


def seed_inbound_scenario(conn: psycopg.Connection[object]) -> int:
    """The scenario's contractors (quiet hours off, in their own channel order) and their one
    message each; how many messages."""
    with conn.cursor() as cur:
        for c in INBOUND_SCENARIO:
            cur.execute(
                "INSERT INTO contractors (first_name, last_name, name, phone, email, timezone,"
                " created_at, updated_at) VALUES (%s, %s, %s, %s, %s, 'America/Chicago',"
                " now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC') RETURNING id",
                (c.first_name, c.last_name, f"{c.first_name} {c.last_name}", c.phone, c.email),
            )
            row = cur.fetchone()
            assert row is not None
            contractor_id = int(row[0])  # type: ignore[index]
            cur.execute(
                "INSERT INTO delivery.contractor_preferences (contractor_id, channels, timezone, quiet_start,"
                " quiet_end) VALUES (%s, %s, 'America/Chicago', '00:00', '00:00')"
                " ON CONFLICT (contractor_id) DO NOTHING",
                (contractor_id, list(c.channels)),
            )
            _insert_message(cur, contractor_id, c.first)
    return len(INBOUND_SCENARIO)


# A scenario contractor to whom what they stand for came back (their STOP applied: SMS opted
# out; their number reported a landline: SMS suppressed), who has had only their first message.
_NEXT_MESSAGE_TO = """
SELECT c.id FROM contractors c
JOIN delivery.contractor_preferences p ON p.contractor_id = c.id
WHERE c.email = %(email)s
  AND CASE %(key)s WHEN 'stop' THEN coalesce((p.opt_out_sources -> 'sms' ->> 'opted_out')::boolean, false)
                   WHEN 'landline' THEN p.suppressed_channels ? 'sms'
                   ELSE false END
  AND (SELECT count(*) FROM ai_proactive_messages m WHERE m.contractor_id = c.id) = 1
ORDER BY c.id
LIMIT 1
"""


def write_next_messages(conn: psycopg.Connection[object]) -> list[str]:
    """What the platform writes once the scenario's first messages came back: the next
    message to the contractor whose STOP was applied and to the one whose number came back a
    landline. Only for scenario contractors (the sample's e-mail addresses) to whom that
    happened and who have had exactly their first message, so a second call writes nothing;
    the keys of the contractors written to."""
    written: list[str] = []
    with conn.cursor() as cur:
        for c in INBOUND_SCENARIO:
            if c.next is None:
                continue
            row = cur.execute(_NEXT_MESSAGE_TO, {"email": c.email, "key": c.key}).fetchone()
            if row is None:
                continue
            _insert_message(cur, int(row[0]), c.next)  # type: ignore[index]
            written.append(c.key)
    return written


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


def phone_for(i: int) -> str:
    return PHONE_FORMATS[i % len(PHONE_FORMATS)].format(area="312", line=f"{100 + i % 100:04d}")


def seed_preferences_and_followups(
    conn: psycopg.Connection[object], contractor_ids: list[int], *, followups: int = 10
) -> tuple[int, int]:
    """Preferences for the demo: contractors in several time zones and on every channel, one
    opted out, one in its quiet hours now; and follow-ups as the platform writes them: due
    ones (one recurring weekly, one whose action item is completed, one with a placeholder
    only the platform's AI could fill), and one cancelled."""
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
        first = contractor_ids[0]
        cur.execute(
            "INSERT INTO contractor_action_items (contractor_id, title, status, completed_at)"
            " VALUES (%s, 'Send the revised estimate', 'completed', now() AT TIME ZONE 'UTC') RETURNING id",
            (first,),
        )
        done = cur.fetchone()
        assert done is not None
        plan: list[tuple[int, str, str, str, int | None, bool, int | None]] = []
        for n in range(followups):
            contractor = contractor_ids[n % len(contractor_ids)]
            template = "Hi {first_name}, did the customer get back to you about the estimate?"
            status, item, recurring, every = "scheduled", None, False, None
            if n == 0:
                status = "cancelled"
            elif n == 1:
                recurring, every = True, 7
            elif n == 2:
                item = int(done[0])  # type: ignore[index]
            elif n == 3:
                template = "Hi {first_name}, {partner_name} can help with that. Book a call: {demo_time}"
            plan.append((contractor, "check_in", template, status, item, recurring, every))
        # The platform's inserts give status, created_at and updated_at (there are no
        # defaults); its timestamps are naive UTC.
        cur.executemany(
            "INSERT INTO contractor_followup_schedules (contractor_id, scheduled_time, followup_type,"
            " message_template, message_tone, status, action_item_id, skip_if_completed, is_recurring,"
            " recurrence_interval_days, ai_should_personalize, created_at, updated_at)"
            " VALUES (%s, (now() AT TIME ZONE 'UTC') - interval '1 minute', %s, %s, 'friendly', %s, %s,"
            " %s::integer IS NOT NULL, %s, %s, false, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')",
            [(c, t, tpl, st, item, item, rec, every) for c, t, tpl, st, item, rec, every in plan],
        )
    return len(rows), len(plan)


def seed(
    conn: psycopg.Connection[object],
    *,
    count: int = 100,
    contractors: int = 20,
    seed: int = 7,
    inbound_scenario: bool = False,
) -> SeedResult:
    """Insert `contractors` contractors (every tenth without a phone, one with SMS turned
    off on the platform, some known only by `name`) and `count` unsent messages spread
    over them. With `inbound_scenario` (and count >= 3), three of the `count` messages are
    the way-back scenario's, to three contractors of its own (INBOUND_SCENARIO)."""
    if count < 0 or contractors < 1:
        raise ValueError("seed needs count >= 0 and at least one contractor")
    scenario = inbound_scenario and count >= len(INBOUND_SCENARIO)
    if scenario:
        count -= len(INBOUND_SCENARIO)
    rng = random.Random(seed)  # noqa: S311 - sample data, not security  # nosec B311
    without_phone = 0
    ids: list[int] = []
    names: list[str] = []
    with conn.cursor() as cur:
        for i in range(contractors):
            first = FIRST_NAMES[i % len(FIRST_NAMES)]
            last = LAST_NAMES[i % len(LAST_NAMES)]
            phone = None if i % 10 == 9 else phone_for(i)
            without_phone += phone is None
            # Some sign-up paths fill only `name`.
            only_full_name = i % 7 == 5
            cur.execute(
                "INSERT INTO contractors (first_name, last_name, name, phone, email, timezone, sms_opt_in,"
                " created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s,"
                " now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC') RETURNING id",
                (
                    None if only_full_name else first,
                    None if only_full_name else last,
                    f"{first} {last}",
                    phone,
                    f"{first.lower()}.{i}@example.com",
                    DEMO_ZONES[i % len(DEMO_ZONES)] if i % 3 == 0 else None,
                    False if i == 4 else None,
                ),
            )
            row = cur.fetchone()
            assert row is not None
            ids.append(int(row[0]))  # type: ignore[index]
            names.append(first)
        rows = []
        for _ in range(count):
            index = rng.randrange(len(ids))
            rows.append(
                (
                    ids[index],
                    rng.choice(MESSAGE_TYPES),
                    rng.choice(TEXTS).format(name=names[index]),
                    "sample reasoning",
                )
            )
        cur.executemany(
            "INSERT INTO ai_proactive_messages (contractor_id, message_type, message_content, ai_reasoning,"
            " context_data, created_at, updated_at) VALUES (%s, %s, %s, %s, '{}'::jsonb,"
            " now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')",
            rows,
        )
    preferences, followups = seed_preferences_and_followups(conn, ids)
    extra = seed_inbound_scenario(conn) if scenario else 0
    return SeedResult(
        contractors=contractors + extra,
        messages=len(rows) + extra,
        without_phone=without_phone,
        followups=followups,
        preferences=preferences + extra,
    )
