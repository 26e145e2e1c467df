"""`proactive-delivery resend`: failed messages back through the same one-send gate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from proactive_delivery.app.evaluate import Enqueuer
from proactive_delivery.core.states import FAILED_REASONS
from proactive_delivery_tools.ops.errors import OperationsError
from proactive_delivery_tools.ops.store import OperationsStore


def parse_timestamp(text: str) -> datetime:
    """ISO 8601 (2026-05-01, 2026-05-01T12:00, ...Z, ...+02:00); naive means UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise OperationsError(
            f"--failed-since {text!r} is not a timestamp (use ISO 8601, e.g. 2026-05-01T12:00:00Z)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass
class ResendReport:
    dry_run: bool
    matched: int = 0
    queued: int = 0
    returned_to_pending: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return vars(self).copy()


class QueueMarks(Protocol):
    """What resend needs of the delivery store after the queue answered."""

    def return_to_pending(self, source: str, source_ids: Sequence[int]) -> int: ...

    def mark_enqueued(self, source: str, source_ids: Sequence[int]) -> int: ...


def check_reason(reason: str | None) -> None:
    """A reason the pipeline records failed messages with, or none: a misspelt one would
    match nothing and say so only by resending nothing."""
    if reason is not None and reason not in FAILED_REASONS:
        raise OperationsError(
            f"--reason {reason!r} is not a reason failed messages are recorded with"
            f" (known: {', '.join(sorted(FAILED_REASONS))})"
        )


def count_failed(store: OperationsStore, *, since: datetime, reason: str | None) -> ResendReport:
    """What `resend --dry-run` reports: the failed messages a resend would take, by reason.
    The database alone: no queue, no AWS."""
    report = ResendReport(dry_run=True)
    rows = store.failed_since(since, reason)
    report.matched = len(rows)
    for row in rows:
        key = row["reason"] or "unknown"
        report.by_reason[key] = report.by_reason.get(key, 0) + 1
    return report


def resend_failed(
    store: OperationsStore,
    enqueuer: Enqueuer,
    marks: QueueMarks,
    *,
    since: datetime,
    reason: str | None,
) -> ResendReport:
    report = ResendReport(dry_run=False)
    keys = store.reset_failed(since, reason)
    report.matched = len(keys)
    by_source: dict[str, list[int]] = {}
    for key in keys:
        by_source.setdefault(key.source, []).append(key.source_id)
    for source, ids in by_source.items():
        # The same sending as evaluate's: what SQS refuses or never got goes back to pending
        # (the next evaluate run takes it at once), so nothing is stranded.
        sent = enqueuer.send(source, [(0, ids)], stop=lambda: False)
        report.returned_to_pending += marks.return_to_pending(source, [*sent.refused, *sent.unsent])
        marks.mark_enqueued(source, sent.accepted)
        report.queued += len(sent.accepted)
        if sent.error is not None:
            raise sent.error
    return report
