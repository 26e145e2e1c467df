"""What the Lambda handlers call: event validation, the use case, metrics.

The functions in functions/*/app.py are only decorators around these, as in the
Powertools examples, so the same code runs under Lambda, the local runtime and tests.
"""

from __future__ import annotations

import threading
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from proactive_delivery import SERVICE, bootstrap, telemetry
from proactive_delivery.errors import MalformedRecordError
from proactive_delivery.evaluate import sources_from_event
from proactive_delivery.redact import DeliveryLogFormatter

logger = Logger(service=SERVICE, logger_formatter=DeliveryLogFormatter())
tracer = Tracer(service=SERVICE)
metrics = Metrics(service=SERVICE, namespace=telemetry.NAMESPACE)

# Deliberate: a batch in which every message failed (the webhook is down) is a normal,
# reported outcome, each failure with its own backoff already set on the message; it is
# not a function error. Infrastructure failures (database unreachable) still raise from
# the handler and show up as Lambda errors.
#
# One processor per thread: a BatchProcessor keeps the current batch in its attributes, and
# the local runtime runs concurrent deliver invocations as threads of one process (Lambda
# runs one invocation per environment at a time, where this is simply one processor).
_processors = threading.local()


def _processor() -> BatchProcessor:
    if not hasattr(_processors, "processor"):
        _processors.processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    return _processors.processor  # type: ignore[no-any-return]


def evaluate(event: Any, context: Any) -> dict[str, Any]:
    try:
        sources = sources_from_event(event)
    except MalformedRecordError as exc:
        # Before anything is touched: one line that says what is wrong, then a function
        # error (the evaluate-errors alarm) rather than a run that quietly did something else.
        logger.error("invalid evaluate event; nothing done", reason=exc.reason, error=str(exc))
        raise
    report = bootstrap.get_evaluator().run(sources, context.get_remaining_time_in_millis)
    ops = bootstrap.get_operations_store()
    # Every run, also one that stopped early: the backlog gauge must not go quiet.
    report.backlog = {s: ops.unsent_backlog(s) for s in sources if s not in report.missing_sources}
    ops.record_evaluate_run(
        sources, enqueued=report.enqueued, stopped_early=report.stopped_early, report=report.as_dict()
    )
    telemetry.emit_evaluate(metrics, report)
    return report.as_dict()


def deliver(event: Any, context: Any) -> PartialItemFailureResponse:
    if not isinstance(event, dict) or not isinstance(event.get("Records"), list):
        raise MalformedRecordError("invalid_event", "deliver expects an SQS event with a Records list")
    result = bootstrap.get_deliverer().process(event["Records"], context.get_remaining_time_in_millis)
    telemetry.emit_deliver(metrics, result)

    def record_handler(record: SQSRecord) -> None:
        result.raise_for(record.message_id)

    return process_partial_response(
        event=event, record_handler=record_handler, processor=_processor(), context=context
    )
