"""Evaluate: find due, unsent messages, record them as queued, and put their ids on the
delivery queue, page by page, until the backlog is done or the invocation's time is."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aws_lambda_powertools import Logger

from proactive_delivery import SERVICE
from proactive_delivery.errors import MalformedRecordError, QueueError
from proactive_delivery.gate import QueueGate
from proactive_delivery.models import SOURCES, EnqueuePage, MessageKey, UnsentBacklog
from proactive_delivery.queue import SQS_BATCH_LIMIT, DeliveryQueue

logger = Logger(service=SERVICE, child=True)


class EvaluateStore(Protocol):
    def enqueue_new(self, source: str, *, after_id: int, page_size: int) -> EnqueuePage: ...

    def requeue_stranded(
        self, source: str, *, after_id: int, page_size: int, reconcile_after_seconds: int
    ) -> list[tuple[int, int]]: ...

    def return_to_pending(self, source: str, source_ids: Sequence[int]) -> int: ...

    def sources(self) -> tuple[str, ...]:
        """The sources whose platform table exists in this database."""
        ...


@dataclass
class SourceReport:
    scanned: int = 0
    queued_new: int = 0
    requeued: int = 0
    send_failed: int = 0
    returned_to_pending: int = 0
    # Held back by the queue-time policy: deferred for later, or skipped / failed for good.
    deferred: int = 0
    held: int = 0
    # "state:reason" -> count of what the queue-time policy held back.
    held_reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class EvaluateReport:
    sources: dict[str, SourceReport] = field(default_factory=dict)
    stopped_early: bool = False
    # Selected sources whose platform table this database does not have.
    missing_sources: list[str] = field(default_factory=list)
    # Filled in after the run (handlers.evaluate), for every selected source.
    backlog: dict[str, UnsentBacklog] = field(default_factory=dict)

    @property
    def enqueued(self) -> int:
        return sum(
            r.queued_new + r.requeued - r.send_failed - r.returned_to_pending - r.held
            for r in self.sources.values()
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "enqueued": self.enqueued,
            "stopped_early": self.stopped_early,
            **({"missing_sources": self.missing_sources} if self.missing_sources else {}),
            "sources": {name: vars(r) for name, r in self.sources.items()},
            **({"backlog": {name: vars(b) for name, b in self.backlog.items()}} if self.backlog else {}),
        }


def sources_from_event(event: Any, *, known: Sequence[str] = SOURCES) -> list[str]:
    """The schedule's Input selects sources: {"sources": ["proactive"]}. No selector (a bare
    EventBridge scheduled event, an empty event) means every source."""
    if not isinstance(event, dict):
        raise MalformedRecordError("invalid_event", "evaluate expects a JSON object")
    selected = event.get("sources")
    if selected is None:
        selected = [event["source"]] if event.get("source") in known else list(known)
    if isinstance(selected, str):
        selected = [selected]
    if not isinstance(selected, list) or not selected:
        raise MalformedRecordError("invalid_event", "'sources' must be a non-empty list")
    unknown = [s for s in selected if s not in known]
    if unknown:
        raise MalformedRecordError("unknown_source", f"{unknown!r}; known sources: {', '.join(known)}")
    return list(dict.fromkeys(selected))


class Evaluator:
    def __init__(
        self,
        store: EvaluateStore,
        queue: DeliveryQueue,
        *,
        page_size: int = 500,
        reconcile_after_seconds: int = 1800,
        safety_margin_ms: int = 10_000,
        gate: QueueGate | None = None,
    ) -> None:
        self._store = store
        self._gate = gate
        self._queue = queue
        self._page_size = page_size
        self._reconcile_after = reconcile_after_seconds
        self._safety_margin_ms = safety_margin_ms

    def run(self, sources: Iterable[str], remaining_ms: Callable[[], int]) -> EvaluateReport:
        report = EvaluateReport()
        present = self._store.sources()
        for source in sources:
            if source not in present:
                # A deployment without this table still delivers the sources it has.
                logger.warning("source table not found in this database; source skipped", source=source)
                report.missing_sources.append(source)
                continue
            source_report = report.sources.setdefault(source, SourceReport())
            # Stranded messages first: they have waited longest.
            if not self._requeue_stranded(source, source_report, remaining_ms):
                report.stopped_early = True
                break
            if not self._enqueue_new(source, source_report, remaining_ms):
                report.stopped_early = True
                break
        logger.info("evaluate finished", **report.as_dict())
        return report

    def _out_of_time(self, remaining_ms: Callable[[], int]) -> bool:
        return remaining_ms() < self._safety_margin_ms

    def _enqueue_new(self, source: str, report: SourceReport, remaining_ms: Callable[[], int]) -> bool:
        after_id = 0
        while True:
            if self._out_of_time(remaining_ms):
                return False
            page = self._store.enqueue_new(source, after_id=after_id, page_size=self._page_size)
            report.scanned += page.scanned
            report.queued_new += len(page.queued_ids)
            if not self._send(source, page.queued_ids, report, remaining_ms):
                return False
            if page.last_id is None or page.scanned < self._page_size:
                return True
            after_id = page.last_id

    def _requeue_stranded(self, source: str, report: SourceReport, remaining_ms: Callable[[], int]) -> bool:
        after_id = 0
        while True:
            if self._out_of_time(remaining_ms):
                return False
            rows = self._store.requeue_stranded(
                source,
                after_id=after_id,
                page_size=self._page_size,
                reconcile_after_seconds=self._reconcile_after,
            )
            report.requeued += len(rows)
            if not self._send(source, [source_id for _, source_id in rows], report, remaining_ms):
                return False
            if len(rows) < self._page_size:
                return True
            after_id = rows[-1][0]

    def _send(
        self, source: str, source_ids: Sequence[int], report: SourceReport, remaining_ms: Callable[[], int]
    ) -> bool:
        """Send recorded ids 10 at a time. Entries SQS refuses, and the tail left unsent when
        time runs out, go back to pending so the next run takes them at once."""
        if self._gate is not None and source_ids:
            gated = self._gate.check(source, source_ids)
            report.deferred += gated.deferred
            report.held += gated.held
            for key, n in gated.reasons.items():
                report.held_reasons[key] = report.held_reasons.get(key, 0) + n
            for delay, ids in gated.delayed.items():
                if not self._send_chunks(source, ids, report, remaining_ms, delay_seconds=delay):
                    return False
            source_ids = gated.send_now
        return self._send_chunks(source, source_ids, report, remaining_ms)

    def _send_chunks(
        self,
        source: str,
        source_ids: Sequence[int],
        report: SourceReport,
        remaining_ms: Callable[[], int],
        *,
        delay_seconds: int = 0,
    ) -> bool:
        for start in range(0, len(source_ids), SQS_BATCH_LIMIT):
            if self._out_of_time(remaining_ms):
                unsent = source_ids[start:]
                report.returned_to_pending += self._store.return_to_pending(source, unsent)
                logger.warning("evaluate out of time; leaving the rest for the next run", unsent=len(unsent))
                return False
            chunk = [MessageKey(source, i) for i in source_ids[start : start + SQS_BATCH_LIMIT]]
            try:
                failed = self._queue.send_keys(chunk, delay_seconds=delay_seconds)
            except QueueError:
                # The whole call failed: nothing after this point was sent. Put it all back
                # to pending so it is not left waiting for the reconciliation threshold.
                report.returned_to_pending += self._store.return_to_pending(source, source_ids[start:])
                raise
            if failed:
                report.send_failed += len(failed)
                self._store.return_to_pending(source, [k.source_id for k in failed])
                logger.warning("SendMessageBatch entries failed; returned to pending", failed=len(failed))
        return True
