"""Purge Lambda: scheduled daily by EventBridge; deletes our own finished rows older than
RETENTION_DAYS in small batches. The platform's rows are never touched."""

from proactive_delivery.handlers import LambdaFunction, purge

lambda_handler = LambdaFunction(purge)
