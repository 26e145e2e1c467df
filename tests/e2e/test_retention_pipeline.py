"""The retention purge next to the running pipeline: after a purge nothing is sent a second
time, and a purge during sends blocks nothing (its locks held for the whole send, and a purge
running batch after batch while deliver sends, its waits sampled); nor does a purge of the
inbound events while the inbound processor applies new ones."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from proactive_delivery.adapters.postgres.database import Database
from proactive_delivery.adapters.postgres.retention import PostgresRetentionStore
from proactive_delivery.app.purge import Purger
from proactive_delivery.bootstrap import build
from proactive_delivery.settings import Settings
from proactive_delivery_tools.local.esm import LambdaContext
from proactive_delivery_tools.local.receiver import Reply
from tests.pipeline import Pipeline, load_function
from tests.support.db import state_row
from tests.support.processor import ghl_status, process, sms
from tests.support.retention import (
    PLATFORM_TABLES,
    age_delivery_rows,
    delivery_ids,
    fingerprints,
    finished_row,
    inbound_event_ids,
    inbound_event_row,
)
from tests.support.telemetry import captured_log_lines, emf_metrics

BOTH = {"sources": ["proactive", "followup"]}
# The sender's statements give up on any lock they would wait for longer than this: a send
# the purge held up would fail (and show) instead of quietly waiting.
SENDER_LOCK_TIMEOUT_MS = 200


def purge_handler(pipeline: Pipeline) -> Callable[[dict[str, Any], Any], Any]:
    return load_function("purge").lambda_handler.with_services(pipeline.services)  # type: ignore[no-any-return]


def posts(pipeline: Pipeline, source: str, source_id: int) -> int:
    return len(pipeline.receiver.posts_for(f"{source}-{source_id}"))


def with_lock_timeout(url: str, milliseconds: int) -> str:
    """The URL with a session lock_timeout, as libpq's `options` sets it at connect time."""
    return f"{url}{'&' if '?' in url else '?'}options=-c%20lock_timeout%3D{milliseconds}"


def test_after_a_purge_nothing_is_sent_again(
    pipeline: Pipeline,
    make_contractor: Callable[..., int],
    make_message: Callable[..., int],
    make_followup: Callable[..., int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    conn = pipeline.conn
    # GIVEN messages the pipeline sent, skipped and failed: sent; opted out (the platform's
    # sms_opt_in); expired; rejected by the provider; a follow-up sent, one cancelled on the
    # platform (its action item completed), one rejected
    sent = make_message()
    opted_out = make_message(make_contractor(sms_opt_in=False))
    expired = make_message(created_offset_seconds=-73 * 3600)
    rejected = make_message()
    followup_sent = make_followup()
    item = conn.execute(
        "INSERT INTO contractor_action_items (contractor_id, title, status) VALUES (%s, 'bids', 'completed')"
        " RETURNING id",
        (make_contractor(),),
    ).fetchone()[0]
    followup_cancelled = make_followup(action_item_id=item, skip_if_completed=True)
    followup_rejected = make_followup()
    refused = {f"proactive-{rejected}", f"followup-{followup_rejected}"}
    pipeline.receiver.plan = lambda webhook_id, _n: Reply(400) if webhook_id in refused else Reply(200)
    pipeline.evaluate(BOTH)
    pipeline.drain(timeout=30)
    outcome = {
        name: (state_row(conn, source_id, source)["state"], state_row(conn, source_id, source)["reason"])
        for name, source, source_id in (
            ("sent", "proactive", sent),
            ("opted out", "proactive", opted_out),
            ("expired", "proactive", expired),
            ("rejected", "proactive", rejected),
            ("follow-up sent", "followup", followup_sent),
            ("follow-up cancelled", "followup", followup_cancelled),
            ("follow-up rejected", "followup", followup_rejected),
        )
    }
    assert outcome == {
        "sent": ("sent", None),
        "opted out": ("skipped", "opted_out"),
        "expired": ("skipped", "expired"),
        "rejected": ("failed", "rejected"),
        "follow-up sent": ("sent", None),
        "follow-up cancelled": ("skipped", "action_completed"),
        "follow-up rejected": ("failed", "rejected"),
    }
    requests_before = len(pipeline.receiver.requests)
    # AND 100 days pass (our rows are aged; the platform's rows stay as they are)
    age_delivery_rows(conn, 100)
    platform = fingerprints(conn, PLATFORM_TABLES)
    # WHEN the purge function runs (its default retention: 90 days)
    capsys.readouterr()
    with captured_log_lines() as logged:
        result = purge_handler(pipeline)({}, LambdaContext("PurgeFunction", 300))
    out = capsys.readouterr().out
    # THEN the sent ones and the cancelled follow-up are gone; the skipped and failed ones
    # the platform still has due stay
    assert result["deleted"] == {"message_state": 3, "attempt_log": 4, "inbound_event": 0}
    assert result["kept"] == {"message_state": 4, "inbound_event": 0}
    assert (result["retention_days"], result["stopped_early"], result["dry_run"]) == (90, False, False)
    left = {(r[0], r[1]) for r in conn.execute("SELECT source, source_id FROM delivery.message_state")}
    assert left == {
        ("proactive", opted_out),
        ("proactive", expired),
        ("proactive", rejected),
        ("followup", followup_rejected),
    }
    # AND it said so in one log line and its metrics, and touched no platform row
    [line] = [
        json.loads(line) for line in logged.getvalue().splitlines() if "retention purge finished" in line
    ]
    assert (line["deleted"], line["kept"], line["retention_days"]) == (result["deleted"], result["kept"], 90)
    assert emf_metrics(out) == {"PurgeStoppedEarly": 0}
    assert fingerprints(conn, PLATFORM_TABLES) == platform
    # WHEN both schedules run again and the queue drains
    ids_before = delivery_ids(conn)
    report = pipeline.evaluate(BOTH)
    pipeline.drain(timeout=30)
    # THEN nothing was queued and nothing was sent: no message came back
    assert report["enqueued"] == 0
    assert {s: r["queued_new"] for s, r in report["sources"].items()} == {"proactive": 0, "followup": 0}
    assert len(pipeline.receiver.requests) == requests_before
    assert delivery_ids(conn) == ids_before
    assert [posts(pipeline, "proactive", i) for i in (sent, opted_out, expired)] == [1, 0, 0]


def test_a_purge_holding_its_locks_through_a_whole_send_blocks_nothing(
    pipeline: Pipeline, make_contractor: Callable[..., int], make_messages: Callable[[int], list[int]]
) -> None:
    conn = pipeline.conn
    # GIVEN 300 messages sent 100 days ago (their rows finished, the platform's rows sent),
    # and 30 messages due now, some for the same contractors
    old = make_messages(300)
    conn.execute(
        "UPDATE ai_proactive_messages SET sent_at = (now() AT TIME ZONE 'UTC') - interval '100 days'"
        " WHERE id = ANY(%s)",
        (old,),
    )
    for message in old:
        finished_row(conn, "proactive", message, "sent", days_ago=100, attempts=1)
    due = make_messages(30)
    # AND senders whose statements give up on any lock wait longer than 200 ms
    url = senders_give_up_on_lock_waits(pipeline)
    # WHEN a purge deletes every old row in batches of 50, all in ONE transaction left open
    # (its row locks and table locks held for as long as the test likes: far longer than a
    # real batch holds them)
    held = Database(lambda: url)
    try:
        purge, purge_pid, locks = purge_in_one_open_transaction(conn, held)
        assert purge.deleted == {"message_state": 300, "attempt_log": 300, "inbound_event": 0}
        assert {("message_state", "RowExclusiveLock"), ("attempt_log", "RowExclusiveLock")} <= locks
        # AND meanwhile evaluate queues the due messages and deliver sends them
        report = pipeline.evaluate()
        mapping = pipeline.drain(timeout=60)
        # THEN every statement of theirs went through: each message sent once, no error
        assert report["enqueued"] == 30
        assert mapping.stats.handler_errors == 0 and mapping.stats.reported_failed == 0
        assert [posts(pipeline, "proactive", m) for m in due] == [1] * 30
        assert {state_row(conn, m)["state"] for m in due} == {"sent"}
        # AND the purge's transaction was open the whole time, its deletions not yet visible
        [(state,)] = conn.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (purge_pid,))
        assert state == "idle in transaction"
        assert len(_delivery_ids_of(conn, old)) == 300
        held.connection().commit()
    finally:
        held.close()
    # AND once it committed the old rows are gone and the new ones stay
    assert _delivery_ids_of(conn, old) == []
    assert len(_delivery_ids_of(conn, due)) == 30


def test_a_purge_of_inbound_events_holding_its_locks_blocks_no_inbound_event(
    pipeline: Pipeline, make_contractor: Callable[..., int], make_message: Callable[..., int]
) -> None:
    conn = pipeline.conn
    # GIVEN 300 inbound events applied 100 days ago (replies and receipts of 100 messages
    # finished then, whose platform rows are gone), and two messages sent just now
    old_messages = [
        finished_row(conn, "proactive", 8_500_000 + n, "sent", days_ago=100, attempts=1) for n in range(100)
    ]
    old_events = {
        inbound_event_row(conn, days_ago=100, delivery_id=m, action=a, outcome=o, kind=k)
        for m in old_messages
        for a, o, k in (("reply", "linked", "sms.received"), ("receipt", "recorded", "message.status"))
    } | {inbound_event_row(conn, days_ago=100, action="help", outcome="help") for _ in range(100)}
    ana, ben = "+13125550142", "+13125550143"
    answered = make_message(make_contractor(phone=ana))
    stopped = make_message(make_contractor(phone=ben))
    pipeline.evaluate({"sources": ["proactive"]})
    pipeline.drain(timeout=30)
    # AND an inbound processor whose statements give up on any lock wait longer than 200 ms
    url = senders_give_up_on_lock_waits(pipeline)
    # WHEN a purge deletes every old row in batches of 50, all in ONE transaction left open
    held = Database(lambda: url)
    try:
        purge, purge_pid, locks = purge_in_one_open_transaction(conn, held)
        assert purge.deleted == {"message_state": 100, "attempt_log": 100, "inbound_event": 300}
        assert ("inbound_event", "RowExclusiveLock") in locks
        # AND meanwhile the inbound processor applies receipts, a reply and a STOP, in one batch
        # and then one by one
        events = [
            ghl_status(f"proactive-{answered}", "delivered"),
            ghl_status(f"proactive-{stopped}", "undelivered", "30003"),
            sms(ana, "Thursday works"),
            sms(ben, "STOP"),
        ]
        results = [
            process(pipeline.services, *events[:2]),
            *(process(pipeline.services, e) for e in events[2:]),
        ]
        # THEN every event was applied, none waited for a lock or failed
        assert results == [{"batchItemFailures": []}] * 3
        applied = conn.execute(
            "SELECT action, outcome FROM delivery.inbound_event WHERE applied_at > now() - interval '1 hour'"
            " ORDER BY id"
        ).fetchall()
        assert applied == [
            ("receipt", "recorded"),
            ("receipt", "recorded"),
            ("reply", "linked"),
            ("opt_out", "opted_out"),
        ]
        assert state_row(conn, answered)["delivery_status"] == "delivered"
        # AND the purge's transaction was open the whole time, its deletions not yet visible
        [(state,)] = conn.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (purge_pid,))
        assert state == "idle in transaction"
        assert old_events <= inbound_event_ids(conn)
        held.connection().commit()
    finally:
        held.close()
    # AND once it committed the old events are gone and the new ones stay
    assert inbound_event_ids(conn).isdisjoint(old_events) and len(inbound_event_ids(conn)) == 4


def senders_give_up_on_lock_waits(pipeline: Pipeline) -> str:
    """The pipeline's functions connect with a lock_timeout of SENDER_LOCK_TIMEOUT_MS (any
    statement of theirs that waits longer for a lock fails); returns the plain URL."""
    url = pipeline.env["DATABASE_URL"]
    pipeline.setenv(DATABASE_URL=with_lock_timeout(url, SENDER_LOCK_TIMEOUT_MS))
    assert pipeline.services.database.fetch_all("SHOW lock_timeout", {}) == [
        {"lock_timeout": f"{SENDER_LOCK_TIMEOUT_MS}ms"}
    ]
    return url


def purge_in_one_open_transaction(
    conn: psycopg.Connection[Any], held: Database
) -> tuple[Any, int, set[tuple[str, str]]]:
    """A whole purge (batches of 50) run in one transaction of `held`, left open: its report,
    its backend's pid and the table locks it holds."""
    held.connection().autocommit = False
    purge = Purger(
        PostgresRetentionStore(held),
        retention_days=90,
        batch_size=50,
        clock=lambda: datetime.now(UTC),
        safety_margin_ms=0,
    ).run(lambda: 10**9)
    purge_pid = held.connection().info.backend_pid
    locks = {
        (r[0], r[1])
        for r in conn.execute(
            "SELECT c.relname, l.mode FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
            " WHERE l.pid = %s AND l.granted",
            (purge_pid,),
        )
    }
    return purge, purge_pid, locks


def _delivery_ids_of(conn: psycopg.Connection[Any], source_ids: list[int]) -> list[int]:
    return [
        int(r[0])
        for r in conn.execute(
            "SELECT id FROM delivery.message_state WHERE source = 'proactive' AND source_id = ANY(%s)",
            (source_ids,),
        )
    ]


@dataclass
class WaitSampler:
    """Samples pg_stat_activity of the test database until stopped: every backend seen
    waiting on a lock, with the backends that held it (pg_blocking_pids)."""

    url: str
    samples: int = 0
    lock_waits: list[tuple[int, str, list[int]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> WaitSampler:
        self._thread = threading.Thread(target=self._run, name="wait-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.is_set():
                rows = conn.execute(
                    "SELECT pid, wait_event, pg_blocking_pids(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND wait_event_type = 'Lock'"
                ).fetchall()
                self.samples += 1
                self.lock_waits.extend((int(r[0]), str(r[1]), list(r[2])) for r in rows)
                self._stop.wait(0.001)


class PacedContext(LambdaContext):
    """The purge's Lambda context, pacing it to the sends: before each batch it waits until
    the receiver has taken another request (or the sends are over), so the purge's batches
    are spread over the whole send instead of all running before it starts."""

    def __init__(self, sent: Callable[[], int], done: threading.Event) -> None:
        super().__init__("PurgeFunction", 300)
        self._sent = sent
        self._done = done
        self._last = 0
        self.batches_during_sends = 0

    def get_remaining_time_in_millis(self) -> int:
        deadline = time.monotonic() + 30
        while not self._done.is_set() and self._sent() <= self._last and time.monotonic() < deadline:
            self._done.wait(0.002)
        if not self._done.is_set():
            self.batches_during_sends += 1
        self._last = self._sent()
        return super().get_remaining_time_in_millis()


def test_a_purge_running_during_sends_makes_no_sender_wait(
    pipeline: Pipeline, make_messages: Callable[[int], list[int]]
) -> None:
    conn = pipeline.conn
    # GIVEN 1,000 messages finished 100 days ago whose platform rows are gone, 60 due now,
    # a provider that takes 10 ms a request, and senders that give up on a lock wait > 200 ms
    for n in range(1000):
        finished_row(conn, "proactive", 8_000_000 + n, "failed", days_ago=100, attempts=1)
    due = make_messages(60)
    pipeline.receiver.plan = lambda _id, _n: Reply(200, delay=0.01)
    url = pipeline.env["DATABASE_URL"]
    pipeline.setenv(DATABASE_URL=with_lock_timeout(url, SENDER_LOCK_TIMEOUT_MS))
    pipeline.evaluate()
    sender_pid = pipeline.services.database.connection().info.backend_pid
    # AND a purge function of its own (10 rows a batch), paced to run during the sends
    purge_services = build(
        Settings.from_env({**pipeline.env, "PURGE_BATCH_SIZE": "10", "DATABASE_URL": url}), sqs=pipeline.sqs
    )
    purge_pid = purge_services.database.connection().info.backend_pid
    done = threading.Event()
    context = PacedContext(lambda: len(pipeline.receiver.requests), done)
    results: list[dict[str, Any]] = []
    handler = load_function("purge").lambda_handler.with_services(purge_services)
    purging = threading.Thread(target=lambda: results.append(handler({}, context)), name="purge")
    try:
        with WaitSampler(conn.info.dsn) as sampler:
            purging.start()
            # WHEN deliver sends every due message, one a batch, while the purge deletes batch
            # after batch
            mapping = pipeline.drain(timeout=120, batch_size=1)
            done.set()
            purging.join(120)
    finally:
        done.set()
        purge_services.close()
    # THEN the purge finished its work, much of it while the sends were going on
    [report] = results
    assert report["deleted"]["message_state"] == 1000 and not report["stopped_early"]
    assert context.batches_during_sends >= 10
    # AND no backend ever waited on a lock the purge held, the sender on no lock at all
    assert sampler.samples >= 20
    assert [w for w in sampler.lock_waits if purge_pid in w[2]] == []
    assert [w for w in sampler.lock_waits if w[0] == sender_pid] == []
    # AND every message was sent once, without an error
    assert mapping.stats.handler_errors == 0 and mapping.stats.reported_failed == 0
    assert [posts(pipeline, "proactive", m) for m in due] == [1] * 60
    assert {state_row(conn, m)["state"] for m in due} == {"sent"}
