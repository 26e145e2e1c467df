"""The inbound processor against PostgreSQL: events applied per second in batches of 10, and
SQL statements per batch for batches of 1, 5 and 10 (the same count whatever the size and
the mix of events: the statement is one per batch).

The processor is driven through its public surface only: functions/inbound_processor/app.py's
lambda_handler (logger context, tracing, metrics flushed per invocation), bound with
`.with_services()` to the services `bootstrap.build` makes from the benchmark's settings,
invoked with SQS event dicts built before the timed loop (the event source mapping builds
them, not the function). Its log and EMF lines are written to a scratch file, as in Lambda.

The database holds what deliver leaves behind: contractors, each with an SMS sent to them 10
minutes ago (its keyed phone hash on delivery.message_state and delivery.contractor_phone,
Twilio's MessageSid as its provider reference, sent_at on the platform's row). Each batch of
10 is a mix from as many contractors: 4 replies (each linked to its message, the platform's
response columns filled), 3 `delivered` receipts, a STOP, a START, a HELP. The events/s row
is information (a rate depends on the machine); the goal it is read against is 1,000 events/s.
Statements per batch are a target (a count: the services' statement counter, and
pg_stat_statements when it is loaded; the server's xact_commit is shown beside them, and
reads one higher per connection: psycopg prepares a statement server-side on its sixth
execution, which the server counts as a transaction);
every event applied once, and a replay of every batch changing nothing, are checks.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from proactive_delivery.bootstrap import Services, build
from proactive_delivery.core.inbound import (
    InboundEvent,
    MessageStatus,
    SmsReceived,
    twilio_message_identity,
    twilio_status_identity,
)
from proactive_delivery_tools.local.esm import LambdaContext

from .common import Run, StdoutBytes, batches, bench_settings, connect, conninfo, lambda_handler
from .statements import StatementCounter
from .table import Table

GOAL_EVENTS_PER_SECOND = 1_000
MAX_STATEMENTS_PER_BATCH = 1.0
SIZES = (1, 5, 10)
QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:bench-inbound"
# Per batch of 10: what each position carries.
MIX = ("reply", "reply", "reply", "reply", "receipt", "receipt", "receipt", "stop", "start", "help")


def phone_of(i: int) -> str:
    return f"+1312{200 + (i // 10000) % 800:03d}{i % 10000:04d}"


def seed_sent(url: str, services: Services, contractors: int) -> dict[int, tuple[str, str]]:
    """Contractors 1..n, each with one SMS sent 10 minutes ago as deliver records it; returns
    contractor -> (phone, Twilio MessageSid)."""
    sent: dict[int, tuple[str, str]] = {}
    hasher = services.phone_hasher
    with connect(url) as conn:
        conn.execute(
            "INSERT INTO contractors (id, first_name, phone, email) "
            "SELECT g, 'Ana',"
            " '(312) ' || (200 + (g / 10000) %% 800) || '-' || lpad((g %% 10000)::text, 4, '0'),"
            " 'contractor' || g || '@example.com' FROM generate_series(1, %s) g",
            (contractors,),
        )
        conn.execute(
            "INSERT INTO ai_proactive_messages (id, contractor_id, message_type, message_content,"
            " ai_reasoning, sent_at, created_at, updated_at)"
            " SELECT g, g, 'check_in', 'Hi Ana, how did the bids go?', 'why',"
            " (now() AT TIME ZONE 'UTC') - interval '10 minutes',"
            " (now() AT TIME ZONE 'UTC') - interval '1 hour', now() AT TIME ZONE 'UTC'"
            " FROM generate_series(1, %s) g",
            (contractors,),
        )
        rows = []
        for i in range(1, contractors + 1):
            phone, sid = phone_of(i), "SM" + hashlib.md5(str(i).encode(), usedforsecurity=False).hexdigest()
            sent[i] = (phone, sid)
            rows.append((i, i, sid, hasher.of_e164(phone)))
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO delivery.message_state (source, source_id, state, contractor_id, channel,"
                " provider_ref, sent_at, phone_hash) VALUES ('proactive', %s, 'sent', %s, 'sms', %s,"
                " now() - interval '10 minutes', decode(%s, 'hex'))",
                rows,
            )
            cur.executemany(
                "INSERT INTO delivery.contractor_phone (phone_hash, contractor_id, source)"
                " VALUES (decode(%s, 'hex'), %s, 'send')",
                [(h, c) for c, _, _, h in rows],
            )
        conn.execute("ANALYZE")
    return sent


def events_for(contractors: Sequence[int], sent: dict[int, tuple[str, str]]) -> list[InboundEvent]:
    """One event per contractor, MIX by position."""
    now = datetime.now(UTC)
    events = []
    for position, contractor in enumerate(contractors):
        phone, sid = sent[contractor]
        what = MIX[position % len(MIX)]
        if what == "receipt":
            data: Any = MessageStatus(None, sid, "delivered", None, "twilio")
            events.append(InboundEvent(twilio_status_identity(sid, "delivered", None), now, data))
            continue
        text = {"reply": "Yes, Thursday works", "stop": "STOP", "start": "START", "help": "HELP"}[what]
        inbound_sid = "SM" + uuid.uuid4().hex
        events.append(
            InboundEvent(
                twilio_message_identity(inbound_sid), now, SmsReceived(phone, text, "twilio", inbound_sid)
            )
        )
    return events


def sqs_event(events: Sequence[InboundEvent]) -> dict[str, Any]:
    now_ms = str(int(time.time() * 1000))
    return {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": f"bench-receipt-{uuid.uuid4().hex}",
                "body": event.to_body(),
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": now_ms},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": QUEUE_ARN,
                "awsRegion": "us-east-1",
            }
            for event in events
        ]
    }


def measure(run: Run, table: Table) -> None:
    with table.section("inbound throughput"):
        throughput(run, table)
    with table.section("inbound statements"):
        statements(run, table)


def _harness(url: str) -> tuple[Services, Any, StdoutBytes]:
    services = build(bench_settings(url))
    return services, lambda_handler("inbound_processor").with_services(services), StdoutBytes()


def throughput(run: Run, table: Table) -> None:
    n = run.sizes.inbound
    url = run.dbs.new("inbound")
    services, handler, stdout = _harness(url)
    try:
        sent = seed_sent(url, services, n)
        prepared = [sqs_event(events_for(chunk, sent)) for chunk in batches(list(sent), 10)]
        # The first invocation (the cold start, the catalog query) is not timed.
        first, timed = prepared[0], prepared[1:]
        failures = 0
        with stdout.capture():
            failures += len(
                handler(first, LambdaContext("InboundProcessorFunction", 60))["batchItemFailures"]
            )
            started = time.perf_counter()
            for event in timed:
                failures += len(
                    handler(event, LambdaContext("InboundProcessorFunction", 60))["batchItemFailures"]
                )
            elapsed = time.perf_counter() - started
            applied = _outcomes(url)
            # A replay of every batch (a DLQ redrive): every event is a duplicate, nothing moves.
            before = _state(url)
            for event in prepared:
                failures += len(
                    handler(event, LambdaContext("InboundProcessorFunction", 60))["batchItemFailures"]
                )
            replay_changed = _state(url) != before or _outcomes(url) != applied
        events = sum(len(e["Records"]) for e in timed)
        goal = f"goal >= {GOAL_EVENTS_PER_SECOND:,}"
        table.info(
            f"inbound processor events/s, batches of 10 ({events} events; {goal})", f"{events / elapsed:,.0f}"
        )
        table.info("inbound processor ms per batch of 10", f"{elapsed * 1000 / len(timed):.2f}")
        table.info("inbound processor log + EMF bytes per event", f"{stdout.bytes / (2 * n):.0f}")
        expected = {
            "linked": 4 * n // 10,
            "recorded": 3 * n // 10,
            "opted_out": n // 10,
            "opted_in": n // 10,
            "help": n // 10,
        }
        problems = [f"{failures} batchItemFailures"] if failures else []
        if applied != expected:
            problems.append(f"outcomes {applied}, expected {expected}")
        if replay_changed:
            problems.append("a replay changed something")
        table.problems(
            "inbound processor correctness (each event applied once; a replay changes nothing)",
            problems,
            "every event applied once",
        )
    finally:
        services.close()
        stdout.close()


def _outcomes(url: str) -> dict[str, int]:
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT outcome, count(*) FROM delivery.inbound_event GROUP BY outcome"
        ).fetchall()
    return {str(outcome): int(count) for outcome, count in rows}


def _state(url: str) -> tuple[Any, ...]:
    """What the events change, summed up: responses, receipts, preferences, the platform's flag."""
    with connect(url) as conn:
        return tuple(
            conn.execute(sql).fetchone()
            for sql in (
                "SELECT count(contractor_response), count(*) FILTER (WHERE conversation_continued),"
                " max(updated_at) FROM ai_proactive_messages",
                "SELECT count(*) FILTER (WHERE delivery_status = 'delivered') FROM delivery.message_state",
                "SELECT count(*), max(updated_at),"
                " md5(string_agg(opt_out_sources::text, ',' ORDER BY contractor_id))"
                " FROM delivery.contractor_preferences",
                "SELECT count(*) FILTER (WHERE sms_opt_in IS FALSE) FROM contractors",
            )
        )


def statements(run: Run, table: Table) -> None:
    runs = run.sizes.statement_batches
    url = run.dbs.new("inbound_stmts")
    monitor = connect(conninfo(run.dbs.create("inbound_mon")))
    services, handler, stdout = _harness(url)
    try:
        counter = StatementCounter(monitor, url.rsplit("/", 1)[-1])
        sent = seed_sent(url, services, 1 + runs * sum(SIZES))
        contractors = list(sent)
        database = services.database
        # One batch first, not counted: the environment's first reads the platform's schema
        # (one catalog query, kept for the environment's life).
        with stdout.capture():
            handler(
                sqs_event(events_for(contractors[:1], sent)), LambdaContext("InboundProcessorFunction", 60)
            )
        # What a (re)connection adds to xact_commit with no statement at all, measured here.
        database.close()
        before = counter.xact_commit()
        database.connection()
        database.close()
        connect_cost = counter.xact_commit() - before
        position = 1
        for size in SIZES:
            prepared = []
            for _ in range(runs):
                prepared.append(sqs_event(events_for(contractors[position : position + size], sent)))
                position += size
            xacts_before = counter.xact_commit()
            counter.pgss_reset()
            statements_before = database.statements
            with stdout.capture():
                for event in prepared:
                    handler(event, LambdaContext("InboundProcessorFunction", 60))
            count = database.statements - statements_before
            database.close()  # the backend exits and flushes its statistics
            xacts = counter.xact_commit() - xacts_before - connect_cost
            figures = [("counter", count / runs)]
            calls = counter.pgss_calls()
            if calls is not None:
                figures.append(("pg_stat_statements", calls / runs))
            for source, value in figures:
                table.target(
                    f"inbound SQL statements/batch, size {size:>2} ({source})",
                    value,
                    "{:.2f}",
                    MAX_STATEMENTS_PER_BATCH,
                    at_least=False,
                )
            # The server's own count, a cross-check. It also counts, once per connection, the
            # server-side PREPARE psycopg sends on a statement's sixth execution
            # (prepare_threshold): 20 batches read 21, so it is information here, where the
            # target allows no slack.
            table.info(f"inbound SQL transactions/batch, size {size:>2} (xact_commit)", f"{xacts / runs:.2f}")
        run.notes.append(
            f"inbound statements: {runs} batches per size, each a mix of replies, receipts, STOP,"
            f" START and HELP; xact_commit less {connect_cost} for the (re)connection"
        )
    finally:
        services.close()
        stdout.close()
        monitor.close()
