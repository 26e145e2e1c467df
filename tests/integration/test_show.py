"""`proactive-delivery show SOURCE:ID` against a real PostgreSQL: one message's delivery
state and attempt history, never the contractor's contact details."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proactive_delivery_tools import cli


@pytest.fixture
def failed_message(conn: Any, make_contractor: Any, make_message: Any) -> int:
    """A message that failed after two attempts, whose errors quote the contractor's number
    and address (as providers' error texts do)."""
    contractor = make_contractor(phone="(312) 555-0176", email="ana.lopez@example.com")
    message = make_message(contractor_id=contractor)
    delivery_id = conn.execute(
        "INSERT INTO delivery.message_state (source, source_id, state, reason, attempts, channel, "
        "last_error, contractor_id, queued_at, next_attempt_at) VALUES ('proactive', %s, 'failed', "
        "'attempts_exhausted', 2, 'sms', 'server_error: 503 for +15550109876 (ana.lopez@example.com)', %s, "
        "now() - interval '10 minutes', now()) RETURNING id",
        (message, contractor),
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO delivery.attempt_log (delivery_id, attempt, channel, started_at, finished_at, "
        "http_status, outcome, error, latency_ms) VALUES "
        "(%(d)s, 1, 'sms', now() - interval '9 minutes', now() - interval '9 minutes', 503, 'retry', "
        "'server_error: 503', 41),"
        "(%(d)s, 2, 'sms', now() - interval '1 minute', now() - interval '1 minute', 503, 'failed', "
        "'server_error: 503 for +15550109876 (ana.lopez@example.com)', 38)",
        {"d": delivery_id},
    )
    return int(message)


def test_show_prints_state_and_attempt_history_without_contact_details(
    database_url: str, failed_message: int, capsys: Any
) -> None:
    # WHEN an operator looks at one failed message
    assert cli.main(["--database-url", database_url, "show", f"proactive:{failed_message}"]) == 0
    out = capsys.readouterr().out
    # THEN its state, reason, attempts, channel, times, last error and every attempt are there
    assert f"proactive:{failed_message} (message id proactive-{failed_message})" in out
    for expected in (
        "failed (attempts_exhausted)",
        "attempts         2",
        "channel          sms",
        "queued at",
    ):
        assert expected in out
    assert "last error       server_error: 503" in out
    attempts = [line for line in out.splitlines() if line.lstrip().startswith("#")]
    assert len(attempts) == 2
    assert "retry" in attempts[0] and "http 503" in attempts[0] and "41 ms" in attempts[0]
    assert "failed" in attempts[1]
    # AND never the phone number or the email address
    assert "5550109876" not in out and "ana.lopez" not in out


def test_show_json_carries_the_same(database_url: str, failed_message: int, capsys: Any) -> None:
    assert cli.main(["--database-url", database_url, "show", f"proactive-{failed_message}", "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)
    assert report["state"]["state"] == "failed"
    assert report["state"]["reason"] == "attempts_exhausted"
    assert report["state"]["attempts"] == 2
    assert report["state"]["queued_at"] and report["state"]["next_attempt_at"]
    assert [(a["attempt"], a["outcome"], a["http_status"], a["latency_ms"]) for a in report["attempts"]] == [
        (1, "retry", 503, 41),
        (2, "failed", 503, 38),
    ]
    assert all(a["started_at"] and a["finished_at"] for a in report["attempts"])
    assert "5550109876" not in out and "ana.lopez" not in out


def test_show_a_due_message_evaluate_has_not_seen_yet(
    database_url: str, make_message: Any, capsys: Any
) -> None:
    message = make_message()
    assert cli.main(["--database-url", database_url, "show", f"proactive:{message}"]) == 0
    assert "not seen by evaluate yet" in capsys.readouterr().out


def test_show_a_follow_up(database_url: str, make_followup: Any, capsys: Any) -> None:
    followup = make_followup(template="Follow up on the Smith estimate", status="cancelled")
    assert cli.main(["--database-url", database_url, "show", f"followup:{followup}", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["platform"]["status"] == "cancelled"
    assert report["state"] is None


@pytest.mark.parametrize(
    ("ref", "cause"),
    [
        ("proactive:999999", "no message proactive:999999"),
        ("followup:999999", "no message followup:999999"),
        ("proactive", "is not a message: use SOURCE:ID"),
        ("email:4", "is not a message: use SOURCE:ID"),
        ("proactive:abc", "is not a message"),
        ("proactive:0", "is not a message"),
    ],
)
def test_show_an_unknown_or_malformed_message_is_one_line(
    database_url: str, capsys: Any, ref: str, cause: str
) -> None:
    # WHEN show is given a message that does not exist, or not a message at all
    code = cli.main(["--database-url", database_url, "show", ref])
    # THEN exit 2 with one line naming why
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == "" and "Traceback" not in captured.err
    [line] = captured.err.strip().splitlines()
    assert cause in line


# --- the way back: the receipt and the replies linked to a message ---------------------------------
PHONE = "+13125550142"
REPLY = "Thursday at 4 works for the Oak St walkthrough"


@pytest.fixture
def answered(pipeline: Any, make_contractor: Any, make_message: Any) -> dict[str, Any]:
    """A proactive message sent by the real evaluate and deliver functions, answered by the
    contractor twice (the inbound processor links both), and its receipts: `undelivered`
    with a code, then `delivered` (receipts only move up)."""
    from tests.support.db import state_row
    from tests.support.processor import ghl_status, process, sms

    contractor = make_contractor(phone="(312) 555-0142", email="ana.ortiz@example.com")
    message = make_message(contractor)
    pipeline.evaluate({"sources": ["proactive"]})
    pipeline.drain(timeout=30)
    assert state_row(pipeline.conn, message)["state"] == "sent"
    assert process(pipeline.services, ghl_status(f"proactive-{message}", "undelivered", "30003")) == {
        "batchItemFailures": []
    }
    process(pipeline.services, sms(PHONE, REPLY))
    process(pipeline.services, sms(PHONE, "Also Friday is fine"))
    process(pipeline.services, ghl_status(f"proactive-{message}", "delivered"))
    # A STOP from the same number is not a reply to the message: it is not linked to it
    process(pipeline.services, sms(PHONE, "STOP"))
    return {"message": message, "contractor": contractor, "url": pipeline.env["DATABASE_URL"]}


def _no_contact_details_or_text(out: str) -> None:
    for leak in ("5550142", "555-0142", "ana.ortiz", REPLY, "Friday"):
        assert leak not in out


def test_show_json_has_the_delivery_status_and_the_replies_linked(
    answered: dict[str, Any], capsys: Any
) -> None:
    # WHEN an operator looks at the answered message, as JSON
    assert (
        cli.main(["--database-url", answered["url"], "show", f"proactive:{answered['message']}", "--json"])
        == 0
    )
    out = capsys.readouterr().out
    report = json.loads(out)
    # THEN its delivery status is the highest receipt's: delivered, no code, with its time
    status = report["delivery_status"]
    assert (status["status"], status["error_code"]) == ("delivered", None) and status["at"]
    # AND both replies are there, linked, in the order they came, with their times
    replies = report["replies"]
    assert [(r["kind"], r["action"], r["outcome"], r["provider"]) for r in replies] == [
        ("sms.received", "reply", "linked", "twilio")
    ] * 2
    assert all(r["occurred_at"] and r["received_at"] and r["applied_at"] for r in replies)
    assert replies[0]["occurred_at"] <= replies[1]["occurred_at"]
    assert all(r["event"].startswith("twilio:") for r in replies)
    # AND the receipts in the order they happened, the undelivered one with its code
    assert [(r["status"], r["error_code"]) for r in report["receipts"]] == [
        ("undelivered", "30003"),
        ("delivered", None),
    ]
    # AND where the reply's text is, instead of the text
    assert report["reply_text_column"] == "ai_proactive_messages.contractor_response"
    _no_contact_details_or_text(out)


def test_show_prints_the_receipt_and_the_replies_without_their_text(
    answered: dict[str, Any], capsys: Any
) -> None:
    assert cli.main(["--database-url", answered["url"], "show", f"proactive:{answered['message']}"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    [receipt] = [line for line in lines if line.lstrip().startswith("receipt ")]
    assert receipt.split()[1] == "delivered" and " at 20" in receipt
    [start] = [n for n, line in enumerate(lines) if line.startswith("Replies (text not kept here")]
    assert "the first one's goes to ai_proactive_messages.contractor_response" in lines[start]
    replies = lines[start + 1 : start + 3]
    assert all(" reply linked (sms.received, twilio; applied " in r for r in replies)
    start = lines.index("Receipts")
    assert "undelivered error 30003 (ghl; applied " in lines[start + 1]
    assert "delivered (ghl; applied " in lines[start + 2]
    _no_contact_details_or_text(out)


def test_show_a_message_without_receipt_or_reply(
    database_url: str, conn: Any, make_message: Any, capsys: Any
) -> None:
    # GIVEN a message sent a minute ago that no receipt and no reply has reached yet
    message = make_message()
    conn.execute(
        "INSERT INTO delivery.message_state (source, source_id, state, attempts, channel, sent_at)"
        " VALUES ('proactive', %s, 'sent', 1, 'sms', now() - interval '1 minute')",
        (message,),
    )
    assert cli.main(["--database-url", database_url, "show", f"proactive:{message}", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["delivery_status"] == {"status": None, "error_code": None, "at": None}
    assert (report["replies"], report["receipts"]) == ([], [])
    assert cli.main(["--database-url", database_url, "show", f"proactive:{message}"]) == 0
    out = capsys.readouterr().out
    assert "receipt          none yet (sent, no receipt recorded)" in out
    assert "Replies: none linked" in out and "Receipts: none" in out
