"""What the Lambda handlers call: event validation, the use case, metrics.

The functions in functions/*/app.py are only decorators around these, as in the
Powertools examples, so the same code runs under Lambda, the local runtime and tests.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from proactive_delivery import SERVICE, bootstrap
from proactive_delivery.errors import MalformedRecordError
from proactive_delivery.evaluate import sources_from_event
from proactive_delivery.redact import RedactingFormatter

logger = Logger(service=SERVICE, logger_formatter=RedactingFormatter())
tracer = Tracer(service=SERVICE)
metrics = Metrics(service=SERVICE)

# Deliberate: a batch in which every message failed (the webhook is down) is a normal,
# reported outcome, each failure with its own backoff already set on the message; it is
# not a function error. Infrastructure failures (database unreachable) still raise from
# the handler and show up as Lambda errors.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

_DELIVER_METRICS = {
    "delivered": "MessagesDelivered",
    "retried": "MessagesRetried",
    "failed": "MessagesFailed",
    "skipped": "MessagesSkipped",
    "deferred": "MessagesDeferred",
    "duplicate": "DuplicatesSuppressed",
    "malformed": "MalformedRecords",
    "released": "MessagesReleased",
    "busy": "ClaimContention",
}


def evaluate(event: Any, context: Any) -> dict[str, Any]:
    sources = sources_from_event(event)
    report = bootstrap.get_evaluator().run(sources, context.get_remaining_time_in_millis)
    metrics.add_metric(name="MessagesEnqueued", unit=MetricUnit.Count, value=report.enqueued)
    failed = sum(r.send_failed for r in report.sources.values())
    metrics.add_metric(name="EnqueueFailures", unit=MetricUnit.Count, value=failed)
    return report.as_dict()


def deliver(event: Any, context: Any) -> PartialItemFailureResponse:
    if not isinstance(event, dict) or not isinstance(event.get("Records"), list):
        raise MalformedRecordError("invalid_event", "deliver expects an SQS event with a Records list")
    result = bootstrap.get_deliverer().process(event["Records"], context.get_remaining_time_in_millis)
    for name, value in result.counts.items():
        metric = _DELIVER_METRICS.get(name)
        if metric:
            metrics.add_metric(name=metric, unit=MetricUnit.Count, value=value)

    def record_handler(record: SQSRecord) -> None:
        result.raise_for(record.message_id)

    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
