"""What the Lambda functions run. functions/*/app.py are one line each:
`lambda_handler = LambdaFunction(evaluate)`, as in the Powertools examples (decorators plus
one call), so the same code runs under Lambda, the local runtime and tests. A function
builds its services once per execution environment from the environment; the local
runtime and tests hand it theirs with `lambda_handler.with_services(...)`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext

from proactive_delivery import SERVICE
from proactive_delivery.adapters import telemetry
from proactive_delivery.adapters.redact import DeliveryLogFormatter
from proactive_delivery.adapters.tracing import tracer
from proactive_delivery.app.evaluate import sources_from_event
from proactive_delivery.bootstrap import InboundServices, Services, build, build_inbound
from proactive_delivery.core.errors import ConfigError, MalformedRecordError
from proactive_delivery.settings import InboundSettings, Settings

logger = Logger(service=SERVICE, logger_formatter=DeliveryLogFormatter())
metrics = Metrics(service=SERVICE, namespace=telemetry.NAMESPACE)

UseCase = Callable[[Any, LambdaContext, Services], Any]


class _FromEnvironment:
    """The services of this execution environment, built from its environment on first use."""

    def __init__(self) -> None:
        self._services: Services | None = None
        self._lock = threading.Lock()

    def __call__(self) -> Services:
        with self._lock:
            if self._services is None:
                self._services = build(Settings.from_env())
            return self._services


from_environment = _FromEnvironment()


class LambdaFunction:
    """A use case behind the Powertools decorators: logger context, tracing, metrics flushed
    after every invocation (with the cold-start metric)."""

    def __init__(self, use_case: UseCase, services: Callable[[], Services] = from_environment) -> None:
        self._use_case = use_case
        self._services = services

        @logger.inject_lambda_context(clear_state=True)
        @tracer.capture_lambda_handler
        @metrics.log_metrics(capture_cold_start_metric=True)
        def handler(event: Any, context: LambdaContext) -> Any:
            return use_case(event, context, self._services())

        self._handler = handler

    def __call__(self, event: Any, context: LambdaContext) -> Any:
        return self._handler(event, context)

    def with_services(self, services: Services) -> LambdaFunction:
        """The same function running on `services` (the local runtime's, a test's)."""
        return LambdaFunction(self._use_case, lambda: services)


def evaluate(event: Any, context: LambdaContext, services: Services) -> dict[str, Any]:
    try:
        sources = sources_from_event(event)
    except MalformedRecordError as exc:
        # Before anything is touched: one line that says what is wrong, then a function
        # error (the evaluate-errors alarm) rather than a run that quietly did something else.
        logger.error("invalid evaluate event; nothing done", reason=exc.reason, error=str(exc))
        raise
    report = services.evaluator.run(sources, context.get_remaining_time_in_millis)
    telemetry.emit_evaluate(metrics, report)
    return report.as_dict()


def deliver(event: Any, context: LambdaContext, services: Services) -> dict[str, list[dict[str, str]]]:
    deliverer = services.deliverer
    response, report = services.sqs_batch.handle(
        event, lambda receives: deliverer.deliver(receives, context.get_remaining_time_in_millis)
    )
    telemetry.emit_deliver(metrics, report)
    return response


def purge(event: Any, context: LambdaContext, services: Services) -> dict[str, Any]:
    # The scheduled event carries nothing the purge needs: RETENTION_DAYS decides what goes.
    report = services.purger.run(context.get_remaining_time_in_millis)
    logger.info("retention purge finished", **report.as_dict())
    telemetry.emit_purge(metrics, report)
    return report.as_dict()


def inbound_processor(
    event: Any, context: LambdaContext, services: Services
) -> dict[str, list[dict[str, str]]]:
    """One batch of the inbound queue applied to PostgreSQL (functions/inbound_processor). A
    database that cannot be reached raises: the invocation fails and SQS hands the whole
    batch out again."""
    applier = services.inbound_applier
    response, report = services.inbound_batch.handle(event, applier.apply)
    telemetry.emit_inbound_processor(metrics, report)
    return response


# -- The inbound edge (functions/inbound, docs/inbound.md) --------------------------------------
InboundUseCase = Callable[[Any, LambdaContext, InboundServices], dict[str, Any]]


class _InboundFromEnvironment:
    """The inbound edge's services, built from its own settings (InboundSettings) on first use."""

    def __init__(self) -> None:
        self._services: InboundServices | None = None
        self._lock = threading.Lock()

    def __call__(self) -> InboundServices:
        with self._lock:
            if self._services is None:
                self._services = build_inbound(InboundSettings.from_env())
            return self._services


inbound_from_environment = _InboundFromEnvironment()


class InboundFunction:
    """The inbound use case behind the same decorators as the other functions. It always
    answers over HTTP: a configuration error is one log line and a 503 (Twilio and n8n retry
    a 5xx), not an invocation error with a stack trace."""

    def __init__(
        self, use_case: InboundUseCase, services: Callable[[], InboundServices] = inbound_from_environment
    ) -> None:
        self._use_case = use_case
        self._services = services

        @logger.inject_lambda_context(clear_state=True)
        @tracer.capture_lambda_handler
        @metrics.log_metrics(capture_cold_start_metric=True)
        def handler(event: Any, context: LambdaContext) -> dict[str, Any]:
            from proactive_delivery.adapters.function_url import function_url_result
            from proactive_delivery.app.inbound_edge import edge_unavailable

            try:
                services = self._services()
            except ConfigError as exc:
                response = edge_unavailable(str(exc))
                telemetry.emit_inbound(metrics, response)
                return function_url_result(response)
            return use_case(event, context, services)

        self._handler = handler

    def __call__(self, event: Any, context: LambdaContext) -> dict[str, Any]:
        return self._handler(event, context)  # type: ignore[no-any-return]

    def with_services(self, services: InboundServices) -> InboundFunction:
        """The same function running on `services` (a test's, the benchmark's)."""
        return InboundFunction(self._use_case, lambda: services)


def inbound(event: Any, context: LambdaContext, services: InboundServices) -> dict[str, Any]:
    """One Function URL request: verified, stored on the inbound queue, answered."""
    from proactive_delivery.adapters.function_url import function_url_result, request_from_event
    from proactive_delivery.app.inbound_edge import unreadable_request

    try:
        request = request_from_event(event)
    except MalformedRecordError as exc:
        response = unreadable_request(str(exc))
    else:
        response = services.edge.handle(request)
    telemetry.emit_inbound(metrics, response)
    return function_url_result(response)
