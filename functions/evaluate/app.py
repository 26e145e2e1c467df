"""Evaluate Lambda: scheduled by EventBridge; queues due messages for delivery."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from proactive_delivery.handlers import evaluate, logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return evaluate(event, context)
