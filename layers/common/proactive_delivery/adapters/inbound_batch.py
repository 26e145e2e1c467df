"""The inbound processor's SQS edge: everything shaped like SQS on the way back lives here.

It reads the event the inbound queue's event source mapping sends, turns each body into an
event (the edge's envelope, core/inbound.py, or SES's EventBridge event, core/ses_events.py),
hands the events to the use case (app/inbound_apply.py) and turns what became of each into
what SQS understands: applied or already applied (acknowledged: left out of the response),
a receipt whose message is not recorded yet (a visibility change, then a reported failure:
it comes back), or a body that can never be applied (one log line with the reason, then a
copy on the inbound DLQ with the reason and an acknowledgement; without a DLQ to write to, a
reported failure the queue's redrive takes there).

The database is touched once, before any dead letter is written: when PostgreSQL is down the
statement raises, the invocation fails as a whole, nothing is acknowledged and SQS hands the
whole batch out again (FAULTS row 22).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger

from proactive_delivery import SERVICE
from proactive_delivery.adapters.sqs_batch import QueueActions
from proactive_delivery.app.inbound_apply import RECEIPT_WAIT_SECONDS, WAIT, ApplyResult, Arrival, Event
from proactive_delivery.core.errors import MalformedRecordError, StoreUnavailableError
from proactive_delivery.core.inbound import InboundEvent
from proactive_delivery.core.ses_events import is_ses_event, ses_event

logger = Logger(service=SERVICE, child=True)


@dataclass
class InboundReport:
    """What happened to a batch, for the metrics: what the use case counted (outcomes by
    kind, receipts by status, opt-outs, opt-ins, suppressions), and the records that were
    malformed, dead-lettered, or sent back to wait."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    receipts: Counter[str] = field(default_factory=Counter)
    suppressions: Counter[str] = field(default_factory=Counter)
    opt_outs: int = 0
    opt_ins: int = 0
    malformed: int = 0
    dead_lettered: int = 0
    waiting: int = 0

    @property
    def records(self) -> int:
        return sum(self.counts.values()) + self.malformed


@dataclass(frozen=True, slots=True)
class _Record:
    message_id: str
    receipt_handle: str
    arrival: Arrival


def parse_body(body: str | None) -> Event:
    """The event a record's body holds; MalformedRecordError with a reason otherwise."""
    if body is None:
        raise MalformedRecordError("invalid_json", "the record has no body")
    try:
        doc = json.loads(body)
    except ValueError:
        raise MalformedRecordError("invalid_json", "the body is not JSON") from None
    if is_ses_event(doc):
        return ses_event(doc)
    return InboundEvent.from_body(body)


class InboundBatch:
    def __init__(self, queue: QueueActions | None) -> None:
        # Visibility changes and dead letters (None: neither, the queue's redrive does it).
        self._queue = queue

    def handle(
        self, event: Any, apply: Callable[[Sequence[Arrival]], ApplyResult]
    ) -> tuple[dict[str, list[dict[str, str]]], InboundReport]:
        report = InboundReport()
        raw_records = event.get("Records") if isinstance(event, dict) else None
        if not isinstance(raw_records, list):
            logger.error(
                "invalid inbound processor event; nothing done",
                reason="invalid_event",
                error="the processor expects an SQS event: an object with a Records list",
            )
            report.malformed += 1
            return {"batchItemFailures": []}, report
        records: list[_Record] = []
        poison: list[tuple[str, str, str]] = []  # (messageId, body, reason)
        for raw in raw_records:
            parsed = _parse(raw)
            if isinstance(parsed, tuple):
                poison.append(parsed)
            elif parsed is not None:
                records.append(parsed)
            else:
                report.malformed += 1
        failures: list[str] = []
        if records:
            try:
                result = apply([r.arrival for r in records])
            except StoreUnavailableError as exc:
                # The whole batch comes back (a function error): one line saying so, then raise.
                logger.error(
                    "inbound batch not applied; SQS hands it out again",
                    reason="database_unavailable",
                    records=len(raw_records),
                    error=str(exc),
                )
                raise
            report.counts, report.receipts, report.suppressions = (
                result.counts,
                result.receipts,
                result.suppressions,
            )
            report.opt_outs, report.opt_ins = result.opt_outs, result.opt_ins
            later = []
            for record, applied in zip(records, result.outcomes, strict=True):
                if applied.outcome == WAIT:
                    later.append((record.receipt_handle, RECEIPT_WAIT_SECONDS))
                    failures.append(record.message_id)
            report.waiting = len(later)
            if later and self._queue is not None:
                # Refused: it comes back after the queue's own visibility timeout instead.
                self._queue.change_visibility(later)
        failures.extend(self._dead_letter(poison, report))
        return {"batchItemFailures": [{"itemIdentifier": m} for m in failures]}, report

    def _dead_letter(self, poison: Sequence[tuple[str, str, str]], report: InboundReport) -> list[str]:
        """Put the bodies that can never be applied on the DLQ with their reason; return the
        records left for the redrive (no DLQ configured, or SQS refused the copy)."""
        report.malformed += len(poison)
        if not poison:
            return []
        # SQS takes no empty body: such a record is left to the redrive.
        copies = [p for p in poison if p[1]]
        left = [message_id for message_id, body, _ in poison if not body]
        if self._queue is None or not copies:
            return left + [message_id for message_id, _, _ in copies]
        refused = set(self._queue.dead_letter([(body, reason) for _, body, reason in copies]))
        report.dead_lettered += len(copies) - len(refused)
        return left + [copies[i][0] for i in sorted(refused)]


def _parse(raw: Any) -> _Record | tuple[str, str, str] | None:
    """A record as the use case needs it; (messageId, body, reason) for a body that can
    never be applied; None when the record cannot even be reported (no messageId)."""
    message_id = raw.get("messageId") if isinstance(raw, dict) else None
    if not isinstance(message_id, str) or not message_id:
        logger.error(
            "queue record without a messageId; it cannot be reported and is left alone",
            reason="missing_message_id",
        )
        return None
    body = raw.get("body")
    try:
        event = parse_body(body if isinstance(body, str) else None)
    except MalformedRecordError as exc:
        # The reason names the field, never its value (it may be a number or a text).
        logger.error("malformed inbound event", sqs_message_id=message_id, reason=exc.reason, error=str(exc))
        return message_id, body if isinstance(body, str) else "", exc.reason
    attributes = raw.get("attributes")
    count = attributes.get("ApproximateReceiveCount", "1") if isinstance(attributes, dict) else "1"
    try:
        receive_count = int(count)
    except (TypeError, ValueError):
        receive_count = 1
    return _Record(message_id, str(raw.get("receiptHandle", "")), Arrival(event, receive_count))
