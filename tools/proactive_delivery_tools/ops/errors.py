"""What an operator's command says when it cannot go on: one line, the cause named."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from proactive_delivery.adapters.aws import error_code, http_status
from proactive_delivery.core.errors import DeliveryError

_MISSING_QUEUE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
_BAD_CREDENTIALS = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "AccessDenied",
        "AccessDeniedException",
        "AuthFailure",
    }
)


class OperationsError(DeliveryError):
    """An operator command cannot go on; the message is the one line to print."""


def describe_aws_error(exc: Exception, what: str, *, service: str = "SQS") -> OperationsError:
    """One line an operator can act on, for an AWS error."""
    if isinstance(exc, NoRegionError):
        return OperationsError("no AWS region: set AWS_REGION or AWS_DEFAULT_REGION")
    if isinstance(exc, NoCredentialsError):
        return OperationsError(f"{what}: no AWS credentials found (set AWS_PROFILE or log in)")
    if isinstance(exc, ClientError):
        code = error_code(exc, "ClientError")
        if code in _MISSING_QUEUE:
            return OperationsError(f"{what}: the queue does not exist ({code})")
        if code in _BAD_CREDENTIALS:
            return OperationsError(f"{what}: AWS refused the credentials ({code}); refresh them and retry")
        status = http_status(exc) or 0
        return OperationsError(
            f"{what}: {service} error {code}" + (f" (HTTP {status})" if status >= 500 else "")
        )
    return OperationsError(f"{what}: {type(exc).__name__}")


def call_aws(what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
    try:
        return fn(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise describe_aws_error(exc, what) from exc
