"""Evaluate: find due, unsent messages, record them as queued, and put their ids on the
delivery queue, page by page, until the backlog is done or the invocation's time is."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger

from proactive_delivery import SERVICE
from proactive_delivery.app.gate import QueueGate
from proactive_delivery.app.ports import QUEUE_BATCH_LIMIT, DeliveryQueue, EvaluateStore
from proactive_delivery.core.errors import MalformedRecordError, QueueError
from proactive_delivery.core.models import SOURCES, MessageKey, UnsentBacklog

logger = Logger(service=SERVICE, child=True)


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
    """Which sources an evaluate run passes over. One rule: the event is a JSON object;
    without a `sources` key (an empty event, EventBridge's own scheduled event) it is every
    source; with one, `sources` is a non-empty list of source names (duplicates ignored),
    as the schedules' Input gives it: {"sources": ["proactive"]}. Anything else is an
    `invalid_event` (or `unknown_source`) naming what is wrong."""
    if not isinstance(event, dict):
        raise MalformedRecordError(
            "invalid_event", 'evaluate expects a JSON object, e.g. {"sources": ["proactive"]}'
        )
    if "sources" not in event:
        stray = event.get("source")
        if stray is not None and stray != "aws.events":
            # EventBridge's scheduled events say "source": "aws.events"; anything else here is
            # most likely a misspelt selector.
            raise MalformedRecordError(
                "invalid_event", f"unexpected 'source' {str(stray)[:40]!r}: did you mean 'sources'?"
            )
        return list(known)
    selected = event["sources"]
    if not isinstance(selected, list) or not selected or not all(isinstance(s, str) for s in selected):
        raise MalformedRecordError("invalid_event", "'sources' must be a non-empty list of source names")
    unknown = [s for s in selected if s not in known]
    if unknown:
        raise MalformedRecordError("unknown_source", f"{unknown!r}; known sources: {', '.join(known)}")
    return list(dict.fromkeys(selected))


class Evaluator:
    def __init__(
        self,
        store: EvaluateStore,
        queue: DeliveryQueue,
        gate: QueueGate,
        *,
        page_size: int,
        reconcile_after_seconds: int,
        enqueue_concurrency: int,
        safety_margin_ms: int = 10_000,
    ) -> None:
        self._store = store
        self._gate = gate
        self._enqueuer = Enqueuer(queue, concurrency=enqueue_concurrency)
        self._page_size = page_size
        self._reconcile_after = reconcile_after_seconds
        self._safety_margin_ms = safety_margin_ms
        # How long a run can live: rows a run recorded as queued but never handed to SQS are
        # another run's orphans once they are older than this (set when a run starts).
        self._run_lease_seconds = 0

    def run(self, sources: Iterable[str], remaining_ms: Callable[[], int]) -> EvaluateReport:
        report = EvaluateReport()
        # Runs of this function live at most as long as this one can (the same timeout).
        self._run_lease_seconds = max(1, -(-remaining_ms() // 1000))
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
            # Recorded with enqueued_at already (one statement a page); only refusals go back.
            if not self._send(source, page.queued_ids, report, remaining_ms, mark=False):
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
                run_lease_seconds=self._run_lease_seconds,
            )
            report.requeued += len(rows)
            if not self._send(source, [source_id for _, source_id in rows], report, remaining_ms):
                return False
            if len(rows) < self._page_size:
                return True
            after_id = rows[-1][0]

    def _send(
        self,
        source: str,
        source_ids: Sequence[int],
        report: SourceReport,
        remaining_ms: Callable[[], int],
        *,
        mark: bool = True,
    ) -> bool:
        """Put recorded ids on the queue, SendMessageBatch calls of 10 with up to
        `enqueue_concurrency` in flight. Entries SQS refuses, and the tail left unsent when
        time runs out or a call fails, go back to pending so the next run takes them at once;
        what SQS accepted starts its reconciliation clock (`mark`: re-queued rows; fresh
        ones were recorded with it). One statement each per page, whatever its size."""
        gated = self._gate.check(source, source_ids)
        report.deferred += gated.deferred
        report.held += gated.held
        for key, n in gated.reasons.items():
            report.held_reasons[key] = report.held_reasons.get(key, 0) + n
        batches: list[tuple[int, Sequence[int]]] = [*gated.delayed.items(), (0, gated.send_now)]
        sent = self._enqueuer.send(source, batches, lambda: self._out_of_time(remaining_ms))
        if sent.refused:
            report.send_failed += len(sent.refused)
            self._store.return_to_pending(source, sent.refused)
            logger.warning("SendMessageBatch entries failed; returned to pending", failed=len(sent.refused))
        if sent.unsent:
            report.returned_to_pending += self._store.return_to_pending(source, sent.unsent)
        if mark:
            self._store.mark_enqueued(source, sent.accepted)
        if sent.error is not None:
            # A whole call failed: raise, so the run is a function error someone sees.
            raise sent.error
        if sent.out_of_time:
            logger.warning("evaluate out of time; leaving the rest for the next run", unsent=len(sent.unsent))
            return False
        return True


@dataclass
class EnqueueResult:
    accepted: list[int] = field(default_factory=list)
    # SQS refused these entries (the rest of their call went through).
    refused: list[int] = field(default_factory=list)
    # Never sent: time ran out, or their call failed as a whole (error).
    unsent: list[int] = field(default_factory=list)
    out_of_time: bool = False
    error: QueueError | None = None


class Enqueuer:
    """SendMessageBatch calls of 10 ids, at most `concurrency` in flight: with real SQS
    answering in 10-30 ms, one call at a time caps a run at a few hundred ids a second. No
    call starts once `stop()` says time is up or a call has failed; calls already in flight
    finish, and their outcome is kept. An exception that is not an SQS answer (a bug, a
    crash) is raised only once the calls in flight have finished, so none outlives the run."""

    def __init__(self, queue: DeliveryQueue, *, concurrency: int, executor: Executor | None = None) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self._queue = queue
        self._concurrency = concurrency
        self._executor = executor or ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="enqueue")

    def send(
        self, source: str, batches: Sequence[tuple[int, Sequence[int]]], stop: Callable[[], bool]
    ) -> EnqueueResult:
        result = EnqueueResult()
        chunks = [
            (delay, list(ids[start : start + QUEUE_BATCH_LIMIT]))
            for delay, ids in batches
            for start in range(0, len(ids), QUEUE_BATCH_LIMIT)
        ]
        pending: dict[Future[list[MessageKey]], list[int]] = {}
        unexpected: BaseException | None = None
        position = 0
        while position < len(chunks) or pending:
            halted = result.error is not None or unexpected is not None
            while position < len(chunks) and len(pending) < self._concurrency and not halted:
                if stop():
                    result.out_of_time = True
                    break
                delay, ids = chunks[position]
                keys = [MessageKey(source, i) for i in ids]
                pending[self._executor.submit(self._queue.send_keys, keys, delay_seconds=delay)] = ids
                position += 1
            if result.out_of_time or halted:
                # Nothing more is started; what was never submitted goes back.
                result.unsent.extend(i for _, ids in chunks[position:] for i in ids)
                position = len(chunks)
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                ids = pending.pop(future)
                try:
                    refused = {k.source_id for k in future.result()}
                except QueueError as exc:
                    result.error = result.error or exc
                    result.unsent.extend(ids)
                    continue
                except BaseException as exc:
                    unexpected = unexpected or exc
                    continue
                result.refused.extend(i for i in ids if i in refused)
                result.accepted.extend(i for i in ids if i not in refused)
        if unexpected is not None:
            raise unexpected
        return result
