"""Plain data passed between the use cases and the adapters."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from proactive_delivery.core.content import Names
from proactive_delivery.core.errors import MalformedRecordError
from proactive_delivery.core.policy import StoredPreferences
from proactive_delivery.core.states import State

# Where a message comes from. Each source has its own id space, so identity is the pair.
SOURCES: Final = ("proactive", "followup")


FINAL_STATES: Final = frozenset({State.SENT, State.SKIPPED, State.FAILED})
# What happened on an attempt, or why a claimed message was not attempted
# (delivery.attempt_log.outcome for the attempts).
AttemptOutcome = Literal[
    "delivered", "rejected", "retry", "failed", "released", "deferred", "skipped", "paced"
]


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


def aware(value: datetime | None, what: str) -> datetime | None:
    """Every timestamp the SQL hands over is a timestamptz (platform columns are converted
    explicitly there): a naive one here would be read in whatever zone the process is in."""
    if value is not None and value.tzinfo is None:
        raise TypeError(f"{what} reached Python as a naive datetime; convert it in SQL")
    return value


@dataclass(frozen=True)
class MessageFacts:
    """Everything the verdict on one message rests on, as the message_facts SQL block
    gathers it (queue time and send time alike)."""

    key: MessageKey
    # None: the platform's row is gone.
    contractor_id: int | None
    message_type: str | None = None
    body: str | None = None
    # When it became due: created_at (proactive; may be unknown) or scheduled_time.
    due_at: datetime | None = None
    platform_sent_at: datetime | None = None
    # Follow-ups: the platform's status ('scheduled' is the only one that is sent).
    platform_status: str | None = None
    # Follow-ups: skip_if_completed and the linked action item is completed.
    action_completed: bool = False
    names: Names = field(default_factory=Names)
    phone: str | None = None
    email: str | None = None
    # The platform's own contact rules (NULL where the column does not exist).
    contractor_timezone: str | None = None
    sms_opt_in: bool | None = None
    # Our preference row (None: defaults) and when the contractor was last sent something.
    preferences: StoredPreferences | None = None
    sent_times: tuple[datetime, ...] = ()
    # IGNORED_RUN_PAUSE: the contractor's last proactive sends, newest first, each (sent at,
    # answered); empty when the pause is off.
    recent_proactive: tuple[tuple[datetime, bool], ...] = ()

    @classmethod
    def from_row(cls, key: MessageKey, row: Mapping[str, Any]) -> MessageFacts:
        sent_times = tuple(aware(t, "sent_times") for t in (row.get("sent_times") or ()))
        return cls(
            key=key,
            contractor_id=row.get("contractor_id"),
            message_type=row.get("message_type"),
            body=row.get("body"),
            due_at=aware(row.get("due_at"), "due_at"),
            platform_sent_at=aware(row.get("platform_sent_at"), "platform_sent_at"),
            platform_status=row.get("platform_status"),
            action_completed=bool(row.get("action_completed")),
            names=Names(row.get("first_name"), row.get("last_name"), row.get("full_name")),
            phone=row.get("phone"),
            email=row.get("email"),
            contractor_timezone=row.get("contractor_timezone"),
            sms_opt_in=row.get("sms_opt_in"),
            preferences=StoredPreferences.from_row(row),
            sent_times=tuple(t for t in sent_times if t is not None),
            recent_proactive=_recent_proactive(row),
        )


def _recent_proactive(row: Mapping[str, Any]) -> tuple[tuple[datetime, bool], ...]:
    sent = row.get("recent_proactive_sent_at") or ()
    answered = row.get("recent_proactive_answered") or ()
    return tuple(
        (t, bool(a)) for t, a in zip(sent, answered, strict=False) if aware(t, "recent_proactive") is not None
    )


@dataclass(frozen=True)
class ClaimedRow:
    """One requested message as the claim statement saw it; a claimed one has its facts."""

    key: MessageKey
    delivery_id: int | None
    previous_state: str | None
    claimed: bool
    attempts: int
    facts: MessageFacts | None = None
    # A slot at its provider's pace that this message already holds (its token is taken).
    paced_until: datetime | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ClaimedRow:
        key = MessageKey(row["source"], row["source_id"])
        return cls(
            key=key,
            delivery_id=row["delivery_id"],
            previous_state=row["previous_state"],
            claimed=row["claimed"],
            attempts=row["attempts"] or 0,
            facts=MessageFacts.from_row(key, row) if row["claimed"] else None,
            paced_until=aware(row.get("paced_until"), "paced_until"),
        )


@dataclass(frozen=True)
class OutboundMessage:
    """What a channel needs to send one message."""

    key: MessageKey
    contractor_id: int
    message_type: str
    text: str
    first_name: str | None
    # E.164, normalised from what the platform stores.
    phone: str | None
    email: str | None
    # For an e-mail's To name.
    display_name: str | None = None
    # What the text takes as one SMS (core/segments.py); 0 on a channel that is not SMS.
    segments: int = 0
    ucs2: bool = False
    # The keyed hash of `phone` when the message goes on a phone channel (recorded with the
    # send, so a reply from that number finds it).
    phone_hash: str | None = None

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
    state: State
    outcome: AttemptOutcome
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
    # The provider attempted, whether the attempt failed transiently (its circuit breaker
    # counts those), and a 429's Retry-After (which holds the provider for everyone).
    provider: str | None = None
    transient: bool = False
    retry_after: float | None = None
    # A slot reserved at the provider's pace (held, not attempted); None gives it up.
    paced_until: datetime | None = None
    # A sent SMS: its segments and whether it went UCS-2 (for the metrics).
    segments: int = 0
    ucs2: bool = False
    # The keyed hash of the number an SMS went to (hex; core/phone_hash.py).
    phone_hash: str | None = None


@dataclass(frozen=True, slots=True)
class SlotRequest:
    """One message that is about to go to `provider`, costing `cost` tokens; `reserved`: it
    holds a slot already, and takes only the send tokens."""

    provider: str
    cost: float
    reserved: bool = False


SlotAction = Literal["send", "probe", "reserve", "wait"]


@dataclass(frozen=True, slots=True)
class Slot:
    """What a message may do at its provider's pace: send now, be the half-open circuit's
    probe, hold a reserved slot `wait_seconds` ahead, or wait that long without one."""

    action: SlotAction
    wait_seconds: float = 0.0
    reason: str | None = None


@dataclass(frozen=True)
class UnsentBacklog:
    """Due messages of one source that are not sent, skipped or failed, and how long the
    oldest of them has been due."""

    count: int
    oldest_age_seconds: float


@dataclass(frozen=True)
class EvaluateRun:
    """An evaluate run as recorded when it starts: the rows it queues carry its id, and it is
    certainly over `lease_seconds` after its start (the function's timeout)."""

    run_id: int
    lease_seconds: int


@dataclass(frozen=True)
class EnqueuePage:
    """One keyset page of evaluate's scan: where it ended, how many rows it saw, and the
    ids it recorded as queued (the ones no earlier or concurrent run had)."""

    last_id: int | None
    scanned: int
    queued_ids: list[int]


@dataclass(frozen=True)
class QueueDecision:
    """The queue-time verdict on one freshly queued message."""

    source_id: int
    state: State
    reason: str | None
    next_attempt_at: datetime | None = None


@dataclass(frozen=True)
class PhonePair:
    """A contractor and the keyed hash (hex) of a number of theirs (core/phone_hash.py), for
    the contractor <-> number directory (delivery.contractor_phone)."""

    contractor_id: int
    phone_hash: str


@dataclass(frozen=True)
class PhonesRegistered:
    """What registering numbers in the directory did: how many pairs were added, and the
    contractors whose keyword or DND opt-out, recorded `unmatched` from such a number before
    it was known, was applied."""

    registered: int = 0
    opted_out: frozenset[int] = frozenset()


@dataclass(frozen=True)
class PurgeCursor:
    """Where a purge statement's page ended: the next page starts after (at, id)."""

    at: datetime | None = None
    id: int = 0


@dataclass(frozen=True)
class PurgePage:
    """One batch of the retention purge: the rows its page read, where it ended, and what it
    deleted, by table."""

    scanned: int
    cursor: PurgeCursor
    deleted: Mapping[str, int]
