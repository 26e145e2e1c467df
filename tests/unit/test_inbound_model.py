"""The inbound queue message (core/inbound.py): what the edge writes reads back the same,
and anything else is refused with a reason that names no value."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from proactive_delivery.core.errors import MalformedRecordError
from proactive_delivery.core.inbound import (
    ContactDnd,
    InboundEvent,
    InboundKind,
    MessageStatus,
    SmsReceived,
    events_identity,
    our_message_id,
    twilio_error_code,
    twilio_message_identity,
    twilio_receipt_status,
    twilio_status_identity,
)

SID = "SM" + "c3" * 16
PHONE = "+13125550142"
TEXT = "Running late, 10 min \N{SMILING FACE WITH SMILING EYES}"
RECEIVED = datetime(2026, 12, 1, 21, 0, 0, 123000, tzinfo=UTC)

EVENTS = [
    InboundEvent(f"twilio:{SID}", RECEIVED, SmsReceived(PHONE, TEXT, "twilio", SID, "STOP")),
    InboundEvent(
        "events:msg_1", RECEIVED, SmsReceived(PHONE, "", "ghl", None, None, "2026-12-01T20:59:58.000Z")
    ),
    InboundEvent(
        f"twilio:{SID}:undelivered:30006",
        RECEIVED,
        MessageStatus(None, SID, "undelivered", "30006", "twilio"),
    ),
    InboundEvent("events:msg_2", RECEIVED, MessageStatus("followup-9", None, "read", None, "ghl")),
    InboundEvent("events:msg_3", RECEIVED, ContactDnd(PHONE, "inactive")),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: f"{e.kind}-{e.id}")
def test_every_kind_reads_back_as_written(event: InboundEvent) -> None:
    # GIVEN an event WHEN it is written to a queue body and read back
    body = event.to_body()
    # THEN it is the same event, in the contract's envelope
    assert InboundEvent.from_body(body) == event
    doc = json.loads(body)
    assert doc["v"] == 1 and doc["kind"] == str(event.kind) and doc["id"] == event.id
    assert doc["received_at"] == "2026-12-01T21:00:00.123Z"


def test_received_at_is_written_in_utc_whatever_zone_it_came_in() -> None:
    # GIVEN a moment expressed in a zone east of UTC
    tokyo = RECEIVED.astimezone(timezone(timedelta(hours=9)))
    event = InboundEvent("events:msg_tz", tokyo, ContactDnd(PHONE, "active"))
    # THEN the body says the UTC instant, and reads back as the same instant
    assert json.loads(event.to_body())["received_at"] == "2026-12-01T21:00:00.123Z"
    assert InboundEvent.from_body(event.to_body()).received_at == RECEIVED


def good() -> dict[str, Any]:
    return json.loads(EVENTS[0].to_body())


def changed(**top: Any) -> str:
    doc = good()
    doc.update(top)
    return json.dumps(doc)


def changed_data(**data: Any) -> str:
    doc = good()
    doc["data"].update(data)
    return json.dumps(doc)


MALFORMED: dict[str, tuple[Any, str]] = {
    "not JSON": ("{not json", "invalid_json"),
    "empty": ("", "invalid_json"),
    "nothing": (None, "invalid_json"),
    "a list": ("[1, 2]", "not_an_object"),
    "a key missing": (
        json.dumps({k: v for k, v in good().items() if k != "received_at"}),
        "invalid_envelope",
    ),
    "a key extra": (changed(extra=1), "invalid_envelope"),
    "version 2": (changed(v=2), "unsupported_version"),
    "version as text": (changed(v="1"), "unsupported_version"),
    "version true": (changed(v=True), "unsupported_version"),
    "unknown kind": (changed(kind="sms.sent"), "unknown_kind"),
    "id of another source": (changed(id=f"ses:{SID}"), "invalid_id"),
    "id with a space": (changed(id="events:msg 1"), "invalid_id"),
    "id too long": (changed(id="events:" + "x" * 400), "invalid_id"),
    "received_at naive": (changed(received_at="2026-12-01T21:00:00"), "invalid_received_at"),
    "received_at not a time": (changed(received_at="yesterday"), "invalid_received_at"),
    "data not an object": (changed(data=[PHONE]), "invalid_data"),
    "data key extra": (changed_data(contact_id=7), "invalid_data"),
    "data key missing": (json.dumps({**good(), "data": {"phone": PHONE, "text": TEXT}}), "invalid_data"),
    "phone empty": (changed_data(phone=""), "invalid_data"),
    "phone a number": (changed_data(phone=13125550142), "invalid_data"),
    "phone with a newline": (changed_data(phone="+1312\n5550142"), "invalid_data"),
    "text not text": (changed_data(text=None), "invalid_data"),
    "provider unknown": (changed_data(provider="sns"), "invalid_data"),
    "opt-out class unknown": (changed_data(opt_out_type="UNSUB"), "invalid_data"),
    "sent_at naive": (changed_data(sent_at="2026-12-01T21:00:00"), "invalid_data"),
    "dnd from twilio": (
        json.dumps({**good(), "kind": "contact.dnd", "data": {"phone": PHONE, "sms": "active"}}),
        "invalid_id",
    ),
    "status without a reference": (
        json.dumps(
            {
                **good(),
                "kind": "message.status",
                "data": {
                    "message_id": None,
                    "provider_ref": None,
                    "status": "sent",
                    "error_code": None,
                    "provider": "twilio",
                },
            }
        ),
        "invalid_data",
    ),
    "status with a foreign message_id": (
        json.dumps(
            {
                **good(),
                "kind": "message.status",
                "data": {
                    "message_id": "abc-1",
                    "provider_ref": None,
                    "status": "sent",
                    "error_code": None,
                    "provider": "ghl",
                },
            }
        ),
        "invalid_data",
    ),
    "status error code as a number": (
        json.dumps(
            {
                **good(),
                "kind": "message.status",
                "data": {
                    "message_id": None,
                    "provider_ref": SID,
                    "status": "failed",
                    "error_code": 30006,
                    "provider": "twilio",
                },
            }
        ),
        "invalid_data",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_anything_but_the_contract_is_refused_with_a_reason(case: str) -> None:
    body, reason = MALFORMED[case]
    # GIVEN a body that breaks the contract in one way WHEN it is read
    with pytest.raises(MalformedRecordError) as raised:
        InboundEvent.from_body(body)
    # THEN the reason says which way, and the message holds no phone number or text
    assert raised.value.reason == reason
    assert "5550142" not in str(raised.value) and TEXT not in str(raised.value)


def test_a_naive_received_at_cannot_be_written() -> None:
    with pytest.raises(MalformedRecordError):
        InboundEvent("events:msg", datetime(2026, 12, 1, 21, 0), ContactDnd(PHONE, "active"))


def test_identities() -> None:
    assert twilio_message_identity(SID) == f"twilio:{SID}"
    assert twilio_status_identity(SID, "delivered", None) == f"twilio:{SID}:delivered"
    assert twilio_status_identity(SID, "undelivered", "30006") == f"twilio:{SID}:undelivered:30006"
    assert events_identity("msg_2Lh9KRb0pzN4LePd3XiA4v12Axj") == "events:msg_2Lh9KRb0pzN4LePd3XiA4v12Axj"
    for bad in ("", "with space", "x" * 257, "tab\there"):
        with pytest.raises(MalformedRecordError):
            events_identity(bad)
    with pytest.raises(MalformedRecordError):
        twilio_message_identity("SM123")


@pytest.mark.parametrize(
    ("given", "status"),
    [
        ("delivered", "delivered"),
        ("sent", "sent"),
        ("undelivered", "undelivered"),
        ("failed", "failed"),
        ("read", "read"),
        (" Delivered ", "delivered"),
        ("queued", None),
        ("accepted", None),
        ("sending", None),
        ("scheduled", None),
        ("canceled", None),
        ("receiving", None),
    ],
)
def test_twilio_status_normalisation(given: str, status: str | None) -> None:
    assert twilio_receipt_status(given) == status


def test_twilio_error_codes_and_our_message_ids() -> None:
    assert twilio_error_code("30006") == "30006"
    assert twilio_error_code("") is None
    assert twilio_error_code(None) is None
    with pytest.raises(MalformedRecordError):
        twilio_error_code("3000a")
    assert our_message_id("proactive-123") == ("proactive-123", None)
    assert our_message_id("followup-9") == ("followup-9", None)
    assert our_message_id("SM" + "d4" * 16) == (None, "SM" + "d4" * 16)
    assert our_message_id("proactive-") == (None, "proactive-")


def test_kinds_are_the_contracts() -> None:
    assert {str(k) for k in InboundKind} == {"sms.received", "message.status", "contact.dnd"}
