"""Receipts (core/receipts.py, core/ses_events.py): the ranks the SQL uses, what each
provider code and SES event means for the contractor's next message."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from proactive_delivery.core.errors import MalformedRecordError
from proactive_delivery.core.receipts import RANKS, ReceiptEffect, carrier_effect, rank
from proactive_delivery.core.ses_events import is_ses_event, ses_event

ROOT = Path(__file__).resolve().parents[2]
MIGRATION = ROOT / "tools" / "proactive_delivery_tools" / "schema" / "migrations" / "0008_inbound.sql"


def test_the_sql_function_ranks_as_the_code_does() -> None:
    # GIVEN delivery.receipt_rank as the migration defines it
    text = MIGRATION.read_text(encoding="utf-8")
    body = text[text.index("FUNCTION delivery.receipt_rank") :].split("$$")[1]
    in_sql = {status: int(n) for status, n in re.findall(r"WHEN '(\w+)' THEN (\d+)", body)}
    # THEN the same statuses with the same ranks: sent < undelivered, failed < delivered < read
    assert in_sql == RANKS
    assert rank("sent") < rank("undelivered") == rank("failed") < rank("delivered") < rank("read")
    assert rank(None) == rank("queued") == 0


@pytest.mark.parametrize(
    ("code", "effect"),
    [
        ("21610", ReceiptEffect("opt_out", "twilio")),
        ("21211", ReceiptEffect("suppress", "invalid_number")),
        ("21614", ReceiptEffect("suppress", "invalid_number")),
        ("30005", ReceiptEffect("suppress", "unknown_handset")),
        ("30006", ReceiptEffect("suppress", "landline_or_unreachable_carrier")),
        # Transient: worth another try, nothing suppressed
        ("30003", None),
        ("30001", None),
        ("30008", None),
        (None, None),
    ],
)
def test_permanent_codes_suppress_and_transient_ones_do_not(code: str | None, effect: Any) -> None:
    assert carrier_effect("undelivered", code) == effect
    assert carrier_effect("failed", code) == effect
    # A code on a status that is not a failure means nothing
    assert carrier_effect("delivered", code) is None


def ses(event_type: str, **detail: Any) -> dict[str, Any]:
    """An SES event as EventBridge puts it on the inbound queue."""
    detail_types = {
        "Delivery": "Email Delivered",
        "Bounce": "Email Bounced",
        "Complaint": "Email Complaint Received",
        "Reject": "Email Rejected",
    }
    return {
        "version": "0",
        "id": "3b0c2f5e-7c51-4a36-9d8a-6f1f0e3f7a11",
        "detail-type": detail_types[event_type],
        "source": "aws.ses",
        "account": "123456789012",
        "time": "2026-12-01T21:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "eventType": event_type,
            "mail": {
                "timestamp": "2026-12-01T20:59:58.000Z",
                "source": "coach@example.com",
                "messageId": "0100018c-ses-message-id",
                "destination": ["contractor1@example.com"],
                "tags": {"ses:configuration-set": ["stack-set"], "message_id": ["proactive-123"]},
            },
            **detail,
        },
    }


def test_ses_events_become_receipts_of_the_tagged_message() -> None:
    delivered = ses_event(ses("Delivery", delivery={"timestamp": "2026-12-01T21:00:00Z"}))
    assert delivered.identity == "ses:3b0c2f5e-7c51-4a36-9d8a-6f1f0e3f7a11"
    assert (delivered.message_id, delivered.provider_ref) == ("proactive-123", "0100018c-ses-message-id")
    assert (delivered.status, delivered.effect) == ("delivered", None)
    assert delivered.occurred_at.isoformat() == "2026-12-01T21:00:00+00:00"

    hard = ses_event(ses("Bounce", bounce={"bounceType": "Permanent", "bounceSubType": "NoEmail"}))
    assert (hard.status, hard.error_code, hard.effect) == (
        "undelivered",
        "Permanent:NoEmail",
        ReceiptEffect("suppress", "bounced"),
    )
    soft = ses_event(ses("Bounce", bounce={"bounceType": "Transient", "bounceSubType": "MailboxFull"}))
    assert (soft.status, soft.effect) == ("undelivered", None)
    complaint = ses_event(ses("Complaint", complaint={"complaintFeedbackType": "abuse"}))
    assert (complaint.status, complaint.effect) == (None, ReceiptEffect("opt_out", "complaint"))
    assert ses_event(ses("Reject", reject={"reason": "Bad content"})).status == "failed"


def test_an_ses_event_without_our_tag_is_found_by_sess_message_id() -> None:
    doc = ses("Delivery")
    doc["detail"]["mail"]["tags"] = {"ses:configuration-set": ["stack-set"]}
    event = ses_event(doc)
    assert (event.message_id, event.provider_ref) == (None, "0100018c-ses-message-id")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d.pop("id"), "invalid_ses_event"),
        (lambda d: d["detail"].update(eventType="Open"), "invalid_ses_event"),
        (lambda d: d["detail"].pop("mail"), "invalid_ses_event"),
        (lambda d: d.update(time="2026-12-01 21:00"), "invalid_data"),
        (lambda d: d["detail"]["mail"].update(messageId=None, tags={}), "invalid_ses_event"),
        (
            lambda d: d["detail"].update(eventType="Bounce", bounce={"bounceType": "Soft"}),
            "invalid_ses_event",
        ),
    ],
)
def test_a_malformed_ses_event_is_refused_with_a_reason_that_names_no_value(change: Any, reason: str) -> None:
    doc = ses("Delivery")
    change(doc)
    with pytest.raises(MalformedRecordError) as excinfo:
        ses_event(doc)
    assert excinfo.value.reason == reason
    assert "contractor1@example.com" not in str(excinfo.value)


def test_only_eventbridge_ses_events_are_recognised_as_such() -> None:
    assert is_ses_event(ses("Delivery"))
    assert not is_ses_event({"v": 1, "id": "events:x", "kind": "message.status"})
    assert not is_ses_event(json.loads('["aws.ses"]'))
