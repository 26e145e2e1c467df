"""Preferences, safeguards, follow-ups and channels through the real handlers: evaluate ->
SQS (moto) -> event source mapping -> deliver -> receiver / Twilio stand-in / SES on moto."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import psycopg
import pytest

from proactive_delivery_tools.local.twilio import FakeTwilio, TwilioReply
from tests.support.db import attempts, state_row

FOLLOWUPS = {"sources": ["followup"]}
SID, TOKEN = "AC" + "1" * 32, "token"


def set_prefs(conn: psycopg.Connection[Any], contractor_id: int, **values: Any) -> None:
    columns = ", ".join(["contractor_id", *values])
    marks = ", ".join(["%s"] * (len(values) + 1))
    conn.execute(
        f"INSERT INTO delivery.contractor_preferences ({columns}) VALUES ({marks})",  # type: ignore[arg-type]
        (contractor_id, *values.values()),
    )


def zone_at_local_noon() -> str:
    """A fixed-offset zone whose local time is between 12:00 and 13:00 right now."""
    offset = 12 - datetime.now(UTC).hour  # -11 .. +12 hours
    # POSIX-style names: Etc/GMT-5 is five hours *ahead* of UTC.
    return "Etc/UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"


def posts(pipeline: Any, source: str, source_id: int) -> list[Any]:
    return list(pipeline.receiver.posts_for(f"{source}-{source_id}"))


@pytest.fixture
def twilio(pipeline: Any) -> Iterator[FakeTwilio]:
    with FakeTwilio(SID, TOKEN) as fake:
        pipeline.setenv(
            SMS_PROVIDER="twilio",
            TWILIO_API_BASE_URL=fake.base_url,
            TWILIO_ACCOUNT_SID=SID,
            TWILIO_AUTH_TOKEN=TOKEN,
            TWILIO_FROM_NUMBER="+13125550199",
        )
        yield fake


# --- follow-ups --------------------------------------------------------------------------
def test_followups_are_rendered_delivered_and_marked_sent(
    pipeline: Any, make_contractor: Any, make_followup: Any, make_message: Any
) -> None:
    # GIVEN a follow-up and a proactive message that share the id 1
    contractor = make_contractor(first_name="Dev")
    followup = make_followup(contractor)
    proactive = make_message()
    assert followup == proactive == 1

    # WHEN both schedules' evaluate runs and the queue drains
    pipeline.evaluate(FOLLOWUPS)
    pipeline.evaluate()
    pipeline.drain()

    # THEN each was POSTed once under its own identity, the template rendered
    [post] = posts(pipeline, "followup", followup)
    assert post.payload["send_via_ghl"]["message"] == "Hi Dev, checking in on your bids."
    assert len(posts(pipeline, "proactive", proactive)) == 1
    # AND the follow-up's sent_at is set on the platform's row
    sent_at = pipeline.conn.execute(
        "SELECT sent_at FROM contractor_followup_schedules WHERE id = %s", (followup,)
    ).fetchone()[0]
    assert sent_at is not None
    assert state_row(pipeline.conn, followup, "followup")["state"] == "sent"


def test_followup_cancelled_after_queueing_is_not_sent(pipeline: Any, make_followup: Any) -> None:
    # GIVEN a follow-up that evaluate queued
    followup = make_followup()
    pipeline.evaluate(FOLLOWUPS)
    # WHEN the platform cancels it before the deliverer gets to it
    pipeline.conn.execute(
        "UPDATE contractor_followup_schedules SET status = 'cancelled' WHERE id = %s", (followup,)
    )
    pipeline.drain()
    # THEN it is skipped with the reason and never POSTed
    row = state_row(pipeline.conn, followup, "followup")
    assert (row["state"], row["reason"]) == ("skipped", "cancelled")
    assert posts(pipeline, "followup", followup) == []
    assert attempts(pipeline.conn, followup, "followup") == []


def test_followup_template_with_a_placeholder_we_cannot_fill_is_never_sent(
    pipeline: Any, make_followup: Any
) -> None:
    # GIVEN a template with a placeholder only the platform's AI personalisation filled
    followup = make_followup(template="Hi {first_name}, {partner_name} will call you at {demo_time}")
    # WHEN the pipeline runs
    report = pipeline.evaluate(FOLLOWUPS)
    pipeline.drain()
    # THEN skipped at queue time (it would reach the contractor with braces in it), never POSTed
    row = state_row(pipeline.conn, followup, "followup")
    assert (row["state"], row["reason"]) == ("skipped", "unrenderable_template")
    assert report["enqueued"] == 0
    assert posts(pipeline, "followup", followup) == []


def test_fault17_followups_due_exactly_at_the_boundary(pipeline: Any, make_followup: Any) -> None:
    # GIVEN one follow-up due a second ago and one due two seconds from now
    due = make_followup(offset_seconds=-1)
    early = make_followup(offset_seconds=2)
    # WHEN evaluate runs now
    pipeline.evaluate(FOLLOWUPS)
    pipeline.drain()
    # THEN only the due one is sent; the other is not even queued
    assert len(posts(pipeline, "followup", due)) == 1
    assert posts(pipeline, "followup", early) == []
    assert (
        pipeline.conn.execute(
            "SELECT count(*) FROM delivery.message_state WHERE source = 'followup' AND source_id = %s",
            (early,),
        ).fetchone()[0]
        == 0
    )
    # AND once its time has come the next run sends it
    time.sleep(2.1)
    pipeline.evaluate(FOLLOWUPS)
    pipeline.drain()
    assert len(posts(pipeline, "followup", early)) == 1


# --- quiet hours, cap, opt-out -----------------------------------------------------------
def quiet_window_sql(zone: str, start: str, end: str) -> str:
    return (
        f"UPDATE delivery.contractor_preferences SET"
        f" quiet_start = ((now() AT TIME ZONE '{zone}') + interval '{start}')::time,"
        f" quiet_end = ((now() AT TIME ZONE '{zone}') + interval '{end}')::time"
        f" WHERE contractor_id = %s"
    )


def test_fault17_short_deferral_is_sent_when_the_window_opens(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    # GIVEN a contractor in Tokyo (east of UTC) whose quiet hours end 3 seconds from now
    contractor = make_contractor()
    set_prefs(pipeline.conn, contractor, timezone="Asia/Tokyo")
    pipeline.conn.execute(quiet_window_sql("Asia/Tokyo", "-1 hour", "3 seconds"), (contractor,))
    message = make_message(contractor)
    # WHEN evaluate runs inside the window
    started = time.time()
    report = pipeline.evaluate()
    # THEN it is queued with a delay, not sent, not counted as an attempt
    assert report["sources"]["proactive"]["deferred"] == 1
    row = state_row(pipeline.conn, message)
    assert (row["state"], row["reason"], row["attempts"]) == ("queued", "quiet_hours", 0)
    # AND SQS holds it until then (DelaySeconds), after which it goes out once
    assert pipeline.receive() == []
    time.sleep(max(0.0, started + 3.5 - time.time()))
    pipeline.drain(timeout=30)
    [post] = posts(pipeline, "proactive", message)
    assert post.at >= started + 2
    assert state_row(pipeline.conn, message)["state"] == "sent"


def test_fault17_long_deferral_is_stored_and_requeued_when_due(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    # GIVEN a contractor in Los Angeles whose quiet hours run for another hour
    contractor = make_contractor()
    set_prefs(pipeline.conn, contractor, timezone="America/Los_Angeles")
    pipeline.conn.execute(quiet_window_sql("America/Los_Angeles", "-1 hour", "1 hour"), (contractor,))
    message = make_message(contractor)
    # WHEN evaluate runs
    pipeline.evaluate()
    pipeline.drain(timeout=10)
    # THEN it is deferred until the window opens, with the reason, and nothing was sent
    row = state_row(pipeline.conn, message)
    assert (row["state"], row["reason"], row["attempts"]) == ("deferred", "quiet_hours", 0)
    assert 3500 < (row["next_attempt_at"] - row["updated_at"]).total_seconds() <= 3600
    assert posts(pipeline, "proactive", message) == []
    # AND a run before the window opens leaves it alone
    pipeline.evaluate()
    assert state_row(pipeline.conn, message)["state"] == "deferred"
    # AND once the window has opened (time moved on), the sweep sends it
    pipeline.conn.execute(
        "UPDATE delivery.contractor_preferences SET quiet_start = '00:00', quiet_end = '00:00'"
        " WHERE contractor_id = %s",
        (contractor,),
    )
    pipeline.conn.execute(
        "UPDATE delivery.message_state SET next_attempt_at = now() - interval '1 second'"
        " WHERE source_id = %s",
        (message,),
    )
    pipeline.evaluate()
    pipeline.drain()
    assert len(posts(pipeline, "proactive", message)) == 1
    assert state_row(pipeline.conn, message)["state"] == "sent"


def test_daily_cap_defers_the_rest_to_the_next_local_day(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    # GIVEN a contractor allowed one message a day, with three due, in a zone where it is
    # about noon now (near local midnight the next day is minutes away, and a deferral that
    # short stays on the queue as an SQS delay instead of being stored as deferred)
    contractor = make_contractor()
    set_prefs(
        pipeline.conn,
        contractor,
        max_per_day=1,
        quiet_start="00:00",
        quiet_end="00:00",
        timezone=zone_at_local_noon(),
    )
    messages = [make_message(contractor) for _ in range(3)]
    # WHEN evaluate runs (all pass the queue-time check: nothing sent yet today) and deliver runs
    pipeline.evaluate()
    pipeline.drain()
    # THEN one is sent and the others are deferred for the cap, without an attempt
    rows = [state_row(pipeline.conn, m) for m in messages]
    assert sorted(r["state"] for r in rows) == ["deferred", "deferred", "sent"]
    assert {r["reason"] for r in rows if r["state"] == "deferred"} == {"daily_cap"}
    assert sum(len(posts(pipeline, "proactive", m)) for m in messages) == 1
    # AND a second run keeps them deferred (the cap is still reached today)
    pipeline.evaluate()
    pipeline.drain()
    assert sum(len(posts(pipeline, "proactive", m)) for m in messages) == 1


def test_opted_out_contractor_is_skipped_at_queue_time(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    contractor = make_contractor()
    set_prefs(pipeline.conn, contractor, opted_out=True)
    message = make_message(contractor)
    pipeline.evaluate()
    pipeline.drain()
    row = state_row(pipeline.conn, message)
    assert (row["state"], row["reason"]) == ("skipped", "opted_out")
    assert posts(pipeline, "proactive", message) == []


def test_opt_out_after_queueing_is_honoured_at_send_time(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    # GIVEN a queued message, then the contractor opts out
    contractor = make_contractor()
    message = make_message(contractor)
    pipeline.evaluate()
    set_prefs(pipeline.conn, contractor, opted_out=True)
    # WHEN deliver runs THEN it is skipped, never POSTed
    pipeline.drain()
    assert state_row(pipeline.conn, message)["reason"] == "opted_out"
    assert posts(pipeline, "proactive", message) == []


def test_expired_message_is_skipped(pipeline: Any, make_message: Any) -> None:
    message = make_message(created_offset_seconds=-73 * 3600)
    pipeline.evaluate()
    row = state_row(pipeline.conn, message)
    assert (row["state"], row["reason"]) == ("skipped", "expired")


# --- bad input ---------------------------------------------------------------------------
def test_bad_input_gets_a_recorded_reason_and_no_send(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    # GIVEN an unknown channel and an invalid time zone in our preference rows, a phone that
    # is not a number and an empty message
    unknown_channel = make_contractor()
    set_prefs(pipeline.conn, unknown_channel, channels=["pigeon"])
    bad_zone = make_contractor()
    set_prefs(pipeline.conn, bad_zone, timezone="Mars/Olympus_Mons")
    cases = {
        make_message(unknown_channel): ("failed", "unknown_channel"),
        make_message(bad_zone): ("failed", "invalid_timezone"),
        make_message(make_contractor(phone="555-0100")): ("skipped", "invalid_phone"),
        make_message(content="   "): ("skipped", "empty_message"),
    }
    # WHEN the pipeline runs
    pipeline.evaluate()
    mapping = pipeline.drain()
    # THEN each ends with its reason (a preference row to fix is failed; content that can
    # never be sent is skipped), nothing was POSTed, nothing crashed
    for message, expected in cases.items():
        row = state_row(pipeline.conn, message)
        assert (row["state"], row["reason"]) == expected, message
    assert pipeline.receiver.requests == []
    assert mapping.stats.handler_errors == 0


def test_bad_preferences_written_after_queueing_fail_at_send_time(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    contractor = make_contractor()
    message = make_message(contractor)
    pipeline.evaluate()
    set_prefs(pipeline.conn, contractor, timezone="Not/AZone")
    mapping = pipeline.drain()
    assert state_row(pipeline.conn, message)["reason"] == "invalid_timezone"
    assert posts(pipeline, "proactive", message) == []
    assert mapping.stats.handler_errors == 0


# --- channels ----------------------------------------------------------------------------
def test_channels_follow_each_contractors_preference(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    # GIVEN email and web chat configured, and contractors preferring each channel
    boto3.client("sesv2", region_name="us-east-1").create_email_identity(EmailIdentity="coach@example.com")
    pipeline.setenv(
        EMAIL_FROM_ADDRESS="coach@example.com",
        WEB_CHAT_WEBHOOK_URL=pipeline.receiver.url.replace("/webhook", "/chat"),
    )
    by_email, by_chat, by_sms = (make_contractor() for _ in range(3))
    set_prefs(pipeline.conn, by_email, channels=["email", "sms"])
    set_prefs(pipeline.conn, by_chat, channels=["web_chat"])
    # The platform requires an email, but not that it be an address.
    no_email = make_contractor(email="none on file")
    set_prefs(pipeline.conn, no_email, channels=["email", "web_chat", "sms"])
    messages = {
        make_message(by_email): "email",
        make_message(by_chat): "web_chat",
        make_message(by_sms): "sms",
        make_message(no_email): "web_chat",
    }
    # WHEN the pipeline runs
    pipeline.evaluate()
    pipeline.drain()
    # THEN each went out once on the expected channel
    for message, channel in messages.items():
        row = state_row(pipeline.conn, message)
        assert (row["state"], row["channel"]) == ("sent", channel), message
    chat_paths = {r.path for r in pipeline.receiver.accepted() if r.payload.get("channel") == "web_chat"}
    assert chat_paths == {"/chat"}
    email_ref = state_row(pipeline.conn, next(iter(messages)))["provider_ref"]
    assert email_ref


def test_twilio_delivery_stores_the_sid(pipeline: Any, twilio: FakeTwilio, make_message: Any) -> None:
    message = make_message()
    pipeline.evaluate()
    pipeline.drain()
    [request] = twilio.delivered()
    row = state_row(pipeline.conn, message)
    assert (row["state"], row["provider_ref"]) == ("sent", request.sid)
    assert pipeline.receiver.requests == []


def test_fault16_twilio_opt_out_is_recorded_and_skips(
    pipeline: Any, twilio: FakeTwilio, make_contractor: Any, make_message: Any
) -> None:
    # GIVEN Twilio reports the recipient replied STOP (21610)
    twilio.plan = lambda _to, _n: TwilioReply(400, 21610)
    contractor = make_contractor()
    first = make_message(contractor)
    # WHEN the pipeline runs
    pipeline.evaluate()
    mapping = pipeline.drain()
    # THEN one request, the message skipped as opted_out, no retry, not in the DLQ
    assert len(twilio.requests) == 1
    row = state_row(pipeline.conn, first)
    assert (row["state"], row["reason"]) == ("skipped", "opted_out")
    assert mapping.stats.reported_failed == 0
    assert pipeline.dlq_bodies() == []
    # AND the opt-out is recorded for SMS, with its time and source
    prefs = pipeline.conn.execute(
        "SELECT opted_out_channels, opted_out_at, opt_out_source FROM delivery.contractor_preferences"
        " WHERE contractor_id = %s",
        (contractor,),
    ).fetchone()
    assert prefs[0] == ["sms"] and prefs[1] is not None and prefs[2] == "twilio"
    # AND the next message to that contractor never reaches Twilio
    second = make_message(contractor)
    pipeline.evaluate()
    pipeline.drain()
    assert len(twilio.requests) == 1
    assert state_row(pipeline.conn, second)["reason"] == "opted_out"


def test_fault16_twilio_invalid_number_fails_at_once(
    pipeline: Any, twilio: FakeTwilio, make_message: Any
) -> None:
    twilio.plan = lambda _to, _n: TwilioReply(400, 21211)
    message = make_message()
    pipeline.evaluate()
    mapping = pipeline.drain()
    assert len(twilio.requests) == 1
    row = state_row(pipeline.conn, message)
    assert (row["state"], row["reason"]) == ("failed", "invalid_number")
    assert mapping.stats.reported_failed == 0


def test_twilio_rate_limit_is_retried(pipeline: Any, twilio: FakeTwilio, make_message: Any) -> None:
    twilio.plan = lambda _to, n: TwilioReply(429, 20429) if n == 1 else TwilioReply()
    message = make_message()
    pipeline.evaluate()
    pipeline.drain(timeout=30)
    assert [a["outcome"] for a in attempts(pipeline.conn, message)] == ["retry", "delivered"]


def test_fault16_email_rejected_fails_at_once(pipeline: Any, make_contractor: Any, make_message: Any) -> None:
    # GIVEN an email sender SES has not verified
    pipeline.setenv(EMAIL_FROM_ADDRESS="unverified@example.com", DEFAULT_CHANNELS="email")
    message = make_message()
    pipeline.evaluate()
    mapping = pipeline.drain()
    row = state_row(pipeline.conn, message)
    assert (row["state"], row["reason"], row["channel"]) == ("failed", "rejected", "email")
    assert "MessageRejected" in row["last_error"]
    assert mapping.stats.reported_failed == 0
