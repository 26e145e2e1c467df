"""The inbound processor on a real PostgreSQL with the platform's reference tables: the real
handler (functions/inbound_processor/app.py) on the services the functions build, after the
real evaluate and deliver functions sent the messages (so deliver's own record of each number
it texted is what a reply is matched on).

Covers: a duplicate applied once (FAULTS row 20), receipts in any order ending at the highest
rank (row 21), reply linkage whatever the stored phone format, STOP / START / HELP / DND, an
operator's opt-out that START leaves, the platform's columns and the settings that turn each
write off, suppression on permanent codes and the next channel, SES events, and one statement
per batch."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import psycopg
import pytest
from psycopg.rows import dict_row

from proactive_delivery.adapters.postgres.database import Database
from proactive_delivery.adapters.postgres.store import PostgresStore
from proactive_delivery.app.inbound_apply import ApplyOptions, Arrival, InboundApplier
from proactive_delivery.core.phone_hash import PhoneHasher
from proactive_delivery_tools.local.twilio import FakeTwilio
from tests.support.db import MINIMAL, operator_opts_out, preferences, sms_opt_in, state_row
from tests.support.processor import dnd, ghl_status, process, ses_body, sms, twilio_sid, twilio_status

PHONE = "+13125550142"
TEXT = "Thursday at 4 works"


# --- what the platform and our tables hold ---------------------------------------------------
def proactive_row(conn: psycopg.Connection[Any], message_id: int) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT contractor_response, response_received_at, conversation_continued, updated_at"
            " FROM ai_proactive_messages WHERE id = %s",
            (message_id,),
        ).fetchone()
    assert row is not None
    return row


def followup_row(conn: psycopg.Connection[Any], followup_id: int) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT response_text, response_received_at, updated_at, status"
            " FROM contractor_followup_schedules WHERE id = %s",
            (followup_id,),
        ).fetchone()
    assert row is not None
    return row


def inbound_events(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT identity, kind, action, keyword, outcome, contractor_ids, delivery_id, status, error_code"
            " FROM delivery.inbound_event ORDER BY id"
        ).fetchall()


def send_proactive(pipeline: Any, make_message: Any, contractor: int) -> int:
    """A proactive message to the contractor, sent by the real evaluate and deliver functions."""
    message = make_message(contractor)
    pipeline.evaluate({"sources": ["proactive"]})
    pipeline.drain(timeout=30)
    assert state_row(pipeline.conn, message)["state"] == "sent"
    return int(message)


def send_followup(pipeline: Any, make_followup: Any, contractor: int) -> int:
    followup = make_followup(contractor)
    pipeline.evaluate({"sources": ["followup"]})
    pipeline.drain(timeout=30)
    assert state_row(pipeline.conn, followup, "followup")["state"] == "sent"
    return int(followup)


def sent_hours_ago(conn: psycopg.Connection[Any], source: str, source_id: int, hours: float) -> None:
    """Moves our record of a send back in time (as if it went out `hours` ago)."""
    conn.execute(
        "UPDATE delivery.message_state SET sent_at = now() - make_interval(secs => %s)"
        " WHERE source = %s AND source_id = %s",
        (hours * 3600, source, source_id),
    )


CALLBACK = "https://inbound.example.com/twilio/status"


@pytest.fixture
def refs(pipeline: Any) -> Iterator[Any]:
    """SMS through Twilio (its local stand-in), which answers each message's SID: the provider
    reference Twilio's status callbacks name; the callback URL set as the template sets it."""
    with FakeTwilio("AC" + "1" * 32, "token") as fake:
        pipeline.setenv(
            SMS_PROVIDER="twilio",
            TWILIO_API_BASE_URL=fake.base_url,
            TWILIO_ACCOUNT_SID="AC" + "1" * 32,
            TWILIO_AUTH_TOKEN="token",
            TWILIO_FROM_NUMBER="+13125550199",
            TWILIO_STATUS_CALLBACK_URL=CALLBACK,
        )
        pipeline.twilio = fake
        yield pipeline


# --- FAULTS row 20: a duplicate is applied once -------------------------------------------------
def test_fault20_the_same_inbound_event_twice_is_applied_once(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    # GIVEN an SMS sent to a contractor
    contractor = make_contractor(phone=PHONE)
    message = send_proactive(pipeline, make_message, contractor)
    reply = sms(PHONE, TEXT)
    # WHEN the reply arrives twice in one batch, then again in a later batch (Twilio's retry,
    # an SQS duplicate, a DLQ replay)
    first = process(pipeline.services, reply, reply)
    row = proactive_row(pipeline.conn, message)
    again = process(pipeline.services, reply)
    # THEN it was applied once: the response is there, and it did not "continue" the
    # conversation (a duplicate is not a later reply); one record of the event
    assert first == again == {"batchItemFailures": []}
    assert proactive_row(pipeline.conn, message) == row
    assert (row["contractor_response"], row["conversation_continued"]) == (TEXT, False)
    assert [e["outcome"] for e in inbound_events(pipeline.conn)] == ["linked"]
    # AND a STOP twice is one opt-out, recorded once
    stop = sms(PHONE, "STOP")
    process(pipeline.services, stop)
    prefs = preferences(pipeline.conn, contractor)
    process(pipeline.services, stop, stop)
    assert preferences(pipeline.conn, contractor) == prefs
    assert [e["outcome"] for e in inbound_events(pipeline.conn)] == ["linked", "opted_out"]


# --- FAULTS row 21: receipts out of order -------------------------------------------------------
def test_fault21_receipts_in_any_order_end_at_the_highest_rank(
    refs: Any, make_contractor: Any, make_message: Any
) -> None:
    # GIVEN three SMS sent through Twilio, each with its MessageSid recorded, each asking
    # Twilio to call back with its status
    a, b, c = (send_proactive(refs, make_message, make_contractor()) for _ in range(3))
    ref = {m: state_row(refs.conn, m)["provider_ref"] for m in (a, b, c)}
    assert sorted(ref.values()) == sorted(r.sid for r in refs.twilio.requests)
    assert {r.form["StatusCallback"] for r in refs.twilio.requests} == {CALLBACK}
    # WHEN `delivered` then a late `sent` arrive for a; `undelivered` then `delivered` for b;
    # and for c everything at once, in one batch, in the wrong order
    process(refs.services, twilio_status(ref[a], "delivered"))
    process(refs.services, twilio_status(ref[a], "sent"))
    process(refs.services, twilio_status(ref[b], "undelivered", "30003"))
    process(refs.services, twilio_status(ref[b], "delivered"))
    process(
        refs.services,
        twilio_status(ref[c], "read"),
        twilio_status(ref[c], "sent"),
        twilio_status(ref[c], "undelivered", "30008"),
        twilio_status(ref[c], "delivered"),
    )
    # THEN each ends at the highest rank it saw, never moved back
    statuses = {m: state_row(refs.conn, m)["delivery_status"] for m in (a, b, c)}
    assert statuses == {a: "delivered", b: "delivered", c: "read"}
    # AND the time and code are the winning receipt's (delivered has no error code)
    assert state_row(refs.conn, b)["delivery_error_code"] is None
    # AND by our own identity too (an n8n message.status naming proactive-<id>)
    process(refs.services, ghl_status(f"proactive-{a}", "read"))
    process(refs.services, ghl_status(f"proactive-{a}", "undelivered", "30006"))
    assert state_row(refs.conn, a)["delivery_status"] == "read"


# --- reply linkage ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "stored", ["(312) 555-0142", "312.555.0142", "+1 312 555 0142", "312-555-0142", "3125550142"]
)
def test_a_reply_links_to_the_proactive_message_whatever_format_the_phone_was_stored_in(
    pipeline: Any, make_contractor: Any, make_message: Any, stored: str
) -> None:
    # GIVEN a contractor whose phone the platform stored as typed, and an SMS sent to them
    contractor = make_contractor(phone=stored)
    message = send_proactive(pipeline, make_message, contractor)
    # WHEN Twilio posts their reply from the number in E.164
    process(pipeline.services, sms(PHONE, TEXT))
    # THEN the platform's columns are what its own trackMessageOutcome writes
    row = proactive_row(pipeline.conn, message)
    assert row["contractor_response"] == TEXT
    assert row["conversation_continued"] is False
    # response_received_at is naive UTC (the platform's convention), close to now
    received = row["response_received_at"]
    assert received.tzinfo is None
    assert abs(received.replace(tzinfo=UTC) - datetime.now(UTC)) < timedelta(minutes=1)
    # AND our record says what it was linked to
    [event] = inbound_events(pipeline.conn)
    assert (event["outcome"], event["contractor_ids"]) == ("linked", [contractor])
    assert event["delivery_id"] == state_row(pipeline.conn, message)["id"]


def test_a_reply_links_to_the_most_recent_sms_within_the_window_and_a_later_one_continues(
    pipeline: Any, make_contractor: Any, make_message: Any, make_followup: Any
) -> None:
    # GIVEN a proactive message sent 30 hours ago and a follow-up sent after it
    contractor = make_contractor(phone=PHONE)
    older = send_proactive(pipeline, make_message, contractor)
    sent_hours_ago(pipeline.conn, "proactive", older, 30)
    followup = send_followup(pipeline, make_followup, contractor)
    # WHEN the contractor replies, from GHL through n8n (with GHL's own timestamp)
    at = datetime.now(UTC).replace(microsecond=0)
    process(pipeline.services, sms(PHONE, "Done, thanks", ghl=True, at=at))
    # THEN the follow-up (the most recent) gets the reply, exactly as recordFollowUpResponse writes it
    row = followup_row(pipeline.conn, followup)
    assert (row["response_text"], row["response_received_at"]) == ("Done, thanks", at.replace(tzinfo=None))
    assert row["status"] == "sent"
    # AND the older proactive message gets nothing
    assert proactive_row(pipeline.conn, older)["contractor_response"] is None
    # WHEN a second reply comes: the first response stays
    process(pipeline.services, sms(PHONE, "Also, the invoice is out"))
    assert followup_row(pipeline.conn, followup)["response_text"] == "Done, thanks"


def test_a_later_reply_continues_the_conversation_of_a_proactive_message(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    contractor = make_contractor(phone=PHONE)
    message = send_proactive(pipeline, make_message, contractor)
    process(pipeline.services, sms(PHONE, TEXT))
    first = proactive_row(pipeline.conn, message)
    process(pipeline.services, sms(PHONE, "One more thing"))
    row = proactive_row(pipeline.conn, message)
    assert (row["contractor_response"], row["response_received_at"]) == (TEXT, first["response_received_at"])
    assert row["conversation_continued"] is True
    # AND two replies in one batch: the first fills the columns, the second continues
    other = make_contractor(phone="+13125550143")
    second_message = send_proactive(pipeline, make_message, other)
    early = datetime.now(UTC) - timedelta(seconds=5)
    process(
        pipeline.services,
        sms("+13125550143", "later words", at=datetime.now(UTC)),
        sms("+13125550143", "first words", at=early),
    )
    row = proactive_row(pipeline.conn, second_message)
    assert (row["contractor_response"], row["conversation_continued"]) == ("first words", True)


def test_a_reply_outside_the_window_links_nothing(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    # GIVEN an SMS sent 73 hours ago (REPLY_WINDOW_HOURS is 72)
    contractor = make_contractor(phone=PHONE)
    message = send_proactive(pipeline, make_message, contractor)
    sent_hours_ago(pipeline.conn, "proactive", message, 73)
    # WHEN the contractor replies
    process(pipeline.services, sms(PHONE, TEXT))
    # THEN nothing is written on the platform; our record says why
    assert proactive_row(pipeline.conn, message)["contractor_response"] is None
    [event] = inbound_events(pipeline.conn)
    assert (event["outcome"], event["contractor_ids"], event["delivery_id"]) == (
        "outside_window",
        [contractor],
        None,
    )
    # AND with a wider window (a setting) the same kind of reply is linked
    pipeline.setenv(REPLY_WINDOW_HOURS="96")
    process(pipeline.services, sms(PHONE, TEXT))
    assert proactive_row(pipeline.conn, message)["contractor_response"] == TEXT


def test_a_number_we_never_texted_is_unmatched_and_a_shared_one_ambiguous(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    # GIVEN two contractors the platform has with the same number, both texted
    one, two = make_contractor(phone=PHONE), make_contractor(phone="(312) 555-0142")
    first, second = (send_proactive(pipeline, make_message, c) for c in (one, two))
    # WHEN a reply comes from that number, and a reply and a STOP from a number never texted
    process(pipeline.services, sms(PHONE, TEXT), sms("+13125550177", TEXT), sms("+13125550177", "STOP"))
    # THEN the reply is ambiguous (linked to neither), the others unmatched; nothing written
    outcomes = [(e["outcome"], e["contractor_ids"]) for e in inbound_events(pipeline.conn)]
    assert sorted(outcomes) == sorted([("ambiguous", [one, two]), ("unmatched", []), ("unmatched", [])])
    assert proactive_row(pipeline.conn, first)["contractor_response"] is None
    assert proactive_row(pipeline.conn, second)["contractor_response"] is None
    # AND no phone number is stored in clear anywhere in our schema
    dump = pipeline.conn.execute(
        "SELECT string_agg(t::text, ' ') FROM (SELECT * FROM delivery.inbound_event) t"
    ).fetchone()[0]
    assert "3125550142" not in dump and "3125550177" not in dump


def test_the_platforms_own_response_is_never_overwritten_and_the_write_can_be_turned_off(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    contractor = make_contractor(phone=PHONE)
    message = send_proactive(pipeline, make_message, contractor)
    # GIVEN the platform wrote a response itself
    pipeline.conn.execute(
        "UPDATE ai_proactive_messages SET contractor_response = 'from the platform',"
        " response_received_at = '2026-01-01 10:00' WHERE id = %s",
        (message,),
    )
    # WHEN a reply is linked to it
    process(pipeline.services, sms(PHONE, TEXT))
    # THEN the platform's values stay; the later reply continues the conversation
    row = proactive_row(pipeline.conn, message)
    assert (row["contractor_response"], row["response_received_at"]) == (
        "from the platform",
        datetime(2026, 1, 1, 10, 0),
    )
    assert row["conversation_continued"] is True
    # AND with PLATFORM_WRITE_RESPONSES off, a link is recorded and nothing written
    other = make_contractor(phone="+13125550143")
    quiet = send_proactive(pipeline, make_message, other)
    pipeline.setenv(PLATFORM_WRITE_RESPONSES="false")
    process(pipeline.services, sms("+13125550143", TEXT))
    assert proactive_row(pipeline.conn, quiet)["contractor_response"] is None
    assert inbound_events(pipeline.conn)[-1]["outcome"] == "linked"


# --- opt-out and opt-in ---------------------------------------------------------------------------
def test_stop_opts_out_of_sms_on_our_side_and_the_platforms_and_start_lifts_both(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    contractor = make_contractor(phone="(312) 555-0142")
    message = send_proactive(pipeline, make_message, contractor)
    # WHEN the contractor texts "Stop."
    process(pipeline.services, sms(PHONE, "Stop."))
    # THEN SMS is opted out with its source and time, and the platform knows it
    prefs = preferences(pipeline.conn, contractor)
    assert prefs is not None
    assert (prefs["opted_out"], prefs["opted_out_channels"], prefs["opt_out_source"]) == (
        False,
        ["sms"],
        "keyword",
    )
    assert prefs["opt_out_sources"]["sms"]["source"] == "keyword"
    assert sms_opt_in(pipeline.conn, contractor) is False
    # AND it is not a reply to the message
    assert proactive_row(pipeline.conn, message)["contractor_response"] is None
    # WHEN they text HELP: recorded, nothing changes
    process(pipeline.services, sms(PHONE, "help"))
    assert preferences(pipeline.conn, contractor) == prefs
    # WHEN they text START
    process(pipeline.services, sms(PHONE, "START"))
    # THEN SMS is open again on both sides
    prefs = preferences(pipeline.conn, contractor)
    assert prefs is not None and prefs["opted_out_channels"] == []
    assert prefs["opt_out_sources"]["sms"]["opted_out"] is False
    assert sms_opt_in(pipeline.conn, contractor) is True
    assert [e["outcome"] for e in inbound_events(pipeline.conn)] == ["opted_out", "help", "opted_in"]


def test_start_does_not_undo_an_operators_opt_out(
    pipeline: Any, make_contractor: Any, make_message: Any, database_url: str, capsys: Any
) -> None:
    contractor = make_contractor(phone=PHONE)
    send_proactive(pipeline, make_message, contractor)
    # GIVEN the operator opted the contractor out (the real command)
    operator_opts_out(database_url, contractor)
    capsys.readouterr()
    # AND a keyword STOP as well
    process(pipeline.services, sms(PHONE, "STOP"))
    # WHEN the contractor texts START
    process(pipeline.services, sms(PHONE, "start"))
    # THEN the operator's opt-out stays (everything is still opted out)
    prefs = preferences(pipeline.conn, contractor)
    assert prefs is not None and prefs["opted_out"] is True
    assert inbound_events(pipeline.conn)[-1]["outcome"] == "kept_operator_opt_out"
    # AND a message is skipped opted_out
    message = pipeline.conn.execute(
        "INSERT INTO ai_proactive_messages (contractor_id, message_type, message_content, ai_reasoning,"
        " created_at) VALUES (%s, 'check_in', 'Hi', 'why', now() AT TIME ZONE 'UTC') RETURNING id",
        (contractor,),
    ).fetchone()[0]
    pipeline.evaluate({"sources": ["proactive"]})
    pipeline.drain(timeout=30)
    assert (state_row(pipeline.conn, message)["state"], state_row(pipeline.conn, message)["reason"]) == (
        "skipped",
        "opted_out",
    )


def test_an_older_stop_processed_after_a_newer_start_does_not_opt_out_again(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    contractor = make_contractor(phone=PHONE)
    send_proactive(pipeline, make_message, contractor)
    now = datetime.now(UTC)
    stop, start = (
        sms(PHONE, "STOP", at=now - timedelta(minutes=2)),
        sms(PHONE, "START", at=now - timedelta(minutes=1)),
    )
    # WHEN the STOP reaches the processor after the START (SQS does not keep order)
    process(pipeline.services, start)
    process(pipeline.services, stop)
    # THEN the contractor's latest word holds: opted in
    prefs = preferences(pipeline.conn, contractor)
    assert prefs is not None and prefs["opted_out_channels"] == []
    # AND STOP then START in the same batch end opted in too
    other = make_contractor(phone="+13125550143")
    send_proactive(pipeline, make_message, other)
    process(
        pipeline.services,
        sms("+13125550143", "START", at=now - timedelta(seconds=1)),
        sms("+13125550143", "STOP", at=now - timedelta(seconds=2)),
    )
    prefs = preferences(pipeline.conn, other)
    assert prefs is not None and prefs["opted_out_channels"] == []


def test_dnd_works_like_stop_and_start_and_the_platform_write_can_be_turned_off(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    contractor = make_contractor(phone=PHONE, sms_opt_in=True)
    send_proactive(pipeline, make_message, contractor)
    process(pipeline.services, dnd(PHONE, "active"))
    prefs = preferences(pipeline.conn, contractor)
    assert prefs is not None and prefs["opt_out_sources"]["sms"]["source"] == "dnd"
    assert sms_opt_in(pipeline.conn, contractor) is False
    process(pipeline.services, dnd(PHONE, "inactive"))
    assert sms_opt_in(pipeline.conn, contractor) is True
    assert preferences(pipeline.conn, contractor)["opted_out_channels"] == []  # type: ignore[index]
    # WITH PLATFORM_WRITE_SMS_OPT_IN off: our record only
    pipeline.setenv(PLATFORM_WRITE_SMS_OPT_IN="false")
    process(pipeline.services, dnd(PHONE, "permanent"))
    assert preferences(pipeline.conn, contractor)["opted_out_channels"] == ["sms"]  # type: ignore[index]
    assert sms_opt_in(pipeline.conn, contractor) is True


# --- receipts that suppress a channel --------------------------------------------------------------
def test_a_landline_suppresses_sms_and_the_next_message_goes_by_email(
    refs: Any, make_contractor: Any, make_message: Any
) -> None:
    # GIVEN e-mail configured after SMS, and an SMS sent to a contractor
    boto3.client("sesv2", region_name="us-east-1").create_email_identity(EmailIdentity="coach@example.com")
    refs.setenv(EMAIL_FROM_ADDRESS="coach@example.com", DEFAULT_CHANNELS="sms,email")
    contractor = make_contractor(phone=PHONE)
    first = send_proactive(refs, make_message, contractor)
    # WHEN its receipt says undelivered 30006 (landline or unreachable carrier)
    process(refs.services, twilio_status(state_row(refs.conn, first)["provider_ref"], "undelivered", "30006"))
    # THEN SMS is suppressed for the contractor with the reason
    prefs = preferences(refs.conn, contractor)
    assert prefs is not None
    assert prefs["suppressed_channels"]["sms"]["reason"] == "landline_or_unreachable_carrier"
    assert prefs["suppressed_channels"]["sms"]["code"] == "30006"
    # AND their next message goes by e-mail
    second = send_proactive(refs, make_message, contractor)
    assert state_row(refs.conn, second)["channel"] == "email"
    # AND once the platform has another number for them, SMS is tried again
    refs.conn.execute("UPDATE contractors SET phone = '+13125550144' WHERE id = %s", (contractor,))
    third = send_proactive(refs, make_message, contractor)
    assert state_row(refs.conn, third)["channel"] == "sms"


def test_transient_codes_suppress_nothing_and_a_providers_opt_out_is_lifted_by_start(
    refs: Any, make_contractor: Any, make_message: Any
) -> None:
    contractor = make_contractor(phone=PHONE)
    message = send_proactive(refs, make_message, contractor)
    ref = state_row(refs.conn, message)["provider_ref"]
    for code in ("30003", "30001", "30008"):
        process(refs.services, twilio_status(ref, "undelivered", code))
    assert preferences(refs.conn, contractor) is None
    # A 21610 receipt: the recipient opted out at the provider
    process(refs.services, twilio_status(ref, "failed", "21610"))
    prefs = preferences(refs.conn, contractor)
    assert prefs is not None and prefs["opted_out_channels"] == ["sms"]
    assert prefs["opt_out_sources"]["sms"]["source"] == "twilio"
    # The platform's flag is not ours to set for a provider's opt-out
    assert sms_opt_in(refs.conn, contractor) is None
    # START lifts it
    process(refs.services, sms(PHONE, "START"))
    assert preferences(refs.conn, contractor)["opted_out_channels"] == []  # type: ignore[index]


def test_ses_events_record_receipts_and_suppress_or_opt_out_of_email(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    boto3.client("sesv2", region_name="us-east-1").create_email_identity(EmailIdentity="coach@example.com")
    pipeline.setenv(EMAIL_FROM_ADDRESS="coach@example.com", DEFAULT_CHANNELS="email")
    hard, soft, complaint, rejected = (make_contractor() for _ in range(4))
    messages = {c: send_proactive(pipeline, make_message, c) for c in (hard, soft, complaint, rejected)}
    ses_ids = {c: state_row(pipeline.conn, m)["provider_ref"] for c, m in messages.items()}
    process(
        pipeline.services,
        # found by our tag
        ses_body("Delivery", message_id=f"proactive-{messages[hard]}", ses_message_id=ses_ids[hard]),
        ses_body("Bounce", message_id=f"proactive-{messages[hard]}", bounce={"bounceType": "Permanent"}),
        # found by SES's MessageId
        ses_body("Bounce", ses_message_id=ses_ids[soft], bounce={"bounceType": "Transient"}),
        ses_body("Complaint", message_id=f"proactive-{messages[complaint]}", complaint={}),
        ses_body("Reject", message_id=f"proactive-{messages[rejected]}", reject={"reason": "Bad content"}),
    )
    assert state_row(pipeline.conn, messages[hard])["delivery_status"] == "delivered"
    assert state_row(pipeline.conn, messages[soft])["delivery_status"] == "undelivered"
    assert state_row(pipeline.conn, messages[rejected])["delivery_status"] == "failed"
    assert preferences(pipeline.conn, hard)["suppressed_channels"]["email"]["reason"] == "bounced"  # type: ignore[index]
    assert preferences(pipeline.conn, soft) is None
    complained = preferences(pipeline.conn, complaint)
    assert complained is not None and complained["opted_out_channels"] == ["email"]
    assert complained["opt_out_sources"]["email"]["source"] == "complaint"
    # AND the next message to the hard bounce is skipped with the reason (no other channel)
    again = send_proactive_skipped(pipeline, make_message, hard)
    assert (again["state"], again["reason"]) == ("skipped", "bounced")


def send_proactive_skipped(pipeline: Any, make_message: Any, contractor: int) -> dict[str, Any]:
    message = make_message(contractor)
    pipeline.evaluate({"sources": ["proactive"]})
    pipeline.drain(timeout=30)
    return state_row(pipeline.conn, message)


def test_a_receipt_before_its_message_is_recorded_waits_then_is_recorded_unknown(pipeline: Any) -> None:
    # GIVEN a receipt for a reference deliver has not recorded (yet)
    receipt = twilio_status(twilio_sid(), "delivered")
    # WHEN it arrives fresh: it is sent back to wait, and nothing is recorded
    response = process(pipeline.services, receipt)
    assert len(response["batchItemFailures"]) == 1
    assert inbound_events(pipeline.conn) == []
    # WHEN it has been received five times: recorded as unknown, acknowledged
    assert process(pipeline.services, receipt, receive_count=5) == {"batchItemFailures": []}
    assert [e["outcome"] for e in inbound_events(pipeline.conn)] == ["unknown_message"]


# --- one statement per batch -----------------------------------------------------------------------
def test_a_batch_is_one_statement_whatever_its_size_and_content(
    refs: Any, make_contractor: Any, make_message: Any
) -> None:
    contractors = [make_contractor(phone=f"+1312555{200 + i:04d}") for i in range(10)]
    messages = [send_proactive(refs, make_message, c) for c in contractors]
    database = refs.services.database
    refs.services.store.sources()  # the catalog query, once per environment
    counts = []
    for size in (1, 5, 10):
        batch = []
        for i in range(size):
            phone = f"+1312555{200 + i:04d}"
            kind = i % 4
            if kind == 0:
                batch.append(sms(phone, f"reply {i}"))
            elif kind == 1:
                batch.append(twilio_status(state_row(refs.conn, messages[i])["provider_ref"], "delivered"))
            elif kind == 2:
                batch.append(sms(phone, "STOP"))
            else:
                batch.append(dnd(phone, "inactive"))
        before = database.statements
        process(refs.services, *batch)
        counts.append(database.statements - before)
    assert counts == [1, 1, 1]


# --- the platform's older schema ------------------------------------------------------------------
def test_the_statement_runs_on_the_seed_documents_minimal_schema(platform_database: Any) -> None:
    # GIVEN the seed's minimal tables (no response_received_at, no conversation_continued, no
    # sms_opt_in, a follow-up table without response columns)
    url = platform_database(MINIMAL)
    with psycopg.connect(url, autocommit=True) as conn:
        contractor = conn.execute(
            "INSERT INTO contractors (first_name, phone, email)"
            " VALUES ('Ana', '(312) 555-0142', 'a@example.com') RETURNING id"
        ).fetchone()[0]
        message = conn.execute(
            "INSERT INTO ai_proactive_messages (contractor_id, message_type, message_content, sent_at)"
            " VALUES (%s, 'check_in', 'Hi', now()) RETURNING id",
            (contractor,),
        ).fetchone()[0]
        hasher = PhoneHasher(b"minimal-schema-phone-hash-key-32", "US")
        phone_hash = hasher(PHONE)
        conn.execute(
            "INSERT INTO delivery.message_state (source, source_id, state, contractor_id, channel, sent_at,"
            " phone_hash) VALUES ('proactive', %s, 'sent', %s, 'sms', now() - interval '1 minute',"
            " decode(%s, 'hex'))",
            (message, contractor, phone_hash),
        )
        conn.execute(
            "INSERT INTO delivery.contractor_phone (phone_hash, contractor_id, source)"
            " VALUES (decode(%s, 'hex'), %s, 'send')",
            (phone_hash, contractor),
        )
        db = Database(lambda: url)
        try:
            result = InboundApplier(PostgresStore(db), hasher, ApplyOptions()).apply(
                [Arrival(sms(PHONE, TEXT)), Arrival(sms(PHONE, "STOP"))]
            )
        finally:
            db.close()
        # THEN the reply fills the one response column there is, and STOP is recorded
        assert [o.outcome for o in result.outcomes] == ["linked", "opted_out"]
        assert conn.execute("SELECT contractor_response FROM ai_proactive_messages").fetchone() == (TEXT,)
        assert conn.execute("SELECT opted_out_channels FROM delivery.contractor_preferences").fetchone() == (
            ["sms"],
        )


# --- IGNORED_RUN_PAUSE --------------------------------------------------------------------------
def test_ignored_run_pause_defers_after_three_unanswered_and_a_linked_reply_ends_it(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    # GIVEN the back-off on (3/7d) and three proactive messages sent, none answered
    pipeline.setenv(IGNORED_RUN_PAUSE="3/7d")
    contractor = make_contractor(phone=PHONE)
    sent = [send_proactive(pipeline, make_message, contractor) for _ in range(3)]
    oldest = state_row(pipeline.conn, sent[0])["sent_at"]
    # WHEN a fourth is due
    fourth = make_message(contractor)
    pipeline.evaluate({"sources": ["proactive"]})
    pipeline.drain(timeout=30)
    # THEN it is deferred, with the reason, until seven days after the oldest of the three
    row = state_row(pipeline.conn, fourth)
    assert (row["state"], row["reason"]) == ("deferred", "ignored_run_pause")
    assert row["next_attempt_at"] == oldest + timedelta(days=7)
    # WHEN the contractor answers the latest, and a fifth is due
    process(pipeline.services, sms(PHONE, TEXT))
    fifth = send_proactive(pipeline, make_message, contractor)
    # THEN it is sent (the run is broken)
    assert state_row(pipeline.conn, fifth)["state"] == "sent"
