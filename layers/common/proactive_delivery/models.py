"""Plain data passed between the use cases and the adapters."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from proactive_delivery.errors import MalformedRecordError
from proactive_delivery.policy import StoredPreferences

# Where a message comes from. Each source has its own id space, so identity is the pair.
SOURCES: Final = ("proactive", "followup")

OPEN_STATES: Final = frozenset({"pending", "queued", "sending", "deferred"})
FINAL_STATES: Final = frozenset({"sent", "skipped", "failed"})


@dataclass(frozen=True, order=True)
class MessageKey:
    source: str
    source_id: int

    @property
    def idempotency_key(self) -> str:
        """Stable for a message across every retry, replay and redelivery: providers use it
        to drop a duplicate (the webhook-id header of Standard Webhooks)."""
        return f"{self.source}-{self.source_id}"

    def to_body(self) -> str:
        return json.dumps({"source": self.source, "id": self.source_id}, separators=(",", ":"))

    @classmethod
    def from_body(cls, body: str | None, *, sources: tuple[str, ...] = SOURCES) -> MessageKey:
        """Parse a queue message body. Anything unexpected is a MalformedRecordError with a
        reason that says what was wrong (never the body itself: it could carry anything)."""
        if not body:
            raise MalformedRecordError("empty_body")
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, TypeError):
            raise MalformedRecordError("invalid_json") from None
        if not isinstance(data, dict):
            raise MalformedRecordError("not_an_object")
        source = data.get("source")
        source_id = data.get("id")
        if source not in sources:
            raise MalformedRecordError("unknown_source", str(source)[:40])
        if isinstance(source_id, bool) or not isinstance(source_id, int) or source_id <= 0:
            raise MalformedRecordError("invalid_id", str(source_id)[:40])
        return cls(source=str(source), source_id=source_id)


@dataclass(frozen=True)
class ClaimedRow:
    """One requested message as the claim statement saw it."""

    key: MessageKey
    delivery_id: int | None
    previous_state: str | None
    claimed: bool
    attempts: int
    contractor_id: int | None = None
    message_type: str | None = None
    body: str | None = None
    due_at: datetime | None = None
    platform_sent_at: datetime | None = None
    first_name: str | None = None
    phone: str | None = None
    email: str | None = None
    # Follow-ups: the platform's status ('cancelled' means never send).
    source_status: str | None = None
    # The send-time policy's inputs: the contractor's stored preferences (None: defaults)
    # and when they were last sent something.
    preferences: StoredPreferences | None = None
    sent_times: tuple[datetime, ...] = ()

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ClaimedRow:
        return cls(
            key=MessageKey(row["source"], row["source_id"]),
            delivery_id=row["delivery_id"],
            previous_state=row["previous_state"],
            claimed=row["claimed"],
            attempts=row["attempts"] or 0,
            contractor_id=row["contractor_id"],
            message_type=row["message_type"],
            body=row["body"],
            due_at=row["due_at"],
            platform_sent_at=row["platform_sent_at"],
            first_name=row["first_name"],
            phone=row["phone"],
            email=row["email"],
            source_status=row.get("source_status"),
            preferences=StoredPreferences.from_row(row),
            sent_times=tuple(row.get("sent_times") or ()),
        )


@dataclass(frozen=True)
class OutboundMessage:
    """What a channel needs to send one message."""

    key: MessageKey
    contractor_id: int
    message_type: str
    text: str
    first_name: str | None
    phone: str | None
    email: str | None

    @property
    def idempotency_key(self) -> str:
        return self.key.idempotency_key


@dataclass(frozen=True)
class SendResult:
    http_status: int | None
    provider_ref: str | None = None


@dataclass(frozen=True)
class Outcome:
    """One row of record_outcomes: the new state of a claimed message and, when a send was
    attempted, what happened on the wire."""

    delivery_id: int
    state: str
    outcome: str
    attempted: bool
    channel: str | None = None
    provider_ref: str | None = None
    reason: str | None = None
    error: str | None = None
    http_status: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    latency_ms: int | None = None
    next_attempt_at: datetime | None = None
    # Set when the provider reported the recipient opted out of this channel.
    opt_out_contractor_id: int | None = None
    opt_out_channel: str | None = None


@dataclass(frozen=True)
class UnsentBacklog:
    """Due messages of one source that are not sent, skipped or failed, and how long the
    oldest of them has been due."""

    count: int
    oldest_age_seconds: float
