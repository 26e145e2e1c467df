"""What every AWS call of the package shares: how clients are built (standard retries; an
endpoint and region when given, else boto3's own resolution, AWS_ENDPOINT_URL_* included)
and how an error is named."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

_RETRIES = Config(retries={"mode": "standard", "max_attempts": 3})


def client(
    service: str,
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    max_pool_connections: int | None = None,
    **extra: Any,
) -> Any:
    """A boto3 client for `service` with the package's retry policy; `max_pool_connections`
    for a client shared by more threads than botocore's 10 connections serve."""
    config = _RETRIES
    if max_pool_connections:
        config = config.merge(Config(max_pool_connections=max_pool_connections))
    options: dict[str, Any] = {"config": config, **extra}
    if region:
        options["region_name"] = region
    if endpoint_url:
        options["endpoint_url"] = endpoint_url
    return boto3.client(service, **options)


def error_code(exc: BaseException | None, default: str = "") -> str:
    """The AWS error code of a ClientError (ResourceNotFoundException, Throttling...), else
    `default`."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or default)
    return default


def http_status(exc: BaseException | None) -> int | None:
    """The HTTP status AWS answered with, when it answered."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if isinstance(status, int) else None
    return None
