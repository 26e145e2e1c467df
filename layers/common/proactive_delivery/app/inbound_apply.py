"""The inbound processor's use case: apply a batch of verified inbound events (the edge's and
SES's) to PostgreSQL, each exactly once, in one statement.

Each event becomes one row of `apply_inbound_events` (queries.sql), with what Python knows
and SQL does not: the sender's number as its keyed hash (core/phone_hash.py), what the text
asks for (core/keywords.py: STOP, START, HELP or a reply), what a receipt's error code means
(core/receipts.py). The statement does the rest against the database in one snapshot: it
records every event new to delivery.inbound_event by its identity (a duplicate or a replay
finds it there and changes nothing), finds the contractors a number belongs to, links a
reply to the SMS it answers, moves receipts up their ranks, records opt-outs, opt-ins and
suppressions, and writes the platform's columns. One statement per batch whatever its size.

A receipt can arrive before deliver has recorded the provider's reference of its message
(Twilio calls back within a second; deliver records a batch's outcomes after its last send).
Such a receipt is not recorded yet: it comes back after RECEIPT_WAIT_SECONDS, a few times,
before it is recorded as `unknown_message`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

from aws_lambda_powertools import Logger

from proactive_delivery import SERVICE
from proactive_delivery.core.inbound import (
    ContactDnd,
    InboundEvent,
    MessageStatus,
    SmsReceived,
    parse_utc,
)
from proactive_delivery.core.keywords import classify
from proactive_delivery.core.receipts import PROVIDER_OPT_OUT_SOURCE, carrier_effect
from proactive_delivery.core.ses_events import SesEvent

logger = Logger(service=SERVICE, child=True)

# Opt-out sources a START (or a DND change to inactive) lifts: a keyword, a DND event, the
# provider's opt-out (Twilio 21610). An operator's opt-out (`prefs set --opt-out`) stays.
KEYWORD_SOURCE: Final = "keyword"
DND_SOURCE: Final = "dnd"
LIFTABLE_SOURCES: Final = (KEYWORD_SOURCE, DND_SOURCE, PROVIDER_OPT_OUT_SOURCE)

# A receipt whose message is not found yet waits this long between receives, while it is
# younger than RECEIPT_WAIT_MAX and has been received fewer than RECEIPT_WAIT_RECEIVES times.
RECEIPT_WAIT_SECONDS: Final = 30
RECEIPT_WAIT_MAX: Final = timedelta(minutes=10)
RECEIPT_WAIT_RECEIVES: Final = 5

# What became of an event (delivery.inbound_event.outcome, and the batch's dispositions).
DUPLICATE: Final = "duplicate"
WAIT: Final = "wait"

Event = InboundEvent | SesEvent


@dataclass(frozen=True, slots=True)
class Arrival:
    """One event as the queue handed it over: the event and how often it was received."""

    event: Event
    receive_count: int = 1


@dataclass(frozen=True)
class InboundRow:
    """One row of apply_inbound_events (jsonb_to_recordset): the event as SQL needs it."""

    ord: int
    identity: str
    kind: str
    provider: str | None
    received_at: datetime
    occurred_at: datetime
    action: str
    phone_hash: str | None = None
    consent: str | None = None
    consent_source: str | None = None
    is_reply: bool = False
    keyword: str | None = None
    body: str | None = None
    message_source: str | None = None
    message_source_id: int | None = None
    provider_ref: str | None = None
    status: str | None = None
    error_code: str | None = None
    receipt_effect: str | None = None
    effect_reason: str | None = None
    may_wait: bool = False


@dataclass(frozen=True, slots=True)
class Applied:
    """What the statement did with one row: its outcome, and the message it is about."""

    outcome: str
    message_id: str | None = None


class InboundStore(Protocol):
    def apply_inbound(self, rows: Sequence[InboundRow], options: ApplyOptions) -> Mapping[int, Applied]:
        """The outcome of every row, by its `ord`."""
        ...


@dataclass(frozen=True)
class ApplyOptions:
    """The processor's settings, as the statement takes them."""

    reply_window: timedelta = timedelta(hours=72)
    # What the platform's columns get (each write has a setting that turns it off).
    write_responses: bool = True
    write_sms_opt_in: bool = True
    liftable_sources: tuple[str, ...] = LIFTABLE_SOURCES


@dataclass
class ApplyResult:
    """One outcome per arrival (in order), and counts for the metrics: events by (kind,
    outcome), receipts recorded by status, opt-outs and opt-ins applied, suppressions by
    reason."""

    outcomes: list[Applied] = field(default_factory=list)
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    receipts: Counter[str] = field(default_factory=Counter)
    opt_outs: int = 0
    opt_ins: int = 0
    suppressions: Counter[str] = field(default_factory=Counter)

    def count(self, row: InboundRow, done: Applied) -> None:
        self.counts[(row.kind, done.outcome)] += 1
        if done.outcome == "recorded":
            if row.status:
                self.receipts[row.status] += 1
            if row.receipt_effect == "opt_out":
                self.opt_outs += 1
            elif row.receipt_effect == "suppress" and row.effect_reason:
                self.suppressions[row.effect_reason] += 1
        elif done.outcome == "opted_out":
            self.opt_outs += 1
        elif row.consent == "in" and done.outcome in ("opted_in", "linked"):
            self.opt_ins += 1


class InboundApplier:
    def __init__(
        self,
        store: InboundStore,
        phone_hash: Callable[[str | None], str | None],
        options: ApplyOptions,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._phone_hash = phone_hash
        self._options = options
        self._clock = clock

    def apply(self, arrivals: Sequence[Arrival]) -> ApplyResult:
        result = ApplyResult()
        if not arrivals:
            return result
        now = self._clock()
        rows = [self._row(i, arrival, now) for i, arrival in enumerate(arrivals)]
        applied = self._store.apply_inbound(rows, self._options)
        lines = []
        for row in rows:
            done = applied.get(row.ord, Applied(DUPLICATE))
            result.outcomes.append(done)
            result.count(row, done)
            lines.append(
                {
                    "message_id": done.message_id or row.identity,
                    "event": row.identity,
                    "kind": row.kind,
                    "action": row.action,
                    "keyword": row.keyword,
                    "status": row.status,
                    "error_code": row.error_code,
                    "outcome": done.outcome,
                }
            )
        # One line per event (what on-call searches by message or event identity), written in
        # one call (adapters/redact.py: MESSAGE_LINES). No number and no text: neither is here.
        logger.info("inbound event", message_lines=lines)
        return result

    def _row(self, ord_: int, arrival: Arrival, now: datetime) -> InboundRow:
        event = arrival.event
        if isinstance(event, SesEvent):
            return InboundRow(
                ord=ord_,
                identity=event.identity,
                kind="message.status",
                provider="ses",
                received_at=event.occurred_at,
                occurred_at=event.occurred_at,
                action="receipt",
                message_source=_source(event.message_id),
                message_source_id=_source_id(event.message_id),
                provider_ref=event.provider_ref,
                status=event.status,
                error_code=event.error_code,
                receipt_effect=event.effect.effect if event.effect else None,
                effect_reason=event.effect.reason if event.effect else None,
                may_wait=_may_wait(event.occurred_at, arrival.receive_count, now),
            )
        data = event.data
        row = InboundRow(
            ord=ord_,
            identity=event.id,
            kind=str(event.kind),
            provider=None,
            received_at=event.received_at,
            occurred_at=event.received_at,
            action="receipt",
        )
        if isinstance(data, SmsReceived):
            asks = classify(data.text, data.opt_out_type)
            return replace(
                row,
                provider=data.provider,
                # The provider's time when it gave one (GHL), else when the edge received it.
                occurred_at=parse_utc(data.sent_at, "sent_at") if data.sent_at else event.received_at,
                action=asks.action,
                phone_hash=self._phone_hash(data.phone),
                consent=asks.consent,
                consent_source=KEYWORD_SOURCE if asks.consent else None,
                is_reply=asks.reply,
                keyword=asks.keyword,
                # The text travels only to be written on the platform's row it answers.
                body=data.text if asks.reply else None,
            )
        if isinstance(data, ContactDnd):
            lifted = data.sms == "inactive"
            return replace(
                row,
                provider="ghl",
                action="opt_in" if lifted else "opt_out",
                phone_hash=self._phone_hash(data.phone),
                consent="in" if lifted else "out",
                consent_source=DND_SOURCE,
                keyword=f"DND:{data.sms}",
            )
        assert isinstance(data, MessageStatus)
        effect = carrier_effect(data.status, data.error_code)
        return replace(
            row,
            provider=data.provider,
            message_source=_source(data.message_id),
            message_source_id=_source_id(data.message_id),
            provider_ref=data.provider_ref,
            status=data.status,
            error_code=data.error_code,
            receipt_effect=effect.effect if effect else None,
            effect_reason=effect.reason if effect else None,
            may_wait=_may_wait(event.received_at, arrival.receive_count, now),
        )


def _may_wait(received_at: datetime, receive_count: int, now: datetime) -> bool:
    return receive_count < RECEIPT_WAIT_RECEIVES and now - received_at < RECEIPT_WAIT_MAX


def _source(message_id: str | None) -> str | None:
    return message_id.rsplit("-", 1)[0] if message_id else None


def _source_id(message_id: str | None) -> int | None:
    return int(message_id.rsplit("-", 1)[1]) if message_id else None
