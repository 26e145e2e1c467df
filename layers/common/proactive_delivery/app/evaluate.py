"""Evaluate: find due, unsent messages, record them as queued, and put their ids on the
delivery queue, page by page, until the backlog is done or the invocation's time is. A run
is recorded when it starts and completed, with its report and the unsent backlog, when it
ends; rows it queues carry its id, so the next run finds what a killed run left behind."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger

from proactive_delivery import SERVICE
from proactive_delivery.app.gate import QueueGate
from proactive_delivery.app.ports import QUEUE_BATCH_LIMIT, DeliveryQueue, EvaluateStore
from proactive_delivery.core.errors import MalformedRecordError, QueueError
from proactive_delivery.core.models import SOURCES, EvaluateRun, MessageKey, UnsentBacklog

logger = Logger(service=SERVICE, child=True)

# What a page's work returns when time ran out while it sent (cursors are ids, all > 0).
_STOPPED = -1


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

    @property
    def enqueued(self) -> int:
        """Ids of this source put on the delivery queue by the run (new and re-queued, less
        what SQS refused, what went back to pending and what the policy held)."""
        return self.queued_new + self.requeued - self.send_failed - self.returned_to_pending - self.held

    def as_dict(self) -> dict[str, Any]:
        return {**vars(self), "enqueued": self.enqueued}


@dataclass
class EvaluateReport:
    sources: dict[str, SourceReport] = field(default_factory=dict)
    stopped_early: bool = False
    # Selected sources whose platform table this database does not have.
    missing_sources: list[str] = field(default_factory=list)
    # The unsent backlog of every selected source, measured as the run ends.
    backlog: dict[str, UnsentBacklog] = field(default_factory=dict)
    run_id: int | None = None

    @property
    def enqueued(self) -> int:
        return sum(r.enqueued for r in self.sources.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "enqueued": self.enqueued,
            "stopped_early": self.stopped_early,
            **({"missing_sources": self.missing_sources} if self.missing_sources else {}),
            "sources": {name: r.as_dict() for name, r in self.sources.items()},
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
        gate: QueueGate,
        enqueuer: Enqueuer,
        *,
        page_size: int,
        reconcile_after_seconds: int,
        safety_margin_ms: int = 10_000,
    ) -> None:
        self._store = store
        self._gate = gate
        self._enqueuer = enqueuer
        self._page_size = page_size
        self._reconcile_after = reconcile_after_seconds
        self._safety_margin_ms = safety_margin_ms

    def run(self, sources: Sequence[str], remaining_ms: Callable[[], int]) -> EvaluateReport:
        report = EvaluateReport()
        # Runs of this function live at most as long as this one can (the same timeout): rows
        # a run recorded as queued but never handed to SQS are another run's orphans once the
        # run is past this and has not finished.
        run = self._store.start_evaluate_run(sources, lease_seconds=max(1, -(-remaining_ms() // 1000)))
        report.run_id = run.run_id
        present = self._store.sources()
        for source in sources:
            if source not in present:
                # A deployment without this table still delivers the sources it has.
                logger.warning("source table not found in this database; source skipped", source=source)
                report.missing_sources.append(source)
                continue
            source_report = report.sources.setdefault(source, SourceReport())
            # Stranded messages first: they have waited longest.
            if not self._requeue_stranded(run, source, source_report, remaining_ms):
                report.stopped_early = True
                break
            if not self._enqueue_new(run, source, source_report, remaining_ms):
                report.stopped_early = True
                break
        # Every run, also one that stopped early: the backlog gauge must not go quiet.
        measured = [s for s in sources if s not in report.missing_sources]
        report.backlog = {s: self._store.unsent_backlog(s) for s in measured}
        self._store.finish_evaluate_run(
            run.run_id, enqueued=report.enqueued, stopped_early=report.stopped_early, report=report.as_dict()
        )
        logger.info("evaluate finished", **report.as_dict())
        return report

    def _out_of_time(self, remaining_ms: Callable[[], int]) -> bool:
        return remaining_ms() < self._safety_margin_ms

    def _pages(self, remaining_ms: Callable[[], int], work: Callable[[int], int | None]) -> bool:
        """Page after page, a keyset cursor from 0: `work(after_id)` does one page and says
        where the next one starts (None: that was the last; _STOPPED: time ran out while it
        sent). False when time ran out."""
        after_id: int | None = 0
        while after_id is not None:
            if after_id == _STOPPED or self._out_of_time(remaining_ms):
                return False
            after_id = work(after_id)
        return True

    def _enqueue_new(
        self, run: EvaluateRun, source: str, report: SourceReport, remaining_ms: Callable[[], int]
    ) -> bool:
        def page(after_id: int) -> int | None:
            page = self._store.enqueue_new(source, run, after_id=after_id, page_size=self._page_size)
            report.scanned += page.scanned
            report.queued_new += len(page.queued_ids)
            if not self._queue_fresh(source, page.queued_ids, report, remaining_ms):
                return _STOPPED
            return None if page.last_id is None or page.scanned < self._page_size else page.last_id

        return self._pages(remaining_ms, page)

    def _requeue_stranded(
        self, run: EvaluateRun, source: str, report: SourceReport, remaining_ms: Callable[[], int]
    ) -> bool:
        def page(after_id: int) -> int | None:
            rows = self._store.requeue_stranded(
                source,
                run,
                after_id=after_id,
                page_size=self._page_size,
                reconcile_after_seconds=self._reconcile_after,
            )
            report.requeued += len(rows)
            if not self._queue_again(source, [source_id for _, source_id in rows], report, remaining_ms):
                return _STOPPED
            return None if len(rows) < self._page_size else rows[-1][0]

        return self._pages(remaining_ms, page)

    def _queue_fresh(
        self, source: str, source_ids: Sequence[int], report: SourceReport, remaining_ms: Callable[[], int]
    ) -> bool:
        """Freshly recorded ids onto the queue. Their rows were recorded with their
        reconciliation clock already started (one statement a page); only what SQS refused or
        never got goes back."""
        sent = self._gate_and_send(source, source_ids, report, remaining_ms)
        return self._settle(sent)

    def _queue_again(
        self, source: str, source_ids: Sequence[int], report: SourceReport, remaining_ms: Callable[[], int]
    ) -> bool:
        """Re-queued (stranded) ids onto the queue; what SQS accepted starts its clock anew."""
        sent = self._gate_and_send(source, source_ids, report, remaining_ms)
        self._store.mark_enqueued(source, sent.accepted)
        return self._settle(sent)

    def _gate_and_send(
        self, source: str, source_ids: Sequence[int], report: SourceReport, remaining_ms: Callable[[], int]
    ) -> EnqueueResult:
        """The queue-time verdict, then SendMessageBatch calls of 10 with up to the enqueuer's
        concurrency in flight. Entries SQS refuses, and the tail left unsent when time runs
        out or a call fails, go back to pending so the next run takes them at once. One
        statement each per page, whatever its size."""
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
        return sent

    @staticmethod
    def _settle(sent: EnqueueResult) -> bool:
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

    def __init__(self, queue: DeliveryQueue, *, concurrency: int, executor: Executor) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self._queue = queue
        self._concurrency = concurrency
        # Built and closed by its owner (bootstrap.Services), with `concurrency` workers.
        self._executor = executor

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
