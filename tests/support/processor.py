"""The inbound processor as the tests drive it: queue messages in the edge's format (built with
the edge's own InboundEvent, or SES's EventBridge event), SQS events as the event source
mapping hands them over, and the real handler (functions/inbound_processor/app.py) on the
services the functions build. No I/O here: unit tests may import it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from proactive_delivery.core.inbound import (
    ContactDnd,
    InboundEvent,
    MessageStatus,
    SmsReceived,
    events_identity,
    twilio_message_identity,
    twilio_status_identity,
    utc_iso,
)
from proactive_delivery_tools.local.esm import LambdaContext
from tests.support.functions import load_function


def twilio_sid() -> str:
    return "SM" + uuid.uuid4().hex


def sms(
    phone: str,
    text: str,
    *,
    sid: str | None = None,
    opt_out_type: str | None = None,
    at: datetime | None = None,
    ghl: bool = False,
) -> InboundEvent:
    """An inbound SMS as the edge stores it: from Twilio (identity twilio:<sid>), or from GHL
    through n8n (events:<webhook-id>, with GHL's own timestamp `at`)."""
    received = datetime.now(UTC)
    if ghl:
        webhook_id = f"ghl-msg-{sid or uuid.uuid4().hex}"
        data = SmsReceived(phone, text, "ghl", webhook_id, None, utc_iso(at) if at else None)
        return InboundEvent(events_identity(webhook_id), received, data)
    message_sid = sid or twilio_sid()
    data = SmsReceived(phone, text, "twilio", message_sid, opt_out_type)
    return InboundEvent(twilio_message_identity(message_sid), at or received, data)


def twilio_status(provider_ref: str, status: str, error_code: str | None = None) -> InboundEvent:
    """A Twilio status callback as the edge stores it."""
    data = MessageStatus(None, provider_ref, status, error_code, "twilio")
    return InboundEvent(twilio_status_identity(provider_ref, status, error_code), datetime.now(UTC), data)


def ghl_status(message_id: str, status: str, error_code: str | None = None) -> InboundEvent:
    """A message.status event from n8n naming our own identity (proactive-123)."""
    data = MessageStatus(message_id, None, status, error_code, "ghl")
    webhook_id = f"ghl-status-{uuid.uuid4().hex}"
    return InboundEvent(events_identity(webhook_id), datetime.now(UTC), data)


def dnd(phone: str, state: str) -> InboundEvent:
    webhook_id = f"ghl-dnd-{uuid.uuid4().hex}"
    return InboundEvent(events_identity(webhook_id), datetime.now(UTC), ContactDnd(phone, state))


def ses_body(
    event_type: str,
    *,
    message_id: str | None = None,
    ses_message_id: str = "0100018c-ses",
    event_id: str | None = None,
    **detail: Any,
) -> str:
    """An SES event as EventBridge puts it on the inbound queue (no envelope)."""
    detail_types = {
        "Delivery": "Email Delivered",
        "Bounce": "Email Bounced",
        "Complaint": "Email Complaint Received",
        "Reject": "Email Rejected",
    }
    tags: dict[str, list[str]] = {"ses:configuration-set": ["stack-inbound-events"]}
    if message_id:
        tags["message_id"] = [message_id]
    return json.dumps(
        {
            "version": "0",
            "id": event_id or str(uuid.uuid4()),
            "detail-type": detail_types[event_type],
            "source": "aws.ses",
            "account": "123456789012",
            "time": utc_iso(datetime.now(UTC)),
            "region": "us-east-1",
            "resources": [],
            "detail": {
                "eventType": event_type,
                "mail": {"messageId": ses_message_id, "destination": ["someone@example.com"], "tags": tags},
                **detail,
            },
        }
    )


def body_of(event: InboundEvent | str) -> str:
    return event if isinstance(event, str) else event.to_body()


def sqs_event(bodies: Sequence[InboundEvent | str], *, receive_count: int = 1) -> dict[str, Any]:
    """An SQS event of the inbound queue, as the event source mapping hands it over."""
    return {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": f"receipt-{uuid.uuid4().hex}",
                "body": body_of(body),
                "attributes": {"ApproximateReceiveCount": str(receive_count)},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:stack-InboundQueue",
                "awsRegion": "us-east-1",
            }
            for body in bodies
        ]
    }


def processor_handler(services: Any) -> Any:
    """functions/inbound_processor/app.py's handler, on `services`."""
    return load_function("inbound_processor").lambda_handler.with_services(services)


def process(services: Any, *events: InboundEvent | str, receive_count: int = 1) -> dict[str, Any]:
    """One invocation of the processor with these events as one batch."""
    handler = processor_handler(services)
    return dict(
        handler(sqs_event(events, receive_count=receive_count), LambdaContext("InboundProcessorFunction", 60))
    )
