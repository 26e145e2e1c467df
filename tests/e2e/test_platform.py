"""The pipeline on the platform as it really is (sql/reference/platform.sql, docs/platform.md),
through the real handlers, moto SQS and a signature-verifying receiver: follow-ups written
back as the platform's own sender did (status, sent_at, sent_by, updated_at, cancellation,
the next occurrence of a recurring one, exactly once), naive-UTC timestamps, the platform's
own contact rules, and no raw phone in any log line.

Every test database runs with a non-UTC TimeZone and the process with TZ east of UTC
(tests/conftest.py), so each assertion on a timestamp here also shows it does not depend on
either."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support.db import DATABASE_TIMEZONE, PROCESS_TIMEZONE, state_row
from tests.support.telemetry import captured_log_lines

FOLLOWUPS = {"sources": ["followup"]}


def followup_row(conn: psycopg.Connection[Any], followup_id: int) -> dict[str, Any]:
    """The platform's row, its naive timestamps read as the UTC they hold."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT *, sent_at AT TIME ZONE 'UTC' AS sent_at_utc,"
            " updated_at AT TIME ZONE 'UTC' AS updated_at_utc"
            " FROM contractor_followup_schedules WHERE id = %s",
            (followup_id,),
        ).fetchone()
    assert row is not None
    return row


def occurrences(conn: psycopg.Connection[Any], contractor_id: int) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, status, scheduled_time, next_occurrence_id FROM contractor_followup_schedules"
            " WHERE contractor_id = %s ORDER BY id",
            (contractor_id,),
        ).fetchall()


def utc_now() -> datetime:
    return datetime.now(UTC)


def test_the_suite_really_runs_with_foreign_clocks(conn: psycopg.Connection[Any]) -> None:
    # The premise of every timestamp assertion in this suite: neither clock is UTC.
    assert conn.execute("SHOW timezone").fetchone() == (DATABASE_TIMEZONE,)
    assert DATABASE_TIMEZONE not in ("UTC", "Etc/UTC")
    assert datetime.now().astimezone().utcoffset() != timedelta(0), PROCESS_TIMEZONE


# --- follow-ups, written back as the platform's sender did ------------------------------------
def test_a_sent_followup_gets_status_sent_at_sent_by_and_updated_at(
    pipeline: Any, make_contractor: Any, make_followup: Any
) -> None:
    # GIVEN a due follow-up
    contractor = make_contractor(first_name="Dev")
    followup = make_followup(contractor)
    before = utc_now()

    # WHEN the follow-up schedule's evaluate runs and the queue drains
    pipeline.evaluate(FOLLOWUPS)
    pipeline.drain()

    # THEN it was sent once, rendered
    [post] = pipeline.receiver.posts_for(f"followup-{followup}")
    assert post.payload["send_via_ghl"]["message"] == "Hi Dev, checking in on your bids."
    # AND the platform's row says so, in naive UTC (within the seconds of the run)
    row = followup_row(pipeline.conn, followup)
    after = utc_now()
    assert (row["status"], row["sent_by"]) == ("sent", "scheduler")
    assert before - timedelta(seconds=1) <= row["sent_at_utc"] <= after + timedelta(seconds=1)
    assert before - timedelta(seconds=1) <= row["updated_at_utc"] <= after + timedelta(seconds=1)
    # AND our state agrees to the microsecond (the same instant, written explicitly as UTC)
    assert row["sent_at_utc"] == state_row(pipeline.conn, followup, "followup")["sent_at"]


def test_followup_sent_by_is_a_setting(pipeline: Any, make_followup: Any) -> None:
    pipeline.setenv(FOLLOWUP_SENT_BY="delivery_pipeline")
    followup = make_followup()
    pipeline.evaluate(FOLLOWUPS)
    pipeline.drain()
    assert followup_row(pipeline.conn, followup)["sent_by"] == "delivery_pipeline"


def test_only_scheduled_followups_are_due(pipeline: Any, make_followup: Any) -> None:
    # GIVEN follow-ups in every status the platform uses, all with their time come
    due = make_followup(status="scheduled")
    others = [make_followup(status=s) for s in ("cancelled", "sent", "pending", "skipped", None)]
    # WHEN evaluate runs
    report = pipeline.evaluate(FOLLOWUPS)
    pipeline.drain()
    # THEN only the scheduled one was queued and sent; the others were not even tracked
    assert report["sources"]["followup"]["scanned"] == 1
    assert len(pipeline.receiver.posts_for(f"followup-{due}")) == 1
    tracked = pipeline.conn.execute(
        "SELECT source_id FROM delivery.message_state WHERE source = 'followup'"
    ).fetchall()
    assert tracked == [(due,)]
    assert all(followup_row(pipeline.conn, f)["sent_by"] is None for f in others)


def completed_item(conn: psycopg.Connection[Any], contractor_id: int, status: str = "completed") -> int:
    row = conn.execute(
        "INSERT INTO contractor_action_items (contractor_id, title, status) VALUES (%s, 'Call back', %s)"
        " RETURNING id",
        (contractor_id, status),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_skip_if_completed_at_queue_time_cancels_on_the_platform(
    pipeline: Any, make_contractor: Any, make_followup: Any
) -> None:
    # GIVEN a follow-up to skip if its action item is completed, and the item is completed
    contractor = make_contractor()
    followup = make_followup(
        contractor, action_item_id=completed_item(pipeline.conn, contractor), skip_if_completed=True
    )
    # WHEN evaluate runs
    report = pipeline.evaluate(FOLLOWUPS)
    pipeline.drain()
    # THEN never queued or sent: skipped (action_completed), and cancelled on the platform
    assert report["enqueued"] == 0
    assert pipeline.receiver.requests == []
    state = state_row(pipeline.conn, followup, "followup")
    assert (state["state"], state["reason"]) == ("skipped", "action_completed")
    row = followup_row(pipeline.conn, followup)
    assert (row["status"], row["sent_at"]) == ("cancelled", None)
    assert row["updated_at_utc"] >= utc_now() - timedelta(minutes=1)


def test_skip_if_completed_when_the_item_completes_after_queueing(
    pipeline: Any, make_contractor: Any, make_followup: Any
) -> None:
    # GIVEN a queued follow-up whose action item is still open
    contractor = make_contractor()
    item = completed_item(pipeline.conn, contractor, status="pending")
    followup = make_followup(contractor, action_item_id=item, skip_if_completed=True)
    pipeline.evaluate(FOLLOWUPS)
    # WHEN the contractor completes it before the deliverer gets to the message
    pipeline.conn.execute("UPDATE contractor_action_items SET status = 'completed' WHERE id = %s", (item,))
    pipeline.drain()
    # THEN checked again before the send: not sent, and cancelled on the platform
    assert pipeline.receiver.requests == []
    assert state_row(pipeline.conn, followup, "followup")["reason"] == "action_completed"
    assert followup_row(pipeline.conn, followup)["status"] == "cancelled"


def test_a_completed_item_without_skip_if_completed_is_still_sent(
    pipeline: Any, make_contractor: Any, make_followup: Any
) -> None:
    contractor = make_contractor()
    followup = make_followup(
        contractor, action_item_id=completed_item(pipeline.conn, contractor), skip_if_completed=False
    )
    pipeline.evaluate(FOLLOWUPS)
    pipeline.drain()
    assert followup_row(pipeline.conn, followup)["status"] == "sent"


def test_a_recurring_followup_gets_its_next_occurrence_once(
    pipeline: Any, make_contractor: Any, make_followup: Any
) -> None:
    # GIVEN a weekly follow-up, due now
    contractor = make_contractor()
    followup = make_followup(contractor, is_recurring=True, recurrence_interval_days=7)
    scheduled = followup_row(pipeline.conn, followup)["scheduled_time"]

    # WHEN it is sent
    pipeline.evaluate(FOLLOWUPS)
    pipeline.drain()

    # THEN one next occurrence exists, a week after the previous scheduled_time, scheduled,
    # with the same template, type, tone and flags, and the sent row points to it
    first, second = occurrences(pipeline.conn, contractor)
    assert first["id"] == followup and first["status"] == "sent"
    assert first["next_occurrence_id"] == second["id"]
    assert second["status"] == "scheduled"
    assert second["scheduled_time"] == scheduled + timedelta(days=7)
    previous, following = followup_row(pipeline.conn, followup), followup_row(pipeline.conn, second["id"])
    for column in (
        "message_template",
        "followup_type",
        "message_tone",
        "is_recurring",
        "recurrence_interval_days",
    ):
        assert following[column] == previous[column], column
    assert following["sent_at"] is None and following["next_occurrence_id"] is None


def test_a_duplicate_record_and_a_replay_of_a_sent_recurring_followup_create_no_second_occurrence(
    pipeline: Any, make_contractor: Any, make_followup: Any
) -> None:
    # GIVEN a recurring follow-up whose queue message SQS delivers twice
    contractor = make_contractor()
    followup = make_followup(contractor, is_recurring=True, recurrence_interval_days=1)
    pipeline.evaluate(FOLLOWUPS)
    pipeline.send_keys(followup, source="followup")
    pipeline.drain()
    # WHEN an operator later replays it from the DLQ (the same key once more)
    pipeline.send_keys(followup, source="followup")
    pipeline.drain()
    # THEN it was sent once and exactly one next occurrence exists
    assert len(pipeline.receiver.posts_for(f"followup-{followup}")) == 1
    assert [r["status"] for r in occurrences(pipeline.conn, contractor)] == ["sent", "scheduled"]


def test_a_crash_before_the_commit_and_the_retry_create_one_occurrence(
    pipeline: Any, make_contractor: Any, make_followup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a recurring follow-up and a deliverer that dies after the 2xx, before its outcome
    # statement (the one that marks it sent and inserts the next occurrence) commits
    contractor = make_contractor()
    followup = make_followup(contractor, is_recurring=True, recurrence_interval_days=3)
    pipeline.setenv(LEASE_SECONDS="1")
    pipeline.evaluate(FOLLOWUPS)
    crashing = pipeline.crash_before_the_first_commit()
    # WHEN the batch comes back and is delivered again
    pipeline.drain(timeout=30)
    # THEN the retry (same webhook-id) committed once: one next occurrence
    assert crashing.crashed
    assert {p.webhook_id for p in pipeline.receiver.posts_for(f"followup-{followup}")} == {
        f"followup-{followup}"
    }
    assert [r["status"] for r in occurrences(pipeline.conn, contractor)] == ["sent", "scheduled"]


# --- proactive messages -------------------------------------------------------------------------
def test_a_proactive_message_without_created_at_is_delivered(pipeline: Any, make_message: Any) -> None:
    # GIVEN a row whose nullable created_at is NULL
    message = make_message(created_offset_seconds=None)
    # WHEN the pipeline runs THEN it is tracked, sent, and its platform row marked
    pipeline.evaluate()
    pipeline.drain()
    assert state_row(pipeline.conn, message)["state"] == "sent"
    assert len(pipeline.receiver.posts_for(f"proactive-{message}")) == 1


def test_platform_sent_at_and_updated_at_are_naive_utc(pipeline: Any, make_message: Any) -> None:
    message = make_message()
    before = utc_now()
    pipeline.evaluate()
    pipeline.drain()
    row = pipeline.conn.execute(
        "SELECT sent_at AT TIME ZONE 'UTC', updated_at AT TIME ZONE 'UTC'"
        " FROM ai_proactive_messages WHERE id = %s",
        (message,),
    ).fetchone()
    assert row is not None
    sent_at, updated_at = row
    assert before - timedelta(seconds=1) <= sent_at <= utc_now() + timedelta(seconds=1)
    assert before - timedelta(seconds=1) <= updated_at <= utc_now() + timedelta(seconds=1)


def test_max_age_is_measured_from_the_naive_utc_created_at(pipeline: Any, make_message: Any) -> None:
    # GIVEN MESSAGE_MAX_AGE_HOURS=1 and messages created 59 and 61 minutes ago (naive UTC); with
    # the database session 8 hours behind UTC, a naive reading would get both wrong
    pipeline.setenv(MESSAGE_MAX_AGE_HOURS="1")
    fresh = make_message(created_offset_seconds=-59 * 60)
    stale = make_message(created_offset_seconds=-61 * 60)
    pipeline.evaluate()
    pipeline.drain()
    assert state_row(pipeline.conn, fresh)["state"] == "sent"
    assert (state_row(pipeline.conn, stale)["state"], state_row(pipeline.conn, stale)["reason"]) == (
        "skipped",
        "expired",
    )


# --- the platform's own contact rules ---------------------------------------------------------
def test_sms_opt_in_false_on_the_platform_is_honoured(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    # GIVEN a contractor the platform says not to text, and SMS the only channel
    message = make_message(make_contractor(sms_opt_in=False))
    # WHEN the pipeline runs THEN nothing is sent: skipped, opted_out
    pipeline.evaluate()
    pipeline.drain()
    assert pipeline.receiver.requests == []
    row = state_row(pipeline.conn, message)
    assert (row["state"], row["reason"]) == ("skipped", "opted_out")


def test_the_platforms_contractor_timezone_places_the_quiet_hours(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    # GIVEN quiet hours and a contractor whose platform timezone is inside them right now
    from proactive_delivery_tools.local.seed import zone_in_quiet_hours

    pipeline.setenv(QUIET_HOURS="21:00-08:00", DEFAULT_TIMEZONE="UTC")
    night = make_message(make_contractor(timezone=zone_in_quiet_hours()))
    # WHEN the pipeline runs THEN the message waits for that zone's morning
    pipeline.evaluate()
    pipeline.drain()
    row = state_row(pipeline.conn, night)
    assert (row["state"], row["reason"]) == ("deferred", "quiet_hours")
    assert pipeline.receiver.requests == []


def test_stored_phones_are_normalised_and_never_logged(
    pipeline: Any, make_contractor: Any, make_message: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN phones as the platform stores them, and one that is not a number
    stored = ["(312) 555-0161", "312.555.0162", "+1 312 555 0163"]
    sent = [make_message(make_contractor(phone=p)) for p in stored]
    bad = make_message(make_contractor(phone="312-555-01"))
    # WHEN the pipeline runs, every log line captured as CloudWatch would get it
    with captured_log_lines() as stream:
        pipeline.evaluate()
        pipeline.drain()
    # THEN each went out once, as E.164; the bad one is skipped invalid_phone
    phones = {p.payload["send_via_ghl"]["phone"] for p in pipeline.receiver.accepted()}
    assert phones == {"+13125550161", "+13125550162", "+13125550163"}
    assert all(state_row(pipeline.conn, m)["state"] == "sent" for m in sent)
    assert state_row(pipeline.conn, bad)["reason"] == "invalid_phone"
    # AND no log line carries a phone, raw or normalised
    logs = stream.getvalue() + "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert "evaluate finished" in logs and "delivery outcome" in logs
    for phone in [*stored, "312-555-01", "3125550161", "+13125550162", "5550163"]:
        assert phone not in logs, phone


# --- e-mail through the platform's n8n workflow --------------------------------------------------
def test_email_through_n8n_posts_the_email_outbound_body(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    # GIVEN EMAIL_PROVIDER=n8n and a contractor who prefers e-mail
    pipeline.setenv(
        EMAIL_FROM_ADDRESS="coach@example.com",
        EMAIL_PROVIDER="n8n",
        N8N_EMAIL_WEBHOOK_URL=pipeline.receiver.url.replace("/webhook", "/email-outbound"),
        EMAIL_FROM_NAME="Power100 Concierge",
    )
    contractor = make_contractor(first_name="Ana", last_name="Silva", email="ana.silva@example.com")
    pipeline.conn.execute(
        "INSERT INTO delivery.contractor_preferences (contractor_id, channels) VALUES (%s, %s)",
        (contractor, ["email"]),
    )
    message = make_message(contractor)
    # WHEN it is delivered
    pipeline.evaluate()
    pipeline.drain()
    # THEN one signed POST to the email workflow with its flat body
    [post] = pipeline.receiver.posts_for(f"proactive-{message}")
    assert post.path == "/email-outbound"
    body = post.payload
    assert (body["to_email"], body["to_name"], body["from_email"], body["from_name"]) == (
        "ana.silva@example.com",
        "Ana Silva",
        "coach@example.com",
        "Power100 Concierge",
    )
    assert (body["email_type"], body["message_id"], body["contractor_id"]) == (
        "check_in",
        f"proactive-{message}",
        contractor,
    )
    assert state_row(pipeline.conn, message)["channel"] == "email"
    assert json.loads(json.dumps(body))["subject"] == "Check in"
