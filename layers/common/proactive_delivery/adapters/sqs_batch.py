"""The deliver function's SQS edge: everything shaped like SQS lives here.

It reads the event the SQS event source mapping sends (records, message ids, receipt
handles, receive counts), turns each body into a message key (a record that is not one is a
reported failure with a logged reason), hands the keys to the use case, and turns the
disposition of each into what SQS understands: an acknowledgement (the record is left out
of the response), a visibility change followed by a reported failure (the message comes
back after the delay; ReportBatchItemFailures), or a copy on the dead-letter queue with the
reason. The response is the plain `{"batchItemFailures": [...]}` dict. The batch is walked
once; the use case sees no SQS field.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from aws_lambda_powertools import Logger

from proactive_delivery import SERVICE
from proactive_delivery.app.deliver import DeliverResult, Disposition, Receive
from proactive_delivery.core.errors import MalformedRecordError
from proactive_delivery.core.models import MessageKey, Outcome

logger = Logger(service=SERVICE, child=True)

# SQS DelaySeconds: at most 15 minutes.
MAX_DELAY_SECONDS = 900


class QueueActions(Protocol):
    """The SQS calls the edge makes (adapters/sqs.py SqsDeliveryQueue)."""

    def change_visibility(self, receipts: Sequence[tuple[str, int]]) -> list[str]:
        """Set (receipt handle, seconds) visibility timeouts; return the handles that failed."""
        ...

    def dead_letter(self, letters: Sequence[tuple[str, str]]) -> list[int]:
        """Put (body, reason) on the dead-letter queue; return the indexes that did not get
        there (those are left to the queue's redrive)."""
        ...

    def requeue(self, messages: Sequence[tuple[str, int]]) -> list[int]:
        """Put (body, delay seconds) on the delivery queue again as new messages (receive
        count 1); return the indexes that did not get there."""
        ...


@dataclass(frozen=True, slots=True)
class _Record:
    message_id: str
    receipt_handle: str
    body: str
    receive: Receive


@dataclass
class BatchReport:
    """What happened to a batch, for the metrics: counts by what happened, the outcomes
    recorded, and when each sent message was due."""

    counts: Counter[str] = field(default_factory=Counter)
    outcomes: Sequence[tuple[MessageKey, Outcome]] = ()
    due_at: Mapping[MessageKey, datetime] = field(default_factory=dict)

    @property
    def records(self) -> int:
        return sum(self.counts.values())


# The count each disposition adds to (telemetry.DELIVER_COUNTS names the metrics).
_KIND_COUNTS = {"sent": "delivered", "dead_letter": "failed", "failed": "malformed"}
# Holds at a provider's pace, by reason (any other hold is a deferral: quiet hours, the cap).
_PACE_COUNTS = {"rate_limited": "paced", "provider_throttled": "paced", "circuit_open": "circuit_held"}
_RETRY_COUNTS = {"claimed_concurrently": "busy", "deadline": "released"}
_DONE_COUNTS = {"skipped": "skipped", "failed": "failed", "deferred": "deferred"}


def count_of(disposition: Disposition) -> str:
    kind, reason = disposition.kind, disposition.reason or ""
    if kind in _KIND_COUNTS:
        return _KIND_COUNTS[kind]
    if kind == "hold":
        return _PACE_COUNTS.get(reason, "deferred")
    if kind == "retry":
        return _RETRY_COUNTS.get(reason, "retried")
    if disposition.state is not None:
        return _DONE_COUNTS.get(disposition.state, "duplicate")
    return "lease_lost" if reason == "lease_lost" else "duplicate"


class SqsBatch:
    def __init__(self, queue: QueueActions) -> None:
        self._queue = queue

    def handle(
        self, event: Any, deliver: Callable[[Sequence[Receive]], DeliverResult]
    ) -> tuple[dict[str, list[dict[str, str]]], BatchReport]:
        report = BatchReport()
        records = _records_of(event)
        if records is None:
            report.counts["malformed"] += 1
            return {"batchItemFailures": []}, report
        failures: list[str] = []
        work: dict[MessageKey, _Record] = {}
        for raw in records:
            record = _parse(raw, report)
            if record is None:
                continue
            if isinstance(record, str):
                failures.append(record)
                continue
            if record.receive.key in work:
                # The same message twice in one batch: the first record carries it.
                report.counts["duplicate"] += 1
                continue
            work[record.receive.key] = record
        if work:
            result = deliver([r.receive for r in work.values()])
            report.outcomes, report.due_at = result.outcomes, result.due_at
            failures.extend(self._settle(work, result.dispositions, report))
        return {"batchItemFailures": [{"itemIdentifier": m} for m in failures]}, report

    def _settle(
        self,
        work: Mapping[MessageKey, _Record],
        dispositions: Mapping[MessageKey, Disposition],
        report: BatchReport,
    ) -> list[str]:
        """The records to report failed, after the visibility changes and dead letters."""
        failures: list[str] = []
        later: list[tuple[str, int]] = []
        letters: list[_Record] = []
        again: list[tuple[_Record, int]] = []
        for key, record in work.items():
            disposition = dispositions[key]
            report.counts[count_of(disposition)] += 1
            if disposition.kind == "hold" and disposition.requeue:
                again.append((record, min(disposition.delay_seconds, MAX_DELAY_SECONDS)))
            elif disposition.kind in ("hold", "retry"):
                later.append((record.receipt_handle, disposition.delay_seconds))
                failures.append(record.message_id)
            elif disposition.kind == "dead_letter":
                letters.append(record)
            elif disposition.kind == "failed":
                failures.append(record.message_id)
        if again:
            self._requeue(again, later, failures, report)
        if letters:
            self._dead_letter(letters, later, failures, report)
        if later:
            late = len(self._queue.change_visibility(later))
            if late:
                # The message comes back after the queue's own visibility timeout instead (its
                # state and next attempt are recorded): later than planned, not lost.
                logger.warning("ChangeMessageVisibility refused; records return later", refused=late)
                report.counts["visibility_failed"] += late
        return failures

    def _requeue(
        self,
        again: list[tuple[_Record, int]],
        later: list[tuple[str, int]],
        failures: list[str],
        report: BatchReport,
    ) -> None:
        # A new message with the delay, this one acknowledged: waiting spends no receive
        # (maxReceiveCount counts receives). What SQS refuses waits out a visibility
        # change instead, receive and all: later than planned, never lost.
        refused_again = set(self._queue.requeue([(r.body, delay) for r, delay in again]))
        for index, (record, delay) in enumerate(again):
            if index in refused_again:
                later.append((record.receipt_handle, delay))
                failures.append(record.message_id)
        if refused_again:
            report.counts["requeue_failed"] += len(refused_again)

    def _dead_letter(
        self, letters: list[_Record], later: list[tuple[str, int]], failures: list[str], report: BatchReport
    ) -> None:
        # Put on the dead-letter queue now, with the reason: the queue's redrive leaves
        # room for receives that are not attempts, so it would take its time. What the
        # dead-letter queue refuses comes back at once, for the redrive to move.
        refused = set(self._queue.dead_letter([(r.body, "attempts_exhausted") for r in letters]))
        for index, record in enumerate(letters):
            if index in refused:
                later.append((record.receipt_handle, 0))
                failures.append(record.message_id)
        if len(letters) > len(refused):
            report.counts["dead_lettered"] += len(letters) - len(refused)


def _records_of(event: Any) -> list[Any] | None:
    if not isinstance(event, dict) or not isinstance(event.get("Records"), list):
        logger.error(
            "invalid deliver event; nothing done",
            reason="invalid_event",
            error="deliver expects an SQS event: an object with a Records list",
        )
        return None
    return list(event["Records"])


def _parse(raw: Any, report: BatchReport) -> _Record | str | None:
    """A record as the use case needs it; its messageId when it is malformed (reported
    failed, so it reaches the dead-letter queue through the redrive); None when it cannot
    even be reported (no messageId: SQS always sends one, a hand-made event may not)."""
    message_id = raw.get("messageId") if isinstance(raw, dict) else None
    if not isinstance(message_id, str) or not message_id:
        report.counts["malformed"] += 1
        logger.error(
            "queue record without a messageId; it cannot be reported and is left alone",
            reason="missing_message_id",
        )
        return None
    body = raw.get("body")
    try:
        key = MessageKey.from_body(body if isinstance(body, str) else None)
    except MalformedRecordError as exc:
        report.counts["malformed"] += 1
        logger.error("malformed queue record", sqs_message_id=message_id, reason=exc.reason, error=str(exc))
        return message_id
    attributes = raw.get("attributes")
    count = attributes.get("ApproximateReceiveCount", "1") if isinstance(attributes, dict) else "1"
    try:
        receive_count = int(count)
    except (TypeError, ValueError):
        receive_count = 1
    return _Record(message_id, str(raw.get("receiptHandle", "")), str(body), Receive(key, receive_count))
