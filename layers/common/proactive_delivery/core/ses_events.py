"""SES events as they reach the inbound queue: the raw EventBridge event (the stack's SES
configuration set publishes to the default bus, a rule puts the set's events on the inbound
queue; template.yaml), not the edge's envelope. Recognised by "source": "aws.ses".

    {"version": "0", "id": "<EventBridge id>", "detail-type": "Email Bounced", "source": "aws.ses",
     "time": "2026-12-01T21:00:00Z", ...,
     "detail": {"eventType": "Bounce",
                "bounce": {"bounceType": "Permanent", "bounceSubType": "General", ...},
                "mail": {"messageId": "<SES MessageId>", "tags": {"message_id": ["proactive-123"], ...}}}}

The message is found by the `message_id` e-mail tag our SES channel sets (our identity),
else by SES's MessageId (the provider reference deliver recorded). Delivery is `delivered`;
a permanent bounce is `undelivered` and suppresses e-mail for the contractor; a transient
(or undetermined) bounce is `undelivered` and suppresses nothing; a complaint is an e-mail
opt-out (its status is left as it is: the e-mail was delivered); a reject is `failed`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from proactive_delivery.core.errors import MalformedRecordError
from proactive_delivery.core.inbound import parse_utc
from proactive_delivery.core.models import SOURCES
from proactive_delivery.core.receipts import BOUNCED, COMPLAINT_SOURCE, ReceiptEffect

SES_SOURCE: Final = "aws.ses"
SES_PREFIX: Final = "ses:"
EVENT_TYPES: Final = ("Delivery", "Bounce", "Complaint", "Reject")
_EVENT_ID = re.compile(r"^[A-Za-z0-9-]{1,128}$")
_OUR_MESSAGE_ID = re.compile(rf"^(?:{'|'.join(SOURCES)})-[0-9]{{1,18}}$")
_SUBTYPE = re.compile(r"^[A-Za-z]{1,40}$")


@dataclass(frozen=True)
class SesEvent:
    """One SES event as the processor applies it: a receipt for the e-mail it names."""

    identity: str
    occurred_at: datetime
    message_id: str | None
    provider_ref: str | None
    # None: no status change (a complaint).
    status: str | None
    error_code: str | None
    effect: ReceiptEffect | None


def is_ses_event(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("source") == SES_SOURCE


def ses_event(doc: dict[str, Any]) -> SesEvent:
    """The SES event an EventBridge event holds; MalformedRecordError (a reason that names
    the field, never its value) for anything else."""
    event_id = doc.get("id")
    if not isinstance(event_id, str) or not _EVENT_ID.match(event_id):
        raise MalformedRecordError("invalid_ses_event", "id is not an EventBridge event id")
    detail = doc.get("detail")
    if not isinstance(detail, dict):
        raise MalformedRecordError("invalid_ses_event", "detail must be an object")
    event_type = detail.get("eventType")
    if event_type not in EVENT_TYPES:
        raise MalformedRecordError(
            "invalid_ses_event", f"detail.eventType must be one of {', '.join(EVENT_TYPES)}"
        )
    mail = detail.get("mail")
    if not isinstance(mail, dict):
        raise MalformedRecordError("invalid_ses_event", "detail.mail must be an object")
    provider_ref = mail.get("messageId")
    if provider_ref is not None and not (isinstance(provider_ref, str) and 0 < len(provider_ref) <= 256):
        raise MalformedRecordError("invalid_ses_event", "detail.mail.messageId must be a string")
    message_id = _tagged_message_id(mail.get("tags"))
    if message_id is None and provider_ref is None:
        raise MalformedRecordError("invalid_ses_event", "neither a message_id tag nor detail.mail.messageId")
    occurred_at = parse_utc(doc.get("time"), "time")
    status, error_code, effect = _outcome(event_type, detail)
    return SesEvent(SES_PREFIX + event_id, occurred_at, message_id, provider_ref, status, error_code, effect)


def _outcome(event_type: str, detail: dict[str, Any]) -> tuple[str | None, str | None, ReceiptEffect | None]:
    """(status, error code, effect) of an SES event."""
    if event_type == "Delivery":
        return "delivered", None, None
    if event_type == "Complaint":
        # Delivered, and marked as spam: an e-mail opt-out; the status is left as it is.
        return None, None, ReceiptEffect("opt_out", COMPLAINT_SOURCE)
    if event_type == "Reject":
        return "failed", "Reject", None
    bounce = detail.get("bounce")
    if not isinstance(bounce, dict):
        raise MalformedRecordError("invalid_ses_event", "detail.bounce must be an object")
    kind = bounce.get("bounceType")
    if kind not in ("Permanent", "Transient", "Undetermined"):
        raise MalformedRecordError("invalid_ses_event", "detail.bounce.bounceType is not an SES bounce type")
    subtype = bounce.get("bounceSubType")
    named = isinstance(subtype, str) and _SUBTYPE.match(subtype)
    error_code = f"{kind}:{subtype}" if named else str(kind)
    # Only a permanent bounce suppresses e-mail; a transient one (a full mailbox) does not.
    return "undelivered", error_code, ReceiptEffect("suppress", BOUNCED) if kind == "Permanent" else None


def _tagged_message_id(tags: Any) -> str | None:
    """Our identity from the e-mail's `message_id` tag (a list of one string), when it is one."""
    if not isinstance(tags, dict):
        return None
    values = tags.get("message_id")
    if not isinstance(values, list) or not values or not isinstance(values[0], str):
        return None
    return values[0] if _OUR_MESSAGE_ID.match(values[0]) else None
