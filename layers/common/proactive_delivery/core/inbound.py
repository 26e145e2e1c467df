"""The way back: one inbound event as the edge stores it on the inbound queue, and what the
processor reads back (docs/inbound.md).

    {"v": 1, "id": "<identity>", "kind": "<kind>", "received_at": "<ISO-8601 UTC>", "data": {...}}

The identity is what makes an event apply once however often it arrives: Twilio's
MessageSid (with the status, and the error code when there is one, for a receipt, since one
message has several), or the webhook-id header of a Standard Webhooks event. A provider's
retry, or a replay from the DLQ, carries the same identity.

Reading a body back is strict: any key, type or value the contract does not allow raises
MalformedRecordError with a reason naming what is wrong (never the value: it may be a phone
number or message text). SES events are not in this envelope: EventBridge puts its own event
on the queue, recognised by "source": "aws.ses".
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import ClassVar, Final

from proactive_delivery.core.errors import MalformedRecordError
from proactive_delivery.core.models import SOURCES

VERSION: Final = 1


class InboundKind(StrEnum):
    SMS_RECEIVED = "sms.received"
    MESSAGE_STATUS = "message.status"
    CONTACT_DND = "contact.dnd"


# Delivery receipts the processor records, ranked there (sent < undelivered, failed <
# delivered < read). Twilio's statuses before "sent" say nothing worth recording.
RECEIPT_STATUSES: Final = ("sent", "delivered", "undelivered", "failed", "read")
TWILIO_IN_FLIGHT_STATUSES: Final = frozenset({"queued", "accepted", "sending", "scheduled"})
# Twilio's Advanced Opt-Out tells which keyword class an inbound message matched.
OPT_OUT_TYPES: Final = ("STOP", "START", "HELP")
DND_STATES: Final = ("active", "inactive", "permanent")
SMS_PROVIDERS: Final = ("twilio", "ghl")
STATUS_PROVIDERS: Final = ("twilio", "ghl", "ses")

# Where an event came from, as the identity's prefix.
TWILIO_PREFIX: Final = "twilio:"
EVENTS_PREFIX: Final = "events:"
_IDENTITY = re.compile(r"^(twilio|events):[\x21-\x7e]{1,300}$")
# A webhook-id is printable ASCII without spaces (Standard Webhooks ids are msg_...).
_WEBHOOK_ID = re.compile(r"^[\x21-\x7e]{1,256}$")
# Twilio SIDs: two letters and 32 hex digits (SM..., MM... for a message).
_TWILIO_SID = re.compile(r"^[A-Za-z]{2}[0-9a-fA-F]{32}$")
_ERROR_CODE = re.compile(r"^[0-9]{1,10}$")
# Our own message identity (MessageKey.idempotency_key): what the outbound webhook carried.
_OUR_MESSAGE_ID = re.compile(rf"^(?:{'|'.join(SOURCES)})-[0-9]{{1,18}}$")
# Long enough for any phone format a provider sends, short enough to bound a row.
MAX_PHONE_LENGTH: Final = 64
MAX_REFERENCE_LENGTH: Final = 256


def utc_iso(moment: datetime) -> str:
    """An aware moment as ISO-8601 in UTC with milliseconds: 2026-12-01T21:00:00.000Z."""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no defined moment")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_utc(value: object, what: str) -> datetime:
    """An ISO-8601 timestamp with an offset, as an aware UTC datetime. A timestamp without
    an offset is refused: it would be read in whatever zone the reader happens to be in."""
    if not isinstance(value, str) or len(value) > 64:
        raise MalformedRecordError("invalid_data", f"{what} must be an ISO-8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise MalformedRecordError("invalid_data", f"{what} is not an ISO-8601 timestamp") from None
    if parsed.tzinfo is None:
        raise MalformedRecordError("invalid_data", f"{what} has no UTC offset")
    return parsed.astimezone(UTC)


def _text(value: object, what: str, *, limit: int | None = None, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value) or (limit is not None and len(value) > limit):
        raise MalformedRecordError("invalid_data", f"{what} must be a{'' if empty else ' non-empty'} string")
    return value


def _optional_text(value: object, what: str, *, limit: int = MAX_REFERENCE_LENGTH) -> str | None:
    return None if value is None else _text(value, what, limit=limit)


def _one_of(value: object, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise MalformedRecordError("invalid_data", f"{what} must be one of {', '.join(allowed)}")
    return str(value)


def _phone(value: object) -> str:
    phone = _text(value, "phone", limit=MAX_PHONE_LENGTH)
    if any(not ch.isprintable() for ch in phone):
        raise MalformedRecordError("invalid_data", "phone has control characters")
    return phone


@dataclass(frozen=True)
class SmsReceived:
    """An SMS a contractor sent us. The phone is as the provider gave it (E.164 from Twilio);
    the processor normalises it."""

    kind: ClassVar[InboundKind] = InboundKind.SMS_RECEIVED
    phone: str
    text: str
    provider: str
    provider_message_id: str | None = None
    opt_out_type: str | None = None
    sent_at: str | None = None

    def __post_init__(self) -> None:
        _phone(self.phone)
        _text(self.text, "text", empty=True)
        _one_of(self.provider, SMS_PROVIDERS, "provider")
        _optional_text(self.provider_message_id, "provider_message_id")
        if self.opt_out_type is not None:
            _one_of(self.opt_out_type, OPT_OUT_TYPES, "opt_out_type")
        if self.sent_at is not None:
            parse_utc(self.sent_at, "sent_at")


@dataclass(frozen=True)
class MessageStatus:
    """A delivery receipt for a message we sent: found by our identity (message_id) or by
    the provider's reference (provider_ref), at least one of the two."""

    kind: ClassVar[InboundKind] = InboundKind.MESSAGE_STATUS
    message_id: str | None
    provider_ref: str | None
    status: str
    error_code: str | None
    provider: str

    def __post_init__(self) -> None:
        if self.message_id is not None and not (
            isinstance(self.message_id, str) and _OUR_MESSAGE_ID.match(self.message_id)
        ):
            raise MalformedRecordError("invalid_data", "message_id is not one of our message identities")
        _optional_text(self.provider_ref, "provider_ref")
        if self.message_id is None and self.provider_ref is None:
            raise MalformedRecordError("invalid_data", "message_id or provider_ref is required")
        _one_of(self.status, RECEIPT_STATUSES, "status")
        if self.error_code is not None and not (
            isinstance(self.error_code, str) and _ERROR_CODE.match(self.error_code)
        ):
            raise MalformedRecordError("invalid_data", "error_code must be a string of digits")
        _one_of(self.provider, STATUS_PROVIDERS, "provider")


@dataclass(frozen=True)
class ContactDnd:
    """The platform's do-not-disturb state of a contact's SMS channel, from GHL via n8n."""

    kind: ClassVar[InboundKind] = InboundKind.CONTACT_DND
    phone: str
    sms: str

    def __post_init__(self) -> None:
        _phone(self.phone)
        _one_of(self.sms, DND_STATES, "sms")


EventData = SmsReceived | MessageStatus | ContactDnd
_DATA_TYPES: Final[dict[InboundKind, type[SmsReceived] | type[MessageStatus] | type[ContactDnd]]] = {
    InboundKind.SMS_RECEIVED: SmsReceived,
    InboundKind.MESSAGE_STATUS: MessageStatus,
    InboundKind.CONTACT_DND: ContactDnd,
}
_ENVELOPE_KEYS: Final = frozenset({"v", "id", "kind", "received_at", "data"})


@dataclass(frozen=True)
class InboundEvent:
    """One verified event: its identity, when the edge received it, and what it says."""

    id: str
    received_at: datetime
    data: EventData

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _IDENTITY.match(self.id):
            raise MalformedRecordError("invalid_id", "id must be twilio:<sid...> or events:<webhook-id>")
        if self.kind is InboundKind.CONTACT_DND and not self.id.startswith(EVENTS_PREFIX):
            raise MalformedRecordError("invalid_id", "contact.dnd events come from the events route only")
        if not isinstance(self.received_at, datetime) or self.received_at.tzinfo is None:
            raise MalformedRecordError("invalid_received_at", "received_at must be an aware datetime")

    @property
    def kind(self) -> InboundKind:
        return self.data.kind

    def to_body(self) -> str:
        return json.dumps(
            {
                "v": VERSION,
                "id": self.id,
                "kind": str(self.kind),
                "received_at": utc_iso(self.received_at),
                "data": asdict(self.data),
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @classmethod
    def from_body(cls, body: str | bytes | None) -> InboundEvent:
        """The event a queue message holds; MalformedRecordError (with a reason) for anything
        that is not exactly the contract's envelope."""
        if body is None:
            raise MalformedRecordError("invalid_json", "the record has no body")
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise MalformedRecordError("invalid_json", "the body is not JSON") from None
        if not isinstance(doc, dict):
            raise MalformedRecordError("not_an_object", "the body is not a JSON object")
        if set(doc) != _ENVELOPE_KEYS:
            raise MalformedRecordError(
                "invalid_envelope", f"keys must be {', '.join(sorted(_ENVELOPE_KEYS))}"
            )
        if type(doc["v"]) is not int or doc["v"] != VERSION:
            raise MalformedRecordError("unsupported_version", f"v must be {VERSION}")
        try:
            kind = InboundKind(doc["kind"])
        except ValueError:
            raise MalformedRecordError("unknown_kind", "kind is not an inbound event kind") from None
        try:
            received_at = parse_utc(doc["received_at"], "received_at")
        except MalformedRecordError:
            raise MalformedRecordError(
                "invalid_received_at", "received_at is not ISO-8601 with an offset"
            ) from None
        return cls(id=doc["id"], received_at=received_at, data=_data_from(kind, doc["data"]))


def _data_from(kind: InboundKind, data: object) -> EventData:
    data_type = _DATA_TYPES[kind]
    if not isinstance(data, dict):
        raise MalformedRecordError("invalid_data", "data must be a JSON object")
    expected = {f.name for f in fields(data_type)}
    if set(data) != expected:
        raise MalformedRecordError("invalid_data", f"{kind} data keys must be {', '.join(sorted(expected))}")
    return data_type(**data)


# -- identities -----------------------------------------------------------------------------


def twilio_sid(value: object, what: str = "MessageSid") -> str:
    if not isinstance(value, str) or not _TWILIO_SID.match(value):
        raise MalformedRecordError("invalid_data", f"{what} is not a Twilio SID")
    return value


def twilio_message_identity(message_sid: str) -> str:
    return TWILIO_PREFIX + twilio_sid(message_sid)


def twilio_status_identity(message_sid: str, status: str, error_code: str | None) -> str:
    """One identity per receipt: a message is queued, sent, then delivered (or undelivered
    with a code), and each of those is a different event."""
    identity = f"{TWILIO_PREFIX}{twilio_sid(message_sid)}:{status}"
    return f"{identity}:{error_code}" if error_code else identity


def events_identity(webhook_id: str) -> str:
    if not _WEBHOOK_ID.match(webhook_id):
        raise MalformedRecordError("invalid_webhook_id", "webhook-id must be 1-256 printable characters")
    return EVENTS_PREFIX + webhook_id


# -- what the providers send ----------------------------------------------------------------


def twilio_receipt_status(message_status: str) -> str | None:
    """A Twilio MessageStatus as a receipt status, or None for one that records nothing
    (queued, accepted, sending, scheduled: the message is still on its way; anything else
    Twilio may add is not a receipt the processor knows)."""
    status = message_status.strip().lower()
    return status if status in RECEIPT_STATUSES else None


def twilio_error_code(value: str | None) -> str | None:
    code = (value or "").strip()
    if not code:
        return None
    if not _ERROR_CODE.match(code):
        raise MalformedRecordError("invalid_data", "ErrorCode must be digits")
    return code


def our_message_id(value: str) -> tuple[str | None, str | None]:
    """(message_id, provider_ref) for an id from the platform's status events: our own
    identity (proactive-123) is a message_id, anything else the provider's reference."""
    return (value, None) if _OUR_MESSAGE_ID.match(value) else (None, value)
