"""Every CloudWatch metric the package emits, in one registry, and the code that emits them.

The handlers hand a BatchReport, an EvaluateReport or a PurgeReport to emit_deliver() /
emit_evaluate() / emit_purge(); nothing else in the package calls Powertools Metrics.
emit() refuses a name or a set of dimensions that is not registered here, and
tests/unit/test_dashboard.py checks the dashboard in template.yaml against this registry
both ways, so a widget can never show a metric the code stopped emitting, and a new metric
cannot be added without a widget.

EMF puts every metric of one blob under the same dimensions. The per-invocation totals
share the handler's Metrics object (dimension: service); a metric with more dimensions
(source, channel, reason) is printed as its own blob through single_metric.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit, single_metric

from proactive_delivery import SERVICE

if TYPE_CHECKING:
    from aws_lambda_powertools import Metrics

    from proactive_delivery.adapters.inbound_batch import InboundReport
    from proactive_delivery.adapters.sqs_batch import BatchReport
    from proactive_delivery.app.evaluate import EvaluateReport
    from proactive_delivery.app.inbound_edge import HttpResponse
    from proactive_delivery.app.purge import PurgeReport

NAMESPACE: Final = "ProactiveDelivery"
SERVICE_DIMENSION: Final = "service"


@dataclass(frozen=True)
class MetricSpec:
    name: str
    unit: MetricUnit
    # Dimensions besides `service`, which every metric carries.
    dimensions: tuple[str, ...]
    emitted_by: str
    description: str

    @property
    def all_dimensions(self) -> tuple[str, ...]:
        return (SERVICE_DIMENSION, *self.dimensions)


def _spec(name: str, unit: MetricUnit, emitted_by: str, description: str, *dims: str) -> MetricSpec:
    return MetricSpec(name, unit, tuple(dims), emitted_by, description)


_C = MetricUnit.Count
METRICS: Final[tuple[MetricSpec, ...]] = (
    # evaluate, every run
    _spec("MessagesEnqueued", _C, "evaluate", "ids put on the delivery queue (new + re-queued)"),
    _spec("EnqueueFailures", _C, "evaluate", "SendMessageBatch entries SQS refused"),
    _spec("MessagesEnqueued", _C, "evaluate", "ids put on the delivery queue, by source", "source"),
    _spec("UnsentBacklog", _C, "evaluate", "due messages not yet sent, skipped or failed", "source"),
    _spec(
        "OldestUnsentAgeSeconds",
        MetricUnit.Seconds,
        "evaluate",
        "age of the oldest due, unsent message (0 when none)",
        "source",
    ),
    # deliver, every batch
    _spec("MessagesDelivered", _C, "deliver", "messages sent (2xx from the channel)"),
    _spec("MessagesRetried", _C, "deliver", "transient failures put back with a backoff"),
    _spec("MessagesFailed", _C, "deliver, evaluate", "messages that ended failed"),
    _spec("MessagesSkipped", _C, "deliver, evaluate", "messages that ended skipped"),
    _spec("MessagesDeferred", _C, "deliver, evaluate", "messages held back by policy (quiet hours, cap)"),
    _spec("DuplicatesSuppressed", _C, "deliver", "records acknowledged without a send"),
    _spec("MalformedRecords", _C, "deliver", "records that can never be processed"),
    _spec("MessagesReleased", _C, "deliver", "sends not started: the deadline was near"),
    _spec("ClaimContention", _C, "deliver", "records held by a concurrent claim"),
    _spec("MessagesDeadLettered", _C, "deliver", "messages put on the DLQ when their retry window was spent"),
    _spec("MessagesPaced", _C, "deliver", "messages held for their provider's rate limit (not attempts)"),
    _spec("CircuitOpenHolds", _C, "deliver", "messages held because their provider's circuit is open"),
    _spec("CircuitOpenHolds", _C, "deliver", "messages held by an open circuit, by provider", "provider"),
    _spec(
        "RequeueFailures",
        _C,
        "deliver",
        "held messages SQS would not take again (they came back after a visibility change instead)",
    ),
    _spec("SegmentsSent", _C, "deliver", "SMS segments of the messages sent (GSM-7 or UCS-2)"),
    _spec("MessagesUcs2", _C, "deliver", "SMS sent as UCS-2 (a character outside GSM-7: 70 a segment)"),
    _spec(
        "VisibilityChangeFailures",
        _C,
        "deliver",
        "ChangeMessageVisibility entries SQS refused (the message comes back after the queue's timeout)",
    ),
    _spec("MessagesFailed", _C, "deliver, evaluate", "failed messages by reason class", "reason_class"),
    _spec("MessagesSkipped", _C, "deliver, evaluate", "skipped messages by reason", "reason"),
    _spec("MessagesDelivered", _C, "deliver", "messages sent, by source and channel", "source", "channel"),
    _spec(
        "DeliveryLatency",
        MetricUnit.Seconds,
        "deliver",
        "from the message's due time to the channel's 2xx",
        "source",
        "channel",
    ),
    # purge, every (daily) run
    _spec("RowsPurged", _C, "purge", "rows the retention purge deleted, by table", "table"),
    _spec(
        "RowsRetained",
        _C,
        "purge",
        "rows past RETENTION_DAYS the purge read and kept, by table: finished messages the platform"
        " still has due (the tombstones that stop a second send)",
        "table",
    ),
    _spec("PurgeStoppedEarly", _C, "purge", "purge runs that ran out of time (the next run goes on)"),
    # Powertools' own cold-start metric (capture_cold_start_metric=True in functions/*/app.py)
    _spec("ColdStart", _C, "every function", "cold starts of each function", "function_name"),
    # inbound edge, every request (docs/inbound.md)
    _spec("InboundRequests", _C, "inbound", "requests to the Function URL"),
    _spec("InboundRequests", _C, "inbound", "requests by what became of them", "outcome"),
    _spec("InboundEventsQueued", _C, "inbound", "verified events stored on the inbound queue", "kind"),
    _spec(
        "InboundSignatureRejections",
        _C,
        "inbound",
        "requests refused 401: signature missing, forged or stale (the spike alarm)",
    ),
    # inbound processor, every batch (docs/inbound.md#processor)
    _spec("InboundEventsApplied", _C, "inbound_processor", "events applied for the first time"),
    _spec(
        "InboundEventsApplied",
        _C,
        "inbound_processor",
        "events applied, by kind and outcome (linked, unmatched, opted_out, recorded...)",
        "kind",
        "outcome",
    ),
    _spec("InboundEventsDuplicate", _C, "inbound_processor", "events already applied (a retry or a replay)"),
    _spec("InboundEventsMalformed", _C, "inbound_processor", "queue records that are no event (to the DLQ)"),
    _spec(
        "InboundReceiptsWaiting",
        _C,
        "inbound_processor",
        "receipts whose message is not recorded yet, sent back to wait",
    ),
    _spec("RepliesLinked", _C, "inbound_processor", "replies linked to the message they answer"),
    _spec("OptOutsApplied", _C, "inbound_processor", "opt-outs: STOP, DND, the provider's, SES complaints"),
    _spec("OptInsApplied", _C, "inbound_processor", "opt-ins: START, UNSTOP, DND inactive"),
    _spec("DeliveryReceipts", _C, "inbound_processor", "receipts recorded, by status", "status"),
    _spec(
        "ChannelsSuppressed",
        _C,
        "inbound_processor",
        "channels suppressed by a permanent failure, by reason (landline, invalid number, bounce...)",
        "reason",
    ),
)

_REGISTERED: Final = frozenset((m.name, frozenset(m.all_dimensions)) for m in METRICS)
_UNITS: Final = {m.name: m.unit for m in METRICS}

# The counts in BatchReport.counts that become per-batch totals.
DELIVER_COUNTS: Final = {
    "delivered": "MessagesDelivered",
    "retried": "MessagesRetried",
    "failed": "MessagesFailed",
    "skipped": "MessagesSkipped",
    "deferred": "MessagesDeferred",
    "duplicate": "DuplicatesSuppressed",
    "malformed": "MalformedRecords",
    "released": "MessagesReleased",
    "busy": "ClaimContention",
    "dead_lettered": "MessagesDeadLettered",
    "visibility_failed": "VisibilityChangeFailures",
    "paced": "MessagesPaced",
    "circuit_held": "CircuitOpenHolds",
    "requeue_failed": "RequeueFailures",
}

# Why a message failed, coarsely enough for a dashboard line and an alarm: the provider
# refused it for good, the retries ran out (an outage), or the platform's row is gone.
_FAILURE_CLASSES: Final = {
    "attempts_exhausted": "exhausted",
    "source_row_missing": "missing_source",
}


def failure_class(reason: str | None) -> str:
    return _FAILURE_CLASSES.get(reason or "", "permanent")


class UnregisteredMetricError(ValueError):
    pass


def check_registered(name: str, dimensions: Iterable[str]) -> None:
    if (name, frozenset((SERVICE_DIMENSION, *dimensions))) not in _REGISTERED:
        raise UnregisteredMetricError(
            f"metric {name} with dimensions {sorted(dimensions)} is not in telemetry.METRICS"
        )


def emit_total(metrics: Metrics, name: str, value: float) -> None:
    """A per-invocation total on the handler's Metrics object (dimension: service)."""
    check_registered(name, ())
    metrics.add_metric(name=name, unit=_UNITS[name], value=value)


def emit_dimensioned(name: str, value: float, **dimensions: str) -> None:
    """A metric with its own dimensions, printed as its own EMF blob at once."""
    check_registered(name, dimensions)
    with single_metric(name=name, unit=_UNITS[name], value=value, namespace=NAMESPACE) as metric:
        metric.add_dimension(name=SERVICE_DIMENSION, value=SERVICE)
        for key, dim_value in dimensions.items():
            metric.add_dimension(name=key, value=dim_value or "unknown")


def emit_dimensioned_values(values: dict[str, list[float]], **dimensions: str) -> None:
    """Metrics that share their dimensions, each with one or more values, as ONE EMF blob
    (lists of values): a batch's deliveries and latencies per source and channel cost one
    line, not one per metric or per message."""
    for name in values:
        check_registered(name, dimensions)
    blob = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
    for key, dim_value in dimensions.items():
        blob.add_dimension(name=key, value=dim_value or "unknown")
    for name, metric_values in values.items():
        for value in metric_values:
            blob.add_metric(name=name, unit=_UNITS[name], value=value)
    blob.flush_metrics()


@dataclass
class _DeliverTally:
    """What a batch's outcomes add up to, for the dimensioned metrics."""

    failed: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    delivered: Counter[tuple[str, str]] = field(default_factory=Counter)
    circuit: Counter[str] = field(default_factory=Counter)
    latencies: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    segments: int = 0
    ucs2: int = 0


def _tally(result: BatchReport, now: datetime | None) -> _DeliverTally:
    tally = _DeliverTally()
    for key, outcome in result.outcomes:
        if outcome.outcome == "paced" and outcome.reason == "circuit_open":
            tally.circuit[outcome.provider or "unknown"] += 1
        if outcome.state == "failed":
            tally.failed[failure_class(outcome.reason)] += 1
        elif outcome.state == "skipped":
            tally.skipped[outcome.reason or "unknown"] += 1
        elif outcome.state == "sent":
            tally.segments += outcome.segments
            tally.ucs2 += outcome.ucs2
            channel = outcome.channel or "unknown"
            tally.delivered[(key.source, channel)] += 1
            due_at = result.due_at.get(key)
            sent_at = outcome.finished_at or now or datetime.now(UTC)
            if due_at is not None:
                # Milliseconds are precision enough, and keep the blob short.
                latency = round(max(0.0, (sent_at - due_at).total_seconds()), 3)
                tally.latencies.setdefault((key.source, channel), []).append(latency)
    return tally


def emit_deliver(metrics: Metrics, result: BatchReport, *, now: datetime | None = None) -> None:
    for count_name, value in result.counts.items():
        metric = DELIVER_COUNTS.get(count_name)
        if metric:
            emit_total(metrics, metric, value)
    tally = _tally(result, now)
    for (source, channel), n in tally.delivered.items():
        values = {"MessagesDelivered": [float(n)]}
        if tally.latencies.get((source, channel)):
            values["DeliveryLatency"] = tally.latencies[(source, channel)]
        emit_dimensioned_values(values, source=source, channel=channel)
    for reason_class, n in tally.failed.items():
        emit_dimensioned("MessagesFailed", n, reason_class=reason_class)
    for reason, n in tally.skipped.items():
        emit_dimensioned("MessagesSkipped", n, reason=reason)
    for provider, n in tally.circuit.items():
        emit_dimensioned("CircuitOpenHolds", n, provider=provider)
    for name, total in (("SegmentsSent", tally.segments), ("MessagesUcs2", tally.ucs2)):
        if total:
            emit_total(metrics, name, total)


def emit_evaluate(metrics: Metrics, report: EvaluateReport) -> None:
    emit_total(metrics, "MessagesEnqueued", report.enqueued)
    emit_total(metrics, "EnqueueFailures", sum(r.send_failed for r in report.sources.values()))
    for source, source_report in report.sources.items():
        emit_dimensioned("MessagesEnqueued", source_report.enqueued, source=source)
    # What the queue-time policy held back, under the same names deliver uses.
    held: Counter[tuple[str, str]] = Counter()
    for source_report in report.sources.values():
        for key, n in source_report.held_reasons.items():
            state, _, reason = key.partition(":")
            held[(state, reason)] += n
    totals: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for (state, reason), n in held.items():
        totals[state] += n
        if state == "skipped":
            emit_dimensioned("MessagesSkipped", n, reason=reason)
        elif state == "failed":
            failed[failure_class(reason)] += n
    for reason_class, n in failed.items():
        emit_dimensioned("MessagesFailed", n, reason_class=reason_class)
    for state, metric in (
        ("skipped", "MessagesSkipped"),
        ("failed", "MessagesFailed"),
        ("deferred", "MessagesDeferred"),
    ):
        if totals[state]:
            emit_total(metrics, metric, totals[state])
    for source, backlog in report.backlog.items():
        emit_dimensioned("UnsentBacklog", backlog.count, source=source)
        emit_dimensioned("OldestUnsentAgeSeconds", backlog.oldest_age_seconds, source=source)


def emit_purge(metrics: Metrics, report: PurgeReport) -> None:
    """Every run, zeros included: a table that stops shrinking shows as a flat line, not as
    missing data."""
    emit_total(metrics, "PurgeStoppedEarly", 1 if report.stopped_early else 0)
    for table, n in sorted(report.deleted.items()):
        emit_dimensioned("RowsPurged", n, table=table)
    for table, n in sorted(report.kept.items()):
        emit_dimensioned("RowsRetained", n, table=table)


def emit_inbound(metrics: Metrics, response: HttpResponse) -> None:
    """One request's metrics: every request, its outcome, the kind of a queued event, and a
    401 (the rejected-signature alarm's metric) on the handler's per-invocation totals."""
    emit_total(metrics, "InboundRequests", 1)
    if response.status == 401:
        emit_total(metrics, "InboundSignatureRejections", 1)
    emit_dimensioned("InboundRequests", 1, outcome=str(response.outcome))
    if response.kind:
        emit_dimensioned("InboundEventsQueued", 1, kind=response.kind)


def emit_inbound_processor(metrics: Metrics, report: InboundReport) -> None:
    """One batch of the inbound processor: totals on the handler's Metrics object, receipts
    by status (the undelivered-rate alarm's), outcomes by kind, suppressions by reason."""
    applied = sum(n for (_, outcome), n in report.counts.items() if outcome not in ("duplicate", "wait"))
    duplicates = sum(n for (_, outcome), n in report.counts.items() if outcome == "duplicate")
    linked = sum(n for (_, outcome), n in report.counts.items() if outcome == "linked")
    for name, value in (
        ("InboundEventsApplied", applied),
        ("InboundEventsDuplicate", duplicates),
        ("InboundEventsMalformed", report.malformed),
        ("InboundReceiptsWaiting", report.waiting),
        ("RepliesLinked", linked),
        ("OptOutsApplied", report.opt_outs),
        ("OptInsApplied", report.opt_ins),
    ):
        if value:
            emit_total(metrics, name, value)
    for (kind, outcome), n in report.counts.items():
        if outcome not in ("duplicate", "wait"):
            emit_dimensioned("InboundEventsApplied", n, kind=kind, outcome=outcome)
    for status, n in report.receipts.items():
        emit_dimensioned("DeliveryReceipts", n, status=status)
    for reason, n in report.suppressions.items():
        emit_dimensioned("ChannelsSuppressed", n, reason=reason)
